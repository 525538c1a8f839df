//! `sortline run` with `[console]`: the built binary against the simulated PLC (Modbus TCP) and
//! scanner (a pseudo-terminal) in real time, users made with `sortline user add`, and this test
//! as the officer at the console over real HTTP: every green parcel is reviewed, the officer
//! sends each to inspection through the API, and the simulator confirms it in that lane. Roles,
//! health, metrics and the record of every console action are checked on the way.

mod common;
use common::service::{line, set, spawn, value, Line};
use sortline::audit::{self, DB_FILE};
use sortline::core::{Lane, Reason, Record};
use sortline::recorder::record_of;
use sortline_sim as sim;
use sortline_sim::demo::client::ConsoleClient;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const PARCELS: u32 = 10;
const PASSWORD: &str = "officer's long password";

fn add_user(data: &Path, name: &str, role: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sortline"))
        .args(["user", "add", name, "--role", role, "--data"])
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(child.wait().unwrap().success());
}

/// The console's address, from the daemon's log once it serves.
fn console_addr(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let plain = regex::Regex::new("\x1b\\[[0-9;]*m").unwrap().replace_all(&text, "");
    let found = regex::Regex::new(r"officer console serving listen=(\S+)").unwrap();
    found.captures(&plain).map(|c| c[1].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officer_decides_reviews_at_the_console_of_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "li.wei", "officer");
    add_user(dir.path(), "wang.fang", "viewer");
    // Every green parcel to the officer; no random sample, so every review is the officer's to decide.
    let tweak = |t: &mut toml::Table| {
        set(t, "sampling.xray_review_ratio", value("{ green = 1.0, red = 0.0 }"));
        set(t, "sampling.sample_rate", value("{ green = 0.0, red = 0.0 }"));
        t.insert("console".into(), value(r#"{ listen = "127.0.0.1:0" }"#));
        t.remove("mqtt");
    };
    let scenario = sim::Scenario {
        arrival_period_ms: 1_000..=1_400,
        inspection_ms: 1_000..=2_000,
        no_read: 0.0,
        misread: 0.0,
        missing_manifest: 0.0,
        ..sim::Scenario::demo(PARCELS, 9)
    };
    let Line { mut plc, config, forward, .. } = line(dir.path(), scenario, "127.0.0.1:1883", tweak).await;
    let log = dir.path().join("daemon.log");
    let mut daemon = spawn(&config, &log);
    let mut base = None;
    for _ in 0..200 {
        base = console_addr(&log);
        if base.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let base =
        format!("http://{}", base.unwrap_or_else(|| panic!("no console\n{}", std::fs::read_to_string(&log).unwrap())));

    let officer = {
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            let viewer = ConsoleClient::login(&base, "wang.fang", PASSWORD).unwrap();
            let officer = ConsoleClient::login(&base, "li.wei", PASSWORD).unwrap();
            assert!(ConsoleClient::login(&base, "li.wei", "not the password").is_err());
            let health = ureq::get(&format!("{base}/healthz")).call().unwrap().into_body().read_to_string().unwrap();
            assert!(health.starts_with("ok"), "{health}");
            // The officer answers every review that shows up, until the line has run out.
            let mut decided = HashSet::new();
            let mut viewer_refused = false;
            for _ in 0..600 {
                let reviews =
                    officer.get("/api/reviews").unwrap().body["reviews"].as_array().cloned().unwrap_or_default();
                for r in reviews {
                    let path = format!("/api/reviews/{}/verdict", r["review"]);
                    let body = serde_json::json!({ "verdict": "inspect", "image_sha256": r["image_sha256"] });
                    if !viewer_refused {
                        assert_eq!(viewer.post(&path, &body).unwrap().status, 403, "a viewer decides nothing");
                        viewer_refused = true;
                    }
                    let a = officer.post(&path, &body).unwrap();
                    assert_eq!(a.status, 200, "{}", a.body);
                    decided.insert(r["tracking"].as_u64().unwrap() as u32);
                }
                let line = officer.get("/api/line").unwrap().body;
                if decided.len() as u32 >= PARCELS / 2 && line["parcels"].as_array().is_some_and(|p| p.is_empty()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let metrics = ureq::get(&format!("{base}/metrics")).call().unwrap().into_body().read_to_string().unwrap();
            assert!(metrics.contains("sortline_line_reviews "), "{metrics}");
            assert!(metrics.contains("sortline_console_refused_total{kind=\"role\"} 1"), "{metrics}");
            decided
        })
    };
    assert!(plc.wait_finished(Duration::from_secs(90)).await, "the line did not run out");
    let decided_at_console = officer.await.unwrap();
    assert!(Command::new("kill").args(["-TERM", &daemon.pid().to_string()]).status().unwrap().success());
    let exit = tokio::task::spawn_blocking(move || daemon.wait()).await.unwrap().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(exit.success(), "{exit:?}\n{text}");
    forward.abort();

    let report = plc.report();
    assert_eq!(report.unsafe_releases, 0);
    let db = dir.path().join(DB_FILE);
    assert!(audit::verify(&db, None).unwrap().is_intact());
    let mut lanes = HashMap::new();
    let mut console_actions = Vec::new();
    audit::entries(&db, |e| {
        if let Some(Record::Decision { parcel, lane, reasons, .. }) = record_of(&e.kind, &e.payload) {
            lanes.insert(parcel.tracking.0, (lane, reasons));
        }
        if e.kind == "command" && e.payload["via"] == "console" {
            console_actions.push((
                e.payload["command"].clone(),
                e.payload["operator"].clone(),
                e.payload["status"].clone(),
            ));
        }
        Ok(())
    })
    .unwrap();
    assert!(!decided_at_console.is_empty(), "no review reached the console\n{text}");
    for t in &decided_at_console {
        let (lane, reasons) = &lanes[t];
        assert_eq!(*lane, Lane::Inspection, "{reasons:?}");
        assert!(reasons.iter().any(|r| matches!(r, Reason::OfficerVerdict { .. })), "{reasons:?}");
        let outcome = report.outcomes.iter().find(|o| o.tracking == Some(*t)).unwrap();
        assert_eq!(outcome.physical, Lane::Inspection, "{outcome:?}");
    }
    // The logins (one refused), the viewer's refused verdict, every accepted verdict: on record.
    let count = |cmd: &str, who: &str, status: &str| {
        console_actions.iter().filter(|(c, o, s)| c == cmd && o == who && s == status).count()
    };
    assert_eq!(count("login", "li.wei", "accepted"), 1);
    assert_eq!(count("login", "li.wei", "refused"), 1);
    assert_eq!(count("verdict", "wang.fang", "refused"), 1);
    assert_eq!(count("verdict", "li.wei", "accepted"), decided_at_console.len());
}

//! What operators said survives the daemon: `sortline run` against the simulated PLC (Modbus TCP)
//! and scanner (a pty), commanded over MQTT (the embedded broker), killed with SIGKILL and
//! started again on the same data directory. A line stopped stays stopped, and every parcel
//! decided in between goes to hold; a manual target added over MQTT is in force after the
//! restart, and the parcel it names goes to inspection.

mod common;
use common::service::{line, repo, set, spawn, value, Line};
use sortline::audit::{self, DB_FILE};
use sortline::config::LineConfig;
use sortline::core::{Lane, Reason, Record};
use sortline::recorder::record_of;
use sortline_sim as sim;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const PARCELS: u32 = 36;
const GUARD: Duration = Duration::from_secs(60);

/// Everything published under the line's prefix, as it arrives, and a way to command.
struct Site {
    client: rumqttc::AsyncClient,
    prefix: String,
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, serde_json::Value)>,
}

impl Site {
    async fn connect(broker: std::net::SocketAddr, prefix: &str) -> Site {
        let options = rumqttc::MqttOptions::new("restart-test", broker.ip().to_string(), broker.port());
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
        client.subscribe(format!("{prefix}#"), rumqttc::QoS::AtLeastOnce).await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (subscribed, acked) = tokio::sync::oneshot::channel();
        let mut subscribed = Some(subscribed);
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        let _ = subscribed.take().map(|s| s.send(()));
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let v = serde_json::from_slice(&p.payload).unwrap_or_default();
                        if tx.send((p.topic, v)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(GUARD, acked).await.expect("subscribed").unwrap();
        Site { client, prefix: prefix.to_string(), rx }
    }

    /// The next message on `…/suffix` that `f` accepts.
    async fn next(&mut self, suffix: &str, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let wanted = format!("{}{suffix}", self.prefix);
        tokio::time::timeout(GUARD, async {
            loop {
                let (topic, v) = self.rx.recv().await.expect("subscriber gone");
                if topic == wanted && f(&v) {
                    return v;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("nothing on {wanted}"))
    }

    /// Commands the line and waits for its reply: accepted means stored and in force.
    async fn command(&mut self, name: &str, body: serde_json::Value) {
        let id = body["request_id"].as_str().unwrap().to_string();
        let topic = format!("{}cmd/{name}", self.prefix);
        self.client.publish(topic, rumqttc::QoS::AtLeastOnce, false, body.to_string()).await.unwrap();
        let reply = self.next(&format!("cmd/{name}/result"), |v| v["request_id"] == id.as_str()).await;
        assert_eq!(reply["status"], "accepted", "{reply}");
    }
}

/// Decisions in the chain so far, in order: (seq, waybill, lane, reasons).
fn decisions(db: &Path) -> Vec<(u64, Option<String>, Lane, Vec<Reason>)> {
    let mut out = Vec::new();
    audit::entries(db, |e| {
        if let Some(Record::Decision { waybill, lane, reasons, .. }) = record_of(&e.kind, &e.payload) {
            out.push((e.seq, waybill.map(|w| w.to_string()), lane, reasons));
        }
        Ok(())
    })
    .unwrap();
    out
}

/// The seq of the first `command` entry for `name` that was accepted.
fn command_seq(db: &Path, name: &str) -> u64 {
    let mut seq = None;
    audit::entries(db, |e| {
        if e.kind == "command" && e.payload["command"] == name && e.payload["status"] == "accepted" {
            seq.get_or_insert(e.seq);
        }
        Ok(())
    })
    .unwrap();
    seq.unwrap_or_else(|| panic!("no accepted {name} on record"))
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(GUARD, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_and_a_target_survive_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sortline::mqtt::broker::Embedded::start().unwrap();
    let shipped = LineConfig::load(&repo("firmware-config/line.toml")).unwrap();
    let prefix =
        sortline::mqtt::Topics::new(&shipped.line.site.site_id, &shipped.line.site.line_id).prefix().to_string();
    let mut site = Site::connect(broker.addr(), &prefix).await;
    // Nobody is at an X-ray screen here: no parcel waits for a review.
    let no_review = |t: &mut toml::Table| set(t, "sampling.xray_review_ratio", value("{ green = 0.0, red = 0.0 }"));
    let scenario =
        sim::Scenario { arrival_period_ms: 700..=900, inspection_ms: 1_000..=2_000, ..sim::Scenario::demo(PARCELS, 8) };
    let Line { mut plc, config: cfg_path, planned, forward } =
        line(dir.path(), scenario, &broker.addr().to_string(), no_review).await;
    // The last green parcel to come: the one the risk officer targets mid-run.
    let targeted = planned.outcomes.iter().rev().find(|o| o.truth == "green").unwrap().waybill.clone();
    let log = dir.path().join("daemon.log");
    let db = dir.path().join(DB_FILE);

    // Run 1: the line runs; an operator stops it; parcels come on, all held; kill -9.
    let mut daemon = spawn(&cfg_path, &log);
    site.next("state", |s| s["state"] == "running" || s["state"] == "degraded").await;
    until("a first parcel decided", || !decisions(&db).is_empty()).await;
    site.command("line_stop", serde_json::json!({"request_id": "stop-1", "operator": "ops-1"})).await;
    let stopped_at = command_seq(&db, "line_stop");
    until("parcels decided while stopped", || decisions(&db).iter().filter(|d| d.0 > stopped_at).count() >= 3).await;
    daemon.kill9();

    // Run 2: still stopped, before any parcel; a target is added; kill -9 again.
    let mut daemon = spawn(&cfg_path, &log);
    site.next("state", |s| s["state"] == "stopped" && s["stopped_by"] == "ops-1").await;
    let before = decisions(&db).len();
    until("parcels decided in run 2", || decisions(&db).len() >= before + 3).await;
    let target = serde_json::json!({"request_id": "t-1", "operator": "risk-01", "target_id": "MT-RESTART",
        "criterion": {"by": "waybill", "value": targeted}, "reason": "tip-off"});
    site.command("target_add", target).await;
    daemon.kill9();

    // Run 3: the target is back, the line still stopped until an operator starts it.
    let mut daemon = spawn(&cfg_path, &log);
    site.next("state", |s| s["state"] == "stopped").await;
    site.command("line_start", serde_json::json!({"request_id": "start-1", "operator": "ops-1"})).await;
    let started_at = command_seq(&db, "line_start");
    assert!(plc.wait_finished(Duration::from_secs(120)).await, "the line did not run out");
    assert!(Command::new("kill").args(["-TERM", &daemon.pid().to_string()]).status().unwrap().success());
    let exit = tokio::task::spawn_blocking(move || daemon.wait()).await.unwrap().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(exit.success(), "{exit:?}\n{text}");
    forward.abort();

    assert!(audit::verify(&db, None).unwrap().is_intact());
    let all = decisions(&db);
    let held: Vec<_> = all.iter().filter(|d| d.0 > stopped_at && d.0 < started_at).collect();
    assert!(held.len() >= 6, "{} decided while stopped\n{text}", held.len());
    for (seq, waybill, lane, reasons) in &held {
        assert_eq!(*lane, Lane::Hold, "#{seq} {waybill:?}: {reasons:?}");
        assert!(reasons.contains(&Reason::LineStopped), "#{seq} {waybill:?}: {reasons:?}");
    }
    // Every start after the stop took it back from the store, before its first parcel.
    let mut starts = Vec::new();
    audit::entries(&db, |e| {
        if e.kind == "start" {
            starts.push((e.seq, e.payload["line"]["operator"]["stopped_by"].clone()));
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(starts.len(), 3, "{starts:?}");
    assert!(starts[1..].iter().all(|(_, by)| *by == "ops-1"), "{starts:?}");
    let (_, waybill, lane, reasons) =
        all.iter().find(|d| d.1.as_deref() == Some(targeted.as_str())).expect("the targeted parcel decided");
    assert_eq!(*lane, Lane::Inspection, "{waybill:?}: {reasons:?}");
    assert!(reasons.iter().any(|r| matches!(r, Reason::ManualTarget { target } if &**target == "MT-RESTART")));
    let report = plc.report();
    assert_eq!(report.unsafe_releases, 0);
    // Physically: what was decided while stopped left by the hold lane.
    for (_, waybill, _, _) in &held {
        if let Some(o) = waybill.as_ref().and_then(|w| report.outcomes.iter().find(|o| &o.waybill == w)) {
            assert_eq!(o.physical, Lane::Hold, "{o:?}");
        }
    }
}

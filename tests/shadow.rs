//! Shadow mode end to end: the built `sortline run` with `[commissioning] shadow = true`
//! against the simulated PLC over Modbus TCP and the simulated scanner on a pty, publishing to
//! an embedded broker. Every parcel must physically leave by hold, while the record keeps the
//! decisions as they were made and `sortline report` compares the two.

mod common;
use common::mqtt::subscriber;
use common::service::{line, set, spawn, Line};
use sortline::audit::DB_FILE;
use sortline::core::{Lane, Record};
use sortline::recorder::record_of;
use sortline::report::LaneCounts;
use sortline_sim as sim;
use std::process::Command;
use std::time::Duration;

const PARCELS: u32 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_shadow_mode_every_parcel_goes_to_hold_and_the_report_shows_what_would_have_been() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sortline::mqtt::broker::Embedded::start().unwrap();
    let mut published = subscriber(broker.addr(), "shadow-test", "sortline/v1/+/+/#").await;
    let scenario = sim::Scenario {
        arrival_period_ms: 900..=1_400,
        inspection_ms: 1_000..=2_000,
        ..sim::Scenario::demo(PARCELS, 5)
    };
    let shadow = |t: &mut toml::Table| {
        t.insert("commissioning".into(), toml::Value::Table(toml::Table::new()));
        set(t, "commissioning.shadow", true);
    };
    let Line { mut plc, config, forward, .. } = line(dir.path(), scenario, &broker.addr().to_string(), shadow).await;
    let sortline = env!("CARGO_BIN_EXE_sortline");
    let check = Command::new(sortline).arg("check-config").arg("--config").arg(&config).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(String::from_utf8_lossy(&check.stdout).contains("shadow mode"));

    let log_path = dir.path().join("daemon.log");
    let mut daemon = spawn(&config, &log_path);
    assert!(plc.wait_finished(Duration::from_secs(90)).await, "the line did not run out");
    let status = Command::new("kill").args(["-TERM", &daemon.pid().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || daemon.wait()).await.unwrap().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(exit.success(), "{exit:?}\n{log}");
    assert!(log.contains("shadow mode"), "the daemon says so at start\n{log}");
    forward.abort();

    // The referee's view: nothing left by release or inspection, and the host was obeyed.
    let referee = plc.report();
    assert_eq!((referee.lanes.release, referee.lanes.inspection), (0, 0), "{referee:?}");
    assert_eq!((referee.unsafe_releases, referee.wrong_lane, referee.in_flight), (0, 0, 0), "{referee:?}");
    for o in referee.outcomes.iter().filter(|o| o.tracking.is_some()) {
        assert_eq!((o.physical, o.destination), (Lane::Hold, Some(Lane::Hold)), "{o:?}");
    }

    // The record: the decisions as made, each marked shadow; only hold reached the PLC.
    let db = dir.path().join(DB_FILE);
    let mut decided = LaneCounts::default();
    let mut written = Vec::new();
    sortline::audit::entries(&db, |e| {
        match record_of(&e.kind, &e.payload) {
            Some(Record::Decision { lane, shadow, .. }) => {
                assert!(shadow, "a decision not marked shadow: {:?}", e.payload);
                match lane {
                    Lane::Release => decided.release += 1,
                    Lane::Inspection => decided.inspection += 1,
                    Lane::Hold => decided.hold += 1,
                }
            }
            Some(Record::Input(sortline::core::Input::DestinationWritten { lane_id, .. })) => written.push(lane_id),
            _ => {}
        }
        Ok(())
    })
    .unwrap();
    let hold_id = sortline::config::LineConfig::load(&config).unwrap().line.lanes.hold;
    assert!(!written.is_empty() && written.iter().all(|id| *id == hold_id), "{written:?}");
    assert!(decided.release > 0, "would-be releases are the point of the dry run: {decided:?}\n{log}");

    let report = sortline::report::report(&db, i64::MIN, i64::MAX).unwrap();
    let shadow = report.shadow.expect("a shadow comparison");
    assert_eq!(shadow.would, decided);
    assert_eq!(report.decided, decided, "decided counts stay the decisions made");
    let confirmed = shadow.confirmed;
    assert_eq!((confirmed.release, confirmed.inspection), (0, 0), "{shadow:?}");
    assert_eq!(confirmed.hold + shadow.unconfirmed, decided.release + decided.inspection + decided.hold);
    assert_eq!(report.missorts, 0);
    let text = Command::new(sortline).args(["report", "--data"]).arg(dir.path()).output().unwrap();
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("shadow mode:") && text.contains("would go"), "{text}");

    let verify = Command::new(sortline).args(["audit", "verify", "--data"]).arg(dir.path()).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));

    // A SCADA is told: by the state while running, and in every parcel record (the publisher
    // drained its outbox before the daemon stopped).
    let messages = published.drain();
    let running = messages.iter().filter(|v| v["state"] == "running");
    assert!(running.clone().count() > 0 && running.clone().all(|v| v["shadow"] == true), "{messages:?}");
    let parcels: Vec<_> = messages.iter().filter(|v| v.get("decided").is_some()).collect();
    assert!(!parcels.is_empty() && parcels.iter().all(|v| v["shadow"] == true), "{parcels:?}");
}

//! `sortline run` as a process: the built binary against the simulated PLC over Modbus TCP on
//! 127.0.0.1 and the simulated scanner on a pseudo-terminal it opens as a serial port, on the
//! machine's clock (the simulator in real time), with the platform's lists in the data
//! directory's manifest store, stopped by SIGTERM. A short, fast line keeps the run to seconds.

mod common;
use common::service::{line, spawn, Line};
use sortline::audit::{self, DB_FILE};
use sortline::core::{Lane, Record};
use sortline::recorder::{record_of, StopPayload};
use sortline_sim as sim;
use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

const PARCELS: u32 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_a_line_over_real_wires_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sortline::mqtt::broker::Embedded::start().unwrap();
    let parcels = subscribe(broker.addr(), "sortline/v1/+/+/parcel").await;
    let scenario = sim::Scenario {
        arrival_period_ms: 900..=1_400,
        inspection_ms: 1_000..=2_000,
        ..sim::Scenario::demo(PARCELS, 5)
    };
    let Line { mut plc, config, forward, .. } = line(dir.path(), scenario, &broker.addr().to_string(), |_| {}).await;
    let mut daemon = spawn(&config, &dir.path().join("daemon.log"));
    assert!(plc.wait_finished(Duration::from_secs(90)).await, "the line did not run out");
    // SIGHUP reloads the rule files: the chain records the set now in force.
    let db = dir.path().join(DB_FILE);
    assert!(Command::new("kill").args(["-HUP", &daemon.pid().to_string()]).status().unwrap().success());
    let reloaded = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        let mut found = false;
        let _ = audit::entries(&db, |e| {
            found |= e.kind == "rules";
            Ok(())
        });
        found
    });
    assert!(reloaded, "no rules entry after SIGHUP");
    // Stopping drains: the daemon waits for the last confirmations before it closes the chain.
    let status = Command::new("kill").args(["-TERM", &daemon.pid().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || daemon.wait()).await.unwrap().unwrap();
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    assert!(exit.success(), "{exit:?}\n{log}");
    forward.abort();

    let report = plc.report();
    assert_eq!(report.unsafe_releases, 0);
    assert_eq!(report.in_flight, 0);
    let v = audit::verify(&db, None).unwrap();
    assert!(v.is_intact());
    let mut decided = HashMap::new();
    let mut kinds = Vec::new();
    let mut stop = None;
    audit::entries(&db, |e| {
        kinds.push(e.kind.clone());
        if e.kind == "stop" {
            stop = Some(serde_json::from_value::<StopPayload>(e.payload.clone()).unwrap());
        }
        if let Some(Record::Decision { parcel, lane, reasons, .. }) = record_of(&e.kind, &e.payload) {
            decided.insert(parcel.tracking.0, (lane, reasons));
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(kinds.first().map(String::as_str), Some("start"));
    // A clean stop ends the chain with the stop entry and the checkpoint that signs it.
    let tail: Vec<&str> = kinds.iter().rev().take(2).rev().map(String::as_str).collect();
    assert_eq!(tail, ["stop", "checkpoint"], "{log}");
    // Its heartbeat stopped, the daemon waited for the PLC to show its watchdog's safe mode
    // (WATCHDOG_MS, 1 s, from the last heartbeat) and put that on record and in the log.
    let check = stop.unwrap().plc_safe_mode.unwrap_or_else(|| panic!("no plc_safe_mode\n{log}"));
    assert!(check.confirmed && !check.link_down, "{check:?}\n{log}");
    assert!((700..=2_200).contains(&check.waited_ms), "{check:?}");
    assert!(plc.safe_mode());
    assert!(log.contains("the PLC confirmed safe mode"), "{log}");
    eprintln!("safe mode confirmed {} ms after the drain", check.waited_ms);
    // Every tracked parcel was decided and left by the lane decided (no officer screen: a
    // parcel selected for review is held at its cut-off).
    for o in report.outcomes.iter().filter(|o| o.tracking.is_some()) {
        let (lane, _) = decided.get(&o.tracking.unwrap()).unwrap_or_else(|| panic!("{o:?} undecided\n{log}"));
        assert_eq!(o.physical, *lane, "{o:?}");
        if o.truth == "no_read" {
            assert_eq!(*lane, Lane::Hold, "{o:?}");
        }
    }
    assert!(
        decided.values().any(|(lane, _)| *lane == Lane::Release),
        "the store's lists reached the core: {decided:?}"
    );
    assert!(decided.len() >= PARCELS as usize - 2, "{} decided\n{log}", decided.len());
    // Every parcel's final record reached the broker (the publisher drains its outbox on stop).
    let tracked: HashSet<u64> = decided.keys().map(|t| u64::from(*t)).collect();
    let mut published = HashSet::new();
    while !published.is_superset(&tracked) {
        match parcels.recv_timeout(Duration::from_secs(10)) {
            Ok(t) => published.insert(t),
            Err(e) => panic!("{e}: published {published:?}, tracked {tracked:?}\n{log}"),
        };
    }
}

/// The tracking ids of the parcel records published under `filter`, as they arrive.
async fn subscribe(broker: std::net::SocketAddr, filter: &str) -> std::sync::mpsc::Receiver<u64> {
    let options = rumqttc::MqttOptions::new("service-test", broker.ip().to_string(), broker.port());
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
    client.subscribe(filter, rumqttc::QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (subscribed, acked) = tokio::sync::oneshot::channel();
    let mut subscribed = Some(subscribed);
    tokio::spawn(async move {
        let _client = client;
        while let Ok(event) = eventloop.poll().await {
            match event {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => {
                    let _ = subscribed.take().map(|s| s.send(()));
                }
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                    if let Some(t) = v["tracking"].as_u64() {
                        let _ = tx.send(t);
                    }
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), acked).await.expect("subscribed").unwrap();
    rx
}

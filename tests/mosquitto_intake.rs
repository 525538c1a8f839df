//! The platform's lists and the line's parcel records through Debian's Mosquitto with its
//! default configuration (at most 1,000 messages queued per client): the demo of 3,000 parcels
//! publishing to it, and the same with the broker frozen (SIGSTOP) for 30 s during the intake
//! and again during the parcels. Every list the platform sent is acknowledged by the intake,
//! every parcel record arrives, by event id: none missing, duplicates allowed and counted.

mod common;
use common::mqtt::Mosquitto;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use sortline::audit::{self, DB_FILE};
use sortline::config::LineConfig;
use sortline_sim as sim;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PARCELS: u32 = 3000;
const SEED: u64 = 7;
const FROZEN: Duration = Duration::from_secs(30);

/// What the site saw on the broker: each list acknowledged (with how often), each parcel
/// record's event id (with how often) and its parcel.
#[derive(Default)]
struct Seen {
    acks: HashMap<(String, u64), u32>,
    parcels: HashMap<i64, (u32, u64)>,
}

/// A watcher with a session of its own (the broker queues for it while it reconnects) and a
/// keep-alive longer than the freezes, so that it sees what the line published.
async fn watch(broker: std::net::SocketAddr, prefix: &str, seen: Arc<Mutex<Seen>>) {
    let mut options = MqttOptions::new("site-watcher", broker.ip().to_string(), broker.port());
    options.set_clean_session(false).set_keep_alive(Duration::from_secs(120)).set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let (acks, parcels) = (format!("{prefix}platform/ack"), format!("{prefix}parcel"));
    for topic in [&acks, &parcels] {
        client.subscribe(topic.as_str(), QoS::AtLeastOnce).await.unwrap();
    }
    let (subscribed, ready) = tokio::sync::oneshot::channel();
    let mut subscribed = Some(subscribed);
    tokio::spawn(async move {
        let _client = client;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = subscribed.take().map(|s| s.send(()));
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                    let mut seen = seen.lock().unwrap();
                    if p.topic == acks {
                        for l in v["lists"].as_array().into_iter().flatten() {
                            let key = (
                                l["waybill"].as_str().unwrap_or_default().to_string(),
                                l["version"].as_u64().unwrap_or(0),
                            );
                            *seen.acks.entry(key).or_default() += 1;
                        }
                    } else if let Some(id) = v["event_id"].as_i64() {
                        seen.parcels.entry(id).or_insert((0, v["serial"].as_u64().unwrap_or(0))).0 += 1;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(20), ready).await.expect("the watcher subscribed").unwrap();
}

async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let done = tokio::time::timeout(limit, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(done.is_ok(), "timed out: {what}");
}

async fn run(freeze: bool) {
    let Some(broker) = Mosquitto::start().await else { return };
    let cfg = LineConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/line.toml")).unwrap();
    let prefix = sortline::mqtt::Topics::new(&cfg.line.site.site_id, &cfg.line.site.line_id).prefix().to_string();
    let seen = Arc::new(Mutex::new(Seen::default()));
    watch(broker.addr, &prefix, seen.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_sortline"))
        .args(["demo", "--parcels", &PARCELS.to_string(), "--seed", &SEED.to_string(), "--quiet"])
        .args(["--mqtt", &broker.addr.to_string(), "--data"])
        .arg(dir.path())
        .arg("--summary")
        .arg(&summary)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("demo.log")).unwrap())
        .spawn()
        .unwrap();
    if freeze {
        // During the intake: the first acknowledgements are in, most lists still to come.
        until("the intake under way", Duration::from_secs(120), || !seen.lock().unwrap().acks.is_empty()).await;
        broker.signal(true);
        tokio::time::sleep(FROZEN).await;
        broker.signal(false);
        // During the parcels.
        until("parcels under way", Duration::from_secs(300), || seen.lock().unwrap().parcels.len() >= 100).await;
        broker.signal(true);
        tokio::time::sleep(FROZEN).await;
        broker.signal(false);
    }
    let exit = tokio::task::spawn_blocking(move || demo.wait()).await.unwrap().unwrap();
    let log = std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default();
    assert!(exit.success(), "{exit:?}\n{log}");
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!((s["unsafe_releases"].as_u64(), s["unaccounted"].as_u64()), (Some(0), Some(0)), "{s}");
    assert_eq!(s["mqtt"]["stats"]["outbox"]["depth"], 0, "every record left the box: {s}");

    // Every list the platform sent, acknowledged.
    let world = sim::World::new(sim::Scenario::demo(PARCELS, SEED), sortline_sim::demo::geometry(&cfg).unwrap());
    let lists: BTreeSet<(String, u64)> = world.manifests().iter().map(|m| (m.waybill.to_string(), m.version)).collect();
    // Every parcel the line completed, published: the chain says which they are.
    let mut completed = BTreeSet::new();
    audit::entries(&dir.path().join(DB_FILE), |e| {
        if e.kind == "completed" {
            completed.insert(e.payload["serial"].as_u64().unwrap_or(0));
        }
        Ok(())
    })
    .unwrap();
    assert!(completed.len() >= PARCELS as usize - 100, "{} parcels completed", completed.len());
    until("every record seen", Duration::from_secs(60), || {
        let seen = seen.lock().unwrap();
        let serials: BTreeSet<u64> = seen.parcels.values().map(|(_, serial)| *serial).collect();
        lists.iter().all(|l| seen.acks.contains_key(l)) && completed.is_subset(&serials)
    })
    .await;
    let seen = seen.lock().unwrap();
    let dup_acks: u32 = seen.acks.values().map(|n| n - 1).sum();
    let dup_records: u32 = seen.parcels.values().map(|(n, _)| n - 1).sum();
    let platform = &s["mqtt"]["platform"];
    eprintln!(
        "freeze {freeze}: {} lists acknowledged ({dup_acks} twice or more), {} parcel records by event id \
         ({dup_records} repeated), {} parcels completed; platform {platform}",
        lists.len(),
        seen.parcels.len(),
        completed.len()
    );
    assert_eq!(platform["refused"], 0, "{platform}");
    if freeze {
        assert!(platform["resent"].as_u64() > Some(0), "a frozen broker makes the platform resend: {platform}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_and_every_parcel_record_through_a_stock_mosquitto() {
    run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_lost_with_the_broker_frozen_during_the_intake_and_again_during_the_parcels() {
    run(true).await;
}

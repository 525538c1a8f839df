//! The demo daemon against a broker that goes away: a 30 s outage in the middle of a
//! 2,000-parcel run, and a daemon killed (SIGKILL) while parcel records wait in its outbox.
//! Every parcel record reaches the broker exactly once after dropping repeats by event id, in
//! event-id order, and the outbox ends empty. The broker sits behind a proxy the test cuts.

mod common;

use common::mqtt::{subscriber, Proxy};
use serde_json::Value;
use sortline::mqtt::broker;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const PREFIX: &str = "sortline/v1/zjg-ccsc/line-1/";

fn demo(parcels: u32, seed: u32, broker: &str, data: &Path, summary: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sortline"))
        .args(["demo", "--quiet", "--parcels", &parcels.to_string(), "--seed", &seed.to_string(), "--mqtt", broker])
        .arg("--data")
        .arg(data)
        .arg("--summary")
        .arg(summary)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data.with_extension("log")).unwrap())
        .spawn()
        .unwrap()
}

/// Parcel records by event id, repeats dropped; panics on a repeat that differs.
fn keep(records: &mut BTreeMap<i64, Value>, arrived: Vec<Value>) {
    for v in arrived {
        let id = v["event_id"].as_i64().expect("every parcel record has an event id");
        if let Some(earlier) = records.insert(id, v.clone()) {
            assert_eq!(earlier, v, "event {id} came twice with different content");
        }
    }
}

fn outbox_depth(data: &Path) -> i64 {
    rusqlite::Connection::open(data.join(sortline::mqtt::outbox::FILE))
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0)))
        .unwrap_or(0)
}

/// Polls every 50 ms, for at most `limit`, until `done`.
async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..limit.as_millis() / 50 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_seconds_without_the_broker_in_a_2000_parcel_run_lose_nothing() {
    let broker = broker::Embedded::start().unwrap();
    let mut proxy = Proxy::start(broker.addr()).await;
    let mut sub = subscriber(broker.addr(), "watch-outage", &format!("{PREFIX}parcel")).await;
    let dir = tempfile::tempdir().unwrap();
    let (data, summary) = (dir.path().join("data"), dir.path().join("summary.json"));
    let mut run = demo(2000, 11, &proxy.addr.to_string(), &data, &summary);
    let mut records = BTreeMap::new();
    let started = until(Duration::from_secs(300), || {
        keep(&mut records, sub.drain());
        records.len() >= 300
    })
    .await;
    assert!(started, "300 parcel records before the outage; log in {}", data.with_extension("log").display());
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(30)).await;
    keep(&mut records, sub.drain());
    let during = outbox_depth(&data);
    proxy.restore().await;
    let status = tokio::task::spawn_blocking(move || run.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    let s: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let tracked = s["stats"]["parcels"].as_u64().unwrap() as usize;
    assert!(
        until(Duration::from_secs(30), || {
            keep(&mut records, sub.drain());
            records.len() >= tracked
        })
        .await
    );
    assert!(during > 100, "records waited in the outbox during the outage: {during}");
    assert_eq!(records.len(), tracked, "one record per tracked parcel");
    let mut trackings: Vec<u64> = records.values().map(|v| v["tracking"].as_u64().unwrap()).collect();
    trackings.sort_unstable();
    trackings.dedup();
    assert_eq!(trackings.len(), tracked, "no parcel twice under two event ids");
    assert_eq!(s["mqtt"]["stats"]["outbox"]["depth"], 0, "{}", s["mqtt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_with_records_in_its_outbox_delivers_them_after_a_restart() {
    let broker = broker::Embedded::start().unwrap();
    let mut proxy = Proxy::start(broker.addr()).await;
    let mut sub = subscriber(broker.addr(), "watch-kill", &format!("{PREFIX}parcel")).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut run = demo(600, 5, &proxy.addr.to_string(), &data, &dir.path().join("first.json"));
    let mut records = BTreeMap::new();
    assert!(
        until(Duration::from_secs(300), || {
            keep(&mut records, sub.drain());
            !records.is_empty()
        })
        .await
    );
    proxy.cut();
    assert!(until(Duration::from_secs(300), || outbox_depth(&data) >= 50).await, "records wait in the outbox");
    run.kill().unwrap();
    run.wait().unwrap();
    let waiting: Vec<i64> = rusqlite::Connection::open(data.join(sortline::mqtt::outbox::FILE))
        .unwrap()
        .prepare("SELECT id FROM outbox WHERE topic LIKE '%/parcel'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!waiting.is_empty());
    proxy.restore().await;
    // The same data directory: the outbox is delivered first, then the new run's records.
    let second = dir.path().join("second.json");
    let mut again = demo(20, 6, &proxy.addr.to_string(), &data, &second);
    assert!(tokio::task::spawn_blocking(move || again.wait()).await.unwrap().unwrap().success());
    let s: Value = serde_json::from_slice(&std::fs::read(&second).unwrap()).unwrap();
    assert_eq!(s["mqtt"]["stats"]["outbox"]["depth"], 0);
    assert!(
        until(Duration::from_secs(30), || {
            keep(&mut records, sub.drain());
            waiting.iter().all(|id| records.contains_key(id))
        })
        .await
    );
    let ids: Vec<&i64> = records.keys().collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
}

//! The MQTT publisher against the embedded broker: every topic, the retained state, the last
//! will, commands accepted and refused, and an outage (a proxy between publisher and broker
//! cut and restored, and a publisher restart) after which every parcel record arrives exactly
//! once by event id, in order, and the outbox is empty. Waits are on channels, with timeouts
//! as guards only.

mod common;

use common::mqtt::{report, subscriber, Proxy, GUARD};
use serde_json::Value;
use sortline::core::{Alarm, Input, Severity};
use sortline::daemon::CoreMsg;
use sortline::mqtt::client::{self, SinkMsg};
use sortline::mqtt::outbox::{self, Outbox};
use sortline::mqtt::{broker, MqttStats, Output, Publisher, Settings, Topics};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;

fn settings(addr: SocketAddr, client_id: &str) -> Settings {
    Settings {
        host: addr.ip().to_string(),
        port: addr.port(),
        client_id: client_id.into(),
        credentials: None,
        keep_alive: Duration::from_secs(5),
        clean_session: true,
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        metrics_every: Duration::from_millis(100),
        outbox_capacity: 1000,
        inflight: 16,
        topics: Topics::new("T1", client_id),
        output: Output::Json,
    }
}

fn start(settings: Settings, dir: &Path) -> (Publisher, client::MqttSink, crossbeam_channel::Receiver<CoreMsg>) {
    let outbox = Outbox::open(&dir.join(outbox::FILE), settings.outbox_capacity).unwrap();
    let (sink, events) = client::sink(64);
    let (inputs, core) = crossbeam_channel::bounded(64);
    let metrics: client::MetricsFn = Box::new(|| {
        let mut m = serde_json::Map::new();
        m.insert("line".into(), serde_json::json!({ "parcels": 0 }));
        m
    });
    (Publisher::start(settings, outbox, events, inputs, metrics), sink, core)
}

async fn wait(stats: &mut watch::Receiver<MqttStats>, what: &str, f: impl FnMut(&MqttStats) -> bool) {
    tokio::time::timeout(GUARD, stats.wait_for(f)).await.unwrap_or_else(|_| panic!("timed out: {what}")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_topic_retained_state_and_commands() {
    let broker = broker::Embedded::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = settings(broker.addr(), "topics");
    let prefix = s.topics.prefix().to_string();
    let (publisher, sink, core) = start(s, dir.path());
    let mut stats = publisher.stats();
    wait(&mut stats, "connected", |s| s.connected).await;
    // Subscribed after the state was published: retained, it still arrives.
    let mut sub = subscriber(broker.addr(), "watch-topics", &format!("{prefix}#")).await;
    let state = sub.next("/state").await;
    assert_eq!(state["state"], "running");
    assert_eq!(state["version"], env!("CARGO_PKG_VERSION"));

    sink.send(SinkMsg::Parcel(report(7), 1)).await.unwrap();
    let parcel = sub.next("/parcel").await;
    assert_eq!((parcel["tracking"].as_u64(), parcel["decided"].as_str()), (Some(7), Some("hold")));
    assert_eq!(parcel["decision_ms"], 40);
    assert!(parcel["event_id"].as_i64().is_some());
    let alarm = Alarm { code: "plc_link", severity: Severity::Critical, tracking: None, message: "down".into() };
    sink.send(SinkMsg::Alarm(alarm, 2)).await.unwrap();
    let alarm = sub.next("/alarm").await;
    assert_eq!((alarm["code"].as_str(), alarm["severity"].as_str()), (Some("plc_link"), Some("critical")));
    let metrics = sub.next("/metrics").await;
    assert!(metrics["outbox"]["capacity"].as_u64() == Some(1000) && metrics["line"].is_object());

    let commander = sub.client.clone();
    let command = |name: &str, body: Value| {
        let topic = format!("{prefix}cmd/{name}");
        let client = commander.clone();
        async move { client.publish(topic, rumqttc::QoS::AtLeastOnce, false, body.to_string()).await.unwrap() }
    };
    command(
        "target_add",
        serde_json::json!({"request_id": "r1", "operator": "risk-02", "target_id": "MT-9",
            "criterion": {"by": "hs_prefix", "value": "3303"}, "reason": "tip-off"}),
    )
    .await;
    let reply = sub.next("/cmd/target_add/result").await;
    assert_eq!((reply["status"].as_str(), reply["request_id"].as_str()), (Some("accepted"), Some("r1")));
    let msg = core.recv_timeout(GUARD).unwrap();
    assert!(matches!(msg, CoreMsg::Input(Input::TargetAdd(ref t)) if &*t.id == "MT-9"), "{msg:?}");

    command("transfer", serde_json::json!({"request_id": "r2", "operator": "officer-1", "tracking": 12})).await;
    assert_eq!(sub.next("/cmd/transfer/result").await["status"], "accepted");
    assert!(matches!(core.recv_timeout(GUARD).unwrap(), CoreMsg::Input(Input::ManualTransfer { .. })));

    // Refused: each with a clear error, each recorded (an alarm to the core).
    for (name, body, error) in [
        ("transfer", serde_json::json!({"request_id": "r3", "tracking": 12}), "missing field `operator`"),
        ("transfer", serde_json::json!({"request_id": "r4", "operator": "o", "tracking": "x"}), "invalid type"),
        ("transfer", serde_json::json!({"request_id": "r5", "operator": "o", "tracking": -1}), "invalid value"),
        (
            "target_remove",
            serde_json::json!({"request_id": "r6", "operator": "o", "target_id": "x", "extra": 1}),
            "unknown field",
        ),
        (
            "target_remove",
            serde_json::json!({"request_id": "r7", "operator": "has space", "target_id": "x"}),
            "operator",
        ),
        ("reboot", serde_json::json!({"request_id": "r8", "operator": "o"}), "unknown command"),
    ] {
        command(name, body).await;
        let reply = sub.next(&format!("/cmd/{name}/result")).await;
        assert_eq!(reply["status"], "refused", "{reply}");
        assert!(reply["error"].as_str().unwrap().contains(error), "{reply}");
        match core.recv_timeout(GUARD).unwrap() {
            CoreMsg::Alarm(a) => {
                assert_eq!(a.code, "mqtt_command_refused");
                assert!(a.message.contains(reply["request_id"].as_str().unwrap()), "{}", a.message);
            }
            other => panic!("{other:?}"),
        }
    }
    let end = publisher.stop(GUARD).await.unwrap();
    assert_eq!((end.commands_accepted, end.commands_refused, end.outbox.depth), (2, 6, 0));
    assert_eq!(sub.next("/state").await["state"], "stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_marks_the_line_offline() {
    let broker = broker::Embedded::start().unwrap();
    let mut proxy = Proxy::start(broker.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let s = settings(proxy.addr, "will");
    let mut sub = subscriber(broker.addr(), "watch-will", &s.topics.state()).await;
    let (publisher, _sink, _core) = start(s, dir.path());
    assert_eq!(sub.next("/state").await["state"], "running");
    proxy.cut();
    assert_eq!(sub.next("/state").await["state"], "offline");
    proxy.restore().await;
    assert_eq!(sub.next("/state").await["state"], "running");
    publisher.stop(GUARD).await.unwrap();
    assert_eq!(sub.next("/state").await["state"], "stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_and_restart_deliver_every_parcel_once_in_order() {
    let broker = broker::Embedded::start().unwrap();
    let mut proxy = Proxy::start(broker.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let s = settings(proxy.addr, "outage");
    let mut sub = subscriber(broker.addr(), "watch-outage", &s.topics.parcel()).await;
    let (publisher, sink, _core) = start(s.clone(), dir.path());
    let mut stats = publisher.stats();
    wait(&mut stats, "connected", |s| s.connected).await;
    for t in 1..=20 {
        sink.send(SinkMsg::Parcel(report(t), 0)).await.unwrap();
    }
    wait(&mut stats, "first 20 acknowledged", |s| s.acked >= 20).await;
    proxy.cut();
    wait(&mut stats, "disconnected", |s| !s.connected).await;
    for t in 21..=50 {
        sink.send(SinkMsg::Parcel(report(t), 0)).await.unwrap();
    }
    // 30 parcel records wait (and the metrics taken meanwhile).
    wait(&mut stats, "30 waiting", |s| s.parcels == 50 && s.outbox.depth >= 30).await;
    // The daemon stops with the broker away: the outbox keeps what was not acknowledged.
    let end = publisher.stop(Duration::ZERO).await.unwrap();
    assert!(end.outbox.depth >= 30, "{end:?}");
    drop(sink);

    let (publisher, sink, _core) = start(s, dir.path());
    for t in 51..=60 {
        sink.send(SinkMsg::Parcel(report(t), 0)).await.unwrap();
    }
    proxy.restore().await;
    let mut stats = publisher.stats();
    wait(&mut stats, "outbox empty", |s| s.connected && s.outbox.depth == 0).await;
    let mut seen = std::collections::BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < 60 {
        let v = sub.next("/parcel").await;
        let id = v["event_id"].as_i64().unwrap();
        if seen.insert(id) {
            order.push((id, v["tracking"].as_u64().unwrap()));
        }
    }
    let trackings: Vec<u64> = order.iter().map(|o| o.1).collect();
    assert_eq!(trackings, (1..=60).collect::<Vec<u64>>());
    assert!(order.windows(2).all(|w| w[0].0 < w[1].0));
    let end = publisher.stop(GUARD).await.unwrap();
    assert_eq!(end.outbox.depth, 0);
}

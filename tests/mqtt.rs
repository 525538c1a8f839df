//! The MQTT publisher against a broker: every topic, the retained state and what changes it,
//! the last will, commands accepted and refused, the platform intake, TLS with a client
//! certificate, and an outage (a proxy between publisher and broker cut and restored, and a
//! publisher restart) after which every parcel record arrives exactly once by event id, in
//! order, and the outbox is empty. Waits are on channels, with timeouts as guards only.
//!
//! Every scenario runs twice: against the embedded broker (`embedded::…`) and, for interop,
//! against Debian's Mosquitto (`mosquitto::…`) started on a free loopback port. Without a
//! `mosquitto` binary the Mosquitto runs say so and pass, except under CI (`CI` set), where
//! `.ci/run` installs it and a missing one fails them.

mod common;

use common::mqtt::{report, subscriber, Mosquitto, Proxy, GUARD};
use serde_json::Value;
use sortline::core::{Alarm, Input, ParcelId, Severity, TrackingId};
use sortline::daemon::{Command, CoreMsg};
use sortline::mqtt::client::{self, SinkMsg};
use sortline::mqtt::outbox::{self, Outbox};
use sortline::mqtt::{MqttStats, Output, Publisher, Settings, Topics};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
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
        platform_intake: false,
        tls: None,
        topics: Topics::new("T1", client_id),
        output: Output::Json,
    }
}

fn start(settings: Settings, dir: &Path) -> (Publisher, client::MqttSink, crossbeam_channel::Receiver<CoreMsg>) {
    start_with(settings, dir, Arc::default())
}

/// As [`start`], the line's health read from `health`.
fn start_with(
    settings: Settings,
    dir: &Path,
    health: Arc<Mutex<client::Health>>,
) -> (Publisher, client::MqttSink, crossbeam_channel::Receiver<CoreMsg>) {
    let intake = settings
        .platform_intake
        .then(|| sortline::mqtt::intake::Intake::open(dir, sortline::core::Carriers::default()).unwrap());
    let outbox = Outbox::open(&dir.join(outbox::FILE), settings.outbox_capacity).unwrap();
    let (sink, events) = client::sink(64);
    let (inputs, core) = crossbeam_channel::bounded(64);
    let metrics: client::MetricsFn = Box::new(|| {
        let mut m = serde_json::Map::new();
        m.insert("line".into(), serde_json::json!({ "parcels": 0 }));
        m
    });
    // `reload_rules` as a daemon whose rule files are good, but for the operator `bad-rules`.
    let reload: client::ReloadFn = Box::new(|officer| {
        if officer.as_str() == "bad-rules" {
            Err("rules/bad.toml: rule \"X\": action: unknown".into())
        } else {
            Ok(Input::Rules { rules: vec![], officer: Some(officer.clone()) })
        }
    });
    let health: client::HealthFn = Box::new(move || health.lock().unwrap().clone());
    let hooks = client::Hooks { metrics, health, reload: Some(reload) };
    (Publisher::start(settings, outbox, events, inputs, hooks, intake), sink, core)
}

/// The next message to the core: an accepted command's record and input, checked against
/// the request id; answered as the daemon's core answers once it has stored and taken it.
fn accepted(core: &crossbeam_channel::Receiver<CoreMsg>, request_id: &str) -> Input {
    answer(core, request_id, None)
}

/// As [`accepted`], the core refusing it (`why`) as the line or the operator store may.
fn answer(core: &crossbeam_channel::Receiver<CoreMsg>, request_id: &str, refuse: Option<&str>) -> Input {
    match core.recv_timeout(GUARD).unwrap() {
        CoreMsg::Command(command) => {
            let Command { reply, input: Some(input), respond: Some(respond) } = *command else {
                panic!("an accepted command carries its input and a way to answer")
            };
            assert_eq!((reply.status, reply.request_id.as_deref()), ("accepted", Some(request_id)));
            respond.send(refuse.map_or(reply.clone(), |why| reply.refused_with(why.into()))).unwrap();
            input
        }
        other => panic!("{other:?}"),
    }
}

async fn wait(stats: &mut watch::Receiver<MqttStats>, what: &str, f: impl FnMut(&MqttStats) -> bool) {
    tokio::time::timeout(GUARD, stats.wait_for(f)).await.unwrap_or_else(|_| panic!("timed out: {what}")).unwrap();
}

async fn every_topic_retained_state_and_commands(broker: SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(broker, "topics");
    let prefix = s.topics.prefix().to_string();
    let (publisher, sink, core) = start(s, dir.path());
    let mut stats = publisher.stats();
    wait(&mut stats, "connected", |s| s.connected).await;
    // Subscribed after the state was published: retained, it still arrives.
    let mut sub = subscriber(broker, "watch-topics", &format!("{prefix}#")).await;
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
    let checkpoint = sortline::audit::SignedCheckpoint {
        entry_seq: 1001,
        wall_ms: 3,
        payload: sortline::audit::CheckpointPayload {
            seq: 1000,
            head: "ab".repeat(32),
            public_key: "cd".repeat(32),
            signature: "ef".repeat(64),
        },
    };
    sink.send(SinkMsg::Checkpoint(checkpoint)).await.unwrap();
    let anchor = sub.next("/audit/checkpoint").await;
    assert_eq!((anchor["seq"].as_u64(), anchor["entry_seq"].as_u64()), (Some(1000), Some(1001)));
    assert!(anchor["event_id"].as_i64().is_some() && anchor["head"] == "ab".repeat(32));
    // Retained: a subscriber that comes later still gets the latest.
    let mut late = subscriber(broker, "watch-anchor", &format!("{prefix}audit/checkpoint")).await;
    assert_eq!(late.next("/audit/checkpoint").await["seq"], 1000);
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
    // The reply comes once the core has taken (and stored) the command, not before.
    let input = accepted(&core, "r1");
    assert!(matches!(input, Input::TargetAdd(ref t) if &*t.id == "MT-9"), "{input:?}");
    let reply = sub.next("/cmd/target_add/result").await;
    assert_eq!((reply["status"].as_str(), reply["request_id"].as_str()), (Some("accepted"), Some("r1")));

    let transfer =
        serde_json::json!({"request_id": "r2", "operator": "officer-1", "tracking": 12, "boot": 3, "serial": 90});
    command("transfer", transfer).await;
    let parcel = ParcelId { tracking: TrackingId(12), boot: 3, serial: 90 };
    assert!(matches!(accepted(&core, "r2"), Input::ManualTransfer { parcel: p, .. } if p == parcel));
    assert_eq!(sub.next("/cmd/transfer/result").await["status"], "accepted");
    command(
        "set_rates",
        serde_json::json!({"request_id": "r2a", "operator": "ops-1", "xray_review_ratio": {"green": 0.2, "red": 1.0}}),
    )
    .await;
    assert!(matches!(accepted(&core, "r2a"), Input::Parameters { sample_rate: None, xray_review_ratio: Some(_), .. }));
    assert_eq!(sub.next("/cmd/set_rates/result").await["status"], "accepted");
    command("line_stop", serde_json::json!({"request_id": "r2b", "operator": "ops-1"})).await;
    assert!(matches!(accepted(&core, "r2b"), Input::LineControl { running: false, .. }));
    assert_eq!(sub.next("/cmd/line_stop/result").await["status"], "accepted");
    // Well formed, and refused by the line itself: the reply says so.
    command("line_stop", serde_json::json!({"request_id": "r2d", "operator": "ops-2"})).await;
    answer(&core, "r2d", Some("the line is already stopped"));
    let reply = sub.next("/cmd/line_stop/result").await;
    assert_eq!(
        (reply["status"].as_str(), reply["error"].as_str()),
        (Some("refused"), Some("the line is already stopped"))
    );
    command("reload_rules", serde_json::json!({"request_id": "r2c", "operator": "ops-1"})).await;
    assert!(matches!(accepted(&core, "r2c"), Input::Rules { .. }));
    assert_eq!(sub.next("/cmd/reload_rules/result").await["status"], "accepted");

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
        ("set_rates", serde_json::json!({"request_id": "r9", "operator": "o", "sample_rate": 0.5}), "invalid type"),
        ("reload_rules", serde_json::json!({"request_id": "r10", "operator": "bad-rules"}), "action: unknown"),
    ] {
        command(name, body).await;
        let reply = sub.next(&format!("/cmd/{name}/result")).await;
        assert_eq!(reply["status"], "refused", "{reply}");
        assert!(reply["error"].as_str().unwrap().contains(error), "{reply}");
        match core.recv_timeout(GUARD).unwrap() {
            CoreMsg::Command(command) => {
                let Command { reply: record, input: None, .. } = *command else { panic!("refused: no input") };
                assert_eq!((record.status, record.request_id.as_deref()), ("refused", reply["request_id"].as_str()));
            }
            other => panic!("{other:?}"),
        }
        match core.recv_timeout(GUARD).unwrap() {
            CoreMsg::Alarm(a) => {
                assert_eq!(a.code, "mqtt_command_refused");
                assert!(a.message.contains(reply["request_id"].as_str().unwrap()), "{}", a.message);
            }
            other => panic!("{other:?}"),
        }
    }
    let end = publisher.stop(GUARD).await.unwrap();
    assert_eq!((end.commands_accepted, end.commands_refused, end.outbox.depth), (5, 9, 0));
    assert_eq!(sub.next("/state").await["state"], "stopped");
}

async fn last_will_marks_the_line_offline(broker: SocketAddr) {
    let mut proxy = Proxy::start(broker).await;
    let dir = tempfile::tempdir().unwrap();
    let s = settings(proxy.addr, "will");
    let mut sub = subscriber(broker, "watch-will", &s.topics.state()).await;
    let (publisher, _sink, _core) = start(s, dir.path());
    assert_eq!(sub.next("/state").await["state"], "running");
    proxy.cut();
    assert_eq!(sub.next("/state").await["state"], "offline");
    proxy.restore().await;
    assert_eq!(sub.next("/state").await["state"], "running");
    publisher.stop(GUARD).await.unwrap();
    assert_eq!(sub.next("/state").await["state"], "stopped");
}

async fn outage_and_restart_deliver_every_parcel_once_in_order(broker: SocketAddr) {
    let mut proxy = Proxy::start(broker).await;
    let dir = tempfile::tempdir().unwrap();
    let s = settings(proxy.addr, "outage");
    let mut sub = subscriber(broker, "watch-outage", &s.topics.parcel()).await;
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

/// The platform intake: declarations and targeting stored before they reach the core, a batch
/// with a bad element stores the rest, bad messages kept as dead letters with the reason and
/// raised as alarms, a redelivery changes nothing, and the store holds all of it afterwards.
async fn platform_intake_stores_then_feeds_the_core_and_keeps_dead_letters(broker: SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let s = Settings { platform_intake: true, ..settings(broker, "intake") };
    let topics = s.topics.clone();
    let (publisher, _sink, core) = start(s, dir.path());
    let mut stats = publisher.stats();
    wait(&mut stats, "connected", |s| s.connected).await;
    // The platform listens for the intake's acknowledgements: its proof of delivery.
    let mut platform = subscriber(broker, "platform", &topics.platform_acks()).await;
    let send = |topic: String, body: String| {
        let client = platform.client.clone();
        async move { client.publish(topic, rumqttc::QoS::AtLeastOnce, false, body).await.unwrap() }
    };
    // Not retained: the platform publishes once the intake's subscription stands.
    wait(&mut stats, "subscribed", |s| s.subscribed).await;
    send(topics.platform_manifests(), common::declaration_json("EA123456785CN", 1).to_string()).await;
    let mut bad = common::declaration_json("EA000000000CN", 1);
    bad["channel"] = "blue".into();
    let batch = serde_json::json!([common::declaration_json("RR123456785CN", 2), bad]);
    send(topics.platform_manifests(), batch.to_string()).await;
    send(topics.platform_manifests(), "{not json".into()).await;
    // The platform says it again (a QoS 1 redelivery): nothing changes.
    send(topics.platform_manifests(), common::declaration_json("EA123456785CN", 1).to_string()).await;
    let target = serde_json::json!({"action": "add", "target_id": "PT-1", "author": "platform",
        "criterion": {"by": "consignor", "value": "ACME"}, "reason": "risk model"});
    send(topics.platform_targets(), target.to_string()).await;
    send(
        topics.platform_targets(),
        serde_json::json!({"action": "remove", "target_id": "NOPE", "author": "p"}).to_string(),
    )
    .await;
    wait(&mut stats, "six messages taken", |s| s.intake.messages >= 6).await;
    let mut acks = Vec::new();
    for _ in 0..6 {
        acks.push(platform.next("/platform/ack").await);
    }
    let lists = |a: &Value| -> Vec<(String, u64, String)> {
        a["lists"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["waybill"].as_str().unwrap().to_string(),
                    l["version"].as_u64().unwrap(),
                    l["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let owned = |w: &str, v: u64, st: &str| (w.to_string(), v, st.to_string());
    assert_eq!(lists(&acks[0]), [owned("EA123456785CN", 1, "stored")]);
    assert_eq!(lists(&acks[1]), [owned("RR123456785CN", 2, "stored"), owned("EA000000000CN", 1, "refused")]);
    assert!(acks[1]["lists"][1]["reason"].as_str().unwrap().contains("channel"), "{}", acks[1]);
    assert!(lists(&acks[2]).is_empty() && acks[2]["refused"].as_str().unwrap().contains("not JSON"), "{}", acks[2]);
    assert_eq!(lists(&acks[3]), [owned("EA123456785CN", 1, "unchanged")], "a resend is acknowledged again");
    assert_eq!(
        (acks[4]["target"]["target_id"].as_str(), acks[4]["target"]["status"].as_str()),
        (Some("PT-1"), Some("stored"))
    );
    assert_eq!(
        (acks[5]["target"]["target_id"].as_str(), acks[5]["target"]["status"].as_str()),
        (Some("NOPE"), Some("refused"))
    );
    assert!(acks.iter().all(|a| a["event_id"].is_i64() && a["topic"].as_str().unwrap().starts_with(topics.prefix())));
    let end = publisher.stop(GUARD).await.unwrap();
    let i = &end.intake;
    assert_eq!((i.stored, i.unchanged, i.targets, i.dead_letters, i.store_failures), (2, 1, 1, 3, 0), "{i:?}");

    let mut manifests = Vec::new();
    let mut alarms = Vec::new();
    let mut targets = 0;
    while let Ok(msg) = core.try_recv() {
        match msg {
            CoreMsg::Input(Input::Manifest(m)) => manifests.push(m.waybill.to_string()),
            CoreMsg::Input(Input::TargetAdd(t)) => targets += usize::from(&*t.id == "PT-1"),
            CoreMsg::Alarm(a) => alarms.push((a.code, a.message)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(manifests, ["EA123456785CN", "RR123456785CN"]);
    assert_eq!(targets, 1);
    assert_eq!(alarms.len(), 3, "{alarms:?}");
    assert!(alarms.iter().all(|(code, _)| *code == "platform_message_refused"));
    assert!(alarms[0].1.contains("declaration 2 of the batch") && alarms[0].1.contains("channel"), "{alarms:?}");

    let store = sortline::manifest::ManifestStore::open(&dir.path().join(sortline::manifest::DB_FILE)).unwrap();
    assert_eq!(store.len(), 2);
    assert_eq!(store.standing_targets(i64::MAX - 1).unwrap().len(), 1);
    let letters = store.dead_letters().unwrap();
    assert_eq!(letters.len(), 3);
    assert!(letters[2].3.contains("no standing target") || letters[2].3.contains("NOPE"), "{letters:?}");
}

/// A batch far above rumqttc's default 10 KiB packet limit is taken whole.
async fn a_large_batch_of_declarations_is_taken_whole(broker: SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let s = Settings { platform_intake: true, ..settings(broker, "intake-batch") };
    let topic = s.topics.platform_manifests();
    let (publisher, _sink, core) = start(s, dir.path());
    let mut stats = publisher.stats();
    wait(&mut stats, "subscribed", |s| s.subscribed).await;
    let waybill = |n: u32| {
        let serial: [u8; 8] = format!("{n:08}").as_bytes().try_into().unwrap();
        format!("EA{n:08}{}CN", sortline::core::waybill::s10_check_digit(&serial))
    };
    let batch: Vec<Value> = (1..=300).map(|n| common::declaration_json(&waybill(n), 1)).collect();
    let body = serde_json::to_string(&batch).unwrap();
    assert!(body.len() > 100 * 1024, "{} bytes", body.len());
    // The core takes its inputs as they come (its queue is bounded).
    let manifests = tokio::task::spawn_blocking(move || {
        (0..300).filter(|_| matches!(core.recv_timeout(GUARD), Ok(CoreMsg::Input(Input::Manifest(_))))).count()
    });
    let platform = subscriber(broker, "platform-batch", &format!("{}none", Topics::new("T1", "x").prefix())).await;
    platform.client.publish(topic, rumqttc::QoS::AtLeastOnce, false, body).await.unwrap();
    wait(&mut stats, "the batch stored", |s| s.intake.stored == 300).await;
    assert_eq!(manifests.await.unwrap(), 300);
    let end = publisher.stop(GUARD).await.unwrap();
    assert_eq!((end.intake.dead_letters, end.connection_errors), (0, 0), "{:?}", end.intake);
}

/// The retained state follows the line: safe mode, an operator's stop, a link down.
async fn state_follows_safe_mode_stop_and_degraded_links(broker: SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(broker, "health");
    let mut sub = subscriber(broker, "watch-health", &s.topics.state()).await;
    let health = Arc::new(Mutex::new(client::Health::default()));
    let (publisher, _sink, _core) = start_with(s, dir.path(), health.clone());
    assert_eq!(sub.next("/state").await["state"], "running");
    health.lock().unwrap().degraded = vec!["plc_link_down"];
    let state = sub.next("/state").await;
    assert_eq!((state["state"].as_str(), state["conditions"][0].as_str()), (Some("degraded"), Some("plc_link_down")));
    health.lock().unwrap().stopped_by = Some("ops-1".into());
    let state = sub.next("/state").await;
    assert_eq!((state["state"].as_str(), state["stopped_by"].as_str()), (Some("stopped"), Some("ops-1")));
    health.lock().unwrap().safe_mode = true;
    let state = sub.next("/state").await;
    assert_eq!((state["state"].as_str(), state["safe_mode"].as_bool()), (Some("safe_mode"), Some(true)));
    *health.lock().unwrap() = client::Health::default();
    assert_eq!(sub.next("/state").await["state"], "running");
    publisher.stop(GUARD).await.unwrap();
    assert_eq!(sub.next("/state").await["state"], "stopped");
}

/// A test CA, and a certificate it signed for 127.0.0.1 (the broker) and one for a client.
struct Pki {
    ca_pem: String,
    server: (Vec<rustls::pki_types::CertificateDer<'static>>, rustls::pki_types::PrivateKeyDer<'static>),
    client_pem: (String, String),
    server_pem: (String, String),
    ca_der: rustls::pki_types::CertificateDer<'static>,
}

/// A client's PEM files, as `[mqtt.tls]` names them.
struct ClientFiles {
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

impl Pki {
    /// The CA certificate, and the client's certificate and key, written into `dir`.
    fn client_files(&self, dir: &Path) -> ClientFiles {
        ClientFiles {
            ca: write(dir, "ca.pem", &self.ca_pem),
            cert: write(dir, "client.pem", &self.client_pem.0),
            key: write(dir, "client.key", &self.client_pem.1),
        }
    }
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "sortline test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let signed = |names: Vec<String>| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
        (cert, key)
    };
    let (server_cert, server_key) = signed(vec!["127.0.0.1".into()]);
    let (client_cert, client_key) = signed(vec!["sortline-client".into()]);
    Pki {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().clone(),
        server: (
            vec![server_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        ),
        client_pem: (client_cert.pem(), client_key.serialize_pem()),
        server_pem: (server_cert.pem(), server_key.serialize_pem()),
    }
}

/// A TLS front for the broker that requires a client certificate from `pki`'s CA: the
/// decrypted stream is passed on to `target`.
async fn tls_front(pki: &Pki, target: SocketAddr) -> SocketAddr {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone()).build().unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server.0.clone(), pki.server.1.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else { return };
                let Ok(mut plain) = TcpStream::connect(target).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

/// TLS with a client certificate: the publisher trusts only the configured CA and presents
/// its own certificate; a publisher trusting another CA never connects.
async fn tls_with_a_client_certificate(broker: SocketAddr) {
    let ours = pki();
    let front = tls_front(&ours, broker).await;
    let dir = tempfile::tempdir().unwrap();
    let files = ours.client_files(dir.path());
    let tls = sortline::mqtt::tls_config(&files.ca, Some((&files.cert, &files.key))).unwrap();
    let s = Settings { tls: Some(tls), ..settings(front, "tls") };
    let mut sub = subscriber(broker, "watch-tls", &s.topics.parcel()).await;
    let (publisher, sink, _core) = start(s, dir.path());
    sink.send(SinkMsg::Parcel(report(3), 0)).await.unwrap();
    assert_eq!(sub.next("/parcel").await["tracking"], 3);
    publisher.stop(GUARD).await.unwrap();

    // Another CA: the broker's certificate is not trusted, so no connection is made.
    let other = pki();
    let stranger = write(dir.path(), "other-ca.pem", &other.ca_pem);
    let s = Settings {
        tls: Some(sortline::mqtt::tls_config(&stranger, Some((&files.cert, &files.key))).unwrap()),
        ..settings(front, "tls-2")
    };
    let other_dir = tempfile::tempdir().unwrap();
    let (publisher, _sink, _core) = start(s, other_dir.path());
    let mut stats = publisher.stats();
    wait(&mut stats, "a failed handshake", |s| s.connection_errors >= 2).await;
    assert_eq!(stats.borrow().connects, 0);
    publisher.stop(Duration::ZERO).await.unwrap();
    // Files that hold no certificate are refused before any connection.
    let empty = write(dir.path(), "empty.pem", "");
    assert!(sortline::mqtt::tls_config(&empty, None).unwrap_err().contains("no certificate"));
}

/// Each scenario against each broker.
macro_rules! against_each_broker {
    ($($scenario:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let broker = sortline::mqtt::broker::Embedded::start().unwrap();
                    super::$scenario(broker.addr()).await;
                }
            )*
        }
        mod mosquitto {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(broker) = super::Mosquitto::start().await else { return };
                    super::$scenario(broker.addr).await;
                }
            )*
        }
    };
}

against_each_broker!(
    every_topic_retained_state_and_commands,
    last_will_marks_the_line_offline,
    outage_and_restart_deliver_every_parcel_once_in_order,
    platform_intake_stores_then_feeds_the_core_and_keeps_dead_letters,
    a_large_batch_of_declarations_is_taken_whole,
    state_follows_safe_mode_stop_and_degraded_links,
    tls_with_a_client_certificate
);

/// Interop of TLS itself: Mosquitto's own TLS listener, requiring client certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_tls_listener_takes_our_client_certificate() {
    let ours = pki();
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (cert_pem, key_pem) = ours.server_pem.clone();
    let Some(broker) = Mosquitto::start_with(|dir| {
        let (ca, cert, key) = (
            write(dir, "ca.pem", &ours.ca_pem),
            write(dir, "server.pem", &cert_pem),
            write(dir, "server.key", &key_pem),
        );
        format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            ca.display(),
            cert.display(),
            key.display()
        )
    })
    .await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = ours.client_files(dir.path());
    let tls = sortline::mqtt::tls_config(&files.ca, Some((&files.cert, &files.key))).unwrap();
    let s = Settings { tls: Some(tls), ..settings(SocketAddr::from(([127, 0, 0, 1], tls_port)), "mtls") };
    let mut sub = subscriber(broker.addr, "watch-mtls", &s.topics.parcel()).await;
    let (publisher, sink, _core) = start(s, dir.path());
    sink.send(SinkMsg::Parcel(report(5), 0)).await.unwrap();
    assert_eq!(sub.next("/parcel").await["tracking"], 5);
    publisher.stop(GUARD).await.unwrap();
    // Without a client certificate Mosquitto refuses the handshake.
    let s = Settings {
        tls: Some(sortline::mqtt::tls_config(&files.ca, None).unwrap()),
        ..settings(SocketAddr::from(([127, 0, 0, 1], tls_port)), "mtls-anon")
    };
    let other = tempfile::tempdir().unwrap();
    let (publisher, _sink, _core) = start(s, other.path());
    let mut stats = publisher.stats();
    wait(&mut stats, "a refused handshake", |s| s.connection_errors >= 2).await;
    assert_eq!(stats.borrow().connects, 0);
    publisher.stop(Duration::ZERO).await.unwrap();
}

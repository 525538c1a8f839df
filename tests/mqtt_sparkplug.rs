//! The publisher's Sparkplug B output against the embedded broker, watched by a host-like
//! subscriber that checks every message's seq: births on connect (seq 0 and 1, bdSeq matching
//! the will, one more per connection and across a restart), parcel records as DDATA that
//! decode to their fields, the NDEATH as the last will when the connection is cut and before a
//! clean stop, and a rebirth command answered with new births.

mod common;

use common::mqtt::{report, subscriber, Proxy, Subscriber, GUARD};
use prost::Message as _;
use sortline::config::{Mqtt, Site};
use sortline::mqtt::client::{MqttSink, SinkMsg};
use sortline::mqtt::sparkplug::{self, Ids, MessageType, Metric, Payload, Value};
use sortline::mqtt::wiring::{Figures, Prepared};
use sortline::mqtt::{broker, Output, Publisher, Settings};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// `[mqtt]` with `[mqtt.sparkplug]` as a site would write it, through the configuration's own
/// conversion: edge node `node` of group `T1`.
fn sparkplug_settings(addr: SocketAddr, node: &str) -> (Settings, Ids) {
    let text = format!(
        "keep_alive_s = 5\nclean_session = true\nreconnect_backoff_min_ms = 20\nreconnect_backoff_max_ms = 200\n\
         metrics_every_s = 1\noutbox_capacity = 1000\ninflight = 16\n\
         [sparkplug]\ngroup_id = \"T1\"\nedge_node_id = \"{node}\"\n"
    );
    let mqtt: Mqtt = toml::from_str(&text).unwrap();
    let s = mqtt.settings(&addr.to_string(), &Site { site_id: "site".into(), line_id: node.into() }).unwrap();
    let Output::SparkplugB(c) = &s.output else { panic!("not Sparkplug: {:?}", s.output) };
    let ids = c.ids.clone();
    (s, ids)
}

/// The publisher as the daemon wires it (the bdSeq file in the data directory `dir`).
fn start(
    settings: Settings,
    dir: &Path,
) -> (Publisher, MqttSink, crossbeam_channel::Receiver<sortline::daemon::CoreMsg>) {
    let prepared = Prepared::open(settings, dir, Default::default()).unwrap();
    let sink = prepared.sink.clone();
    let (inputs, core) = crossbeam_channel::bounded(64);
    let figures = Figures {
        line: Arc::new(Mutex::new(Default::default())),
        mode: Arc::new(Mutex::new(Default::default())),
        plc: Arc::new(Mutex::new(Default::default())),
        scanner: None,
    };
    (prepared.start(inputs, figures, dir.to_path_buf()), sink, core)
}

/// What a Sparkplug host keeps of one edge node: the aliases its DBIRTH declared and the seq
/// of its last message, checked on every message.
struct Host {
    sub: Subscriber,
    ids: Ids,
    names: HashMap<u64, String>,
    seq: Option<u64>,
}

struct Msg {
    kind: MessageType,
    payload: Payload,
}

impl Msg {
    fn bd_seq(&self) -> Option<u64> {
        self.payload.metrics.iter().find(|m| m.name.as_deref() == Some(sparkplug::BD_SEQ)).and_then(|m| match m.value {
            Some(Value::LongValue(n)) => Some(n),
            _ => None,
        })
    }
}

impl Host {
    async fn new(broker: SocketAddr, ids: &Ids, id: &str) -> Host {
        let filter = format!("{}/#", sparkplug::NAMESPACE);
        Host { sub: subscriber(broker, id, &filter).await, ids: ids.clone(), names: HashMap::new(), seq: None }
    }

    /// The node's next message; its seq follows the last one (births restart at 0).
    async fn next(&mut self) -> Msg {
        loop {
            let (topic, bytes) = self.sub.next_raw("").await;
            let kinds = [MessageType::NBirth, MessageType::NDeath, MessageType::DBirth, MessageType::DData];
            let Some(kind) = kinds.into_iter().find(|k| self.ids.topic(*k) == topic) else { continue };
            let payload = Payload::decode(&bytes[..]).unwrap();
            match kind {
                MessageType::NDeath => assert_eq!(payload.seq, None, "a death has no seq"),
                MessageType::NBirth => assert_eq!(payload.seq, Some(0)),
                _ => {
                    let expected = self.seq.map(|s| (s + 1) % 256);
                    assert_eq!(payload.seq, expected, "{kind:?} out of sequence");
                }
            }
            if kind != MessageType::NDeath {
                self.seq = payload.seq;
            }
            if kind == MessageType::DBirth {
                self.names = payload.metrics.iter().map(|m| (m.alias.unwrap(), m.name.clone().unwrap())).collect();
            }
            return Msg { kind, payload };
        }
    }

    async fn expect(&mut self, kind: MessageType) -> Msg {
        let m = self.next().await;
        assert_eq!(m.kind, kind);
        m
    }

    /// The next DDATA carrying a parcel record, by field name.
    async fn parcel(&mut self) -> HashMap<String, Option<Value>> {
        loop {
            let m = self.next().await;
            if m.kind != MessageType::DData {
                continue;
            }
            let fields: HashMap<String, Option<Value>> = m
                .payload
                .metrics
                .iter()
                .map(|x: &Metric| {
                    let name = self.names.get(&x.alias.unwrap()).expect("alias declared in the DBIRTH");
                    (name.clone(), x.value.clone())
                })
                .collect();
            if fields.contains_key("parcel/tracking") {
                return fields;
            }
        }
    }
}

fn long(v: &Option<Value>) -> u64 {
    match v {
        Some(Value::LongValue(n)) => *n,
        Some(Value::IntValue(n)) => u64::from(*n),
        other => panic!("not an integer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn births_then_parcels_as_ddata_and_bd_seq_across_a_restart() {
    let broker = broker::Embedded::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (s, ids) = sparkplug_settings(broker.addr(), "spb-data");
    let mut host = Host::new(broker.addr(), &ids, "host-data").await;
    let (publisher, sink, _core) = start(s.clone(), dir.path());

    let nbirth = host.expect(MessageType::NBirth).await;
    assert_eq!(nbirth.bd_seq(), Some(0), "the first connection");
    let dbirth = host.expect(MessageType::DBirth).await;
    let state = dbirth.payload.metrics.iter().find(|m| m.name.as_deref() == Some("state")).unwrap();
    // No PLC behind this publisher: the line is degraded, as the JSON state says too.
    assert_eq!(state.value, Some(Value::StringValue("degraded".into())));

    for t in 1..=3 {
        sink.send(SinkMsg::Parcel(report(t), 1_764_410_785_000)).await.unwrap();
    }
    let mut event_ids = Vec::new();
    for t in 1..=3u64 {
        let p = host.parcel().await;
        assert_eq!(long(&p["parcel/tracking"]), t);
        assert_eq!(p["parcel/decided"], Some(Value::StringValue("hold".into())));
        assert_eq!(long(&p["parcel/decision_ms"]), 40);
        assert_eq!(p["parcel/waybill"], None, "null: no waybill");
        assert_eq!(p["parcel/lost"], Some(Value::BooleanValue(false)));
        assert_eq!(long(&p["parcel/wall_ms"]), 1_764_410_785_000);
        event_ids.push(long(&p["parcel/event_id"]));
    }
    assert!(event_ids.windows(2).all(|w| w[0] < w[1]), "{event_ids:?}");

    // A clean stop: the line's state, then the NDEATH of this session before the disconnect.
    let end = publisher.stop(GUARD).await.unwrap();
    assert_eq!(end.outbox.depth, 0);
    let death = loop {
        let m = host.next().await;
        if m.kind == MessageType::NDeath {
            break m;
        }
    };
    assert_eq!(death.bd_seq(), Some(0));
    drop(sink);

    // bdSeq is kept on disk, in the data directory: the next run's first connection is one more.
    assert!(dir.path().join(sparkplug::BD_SEQ_FILE).is_file());
    let (publisher, _sink, _core) = start(s, dir.path());
    assert_eq!(host.expect(MessageType::NBirth).await.bd_seq(), Some(1));
    host.expect(MessageType::DBirth).await;
    publisher.stop(GUARD).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ndeath_is_the_last_will() {
    let broker = broker::Embedded::start().unwrap();
    let mut proxy = Proxy::start(broker.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let (s, ids) = sparkplug_settings(proxy.addr, "spb-will");
    let mut host = Host::new(broker.addr(), &ids, "host-will").await;
    let (publisher, _sink, _core) = start(s, dir.path());
    let first = host.expect(MessageType::NBirth).await.bd_seq().unwrap();
    proxy.cut();
    let death = loop {
        let m = host.next().await;
        if m.kind == MessageType::NDeath {
            break m;
        }
    };
    assert_eq!(death.bd_seq(), Some(first), "the death of the session that was born");
    assert_eq!(death.payload.metrics.len(), 1, "bdSeq alone");
    proxy.restore().await;
    let reborn = host.expect(MessageType::NBirth).await;
    assert_eq!(reborn.bd_seq(), Some(first + 1), "a new connection, a new bdSeq");
    host.expect(MessageType::DBirth).await;
    publisher.stop(GUARD).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebirth_command_is_answered_with_new_births() {
    let broker = broker::Embedded::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (s, ids) = sparkplug_settings(broker.addr(), "spb-rebirth");
    let mut host = Host::new(broker.addr(), &ids, "host-rebirth").await;
    let (publisher, sink, _core) = start(s, dir.path());
    let bd_seq = host.expect(MessageType::NBirth).await.bd_seq();
    host.expect(MessageType::DBirth).await;
    sink.send(SinkMsg::Parcel(report(5), 0)).await.unwrap();
    assert_eq!(long(&host.parcel().await["parcel/tracking"]), 5);

    let ncmd = ids.topic(MessageType::NCmd);
    let client = host.sub.client.clone();
    // Garbage first: ignored, the node carries on.
    client.publish(ncmd.clone(), rumqttc::QoS::AtMostOnce, false, vec![0xff, 0xff]).await.unwrap();
    let rebirth = Payload {
        timestamp: Some(1),
        metrics: vec![Metric {
            name: Some(sparkplug::REBIRTH.into()),
            datatype: Some(sparkplug::DataType::Boolean.code()),
            value: Some(Value::BooleanValue(true)),
            ..Default::default()
        }],
        ..Default::default()
    };
    client.publish(ncmd, rumqttc::QoS::AtMostOnce, false, rebirth.encode_to_vec()).await.unwrap();
    let again = loop {
        let m = host.next().await;
        if m.kind == MessageType::NBirth {
            break m;
        }
    };
    assert_eq!(again.bd_seq(), bd_seq, "same connection, same bdSeq");
    host.expect(MessageType::DBirth).await;
    sink.send(SinkMsg::Parcel(report(6), 0)).await.unwrap();
    assert_eq!(long(&host.parcel().await["parcel/tracking"]), 6);
    let end = publisher.stop(GUARD).await.unwrap();
    assert_eq!(end.outbox.depth, 0);
}

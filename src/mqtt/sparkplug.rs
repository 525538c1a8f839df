//! Sparkplug B output (`docs/mqtt.md`, "Sparkplug B"): the Eclipse Tahu `sparkplug_b.proto`
//! `Payload` and `Metric` messages, the `spBv1.0/…` topics, and the edge node's session state
//! (bdSeq, seq, aliases). Pure: the publisher ([`super::client`]) hands in the time, the bdSeq
//! it keeps on disk and the stored events, and publishes what comes out.
//!
//! The node is the edge box, the one device is the line. Each stored event (a parcel record,
//! an alarm, a metrics sample) becomes one DDATA carrying all its fields, so one outbox row is
//! still one publish and one PUBACK.

use crate::core::LineStats;
use crate::plc::driver::DriverStats;
use crate::scanner::reader::ScannerStats;
use serde_json::{Map, Value as Json};
use std::collections::HashMap;
use std::path::PathBuf;

pub const NAMESPACE: &str = "spBv1.0";
/// In the data directory: the bdSeq of the last connection, kept across restarts.
pub const BD_SEQ_FILE: &str = "sparkplug-bdseq";
pub const BD_SEQ: &str = "bdSeq";
pub const REBIRTH: &str = "Node Control/Rebirth";
const REBIRTH_ALIAS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SparkplugError {
    #[error("{field}: {value:?} must be 1 to 64 characters without / + # or NUL")]
    Id { field: &'static str, value: String },
    #[error("not a Sparkplug B payload: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("stored event: {0}")]
    Json(String),
    #[error("stored event field {field}: {problem}")]
    Field { field: String, problem: &'static str },
}

/// The topic levels naming this edge node and its device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ids {
    group_id: String,
    edge_node_id: String,
    device_id: String,
}

impl Ids {
    /// Each is one topic level (the specification forbids `/`, `+` and `#`).
    pub fn new(group_id: &str, edge_node_id: &str, device_id: &str) -> Result<Ids, SparkplugError> {
        let level = |field: &'static str, value: &str| {
            let ok = !value.is_empty()
                && value.chars().count() <= 64
                && !value.chars().any(|c| matches!(c, '/' | '+' | '#' | '\0'));
            if ok {
                Ok(value.to_string())
            } else {
                Err(SparkplugError::Id { field, value: value.to_string() })
            }
        };
        Ok(Ids {
            group_id: level("group_id", group_id)?,
            edge_node_id: level("edge_node_id", edge_node_id)?,
            device_id: level("device_id", device_id)?,
        })
    }

    /// `spBv1.0/<group_id>/<type>/<edge_node_id>[/<device_id>]`.
    pub fn topic(&self, kind: MessageType) -> String {
        let node = format!("{NAMESPACE}/{}/{}/{}", self.group_id, kind.as_str(), self.edge_node_id);
        if kind.is_device() {
            format!("{node}/{}", self.device_id)
        } else {
            node
        }
    }
}

/// The `[mqtt.sparkplug]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub ids: Ids,
    /// Where the bdSeq is kept across restarts; `None`: in memory only.
    pub bd_seq_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    NBirth,
    NDeath,
    NData,
    NCmd,
    DBirth,
    DDeath,
    DData,
    DCmd,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::NBirth => "NBIRTH",
            MessageType::NDeath => "NDEATH",
            MessageType::NData => "NDATA",
            MessageType::NCmd => "NCMD",
            MessageType::DBirth => "DBIRTH",
            MessageType::DDeath => "DDEATH",
            MessageType::DData => "DDATA",
            MessageType::DCmd => "DCMD",
        }
    }

    fn is_device(self) -> bool {
        matches!(self, MessageType::DBirth | MessageType::DDeath | MessageType::DData | MessageType::DCmd)
    }
}

/// Tahu's datatype codes (the basic types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum DataType {
    Int8 = 1,
    Int16 = 2,
    Int32 = 3,
    Int64 = 4,
    UInt8 = 5,
    UInt16 = 6,
    UInt32 = 7,
    UInt64 = 8,
    Float = 9,
    Double = 10,
    Boolean = 11,
    String = 12,
    DateTime = 13,
    Text = 14,
}

impl DataType {
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// `org.eclipse.tahu.protobuf.Payload`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
}

/// `Payload.Metric`. Not modelled (and skipped when decoding): `metadata` (8), `properties`
/// (9), and the dataset, template and extension values (17–19); this crate sends none.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    #[prost(oneof = "Value", tags = "10, 11, 12, 13, 14, 15, 16")]
    pub value: Option<Value>,
}

/// `Metric.value`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    /// Int8, Int16, Int32 (two's complement), UInt8, UInt16, UInt32.
    #[prost(uint32, tag = "10")]
    IntValue(u32),
    /// Int64 (two's complement), UInt64, DateTime (ms since the Unix epoch).
    #[prost(uint64, tag = "11")]
    LongValue(u64),
    #[prost(float, tag = "12")]
    FloatValue(f32),
    #[prost(double, tag = "13")]
    DoubleValue(f64),
    #[prost(bool, tag = "14")]
    BooleanValue(bool),
    /// String, Text.
    #[prost(string, tag = "15")]
    StringValue(String),
    #[prost(bytes = "vec", tag = "16")]
    BytesValue(Vec<u8>),
}

/// One metric as the births declare it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Def {
    pub name: String,
    pub alias: u64,
    pub datatype: DataType,
}

/// Something to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// A stored event as it goes out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rendered {
    /// The session's next message: call [`Edge::sent`] once the client took it.
    Data(Publish),
    /// Not a Sparkplug message (a command reply): published as stored, on its own topic.
    AsStored,
}

/// The fields of a `parcel` record (`payload::Parcel` plus the event id), in DDATA order.
const PARCEL: &[(&str, DataType)] = &[
    ("event_id", DataType::Int64),
    ("tracking", DataType::UInt32),
    ("waybill", DataType::String),
    ("channel", DataType::String),
    ("reasons", DataType::String),
    ("decided", DataType::String),
    ("confirmed", DataType::String),
    ("lost", DataType::Boolean),
    ("held_by_plc", DataType::String),
    ("image_seq", DataType::UInt32),
    ("entered_at_ms", DataType::UInt64),
    ("decided_at_ms", DataType::UInt64),
    ("done_at_ms", DataType::UInt64),
    ("decision_ms", DataType::UInt64),
    ("wall_ms", DataType::DateTime),
    // Added after the first release: appended, so that the aliases before them stay.
    ("boot", DataType::UInt32),
    ("serial", DataType::UInt64),
    ("shadow", DataType::Boolean),
];

/// The fields of an `alarm` (`payload::AlarmEvent` plus the event id).
const ALARM: &[(&str, DataType)] = &[
    ("event_id", DataType::Int64),
    ("code", DataType::String),
    ("severity", DataType::String),
    ("tracking", DataType::UInt32),
    ("message", DataType::String),
    ("wall_ms", DataType::DateTime),
];

/// Alias blocks: a field added to one kind does not renumber the others.
const STATE_ALIAS: u64 = 10;
const PARCEL_ALIAS: u64 = 100;
const ALARM_ALIAS: u64 = 200;
const METRICS_EVENT_ALIAS: u64 = 300;
const FIGURES_ALIAS: u64 = 1000;
/// Nesting of the `metrics` figures (`plc/poll_cycle/p99_us` is 3 deep).
const MAX_FIGURE_DEPTH: usize = 4;

/// The `metrics` figures as `wiring` gathers them (line, plc, scanner) plus the outbox's, at
/// their defaults: the names and datatypes the births declare.
pub fn figures_template() -> Map<String, Json> {
    let mut m = Map::new();
    let mut put = |k: &str, v: serde_json::Result<Json>| {
        m.insert(k.into(), v.unwrap_or_default());
    };
    put("line", serde_json::to_value(LineStats::default()));
    put("plc", serde_json::to_value(DriverStats::default()));
    put("scanner", serde_json::to_value(ScannerStats::default()));
    put("outbox", serde_json::to_value(super::payload::OutboxFigures::default()));
    m
}

/// Leaves of `figures` as `a/b/c` paths, depth-first in key order (serde_json's maps are
/// sorted); nulls and arrays are not figures.
fn leaves(figures: &Map<String, Json>) -> Vec<(String, &Json)> {
    fn walk<'j>(prefix: &str, m: &'j Map<String, Json>, depth: usize, out: &mut Vec<(String, &'j Json)>) {
        for (k, v) in m {
            let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}/{k}") };
            match v {
                Json::Object(inner) if depth < MAX_FIGURE_DEPTH => walk(&path, inner, depth + 1, out),
                Json::Number(_) | Json::Bool(_) | Json::String(_) => out.push((path, v)),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk("", figures, 1, &mut out);
    out
}

fn figure_type(v: &Json) -> DataType {
    match v {
        Json::Number(n) if n.is_u64() => DataType::UInt64,
        Json::Number(n) if n.is_i64() => DataType::Int64,
        Json::Number(_) => DataType::Double,
        Json::Bool(_) => DataType::Boolean,
        _ => DataType::String,
    }
}

/// The edge node: its metric catalogue and the current session's bdSeq and seq.
#[derive(Clone, Debug)]
pub struct Edge {
    ids: Ids,
    node: Vec<Def>,
    device: Vec<Def>,
    /// Device metric name to its index in `device`.
    by_name: HashMap<String, usize>,
    /// The current connection's (`None` before the first).
    bd_seq: Option<u8>,
    /// The seq of the session's next message.
    seq: u8,
    /// The line's state as last published, for the births.
    state: String,
    /// The births went out in this connection.
    born: bool,
}

impl Edge {
    /// `figures`: the names and datatypes of the `metrics` figures ([`figures_template`]).
    pub fn new(ids: Ids, figures: &Map<String, Json>) -> Edge {
        let def = |name: String, alias: u64, datatype| Def { name, alias, datatype };
        let node = vec![
            def(REBIRTH.into(), REBIRTH_ALIAS, DataType::Boolean),
            def("Properties/Version".into(), 2, DataType::String),
            def("Properties/Started".into(), 3, DataType::DateTime),
        ];
        let mut device = vec![def("state".into(), STATE_ALIAS, DataType::String)];
        let fields = |kind: &str, base: u64, list: &[(&str, DataType)]| -> Vec<Def> {
            list.iter().zip(base..).map(|((f, t), alias)| def(format!("{kind}/{f}"), alias, *t)).collect()
        };
        device.extend(fields("parcel", PARCEL_ALIAS, PARCEL));
        device.extend(fields("alarm", ALARM_ALIAS, ALARM));
        device.push(def("metrics/event_id".into(), METRICS_EVENT_ALIAS, DataType::Int64));
        for ((name, v), alias) in leaves(figures).into_iter().zip(FIGURES_ALIAS..) {
            device.push(def(name, alias, figure_type(v)));
        }
        let by_name = device.iter().enumerate().map(|(i, d)| (d.name.clone(), i)).collect();
        Edge { ids, node, device, by_name, bd_seq: None, seq: 0, state: "running".into(), born: false }
    }

    pub fn ids(&self) -> &Ids {
        &self.ids
    }

    /// The node's metrics and the device's, as the births declare them.
    pub fn catalogue(&self) -> (&[Def], &[Def]) {
        (&self.node, &self.device)
    }

    /// The line's state for the next births.
    pub fn set_state(&mut self, state: &str) {
        self.state = state.into();
    }

    /// Whether the births went out in this connection.
    pub fn born(&self) -> bool {
        self.born
    }

    pub fn bd_seq(&self) -> Option<u8> {
        self.bd_seq
    }

    /// The bdSeq of a new connection: one past the last one, 0 at first, wrapping at 255.
    pub fn next_bd_seq(last: Option<u8>) -> u8 {
        last.map_or(0, |b| b.wrapping_add(1))
    }

    /// A new connection with `bd_seq`: the NDEATH its CONNECT registers as the last will.
    pub fn connect(&mut self, bd_seq: u8, now_ms: u64) -> Publish {
        self.bd_seq = Some(bd_seq);
        self.seq = 0;
        self.born = false;
        self.death(now_ms)
    }

    /// The NDEATH of the current session: the bdSeq alone, no seq.
    pub fn death(&self, now_ms: u64) -> Publish {
        let bd_seq = Metric {
            name: Some(BD_SEQ.into()),
            datatype: Some(DataType::Int64.code()),
            value: Some(Value::LongValue(u64::from(self.bd_seq.unwrap_or(0)))),
            ..Metric::default()
        };
        self.publish(
            MessageType::NDeath,
            Payload { timestamp: Some(now_ms), metrics: vec![bd_seq], ..Default::default() },
        )
    }

    /// NBIRTH (seq 0, with the session's bdSeq) and DBIRTH (seq 1): every metric with its
    /// name, alias, datatype and current value (the line's state as last set); the fields of
    /// events not yet seen are null.
    pub fn births(
        &mut self,
        figures: &Map<String, Json>,
        version: &str,
        started_wall_ms: i64,
        now_ms: u64,
    ) -> [Publish; 2] {
        let birth = |d: &Def, value: Option<Value>| Metric {
            name: Some(d.name.clone()),
            alias: Some(d.alias),
            timestamp: Some(now_ms),
            datatype: Some(d.datatype.code()),
            is_null: value.is_none().then_some(true),
            value,
            ..Metric::default()
        };
        let mut node = vec![Metric {
            name: Some(BD_SEQ.into()),
            timestamp: Some(now_ms),
            datatype: Some(DataType::Int64.code()),
            value: Some(Value::LongValue(u64::from(self.bd_seq.unwrap_or(0)))),
            ..Metric::default()
        }];
        let node_values = [
            Value::BooleanValue(false),
            Value::StringValue(version.into()),
            Value::LongValue(datetime(started_wall_ms)),
        ];
        node.extend(self.node.iter().zip(node_values).map(|(d, v)| birth(d, Some(v))));
        let current: HashMap<String, &Json> = leaves(figures).into_iter().collect();
        let device = self
            .device
            .iter()
            .map(|d| {
                let value = if d.alias == STATE_ALIAS {
                    Some(Value::StringValue(self.state.clone()))
                } else if d.alias >= FIGURES_ALIAS {
                    current.get(&d.name).and_then(|v| value_of(d.datatype, v).ok().flatten())
                } else {
                    None
                };
                birth(d, value)
            })
            .collect();
        self.seq = 0;
        self.born = true;
        let nbirth = self.message(MessageType::NBirth, node, now_ms);
        self.sent();
        let dbirth = self.message(MessageType::DBirth, device, now_ms);
        self.sent();
        [nbirth, dbirth]
    }

    /// The line's state as a DDATA (`stopped` on a clean stop, before the NDEATH).
    pub fn state(&mut self, state: &str, now_ms: u64) -> Publish {
        self.state = state.into();
        let metric = Metric {
            alias: Some(STATE_ALIAS),
            timestamp: Some(now_ms),
            value: Some(Value::StringValue(state.into())),
            ..Metric::default()
        };
        self.message(MessageType::DData, vec![metric], now_ms)
    }

    /// A stored event (its topic and JSON object, without the id) as the session's next DDATA.
    pub fn render(&self, topic: &str, stored: &str, event_id: i64, now_ms: u64) -> Result<Rendered, SparkplugError> {
        let kind = topic.rsplit('/').next().unwrap_or_default();
        if !matches!(kind, "parcel" | "alarm" | "metrics") {
            return Ok(Rendered::AsStored);
        }
        let mut object = match serde_json::from_str(stored) {
            Ok(Json::Object(o)) => o,
            Ok(_) => return Err(SparkplugError::Json("not a JSON object".into())),
            Err(e) => return Err(SparkplugError::Json(format!("not JSON: {e}"))),
        };
        object.insert("event_id".into(), event_id.into());
        let at_ms = object.get("wall_ms").and_then(Json::as_i64).map(datetime);
        let metric = |name: &str, alias: u64, datatype: DataType, v: Option<&Json>| -> Result<Metric, SparkplugError> {
            let value = match v {
                Some(v) => value_of(datatype, v)
                    .map_err(|problem| SparkplugError::Field { field: name.to_string(), problem })?,
                None => None,
            };
            Ok(Metric {
                alias: Some(alias),
                timestamp: at_ms,
                is_null: value.is_none().then_some(true),
                value,
                ..Metric::default()
            })
        };
        let metrics = match kind {
            "metrics" => {
                let mut out = vec![metric("event_id", METRICS_EVENT_ALIAS, DataType::Int64, object.get("event_id"))?];
                for (name, v) in leaves(&object) {
                    match self.by_name.get(&name).map(|&i| &self.device[i]) {
                        Some(d) if d.alias >= FIGURES_ALIAS => out.push(metric(&name, d.alias, d.datatype, Some(v))?),
                        // Not declared by the births (wall_ms and event_id are carried otherwise).
                        _ => tracing::trace!(%name, "figure not in the Sparkplug births: not sent"),
                    }
                }
                out
            }
            _ => {
                let (list, base) = if kind == "parcel" { (PARCEL, PARCEL_ALIAS) } else { (ALARM, ALARM_ALIAS) };
                list.iter()
                    .zip(base..)
                    .map(|((field, datatype), alias)| metric(field, alias, *datatype, object.get(*field)))
                    .collect::<Result<_, _>>()?
            }
        };
        Ok(Rendered::Data(self.message(MessageType::DData, metrics, now_ms)))
    }

    /// The client took the session's next message: seq moves on, wrapping at 255.
    pub fn sent(&mut self) {
        self.seq = self.seq.wrapping_add(1);
    }

    /// The seq the session's next message gets.
    pub fn seq(&self) -> u8 {
        self.seq
    }

    /// Whether an NCMD payload asks for a rebirth (`Node Control/Rebirth` true, by name or
    /// alias).
    pub fn is_rebirth(payload: &[u8]) -> Result<bool, SparkplugError> {
        let p = <Payload as prost::Message>::decode(payload)?;
        Ok(p.metrics.iter().any(|m| {
            (m.name.as_deref() == Some(REBIRTH) || m.alias == Some(REBIRTH_ALIAS))
                && m.value == Some(Value::BooleanValue(true))
        }))
    }

    fn message(&self, kind: MessageType, metrics: Vec<Metric>, now_ms: u64) -> Publish {
        self.publish(
            kind,
            Payload { timestamp: Some(now_ms), metrics, seq: Some(u64::from(self.seq)), ..Default::default() },
        )
    }

    fn publish(&self, kind: MessageType, payload: Payload) -> Publish {
        Publish { topic: self.ids.topic(kind), payload: prost::Message::encode_to_vec(&payload) }
    }
}

/// Unix ms as Sparkplug's DateTime (before 1970 is not a time this line records).
pub fn datetime(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

/// A JSON value as `datatype`'s value; `None` for null. Strings take any JSON (arrays and
/// objects, such as a parcel's reasons, as compact JSON text).
fn value_of(datatype: DataType, v: &Json) -> Result<Option<Value>, &'static str> {
    use DataType::*;
    if v.is_null() {
        return Ok(None);
    }
    let value = match datatype {
        String | Text => Value::StringValue(v.as_str().map_or_else(|| v.to_string(), str::to_string)),
        Boolean => Value::BooleanValue(v.as_bool().ok_or("not a boolean")?),
        Double => Value::DoubleValue(v.as_f64().ok_or("not a number")?),
        Float => Value::FloatValue(v.as_f64().ok_or("not a number")? as f32),
        UInt64 | DateTime => Value::LongValue(v.as_u64().ok_or("not an unsigned integer")?),
        // Two's complement, as the specification encodes signed values.
        Int64 => Value::LongValue(v.as_i64().ok_or("not an integer")? as u64),
        UInt8 | UInt16 | UInt32 => {
            Value::IntValue(v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or("not a 32-bit unsigned integer")?)
        }
        Int8 | Int16 | Int32 => {
            Value::IntValue(v.as_i64().and_then(|n| i32::try_from(n).ok()).ok_or("not a 32-bit integer")? as u32)
        }
    };
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{
        Alarm, Channel, Lane, Millis, ParcelId, ParcelReport, PlcHoldCause, Reason, Severity, TrackingId,
    };
    use crate::mqtt::payload;
    use proptest::prelude::*;
    use prost::Message as _;

    fn edge() -> Edge {
        Edge::new(Ids::new("zjg", "line-1", "line").unwrap(), &figures_template())
    }

    fn report() -> ParcelReport {
        ParcelReport {
            parcel: ParcelId { tracking: TrackingId(17), boot: 1, serial: 40 },
            waybill: None,
            channel: Some(Channel::Green),
            reasons: vec![Reason::GreenChannel],
            decided: Some(Lane::Release),
            confirmed: None,
            shadow: false,
            lost: false,
            held_by_plc: Some(PlcHoldCause::Forced { code: 3 }),
            image_seq: Some(9),
            entered_at: Millis(12_000),
            decided_at: Some(Millis(12_450)),
            done_at: Millis(19_800),
        }
    }

    /// Alias to name, from a DBIRTH.
    fn names(dbirth: &[u8]) -> HashMap<u64, (String, u32)> {
        let p = Payload::decode(dbirth).unwrap();
        p.metrics.into_iter().map(|m| (m.alias.unwrap(), (m.name.unwrap(), m.datatype.unwrap()))).collect()
    }

    #[test]
    fn a_death_encodes_to_the_bytes_worked_out_by_hand() {
        // Payload.timestamp (1, varint) 300; Payload.metrics (2, length 11): Metric.name (1,
        // length 5) "bdSeq", Metric.datatype (4, varint) 4 = Int64, Metric.long_value (11,
        // varint) 5. No seq (3): a death carries none.
        let bytes = [0x08, 0xac, 0x02, 0x12, 0x0b, 0x0a, 0x05, b'b', b'd', b'S', b'e', b'q', 0x20, 0x04, 0x58, 0x05];
        let mut e = edge();
        let death = e.connect(5, 300);
        assert_eq!(death.topic, "spBv1.0/zjg/NDEATH/line-1");
        assert_eq!(death.payload, bytes);
        let back = Payload::decode(&bytes[..]).unwrap();
        assert_eq!((back.timestamp, back.seq, back.metrics[0].name.as_deref()), (Some(300), None, Some(BD_SEQ)));
    }

    #[test]
    fn every_value_field_has_the_spec_field_number() {
        let p = Payload {
            timestamp: Some(1),
            metrics: vec![
                Metric { alias: Some(101), timestamp: Some(2), value: Some(Value::IntValue(3)), ..Default::default() },
                Metric { alias: Some(5), is_null: Some(true), ..Default::default() },
                Metric { alias: Some(6), value: Some(Value::StringValue("ok".into())), ..Default::default() },
                Metric { alias: Some(7), value: Some(Value::DoubleValue(0.5)), ..Default::default() },
                Metric { alias: Some(8), value: Some(Value::BooleanValue(true)), ..Default::default() },
                Metric { alias: Some(9), value: Some(Value::LongValue(300)), ..Default::default() },
            ],
            seq: Some(7),
            ..Default::default()
        };
        #[rustfmt::skip]
        let bytes = [
            0x08, 0x01,                                     // timestamp (1) = 1
            0x12, 0x06, 0x10, 0x65, 0x18, 0x02, 0x50, 0x03, // alias (2) 101, timestamp (3) 2, int_value (10) 3
            0x12, 0x04, 0x10, 0x05, 0x38, 0x01,             // alias 5, is_null (7) true
            0x12, 0x06, 0x10, 0x06, 0x7a, 0x02, b'o', b'k', // alias 6, string_value (15) "ok"
            0x12, 0x0b, 0x10, 0x07, 0x69, 0, 0, 0, 0, 0, 0, 0xe0, 0x3f, // alias 7, double_value (13) 0.5
            0x12, 0x04, 0x10, 0x08, 0x70, 0x01,             // alias 8, boolean_value (14) true
            0x12, 0x05, 0x10, 0x09, 0x58, 0xac, 0x02,       // alias 9, long_value (11) 300
            0x18, 0x07,                                     // seq (3) = 7
        ];
        assert_eq!(p.encode_to_vec(), bytes);
        assert_eq!(Payload::decode(&bytes[..]).unwrap(), p);
    }

    #[test]
    fn topics_follow_the_namespace() {
        let ids = Ids::new("G", "E", "D").unwrap();
        let all = [
            (MessageType::NBirth, "spBv1.0/G/NBIRTH/E"),
            (MessageType::NDeath, "spBv1.0/G/NDEATH/E"),
            (MessageType::NData, "spBv1.0/G/NDATA/E"),
            (MessageType::NCmd, "spBv1.0/G/NCMD/E"),
            (MessageType::DBirth, "spBv1.0/G/DBIRTH/E/D"),
            (MessageType::DDeath, "spBv1.0/G/DDEATH/E/D"),
            (MessageType::DData, "spBv1.0/G/DDATA/E/D"),
            (MessageType::DCmd, "spBv1.0/G/DCMD/E/D"),
        ];
        for (kind, topic) in all {
            assert_eq!(ids.topic(kind), topic);
        }
        for bad in ["", "a/b", "a+", "#", "a\0", &"x".repeat(65)] {
            let e = Ids::new("G", bad, "D").unwrap_err();
            assert!(e.to_string().starts_with("edge_node_id: "), "{e}");
        }
    }

    #[test]
    fn births_declare_every_metric_with_the_sessions_bd_seq() {
        let mut e = edge();
        e.connect(42, 1);
        let mut figures = Map::new();
        figures.insert("line".into(), serde_json::json!({"parcels": 120, "late": 1}));
        figures.insert("scanner".into(), Json::Null);
        let [nbirth, dbirth] = e.births(&figures, "9.9.9", 1_000, 2_000);
        assert_eq!(
            (nbirth.topic.as_str(), dbirth.topic.as_str()),
            ("spBv1.0/zjg/NBIRTH/line-1", "spBv1.0/zjg/DBIRTH/line-1/line")
        );
        let n = Payload::decode(&nbirth.payload[..]).unwrap();
        assert_eq!((n.seq, n.timestamp), (Some(0), Some(2_000)));
        let bd = n.metrics.iter().find(|m| m.name.as_deref() == Some(BD_SEQ)).unwrap();
        assert_eq!((bd.datatype, &bd.value), (Some(4), &Some(Value::LongValue(42))));
        let rebirth = n.metrics.iter().find(|m| m.name.as_deref() == Some(REBIRTH)).unwrap();
        assert_eq!((rebirth.datatype, &rebirth.value), (Some(11), &Some(Value::BooleanValue(false))));
        let d = Payload::decode(&dbirth.payload[..]).unwrap();
        assert_eq!(d.seq, Some(1));
        // rumqttc refuses packets over 10 KiB by default (and drops the connection).
        println!("DBIRTH: {} metrics, {} bytes", d.metrics.len(), dbirth.payload.len());
        assert!(dbirth.payload.len() < 8 * 1024, "{} bytes", dbirth.payload.len());
        assert_eq!(e.seq(), 2);
        let mut aliases = std::collections::HashSet::new();
        for m in n.metrics.iter().chain(&d.metrics) {
            assert!(m.name.is_some() && m.datatype.is_some(), "{m:?}");
            assert!(m.value.is_some() != (m.is_null == Some(true)), "a value or null: {m:?}");
            if let Some(a) = m.alias {
                assert!(aliases.insert(a), "alias {a} twice");
            }
        }
        let by_name: HashMap<&str, &Metric> = d.metrics.iter().map(|m| (m.name.as_deref().unwrap(), m)).collect();
        assert_eq!(by_name["state"].value, Some(Value::StringValue("running".into())));
        assert_eq!(by_name["line/parcels"].value, Some(Value::LongValue(120)));
        assert_eq!(by_name["line/parcels"].datatype, Some(DataType::UInt64.code()));
        assert_eq!(by_name["line/missorts"].is_null, Some(true), "not in this sample");
        assert_eq!(by_name["plc/poll_cycle/p99_us"].datatype, Some(DataType::UInt64.code()));
        assert_eq!(by_name["scanner/read_rate"].datatype, Some(DataType::Double.code()));
        assert_eq!(by_name["parcel/tracking"].is_null, Some(true));
        assert_eq!(by_name["parcel/wall_ms"].datatype, Some(DataType::DateTime.code()));

        // A rebirth in the same connection: same bdSeq, seq from 0, the state as last set.
        e.set_state("stopped");
        let [nbirth, dbirth] = e.births(&figures, "9.9.9", 1_000, 3_000);
        let n = Payload::decode(&nbirth.payload[..]).unwrap();
        assert_eq!((n.seq, n.metrics[0].value.clone()), (Some(0), Some(Value::LongValue(42))));
        let d = Payload::decode(&dbirth.payload[..]).unwrap();
        let state = d.metrics.iter().find(|m| m.name.as_deref() == Some("state")).unwrap();
        assert_eq!(state.value, Some(Value::StringValue("stopped".into())));
    }

    #[test]
    fn a_parcel_record_is_one_ddata_of_its_fields() {
        let mut e = edge();
        e.connect(0, 1);
        let [_, dbirth] = e.births(&Map::new(), "v", 0, 1);
        let names = names(&dbirth.payload);
        let stored = serde_json::to_string(&payload::Parcel::new(&report(), 1_764_410_785_012)).unwrap();
        let Rendered::Data(data) = e.render("sortline/v1/s/l/parcel", &stored, 77, 5).unwrap() else {
            panic!("not rendered")
        };
        assert_eq!(data.topic, "spBv1.0/zjg/DDATA/line-1/line");
        let p = Payload::decode(&data.payload[..]).unwrap();
        assert_eq!((p.seq, p.timestamp), (Some(2), Some(5)));
        let mut expected: Map<String, Json> = serde_json::from_str(&stored).unwrap();
        expected.insert("event_id".into(), 77.into());
        assert_eq!(p.metrics.len(), expected.len());
        for m in &p.metrics {
            assert!(m.name.is_none() && m.datatype.is_none(), "data messages carry the alias only");
            assert_eq!(m.timestamp, Some(1_764_410_785_012));
            let (name, datatype) = &names[&m.alias.unwrap()];
            let field = name.strip_prefix("parcel/").unwrap();
            let json = &expected[field];
            let back = match &m.value {
                None => Json::Null,
                Some(Value::StringValue(s)) if json.is_string() => Json::String(s.clone()),
                Some(Value::StringValue(s)) => serde_json::from_str(s).unwrap(),
                Some(Value::LongValue(n)) => (*n).into(),
                Some(Value::IntValue(n)) => (*n).into(),
                Some(Value::BooleanValue(b)) => (*b).into(),
                Some(other) => panic!("{other:?}"),
            };
            assert_eq!(&back, json, "{name} ({datatype})");
        }
    }

    #[test]
    fn the_field_lists_match_the_json_records() {
        let keys = |j: String| -> Vec<String> {
            let m: Map<String, Json> = serde_json::from_str(&j).unwrap();
            let mut k: Vec<String> = m.keys().cloned().collect();
            k.push("event_id".into());
            k.sort();
            k
        };
        let listed = |l: &[(&str, DataType)]| {
            let mut k: Vec<String> = l.iter().map(|(f, _)| f.to_string()).collect();
            k.sort();
            k
        };
        assert_eq!(keys(serde_json::to_string(&payload::Parcel::new(&report(), 0)).unwrap()), listed(PARCEL));
        let alarm = Alarm { code: "c", severity: Severity::Warning, tracking: None, message: "m".into() };
        assert_eq!(keys(serde_json::to_string(&payload::AlarmEvent::new(&alarm, 0)).unwrap()), listed(ALARM));
    }

    #[test]
    fn alarms_and_metrics_render_replies_pass_through() {
        let mut e = edge();
        e.connect(0, 1);
        let [_, dbirth] = e.births(&Map::new(), "v", 0, 1);
        let names = names(&dbirth.payload);
        let alarm = Alarm { code: "plc_link", severity: Severity::Critical, tracking: None, message: "down".into() };
        let stored = serde_json::to_string(&payload::AlarmEvent::new(&alarm, 9)).unwrap();
        let Ok(Rendered::Data(a)) = e.render("x/alarm", &stored, 3, 10) else { panic!() };
        let a = Payload::decode(&a.payload[..]).unwrap();
        let code = a.metrics.iter().find(|m| names[&m.alias.unwrap()].0 == "alarm/code").unwrap();
        assert_eq!(code.value, Some(Value::StringValue("plc_link".into())));

        let stored =
            r#"{"line":{"parcels":5},"plc":{"poll_cycle":{"p99_us":800}},"scanner":null,"extra":1,"wall_ms":9}"#;
        let Ok(Rendered::Data(m)) = e.render("x/metrics", stored, 4, 10) else { panic!() };
        let m = Payload::decode(&m.payload[..]).unwrap();
        let got: Vec<(&str, &Option<Value>)> =
            m.metrics.iter().map(|x| (names[&x.alias.unwrap()].0.as_str(), &x.value)).collect();
        assert_eq!(
            got,
            [
                ("metrics/event_id", &Some(Value::LongValue(4))),
                ("line/parcels", &Some(Value::LongValue(5))),
                ("plc/poll_cycle/p99_us", &Some(Value::LongValue(800))),
            ]
        );
        assert_eq!(e.render("x/cmd/transfer/result", "{}", 5, 10).unwrap(), Rendered::AsStored);
        assert!(matches!(e.render("x/parcel", "[1]", 6, 10), Err(SparkplugError::Json(_))));
        let err = e.render("x/parcel", r#"{"tracking":"seventeen"}"#, 6, 10).unwrap_err();
        assert_eq!(err.to_string(), "stored event field tracking: not a 32-bit unsigned integer");
    }

    #[test]
    fn rebirth_requests_by_name_or_alias() {
        let cmd = |m: Metric| Payload { timestamp: Some(1), metrics: vec![m], ..Default::default() }.encode_to_vec();
        let on = Some(Value::BooleanValue(true));
        assert!(Edge::is_rebirth(&cmd(Metric { name: Some(REBIRTH.into()), value: on.clone(), ..Default::default() }))
            .unwrap());
        assert!(Edge::is_rebirth(&cmd(Metric { alias: Some(1), value: on, ..Default::default() })).unwrap());
        let off = Metric { name: Some(REBIRTH.into()), value: Some(Value::BooleanValue(false)), ..Default::default() };
        assert!(!Edge::is_rebirth(&cmd(off)).unwrap());
        assert!(matches!(Edge::is_rebirth(&[0xff, 0xff, 0xff]), Err(SparkplugError::Decode(_))));
    }

    #[test]
    fn docs_table_the_catalogue() {
        let docs = include_str!("../../docs/mqtt.md");
        let section = &docs[docs.find("## Sparkplug B").unwrap()..];
        let rows: std::collections::HashSet<(String, String, String)> = section
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                Some((name.to_string(), cells.get(2)?.to_string(), cells.get(3)?.to_string()))
            })
            .collect();
        let e = edge();
        let (node, device) = e.catalogue();
        let fixed: Vec<&Def> = node.iter().chain(device).filter(|d| d.alias < FIGURES_ALIAS).collect();
        for d in &fixed {
            let row = (d.name.clone(), d.alias.to_string(), format!("{:?}", d.datatype));
            assert!(rows.contains(&row), "docs/mqtt.md lacks {row:?}");
        }
        assert!(rows.contains(&(BD_SEQ.into(), "–".into(), "Int64".into())));
        assert_eq!(rows.iter().filter(|r| r.0.contains('/') || r.0 == "state").count(), fixed.len(), "extra rows");
        let first = &device[fixed.len() - node.len()];
        assert_eq!((first.name.as_str(), first.alias, first.datatype), ("line/confirmed", 1000, DataType::UInt64));
        assert!(section.contains("`line/confirmed` (1000, UInt64)"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// seq: births restart at 0, every later message of the session is one more, wrapping.
        #[test]
        fn seq_counts_the_session(ops in proptest::collection::vec(0u8..10, 1..700)) {
            let mut e = edge();
            e.connect(0, 1);
            let stored = serde_json::to_string(&payload::Parcel::new(&report(), 0)).unwrap();
            let mut expected: Option<u8> = None;
            for op in ops {
                let seqs: Vec<u64> = if op == 0 {
                    expected = Some(2);
                    e.births(&Map::new(), "v", 0, 1)
                        .iter()
                        .map(|b| Payload::decode(&b.payload[..]).unwrap().seq.unwrap())
                        .collect()
                } else if let Some(next) = expected {
                    let Ok(Rendered::Data(d)) = e.render("p/parcel", &stored, 1, 1) else { panic!() };
                    e.sent();
                    expected = Some(next.wrapping_add(1));
                    vec![Payload::decode(&d.payload[..]).unwrap().seq.unwrap()]
                } else {
                    continue;
                };
                let last = *seqs.last().unwrap();
                if op == 0 {
                    prop_assert_eq!(seqs, vec![0, 1]);
                } else {
                    prop_assert_eq!(last, u64::from(expected.unwrap().wrapping_sub(1)));
                }
                prop_assert!(last <= 255);
            }
        }

        /// bdSeq: one more per connection, 0 to 255 and round again.
        #[test]
        fn bd_seq_wraps(last in proptest::option::of(any::<u8>())) {
            let next = Edge::next_bd_seq(last);
            prop_assert_eq!(u16::from(next), last.map_or(0, |l| (u16::from(l) + 1) % 256));
        }

        #[test]
        fn metrics_round_trip(alias in any::<u64>(), ts in any::<u64>(), s in ".{0,40}", n in any::<u64>(), b in any::<bool>()) {
            let p = Payload {
                timestamp: Some(ts),
                metrics: vec![
                    Metric { alias: Some(alias), value: Some(Value::StringValue(s)), ..Default::default() },
                    Metric { name: Some("n".into()), value: Some(Value::LongValue(n)), ..Default::default() },
                    Metric { is_null: Some(b), ..Default::default() },
                ],
                seq: Some(n % 256),
                ..Default::default()
            };
            prop_assert_eq!(Payload::decode(&p.encode_to_vec()[..]).unwrap(), p);
        }
    }
}

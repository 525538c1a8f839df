//! The JSON payloads of each topic (schemas in `docs/mqtt.md`). Field names are a contract:
//! add, don't rename.

use crate::core::{Alarm, Channel, Lane, ParcelReport, PlcHoldCause, Reason, Severity};
use serde::Serialize;

pub const SCHEMA_VERSION: u32 = 1;

/// `state` (retained): what the line is doing.
#[derive(Clone, Debug, Serialize)]
pub struct State<'a> {
    /// `running`, `degraded`, `safe_mode`, `stopped` (by an operator, or the daemon stopped
    /// cleanly) or `offline` (the last will).
    pub state: &'a str,
    pub site: &'a str,
    pub line: &'a str,
    pub version: &'a str,
    pub schema: u32,
    pub started_wall_ms: i64,
    pub wall_ms: i64,
    /// What degrades the line (`plc_link_down`, `scanner_link_down`, `mqtt_outbox_high`).
    pub conditions: Vec<&'a str>,
    pub safe_mode: bool,
    /// The operator who stopped the line, while it is stopped.
    pub stopped_by: Option<&'a str>,
    /// Shadow mode (`[commissioning] shadow`): decisions are recorded, every parcel goes to hold.
    pub shadow: bool,
}

/// `parcel`: one parcel's final story.
#[derive(Clone, Debug, Serialize)]
pub struct Parcel {
    pub tracking: u32,
    /// The PLC boot the parcel entered in and the line's serial for it: with the tracking id,
    /// the parcel's identity (tracking ids are reused).
    pub boot: u16,
    pub serial: u64,
    pub waybill: Option<String>,
    pub channel: Option<Channel>,
    pub reasons: Vec<Reason>,
    pub decided: Option<Lane>,
    pub confirmed: Option<Lane>,
    /// Decided in shadow mode: `decided` is where it would have gone, the PLC was told hold.
    pub shadow: bool,
    pub lost: bool,
    pub held_by_plc: Option<PlcHoldCause>,
    pub image_seq: Option<u32>,
    /// Line times (ms) and the time from the gate to the decision.
    pub entered_at_ms: u64,
    pub decided_at_ms: Option<u64>,
    pub done_at_ms: u64,
    pub decision_ms: Option<u64>,
    pub wall_ms: i64,
}

impl Parcel {
    pub fn new(p: &ParcelReport, wall_ms: i64) -> Parcel {
        Parcel {
            tracking: p.parcel.tracking.0,
            boot: p.parcel.boot,
            serial: p.parcel.serial,
            waybill: p.waybill.map(|w| w.to_string()),
            channel: p.channel,
            reasons: p.reasons.clone(),
            decided: p.decided,
            confirmed: p.confirmed,
            shadow: p.shadow,
            lost: p.lost,
            held_by_plc: p.held_by_plc,
            image_seq: p.image_seq,
            entered_at_ms: p.entered_at.0,
            decided_at_ms: p.decided_at.map(|t| t.0),
            done_at_ms: p.done_at.0,
            decision_ms: p.decided_at.map(|t| t.0.saturating_sub(p.entered_at.0)),
            wall_ms,
        }
    }
}

/// `alarm`.
#[derive(Clone, Debug, Serialize)]
pub struct AlarmEvent<'a> {
    pub code: &'a str,
    pub severity: Severity,
    pub tracking: Option<u32>,
    pub message: &'a str,
    pub wall_ms: i64,
}

impl AlarmEvent<'_> {
    pub fn new(a: &Alarm, wall_ms: i64) -> AlarmEvent<'_> {
        AlarmEvent {
            code: a.code,
            severity: a.severity,
            tracking: a.tracking.map(|t| t.0),
            message: &a.message,
            wall_ms,
        }
    }
}

/// `inspection`: a result entered at the inspection bench, for the parcel published earlier
/// under `parcel` with the same waybill.
#[derive(Clone, Debug, Serialize)]
pub struct InspectionEvent<'a> {
    pub waybill: String,
    pub officer: &'a str,
    /// `no_discrepancy`, `discrepancy` (handed over) or `returned`.
    pub outcome: &'static str,
    pub note: Option<&'a str>,
    pub wall_ms: i64,
}

impl InspectionEvent<'_> {
    /// `None` for any other input.
    pub fn new(input: &crate::core::Input, wall_ms: i64) -> Option<InspectionEvent<'_>> {
        let crate::core::Input::InspectionResult { waybill, officer, discrepancy, returned, note } = input else {
            return None;
        };
        let outcome = match (discrepancy, returned) {
            (false, _) => "no_discrepancy",
            (true, false) => "discrepancy",
            (true, true) => "returned",
        };
        Some(InspectionEvent {
            waybill: waybill.to_string(),
            officer: officer.as_str(),
            outcome,
            note: note.as_deref(),
            wall_ms,
        })
    }
}

/// The outbox's figures, inside `metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutboxFigures {
    pub depth: u64,
    pub capacity: u64,
    /// Metrics dropped because the outbox was full, since start.
    pub dropped: u64,
    /// Parcel records, alarms and replies kept beyond capacity, since start.
    pub over_capacity: u64,
}

/// `cmd/<name>/result`.
#[derive(Clone, Debug, Serialize)]
pub struct ReplyEvent {
    #[serde(flatten)]
    pub reply: super::command::Reply,
    pub wall_ms: i64,
}

/// `platform/ack`: the intake's answer to one platform message, once it is durable.
#[derive(Clone, Debug, Serialize)]
pub struct AckEvent<'a> {
    #[serde(flatten)]
    pub ack: &'a super::intake::Ack,
    pub wall_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Input, OfficerId, Waybill};

    #[test]
    fn an_inspection_result_reads_as_its_outcome_and_nothing_else_does() {
        let result = |discrepancy, returned, note: Option<&str>| Input::InspectionResult {
            waybill: Waybill::parse("EA123456785CN").unwrap(),
            officer: OfficerId::new("li.wei").unwrap(),
            discrepancy,
            returned,
            note: note.map(Into::into),
        };
        let json = |i: &Input| serde_json::to_value(InspectionEvent::new(i, 7).unwrap()).unwrap();
        assert_eq!(
            json(&result(true, true, Some("battery"))),
            serde_json::json!({ "waybill": "EA123456785CN", "officer": "li.wei", "outcome": "returned", "note": "battery", "wall_ms": 7 })
        );
        assert_eq!(json(&result(true, false, Some("x")))["outcome"], "discrepancy");
        assert_eq!(json(&result(false, false, None))["outcome"], "no_discrepancy");
        assert!(InspectionEvent::new(&Input::Tick, 7).is_none());
    }
}

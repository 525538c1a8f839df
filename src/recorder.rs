//! Between the core's `Record`s and the audit chain's entries: what goes in,
//! and how recorded inputs come back out for replay.

use crate::audit::{AuditError, AuditLog, GroupCommit, NewEntry, Signer};
use crate::config::{Audit, Loaded};
use crate::core::{Alarm, Identity, Input, Lane, LaneMap, Line, LineStats, LostWhy, Millis, Reason, Record, SyncCause};
use crate::plc::driver::SafeModeCheck;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Opens the chain's writer with `[audit]`'s checkpoint bounds (by count and by time).
pub fn open_audit(db: &Path, signer: Signer, cfg: &Audit) -> Result<AuditLog, AuditError> {
    let mut log = AuditLog::open(db, Some(signer), cfg.checkpoint_every)?;
    log.set_checkpoint_interval_ms(Some(cfg.checkpoint_interval_s.saturating_mul(1000)));
    Ok(log)
}

/// The chain's opening entry of a run: what ran (`mode`), where, and the line's snapshot, from
/// which `audit replay` rebuilds the core.
pub fn run_start_entry(cfg: &Loaded, line: &Line, mode: &str, wall_ms: i64) -> NewEntry {
    let start = serde_json::json!({
        "mode": mode, "site": cfg.line.site.site_id, "line_id": cfg.line.site.line_id,
        "version": env!("CARGO_PKG_VERSION"), "line": line.snapshot(),
    });
    NewEntry { kind: "start".into(), wall_ms, mono_ms: 0, tracking: None, waybill: None, payload: start }
}

/// The payload of the chain's closing entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopPayload {
    /// The core's counters, at the top level as they always were.
    #[serde(flatten)]
    pub stats: LineStats,
    /// Whether the PLC confirmed its watchdog's safe mode once the driver stopped; `None` with
    /// no PLC driver (the in-process demo), and in records from before it was kept.
    #[serde(default)]
    pub plc_safe_mode: Option<SafeModeCheck>,
}

/// The chain's closing entry, with the core's counters and how the PLC took the stop.
pub fn stop_entry(stats: &LineStats, plc_safe_mode: Option<SafeModeCheck>, wall_ms: i64, now_ms: u64) -> NewEntry {
    let payload = StopPayload { stats: stats.clone(), plc_safe_mode };
    NewEntry {
        kind: "stop".into(),
        wall_ms,
        mono_ms: now_ms,
        tracking: None,
        waybill: None,
        payload: serde_json::to_value(payload).unwrap_or_default(),
    }
}

/// Closes a run on record: the stop entry, then a signed checkpoint over it (whatever the
/// bounds say), so that a clean stop leaves nothing unsigned. Returns the checkpoint's seq.
pub fn close_run(
    audit: &GroupCommit,
    stats: &LineStats,
    plc_safe_mode: Option<SafeModeCheck>,
    now_ms: u64,
) -> Result<u64, AuditError> {
    let wall = crate::clock::wall_ms();
    audit.submit(vec![stop_entry(stats, plc_safe_mode, wall, now_ms)])?.wait()?;
    audit.checkpoint_now(wall)?;
    audit.flush()
}

/// The audit entry for a core record at line time `now`.
pub fn entry(record: &Record, now: Millis, wall_ms: i64) -> NewEntry {
    // Records and inputs serialise as {"kind": .., "data": ..}; the kind is
    // a column of its own, so the payload is the innermost data.
    let mut value = serde_json::to_value(record).unwrap_or(serde_json::Value::Null);
    let mut payload = value.get_mut("data").map(serde_json::Value::take).unwrap_or_default();
    if matches!(record, Record::Input(_)) {
        payload = payload.get_mut("data").map(serde_json::Value::take).unwrap_or_default();
    }
    NewEntry {
        kind: record.kind().to_string(),
        wall_ms,
        mono_ms: now.0,
        tracking: record.tracking().map(|t| t.0),
        waybill: record.waybill().map(|w| w.to_string()),
        payload,
    }
}

pub fn alarm_entry(alarm: &Alarm, now: Millis, wall_ms: i64) -> NewEntry {
    NewEntry {
        kind: "alarm".into(),
        wall_ms,
        mono_ms: now.0,
        tracking: alarm.tracking.map(|t| t.0),
        waybill: None,
        payload: serde_json::to_value(alarm).unwrap_or_default(),
    }
}

/// An operator's command as it arrived, before the input it carries.
pub fn command_entry(command: &crate::mqtt::command::Reply, now: Millis, wall_ms: i64) -> NewEntry {
    NewEntry {
        kind: "command".into(),
        wall_ms,
        mono_ms: now.0,
        tracking: None,
        waybill: None,
        payload: serde_json::to_value(command).unwrap_or_default(),
    }
}

/// The input an entry recorded, if it recorded one.
pub fn input_of(kind: &str, payload: &serde_json::Value) -> Option<Result<Input, serde_json::Error>> {
    Input::RECORDED_KINDS
        .contains(&kind)
        .then(|| serde_json::from_value(serde_json::json!({ "kind": kind, "data": payload })))
}

/// The core record an entry holds, if it holds one (not start, stop, alarms, checkpoints).
pub fn record_of(kind: &str, payload: &serde_json::Value) -> Option<Record> {
    if let Some(input) = input_of(kind, payload) {
        return input.ok().map(Record::Input);
    }
    serde_json::from_value(serde_json::json!({ "kind": kind, "data": payload })).ok()
}

fn list_version(v: Option<u64>) -> String {
    v.map_or_else(|| "no list".into(), |v| format!("list version {v}"))
}

fn lane_name(lanes: &LaneMap, id: u16) -> String {
    lanes.lane(id).map_or_else(|| format!("unknown lane id {id}"), |l| format!("{l} (id {id})"))
}

/// A decision's reasons in words: those that decided the lane, then any
/// that were outweighed.
pub fn reasons_text(lane: Lane, reasons: &[Reason]) -> String {
    let words = |keep: fn(Lane, Lane) -> bool| {
        reasons.iter().filter(|r| keep(r.lane(), lane)).map(Reason::label).collect::<Vec<_>>().join(", ")
    };
    let deciding = words(|a, b| a == b);
    match words(|a, b| a != b) {
        outweighed if outweighed.is_empty() => deciding,
        outweighed => format!("{deciding} (outweighed: {outweighed})"),
    }
}

/// One line of an entry's story, in words an officer reads.
pub fn describe_entry(kind: &str, payload: &serde_json::Value, lanes: &LaneMap) -> String {
    if let Some(record) = record_of(kind, payload) {
        return describe(&record, lanes);
    }
    let text = |key: &str| payload.get(key).and_then(serde_json::Value::as_str).unwrap_or("?").to_string();
    match kind {
        "alarm" => format!("ALARM {} {}: {}", text("severity"), text("code"), text("message")),
        "command" => format!(
            "command {} (request {}) by {}: {}{}",
            text("command"),
            text("request_id"),
            text("operator"),
            text("status"),
            payload.get("error").and_then(serde_json::Value::as_str).map(|e| format!(" ({e})")).unwrap_or_default()
        ),
        "start" | "stop" => format!("line {kind}: {payload}"),
        "checkpoint" => {
            format!("signed checkpoint of the chain up to entry {}", payload.get("seq").unwrap_or(&payload.clone()))
        }
        _ => format!("{kind}: {payload}"),
    }
}

/// One line of a parcel's story, in words an officer reads.
pub fn describe(record: &Record, lanes: &LaneMap) -> String {
    match record {
        Record::Input(input) => match input {
            Input::PlcSync { boot, cause } => match cause {
                SyncCause::FirstContact => format!("PLC link synchronised to PLC boot {boot}"),
                SyncCause::Restart => format!("PLC RESTARTED (boot {boot}): the parcels on the belt are orphaned"),
                SyncCause::EventsLost => format!(
                    "PLC EVENTS LOST (boot {boot}): the parcels on the belt are orphaned, every parcel held until the PLC restarts"
                ),
            },
            Input::Gate { trigger, length_mm, .. } => format!(
                "entered the reading gate (scanner trigger {}{})",
                trigger.0,
                length_mm.map(|l| format!(", {l} mm long")).unwrap_or_default()
            ),
            Input::Scan { codes, .. } if codes.is_empty() => "scanner read nothing".into(),
            Input::Scan { codes, .. } => format!("scanner read {}", codes.join(" ")),
            Input::Manifest(m) => format!(
                "declaration list {} version {} received: {} channel, {:?}{}{}",
                m.list_no,
                m.version,
                m.channel.as_str(),
                m.status,
                if m.licence_required { ", licence required" } else { "" },
                if m.platform_targeted { ", targeted by the platform" } else { "" }
            )
            .to_lowercase(),
            Input::XrayEntered { image_seq, .. } => format!("entered the X-ray tunnel (image {image_seq})"),
            Input::Weighed { weight_g, .. } => format!("weighed {weight_g} g by the line scale"),
            Input::XrayImage { image_seq, sha256, barcode } => format!(
                "X-ray image {image_seq} received (sha256 {sha256}{})",
                barcode.as_ref().map(|b| format!(", barcode {b}")).unwrap_or_default()
            ),
            Input::XrayScreened { flags, sha256, manifest_version, .. } => format!(
                "X-ray pre-screen of image {sha256} against {}: {}",
                list_version(*manifest_version),
                if flags.is_empty() { "clean".into() } else { format!("flagged {}", flags.join(", ")) }
            ),
            Input::Verdict { officer, verdict, review, image_sha256, .. } => format!(
                "officer {officer} gave verdict {} on review {review} of image {}",
                format!("{verdict:?}").to_lowercase(),
                image_sha256.as_deref().unwrap_or("(none)")
            ),
            Input::ManualTransfer { officer, .. } => format!("officer {officer} moved it to review by hand"),
            Input::ClearFlag { image_sha256, flag, officer, supervisor, reason, .. } => format!(
                "officer {officer} cleared X-ray flag {flag:?} on image {image_sha256}, authorised by {supervisor}: {reason}"
            ),
            Input::DestinationWritten { lane_id, .. } => {
                format!("destination {} written to the PLC", lane_name(lanes, *lane_id))
            }
            Input::Divert { lane_id, .. } => format!("PLC confirmed it left by {}", lane_name(lanes, *lane_id)),
            Input::Lost { .. } => "PLC reported it lost from its tracking window".into(),
            Input::PlcHold { cause, .. } => format!("PLC holds it by default: {}", cause.describe()),
            Input::PlcStatus { safe_mode } => format!("PLC safe mode {}", if *safe_mode { "on" } else { "off" }),
            Input::Belt { running } => format!("belt {}", if *running { "running again" } else { "stopped" }),
            Input::TargetAdd(t) => format!("manual target {} added by {}: {}", t.id, t.author, t.reason),
            Input::TargetRemove { id, officer } => format!("manual target {id} removed by {officer}"),
            Input::InspectionResult { officer, discrepancy, returned, note, .. } => format!(
                "opened at the inspection bench by {officer}: {}{}",
                match (discrepancy, returned) {
                    (false, _) => "no discrepancy (无误)",
                    (true, false) => "DISCREPANCY (有误), handed over",
                    (true, true) => "DISCREPANCY (有误), returned (退运)",
                },
                note.as_deref().map(|n| format!(": {n}")).unwrap_or_default()
            ),
            Input::Parameters { sample_rate, xray_review_ratio, review_window_ms, officer } => {
                let rates = |name: &str, r: &Option<crate::core::PerChannel<f64>>| {
                    r.map(|r| format!(" {name} green {} red {}", r.green, r.red)).unwrap_or_default()
                };
                format!(
                    "parameters set by {officer}:{}{}{}",
                    rates("random inspection rate", sample_rate),
                    rates("X-ray review ratio", xray_review_ratio),
                    review_window_ms.map(|w| format!(" review window {w} ms")).unwrap_or_default()
                )
            }
            Input::Rules { rules, officer } => format!(
                "interception rules replaced ({} rules: {}){}",
                rules.len(),
                rules.iter().map(|r| &*r.id).collect::<Vec<_>>().join(", "),
                officer.as_ref().map(|o| format!(" by {o}")).unwrap_or_default()
            ),
            Input::LineControl { running: false, officer } => {
                format!("line STOPPED by {officer}: every parcel to hold")
            }
            Input::LineControl { running: true, officer } => format!("line started again by {officer}"),
            Input::Tick => "tick".into(),
        },
        Record::Identified { identity, timed_out, .. } => match identity {
            Identity::Waybill { waybill } => format!("identified as {waybill}"),
            Identity::NoRead if *timed_out => "no scan arrived in time: no read".into(),
            Identity::NoRead => "no waybill read".into(),
            Identity::Ambiguous { count } => format!("{count} different codes read: ambiguous"),
            Identity::BadCheckDigit => "waybill read with a wrong check digit".into(),
        },
        Record::ReviewRequested { review, deadline, image_sha256, manifest_version, .. } => format!(
            "review {review} sent to the officer's screen (image {}, list version {manifest_version}); verdict due by line time {:.1} s",
            image_sha256.as_deref().unwrap_or("(none)"),
            deadline.0 as f64 / 1000.0
        ),
        Record::ReviewWithdrawn { review, why, .. } => format!("review {review} withdrawn: {why}"),
        Record::ScreeningRequested { image_seq, manifest_version, .. } => {
            format!("X-ray image {image_seq} to be screened against {}", list_version(*manifest_version))
        }
        Record::Decision { lane, reasons, manifest_version, shadow, .. } => format!(
            "DECIDED {}: {}{}{}",
            lane.as_str().to_uppercase(),
            reasons_text(*lane, reasons),
            manifest_version.map(|v| format!(" (declaration list version {v})")).unwrap_or_default(),
            if *shadow { "; shadow mode: the PLC was told hold" } else { "" }
        ),
        Record::Missort { decided, actual, .. } => format!(
            "MISSORT: sent {}, left by {}",
            decided.map_or("nothing", Lane::as_str),
            actual.map_or("an unknown lane", Lane::as_str)
        ),
        Record::Lost { why, .. } => format!(
            "lost ({}); runs on to the end of the line, the hold lane",
            match why {
                LostWhy::Plc => "the PLC lost it from its window",
                LostWhy::Unconfirmed => "no confirmation by the end of the line",
                LostWhy::TrackingReused => "the PLC gave its tracking id to a new parcel",
                LostWhy::PlcRestart => "the PLC restarted and forgot it: held by the PLC default",
                LostWhy::EventsLost => "the PLC's events were lost: what it did with the parcel is not known",
            }
        ),
        Record::Refused { input, why, .. } => format!("{input} refused: {why}"),
        Record::UnmatchedScan { codes, .. } => format!("scan matched no parcel: {}", codes.join(" ")),
        Record::ImageAttached { image_seq, sha256, .. } => {
            format!("X-ray image {image_seq} is its own (sha256 {sha256})")
        }
        Record::UnmatchedImage { image_seq, sha256 } => {
            format!("X-ray image {image_seq} matched no parcel (sha256 {sha256})")
        }
        Record::Completed { decided, confirmed, .. } => format!(
            "story complete: decided {}, confirmed {}",
            decided.map_or("nothing", Lane::as_str),
            confirmed.map_or("nothing", Lane::as_str)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{ParcelId, PlcHoldCause, TrackingId, TriggerCount};

    #[test]
    fn the_stop_entry_keeps_the_plcs_answer_and_older_ones_still_read() {
        let stats = LineStats { parcels: 12, confirmed: 11, ..LineStats::default() };
        let check = SafeModeCheck { confirmed: true, waited_ms: 940, link_down: false };
        let entry = stop_entry(&stats, Some(check), 0, 5);
        assert_eq!(entry.payload["parcels"], 12, "the counters stay at the top level");
        assert_eq!(entry.payload["plc_safe_mode"]["confirmed"], true);
        let back: StopPayload = serde_json::from_value(entry.payload).unwrap();
        assert_eq!(back, StopPayload { stats: stats.clone(), plc_safe_mode: Some(check) });
        // Written before the field (and before `verdicts_refused`).
        let old = serde_json::json!({"parcels": 12, "confirmed": 11});
        let back: StopPayload = serde_json::from_value(old).unwrap();
        assert_eq!(back, StopPayload { stats, plc_safe_mode: None });
    }

    #[test]
    fn inputs_round_trip_through_entries() {
        let inputs = [
            Input::Gate { tracking: TrackingId(4), trigger: TriggerCount(9), length_mm: Some(350), at: None },
            Input::Gate { tracking: TrackingId(4), trigger: TriggerCount(9), length_mm: None, at: Some(Millis(3)) },
            Input::PlcSync { boot: 3, cause: SyncCause::EventsLost },
            Input::Scan { trigger: Some(TriggerCount(9)), codes: vec!["EA123456785CN".into()] },
            Input::Scan { trigger: None, codes: vec![] },
            Input::Lost { tracking: TrackingId(4) },
            Input::PlcHold { tracking: TrackingId(4), cause: PlcHoldCause::Late },
            Input::PlcHold { tracking: TrackingId(4), cause: PlcHoldCause::Forced { code: 2 } },
            Input::PlcStatus { safe_mode: true },
            Input::Belt { running: false },
        ];
        for input in inputs {
            let e = entry(&Record::Input(input.clone()), Millis(5), 0);
            assert_eq!(e.kind, input.kind());
            assert_eq!(input_of(&e.kind, &e.payload).unwrap().unwrap(), input);
        }
        assert!(input_of("decision", &serde_json::Value::Null).is_none());
        assert!(input_of("tick", &serde_json::Value::Null).is_none());
    }

    #[test]
    fn records_come_back_and_read_as_words() {
        let lanes = LaneMap { release: 1, inspection: 2, hold: 3 };
        let records = [
            Record::Decision {
                parcel: ParcelId { tracking: TrackingId(1), boot: 2, serial: 77 },
                waybill: None,
                lane: Lane::Hold,
                reasons: vec![Reason::NoRead],
                manifest_version: None,
                channel: None,
                image_sha256: None,
                shadow: false,
            },
            Record::Refused { input: "verdict".into(), tracking: Some(TrackingId(1)), why: "after the cut-off".into() },
            Record::Input(Input::Divert { tracking: TrackingId(1), lane_id: 3 }),
        ];
        for r in records {
            let e = entry(&r, Millis(1), 0);
            assert_eq!(record_of(&e.kind, &e.payload).as_ref(), Some(&r));
        }
        let d = describe(&record_of("divert", &serde_json::json!({"tracking": 1, "lane_id": 3})).unwrap(), &lanes);
        assert_eq!(d, "PLC confirmed it left by hold (id 3)");
    }
}

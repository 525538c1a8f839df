//! Commands under `…/cmd/<name>`: parsing and validation, pure. A command is refused before it
//! reaches the core when its payload is not what the schema in `docs/mqtt.md` says; what the
//! core then does with an accepted one (a transfer of a parcel that is gone, a removal of an
//! unknown target) is the core's to refuse and record.

use crate::core::{Input, ManualTarget, Millis, OfficerId, ParcelId, PerChannel, TargetCriterion, TrackingId, Waybill};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Longest request id, target id and reason accepted (they go into records and topics).
pub const MAX_REQUEST_ID: usize = 64;
pub const MAX_TARGET_ID: usize = 64;
pub const MAX_REASON: usize = 500;
/// Longest criterion value (a consignor's name, an HS prefix, a list number).
pub const MAX_CRITERION: usize = 200;
/// Longest review window a command may set (an hour).
pub const MAX_REVIEW_WINDOW_MS: u64 = 3_600_000;
/// Largest command payload read at all.
pub const MAX_PAYLOAD: usize = 4096;

/// The commands this line takes, by the last topic level.
pub const NAMES: [&str; 7] =
    ["target_add", "target_remove", "transfer", "set_rates", "line_stop", "line_start", "reload_rules"];

/// A refused command: what the reply says, and enough to record it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub command: String,
    /// As sent, when it could be read.
    pub request_id: Option<String>,
    pub operator: Option<String>,
    pub error: String,
}

/// An accepted command.
#[derive(Clone, Debug, PartialEq)]
pub struct Accepted {
    pub command: &'static str,
    pub request_id: String,
    pub operator: OfficerId,
    pub action: Action,
}

/// What an accepted command asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// An input for the core, which records it.
    Core(Input),
    /// Read the rule files again (as SIGHUP does); the daemon turns them into `Input::Rules`.
    ReloadRules,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetAddBody {
    request_id: String,
    operator: String,
    target_id: String,
    criterion: CriterionBody,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CriterionBody {
    by: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetRemoveBody {
    request_id: String,
    operator: String,
    target_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RatesBody {
    request_id: String,
    operator: String,
    #[serde(default)]
    sample_rate: Option<PerChannel<f64>>,
    #[serde(default)]
    xray_review_ratio: Option<PerChannel<f64>>,
    #[serde(default)]
    review_window_ms: Option<u64>,
}

/// `line_stop`, `line_start`, `reload_rules`: who and which request, nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BareBody {
    request_id: String,
    operator: String,
}

/// A parcel named whole (tracking id, PLC boot, serial, as the console's live line shows
/// them): a tracking id alone may be a new parcel's by now.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    request_id: String,
    operator: String,
    tracking: u32,
    boot: u16,
    serial: u64,
}

/// The reply on `…/cmd/<name>/result`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reply {
    pub command: String,
    pub request_id: Option<String>,
    pub operator: Option<String>,
    /// `accepted` (stored where it changes what operators set, taken by the line, recorded) or
    /// `refused`.
    pub status: &'static str,
    pub error: Option<String>,
    /// Where it came from when not over MQTT (`console`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<&'static str>,
}

impl Reply {
    pub fn accepted(a: &Accepted) -> Reply {
        Reply {
            command: a.command.into(),
            request_id: Some(a.request_id.clone()),
            operator: Some(a.operator.as_str().into()),
            status: "accepted",
            error: None,
            via: None,
        }
    }

    /// The same command, refused after all (by the store or the line), and why.
    pub fn refused_with(self, why: String) -> Reply {
        Reply { status: "refused", error: Some(why), ..self }
    }

    pub fn refused(r: &Refusal) -> Reply {
        Reply {
            command: r.command.clone(),
            request_id: r.request_id.clone(),
            operator: r.operator.clone(),
            status: "refused",
            error: Some(r.error.clone()),
            via: None,
        }
    }
}

/// Reads the command `name` (the topic's last level) from `payload`.
pub fn parse(name: &str, payload: &[u8]) -> Result<Accepted, Refusal> {
    // Only printable, bounded names go back into topics and records.
    let shown: String = name.chars().take(40).filter(|c| !c.is_control()).collect();
    let refuse = |error: String, head: &Head| Refusal {
        command: shown.clone(),
        request_id: head.request_id.clone(),
        operator: head.operator.clone(),
        error,
    };
    if payload.len() > MAX_PAYLOAD {
        return Err(refuse(format!("payload of {} bytes, at most {MAX_PAYLOAD}", payload.len()), &Head::default()));
    }
    let head = Head::read(payload);
    let Some(command) = NAMES.iter().copied().find(|n| *n == name) else {
        return Err(refuse(format!("unknown command; known: {}", NAMES.join(", ")), &head));
    };
    let request_id = |id: &str| check_text("request_id", id, MAX_REQUEST_ID).map(str::to_string);
    let operator = |id: &str| OfficerId::new(id).map_err(|e| format!("operator: {e}"));
    let checked = || -> Result<Accepted, String> {
        let (request, officer, action) = match command {
            "target_add" => {
                let b: TargetAddBody = read(payload)?;
                let author = operator(&b.operator)?;
                let criterion = criterion(&b.criterion)?;
                check_text("reason", &b.reason, MAX_REASON)?;
                let target = ManualTarget {
                    id: target_id(&b.target_id)?,
                    criterion,
                    author: author.clone(),
                    reason: b.reason,
                    // Line time is the core's: the record of this input carries when it
                    // took effect. No expiry over MQTT: removal is its own command.
                    created_at: Millis(0),
                    expires_at: None,
                };
                (b.request_id, author, Action::Core(Input::TargetAdd(target)))
            }
            "target_remove" => {
                let b: TargetRemoveBody = read(payload)?;
                let officer = operator(&b.operator)?;
                let input = Input::TargetRemove { id: target_id(&b.target_id)?, officer: officer.clone() };
                (b.request_id, officer, Action::Core(input))
            }
            "transfer" => {
                let b: TransferBody = read(payload)?;
                let officer = operator(&b.operator)?;
                let parcel = ParcelId { tracking: TrackingId(b.tracking), boot: b.boot, serial: b.serial };
                let input = Input::ManualTransfer { parcel, officer: officer.clone() };
                (b.request_id, officer, Action::Core(input))
            }
            "set_rates" => {
                let b: RatesBody = read(payload)?;
                let officer = operator(&b.operator)?;
                if b.sample_rate.is_none() && b.xray_review_ratio.is_none() && b.review_window_ms.is_none() {
                    return Err("give sample_rate, xray_review_ratio, review_window_ms or several".into());
                }
                if b.review_window_ms.is_some_and(|w| !(1..=MAX_REVIEW_WINDOW_MS).contains(&w)) {
                    return Err(format!("review_window_ms: 1 to {MAX_REVIEW_WINDOW_MS}"));
                }
                check_rates("sample_rate", b.sample_rate)?;
                check_rates("xray_review_ratio", b.xray_review_ratio)?;
                let input = Input::Parameters {
                    sample_rate: b.sample_rate,
                    xray_review_ratio: b.xray_review_ratio,
                    review_window_ms: b.review_window_ms,
                    officer: officer.clone(),
                };
                (b.request_id, officer, Action::Core(input))
            }
            "line_stop" | "line_start" => {
                let b: BareBody = read(payload)?;
                let officer = operator(&b.operator)?;
                let input = Input::LineControl { running: command == "line_start", officer: officer.clone() };
                (b.request_id, officer, Action::Core(input))
            }
            _ => {
                let b: BareBody = read(payload)?;
                (b.request_id, operator(&b.operator)?, Action::ReloadRules)
            }
        };
        Ok(Accepted { command, request_id: request_id(&request)?, operator: officer, action })
    };
    checked().map_err(|e| refuse(e, &head))
}

/// The request and operator ids, read leniently so that even a refused command's reply and
/// record say whose it was.
#[derive(Default)]
struct Head {
    request_id: Option<String>,
    operator: Option<String>,
}

impl Head {
    fn read(payload: &[u8]) -> Head {
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        let text = |key: &str| {
            v.get(key)
                .and_then(serde_json::Value::as_str)
                .map(|s| s.chars().filter(|c| !c.is_control()).take(MAX_REQUEST_ID).collect::<String>())
        };
        Head { request_id: text("request_id"), operator: text("operator") }
    }
}

fn read<'de, T: Deserialize<'de>>(payload: &'de [u8]) -> Result<T, String> {
    serde_json::from_slice(payload).map_err(|e| format!("bad payload: {e}"))
}

fn check_rates(field: &str, rates: Option<PerChannel<f64>>) -> Result<(), String> {
    match rates {
        Some(r) if ![r.green, r.red].iter().all(|x| (0.0..=1.0).contains(x)) => {
            Err(format!("{field}: green and red must be between 0 and 1"))
        }
        _ => Ok(()),
    }
}

pub(crate) fn check_text<'a>(field: &str, s: &'a str, max: usize) -> Result<&'a str, String> {
    if s.trim().is_empty() {
        return Err(format!("{field}: empty"));
    }
    if s.chars().count() > max {
        return Err(format!("{field}: longer than {max} characters"));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{field}: control characters"));
    }
    Ok(s)
}

pub(super) fn target_id(id: &str) -> Result<Arc<str>, String> {
    check_text("target_id", id, MAX_TARGET_ID)?;
    if id.chars().any(char::is_whitespace) {
        return Err("target_id: spaces".into());
    }
    Ok(id.into())
}

pub(super) fn criterion(c: &CriterionBody) -> Result<TargetCriterion, String> {
    let value = check_text("criterion.value", &c.value, MAX_CRITERION)?.to_string();
    Ok(match c.by.as_str() {
        "waybill" => TargetCriterion::Waybill(
            Waybill::parse(&value).map_err(|e| format!("criterion.value: not a waybill: {e}"))?,
        ),
        "consignor" => TargetCriterion::Consignor(value),
        "consignee" => TargetCriterion::Consignee(value),
        "hs_prefix" => {
            if !(2..=10).contains(&value.len()) || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err("criterion.value: an HS prefix is 2 to 10 digits".into());
            }
            TargetCriterion::HsPrefix(value)
        }
        "list_no" => TargetCriterion::ListNo(value),
        other => {
            return Err(format!(
                "criterion.by: {:?} unknown; one of waybill, consignor, consignee, hs_prefix, list_no",
                other.chars().take(40).collect::<String>()
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn target_add_becomes_the_core_input() {
        let body = br#"{"request_id":"r1","operator":"risk-01","target_id":"MT-1",
            "criterion":{"by":"consignor","value":"ACME Ltd"},"reason":"tip-off"}"#;
        let a = parse("target_add", body).unwrap();
        assert_eq!((a.command, a.request_id.as_str(), a.operator.as_str()), ("target_add", "r1", "risk-01"));
        let Action::Core(Input::TargetAdd(t)) = a.action else { panic!() };
        assert_eq!(t.criterion, TargetCriterion::Consignor("ACME Ltd".into()));
        assert_eq!((&*t.id, t.expires_at), ("MT-1", None));
    }

    #[test]
    fn refusals_say_why_and_whose() {
        let cases: [(&str, &[u8], &str); 13] = [
            ("transfer", br#"{"request_id":"r","tracking":1,"boot":1,"serial":2}"#, "missing field `operator`"),
            ("transfer", br#"{"request_id":"r","operator":"","tracking":1,"boot":1,"serial":2}"#, "operator"),
            ("transfer", br#"{"request_id":"r","operator":"o","tracking":1,"boot":1,"serial":2,"x":0}"#, "unknown field"),
            ("transfer", br#"{"request_id":"r","operator":"o","tracking":4294967296,"boot":1,"serial":2}"#, "invalid value"),
            ("transfer", br#"{"request_id":"r","operator":"o","tracking":1}"#, "missing field `boot`"),
            ("target_remove", br#"{"request_id":"","operator":"o","target_id":"t"}"#, "request_id: empty"),
            (
                "target_add",
                br#"{"request_id":"r","operator":"o","target_id":"t","criterion":{"by":"hs_prefix","value":"33a"},"reason":"x"}"#,
                "HS prefix",
            ),
            ("target_add", b"not json", "bad payload"),
            ("shutdown", br#"{"request_id":"r","operator":"o"}"#, "unknown command"),
            ("set_rates", br#"{"request_id":"r","operator":"o"}"#, "give sample_rate"),
            ("set_rates", br#"{"request_id":"r","operator":"o","sample_rate":{"green":1.5,"red":0}}"#, "between 0 and 1"),
            ("set_rates", br#"{"request_id":"r","operator":"o","sample_rate":{"green":0.1}}"#, "missing field `red`"),
            ("line_stop", br#"{"request_id":"r","operator":"o","force":true}"#, "unknown field"),
        ];
        for (name, body, why) in cases {
            let r = parse(name, body).unwrap_err();
            assert!(r.error.contains(why), "{name}: {} (wanted {why})", r.error);
        }
        let r = parse("transfer", br#"{"request_id":"r9","operator":"o-1","tracking":"x"}"#).unwrap_err();
        assert_eq!((r.request_id.as_deref(), r.operator.as_deref()), (Some("r9"), Some("o-1")));
        assert!(parse("transfer", &vec![b' '; MAX_PAYLOAD + 1]).unwrap_err().error.contains("at most"));
    }

    #[test]
    fn rates_and_line_control_become_core_inputs() {
        let a = parse("set_rates", br#"{"request_id":"r2","operator":"ops-1","sample_rate":{"green":0.05,"red":0.5}}"#)
            .unwrap();
        let Action::Core(Input::Parameters { sample_rate, xray_review_ratio, officer, .. }) = a.action else {
            panic!()
        };
        assert_eq!((sample_rate, xray_review_ratio), (Some(PerChannel { green: 0.05, red: 0.5 }), None));
        assert_eq!(officer.as_str(), "ops-1");
        let a = parse("line_stop", br#"{"request_id":"r3","operator":"ops-1"}"#).unwrap();
        assert!(matches!(a.action, Action::Core(Input::LineControl { running: false, .. })));
        let a = parse("line_start", br#"{"request_id":"r4","operator":"ops-1"}"#).unwrap();
        assert!(matches!(a.action, Action::Core(Input::LineControl { running: true, .. })));
        let a = parse("reload_rules", br#"{"request_id":"r5","operator":"ops-1"}"#).unwrap();
        assert_eq!(a.action, Action::ReloadRules);
    }

    proptest! {
        #[test]
        fn hostile_payloads_never_panic(name in "\\PC{0,50}", body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&name, &body);
        }

        #[test]
        fn json_shaped_payloads_never_panic(
            name in prop::sample::select(NAMES.to_vec()),
            request_id in "\\PC{0,80}",
            operator in "\\PC{0,80}",
            tracking in any::<i64>(),
            value in "\\PC{0,250}",
        ) {
            let body = serde_json::json!({"request_id": request_id, "operator": operator, "tracking": tracking,
                "target_id": value, "criterion": {"by": "waybill", "value": value}, "reason": value});
            if let Err(r) = parse(name, body.to_string().as_bytes()) {
                prop_assert!(r.request_id.is_none_or(|id| id.chars().count() <= MAX_REQUEST_ID));
            }
        }
    }
}

/// The parser's invariants over arbitrary bytes, run by the fuzz target `commands` (nightly)
/// and by a proptest (stable): the console's actions and MQTT commands both go through it.
pub mod fuzzing {
    use super::*;

    /// Byte 0 picks the command's name (one past the known ones: an unknown name), the rest is
    /// the payload. Never panics; an accepted command is within every bound the schema sets;
    /// a refusal says why, and what it echoes is bounded and printable.
    pub fn check_command(data: &[u8]) {
        let Some((&pick, payload)) = data.split_first() else { return };
        let name = NAMES.get(usize::from(pick) % (NAMES.len() + 1)).copied().unwrap_or("no_such_command");
        match parse(name, payload) {
            Ok(a) => {
                assert_eq!(a.command, name);
                assert!(!a.request_id.trim().is_empty() && a.request_id.chars().count() <= MAX_REQUEST_ID);
                assert!(!a.request_id.chars().any(char::is_control));
                match &a.action {
                    Action::Core(Input::Parameters { sample_rate, xray_review_ratio, review_window_ms, .. }) => {
                        for r in [sample_rate, xray_review_ratio].into_iter().flatten() {
                            assert!((0.0..=1.0).contains(&r.green) && (0.0..=1.0).contains(&r.red), "{r:?}");
                        }
                        assert!(review_window_ms.is_none_or(|w| (1..=MAX_REVIEW_WINDOW_MS).contains(&w)));
                    }
                    Action::Core(Input::TargetAdd(t)) => {
                        assert!(!t.id.chars().any(char::is_whitespace) && t.id.chars().count() <= MAX_TARGET_ID);
                        assert!(t.reason.chars().count() <= MAX_REASON && !t.reason.chars().any(char::is_control));
                    }
                    Action::Core(Input::TargetRemove { id, .. }) => assert!(!id.chars().any(char::is_whitespace)),
                    _ => {}
                }
            }
            Err(r) => {
                assert!(!r.error.is_empty());
                assert!(r.command.chars().count() <= 40 && !r.command.chars().any(char::is_control));
                for echoed in [&r.request_id, &r.operator].into_iter().flatten() {
                    assert!(echoed.chars().count() <= MAX_REQUEST_ID && !echoed.chars().any(char::is_control));
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use proptest::prelude::*;

        #[test]
        fn the_corpus_passes() {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/commands");
            let mut n = 0;
            for f in std::fs::read_dir(&dir).unwrap() {
                check_command(&std::fs::read(f.unwrap().path()).unwrap());
                n += 1;
            }
            assert!(n >= NAMES.len(), "a seed per command in {}", dir.display());
        }

        proptest! {
            #[test]
            fn arbitrary_payloads_never_break_the_bounds(pick in 0u8..8, body in "\\PC{0,200}") {
                let mut data = vec![pick];
                data.extend_from_slice(body.as_bytes());
                check_command(&data);
            }

            #[test]
            fn near_valid_payloads_never_break_the_bounds(pick in 0u8..8, green in -1.0f64..2.0, window in 0u64..4_000_000, id in "[ -~]{0,70}") {
                let body = serde_json::json!({ "request_id": id, "operator": "li.wei", "target_id": id, "tracking": 1, "boot": 1, "serial": 1,
                    "criterion": { "by": "consignor", "value": id }, "reason": id,
                    "sample_rate": { "green": green, "red": 0.0 }, "review_window_ms": window });
                let mut data = vec![pick];
                data.extend_from_slice(body.to_string().as_bytes());
                check_command(&data);
            }
        }
    }
}

//! The platform intake: the declaration lists (清单) and targeting instructions the customs
//! platform publishes (QoS 1) on `…/platform/manifest` and `…/platform/target`. A message is
//! acknowledged only once what it carries is durable in the manifest store, or, refused, is
//! durable there as a dead letter with the reason; only then does it reach the core, as the
//! inputs the core records. A store failure leaves the message unacknowledged: the broker
//! delivers it again, and storing is idempotent.
//!
//! Beside the broker's PUBACK, which only says the broker has the message, the intake answers
//! the platform on `…/platform/ack` once the message is durable: for each list its waybill,
//! version and outcome. That is the platform's proof of delivery: it resends what is not
//! acknowledged (docs/mqtt.md), and a list sent again is taken as the same list.

use super::command;
use crate::core::{Carriers, Input, ManualTarget, Millis, OfficerId};
use crate::manifest::{self, from_json, Declaration, ManifestStore, StoreError, Stored};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// Largest message read at all: a batch of declarations (about 600 bytes each).
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Declarations in one message (a JSON array); the batch is one transaction.
pub const MAX_BATCH: usize = 1000;

/// Which of the intake's topics a message came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    Manifests,
    Targets,
}

/// The intake's counters, in the publisher's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IntakeStats {
    pub messages: u64,
    /// Declarations stored as new or as an amendment.
    pub stored: u64,
    /// Declarations on record already, identical (a redelivery).
    pub unchanged: u64,
    /// Declarations older than the version held: kept out, the newer one stays.
    pub stale: u64,
    pub targets: u64,
    pub dead_letters: u64,
    /// Messages left unacknowledged because the store failed (the broker delivers them again).
    pub store_failures: u64,
}

/// What one message gave: inputs for the core, the dead letters written for it, and the
/// acknowledgement for the platform.
#[derive(Debug, Default)]
pub struct Taken {
    pub inputs: Vec<Input>,
    /// The reasons of the refused parts (each a dead letter now).
    pub refused: Vec<String>,
    pub ack: Ack,
}

/// The intake's answer to one platform message, once it is durable (`…/platform/ack`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Ack {
    /// The topic the message came on (`…/platform/manifest` or `…/platform/target`).
    pub topic: String,
    /// Each list the message carried that could be read, in order.
    pub lists: Vec<ListAck>,
    /// The targeting instruction, when the message was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetAck>,
    /// Why the whole message was refused (kept as a dead letter), when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// What became of one list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListAck {
    pub waybill: String,
    pub version: u64,
    /// `stored` (new or an amendment), `unchanged` (on record already, identical: a resend),
    /// `stale` (a newer version is held, or this version is on record with other content) or
    /// `refused` (invalid: a dead letter, with the reason).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What became of one targeting instruction: `stored` or `refused` (with the reason).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TargetAck {
    pub target_id: String,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A list's waybill and version as the platform sent them, read from a declaration that may
/// not validate (so that even a refused list is acknowledged by name).
#[derive(Deserialize)]
struct ListId {
    waybill: String,
    version: u64,
}

fn list_id(raw: &[u8]) -> Option<ListId> {
    serde_json::from_slice(raw).ok()
}

/// A targeting instruction's id, read the same way.
#[derive(Deserialize)]
struct TargetId {
    target_id: String,
}

/// A platform targeting instruction (docs/mqtt.md).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, tag = "action", rename_all = "snake_case")]
enum TargetMessage {
    Add { target_id: String, criterion: command::CriterionBody, reason: String, author: String },
    Remove { target_id: String, author: String },
}

pub struct Intake {
    store: ManifestStore,
    carriers: Carriers,
    pub stats: IntakeStats,
}

impl Intake {
    /// Opens the data directory's manifest store (beside the one `sortline manifest import` uses).
    pub fn open(data_dir: &Path, carriers: Carriers) -> Result<Intake, StoreError> {
        let store = ManifestStore::open(&data_dir.join(manifest::DB_FILE))?;
        Ok(Intake { store, carriers, stats: IntakeStats::default() })
    }

    /// Takes one message; `Err` means nothing became durable and it must not be acknowledged.
    pub fn take(&mut self, feed: Feed, topic: &str, payload: &[u8], wall_ms: i64) -> Result<Taken, StoreError> {
        self.stats.messages += 1;
        let outcome = if payload.len() > MAX_PAYLOAD {
            Err(format!("payload of {} bytes, at most {MAX_PAYLOAD}", payload.len()))
        } else {
            match feed {
                Feed::Manifests => self.manifests(topic, payload, wall_ms)?,
                Feed::Targets => self.target(payload, wall_ms)?,
            }
        };
        let mut taken = match outcome {
            Ok(taken) => taken,
            Err(reason) => {
                self.store.dead_letter(topic, &reason, payload, wall_ms)?;
                // What the message still names is acknowledged as refused, so the platform
                // stops resending what can never be taken.
                let why = Some(reason.clone());
                let (lists, target) = match feed {
                    Feed::Manifests => {
                        let ack = |id: ListId| ListAck {
                            waybill: id.waybill,
                            version: id.version,
                            status: "refused",
                            reason: why.clone(),
                        };
                        (list_id(payload).map(ack).into_iter().collect(), None)
                    }
                    Feed::Targets => {
                        let ack = |id: TargetId| TargetAck {
                            target_id: id.target_id,
                            status: "refused",
                            reason: why.clone(),
                        };
                        (Vec::new(), serde_json::from_slice(payload).ok().map(ack))
                    }
                };
                let ack = Ack { lists, target, refused: Some(reason.clone()), ..Ack::default() };
                Taken { inputs: Vec::new(), refused: vec![reason], ack }
            }
        };
        self.stats.dead_letters += taken.refused.len() as u64;
        taken.ack.topic = topic.to_string();
        Ok(taken)
    }

    /// One declaration (a JSON object) or a batch (a JSON array): the valid ones stored in one
    /// transaction, each invalid one of a batch a dead letter of its own naming its place and
    /// field. The inner `Err` refuses the whole message.
    fn manifests(&mut self, topic: &str, payload: &[u8], wall_ms: i64) -> Result<Result<Taken, String>, StoreError> {
        let batch = payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        let parsed: Result<Vec<Box<serde_json::value::RawValue>>, String> = match batch {
            true => serde_json::from_slice(payload).map_err(|e| format!("not a JSON array: {e}")),
            false => serde_json::from_slice(payload).map(|one| vec![one]).map_err(|e| format!("not JSON: {e}")),
        };
        let elements = match parsed {
            Ok(elements) if elements.len() > MAX_BATCH => {
                return Ok(Err(format!("{} declarations in one message, at most {MAX_BATCH}", elements.len())))
            }
            Ok(elements) => elements,
            Err(reason) => return Ok(Err(reason)),
        };
        let mut valid: Vec<Declaration> = Vec::with_capacity(elements.len());
        let mut views = Vec::with_capacity(elements.len());
        let mut refused = Vec::new();
        // Each list's acknowledgement in the message's order; those still to be stored are
        // filled in below.
        let mut lists: Vec<Option<ListAck>> = Vec::with_capacity(elements.len());
        for (n, raw) in elements.iter().enumerate() {
            match from_json(raw.get().as_bytes()).and_then(|d| d.validate(&self.carriers).map(|m| (d, m))) {
                Ok((d, m)) => {
                    valid.push(d);
                    views.push(m);
                    lists.push(None);
                }
                Err(e) if !batch => return Ok(Err(e.to_string())),
                Err(e) => {
                    let reason = format!("declaration {} of the batch: {e}", n + 1);
                    self.store.dead_letter(topic, &reason, raw.get().as_bytes(), wall_ms)?;
                    lists.push(list_id(raw.get().as_bytes()).map(|id| ListAck {
                        waybill: id.waybill,
                        version: id.version,
                        status: "refused",
                        reason: Some(reason.clone()),
                    }));
                    refused.push(reason);
                }
            }
        }
        let outcomes = self.store.store_batch(&valid, wall_ms)?;
        let mut inputs = Vec::new();
        let mut stored = Vec::with_capacity(outcomes.len());
        for (outcome, view) in outcomes.into_iter().zip(views) {
            let ack = |status: &'static str, reason: Option<String>| ListAck {
                waybill: view.waybill.to_string(),
                version: view.version,
                status,
                reason,
            };
            stored.push(match outcome {
                Stored::New | Stored::Amended { .. } => {
                    self.stats.stored += 1;
                    let a = ack("stored", None);
                    inputs.push(Input::Manifest(Arc::new(view)));
                    a
                }
                Stored::Unchanged => {
                    self.stats.unchanged += 1;
                    ack("unchanged", None)
                }
                Stored::Refused { held, why } => {
                    self.stats.stale += 1;
                    tracing::info!(waybill = %view.waybill, version = view.version, held, why, "platform declaration kept out");
                    ack("stale", Some(format!("{why} (version {held} is held)")))
                }
            });
        }
        let mut stored = stored.into_iter();
        let lists = lists.into_iter().filter_map(|a| a.or_else(|| stored.next())).collect();
        Ok(Ok(Taken { inputs, refused, ack: Ack { lists, ..Ack::default() } }))
    }

    /// An add or a remove, stored, then the core's input. The inner `Err` refuses it.
    fn target(&mut self, payload: &[u8], wall_ms: i64) -> Result<Result<Taken, String>, StoreError> {
        let input = match read_target(payload) {
            Ok(input) => input,
            Err(reason) => return Ok(Err(reason)),
        };
        let target_id = match &input {
            Input::TargetAdd(t) => t.id.to_string(),
            Input::TargetRemove { id, .. } => id.to_string(),
            _ => String::new(),
        };
        let done = match &input {
            Input::TargetAdd(t) => self.store.add_target(&manifest::new_target(
                t.id.to_string(),
                t.criterion.clone(),
                &t.author,
                &t.reason,
                wall_ms,
                None,
            )),
            Input::TargetRemove { id, officer } => self.store.remove_target(id, officer.as_str(), wall_ms).map(drop),
            _ => Ok(()),
        };
        match done {
            Ok(()) => {}
            Err(e @ (StoreError::TargetExists(_) | StoreError::NoTarget(_))) => return Ok(Err(e.to_string())),
            Err(e) => return Err(e),
        }
        self.stats.targets += 1;
        let ack = Ack { target: Some(TargetAck { target_id, status: "stored", reason: None }), ..Ack::default() };
        Ok(Ok(Taken { inputs: vec![input], refused: Vec::new(), ack }))
    }
}

/// A targeting instruction as the core's input (validated as the `target_add` and
/// `target_remove` commands are).
fn read_target(payload: &[u8]) -> Result<Input, String> {
    let message: TargetMessage = serde_json::from_slice(payload).map_err(|e| format!("bad payload: {e}"))?;
    let author = |a: &str| OfficerId::new(a).map_err(|e| format!("author: {e}"));
    Ok(match message {
        TargetMessage::Add { target_id, criterion, reason, author: by } => {
            command::check_text("reason", &reason, command::MAX_REASON)?;
            Input::TargetAdd(ManualTarget {
                id: command::target_id(&target_id)?,
                criterion: command::criterion(&criterion)?,
                author: author(&by)?,
                reason,
                // No expiry from the platform: removal is its own instruction.
                created_at: Millis(0),
                expires_at: None,
            })
        }
        TargetMessage::Remove { target_id, author: by } => {
            Input::TargetRemove { id: command::target_id(&target_id)?, officer: author(&by)? }
        }
    })
}

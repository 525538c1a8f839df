//! The platform intake: the declaration lists (清单) and targeting instructions the customs
//! platform publishes (QoS 1) on `…/platform/manifest` and `…/platform/target`. A message is
//! acknowledged only once what it carries is durable in the manifest store, or, refused, is
//! durable there as a dead letter with the reason; only then does it reach the core, as the
//! inputs the core records. A store failure leaves the message unacknowledged: the broker
//! delivers it again, and storing is idempotent.

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

/// What one message gave: inputs for the core, and the dead letters written for it.
#[derive(Debug, Default)]
pub struct Taken {
    pub inputs: Vec<Input>,
    /// The reasons of the refused parts (each a dead letter now).
    pub refused: Vec<String>,
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
        let taken = match outcome {
            Ok(taken) => taken,
            Err(reason) => {
                self.store.dead_letter(topic, &reason, payload, wall_ms)?;
                Taken { inputs: Vec::new(), refused: vec![reason] }
            }
        };
        self.stats.dead_letters += taken.refused.len() as u64;
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
        for (n, raw) in elements.iter().enumerate() {
            match from_json(raw.get().as_bytes()).and_then(|d| d.validate(&self.carriers).map(|m| (d, m))) {
                Ok((d, m)) => {
                    valid.push(d);
                    views.push(m);
                }
                Err(e) if !batch => return Ok(Err(e.to_string())),
                Err(e) => {
                    let reason = format!("declaration {} of the batch: {e}", n + 1);
                    self.store.dead_letter(topic, &reason, raw.get().as_bytes(), wall_ms)?;
                    refused.push(reason);
                }
            }
        }
        let outcomes = self.store.store_batch(&valid, wall_ms)?;
        let mut inputs = Vec::new();
        for (outcome, view) in outcomes.into_iter().zip(views) {
            match outcome {
                Stored::New | Stored::Amended { .. } => {
                    self.stats.stored += 1;
                    inputs.push(Input::Manifest(Arc::new(view)));
                }
                Stored::Unchanged => self.stats.unchanged += 1,
                Stored::Refused { held, why } => {
                    self.stats.stale += 1;
                    tracing::info!(waybill = %view.waybill, version = view.version, held, why, "platform declaration kept out");
                }
            }
        }
        Ok(Ok(Taken { inputs, refused }))
    }

    /// An add or a remove, stored, then the core's input. The inner `Err` refuses it.
    fn target(&mut self, payload: &[u8], wall_ms: i64) -> Result<Result<Taken, String>, StoreError> {
        let input = match read_target(payload) {
            Ok(input) => input,
            Err(reason) => return Ok(Err(reason)),
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
        Ok(Ok(Taken { inputs: vec![input], refused: Vec::new() }))
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

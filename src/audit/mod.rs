//! Tamper-evident, append-only audit record of the line (see `docs/audit.md`).
//!
//! Every entry is a row of one SQLite table and a link of a SHA-256 hash
//! chain: `hash = SHA-256(prev_hash ‖ canonical bytes)`. Editing, deleting or
//! reordering a row breaks the chain at that row; [`verify`] finds the first
//! break. Signed checkpoint entries (Ed25519) tie the chain to the site's key,
//! so that rewriting the whole chain after an edit needs the site's key too.
//!
//! # Layout
//! - `encoding`: canonical bytes, canonical JSON, hashes (the format).
//! - `schema`: tables, indexes, triggers and their migrations.
//! - `log`: [`AuditLog`], the single writer.
//! - `memory`: [`MemoryChain`], the same chain in memory (the simulator's swarm).
//! - `signer`: [`Signer`], the checkpoint key.
//! - `verify`: [`verify`] and [`verify_against`], read-only.
//! - `query`: [`story`], [`entries_between`], [`entries`], read-only.
//! - `group`: [`GroupCommit`], the writer thread that batches transactions.
//! - `archive`: [`archive`] (retention into export files) and [`verify_archive`].

mod archive;
mod encoding;
mod group;
mod log;
mod memory;
mod query;
mod schema;
mod signer;
mod verify;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_archive;

use std::path::PathBuf;
use std::sync::Arc;

pub use archive::{
    archive, verify_archive, verify_archive_against, verify_archives, ArchiveCheck, ArchiveReport, ARCHIVE_FORMAT,
};
pub use group::{GroupCommit, Ticket};
pub use log::AuditLog;
pub use memory::MemoryChain;
pub use query::{entries, entries_between, story};
pub use signer::Signer;
pub use verify::{verify, verify_against, Anchor, Break, KeyUsed, VerifyReport};

/// The database file in the data directory.
pub const DB_FILE: &str = "sortline.db";
/// The box's checkpoint signing key, under the data directory.
pub const KEY_FILE: &str = "keys/audit-ed25519.key";
/// The archive folder the shipped `line.toml` names (`[audit] archive_dir`), under the data
/// directory.
pub const DEFAULT_ARCHIVE_DIR: &str = "archive";

/// Most entries one [`archive`] call moves (more only to reach the first
/// checkpoint): its delete holds the write lock, and the daemon's appends wait
/// for it (about 0.1 s for 50,000 entries on a dev machine; the writer gives up after 5 s).
pub const MAX_ARCHIVE_ENTRIES: u64 = 50_000;

/// Kind reserved for the checkpoints the log writes itself.
pub const CHECKPOINT_KIND: &str = "checkpoint";

/// What a checkpoint entry says, as stored (its payload), exported (`sortline audit
/// checkpoints`) and published off the box (MQTT `audit/checkpoint`): the entry it covers (`seq`,
/// whose hash is `head`), and the site key's signature over both.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointPayload {
    pub seq: u64,
    pub head: String,
    pub public_key: String,
    pub signature: String,
}

impl CheckpointPayload {
    /// The anchor it gives: the covered entry and its hash.
    pub fn anchor(&self) -> Option<Anchor> {
        let mut head = [0u8; 32];
        hex::decode_to_slice(&self.head, &mut head).ok()?;
        Some(Anchor { seq: self.seq, head })
    }
}

/// A checkpoint just written: its own entry (seq, wall-clock ms) and what it says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignedCheckpoint {
    pub entry_seq: u64,
    pub wall_ms: i64,
    #[serde(flatten)]
    pub payload: CheckpointPayload,
}

/// Told of every checkpoint the log writes, after its commit (to publish it off the box).
pub type CheckpointObserver = Box<dyn FnMut(&SignedCheckpoint) + Send>;

/// What the daemon appends. The log assigns `seq` and the hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// e.g. "gate", "scan", "decision", "destination_sent", "verdict", "command".
    pub kind: String,
    /// Wall clock, ms since the Unix epoch.
    pub wall_ms: i64,
    /// Monotonic (line) clock, ms.
    pub mono_ms: u64,
    /// PLC tracking id.
    pub tracking: Option<u32>,
    pub waybill: Option<String>,
    /// The kind's data; stored and hashed as canonical JSON.
    pub payload: serde_json::Value,
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub kind: String,
    pub wall_ms: i64,
    pub mono_ms: u64,
    pub tracking: Option<u32>,
    pub waybill: Option<String>,
    pub payload: serde_json::Value,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("audit record {path} is open for writing by another process (is sortline running?)")]
    Busy { path: PathBuf },
    #[error("audit: {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit payload: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "audit database refused: its recorded head is entry {head_seq} ({head_hash}) but the last \
         stored entry is {last_seq} ({last_hash}); run verify, do not append to a broken chain"
    )]
    HeadMismatch { head_seq: u64, head_hash: String, last_seq: u64, last_hash: String },
    #[error("audit database schema version {found} is newer than this build ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("audit database: journal mode is {0:?}, WAL is required")]
    NotWal(String),
    #[error("audit entry refused: {0}")]
    InvalidEntry(String),
    #[error("audit entry {seq} is unreadable: {problem}")]
    Corrupt { seq: u64, problem: String },
    #[error("audit archive: {0}")]
    Archive(String),
    #[error("audit anchor at entry {seq} cannot be checked here: {why}")]
    AnchorElsewhere { seq: u64, why: String },
    #[error("audit key file {0} already exists; refusing to overwrite it")]
    KeyExists(PathBuf),
    #[error("audit key file {path}: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("audit log unusable after an earlier failure; reopen it")]
    Poisoned,
    #[error("audit writer has stopped")]
    Closed,
    #[error("audit writer queue full")]
    QueueFull,
    /// A group-commit batch failed; every ticket of the batch gets the same cause.
    #[error("audit batch failed: {0}")]
    Batch(#[source] Arc<AuditError>),
}

impl AuditError {
    fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
        move |source| AuditError::Io { path: path.to_path_buf(), source }
    }
}

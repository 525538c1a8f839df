//! Independent check of a log: read-only, trusts nothing stored but the format.

use ed25519_dalek::{Signature, VerifyingKey};
use rusqlite::types::ValueRef;
use serde::Deserialize;
use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::path::Path;

use super::encoding::{checkpoint_message, entry_hash, GENESIS_HASH};
use super::schema::{self, ArchiveRow, RawEntry, SELECT_ENTRY};
use super::{AuditError, CHECKPOINT_KIND};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Seq the check started at: 1, or the entry after the newest archive
    /// (earlier entries are in archive files), or an archive file's first entry.
    pub first_seq: u64,
    /// Rows read (including checkpoints and rows after a break).
    pub entries: u64,
    /// Checkpoint rows read.
    pub checkpoints: u64,
    /// Stored hash of the last row read; when none was read, the hash the
    /// segment starts from (newest archive's last entry, or zeros).
    pub head: [u8; 32],
    pub first_break: Option<Break>,
    /// Which key the checkpoint signatures were checked against.
    pub key: KeyUsed,
    /// What the last valid checkpoint covers; publish it off the box to guard the tail.
    pub last_checkpoint: Option<Anchor>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub seq: u64,
    pub problem: String,
}

/// Which key the signatures were checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyUsed {
    /// The site's key, given by the caller: a valid signature proves the site signed.
    Given { public_key_hex: String },
    /// No key given: each checkpoint was checked against the key it records.
    /// That proves only self-consistency; compare these keys with the site's.
    Recorded { public_keys_hex: Vec<String> },
}

/// A (seq, hash) pair known from outside the database, e.g. a checkpoint the
/// site received over MQTT. Checks that the chain still reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u64,
    pub head: [u8; 32],
}

/// Verifies the whole chain; see [`verify_against`].
pub fn verify(db_path: &Path, public_key: Option<&[u8; 32]>) -> Result<VerifyReport, AuditError> {
    verify_against(db_path, public_key, None)
}

/// Verifies the whole chain read-only: every hash and link, seq 1..=n without
/// gap (entries moved to archive files are accounted for by their
/// `audit_archives` rows, which must link to each other and to the first
/// stored entry), every checkpoint signature, the recorded head, and `anchor`
/// if given. Reports the first break. Errors are for an unreadable database,
/// not for a tampered one, and for an anchor that lies in an archived segment
/// (check it on that file with [`super::verify_archive_against`]).
pub fn verify_against(
    db_path: &Path,
    public_key: Option<&[u8; 32]>,
    anchor: Option<Anchor>,
) -> Result<VerifyReport, AuditError> {
    let mut conn = schema::open_read_only(db_path)?;
    // One read transaction: the rows, the archive rows and the head row come from one snapshot.
    let tx = conn.transaction()?;
    let mut check = Checker::new(db_path, public_key, anchor, Origin::Genesis)?;
    check.archives(&schema::archive_rows(&tx)?);
    if let Some(a) = anchor {
        if a.seq > 0 && a.seq < check.expected && check.report.first_break.is_none() {
            return Err(AuditError::AnchorElsewhere {
                seq: a.seq,
                why: format!("entries before {} are archived; check it on their file", check.expected),
            });
        }
    }
    {
        let mut stmt = tx.prepare(&format!("{SELECT_ENTRY} ORDER BY seq"))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let is_checkpoint = matches!(row.get_ref(1), Ok(ValueRef::Text(k)) if k == CHECKPOINT_KIND.as_bytes());
            let stored_hash = match row.get_ref(8) {
                Ok(ValueRef::Blob(h)) => Some(h.try_into().unwrap_or(GENESIS_HASH)),
                _ => None,
            };
            check.entry(schema::row_seq(row)?, is_checkpoint, stored_hash, || schema::raw_entry(row))?;
        }
    }
    check.recorded_head(schema::read_head(&tx));
    check.anchor_reached();
    Ok(check.finish("audit chain verified"))
}

/// Where the checked chain starts from, for the message when its first entry does not link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// Entry 1 and the genesis hash, or the newest audit_archives row.
    Genesis,
    /// An archive file's header.
    FileHeader,
}

/// Checks one chain segment entry by entry; shared by the database and the archive files.
pub(super) struct Checker {
    /// The next seq; one past the last entry that checked out.
    pub expected: u64,
    /// Hash of entry `expected - 1`.
    pub prev: [u8; 32],
    /// Entries up to here are in archives (their rows should be gone).
    archived_last: u64,
    origin: Origin,
    given_key: Option<VerifyingKey>,
    public_key: Option<[u8; 32]>,
    recorded_keys: BTreeSet<[u8; 32]>,
    anchor: Option<Anchor>,
    anchor_hash: Option<[u8; 32]>,
    /// Whether the last entry that checked out is a checkpoint.
    pub ends_with_checkpoint: bool,
    pub report: VerifyReport,
    buf: Vec<u8>,
}

impl Checker {
    pub(super) fn new(
        path: &Path,
        public_key: Option<&[u8; 32]>,
        anchor: Option<Anchor>,
        origin: Origin,
    ) -> Result<Checker, AuditError> {
        let given_key = match public_key {
            Some(k) => Some(VerifyingKey::from_bytes(k).map_err(|e| AuditError::BadKey {
                path: path.to_path_buf(),
                reason: format!("given public key is invalid: {e}"),
            })?),
            None => None,
        };
        Ok(Checker {
            expected: 1,
            prev: GENESIS_HASH,
            archived_last: 0,
            origin,
            given_key,
            public_key: public_key.copied(),
            recorded_keys: BTreeSet::new(),
            anchor,
            anchor_hash: None,
            ends_with_checkpoint: false,
            report: VerifyReport {
                first_seq: 1,
                entries: 0,
                checkpoints: 0,
                head: GENESIS_HASH,
                first_break: None,
                key: KeyUsed::Recorded { public_keys_hex: Vec::new() },
                last_checkpoint: None,
            },
            buf: Vec::with_capacity(512),
        })
    }

    /// Starts at `first_seq`, after an entry whose hash is `prev` (an archive file's header).
    pub(super) fn start_at(&mut self, first_seq: u64, prev: [u8; 32]) {
        self.expected = first_seq;
        self.prev = prev;
        self.report.first_seq = first_seq;
        self.report.head = prev;
        if first_seq == 1 && prev != GENESIS_HASH {
            self.brk(1, "out of order: entry 1 does not start from the genesis hash".into());
        }
    }

    pub(super) fn brk(&mut self, seq: u64, problem: String) {
        if self.report.first_break.is_none() {
            tracing::warn!(seq, %problem, "audit chain broken");
            self.report.first_break = Some(Break { seq, problem });
        }
    }

    /// Accounts for the archived prefix: rows must cover 1..=n without gap
    /// and link to each other; the stored chain then continues after them.
    pub(super) fn archives(&mut self, rows: &[Result<ArchiveRow, String>]) {
        for row in rows {
            let expected = self.expected;
            let a = match row {
                Ok(a) => a,
                Err(problem) => {
                    return self.brk(
                        expected,
                        format!("the audit_archives row from entry {expected} is malformed ({problem})"),
                    );
                }
            };
            let range = format!("{}..={}", a.first_seq, a.last_seq);
            if a.first_seq > expected {
                return self.brk(
                    expected,
                    format!("gap: entries {expected}..={} are neither archived nor stored", a.first_seq - 1),
                );
            }
            if a.first_seq < expected {
                return self
                    .brk(expected, format!("out of order: an archive of entries {range} overlaps the one before"));
            }
            if a.last_seq < a.first_seq || a.entries != a.last_seq - a.first_seq + 1 {
                return self
                    .brk(expected, format!("the audit_archives row for entries {range} counts {} entries", a.entries));
            }
            if a.prev_hash != self.prev {
                let problem = if expected == 1 {
                    format!("out of order: the archive of entries {range} does not start from the genesis hash")
                } else {
                    format!(
                        "out of order: the archive of entries {range} does not link to archived entry {} \
                         (an audit_archives row was changed)",
                        expected - 1
                    )
                };
                return self.brk(expected, problem);
            }
            self.prev = a.last_hash;
            self.expected = a.last_seq + 1;
        }
        self.archived_last = self.expected - 1;
        self.report.first_seq = self.expected;
        self.report.head = self.prev;
    }

    /// One row in stored order. `is_checkpoint` and `stored_hash` are read
    /// from the row as stored, for counting even past a break.
    pub(super) fn entry<R: Borrow<RawEntry>, E>(
        &mut self,
        seq: Option<u64>,
        is_checkpoint: bool,
        stored_hash: Option<[u8; 32]>,
        raw: impl FnOnce() -> Result<Result<R, String>, E>,
    ) -> Result<(), E> {
        self.report.entries += 1;
        if is_checkpoint {
            self.report.checkpoints += 1;
        }
        self.report.head = stored_hash.unwrap_or(GENESIS_HASH);
        if self.report.first_break.is_some() {
            return Ok(());
        }
        let expected = self.expected;
        match seq {
            Some(seq) if seq == expected => {}
            Some(seq) if seq > expected => {
                self.brk(expected, format!("gap: entry {expected} missing (next is {seq})"));
                return Ok(());
            }
            Some(seq) if seq <= self.archived_last => {
                self.brk(seq, format!("entry {seq} is still stored but audit_archives says it was archived"));
                return Ok(());
            }
            other => {
                let found = other.map_or_else(|| "a non-positive seq".to_string(), |s| s.to_string());
                self.brk(expected, format!("out of order: found {found} where entry {expected} belongs"));
                return Ok(());
            }
        }
        let seq = expected;
        let raw = match raw()? {
            Ok(raw) => raw,
            Err(problem) => {
                self.brk(seq, format!("hash mismatch: entry was edited ({problem})"));
                return Ok(());
            }
        };
        let raw: &RawEntry = raw.borrow();
        // Link first: a row moved here from elsewhere hashes fine with its
        // own prev_hash but does not link.
        if raw.prev_hash != self.prev {
            let problem = if seq == 1 {
                "out of order: entry 1 does not start from the genesis hash".to_string()
            } else if seq == self.report.first_seq && self.origin == Origin::FileHeader {
                format!("out of order: entry {seq} does not link to the header's prev_hash (entry or header changed)")
            } else if seq == self.report.first_seq {
                format!(
                    "out of order: entry {seq} does not link to archived entry {} \
                     (entry {seq} or the newest audit_archives row was changed)",
                    seq - 1
                )
            } else {
                format!(
                    "out of order: entry {seq} does not link to entry {} \
                     (reordered or substituted, or entry {} rewritten)",
                    seq - 1,
                    seq - 1
                )
            };
            self.brk(seq, problem);
            return Ok(());
        }
        if entry_hash(&self.prev, &raw.fields(), &mut self.buf) != raw.hash {
            self.brk(seq, "hash mismatch: entry was edited".into());
            return Ok(());
        }
        self.ends_with_checkpoint = raw.kind == CHECKPOINT_KIND;
        if self.ends_with_checkpoint {
            match check_checkpoint(&raw.payload, seq, &self.prev, self.given_key.as_ref()) {
                Ok(cp) => {
                    self.recorded_keys.insert(cp.public_key);
                    self.report.last_checkpoint = Some(Anchor { seq: seq - 1, head: self.prev });
                }
                Err(problem) => {
                    self.brk(seq, problem);
                    return Ok(());
                }
            }
        }
        if self.anchor.is_some_and(|a| a.seq == seq) {
            self.anchor_hash = Some(raw.hash);
        }
        self.prev = raw.hash;
        self.expected += 1;
        Ok(())
    }

    /// The database's `audit_head` row must match the last entry.
    fn recorded_head(&mut self, head: Result<Option<(u64, Vec<u8>)>, AuditError>) {
        if self.report.first_break.is_some() {
            return;
        }
        let last = self.expected - 1;
        match head {
            Ok(Some((head_seq, head_hash))) => {
                if head_seq > last {
                    self.brk(
                        last + 1,
                        format!("truncated: the recorded head is entry {head_seq} but the chain ends at {last}"),
                    );
                } else if head_seq < last {
                    self.brk(head_seq + 1, format!("entry {} is past the recorded head {head_seq}", head_seq + 1));
                } else if head_hash[..] != self.prev[..] {
                    self.brk(last, format!("hash mismatch: entry {last} differs from the recorded head"));
                }
            }
            Ok(None) | Err(_) => self.brk(last + 1, "the recorded head is missing".into()),
        }
    }

    /// The chain must reach the anchor and hold its hash there.
    pub(super) fn anchor_reached(&mut self) {
        let (None, Some(a)) = (&self.report.first_break, self.anchor) else {
            return;
        };
        let last = self.expected - 1;
        if a.seq > last {
            self.brk(last + 1, format!("truncated: the chain ends at {last} but the anchor covers {}", a.seq));
        } else if a.seq > 0 && self.anchor_hash != Some(a.head) {
            self.brk(
                a.seq,
                format!("hash mismatch: entry {} differs from the anchor (chain rewritten at or before it)", a.seq),
            );
        }
    }

    pub(super) fn finish(mut self, what: &'static str) -> VerifyReport {
        self.report.key = match self.public_key {
            Some(k) => KeyUsed::Given { public_key_hex: hex::encode(k) },
            None => KeyUsed::Recorded { public_keys_hex: self.recorded_keys.iter().map(hex::encode).collect() },
        };
        tracing::info!(
            first_seq = self.report.first_seq,
            entries = self.report.entries,
            checkpoints = self.report.checkpoints,
            intact = self.report.first_break.is_none(),
            "{what}"
        );
        self.report
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointPayload {
    seq: u64,
    head: String,
    public_key: String,
    signature: String,
}

struct CheckedCheckpoint {
    public_key: [u8; 32],
}

/// A checkpoint at entry `seq` must cover entry `seq - 1`, whose hash is `prev`.
fn check_checkpoint(
    payload: &str,
    seq: u64,
    prev: &[u8; 32],
    given_key: Option<&VerifyingKey>,
) -> Result<CheckedCheckpoint, String> {
    let bad = |what: &str| format!("bad checkpoint: {what}");
    let cp: CheckpointPayload = serde_json::from_str(payload).map_err(|e| bad(&format!("malformed payload ({e})")))?;
    if cp.seq + 1 != seq {
        return Err(bad(&format!("it covers entry {} but follows entry {}", cp.seq, seq - 1)));
    }
    let head = decode::<32>(&cp.head).ok_or_else(|| bad("head is not 32 hex bytes"))?;
    if &head != prev {
        return Err(bad(&format!("its head differs from entry {}", cp.seq)));
    }
    let recorded = decode::<32>(&cp.public_key).ok_or_else(|| bad("public_key is not 32 hex bytes"))?;
    let signature = decode::<64>(&cp.signature).ok_or_else(|| bad("signature is not 64 hex bytes"))?;
    let key = match given_key {
        Some(k) => {
            if k.as_bytes() != &recorded {
                return Err(format!("bad checkpoint signature: signed by {}, not the given key", cp.public_key));
            }
            *k
        }
        None => VerifyingKey::from_bytes(&recorded).map_err(|_| bad("public_key is not a valid key"))?,
    };
    key.verify_strict(&checkpoint_message(cp.seq, &head), &Signature::from_bytes(&signature))
        .map_err(|_| "bad checkpoint signature".to_string())?;
    Ok(CheckedCheckpoint { public_key: recorded })
}

fn decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

//! Independent check of a log: read-only, trusts nothing stored but the format.

use ed25519_dalek::{Signature, VerifyingKey};
use rusqlite::types::ValueRef;
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::encoding::{checkpoint_message, entry_hash, GENESIS_HASH};
use super::schema::{self, ArchiveRow, RawEntry, SELECT_ENTRY};
use super::{AuditError, CheckpointPayload, CHECKPOINT_KIND};

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
    /// Entries after the last checkpoint (up to the break, if any): not signed, so rewritable
    /// by whoever holds the database, and only an anchor from off the box tells.
    pub unsigned: u64,
    /// Anchors found in the chain with the hash they give.
    pub anchors_checked: u64,
    /// Anchors in an archived segment: checked against the archive files instead.
    pub anchors_archived: u64,
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
    verify_against(db_path, public_key, &[])
}

/// Verifies the whole chain read-only: every hash and link, seq 1..=n without
/// gap (entries moved to archive files are accounted for by their
/// `audit_archives` rows, which must link to each other and to the first
/// stored entry), every checkpoint signature, the recorded head, and every
/// anchor: the chain must reach it (a chain shorter than an anchor was cut) and
/// hold its hash there (else it was rewritten at or before it). Reports the
/// first break. Anchors in archived segments are counted, for
/// [`super::verify_archives`] to check on their files. Errors are for an
/// unreadable database, not for a tampered one.
pub fn verify_against(
    db_path: &Path,
    public_key: Option<&[u8; 32]>,
    anchors: &[Anchor],
) -> Result<VerifyReport, AuditError> {
    let mut conn = schema::open_read_only(db_path)?;
    // One read transaction: the rows, the archive rows and the head row come from one snapshot.
    let tx = conn.transaction()?;
    let mut check = Checker::new(db_path, public_key, anchors, Origin::Genesis)?;
    check.archives(&schema::archive_rows(&tx)?);
    check.set_aside_archived_anchors();
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
    /// Anchors not yet met, by the entry they cover.
    anchors: BTreeMap<u64, [u8; 32]>,
    /// Whether the last entry that checked out is a checkpoint.
    pub ends_with_checkpoint: bool,
    pub report: VerifyReport,
    buf: Vec<u8>,
}

impl Checker {
    pub(super) fn new(
        path: &Path,
        public_key: Option<&[u8; 32]>,
        anchors: &[Anchor],
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
            // Seq 0 is the genesis: nothing to check.
            anchors: anchors.iter().filter(|a| a.seq > 0).map(|a| (a.seq, a.head)).collect(),
            ends_with_checkpoint: false,
            report: VerifyReport {
                first_seq: 1,
                entries: 0,
                checkpoints: 0,
                head: GENESIS_HASH,
                first_break: None,
                key: KeyUsed::Recorded { public_keys_hex: Vec::new() },
                last_checkpoint: None,
                unsigned: 0,
                anchors_checked: 0,
                anchors_archived: 0,
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

    /// Anchors before the stored entries (archived): counted, left to the archive files.
    fn set_aside_archived_anchors(&mut self) {
        let stored = self.anchors.split_off(&self.expected);
        self.report.anchors_archived = self.anchors.len() as u64;
        self.anchors = stored;
    }

    /// Keeps only the anchors within `first..=last` (an archive file's range).
    pub(super) fn keep_anchors_within(&mut self, first: u64, last: u64) {
        self.anchors.retain(|seq, _| (first..=last).contains(seq));
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
                    self.report.unsigned = 0;
                }
                Err(problem) => {
                    self.brk(seq, problem);
                    return Ok(());
                }
            }
        } else {
            self.report.unsigned += 1;
        }
        if let Some(head) = self.anchors.remove(&seq) {
            if head != raw.hash {
                self.brk(
                    seq,
                    format!(
                        "anchor {seq}:{} disagrees: entry {seq} differs (the chain was rewritten at or before it)",
                        hex::encode(head)
                    ),
                );
                return Ok(());
            }
            self.report.anchors_checked += 1;
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

    /// The chain must reach every anchor: one left unmet lies past its end.
    pub(super) fn anchor_reached(&mut self) {
        if self.report.first_break.is_some() {
            return;
        }
        let last = self.expected - 1;
        if let Some((&seq, head)) = self.anchors.iter().next() {
            let problem = format!(
                "truncated: the chain ends at {last} but anchor {seq}:{} covers entry {seq}",
                hex::encode(head)
            );
            self.brk(last + 1, problem);
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

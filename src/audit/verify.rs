//! Independent check of a log: read-only, trusts nothing stored but the format.

use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::Path;

use super::encoding::{checkpoint_message, entry_hash, GENESIS_HASH};
use super::schema::{self, SELECT_ENTRY};
use super::{AuditError, CHECKPOINT_KIND};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Rows read (including checkpoints and rows after a break).
    pub entries: u64,
    /// Checkpoint rows read.
    pub checkpoints: u64,
    /// Stored hash of the last row read (zeros when empty).
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
/// gap, every checkpoint signature, the recorded head, and `anchor` if given.
/// Reports the first break. Errors are for an unreadable database, not for a
/// tampered one.
pub fn verify_against(
    db_path: &Path,
    public_key: Option<&[u8; 32]>,
    anchor: Option<Anchor>,
) -> Result<VerifyReport, AuditError> {
    let mut conn = schema::open_read_only(db_path)?;
    // One read transaction: the rows and the head row come from one snapshot.
    let tx = conn.transaction()?;
    let given_key = match public_key {
        Some(k) => Some(VerifyingKey::from_bytes(k).map_err(|e| AuditError::BadKey {
            path: db_path.to_path_buf(),
            reason: format!("given public key is invalid: {e}"),
        })?),
        None => None,
    };
    let mut recorded_keys = BTreeSet::new();
    let mut report = VerifyReport {
        entries: 0,
        checkpoints: 0,
        head: GENESIS_HASH,
        first_break: None,
        key: KeyUsed::Recorded { public_keys_hex: Vec::new() },
        last_checkpoint: None,
    };
    let brk = |seq: u64, problem: String, first_break: &mut Option<Break>| {
        if first_break.is_none() {
            tracing::warn!(seq, %problem, "audit chain broken");
            *first_break = Some(Break { seq, problem });
        }
    };
    let mut expected: u64 = 1;
    let mut prev = GENESIS_HASH;
    let mut anchor_hash = None;
    let mut buf = Vec::with_capacity(512);
    {
        let mut stmt = tx.prepare(&format!("{SELECT_ENTRY} ORDER BY seq"))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            report.entries += 1;
            if let Ok(rusqlite::types::ValueRef::Text(k)) = row.get_ref(1) {
                if k == CHECKPOINT_KIND.as_bytes() {
                    report.checkpoints += 1;
                }
            }
            if let Ok(rusqlite::types::ValueRef::Blob(h)) = row.get_ref(8) {
                report.head = h.try_into().unwrap_or(GENESIS_HASH);
            }
            if report.first_break.is_some() {
                continue;
            }
            match schema::row_seq(row)? {
                Some(seq) if seq == expected => {}
                Some(seq) if seq > expected => {
                    brk(expected, format!("gap: entry {expected} missing (next is {seq})"), &mut report.first_break);
                    continue;
                }
                other => {
                    let found = other.map_or_else(|| "a non-positive seq".to_string(), |s| s.to_string());
                    brk(
                        expected,
                        format!("out of order: found {found} where entry {expected} belongs"),
                        &mut report.first_break,
                    );
                    continue;
                }
            }
            let seq = expected;
            let raw = match schema::raw_entry(row)? {
                Ok(raw) => raw,
                Err(problem) => {
                    brk(seq, format!("hash mismatch: entry was edited ({problem})"), &mut report.first_break);
                    continue;
                }
            };
            // Link first: a row moved here from elsewhere hashes fine with its
            // own prev_hash but does not link.
            if raw.prev_hash != prev {
                let problem = if seq == 1 {
                    "out of order: entry 1 does not start from the genesis hash".to_string()
                } else {
                    format!(
                        "out of order: entry {seq} does not link to entry {} \
                         (reordered or substituted, or entry {} rewritten)",
                        seq - 1,
                        seq - 1
                    )
                };
                brk(seq, problem, &mut report.first_break);
                continue;
            }
            if entry_hash(&prev, &raw.fields(), &mut buf) != raw.hash {
                brk(seq, "hash mismatch: entry was edited".into(), &mut report.first_break);
                continue;
            }
            if raw.kind == CHECKPOINT_KIND {
                match check_checkpoint(&raw.payload, seq, &prev, given_key.as_ref()) {
                    Ok(cp) => {
                        recorded_keys.insert(cp.public_key);
                        report.last_checkpoint = Some(Anchor { seq: seq - 1, head: prev });
                    }
                    Err(problem) => {
                        brk(seq, problem, &mut report.first_break);
                        continue;
                    }
                }
            }
            if anchor.is_some_and(|a| a.seq == seq) {
                anchor_hash = Some(raw.hash);
            }
            prev = raw.hash;
            expected += 1;
        }
    }

    if report.first_break.is_none() {
        let last = expected - 1;
        match schema::read_head(&tx) {
            Ok(Some((head_seq, head_hash))) => {
                if head_seq > last {
                    brk(
                        last + 1,
                        format!("truncated: the recorded head is entry {head_seq} but the chain ends at {last}"),
                        &mut report.first_break,
                    );
                } else if head_seq < last {
                    brk(
                        head_seq + 1,
                        format!("entry {} is past the recorded head {head_seq}", head_seq + 1),
                        &mut report.first_break,
                    );
                } else if head_hash[..] != prev[..] {
                    brk(
                        last,
                        format!("hash mismatch: entry {last} differs from the recorded head"),
                        &mut report.first_break,
                    );
                }
            }
            Ok(None) | Err(_) => {
                brk(last + 1, "the recorded head is missing".into(), &mut report.first_break);
            }
        }
    }
    if let (None, Some(a)) = (&report.first_break, anchor) {
        let last = expected - 1;
        if a.seq > last {
            brk(
                last + 1,
                format!("truncated: the chain ends at {last} but the anchor covers {}", a.seq),
                &mut report.first_break,
            );
        } else if a.seq > 0 && anchor_hash != Some(a.head) {
            brk(
                a.seq,
                format!("hash mismatch: entry {} differs from the anchor (chain rewritten at or before it)", a.seq),
                &mut report.first_break,
            );
        }
    }

    report.key = match public_key {
        Some(k) => KeyUsed::Given { public_key_hex: hex::encode(k) },
        None => KeyUsed::Recorded { public_keys_hex: recorded_keys.into_iter().map(hex::encode).collect() },
    };
    tracing::info!(
        entries = report.entries,
        checkpoints = report.checkpoints,
        intact = report.first_break.is_none(),
        "audit chain verified"
    );
    Ok(report)
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

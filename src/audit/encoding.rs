//! The format: canonical bytes of an entry, canonical JSON, hashes.
//!
//! Changing anything here changes every hash: bump the version tags instead.

use sha2::{Digest, Sha256};

use super::AuditError;

/// Domain tag first, so an entry hash can never be mistaken for another hash.
pub(super) const ENTRY_TAG: &[u8] = b"sortline-audit-v1\0";
pub(super) const CHECKPOINT_TAG: &[u8] = b"sortline-checkpoint-v1\0";
/// `prev_hash` of entry 1.
pub(super) const GENESIS_HASH: [u8; 32] = [0; 32];

/// Limits keep one bad input from making a huge row; also keep lengths in u32.
pub(super) const MAX_TEXT_BYTES: usize = 4096;
pub(super) const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// The hashed fields of one entry, borrowed.
#[derive(Debug, Clone, Copy)]
pub(super) struct EntryFields<'a> {
    pub seq: u64,
    pub kind: &'a str,
    pub wall_ms: i64,
    pub mono_ms: u64,
    pub tracking: Option<u32>,
    pub waybill: Option<&'a str>,
    /// Exactly the stored text.
    pub payload: &'a str,
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Stored text is bounded well below 4 GiB (SQLite's own limit is 1e9 bytes).
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

impl<'a> EntryFields<'a> {
    /// `e`'s fields as entry `seq`, with its payload's stored text.
    pub fn of(e: &'a super::NewEntry, seq: u64, payload: &'a str) -> EntryFields<'a> {
        EntryFields {
            seq,
            kind: &e.kind,
            wall_ms: e.wall_ms,
            mono_ms: e.mono_ms,
            tracking: e.tracking,
            waybill: e.waybill.as_deref(),
            payload,
        }
    }
}

/// Canonical bytes (see AUDIT.md):
/// tag ‖ seq u64 BE ‖ wall_ms i64 BE ‖ mono_ms u64 BE ‖ kind (u32 BE len ‖ UTF-8)
/// ‖ tracking (0x00 | 0x01 ‖ u32 BE) ‖ waybill (0x00 | 0x01 ‖ u32 BE len ‖ UTF-8)
/// ‖ payload (u32 BE len ‖ UTF-8 JSON text).
pub(super) fn canonical_bytes(e: &EntryFields<'_>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(ENTRY_TAG);
    out.extend_from_slice(&e.seq.to_be_bytes());
    out.extend_from_slice(&e.wall_ms.to_be_bytes());
    out.extend_from_slice(&e.mono_ms.to_be_bytes());
    put_bytes(out, e.kind.as_bytes());
    match e.tracking {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            out.extend_from_slice(&t.to_be_bytes());
        }
    }
    match e.waybill {
        None => out.push(0),
        Some(w) => {
            out.push(1);
            put_bytes(out, w.as_bytes());
        }
    }
    put_bytes(out, e.payload.as_bytes());
}

/// hash = SHA-256(prev_hash ‖ canonical bytes). `buf` is scratch space.
pub(super) fn entry_hash(prev_hash: &[u8; 32], e: &EntryFields<'_>, buf: &mut Vec<u8>) -> [u8; 32] {
    canonical_bytes(e, buf);
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(&buf[..]);
    h.finalize().into()
}

/// What a checkpoint signs: tag ‖ covered seq u64 BE ‖ hash of that entry.
pub(super) fn checkpoint_message(seq: u64, head: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_TAG.len() + 8 + 32);
    m.extend_from_slice(CHECKPOINT_TAG);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(head);
    m
}

/// Compact JSON with object keys sorted by their UTF-8 bytes, at every depth.
/// Done by hand so that serde_json's `preserve_order` feature, if some other
/// crate in the build turns it on, cannot change what we hash.
pub(super) fn canonical_json(v: &serde_json::Value) -> Result<String, AuditError> {
    let mut out = Vec::with_capacity(128);
    write_json(v, &mut out)?;
    // serde_json only writes UTF-8.
    String::from_utf8(out).map_err(|e| AuditError::InvalidEntry(e.to_string()))
}

fn write_json(v: &serde_json::Value, out: &mut Vec<u8>) -> Result<(), AuditError> {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            // Without `preserve_order` the map iterates in key order already: sort only when
            // it does not, rather than collecting and looking up every key again.
            if map.keys().is_sorted() {
                write_members(map.iter(), out)?;
            } else {
                let mut members: Vec<(&String, &Value)> = map.iter().collect();
                members.sort_unstable_by(|a, b| a.0.cmp(b.0));
                write_members(members.into_iter(), out)?;
            }
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(item, out)?;
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar)?,
    }
    Ok(())
}

fn write_members<'a>(
    members: impl Iterator<Item = (&'a String, &'a serde_json::Value)>,
    out: &mut Vec<u8>,
) -> Result<(), AuditError> {
    out.push(b'{');
    for (i, (k, v)) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, k)?;
        out.push(b':');
        write_json(v, out)?;
    }
    out.push(b'}');
    Ok(())
}

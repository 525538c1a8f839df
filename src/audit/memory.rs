//! The chain without the database: the same validation, canonical bytes and hashes as
//! [`AuditLog::append`](super::AuditLog::append), kept in memory. The simulator's fault swarm
//! records millions of parcels through it (SQLite's fsync would be most of its time); the
//! test below holds it to the log's head hash.

use super::encoding::{entry_hash, EntryFields, GENESIS_HASH};
use super::log::validate;
use super::{AuditError, NewEntry};

/// An append-only hash chain in memory, unsigned.
#[derive(Debug, Clone)]
pub struct MemoryChain {
    seq: u64,
    head: [u8; 32],
    buf: Vec<u8>,
}

impl Default for MemoryChain {
    fn default() -> MemoryChain {
        MemoryChain { seq: 0, head: GENESIS_HASH, buf: Vec::with_capacity(512) }
    }
}

impl MemoryChain {
    /// Validates the whole batch, then links it; returns the seq of its last entry. A batch
    /// with an invalid entry links nothing, as the log's transaction would not.
    pub fn append(&mut self, entries: &[NewEntry]) -> Result<u64, AuditError> {
        let payloads = entries.iter().map(validate).collect::<Result<Vec<String>, AuditError>>()?;
        for (e, payload) in entries.iter().zip(&payloads) {
            self.seq += 1;
            self.head = entry_hash(&self.head, &EntryFields::of(e, self.seq, payload), &mut self.buf);
        }
        Ok(self.seq)
    }

    /// (seq, hash) of the last entry, (0, zeros) when empty: as [`AuditLog::head`](super::AuditLog::head).
    pub fn head(&self) -> (u64, [u8; 32]) {
        (self.seq, self.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditLog;

    fn entry(i: u32) -> NewEntry {
        NewEntry {
            kind: if i.is_multiple_of(3) { "gate".into() } else { "decision".into() },
            wall_ms: 1_700_000_000_000 + i64::from(i),
            mono_ms: u64::from(i) * 7,
            tracking: i.is_multiple_of(2).then_some(i),
            waybill: i.is_multiple_of(5).then(|| format!("EA{i:09}CN")),
            payload: serde_json::json!({"z": i, "a": [1, "two", {"y": null, "b": true}]}),
        }
    }

    #[test]
    fn its_head_is_the_logs_head_for_the_same_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::open(&dir.path().join("a.db"), None, 0).unwrap();
        let mut chain = MemoryChain::default();
        assert_eq!(chain.head(), log.head());
        for batch in [0..1, 1..40, 40..41, 41..100] {
            let entries: Vec<NewEntry> = batch.map(entry).collect();
            assert_eq!(chain.append(&entries).unwrap(), log.append(&entries).unwrap());
            assert_eq!(chain.head(), log.head());
        }
    }

    #[test]
    fn an_invalid_entry_links_nothing() {
        let mut chain = MemoryChain::default();
        chain.append(&[entry(1)]).unwrap();
        let before = chain.head();
        let bad = NewEntry { kind: String::new(), ..entry(2) };
        assert!(chain.append(&[entry(3), bad]).is_err());
        assert_eq!(chain.head(), before);
    }
}

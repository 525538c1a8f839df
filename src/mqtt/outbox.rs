//! The durable outbox: every event is written here before it is published and deleted only
//! once the broker acknowledged it (QoS 1 PUBACK). Its own file, `outbox.db` in the data
//! directory: the audit chain's database is written by the group-commit thread alone and is
//! append-only, while the outbox deletes on every acknowledgement; a separate file keeps the
//! chain's writer free of a second writer's locks and lets an operator discard a stuck outbox
//! without touching the record.

use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

pub const FILE: &str = "outbox.db";

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox database: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// What an event is: decides what may be dropped when the outbox is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Parcel,
    Alarm,
    Metrics,
    Reply,
    Checkpoint,
    Ack,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Parcel => "parcel",
            Kind::Alarm => "alarm",
            Kind::Metrics => "metrics",
            Kind::Reply => "reply",
            Kind::Checkpoint => "checkpoint",
            Kind::Ack => "ack",
        }
    }
}

/// One stored event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Increasing, never reused (AUTOINCREMENT), across restarts: the event id consumers
    /// drop duplicates by.
    pub id: i64,
    pub topic: String,
    /// A JSON object without its event id (added as it is published).
    pub payload: String,
}

/// What happened to a pushed event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Stored {
        id: i64,
    },
    /// The outbox is full and the event was metrics.
    Dropped,
}

/// The fill level crossed since the last push, for the alarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Normal,
    /// At or past [`Outbox::WARN_PERCENT`] of capacity.
    High,
    /// At or past capacity: metrics are dropped, the rest kept beyond capacity.
    Full,
}

pub struct Outbox {
    conn: Connection,
    capacity: u64,
    depth: u64,
    /// Metrics refused because the outbox was full, since open.
    pub dropped: u64,
    /// Parcel records, alarms and replies kept beyond capacity, since open.
    pub over_capacity: u64,
}

impl Outbox {
    pub const WARN_PERCENT: u64 = 80;

    pub fn open(path: &Path, capacity: u64) -> Result<Outbox, OutboxError> {
        let conn = Connection::open(path)?;
        // FULL: an event the line reported survives a power cut once pushed.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS outbox (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 kind TEXT NOT NULL,
                 topic TEXT NOT NULL,
                 payload TEXT NOT NULL
             );",
        )?;
        let depth: i64 = conn.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
        Ok(Outbox { conn, capacity: capacity.max(1), depth: depth as u64, dropped: 0, over_capacity: 0 })
    }

    pub fn depth(&self) -> u64 {
        self.depth
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn level(&self) -> Level {
        if self.depth >= self.capacity {
            Level::Full
        } else if self.depth * 100 >= self.capacity * Self::WARN_PERCENT {
            Level::High
        } else {
            Level::Normal
        }
    }

    pub fn push(&mut self, kind: Kind, topic: &str, payload: &str) -> Result<Pushed, OutboxError> {
        if self.depth >= self.capacity {
            if kind == Kind::Metrics {
                self.dropped += 1;
                return Ok(Pushed::Dropped);
            }
            self.over_capacity += 1;
        }
        self.conn.execute(
            "INSERT INTO outbox (kind, topic, payload) VALUES (?1, ?2, ?3)",
            params![kind.as_str(), topic, payload],
        )?;
        self.depth += 1;
        Ok(Pushed::Stored { id: self.conn.last_insert_rowid() })
    }

    /// Up to `limit` events after `after`, oldest first.
    pub fn after(&self, after: i64, limit: usize) -> Result<Vec<Stored>, OutboxError> {
        let mut stmt =
            self.conn.prepare_cached("SELECT id, topic, payload FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2")?;
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            Ok(Stored { id: r.get(0)?, topic: r.get(1)?, payload: r.get(2)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The broker has it: gone from the outbox.
    pub fn ack(&mut self, id: i64) -> Result<(), OutboxError> {
        let n = self.conn.execute("DELETE FROM outbox WHERE id = ?1", params![id])?;
        self.depth = self.depth.saturating_sub(n as u64);
        Ok(())
    }

    /// The oldest event still waiting, if any.
    pub fn oldest(&self) -> Result<Option<i64>, OutboxError> {
        Ok(self.conn.query_row("SELECT MIN(id) FROM outbox", [], |r| r.get::<_, Option<i64>>(0)).optional()?.flatten())
    }
}

/// The payload as published: the stored object with its event id first.
pub fn with_event_id(id: i64, payload: &str) -> String {
    match payload.strip_prefix('{') {
        Some(rest) if rest.trim_start().starts_with('}') => format!("{{\"event_id\":{id}}}"),
        Some(rest) => format!("{{\"event_id\":{id},{rest}"),
        // Not an object (never stored by this crate): wrapped so the id still comes with it.
        None => format!("{{\"event_id\":{id},\"payload\":{payload}}}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_reused_and_order_holds_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut o = Outbox::open(&path, 10).unwrap();
        let a = o.push(Kind::Parcel, "t", "{\"a\":1}").unwrap();
        let b = o.push(Kind::Parcel, "t", "{\"a\":2}").unwrap();
        assert_eq!((a, b), (Pushed::Stored { id: 1 }, Pushed::Stored { id: 2 }));
        o.ack(1).unwrap();
        o.ack(2).unwrap();
        assert_eq!(o.depth(), 0);
        drop(o);
        let mut o = Outbox::open(&path, 10).unwrap();
        assert_eq!(o.push(Kind::Alarm, "t", "{}").unwrap(), Pushed::Stored { id: 3 });
        o.push(Kind::Parcel, "t", "{\"b\":1}").unwrap();
        let ids: Vec<i64> = o.after(0, 10).unwrap().iter().map(|s| s.id).collect();
        assert_eq!(ids, [3, 4]);
        assert_eq!(o.oldest().unwrap(), Some(3));
        assert_eq!(o.after(3, 10).unwrap()[0].payload, "{\"b\":1}");
    }

    #[test]
    fn full_outbox_drops_metrics_and_keeps_parcels() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(&dir.path().join(FILE), 5).unwrap();
        for _ in 0..3 {
            o.push(Kind::Parcel, "t", "{}").unwrap();
        }
        assert_eq!(o.level(), Level::Normal);
        o.push(Kind::Metrics, "t", "{}").unwrap();
        assert_eq!(o.level(), Level::High);
        o.push(Kind::Parcel, "t", "{}").unwrap();
        assert_eq!(o.level(), Level::Full);
        assert_eq!(o.push(Kind::Metrics, "t", "{}").unwrap(), Pushed::Dropped);
        assert!(matches!(o.push(Kind::Parcel, "t", "{}").unwrap(), Pushed::Stored { .. }));
        assert_eq!((o.depth(), o.dropped, o.over_capacity), (6, 1, 1));
    }

    #[test]
    fn event_id_goes_first() {
        assert_eq!(with_event_id(7, "{\"a\":1}"), "{\"event_id\":7,\"a\":1}");
        assert_eq!(with_event_id(7, "{}"), "{\"event_id\":7}");
        assert_eq!(with_event_id(7, "3"), "{\"event_id\":7,\"payload\":3}");
    }
}

//! Tables, indexes, triggers, their migrations, and reading a stored row.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};
use std::path::Path;
use std::time::Duration;

use super::encoding::EntryFields;
use super::{AuditError, Entry};

/// Table names carry `audit_` because the data directory's one database also
/// holds manifests and the MQTT outbox.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "audit chain",
        r#"
CREATE TABLE audit_entries (
    seq       INTEGER PRIMARY KEY,  -- 1..=n, no gaps; the rowid
    kind      TEXT    NOT NULL,
    wall_ms   INTEGER NOT NULL,
    mono_ms   INTEGER NOT NULL,
    tracking  INTEGER,
    waybill   TEXT,
    payload   TEXT    NOT NULL,     -- canonical JSON, exactly as hashed
    prev_hash BLOB    NOT NULL,
    hash      BLOB    NOT NULL
);
CREATE INDEX audit_entries_waybill ON audit_entries(waybill) WHERE waybill IS NOT NULL;
CREATE INDEX audit_entries_tracking ON audit_entries(tracking) WHERE tracking IS NOT NULL;
CREATE INDEX audit_entries_wall_ms ON audit_entries(wall_ms);
-- Written in the same transaction as the entries: a missing tail shows.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB    NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));
-- Defence in depth only: verify() does not trust these.
CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only: UPDATE refused'); END;
CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only: DELETE refused'); END;
"#,
    ),
    (
        2,
        "audit archives (retention)",
        r#"
-- One row per export file; rows of audit_entries up to last_seq live in files now.
-- prev_hash/last_hash let verify() link the remaining chain (and each archive
-- to the one before) without the files.
CREATE TABLE audit_archives (
    first_seq           INTEGER NOT NULL UNIQUE,
    last_seq            INTEGER NOT NULL UNIQUE,
    prev_hash           BLOB    NOT NULL,  -- prev_hash of entry first_seq
    last_hash           BLOB    NOT NULL,  -- hash of entry last_seq (a checkpoint)
    file                TEXT    NOT NULL,  -- file name in the archive directory
    file_sha256         BLOB    NOT NULL,
    entries             INTEGER NOT NULL,
    archived_at_wall_ms INTEGER NOT NULL
);
-- Defence in depth, like the entry triggers: a row must describe stored
-- entries that continue the archives before it, and rows never change.
CREATE TRIGGER audit_archives_continue BEFORE INSERT ON audit_archives
WHEN NEW.first_seq != (SELECT COALESCE(MAX(last_seq), 0) FROM audit_archives) + 1
  OR NEW.last_seq < NEW.first_seq
  OR NEW.entries != NEW.last_seq - NEW.first_seq + 1
  OR NOT EXISTS (SELECT 1 FROM audit_entries WHERE seq = NEW.first_seq AND prev_hash = NEW.prev_hash)
  OR NOT EXISTS (SELECT 1 FROM audit_entries WHERE seq = NEW.last_seq AND hash = NEW.last_hash)
BEGIN SELECT RAISE(ABORT, 'audit archive row does not continue the chain: INSERT refused'); END;
CREATE TRIGGER audit_archives_no_update BEFORE UPDATE ON audit_archives
BEGIN SELECT RAISE(ABORT, 'audit archives are append-only: UPDATE refused'); END;
CREATE TRIGGER audit_archives_no_delete BEFORE DELETE ON audit_archives
BEGIN SELECT RAISE(ABORT, 'audit archives are append-only: DELETE refused'); END;
-- The only sanctioned delete: entries already recorded as archived, which
-- archive() inserts first in the same transaction.
DROP TRIGGER IF EXISTS audit_entries_no_delete;
CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
WHEN OLD.seq > (SELECT COALESCE(MAX(last_seq), 0) FROM audit_archives)
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only: DELETE refused (only archived entries may go)'); END;
"#,
    ),
];

pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) const SELECT_ENTRY: &str =
    "SELECT seq, kind, wall_ms, mono_ms, tracking, waybill, payload, prev_hash, hash FROM audit_entries";

pub(super) const INSERT_ENTRY: &str = "INSERT INTO audit_entries \
     (seq, kind, wall_ms, mono_ms, tracking, waybill, payload, prev_hash, hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// Brings the schema to the newest version, each migration in its own transaction.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), AuditError> {
    migrate_to(conn, i64::MAX)
}

/// Migrates up to `target` only: tests use it to make a database as an older build did.
pub(super) fn migrate_to(conn: &mut Connection, target: i64) -> Result<(), AuditError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS audit_migrations (
             version     INTEGER PRIMARY KEY,
             description TEXT NOT NULL
         );",
    )?;
    let supported = MIGRATIONS.last().map_or(0, |m| m.0);
    for &(version, description, sql) in MIGRATIONS {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.query_row("SELECT COALESCE(MAX(version), 0) FROM audit_migrations", [], |r| r.get(0))?;
        if found > supported {
            return Err(AuditError::SchemaTooNew { found, supported });
        }
        if found >= version || version > target {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO audit_migrations (version, description) VALUES (?1, ?2)",
            rusqlite::params![version, description],
        )?;
        tx.commit()?;
        tracing::info!(version, description, "audit schema migrated");
    }
    Ok(())
}

/// Readers never write, so they cannot disturb the chain.
pub(super) fn open_read_only(path: &Path) -> Result<Connection, AuditError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// The recorded head, if the row is there.
pub(super) fn read_head(conn: &Connection) -> Result<Option<(u64, Vec<u8>)>, AuditError> {
    let row = conn
        .query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .optional()?;
    Ok(row.map(|(seq, hash)| (u64::try_from(seq).unwrap_or(u64::MAX), hash)))
}

/// One `audit_archives` row: entries first_seq..=last_seq moved to `file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ArchiveRow {
    pub first_seq: u64,
    pub last_seq: u64,
    pub prev_hash: [u8; 32],
    pub last_hash: [u8; 32],
    pub file: String,
    pub file_sha256: [u8; 32],
    pub entries: u64,
}

/// A v1 database (never opened by a v2 writer) has no archive table; readers
/// open read-only and cannot migrate it.
fn has_archives(conn: &Connection) -> Result<bool, AuditError> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_archives'",
        [],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

const SELECT_ARCHIVE: &str =
    "SELECT first_seq, last_seq, prev_hash, last_hash, file, file_sha256, entries FROM audit_archives";

/// Every archive row in first_seq order; a malformed row is `Err(problem)`, as verify must report it.
pub(super) fn archive_rows(conn: &Connection) -> Result<Vec<Result<ArchiveRow, String>>, AuditError> {
    if !has_archives(conn)? {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(&format!("{SELECT_ARCHIVE} ORDER BY first_seq"))?;
    let rows = stmt.query_map([], archive_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Where the stored chain continues: (last_seq, last_hash) of the newest
/// archive, or (0, genesis) when nothing was archived.
pub(super) fn archive_base(conn: &Connection) -> Result<(u64, [u8; 32]), AuditError> {
    if !has_archives(conn)? {
        return Ok((0, super::encoding::GENESIS_HASH));
    }
    let newest =
        conn.query_row(&format!("{SELECT_ARCHIVE} ORDER BY last_seq DESC LIMIT 1"), [], archive_row).optional()?;
    match newest {
        None => Ok((0, super::encoding::GENESIS_HASH)),
        Some(Ok(a)) => Ok((a.last_seq, a.last_hash)),
        Some(Err(problem)) => {
            Err(AuditError::Corrupt { seq: 0, problem: format!("newest audit_archives row: {problem}") })
        }
    }
}

fn archive_row(row: &Row<'_>) -> Result<Result<ArchiveRow, String>, rusqlite::Error> {
    let seq = |i: usize, name: &str| -> Result<Result<u64, String>, rusqlite::Error> {
        Ok(int(row, i, name)?.and_then(|v| u64::try_from(v).map_err(|_| format!("{name} is negative"))))
    };
    macro_rules! ok {
        ($e:expr) => {
            match $e? {
                Ok(v) => v,
                Err(problem) => return Ok(Err(problem)),
            }
        };
    }
    let first_seq = ok!(seq(0, "first_seq"));
    let last_seq = ok!(seq(1, "last_seq"));
    let prev_hash = ok!(hash32(row, 2, "prev_hash"));
    let last_hash = ok!(hash32(row, 3, "last_hash"));
    let file = ok!(text(row, 4, "file")).unwrap_or_default();
    let file_sha256 = ok!(hash32(row, 5, "file_sha256"));
    let entries = ok!(seq(6, "entries"));
    Ok(Ok(ArchiveRow { first_seq, last_seq, prev_hash, last_hash, file, file_sha256, entries }))
}

/// A stored row, decoded without trusting its types: SQLite lets plain SQL
/// put text in an INTEGER column, and verify must report that, not fail.
#[derive(Debug, Clone)]
pub(super) struct RawEntry {
    pub seq: u64,
    pub kind: String,
    pub wall_ms: i64,
    pub mono_ms: u64,
    pub tracking: Option<u32>,
    pub waybill: Option<String>,
    pub payload: String,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// Row's seq, or None if it is not a positive integer.
pub(super) fn row_seq(row: &Row<'_>) -> Result<Option<u64>, rusqlite::Error> {
    Ok(match row.get_ref(0)? {
        ValueRef::Integer(i) => u64::try_from(i).ok().filter(|&s| s > 0),
        _ => None,
    })
}

fn int(row: &Row<'_>, i: usize, name: &str) -> Result<Result<i64, String>, rusqlite::Error> {
    Ok(match row.get_ref(i)? {
        ValueRef::Integer(v) => Ok(v),
        other => Err(format!("{name} is {:?}, not an integer", other.data_type())),
    })
}

fn text(row: &Row<'_>, i: usize, name: &str) -> Result<Result<Option<String>, String>, rusqlite::Error> {
    Ok(match row.get_ref(i)? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(t) => {
            std::str::from_utf8(t).map(|s| Some(s.to_owned())).map_err(|_| format!("{name} is not UTF-8"))
        }
        other => Err(format!("{name} is {:?}, not text", other.data_type())),
    })
}

fn hash32(row: &Row<'_>, i: usize, name: &str) -> Result<Result<[u8; 32], String>, rusqlite::Error> {
    Ok(match row.get_ref(i)? {
        ValueRef::Blob(b) => <[u8; 32]>::try_from(b).map_err(|_| format!("{name} has {} bytes, not 32", b.len())),
        other => Err(format!("{name} is {:?}, not a blob", other.data_type())),
    })
}

/// Outer error: SQLite failed. Inner error: the row is malformed (says how).
pub(super) fn raw_entry(row: &Row<'_>) -> Result<Result<RawEntry, String>, rusqlite::Error> {
    let Some(seq) = row_seq(row)? else {
        return Ok(Err("seq is not a positive integer".into()));
    };
    let kind = match text(row, 1, "kind")? {
        Ok(Some(k)) => k,
        Ok(None) => return Ok(Err("kind is NULL".into())),
        Err(e) => return Ok(Err(e)),
    };
    let wall_ms = match int(row, 2, "wall_ms")? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    let mono_ms = match int(row, 3, "mono_ms")? {
        Ok(v) => match u64::try_from(v) {
            Ok(v) => v,
            Err(_) => return Ok(Err("mono_ms is negative".into())),
        },
        Err(e) => return Ok(Err(e)),
    };
    let tracking = match row.get_ref(4)? {
        ValueRef::Null => None,
        ValueRef::Integer(v) => match u32::try_from(v) {
            Ok(t) => Some(t),
            Err(_) => return Ok(Err(format!("tracking {v} is out of range"))),
        },
        other => return Ok(Err(format!("tracking is {:?}", other.data_type()))),
    };
    let waybill = match text(row, 5, "waybill")? {
        Ok(w) => w,
        Err(e) => return Ok(Err(e)),
    };
    let payload = match text(row, 6, "payload")? {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(Err("payload is NULL".into())),
        Err(e) => return Ok(Err(e)),
    };
    let prev_hash = match hash32(row, 7, "prev_hash")? {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    let hash = match hash32(row, 8, "hash")? {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(RawEntry { seq, kind, wall_ms, mono_ms, tracking, waybill, payload, prev_hash, hash }))
}

impl RawEntry {
    pub(super) fn fields(&self) -> EntryFields<'_> {
        EntryFields {
            seq: self.seq,
            kind: &self.kind,
            wall_ms: self.wall_ms,
            mono_ms: self.mono_ms,
            tracking: self.tracking,
            waybill: self.waybill.as_deref(),
            payload: &self.payload,
        }
    }

    pub(super) fn into_entry(self) -> Result<Entry, AuditError> {
        let payload = serde_json::from_str(&self.payload)
            .map_err(|e| AuditError::Corrupt { seq: self.seq, problem: format!("payload is not JSON: {e}") })?;
        Ok(Entry {
            seq: self.seq,
            kind: self.kind,
            wall_ms: self.wall_ms,
            mono_ms: self.mono_ms,
            tracking: self.tracking,
            waybill: self.waybill,
            payload,
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

/// Reader's view of a row: a malformed row is an error, not a break.
pub(super) fn entry_from_row(row: &Row<'_>) -> Result<Entry, AuditError> {
    match raw_entry(row)? {
        Ok(raw) => raw.into_entry(),
        Err(problem) => Err(AuditError::Corrupt { seq: row_seq(row)?.unwrap_or(0), problem }),
    }
}

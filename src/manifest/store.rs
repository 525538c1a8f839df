//! `manifests.db`: every version of every declaration, the local manual targets and what
//! operators set at run time, in one SQLite file (WAL, synchronous=FULL). [`ManifestStore`]
//! keeps an in-memory index of each waybill's current version for the hot lookup;
//! [`OperatorStore`] is the daemon's handle on the targets and the operators' state, without
//! that index.

use super::model::Declaration;
use crate::core::{Input, ManualTarget, Millis, OfficerId, OperatorState, TargetCriterion, Waybill};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The store's file in the data directory.
pub const DB_FILE: &str = "manifests.db";

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "manifest versions and manual targets",
        r#"
-- Every version received is kept (law-enforcement data); the current one is the highest.
CREATE TABLE manifest_versions (
    waybill     TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,  -- wall clock, ms since the Unix epoch
    body        TEXT    NOT NULL,  -- the declaration as JSON
    PRIMARY KEY (waybill, version)
) WITHOUT ROWID;
CREATE TRIGGER manifest_versions_no_update BEFORE UPDATE ON manifest_versions
BEGIN SELECT RAISE(ABORT, 'manifest versions are never changed: UPDATE refused'); END;
-- Removed targets stay, marked, so the table tells who targeted what and when.
CREATE TABLE manual_targets (
    id          TEXT    PRIMARY KEY,
    criterion   TEXT    NOT NULL,  -- JSON: {"by": .., "value": ..}
    author      TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,  -- wall clock
    expires_ms  INTEGER,           -- wall clock
    removed_ms  INTEGER,
    removed_by  TEXT
);
"#,
    ),
    (
        2,
        "dead letters of the platform intake",
        r#"
-- Platform messages refused by the intake, with the reason: kept, never retried.
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms INTEGER NOT NULL,  -- wall clock
    topic       TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    payload     BLOB    NOT NULL   -- as received, cut at 64 KiB
);
"#,
    ),
    (
        3,
        "operators' run-time state",
        r#"
-- What operators set at run time (line stop, rates, review window), one row, replaced at every
-- change before the change takes effect; the audit chain keeps the history.
CREATE TABLE operator_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    state       TEXT    NOT NULL,  -- JSON: core::OperatorState
    changed_ms  INTEGER NOT NULL   -- wall clock
);
"#,
    ),
];

/// How much of a refused message a dead letter keeps.
pub const DEAD_LETTER_MAX_BYTES: usize = 64 * 1024;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("manifest store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("manifest store {path}: journal mode is {mode:?}, WAL is required")]
    NotWal { path: PathBuf, mode: String },
    #[error("manifest store {path}: schema version {found} is newer than this build ({supported})")]
    SchemaTooNew { path: PathBuf, found: i64, supported: i64 },
    #[error("manifest store {path}: stored record {what} is unreadable: {problem}")]
    Corrupt { path: PathBuf, what: String, problem: String },
    #[error("manual target {0} already exists")]
    TargetExists(String),
    #[error("no active manual target {0}")]
    NoTarget(String),
}

/// What storing one declaration did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// The first version of this waybill.
    New,
    /// Replaced `previous` as current; the previous version stays on record.
    Amended { previous: u64 },
    /// This very version is on record already, identical: nothing changed.
    Unchanged,
    /// Not stored: `held` is newer, or this version is on record with other content.
    Refused { held: u64, why: &'static str },
}

pub struct ManifestStore {
    conn: Connection,
    path: PathBuf,
    /// Waybill → current version.
    index: HashMap<Waybill, u64>,
}

impl std::fmt::Debug for ManifestStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestStore").field("path", &self.path).field("manifests", &self.index.len()).finish()
    }
}

/// A target as stored: the core's view plus wall-clock times and removal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTarget {
    pub id: String,
    pub criterion: TargetCriterion,
    pub author: String,
    pub reason: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub removed: Option<(i64, String)>,
}

impl StoredTarget {
    pub fn active_at(&self, wall_ms: i64) -> bool {
        self.removed.is_none() && self.expires_ms.is_none_or(|e| wall_ms < e)
    }

    /// The core's target, its times moved to line time: `line_now` is line time at wall `wall_now`.
    pub fn to_core(&self, wall_now: i64, line_now: Millis) -> Result<ManualTarget, StoreError> {
        let line = |wall: i64| Millis(line_now.0.saturating_add_signed(wall.saturating_sub(wall_now)));
        Ok(ManualTarget {
            id: self.id.as_str().into(),
            criterion: self.criterion.clone(),
            author: OfficerId::new(&self.author).map_err(|e| StoreError::Corrupt {
                path: PathBuf::new(),
                what: format!("target {}", self.id),
                problem: e.to_string(),
            })?,
            reason: self.reason.clone(),
            created_at: line(self.created_ms),
            expires_at: self.expires_ms.map(line),
        })
    }
}

/// Opens or creates the file, in WAL with full syncs, at the current schema.
fn open_db(path: &Path) -> Result<Connection, StoreError> {
    let sql = |source| StoreError::Sqlite { path: path.to_path_buf(), source };
    let mut conn = Connection::open(path).map_err(sql)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NotWal { path: path.to_path_buf(), mode });
    }
    // FULL: a committed batch survives a power cut.
    conn.pragma_update(None, "synchronous", "FULL").map_err(sql)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

impl ManifestStore {
    /// Opens or creates the store and builds the index from it.
    pub fn open(path: &Path) -> Result<ManifestStore, StoreError> {
        let conn = open_db(path)?;
        let mut store = ManifestStore { conn, path: path.to_path_buf(), index: HashMap::new() };
        store.rebuild_index()?;
        Ok(store)
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite { path: self.path.clone(), source }
    }

    fn rebuild_index(&mut self) -> Result<(), StoreError> {
        let mut index = HashMap::new();
        let mut stmt = self
            .conn
            .prepare("SELECT waybill, MAX(version) FROM manifest_versions GROUP BY waybill")
            .map_err(self.sql())?;
        let mut rows = stmt.query([]).map_err(self.sql())?;
        while let Some(row) = rows.next().map_err(self.sql())? {
            let text: String = row.get(0).map_err(self.sql())?;
            let version: i64 = row.get(1).map_err(self.sql())?;
            let waybill = serde_json::from_value::<Waybill>(text.clone().into()).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("waybill {text:?}"),
                problem: e.to_string(),
            })?;
            index.insert(waybill, version as u64);
        }
        drop(rows);
        drop(stmt);
        self.index = index;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Manifests held (current versions).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The hot lookup: the current version held for a waybill, from memory.
    pub fn current_version(&self, waybill: &Waybill) -> Option<u64> {
        self.index.get(waybill).copied()
    }

    /// Stores declarations (validated by the caller) in ONE transaction: all or none.
    /// Each gets its outcome; the index changes only once the transaction committed.
    pub fn store_batch(&mut self, batch: &[Declaration], received_ms: i64) -> Result<Vec<Stored>, StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
        let mut outcomes = Vec::with_capacity(batch.len());
        // The batch's own changes, which the index does not know yet.
        let mut overlay: HashMap<Waybill, u64> = HashMap::new();
        {
            let mut select = tx
                .prepare_cached("SELECT body FROM manifest_versions WHERE waybill = ?1 AND version = ?2")
                .map_err(sql)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO manifest_versions (waybill, version, received_ms, body) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(sql)?;
            for d in batch {
                let body = serde_json::to_string(d).map_err(|e| StoreError::Corrupt {
                    path: path.clone(),
                    what: format!("declaration {}", d.waybill),
                    problem: e.to_string(),
                })?;
                let held = overlay.get(&d.waybill).or_else(|| self.index.get(&d.waybill)).copied();
                let outcome = match held {
                    Some(held) if d.version <= held => {
                        let stored: Option<String> = select
                            .query_row(params![d.waybill.as_str(), d.version as i64], |r| r.get(0))
                            .optional()
                            .map_err(sql)?;
                        match stored {
                            Some(s) if s == body => Stored::Unchanged,
                            Some(_) => Stored::Refused { held, why: "this version is on record with other content" },
                            None => Stored::Refused { held, why: "a newer version is held" },
                        }
                    }
                    held => {
                        insert
                            .execute(params![d.waybill.as_str(), d.version as i64, received_ms, body])
                            .map_err(sql)?;
                        overlay.insert(d.waybill, d.version);
                        held.map_or(Stored::New, |previous| Stored::Amended { previous })
                    }
                };
                outcomes.push(outcome);
            }
        }
        tx.commit().map_err(sql)?;
        self.index.extend(overlay);
        Ok(outcomes)
    }

    /// Keeps a refused platform message with the reason (durable when this returns).
    pub fn dead_letter(
        &mut self,
        topic: &str,
        reason: &str,
        payload: &[u8],
        received_ms: i64,
    ) -> Result<i64, StoreError> {
        let kept = &payload[..payload.len().min(DEAD_LETTER_MAX_BYTES)];
        self.conn
            .execute(
                "INSERT INTO dead_letters (received_ms, topic, reason, payload) VALUES (?1, ?2, ?3, ?4)",
                params![received_ms, topic, reason, kept],
            )
            .map_err(self.sql())?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The dead letters, oldest first: (id, received wall ms, topic, reason).
    pub fn dead_letters(&self) -> Result<Vec<(i64, i64, String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, received_ms, topic, reason FROM dead_letters ORDER BY id")
            .map_err(self.sql())?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }

    /// The current version of a waybill's declaration.
    pub fn get(&self, waybill: &Waybill) -> Result<Option<Declaration>, StoreError> {
        match self.current_version(waybill) {
            Some(v) => self.get_version(waybill, v),
            None => Ok(None),
        }
    }

    pub fn get_version(&self, waybill: &Waybill, version: u64) -> Result<Option<Declaration>, StoreError> {
        let body: Option<String> = self
            .conn
            .query_row(
                "SELECT body FROM manifest_versions WHERE waybill = ?1 AND version = ?2",
                params![waybill.as_str(), version as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql())?;
        body.map(|b| self.decode(waybill.as_str(), &b)).transpose()
    }

    /// Every version on record of a waybill, oldest first: (version, received_ms).
    pub fn versions(&self, waybill: &Waybill) -> Result<Vec<(u64, i64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT version, received_ms FROM manifest_versions WHERE waybill = ?1 ORDER BY version")
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([waybill.as_str()], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)?)))
            .map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }

    /// Calls `f` with every current declaration, streaming from the file (for loading the core).
    pub fn for_each_current(&self, mut f: impl FnMut(Declaration)) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT waybill, MAX(version), body FROM manifest_versions GROUP BY waybill")
            .map_err(self.sql())?;
        let mut rows = stmt.query([]).map_err(self.sql())?;
        while let Some(row) = rows.next().map_err(self.sql())? {
            let waybill: String = row.get(0).map_err(self.sql())?;
            let body: String = row.get(2).map_err(self.sql())?;
            f(self.decode(&waybill, &body)?);
        }
        Ok(())
    }

    fn decode(&self, waybill: &str, body: &str) -> Result<Declaration, StoreError> {
        serde_json::from_str(body).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            what: format!("declaration {waybill}"),
            problem: e.to_string(),
        })
    }

    /// Retention: removes the whole history of every waybill whose newest version was
    /// received before `before_ms` (wall clock). Returns the versions removed.
    pub fn purge_before(&mut self, before_ms: i64) -> Result<u64, StoreError> {
        let n = self
            .conn
            .execute(
                "DELETE FROM manifest_versions WHERE waybill IN \
                 (SELECT waybill FROM manifest_versions GROUP BY waybill HAVING MAX(received_ms) < ?1)",
                [before_ms],
            )
            .map_err(self.sql())?;
        if n > 0 {
            self.rebuild_index()?;
        }
        Ok(n as u64)
    }

    // --- manual targets and the operators' state

    fn queries(&self) -> Targets<'_> {
        Targets { conn: &self.conn, path: &self.path }
    }

    /// The id the next target added by hand gets: `MT-<n>`.
    pub fn next_target_id(&self) -> Result<String, StoreError> {
        self.queries().next_id()
    }

    pub fn add_target(&mut self, t: &StoredTarget) -> Result<(), StoreError> {
        self.queries().add(t)
    }

    /// Marks an active target removed; the row stays.
    pub fn remove_target(&mut self, id: &str, by: &str, now_ms: i64) -> Result<StoredTarget, StoreError> {
        self.queries().remove(id, by, now_ms)
    }

    pub fn target(&self, id: &str) -> Result<Option<StoredTarget>, StoreError> {
        self.queries().get(id)
    }

    /// Every target ever added, in the order added.
    pub fn targets(&self) -> Result<Vec<StoredTarget>, StoreError> {
        self.queries().all()
    }

    /// Targets in force at `wall_ms` (not removed, not expired): what the core loads at start.
    pub fn standing_targets(&self, wall_ms: i64) -> Result<Vec<StoredTarget>, StoreError> {
        self.queries().standing(wall_ms)
    }

    /// What operators last set (default: nothing), to restore at start.
    pub fn operator_state(&self) -> Result<OperatorState, StoreError> {
        self.queries().operator_state()
    }

    /// What a starting core needs from the store, as inputs (recorded, so replay sees them):
    /// every current declaration (the decision's view) and the standing manual targets.
    pub fn core_inputs(&self, wall_ms: i64) -> Result<Vec<Input>, StoreError> {
        let mut inputs = Vec::with_capacity(self.len());
        self.for_each_current(|d| inputs.push(Input::Manifest(Arc::new(d.core_view()))))?;
        for t in self.standing_targets(wall_ms)? {
            inputs.push(Input::TargetAdd(t.to_core(wall_ms, Millis(0))?));
        }
        Ok(inputs)
    }
}

/// The daemon's handle on `manifests.db` for what operators change at run time: manual
/// targets and [`OperatorState`]. Each change is durable when the call returns; the core takes
/// it only then (`daemon::Command`).
pub struct OperatorStore {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for OperatorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorStore").field("path", &self.path).finish()
    }
}

impl OperatorStore {
    pub fn open(path: &Path) -> Result<OperatorStore, StoreError> {
        Ok(OperatorStore { conn: open_db(path)?, path: path.to_path_buf() })
    }

    fn queries(&self) -> Targets<'_> {
        Targets { conn: &self.conn, path: &self.path }
    }

    /// A target from an operator's command (its times are the core's line time; the store
    /// keeps wall-clock time, so it is stored as made now and without expiry when it has none).
    pub fn add_target(&mut self, t: &ManualTarget, now_ms: i64) -> Result<(), StoreError> {
        let expires_ms = t.expires_at.map(|e| now_ms.saturating_add(e.0.saturating_sub(t.created_at.0) as i64));
        self.queries().add(&new_target(t.id.to_string(), t.criterion.clone(), &t.author, &t.reason, now_ms, expires_ms))
    }

    pub fn remove_target(&mut self, id: &str, by: &OfficerId, now_ms: i64) -> Result<(), StoreError> {
        self.queries().remove(id, by.as_str(), now_ms).map(drop)
    }

    pub fn save_state(&mut self, state: &OperatorState, now_ms: i64) -> Result<(), StoreError> {
        let state = serde_json::to_string(state).unwrap_or_default();
        self.conn
            .execute(
                "INSERT INTO operator_state (id, state, changed_ms) VALUES (1, ?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, changed_ms = excluded.changed_ms",
                params![state, now_ms],
            )
            .map_err(|source| StoreError::Sqlite { path: self.path.clone(), source })?;
        Ok(())
    }

    pub fn operator_state(&self) -> Result<OperatorState, StoreError> {
        self.queries().operator_state()
    }

    /// Targets in force at `wall_ms`, for the supervision screen.
    pub fn standing_targets(&self, wall_ms: i64) -> Result<Vec<StoredTarget>, StoreError> {
        self.queries().standing(wall_ms)
    }
}

/// The targets' and the operators' state's queries, shared by both handles.
struct Targets<'a> {
    conn: &'a Connection,
    path: &'a Path,
}

impl Targets<'_> {
    fn sql(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite { path: self.path.to_path_buf(), source }
    }

    fn next_id(&self) -> Result<String, StoreError> {
        let n: i64 =
            self.conn.query_row("SELECT COUNT(*) FROM manual_targets", [], |r| r.get(0)).map_err(self.sql())?;
        let mut k = n + 1;
        // Ids given by other means (the demo's) may take a number.
        while self.get(&format!("MT-{k}"))?.is_some() {
            k += 1;
        }
        Ok(format!("MT-{k}"))
    }

    fn add(&self, t: &StoredTarget) -> Result<(), StoreError> {
        if self.get(&t.id)?.is_some() {
            return Err(StoreError::TargetExists(t.id.clone()));
        }
        let criterion = serde_json::to_string(&t.criterion).unwrap_or_default();
        self.conn
            .execute(
                "INSERT INTO manual_targets (id, criterion, author, reason, created_ms, expires_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![t.id, criterion, t.author, t.reason, t.created_ms, t.expires_ms],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    fn remove(&self, id: &str, by: &str, now_ms: i64) -> Result<StoredTarget, StoreError> {
        let t = self.get(id)?.filter(|t| t.removed.is_none()).ok_or_else(|| StoreError::NoTarget(id.into()))?;
        self.conn
            .execute(
                "UPDATE manual_targets SET removed_ms = ?2, removed_by = ?3 WHERE id = ?1 AND removed_ms IS NULL",
                params![id, now_ms, by],
            )
            .map_err(self.sql())?;
        Ok(StoredTarget { removed: Some((now_ms, by.into())), ..t })
    }

    fn get(&self, id: &str) -> Result<Option<StoredTarget>, StoreError> {
        Ok(self.select("WHERE id = ?1", [id])?.pop())
    }

    fn all(&self) -> Result<Vec<StoredTarget>, StoreError> {
        self.select("", [])
    }

    fn standing(&self, wall_ms: i64) -> Result<Vec<StoredTarget>, StoreError> {
        Ok(self.all()?.into_iter().filter(|t| t.active_at(wall_ms)).collect())
    }

    fn operator_state(&self) -> Result<OperatorState, StoreError> {
        let text: Option<String> = self
            .conn
            .query_row("SELECT state FROM operator_state WHERE id = 1", [], |r| r.get(0))
            .optional()
            .map_err(self.sql())?;
        text.map_or(Ok(OperatorState::default()), |text| {
            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                path: self.path.to_path_buf(),
                what: "the operators' state".into(),
                problem: e.to_string(),
            })
        })
    }

    fn select<P: rusqlite::Params>(&self, filter: &str, p: P) -> Result<Vec<StoredTarget>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT id, criterion, author, reason, created_ms, expires_ms, removed_ms, removed_by \
                 FROM manual_targets {filter} ORDER BY rowid"
            ))
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(p, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })
            .map_err(self.sql())?;
        let mut out = Vec::new();
        for row in rows {
            let (id, criterion, author, reason, created_ms, expires_ms, removed_ms, removed_by) =
                row.map_err(self.sql())?;
            let criterion = serde_json::from_str(&criterion).map_err(|e| StoreError::Corrupt {
                path: self.path.to_path_buf(),
                what: format!("target {id}"),
                problem: e.to_string(),
            })?;
            let removed = removed_ms.map(|ms| (ms, removed_by.unwrap_or_default()));
            out.push(StoredTarget { id, criterion, author, reason, created_ms, expires_ms, removed });
        }
        Ok(out)
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let sql = |source| StoreError::Sqlite { path: path.to_path_buf(), source };
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS manifest_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL);",
    )
    .map_err(sql)?;
    let supported = MIGRATIONS.last().map_or(0, |m| m.0);
    for &(version, description, script) in MIGRATIONS {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
        let found: i64 =
            tx.query_row("SELECT COALESCE(MAX(version), 0) FROM manifest_migrations", [], |r| r.get(0)).map_err(sql)?;
        if found > supported {
            return Err(StoreError::SchemaTooNew { path: path.to_path_buf(), found, supported });
        }
        if found >= version {
            continue;
        }
        tx.execute_batch(script).map_err(sql)?;
        tx.execute(
            "INSERT INTO manifest_migrations (version, description) VALUES (?1, ?2)",
            params![version, description],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        tracing::info!(version, description, "manifest store schema migrated");
    }
    Ok(())
}

/// Shared so that tests and the demo build targets the same way.
pub fn new_target(
    id: String,
    criterion: TargetCriterion,
    author: &OfficerId,
    reason: &str,
    created_ms: i64,
    expires_ms: Option<i64>,
) -> StoredTarget {
    StoredTarget {
        id,
        criterion,
        author: author.as_str().to_string(),
        reason: reason.to_string(),
        created_ms,
        expires_ms,
        removed: None,
    }
}

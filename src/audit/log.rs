//! The writer: one per data directory, owned by the group-commit thread.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};

use super::encoding::{canonical_json, entry_hash, EntryFields, MAX_PAYLOAD_BYTES, MAX_TEXT_BYTES};
use super::schema::{self, INSERT_ENTRY, SELECT_ENTRY};
use super::{AuditError, CheckpointObserver, CheckpointPayload, NewEntry, SignedCheckpoint, Signer, CHECKPOINT_KIND};

pub struct AuditLog {
    conn: Connection,
    path: PathBuf,
    head_seq: u64,
    head_hash: [u8; 32],
    signer: Option<Signer>,
    checkpoint_every: u64,
    /// Time bound on checkpoints, see [`AuditLog::set_checkpoint_interval_ms`].
    checkpoint_interval_ms: Option<u64>,
    /// Seq of the last checkpoint entry (archived or stored), 0 if none.
    last_checkpoint_seq: u64,
    /// Its wall_ms; None when unknown (none yet, or it was archived).
    last_checkpoint_wall_ms: Option<i64>,
    /// (wall_ms, mono_ms) of the head entry, which a checkpoint written without
    /// new entries copies; None when the head is genesis or archived.
    head_clock: Option<(i64, u64)>,
    /// Set when a failed append left the head unknown; appending then could fork the chain.
    poisoned: bool,
    /// Told of every checkpoint once it is committed.
    observer: Option<CheckpointObserver>,
    buf: Vec<u8>,
    /// Held while open: one writer per chain, across processes (released when it dies).
    _writer_lock: std::fs::File,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("head_seq", &self.head_seq)
            .field("head_hash", &hex::encode(self.head_hash))
            .field("signer", &self.signer)
            .field("checkpoint_every", &self.checkpoint_every)
            .field("checkpoint_interval_ms", &self.checkpoint_interval_ms)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens or creates the log. `checkpoint_every` = 0 disables checkpoints
    /// by count, `signer` = None disables them altogether.
    pub fn open(db_path: &Path, signer: Option<Signer>, checkpoint_every: u64) -> Result<AuditLog, AuditError> {
        Self::open_at_schema(db_path, signer, checkpoint_every, i64::MAX)
    }

    /// `open` with the schema migrated only up to `schema_version`: tests use
    /// it to write a database as an older build did.
    pub(super) fn open_at_schema(
        db_path: &Path,
        signer: Option<Signer>,
        checkpoint_every: u64,
        schema_version: i64,
    ) -> Result<AuditLog, AuditError> {
        let writer_lock = lock_writer(db_path)?;
        let mut conn = Connection::open(db_path)?;
        conn.busy_timeout(schema::BUSY_TIMEOUT)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(AuditError::NotWal(mode));
        }
        // FULL: the WAL is fsynced at every commit, so a committed batch survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        schema::migrate_to(&mut conn, schema_version)?;

        let (head_seq, head_hash, head_clock) = load_head(&conn)?;
        let stored_checkpoint = if signer.is_some() {
            // Walks back from the end: few rows when checkpoints are being written.
            conn.query_row(
                "SELECT seq, wall_ms FROM audit_entries WHERE kind = ?1 ORDER BY seq DESC LIMIT 1",
                [CHECKPOINT_KIND],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()?
        } else {
            None
        };
        let (last_checkpoint_seq, last_checkpoint_wall_ms) = match stored_checkpoint {
            Some((seq, wall)) => (u64::try_from(seq).unwrap_or(0), Some(wall)),
            // Every archive ends with a checkpoint.
            None => (schema::archive_base(&conn)?.0, None),
        };
        tracing::info!(
            path = %db_path.display(),
            head_seq,
            head = %hex::encode(head_hash),
            signing = signer.is_some(),
            checkpoint_every,
            "audit log opened"
        );
        Ok(AuditLog {
            conn,
            path: db_path.to_path_buf(),
            head_seq,
            head_hash,
            signer,
            checkpoint_every,
            checkpoint_interval_ms: None,
            last_checkpoint_seq,
            last_checkpoint_wall_ms,
            head_clock,
            poisoned: false,
            observer: None,
            buf: Vec::with_capacity(512),
            _writer_lock: writer_lock,
        })
    }

    /// Adds a time bound to the count bound: with a signer, a batch whose
    /// newest wall_ms is `ms` or more past the last checkpoint's wall_ms (or
    /// before it by as much: a clock stepped back must not stall the bound) is
    /// followed by a checkpoint, so a quiet line still gets signed heads.
    /// Works with `checkpoint_every` = 0 too (time bound only). None: off.
    pub fn set_checkpoint_interval_ms(&mut self, ms: Option<u64>) {
        self.checkpoint_interval_ms = ms;
    }

    /// Tells `observer` of every checkpoint from now on, once committed (to publish it off the
    /// box: an anchor the box cannot take back).
    pub fn observe_checkpoints(&mut self, observer: CheckpointObserver) {
        self.observer = Some(observer);
    }

    /// Appends the batch in ONE transaction and returns the seq of the batch's
    /// last entry (a checkpoint written after it is not counted; see
    /// [`AuditLog::head`]). An empty batch writes nothing and returns the head seq.
    pub fn append(&mut self, entries: &[NewEntry]) -> Result<u64, AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned);
        }
        if entries.is_empty() {
            return Ok(self.head_seq);
        }
        // Validate everything before touching the database.
        let payloads = entries.iter().map(validate).collect::<Result<Vec<String>, AuditError>>()?;
        Ok(self.commit(entries, &payloads, None, false)?.last_given)
    }

    /// Signs the head now if the time bound is due at `now_wall_ms` and
    /// entries came since the last checkpoint: appends only a checkpoint when
    /// the line is idle, so its last entries do not wait for the next parcel
    /// to be signed. Returns whether a checkpoint was written. Without a
    /// signer or an interval it does nothing.
    pub fn checkpoint_if_due(&mut self, now_wall_ms: i64) -> Result<bool, AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned);
        }
        if self.signer.is_none()
            || self.checkpoint_interval_ms.is_none()
            || self.head_seq <= self.last_checkpoint_seq
            || !self.checkpoint_due(self.head_seq, Some(now_wall_ms))
        {
            return Ok(false);
        }
        Ok(self.commit(&[], &[], Some(now_wall_ms), false)?.checkpoint.is_some())
    }

    /// Signs the head now, whatever the bounds say, if entries came since the last checkpoint
    /// (at a clean stop: nothing of the run is left unsigned). Without a signer it does nothing.
    pub fn checkpoint_now(&mut self, now_wall_ms: i64) -> Result<bool, AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned);
        }
        if self.signer.is_none() || self.head_seq <= self.last_checkpoint_seq {
            return Ok(false);
        }
        Ok(self.commit(&[], &[], Some(now_wall_ms), true)?.checkpoint.is_some())
    }

    /// Entries after the last checkpoint: not yet signed.
    pub fn unsigned(&self) -> u64 {
        self.head_seq.saturating_sub(self.last_checkpoint_seq)
    }

    fn commit(
        &mut self,
        entries: &[NewEntry],
        payloads: &[String],
        now: Option<i64>,
        force: bool,
    ) -> Result<Written, AuditError> {
        match self.write(entries, payloads, now, force) {
            Ok(w) => {
                self.head_seq = w.head_seq;
                self.head_hash = w.head_hash;
                self.head_clock = w.head_clock;
                if let Some(cp) = &w.checkpoint {
                    self.last_checkpoint_seq = w.head_seq;
                    self.last_checkpoint_wall_ms = w.head_clock.map(|c| c.0);
                    tracing::debug!(seq = w.head_seq, covers = w.head_seq - 1, "audit checkpoint signed");
                    if let Some(observe) = self.observer.as_mut() {
                        observe(cp);
                    }
                }
                tracing::debug!(entries = entries.len(), last_seq = w.last_given, "audit batch committed");
                Ok(w)
            }
            Err(e) => {
                tracing::error!(error = %e, entries = entries.len(), "audit batch failed");
                // The commit may have reached the disk before failing: re-read the head.
                match load_head(&self.conn) {
                    Ok((seq, hash, clock)) => {
                        self.head_seq = seq;
                        self.head_hash = hash;
                        self.head_clock = clock;
                    }
                    Err(e2) => {
                        tracing::error!(error = %e2, "audit head unknown after failure; log poisoned");
                        self.poisoned = true;
                    }
                }
                Err(e)
            }
        }
    }

    /// Whether the entry at `seq` (the head after a batch) gets a checkpoint;
    /// `newest_wall_ms` is the batch's newest wall clock, or now for a tick.
    fn checkpoint_due(&self, seq: u64, newest_wall_ms: Option<i64>) -> bool {
        let since = seq.saturating_sub(self.last_checkpoint_seq);
        if self.signer.is_none() || since == 0 {
            return false;
        }
        let by_count = self.checkpoint_every > 0 && since >= self.checkpoint_every;
        let by_time = match (self.checkpoint_interval_ms, newest_wall_ms) {
            (Some(ms), Some(now)) => self.last_checkpoint_wall_ms.is_none_or(|last| now.abs_diff(last) >= ms),
            _ => false,
        };
        by_count || by_time
    }

    /// (seq, hash) of the last entry written, (0, zeros) when empty.
    pub fn head(&self) -> (u64, [u8; 32]) {
        (self.head_seq, self.head_hash)
    }

    fn write(
        &mut self,
        entries: &[NewEntry],
        payloads: &[String],
        now: Option<i64>,
        force: bool,
    ) -> Result<Written, AuditError> {
        let newest_wall_ms = entries.iter().map(|e| e.wall_ms).max().or(now);
        // The clock fields of a checkpoint come from the entry it covers: the log reads no clock.
        let head_clock = entries.last().map(|e| (e.wall_ms, e.mono_ms)).or(self.head_clock);
        let due = force || self.checkpoint_due(self.head_seq + entries.len() as u64, newest_wall_ms);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut seq = self.head_seq;
        let mut hash = self.head_hash;
        let buf = &mut self.buf;
        let mut checkpoint = None;
        {
            let mut stmt = tx.prepare_cached(INSERT_ENTRY)?;
            let mut insert = |prev: &[u8; 32], f: EntryFields<'_>| -> Result<[u8; 32], AuditError> {
                let h = entry_hash(prev, &f, buf);
                stmt.execute(params![
                    sql_int(f.seq)?,
                    f.kind,
                    f.wall_ms,
                    sql_int(f.mono_ms)?,
                    f.tracking,
                    f.waybill,
                    f.payload,
                    &prev[..],
                    &h[..],
                ])?;
                Ok(h)
            };
            for (e, payload) in entries.iter().zip(payloads) {
                seq += 1;
                hash = insert(&hash, EntryFields::of(e, seq, payload))?;
            }
            let last_given = seq;
            if let (Some(signer), Some((wall_ms, mono_ms)), true) = (&self.signer, head_clock, due) {
                let signed = checkpoint_payload(signer, seq, &hash);
                let payload = canonical_json(&serde_json::to_value(&signed)?)?;
                seq += 1;
                hash = insert(
                    &hash,
                    EntryFields {
                        seq,
                        kind: CHECKPOINT_KIND,
                        wall_ms,
                        mono_ms,
                        tracking: None,
                        waybill: None,
                        payload: &payload,
                    },
                )?;
                checkpoint = Some(SignedCheckpoint { entry_seq: seq, wall_ms, payload: signed });
            }
            let changed = tx
                .execute("UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1", params![sql_int(seq)?, &hash[..]])?;
            if changed != 1 {
                return Err(AuditError::Corrupt { seq, problem: "audit_head row is missing".into() });
            }
            drop(stmt);
            tx.commit()?;
            Ok(Written { last_given, head_seq: seq, head_hash: hash, head_clock, checkpoint })
        }
    }
}

struct Written {
    /// Seq of the batch's last entry (before any checkpoint).
    last_given: u64,
    head_seq: u64,
    head_hash: [u8; 32],
    head_clock: Option<(i64, u64)>,
    /// The checkpoint written after the batch, if one was.
    checkpoint: Option<SignedCheckpoint>,
}

fn sql_int(v: u64) -> Result<i64, AuditError> {
    i64::try_from(v).map_err(|_| AuditError::InvalidEntry(format!("{v} does not fit SQLite")))
}

/// Checks one new entry and returns its canonical payload text.
pub(super) fn validate(e: &NewEntry) -> Result<String, AuditError> {
    if e.kind == CHECKPOINT_KIND {
        return Err(AuditError::InvalidEntry(format!(
            "kind {CHECKPOINT_KIND:?} is reserved for the log's own checkpoints"
        )));
    }
    if e.kind.is_empty() || e.kind.len() > MAX_TEXT_BYTES {
        return Err(AuditError::InvalidEntry(format!("kind must have 1..={MAX_TEXT_BYTES} bytes")));
    }
    if e.waybill.as_ref().is_some_and(|w| w.len() > MAX_TEXT_BYTES) {
        return Err(AuditError::InvalidEntry(format!("waybill longer than {MAX_TEXT_BYTES} bytes")));
    }
    sql_int(e.mono_ms)?;
    let payload = canonical_json(&e.payload)?;
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(AuditError::InvalidEntry(format!(
            "payload of kind {:?} has {} bytes, limit {MAX_PAYLOAD_BYTES}",
            e.kind,
            payload.len()
        )));
    }
    Ok(payload)
}

fn checkpoint_payload(signer: &Signer, seq: u64, head: &[u8; 32]) -> CheckpointPayload {
    CheckpointPayload {
        seq,
        head: hex::encode(head),
        public_key: signer.public_key_hex(),
        signature: hex::encode(signer.sign_checkpoint(seq, head)),
    }
}

/// (seq, hash, (wall_ms, mono_ms) of the head entry if it is stored).
type Head = (u64, [u8; 32], Option<(i64, u64)>);

/// Reads the recorded head and checks it against the last stored entry,
/// including that entry's own hash: appending after a broken tail would
/// bury the break under new, valid-looking entries. After an archive that
/// took every entry, the head is the newest archive's last entry.
fn load_head(conn: &Connection) -> Result<Head, AuditError> {
    let (head_seq, head_hash) = schema::read_head(conn)?.unwrap_or((u64::MAX, Vec::new()));
    let (archived_seq, archived_hash) = schema::archive_base(conn)?;
    let last =
        conn.query_row(&format!("{SELECT_ENTRY} ORDER BY seq DESC LIMIT 1"), [], schema::raw_entry).optional()?;
    let mismatch = |last_seq: u64, last_hash: String| AuditError::HeadMismatch {
        head_seq,
        head_hash: hex::encode(&head_hash),
        last_seq,
        last_hash,
    };
    match last {
        None if head_seq == archived_seq && head_hash == archived_hash => Ok((archived_seq, archived_hash, None)),
        None if archived_seq > 0 => Err(mismatch(archived_seq, format!("{} (archived)", hex::encode(archived_hash)))),
        None => Err(mismatch(0, "none".into())),
        Some(Err(problem)) => Err(mismatch(0, format!("unreadable ({problem})"))),
        Some(Ok(raw)) => {
            let mut buf = Vec::new();
            let recomputed = entry_hash(&raw.prev_hash, &raw.fields(), &mut buf);
            if recomputed != raw.hash {
                return Err(mismatch(raw.seq, "edited (hash does not match)".into()));
            }
            if raw.seq != head_seq || raw.hash[..] != head_hash[..] {
                return Err(mismatch(raw.seq, hex::encode(raw.hash)));
            }
            if raw.seq <= archived_seq {
                return Err(AuditError::Corrupt {
                    seq: raw.seq,
                    problem: format!("audit_archives says entries up to {archived_seq} were archived"),
                });
            }
            Ok((raw.seq, raw.hash, Some((raw.wall_ms, raw.mono_ms))))
        }
    }
}

/// Takes the chain's writer lock, `<database>.lock` beside it: a second writer would append
/// from a stale head and break the chain. Advisory (flock), so a killed writer releases it.
fn lock_writer(db_path: &Path) -> Result<std::fs::File, AuditError> {
    let path = db_path.with_extension("lock");
    let io = |source| AuditError::Io { path: path.clone(), source };
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(AuditError::Busy { path: db_path.to_path_buf() }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

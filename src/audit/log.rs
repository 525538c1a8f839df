//! The writer: one per data directory, owned by the group-commit thread.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};

use super::encoding::{canonical_json, entry_hash, EntryFields, GENESIS_HASH, MAX_PAYLOAD_BYTES, MAX_TEXT_BYTES};
use super::schema::{self, INSERT_ENTRY, SELECT_ENTRY};
use super::{AuditError, NewEntry, Signer, CHECKPOINT_KIND};

pub struct AuditLog {
    conn: Connection,
    path: PathBuf,
    head_seq: u64,
    head_hash: [u8; 32],
    signer: Option<Signer>,
    checkpoint_every: u64,
    /// Seq of the last checkpoint entry, 0 if none.
    last_checkpoint_seq: u64,
    /// Set when a failed append left the head unknown; appending then could fork the chain.
    poisoned: bool,
    buf: Vec<u8>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("head_seq", &self.head_seq)
            .field("head_hash", &hex::encode(self.head_hash))
            .field("signer", &self.signer)
            .field("checkpoint_every", &self.checkpoint_every)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens or creates the log. `checkpoint_every` = 0 disables checkpoints,
    /// as does `signer` = None.
    pub fn open(db_path: &Path, signer: Option<Signer>, checkpoint_every: u64) -> Result<AuditLog, AuditError> {
        let mut conn = Connection::open(db_path)?;
        conn.busy_timeout(schema::BUSY_TIMEOUT)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(AuditError::NotWal(mode));
        }
        // FULL: the WAL is fsynced at every commit, so a committed batch survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        schema::migrate(&mut conn)?;

        let (head_seq, head_hash) = load_head(&conn)?;
        let last_checkpoint_seq = if signer.is_some() && checkpoint_every > 0 {
            // Walks back from the end: at most `checkpoint_every` rows when signing.
            conn.query_row(
                "SELECT seq FROM audit_entries WHERE kind = ?1 ORDER BY seq DESC LIMIT 1",
                [CHECKPOINT_KIND],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map_or(0, |s| u64::try_from(s).unwrap_or(0))
        } else {
            0
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
            last_checkpoint_seq,
            poisoned: false,
            buf: Vec::with_capacity(512),
        })
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

        match self.write(entries, &payloads) {
            Ok((last_given, head_seq, head_hash, checkpoint)) => {
                self.head_seq = head_seq;
                self.head_hash = head_hash;
                if checkpoint {
                    self.last_checkpoint_seq = head_seq;
                    tracing::debug!(seq = head_seq, covers = head_seq - 1, "audit checkpoint signed");
                }
                tracing::debug!(entries = entries.len(), last_seq = last_given, "audit batch committed");
                Ok(last_given)
            }
            Err(e) => {
                tracing::error!(error = %e, entries = entries.len(), "audit batch failed");
                // The commit may have reached the disk before failing: re-read the head.
                match load_head(&self.conn) {
                    Ok((seq, hash)) => {
                        self.head_seq = seq;
                        self.head_hash = hash;
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

    /// (seq, hash) of the last entry written, (0, zeros) when empty.
    pub fn head(&self) -> (u64, [u8; 32]) {
        (self.head_seq, self.head_hash)
    }

    /// Returns (last given seq, new head seq, new head hash, checkpoint written).
    fn write(&mut self, entries: &[NewEntry], payloads: &[String]) -> Result<(u64, u64, [u8; 32], bool), AuditError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut seq = self.head_seq;
        let mut hash = self.head_hash;
        let buf = &mut self.buf;
        let mut checkpoint = false;
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
                hash = insert(
                    &hash,
                    EntryFields {
                        seq,
                        kind: &e.kind,
                        wall_ms: e.wall_ms,
                        mono_ms: e.mono_ms,
                        tracking: e.tracking,
                        waybill: e.waybill.as_deref(),
                        payload,
                    },
                )?;
            }
            let last_given = seq;
            if let Some(signer) = &self.signer {
                if self.checkpoint_every > 0 && seq - self.last_checkpoint_seq >= self.checkpoint_every {
                    let payload = checkpoint_payload(signer, seq, &hash)?;
                    // The clock fields come from the entry it covers: the log reads no clock.
                    let last = &entries[entries.len() - 1];
                    seq += 1;
                    hash = insert(
                        &hash,
                        EntryFields {
                            seq,
                            kind: CHECKPOINT_KIND,
                            wall_ms: last.wall_ms,
                            mono_ms: last.mono_ms,
                            tracking: None,
                            waybill: None,
                            payload: &payload,
                        },
                    )?;
                    checkpoint = true;
                }
            }
            let changed = tx
                .execute("UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1", params![sql_int(seq)?, &hash[..]])?;
            if changed != 1 {
                return Err(AuditError::Corrupt { seq, problem: "audit_head row is missing".into() });
            }
            drop(stmt);
            tx.commit()?;
            Ok((last_given, seq, hash, checkpoint))
        }
    }
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

fn checkpoint_payload(signer: &Signer, seq: u64, head: &[u8; 32]) -> Result<String, AuditError> {
    let signature = signer.sign_checkpoint(seq, head);
    canonical_json(&serde_json::json!({
        "seq": seq,
        "head": hex::encode(head),
        "public_key": signer.public_key_hex(),
        "signature": hex::encode(signature),
    }))
}

/// Reads the recorded head and checks it against the last stored entry,
/// including that entry's own hash: appending after a broken tail would
/// bury the break under new, valid-looking entries.
fn load_head(conn: &Connection) -> Result<(u64, [u8; 32]), AuditError> {
    let (head_seq, head_hash) = schema::read_head(conn)?.unwrap_or((u64::MAX, Vec::new()));
    let last =
        conn.query_row(&format!("{SELECT_ENTRY} ORDER BY seq DESC LIMIT 1"), [], schema::raw_entry).optional()?;
    let mismatch = |last_seq: u64, last_hash: String| AuditError::HeadMismatch {
        head_seq,
        head_hash: hex::encode(&head_hash),
        last_seq,
        last_hash,
    };
    match last {
        None if head_seq == 0 && head_hash == GENESIS_HASH => Ok((0, GENESIS_HASH)),
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
            Ok((raw.seq, raw.hash))
        }
    }
}

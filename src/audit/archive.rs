//! Retention: old segments of the chain move to export files, never silently away.
//!
//! An archive file is JSON Lines: a header line, then one line per entry with
//! every column (hashes in hex, the payload as the exact stored text). The
//! segment always ends with a signed checkpoint, so the file proves itself
//! against the site key; its header's `prev_hash` links it to the file before.

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::schema::{self, RawEntry, SELECT_ENTRY};
use super::verify::{Anchor, Checker, Origin, VerifyReport};
use super::{AuditError, CHECKPOINT_KIND, MAX_ARCHIVE_ENTRIES};

/// The header's `format`; bump it with any change to the lines.
pub const ARCHIVE_FORMAT: &str = "sortline-audit-archive-v1";

/// A line is one entry: payload ≤ 1 MiB, at most 6 bytes per byte once JSON-escaped, plus the rest.
const MAX_LINE_BYTES: u64 = 8 << 20;

/// What [`archive`] moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveReport {
    pub first_seq: u64,
    /// A checkpoint entry.
    pub last_seq: u64,
    pub entries: u64,
    pub file: PathBuf,
    pub file_sha256: [u8; 32],
    /// Hash of entry `last_seq`; the remaining chain continues from it.
    pub head: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    format: String,
    first_seq: u64,
    last_seq: u64,
    entries: u64,
    /// Hex, the prev_hash of entry first_seq (the previous file's head).
    prev_hash: String,
    /// Hex, the hash of entry last_seq.
    head: String,
    archived_at_wall_ms: i64,
}

/// Field order is the line's key order (serde writes struct fields in order).
#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    kind: &'a str,
    wall_ms: i64,
    mono_ms: u64,
    tracking: Option<u32>,
    waybill: Option<&'a str>,
    /// The stored text, byte for byte: the hash covers it, not its JSON value.
    payload: &'a str,
    prev_hash: String,
    hash: String,
}

/// Moves the oldest entries, those with `wall_ms < before_wall_ms`, into a new
/// file in `archive_dir` and then out of the database.
///
/// The cut is a prefix of the stored chain ending at a checkpoint: it takes
/// the entries up to and including the last checkpoint before the first entry
/// that is not older than the cut (the wall clock can step back, so a later
/// old entry stays). At most [`MAX_ARCHIVE_ENTRIES`] entries per call (unless
/// the first checkpoint is further away), so that the delete does not hold the
/// writer off for long: call again until it returns None. None also when no
/// checkpoint is old enough: an archive without a signed end is refused.
///
/// Order: check the segment's chain, write the file, fsync it and the
/// directory, re-read and re-hash it against the database rows, then in ONE
/// transaction record it in `audit_archives` and delete the rows (the delete
/// trigger allows only rows at or below the newest archive's last_seq). A
/// crash anywhere before the commit leaves every row in the database; at
/// worst an unreferenced file remains. Safe while an [`super::AuditLog`]
/// appends: only the tail is written there, and only the head is cached.
pub fn archive(
    db: &Path,
    before_wall_ms: i64,
    archive_dir: &Path,
    now_wall_ms: i64,
) -> Result<Option<ArchiveReport>, AuditError> {
    archive_capped(db, before_wall_ms, archive_dir, now_wall_ms, MAX_ARCHIVE_ENTRIES)
}

/// [`archive`] with another cap, for tests.
pub(super) fn archive_capped(
    db: &Path,
    before_wall_ms: i64,
    archive_dir: &Path,
    now_wall_ms: i64,
    max_entries: u64,
) -> Result<Option<ArchiveReport>, AuditError> {
    let mut conn =
        Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(schema::BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(AuditError::NotWal(mode));
    }
    // The commit that deletes rows must be as durable as the file it points to.
    conn.pragma_update(None, "synchronous", "FULL")?;
    schema::migrate(&mut conn)?;

    // Plan and export in one read snapshot: the rows cannot change under them.
    let read = conn.transaction()?;
    let Some(Plan { base_seq, base_hash, last_seq, head }) = plan(&read, before_wall_ms, max_entries)? else {
        tracing::debug!(before_wall_ms, "audit archive: nothing old enough up to a checkpoint");
        return Ok(None);
    };
    let first_seq = base_seq + 1;
    let entries = last_seq - base_seq;
    let header = Header {
        format: ARCHIVE_FORMAT.into(),
        first_seq,
        last_seq,
        entries,
        prev_hash: hex::encode(base_hash),
        head: hex::encode(head),
        archived_at_wall_ms: now_wall_ms,
    };
    fs::create_dir_all(archive_dir).map_err(AuditError::io(archive_dir))?;
    let name = format!("audit-{first_seq:012}-{last_seq:012}-{}.jsonl", &header.head[..16]);
    let file = archive_dir.join(&name);
    let file_sha256 = write_file(&read, &header, &file, archive_dir)?;
    drop(read);
    check_file_against_db(&mut conn, &header, &file, &file_sha256)?;

    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another archive run may have moved these entries since the plan; the
    // writer may have appended, which is fine (the tail is untouched).
    let (now_base, _) = schema::archive_base(&tx)?;
    let first_prev: Option<Vec<u8>> = tx
        .query_row("SELECT prev_hash FROM audit_entries WHERE seq = ?1", [sql(first_seq)?], |r| r.get(0))
        .optional()?;
    let last_hash: Option<Vec<u8>> =
        tx.query_row("SELECT hash FROM audit_entries WHERE seq = ?1", [sql(last_seq)?], |r| r.get(0)).optional()?;
    if now_base != base_seq || first_prev.as_deref() != Some(&base_hash[..]) || last_hash.as_deref() != Some(&head[..])
    {
        return Err(AuditError::Archive(format!(
            "entries {first_seq}..={last_seq} changed while being archived; nothing deleted, {} is not referenced",
            file.display()
        )));
    }
    tx.execute(
        "INSERT INTO audit_archives \
         (first_seq, last_seq, prev_hash, last_hash, file, file_sha256, entries, archived_at_wall_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            sql(first_seq)?,
            sql(last_seq)?,
            &base_hash[..],
            &head[..],
            name,
            &file_sha256[..],
            sql(entries)?,
            now_wall_ms
        ],
    )?;
    let deleted = tx
        .execute("DELETE FROM audit_entries WHERE seq >= ?1 AND seq <= ?2", params![sql(first_seq)?, sql(last_seq)?])?;
    if deleted as u64 != entries {
        // Dropping tx rolls back the archive row too.
        return Err(AuditError::Archive(format!(
            "entries {first_seq}..={last_seq}: {deleted} rows found, {entries} expected; nothing deleted"
        )));
    }
    tx.commit()?;
    tracing::info!(first_seq, last_seq, entries, file = %file.display(), "audit entries archived");
    Ok(Some(ArchiveReport { first_seq, last_seq, entries, file, file_sha256, head }))
}

fn sql(v: u64) -> Result<i64, AuditError> {
    i64::try_from(v).map_err(|_| AuditError::Archive(format!("{v} does not fit SQLite")))
}

/// The segment to move: after the newest archive (base) up to a checkpoint (cut).
struct Plan {
    base_seq: u64,
    base_hash: [u8; 32],
    last_seq: u64,
    head: [u8; 32],
}

fn plan(conn: &Connection, before_wall_ms: i64, max_entries: u64) -> Result<Option<Plan>, AuditError> {
    let (base_seq, base_hash) = schema::archive_base(conn)?;
    // Both searches walk rowids over a bounded range (`+wall_ms` keeps SQLite
    // off the wall_ms index, which would visit every young entry). A
    // non-integer wall_ms (tampering) sorts above every integer: it stops the cut.
    let first_young = |lo: u64, hi: u64| -> Result<Option<u64>, AuditError> {
        let seq: Option<i64> = conn
            .query_row(
                "SELECT seq FROM audit_entries WHERE seq > ?1 AND seq <= ?2 AND +wall_ms >= ?3 ORDER BY seq LIMIT 1",
                params![sql(lo)?, sql(hi)?, before_wall_ms],
                |r| r.get(0),
            )
            .optional()?;
        Ok(seq.and_then(|s| u64::try_from(s).ok()))
    };
    let checkpoint = |lo: u64, hi: u64, order: &str| -> Result<Option<u64>, AuditError> {
        let seq: Option<i64> = conn
            .query_row(
                &format!(
                    "SELECT seq FROM audit_entries WHERE seq > ?1 AND seq <= ?2 AND kind = ?3 ORDER BY seq {order} LIMIT 1"
                ),
                params![sql(lo)?, sql(hi)?, CHECKPOINT_KIND],
                |r| r.get(0),
            )
            .optional()?;
        Ok(seq.and_then(|s| u64::try_from(s).ok()))
    };
    let capped = base_seq.saturating_add(max_entries).min(i64::MAX as u64);
    let young = first_young(base_seq, capped)?;
    let mut cut = checkpoint(base_seq, young.map_or(capped, |y| y - 1), "DESC")?;
    if cut.is_none() && young.is_none() {
        // Everything within the cap is old but holds no checkpoint: take the
        // first one beyond if all up to it is old, so that a large
        // checkpoint_every cannot block retention for ever.
        if let Some(c) = checkpoint(capped, i64::MAX as u64, "ASC")? {
            if first_young(capped, c)?.is_none() {
                cut = Some(c);
            }
        }
    }
    let Some(cut) = cut else {
        return Ok(None);
    };
    let head: Vec<u8> = conn.query_row("SELECT hash FROM audit_entries WHERE seq = ?1", [sql(cut)?], |r| r.get(0))?;
    let head = <[u8; 32]>::try_from(head.as_slice())
        .map_err(|_| AuditError::Corrupt { seq: cut, problem: "hash is not 32 bytes".into() })?;
    Ok(Some(Plan { base_seq, base_hash, last_seq: cut, head }))
}

/// Writes the segment to a temporary file, checking its chain on the way,
/// then fsyncs it, renames it into place (never over another file) and fsyncs
/// the directory. Returns the file's SHA-256.
fn write_file(conn: &Connection, header: &Header, file: &Path, dir: &Path) -> Result<[u8; 32], AuditError> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".audit-archive-")
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(AuditError::io(dir))?;
    let tmp_path = tmp.path().to_path_buf();
    let io_err = AuditError::io(&tmp_path);
    let mut check = Checker::new(file, None, &[], Origin::Genesis)?;
    check.start_at(header.first_seq, decode32(&header.prev_hash).unwrap_or_default());
    let sha256 = {
        let mut out = BufWriter::new(HashingWriter { inner: tmp.as_file_mut(), sha: Sha256::new() });
        let write_err = |e: io::Error| AuditError::Io { path: tmp_path.clone(), source: e };
        serde_json::to_writer(&mut out, header)?;
        out.write_all(b"\n").map_err(write_err)?;
        let mut stmt = conn.prepare(&format!("{SELECT_ENTRY} WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq"))?;
        let mut rows = stmt.query(params![sql(header.first_seq)?, sql(header.last_seq)?])?;
        while let Some(row) = rows.next()? {
            let raw = schema::raw_entry(row)?;
            let before = check.expected;
            let stored_hash = raw.as_ref().ok().map(|r| r.hash);
            let is_checkpoint = raw.as_ref().is_ok_and(|r| r.kind == CHECKPOINT_KIND);
            check.entry(schema::row_seq(row)?, is_checkpoint, stored_hash, || {
                Ok::<_, AuditError>(raw.as_ref().map_err(Clone::clone))
            })?;
            // Refuse to move a broken segment out of the database: run verify first.
            if let Some(b) = &check.report.first_break {
                return Err(AuditError::Corrupt { seq: b.seq, problem: format!("{}; nothing archived", b.problem) });
            }
            if check.expected > before {
                if let Ok(r) = &raw {
                    serde_json::to_writer(&mut out, &line(r))?;
                    out.write_all(b"\n").map_err(write_err)?;
                }
            }
        }
        let last = check.expected - 1;
        if last != header.last_seq || check.prev[..] != decode32(&header.head).unwrap_or_default()[..] {
            return Err(AuditError::Corrupt {
                seq: last + 1,
                problem: format!("the segment ends at {last}, not at {}; nothing archived", header.last_seq),
            });
        }
        let w = out.into_inner().map_err(|e| AuditError::Io { path: tmp_path.clone(), source: e.into_error() })?;
        w.sha.clone().finalize().into()
    };
    tmp.as_file().sync_all().map_err(io_err)?;
    match tmp.persist_noclobber(file) {
        Ok(_) => {}
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
            // The same range and head from a run that crashed before its commit: reuse it if identical.
            let existing = sha256_of(file)?;
            if existing != sha256 {
                return Err(AuditError::Archive(format!(
                    "{} exists with other content; not overwritten, nothing archived",
                    file.display()
                )));
            }
            tracing::info!(file = %file.display(), "audit archive file already there, identical; reused");
        }
        Err(e) => return Err(AuditError::io(file)(e.error)),
    }
    // The rename must be durable before the rows go.
    File::open(dir).and_then(|d| d.sync_all()).map_err(AuditError::io(dir))?;
    Ok(sha256)
}

fn line(r: &RawEntry) -> Line<'_> {
    Line {
        seq: r.seq,
        kind: &r.kind,
        wall_ms: r.wall_ms,
        mono_ms: r.mono_ms,
        tracking: r.tracking,
        waybill: r.waybill.as_deref(),
        payload: &r.payload,
        prev_hash: hex::encode(r.prev_hash),
        hash: hex::encode(r.hash),
    }
}

/// Re-reads the file from disk: it must verify on its own, have the SHA-256
/// written, and hold exactly the database's rows (same seqs, same hashes).
fn check_file_against_db(
    conn: &mut Connection,
    header: &Header,
    file: &Path,
    sha256: &[u8; 32],
) -> Result<(), AuditError> {
    let tx = conn.transaction()?;
    let mut stmt = tx.prepare("SELECT seq, hash FROM audit_entries WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq")?;
    let mut rows = stmt.query(params![sql(header.first_seq)?, sql(header.last_seq)?])?;
    let differs = |what: String| AuditError::Archive(format!("{} does not match the database: {what}", file.display()));
    let checked = check_file(file, None, &[], |seq, hash| {
        let row = rows.next()?.ok_or_else(|| differs(format!("entry {seq} is not in the database")))?;
        let (db_seq, db_hash): (i64, Vec<u8>) = (row.get(0)?, row.get(1)?);
        if u64::try_from(db_seq).ok() != Some(seq) || db_hash[..] != hash[..] {
            return Err(differs(format!("entry {seq} differs")));
        }
        Ok(())
    })?;
    if rows.next()?.is_some() {
        return Err(differs("the database has more entries".into()));
    }
    if let Some(b) = checked.report.first_break {
        return Err(differs(format!("entry {}: {}", b.seq, b.problem)));
    }
    if checked.header.as_ref() != Some(header) {
        return Err(differs("the header was not written as planned".into()));
    }
    if &checked.sha256 != sha256 {
        return Err(differs("its SHA-256 differs from what was written".into()));
    }
    Ok(())
}

/// Checks an archive file on its own: the header, the chain from the header's
/// `prev_hash` to its `head`, seqs `first_seq..=last_seq` without gap, every
/// checkpoint's signature (against `public_key` if given, as [`super::verify`]
/// does), and that the file ends with a checkpoint. A tampered file is a
/// report naming the first broken entry (seq 0: the header); errors are for
/// an unreadable file.
///
/// On its own a file proves only itself: that files follow each other, check
/// that each one's `first_seq`/`prev_hash` continue the previous one's
/// `last_seq`/`head` (and the database's `audit_archives` rows).
pub fn verify_archive(file: &Path, public_key: Option<&[u8; 32]>) -> Result<VerifyReport, AuditError> {
    Ok(check_file(file, public_key, &[], |_, _| Ok(()))?.report)
}

/// [`verify_archive`], also checking that the file holds `anchor` (e.g. a
/// published checkpoint that has since been archived). An anchor outside the
/// file's range is an error.
pub fn verify_archive_against(
    file: &Path,
    public_key: Option<&[u8; 32]>,
    anchor: Option<Anchor>,
) -> Result<VerifyReport, AuditError> {
    let anchors: Vec<Anchor> = anchor.into_iter().collect();
    let check = check_file(file, public_key, &anchors, |_, _| Ok(()))?;
    if let (Some(a), Some(h)) = (anchor, &check.header) {
        if a.seq < h.first_seq || a.seq > h.last_seq {
            return Err(AuditError::AnchorElsewhere {
                seq: a.seq,
                why: format!("{} holds entries {}..={}", file.display(), h.first_seq, h.last_seq),
            });
        }
    }
    Ok(check.report)
}

/// One archive row of the database checked against its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveCheck {
    pub first_seq: u64,
    pub last_seq: u64,
    pub file: PathBuf,
    /// `None` when the file is there, is the one the row recorded, verifies
    /// on its own and covers exactly the row's entries.
    pub problem: Option<String>,
}

/// Checks every `audit_archives` row against its file in `archive_dir`, and the
/// anchors that fall in each file's range. This is what catches a forged row:
/// `verify` of the database alone trusts the rows for the entries they say were
/// archived.
pub fn verify_archives(
    db: &Path,
    archive_dir: &Path,
    public_key: Option<&[u8; 32]>,
    anchors: &[Anchor],
) -> Result<Vec<ArchiveCheck>, AuditError> {
    let conn = schema::open_read_only(db)?;
    let mut checks = Vec::new();
    for row in schema::archive_rows(&conn)? {
        let row = match row {
            Ok(row) => row,
            Err(problem) => {
                checks.push(ArchiveCheck { first_seq: 0, last_seq: 0, file: PathBuf::new(), problem: Some(problem) });
                continue;
            }
        };
        let file = archive_dir.join(&row.file);
        let problem = if !file.is_file() {
            Some("file missing".to_string())
        } else {
            let c = check_file(&file, public_key, anchors, |_, _| Ok(()))?;
            let r = &c.report;
            if c.sha256 != row.file_sha256 {
                Some("file differs from the one recorded (SHA-256)".to_string())
            } else if let Some(b) = &r.first_break {
                Some(format!("entry {}: {}", b.seq, b.problem))
            } else if r.first_seq != row.first_seq || r.first_seq + r.entries != row.last_seq + 1 {
                Some(format!(
                    "file holds entries {}..={}, the row says {}..={}",
                    r.first_seq,
                    r.first_seq + r.entries - 1,
                    row.first_seq,
                    row.last_seq
                ))
            } else if r.head != row.last_hash {
                Some("file's head is not the row's last hash".to_string())
            } else {
                None
            }
        };
        checks.push(ArchiveCheck { first_seq: row.first_seq, last_seq: row.last_seq, file, problem });
    }
    Ok(checks)
}

struct FileCheck {
    report: VerifyReport,
    header: Option<Header>,
    sha256: [u8; 32],
}

/// Reads the whole file (so the SHA-256 covers it all) and calls `on_entry`
/// with (seq, hash) of every entry that checked out, in order.
fn check_file(
    path: &Path,
    public_key: Option<&[u8; 32]>,
    anchors: &[Anchor],
    mut on_entry: impl FnMut(u64, &[u8; 32]) -> Result<(), AuditError>,
) -> Result<FileCheck, AuditError> {
    let f = File::open(path).map_err(AuditError::io(path))?;
    let mut reader = BufReader::new(HashingReader { inner: f, sha: Sha256::new() });
    let mut check = Checker::new(path, public_key, anchors, Origin::FileHeader)?;
    let mut buf = Vec::with_capacity(1024);

    let header = match read_line(&mut reader, &mut buf, path)? {
        None => Err("the file is empty".to_string()),
        Some(Err(problem)) => Err(problem),
        Some(Ok(())) => parse_header(&buf),
    };
    let header = match header {
        Ok(h) => {
            // Anchors of other files are theirs to check.
            check.keep_anchors_within(h.first_seq, h.last_seq);
            check.start_at(h.first_seq, decode32(&h.prev_hash).unwrap_or_default());
            Some(h)
        }
        Err(problem) => {
            check.brk(0, format!("bad archive header: {problem}"));
            None
        }
    };

    let mut line_no = 1u64;
    while let Some(read) = read_line(&mut reader, &mut buf, path)? {
        line_no += 1;
        let before = check.expected;
        let parsed = read.and_then(|()| parse_entry(&buf));
        let (seq, is_checkpoint, hash, raw) = match parsed {
            Ok(r) => (Some(r.seq), r.kind == CHECKPOINT_KIND, Some(r.hash), Ok(r)),
            // Unreadable: counted as the entry that belongs here, and edited.
            Err(problem) => (Some(before), false, None, Err(format!("line {line_no}: {problem}"))),
        };
        check.entry(seq, is_checkpoint, hash, || Ok::<_, AuditError>(raw))?;
        if check.expected > before {
            on_entry(before, &check.prev)?;
        }
    }
    if let (Some(h), None) = (&header, &check.report.first_break) {
        let last = check.expected - 1;
        let head = decode32(&h.head).unwrap_or_default();
        if last < h.last_seq {
            check.brk(
                last + 1,
                format!("truncated: the header says entries end at {} but they end at {last}", h.last_seq),
            );
        } else if last > h.last_seq {
            check.brk(h.last_seq + 1, format!("entry {} is past the header's last_seq {}", h.last_seq + 1, h.last_seq));
        } else if check.prev != head {
            check.brk(last, format!("hash mismatch: entry {last} differs from the header's head"));
        } else if !check.ends_with_checkpoint {
            let from = check.report.last_checkpoint.map_or(h.first_seq, |a| a.seq + 2);
            check.brk(from, format!("unsigned: entries {from}..={last} are after the last checkpoint"));
        }
    }
    check.anchor_reached();
    let sha256 = reader.into_inner().sha.finalize().into();
    Ok(FileCheck { report: check.finish("audit archive verified"), header, sha256 })
}

/// Reads one line without its newline into `buf`; None at the end. A line
/// longer than any entry can be is a problem, not an allocation.
fn read_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    path: &Path,
) -> Result<Option<Result<(), String>>, AuditError> {
    buf.clear();
    let n = reader.by_ref().take(MAX_LINE_BYTES + 1).read_until(b'\n', buf).map_err(AuditError::io(path))?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if n as u64 > MAX_LINE_BYTES {
        // Skip the rest of the overlong line so that the next one starts clean.
        let mut rest = Vec::new();
        loop {
            rest.clear();
            let m = reader.by_ref().take(MAX_LINE_BYTES).read_until(b'\n', &mut rest).map_err(AuditError::io(path))?;
            if m == 0 || rest.last() == Some(&b'\n') {
                break;
            }
        }
        return Ok(Some(Err(format!("line longer than {MAX_LINE_BYTES} bytes"))));
    }
    Ok(Some(Ok(())))
}

fn parse_header(line: &[u8]) -> Result<Header, String> {
    let h: Header = serde_json::from_slice(line).map_err(|e| format!("not a header ({e})"))?;
    if h.format != ARCHIVE_FORMAT {
        return Err(format!("format {:?}, expected {ARCHIVE_FORMAT:?}", h.format));
    }
    if h.first_seq == 0 || h.last_seq < h.first_seq || h.entries != h.last_seq - h.first_seq + 1 {
        return Err(format!("entries {}..={} counted as {}", h.first_seq, h.last_seq, h.entries));
    }
    if decode32(&h.prev_hash).is_none() || decode32(&h.head).is_none() {
        return Err("prev_hash and head must be 32 hex bytes".into());
    }
    Ok(h)
}

/// One entry line, decoded without trusting its types (like a stored row).
fn parse_entry(line: &[u8]) -> Result<RawEntry, String> {
    use serde_json::Value;
    let v: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON ({e})"))?;
    let o = v.as_object().ok_or("not a JSON object")?;
    let field = |name: &str| o.get(name).ok_or_else(|| format!("{name} is missing"));
    let uint = |name: &str| field(name)?.as_u64().ok_or_else(|| format!("{name} is not an unsigned integer"));
    let string = |name: &str| field(name)?.as_str().map(str::to_owned).ok_or_else(|| format!("{name} is not text"));
    let hash = |name: &str| decode32(&string(name)?).ok_or_else(|| format!("{name} is not 32 hex bytes"));
    let seq = uint("seq")?;
    if seq == 0 {
        return Err("seq is 0".into());
    }
    Ok(RawEntry {
        seq,
        kind: string("kind")?,
        wall_ms: field("wall_ms")?.as_i64().ok_or("wall_ms is not an integer")?,
        mono_ms: uint("mono_ms")?,
        tracking: match field("tracking")? {
            Value::Null => None,
            t => Some(t.as_u64().and_then(|t| u32::try_from(t).ok()).ok_or("tracking is not a u32")?),
        },
        waybill: match field("waybill")? {
            Value::Null => None,
            w => Some(w.as_str().ok_or("waybill is not text")?.to_owned()),
        },
        payload: string("payload")?,
        prev_hash: hash("prev_hash")?,
        hash: hash("hash")?,
    })
}

fn decode32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn sha256_of(path: &Path) -> Result<[u8; 32], AuditError> {
    let mut r = HashingReader { inner: File::open(path).map_err(AuditError::io(path))?, sha: Sha256::new() };
    io::copy(&mut r, &mut io::sink()).map_err(AuditError::io(path))?;
    Ok(r.sha.finalize().into())
}

/// Hashes what passes through, so the file's SHA-256 needs no second pass.
struct HashingWriter<W> {
    inner: W,
    sha: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R> {
    inner: R,
    sha: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

//! The image store: every original as the station delivered it (a file, or a TCP frame from
//! magic to CRC) under `<data>/xray/`, named by its SHA-256, so that a parcel's record
//! references its image by hash; a small SQLite index (`index.db`, WAL) beside them; and
//! retention bounded by age and total size, planned by a pure function that never deletes a
//! pinned image (its parcel is undecided).
//!
//! Also here: what both intake drivers hand on ([`IntakeOutput`]), their shared counters
//! ([`XrayIntakeStats`]) and the one path from a decoded image to a stored, reported one
//! ([`take`]).

use super::config::EnergyMode;
use super::decode::DecodeError;
use super::name::{Energy, NameError};
use super::stream::StreamError;
use super::XrayImage;
use crate::core::{Alarm, Severity};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The store's folder under the data directory, and its index inside it.
pub const STORE_DIR: &str = "xray";
pub const INDEX_FILE: &str = "index.db";
const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &str = r#"
-- One row per original file. A two-file dual-energy image has two rows with one `image`:
-- the low-energy file's hash, which the parcel's record references.
CREATE TABLE IF NOT EXISTS images (
    sha256      TEXT    PRIMARY KEY,  -- hex, the file's name without its extension
    image       TEXT    NOT NULL,
    file        TEXT    NOT NULL,     -- the name under <data>/xray/
    seq         INTEGER NOT NULL,
    barcode     TEXT,
    energy      TEXT,                 -- 'low' or 'high' for one half of a pair
    received_ms INTEGER NOT NULL,     -- wall clock, ms since the Unix epoch
    bytes       INTEGER NOT NULL,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    energies    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS images_by_image ON images (image);
"#;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub type Sha256Hash = [u8; 32];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("image store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("image store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image store {path}: journal mode is {mode:?}, WAL is required")]
    NotWal { path: PathBuf, mode: String },
    #[error("image store {path}: schema version {found} is newer than this build ({SCHEMA_VERSION})")]
    SchemaTooNew { path: PathBuf, found: i64 },
    #[error("image store {path}: row {what} is unreadable")]
    Corrupt { path: PathBuf, what: String },
}

/// One original to keep.
#[derive(Clone, Copy, Debug)]
pub struct Original<'a> {
    pub bytes: &'a [u8],
    /// The file extension it is stored under: `png`, `tif`, `xray` (a frame).
    pub ext: &'a str,
    pub energy: Option<Energy>,
}

/// An original as the index knows it: what retention plans over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFile {
    pub sha256: Sha256Hash,
    /// The image it belongs to (its low-energy file's hash; its own for a one-file image).
    pub image: Sha256Hash,
    pub seq: u32,
    pub received_ms: i64,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionLimits {
    pub max_age_ms: u64,
    pub max_total_bytes: u64,
}

/// Images retention must keep whatever their age: those of undecided parcels, by any of their
/// files' hashes or by seq.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pinned {
    pub hashes: HashSet<Sha256Hash>,
    pub seqs: HashSet<u32>,
}

/// Which files to delete, images whole: first every unpinned image older than `max_age_ms`,
/// then the oldest unpinned ones until the total is within `max_total_bytes` (pinned images
/// count towards the total but stay, so the total may remain over). Deterministic: ties in
/// age go by hash.
pub fn plan(files: &[StoredFile], now_ms: i64, limits: &RetentionLimits, pinned: &Pinned) -> Vec<Sha256Hash> {
    struct Group {
        received_ms: i64,
        bytes: u64,
        pinned: bool,
        files: Vec<Sha256Hash>,
    }
    let mut groups: BTreeMap<Sha256Hash, Group> = BTreeMap::new();
    for f in files {
        let g = groups.entry(f.image).or_insert(Group {
            received_ms: f.received_ms,
            bytes: 0,
            pinned: pinned.hashes.contains(&f.image),
            files: Vec::new(),
        });
        g.received_ms = g.received_ms.min(f.received_ms);
        g.bytes = g.bytes.saturating_add(f.bytes);
        g.pinned |= pinned.hashes.contains(&f.sha256) || pinned.seqs.contains(&f.seq);
        g.files.push(f.sha256);
    }
    let mut order: Vec<(&Sha256Hash, &Group)> = groups.iter().collect();
    order.sort_by_key(|(image, g)| (g.received_ms, **image));
    let mut total: u64 = order.iter().map(|(_, g)| g.bytes).fold(0, u64::saturating_add);
    let mut delete = Vec::new();
    for (_, g) in &order {
        let age_ms = now_ms.saturating_sub(g.received_ms);
        if g.pinned || (age_ms <= 0 || age_ms.unsigned_abs() <= limits.max_age_ms) && total <= limits.max_total_bytes {
            continue;
        }
        total -= g.bytes;
        delete.extend(&g.files);
    }
    delete
}

/// What one retention run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    pub deleted_files: u64,
    pub freed_bytes: u64,
}

/// `<data>/xray/`: the originals and their index.
pub struct ImageStore {
    dir: PathBuf,
    index: PathBuf,
    conn: Connection,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore").field("dir", &self.dir).finish()
    }
}

fn hex32(text: &str) -> Option<Sha256Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

impl ImageStore {
    /// Opens or creates `<data_dir>/xray/` and its index.
    pub fn open(data_dir: &Path) -> Result<ImageStore, StoreError> {
        let dir = data_dir.join(STORE_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io { path: dir.clone(), source })?;
        let index = dir.join(INDEX_FILE);
        let sql = |source| StoreError::Sqlite { path: index.clone(), source };
        let conn = Connection::open(&index).map_err(sql)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(sql)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal { path: index, mode });
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(sql)?;
        let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sql)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { path: index, found });
        }
        conn.execute_batch(SCHEMA).map_err(sql)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sql)?;
        Ok(ImageStore { dir, index, conn })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite { path: self.index.clone(), source }
    }

    fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io { path: path.to_path_buf(), source }
    }

    /// Keeps an image's originals (one, or a pair low first): each file is written and synced
    /// before its index row commits, so a row always has its file. Returns their hashes.
    /// The same bytes again are the same file; their row takes the later `received_ms`.
    pub fn put(
        &mut self,
        originals: &[Original<'_>],
        image: &XrayImage,
        barcode: Option<&str>,
        received_ms: i64,
    ) -> Result<Vec<Sha256Hash>, StoreError> {
        let hashes: Vec<Sha256Hash> = originals.iter().map(|o| Sha256::digest(o.bytes).into()).collect();
        let mut names = Vec::with_capacity(originals.len());
        for (o, hash) in originals.iter().zip(&hashes) {
            let name = format!("{}.{}", hex::encode(hash), o.ext);
            let path = self.dir.join(&name);
            if !path.exists() {
                let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(Self::io(&self.dir))?;
                tmp.write_all(o.bytes).map_err(Self::io(&path))?;
                tmp.as_file().sync_all().map_err(Self::io(&path))?;
                tmp.persist(&path).map_err(|e| StoreError::Io { path: path.clone(), source: e.error })?;
            }
            names.push(name);
        }
        let Some(primary) = hashes.first().map(hex::encode) else { return Ok(hashes) };
        let tx = self.conn.unchecked_transaction().map_err(self.sql())?;
        for ((o, hash), name) in originals.iter().zip(&hashes).zip(&names) {
            tx.execute(
                "INSERT INTO images (sha256, image, file, seq, barcode, energy, received_ms, bytes, width, height, energies)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (sha256) DO UPDATE SET received_ms = MAX(received_ms, excluded.received_ms)",
                params![
                    hex::encode(hash),
                    primary,
                    name,
                    image.seq,
                    barcode,
                    o.energy.map(Energy::as_str),
                    received_ms,
                    o.bytes.len() as i64,
                    image.width,
                    image.height,
                    if image.dual_energy() { 2 } else { 1 },
                ],
            )
            .map_err(self.sql())?;
        }
        tx.commit().map_err(self.sql())?;
        Ok(hashes)
    }

    /// The stored original of a hash, if the store holds it.
    pub fn path(&self, sha256: &Sha256Hash) -> Result<Option<PathBuf>, StoreError> {
        let file: Option<String> = self
            .conn
            .query_row("SELECT file FROM images WHERE sha256 = ?1", [hex::encode(sha256)], |r| r.get(0))
            .optional()
            .map_err(self.sql())?;
        Ok(file.map(|f| self.dir.join(f)))
    }

    /// Every original in the index.
    pub fn files(&self) -> Result<Vec<StoredFile>, StoreError> {
        let mut stmt =
            self.conn.prepare("SELECT sha256, image, seq, received_ms, bytes FROM images").map_err(self.sql())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(self.sql())?;
        let mut files = Vec::new();
        for row in rows {
            let (sha, image, seq, received_ms, bytes) = row.map_err(self.sql())?;
            let (Some(sha256), Some(image)) = (hex32(&sha), hex32(&image)) else {
                return Err(StoreError::Corrupt { path: self.index.clone(), what: sha });
            };
            files.push(StoredFile { sha256, image, seq, received_ms, bytes: bytes.max(0) as u64 });
        }
        Ok(files)
    }

    /// Plans retention over the index and carries it out: files first, then their rows (a
    /// crash between leaves rows whose file is gone, deleted again next run).
    pub fn apply_retention(
        &mut self,
        now_ms: i64,
        limits: &RetentionLimits,
        pinned: &Pinned,
    ) -> Result<RetentionReport, StoreError> {
        let files = self.files()?;
        let doomed = plan(&files, now_ms, limits, pinned);
        let mut report = RetentionReport::default();
        for hash in &doomed {
            if let Some(path) = self.path(hash)? {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(StoreError::Io { path, source }),
                }
            }
            self.conn.execute("DELETE FROM images WHERE sha256 = ?1", [hex::encode(hash)]).map_err(self.sql())?;
            report.deleted_files += 1;
            report.freed_bytes += files.iter().find(|f| f.sha256 == *hash).map_or(0, |f| f.bytes);
        }
        if !doomed.is_empty() {
            tracing::info!(
                files = report.deleted_files,
                bytes = report.freed_bytes,
                "x-ray retention deleted originals"
            );
        }
        Ok(report)
    }
}

/// Where an image came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The file names in the intake folder (two for a pair, low first).
    Folder {
        files: Vec<String>,
    },
    Tcp {
        peer: SocketAddr,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Folder { files } => write!(f, "folder file {}", files.join(" + ")),
            Source::Tcp { peer } => write!(f, "TCP stream from {peer}"),
        }
    }
}

/// An image taken and stored: the core's input once the lead matches it by `image.seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    pub image: XrayImage,
    pub barcode: Option<String>,
    /// The original's hash (the low-energy file's for a pair): the record's reference.
    pub sha256: Sha256Hash,
    /// The high-energy file's hash, for a pair.
    pub partner_sha256: Option<Sha256Hash>,
    pub source: Source,
}

impl Taken {
    /// `sha256` in lower-case hex: the stored file's name without its extension, and the
    /// form the core's `Input::XrayImage` carries.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// Why an image was refused.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("{found}, but [xray] energy is {expected}")]
    Energy { found: &'static str, expected: &'static str },
    #[error("{energy}-energy file of seq {seq}: no partner within {waited_ms} ms")]
    PairTimeout { seq: u32, energy: &'static str, waited_ms: u64 },
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IntakeError {
    /// A stable name per kind, for counters: the same for a file and a frame where it means
    /// the same (`too_large`, `truncated`).
    pub fn kind(&self) -> &'static str {
        match self {
            IntakeError::Name(_) => "bad_name",
            IntakeError::Decode(e) => e.kind(),
            IntakeError::Stream(e) => e.kind(),
            IntakeError::Energy { .. } => "wrong_energy",
            IntakeError::PairTimeout { .. } => "pair_timeout",
            IntakeError::Read { .. } => "read_failed",
            IntakeError::Store(_) => "store_failed",
        }
    }
}

/// What an intake driver hands on.
#[derive(Debug)]
pub enum IntakeOutput {
    Image(Box<Taken>),
    Refused {
        source: Source,
        error: IntakeError,
    },
    /// The station connected (TCP).
    Connected {
        peer: SocketAddr,
    },
    Disconnected {
        peer: SocketAddr,
        reason: String,
    },
}

impl IntakeOutput {
    /// The alarm to record, if any. A refused image leaves its parcel without one, so the core
    /// holds it; the alarm says why.
    pub fn alarm(&self) -> Option<Alarm> {
        let (code, severity, message) = match self {
            IntakeOutput::Image(_) | IntakeOutput::Connected { .. } => return None,
            IntakeOutput::Refused { source, error: IntakeError::Stream(e @ StreamError::Garbage { .. }) } => {
                ("xray_stream_garbage", Severity::Warning, format!("{source}: {e}"))
            }
            IntakeOutput::Refused { source, error: error @ IntakeError::Store(_) } => {
                ("xray_store_failed", Severity::Critical, format!("{source}: {error}"))
            }
            IntakeOutput::Refused { source, error } => {
                ("xray_image_refused", Severity::Warning, format!("{source}: {error}"))
            }
            IntakeOutput::Disconnected { peer, reason } => {
                ("xray_link_down", Severity::Warning, format!("X-ray station {peer}: {reason}"))
            }
        };
        Some(Alarm { code, severity, tracking: None, message })
    }
}

/// Both drivers' counters, shared: read them while the drivers run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct XrayIntakeStats {
    pub taken: u64,
    /// Originals' bytes taken.
    pub taken_bytes: u64,
    /// Refusals by [`IntakeError::kind`].
    pub refused: BTreeMap<&'static str, u64>,
    /// Bytes skipped on the stream outside any frame.
    pub garbage_bytes: u64,
    pub connections: u64,
}

impl XrayIntakeStats {
    pub fn refused(&self, kind: &str) -> u64 {
        self.refused.get(kind).copied().unwrap_or(0)
    }

    pub(super) fn record(stats: &Mutex<XrayIntakeStats>, output: &IntakeOutput, original_bytes: u64) {
        let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
        match output {
            IntakeOutput::Image(_) => {
                s.taken += 1;
                s.taken_bytes += original_bytes;
            }
            IntakeOutput::Refused { error, .. } => {
                if let IntakeError::Stream(StreamError::Garbage { bytes }) = error {
                    s.garbage_bytes += bytes;
                }
                *s.refused.entry(error.kind()).or_default() += 1;
            }
            IntakeOutput::Connected { .. } => s.connections += 1,
            IntakeOutput::Disconnected { .. } => {}
        }
    }
}

/// The configured energies against the image's.
pub(super) fn check_energy(image: &XrayImage, mode: EnergyMode) -> Result<(), IntakeError> {
    match (mode, image.dual_energy()) {
        (EnergyMode::Single, true) => {
            Err(IntakeError::Energy { found: "a dual-energy image (two channels)", expected: "single" })
        }
        (EnergyMode::Dual, false) => Err(IntakeError::Energy { found: "a single-energy image", expected: "dual" }),
        _ => Ok(()),
    }
}

/// The one path from a decoded image to a stored, reported one, for both drivers: stores the
/// originals and makes the output (taken, or refused if the store failed), counting it.
pub(super) fn take(
    store: &Mutex<ImageStore>,
    stats: &Mutex<XrayIntakeStats>,
    originals: &[Original<'_>],
    image: XrayImage,
    barcode: Option<String>,
    source: Source,
    received_ms: i64,
) -> IntakeOutput {
    let put = store.lock().unwrap_or_else(|e| e.into_inner()).put(originals, &image, barcode.as_deref(), received_ms);
    let output = match put {
        Ok(hashes) => {
            let sha256 = hashes.first().copied().unwrap_or_default();
            let partner_sha256 = hashes.get(1).copied();
            tracing::debug!(seq = image.seq, %source, sha256 = %hex::encode(sha256), "x-ray image taken");
            IntakeOutput::Image(Box::new(Taken { image, barcode, sha256, partner_sha256, source }))
        }
        Err(e) => {
            tracing::error!(error = %e, %source, "x-ray image could not be stored");
            IntakeOutput::Refused { source, error: e.into() }
        }
    };
    let bytes = originals.iter().map(|o| o.bytes.len() as u64).sum();
    XrayIntakeStats::record(stats, &output, bytes);
    output
}

/// Counts and logs a refusal made by a driver.
pub(super) fn refuse(stats: &Mutex<XrayIntakeStats>, source: Source, error: IntakeError) -> IntakeOutput {
    tracing::warn!(%source, %error, "x-ray image refused");
    let output = IntakeOutput::Refused { source, error };
    XrayIntakeStats::record(stats, &output, 0);
    output
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(n: u8) -> Sha256Hash {
        [n; 32]
    }

    fn file(n: u8, image: u8, seq: u32, received_ms: i64, bytes: u64) -> StoredFile {
        StoredFile { sha256: h(n), image: h(image), seq, received_ms, bytes }
    }

    const DAY_MS: u64 = 86_400_000;

    #[test]
    fn age_then_size_oldest_first_and_pairs_go_whole() {
        let limits = RetentionLimits { max_age_ms: DAY_MS, max_total_bytes: 250 };
        let now = 10 * DAY_MS as i64;
        let files = [
            file(1, 1, 1, now - 2 * DAY_MS as i64, 10), // too old
            file(2, 2, 2, now - 1000, 100),             // a pair, oldest of the young
            file(3, 2, 2, now - 900, 100),
            file(4, 4, 3, now - 500, 100),
            file(5, 5, 4, now - 100, 100),
        ];
        assert_eq!(plan(&files, now, &limits, &Pinned::default()), vec![h(1), h(2), h(3)]);
        let roomy = RetentionLimits { max_total_bytes: 1000, ..limits };
        assert_eq!(plan(&files, now, &roomy, &Pinned::default()), vec![h(1)]);
    }

    #[test]
    fn pinned_images_survive_both_limits() {
        let limits = RetentionLimits { max_age_ms: DAY_MS, max_total_bytes: 50 };
        let now = 10 * DAY_MS as i64;
        let files = [
            file(1, 1, 1, 0, 100), // old and big: pinned by seq
            file(2, 2, 2, 0, 100), // pinned through its partner's hash
            file(3, 2, 2, 0, 100),
            file(4, 4, 3, now, 100), // young, over the size: goes
        ];
        let pinned = Pinned { hashes: [h(3)].into(), seqs: [1].into() };
        assert_eq!(plan(&files, now, &limits, &pinned), vec![h(4)]);
    }

    fn arb_files() -> impl Strategy<Value = Vec<StoredFile>> {
        proptest::collection::vec((0u8..40, 0u8..40, 0u32..10, 0i64..1000, 1u64..100), 0..30).prop_map(|v| {
            let mut seen = HashSet::new();
            v.into_iter()
                .filter(|(n, ..)| seen.insert(*n))
                .map(|(n, image, seq, at, bytes)| file(n, image, seq, at, bytes))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn the_plan_keeps_its_promises(
            files in arb_files(),
            now in 0i64..1500,
            max_age_ms in 0u64..1000,
            max_total_bytes in 0u64..1500,
            pinned_hashes in proptest::collection::hash_set(0u8..40, 0..6),
            pinned_seqs in proptest::collection::hash_set(0u32..10, 0..3),
        ) {
            let limits = RetentionLimits { max_age_ms, max_total_bytes };
            let pinned = Pinned { hashes: pinned_hashes.into_iter().map(h).collect(), seqs: pinned_seqs };
            let doomed: HashSet<Sha256Hash> = plan(&files, now, &limits, &pinned).into_iter().collect();
            let group_pinned = |image: &Sha256Hash| {
                pinned.hashes.contains(image)
                    || files.iter().any(|f| f.image == *image && (pinned.hashes.contains(&f.sha256) || pinned.seqs.contains(&f.seq)))
            };
            let group_received = |image: &Sha256Hash| files.iter().filter(|f| f.image == *image).map(|f| f.received_ms).min().unwrap();
            for f in &files {
                let gone = doomed.contains(&f.sha256);
                prop_assert!(!(gone && group_pinned(&f.image)), "a pinned image deleted");
                prop_assert!(files.iter().filter(|g| g.image == f.image).all(|g| doomed.contains(&g.sha256) == gone), "a pair split");
                let age = now - group_received(&f.image);
                prop_assert!(gone || group_pinned(&f.image) || age <= max_age_ms as i64, "an old image kept");
            }
            let kept: u64 = files.iter().filter(|f| !doomed.contains(&f.sha256)).map(|f| f.bytes).sum();
            let kept_unpinned: Vec<&StoredFile> = files.iter().filter(|f| !doomed.contains(&f.sha256) && !group_pinned(&f.image)).collect();
            prop_assert!(kept <= max_total_bytes || kept_unpinned.is_empty(), "over the size with deletable images kept");
            // Nothing was deleted for size that is younger than something kept.
            for d in files.iter().filter(|f| doomed.contains(&f.sha256)) {
                let age = now - group_received(&d.image);
                if age <= max_age_ms as i64 {
                    for k in &kept_unpinned {
                        prop_assert!(group_received(&k.image) >= group_received(&d.image), "a younger image deleted first");
                    }
                }
            }
        }
    }

    fn image(seq: u32) -> XrayImage {
        XrayImage { seq, width: 2, height: 1, bit_depth: 16, low: vec![1, 2], high: None }
    }

    #[test]
    fn originals_are_named_by_hash_indexed_and_retained() {
        let data = tempfile::tempdir().unwrap();
        let mut store = ImageStore::open(data.path()).unwrap();
        let a = store
            .put(&[Original { bytes: b"first", ext: "png", energy: None }], &image(1), Some("EA1"), 1_000)
            .unwrap();
        let pair = [
            Original { bytes: b"low half", ext: "tif", energy: Some(Energy::Low) },
            Original { bytes: b"high half", ext: "tif", energy: Some(Energy::High) },
        ];
        let b = store.put(&pair, &image(2), None, 2_000).unwrap();
        let a_path = store.path(&a[0]).unwrap().unwrap();
        assert_eq!(a_path, data.path().join("xray").join(format!("{}.png", hex::encode(Sha256::digest(b"first")))));
        assert_eq!(std::fs::read(&a_path).unwrap(), b"first");
        let files = store.files().unwrap();
        assert_eq!(files.len(), 3);
        assert!(files.iter().filter(|f| f.seq == 2).all(|f| f.image == b[0]));
        // The same bytes again: one file, one row, the later time.
        store.put(&[Original { bytes: b"first", ext: "png", energy: None }], &image(1), None, 5_000).unwrap();
        assert_eq!(store.files().unwrap().len(), 3);
        drop(store);
        let mut store = ImageStore::open(data.path()).unwrap();
        let limits = RetentionLimits { max_age_ms: 2_500, max_total_bytes: 1 << 20 };
        let pinned = Pinned { seqs: [2].into(), ..Pinned::default() };
        assert_eq!(store.apply_retention(6_000, &limits, &pinned).unwrap().deleted_files, 0, "a: refreshed; b: pinned");
        let report = store.apply_retention(6_000, &limits, &Pinned::default()).unwrap();
        assert_eq!(report, RetentionReport { deleted_files: 2, freed_bytes: 17 });
        assert!(store.path(&b[1]).unwrap().is_none());
        assert_eq!(
            std::fs::read_dir(data.path().join("xray"))
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "tif"))
                .count(),
            0
        );
        assert!(a_path.exists());
    }
}

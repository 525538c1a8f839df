//! The watched-folder driver: the station writes one file per image (or two, low and high
//! energy) into the intake folder; every `poll_interval_ms` the driver lists it and takes
//! what is complete.
//!
//! - Only names matching the pattern are looked at: a station writing `*.part` and renaming
//!   into place is never read half-written. A file must also keep its size and modification
//!   time for `stable_polls` polls, for a station that writes in place.
//! - A taken file is decoded, stored and removed from the folder. A refused one is moved to
//!   `rejected/` with `<name>.reason.txt` beside it, counted and reported.
//! - The two files of a pair wait for each other `pair_timeout_ms`; a loner is then refused.
//!   Both stay in the folder while they wait, so a restart loses neither.
//! - Bounded: at most `max_files_per_poll` files taken per poll, and at most 4096 entries
//!   looked at. A file that cannot be moved or removed is reported once and then left alone.
//!
//! [`FolderIntake::poll`] does one poll, synchronously, with time passed in; [`FolderIntake::run`]
//! calls it on a blocking thread at the configured interval.

use super::config::{EnergyMode, XrayConfig};
use super::decode::{decode, pair, ImageLimits};
use super::name::{Energy, NameError, NameFields, NamePattern};
use super::store::{
    check_energy, refuse, take, ImageStore, IntakeError, IntakeOutput, Original, Source, XrayIntakeStats,
};
use super::XrayImage;
use crate::clock;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The subfolder refused files are moved to.
pub const REJECTED_DIR: &str = "rejected";
/// Directory entries looked at per poll, at most.
const MAX_LISTED: usize = 4096;

/// How long a file has looked the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    size: u64,
    mtime: Option<SystemTime>,
    unchanged_polls: u32,
    /// When it first counted as complete (for the pair timeout).
    ready_since_ms: Option<u64>,
}

/// One listed image file.
struct Listed {
    name: String,
    fields: Result<NameFields, NameError>,
    size: u64,
    mtime: Option<SystemTime>,
}

/// The folder intake's state between polls.
pub struct FolderIntake {
    dir: PathBuf,
    rejected: PathBuf,
    pattern: NamePattern,
    limits: ImageLimits,
    energy: EnergyMode,
    stable_polls: u32,
    pair_timeout_ms: u64,
    max_files: usize,
    poll_interval: Duration,
    store: Arc<Mutex<ImageStore>>,
    stats: Arc<Mutex<XrayIntakeStats>>,
    seen: HashMap<String, Seen>,
    /// Files reported but not movable or removable: not looked at again while they stay.
    stuck: HashSet<String>,
}

impl FolderIntake {
    /// For a validated config with a folder; the folder must exist, `rejected/` is created.
    pub fn new(
        config: &XrayConfig,
        pattern: NamePattern,
        store: Arc<Mutex<ImageStore>>,
        stats: Arc<Mutex<XrayIntakeStats>>,
    ) -> Result<FolderIntake, IntakeError> {
        let dir = config.folder.clone().unwrap_or_default();
        let read_error =
            |e: std::io::Error| IntakeError::Read { path: dir.display().to_string(), reason: e.to_string() };
        if !std::fs::metadata(&dir).map_err(read_error)?.is_dir() {
            return Err(IntakeError::Read { path: dir.display().to_string(), reason: "not a directory".into() });
        }
        let rejected = dir.join(REJECTED_DIR);
        std::fs::create_dir_all(&rejected).map_err(read_error)?;
        Ok(FolderIntake {
            dir,
            rejected,
            pattern,
            limits: config.limits(),
            energy: config.energy,
            stable_polls: config.stable_polls,
            pair_timeout_ms: config.pair_timeout_ms,
            max_files: config.max_files_per_poll,
            // validate() refuses 0; an unvalidated 0 must not panic the interval.
            poll_interval: Duration::from_millis(config.poll_interval_ms.max(1)),
            store,
            stats,
            seen: HashMap::new(),
            stuck: HashSet::new(),
        })
    }

    /// Polls until `shutdown` completes, handing each output to `deliver` in the order made.
    pub async fn run(self, mut deliver: impl FnMut(IntakeOutput), shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let clock = clock::Stopwatch::start();
        let mut ticks = tokio::time::interval(self.poll_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut intake = Some(self);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticks.tick() => {}
            }
            let Some(mut this) = intake.take() else { return };
            let (now_ms, wall_ms) = (clock.elapsed_ms(), clock::wall_ms());
            let polled = tokio::task::spawn_blocking(move || {
                let out = this.poll(now_ms, wall_ms);
                (this, out)
            });
            match polled.await {
                Ok((this, out)) => {
                    out.into_iter().for_each(&mut deliver);
                    intake = Some(this);
                }
                Err(e) => {
                    tracing::error!(error = %e, "x-ray folder poll failed; folder intake stopped");
                    return;
                }
            }
        }
    }

    /// One poll at monotonic `now_ms` (wall `wall_ms` for the store's records).
    pub fn poll(&mut self, now_ms: u64, wall_ms: i64) -> Vec<IntakeOutput> {
        let listed = match self.list() {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.dir.display(), "x-ray folder unreadable");
                return Vec::new();
            }
        };
        self.track(&listed, now_ms);
        let ready_since: HashMap<String, u64> =
            self.seen.iter().filter_map(|(name, s)| Some((name.clone(), s.ready_since_ms?))).collect();
        let ready = |l: &&Listed| ready_since.contains_key(&l.name);
        let mut candidates: Vec<&Listed> = listed.iter().filter(ready).collect();
        candidates.sort_by_key(|l| (l.fields.as_ref().map_or(0, |f| f.seq), l.name.clone()));
        let mut out = Vec::new();
        let mut done: HashSet<&str> = HashSet::new();
        let mut taken_files = 0;
        for l in &candidates {
            if taken_files >= self.max_files {
                break;
            }
            if done.contains(l.name.as_str()) {
                continue;
            }
            let fields = match &l.fields {
                Ok(f) => f,
                Err(e) => {
                    out.push(self.reject(&[l.name.as_str()], IntakeError::Name(e.clone())));
                    done.insert(&l.name);
                    taken_files += 1;
                    continue;
                }
            };
            let Some(energy) = fields.energy else {
                done.insert(&l.name);
                taken_files += 1;
                out.push(self.single(l, fields, wall_ms));
                continue;
            };
            if self.energy == EnergyMode::Single {
                done.insert(&l.name);
                taken_files += 1;
                let found = "one file of a two-file pair (an energy in its name)";
                out.push(self.reject(&[&l.name], IntakeError::Energy { found, expected: "single" }));
                continue;
            }
            let partner = listed.iter().find(|p| {
                p.fields.as_ref().is_ok_and(|f| f.seq == fields.seq && f.energy.is_some_and(|e| e != energy))
                    && !done.contains(p.name.as_str())
                    && !self.stuck.contains(&p.name)
            });
            match partner.filter(|p| ready(p)) {
                Some(p) => {
                    let (low, high) = if energy == Energy::Low { (*l, p) } else { (p, *l) };
                    done.insert(&low.name);
                    done.insert(&high.name);
                    taken_files += 2;
                    out.push(self.pair(low, high, fields.seq, wall_ms));
                }
                None => {
                    let since = ready_since.get(&l.name).copied().unwrap_or(now_ms);
                    let waited_ms = now_ms.saturating_sub(since);
                    if waited_ms >= self.pair_timeout_ms {
                        done.insert(&l.name);
                        taken_files += 1;
                        let error = IntakeError::PairTimeout { seq: fields.seq, energy: energy.as_str(), waited_ms };
                        out.push(self.reject(&[&l.name], error));
                    }
                }
            }
        }
        out
    }

    /// The image files in the folder, at most [`MAX_LISTED`] entries looked at.
    fn list(&self) -> std::io::Result<Vec<Listed>> {
        let mut listed = Vec::new();
        for entry in std::fs::read_dir(&self.dir)?.take(MAX_LISTED) {
            let Ok(entry) = entry else { continue };
            let Ok(name) = entry.file_name().into_string() else { continue };
            let Some(fields) = self.pattern.parse(&name) else { continue };
            if self.stuck.contains(&name) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() {
                listed.push(Listed { name, fields, size: meta.len(), mtime: meta.modified().ok() });
            }
        }
        Ok(listed)
    }

    /// Counts each file's unchanged polls; forgets what is gone (and stuck files that went).
    fn track(&mut self, listed: &[Listed], now_ms: u64) {
        let mut next = HashMap::with_capacity(listed.len());
        for l in listed {
            let fresh = Seen { size: l.size, mtime: l.mtime, unchanged_polls: 0, ready_since_ms: None };
            let seen = match self.seen.get(&l.name) {
                Some(s) if (s.size, s.mtime) == (l.size, l.mtime) => {
                    Seen { unchanged_polls: s.unchanged_polls.saturating_add(1), ..*s }
                }
                _ => fresh,
            };
            let ready = seen.unchanged_polls >= self.stable_polls;
            let ready_since_ms = seen.ready_since_ms.or(ready.then_some(now_ms));
            next.insert(l.name.clone(), Seen { ready_since_ms, ..seen });
        }
        self.seen = next;
        let dir = &self.dir;
        self.stuck.retain(|name| dir.join(name).exists());
    }

    fn read(&self, l: &Listed, seq: u32) -> Result<(Vec<u8>, XrayImage), IntakeError> {
        if l.size > self.limits.max_bytes {
            // Refused on its size alone, without reading it.
            return Err(super::decode::DecodeError::TooLarge {
                what: format!("file of {} bytes, over the limit of {}", l.size, self.limits.max_bytes),
            }
            .into());
        }
        let path = self.dir.join(&l.name);
        let bytes = std::fs::read(&path)
            .map_err(|e| IntakeError::Read { path: path.display().to_string(), reason: e.to_string() })?;
        let image = decode(&bytes, seq, &self.limits)?;
        Ok((bytes, image))
    }

    fn single(&mut self, l: &Listed, fields: &NameFields, wall_ms: i64) -> IntakeOutput {
        let read = self.read(l, fields.seq).and_then(|(bytes, image)| {
            check_energy(&image, self.energy)?;
            Ok((bytes, image))
        });
        match read {
            Ok((bytes, image)) => {
                let originals = [Original { bytes: &bytes, ext: ext(&bytes), energy: None }];
                let source = Source::Folder { files: vec![l.name.clone()] };
                let out = take(&self.store, &self.stats, &originals, image, fields.barcode.clone(), source, wall_ms);
                self.taken(&out, &[&l.name]);
                out
            }
            Err(e) => self.reject(&[&l.name], e),
        }
    }

    fn pair(&mut self, low: &Listed, high: &Listed, seq: u32, wall_ms: i64) -> IntakeOutput {
        let read = self.read(low, seq).and_then(|(lb, li)| {
            let (hb, hi) = self.read(high, seq)?;
            Ok((lb, hb, pair(li, hi)?))
        });
        let names = [low.name.as_str(), high.name.as_str()];
        match read {
            Ok((lb, hb, image)) => {
                let originals = [
                    Original { bytes: &lb, ext: ext(&lb), energy: Some(Energy::Low) },
                    Original { bytes: &hb, ext: ext(&hb), energy: Some(Energy::High) },
                ];
                let source = Source::Folder { files: names.iter().map(|n| n.to_string()).collect() };
                let barcode = low.fields.as_ref().ok().and_then(|f| f.barcode.clone());
                let barcode = barcode.or_else(|| high.fields.as_ref().ok().and_then(|f| f.barcode.clone()));
                let out = take(&self.store, &self.stats, &originals, image, barcode, source, wall_ms);
                self.taken(&out, &names);
                out
            }
            Err(e) => self.reject(&names, e),
        }
    }

    /// Removes the files of a stored image; a refusal by the store leaves them for next poll.
    fn taken(&mut self, out: &IntakeOutput, names: &[&str]) {
        if !matches!(out, IntakeOutput::Image(_)) {
            return;
        }
        for name in names {
            if let Err(e) = std::fs::remove_file(self.dir.join(name)) {
                tracing::error!(file = %name, error = %e, "x-ray file stored but not removable; left alone");
                self.stuck.insert(name.to_string());
            }
        }
    }

    /// Moves refused files to `rejected/` with the reason beside each.
    fn reject(&mut self, names: &[&str], error: IntakeError) -> IntakeOutput {
        for name in names {
            if let Err(e) = move_to(&self.dir.join(name), &self.rejected, name, &error.to_string()) {
                tracing::error!(file = %name, error = %e, "refused x-ray file not movable; left alone");
                self.stuck.insert(name.to_string());
            }
            self.seen.remove(*name);
        }
        refuse(&self.stats, Source::Folder { files: names.iter().map(|n| n.to_string()).collect() }, error)
    }
}

fn move_to(from: &Path, rejected: &Path, name: &str, reason: &str) -> std::io::Result<()> {
    std::fs::write(rejected.join(format!("{name}.reason.txt")), format!("{reason}\n"))?;
    std::fs::rename(from, rejected.join(name))
}

/// The stored original's extension, by its content (decoding accepted it, so it is one of two).
fn ext(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"\x89PNG") {
        "png"
    } else {
        "tif"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use sortline_sim::xray::wire::{encode_file, FileFormat, Part};
    use sortline_sim::xray::SimImage;

    struct Fixture {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
        intake: FolderIntake,
        stats: Arc<Mutex<XrayIntakeStats>>,
    }

    fn fixture(tweak: impl FnOnce(&mut XrayConfig)) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("in");
        std::fs::create_dir(&dir).unwrap();
        let mut config = XrayConfig { folder: Some(dir.clone()), stable_polls: 0, ..XrayConfig::default() };
        tweak(&mut config);
        let pattern = config.validate().unwrap();
        let store = Arc::new(Mutex::new(ImageStore::open(&tmp.path().join("data")).unwrap()));
        let stats = Arc::new(Mutex::new(XrayIntakeStats::default()));
        let intake = FolderIntake::new(&config, pattern, store, stats.clone()).unwrap();
        Fixture { _tmp: tmp, dir, intake, stats }
    }

    fn png(seq: u32, part: Part, dual: bool) -> Vec<u8> {
        encode_file(&SimImage::pattern(seq, 4, 3, dual), part, FileFormat::Png, 16).unwrap()
    }

    fn taken(out: &[IntakeOutput]) -> Vec<(u32, Option<String>, bool)> {
        out.iter()
            .filter_map(|o| match o {
                IntakeOutput::Image(t) => Some((t.image.seq, t.barcode.clone(), t.image.dual_energy())),
                _ => None,
            })
            .collect()
    }

    fn refused(out: &[IntakeOutput]) -> Vec<&'static str> {
        out.iter()
            .filter_map(|o| match o {
                IntakeOutput::Refused { error, .. } => Some(error.kind()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_file_is_taken_once_stable_stored_by_hash_and_removed() {
        let mut f = fixture(|c| c.stable_polls = 2);
        let bytes = png(7, Part::Low, false);
        std::fs::write(f.dir.join("7_EA123456785CN.png"), &bytes).unwrap();
        std::fs::write(f.dir.join("8.png.part"), b"half").unwrap();
        std::fs::write(f.dir.join("notes.txt"), b"x").unwrap();
        assert!(f.intake.poll(0, 0).is_empty());
        assert!(f.intake.poll(200, 0).is_empty());
        let out = f.intake.poll(400, 0);
        assert_eq!(taken(&out), vec![(7, Some("EA123456785CN".into()), false)]);
        let IntakeOutput::Image(t) = &out[0] else { unreachable!() };
        assert_eq!(t.sha256, <[u8; 32]>::from(Sha256::digest(&bytes)));
        assert_eq!(t.image.pixels(), 12);
        assert!(!f.dir.join("7_EA123456785CN.png").exists());
        assert!(f.dir.join("8.png.part").exists() && f.dir.join("notes.txt").exists(), "not images: left alone");
        assert!(f.intake.poll(600, 0).is_empty(), "taken once");
        let stats = f.stats.lock().unwrap().clone();
        assert_eq!((stats.taken, stats.taken_bytes), (1, bytes.len() as u64));
    }

    #[test]
    fn a_file_still_growing_waits() {
        let mut f = fixture(|c| c.stable_polls = 1);
        let bytes = png(1, Part::Low, false);
        let path = f.dir.join("1.png");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(f.intake.poll(0, 0).is_empty());
        std::fs::write(&path, &bytes).unwrap();
        assert!(f.intake.poll(1, 0).is_empty(), "size changed: counting again");
        assert_eq!(taken(&f.intake.poll(2, 0)), vec![(1, None, false)]);
    }

    #[test]
    fn two_files_pair_by_seq_and_a_loner_times_out() {
        let mut f = fixture(|c| {
            c.energy = EnergyMode::Dual;
            c.pair_timeout_ms = 1000;
        });
        std::fs::write(f.dir.join("3_EA1_low.png"), png(3, Part::Low, true)).unwrap();
        std::fs::write(f.dir.join("4_high.png"), png(4, Part::High, true)).unwrap();
        assert!(f.intake.poll(0, 0).is_empty());
        std::fs::write(f.dir.join("3_high.png"), png(3, Part::High, true)).unwrap();
        let out = f.intake.poll(500, 0);
        assert_eq!(taken(&out), vec![(3, Some("EA1".into()), true)]);
        let IntakeOutput::Image(t) = &out[0] else { unreachable!() };
        assert!(t.partner_sha256.is_some());
        assert_eq!(t.source, Source::Folder { files: vec!["3_EA1_low.png".into(), "3_high.png".into()] });
        assert!(f.intake.poll(999, 0).is_empty(), "4 still waits");
        let out = f.intake.poll(1000, 0);
        assert_eq!(refused(&out), vec!["pair_timeout"]);
        let reason = std::fs::read_to_string(f.dir.join("rejected/4_high.png.reason.txt")).unwrap();
        assert!(reason.contains("no partner within 1000 ms"), "{reason}");
        assert!(f.dir.join("rejected/4_high.png").exists());
    }

    #[test]
    fn refused_files_go_to_rejected_with_their_reason_and_the_rest_is_taken() {
        let mut f = fixture(|_| {});
        let mut corrupt = png(1, Part::Low, false);
        corrupt[45] ^= 0x5a;
        let good = png(2, Part::Low, false);
        std::fs::write(f.dir.join("1.png"), &corrupt).unwrap();
        std::fs::write(f.dir.join("2.png"), &good).unwrap();
        std::fs::write(f.dir.join("3.png"), &good[..good.len() / 2]).unwrap();
        std::fs::write(f.dir.join("4.png"), b"GIF89a...").unwrap();
        std::fs::write(f.dir.join("5.png"), png(5, Part::Both, true)).unwrap();
        std::fs::write(f.dir.join("6_low.png"), &good).unwrap();
        std::fs::write(f.dir.join("9999999999.png"), &good).unwrap();
        let out = f.intake.poll(0, 0);
        assert_eq!(taken(&out), vec![(2, None, false)]);
        let mut kinds = refused(&out);
        kinds.sort();
        assert_eq!(kinds, vec!["bad_name", "corrupt", "truncated", "wrong_energy", "wrong_energy", "wrong_format"]);
        for name in ["1.png", "3.png", "4.png", "5.png", "6_low.png", "9999999999.png"] {
            assert!(f.dir.join(REJECTED_DIR).join(name).exists(), "{name}");
            let reason = std::fs::read_to_string(f.dir.join(REJECTED_DIR).join(format!("{name}.reason.txt"))).unwrap();
            assert!(!reason.trim().is_empty());
        }
        let stats = f.stats.lock().unwrap().clone();
        assert_eq!((stats.refused("wrong_energy"), stats.refused("corrupt"), stats.taken), (2, 1, 1));
        assert!(f.intake.poll(1, 0).is_empty(), "the rejected folder is not an intake");
    }

    #[test]
    fn an_oversized_file_is_refused_on_its_size_and_polls_are_bounded() {
        let mut f = fixture(|c| {
            c.max_files_per_poll = 2;
            c.max_bytes = 4096;
            c.retention_max_total_bytes = 1 << 20;
        });
        std::fs::write(f.dir.join("1.png"), vec![0u8; 5000]).unwrap();
        for seq in 2..=6 {
            std::fs::write(f.dir.join(format!("{seq}.png")), png(seq, Part::Low, false)).unwrap();
        }
        let out = f.intake.poll(0, 0);
        assert_eq!((refused(&out), taken(&out).len()), (vec!["too_large"], 1));
        assert_eq!(taken(&f.intake.poll(1, 0)).len(), 2);
        assert_eq!(taken(&f.intake.poll(2, 0)).len(), 2);
        assert!(f.intake.poll(3, 0).is_empty());
    }
}

//! The X-ray station in a running daemon: the intake drivers' images go to the core as
//! `Input::XrayImage` (their pixels kept in a small cache), and the pre-screen runs on a
//! thread of its own for each `Output::ScreenImage` the core asks for, answering with
//! `Input::XrayScreened`. A parcel whose image cannot be screened gets no answer: the core then
//! sends it to the configured lane at its cut-off, never to release.

use super::config::XrayConfig;
use super::folder::FolderIntake;
use super::screen::{Screen, Screening};
use super::store::{ImageStore, IntakeOutput, Pinned, XrayIntakeStats};
use super::tcp::TcpIntake;
use super::XrayImage;
use crate::clock;
use crate::core::{Alarm, Input, Manifest, ParcelId, Severity};
use crate::daemon::CoreMsg;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Images whose screening may wait at once; beyond it a parcel goes unscreened (and is not
/// released).
pub const QUEUE: usize = 256;

/// What the core asks the pre-screen (`Output::ScreenImage`).
#[derive(Clone, Debug)]
pub struct ScreenJob {
    pub parcel: ParcelId,
    pub image_seq: u32,
    pub sha256: Arc<str>,
    pub manifest: Option<Arc<Manifest>>,
}

/// The decoded pixels of the images taken most recently, by hash: the intake has them already,
/// so the pre-screen does not read the file back. Bounded by count and by bytes (a station's
/// images run to megabytes each): the oldest go first, the newest always stays.
#[derive(Clone)]
pub struct ImageCache {
    images: Arc<Mutex<Images>>,
    max_bytes: usize,
}

#[derive(Default)]
struct Images {
    held: VecDeque<Cached>,
    bytes: usize,
}

/// An image's hash, its pixels and its latest screening (the console outlines its regions).
type Cached = (Arc<str>, Arc<XrayImage>, Option<Arc<Screening>>);

fn pixel_bytes(image: &XrayImage) -> usize {
    (image.low.len() + image.high.as_ref().map_or(0, Vec::len)) * std::mem::size_of::<u16>()
}

impl ImageCache {
    /// At most [`QUEUE`] images and `max_bytes` of pixels.
    pub fn new(max_bytes: usize) -> ImageCache {
        ImageCache { images: Arc::default(), max_bytes }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Images> {
        self.images.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn put(&self, sha256: Arc<str>, image: XrayImage) {
        let mut images = self.lock();
        let bytes = pixel_bytes(&image);
        while !images.held.is_empty() && (images.held.len() >= QUEUE || images.bytes + bytes > self.max_bytes) {
            if let Some((_, old, _)) = images.held.pop_front() {
                images.bytes -= pixel_bytes(&old);
            }
        }
        images.bytes += bytes;
        images.held.push_back((sha256, Arc::new(image), None));
    }

    pub fn get(&self, sha256: &str) -> Option<Arc<XrayImage>> {
        self.lock().held.iter().rev().find(|(h, ..)| &**h == sha256).map(|(_, i, _)| i.clone())
    }

    /// The image's pixels and its latest screening, if it was screened.
    pub fn screened(&self, sha256: &str) -> Option<(Arc<XrayImage>, Arc<Screening>)> {
        let images = self.lock();
        let (_, image, screening) = images.held.iter().rev().find(|(h, ..)| &**h == sha256)?;
        Some((image.clone(), screening.clone()?))
    }

    fn set_screening(&self, sha256: &str, screening: Screening) {
        if let Some(cached) = self.lock().held.iter_mut().rev().find(|(h, ..)| &**h == sha256) {
            cached.2 = Some(Arc::new(screening));
        }
    }
}

/// What a driver's output becomes for the core: an image to match, or an alarm to record.
pub fn to_core(output: IntakeOutput, cache: &ImageCache) -> Option<CoreMsg> {
    if let IntakeOutput::Image(taken) = output {
        let sha256: Arc<str> = taken.sha256_hex().into();
        let image_seq = taken.image.seq;
        let barcode = taken.barcode.clone();
        cache.put(sha256.clone(), taken.image);
        return Some(CoreMsg::Input(Input::XrayImage { image_seq, sha256, barcode }));
    }
    output.alarm().map(CoreMsg::Alarm)
}

/// Screens one job: the core's input, or the alarm that says why there is none.
pub fn screen_job(screen: &Screen, cache: &ImageCache, job: &ScreenJob) -> CoreMsg {
    let unscreened = |why: String| {
        CoreMsg::Alarm(Alarm {
            code: "xray_screen_failed",
            severity: Severity::Warning,
            tracking: Some(job.parcel.tracking),
            message: format!("X-ray image {} not screened ({why}): the parcel is not released", job.image_seq),
        })
    };
    let Some(image) = cache.get(&job.sha256) else {
        return unscreened("its pixels are no longer held".into());
    };
    let declared = job.manifest.as_deref().map_or(&[][..], |m| &m.items);
    match screen.screen(&image, declared) {
        // The answer names what was screened: this image, against this version of the list.
        Ok(s) => {
            let flags = s.reasons();
            // Kept before the core hears of it: a review it then asks for finds the regions.
            cache.set_screening(&job.sha256, s);
            CoreMsg::Input(Input::XrayScreened {
                parcel: job.parcel,
                sha256: job.sha256.clone(),
                manifest_version: job.manifest.as_ref().map(|m| m.version),
                flags,
            })
        }
        Err(e) => unscreened(e.to_string()),
    }
}

/// Runs the pre-screen on its own thread until `jobs` closes; results go to `core`.
pub fn spawn_screener(
    screen: Screen,
    cache: ImageCache,
    jobs: crossbeam_channel::Receiver<ScreenJob>,
    core: crossbeam_channel::Sender<CoreMsg>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("sortline-xray".into()).spawn(move || {
        for job in jobs {
            if core.send(screen_job(&screen, &cache, &job)).is_err() {
                break;
            }
        }
    })
}

#[derive(Debug, thiserror::Error)]
pub enum StationError {
    #[error("X-ray image store: {0}")]
    Store(#[from] super::store::StoreError),
    #[error("X-ray intake: {0}")]
    Intake(#[from] super::store::IntakeError),
    #[error("X-ray intake: {0}")]
    Listen(#[from] super::tcp::ListenError),
    #[error("[xray]: {0}")]
    Config(#[from] super::config::XrayConfigError),
}

/// The station's intake drivers, opened (folder checked, listener bound) but not yet running.
pub struct Intakes {
    pub folder: Option<FolderIntake>,
    pub tcp: Option<TcpIntake>,
    pub store: Arc<Mutex<ImageStore>>,
    pub stats: Arc<Mutex<XrayIntakeStats>>,
}

impl Intakes {
    pub async fn open(config: &XrayConfig, data_dir: &Path) -> Result<Intakes, StationError> {
        let pattern = config.validate()?;
        let store = Arc::new(Mutex::new(ImageStore::open(data_dir)?));
        let stats = Arc::new(Mutex::new(XrayIntakeStats::default()));
        let folder = match config.folder {
            Some(_) => Some(FolderIntake::new(config, pattern, store.clone(), stats.clone())?),
            None => None,
        };
        let tcp = match config.tcp_listen {
            Some(addr) => {
                Some(TcpIntake::bind(addr, config.limits(), config.energy, store.clone(), stats.clone()).await?)
            }
            None => None,
        };
        Ok(Intakes { folder, tcp, store, stats })
    }

    /// Starts the drivers as tokio tasks feeding the core through `core`; they stop when
    /// `shutdown` fires.
    pub fn run(
        self,
        cache: ImageCache,
        core: crossbeam_channel::Sender<CoreMsg>,
        shutdown: tokio::sync::broadcast::Sender<()>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let deliver = move |core: crossbeam_channel::Sender<CoreMsg>, cache: ImageCache| {
            move |out: IntakeOutput| {
                if let Some(msg) = to_core(out, &cache) {
                    // The core gone means the daemon is stopping.
                    let _ = tokio::task::block_in_place(|| core.send(msg));
                }
            }
        };
        let stopped = |rx: tokio::sync::broadcast::Receiver<()>| async move {
            let mut rx = rx;
            let _ = rx.recv().await;
        };
        let mut tasks = Vec::new();
        if let Some(folder) = self.folder {
            let run = folder.run(deliver(core.clone(), cache.clone()), stopped(shutdown.subscribe()));
            tasks.push(tokio::spawn(run));
        }
        if let Some(tcp) = self.tcp {
            tasks.push(tokio::spawn(tcp.run(deliver(core, cache), stopped(shutdown.subscribe()))));
        }
        tasks
    }
}

/// Retention of the originals: images younger than `keep_ms` (longer than any parcel stays
/// undecided on the belt) are pinned, the rest go by `config`'s age and size limits.
pub fn retention(store: &Mutex<ImageStore>, config: &XrayConfig, keep_ms: i64) -> Result<u64, StationError> {
    let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
    let now = clock::wall_ms();
    let recent = store.files()?.into_iter().filter(|f| now - f.received_ms < keep_ms).map(|f| f.sha256).collect();
    let report =
        store.apply_retention(now, &config.retention(), &Pinned { hashes: recent, seqs: Default::default() })?;
    Ok(report.deleted_files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(seq: u32, pixels: usize) -> XrayImage {
        XrayImage { seq, width: pixels as u32, height: 1, bit_depth: 8, low: vec![0; pixels], high: None }
    }

    #[test]
    fn the_cache_keeps_the_newest_images_within_its_bytes() {
        // 1,000 pixels of u16 are 2,000 bytes: three fit in 7,000, not four.
        let cache = ImageCache::new(7_000);
        for seq in 1..=4u32 {
            cache.put(format!("h{seq}").into(), image(seq, 1_000));
        }
        assert!(cache.get("h1").is_none(), "the oldest went first");
        assert_eq!(["h2", "h3", "h4"].map(|h| cache.get(h).map(|i| i.seq)), [Some(2), Some(3), Some(4)]);
        // An image larger than the whole budget still stays, alone: the newest is never dropped.
        cache.put("big".into(), image(5, 10_000));
        assert_eq!(cache.get("big").map(|i| i.seq), Some(5));
        assert!(cache.get("h4").is_none());
        assert_eq!(cache.lock().bytes, 20_000);
    }

    #[test]
    fn the_cache_keeps_at_most_a_queue_of_images() {
        let cache = ImageCache::new(usize::MAX);
        for seq in 0..=QUEUE as u32 {
            cache.put(format!("h{seq}").into(), image(seq, 1));
        }
        assert_eq!(cache.lock().held.len(), QUEUE);
        assert!(cache.get("h0").is_none() && cache.get(&format!("h{QUEUE}")).is_some());
    }
}

//! X-ray intake end to end: the simulated station's writers against the real drivers, over a
//! real temporary folder and a real socket on 127.0.0.1 port 0. Every good image is taken
//! once with its seq and the hash of what the station wrote; each broken one gets its own
//! error and counter while the driver keeps taking; retention keeps pinned images.

use sha2::{Digest, Sha256};
use sortline::xray::config::{EnergyMode, XrayConfig};
use sortline::xray::folder::{FolderIntake, REJECTED_DIR};

use sortline::xray::store::{ImageStore, IntakeOutput, Pinned, RetentionLimits, Taken, XrayIntakeStats};
use sortline::xray::tcp::TcpIntake;
use sortline_sim::xray::wire::{
    encode_frame, DualLayout, FileFormat, FolderWriter, FolderWriterConfig, StreamWriter, WireFault, WireFaults,
    WriteMode,
};
use sortline_sim::xray::SimImage;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A guard against a hung test, never a synchronisation.
const GUARD: Duration = Duration::from_secs(20);

struct Running {
    outputs: mpsc::UnboundedReceiver<IntakeOutput>,
    store: Arc<Mutex<ImageStore>>,
    stats: Arc<Mutex<XrayIntakeStats>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _data: tempfile::TempDir,
}

impl Running {
    async fn next(&mut self) -> IntakeOutput {
        tokio::time::timeout(GUARD, self.outputs.recv()).await.expect("no intake output in time").expect("intake ended")
    }

    /// The next `n` image outputs (taken or refused), skipping link events.
    async fn images(&mut self, n: usize) -> Vec<IntakeOutput> {
        let mut got = Vec::new();
        while got.len() < n {
            match self.next().await {
                IntakeOutput::Connected { .. } | IntakeOutput::Disconnected { .. } => {}
                o => got.push(o),
            }
        }
        got
    }

    fn stats(&self) -> XrayIntakeStats {
        self.stats.lock().unwrap().clone()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(GUARD, self.task).await.expect("intake did not stop").unwrap();
    }
}

fn shutdown() -> (oneshot::Sender<()>, impl std::future::Future<Output = ()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    (stop, async {
        let _ = stopped.await;
    })
}

fn shared(data: &Path) -> (Arc<Mutex<ImageStore>>, Arc<Mutex<XrayIntakeStats>>) {
    (Arc::new(Mutex::new(ImageStore::open(data).unwrap())), Arc::default())
}

fn folder_config(dir: &Path, tweak: impl FnOnce(&mut XrayConfig)) -> XrayConfig {
    let mut c =
        XrayConfig { folder: Some(dir.to_path_buf()), poll_interval_ms: 10, stable_polls: 0, ..XrayConfig::default() };
    tweak(&mut c);
    c
}

fn start_folder(config: XrayConfig) -> Running {
    let data = tempfile::tempdir().unwrap();
    let (store, stats) = shared(data.path());
    let pattern = config.validate().unwrap();
    let intake = FolderIntake::new(&config, pattern, store.clone(), stats.clone()).unwrap();
    let (tx, outputs) = mpsc::unbounded_channel();
    let (stop, stopped) = shutdown();
    let task = tokio::spawn(intake.run(move |o| tx.send(o).unwrap(), stopped));
    Running { outputs, store, stats, stop: Some(stop), task, _data: data }
}

async fn start_tcp(energy: EnergyMode) -> (Running, std::net::SocketAddr) {
    let data = tempfile::tempdir().unwrap();
    let (store, stats) = shared(data.path());
    let config = XrayConfig { energy, ..XrayConfig::default() };
    let intake = TcpIntake::bind("127.0.0.1:0".parse().unwrap(), config.limits(), energy, store.clone(), stats.clone())
        .await
        .unwrap();
    let addr = intake.local_addr().unwrap();
    let (tx, outputs) = mpsc::unbounded_channel();
    let (stop, stopped) = shutdown();
    let task = tokio::spawn(intake.run(move |o| tx.send(o).unwrap(), stopped));
    (Running { outputs, store, stats, stop: Some(stop), task, _data: data }, addr)
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn barcode(seq: u32) -> String {
    format!("EA{:09}CN", 100_000_000 + seq)
}

/// Sorted taken images by seq, and refusal kinds counted.
fn split(outputs: Vec<IntakeOutput>) -> (BTreeMap<u32, Taken>, BTreeMap<&'static str, u64>) {
    let (mut taken, mut refused) = (BTreeMap::new(), BTreeMap::new());
    for o in outputs {
        match o {
            IntakeOutput::Image(t) => assert!(taken.insert(t.image.seq, *t).is_none(), "an image taken twice"),
            IntakeOutput::Refused { error, .. } => *refused.entry(error.kind()).or_default() += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    (taken, refused)
}

/// The kind the intake must answer a file fault with.
fn file_kind(fault: WireFault) -> &'static str {
    match fault {
        WireFault::Truncated => "truncated",
        WireFault::Corrupt => "corrupt",
        WireFault::Oversize => "too_large",
        WireFault::WrongFormat => "wrong_format",
    }
}

fn faults(seed: u64) -> WireFaults {
    WireFaults { seed, truncated: 0.1, corrupt: 0.1, oversize: 0.1, wrong_format: 0.1, ..WireFaults::default() }
}

fn image(seq: u32, dual: bool) -> SimImage {
    SimImage::pattern(seq, 48 + seq % 7, 32, dual)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_folder_takes_every_good_image_once_and_refuses_each_broken_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut run = start_folder(folder_config(&dir, |_| {}));
    let mut expected = BTreeMap::new();
    let mut want_refused: BTreeMap<&str, u64> = BTreeMap::new();
    for (format, depth, seed) in [(FileFormat::Png, 16, 1), (FileFormat::Tiff, 8, 2)] {
        let config = FolderWriterConfig {
            pattern: XrayConfig::default().pattern,
            format,
            bit_depth: depth,
            dual: DualLayout::TwoChannel,
            mode: WriteMode::Rename,
            faults: faults(seed),
        };
        let mut writer = FolderWriter::new(&dir, config);
        for i in 0..20 {
            let seq = u32::from(depth) * 100 + i;
            let written = writer.write(&image(seq, false), Some(&barcode(seq))).await.unwrap();
            match written.fault {
                Some(fault) => *want_refused.entry(file_kind(fault)).or_default() += 1,
                None => {
                    expected.insert(seq, sha(&written.bytes[0]));
                }
            }
        }
    }
    assert_eq!(want_refused.len(), 4, "the seeds draw every fault: {want_refused:?}");
    let n = expected.len() + want_refused.values().sum::<u64>() as usize;
    let (taken, refused) = split(run.images(n).await);
    assert_eq!(refused, want_refused);
    assert_eq!(taken.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (seq, t) in &taken {
        assert_eq!(t.sha256, expected[seq], "seq {seq}");
        assert_eq!(t.barcode.as_deref(), Some(barcode(*seq).as_str()));
        assert_eq!((t.image.bit_depth, t.image.width), (if *seq >= 1600 { 16 } else { 8 }, 48 + seq % 7));
        let stored = run.store.lock().unwrap().path(&t.sha256).unwrap().expect("stored");
        assert_eq!(stored.file_stem().unwrap().to_str(), Some(t.sha256_hex().as_str()));
        assert_eq!(sha(&std::fs::read(stored).unwrap()), t.sha256);
    }
    let stats = run.stats();
    assert_eq!(stats.taken, expected.len() as u64);
    for (kind, n) in &want_refused {
        assert_eq!(stats.refused(kind), *n, "{kind}");
    }
    // Still running: one more good image after all that.
    let mut writer = FolderWriter::new(
        &dir,
        FolderWriterConfig {
            pattern: XrayConfig::default().pattern,
            format: FileFormat::Png,
            bit_depth: 16,
            dual: DualLayout::TwoChannel,
            mode: WriteMode::Rename,
            faults: WireFaults::default(),
        },
    );
    writer.write(&image(5000, false), None).await.unwrap();
    let (taken, _) = split(run.images(1).await);
    assert!(taken.contains_key(&5000));
    let left: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(left, vec![dir.join(REJECTED_DIR)], "taken files removed, refused ones moved");
    let rejected = std::fs::read_dir(dir.join(REJECTED_DIR)).unwrap().count() as u64;
    assert_eq!(rejected, 2 * want_refused.values().sum::<u64>(), "each refused file and its reason");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_slowly_in_place_is_taken_whole_once_it_is_stable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    // Four writes 30 ms apart against a 10 ms poll: only stable_polls (300 ms) keeps it from being
    // read half-written.
    let mut run = start_folder(folder_config(&dir, |c| c.stable_polls = 30));
    let config = FolderWriterConfig {
        pattern: XrayConfig::default().pattern,
        format: FileFormat::Tiff,
        bit_depth: 16,
        dual: DualLayout::TwoFiles,
        mode: WriteMode::InPlace { pieces: 4, pause_ms: 30 },
        faults: WireFaults::default(),
    };
    let mut writer = FolderWriter::new(&dir, config);
    let written = writer.write(&image(1, false), None).await.unwrap();
    let (taken, refused) = split(run.images(1).await);
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(taken[&1].sha256, sha(&written.bytes[0]));
    assert_eq!(taken[&1].image.low, image(1, false).low);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_energy_comes_as_two_channels_or_two_files_and_a_loner_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut run = start_folder(folder_config(&dir, |c| {
        c.energy = EnergyMode::Dual;
        c.pair_timeout_ms = 1000;
    }));
    let layouts = [(FileFormat::Png, 8, DualLayout::TwoChannel), (FileFormat::Tiff, 16, DualLayout::TwoFiles)];
    let mut expected = BTreeMap::new();
    for (k, (format, bit_depth, dual)) in layouts.into_iter().enumerate() {
        let config = FolderWriterConfig {
            pattern: XrayConfig::default().pattern,
            format,
            bit_depth,
            dual,
            mode: WriteMode::Rename,
            faults: WireFaults::default(),
        };
        let mut writer = FolderWriter::new(&dir, config);
        for seq in (0..3).map(|i| 10 * k as u32 + i) {
            let written = writer.write(&image(seq, true), Some(&barcode(seq))).await.unwrap();
            expected.insert(seq, written.bytes.iter().map(|b| sha(b)).collect::<Vec<_>>());
        }
    }
    // The low half of seq 99 and nothing else.
    let lone = sortline_sim::xray::wire::encode_file(
        &image(99, true),
        sortline_sim::xray::wire::Part::Low,
        FileFormat::Png,
        16,
    );
    std::fs::write(dir.join("99_low.png"), lone.unwrap()).unwrap();
    let (taken, refused) = split(run.images(expected.len() + 1).await);
    assert_eq!(refused, BTreeMap::from([("pair_timeout", 1)]));
    for (seq, hashes) in &expected {
        let t = &taken[seq];
        assert!(t.image.dual_energy());
        assert_eq!(t.sha256, hashes[0]);
        assert_eq!(t.partner_sha256, hashes.get(1).copied(), "seq {seq}");
        let want = image(*seq, true);
        if t.image.bit_depth == 16 {
            assert_eq!((&t.image.low, t.image.high.as_ref()), (&want.low, want.high.as_ref()));
        }
    }
    assert!(dir.join(REJECTED_DIR).join("99_low.png.reason.txt").exists());
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_takes_every_good_frame_through_garbage_and_broken_frames() {
    let (mut run, addr) = start_tcp(EnergyMode::Single).await;
    let mut expected = BTreeMap::new();
    let mut faulted: BTreeMap<WireFault, u64> = BTreeMap::new();
    let faults = WireFaults { garbage: 0.3, garbage_max_bytes: 40, ..faults(21) };
    let mut writer = StreamWriter::connect(addr, 16, faults).await.unwrap();
    for seq in 0..40 {
        let img = image(seq, false);
        let sent = writer.send(&img, Some(&barcode(seq))).await.unwrap();
        match sent.fault {
            Some(f) => *faulted.entry(f).or_default() += 1,
            None => {
                expected.insert(seq, sha(&encode_frame(&img, Some(&barcode(seq)), 16)));
            }
        }
    }
    writer.close().await.unwrap();
    assert_eq!(faulted.len(), 4, "the seed draws every fault: {faulted:?}");
    let mut outputs = Vec::new();
    loop {
        match run.next().await {
            IntakeOutput::Disconnected { .. } => break,
            IntakeOutput::Connected { .. } => {}
            o => outputs.push(o),
        }
    }
    let (taken, refused) = split(outputs.into_iter().filter(|o| !is_garbage(o)).collect());
    assert_eq!(taken.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (seq, t) in &taken {
        assert_eq!(t.sha256, expected[seq]);
        assert_eq!(t.image.low, image(*seq, false).low);
        assert_eq!(t.barcode.as_deref(), Some(barcode(*seq).as_str()));
    }
    // A cut frame is caught by its CRC when the next frames fill it up, or at the close.
    let cut = refused.get("bad_crc").copied().unwrap_or(0) + refused.get("truncated").copied().unwrap_or(0);
    assert_eq!(cut, faulted[&WireFault::Truncated] + faulted[&WireFault::Corrupt]);
    assert_eq!(refused.get("too_large"), faulted.get(&WireFault::Oversize));
    assert_eq!(refused.get("bad_header"), faulted.get(&WireFault::WrongFormat));
    let stats = run.stats();
    assert!(stats.refused("garbage") > 0 && stats.garbage_bytes > 0);
    assert_eq!(stats.taken, expected.len() as u64);
    run.stop().await;
}

fn is_garbage(o: &IntakeOutput) -> bool {
    matches!(o, IntakeOutput::Refused { error, .. } if error.kind() == "garbage")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_replaces_the_old_and_a_half_frame_never_joins_it() {
    let (mut run, addr) = start_tcp(EnergyMode::Dual).await;
    let mut first = StreamWriter::connect(addr, 8, WireFaults::default()).await.unwrap();
    let half = encode_frame(&image(4, true), None, 8);
    let bytes = [encode_frame(&image(1, true), None, 8), half[..half.len() / 2].to_vec()].concat();
    first.send_raw(&bytes).await.unwrap();
    let mut outputs = Vec::new();
    while !outputs.iter().any(|o| matches!(o, IntakeOutput::Image(_))) {
        outputs.push(run.next().await);
    }
    let mut second = StreamWriter::connect(addr, 8, WireFaults::default()).await.unwrap();
    second.send(&image(2, true), None).await.unwrap();
    second.send(&image(3, false), None).await.unwrap();
    while !outputs.iter().any(|o| matches!(o, IntakeOutput::Refused { error, .. } if error.kind() == "wrong_energy")) {
        outputs.push(run.next().await);
    }
    let kinds: Vec<String> = outputs
        .iter()
        .map(|o| match o {
            IntakeOutput::Image(t) => format!("image {}", t.image.seq),
            IntakeOutput::Refused { error, .. } => error.kind().to_string(),
            IntakeOutput::Connected { .. } => "connected".into(),
            IntakeOutput::Disconnected { reason, .. } => format!("disconnected: {reason}"),
        })
        .collect();
    // The half frame, if the driver read it before the new connection came, is reported at
    // the old one's end: its bytes after the magic are scanned again as garbage. It never
    // swallows the new connection's frames.
    let half_read = kinds.iter().any(|k| k == "truncated");
    let want_half: &[&str] = if half_read { &["truncated", "garbage"] } else { &[] };
    assert_eq!(kinds[..2], ["connected", "image 1"]);
    assert_eq!(kinds[2..2 + want_half.len()], *want_half, "{kinds:?}");
    let rest = &kinds[2 + want_half.len()..];
    assert!(rest[0].starts_with("disconnected: replaced"), "{kinds:?}");
    assert_eq!(rest[1..], ["connected", "image 2", "wrong_energy"]);
    let down = outputs.iter().find(|o| matches!(o, IntakeOutput::Disconnected { .. })).unwrap();
    assert_eq!(down.alarm().unwrap().code, "xray_link_down");
    assert_eq!(outputs.last().unwrap().alarm().unwrap().code, "xray_image_refused");
    assert_eq!(run.stats().connections, 2);
    drop(first);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_pinned_images_through_both_limits() {
    let (mut run, addr) = start_tcp(EnergyMode::Single).await;
    let mut writer = StreamWriter::connect(addr, 16, WireFaults::default()).await.unwrap();
    for seq in 0..6 {
        writer.send(&image(seq, false), None).await.unwrap();
    }
    let (taken, _) = split(run.images(6).await);
    // Undecided parcels: two by seq, one by the image's hash.
    let pinned = Pinned { seqs: [1, 4].into(), hashes: [taken[&5].sha256].into() };
    let kept = |store: &ImageStore| {
        let mut seqs: Vec<u32> = store.files().unwrap().iter().map(|f| f.seq).collect();
        seqs.sort();
        seqs
    };
    {
        let mut store = run.store.lock().unwrap();
        let now = sortline::clock::wall_ms();
        let total: u64 = store.files().unwrap().iter().map(|f| f.bytes).sum();
        let by_size = RetentionLimits { max_age_ms: 3_600_000, max_total_bytes: total / 6 };
        assert_eq!(store.apply_retention(now, &by_size, &pinned).unwrap().deleted_files, 3);
        assert_eq!(kept(&store), vec![1, 4, 5]);
        let by_age = RetentionLimits { max_age_ms: 0, max_total_bytes: u64::MAX };
        assert_eq!(store.apply_retention(now + 10_000, &by_age, &pinned).unwrap().deleted_files, 0);
        assert_eq!(kept(&store), vec![1, 4, 5]);
        let path = store.path(&taken[&1].sha256).unwrap().unwrap();
        assert!(path.exists());
        // Decided: they go.
        assert_eq!(store.apply_retention(now + 10_000, &by_age, &Pinned::default()).unwrap().deleted_files, 3);
        assert!(kept(&store).is_empty() && !path.exists());
    }
    writer.close().await.unwrap();
    run.stop().await;
}

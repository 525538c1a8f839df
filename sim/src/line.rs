//! `sortline-sim line`: the simulated line as a process of its own, standing in for the
//! hardware while `sortline run` drives it as it would a real line. It serves the PLC (Modbus
//! TCP on an address, or RTU on a pseudo-terminal), the reading gate's scanner (a
//! pseudo-terminal or a TCP server), the X-ray station (image files into a folder, or a TCP
//! stream to the daemon's listener) and the platform (declaration lists over MQTT, with an
//! embedded broker if asked), in real time at a chosen induction rate, until its parcels are
//! done or it is stopped (SIGINT, SIGTERM: the infeed closes and the belt empties). Then it
//! prints the referee's figures: where every parcel physically went, unsafe releases, wrong
//! lanes, late destinations, and, given the daemon's data directory, parcels the record does
//! not account for.
//!
//! Pseudo-terminals get a new name at every start; `link` paths give them a stable one (a
//! symlink), as a udev rule does for a real serial adapter, so that the daemon's configuration
//! can name it.

use crate as sim;
use crate::demo::{self, DemoError, Pacing, SimStation};
use serde::{Deserialize, Serialize};
use sim::scanner::{ScannerFaults, SimScanner, SimScannerConfig};
use sortline::config::{Loaded, Transport};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The simulator's configuration file (docs/simulation.md, "The line as a process").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineSimConfig {
    /// The daemon's `line.toml`: the simulated line has its geometry, lanes, register map,
    /// scanner profile and X-ray tables. Relative to this file.
    pub line: PathBuf,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Parcels to induct; then the run ends once the belt is empty.
    pub parcels: u32,
    /// Induction rate, parcels per hour (leading edge to leading edge, ±20 %); the belt's
    /// minimum gap can make it lower, and the start says so.
    pub per_hour: u32,
    /// Missed diverts and belt slip, as the demo's `--faults`.
    #[serde(default)]
    pub faults: bool,
    /// Optional: the parcels' shape and the gate eye, for small fast parcels (the benchmark).
    #[serde(default)]
    pub parcel: ParcelShape,
    pub plc: PlcServe,
    pub scanner: ScannerServe,
    pub xray: Option<XrayServe>,
    pub platform: PlatformServe,
}

fn default_seed() -> u64 {
    7
}

/// `[parcel]`: each key replaces the demo scenario's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParcelShape {
    /// Shortest and longest parcel, mm.
    pub length_mm: Option<[u32; 2]>,
    /// Least gap between parcels, mm.
    pub min_gap_mm: Option<u32>,
    /// The gate eye's debounce in the PLC, ms: a gap shorter than it merges two parcels.
    pub debounce_ms: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlcServe {
    /// `tcp` or `rtu`.
    pub transport: Transport,
    /// Modbus TCP: where to listen.
    pub listen: Option<SocketAddr>,
    /// Modbus RTU: a symlink to the pseudo-terminal, for the daemon's `[plc.serial] path`.
    pub link: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "wire", rename_all = "snake_case")]
pub enum ScannerServe {
    /// A serial port: a pseudo-terminal, with a symlink for `[scanner.link]`'s path.
    Pty { link: Option<PathBuf> },
    /// A TCP server the daemon connects to (`tcp_connect`).
    Tcp { listen: SocketAddr },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XrayServe {
    /// Image files, renamed into place, into this folder (the daemon's `[xray] folder`).
    pub folder: Option<PathBuf>,
    /// Or frames to the daemon's `[xray] tcp_listen`.
    pub connect: Option<SocketAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformServe {
    /// The broker the daemon's `[mqtt] broker` names.
    pub broker: SocketAddr,
    /// Serve that broker here (embedded) rather than use one that runs already.
    #[serde(default)]
    pub embedded_broker: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("{path}: {problem}")]
    Config { path: String, problem: String },
    #[error(transparent)]
    Sim(#[from] DemoError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl LineSimConfig {
    /// Reads the file; relative paths are made relative to it.
    pub fn load(path: &Path) -> Result<LineSimConfig, LineError> {
        let problem = |problem: String| LineError::Config { path: path.display().to_string(), problem };
        let text = std::fs::read_to_string(path).map_err(|e| problem(e.to_string()))?;
        let mut c: LineSimConfig = toml::from_str(&text).map_err(|e| problem(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &mut PathBuf| *p = base.join(&*p);
        rel(&mut c.line);
        c.plc.link.as_mut().map(rel);
        if let ScannerServe::Pty { link: Some(l) } = &mut c.scanner {
            rel(l);
        }
        if let Some(folder) = c.xray.as_mut().and_then(|x| x.folder.as_mut()) {
            rel(folder);
        }
        if c.parcel.length_mm.is_some_and(|[min, max]| min == 0 || min > max) {
            return Err(problem("[parcel] length_mm: [shortest, longest], above 0".into()));
        }
        if c.parcel.debounce_ms.is_some_and(|ms| u64::from(ms) <= crate::world::BOUNCE_MS) {
            let bounce = crate::world::BOUNCE_MS;
            return Err(problem(format!("[parcel] debounce_ms: above {bounce}, the simulated eye's bounce")));
        }
        if c.parcels == 0 || c.per_hour == 0 {
            return Err(problem("parcels and per_hour must be above 0".into()));
        }
        match (c.plc.transport, c.plc.listen, &c.plc.link) {
            (Transport::Tcp, Some(_), None) | (Transport::Rtu, None, _) => {}
            _ => return Err(problem("[plc]: `tcp` needs `listen` (and no `link`), `rtu` no `listen`".into())),
        }
        if let Some(x) = &c.xray {
            if x.folder.is_some() == x.connect.is_some() {
                return Err(problem("[xray]: one of `folder` and `connect`".into()));
            }
        }
        Ok(c)
    }
}

/// The referee's figures at the end of a run.
#[derive(Debug, Serialize)]
pub struct LineSummary {
    pub parcels: u32,
    /// Parcels through the reading gate (fewer than `parcels` when the run was stopped).
    pub inducted: u32,
    pub lanes: sim::LaneCounts,
    pub unsafe_releases: u32,
    pub wrong_lane: u32,
    pub late_destinations: u32,
    pub no_destination: u32,
    pub missed_diverts: u32,
    /// Parcels the daemon's record does not account for; `None` without its data directory.
    pub unaccounted: Option<u32>,
    /// Induction rate achieved, parcels per hour, first to last parcel at the gate.
    pub per_hour: f64,
    /// From the moment a destination was due to the PLC taking it, ms: due at the parcel's
    /// review cut-off, or at its last device input (scan, X-ray image) if that came later.
    pub due_to_destination_ms: Latency,
    /// Destinations taken before the parcel's cut-off (final holds), not in the figure above.
    pub early_destinations: usize,
    /// Time left between the PLC taking a destination and the parcel's latch point, ms:
    /// the slack the controller leaves (below 0 it is late).
    pub latch_margin_ms: Latency,
    pub seconds: f64,
}

/// A distribution over destinations, ms.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub destinations: usize,
    pub min: i64,
    pub p50: i64,
    pub p99: i64,
    pub max: i64,
}

impl Latency {
    fn of(mut ms: Vec<i64>) -> Latency {
        ms.sort_unstable();
        let at = |q: f64| ms.get(((ms.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0);
        Latency { destinations: ms.len(), min: at(0.0), p50: at(0.5), p99: at(0.99), max: at(1.0) }
    }
}

/// What the referee times, in belt ms (the world's clock, which the PLC's events carry).
#[derive(Default)]
struct Stamps {
    /// The last scan or X-ray image per tracking id.
    last_input_ms: HashMap<u32, u64>,
    due_ms: Vec<i64>,
    early: usize,
    margin_ms: Vec<i64>,
}

impl Stamps {
    fn taken(&mut self, t: sim::modbus::Taken, gate_to_cutoff_ms: u64) {
        // A parcel's destination is taken once: its last input is no longer needed.
        let last_input = self.last_input_ms.remove(&t.tracking);
        let Some((gate_ms, latch_ms)) = t.gate_and_latch else { return };
        self.margin_ms.push(latch_ms as i64 - t.at_ms as i64);
        let cutoff_ms = gate_ms + gate_to_cutoff_ms;
        if t.at_ms < cutoff_ms {
            self.early += 1;
            return;
        }
        let due = last_input.map_or(cutoff_ms, |input| input.max(cutoff_ms));
        self.due_ms.push(t.at_ms as i64 - due as i64);
    }
}

/// The simulated devices' wall clock (they stand for hardware that has its own).
#[derive(Clone, Copy)]
pub(crate) struct DeviceClock(std::time::Instant);

impl DeviceClock {
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn start() -> DeviceClock {
        DeviceClock(std::time::Instant::now())
    }

    pub(crate) fn us(self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

/// Makes `link` a symlink to `target` (replacing an old one).
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(link) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::os::unix::fs::symlink(target, link)
}

/// Says the address of each device on stdout (one line each, for a person or a script), runs
/// the line until it is done or `stop` resolves, and returns the referee's figures.
pub async fn run(
    c: &LineSimConfig,
    cfg: &Loaded,
    daemon_data: Option<&Path>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<LineSummary, LineError> {
    let clock = DeviceClock::start();
    let geometry = demo::geometry(cfg)?;
    let mut scenario = sim::Scenario::demo(c.parcels, c.seed);
    if c.faults {
        scenario = scenario.with_faults();
    }
    // Nobody at the screens or the bench: a person at the console reviews, if anyone.
    scenario.manual_transfer = 0.0;
    scenario.inspection_ms = 0..=0;
    scenario.xray_images = c.xray.is_some();
    if let Some([min, max]) = c.parcel.length_mm {
        scenario.length_mm = min..=max;
    }
    scenario.min_gap_mm = c.parcel.min_gap_mm.unwrap_or(scenario.min_gap_mm);
    scenario.debounce_ms = c.parcel.debounce_ms.map_or(scenario.debounce_ms, u64::from);
    let period = 3_600_000 / u64::from(c.per_hour);
    scenario.arrival_period_ms = (period * 4 / 5).max(1)..=(period * 6 / 5).max(1);
    let longest = scenario.length_mm.end() + scenario.min_gap_mm;
    let belt_max = 3_600_000.0 * f64::from(geometry.belt_speed_mm_s) / f64::from(longest) / 1000.0;
    if f64::from(c.per_hour) > belt_max {
        tracing::warn!(
            asked = c.per_hour,
            belt_max = belt_max as u64,
            "the belt cannot carry this rate with the longest parcels and the minimum gap: fewer parcels an hour"
        );
    }
    let world = sim::World::new(scenario, geometry);
    let lists = demo::declarations(&world)?;
    let map = cfg.register_map().map_err(|e| DemoError::Geometry(e.to_string()))?;

    if c.platform.embedded_broker {
        sortline::mqtt::broker::Embedded::start_on(c.platform.broker)
            .map_err(|e| DemoError::Sim { what: "the embedded broker", detail: e.to_string() })?;
    }
    println!("mqtt: broker {}", c.platform.broker);

    let stamps = Arc::new(Mutex::new(Stamps::default()));
    let on_destination = {
        let stamps = stamps.clone();
        let gate_to_cutoff_ms = cfg.line.settings().gate_to_cutoff_ms;
        sim::modbus::DestinationHook(Arc::new(move |taken| {
            stamps.lock().unwrap_or_else(|e| e.into_inner()).taken(taken, gate_to_cutoff_ms)
        }))
    };
    let plc_config = sim::modbus::SimPlcConfig { speed: 1, on_destination: Some(on_destination), ..Default::default() };
    let (plc, mut devices) = match (c.plc.transport, c.plc.listen) {
        (Transport::Tcp, Some(addr)) => sim::modbus::SimPlc::start_on(addr, world, &map, plc_config).await?,
        _ => {
            let unit = u8::try_from(cfg.line.plc.unit_id).unwrap_or(1);
            sim::modbus::SimPlc::start_rtu(world, &map, plc_config, unit).await?
        }
    };
    // Closed until the platform's lists are in: a parcel before its list would only be held.
    plc.close_infeed(true);
    match plc.endpoint() {
        sim::modbus::Endpoint::Tcp(addr) => println!("plc: modbus tcp {addr}"),
        sim::modbus::Endpoint::Rtu(path) => {
            if let Some(link) = &c.plc.link {
                symlink(path, link)?;
                println!("plc: modbus rtu {} -> {}", link.display(), path.display());
            } else {
                println!("plc: modbus rtu {}", path.display());
            }
        }
    }

    let profile = cfg.scanner_profile().map_err(|e| DemoError::Geometry(e.to_string()))?;
    let device = SimScannerConfig {
        framing: demo::sim_framing(&profile),
        faults: ScannerFaults { seed: c.seed, ..ScannerFaults::default() },
        heartbeat_every: None,
    };
    let scanner = match &c.scanner {
        ScannerServe::Pty { link } => {
            let s = SimScanner::pty(device)?;
            let path = s.slave_path().map(Path::to_path_buf).unwrap_or_default();
            match link {
                Some(link) => {
                    symlink(&path, link)?;
                    println!("scanner: serial {} -> {}", link.display(), path.display());
                }
                None => println!("scanner: serial {}", path.display()),
            }
            s
        }
        ScannerServe::Tcp { listen } => {
            let s = SimScanner::tcp_listen_on(device, *listen).await?;
            println!("scanner: tcp {listen}");
            s
        }
    };

    let mut station = match &c.xray {
        Some(x) => Some(Station::open(x, cfg, c.seed).await?),
        None => None,
    };

    // The platform: every list, paced on the daemon's acknowledgements; resent until the
    // daemon (which may start after this) has them all.
    let topics = sortline::mqtt::Topics::new(&cfg.line.site.site_id, &cfg.line.site.line_id);
    let pacing = Pacing {
        ack_timeout: Duration::from_secs(2),
        ack_timeout_max: Duration::from_secs(10),
        limit: Duration::from_secs(3600),
        ..Pacing::default()
    };
    println!("platform: {} lists on {}", lists.len(), topics.platform_manifests());
    let broker = c.platform.broker.to_string();
    let platform =
        demo::platform::publish(&broker, topics.platform_manifests(), topics.platform_acks(), lists, &pacing);
    tokio::pin!(platform);
    tokio::pin!(stop);
    let mut stopped = false;
    let mut lists_in = false;
    let mut inducting = false;
    // The first and last scans' times and their count, for the rate achieved.
    let (mut first_scan_us, mut last_scan_us, mut scans) = (0u64, 0u64, 0u64);
    loop {
        tokio::select! {
            r = &mut platform, if !lists_in => {
                let report = r?;
                tracing::info!(?report, "the daemon acknowledged every list: the infeed opens");
                println!("platform: every list acknowledged; inducting {} parcels at {} an hour", c.parcels, c.per_hour);
                lists_in = true;
                if !stopped {
                    plc.close_infeed(false);
                    inducting = true;
                }
            }
            Some((at_ms, event)) = devices.recv() => {
                let now = clock.us();
                let tracking = match &event {
                    sim::SimEvent::Scan { trigger, .. } => scanner.send(&event).then_some(*trigger),
                    sim::SimEvent::XrayImaged { image_seq, items, concealed } => match station.as_mut() {
                        Some(s) => {
                            s.image(*image_seq, items, *concealed).await?;
                            Some(*image_seq)
                        }
                        None => None,
                    },
                    // Verdicts, transfers and bench results: none is scheduled without officers.
                    _ => None,
                };
                // In the simulator a parcel's trigger count and image number are its tracking id.
                if matches!(event, sim::SimEvent::Scan { .. }) {
                    first_scan_us = if scans == 0 { now } else { first_scan_us };
                    last_scan_us = now;
                    scans += 1;
                }
                if let Some(t) = tracking {
                    stamps.lock().unwrap_or_else(|e| e.into_inner()).last_input_ms.insert(t, at_ms);
                }
            }
            () = &mut stop, if !stopped => {
                println!("stop: the infeed closes; waiting for the belt to empty");
                plc.close_infeed(true);
                stopped = true;
                if !lists_in {
                    break;
                }
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let report = plc.report();
        if plc.finished() || (stopped && inducting && report.in_flight == 0) {
            break;
        }
    }
    // The last confirmations reach the daemon, and its record, before the referee reads it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = plc.report();
    let unaccounted = match daemon_data {
        Some(dir) => Some(demo::unaccounted(&dir.join(sortline::audit::DB_FILE), &report)?),
        None => None,
    };
    let stamps = std::mem::take(&mut *stamps.lock().unwrap_or_else(|e| e.into_inner()));
    let seconds = clock.us() as f64 / 1e6;
    Ok(LineSummary {
        parcels: report.parcels,
        inducted: u32::try_from(scans).unwrap_or(u32::MAX),
        lanes: report.lanes,
        unsafe_releases: report.unsafe_releases,
        wrong_lane: report.wrong_lane,
        late_destinations: report.late_destinations,
        no_destination: report.no_destination,
        missed_diverts: report.missed_diverts,
        unaccounted,
        per_hour: match last_scan_us.saturating_sub(first_scan_us) {
            0 => 0.0,
            span => (scans - 1) as f64 * 3.6e9 / span as f64,
        },
        due_to_destination_ms: Latency::of(stamps.due_ms),
        early_destinations: stamps.early,
        latch_margin_ms: Latency::of(stamps.margin_ms),
        seconds,
    })
}

/// The X-ray station's wire: files into a folder, or frames over TCP.
enum Station {
    Folder(SimStation),
    Stream { synth: sim::xray::synth::Synth, writer: sim::xray::wire::StreamWriter, rng: rand_chacha::ChaCha8Rng },
}

impl Station {
    async fn open(x: &XrayServe, cfg: &Loaded, seed: u64) -> Result<Station, LineError> {
        use rand::SeedableRng;
        // The detector at the daemon's calibrated pitch, over the same 640 × 480 mm field.
        let xray = cfg.line.xray.clone().unwrap_or_default();
        let calibration = sortline::xray::profile::Calibration::load(&cfg.base_dir.join(&xray.calibration))
            .map_err(|e| DemoError::Sim { what: "the X-ray calibration", detail: e.to_string() })?;
        let base = sim::xray::synth::SynthConfig::default();
        let pixel_mm = calibration.pixel_mm;
        let detector = sim::xray::synth::SynthConfig {
            width: (base.width as f32 * base.pixel_mm / pixel_mm).round() as u32,
            height: (base.height as f32 * base.pixel_mm / pixel_mm).round() as u32,
            pixel_mm,
            dual_energy: xray.energy == sortline::xray::config::EnergyMode::Dual,
            ..base
        };
        if let Some(folder) = &x.folder {
            std::fs::create_dir_all(folder)?;
            println!("xray: files into {}", folder.display());
            let into = sortline::xray::config::XrayConfig { folder: Some(folder.clone()), ..xray };
            return Ok(Station::Folder(SimStation::new(&into, seed, detector)?));
        }
        let addr = x.connect.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let synth = sim::xray::synth::Synth::new(detector)
            .map_err(|e| DemoError::Sim { what: "an X-ray detector", detail: e.to_string() })?;
        println!("xray: stream to {addr}");
        let writer = sim::xray::wire::StreamWriter::connect(addr, 16, Default::default()).await?;
        Ok(Station::Stream { synth, writer, rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x58_52_41_59) })
    }

    async fn image(
        &mut self,
        seq: u32,
        items: &[sortline::manifest::DeclaredItem],
        concealed: Option<sim::xray::synth::Concealed>,
    ) -> Result<(), LineError> {
        match self {
            Station::Folder(s) => Ok(s.image(seq, items, concealed).await?),
            Station::Stream { synth, writer, rng } => {
                let made = synth.image(seq, items, concealed, rng);
                writer.send(&made.image, None).await?;
                Ok(())
            }
        }
    }
}

/// Prints the figures as one table.
pub fn print(s: &LineSummary, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    let (d, m) = (&s.due_to_destination_ms, &s.latch_margin_ms);
    writeln!(
        w,
        "referee: {} of {} parcels inducted in {:.1} s ({:.0} an hour)",
        s.inducted, s.parcels, s.seconds, s.per_hour
    )?;
    writeln!(w, "  lanes: release {}  inspection {}  hold {}", s.lanes.release, s.lanes.inspection, s.lanes.hold)?;
    writeln!(
        w,
        "  unsafe releases {}  wrong lane {}  late destinations {}  no destination {}  missed diverts {}",
        s.unsafe_releases, s.wrong_lane, s.late_destinations, s.no_destination, s.missed_diverts
    )?;
    match s.unaccounted {
        Some(n) => writeln!(w, "  unaccounted by the record {n}")?,
        None => writeln!(w, "  unaccounted: not checked (give --data, the daemon's data directory)")?,
    }
    writeln!(
        w,
        "  due to destination: {} destinations (and {} final holds before the cut-off), p50 {} ms, p99 {} ms, max {} ms",
        d.destinations, s.early_destinations, d.p50, d.p99, d.max
    )?;
    writeln!(w, "  latch margin: min {} ms, p50 {} ms", m.min, m.p50)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(extra: &str) -> Result<LineSimConfig, LineError> {
        let dir = tempfile::tempdir().unwrap();
        let shipped = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("line/sim.toml")).unwrap();
        let path = dir.path().join("sim.toml");
        std::fs::write(&path, format!("{shipped}\n{extra}")).unwrap();
        LineSimConfig::load(&path)
    }

    #[test]
    fn the_shipped_file_loads_and_the_parcel_shape_is_optional() {
        let c = load("").unwrap();
        assert!(c.parcel.length_mm.is_none() && c.parcel.min_gap_mm.is_none() && c.parcel.debounce_ms.is_none());
        let c = load("[parcel]\nlength_mm = [80, 160]\nmin_gap_mm = 60\ndebounce_ms = 8\n").unwrap();
        assert_eq!(
            (c.parcel.length_mm, c.parcel.min_gap_mm, c.parcel.debounce_ms),
            (Some([80, 160]), Some(60), Some(8))
        );
    }

    #[test]
    fn a_parcel_shape_the_simulated_line_cannot_have_is_refused_before_it_runs() {
        for bad in ["length_mm = [0, 100]", "length_mm = [200, 100]", "debounce_ms = 5", "colour = \"red\""] {
            let e = load(&format!("[parcel]\n{bad}\n")).map(|_| ()).unwrap_err();
            assert!(matches!(e, LineError::Config { .. }), "{bad}: {e}");
        }
    }
}

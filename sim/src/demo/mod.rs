//! `sortline demo`: the line's core against the built-in simulator, with every record written
//! to the real audit chain, two ways:
//! - [`run`] (`--plc in-process`): core and world stepped together in virtual time;
//!   deterministic, the fastest.
//! - [`run_modbus`] (`--plc modbus`): the core in the daemon's shape ([`sortline::daemon`]), the
//!   real PLC driver, the simulated PLC over Modbus TCP on 127.0.0.1 (port chosen at run time);
//!   `--plc rtu`: the same over Modbus RTU, the driver opening a pseudo-terminal's slave side as
//!   its serial port ([`ModbusOptions::transport`]).
//!   Line time is in lockstep with the host's polls: the simulated PLC advances
//!   [`ModbusOptions::quantum_ms`] of line time per host poll cycle, and the driver starts a poll
//!   only once the core has handled what the previous one reported ([`sortline::plc::driver::Pace`]).
//!   Real time × speed could not do it: any host hiccup (a WAL checkpoint, the first commit of
//!   2,000 manifests) of a few ms became seconds of belt and late destinations. The core's clock
//!   is the simulator's line clock; lanes can differ by a few parcels from the in-process run
//!   (events reach the core one poll late), never the failure counts.
//!
//! The simulator is the referee: the summary's lane counts and failure
//! counts come from where parcels physically went, not from the core's own
//! claims; `unaccounted` comes from reading the audit chain back.

use crate as sim;
use serde::Serialize;
use sortline::audit::{self, AuditLog, GroupCommit, NewEntry, Signer};
use sortline::clock;
use sortline::config::{Loaded, Transport};
use sortline::console;
use sortline::core::*;
use sortline::daemon;
use sortline::manifest::{self, Declaration, ManifestStore};
use sortline::mqtt::wiring::{Figures, Prepared};
use sortline::plc::driver::{DriverStats, PlcLink};
use sortline::recorder;
use sortline::scanner::link::ScannerLinkConfig;
use sortline::scanner::reader::{ScannerOutput, ScannerReader, ScannerStats};
use sortline::scanner::{FrameProfile, TriggerField};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

pub mod client;
mod officers;
pub mod platform;
mod station;
pub use platform::{Pacing, PlatformReport};
pub use station::{SimStation, XraySummary};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("audit record: {0}")]
    Audit(#[from] audit::AuditError),
    #[error("writing the live view: {0}")]
    Output(#[from] std::io::Error),
    #[error("the simulator produced {what}: {detail}")]
    Sim { what: &'static str, detail: String },
    #[error("daemon: {0}")]
    Daemon(#[from] daemon::DaemonError),
    #[error("configuration does not fit the simulator: {0}")]
    Geometry(String),
    #[error("scanner: {0}")]
    Scanner(#[from] sortline::scanner::link::ScannerLinkError),
    #[error("{0}")]
    Manifests(#[from] manifest::StoreError),
}

pub struct DemoOptions {
    pub parcels: u32,
    pub seed: u64,
    pub data_dir: PathBuf,
    /// Turn on the physical faults that end in a wrong (but never unsafe) lane.
    pub faults: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Lanes {
    pub release: u64,
    pub inspection: u64,
    pub hold: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScannerSummary {
    pub no_reads: u32,
    pub misreads: u32,
    pub ambiguous: u32,
    /// The host's scanner reader (frames, link, read rates); absent when scans skip the wire.
    pub reader: Option<ScannerStats>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AuditSummary {
    pub entries: u64,
    pub checkpoints: u64,
    pub verified: bool,
    pub head: String,
    /// Entries after the last signed checkpoint (0 after a clean stop).
    pub unsigned: u64,
}

/// The demo's JSON summary. Field names are a contract: add, don't rename.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Physical parcels inducted.
    pub parcels: u32,
    /// Where parcels physically left the line (the simulator's count).
    pub lanes: Lanes,
    /// Physically released without a release destination, or against ground truth.
    pub unsafe_releases: u32,
    /// Physical lane differs from the lane decided.
    pub wrong_lane: u32,
    /// Parcels without a complete record in the audit chain.
    pub unaccounted: u32,
    /// Label truth from the simulator.
    pub scanner: ScannerSummary,
    /// Released parcels carrying undeclared goods: screening misses, reported
    /// apart from `unsafe_releases` (which covers what the line could know).
    pub undeclared_released: u32,
    pub seed: u64,
    pub faults: bool,
    pub data_dir: PathBuf,
    /// What the core decided (its own claim, beside the referee's `lanes`).
    pub decided: Lanes,
    pub stats: LineStats,
    pub late_destinations: u32,
    pub no_destination: u32,
    pub injected: Injected,
    pub audit: AuditSummary,
    /// The PLC link's counters and latencies (poll cycle, destination to PLC); absent in process.
    pub plc: Option<DriverStats>,
    pub virtual_ms: u64,
    pub wall_ms: u64,
    /// The MQTT publisher's counters; absent when the demo ran without MQTT.
    pub mqtt: Option<MqttSummary>,
    /// The X-ray pre-screen scored by the simulated station; absent in process (no station).
    pub xray: Option<XraySummary>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MqttSummary {
    pub broker: String,
    pub prefix: String,
    pub stats: sortline::mqtt::MqttStats,
    /// The simulated platform's side of the list intake (absent when the lists came from the
    /// store): lists, messages, resends, acknowledgements.
    pub platform: Option<PlatformReport>,
}

/// Which broker the demo publishes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MqttBroker {
    /// rumqttd in process on 127.0.0.1, port chosen at run time.
    Embedded,
    /// `host:port`.
    External(String),
}

#[derive(Clone, Debug, Serialize)]
pub struct Injected {
    pub missed_diverts: u32,
    pub slips: u32,
    pub bounces: u32,
    pub merged: u32,
}

/// The configured line as the simulator's conveyor.
pub fn geometry(cfg: &Loaded) -> Result<sim::Geometry, DemoError> {
    let g = &cfg.line.geometry;
    let lanes = cfg.line.lanes;
    let mm = |v: i64| u32::try_from(v).map_err(|_| DemoError::Geometry(format!("{v} mm")));
    Ok(sim::Geometry {
        belt_speed_mm_s: mm(g.belt_speed_mm_s)?,
        gate_mm: mm(g.gate_mm)?,
        xray_mm: mm(g.xray_mm)?,
        diverters: g
            .diverters
            .iter()
            .map(|d| Ok(sim::Diverter { lane_id: lanes.id(d.lane), role: d.lane, position_mm: mm(d.position_mm)? }))
            .collect::<Result<_, DemoError>>()?,
        end_mm: mm(g.end_mm)?,
        end_lane_id: lanes.hold,
        latch_margin_mm: mm(g.latch_margin_mm)?,
    })
}

fn officer(name: &str) -> Result<OfficerId, DemoError> {
    OfficerId::new(name).map_err(|e| DemoError::Sim { what: "a bad officer id", detail: e.to_string() })
}

/// What the simulated officers have in front of them: the reviews asked of them and the parcels
/// on the live line, by tracking id (the simulator's officers name parcels by it). Their
/// verdicts and transfers go in naming the parcel, the review and the image whole, as a real
/// screen's do. A review stays on the screen after its parcel left (an officer may still answer
/// it, late: the core refuses that on record), up to [`OfficerScreens::KEPT`] of them.
#[derive(Default)]
pub struct OfficerScreens {
    reviews: HashMap<u32, ReviewRequest>,
    /// Reviews in the order asked, for the bound.
    asked: std::collections::VecDeque<(ReviewId, u32)>,
    on_line: HashMap<u32, ParcelId>,
}

impl OfficerScreens {
    pub const KEPT: usize = 1024;

    pub fn review(&mut self, request: &ReviewRequest) {
        let t = request.parcel.tracking.0;
        self.reviews.insert(t, request.clone());
        self.asked.push_back((request.review, t));
        while self.asked.len() > Self::KEPT {
            if let Some((old, t)) = self.asked.pop_front() {
                if self.reviews.get(&t).is_some_and(|r| r.review == old) {
                    self.reviews.remove(&t);
                }
            }
        }
    }

    pub fn identified(&mut self, parcel: ParcelId) {
        self.on_line.insert(parcel.tracking.0, parcel);
    }

    pub fn done(&mut self, parcel: ParcelId) {
        if self.on_line.get(&parcel.tracking.0) == Some(&parcel) {
            self.on_line.remove(&parcel.tracking.0);
        }
    }

    fn verdict(&self, tracking: u32, officer: OfficerId, verdict: Verdict) -> Option<Input> {
        let r = self.reviews.get(&tracking)?;
        Some(Input::Verdict {
            parcel: r.parcel,
            review: r.review,
            image_sha256: r.image_sha256.clone(),
            officer,
            verdict,
        })
    }

    fn transfer(&self, tracking: u32, officer: OfficerId) -> Option<Input> {
        Some(Input::ManualTransfer { parcel: *self.on_line.get(&tracking)?, officer })
    }
}

/// The core input a simulator event is; `None` for what the host does not see (the X-ray
/// tunnel's view, which the simulated station turns into an image), and for an officer's
/// answer about a parcel no screen shows (gone already).
pub fn input(event: sim::SimEvent, screens: &OfficerScreens) -> Result<Option<Input>, DemoError> {
    use sim::SimEvent as E;
    Ok(Some(match event {
        E::XrayImaged { .. } => return Ok(None),
        E::Gate { tracking, trigger, length_mm } => Input::Gate {
            tracking: TrackingId(tracking),
            trigger: TriggerCount(trigger),
            length_mm: Some(length_mm),
            at: None,
        },
        E::Scan { trigger, codes } => Input::Scan { trigger: Some(TriggerCount(trigger)), codes },
        E::XrayEntered { tracking, image_seq } => Input::XrayEntered { tracking: TrackingId(tracking), image_seq },
        E::Weighed { tracking, weight_g } => Input::Weighed { tracking: TrackingId(tracking), weight_g },
        E::Verdict { tracking, officer: o, verdict } => match screens.verdict(tracking, officer(&o)?, verdict) {
            Some(input) => input,
            None => return Ok(None),
        },
        E::ManualTransfer { tracking, officer: o } => match screens.transfer(tracking, officer(&o)?) {
            Some(input) => input,
            None => return Ok(None),
        },
        E::Divert { tracking, lane_id } => Input::Divert { tracking: TrackingId(tracking), lane_id },
        E::Lost { tracking } => Input::Lost { tracking: TrackingId(tracking) },
        E::ForcedHold { tracking, why } => {
            // In process there is no register map on the wire: the shipped map names the code.
            let codes = &sortline_plc_contract::shipped_map().codes.forced_hold;
            let code = codes.get(why.code_name()).map_or(0, |&c| u32::from(c));
            Input::PlcHold { tracking: TrackingId(tracking), cause: PlcHoldCause::Forced { code } }
        }
        E::InspectionResult { waybill, officer: o, discrepancy } => Input::InspectionResult {
            waybill: Waybill::parse(&waybill).map_err(|e| DemoError::Sim {
                what: "an inspection result with a bad waybill",
                detail: format!("{waybill}: {e}"),
            })?,
            officer: officer(&o)?,
            discrepancy,
            returned: false,
            note: None,
        },
    }))
}

/// The core, the world and the record, stepped together in virtual time.
struct Harness<'w> {
    line: Line,
    world: sim::World,
    audit: AuditLog,
    /// Wall-clock time of virtual time zero, for the records' wall column.
    epoch_wall_ms: i64,
    pending: Vec<NewEntry>,
    /// Parcels that left the line, shown after the commit that makes their story durable.
    done: Vec<ParcelReport>,
    screens: OfficerScreens,
    live: &'w mut dyn Write,
}

impl Harness<'_> {
    fn handle(&mut self, input: Input, now: Millis) -> Result<(), DemoError> {
        let mut out = Vec::new();
        self.line.handle(input, now, &mut out);
        self.route(out, now)
    }

    /// Applies the core's outputs. Records reach the disk before any
    /// destination they justify goes to the PLC.
    fn route(&mut self, out: Vec<Output>, now: Millis) -> Result<(), DemoError> {
        let wall = self.epoch_wall_ms + now.0 as i64;
        let mut destinations = Vec::new();
        for o in out {
            match o {
                Output::Record(r) => {
                    if let Record::Identified { parcel, .. } = &r {
                        self.screens.identified(*parcel);
                    }
                    self.pending.push(recorder::entry(&r, now, wall))
                }
                Output::Alarm(a) => {
                    tracing::debug!(code = a.code, tracking = ?a.tracking, "{}", a.message);
                    self.pending.push(recorder::alarm_entry(&a, now, wall));
                }
                Output::SetDestination { parcel, lane_id, .. } => destinations.push((parcel.tracking, lane_id)),
                Output::ReviewRequested(r) => {
                    self.screens.review(&r);
                    self.world.request_review(now.0, r.parcel.tracking.0)
                }
                // In process the line has no X-ray station: no image is matched, none screened.
                Output::ScreenImage { .. } | Output::ReviewClosed { .. } | Output::Provisional(_) => {}
                // Shown once its story (destination written, divert, completed) is durable.
                Output::ParcelDone(report) => {
                    self.screens.done(report.parcel);
                    self.done.push(report)
                }
            }
        }
        if destinations.is_empty() {
            return Ok(());
        }
        self.commit()?;
        for (tracking, lane_id) in destinations {
            self.world.set_destination(now.0, tracking.0, lane_id);
            self.handle(Input::DestinationWritten { tracking, lane_id }, now)?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), DemoError> {
        if !self.pending.is_empty() {
            self.audit.append(&self.pending)?;
            self.pending.clear();
        }
        for report in std::mem::take(&mut self.done) {
            self.show(&report)?;
        }
        Ok(())
    }

    fn show(&mut self, p: &ParcelReport) -> Result<(), DemoError> {
        show(self.live, p)
    }
}

/// One line of the live view.
pub fn show(live: &mut dyn Write, p: &ParcelReport) -> Result<(), DemoError> {
    {
        let lane = |l: Option<Lane>| l.map_or("-", Lane::as_str);
        let waybill = p.waybill.map_or_else(|| "(unidentified)".to_string(), |w| w.to_string());
        let channel = p.channel.map_or("-", Channel::as_str);
        // In shadow mode the PLC was told hold, whatever was decided.
        let sent = if p.shadow { Some(Lane::Hold) } else { p.decided };
        let fate = if p.lost {
            "LOST".to_string()
        } else if p.confirmed != sent {
            format!("MISSORT->{}", lane(p.confirmed))
        } else if p.confirmed != p.decided {
            "SHADOW".to_string()
        } else {
            String::new()
        };
        writeln!(
            live,
            "{:>8}  {:<18} {:<5}  {:<10} {:<9} {}",
            p.parcel.tracking.to_string(),
            waybill,
            channel,
            lane(p.decided),
            fate,
            p.decided.map(|lane| recorder::reasons_text(lane, &p.reasons)).unwrap_or_default()
        )?;
        Ok(())
    }
}

/// Runs the demo; the live view goes to `live`.
pub fn run(cfg: &Loaded, opts: &DemoOptions, live: &mut dyn Write) -> Result<Summary, DemoError> {
    let stopwatch = clock::Stopwatch::start();
    std::fs::create_dir_all(&opts.data_dir)?;
    let db = opts.data_dir.join(audit::DB_FILE);
    let signer = Signer::load_or_init(&opts.data_dir.join(audit::KEY_FILE))?;
    // In process there is no X-ray station: nothing is imaged, and no parcel waits for it.
    let mut scenario = sim::Scenario { xray_images: false, ..sim::Scenario::demo(opts.parcels, opts.seed) };
    if opts.faults {
        scenario = scenario.with_faults();
    }
    let world = sim::World::new(scenario, geometry(cfg)?);
    let policy = cfg.line.policy(SiteSecret::from_demo_seed(opts.seed), cfg.rules.clone());
    let mut h = Harness {
        line: Line::new(cfg.line.settings(), policy),
        world,
        audit: recorder::open_audit(&db, signer, &cfg.line.audit)?,
        epoch_wall_ms: clock::wall_ms(),
        pending: Vec::new(),
        done: Vec::new(),
        screens: OfficerScreens::default(),
        live,
    };
    // Serials go on from the chain's length, as in the daemon (see `Line::set_serial_base`).
    h.line.set_serial_base(h.audit.head().0);
    let start = start_entry(cfg, opts, &h.line, h.epoch_wall_ms, None);
    h.pending.push(start);
    for i in initial_inputs(&h.world, &opts.data_dir, true)? {
        h.handle(i, Millis(0))?;
    }
    writeln!(h.live, "{:>8}  {:<18} {:<5}  {:<10} {:<9} reasons", "tracking", "waybill", "chan", "lane", "")?;

    let mut events = Vec::new();
    let mut now = 0;
    loop {
        let next = match (h.world.next_event_time(), h.line.next_timeout().map(|t| t.0)) {
            (None, None) => break,
            (a, b) => a.into_iter().chain(b).min().unwrap_or(now),
        };
        now = next.max(now);
        events.clear();
        h.world.advance(now, &mut events);
        for (at, event) in events.drain(..) {
            if let Some(input) = input(event, &h.screens)? {
                h.handle(input, Millis(at))?;
            }
        }
        if h.line.next_timeout().is_some_and(|t| t.0 <= now) {
            h.handle(Input::Tick, Millis(now))?;
        }
    }
    let wall = h.epoch_wall_ms + now as i64;
    h.pending.push(recorder::stop_entry(h.line.stats(), None, wall, now));
    h.commit()?;
    // A clean stop leaves nothing unsigned.
    h.audit.checkpoint_now(wall)?;

    let report = h.world.report();
    let stats = h.line.stats().clone();
    drop(h);
    let host = HostFigures { stats, plc: None, reader: None, virtual_ms: now, wall_ms: stopwatch.elapsed_ms() };
    summary(opts, &db, &report, host)
}

/// The chain's opening entry: what replay needs to rebuild the core (`mode` "demo" means the
/// secret comes from the seed). `plc` names the PLC path when it is not in-process.
pub fn start_entry(cfg: &Loaded, opts: &DemoOptions, line: &Line, wall_ms: i64, plc: Option<&str>) -> NewEntry {
    let mut entry = recorder::run_start_entry(cfg, line, "demo", wall_ms);
    if let Some(o) = entry.payload.as_object_mut() {
        o.insert("seed".into(), opts.seed.into());
        o.insert("parcels".into(), opts.parcels.into());
        o.insert("faults".into(), opts.faults.into());
        if let Some(plc) = plc {
            o.insert("plc".into(), plc.into());
        }
    }
    entry
}

/// The risk officer's standing target the demo keeps in the store, so it shows one at work.
const DEMO_TARGET: &str = "MT-DEMO-PERFUME";

/// What the core starts with, as the daemon would: the platform's lists (they arrive before the
/// parcels do), unless they come through the MQTT intake (`lists_in_store` false), are written
/// to `data_dir`'s manifest store, with the demo's standing target, then every current manifest
/// and standing target is read back from the store. They go in as inputs (not preloaded) so
/// that the audit chain holds them and replay reproduces the run.
pub fn initial_inputs(world: &sim::World, data_dir: &Path, lists_in_store: bool) -> Result<Vec<Input>, DemoError> {
    let mut store = ManifestStore::open(&data_dir.join(manifest::DB_FILE))?;
    if lists_in_store {
        let declarations = declarations(world)?;
        for (d, outcome) in declarations.iter().zip(store.store_batch(&declarations, clock::wall_ms())?) {
            if let manifest::Stored::Refused { held, why } = outcome {
                tracing::warn!(waybill = %d.waybill, version = d.version, held, why, "simulated manifest refused by the store");
            }
        }
    }
    if store.target(DEMO_TARGET)?.is_none() {
        let author = officer("risk-01")?;
        store.add_target(&manifest::new_target(
            DEMO_TARGET.into(),
            TargetCriterion::HsPrefix("3303".into()),
            &author,
            "intelligence: undeclared alcohol in perfume bottles",
            clock::wall_ms(),
            None,
        ))?;
    }
    Ok(store.core_inputs(clock::wall_ms())?)
}

/// The simulated platform's lists as it sends them, each checked as the store would.
pub fn declarations(world: &sim::World) -> Result<Vec<Declaration>, DemoError> {
    let declarations = world.manifests().to_vec();
    for d in &declarations {
        d.validate(&Carriers::default()).map_err(|e| DemoError::Sim {
            what: "a manifest the store refuses",
            detail: format!("{}: {e}", d.waybill),
        })?;
    }
    Ok(declarations)
}

/// What the host says of a run, beside the referee's report: the core's counters and, over
/// real wires, the PLC link's and the scanner reader's.
pub struct HostFigures {
    pub stats: LineStats,
    pub plc: Option<DriverStats>,
    pub reader: Option<ScannerStats>,
    /// Line time at the end, and real time taken.
    pub virtual_ms: u64,
    pub wall_ms: u64,
}

/// The summary: lanes and failures from the referee's `report`, `unaccounted` from reading
/// the chain in `db` back, the host's own claims beside them.
pub fn summary(opts: &DemoOptions, db: &Path, report: &sim::Report, host: HostFigures) -> Result<Summary, DemoError> {
    let HostFigures { stats, plc, reader, virtual_ms, wall_ms } = host;
    let verified = audit::verify(db, None)?;
    let unaccounted = unaccounted(db, report)?;
    Ok(Summary {
        parcels: report.parcels,
        lanes: Lanes {
            release: report.lanes.release.into(),
            inspection: report.lanes.inspection.into(),
            hold: report.lanes.hold.into(),
        },
        unsafe_releases: report.unsafe_releases,
        wrong_lane: report.wrong_lane,
        unaccounted,
        scanner: ScannerSummary {
            reader,
            no_reads: report.scanner.no_reads,
            misreads: report.scanner.misreads,
            ambiguous: report.scanner.ambiguous,
        },
        undeclared_released: report.undeclared_released,
        seed: opts.seed,
        faults: opts.faults,
        data_dir: opts.data_dir.clone(),
        decided: Lanes {
            release: stats.decided_release,
            inspection: stats.decided_inspection,
            hold: stats.decided_hold,
        },
        stats,
        late_destinations: report.late_destinations,
        no_destination: report.no_destination,
        injected: Injected {
            missed_diverts: report.missed_diverts,
            slips: report.slips,
            bounces: report.bounces,
            merged: report.merged,
        },
        audit: AuditSummary {
            entries: verified.entries,
            checkpoints: verified.checkpoints,
            verified: verified.first_break.is_none(),
            head: hex::encode(verified.head),
            unsigned: verified.unsigned,
        },
        plc,
        virtual_ms,
        wall_ms,
        mqtt: None,
        xray: None,
    })
}

/// Parcels the referee saw whose story the chain does not tell in full:
/// gate, decision, destination written, and how it left the line.
pub fn unaccounted(db: &Path, report: &sim::Report) -> Result<u32, DemoError> {
    #[derive(Default)]
    struct Story {
        gate: bool,
        decision: bool,
        written: bool,
        completed: bool,
    }
    let mut stories: HashMap<u32, Story> = HashMap::new();
    audit::entries(db, |e| {
        if let Some(t) = e.tracking {
            let s = stories.entry(t).or_default();
            match e.kind.as_str() {
                "gate" => s.gate = true,
                "decision" => s.decision = true,
                "destination_written" => s.written = true,
                "completed" => s.completed = true,
                _ => {}
            }
        }
        Ok(())
    })?;
    let complete = |t: &u32| stories.get(t).is_some_and(|s| s.gate && s.decision && s.written && s.completed);
    Ok(report.outcomes.iter().filter(|o| !o.tracking.as_ref().is_some_and(complete)).count() as u32)
}

/// The closing table.
pub fn print_table(s: &Summary, w: &mut dyn Write) -> std::io::Result<()> {
    writeln!(w)?;
    writeln!(w, "lane         physical   decided")?;
    for (name, physical, decided) in [
        ("release", s.lanes.release, s.decided.release),
        ("inspection", s.lanes.inspection, s.decided.inspection),
        ("hold", s.lanes.hold, s.decided.hold),
    ] {
        writeln!(w, "{name:<12} {physical:>8}  {decided:>8}")?;
    }
    writeln!(
        w,
        "parcels {}  unsafe releases {}  wrong lane {}  unaccounted {}",
        s.parcels, s.unsafe_releases, s.wrong_lane, s.unaccounted
    )?;
    writeln!(
        w,
        "no-reads {}  misreads {}  ambiguous {}  reviews {}  late reviews {}  missorts {}  lost {}  held by PLC {}",
        s.scanner.no_reads,
        s.scanner.misreads,
        s.scanner.ambiguous,
        s.stats.reviews,
        s.stats.late,
        s.stats.missorts,
        s.stats.lost,
        s.stats.held_by_plc
    )?;
    if let Some(x) = &s.xray {
        writeln!(
            w,
            "x-ray: {} imaged, {} hiding undeclared goods, {} of them flagged; {} clean parcels flagged; {} unscreened",
            x.reviewed, x.injected, x.detected, x.false_flags, x.missing_images
        )?;
    }
    if let Some(plc) = &s.plc {
        writeln!(
            w,
            "PLC link: {} polls, cycle p50 {:.1} ms p99 {:.1} ms; destination to PLC p99 {:.1} ms; {} reconnects",
            plc.polls,
            plc.poll_cycle.quantile_us(0.5) as f64 / 1000.0,
            plc.poll_cycle.quantile_us(0.99) as f64 / 1000.0,
            plc.destination_latency.quantile_us(0.99) as f64 / 1000.0,
            plc.connects.saturating_sub(1)
        )?;
    }
    writeln!(
        w,
        "audit chain: {} entries, {} signed checkpoints, {} unsigned, {}",
        s.audit.entries,
        s.audit.checkpoints,
        s.audit.unsigned,
        if s.audit.verified { "verified" } else { "BROKEN" }
    )?;
    writeln!(
        w,
        "simulated {:.1} min of line time in {:.1} s",
        s.virtual_ms as f64 / 60_000.0,
        s.wall_ms as f64 / 1000.0
    )
}

/// How the simulated scanner reaches the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScannerWire {
    /// A serial port: the daemon opens a pseudo-terminal's slave side with tokio-serial.
    Pty,
    /// TCP on loopback: the scanner listens, the daemon connects.
    Tcp,
    /// No wire: the simulator's scans go straight into the core.
    Direct,
}

/// Line ms the simulated line may run past the core's next deadline before it waits for the
/// core: well inside the write budget between the review cut-off and the latch point.
const LOCKSTEP_SLACK_MS: u64 = 300;

/// How the demo runs over Modbus.
#[derive(Clone, Debug)]
pub struct ModbusOptions {
    /// TCP on loopback, or RTU over a pseudo-terminal.
    pub transport: Transport,
    pub scanner: ScannerWire,
    /// Line ms the simulated PLC advances per host poll cycle (lockstep, see `sim::modbus`).
    pub quantum_ms: u64,
    /// The driver's poll period for the demo (real time); `[plc]`'s other keys are kept.
    pub poll_period: Duration,
    /// Real time the whole run may take; past it the demo fails rather than hangs.
    pub run_limit: Duration,
    /// Publish over MQTT (`[mqtt]`'s settings, its defaults when absent); `None`: no MQTT.
    pub mqtt: Option<MqttBroker>,
    /// Where the officer console listens (port 0: one chosen at run time, printed).
    pub console: std::net::SocketAddr,
    /// The line in real time × this factor, for a person at the console; `None`: lockstep.
    pub speed: Option<u64>,
    /// The simulated officers answer reviews, transfer parcels and enter inspection results
    /// (through the console's API); off, only people at the console do.
    pub sim_officers: bool,
}

impl Default for ModbusOptions {
    fn default() -> Self {
        // 100 line ms per ~1 ms poll: an hour of line time in well under a minute, while a
        // destination decided at the review cut-off still has ~23 polls before the latch point.
        ModbusOptions {
            transport: Transport::Tcp,
            scanner: ScannerWire::Pty,
            quantum_ms: 100,
            poll_period: Duration::from_millis(1),
            run_limit: Duration::from_secs(300),
            mqtt: None,
            console: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            speed: None,
            sim_officers: true,
        }
    }
}

/// Starts the simulated PLC on `transport` and says how the driver reaches it: over RTU, with
/// `[plc]`'s unit id and `[plc.serial]`'s line settings on the pty's slave side.
pub async fn start_plc(
    cfg: &Loaded,
    transport: Transport,
    world: sim::World,
    map: &sortline::plc::RegisterMap,
    config: sim::modbus::SimPlcConfig,
) -> std::io::Result<(sim::modbus::SimPlc, sim::modbus::DeviceEvents, PlcLink)> {
    let started = match transport {
        Transport::Tcp => sim::modbus::SimPlc::start(world, map, config).await?,
        Transport::Rtu => {
            let unit = u8::try_from(cfg.line.plc.unit_id).unwrap_or(1);
            sim::modbus::SimPlc::start_rtu(world, map, config, unit).await?
        }
    };
    let link = match started.0.endpoint() {
        sim::modbus::Endpoint::Tcp(addr) => PlcLink::Tcp(*addr),
        sim::modbus::Endpoint::Rtu(path) => PlcLink::Serial(cfg.line.serial_link(&path.to_string_lossy())),
    };
    tracing::info!(%link, "simulated PLC listening");
    Ok((started.0, started.1, link))
}

/// The simulated scanner on its wire, and the daemon's reader of it.
struct ScannerRig {
    device: Arc<sim::scanner::SimScanner>,
    reader: ScannerReader,
}

/// How the simulated scanner frames its reads: as `profile` says the real one does.
pub fn sim_framing(profile: &FrameProfile) -> sim::scanner::SimFraming {
    sim::scanner::SimFraming {
        start: profile.start.clone().unwrap_or_default().into_bytes(),
        stop: profile.stop.clone().into_bytes(),
        delimiter: profile.delimiter.clone().into_bytes(),
        no_read: profile.no_read.clone(),
        trigger_first: profile.trigger_field == TriggerField::First,
        heartbeat: profile.heartbeat.clone(),
    }
}

/// The scanner `[scanner]` describes, simulated on `wire` and framed by its profile, and the
/// reader the daemon would use, with `[scanner.link]`'s timing and the wire's address; `None`
/// for a direct wire. With `faults`, the wire is noisy too (noise, split and repeated frames).
async fn scanner_rig(
    cfg: &Loaded,
    wire: ScannerWire,
    seed: u64,
    faults: bool,
) -> Result<Option<ScannerRig>, DemoError> {
    use sim::scanner::{ScannerFaults, SimScanner, SimScannerConfig};
    use sortline::scanner::link::{Parity, Transport as Wire};
    let profile = cfg.scanner_profile().map_err(|e| DemoError::Geometry(e.to_string()))?;
    let framing = sim_framing(&profile);
    let faults = match faults {
        true => ScannerFaults { seed, noise: 0.02, noise_max_bytes: 12, split: 0.05, duplicate: 0.01, disconnect: 0.0 },
        false => ScannerFaults { seed, ..ScannerFaults::default() },
    };
    let config = SimScannerConfig { framing, faults, heartbeat_every: None };
    let (device, transport) = match wire {
        ScannerWire::Direct => return Ok(None),
        ScannerWire::Pty => {
            let device = SimScanner::pty(config)?;
            let path = device.slave_path().map(Path::to_path_buf).unwrap_or_default();
            (device, Wire::Serial { path, baud: 115_200, parity: Parity::None, data_bits: 8, stop_bits: 1 })
        }
        ScannerWire::Tcp => {
            let device = SimScanner::tcp_listen(config).await?;
            let addr = device.addr().map(|a| a.to_string()).unwrap_or_default();
            (device, Wire::TcpConnect { addr })
        }
    };
    tracing::info!(?transport, "simulated scanner ready");
    // A lockstep line can be quiet for long stretches of real time: no silence alarm here.
    let link = ScannerLinkConfig { transport, silence_timeout_ms: None, ..cfg.line.scanner.link.clone() };
    let reader = ScannerReader::open(profile, link).await?;
    Ok(Some(ScannerRig { device: Arc::new(device), reader }))
}

/// The simulated line's clock, for the core.
struct SimLineClock(sim::modbus::SimClock);

impl daemon::LineClock for SimLineClock {
    fn now_ms(&self) -> u64 {
        self.0.line_ms()
    }
}

/// Reviews go to the console (beside this screen) and, with simulated officers, to the
/// simulator's officers, who answer through the console; finished parcels go to the live view.
struct DemoScreen {
    /// The simulated line, when its officers are on.
    officers: Option<sim::modbus::SimClock>,
    done: mpsc::Sender<ParcelReport>,
    mqtt: Option<sortline::mqtt::MqttSink>,
}

impl daemon::Screen for DemoScreen {
    fn review_requested(&mut self, request: &ReviewRequest) {
        if let Some(clock) = &self.officers {
            clock.request_review(request.parcel.tracking.0);
        }
    }

    fn parcel_done(&mut self, report: ParcelReport) {
        if let Some(m) = &self.mqtt {
            m.parcel_done(report.clone());
        }
        // The live view gone means the demo is stopping.
        let _ = self.done.blocking_send(report);
    }

    fn alarm(&mut self, alarm: &Alarm) {
        if let Some(m) = &self.mqtt {
            m.alarm(alarm);
        }
    }

    fn inspection_result(&mut self, result: &Input) {
        if let Some(m) = &self.mqtt {
            m.inspection_result(result);
        }
    }
}

/// `[mqtt]` as configured, or its defaults for a demo whose configuration has none.
fn mqtt_config(cfg: &Loaded) -> sortline::config::Mqtt {
    cfg.line.mqtt.clone().unwrap_or(sortline::config::Mqtt {
        broker: None,
        client_id: None,
        username: None,
        password: None,
        keep_alive_s: 30,
        clean_session: false,
        reconnect_backoff_min_ms: 200,
        reconnect_backoff_max_ms: 30_000,
        metrics_every_s: 10,
        sparkplug: None,
        outbox_capacity: 100_000,
        inflight: 32,
        platform_intake: true,
        tls: None,
    })
}

/// Runs the demo with the core in the daemon's shape against the simulated PLC over real
/// Modbus TCP on 127.0.0.1 (port chosen at run time) or Modbus RTU over a pseudo-terminal, in
/// lockstep line time.
pub fn run_modbus(
    cfg: &Loaded,
    opts: &DemoOptions,
    modbus: &ModbusOptions,
    live: &mut dyn Write,
) -> Result<Summary, DemoError> {
    let stopwatch = clock::Stopwatch::start();
    std::fs::create_dir_all(&opts.data_dir)?;
    // The line has an X-ray station here: the simulator images every parcel into the daemon's
    // watched folder, and release waits for each parcel's pre-screen.
    let xray = station::config(cfg, &opts.data_dir)?;
    let screen = station::screen(&xray)?;
    let mut with_station = cfg.clone();
    with_station.line.xray = Some(xray.clone());
    let cfg = &with_station;
    let db = opts.data_dir.join(audit::DB_FILE);
    let signer = Signer::load_or_init(&opts.data_dir.join(audit::KEY_FILE))?;
    let map = cfg.register_map().map_err(|e| DemoError::Geometry(e.to_string()))?;
    let mut scenario = sim::Scenario::demo(opts.parcels, opts.seed);
    if opts.faults {
        scenario = scenario.with_faults();
    }
    if !modbus.sim_officers {
        // Nobody simulated at the screens or the bench: none of their actions is scheduled,
        // and the run ends with the belt.
        scenario.manual_transfer = 0.0;
        scenario.inspection_ms = 0..=0;
    }
    let world = sim::World::new(scenario, geometry(cfg)?);
    // Over MQTT the platform's lists come through the intake; the line waits until they are in.
    let via_intake = modbus.mqtt.is_some() && mqtt_config(cfg).platform_intake;
    let platform_lists = declarations(&world)?;
    let initial = initial_inputs(&world, &opts.data_dir, !via_intake)?;
    let lists_in = Arc::new(std::sync::atomic::AtomicBool::new(!via_intake));
    let mut line =
        Line::new(cfg.line.settings(), cfg.line.policy(SiteSecret::from_demo_seed(opts.seed), cfg.rules.clone()));
    // The broker first: its address and the topics are printed before the first parcel.
    let mqtt = match &modbus.mqtt {
        None => None,
        Some(b) => {
            let broker = match b {
                MqttBroker::Embedded => {
                    sortline::mqtt::broker::Embedded::start().map_err(mqtt_error)?.addr().to_string()
                }
                MqttBroker::External(addr) => addr.clone(),
            };
            let settings =
                mqtt_config(cfg).settings(&broker, &cfg.line.site).map_err(|e| DemoError::Geometry(e.to_string()))?;
            let prepared =
                Prepared::open(settings, &opts.data_dir, cfg.line.settings().carriers).map_err(mqtt_error)?;
            writeln!(std::io::stdout(), "mqtt: broker {broker}, topics under {}", prepared.prefix())?;
            Some((broker, prepared))
        }
    };
    let mut log = recorder::open_audit(&db, signer, &cfg.line.audit)?;
    if let Some((_, p)) = &mqtt {
        let sink = p.sink.clone();
        log.observe_checkpoints(Box::new(move |cp| sink.checkpoint(cp)));
    }
    // As `sortline run` starts: what operators set in an earlier run on this data stands.
    let operator_store = sortline::service::resume(&mut line, &opts.data_dir, &log)?;
    let plc_name = match modbus.transport {
        Transport::Tcp => "modbus",
        Transport::Rtu => "modbus-rtu",
    };
    log.append(&[start_entry(cfg, opts, &line, clock::wall_ms(), Some(plc_name))])?;
    // A short batch delay: a destination waits for its records' commit.
    let audit = GroupCommit::start(log, Duration::from_millis(1), 256);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (report, finished, reader_stats, mqtt, truth) = rt.block_on(async {
        let rig = scanner_rig(cfg, modbus.scanner, opts.seed, opts.faults).await?;
        // Lockstep: the line moves on only once the core has taken in every device event and
        // every scanner byte so far, and is not far past its next deadline.
        let next_due = Arc::new(AtomicU64::new(u64::MAX));
        let devices_handled = Arc::new(AtomicU64::new(0));
        let scans_sent = Arc::new(AtomicU64::new(0));
        let scans_handled = Arc::new(AtomicU64::new(0));
        let (images_written, images_settled) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let gate = {
            let (due, handled, lists_in) = (next_due.clone(), devices_handled.clone(), lists_in.clone());
            let wire = rig.as_ref().map(|r| (r.device.clone(), r.reader.consumed()));
            let (scans_sent, scans_handled) = (scans_sent.clone(), scans_handled.clone());
            let (written, settled) = (images_written.clone(), images_settled.clone());
            sim::modbus::LockstepGate(Arc::new(move |to, sent| {
                // Every image the station wrote has been taken, screened and handed to the core.
                let images_in = settled.load(Ordering::SeqCst) >= written.load(Ordering::SeqCst);
                // Every byte the scanner wrote has been read, and every scan it made is in the core.
                let scans_in = wire.as_ref().is_none_or(|(device, consumed)| {
                    device.settled_bytes().is_some_and(|written| consumed.load(Ordering::SeqCst) >= written)
                }) && scans_handled.load(Ordering::SeqCst) >= scans_sent.load(Ordering::SeqCst);
                lists_in.load(Ordering::SeqCst)
                    && images_in
                    && scans_in
                    && handled.load(Ordering::SeqCst) >= sent
                    && to <= due.load(Ordering::SeqCst).saturating_add(LOCKSTEP_SLACK_MS)
            }))
        };
        let plc_config = match modbus.speed {
            // Real time × speed: the line does not wait for the host, as a real one would not.
            Some(speed) => sim::modbus::SimPlcConfig { speed: speed.max(1), ..sim::modbus::SimPlcConfig::default() },
            None => sim::modbus::SimPlcConfig {
                lockstep_quantum_ms: Some(modbus.quantum_ms),
                lockstep_gate: Some(gate),
                ..sim::modbus::SimPlcConfig::default()
            },
        };
        let (mut plc, mut devices, link) = start_plc(cfg, modbus.transport, world, &map, plc_config).await?;
        let mut driver = cfg.line.driver_config(Some(link));
        // In lockstep the line advances per poll; in real time the PLC polls as configured.
        if modbus.speed.is_none() {
            driver.poll_period = modbus.poll_period;
        }
        let (done_tx, mut done_rx) = mpsc::channel::<ParcelReport>(1024);
        let intakes = sortline::xray::station::Intakes::open(&xray, &opts.data_dir)
            .await
            .map_err(|e| DemoError::Sim { what: "the X-ray intake", detail: e.to_string() })?;
        let (jobs, screen_jobs) = crossbeam_channel::bounded(sortline::xray::station::QUEUE);
        // The console before the first parcel: its address and login are printed with the rest.
        let cache = sortline::xray::station::ImageCache::new(xray.image_cache_mb as usize * (1 << 20));
        let clock = plc.clock();
        let board = console::Board::new(Box::new(move || clock.line_ms()), Some((screen.clone(), cache.clone())));
        let listener = console::bind(modbus.console)
            .await
            .map_err(|e| DemoError::Sim { what: "the console", detail: e.to_string() })?;
        let console_url = format!("http://{}", listener.local_addr()?);
        let (password, officers) = officers::open(&opts.data_dir, &console_url)?;
        writeln!(std::io::stdout(), "console: {console_url}/ user {} password {password}", officers::DEMO_USER)?;
        let parts = daemon::Parts {
            line,
            audit,
            clock: SimLineClock(plc.clock()),
            screen: console::ConsoleScreen {
                inner: DemoScreen {
                    officers: modbus.sim_officers.then(|| plc.clock()),
                    done: done_tx,
                    mqtt: mqtt.as_ref().map(|m| m.1.sink.clone()),
                },
                board: board.clone(),
            },
            map: map.clone(),
            driver,
            initial,
            screener: Some(jobs),
            operator_store: Some(operator_store),
        };
        let daemon_config = daemon::DaemonConfig {
            paced: modbus.speed.is_none(),
            // The line waits at a deadline until the core has woken for it.
            tick_max: Duration::from_millis(1),
            next_due,
            scans_handled,
            xray_settled: images_settled,
            ..daemon::DaemonConfig::default()
        };
        let (line_stats, line_mode) = (daemon_config.line_stats.clone(), daemon_config.line_mode.clone());
        let daemon = daemon::Daemon::start(parts, daemon_config)?;
        let figures = Figures {
            line: line_stats,
            mode: line_mode,
            plc: daemon.driver_stats(),
            scanner: rig.as_ref().map(|r| Arc::new(r.reader.stats()) as Arc<dyn Fn() -> ScannerStats + Send + Sync>),
        };
        let publisher = mqtt.map(|(broker, prepared)| {
            let prefix = prepared.prefix();
            let topics = sortline::mqtt::Topics::new(&cfg.line.site.site_id, &cfg.line.site.line_id);
            (broker, prefix, topics, prepared.start(daemon.inputs(), figures.clone(), cfg.rules_dir.clone()))
        });
        let (stop_console, _) = broadcast::channel::<()>(1);
        let console_ctx = console::Setup {
            board,
            core: daemon.inputs(),
            figures: figures.clone(),
            data_dir: opts.data_dir.clone(),
            rules_dir: cfg.rules_dir.clone(),
            defaults: console::Defaults::of(cfg),
            session_minutes: cfg.line.console.as_ref().map_or(480, |c| c.session_minutes),
            xray: true,
            broker: publisher.as_ref().map(|p| p.3.stats()),
        }
        .ctx()
        .map_err(|e| DemoError::Sim { what: "the console", detail: e.to_string() })?;
        let console_task = console::serve(listener, console_ctx, stop_console.subscribe());
        let mut platform = None;
        if let Some((broker, _, topics, publisher)) = publisher.as_ref().filter(|_| via_intake) {
            let mut stats = publisher.stats();
            // Not retained: the platform publishes once the intake's subscription stands.
            if tokio::time::timeout(Duration::from_secs(30), stats.wait_for(|s| s.subscribed)).await.is_err() {
                return Err(DemoError::Sim { what: "the platform intake", detail: "not subscribed in 30 s".into() });
            }
            // Returns once the intake acknowledged every list: then the core has them too.
            let (lists, acks) = (topics.platform_manifests(), topics.platform_acks());
            let report = platform::publish(broker, lists, acks, platform_lists, &Pacing::default()).await?;
            if report.refused > 0 || report.resent > 0 {
                tracing::warn!(?report, "platform lists resent or refused");
            }
            platform = Some(report);
            lists_in.store(true, Ordering::SeqCst);
        }
        // Officers and bench (and the scanner, on a direct wire): their own task, so that a
        // full core queue never stops this loop from draining the live view (which the core
        // may be waiting on).
        let device = rig.as_ref().map(|r| r.device.clone());
        let inputs = daemon.inputs();
        sortline::xray::station::spawn_screener(screen, cache.clone(), screen_jobs, daemon.inputs())?;
        let (stop_station, _) = broadcast::channel::<()>(1);
        let intake_tasks = intakes.run(cache, daemon.inputs(), stop_station.clone());
        let mut sim_station = station::SimStation::new(&xray, opts.seed, station::synth_config())?;
        let truth = sim_station.truth.clone();
        let mut officers = modbus.sim_officers.then_some(officers);
        let devices = tokio::spawn(async move {
            // Officers' events are the console's; the rest are the devices' and reach the core.
            let no_screens = OfficerScreens::default();
            while let Some((_, event)) = devices.recv().await {
                if let sim::SimEvent::XrayImaged { image_seq, items, concealed } = &event {
                    // Counted before it is written: the line waits until the core has it screened.
                    images_written.fetch_add(1, Ordering::SeqCst);
                    sim_station.image(*image_seq, items, *concealed).await?;
                } else if officers::is_officers(&event) {
                    if let Some(o) = officers.as_mut() {
                        tokio::task::block_in_place(|| o.act(&event))?;
                    }
                } else if !device.as_ref().is_some_and(|d| d.send(&event)) {
                    if let Some(input) = input(event, &no_screens)? {
                        if tokio::task::block_in_place(|| inputs.send(daemon::CoreMsg::Input(input))).is_err() {
                            break;
                        }
                    }
                }
                devices_handled.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<(), DemoError>(())
        });
        let (stop_reader, reader_stop) = tokio::sync::oneshot::channel::<()>();
        let reader_stats = rig.as_ref().map(|r| r.reader.stats());
        let reader = rig.map(|rig| {
            let inputs = daemon.inputs();
            let scans_sent = scans_sent.clone();
            let deliver = move |out| {
                let msg = match out {
                    ScannerOutput::Input(i) => {
                        // Counted before it is sent: the gate waits until the core has it.
                        scans_sent.fetch_add(u64::from(matches!(i, Input::Scan { .. })), Ordering::SeqCst);
                        daemon::CoreMsg::Input(i)
                    }
                    ScannerOutput::Alarm(a) => daemon::CoreMsg::Alarm(a),
                };
                // The core gone means the demo is stopping.
                let _ = tokio::task::block_in_place(|| inputs.send(msg));
            };
            tokio::spawn(rig.reader.run(deliver, async move {
                let _ = reader_stop.await;
            }))
        });
        let (shutdown, shutdown_rx) = broadcast::channel::<()>(1);
        let run = tokio::spawn(daemon.run(shutdown_rx));
        tokio::pin!(run);
        writeln!(live, "{:>8}  {:<18} {:<5}  {:<10} {:<9} reasons", "tracking", "waybill", "chan", "lane", "")?;
        let limit = tokio::time::sleep(modbus.run_limit);
        tokio::pin!(limit);
        let mut finished = false;
        while !finished {
            tokio::select! {
                Some(report) = done_rx.recv() => show(live, &report)?,
                f = plc.wait_finished(Duration::from_millis(50)) => finished = f,
                // The daemon stopping on its own is an error (in lockstep the line would wait forever).
                r = &mut run => {
                    r.map_err(|e| DemoError::Sim { what: "a daemon panic", detail: e.to_string() })??;
                    return Err(DemoError::Daemon(daemon::DaemonError::Stopped("daemon, before the line finished")));
                }
                () = &mut limit => return Err(DemoError::Sim {
                    what: "a run past its limit",
                    detail: format!("{:?} of real time, line at {} ms", modbus.run_limit, plc.clock().line_ms()),
                }),
            }
        }
        // Every parcel has left the belt: the core drains (last confirmations, deadlines).
        let _ = shutdown.send(());
        let finished = loop {
            tokio::select! {
                Some(report) = done_rx.recv() => show(live, &report)?,
                r = &mut run => break r.map_err(|e| DemoError::Sim { what: "a daemon panic", detail: e.to_string() })??,
            }
        };
        while let Ok(report) = done_rx.try_recv() {
            show(live, &report)?;
        }
        devices.abort();
        if let Ok(Err(e)) = devices.await {
            return Err(e);
        }
        let _ = stop_station.send(());
        for task in intake_tasks {
            let _ = task.await;
        }
        let _ = stop_console.send(());
        let _ = console_task.await;
        let _ = stop_reader.send(());
        if let Some(reader) = reader {
            let _ = reader.await;
        }
        // Closed on record and signed before the publisher drains, so the last anchor leaves too.
        tokio::task::block_in_place(|| {
            recorder::close_run(&finished.audit, finished.line.stats(), Some(finished.plc_safe_mode), finished.now_ms)
        })?;
        let mqtt = match publisher {
            // What the outbox still holds after this is delivered on the next start.
            Some((broker, prefix, _, p)) => Some(MqttSummary {
                broker,
                prefix,
                stats: p.stop(Duration::from_secs(10)).await.map_err(mqtt_error)?,
                platform,
            }),
            None => None,
        };
        Ok::<_, DemoError>((plc.report(), finished, reader_stats.map(|stats| stats()), mqtt, truth))
    })?;
    let daemon::Finished { line, audit, now_ms, driver_stats, drained, .. } = finished;
    tracing::info!(?driver_stats, drained, "daemon stopped");
    audit.shutdown()?;
    let host = HostFigures {
        stats: line.stats().clone(),
        plc: Some(driver_stats),
        reader: reader_stats,
        virtual_ms: now_ms,
        wall_ms: stopwatch.elapsed_ms(),
    };
    let mut s = summary(opts, &db, &report, host)?;
    s.mqtt = mqtt;
    s.xray = Some(station::summary(&db, &truth.lock().unwrap_or_else(|e| e.into_inner()))?);
    Ok(s)
}

fn mqtt_error(e: sortline::mqtt::MqttError) -> DemoError {
    DemoError::Sim { what: "an MQTT failure", detail: e.to_string() }
}

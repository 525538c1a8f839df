//! One run: the real core and the simulated line in virtual time, the faults of its schedule
//! applied between them, the checkers after every step.
//!
//! Between the World and the core stand models of what the daemon has in between, each only
//! as deep as the faults need: the PLC link (its event ring, the driver's pending
//! destinations), the X-ray station (images by sequence number, the pre-screen from the
//! image's truth), the officers' screens, the platform's lists, the stores a restart reads
//! (the manifest store, the operator store) and the record (the real chain's encoding and
//! hashes, in memory, committed as the group commit would).

use super::check::{Checker, Mark};
use super::regime::Fault;
use super::{Failure, Outcome, Plan};
use crate::{Geometry, Ms, SimEvent, World};
use sortline::audit::{MemoryChain, NewEntry};
use sortline::config::Loaded;
use sortline::core::*;
use sortline::recorder;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

/// The record's wall column starts here (fixed, so that a seed's chain hashes the same).
const EPOCH_WALL_MS: i64 = 1_800_000_000_000;
/// Events the PLC's ring holds while the host does not read it (the shipped map's ring).
const RING: usize = 64;
/// The PLC's watchdog: a link down this long puts it in safe mode.
const WATCHDOG_MS: Ms = 2_000;
/// The group commit's window.
const COMMIT_MS: Ms = 2;
/// The driver's poll period: garbled reads cost one.
const POLL_MS: Ms = 20;
/// Reviews the simulated screens keep (as `demo::OfficerScreens`).
const SCREENS_KEPT: usize = 1024;

/// Something that reaches the host later.
#[derive(Debug)]
enum Later {
    /// A PLC or scanner event (and when it happened), through the link.
    Event(Ms, SimEvent),
    /// The station's image, stored under its hash.
    Image {
        seq: u32,
        sha: Arc<str>,
        barcode: Option<String>,
    },
    Screened {
        parcel: ParcelId,
        sha: Arc<str>,
        version: Option<u64>,
        flags: Vec<Arc<str>>,
    },
    Manifest(Arc<Manifest>),
    Transfer {
        world: u32,
    },
    /// The end of a timed fault.
    End(EndOf),
}

#[derive(Debug, Clone, Copy)]
enum EndOf {
    LinkDrop,
    EventsLost,
    Stall,
    SafeMode,
    LaneFull(u16),
    LineStop,
    OfficerAbsent,
    Crash,
    BrokerOutage,
    /// The link has been down for the PLC's watchdog.
    Watchdog,
    /// The operator restarts the PLC after lost events.
    Recover,
}

struct Timed {
    at: Ms,
    n: u64,
    what: Later,
}

impl PartialEq for Timed {
    fn eq(&self, o: &Timed) -> bool {
        (self.at, self.n) == (o.at, o.n)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, o: &Timed) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timed {
    fn cmp(&self, o: &Timed) -> std::cmp::Ordering {
        (self.at, self.n).cmp(&(o.at, o.n))
    }
}

/// An image as the station made it: the parcel that entered the tunnel with `seq` (the one it
/// shows, whatever number it goes out under) and what it shows: HS codes, and whether
/// something is hidden.
struct Image {
    seq: u32,
    items: Vec<String>,
    concealed: bool,
    /// It went out with the label the station read (so a swap can be told).
    named: bool,
}

pub struct Run<'c> {
    cfg: &'c Loaded,
    settings: LineSettings,
    secret: SiteSecret,
    line: Line,
    world: World,
    chain: MemoryChain,
    pending: Vec<NewEntry>,
    pending_marks: Vec<(Option<Record>, Option<Mark>)>,
    last_commit: Ms,
    check: Checker,
    later: BinaryHeap<Reverse<Timed>>,
    n: u64,
    faults: Vec<Fault>,
    next_fault: usize,
    pub injected: BTreeMap<&'static str, u64>,
    /// The X-ray station reads the label in the tunnel and names it with the image.
    station_reads_barcode: bool,
    // The PLC and its link.
    boot: u16,
    /// World tracking id of the PLC's tracking id 1 minus one: a cold restart starts the PLC's
    /// numbering again.
    offset: u32,
    max_world_tracking: u32,
    link_down: bool,
    stalled: bool,
    events_lost: bool,
    ring: Vec<(Ms, SimEvent)>,
    ring_overrun: bool,
    /// Destinations the driver could not write yet.
    unwritten: Vec<(ParcelId, u16)>,
    safe_by_link: bool,
    // The daemon.
    down: bool,
    /// Operators' settings as the operator store holds them, and the lists as the manifest
    /// store does: what a restart reads back.
    operator: OperatorState,
    stored: BTreeMap<Waybill, Arc<Manifest>>,
    wall_offset_ms: i64,
    // The station, the screens, the platform.
    images: HashMap<Arc<str>, Image>,
    image_faults: HashMap<u32, Fault>,
    seq_of: HashMap<u32, u32>,
    reviews: HashMap<u32, ReviewRequest>,
    review_order: std::collections::VecDeque<(ReviewId, u32)>,
    on_line: HashMap<u32, ParcelId>,
    /// The offset of each PLC boot's tracking ids from the World's.
    offsets: HashMap<u16, u32>,
    officers_absent: bool,
    late_lists: HashMap<String, (Arc<Manifest>, Ms)>,
    amended_lists: HashMap<String, (Arc<Manifest>, Ms)>,
    gates: u32,
    scans: u32,
    last_moment: HashSet<u32>,
    duplicate_scans: HashSet<u32>,
    ops: OfficerId,
    swap: Option<(u32, Arc<str>)>,
    /// What the scanner read for each World parcel, by trigger: the label a tunnel reader sees.
    codes: HashMap<u32, String>,
    belt: HashSet<u32>,
    folder: Vec<(u32, Arc<str>, Option<String>)>,
    intake: Vec<Arc<Manifest>>,
    broker_down: bool,
    /// Operators' MQTT commands waiting for the broker.
    commands: Vec<Fault>,
}

fn officer(name: &str) -> OfficerId {
    OfficerId::new(name).expect("a valid officer id")
}

fn world_lane(settings: &LineSettings, id: u16) -> Option<Lane> {
    settings.lanes.lane(id)
}

impl<'c> Run<'c> {
    pub fn new(cfg: &'c Loaded, geometry: Geometry, plan: Plan) -> Run<'c> {
        let Plan { seed, mut scenario, station_reads_barcode, faults } = plan;
        scenario.xray_images = true;
        let world = World::new(scenario, geometry);
        let settings = cfg.line.settings();
        let secret = SiteSecret::from_demo_seed(seed);
        let line = Line::new(settings.clone(), cfg.line.policy(secret.clone(), cfg.rules.clone()));
        let mut run = Run {
            cfg,
            settings,
            secret,
            line,
            world,
            chain: MemoryChain::default(),
            pending: Vec::new(),
            pending_marks: Vec::new(),
            last_commit: 0,
            check: Checker::default(),
            later: BinaryHeap::new(),
            n: 0,
            faults: Vec::new(),
            next_fault: 0,
            injected: BTreeMap::new(),
            station_reads_barcode,
            boot: 1,
            offset: 0,
            max_world_tracking: 0,
            link_down: false,
            stalled: false,
            events_lost: false,
            ring: Vec::new(),
            ring_overrun: false,
            unwritten: Vec::new(),
            safe_by_link: false,
            down: false,
            operator: OperatorState::default(),
            stored: BTreeMap::new(),
            wall_offset_ms: 0,
            images: HashMap::new(),
            image_faults: HashMap::new(),
            seq_of: HashMap::new(),
            reviews: HashMap::new(),
            review_order: Default::default(),
            on_line: HashMap::new(),
            offsets: HashMap::from([(1, 0)]),
            officers_absent: false,
            late_lists: HashMap::new(),
            amended_lists: HashMap::new(),
            gates: 0,
            scans: 0,
            last_moment: HashSet::new(),
            duplicate_scans: HashSet::new(),
            ops: officer("swarm-ops"),
            swap: None,
            codes: HashMap::new(),
            belt: HashSet::new(),
            folder: Vec::new(),
            intake: Vec::new(),
            broker_down: false,
            commands: Vec::new(),
        };
        run.check.max_length_mm = cfg.line.limits.max_parcel_length_mm;
        run.check.weight = cfg.line.weight;
        run.check.xray = run.settings.xray.is_some();
        run.plan(faults);
        run
    }

    /// Sorts the schedule into what happens at a time and what happens to a parcel.
    fn plan(&mut self, faults: Vec<Fault>) {
        let lists: HashMap<u32, Arc<Manifest>> =
            self.world.manifests().iter().enumerate().map(|(i, d)| (i as u32, Arc::new(d.core_view()))).collect();
        for f in faults {
            match &f {
                Fault::ManifestLate { index, delay_ms } => {
                    if let Some(m) = lists.get(index) {
                        self.late_lists.insert(m.waybill.to_string(), (m.clone(), *delay_ms));
                        self.count(&f);
                    }
                }
                Fault::ManifestAmended { index, delay_ms, rejected } => {
                    if let Some(m) = lists.get(index) {
                        let mut a = (**m).clone();
                        a.version += 1;
                        if *rejected {
                            a.status = ManifestStatus::Rejected;
                        } else {
                            a.channel = Channel::Red;
                        }
                        self.amended_lists.insert(m.waybill.to_string(), (Arc::new(a), *delay_ms));
                        self.count(&f);
                    }
                }
                Fault::LastMomentTransfer { index } => {
                    self.last_moment.insert(*index);
                }
                Fault::ScanDuplicate { index } => {
                    self.duplicate_scans.insert(*index);
                }
                Fault::ImageMissing { seq }
                | Fault::ImageLate { seq, .. }
                | Fault::ImageCorrupt { seq }
                | Fault::ImageSwap { seq } => {
                    self.image_faults.insert(*seq, f.clone());
                }
                _ => self.faults.push(f),
            }
        }
    }

    fn count(&mut self, f: &Fault) {
        *self.injected.entry(f.name()).or_default() += 1;
    }

    fn at(&mut self, at: Ms, what: Later) {
        self.n += 1;
        self.later.push(Reverse(Timed { at, n: self.n, what }));
    }

    fn wall(&self, now: Ms) -> i64 {
        EPOCH_WALL_MS + now as i64 + self.wall_offset_ms
    }

    /// The run to its end; the checkers' verdict.
    pub fn run(mut self, seed: u64) -> Outcome {
        let start = recorder::run_start_entry(self.cfg, &self.line, "swarm", self.wall(0));
        self.pending.push(start);
        self.pending_marks.push((None, None));
        let late: HashSet<String> = self.late_lists.keys().cloned().collect();
        let lists: Vec<Arc<Manifest>> = self.world.manifests().iter().map(|d| Arc::new(d.core_view())).collect();
        for m in lists {
            if !late.contains(&m.waybill.to_string()) {
                self.manifest(m, 0);
            }
        }
        self.handle(Input::PlcSync { boot: self.boot, cause: SyncCause::FirstContact }, 0);
        let mut events = Vec::new();
        let mut now: Ms = 0;
        loop {
            let fault_at = self.faults.get(self.next_fault).and_then(Fault::at);
            let later_at = self.later.peek().map(|Reverse(t)| t.at);
            let timeout = if self.down { None } else { self.line.next_timeout().map(|t| t.0) };
            let Some(next) = [self.world.next_event_time(), timeout, later_at, fault_at].into_iter().flatten().min()
            else {
                break;
            };
            now = next.max(now);
            // The group commit has made durable whatever waited its window by now.
            if now >= self.last_commit + COMMIT_MS {
                self.commit(now);
            }
            while self.faults.get(self.next_fault).and_then(Fault::at).is_some_and(|t| t <= now) {
                let f = self.faults[self.next_fault].clone();
                self.next_fault += 1;
                self.fault(f, now);
            }
            events.clear();
            self.world.advance(now, &mut events);
            for (at, e) in events.drain(..) {
                self.event(e, at, now);
            }
            while self.later.peek().is_some_and(|Reverse(t)| t.at <= now) {
                let Reverse(t) = self.later.pop().expect("peeked");
                self.deliver(t.what, now);
            }
            if !self.down && self.line.next_timeout().is_some_and(|t| t.0 <= now) {
                self.handle(Input::Tick, now);
            }
            if now >= self.last_commit + COMMIT_MS {
                self.commit(now);
            }
            self.bounds(now);
        }
        self.commit(now);
        let report = self.world.report();
        let (unaccounted, wrong_lane, unrecorded) = self.check.finish(now, &report);
        let (entries, head) = self.chain.head();
        let disrupted = self.check.disrupted() as u32;
        Outcome {
            seed,
            parcels: report.parcels,
            line_ms: now,
            faults: self.injected,
            failures: self.check.failures,
            unsafe_releases: report.unsafe_releases,
            unaccounted,
            wrong_lane,
            wrong_lane_unrecorded: unrecorded,
            released_on_swapped_image: self.check.released_on_swapped_image,
            merged_unseen: self.check.merged_unseen,
            lost_in_crash: self.check.lost_in_crash,
            undeclared_released: report.undeclared_released,
            disrupted,
            entries,
            head,
            lanes: report.lanes,
        }
    }

    fn bounds(&mut self, now: Ms) {
        let s = &self.settings;
        let (in_flight, max) = (self.line.in_flight(), s.max_in_flight);
        self.check.bound(now, "parcels in flight in the core", in_flight, max);
        self.check.bound(now, "reviews on the screens", self.reviews.len(), SCREENS_KEPT);
        self.check.bound(now, "the PLC's event ring", self.ring.len(), RING);
        self.check.bound(now, "uncommitted entries", self.pending.len(), 100_000);
        self.check.bound(now, "destinations the driver holds", self.unwritten.len(), s.max_in_flight);
    }

    // ---- the daemon's side ----

    fn handle(&mut self, input: Input, now: Ms) {
        if self.down {
            return;
        }
        if let Some(Ok(state)) = self.operator.after(&input) {
            // The operator store takes it before the core does.
            self.operator = state;
        }
        let mut out = Vec::new();
        self.line.handle(input, Millis(now), &mut out);
        self.route(out, now);
    }

    fn manifest(&mut self, m: Arc<Manifest>, now: Ms) {
        let newer = self.stored.get(&m.waybill).is_none_or(|s| m.version > s.version);
        if newer {
            self.stored.insert(m.waybill, m.clone());
        }
        self.check.manifest_sent(&m);
        self.handle(Input::Manifest(m), now);
    }

    fn mark_of(&self, record: &Record) -> Option<Mark> {
        let world = |p: &ParcelId| self.world_of(p);
        match record {
            Record::Decision { parcel, .. } => world(parcel).map(Mark::Decision),
            Record::Completed { parcel, .. } => world(parcel).map(Mark::Completed),
            Record::Input(Input::DestinationWritten { tracking, .. }) => {
                self.world_tracking(*tracking).map(Mark::Written)
            }
            Record::Input(Input::Gate { tracking, .. }) => self.world_tracking(*tracking).map(Mark::Gate),
            Record::Input(
                Input::Divert { tracking, .. } | Input::Lost { tracking } | Input::PlcHold { tracking, .. },
            ) => self.world_tracking(*tracking).map(Mark::Exit),
            _ => None,
        }
    }

    fn route(&mut self, out: Vec<Output>, now: Ms) {
        let wall = self.wall(now);
        let mut destinations = Vec::new();
        for o in out {
            match o {
                Output::Record(r) => {
                    if let Record::Identified { parcel, .. } = &r {
                        if let Some(w) = self.world_of(parcel) {
                            self.on_line.insert(w, *parcel);
                        }
                    }
                    if matches!(r, Record::Decision { .. }) {
                        let world = r.parcel().and_then(|p| self.world_of(&p));
                        let (images, seq_of) = (&self.images, &self.seq_of);
                        let shows =
                            |sha: &str| images.get(sha).map(|i| (seq_of.get(&i.seq).copied().unwrap_or(0), i.named));
                        self.check.decided(now, &r, shows, world);
                    }
                    let mark = self.mark_of(&r);
                    tracing::trace!(now, ?mark, record = ?r, "record");
                    self.pending.push(recorder::entry(&r, Millis(now), wall));
                    self.pending_marks.push((Some(r), mark));
                }
                Output::Alarm(a) => {
                    self.pending.push(recorder::alarm_entry(&a, Millis(now), wall));
                    self.pending_marks.push((None, None));
                }
                Output::SetDestination { parcel, lane_id, .. } => destinations.push((parcel, lane_id)),
                Output::ReviewRequested(r) => {
                    if let Some(w) = self.world_of(&r.parcel) {
                        self.reviews.insert(w, r.clone());
                        self.review_order.push_back((r.review, w));
                        while self.review_order.len() > SCREENS_KEPT {
                            if let Some((old, w)) = self.review_order.pop_front() {
                                if self.reviews.get(&w).is_some_and(|r| r.review == old) {
                                    self.reviews.remove(&w);
                                }
                            }
                        }
                        self.world.request_review(now, w);
                    }
                }
                Output::ScreenImage { parcel, sha256, manifest, .. } => self.screen(parcel, sha256, manifest, now),
                Output::ReviewClosed { parcel, review } => {
                    if let Some(w) = self.world_of(&parcel) {
                        if self.reviews.get(&w).is_some_and(|r| r.review == review) {
                            self.reviews.remove(&w);
                        }
                    }
                }
                Output::Provisional(_) => {}
                Output::ParcelDone(report) => {
                    if let Some(w) = self.world_of(&report.parcel) {
                        if self.on_line.get(&w) == Some(&report.parcel) {
                            self.on_line.remove(&w);
                        }
                        self.check.report(w, report);
                    }
                }
            }
        }
        if destinations.is_empty() {
            return;
        }
        // Records reach the disk before any destination they justify goes to the PLC.
        self.commit(now);
        for (parcel, lane_id) in destinations {
            self.write_destination(parcel, lane_id, now);
        }
    }

    fn write_destination(&mut self, parcel: ParcelId, lane_id: u16, now: Ms) {
        if self.link_down || self.stalled {
            self.unwritten.push((parcel, lane_id));
            return;
        }
        if parcel.boot != self.boot {
            // The driver drops what was meant for a PLC boot that is gone.
            return;
        }
        let lane = world_lane(&self.settings, lane_id);
        self.check.destination(now, parcel, lane);
        let world = parcel.tracking.0 + self.offset;
        let outcome = self.world.set_destination(now, world, lane_id);
        if outcome == crate::DestinationOutcome::Applied && lane == Some(Lane::Release) {
            self.check.authorised(world);
        }
        self.handle(Input::DestinationWritten { tracking: parcel.tracking, lane_id }, now);
    }

    fn commit(&mut self, now: Ms) {
        self.last_commit = now;
        if self.pending.is_empty() {
            return;
        }
        if let Err(e) = self.chain.append(&self.pending) {
            self.check.failures.push(Failure { at: now, check: "the record takes every entry", detail: e.to_string() });
        }
        self.pending.clear();
        let marks = std::mem::take(&mut self.pending_marks);
        self.check.committed(&marks);
    }

    // ---- the line's side ----

    fn world_tracking(&self, t: TrackingId) -> Option<u32> {
        Some(t.0 + self.offset)
    }

    /// The World parcel a core parcel is: its tracking id under its PLC boot's numbering.
    fn world_of(&self, p: &ParcelId) -> Option<u32> {
        self.offsets.get(&p.boot).map(|o| p.tracking.0 + o)
    }

    fn plc_tracking(&self, world: u32) -> Option<TrackingId> {
        world.checked_sub(self.offset).filter(|&t| t > 0).map(TrackingId)
    }

    /// A World event on its way to the host.
    fn event(&mut self, e: SimEvent, at: Ms, now: Ms) {
        use SimEvent as E;
        match e {
            E::XrayImaged { image_seq, items, concealed } => {
                let items = items.into_iter().map(|i| i.hs_code).collect();
                self.image(image_seq, items, concealed.is_some(), now)
            }
            E::Scan { .. } => {
                // The scanner's own wire: lost while the daemon is down.
                if !self.down {
                    self.scan(e, now);
                }
            }
            E::Verdict { tracking, officer: o, verdict } => {
                if self.down || self.officers_absent {
                    return;
                }
                if let Some(r) = self.reviews.get(&tracking) {
                    let input = Input::Verdict {
                        parcel: r.parcel,
                        review: r.review,
                        image_sha256: r.image_sha256.clone(),
                        officer: officer(&o),
                        verdict,
                    };
                    self.handle(input, now);
                }
            }
            E::ManualTransfer { tracking, officer: o } => {
                if let Some(p) = self.on_line.get(&tracking).copied() {
                    self.handle(Input::ManualTransfer { parcel: p, officer: officer(&o) }, now);
                }
            }
            E::InspectionResult { waybill, officer: o, discrepancy } => {
                if let Ok(w) = Waybill::parse(&waybill) {
                    let input = Input::InspectionResult {
                        waybill: w,
                        officer: officer(&o),
                        discrepancy,
                        returned: false,
                        note: None,
                    };
                    self.handle(input, now);
                }
            }
            plc => self.plc_event(plc, at, now),
        }
    }

    fn scan(&mut self, e: SimEvent, now: Ms) {
        let SimEvent::Scan { trigger, codes } = e else { return };
        self.scans += 1;
        // The World's scanner counts its triggers as the PLC counts parcels: one per tracking id.
        let w = trigger;
        let e = self.check.evidence.entry(w).or_default();
        e.codes = e.codes.max(codes.len());
        if let Some(code) = codes.first() {
            self.codes.insert(w, code.clone());
        }
        for code in &codes {
            if let Some((m, delay)) = self.late_lists.remove(code) {
                self.at(now + delay, Later::Manifest(m));
            }
            if let Some((m, delay)) = self.amended_lists.remove(code) {
                self.at(now + delay, Later::Manifest(m));
            }
        }
        if self.duplicate_scans.remove(&self.scans) {
            self.count(&Fault::ScanDuplicate { index: 0 });
            self.at(now + 3, Later::Event(now + 3, SimEvent::Scan { trigger, codes: codes.clone() }));
        }
        self.handle(Input::Scan { trigger: Some(TriggerCount(trigger)), codes }, now);
    }

    /// A PLC event: through the ring while the host does not read it.
    fn plc_event(&mut self, e: SimEvent, at: Ms, now: Ms) {
        match e {
            SimEvent::Gate { tracking, .. } => {
                self.max_world_tracking = self.max_world_tracking.max(tracking);
                self.belt.insert(tracking);
            }
            SimEvent::Divert { tracking, .. } | SimEvent::Lost { tracking } => {
                self.belt.remove(&tracking);
            }
            _ => {}
        }
        if self.events_lost {
            if let Some(w) = event_tracking(&e) {
                self.check.disrupt(w, true);
            }
            return;
        }
        if self.down || self.link_down || self.stalled {
            if self.ring.len() >= RING {
                self.ring_overrun = true;
                if let Some(w) = event_tracking(&e) {
                    self.check.disrupt(w, true);
                }
            } else {
                self.ring.push((at, e));
            }
            return;
        }
        self.plc_input(e, at, now);
    }

    /// `at`: when it happened by the PLC's clock, which the driver maps onto line time.
    fn plc_input(&mut self, e: SimEvent, at: Ms, now: Ms) {
        use SimEvent as E;
        let Some(world) = event_tracking(&e) else { return };
        let Some(tracking) = self.plc_tracking(world) else {
            // A parcel of the PLC's numbering before a cold restart: the PLC dropped it.
            return;
        };
        let input = match e {
            E::Gate { trigger, length_mm, .. } => {
                self.check.evidence.entry(world).or_default().length_mm = Some(length_mm);
                self.gates += 1;
                if self.last_moment.remove(&self.gates) {
                    let before_cutoff = self.settings.gate_to_cutoff_ms.saturating_sub(40);
                    self.count(&Fault::LastMomentTransfer { index: 0 });
                    self.at(now + before_cutoff, Later::Transfer { world });
                }
                Input::Gate {
                    tracking,
                    trigger: TriggerCount(trigger),
                    length_mm: Some(length_mm),
                    at: Some(Millis(at)),
                }
            }
            E::Weighed { weight_g, .. } => {
                self.check.evidence.entry(world).or_default().weight_g = Some(weight_g);
                Input::Weighed { tracking, weight_g }
            }
            E::XrayEntered { image_seq, .. } => {
                self.seq_of.insert(image_seq, world);
                Input::XrayEntered { tracking, image_seq }
            }
            E::Divert { lane_id, .. } => Input::Divert { tracking, lane_id },
            E::Lost { .. } => Input::Lost { tracking },
            E::ForcedHold { why, .. } => {
                let codes = &sortline_plc_contract::shipped_map().codes.forced_hold;
                let code = codes.get(why.code_name()).map_or(0, |&c| u32::from(c));
                Input::PlcHold { tracking, cause: PlcHoldCause::Forced { code } }
            }
            _ => return,
        };
        self.handle(input, now);
    }
}

impl Run<'_> {
    // ---- the station ----

    fn image(&mut self, seq: u32, items: Vec<String>, concealed: bool, now: Ms) {
        self.n += 1;
        let sha: Arc<str> = format!("{:032x}{:032x}", u128::from(seq), u128::from(self.n)).into();
        self.images.insert(sha.clone(), Image { seq, items, concealed, named: false });
        // The station's own latency: write, pick up, hash.
        let due = now + 300 + u64::from(seq.wrapping_mul(7_919) % 1_200);
        match self.image_faults.remove(&seq) {
            Some(f @ (Fault::ImageMissing { .. } | Fault::ImageCorrupt { .. })) => self.count(&f),
            Some(f @ Fault::ImageLate { delay_ms, .. }) => {
                self.count(&f);
                self.deliver_image(seq, sha, due + delay_ms);
            }
            Some(f @ Fault::ImageSwap { .. }) => {
                self.count(&f);
                self.swap = Some((seq, sha));
            }
            _ => match self.swap.take() {
                // The held image goes out under this one's number, and this one under its.
                Some((held_seq, held_sha)) => {
                    self.deliver_image(held_seq, sha, due);
                    self.deliver_image(seq, held_sha, due);
                }
                None => self.deliver_image(seq, sha, due),
            },
        }
    }

    /// `sha` goes out as image `seq`; a station that reads labels names the one it saw.
    fn deliver_image(&mut self, seq: u32, sha: Arc<str>, at: Ms) {
        let barcode = if self.station_reads_barcode {
            let shows = self.images.get(&sha).and_then(|i| self.seq_of.get(&i.seq));
            shows.and_then(|w| self.codes.get(w)).cloned()
        } else {
            None
        };
        if let Some(image) = self.images.get_mut(&sha) {
            // Only a label that reads as a waybill tells the core whose image it is.
            image.named = barcode.as_deref().is_some_and(|b| Waybill::parse(b).is_ok());
        }
        self.at(at, Later::Image { seq, sha, barcode });
    }

    /// The pre-screen, from what the image really shows: goods the list does not declare and
    /// anything concealed are flagged, but it misses about one in twelve.
    fn screen(&mut self, parcel: ParcelId, sha: Arc<str>, manifest: Option<Arc<Manifest>>, now: Ms) {
        let mut flags: Vec<Arc<str>> = Vec::new();
        if let Some(image) = self.images.get(&sha) {
            let declared = |hs: &str| manifest.as_ref().is_some_and(|m| m.items.iter().any(|i| i.hs_code == hs));
            let missed = u64::from(image.seq).wrapping_mul(0x9E37_79B9_7F4A_7C15) % 12 == 0;
            if !missed {
                if image.items.iter().any(|hs| !declared(hs)) {
                    flags.push("undeclared goods".into());
                }
                if image.concealed {
                    flags.push("concealed object".into());
                }
            }
        }
        if let Some(w) = self.world_of(&parcel) {
            self.check.evidence.entry(w).or_default().flagged |= !flags.is_empty();
        }
        let version = manifest.map(|m| m.version);
        self.at(now + 20, Later::Screened { parcel, sha, version, flags });
    }

    fn deliver(&mut self, what: Later, now: Ms) {
        match what {
            Later::Event(at, e) => self.event(e, at, now),
            Later::Image { seq, sha, barcode } => {
                if self.down {
                    // Files wait in the watched folder for the next run.
                    self.folder.push((seq, sha, barcode));
                } else {
                    self.handle(Input::XrayImage { image_seq: seq, sha256: sha, barcode }, now);
                }
            }
            Later::Screened { parcel, sha, version, flags } => {
                let input = Input::XrayScreened { parcel, sha256: sha, manifest_version: version, flags };
                self.handle(input, now);
            }
            Later::Manifest(m) => {
                if self.down || self.broker_down {
                    // The broker keeps it for the intake's next session.
                    self.intake.push(m);
                } else {
                    self.manifest(m, now);
                }
            }
            Later::Transfer { world } => {
                if let Some(p) = self.on_line.get(&world).copied() {
                    self.handle(Input::ManualTransfer { parcel: p, officer: self.ops.clone() }, now);
                }
            }
            Later::End(end) => self.end(end, now),
        }
    }

    // ---- the faults ----

    fn fault(&mut self, f: Fault, now: Ms) {
        self.count(&f);
        self.fault_effect(f, now);
    }

    fn fault_effect(&mut self, f: Fault, now: Ms) {
        match f {
            Fault::PlcRestart { cold, .. } => self.plc_restart(cold, now),
            Fault::LinkDrop { for_ms, .. } => {
                self.link_down = true;
                if for_ms > WATCHDOG_MS {
                    self.at(now + WATCHDOG_MS, Later::End(EndOf::Watchdog));
                }
                self.at(now + for_ms, Later::End(EndOf::LinkDrop));
            }
            Fault::EventsLost { for_ms, .. } => {
                self.events_lost = true;
                self.at(now + for_ms, Later::End(EndOf::EventsLost));
            }
            Fault::Stall { for_ms, .. } => {
                self.stalled = true;
                self.at(now + for_ms, Later::End(EndOf::Stall));
            }
            // The driver refuses the read and reads the same slots again a poll later: the events
            // of that poll come late, in their order.
            Fault::Garbled { .. } => {
                self.stalled = true;
                self.at(now + POLL_MS, Later::End(EndOf::Stall));
            }
            Fault::SafeMode { for_ms, .. } => {
                self.world.set_safe_mode(now, true);
                self.handle(Input::PlcStatus { safe_mode: true }, now);
                self.at(now + for_ms, Later::End(EndOf::SafeMode));
            }
            Fault::LaneFull { for_ms, release, .. } => {
                let id = self.settings.lanes.id(if release { Lane::Release } else { Lane::Inspection });
                self.world.set_lane_full(now, id, true);
                self.at(now + for_ms, Later::End(EndOf::LaneFull(id)));
            }
            Fault::LineStop { for_ms, .. } => {
                self.handle(Input::LineControl { running: false, officer: self.ops.clone() }, now);
                self.at(now + for_ms, Later::End(EndOf::LineStop));
            }
            Fault::Rates { .. } if self.broker_down => self.commands.push(f),
            Fault::BrokerOutage { for_ms, .. } => {
                self.broker_down = true;
                self.at(now + for_ms, Later::End(EndOf::BrokerOutage));
            }
            Fault::Rates { draw, .. } => {
                let f = |shift: u32| ((draw >> shift) & 0xff) as f64 / 255.0;
                let input = Input::Parameters {
                    sample_rate: Some(PerChannel { green: f(0) * 0.3, red: 1.0 }),
                    xray_review_ratio: Some(PerChannel { green: f(8), red: f(16).max(0.5) }),
                    review_window_ms: (draw >> 24 & 3 == 0).then_some(2_000 + (draw >> 32) % 20_000),
                    officer: self.ops.clone(),
                };
                self.handle(input, now);
            }
            Fault::WallStep { by_ms, .. } => self.wall_offset_ms += by_ms,
            Fault::ScanGarbage { .. } => {
                let codes = vec!["\u{2}7#?\u{1b}[0m".to_string(), String::new()];
                self.handle(Input::Scan { trigger: None, codes }, now);
            }
            Fault::OfficerAbsent { for_ms, .. } => {
                self.officers_absent = true;
                self.at(now + for_ms, Later::End(EndOf::OfficerAbsent));
            }
            Fault::Crash { for_ms, .. } if !self.down => {
                self.crash();
                self.at(now + for_ms, Later::End(EndOf::Crash));
            }
            Fault::RejectedWave { lists, draw, .. } => {
                let n = self.world.manifests().len() as u64;
                for k in 0..u64::from(lists).min(n) {
                    let i = (draw.wrapping_add(k.wrapping_mul(0x9E37_79B9_7F4A_7C15)) % n.max(1)) as usize;
                    let waybill = match self.world.manifests().get(i) {
                        Some(d) => d.waybill,
                        None => continue,
                    };
                    let latest = self.stored.get(&waybill).cloned();
                    if let Some(m) = latest {
                        let mut m = (*m).clone();
                        m.version += 1;
                        m.status = ManifestStatus::Rejected;
                        self.deliver(Later::Manifest(Arc::new(m)), now);
                    }
                }
            }
            // Per-parcel faults were planned into the run's tables.
            _ => {}
        }
    }

    fn end(&mut self, end: EndOf, now: Ms) {
        match end {
            EndOf::Watchdog => {
                if self.link_down {
                    self.world.set_safe_mode(now, true);
                    self.safe_by_link = true;
                }
            }
            EndOf::LinkDrop => {
                self.link_down = false;
                if std::mem::take(&mut self.safe_by_link) {
                    // The driver finds the PLC in safe mode, and syncs it out again.
                    self.handle(Input::PlcStatus { safe_mode: true }, now);
                    self.world.set_safe_mode(now, false);
                    self.handle(Input::PlcStatus { safe_mode: false }, now);
                }
                self.resume_link(now);
            }
            EndOf::EventsLost => {
                self.events_lost = false;
                self.disrupt_belt(true);
                self.handle(Input::PlcSync { boot: self.boot, cause: SyncCause::EventsLost }, now);
                // Every parcel is held until the PLC restarts: the operator restarts it.
                self.at(now + 3_000, Later::End(EndOf::Recover));
            }
            EndOf::Recover => self.plc_restart(false, now),
            EndOf::Stall => {
                self.stalled = false;
                self.resume_link(now);
            }
            EndOf::SafeMode => {
                self.world.set_safe_mode(now, false);
                self.handle(Input::PlcStatus { safe_mode: false }, now);
            }
            EndOf::LaneFull(id) => self.world.set_lane_full(now, id, false),
            EndOf::LineStop => self.handle(Input::LineControl { running: true, officer: self.ops.clone() }, now),
            EndOf::OfficerAbsent => self.officers_absent = false,
            EndOf::Crash => self.restart(now),
            EndOf::BrokerOutage => {
                self.broker_down = false;
                if !self.down {
                    for m in std::mem::take(&mut self.intake) {
                        self.manifest(m, now);
                    }
                }
                for f in std::mem::take(&mut self.commands) {
                    self.fault_effect(f, now);
                }
            }
        }
    }

    /// The host reads the ring again: what it held, then the news of what it lost.
    fn resume_link(&mut self, now: Ms) {
        if self.down || self.link_down || self.stalled {
            return;
        }
        for (at, e) in std::mem::take(&mut self.ring) {
            self.plc_input(e, at, now);
        }
        if std::mem::take(&mut self.ring_overrun) {
            self.disrupt_belt(true);
            self.handle(Input::PlcSync { boot: self.boot, cause: SyncCause::EventsLost }, now);
            self.at(now + 3_000, Later::End(EndOf::Recover));
        }
        for (parcel, lane_id) in std::mem::take(&mut self.unwritten) {
            self.write_destination(parcel, lane_id, now);
        }
    }

    /// The host lost the thread of every parcel on the belt or with news in the ring
    /// (`by_plc`: and is told so).
    fn disrupt_belt(&mut self, by_plc: bool) {
        for &w in &self.belt {
            self.check.disrupt(w, by_plc);
        }
        for w in self.ring.iter().filter_map(|(_, e)| event_tracking(e)) {
            self.check.disrupt(w, by_plc);
        }
    }

    fn plc_restart(&mut self, cold: bool, now: Ms) {
        self.world.plc_restart(now);
        self.disrupt_belt(true);
        // The World reports nothing more of them.
        self.belt.clear();
        for (_, e) in &self.ring {
            if let Some(w) = event_tracking(e) {
                self.check.disrupt(w, true);
            }
        }
        self.ring.clear();
        self.ring_overrun = false;
        self.unwritten.clear();
        self.boot = self.boot.wrapping_add(1);
        if cold {
            // Its memory reset: tracking ids start from 1 again.
            self.offset = self.max_world_tracking;
        }
        self.offsets.insert(self.boot, self.offset);
        self.handle(Input::PlcSync { boot: self.boot, cause: SyncCause::Restart }, now);
    }

    /// kill -9: what was not committed is gone, and so is everything in memory.
    fn crash(&mut self) {
        self.down = true;
        self.pending.clear();
        let lost = std::mem::take(&mut self.pending_marks);
        self.disrupt_belt(false);
        self.check.crashed(&lost);
        self.reviews.clear();
        self.review_order.clear();
        self.on_line.clear();
        self.unwritten.clear();
    }

    /// `sortline run` starting again on the same data directory: the core from the
    /// configuration, what operators set from the operator store, serials from the chain's
    /// length, the lists from the manifest store; then the PLC's current boot, whose ring still
    /// holds what happened meanwhile.
    fn restart(&mut self, now: Ms) {
        self.down = false;
        self.line = Line::new(self.settings.clone(), self.cfg.line.policy(self.secret.clone(), self.cfg.rules.clone()));
        self.line.restore(self.operator.clone());
        self.line.set_serial_base(self.chain.head().0);
        let start = recorder::run_start_entry(self.cfg, &self.line, "swarm", self.wall(now));
        self.pending.push(start);
        self.pending_marks.push((None, None));
        let stored: Vec<Arc<Manifest>> = self.stored.values().cloned().collect();
        for m in stored {
            self.handle(Input::Manifest(m), now);
        }
        self.handle(Input::PlcSync { boot: self.boot, cause: SyncCause::FirstContact }, now);
        self.resume_link(now);
        if !self.broker_down {
            for m in std::mem::take(&mut self.intake) {
                self.manifest(m, now);
            }
        }
        for (seq, sha, barcode) in std::mem::take(&mut self.folder) {
            self.handle(Input::XrayImage { image_seq: seq, sha256: sha, barcode }, now);
        }
    }
}

fn event_tracking(e: &SimEvent) -> Option<u32> {
    match *e {
        SimEvent::Gate { tracking, .. }
        | SimEvent::Weighed { tracking, .. }
        | SimEvent::XrayEntered { tracking, .. }
        | SimEvent::Divert { tracking, .. }
        | SimEvent::Lost { tracking }
        | SimEvent::ForcedHold { tracking, .. } => Some(tracking),
        _ => None,
    }
}

//! The event engine: conveyor, PLC, scanner, X-ray, officers, and the referee's tally.
//!
//! Everything up to the reading gate does not depend on the host, so parcels, labels, lists,
//! gaps and the gate eye's debounce are worked out up front in [`World::new`]. What the host
//! can change (latched destinations, diverters, verdicts) runs through one time-ordered queue.
//!
//! The PLC tracks each parcel in its own encoder window: the window's leading edge is where
//! the debounced gate eye saw the parcel's leading edge, moved on by the belt. It never counts
//! pulses in order, so a stray parcel can never take another parcel's destination.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::gate::{debounce, Edge};
use sortline::core::{Channel, Lane, ManifestStatus, Verdict, Waybill};
use sortline::manifest::{Declaration, DeclaredItem};

use crate::platform::{self, ListFlags};
use crate::s10;
use crate::{ForcedHoldWhy, Geometry, LaneCounts, Ms, ParcelOutcome, Report, ScannerTruth, Scenario, SimEvent};

/// Parcels per run; everything is generated up front, so this bounds memory.
const MAX_PARCELS: u32 = 2_000_000;
/// Reviews the officers' screen holds at once; more are refused (counted).
const MAX_PENDING_REVIEWS: u32 = 10_000;
/// Length of a photo-eye bounce: the beam flickers clear for this long.
pub(crate) const BOUNCE_MS: Ms = 5;
/// How much earlier than the Gate event a fast scanner may report.
const SCAN_EARLY_MAX_MS: Ms = 10;
/// When the first parcel's leading edge passes position 0 (induction).
const START_MS: Ms = 500;
/// A slip puts a parcel this far behind its window beyond the tolerance, at least and at most.
/// Bounded well below the minimum gap, so a stray never sits in the next parcel's window.
const SLIP_BEYOND_TOLERANCE_MM: (u32, u32) = (20, 150);
/// Number of officers at the X-ray screens.
const OFFICERS: u8 = 4;
/// Prefixes of the waybills (EMS, registered, parcels).
const PREFIXES: &[&str] = &["EA", "EB", "EE", "RR", "LX", "CP"];
/// Independent random streams, so that e.g. turning on a fault leaves the parcels alone.
const STREAM_PARCELS: u64 = 0;
const STREAM_PHYSICS: u64 = 1;
const STREAM_PHYSICS_UNITS: u64 = 2;
const STREAM_FAULTS: u64 = 3;
const STREAM_OFFICERS: u64 = 4;
const STREAM_SCALE: u64 = 5;
const STREAM_XRAY: u64 = 6;
/// A parcel without a declaration list weighs this, give or take the scale's error.
const UNLISTED_WEIGHT_G: u32 = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Label {
    Good,
    NoRead,
    Misread,
    Double,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Undeclared {
    MetalTool,
    Battery,
    Liquid,
    DenseObject,
    LicenceGoods,
}

impl Undeclared {
    const ALL: [Undeclared; 5] = [
        Undeclared::MetalTool,
        Undeclared::Battery,
        Undeclared::Liquid,
        Undeclared::DenseObject,
        Undeclared::LicenceGoods,
    ];

    /// What the hidden goods add to the parcel's weight.
    fn weight_g(self) -> u32 {
        match self {
            Undeclared::MetalTool => 450,
            Undeclared::Battery => 180,
            Undeclared::Liquid => 550,
            Undeclared::DenseObject => 1_500,
            Undeclared::LicenceGoods => 350,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Undeclared::MetalTool => "metal_tool",
            Undeclared::Battery => "battery",
            Undeclared::Liquid => "liquid",
            Undeclared::DenseObject => "dense_object",
            Undeclared::LicenceGoods => "licence_goods",
        }
    }
}

/// One physical parcel and its ground truth.
#[derive(Debug)]
struct Parcel {
    waybill: String,
    length_mm: u32,
    label: Label,
    /// What the scanner reads off this parcel's label(s).
    codes: Vec<String>,
    manifest: Option<u32>,
    undeclared: Option<Undeclared>,
    manual_transfer: bool,
    /// Raw time its leading edge reaches the gate eye.
    lead_ms: Ms,
    unit: u32,
}

/// What the PLC sees as one parcel: one physical parcel, or several merged by a close gap,
/// or (tracking None) a parcel the debounced eye never saw.
#[derive(Debug)]
struct Unit {
    first_parcel: u32,
    parcel_count: u32,
    tracking: Option<u32>,
    /// Raw time the leading edge reached the gate eye: the start of its encoder window.
    lead_ms: Ms,
    /// The debounced eye cleared: the PLC assigns the tracking id and measures the length.
    gate_ms: Ms,
    length_mm: u32,
    scan_ms: Ms,
    codes: Vec<String>,
    manual_ms: Option<Ms>,
    latch_ms: Ms,
    /// How far the parcel physically lags its window (0 unless it slipped).
    slip_ms: Ms,
    missed_divert: bool,
    confirm_delay_ms: Ms,
    // Host-driven state.
    gate_seen: bool,
    /// The last destination that arrived before the latch point.
    in_time: Option<u16>,
    last_sent: Option<u16>,
    latched: Option<u16>,
    lost: bool,
    /// The PLC holds it whatever it was asked: safe mode while it was on the belt.
    forced_hold: bool,
    /// The PLC restarted while it was on the belt: no window, no events, it runs into the end lane.
    orphaned: bool,
    /// Lane it physically left by.
    exit_lane: Option<u16>,
    /// Confirmed (or ran off the end); host commands for it are ignored from now on.
    finished: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Gate,
    Scan,
    Xray,
    ManualTransfer,
    Latch,
    WindowCheck(u16),
    Fire(u16),
    Confirm(u16),
    EndArrive,
    Verdict {
        officer: u8,
        verdict: Verdict,
    },
    /// The inspection bench opened the unit's parcels.
    InspectionResult,
}

impl Action {
    /// Order of different actions due in the same millisecond.
    fn rank(self) -> u8 {
        match self {
            Action::Gate => 0,
            Action::Scan => 1,
            Action::Xray => 2,
            Action::ManualTransfer => 3,
            Action::Latch => 4,
            Action::WindowCheck(_) => 5,
            Action::Fire(_) => 6,
            Action::Confirm(_) => 7,
            Action::EndArrive => 8,
            Action::Verdict { .. } => 9,
            Action::InspectionResult => 10,
        }
    }
}

#[derive(Debug)]
struct Scheduled {
    at_ms: Ms,
    unit: u32,
    /// Insertion order: the final tie-break, so the order never depends on the heap.
    seq: u64,
    action: Action,
}

impl Scheduled {
    fn key(&self) -> (Ms, u8, u32, u64) {
        (self.at_ms, self.action.rank(), self.unit, self.seq)
    }
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// The whole line and the people around it, in virtual time.
pub struct World {
    scenario: Scenario,
    geometry: Geometry,
    now_ms: Ms,
    manifests: Vec<Declaration>,
    parcels: Vec<Parcel>,
    units: Vec<Unit>,
    /// Unit index of tracking id `i + 1`.
    by_tracking: Vec<u32>,
    /// Next unit whose first events are not yet queued (units are queued as time reaches
    /// them, which keeps the queue to the parcels on the belt).
    cursor: usize,
    /// Bounded: at most a few entries per unit on the belt plus `MAX_PENDING_REVIEWS`.
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    officer_rng: ChaCha8Rng,
    scale_rng: ChaCha8Rng,
    xray_rng: ChaCha8Rng,
    pending_reviews: u32,
    late_destinations: u32,
    ignored_destinations: u32,
    ignored_reviews: u32,
    missed_diverts: u32,
    slips: u32,
    bounces: u32,
    /// The PLC is in safe mode: destinations refused, every parcel on the belt to the end lane.
    safe_mode: bool,
    plc_restarts: u32,
    /// Lane ids whose lane-full sensor is on: their diverter does not fire.
    lanes_full: BTreeSet<u16>,
    /// Induct held since this time: parcels not yet on the belt wait at the infeed.
    induct_held_since: Option<Ms>,
}

/// What the PLC did with a destination ([`World::set_destination`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationOutcome {
    /// Latched at the latch point unless another one replaces it before.
    Applied,
    /// At or after the latch point: ignored, the parcel keeps the PLC default (end lane).
    Late,
    /// No window with this tracking id (unknown, finished, or lost to a PLC restart).
    UnknownTracking,
    /// Not a lane of this line.
    BadLane,
    /// The PLC is in safe mode, or was while the parcel was on the belt: it goes to the end lane.
    SafeMode,
}

fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

fn draw(rng: &mut ChaCha8Rng, range: &std::ops::RangeInclusive<Ms>) -> Ms {
    rng.random_range(range.clone())
}

fn check_probability(name: &str, p: f64) {
    assert!((0.0..=1.0).contains(&p), "scenario.{name} must be a probability, got {p}");
}

fn validate(scenario: &Scenario, geometry: &Geometry) {
    assert!(scenario.parcels <= MAX_PARCELS, "at most {MAX_PARCELS} parcels");
    for (name, p) in [
        ("no_read", scenario.no_read),
        ("misread", scenario.misread),
        ("double_label", scenario.double_label),
        ("duplicate_read", scenario.duplicate_read),
        ("missing_manifest", scenario.missing_manifest),
        ("rejected", scenario.rejected),
        ("red", scenario.red),
        ("licence_required", scenario.licence_required),
        ("platform_targeted", scenario.platform_targeted),
        ("undeclared", scenario.undeclared),
        ("double_label_listed", scenario.double_label_listed),
        ("officer_slow", scenario.officer_slow),
        ("officer_miss", scenario.officer_miss),
        ("officer_false_alarm", scenario.officer_false_alarm),
        ("manual_transfer", scenario.manual_transfer),
        ("bounce", scenario.bounce),
        ("close_gap", scenario.close_gap),
        ("missed_divert", scenario.missed_divert),
        ("slip", scenario.slip),
        ("scan_early", scenario.scan_early),
    ] {
        check_probability(name, p);
    }
    check_probability("no_read + misread + double_label", scenario.no_read + scenario.misread + scenario.double_label);
    for (name, range) in [
        ("review_ms", &scenario.review_ms),
        ("slow_review_ms", &scenario.slow_review_ms),
        ("manual_transfer_ms", &scenario.manual_transfer_ms),
        ("arrival_period_ms", &scenario.arrival_period_ms),
        ("scan_delay_ms", &scenario.scan_delay_ms),
        ("confirm_delay_ms", &scenario.confirm_delay_ms),
    ] {
        assert!(!range.is_empty(), "scenario.{name} is empty");
    }
    assert!(
        !scenario.length_mm.is_empty() && *scenario.length_mm.start() > 0,
        "scenario.length_mm must be a non-empty range of positive lengths"
    );
    assert!(scenario.debounce_ms > BOUNCE_MS, "the gate eye's debounce must be longer than a bounce ({BOUNCE_MS} ms)");
    assert!(
        scenario.window_eye_upstream_mm > scenario.window_tolerance_mm,
        "the window-check eye must sit further upstream than the window tolerance"
    );
    assert!(geometry.belt_speed_mm_s > 0, "belt speed must be positive");
    assert!(
        geometry.gate_mm < geometry.xray_mm && geometry.xray_mm < geometry.end_mm,
        "gate, X-ray and end of line must be in belt order"
    );
    let mut previous_mm = geometry.xray_mm;
    let mut lane_ids = BTreeSet::from([geometry.end_lane_id]);
    for d in &geometry.diverters {
        assert!(
            previous_mm < d.position_mm && d.position_mm < geometry.end_mm,
            "diverters must be after the X-ray, in belt order, before the end"
        );
        assert!(lane_ids.insert(d.lane_id), "lane ids must be unique");
        previous_mm = d.position_mm;
    }
}

fn mm_to_ms(mm: u32, speed_mm_s: u32) -> Ms {
    u64::from(mm) * 1_000 / u64::from(speed_mm_s)
}

fn ms_to_mm(ms: Ms, speed_mm_s: u32) -> u32 {
    u32::try_from(ms * u64::from(speed_mm_s) / 1_000).unwrap_or(u32::MAX)
}

/// A unique valid S10 waybill; the set of used ones keeps them unique in the run.
fn fresh_waybill(rng: &mut ChaCha8Rng, used: &mut BTreeSet<String>) -> String {
    loop {
        let prefix = platform::pick(rng, PREFIXES);
        let waybill = s10::s10(prefix, rng.random_range(0..=s10::MAX_SERIAL));
        // Collisions are about one in 10^8 per draw: the loop ends almost at once.
        if used.insert(waybill.clone()) {
            return waybill;
        }
    }
}

/// A waybill from [`fresh_waybill`] as a list carries it.
fn listed(waybill: &str) -> Waybill {
    Waybill::parse(waybill).expect("fresh waybills are valid S10 numbers")
}

impl World {
    /// Generates the run from `scenario.seed`. Panics on a scenario or geometry that makes no
    /// sense (a probability above 1, diverters out of order, duplicate lane ids).
    pub fn new(scenario: Scenario, geometry: Geometry) -> World {
        validate(&scenario, &geometry);
        let mut world = World {
            officer_rng: stream(scenario.seed, STREAM_OFFICERS),
            scale_rng: stream(scenario.seed, STREAM_SCALE),
            xray_rng: stream(scenario.seed, STREAM_XRAY),
            scenario,
            geometry,
            now_ms: 0,
            manifests: Vec::new(),
            parcels: Vec::new(),
            units: Vec::new(),
            by_tracking: Vec::new(),
            cursor: 0,
            queue: BinaryHeap::new(),
            seq: 0,
            pending_reviews: 0,
            late_destinations: 0,
            ignored_destinations: 0,
            ignored_reviews: 0,
            missed_diverts: 0,
            slips: 0,
            bounces: 0,
            safe_mode: false,
            plc_restarts: 0,
            lanes_full: BTreeSet::new(),
            induct_held_since: None,
        };
        world.generate_parcels();
        let edges = world.induct();
        world.form_units(&edges);
        world
    }

    /// Labels, lists and hidden goods of every parcel.
    fn generate_parcels(&mut self) {
        let sc = &self.scenario;
        let mut rng = stream(sc.seed, STREAM_PARCELS);
        let mut used = BTreeSet::new();
        let mut parcels = Vec::with_capacity(sc.parcels as usize);
        let mut manifests = Vec::with_capacity(sc.parcels as usize);
        for _ in 0..sc.parcels {
            let waybill = fresh_waybill(&mut rng, &mut used);
            let length_mm = rng.random_range(sc.length_mm.clone());
            let roll: f64 = rng.random();
            let label = if roll < sc.no_read {
                Label::NoRead
            } else if roll < sc.no_read + sc.misread {
                Label::Misread
            } else if roll < sc.no_read + sc.misread + sc.double_label {
                Label::Double
            } else {
                Label::Good
            };
            let codes = match label {
                Label::NoRead => Vec::new(),
                Label::Misread => {
                    let serial: u32 = waybill[2..10].parse().expect("eight digits");
                    let good = s10::check_digit(serial);
                    let wrong = (good + rng.random_range(1..=9)) % 10;
                    vec![s10::s10_with_check(&waybill[..2], serial, wrong)]
                }
                Label::Double => {
                    let other = fresh_waybill(&mut rng, &mut used);
                    // A relabelled parcel: the old label may belong to a real list.
                    if rng.random_bool(sc.double_label_listed) {
                        let seq = manifests.len() as u32;
                        let m = platform::manifest(&mut rng, listed(&other), seq, ListFlags::default());
                        manifests.push(m);
                    }
                    if rng.random_bool(0.5) {
                        vec![waybill.clone(), other]
                    } else {
                        vec![other, waybill.clone()]
                    }
                }
                Label::Good if rng.random_bool(sc.duplicate_read) => {
                    vec![waybill.clone(), waybill.clone()]
                }
                Label::Good => vec![waybill.clone()],
            };
            let manifest = if rng.random_bool(sc.missing_manifest) {
                None
            } else {
                let flags = ListFlags {
                    rejected: rng.random_bool(sc.rejected),
                    red: rng.random_bool(sc.red),
                    licence_required: rng.random_bool(sc.licence_required),
                    platform_targeted: rng.random_bool(sc.platform_targeted),
                };
                let seq = manifests.len() as u32;
                manifests.push(platform::manifest(&mut rng, listed(&waybill), seq, flags));
                Some(seq)
            };
            let undeclared = rng.random_bool(sc.undeclared).then(|| *platform::pick(&mut rng, &Undeclared::ALL));
            let green = manifest.is_some_and(|m| manifests[m as usize].channel == Channel::Green);
            let manual_transfer = rng.random_bool(sc.manual_transfer) && green;
            parcels.push(Parcel {
                waybill,
                length_mm,
                label,
                codes,
                manifest,
                undeclared,
                manual_transfer,
                lead_ms: 0,
                unit: 0,
            });
        }
        self.parcels = parcels;
        self.manifests = manifests;
    }

    /// Gaps between parcels and the raw edges they cast on the gate eye.
    fn induct(&mut self) -> Vec<Edge> {
        let sc = &self.scenario;
        let speed = self.geometry.belt_speed_mm_s;
        let mut rng = stream(sc.seed, STREAM_PHYSICS);
        let mut edges = Vec::with_capacity(self.parcels.len() * 2);
        let mut next_lead_ms = START_MS + mm_to_ms(self.geometry.gate_mm, speed);
        for parcel in &mut self.parcels {
            parcel.lead_ms = next_lead_ms;
            let length_ms = mm_to_ms(parcel.length_mm, speed);
            edges.push(Edge { at_ms: parcel.lead_ms, blocked: true });
            // Only where the glitch fits well inside the parcel, debounce time on each side.
            let room = 2 * sc.debounce_ms + BOUNCE_MS + 2;
            if rng.random_bool(sc.bounce) && length_ms > room {
                let at = rng.random_range(sc.debounce_ms + 1..=length_ms - sc.debounce_ms - BOUNCE_MS - 1);
                edges.push(Edge { at_ms: parcel.lead_ms + at, blocked: false });
                edges.push(Edge { at_ms: parcel.lead_ms + at + BOUNCE_MS, blocked: true });
                self.bounces += 1;
            }
            edges.push(Edge { at_ms: parcel.lead_ms + length_ms, blocked: false });
            let gap_ms = if rng.random_bool(sc.close_gap) {
                // Closer than the debounce can separate.
                rng.random_range(0..=sc.debounce_ms / 2)
            } else {
                let period_ms = draw(&mut rng, &sc.arrival_period_ms);
                period_ms.saturating_sub(length_ms).max(mm_to_ms(sc.min_gap_mm, speed)).max(sc.debounce_ms + 1)
            };
            next_lead_ms = parcel.lead_ms + length_ms + gap_ms;
        }
        edges
    }

    /// Groups parcels as the debounced eye sees them and prepares each group's PLC life.
    fn form_units(&mut self, edges: &[Edge]) {
        let sc = &self.scenario;
        let geo = &self.geometry;
        let speed = geo.belt_speed_mm_s;
        let intervals = debounce(edges, sc.debounce_ms);
        // Parcels by interval of the debounced eye: consecutive parcels in one interval merged.
        let mut units: Vec<Unit> = Vec::new();
        let mut unit_intervals: Vec<Option<usize>> = Vec::new();
        let mut interval = 0;
        for (index, parcel) in self.parcels.iter_mut().enumerate() {
            while intervals.get(interval).is_some_and(|&(_, end)| end <= parcel.lead_ms) {
                interval += 1;
            }
            let seen = intervals.get(interval).is_some_and(|&(start, _)| start <= parcel.lead_ms).then_some(interval);
            if seen.is_some() && unit_intervals.last() == Some(&seen) {
                let unit = units.last_mut().expect("a unit for this interval");
                unit.parcel_count += 1;
                unit.codes.extend(parcel.codes.iter().cloned());
                parcel.unit = units.len() as u32 - 1;
                continue;
            }
            parcel.unit = units.len() as u32;
            unit_intervals.push(seen);
            units.push(Unit {
                first_parcel: index as u32,
                parcel_count: 1,
                tracking: None,
                lead_ms: parcel.lead_ms,
                gate_ms: 0,
                length_mm: 0,
                scan_ms: 0,
                codes: parcel.codes.clone(),
                manual_ms: None,
                latch_ms: 0,
                slip_ms: 0,
                missed_divert: false,
                confirm_delay_ms: 0,
                gate_seen: false,
                in_time: None,
                last_sent: None,
                latched: None,
                lost: false,
                forced_hold: false,
                orphaned: false,
                exit_lane: None,
                finished: false,
            });
        }
        let latch_mm = geo.diverters.first().map_or(geo.end_mm, |d| d.position_mm).saturating_sub(geo.latch_margin_mm);
        let mut physics = stream(sc.seed, STREAM_PHYSICS_UNITS);
        let mut faults = stream(sc.seed, STREAM_FAULTS);
        for (index, (unit, seen)) in units.iter_mut().zip(unit_intervals).enumerate() {
            // Draw the same numbers for every unit, so a fault does not shift the rest.
            let scan_delay_ms = draw(&mut physics, &sc.scan_delay_ms);
            let scan_early = physics.random_bool(sc.scan_early);
            let scan_early_ms = physics.random_range(1..=SCAN_EARLY_MAX_MS);
            let manual_delay_ms = draw(&mut physics, &sc.manual_transfer_ms);
            unit.confirm_delay_ms = draw(&mut physics, &sc.confirm_delay_ms);
            let slip = faults.random_bool(sc.slip);
            let slip_mm =
                sc.window_tolerance_mm + faults.random_range(SLIP_BEYOND_TOLERANCE_MM.0..=SLIP_BEYOND_TOLERANCE_MM.1);
            let missed_divert = faults.random_bool(sc.missed_divert);
            let Some(seen) = seen else {
                // Never seen by the PLC: no tracking id, no window, straight to the end lane.
                continue;
            };
            let (start_ms, end_ms) = intervals[seen];
            unit.tracking = Some(self.by_tracking.len() as u32 + 1);
            self.by_tracking.push(index as u32);
            unit.gate_ms = end_ms + sc.debounce_ms;
            unit.length_mm = ms_to_mm(end_ms - start_ms, speed);
            unit.scan_ms = if scan_early { unit.gate_ms - scan_early_ms } else { unit.gate_ms + scan_delay_ms };
            let first = unit.first_parcel as usize;
            let parcels = &self.parcels[first..first + unit.parcel_count as usize];
            unit.manual_ms = parcels.iter().any(|p| p.manual_transfer).then_some(unit.gate_ms + manual_delay_ms);
            unit.latch_ms = window_ms(geo, unit.lead_ms, latch_mm).max(unit.gate_ms);
            unit.missed_divert = missed_divert;
            if slip && !geo.diverters.is_empty() {
                unit.slip_ms = mm_to_ms(slip_mm, speed);
            }
        }
        self.units = units;
    }

    /// The declaration lists the platform holds for this run, published before the parcels
    /// arrive. Parcels whose truth is "missing manifest" are absent; rejected ones are
    /// present with status Rejected.
    pub fn manifests(&self) -> &[Declaration] {
        &self.manifests
    }

    /// When the next event happens, or None when every parcel has physically left the line
    /// and no officer action is pending.
    pub fn next_event_time(&self) -> Option<Ms> {
        let mut best = self.queue.peek().map(|Reverse(s)| s.at_ms);
        // Units not yet queued: each one's events come at or after its lead time, and lead
        // times increase, so the scan stops at the first unit that starts after `best`.
        for unit in &self.units[self.cursor..] {
            if best.is_some_and(|b| unit.lead_ms > b) || self.held_back(unit) {
                break;
            }
            let first_ms = if unit.tracking.is_some() { unit.gate_ms.min(unit.scan_ms) } else { self.end_ms(unit) };
            best = Some(best.map_or(first_ms, |b| b.min(first_ms)));
        }
        best
    }

    /// Moves the world to `to` and appends every event with time <= `to`, in time order
    /// (ties in a fixed order). Going back in time does nothing.
    pub fn advance(&mut self, to: Ms, out: &mut Vec<(Ms, SimEvent)>) {
        // Each turn queues one unit or handles one entry; both run out, so the loop ends.
        loop {
            let top_ms = self.queue.peek().map(|Reverse(s)| s.at_ms);
            if let Some(unit) = self.units.get(self.cursor) {
                if unit.lead_ms <= to && top_ms.is_none_or(|t| unit.lead_ms <= t) && !self.held_back(unit) {
                    self.enqueue_unit(self.cursor);
                    self.cursor += 1;
                    continue;
                }
            }
            match top_ms {
                Some(t) if t <= to => {
                    let Reverse(entry) = self.queue.pop().expect("peeked");
                    self.handle(entry, out);
                }
                _ => break,
            }
        }
        self.now_ms = self.now_ms.max(to);
    }

    /// Host -> PLC: the destination lane for a tracking id. Unknown or finished tracking ids
    /// and unknown lanes are counted and ignored; a destination at or after the latch point
    /// is counted late and ignored. In safe mode, or for a parcel the PLC holds, it is refused
    /// (counted ignored; the parcel goes to the end lane).
    pub fn set_destination(&mut self, now: Ms, tracking: u32, lane_id: u16) -> DestinationOutcome {
        let arrival_ms = now.max(self.now_ms);
        if self.role_of(lane_id).is_none() {
            self.ignored_destinations += 1;
            return DestinationOutcome::BadLane;
        }
        let Some(u) = self.live_unit(tracking) else {
            self.ignored_destinations += 1;
            return DestinationOutcome::UnknownTracking;
        };
        if self.safe_mode || self.units[u].forced_hold {
            self.ignored_destinations += 1;
            return DestinationOutcome::SafeMode;
        }
        let unit = &mut self.units[u];
        unit.last_sent = Some(lane_id);
        if arrival_ms >= unit.latch_ms {
            self.late_destinations += 1;
            DestinationOutcome::Late
        } else {
            unit.in_time = Some(lane_id);
            DestinationOutcome::Applied
        }
    }

    /// When a parcel on the belt passed the reading gate and when its destination latches,
    /// belt ms; `None` for one not on the belt.
    pub fn gate_and_latch(&self, tracking: u32) -> Option<(Ms, Ms)> {
        self.live_unit(tracking).map(|u| (self.units[u].gate_ms, self.units[u].latch_ms))
    }

    /// PLC safe mode (watchdog, not synced) from `now` on: while it lasts every parcel that
    /// passes the gate, and every parcel on the belt when it starts, goes to the end lane, and
    /// destinations are refused. Parcels held meanwhile stay held when it ends.
    pub fn set_safe_mode(&mut self, now: Ms, on: bool) {
        self.now_ms = self.now_ms.max(now);
        self.safe_mode = on;
        if on {
            for unit in self.units.iter_mut().filter(|u| u.gate_seen && !u.finished) {
                unit.forced_hold = true;
            }
        }
    }

    pub fn safe_mode(&self) -> bool {
        self.safe_mode
    }

    /// The lane-full sensor at the end of `lane_id` turns on or off at `now`. While it is on,
    /// parcels bound for that lane are forced to hold at its diverter's window check.
    pub fn set_lane_full(&mut self, now: Ms, lane_id: u16, on: bool) {
        self.now_ms = self.now_ms.max(now);
        if on {
            self.lanes_full.insert(lane_id);
        } else {
            self.lanes_full.remove(&lane_id);
        }
    }

    pub fn lanes_full(&self) -> impl Iterator<Item = u16> + '_ {
        self.lanes_full.iter().copied()
    }

    /// The PLC holds the induct (safe mode, event ring full) from `now`, or lets it go: parcels
    /// not yet on the belt wait at the infeed and follow, in their order and spacing, as much
    /// later as they waited. Parcels already on the belt run on.
    pub fn set_induct_held(&mut self, now: Ms, held: bool) {
        let now = now.max(self.now_ms);
        match (held, self.induct_held_since) {
            (true, None) => self.induct_held_since = Some(now),
            (false, Some(since)) => {
                let delay = now - since;
                let travel = mm_to_ms(self.geometry.gate_mm, self.geometry.belt_speed_mm_s);
                for unit in &mut self.units[self.cursor..] {
                    if unit.lead_ms.saturating_sub(travel) > since {
                        unit.lead_ms += delay;
                        unit.gate_ms += delay;
                        unit.scan_ms += delay;
                        unit.latch_ms += delay;
                        unit.manual_ms = unit.manual_ms.map(|m| m + delay);
                    }
                }
                self.induct_held_since = None;
            }
            _ => {}
        }
    }

    /// Whether `unit` waits at the infeed: it would enter the belt after the induct was held.
    fn held_back(&self, unit: &Unit) -> bool {
        let travel = mm_to_ms(self.geometry.gate_mm, self.geometry.belt_speed_mm_s);
        self.induct_held_since.is_some_and(|since| unit.lead_ms.saturating_sub(travel) > since)
    }

    /// The PLC restarted at `now`: every window is gone. Parcels on the belt past the gate get
    /// no more PLC events (no X-ray entry, no confirmation) and run on into the end lane;
    /// their tracking ids are unknown to the new run. Tracking ids continue (persistent; the World
    /// numbers them for the whole run, so even across a memory reset, after which a real PLC
    /// would start them from 1 again).
    pub fn plc_restart(&mut self, now: Ms) {
        self.now_ms = self.now_ms.max(now);
        self.plc_restarts += 1;
        for unit in self.units.iter_mut().filter(|u| u.gate_seen && !u.finished) {
            unit.orphaned = true;
            unit.forced_hold = true;
        }
    }

    /// Host -> officer screen: an officer looks at this parcel and answers with
    /// [`SimEvent::Verdict`] after a delay. Unknown or finished tracking ids are counted and
    /// ignored.
    pub fn request_review(&mut self, now: Ms, tracking: u32) {
        let Some(u) = self.live_unit(tracking) else {
            self.ignored_reviews += 1;
            return;
        };
        if self.pending_reviews >= MAX_PENDING_REVIEWS {
            self.ignored_reviews += 1;
            return;
        }
        let sc = &self.scenario;
        let rng = &mut self.officer_rng;
        let delay_ms =
            if rng.random_bool(sc.officer_slow) { draw(rng, &sc.slow_review_ms) } else { draw(rng, &sc.review_ms) };
        let officer = rng.random_range(0..OFFICERS);
        let unit = &self.units[u];
        let first = unit.first_parcel as usize;
        let hidden = self.parcels[first..first + unit.parcel_count as usize].iter().filter_map(|p| p.undeclared);
        let (mut licence_goods, mut other_goods) = (false, false);
        for kind in hidden {
            licence_goods |= kind == Undeclared::LicenceGoods;
            other_goods |= kind != Undeclared::LicenceGoods;
        }
        let verdict = if licence_goods {
            Verdict::Hold
        } else if other_goods {
            if rng.random_bool(sc.officer_miss) {
                Verdict::Release
            } else {
                Verdict::Inspect
            }
        } else if rng.random_bool(sc.officer_false_alarm) {
            Verdict::Inspect
        } else {
            Verdict::Release
        };
        self.pending_reviews += 1;
        let at_ms = now.max(self.now_ms) + delay_ms;
        self.schedule(at_ms, u, Action::Verdict { officer, verdict });
    }

    /// The referee's account of the run so far.
    pub fn report(&self) -> Report {
        let mut report = Report {
            parcels: self.parcels.len() as u32,
            lanes: LaneCounts::default(),
            in_flight: 0,
            not_inducted: 0,
            unsafe_releases: 0,
            undeclared_released: 0,
            wrong_lane: 0,
            late_destinations: self.late_destinations,
            no_destination: 0,
            ignored_destinations: self.ignored_destinations,
            ignored_reviews: self.ignored_reviews,
            missed_diverts: self.missed_diverts,
            slips: self.slips,
            bounces: self.bounces,
            plc_forced_holds: 0,
            plc_restarts: self.plc_restarts,
            merged: 0,
            scanner: ScannerTruth::default(),
            outcomes: Vec::with_capacity(self.parcels.len()),
        };
        for (sim_id, parcel) in self.parcels.iter().enumerate() {
            let unit = &self.units[parcel.unit as usize];
            let merged = unit.parcel_count > 1;
            if merged && unit.first_parcel as usize != sim_id {
                report.merged += 1;
            }
            match parcel.label {
                Label::Good => {}
                Label::NoRead => report.scanner.no_reads += 1,
                Label::Misread => report.scanner.misreads += 1,
                Label::Double => report.scanner.ambiguous += 1,
            }
            let physical = unit.exit_lane.and_then(|lane| self.role_of(lane));
            match physical {
                Some(Lane::Release) => report.lanes.release += 1,
                Some(Lane::Inspection) => report.lanes.inspection += 1,
                Some(Lane::Hold) => report.lanes.hold += 1,
                None if self.held_back(unit) => report.not_inducted += 1,
                None => report.in_flight += 1,
            }
            let destination = unit.last_sent.and_then(|lane| self.role_of(lane));
            let latched = unit.latched.and_then(|lane| self.role_of(lane));
            let must_not_release = self.must_not_release(parcel, merged);
            if physical == Some(Lane::Release) && (latched != Some(Lane::Release) || must_not_release) {
                report.unsafe_releases += 1;
            }
            if physical == Some(Lane::Release) && parcel.undeclared.is_some() {
                report.undeclared_released += 1;
            }
            if unit.forced_hold {
                report.plc_forced_holds += 1;
            }
            // A parcel the PLC held on its own (safe mode, restart) was not misrouted by the host.
            if let (Some(physical), Some(destination), false) = (physical, destination, unit.forced_hold) {
                if physical != destination {
                    report.wrong_lane += 1;
                }
            }
            if destination.is_none() {
                report.no_destination += 1;
            }
            report.outcomes.push(ParcelOutcome {
                sim_id: sim_id as u32,
                waybill: parcel.waybill.clone(),
                tracking: unit.tracking,
                must_not_release,
                truth: self.truth(parcel, merged),
                physical: physical.unwrap_or(Lane::Hold),
                destination,
                destination_in_time: unit.in_time.is_some(),
            });
        }
        report
    }

    fn must_not_release(&self, parcel: &Parcel, merged: bool) -> bool {
        let list_says_no = match parcel.manifest {
            None => true,
            Some(m) => {
                let m = &self.manifests[m as usize];
                m.status == ManifestStatus::Rejected
                    || m.channel == Channel::Red
                    || m.licence_required
                    || m.platform_targeted
            }
        };
        // Concealed goods are not here: no controller can know them before
        // screening finds them; they are counted as `undeclared_released`.
        parcel.label != Label::Good || merged || list_says_no
    }

    /// The main truth of a parcel, strongest first.
    fn truth(&self, parcel: &Parcel, merged: bool) -> String {
        let label = match parcel.label {
            _ if merged => Some("merged"),
            Label::NoRead => Some("no_read"),
            Label::Misread => Some("misread"),
            Label::Double => Some("double"),
            Label::Good => None,
        };
        if let Some(label) = label {
            return label.to_owned();
        }
        let Some(m) = parcel.manifest else {
            return "missing_manifest".to_owned();
        };
        let m = &self.manifests[m as usize];
        let list = if m.status == ManifestStatus::Rejected {
            Some("rejected")
        } else if m.channel == Channel::Red {
            Some("red")
        } else if m.licence_required {
            Some("licence")
        } else if m.platform_targeted {
            Some("targeted")
        } else {
            None
        };
        match (list, parcel.undeclared) {
            (Some(list), _) => list.to_owned(),
            (None, Some(kind)) => format!("undeclared:{}", kind.label()),
            (None, None) => "green".to_owned(),
        }
    }

    fn role_of(&self, lane_id: u16) -> Option<Lane> {
        if lane_id == self.geometry.end_lane_id {
            return Some(Lane::Hold);
        }
        self.geometry.diverters.iter().find(|d| d.lane_id == lane_id).map(|d| d.role)
    }

    /// The unit of a tracking id the host has been told about and that is still on the line.
    fn live_unit(&self, tracking: u32) -> Option<usize> {
        let index = tracking.checked_sub(1)? as usize;
        let u = *self.by_tracking.get(index)? as usize;
        let unit = &self.units[u];
        (unit.gate_seen && !unit.finished && !unit.orphaned).then_some(u)
    }

    /// When the unit physically reaches the end of the line (if it gets there).
    fn end_ms(&self, unit: &Unit) -> Ms {
        window_ms(&self.geometry, unit.lead_ms, self.geometry.end_mm) + unit.slip_ms
    }

    /// What the scale reads for unit `u`: every parcel on it (declared or not, hidden goods
    /// included), within `error_pct`.
    fn weigh(&mut self, u: usize, error_pct: f64) -> u32 {
        let unit = &self.units[u];
        let first = unit.first_parcel as usize;
        let true_g: u32 = self.parcels[first..first + unit.parcel_count as usize]
            .iter()
            .map(|p| {
                let listed = p.manifest.map_or(UNLISTED_WEIGHT_G, |m| self.manifests[m as usize].gross_weight_g);
                listed + p.undeclared.map_or(0, Undeclared::weight_g)
            })
            .sum();
        let error = self.scale_rng.random_range(-error_pct..=error_pct) / 100.0;
        (f64::from(true_g) * (1.0 + error)).round().max(1.0) as u32
    }

    /// What the X-ray tunnel sees of unit `u`: its parcels' declared goods (an unlisted parcel's
    /// are some from the catalogue) and the first undeclared item an image can show.
    fn tunnel_view(&mut self, u: usize) -> (Vec<DeclaredItem>, Option<crate::xray::synth::Concealed>) {
        use crate::xray::synth::{catalogue_items, Concealed};
        let unit = &self.units[u];
        let first = unit.first_parcel as usize;
        let mut items = Vec::new();
        let mut concealed = None;
        for p in &self.parcels[first..first + unit.parcel_count as usize] {
            match p.manifest {
                Some(m) => items.extend(self.manifests[m as usize].items.iter().cloned()),
                None => items.extend(catalogue_items(&mut self.xray_rng)),
            }
            concealed = concealed.or(match p.undeclared {
                Some(Undeclared::MetalTool) => Some(Concealed::MetalTool),
                Some(Undeclared::Battery) => Some(Concealed::Battery),
                Some(Undeclared::Liquid) => Some(Concealed::Liquid),
                Some(Undeclared::DenseObject) => Some(Concealed::DenseObject),
                // Licence goods look like any declared goods on an image.
                Some(Undeclared::LicenceGoods) | None => None,
            });
        }
        (items, concealed)
    }

    fn schedule(&mut self, at_ms: Ms, unit: usize, action: Action) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            // Nothing happens in the past, whatever the geometry.
            at_ms: at_ms.max(self.now_ms),
            unit: unit as u32,
            seq: self.seq,
            action,
        }));
    }

    /// Queues what happens to a unit up to the reading gate.
    fn enqueue_unit(&mut self, u: usize) {
        let unit = &self.units[u];
        if unit.tracking.is_none() {
            let end_ms = self.end_ms(unit);
            self.schedule(end_ms, u, Action::EndArrive);
            return;
        }
        let (gate_ms, scan_ms, manual_ms) = (unit.gate_ms, unit.scan_ms, unit.manual_ms);
        self.schedule(gate_ms, u, Action::Gate);
        self.schedule(scan_ms, u, Action::Scan);
        if let Some(manual_ms) = manual_ms {
            self.schedule(manual_ms, u, Action::ManualTransfer);
        }
    }

    /// Queues the unit's next window check after diverter `next - 1`, or its end of line.
    fn schedule_check(&mut self, u: usize, next: usize) {
        let unit = &self.units[u];
        match self.geometry.diverters.get(next) {
            Some(d) => {
                let eye_mm = d.position_mm.saturating_sub(self.scenario.window_eye_upstream_mm);
                // The PLC decides when the window closes.
                let close_ms = window_ms(&self.geometry, unit.lead_ms, eye_mm)
                    + mm_to_ms(self.scenario.window_tolerance_mm, self.geometry.belt_speed_mm_s);
                self.schedule(close_ms, u, Action::WindowCheck(next as u16));
            }
            None => {
                let end_ms = self.end_ms(unit);
                self.schedule(end_ms, u, Action::EndArrive);
            }
        }
    }

    fn handle(&mut self, entry: Scheduled, out: &mut Vec<(Ms, SimEvent)>) {
        debug_assert!(entry.at_ms >= self.now_ms);
        self.now_ms = entry.at_ms;
        let now = entry.at_ms;
        let u = entry.unit as usize;
        let speed = self.geometry.belt_speed_mm_s;
        let tracking = self.units[u].tracking.unwrap_or(0);
        match entry.action {
            Action::Gate => {
                let safe_mode = self.safe_mode;
                let unit = &mut self.units[u];
                unit.gate_seen = true;
                unit.forced_hold |= safe_mode;
                let (lead_ms, latch_ms, length_mm) = (unit.lead_ms, unit.latch_ms, unit.length_mm);
                out.push((now, SimEvent::Gate { tracking, trigger: tracking, length_mm }));
                if let Some(error_pct) = self.scenario.scale_error_pct.filter(|_| tracking != 0) {
                    let weight_g = self.weigh(u, error_pct);
                    out.push((now, SimEvent::Weighed { tracking, weight_g }));
                }
                let xray_ms = window_ms(&self.geometry, lead_ms, self.geometry.xray_mm);
                self.schedule(xray_ms, u, Action::Xray);
                self.schedule(latch_ms, u, Action::Latch);
                self.schedule_check(u, 0);
            }
            Action::Scan => {
                // Read once: the codes are not needed after this.
                let codes = std::mem::take(&mut self.units[u].codes);
                out.push((now, SimEvent::Scan { trigger: tracking, codes }));
            }
            // The tunnel's entry eye is the PLC's: an orphan has no window to report it for.
            Action::Xray if self.units[u].orphaned => {}
            Action::Xray => {
                out.push((now, SimEvent::XrayEntered { tracking, image_seq: tracking }));
                if self.scenario.xray_images {
                    let (items, concealed) = self.tunnel_view(u);
                    out.push((now, SimEvent::XrayImaged { image_seq: tracking, items, concealed }));
                }
            }
            Action::ManualTransfer => {
                out.push((now, SimEvent::ManualTransfer { tracking, officer: "watch-01".to_owned() }))
            }
            Action::Latch => {
                let unit = &mut self.units[u];
                unit.latched = if unit.forced_hold { None } else { unit.in_time };
            }
            Action::WindowCheck(i) => {
                let i = usize::from(i);
                let unit = &mut self.units[u];
                if unit.slip_ms > mm_to_ms(self.scenario.window_tolerance_mm, speed) {
                    // Not in its window: the PLC drops it and never fires for the stray.
                    unit.lost = true;
                    self.slips += 1;
                    out.push((now, SimEvent::Lost { tracking }));
                    let end_ms = self.end_ms(&self.units[u]);
                    self.schedule(end_ms, u, Action::EndArrive);
                } else if !unit.forced_hold
                    && unit.latched == Some(self.geometry.diverters[i].lane_id)
                    && self.lanes_full.contains(&self.geometry.diverters[i].lane_id)
                {
                    // Its lane is full: the diverter must not fire, the parcel runs on to hold.
                    unit.forced_hold = true;
                    out.push((now, SimEvent::ForcedHold { tracking, why: ForcedHoldWhy::LaneFull }));
                    self.schedule_check(u, i + 1);
                } else if !unit.forced_hold && unit.latched == Some(self.geometry.diverters[i].lane_id) {
                    let lead_ms = unit.lead_ms;
                    let fire_ms = window_ms(&self.geometry, lead_ms, self.geometry.diverters[i].position_mm);
                    self.schedule(fire_ms, u, Action::Fire(i as u16));
                } else {
                    self.schedule_check(u, i + 1);
                }
            }
            Action::Fire(i) => {
                let i = usize::from(i);
                let unit = &mut self.units[u];
                if unit.forced_hold {
                    // Safe mode came between the window check and the diverter: it does not fire.
                    self.schedule_check(u, i + 1);
                } else if unit.missed_divert {
                    // Fired, but the parcel ran straight on under its own window.
                    self.missed_diverts += 1;
                    self.schedule_check(u, i + 1);
                } else {
                    let lane_id = self.geometry.diverters[i].lane_id;
                    unit.exit_lane = Some(lane_id);
                    let confirm_ms = now + unit.confirm_delay_ms;
                    self.schedule(confirm_ms, u, Action::Confirm(lane_id));
                }
            }
            Action::Confirm(lane_id) => {
                self.units[u].finished = true;
                out.push((now, SimEvent::Divert { tracking, lane_id }));
                if self.role_of(lane_id) == Some(Lane::Inspection) {
                    let at_ms = now + draw(&mut self.officer_rng, &self.scenario.inspection_ms);
                    self.schedule(at_ms, u, Action::InspectionResult);
                }
            }
            Action::EndArrive => {
                let lane_id = self.geometry.end_lane_id;
                let unit = &mut self.units[u];
                unit.exit_lane = Some(lane_id);
                unit.finished = true;
                if unit.tracking.is_some() && !unit.lost && !unit.orphaned {
                    out.push((now, SimEvent::Divert { tracking, lane_id }));
                }
            }
            Action::InspectionResult => {
                // Opened, the parcel shows everything: a discrepancy is exactly undeclared goods.
                let unit = &self.units[u];
                let first = unit.first_parcel as usize;
                for p in &self.parcels[first..first + unit.parcel_count as usize] {
                    let (waybill, discrepancy) = (p.waybill.clone(), p.undeclared.is_some());
                    out.push((
                        now,
                        SimEvent::InspectionResult { waybill, officer: "bench-01".to_owned(), discrepancy },
                    ));
                }
            }
            Action::Verdict { officer, verdict } => {
                self.pending_reviews -= 1;
                out.push((
                    now,
                    SimEvent::Verdict { tracking, officer: format!("officer-{:02}", officer + 1), verdict },
                ));
            }
        }
    }
}

/// When a unit's window (its leading edge by the encoder) is at `position_mm`.
fn window_ms(geometry: &Geometry, lead_ms: Ms, position_mm: u32) -> Ms {
    let speed = geometry.belt_speed_mm_s;
    if position_mm >= geometry.gate_mm {
        lead_ms + mm_to_ms(position_mm - geometry.gate_mm, speed)
    } else {
        lead_ms.saturating_sub(mm_to_ms(geometry.gate_mm - position_mm, speed))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use rand::Rng;

    use super::*;

    const RELEASE: u16 = 1;
    const INSPECTION: u16 = 2;
    const END: u16 = 3;

    /// No label, platform or physical faults at all: every parcel is green and clean.
    fn quiet(parcels: u32, seed: u64) -> Scenario {
        Scenario {
            no_read: 0.0,
            misread: 0.0,
            double_label: 0.0,
            duplicate_read: 0.0,
            missing_manifest: 0.0,
            rejected: 0.0,
            red: 0.0,
            licence_required: 0.0,
            platform_targeted: 0.0,
            undeclared: 0.0,
            officer_slow: 0.0,
            officer_miss: 0.0,
            officer_false_alarm: 0.0,
            manual_transfer: 0.0,
            bounce: 0.0,
            close_gap: 0.0,
            missed_divert: 0.0,
            slip: 0.0,
            scan_early: 0.0,
            ..Scenario::demo(parcels, seed)
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum HostAction {
        Destination(u32, u16),
        Review(u32),
    }

    type Plan = Vec<(Ms, HostAction)>;

    /// Runs the world to the end with a host that reacts to events by planning actions.
    /// Host actions due at the same time as world events come after them.
    fn run(world: &mut World, mut host: impl FnMut(&World, Ms, &SimEvent, &mut Plan)) -> Vec<(Ms, SimEvent)> {
        let mut events = Vec::new();
        let mut planned: BTreeMap<(Ms, u64), HostAction> = BTreeMap::new();
        let mut seq = 0;
        for _ in 0..10_000_000 {
            let world_ms = world.next_event_time();
            let host_ms = planned.first_key_value().map(|(&(at, _), _)| at);
            match (world_ms, host_ms) {
                (None, None) => return events,
                (_, Some(h)) if world_ms.is_none_or(|w| h < w) => {
                    let ((at, _), action) = planned.pop_first().expect("peeked");
                    match action {
                        HostAction::Destination(t, lane) => {
                            world.set_destination(at, t, lane);
                        }
                        HostAction::Review(t) => world.request_review(at, t),
                    }
                }
                (Some(w), _) => {
                    let mut batch = Vec::new();
                    world.advance(w, &mut batch);
                    for (at, event) in &batch {
                        let mut plan = Vec::new();
                        host(world, *at, event, &mut plan);
                        for entry in plan {
                            seq += 1;
                            planned.insert((entry.0, seq), entry.1);
                        }
                    }
                    events.extend(batch);
                }
                (None, Some(_)) => unreachable!("handled above"),
            }
        }
        panic!("the run did not end");
    }

    fn unit_of(world: &World, tracking: u32) -> &Unit {
        &world.units[world.by_tracking[tracking as usize - 1] as usize]
    }

    fn parcels_of<'a>(world: &'a World, unit: &Unit) -> &'a [Parcel] {
        let first = unit.first_parcel as usize;
        &world.parcels[first..first + unit.parcel_count as usize]
    }

    /// Sends `lane` to every parcel as soon as its Gate event arrives.
    fn everyone_to(lane: u16) -> impl FnMut(&World, Ms, &SimEvent, &mut Plan) {
        move |_, at, event, plan| {
            if let SimEvent::Gate { tracking, .. } = event {
                plan.push((at, HostAction::Destination(*tracking, lane)));
            }
        }
    }

    fn assert_every_parcel_in_one_lane(world: &World, report: &Report) {
        assert_eq!(report.in_flight, 0);
        let lanes = report.lanes;
        assert_eq!(lanes.release + lanes.inspection + lanes.hold, report.parcels);
        assert_eq!(report.outcomes.len(), report.parcels as usize);
        for parcel in &world.parcels {
            let unit = &world.units[parcel.unit as usize];
            assert!(unit.finished && unit.exit_lane.is_some(), "{parcel:?}");
        }
    }

    #[test]
    fn the_bench_opens_every_parcel_in_the_inspection_lane() {
        let mut world = World::new(Scenario::demo(600, 3), Geometry::demo());
        // Everything the host can identify goes to inspection.
        let events = run(&mut world, |_, at, event, plan| {
            if let SimEvent::Gate { tracking, .. } = event {
                plan.push((at, HostAction::Destination(*tracking, INSPECTION)));
            }
        });
        let report = world.report();
        let results: Vec<(&String, bool)> = events
            .iter()
            .filter_map(|(_, e)| match e {
                SimEvent::InspectionResult { waybill, discrepancy, .. } => Some((waybill, *discrepancy)),
                _ => None,
            })
            .collect();
        assert_eq!(results.len() as u32, report.lanes.inspection);
        for (waybill, discrepancy) in results {
            let parcel = world.parcels.iter().find(|p| &p.waybill == waybill).unwrap();
            assert_eq!(discrepancy, parcel.undeclared.is_some(), "{waybill}");
        }
        assert!(report.lanes.inspection > 0);
    }

    #[test]
    fn a_correct_host_on_time_has_no_wrong_lane_and_nothing_late() {
        let mut world = World::new(Scenario::demo(2_000, 7), Geometry::demo());
        run(&mut world, |world, at, event, plan| {
            if let SimEvent::Gate { tracking, .. } = event {
                let unit = unit_of(world, *tracking);
                let parcels = parcels_of(world, unit);
                let merged = parcels.len() > 1;
                let lane = if parcels.iter().any(|p| world.must_not_release(p, merged)) {
                    END
                } else if parcels.iter().any(|p| p.undeclared.is_some()) {
                    INSPECTION
                } else {
                    RELEASE
                };
                plan.push((at, HostAction::Destination(*tracking, lane)));
            }
        });
        let report = world.report();
        assert_every_parcel_in_one_lane(&world, &report);
        assert_eq!(report.parcels, 2_000);
        assert_eq!(report.wrong_lane, 0);
        assert_eq!(report.late_destinations, 0);
        assert_eq!(report.unsafe_releases, 0);
        assert_eq!(report.no_destination, 0);
        assert_eq!(report.ignored_destinations, 0);
        assert_eq!((report.missed_diverts, report.slips), (0, 0));
        // The default mix shows up.
        assert!(report.lanes.release > 1_200, "{:?}", report.lanes);
        assert!(report.lanes.inspection > 20, "{:?}", report.lanes);
        assert!(report.lanes.hold > 300, "{:?}", report.lanes);
        assert!(report.bounces > 10 && report.scanner.no_reads > 20);
        assert!(report.outcomes.iter().all(|o| o.destination_in_time));
    }

    #[test]
    fn bounces_are_debounced_one_parcel_one_tracking_id() {
        let scenario = Scenario { bounce: 1.0, ..quiet(50, 3) };
        let mut world = World::new(scenario, Geometry::demo());
        let events = run(&mut world, everyone_to(RELEASE));
        let gates: Vec<_> = events
            .iter()
            .filter_map(|(_, e)| match e {
                SimEvent::Gate { tracking, trigger, .. } => Some((*tracking, *trigger)),
                _ => None,
            })
            .collect();
        let expected: Vec<_> = (1..=50).map(|t| (t, t)).collect();
        assert_eq!(gates, expected);
        let report = world.report();
        assert_eq!(report.bounces, 50);
        assert_eq!(report.lanes.release, 50);
        assert_eq!(report.unsafe_releases, 0);
    }

    #[test]
    fn a_close_gap_merges_two_parcels_into_one_tracking_id() {
        let scenario = Scenario { close_gap: 1.0, ..quiet(2, 11) };
        let mut world = World::new(scenario, Geometry::demo());
        let lengths_mm: u32 = world.parcels.iter().map(|p| p.length_mm).sum();
        let waybills: Vec<_> = world.parcels.iter().map(|p| p.waybill.clone()).collect();
        // Release for the merged pair: both parcels share its fate, which is unsafe.
        let events = run(&mut world, everyone_to(RELEASE));
        let gates: Vec<_> = events
            .iter()
            .filter_map(|(_, e)| match e {
                SimEvent::Gate { length_mm, .. } => Some(*length_mm),
                _ => None,
            })
            .collect();
        assert_eq!(gates.len(), 1);
        // Summed length plus a gap of at most a few mm.
        assert!((lengths_mm - 2..=lengths_mm + 10).contains(&gates[0]), "{gates:?}");
        assert!(events.contains(&(
            events.iter().find(|(_, e)| matches!(e, SimEvent::Scan { .. })).unwrap().0,
            SimEvent::Scan { trigger: 1, codes: waybills }
        )));
        let report = world.report();
        assert_eq!(report.merged, 1);
        for outcome in &report.outcomes {
            assert_eq!(outcome.tracking, Some(1));
            assert_eq!(outcome.truth, "merged");
            assert!(outcome.must_not_release);
            assert_eq!(outcome.physical, Lane::Release);
        }
        assert_eq!(report.unsafe_releases, 2);
    }

    /// One quiet parcel; the host sends release `offset_ms` after the latch point.
    fn release_relative_to_latch(offset_ms: i64) -> (Vec<(Ms, SimEvent)>, Report) {
        let mut world = World::new(quiet(1, 5), Geometry::demo());
        let latch_ms = world.units[0].latch_ms;
        let at_ms = latch_ms.checked_add_signed(offset_ms).unwrap();
        let events = run(&mut world, move |_, _, event, plan| {
            if let SimEvent::Gate { tracking, .. } = event {
                plan.push((at_ms, HostAction::Destination(*tracking, RELEASE)));
            }
        });
        (events, world.report())
    }

    #[test]
    fn a_destination_before_the_latch_point_is_obeyed() {
        let (events, report) = release_relative_to_latch(-1);
        assert!(events.iter().any(|(_, e)| *e == SimEvent::Divert { tracking: 1, lane_id: RELEASE }));
        assert_eq!(report.lanes.release, 1);
        assert_eq!((report.late_destinations, report.wrong_lane), (0, 0));
        assert!(report.outcomes[0].destination_in_time);
    }

    #[test]
    fn a_late_destination_leaves_the_parcel_on_the_plc_default() {
        for offset_ms in [0, 1, 5_000] {
            let (events, report) = release_relative_to_latch(offset_ms);
            assert!(events.iter().any(|(_, e)| *e == SimEvent::Divert { tracking: 1, lane_id: END }));
            assert_eq!(report.lanes.hold, 1);
            assert_eq!(report.late_destinations, 1);
            assert_eq!(report.wrong_lane, 1);
            assert_eq!(report.unsafe_releases, 0);
            let outcome = &report.outcomes[0];
            assert_eq!(outcome.destination, Some(Lane::Release));
            assert!(!outcome.destination_in_time);
        }
    }

    #[test]
    fn a_missed_divert_runs_on_to_the_end_lane() {
        let scenario = Scenario { missed_divert: 1.0, ..quiet(3, 9) };
        let mut world = World::new(scenario, Geometry::demo());
        let events = run(&mut world, everyone_to(RELEASE));
        let diverts: Vec<_> =
            events.iter().filter(|(_, e)| matches!(e, SimEvent::Divert { .. })).map(|(_, e)| e.clone()).collect();
        let expected: Vec<_> = (1..=3).map(|tracking| SimEvent::Divert { tracking, lane_id: END }).collect();
        assert_eq!(diverts, expected);
        let report = world.report();
        assert_eq!(report.lanes.hold, 3);
        assert_eq!(report.missed_diverts, 3);
        assert_eq!(report.wrong_lane, 3);
        assert_eq!(report.unsafe_releases, 0);
    }

    #[test]
    fn a_missed_divert_into_inspection_never_ends_in_release() {
        let scenario = Scenario { missed_divert: 1.0, ..quiet(3, 9) };
        let mut world = World::new(scenario, Geometry::demo());
        run(&mut world, everyone_to(INSPECTION));
        let report = world.report();
        assert_eq!(report.lanes.hold, 3);
        assert_eq!(report.lanes.release, 0);
    }

    #[test]
    fn a_slipped_parcel_is_lost_and_ends_in_the_end_lane() {
        let scenario = Scenario { slip: 1.0, ..quiet(3, 2) };
        let mut world = World::new(scenario, Geometry::demo());
        let events = run(&mut world, everyone_to(RELEASE));
        let plc: Vec<_> = events
            .iter()
            .filter(|(_, e)| matches!(e, SimEvent::Divert { .. } | SimEvent::Lost { .. }))
            .map(|(_, e)| e.clone())
            .collect();
        let expected: Vec<_> = (1..=3).map(|tracking| SimEvent::Lost { tracking }).collect();
        assert_eq!(plc, expected);
        let report = world.report();
        assert_eq!(report.lanes.hold, 3);
        assert_eq!(report.slips, 3);
        assert_eq!(report.unsafe_releases, 0);
        assert_every_parcel_in_one_lane(&world, &report);
    }

    /// A host that sends a lane derived from the tracking id and asks for every review.
    fn busy_host(_: &World, at: Ms, event: &SimEvent, plan: &mut Plan) {
        match event {
            SimEvent::Gate { tracking, .. } => {
                let lane = [RELEASE, INSPECTION, END][*tracking as usize % 3];
                plan.push((at + 100, HostAction::Destination(*tracking, lane)));
            }
            SimEvent::XrayEntered { tracking, .. } => {
                plan.push((at + 50, HostAction::Review(*tracking)));
            }
            SimEvent::ManualTransfer { tracking, .. } => {
                plan.push((at, HostAction::Destination(*tracking, END)));
            }
            _ => {}
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_events() {
        let events = |seed| {
            let scenario = Scenario::demo(300, seed).with_faults();
            let mut world = World::new(scenario, Geometry::demo());
            let events = run(&mut world, busy_host);
            (events, world.manifests().to_vec())
        };
        let (first, manifests) = events(42);
        assert_eq!((first.clone(), manifests), events(42));
        assert_ne!(first, events(43).0);
        assert!(first.windows(2).all(|w| w[0].0 <= w[1].0), "time order");
    }

    #[test]
    fn faults_leave_the_parcels_and_lists_alone() {
        let plain = World::new(Scenario::demo(200, 8), Geometry::demo());
        let faulty = World::new(Scenario::demo(200, 8).with_faults(), Geometry::demo());
        assert_eq!(plain.manifests(), faulty.manifests());
        let gates = |w: &World| w.units.iter().map(|u| u.gate_ms).collect::<Vec<_>>();
        assert_eq!(gates(&plain), gates(&faulty));
    }

    #[test]
    fn devices_keep_their_timing_promises() {
        let scenario = Scenario { manual_transfer: 0.2, ..Scenario::demo(500, 13) };
        let mut world = World::new(scenario, Geometry::demo());
        let events = run(&mut world, busy_host);
        let mut gate_at = BTreeMap::new();
        let mut xray_at = BTreeMap::new();
        let mut reviews = 0;
        for (at, event) in &events {
            match event {
                SimEvent::Gate { tracking, .. } => {
                    gate_at.insert(*tracking, *at);
                }
                SimEvent::XrayEntered { tracking, image_seq } => {
                    assert_eq!(tracking, image_seq);
                    xray_at.insert(*tracking, *at);
                }
                _ => {}
            }
        }
        for (at, event) in &events {
            match event {
                SimEvent::Scan { trigger, codes } => {
                    let gate = gate_at[trigger];
                    assert!((gate - 10..=gate + 80).contains(at), "scan at {at}, gate {gate}");
                    for code in codes {
                        assert_eq!(code.len(), 13);
                    }
                }
                SimEvent::Verdict { tracking, officer, .. } => {
                    reviews += 1;
                    let asked = xray_at[tracking] + 50;
                    let delay = at - asked;
                    assert!((3_000..=12_000).contains(&delay) || (25_000..=40_000).contains(&delay), "{delay}");
                    assert!(["officer-01", "officer-02", "officer-03", "officer-04"].contains(&officer.as_str()));
                }
                SimEvent::ManualTransfer { tracking, officer } => {
                    let delay = at - gate_at[tracking];
                    assert!((1_000..=5_000).contains(&delay));
                    assert_eq!(officer, "watch-01");
                    let unit = unit_of(&world, *tracking);
                    assert!(parcels_of(&world, unit)
                        .iter()
                        .any(|p| p.manifest.is_some_and(|m| world.manifests[m as usize].channel == Channel::Green)));
                }
                _ => {}
            }
        }
        assert_eq!(reviews, xray_at.len());
        assert!(events.iter().any(|(_, e)| matches!(e, SimEvent::ManualTransfer { .. })));
    }

    #[test]
    fn verdicts_follow_the_truth() {
        let scenario = Scenario { undeclared: 0.5, ..quiet(400, 21) };
        let mut world = World::new(scenario, Geometry::demo());
        let events = run(&mut world, busy_host);
        let mut seen = 0;
        for (_, event) in &events {
            if let SimEvent::Verdict { tracking, verdict, .. } = event {
                seen += 1;
                let parcel = &parcels_of(&world, unit_of(&world, *tracking))[0];
                let expected = match parcel.undeclared {
                    Some(Undeclared::LicenceGoods) => Verdict::Hold,
                    Some(_) => Verdict::Inspect,
                    None => Verdict::Release,
                };
                assert_eq!(*verdict, expected);
            }
        }
        assert_eq!(seen, 400);
    }

    #[test]
    fn commands_for_unknown_or_finished_parcels_are_counted_and_ignored() {
        let mut world = World::new(quiet(2, 1), Geometry::demo());
        // Nothing has passed the gate yet.
        world.set_destination(0, 1, RELEASE);
        world.request_review(0, 1);
        world.set_destination(0, 0, RELEASE);
        let events = run(&mut world, everyone_to(INSPECTION));
        let end = events.last().unwrap().0;
        world.set_destination(end, 1, RELEASE);
        world.request_review(end, 2);
        world.set_destination(end, 999, RELEASE);
        let report = world.report();
        assert_eq!(report.ignored_destinations, 4);
        assert_eq!(report.ignored_reviews, 2);
        assert_eq!(report.lanes.inspection, 2);
        // An unknown lane id is ignored too.
        let mut world = World::new(quiet(1, 1), Geometry::demo());
        run(&mut world, everyone_to(77));
        let report = world.report();
        assert_eq!((report.ignored_destinations, report.no_destination), (1, 1));
        assert_eq!(report.lanes.hold, 1);
    }

    #[test]
    fn a_held_induct_keeps_parcels_off_the_belt_and_lets_them_follow_later() {
        let first_gate = |world: &World| world.units.iter().map(|u| u.gate_ms).min().unwrap();
        let mut world = World::new(quiet(4, 1), Geometry::demo());
        let gate_ms = first_gate(&world);
        // Held from the start for ten seconds: nothing moves, then the same run, later.
        world.set_induct_held(0, true);
        let mut out = Vec::new();
        world.advance(10_000, &mut out);
        assert!(out.is_empty() && world.next_event_time().is_none(), "{out:?}");
        assert_eq!(world.report().not_inducted, 4);
        world.set_induct_held(10_000, false);
        assert_eq!(first_gate(&world), gate_ms + 10_000);
        run(&mut world, everyone_to(INSPECTION));
        let report = world.report();
        assert_eq!((report.lanes.inspection, report.not_inducted, report.in_flight), (4, 0, 0));
    }

    #[test]
    fn waybills_are_valid_unique_s10_numbers() {
        let world = World::new(Scenario::demo(3_000, 5), Geometry::demo());
        let mut seen = BTreeSet::new();
        for parcel in &world.parcels {
            let w = &parcel.waybill;
            assert_eq!(w.len(), 13);
            assert!(w[..2].bytes().all(|b| b.is_ascii_uppercase()));
            assert!(w.ends_with("CN"));
            let serial: u32 = w[2..10].parse().unwrap();
            assert_eq!(s10::s10(&w[..2], serial), *w);
            assert!(seen.insert(w.clone()));
            if parcel.label == Label::Misread {
                assert_ne!(parcel.codes[0], *w);
                assert_eq!(parcel.codes[0][..10], w[..10]);
            }
        }
        let report = world.report();
        let missing = report.outcomes.iter().filter(|o| o.truth == "missing_manifest").count();
        assert!(missing > 30, "{missing}");
    }

    #[test]
    fn nothing_happens_without_parcels() {
        let mut world = World::new(quiet(0, 1), Geometry::demo());
        assert_eq!(world.next_event_time(), None);
        let mut out = Vec::new();
        world.advance(1_000_000, &mut out);
        assert!(out.is_empty());
        assert_eq!(world.report().parcels, 0);
    }

    #[derive(Clone, Copy, Debug)]
    enum Policy {
        Silent,
        ReleaseEveryone,
        Random,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever the host does, release is earned: a parcel reaches the release lane only
        /// under a latched release destination for its own window, and every parcel ends in
        /// exactly one lane.
        #[test]
        fn release_is_earned_whatever_the_host_does(
            seed in any::<u64>(),
            host_seed in any::<u64>(),
            parcels in 1u32..40,
            faults in any::<bool>(),
            heavy in any::<bool>(),
            belt_speed_mm_s in 300u32..1_200,
            latch_margin_mm in 0u32..3_000,
            policy in prop_oneof![
                Just(Policy::Silent),
                Just(Policy::ReleaseEveryone),
                Just(Policy::Random)
            ],
        ) {
            let mut scenario = Scenario::demo(parcels, seed);
            if faults {
                scenario = scenario.with_faults();
            }
            if heavy {
                scenario.bounce = 0.3;
                scenario.close_gap = 0.2;
                scenario.missed_divert = 0.2;
                scenario.slip = 0.2;
            }
            let geometry = Geometry {
                belt_speed_mm_s,
                latch_margin_mm,
                ..Geometry::demo()
            };
            let mut world = World::new(scenario, geometry);
            let mut host_rng = ChaCha8Rng::seed_from_u64(host_seed);
            let events = run(&mut world, |_, at, event, plan| {
                let tracking = match event {
                    SimEvent::Gate { tracking, .. } | SimEvent::XrayEntered { tracking, .. } => {
                        *tracking
                    }
                    _ => return,
                };
                match policy {
                    Policy::Silent => {}
                    Policy::ReleaseEveryone => {
                        let delay = host_rng.random_range(0..30_000);
                        plan.push((at + delay, HostAction::Destination(tracking, RELEASE)));
                    }
                    Policy::Random => {
                        for _ in 0..host_rng.random_range(0..3) {
                            let delay = host_rng.random_range(0..30_000);
                            let lane = *platform::pick(&mut host_rng, &[RELEASE, INSPECTION, END, 99]);
                            plan.push((at + delay, HostAction::Destination(tracking, lane)));
                        }
                        if host_rng.random_bool(0.3) {
                            let delay = host_rng.random_range(0..30_000);
                            plan.push((at + delay, HostAction::Review(tracking)));
                        }
                    }
                }
            });
            prop_assert!(events.windows(2).all(|w| w[0].0 <= w[1].0));
            let report = world.report();
            assert_every_parcel_in_one_lane(&world, &report);
            for (parcel, outcome) in world.parcels.iter().zip(&report.outcomes) {
                let unit = &world.units[parcel.unit as usize];
                let exit = unit.exit_lane.unwrap();
                if exit != END {
                    // Diverted: only by its own latched destination, never when lost.
                    prop_assert_eq!(unit.latched, Some(exit));
                    prop_assert!(!unit.lost);
                }
                if outcome.physical == Lane::Release {
                    prop_assert_eq!(world.role_of(unit.latched.unwrap()), Some(Lane::Release));
                    prop_assert!(unit.tracking.is_some());
                }
                if unit.lost {
                    prop_assert_eq!(exit, END);
                }
            }
            // Each tracking id gets exactly one of: Divert, Lost.
            let mut ends = BTreeMap::new();
            for (_, event) in &events {
                if let SimEvent::Divert { tracking, .. } | SimEvent::Lost { tracking } = event {
                    *ends.entry(*tracking).or_insert(0) += 1;
                }
            }
            prop_assert_eq!(ends.len(), world.by_tracking.len());
            prop_assert!(ends.values().all(|&n| n == 1));
            let unsafe_by_truth = report
                .outcomes
                .iter()
                .filter(|o| o.physical == Lane::Release && o.must_not_release)
                .count() as u32;
            prop_assert_eq!(report.unsafe_releases, unsafe_by_truth);
        }
    }
}

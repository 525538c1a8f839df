//! # sortline-sim
//!
//! A deterministic, virtual-time model of a customs inspection sorting line and the people
//! around it: the conveyor and its PLC, the reading gate's scanner, the X-ray tunnel, the
//! platform's declaration lists and the officers. It stands in for the hardware in the
//! daemon's demo and tests, and it is the referee: it knows where every parcel physically
//! went and what its ground truth was ([`Report`]).
//!
//! It only models physics, devices, data and people; it never decides a lane. One seed
//! ([`Scenario::seed`]) determines everything: the same seed and the same host calls give the
//! same events.
//!
//! It builds on `sortline` and speaks its domain types: the platform's lists are
//! [`sortline::manifest::Declaration`]s, lanes [`sortline::core::Lane`]s, officers' verdicts
//! [`sortline::core::Verdict`]s. Its own types are what sortline has no counterpart for: the
//! line's geometry, the scenario, the events, the referee's report, and the X-ray station's
//! image ([`xray::SimImage`], which sortline's unit tests use through a dev-dependency, where
//! the two crates' types are not the same).
//!
//! # Layout
//! - `lib.rs`: the public types: geometry, scenario, events, report.
//! - `world`: the event engine ([`World`]): conveyor, PLC, scanner, X-ray, officers, referee.
//! - `plc`: the PLC's side of the register map ([`PlcRegisters`]), pure: the register bank,
//!   the event ring writer, the destination ring reader, heartbeats, watchdog, boot counter
//!   and nonce.
//! - [`modbus`]: the simulated PLC as a Modbus TCP server (or RTU slave): the World in real time × a speed
//!   factor behind [`PlcRegisters`], with fault knobs (drop, stall, exception, restart, memory
//!   reset).
//! - [`rtu`]: Modbus RTU framing for the simulated PLC on a pseudo-terminal
//!   ([`modbus::SimPlc::start_rtu`]).
//! - [`scanner`]: simulated barcode scanners: the World's scans framed per a profile and served
//!   over a pseudo-terminal or TCP, with wire faults (noise, splits, duplicates, disconnects).
//! - `gate`: the reading gate's photo-eye and its debounce filter.
//! - `platform`: the platform's declaration lists, built from a catalogue of goods.
//! - `s10`: UPU S10 waybill numbers.
//! - [`bench`]: `sortline-sim bench`, the whole stack in real time at rising rates.
//! - [`line`]: `sortline-sim line`, the simulated line as a process of its own for
//!   `sortline run`.
//! - `xray`: the simulated X-ray station: synthesised images, written to a folder or a TCP stream.

use std::ops::RangeInclusive;

use serde::Serialize;
use sortline::core::{Lane, Verdict};
use sortline::manifest::DeclaredItem;

pub mod bench;
pub mod demo;
mod gate;
pub mod line;
pub mod modbus;
mod platform;
mod plc;
mod pty;
pub mod rtu;
mod s10;
pub mod scanner;
pub mod swarm;
mod world;
pub mod xray;

pub use plc::{PlcRegisters, PlcScan, RegisterFault};
pub use world::{DestinationOutcome, World};

/// Virtual milliseconds since the start of a run.
pub type Ms = u64;

/// One diverter and the lane it pushes parcels into.
#[derive(Clone, Debug)]
pub struct Diverter {
    pub lane_id: u16,
    /// What the lane is for.
    pub role: Lane,
    pub position_mm: u32,
}

/// Where things are on the belt, in mm from the induction point.
#[derive(Clone, Debug)]
pub struct Geometry {
    pub belt_speed_mm_s: u32,
    /// Reading gate: photo-eye and scanner.
    pub gate_mm: u32,
    /// X-ray tunnel entry.
    pub xray_mm: u32,
    /// In belt order. Each has a window-check photo-eye just upstream
    /// ([`Scenario::window_eye_upstream_mm`]) and a confirm photo-eye at its lane mouth.
    pub diverters: Vec<Diverter>,
    /// End of the line: everything that was not diverted leaves here.
    pub end_mm: u32,
    /// The lane at the end of the line (role Hold).
    pub end_lane_id: u16,
    /// The PLC latches a parcel's destination when its leading edge is this far before the
    /// first diverter; a destination arriving later is ignored (counted late) and the parcel
    /// keeps the PLC default: the end lane (hold).
    pub latch_margin_mm: u32,
}

impl Geometry {
    /// A plausible line: inspection lane 2, release lane 1, end lane 3 (hold); about 21 s from
    /// the X-ray to the latch point at 600 mm/s, so normal reviews make it and slow ones don't.
    pub fn demo() -> Geometry {
        Geometry {
            belt_speed_mm_s: 600,
            gate_mm: 1_000,
            xray_mm: 2_500,
            diverters: vec![
                Diverter { lane_id: 2, role: Lane::Inspection, position_mm: 16_000 },
                Diverter { lane_id: 1, role: Lane::Release, position_mm: 18_000 },
            ],
            end_mm: 20_000,
            end_lane_id: 3,
            latch_margin_mm: 1_000,
        }
    }
}

/// Everything a run is made of: size, seed, the mix of truths and faults, and device timings.
/// Probabilities are per parcel unless said otherwise, between 0 and 1.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub parcels: u32,

    // Label truth (exclusive; the rest are Good).
    pub no_read: f64,
    pub misread: f64,
    pub double_label: f64,
    /// A good label read twice in one frame (still one waybill).
    pub duplicate_read: f64,

    // Platform data.
    pub missing_manifest: f64,
    pub rejected: f64,
    pub red: f64,
    pub licence_required: f64,
    pub platform_targeted: f64,
    /// Goods the list does not declare: metal tool, battery, liquid, dense object, licence goods.
    pub undeclared: f64,
    /// Of double labels: the second waybill has a list of its own on the platform.
    pub double_label_listed: f64,

    // Officers.
    /// Per review.
    pub officer_slow: f64,
    /// Per review of undeclared goods that are not licence goods: the officer releases it.
    pub officer_miss: f64,
    /// Per review of a clean parcel: the officer asks for inspection.
    pub officer_false_alarm: f64,
    /// Per green-channel parcel.
    pub manual_transfer: f64,
    pub review_ms: RangeInclusive<Ms>,
    pub slow_review_ms: RangeInclusive<Ms>,
    /// After the Gate event.
    pub manual_transfer_ms: RangeInclusive<Ms>,
    /// From a parcel entering the inspection lane to the bench's result.
    pub inspection_ms: RangeInclusive<Ms>,

    // Physical faults.
    /// A 5 ms off/on glitch of the gate beam inside a parcel.
    pub bounce: f64,
    /// Gap to the previous parcel below what the debounced eye can separate.
    pub close_gap: f64,
    /// Per fired diverter: it fires and the parcel runs straight on.
    pub missed_divert: f64,
    /// Per tracked parcel: it falls behind its window before the first window-check eye.
    pub slip: f64,

    // Induction and devices.
    pub length_mm: RangeInclusive<u32>,
    /// Leading edge to leading edge, before the minimum gap is enforced.
    pub arrival_period_ms: RangeInclusive<Ms>,
    pub min_gap_mm: u32,
    pub debounce_ms: Ms,
    /// Scanner result after the Gate event.
    pub scan_delay_ms: RangeInclusive<Ms>,
    /// Share of scans that arrive a few ms before the Gate event.
    pub scan_early: f64,
    pub window_tolerance_mm: u32,
    pub window_eye_upstream_mm: u32,
    /// From firing a diverter to the lane-mouth eye seeing the parcel.
    pub confirm_delay_ms: RangeInclusive<Ms>,
    /// A line scale under the reading gate, within this many percent of the true weight;
    /// `None`: the line has no scale.
    pub scale_error_pct: Option<f64>,
    /// The X-ray station images each parcel in the tunnel ([`SimEvent::XrayImaged`]).
    pub xray_images: bool,
}

impl Scenario {
    /// The default mix. Physical faults that cannot be handled without a wrong lane (missed
    /// divert, slip) are off; [`Scenario::with_faults`] turns them on.
    pub fn demo(parcels: u32, seed: u64) -> Scenario {
        Scenario {
            seed,
            parcels,
            no_read: 0.03,
            misread: 0.01,
            double_label: 0.005,
            duplicate_read: 0.02,
            missing_manifest: 0.03,
            rejected: 0.02,
            red: 0.10,
            licence_required: 0.03,
            platform_targeted: 0.03,
            undeclared: 0.05,
            double_label_listed: 0.5,
            officer_slow: 0.05,
            officer_miss: 0.05,
            officer_false_alarm: 0.02,
            manual_transfer: 0.01,
            review_ms: 3_000..=12_000,
            slow_review_ms: 25_000..=40_000,
            manual_transfer_ms: 1_000..=5_000,
            inspection_ms: 60_000..=240_000,
            bounce: 0.02,
            close_gap: 0.005,
            missed_divert: 0.0,
            slip: 0.0,
            length_mm: 200..=600,
            arrival_period_ms: 1_200..=2_500,
            min_gap_mm: 300,
            debounce_ms: 20,
            scan_delay_ms: 20..=80,
            scan_early: 0.05,
            window_tolerance_mm: 60,
            window_eye_upstream_mm: 150,
            confirm_delay_ms: 270..=330,
            scale_error_pct: Some(2.0),
            xray_images: true,
        }
    }

    /// Also turns on missed diverts (2 %) and belt slip (1 %).
    pub fn with_faults(self) -> Scenario {
        Scenario { missed_divert: 0.02, slip: 0.01, ..self }
    }
}

/// What the line and the people tell the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimEvent {
    /// PLC: a parcel passed the reading gate (debounced eye): its tracking id, the scanner's
    /// trigger count and the measured length. Emitted when the eye clears.
    Gate { tracking: u32, trigger: u32, length_mm: u32 },
    /// Scanner: codes read at that trigger; empty is a no-read. Usually 20–80 ms after the
    /// Gate event, sometimes a few ms before it: match by trigger.
    Scan { trigger: u32, codes: Vec<String> },
    /// PLC: the line scale's reading, right after the Gate event (lines with a scale).
    Weighed { tracking: u32, weight_g: u32 },
    /// PLC: the parcel entered the X-ray tunnel.
    XrayEntered { tracking: u32, image_seq: u32 },
    /// X-ray station (for the simulated station, not the host): what the tunnel sees of the
    /// parcel that entered with `image_seq`: the goods it carries, declared or not.
    XrayImaged { image_seq: u32, items: Vec<DeclaredItem>, concealed: Option<xray::synth::Concealed> },
    /// Officer at the X-ray screen, after [`World::request_review`].
    Verdict { tracking: u32, officer: String, verdict: Verdict },
    /// An officer watching green parcels moves this one to review by hand.
    ManualTransfer { tracking: u32, officer: String },
    /// Inspection bench: the parcel was opened (查验并录入结果); a discrepancy means goods the
    /// list does not declare. Some minutes after it entered the inspection lane.
    InspectionResult { waybill: String, officer: String, discrepancy: bool },
    /// PLC: confirmed by the lane-mouth eye (the end-of-line eye for the end lane).
    Divert { tracking: u32, lane_id: u16 },
    /// PLC: the parcel was not seen in its window at a window-check eye; the PLC stops
    /// tracking it (no Divert follows) and it physically ends in the end lane.
    Lost { tracking: u32 },
    /// PLC: the parcel goes to the end lane whatever its destination said; a Divert for the
    /// end lane follows.
    ForcedHold { tracking: u32, why: ForcedHoldWhy },
}

/// Why the simulated PLC forced a parcel to hold (the map's `codes.forced_hold`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForcedHoldWhy {
    /// Its lane was full when it reached the diverter.
    LaneFull,
}

impl ForcedHoldWhy {
    /// The name of its `codes.forced_hold` entry in the register map.
    pub fn code_name(self) -> &'static str {
        match self {
            ForcedHoldWhy::LaneFull => "LANE_FULL",
        }
    }
}

/// Where parcels physically left the line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LaneCounts {
    pub release: u32,
    pub inspection: u32,
    pub hold: u32,
}

/// Parcels by label truth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ScannerTruth {
    pub no_reads: u32,
    pub misreads: u32,
    pub ambiguous: u32,
}

/// The referee's account of a run (or of the run so far).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Physical parcels in the scenario.
    pub parcels: u32,
    /// Where parcels physically left the line.
    pub lanes: LaneCounts,
    /// Parcels still on the line (not yet in a lane); 0 once `next_event_time` is None.
    pub in_flight: u32,
    /// Parcels still waiting at the infeed because the PLC holds the induct.
    pub not_inducted: u32,
    /// Left by the release lane AND (the PLC latched no release destination for it OR its
    /// truth says must_not_release).
    pub unsafe_releases: u32,
    /// Left by the release lane carrying goods its list does not declare: a
    /// screening miss (officer or pre-screen), not a breach of the release rules.
    pub undeclared_released: u32,
    /// A destination was sent for the parcel's tracking id and the physical lane's role
    /// differs from the last destination sent.
    pub wrong_lane: u32,
    /// Destinations that arrived at or after the latch point (ignored by the PLC).
    pub late_destinations: u32,
    /// Parcels for which the host never sent a destination.
    pub no_destination: u32,
    /// Destinations for unknown or finished tracking ids, or for unknown lanes (ignored).
    pub ignored_destinations: u32,
    /// Reviews requested for unknown or finished tracking ids, or beyond the screen's queue.
    pub ignored_reviews: u32,
    pub missed_diverts: u32,
    pub slips: u32,
    pub bounces: u32,
    /// Parcels the PLC sent to the end lane whatever it was asked: it was in safe mode, or it
    /// restarted, while they were on the belt. Not counted in `wrong_lane`.
    pub plc_forced_holds: u32,
    pub plc_restarts: u32,
    pub merged: u32,
    pub scanner: ScannerTruth,
    /// One per physical parcel, in induction order.
    pub outcomes: Vec<ParcelOutcome>,
}

/// The truth and fate of one physical parcel.
#[derive(Clone, Debug, Serialize)]
pub struct ParcelOutcome {
    pub sim_id: u32,
    pub waybill: String,
    /// None if the gate eye never saw it as a parcel.
    pub tracking: Option<u32>,
    pub must_not_release: bool,
    /// The main truth: "green", "red", "no_read", "missing_manifest", "licence",
    /// "undeclared:battery", ...
    pub truth: String,
    /// Where it left the line (Hold while still in flight).
    pub physical: Lane,
    /// Role of the last destination sent for its tracking id.
    pub destination: Option<Lane>,
    /// A destination arrived before the latch point.
    pub destination_in_time: bool,
}

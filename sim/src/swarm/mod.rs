//! The fault swarm: the real core against the simulated line and everything that goes wrong
//! around it, in virtual time, from one seed per run, millions of parcels at a time
//! (`sortline-sim swarm`, `docs/simulation.md`).
//!
//! A run is a function of its seed (and its parcel count): the World's parcels and lists, the
//! regime of fault rates, the schedule of faults. The checkers ([`check`]) hold every step to
//! the safety rules; a failing run is shrunk to the fewest faults and parcels that still fail,
//! and printed with the command that replays it.
//!
//! # Layout
//! - `regime`: fault rates and the schedule, from the seed.
//! - `run`: one run, stepping the core and the World with models of the daemon's wires.
//! - [`check`]: the checkers.

pub mod check;
mod regime;
mod run;
pub mod scenario;

pub use regime::{Fault, Regime};

use crate::{LaneCounts, Ms};
use serde::Serialize;
use sortline::config::Loaded;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A safety rule broken, when, and how.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub at: Ms,
    pub check: &'static str,
    pub detail: String,
}

/// One run as the checkers saw it.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub seed: u64,
    pub parcels: u32,
    pub line_ms: Ms,
    pub faults: BTreeMap<&'static str, u64>,
    pub failures: Vec<Failure>,
    pub unsafe_releases: u32,
    pub unaccounted: u32,
    /// Parcels that physically left by another lane than the last destination sent...
    pub wrong_lane: u32,
    /// ...of which the record does not say so (a failure).
    pub wrong_lane_unrecorded: u32,
    /// Released on another parcel's image, by a station that names no barcode (a screening
    /// miss the core cannot see; not a failure).
    pub released_on_swapped_image: u32,
    /// Released with goods its list does not declare: officer or pre-screen missed them.
    pub undeclared_released: u32,
    /// Parcels of merged pairs released that no sensor showed were two (see
    /// [`check::Checker::merged_unseen`]); counted in `unsafe_releases`, not failures.
    pub merged_unseen: u32,
    /// Parcels whose story lost its last moments in a crash (see [`check::Checker::lost_in_crash`]).
    pub lost_in_crash: u32,
    /// Parcels on the line when the host lost their thread (crash, PLC restart, lost events).
    pub disrupted: u32,
    pub entries: u64,
    #[serde(serialize_with = "hex_head")]
    pub head: [u8; 32],
    pub lanes: LaneCounts,
}

fn hex_head<S: serde::Serializer>(head: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(head))
}

/// What to run: a seed, its parcels, and (when shrunk) which of its scheduled faults to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub seed: u64,
    pub parcels: u32,
    pub keep: Option<BTreeSet<usize>>,
}

impl Spec {
    /// The command that replays this run.
    pub fn command(&self) -> String {
        let keep = self.keep.as_ref().map_or(String::new(), |k| {
            let list: Vec<String> = k.iter().map(usize::to_string).collect();
            format!(" --keep {}", if list.is_empty() { "none".into() } else { list.join(",") })
        });
        format!("sortline-sim swarm --seed {} --parcels {}{keep}", self.seed, self.parcels)
    }
}

/// Everything a run is made of: the World's mix, the station, the faults and their times.
#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    pub scenario: crate::Scenario,
    pub station_reads_barcode: bool,
    pub faults: Vec<Fault>,
}

/// About how long `scenario`'s parcels take to pass, for spreading faults over the run.
pub fn span_ms(scenario: &crate::Scenario) -> Ms {
    let mean = (scenario.arrival_period_ms.start() + scenario.arrival_period_ms.end()) / 2;
    u64::from(scenario.parcels) * mean + 60_000
}

impl Spec {
    /// The seed's regime and schedule, less the faults `keep` leaves out.
    pub fn plan(&self) -> Plan {
        let (regime, scenario) = Regime::draw(self.seed, self.parcels);
        let faults = regime.schedule(self.seed, self.parcels, span_ms(&scenario));
        let faults = match &self.keep {
            Some(keep) => faults.into_iter().enumerate().filter(|(i, _)| keep.contains(i)).map(|(_, f)| f).collect(),
            None => faults,
        };
        Plan { seed: self.seed, scenario, station_reads_barcode: regime.station_reads_barcode, faults }
    }
}

/// The swarm's line: the configuration with an X-ray station, whose images release waits for.
pub fn line_config(cfg: &Loaded) -> Loaded {
    let mut cfg = cfg.clone();
    if cfg.line.xray.is_none() {
        cfg.line.xray = Some(sortline::xray::config::XrayConfig::default());
    }
    cfg
}

/// Runs one spec against `cfg` (see [`line_config`]).
pub fn run(cfg: &Loaded, spec: &Spec) -> Result<Outcome, String> {
    run_plan(cfg, spec.plan())
}

pub fn run_plan(cfg: &Loaded, plan: Plan) -> Result<Outcome, String> {
    let geometry = crate::demo::geometry(cfg).map_err(|e| e.to_string())?;
    let seed = plan.seed;
    Ok(run::Run::new(cfg, geometry, plan).run(seed))
}

/// The faults a seed's full schedule has (for shrinking and for `--keep`).
pub fn schedule(spec: &Spec) -> Vec<Fault> {
    Spec { keep: None, ..spec.clone() }.plan().faults
}

/// The smallest run that still fails, by leaving faults out (halves, then quarters, down to
/// single faults) and then parcels, within `budget` runs.
pub fn shrink(cfg: &Loaded, failing: &Spec, budget: u32) -> Spec {
    let mut best = failing.clone();
    let mut runs = 0;
    let fails = |s: &Spec, runs: &mut u32| {
        *runs += 1;
        run(cfg, s).is_ok_and(|o| !o.failures.is_empty())
    };
    let mut keep: Vec<usize> = match &failing.keep {
        Some(k) => k.iter().copied().collect(),
        None => (0..schedule(failing).len()).collect(),
    };
    let mut chunk = keep.len().div_ceil(2).max(1);
    while chunk >= 1 && runs < budget && !keep.is_empty() {
        let mut i = 0;
        let mut removed = false;
        while i < keep.len() && runs < budget {
            let candidate: Vec<usize> =
                keep.iter().enumerate().filter(|(j, _)| *j < i || *j >= i + chunk).map(|(_, &f)| f).collect();
            let spec = Spec { keep: Some(candidate.iter().copied().collect()), ..best.clone() };
            if fails(&spec, &mut runs) {
                keep = candidate;
                best = spec;
                removed = true;
            } else {
                i += chunk;
            }
        }
        if chunk == 1 && !removed {
            break;
        }
        chunk = if removed { chunk } else { chunk / 2 };
        chunk = chunk.min(keep.len()).max(1);
    }
    if best.keep.is_none() {
        best.keep = Some(keep.into_iter().collect());
    }
    // Fewer parcels: the schedule's per-parcel faults keep their indices.
    while best.parcels > 10 && runs < budget {
        let spec = Spec { parcels: best.parcels / 2, ..best.clone() };
        if !fails(&spec, &mut runs) {
            break;
        }
        best = spec;
    }
    best
}

/// The swarm's totals over many runs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub runs: u64,
    pub parcels: u64,
    pub line_hours: f64,
    pub faults: BTreeMap<&'static str, u64>,
    pub failed_runs: u64,
    pub unsafe_releases: u64,
    pub unaccounted: u64,
    pub wrong_lane: u64,
    pub wrong_lane_unrecorded: u64,
    pub released_on_swapped_image: u64,
    pub undeclared_released: u64,
    pub merged_unseen: u64,
    pub lost_in_crash: u64,
    pub disrupted: u64,
    pub entries: u64,
    /// Seeds run twice to compare their chains' heads, and how many differed.
    pub determinism_checks: u64,
    pub determinism_failures: u64,
    pub lanes: LaneCounts,
    pub seconds: f64,
}

impl Totals {
    fn add(&mut self, o: &Outcome) {
        self.runs += 1;
        self.parcels += u64::from(o.parcels);
        self.line_hours += o.line_ms as f64 / 3_600_000.0;
        for (k, v) in &o.faults {
            *self.faults.entry(k).or_default() += v;
        }
        self.failed_runs += u64::from(!o.failures.is_empty());
        self.unsafe_releases += u64::from(o.unsafe_releases);
        self.unaccounted += u64::from(o.unaccounted);
        self.wrong_lane += u64::from(o.wrong_lane);
        self.wrong_lane_unrecorded += u64::from(o.wrong_lane_unrecorded);
        self.released_on_swapped_image += u64::from(o.released_on_swapped_image);
        self.undeclared_released += u64::from(o.undeclared_released);
        self.merged_unseen += u64::from(o.merged_unseen);
        self.lost_in_crash += u64::from(o.lost_in_crash);
        self.disrupted += u64::from(o.disrupted);
        self.entries += o.entries;
        self.lanes.release += o.lanes.release;
        self.lanes.inspection += o.lanes.inspection;
        self.lanes.hold += o.lanes.hold;
    }

    pub fn faults_injected(&self) -> u64 {
        self.faults.values().sum()
    }
}

/// Every `DETERMINISM_EVERY`th seed runs twice: the same seed must give the same chain.
pub const DETERMINISM_EVERY: u64 = 16;

/// Runs seeds `first..first + seeds` on `jobs` threads; `failed` hears of each failing run
/// (from any thread) as it ends.
pub fn swarm(
    cfg: &Loaded,
    first: u64,
    seeds: u64,
    parcels: u32,
    jobs: usize,
    failed: &(dyn Fn(&Outcome) + Sync),
) -> Totals {
    let started = sortline::clock::Stopwatch::start();
    let next = AtomicU64::new(first);
    let totals = Mutex::new(Totals::default());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= first + seeds {
                    break;
                }
                let spec = Spec { seed, parcels, keep: None };
                let mut o = match run(cfg, &spec) {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::error!(seed, error = %e, "the swarm cannot run this configuration");
                        break;
                    }
                };
                let twice = seed.is_multiple_of(DETERMINISM_EVERY);
                let mut differed = false;
                if twice {
                    if let Ok(again) = run(cfg, &spec) {
                        differed = again.head != o.head || again.entries != o.entries;
                        if differed {
                            o.failures.push(Failure {
                                at: o.line_ms,
                                check: "the same seed gives the same chain",
                                detail: format!("head {} then {}", hex::encode(o.head), hex::encode(again.head)),
                            });
                        }
                    }
                }
                if !o.failures.is_empty() {
                    failed(&o);
                }
                let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
                t.add(&o);
                t.determinism_checks += u64::from(twice);
                t.determinism_failures += u64::from(differed);
            });
        }
    });
    let mut t = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    t.seconds = started.elapsed_ms() as f64 / 1000.0;
    t
}

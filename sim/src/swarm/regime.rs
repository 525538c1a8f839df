//! What goes wrong in one run, drawn from its seed: first the regime (how often each fault
//! happens, itself drawn, so that seeds explore calm lines, stormy ones and everything between),
//! then the schedule (each fault, when, for how long). The schedule is a plain list, so that a
//! failing run can be shrunk by leaving faults out.

use crate::{Ms, Scenario};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::BTreeMap;

/// One injected fault. Timed faults last `for_ms`; per-parcel ones name the parcel by its
/// X-ray sequence number or induction index (the World's numbering, stable under shrinking).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// The PLC restarts; warm keeps its tracking ids counting, cold starts them from 1 again.
    PlcRestart {
        at: Ms,
        cold: bool,
    },
    /// The PLC link drops: events wait in the PLC's ring, destinations wait in the driver. Past
    /// the PLC's watchdog the PLC goes to safe mode until the link is back.
    LinkDrop {
        at: Ms,
        for_ms: Ms,
    },
    /// The event ring overruns: events of this window never reach the host; the PLC restarts
    /// `for_ms` later (until then the driver reports events lost and every parcel is held).
    EventsLost {
        at: Ms,
        for_ms: Ms,
    },
    /// Registers read back stale (the PLC's scan stalled): no events for a while, then all.
    Stall {
        at: Ms,
        for_ms: Ms,
    },
    /// A register block read back garbled or a slot torn: the driver refuses the read and
    /// re-reads; the events of that poll come a poll later.
    Garbled {
        at: Ms,
    },
    /// The PLC's own safe mode (watchdog, not synced) for a while.
    SafeMode {
        at: Ms,
        for_ms: Ms,
    },
    /// A lane's full sensor for a while: parcels bound for it are forced to hold.
    LaneFull {
        at: Ms,
        for_ms: Ms,
        release: bool,
    },
    /// An operator stops the line (every parcel held) and starts it again.
    LineStop {
        at: Ms,
        for_ms: Ms,
    },
    /// An operator changes the sampling rates and review ratios (and sometimes the window).
    Rates {
        at: Ms,
        draw: u64,
    },
    /// The machine's wall clock steps (NTP, a person): only the record's wall column moves.
    WallStep {
        at: Ms,
        by_ms: i64,
    },
    /// No officer at the X-ray screen: no verdict comes.
    OfficerAbsent {
        at: Ms,
        for_ms: Ms,
    },
    /// The daemon dies (kill -9): what was not committed is gone; it restarts `for_ms` later
    /// and rebuilds its state as `sortline run` does.
    Crash {
        at: Ms,
        for_ms: Ms,
    },
    /// The MQTT broker is gone: the platform's lists and operators' MQTT commands wait for it.
    BrokerOutage {
        at: Ms,
        for_ms: Ms,
    },
    /// The platform rejects many lists at once (amendments to status rejected).
    RejectedWave {
        at: Ms,
        lists: u32,
        draw: u64,
    },
    /// A parcel's list comes late: not before the line starts, but around its gate.
    ManifestLate {
        index: u32,
        delay_ms: Ms,
    },
    /// A parcel's list is amended while it is on the belt (a higher version; red, or rejected).
    ManifestAmended {
        index: u32,
        delay_ms: Ms,
        rejected: bool,
    },
    /// An officer transfers a parcel by hand just before its cut-off.
    LastMomentTransfer {
        index: u32,
    },
    /// Scanner: a garbage frame at a trigger, or a good read sent twice.
    ScanGarbage {
        at: Ms,
    },
    ScanDuplicate {
        index: u32,
    },
    /// X-ray: an image never comes, comes late, is corrupt (refused at intake), or two
    /// parcels' images are swapped.
    ImageMissing {
        seq: u32,
    },
    ImageLate {
        seq: u32,
        delay_ms: Ms,
    },
    ImageCorrupt {
        seq: u32,
    },
    ImageSwap {
        seq: u32,
    },
}

impl Fault {
    pub fn name(&self) -> &'static str {
        match self {
            Fault::PlcRestart { cold: false, .. } => "plc_restart_warm",
            Fault::PlcRestart { cold: true, .. } => "plc_restart_cold",
            Fault::LinkDrop { .. } => "link_drop",
            Fault::EventsLost { .. } => "events_lost",
            Fault::Stall { .. } => "stalled_registers",
            Fault::Garbled { .. } => "garbled_registers",
            Fault::SafeMode { .. } => "safe_mode",
            Fault::LaneFull { .. } => "lane_full",
            Fault::LineStop { .. } => "line_stop",
            Fault::Rates { .. } => "rate_change",
            Fault::WallStep { .. } => "wall_clock_step",
            Fault::OfficerAbsent { .. } => "officer_absent",
            Fault::Crash { .. } => "daemon_crash",
            Fault::BrokerOutage { .. } => "broker_outage",
            Fault::RejectedWave { .. } => "rejected_wave",
            Fault::ManifestLate { .. } => "manifest_late",
            Fault::ManifestAmended { .. } => "manifest_amended",
            Fault::LastMomentTransfer { .. } => "last_moment_transfer",
            Fault::ScanGarbage { .. } => "scan_garbage",
            Fault::ScanDuplicate { .. } => "scan_duplicate",
            Fault::ImageMissing { .. } => "image_missing",
            Fault::ImageLate { .. } => "image_late",
            Fault::ImageCorrupt { .. } => "image_corrupt",
            Fault::ImageSwap { .. } => "image_swap",
        }
    }

    /// When a timed fault starts.
    pub fn at(&self) -> Option<Ms> {
        match *self {
            Fault::PlcRestart { at, .. }
            | Fault::LinkDrop { at, .. }
            | Fault::EventsLost { at, .. }
            | Fault::Stall { at, .. }
            | Fault::Garbled { at }
            | Fault::SafeMode { at, .. }
            | Fault::LaneFull { at, .. }
            | Fault::LineStop { at, .. }
            | Fault::Rates { at, .. }
            | Fault::WallStep { at, .. }
            | Fault::OfficerAbsent { at, .. }
            | Fault::Crash { at, .. }
            | Fault::BrokerOutage { at, .. }
            | Fault::RejectedWave { at, .. }
            | Fault::ScanGarbage { at } => Some(at),
            _ => None,
        }
    }
}

/// Expected timed faults per hour of line time, by kind, and per-parcel probabilities.
#[derive(Clone, Debug, Serialize)]
pub struct Regime {
    pub per_hour: BTreeMap<&'static str, f64>,
    pub per_parcel: BTreeMap<&'static str, f64>,
    /// The X-ray station reads the label in the tunnel and names it with the image.
    pub station_reads_barcode: bool,
}

/// The stream the regime and the schedule come from: apart from the World's own streams, so
/// that the same seed gives the same parcels whatever the faults.
const REGIME_STREAM: u64 = 0x5357_4152_4d00_0001;

fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// Either off, or from a log-uniform range: most seeds see a fault rarely, some often.
fn rate(r: &mut ChaCha8Rng, off: f64, lo: f64, hi: f64) -> f64 {
    if r.random_bool(off) {
        0.0
    } else {
        (lo.ln() + r.random::<f64>() * (hi.ln() - lo.ln())).exp()
    }
}

impl Regime {
    /// The regime of `seed`, and the World's mix with its own fault probabilities drawn too.
    pub fn draw(seed: u64, parcels: u32) -> (Regime, Scenario) {
        let r = &mut rng(seed, REGIME_STREAM);
        let mut per_hour = BTreeMap::new();
        for (name, lo, hi) in [
            ("plc_restart_warm", 0.2, 6.0),
            ("plc_restart_cold", 0.2, 4.0),
            ("link_drop", 0.5, 20.0),
            ("events_lost", 0.1, 3.0),
            ("stalled_registers", 0.5, 20.0),
            ("garbled_registers", 1.0, 60.0),
            ("safe_mode", 0.2, 6.0),
            ("lane_full", 0.5, 12.0),
            ("line_stop", 0.2, 4.0),
            ("rate_change", 0.5, 20.0),
            ("wall_clock_step", 0.2, 6.0),
            ("officer_absent", 0.2, 6.0),
            ("daemon_crash", 0.2, 4.0),
            ("broker_outage", 0.1, 3.0),
            ("rejected_wave", 0.1, 2.0),
            ("scan_garbage", 1.0, 120.0),
        ] {
            per_hour.insert(name, rate(r, 0.25, lo, hi));
        }
        let mut per_parcel = BTreeMap::new();
        for (name, lo, hi) in [
            ("manifest_late", 0.001, 0.05),
            ("manifest_amended", 0.001, 0.03),
            ("last_moment_transfer", 0.0005, 0.01),
            ("scan_duplicate", 0.001, 0.05),
            ("image_missing", 0.001, 0.05),
            ("image_late", 0.001, 0.05),
            ("image_corrupt", 0.001, 0.03),
            ("image_swap", 0.0005, 0.01),
        ] {
            per_parcel.insert(name, rate(r, 0.25, lo, hi));
        }
        let station_reads_barcode = r.random_bool(0.5);
        let mut sc = Scenario::demo(parcels, seed);
        // The World's own faults, each from its range (some seeds calm, some harsh).
        sc.no_read = rate(r, 0.2, 0.002, 0.10);
        sc.misread = rate(r, 0.2, 0.001, 0.05);
        sc.double_label = rate(r, 0.2, 0.001, 0.02);
        sc.duplicate_read = rate(r, 0.2, 0.001, 0.05);
        sc.missing_manifest = rate(r, 0.2, 0.002, 0.10);
        sc.rejected = rate(r, 0.2, 0.002, 0.08);
        sc.red = r.random_range(0.02..0.30);
        sc.licence_required = rate(r, 0.2, 0.002, 0.08);
        sc.platform_targeted = rate(r, 0.2, 0.002, 0.08);
        sc.undeclared = rate(r, 0.2, 0.002, 0.15);
        sc.officer_slow = rate(r, 0.2, 0.005, 0.3);
        sc.officer_miss = rate(r, 0.2, 0.005, 0.2);
        sc.officer_false_alarm = rate(r, 0.2, 0.005, 0.1);
        sc.manual_transfer = rate(r, 0.2, 0.001, 0.05);
        sc.bounce = rate(r, 0.2, 0.002, 0.10);
        sc.close_gap = rate(r, 0.2, 0.001, 0.03);
        sc.missed_divert = rate(r, 0.3, 0.001, 0.05);
        sc.slip = rate(r, 0.3, 0.001, 0.03);
        sc.scan_early = rate(r, 0.2, 0.005, 0.2);
        // Peak and quiet hours: parcels closer together or further apart.
        let period = r.random_range(700..=2_000);
        sc.arrival_period_ms = period..=period + r.random_range(200..=1_200);
        (Regime { per_hour, per_parcel, station_reads_barcode }, sc)
    }

    /// The schedule over a run of about `span_ms` of line time with `parcels` parcels.
    pub fn schedule(&self, seed: u64, parcels: u32, span_ms: Ms) -> Vec<Fault> {
        let r = &mut rng(seed, REGIME_STREAM + 1);
        let mut out = Vec::new();
        let hours = span_ms as f64 / 3_600_000.0;
        for (&name, &per_hour) in &self.per_hour {
            // A Poisson count by thinning: at most a few hundred trials per kind.
            let expected = per_hour * hours;
            let trials = ((expected * 4.0).ceil() as u32).clamp(1, 400);
            let p = (expected / f64::from(trials)).min(1.0);
            for _ in 0..trials {
                if !r.random_bool(p) {
                    continue;
                }
                let at = r.random_range(0..span_ms.max(1));
                let short = r.random_range(200..=8_000);
                let long = r.random_range(2_000..=90_000);
                out.push(match name {
                    "plc_restart_warm" => Fault::PlcRestart { at, cold: false },
                    "plc_restart_cold" => Fault::PlcRestart { at, cold: true },
                    "link_drop" => Fault::LinkDrop { at, for_ms: short },
                    "events_lost" => Fault::EventsLost { at, for_ms: short },
                    "stalled_registers" => Fault::Stall { at, for_ms: r.random_range(100..=3_000) },
                    "garbled_registers" => Fault::Garbled { at },
                    "safe_mode" => Fault::SafeMode { at, for_ms: long },
                    "lane_full" => Fault::LaneFull { at, for_ms: long, release: r.random_bool(0.5) },
                    "line_stop" => Fault::LineStop { at, for_ms: long },
                    "rate_change" => Fault::Rates { at, draw: r.random() },
                    "wall_clock_step" => Fault::WallStep { at, by_ms: r.random_range(-3_600_000..=3_600_000) },
                    "officer_absent" => Fault::OfficerAbsent { at, for_ms: long },
                    "daemon_crash" => Fault::Crash { at, for_ms: r.random_range(500..=15_000) },
                    "broker_outage" => Fault::BrokerOutage { at, for_ms: long * 4 },
                    "rejected_wave" => Fault::RejectedWave { at, lists: r.random_range(5..=200), draw: r.random() },
                    "scan_garbage" => Fault::ScanGarbage { at },
                    _ => unreachable!("every timed kind is listed"),
                });
            }
        }
        for (&name, &p) in &self.per_parcel {
            if p == 0.0 {
                continue;
            }
            for index in 0..parcels {
                if !r.random_bool(p) {
                    continue;
                }
                out.push(match name {
                    "manifest_late" => Fault::ManifestLate { index, delay_ms: r.random_range(0..=40_000) },
                    "manifest_amended" => Fault::ManifestAmended {
                        index,
                        delay_ms: r.random_range(0..=30_000),
                        rejected: r.random_bool(0.5),
                    },
                    "last_moment_transfer" => Fault::LastMomentTransfer { index },
                    "scan_duplicate" => Fault::ScanDuplicate { index },
                    "image_missing" => Fault::ImageMissing { seq: index + 1 },
                    "image_late" => Fault::ImageLate { seq: index + 1, delay_ms: r.random_range(2_000..=60_000) },
                    "image_corrupt" => Fault::ImageCorrupt { seq: index + 1 },
                    "image_swap" => Fault::ImageSwap { seq: index + 1 },
                    _ => unreachable!("every per-parcel kind is listed"),
                });
            }
        }
        out.sort_by_key(|f| f.at().unwrap_or(0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_regime_and_schedule() {
        let (a, _) = Regime::draw(11, 2_000);
        let (b, _) = Regime::draw(11, 2_000);
        assert_eq!(a.schedule(11, 2_000, 3_600_000), b.schedule(11, 2_000, 3_600_000));
    }

    #[test]
    fn seeds_explore_different_regimes() {
        let kinds = |seed| {
            let (r, _) = Regime::draw(seed, 3_000);
            r.schedule(seed, 3_000, 4 * 3_600_000).iter().map(Fault::name).collect::<std::collections::BTreeSet<_>>()
        };
        let all: std::collections::BTreeSet<_> = (0..64).flat_map(kinds).collect();
        assert_eq!(all.len(), 24, "every kind of fault in 64 seeds: {all:?}");
        assert_ne!(kinds(1), kinds(2));
    }
}

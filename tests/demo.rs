//! The demo line with fixed seeds, checked through its summary: the
//! simulator referees where parcels physically went, the audit chain is read
//! back for completeness.

use sortline::config::LineConfig;
use sortline_sim::demo::{self, DemoOptions, Summary};
use std::path::Path;

fn run(parcels: u32, seed: u64, faults: bool) -> Summary {
    let cfg = LineConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/line.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions { parcels, seed, data_dir: dir.path().to_path_buf(), faults };
    let summary = demo::run(&cfg, &opts, &mut std::io::sink()).unwrap();
    eprintln!("seed {seed}: {}", serde_json::to_string(&summary.lanes).unwrap());
    summary
}

#[test]
fn fixed_seed_uses_every_lane_and_nothing_fails() {
    let s = run(2000, 7, false);
    assert_eq!(s.parcels, 2000);
    assert_eq!(s.lanes.release + s.lanes.inspection + s.lanes.hold, 2000, "every parcel left by one lane");
    assert!(s.lanes.release > 0 && s.lanes.inspection > 0 && s.lanes.hold > 0, "{:?}", s.lanes);
    assert_eq!(s.unsafe_releases, 0);
    assert_eq!(s.wrong_lane, 0);
    assert_eq!(s.unaccounted, 0);
    assert!(s.audit.verified);
    // The mix exercises the failure paths, not only the happy one.
    assert!(s.scanner.no_reads > 0 && s.scanner.misreads > 0 && s.scanner.ambiguous > 0);
    assert!(s.stats.late > 0, "slow officers make some reviews late");
    assert!(s.stats.reviews > 0);
    assert!(s.injected.bounces > 0 && s.injected.merged > 0);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let (a, b) = (run(400, 11, false), run(400, 11, false));
    assert_eq!(serde_json::to_value(&a.stats).unwrap(), serde_json::to_value(&b.stats).unwrap());
    assert_eq!(a.lanes, b.lanes);
    assert_eq!(a.decided, b.decided);
}

/// Missed diverts and belt slip end in a wrong lane, but never in release,
/// and the core notices every one of them.
#[test]
fn physical_faults_end_in_hold_and_are_noticed() {
    for seed in [1, 2, 3] {
        let s = run(1000, seed, true);
        assert_eq!(s.unsafe_releases, 0, "seed {seed}");
        assert_eq!(s.unaccounted, 0, "seed {seed}");
        assert!(s.injected.missed_diverts + s.injected.slips > 0, "seed {seed}: faults were injected");
        // Every wrong lane is a missort or a loss the core recorded.
        assert!(s.wrong_lane as u64 <= s.stats.missorts + s.stats.lost, "seed {seed}: {s:?}");
        assert!(s.stats.missorts + s.stats.lost > 0);
    }
}

/// `sortline report` computes its figures from the record alone; they must
/// agree with the core's counters and with the referee.
#[test]
fn report_from_the_record_agrees_with_the_run() {
    let cfg = LineConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/line.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions { parcels: 800, seed: 5, data_dir: dir.path().to_path_buf(), faults: false };
    let s = demo::run(&cfg, &opts, &mut std::io::sink()).unwrap();
    let r = sortline::report::report(&dir.path().join(sortline::audit::DB_FILE), i64::MIN, i64::MAX).unwrap();
    assert_eq!(r.parcels, s.stats.parcels);
    assert_eq!(
        (r.decided.release, r.decided.inspection, r.decided.hold),
        (s.decided.release, s.decided.inspection, s.decided.hold)
    );
    assert_eq!(r.confirmed.release, s.lanes.release, "the referee's release count");
    assert_eq!(r.reviews, s.stats.reviews);
    assert_eq!(r.late, s.stats.late);
    assert_eq!(r.no_reads, s.stats.no_reads);
    assert_eq!(r.green + r.red + r.no_list, r.decided.release + r.decided.inspection + r.decided.hold);
    // Every parcel that physically entered the inspection lane was opened.
    assert_eq!(r.inspected, s.lanes.inspection);
    assert!(r.hit_rate.is_some_and(|h| h > 0.0 && h < 1.0));
    // The simulated officers answer every review, late ones too: their times count.
    assert_eq!(r.officers.iter().map(|o| o.verdicts).sum::<u64>(), r.reviews);
    let csv = r.to_csv();
    assert!(csv.starts_with("metric,value\n") && csv.contains("\nhit_rate,0."));
}

//! Replay of recorded runs reproduces every decision; a replay with the
//! wrong secret does not (so the check can fail).

use sortline::audit;
use sortline::config::LineConfig;
use sortline::core::SiteSecret;
use sortline::replay;
use sortline_sim::demo::{self, DemoOptions};
use std::path::Path;

fn record(dir: &Path, parcels: u32, seed: u64, faults: bool) -> demo::Summary {
    let cfg = LineConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/line.toml")).unwrap();
    let opts = DemoOptions { parcels, seed, data_dir: dir.to_path_buf(), faults };
    demo::run(&cfg, &opts, &mut std::io::sink()).unwrap()
}

fn seed_of(start: &serde_json::Value) -> Result<u64, String> {
    start.get("seed").and_then(|s| s.as_u64()).ok_or_else(|| "no seed".to_string())
}

#[test]
fn a_recorded_2000_parcel_run_replays_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let s = record(dir.path(), 2000, 7, false);
    let r = replay::replay(&dir.path().join(audit::DB_FILE), |start| seed_of(start).map(SiteSecret::from_demo_seed))
        .unwrap();
    assert_eq!(r.runs, 1);
    assert_eq!(r.decisions, s.decided.release + s.decided.inspection + s.decided.hold);
    assert_eq!(r.mismatch_count, 0, "{:?}", r.mismatches.first());
    assert!(r.reproduced());
}

#[test]
fn several_runs_in_one_record_replay_each_with_its_own_secret() {
    let dir = tempfile::tempdir().unwrap();
    record(dir.path(), 300, 1, true);
    record(dir.path(), 300, 2, false);
    let r = replay::replay(&dir.path().join(audit::DB_FILE), |start| seed_of(start).map(SiteSecret::from_demo_seed))
        .unwrap();
    assert_eq!(r.runs, 2);
    assert!(r.reproduced(), "{:?}", r.mismatches.first());
}

#[test]
fn the_wrong_secret_does_not_reproduce_the_samples() {
    let dir = tempfile::tempdir().unwrap();
    record(dir.path(), 1000, 7, false);
    let r = replay::replay(&dir.path().join(audit::DB_FILE), |_| Ok(SiteSecret::from_demo_seed(8))).unwrap();
    assert!(r.mismatch_count > 0, "sampling under another key must decide differently somewhere");
    assert!(!r.reproduced());
}

//! The demo over real Modbus TCP: the core in the daemon's shape, the host driver and the
//! simulated PLC on 127.0.0.1 (port chosen at run time) in lockstep line time. Checked through
//! the same summary as the in-process demo: the simulator referees, the chain is read back.

use sortline::config::LineConfig;
use sortline::demo::{self, DemoOptions, ModbusOptions};
use std::path::Path;

#[test]
fn modbus_demo_sorts_a_thousand_parcels_each_into_its_decided_lane_and_records_it() {
    let cfg = LineConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/line.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions { parcels: 1000, seed: 7, data_dir: dir.path().to_path_buf(), faults: false };
    let s = demo::run_modbus(&cfg, &opts, &ModbusOptions::default(), &mut std::io::sink()).unwrap();
    let text = serde_json::to_string(&s).unwrap();
    assert_eq!(s.parcels, 1000, "{text}");
    assert_eq!(s.lanes.release + s.lanes.inspection + s.lanes.hold, 1000, "{text}");
    assert!(s.lanes.release > 0 && s.lanes.inspection > 0 && s.lanes.hold > 0, "{text}");
    assert_eq!(s.unsafe_releases, 0, "{text}");
    assert_eq!(s.wrong_lane, 0, "{text}");
    assert_eq!(s.unaccounted, 0, "{text}");
    assert_eq!(s.late_destinations, 0, "{text}");
    // Every parcel the PLC tracked was confirmed by it in the lane the core decided.
    assert_eq!(s.stats.confirmed, s.stats.parcels, "{text}");
    assert_eq!((s.stats.missorts, s.stats.lost, s.stats.held_by_plc), (0, 0, 0), "{text}");
    let plc = s.plc.as_ref().expect("PLC link figures");
    assert_eq!(plc.destinations_taken, s.stats.parcels, "one destination per parcel, each taken once: {text}");
    assert_eq!(plc.connects, 1, "{text}");
    assert!(s.audit.verified, "{text}");
    assert!(s.stats.reviews > 0 && s.scanner.no_reads > 0, "{text}");
    // The chain the Modbus run wrote replays to the same decisions.
    let seed_of = |start: &serde_json::Value| start["seed"].as_u64().ok_or_else(|| "no seed".to_string());
    let r = sortline::replay::replay(&dir.path().join(sortline::audit::DB_FILE), |start| {
        seed_of(start).map(demo::demo_secret)
    })
    .unwrap();
    assert!(r.runs == 1 && r.decisions > 0, "{r:?}");
    assert_eq!(r.mismatch_count, 0, "{r:?}");
}

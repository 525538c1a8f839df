//! The daemon's own duties: when its core dies it must not leave the PLC driver heartbeating
//! a line on which nothing is decided or recorded; when the line is idle its last entries
//! still get signed.

use sortline::audit::{AuditLog, GroupCommit, Signer, DB_FILE, KEY_FILE};
use sortline::config::LineConfig;
use sortline::core::SiteSecret;
use sortline::core::{Line, ParcelReport, ReviewRequest};
use sortline::daemon::{Daemon, DaemonConfig, DaemonError, LineClock, Parts, Screen};
use sortline::plc::driver::{DriverConfig, PlcLink};
use sortline_sim as sim;
use sortline_sim::demo::{geometry, initial_inputs};
use std::path::Path;
use std::time::Duration;
use tokio::sync::broadcast;

struct Clock(sim::modbus::SimClock);

impl LineClock for Clock {
    fn now_ms(&self) -> u64 {
        self.0.line_ms()
    }
}

/// A screen that fails the first time a parcel's story is shown: a stand-in
/// for any fault that ends the core thread.
struct Failing;

impl Screen for Failing {
    fn review_requested(&mut self, _: &ReviewRequest) {}
    fn parcel_done(&mut self, _: ParcelReport) {
        panic!("screen failed");
    }
}

struct Quiet;

impl Screen for Quiet {
    fn review_requested(&mut self, _: &ReviewRequest) {}
    fn parcel_done(&mut self, _: ParcelReport) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_line_gets_its_last_entries_signed() {
    let cfg = LineConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/line.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    let world = sim::World::new(sim::Scenario::demo(12, 5), geometry(&cfg).unwrap());
    let initial = initial_inputs(&world, dir.path(), true).unwrap();
    let map = cfg.register_map().unwrap();
    let plc_config = sim::modbus::SimPlcConfig { lockstep_quantum_ms: Some(100), ..Default::default() };
    let (mut plc, _devices) = sim::modbus::SimPlc::start(world, &map, plc_config).await.unwrap();
    let signer = Signer::load_or_init(&dir.path().join(KEY_FILE)).unwrap();
    // Never by count: only the time bound signs, and only the timer can sign an idle tail.
    let mut log = AuditLog::open(&db, Some(signer), u64::MAX).unwrap();
    // Longer than the whole run (polled every millisecond in lockstep): the entries after the
    // first checkpoint are signed only once the line has gone quiet.
    log.set_checkpoint_interval_ms(Some(2_000));
    let parts = Parts {
        line: Line::new(cfg.line.settings(), cfg.line.policy(SiteSecret::from_demo_seed(5), cfg.rules.clone())),
        audit: GroupCommit::start(log, Duration::from_millis(1), 64),
        clock: Clock(plc.clock()),
        screen: Quiet,
        map,
        driver: DriverConfig {
            poll_period: Duration::from_millis(1),
            ..cfg.line.driver_config(Some(PlcLink::Tcp(plc.addr())))
        },
        initial,
        screener: None,
        operator_store: None,
    };
    let config = DaemonConfig { paced: true, checkpoint_poll: Duration::from_millis(20), ..DaemonConfig::default() };
    let daemon = Daemon::start(parts, config).unwrap();
    let (shutdown, shutdown_rx) = broadcast::channel::<()>(1);
    let running = tokio::spawn(daemon.run(shutdown_rx));
    assert!(plc.wait_finished(Duration::from_secs(60)).await, "the line ran out");
    // Idle now: within a few intervals a checkpoint covers the last entry.
    let signed_tail = || {
        let v = sortline::audit::verify(&db, None).unwrap();
        assert!(v.is_intact());
        v.entries > 0 && v.last_checkpoint.is_some_and(|a| a.seq + 2 == v.first_seq + v.entries)
    };
    let mut waited = 0;
    while !signed_tail() {
        assert!(waited < 200, "the idle tail was never signed");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    shutdown.send(()).unwrap();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_core_stops_the_driver_and_the_plc_falls_back_to_hold() {
    let cfg = LineConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/line.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let world = sim::World::new(sim::Scenario::demo(60, 3), geometry(&cfg).unwrap());
    let initial = initial_inputs(&world, dir.path(), true).unwrap();
    let map = cfg.register_map().unwrap();
    let plc_config = sim::modbus::SimPlcConfig { lockstep_quantum_ms: Some(100), ..Default::default() };
    let (plc, _devices) = sim::modbus::SimPlc::start(world, &map, plc_config).await.unwrap();
    let signer = Signer::load_or_init(&dir.path().join(KEY_FILE)).unwrap();
    let log = AuditLog::open(&dir.path().join(DB_FILE), Some(signer), 1000).unwrap();
    let parts = Parts {
        line: Line::new(cfg.line.settings(), cfg.line.policy(SiteSecret::from_demo_seed(3), cfg.rules.clone())),
        audit: GroupCommit::start(log, Duration::from_millis(1), 64),
        clock: Clock(plc.clock()),
        screen: Failing,
        map,
        driver: cfg.line.driver_config(Some(PlcLink::Tcp(plc.addr()))),
        initial,
        screener: None,
        operator_store: None,
    };
    let daemon = Daemon::start(parts, DaemonConfig { paced: true, ..DaemonConfig::default() }).unwrap();
    // Nobody ever asks it to shut down: the core's end alone must end the run.
    let (_shutdown, shutdown_rx) = broadcast::channel::<()>(1);
    let ended = tokio::time::timeout(Duration::from_secs(60), daemon.run(shutdown_rx)).await;
    let result = ended.expect("the daemon ends when its core ends, without a shutdown request");
    assert!(matches!(result, Err(DaemonError::Stopped(_))), "{:?}", result.err());
    // The host's heartbeat has stopped with the driver: the PLC's watchdog takes over.
    assert!(plc.wait_safe_mode(true, Duration::from_secs(20)).await, "the PLC entered safe mode: every parcel to hold");
}

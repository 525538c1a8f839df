//! End to end over Modbus TCP: the real host driver (`sortline::plc::driver`) against the
//! simulated PLC (`sortline_sim::modbus`) on 127.0.0.1, port chosen at run time, with a core
//! `Line` deciding. The simulator is the referee. No sleeps as synchronisation: the harness
//! waits on channels, with the line's next deadline as the only timer.
//!
//! Most runs are in lockstep (the simulated PLC advances `QUANTUM_MS` of line time per host
//! poll, and the driver polls only once the harness has handled what it reported), so a loaded
//! machine slows the line instead of making destinations late. The watchdog test needs the
//! line to run on while the host is silent, so it runs in real time × `SPEED`.

use sortline::config::LineConfig;
use sortline::core::*;
use sortline::demo;
use sortline::plc::driver::{Driver, DriverConfig, DriverOutput, DriverStats, Pace};
use sortline::plc::{Destination, RegisterMap};
use sortline_sim as sim;
use sortline_sim::modbus::{DeviceEvents, SimPlc, SimPlcConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Line milliseconds per real millisecond, for the real-time run.
const SPEED: u64 = 25;
/// Line milliseconds per host poll, in lockstep.
const QUANTUM_MS: u64 = 100;
/// Real time a whole run may take before the test gives up.
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A device event (scanner, officer, bench) as the core's input. PLC events never come here:
/// they arrive through the register map.
fn device_input(event: sim::SimEvent) -> Input {
    use sim::SimEvent as E;
    match event {
        E::Gate { .. } | E::XrayEntered { .. } | E::Divert { .. } | E::Lost { .. } | E::ForcedHold { .. } => {
            panic!("a PLC event on the device channel: {event:?}")
        }
        other => demo::input(other).unwrap(),
    }
}

/// A scenario that finishes quickly: denser induction, benches that answer in seconds.
fn scenario(parcels: u32, seed: u64) -> sim::Scenario {
    sim::Scenario { arrival_period_ms: 900..=1_400, inspection_ms: 1_000..=2_000, ..sim::Scenario::demo(parcels, seed) }
}

/// The core, the simulated PLC and the driver, wired as the daemon will be.
struct Run {
    line: Line,
    plc: SimPlc,
    devices: DeviceEvents,
    out: mpsc::Receiver<DriverOutput>,
    dest: mpsc::Sender<Destination>,
    stats: Arc<std::sync::Mutex<DriverStats>>,
    stop: Option<oneshot::Sender<()>>,
    driver: tokio::task::JoinHandle<Result<(), sortline::plc::PlcError>>,
    now: u64,
    done: Vec<ParcelReport>,
    alarms: Vec<Alarm>,
    destinations: u64,
    /// Lockstep: driver outputs handled, for the driver's [`Pace`].
    handled: watch::Sender<u64>,
    lockstep: bool,
}

impl Run {
    /// A run in lockstep.
    async fn start(parcels: u32, seed: u64) -> Run {
        Run::start_with(parcels, seed, true).await
    }

    async fn start_with(parcels: u32, seed: u64, lockstep: bool) -> Run {
        let cfg = LineConfig::load(&repo("firmware-config/line.toml")).expect("line.toml");
        let map = RegisterMap::load(&repo("firmware-config/plc/register-map.toml")).expect("register map");
        let world = sim::World::new(scenario(parcels, seed), demo::geometry(&cfg).unwrap());
        let manifests: Vec<Manifest> = world.manifests().iter().map(|m| demo::manifest(m).unwrap()).collect();
        let (plc, devices) = SimPlc::start(
            world,
            &map,
            SimPlcConfig {
                speed: SPEED,
                scan: Duration::from_millis(5),
                lockstep_quantum_ms: lockstep.then_some(QUANTUM_MS),
            },
        )
        .await
        .unwrap();
        let (out_tx, out) = mpsc::channel(4096);
        let (dest, dest_rx) = mpsc::channel(1024);
        let config = DriverConfig {
            poll_period: Duration::from_millis(if lockstep { 1 } else { 10 }),
            request_timeout: Duration::from_millis(200),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            ..DriverConfig::new(plc.addr())
        };
        let (handled, handled_rx) = watch::channel(0);
        let mut driver = Driver::new(&map, config, out_tx, dest_rx);
        if lockstep {
            driver = driver.paced(Pace { handled: handled_rx });
        }
        let stats = driver.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let driver = tokio::spawn(driver.run(async move {
            let _ = stopped.await;
        }));
        let secret = SiteSecret::from_bytes([7; 16]);
        let mut line = Line::new(cfg.line.settings(), cfg.line.policy(secret, cfg.rules.clone()));
        let mut initial = Vec::new();
        for m in manifests {
            line.handle(Input::Manifest(Arc::new(m)), Millis(0), &mut initial);
        }
        let mut run = Run {
            line,
            plc,
            devices,
            out,
            dest,
            stats,
            stop: Some(stop),
            driver,
            now: 0,
            done: Vec::new(),
            alarms: Vec::new(),
            destinations: 0,
            handled,
            lockstep,
        };
        run.route(initial).await;
        run
    }

    async fn handle(&mut self, input: Input) {
        // The core runs on the line's clock (the simulator's, sped up), never backwards.
        self.now = self.now.max(self.plc.line_ms().unwrap_or(0));
        let mut out = Vec::new();
        self.line.handle(input, Millis(self.now), &mut out);
        self.route(out).await;
    }

    async fn route(&mut self, out: Vec<Output>) {
        for o in out {
            match o {
                Output::SetDestination { tracking, lane_id, .. } => {
                    self.destinations += 1;
                    self.dest.send(Destination { tracking, lane_id }).await.expect("driver running");
                }
                Output::ReviewRequested(r) => self.plc.request_review(r.tracking.0),
                Output::ParcelDone(report) => self.done.push(report),
                Output::Alarm(a) => self.alarms.push(a),
                Output::Record(_) | Output::ReviewClosed { .. } => {}
            }
        }
    }

    /// Feeds the core until `until` says stop, or the run limit passes (panics).
    async fn drive(&mut self, mut until: impl FnMut(&Run) -> bool) {
        let limit = tokio::time::sleep(RUN_LIMIT);
        tokio::pin!(limit);
        while !until(self) {
            let now = self.plc.line_ms().unwrap_or(0).max(self.now);
            // The line's next deadline in real time (line ms / speed), at least every 50 ms; in
            // lockstep, line time moves per poll, so look every millisecond.
            let wait_ms = match self.lockstep {
                true => 1,
                false => self.line.next_timeout().map_or(50, |t| t.0.saturating_sub(now) / SPEED).min(50),
            };
            tokio::select! {
                o = self.out.recv() => {
                    match o.expect("driver running") {
                        DriverOutput::Input(input) => self.handle(input).await,
                        DriverOutput::Alarm(a) => self.alarms.push(a),
                    }
                    // Deadlines due now are part of catching up, before the driver polls again.
                    let now = self.plc.line_ms().unwrap_or(0).max(self.now);
                    if self.line.next_timeout().is_some_and(|t| t.0 <= now) {
                        self.handle(Input::Tick).await;
                    }
                    self.handled.send_modify(|n| *n += 1);
                }
                Some((_, event)) = self.devices.recv() => self.handle(device_input(event)).await,
                () = tokio::time::sleep(Duration::from_millis(wait_ms)) => self.handle(Input::Tick).await,
                () = &mut limit => panic!(
                    "run limit: {} parcels done, sim finished {}, stats {:?}, alarms {:?}",
                    self.done.len(), self.plc.finished(), self.stats(), self.alarm_codes()
                ),
            }
        }
    }

    /// Runs until every parcel has left the line and the core has closed every story (by a
    /// confirmation, a loss, or its own confirm deadline).
    async fn finish(&mut self) -> sim::Report {
        self.drive(|r| r.plc.finished() && r.line.in_flight() == 0).await;
        self.stop_driver();
        self.plc.report()
    }

    fn stop_driver(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    fn stats(&self) -> DriverStats {
        self.stats.lock().unwrap().clone()
    }

    fn alarm_codes(&self) -> Vec<&'static str> {
        let mut codes: Vec<&'static str> = self.alarms.iter().map(|a| a.code).collect();
        codes.sort_unstable();
        codes.dedup();
        codes
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parcels_flow_over_modbus_tcp_each_in_its_decided_lane() {
    let mut run = Run::start(320, 11).await;
    let report = run.finish().await;
    let stats = run.stats();
    let summary = format!("stats {stats:?}, alarms {:?}", run.alarm_codes());

    assert_eq!(report.unsafe_releases, 0, "{summary}");
    assert_eq!(report.wrong_lane, 0, "{summary}");
    assert_eq!(report.in_flight, 0, "{summary}");
    assert_eq!(report.late_destinations, 0, "{summary}");
    assert!(run.done.len() >= 300, "{} parcels done; {summary}", run.done.len());
    let tracked = report.outcomes.iter().filter_map(|o| o.tracking).collect::<std::collections::HashSet<_>>();
    assert_eq!(run.done.len(), tracked.len(), "every tracked parcel's story reached the core");
    for p in &run.done {
        assert!(!p.lost, "{p:?}");
        assert_eq!(p.confirmed, p.decided, "{p:?}");
    }
    // Every destination the core sent was taken by the PLC, once.
    assert_eq!(stats.destinations_taken, run.destinations, "{summary}");
    assert_eq!(run.plc.destinations_taken(), run.destinations, "{summary}");
    assert_eq!(stats.destinations_refused, 0, "{summary}");
    assert_eq!(stats.connects, 1, "{summary}");
    assert!(stats.poll_cycle.count() > 100 && stats.destination_latency.count() > 0, "{summary}");
    assert!(run.driver.await.unwrap().is_ok());
}

/// Parcels not in their decided lane went to hold, each explained by a late destination.
fn assert_safe(run: &Run, report: &sim::Report, summary: &str) {
    assert_eq!(report.unsafe_releases, 0, "{summary}");
    assert!(report.wrong_lane <= report.late_destinations, "{summary}");
    for p in &run.done {
        assert!(p.confirmed == p.decided || p.confirmed == Some(Lane::Hold) || p.lost, "{p:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_faults_mid_run_lose_and_duplicate_no_destination() {
    let mut run = Run::start(160, 12).await;
    run.drive(|r| r.done.len() >= 30).await;
    run.plc.drop_connections();
    run.drive(|r| r.done.len() >= 60).await;
    // One reply later than the driver's timeout: the context is dropped, the late reply never read.
    run.plc.stall_next(1, Duration::from_millis(400));
    run.drive(|r| r.done.len() >= 90).await;
    run.plc.exception_next(3, 0x04);
    let report = run.finish().await;
    let stats = run.stats();
    let summary = format!("stats {stats:?}, alarms {:?}", run.alarm_codes());

    assert_safe(&run, &report, &summary);
    assert!(stats.connects >= 3, "a reconnect after the drop and after the stall: {summary}");
    assert!(stats.exceptions >= 1, "{summary}");
    let codes = run.alarm_codes();
    assert!(codes.contains(&"plc_link_down") && codes.contains(&"plc_exception"), "{summary}");
    // Every destination taken by the PLC exactly once, and reported taken exactly once.
    assert_eq!(run.plc.destinations_taken(), run.destinations, "{summary}");
    assert_eq!(stats.destinations_taken, run.destinations, "{summary}");
    assert!(run.driver.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plc_restart_mid_run_resyncs_and_its_orphans_end_in_hold() {
    let mut run = Run::start(120, 13).await;
    run.drive(|r| r.done.len() >= 30).await;
    run.plc.restart();
    let report = run.finish().await;
    let stats = run.stats();
    let summary = format!("stats {stats:?}, alarms {:?}", run.alarm_codes());

    assert_eq!(run.plc.boot_count(), 2);
    assert_eq!(report.plc_restarts, 1);
    assert!(run.alarm_codes().contains(&"plc_restarted"), "{summary}");
    assert_safe(&run, &report, &summary);
    // The parcels the host knew in flight were recorded as held by the PLC default, and
    // physically ran on into hold; parcels after the restart flowed again.
    let orphans: Vec<&ParcelReport> = run.done.iter().filter(|p| p.lost).collect();
    assert!(!orphans.is_empty(), "{summary}");
    for p in &orphans {
        assert_eq!(p.held_by_plc, Some(PlcHoldCause::Restart), "{p:?}");
        let outcome = report.outcomes.iter().find(|o| o.tracking == Some(p.tracking.0)).unwrap();
        assert_eq!(outcome.physical, sim::LaneRole::Hold, "{p:?}");
    }
    let after = run.done.iter().filter(|p| !p.lost && p.confirmed == p.decided).count();
    assert!(after >= 60, "{after} parcels confirmed in their lane; {summary}");
    // Nothing taken twice; destinations lost with the old boot were dropped, not re-sent.
    assert!(run.plc.destinations_taken() <= run.destinations, "{summary}");
    assert!(run.driver.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_the_plc_takes_too_late_end_in_hold_recorded_as_such() {
    let mut run = Run::start(120, 15).await;
    run.drive(|r| r.done.len() >= 20).await;
    // A PLC task overrun: the destination ring is not read for 6 s of line time, so what the
    // host sends meanwhile reaches the PLC after those parcels' latch point.
    run.plc.pause_destinations(6_000);
    let report = run.finish().await;
    let stats = run.stats();
    let summary = format!("stats {stats:?}, alarms {:?}", run.alarm_codes());

    assert!(report.late_destinations > 0, "{summary}");
    assert_eq!(report.unsafe_releases, 0, "{summary}");
    let late: Vec<&ParcelReport> = run.done.iter().filter(|p| p.held_by_plc == Some(PlcHoldCause::Late)).collect();
    assert_eq!(late.len(), report.late_destinations as usize, "each late destination is recorded as such");
    assert!(late.iter().all(|p| p.confirmed == Some(Lane::Hold)), "{late:?}");
    assert!(late.iter().any(|p| p.decided != Some(Lane::Hold)), "some were meant for another lane: {late:?}");
    // Hold was the lane they were expected in: no missort, and every other parcel in its lane.
    assert_eq!(run.line.stats().missorts, 0, "{summary}");
    assert!(run.done.iter().filter(|p| p.held_by_plc.is_none()).all(|p| p.confirmed == p.decided), "{summary}");
    assert!(run.alarm_codes().contains(&"destination_late"), "{summary}");
    assert!(run.driver.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_lane_sends_its_parcels_to_hold_recorded_as_forced_by_the_plc() {
    let cfg = LineConfig::load(&repo("firmware-config/line.toml")).unwrap();
    let inspection = cfg.line.settings().lanes.inspection;
    let lane_full = u32::from(cfg.register_map().unwrap().codes.forced_hold["LANE_FULL"]);
    let mut run = Run::start(160, 16).await;
    run.drive(|r| r.done.len() >= 20).await;
    run.plc.set_lane_full(inspection, true);
    run.drive(|r| r.done.len() >= 90).await;
    run.plc.set_lane_full(inspection, false);
    let report = run.finish().await;
    let summary = format!("stats {:?}, alarms {:?}", run.stats(), run.alarm_codes());

    assert_eq!((report.unsafe_releases, report.wrong_lane), (0, 0), "{summary}");
    let forced = PlcHoldCause::Forced { code: lane_full };
    let held: Vec<&ParcelReport> = run.done.iter().filter(|p| p.held_by_plc == Some(forced)).collect();
    assert!(!held.is_empty(), "{summary}");
    for p in &held {
        assert_eq!((p.decided, p.confirmed), (Some(Lane::Inspection), Some(Lane::Hold)), "{p:?}");
    }
    assert!(run.done.iter().filter(|p| p.held_by_plc.is_none()).all(|p| p.confirmed == p.decided), "{summary}");
    // Inspection flows again once the lane is cleared.
    let last_held = held.iter().map(|p| p.done_at).max().unwrap();
    assert!(run.done.iter().any(|p| p.confirmed == Some(Lane::Inspection) && p.done_at > last_held), "{summary}");
    assert_eq!(run.line.stats().missorts, 0, "{summary}");
    assert!(run.alarm_codes().contains(&"plc_lane_full"), "{summary}");
    assert!(run.driver.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jam_or_an_emergency_stop_stands_the_belt_and_its_parcels_wait_not_lost() {
    let mut run = Run::start(120, 17).await;
    // Longer than any confirmation grace: without the belt's word the core would call them lost.
    const STANDING_MS: u64 = 60_000;
    for (after, stop) in [(20, "jam"), (60, "estop")] {
        run.drive(|r| r.done.len() >= after).await;
        let on_belt = run.line.in_flight();
        let t0 = run.plc.line_ms().unwrap();
        match stop {
            "jam" => run.plc.jam(3, true),
            _ => run.plc.estop(true),
        }
        run.drive(|r| r.plc.line_ms().unwrap() >= t0 + STANDING_MS).await;
        assert!(on_belt > 0 && run.line.in_flight() > 0, "parcels stood on the belt during the {stop}");
        assert!(run.done.iter().all(|p| !p.lost), "{stop}: a standing parcel was taken for lost");
        match stop {
            "jam" => run.plc.jam(3, false),
            _ => run.plc.estop(false),
        }
    }
    let report = run.finish().await;
    let summary = format!("stats {:?}, alarms {:?}", run.stats(), run.alarm_codes());

    assert_eq!((report.unsafe_releases, report.wrong_lane, report.in_flight), (0, 0, 0), "{summary}");
    for p in &run.done {
        assert!(!p.lost && p.confirmed == p.decided, "{p:?}");
    }
    assert_eq!(run.line.stats().lost, 0, "{summary}");
    for code in ["plc_jam", "plc_estop", "belt_stopped"] {
        assert!(run.alarm_codes().contains(&code), "{code}: {summary}");
    }
    assert!(run.driver.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_host_trips_the_watchdog_and_every_later_parcel_goes_to_hold() {
    let mut run = Run::start_with(80, 14, false).await;
    run.drive(|r| r.done.len() >= 20).await;
    // The host stops: no more heartbeats, no more reads.
    run.stop_driver();
    assert!(run.plc.wait_safe_mode(true, Duration::from_secs(5)).await, "the watchdog did not trip");
    let at_trip = run.plc.report();
    assert!(run.plc.wait_finished(RUN_LIMIT).await, "the line did not run out");
    let report = run.plc.report();

    assert_eq!(report.unsafe_releases, 0);
    assert!(report.plc_forced_holds > 0);
    // From the trip on no diverter fired: every later parcel left by the end of the line.
    assert_eq!(report.lanes.release, at_trip.lanes.release);
    assert_eq!(report.lanes.inspection, at_trip.lanes.inspection);
    assert_eq!(report.in_flight, 0);
    assert!(report.lanes.hold > at_trip.lanes.hold);
    // The induct stopped with the trip: what had not reached the belt waits at the infeed.
    assert!(report.not_inducted > 0, "{report:?}");
    assert_eq!(
        report.lanes.release + report.lanes.inspection + report.lanes.hold + report.not_inducted,
        report.parcels
    );
    assert!(run.driver.await.unwrap().is_ok());
}

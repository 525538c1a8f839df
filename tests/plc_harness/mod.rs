//! The end-to-end PLC harness shared by `plc_modbus` (TCP) and `plc_rtu` (RTU over a pty): the
//! real host driver (`sortline::plc::driver`) against the simulated PLC (`sortline_sim::modbus`),
//! with a core `Line` deciding. The simulator is the referee. No sleeps as synchronisation: the
//! harness waits on channels, with the line's next deadline as the only timer.
//!
//! Most runs are in lockstep (the simulated PLC advances `QUANTUM_MS` of line time per host
//! poll, and the driver polls only once the harness has handled what it reported), so a loaded
//! machine slows the line instead of making destinations late. The watchdog test needs the
//! line to run on while the host is silent, so it runs in real time × `SPEED`.
#![allow(dead_code)] // each test binary uses its own subset

use sortline::config::{LineConfig, Transport};
use sortline::core::*;
use sortline::plc::driver::{Driver, DriverConfig, DriverOutput, DriverStats, Pace};
use sortline::plc::{Destination, RegisterMap};
use sortline_sim as sim;
use sortline_sim::demo;
use sortline_sim::modbus::{DeviceEvents, LockstepGate, SimPlc, SimPlcConfig};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Line milliseconds per real millisecond, for the real-time run.
const SPEED: u64 = 25;
/// Line milliseconds per host poll, in lockstep.
const QUANTUM_MS: u64 = 100;
/// Real time a whole run may take before the test gives up.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

pub fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A device event (scanner, officer, bench) as the core's input, if a screen shows the parcel
/// it is about. PLC events never come here: they arrive through the register map.
fn device_input(event: sim::SimEvent, screens: &demo::OfficerScreens) -> Option<Input> {
    use sim::SimEvent as E;
    match event {
        E::Gate { .. }
        | E::XrayEntered { .. }
        | E::Weighed { .. }
        | E::Divert { .. }
        | E::Lost { .. }
        | E::ForcedHold { .. } => {
            panic!("a PLC event on the device channel: {event:?}")
        }
        other => demo::input(other, screens).unwrap(),
    }
}

/// A scenario that finishes quickly: denser induction, benches that answer in seconds; no
/// X-ray station (these runs are about the PLC).
fn scenario(parcels: u32, seed: u64) -> sim::Scenario {
    sim::Scenario {
        arrival_period_ms: 900..=1_400,
        inspection_ms: 1_000..=2_000,
        xray_images: false,
        ..sim::Scenario::demo(parcels, seed)
    }
}

/// The core, the simulated PLC and the driver, wired as the daemon will be.
pub struct Run {
    pub line: Line,
    pub plc: SimPlc,
    devices: DeviceEvents,
    out: mpsc::Receiver<DriverOutput>,
    dest: mpsc::Sender<Destination>,
    stats: Arc<std::sync::Mutex<DriverStats>>,
    stop: Option<oneshot::Sender<()>>,
    pub driver: tokio::task::JoinHandle<Result<sortline::plc::driver::SafeModeCheck, sortline::plc::PlcError>>,
    now: u64,
    pub done: Vec<ParcelReport>,
    pub alarms: Vec<Alarm>,
    /// What the simulated officers see, for their verdicts and transfers.
    screens: demo::OfficerScreens,
    pub destinations: u64,
    /// Lockstep: driver outputs handled, for the driver's [`Pace`].
    handled: watch::Sender<u64>,
    lockstep: bool,
    /// Lockstep: the core's next deadline and the device events taken in, for the gate.
    due: Arc<AtomicU64>,
    devices_handled: Arc<AtomicU64>,
}

impl Run {
    /// A run in lockstep.
    pub async fn start(transport: Transport, parcels: u32, seed: u64) -> Run {
        Run::start_with(transport, parcels, seed, true).await
    }

    pub async fn start_with(transport: Transport, parcels: u32, seed: u64, lockstep: bool) -> Run {
        let cfg = LineConfig::load(&repo("firmware-config/line.toml")).expect("line.toml");
        let map = RegisterMap::load(&repo("firmware-config/plc/register-map.toml")).expect("register map");
        let world = sim::World::new(scenario(parcels, seed), demo::geometry(&cfg).unwrap());
        let manifests: Vec<Manifest> = world.manifests().iter().map(|m| m.core_view()).collect();
        // In lockstep the line waits for the harness: every device event taken in, and not
        // far past the core's next deadline.
        let due = Arc::new(AtomicU64::new(u64::MAX));
        let devices_handled = Arc::new(AtomicU64::new(0));
        let gate = {
            let (due, handled) = (due.clone(), devices_handled.clone());
            LockstepGate(Arc::new(move |to, sent| {
                handled.load(Ordering::SeqCst) >= sent
                    && to <= due.load(Ordering::SeqCst).saturating_add(3 * QUANTUM_MS)
            }))
        };
        let sim_config = SimPlcConfig {
            speed: SPEED,
            scan: Duration::from_millis(5),
            lockstep_quantum_ms: lockstep.then_some(QUANTUM_MS),
            lockstep_gate: lockstep.then_some(gate),
            on_destination: None,
        };
        let (plc, devices, link) = demo::start_plc(&cfg, transport, world, &map, sim_config).await.unwrap();
        let (out_tx, out) = mpsc::channel(4096);
        let (dest, dest_rx) = mpsc::channel(1024);
        let config = DriverConfig {
            poll_period: Duration::from_millis(if lockstep { 1 } else { 10 }),
            request_timeout: Duration::from_millis(200),
            // On a serial line a reply later than the timeout is discarded only if it arrives
            // while the port is closed (the driver flushes the input when it reopens), so RTU
            // waits longer than the tests' stalls overrun the timeout.
            backoff_initial: Duration::from_millis(if transport == Transport::Rtu { 200 } else { 20 }),
            backoff_max: Duration::from_millis(if transport == Transport::Rtu { 400 } else { 200 }),
            ..DriverConfig::with_link(link)
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
            screens: demo::OfficerScreens::default(),
            destinations: 0,
            handled,
            lockstep,
            due,
            devices_handled,
        };
        run.route(initial).await;
        run
    }

    async fn handle(&mut self, input: Input) {
        // The core runs on the line's clock (the simulator's, sped up), never backwards.
        self.now = self.now.max(self.plc.line_ms().unwrap_or(0));
        let mut out = Vec::new();
        self.line.handle(input, Millis(self.now), &mut out);
        self.due.store(self.line.next_timeout().map_or(u64::MAX, |t| t.0), Ordering::SeqCst);
        self.route(out).await;
    }

    async fn route(&mut self, out: Vec<Output>) {
        for o in out {
            match o {
                Output::SetDestination { parcel, lane_id, .. } => {
                    self.destinations += 1;
                    let d = Destination { boot: parcel.boot, tracking: parcel.tracking, lane_id };
                    self.dest.send(d).await.expect("driver running");
                }
                Output::ReviewRequested(r) => {
                    self.screens.review(&r);
                    self.plc.request_review(r.parcel.tracking.0)
                }
                Output::ParcelDone(report) => {
                    self.screens.done(report.parcel);
                    self.done.push(report)
                }
                Output::Alarm(a) => self.alarms.push(a),
                Output::Record(Record::Identified { parcel, .. }) => self.screens.identified(parcel),
                Output::Record(_)
                | Output::ReviewClosed { .. }
                | Output::ScreenImage { .. }
                | Output::Provisional(_) => {}
            }
        }
    }

    /// Feeds the core until `until` says stop, or the run limit passes (panics).
    pub async fn drive(&mut self, mut until: impl FnMut(&Run) -> bool) {
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
                Some((_, event)) = self.devices.recv() => {
                    if let Some(input) = device_input(event, &self.screens) {
                        self.handle(input).await;
                    }
                    self.devices_handled.fetch_add(1, Ordering::SeqCst);
                }
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
    pub async fn finish(&mut self) -> sim::Report {
        self.drive(|r| r.plc.finished() && r.line.in_flight() == 0).await;
        self.stop_driver();
        self.plc.report()
    }

    pub fn stop_driver(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub fn stats(&self) -> DriverStats {
        self.stats.lock().unwrap().clone()
    }

    pub fn alarm_codes(&self) -> Vec<&'static str> {
        let mut codes: Vec<&'static str> = self.alarms.iter().map(|a| a.code).collect();
        codes.sort_unstable();
        codes.dedup();
        codes
    }
}

/// A clean run: at least `min_done` parcels, every one confirmed in the lane the core decided,
/// every destination the core sent taken by the PLC exactly once, over one connection.
pub async fn assert_every_parcel_in_its_decided_lane(run: Run, report: &sim::Report, min_done: usize) {
    let stats = run.stats();
    let summary = format!("stats {stats:?}, alarms {:?}", run.alarm_codes());
    assert_eq!(report.unsafe_releases, 0, "{summary}");
    assert_eq!(report.wrong_lane, 0, "{summary}");
    assert_eq!(report.in_flight, 0, "{summary}");
    assert_eq!(report.late_destinations, 0, "{summary}");
    assert!(run.done.len() >= min_done, "{} parcels done; {summary}", run.done.len());
    let tracked = report.outcomes.iter().filter_map(|o| o.tracking).collect::<std::collections::HashSet<_>>();
    assert_eq!(run.done.len(), tracked.len(), "every tracked parcel's story reached the core");
    for p in &run.done {
        assert!(!p.lost, "{p:?}");
        assert_eq!(p.confirmed, p.decided, "{p:?}");
    }
    assert_eq!(stats.destinations_taken, run.destinations, "{summary}");
    assert_eq!(run.plc.destinations_taken(), run.destinations, "{summary}");
    assert_eq!(stats.destinations_refused, 0, "{summary}");
    assert_eq!(stats.connects, 1, "{summary}");
    assert!(stats.poll_cycle.count() > 100 && stats.destination_latency.count() > 0, "{summary}");
    assert!(run.driver.await.unwrap().is_ok());
}

/// Parcels not in their decided lane went to hold, each explained by a late destination.
pub fn assert_safe(run: &Run, report: &sim::Report, summary: &str) {
    assert_eq!(report.unsafe_releases, 0, "{summary}");
    assert!(report.wrong_lane <= report.late_destinations, "{summary}");
    for p in &run.done {
        assert!(p.confirmed == p.decided || p.confirmed == Some(Lane::Hold) || p.lost, "{p:?}");
    }
}

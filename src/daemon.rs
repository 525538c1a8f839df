//! The daemon's shape: the core on one dedicated thread fed by a bounded crossbeam channel
//! (inputs, driver alarms, a drain request) and woken for its next deadline; the PLC driver
//! as a tokio task; the audit chain behind a [`GroupCommit`]. Shutdown comes from a broadcast
//! the caller owns (mini-redis): on it the core drains (the parcels on the belt finish their
//! stories, bounded by [`DaemonConfig::drain_limit`]), then the driver stops its heartbeat and
//! waits (bounded) for the PLC to show its watchdog's safe mode.
//!
//! Records are durable before the destinations they justify leave: after each input the core's
//! records are submitted to the group commit, and when that input produced destinations the core
//! thread waits on the submission's ticket before handing them to the driver. Waiting costs one
//! batch delay plus an fsync per destination-bearing input, which the line's write budget
//! absorbs; records that justify nothing (gate, scan) are never waited on.

use crate::audit::{AuditError, GroupCommit, NewEntry, Ticket};
use crate::clock;
use crate::core::{
    Alarm, Input, Line, LineMode, LineStats, Millis, Output, ParcelId, ParcelReport, Provisional, Record, ReviewId,
    ReviewRequest, Severity,
};
use crate::manifest::{OperatorStore, StoreError};
use crate::mqtt::command::Reply;
use crate::plc::driver::{Driver, DriverConfig, DriverOutput, DriverStats, Pace, SafeModeCheck};
use crate::plc::{Destination, PlcError, RegisterMap};
use crate::recorder;
use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("audit record: {0}")]
    Audit(#[from] AuditError),
    #[error("PLC: {0}")]
    Plc(#[from] PlcError),
    #[error("the {0} stopped unexpectedly")]
    Stopped(&'static str),
}

/// The line's clock as the core sees it, in ms. A real line uses the machine's monotonic
/// clock; the simulator hands its line clock. The PLC driver reads it too, to place the PLC's
/// events in line time.
pub trait LineClock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// Where the core's human-facing outputs go (the officer screen, the live view).
pub trait Screen: Send + 'static {
    fn review_requested(&mut self, request: &ReviewRequest);
    /// The review waits for no verdict any more (decided, late, withdrawn, gone).
    fn review_closed(&mut self, _parcel: ParcelId, _review: ReviewId) {}
    /// An undecided parcel on the belt, as the line sees it now (the live line).
    fn provisional(&mut self, _parcel: &Provisional) {}
    /// Called once the parcel's whole story is durable.
    fn parcel_done(&mut self, report: ParcelReport);
    /// Called as an alarm is recorded (monitoring); most screens ignore alarms.
    fn alarm(&mut self, _alarm: &Alarm) {}
    /// An `Input::InspectionResult` is durable in the record (it joins the parcel's record off
    /// the box).
    fn inspection_result(&mut self, _result: &Input) {}
}

/// A screen chosen at run time (with the console beside it or not).
impl Screen for Box<dyn Screen> {
    fn review_requested(&mut self, request: &ReviewRequest) {
        (**self).review_requested(request)
    }
    fn review_closed(&mut self, parcel: ParcelId, review: ReviewId) {
        (**self).review_closed(parcel, review)
    }
    fn provisional(&mut self, parcel: &Provisional) {
        (**self).provisional(parcel)
    }
    fn parcel_done(&mut self, report: ParcelReport) {
        (**self).parcel_done(report)
    }
    fn alarm(&mut self, alarm: &Alarm) {
        (**self).alarm(alarm)
    }
    fn inspection_result(&mut self, result: &Input) {
        (**self).inspection_result(result)
    }
}

/// What the core thread takes in.
#[derive(Debug)]
pub enum CoreMsg {
    Input(Input),
    Alarm(Alarm),
    /// An operator's command as it arrived (see [`Command`]).
    Command(Box<Command>),
    /// From the PLC driver (counted, for [`DaemonConfig::paced`]).
    Plc(DriverOutput),
}

/// An operator's command: its reply so far (who asked what under which request id; refused
/// already when it could not be read), and the input it carries. The core makes an operator's
/// change durable in the operator store, then takes the input, then records the command with
/// its outcome before the input, and only then answers on `respond`: an acknowledgement means
/// the change survives a restart.
#[derive(Debug)]
pub struct Command {
    pub reply: Reply,
    pub input: Option<Input>,
    pub respond: Option<tokio::sync::mpsc::UnboundedSender<Reply>>,
}

#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// The core thread wakes at least this often (real time) to check its deadlines.
    pub tick_max: Duration,
    /// After shutdown, how long (real time) the parcels on the belt may take to finish.
    pub drain_limit: Duration,
    /// Capacity of the core's input channel and of the driver's channels.
    pub queue: usize,
    /// Lockstep with a simulated PLC: the driver polls only once the core has handled (and made
    /// durable, and sent the destinations of) everything the driver reported (see
    /// [`crate::plc::driver::Pace`]).
    pub paced: bool,
    /// How often (real time) the core asks the audit writer whether a time-bound checkpoint is
    /// due, so that an idle line's last entries get signed too.
    pub checkpoint_poll: Duration,
    /// Where the core publishes the line time (ms) of its next deadline after every turn
    /// (`u64::MAX`: none), for a simulated line that must not run past what the core has yet
    /// to handle.
    pub next_due: Arc<AtomicU64>,
    /// Where the core copies its counters every [`DaemonConfig::checkpoint_poll`], for metrics.
    pub line_stats: Arc<Mutex<LineStats>>,
    /// Where the core copies its safe mode and operator stop, as often.
    pub line_mode: Arc<Mutex<LineMode>>,
    /// Scans the core has handled, for a simulated line that must not run past a scan the
    /// core has been sent but not yet taken in (its timeout would fire first).
    pub scans_handled: Arc<AtomicU64>,
    /// X-ray images settled: screened and the result handled, or given up on with an alarm
    /// (refused, unscreenable); for a simulated line that must not pass a parcel's cut-off
    /// while its image is still on the way.
    pub xray_settled: Arc<AtomicU64>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            tick_max: Duration::from_millis(5),
            drain_limit: Duration::from_secs(60),
            queue: 4096,
            paced: false,
            checkpoint_poll: Duration::from_secs(1),
            next_due: Arc::new(AtomicU64::new(u64::MAX)),
            line_stats: Arc::default(),
            line_mode: Arc::default(),
            scans_handled: Arc::default(),
            xray_settled: Arc::default(),
        }
    }
}

/// Everything the daemon runs.
pub struct Parts<C, S> {
    pub line: Line,
    pub audit: GroupCommit,
    pub clock: C,
    pub screen: S,
    pub map: RegisterMap,
    pub driver: DriverConfig,
    /// Handled first, at the clock's time (manifests, standing targets). The PLC driver starts
    /// only once they are in: until then the PLC holds induct (its safe mode before the host's
    /// first heartbeat), so no parcel meets a line that has not yet taken back its state.
    pub initial: Vec<Input>,
    /// The X-ray pre-screen's queue, with a station (`xray::station`).
    pub screener: Option<crossbeam_channel::Sender<crate::xray::station::ScreenJob>>,
    /// Where operators' changes are stored before they take effect; `None`: not kept.
    pub operator_store: Option<OperatorStore>,
}

/// What is left once the daemon stopped: the core (for its stats) and the audit writer, for
/// the caller's closing entries.
pub struct Finished {
    pub line: Line,
    pub audit: GroupCommit,
    pub now_ms: u64,
    pub driver_stats: DriverStats,
    /// Whether every parcel's story closed before the drain limit.
    pub drained: bool,
    /// Whether the PLC confirmed its safe mode once the driver's heartbeat stopped, and when.
    pub plc_safe_mode: SafeModeCheck,
}

/// A running daemon.
pub struct Daemon {
    inputs: Sender<CoreMsg>,
    drain: Option<oneshot::Sender<()>>,
    core: Option<std::thread::JoinHandle<Result<CoreEnd, DaemonError>>>,
    /// Fires when the core thread ends, however it ends (its sender is dropped with the thread).
    core_ended: oneshot::Receiver<()>,
    driver: tokio::task::JoinHandle<Result<SafeModeCheck, PlcError>>,
    stop_driver: Option<oneshot::Sender<()>>,
    forward: tokio::task::JoinHandle<()>,
    stats: Arc<Mutex<DriverStats>>,
}

struct CoreEnd {
    line: Line,
    audit: GroupCommit,
    now_ms: u64,
    drained: bool,
}

impl Daemon {
    /// Starts the core thread, the driver task and the driver→core forwarder. Call inside a
    /// multi-threaded tokio runtime.
    pub fn start<C: LineClock, S: Screen>(parts: Parts<C, S>, config: DaemonConfig) -> Result<Daemon, DaemonError> {
        let queue = config.queue.max(1);
        let (inputs, rx) = bounded::<CoreMsg>(queue);
        let (dest_tx, dest_rx) = mpsc::channel::<Destination>(queue);
        let (out_tx, mut out_rx) = mpsc::channel::<DriverOutput>(queue);
        let (handled_tx, handled) = tokio::sync::watch::channel(0u64);
        let Parts { line, audit, clock, screen, map, driver: driver_config, initial, screener, operator_store } = parts;
        // Monitoring reads the mode before the core's first turn: a line restored stopped, or in
        // shadow mode, must not be shown running live meanwhile.
        *config.line_mode.lock().unwrap_or_else(|e| e.into_inner()) = line.mode();
        let clock = Arc::new(clock);
        let line_time = {
            let clock = clock.clone();
            Arc::new(move || clock.now_ms())
        };
        let mut driver = Driver::new(&map, driver_config, out_tx, dest_rx).with_line_time(line_time);
        if config.paced {
            driver = driver.paced(Pace { handled });
        }
        let stats = driver.stats();
        let (stop_driver, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready) = oneshot::channel::<()>();
        let driver = tokio::spawn(async move {
            let mut stopped = stopped;
            // Not before the core has taken in its initial state; a core that never gets there
            // ends the daemon anyway.
            tokio::select! {
                r = ready => if r.is_err() { return Ok(SafeModeCheck::link_down(0)) },
                _ = &mut stopped => return Ok(SafeModeCheck::link_down(0)),
            }
            driver
                .run(async move {
                    let _ = stopped.await;
                })
                .await
        });
        let forward = {
            let inputs = inputs.clone();
            tokio::spawn(async move {
                // Ends when the driver drops its sender.
                while let Some(o) = out_rx.recv().await {
                    let msg = CoreMsg::Plc(o);
                    // The core's queue is bounded: wait for room without stalling other tasks.
                    if tokio::task::block_in_place(|| inputs.send(msg)).is_err() {
                        break;
                    }
                }
            })
        };
        let (drain, drain_rx) = oneshot::channel::<()>();
        let (core_alive, core_ended) = oneshot::channel::<()>();
        let core = Core {
            line,
            audit,
            clock,
            screen,
            config,
            destinations: dest_tx,
            handled: handled_tx,
            now_ms: 0,
            pending: Vec::new(),
            last: None,
            done: Vec::new(),
            inspected: Vec::new(),
            initial,
            screener,
            operator_store,
        };
        let core = std::thread::Builder::new()
            .name("sortline-core".into())
            .spawn(move || {
                // Dropped when the thread ends, by return, error or panic.
                let _alive = core_alive;
                core.run(rx, drain_rx, ready_tx)
            })
            .map_err(|_| DaemonError::Stopped("core thread (could not start)"))?;
        Ok(Daemon {
            inputs,
            drain: Some(drain),
            core: Some(core),
            core_ended,
            driver,
            stop_driver: Some(stop_driver),
            forward,
            stats,
        })
    }

    /// A sender for other devices' inputs (scanner, officer screen, platform). Bounded: a full
    /// queue blocks the sender, so call from a thread or inside `block_in_place`.
    pub fn inputs(&self) -> Sender<CoreMsg> {
        self.inputs.clone()
    }

    /// The PLC driver's counters, shared.
    pub fn driver_stats(&self) -> Arc<Mutex<DriverStats>> {
        self.stats.clone()
    }

    /// Runs until `shutdown` fires (or its sender is dropped), then drains the core and stops
    /// the driver.
    pub async fn run(mut self, mut shutdown: broadcast::Receiver<()>) -> Result<Finished, DaemonError> {
        tokio::select! {
            _ = shutdown.recv() => {}
            _ = &mut self.core_ended => {
                // Without the core nothing is decided or recorded: stop the driver at once, so
                // that its heartbeat stops and the PLC's watchdog sends everything to hold.
                let _ = self.stop_driver.take().map(|s| s.send(()));
                let _ = (&mut self.driver).await;
                self.forward.abort();
                let core = self.core.take().ok_or(DaemonError::Stopped("core thread"))?;
                return Err(match tokio::task::spawn_blocking(move || core.join()).await {
                    Ok(Ok(Err(e))) => e,
                    _ => DaemonError::Stopped("core thread"),
                });
            }
            r = &mut self.driver => {
                // The driver refused the PLC (map version, watchdog): nothing safe to do but stop.
                let _ = self.drain.take().map(|d| d.send(()));
                return Err(match r {
                    Ok(Err(e)) => DaemonError::Plc(e),
                    _ => DaemonError::Stopped("PLC driver"),
                });
            }
        }
        let _ = self.drain.take().map(|d| d.send(()));
        let core = self.core.take().ok_or(DaemonError::Stopped("core thread"))?;
        let end = tokio::task::spawn_blocking(move || core.join())
            .await
            .map_err(|_| DaemonError::Stopped("core thread"))?
            .map_err(|_| DaemonError::Stopped("core thread"))??;
        let _ = self.stop_driver.take().map(|s| s.send(()));
        let plc_safe_mode = (&mut self.driver).await.map_err(|_| DaemonError::Stopped("PLC driver"))??;
        self.forward.abort();
        let driver_stats = self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(Finished {
            line: end.line,
            audit: end.audit,
            now_ms: end.now_ms,
            driver_stats,
            drained: end.drained,
            plc_safe_mode,
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.drain.take().map(|d| d.send(()));
        let _ = self.stop_driver.take().map(|s| s.send(()));
        self.forward.abort();
    }
}

/// The core thread's state.
struct Core<C, S> {
    line: Line,
    audit: GroupCommit,
    clock: Arc<C>,
    screen: S,
    config: DaemonConfig,
    destinations: mpsc::Sender<Destination>,
    /// How many driver outputs are handled, destinations sent.
    handled: tokio::sync::watch::Sender<u64>,
    now_ms: u64,
    pending: Vec<NewEntry>,
    /// The last submission: once it resolves, everything before it is durable too.
    last: Option<Ticket>,
    /// Stories shown once durable.
    done: Vec<ParcelReport>,
    /// Inspection results recorded, shown (published) once durable, as finished parcels are.
    inspected: Vec<Input>,
    initial: Vec<Input>,
    screener: Option<crossbeam_channel::Sender<crate::xray::station::ScreenJob>>,
    operator_store: Option<OperatorStore>,
}

impl<C: LineClock, S: Screen> Core<C, S> {
    fn run(
        mut self,
        rx: crossbeam_channel::Receiver<CoreMsg>,
        mut drain: oneshot::Receiver<()>,
        ready: oneshot::Sender<()>,
    ) -> Result<CoreEnd, DaemonError> {
        for input in std::mem::take(&mut self.initial) {
            self.handle(input)?;
        }
        let _ = ready.send(());
        let mut draining: Option<clock::Stopwatch> = None;
        let mut checkpoint_poll = clock::Stopwatch::start();
        let checkpoint_poll_ms = self.config.checkpoint_poll.as_millis() as u64;
        let drain_limit_ms = self.config.drain_limit.as_millis() as u64;
        let drained = loop {
            if draining.is_none() && !matches!(drain.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
                draining = Some(clock::Stopwatch::start());
            }
            if let Some(d) = &draining {
                if self.line.in_flight() == 0 {
                    break true;
                }
                if d.elapsed_ms() > drain_limit_ms {
                    tracing::warn!(in_flight = self.line.in_flight(), "drain limit reached");
                    break false;
                }
            }
            let now = self.clock.now_ms().max(self.now_ms);
            // Line time runs at least as fast as real time here, so this never oversleeps.
            let wait = self
                .line
                .next_timeout()
                .map_or(self.config.tick_max, |t| Duration::from_millis(t.0.saturating_sub(now)))
                .min(self.config.tick_max);
            match rx.recv_timeout(wait) {
                Ok(CoreMsg::Input(input)) => {
                    let counter = match input {
                        Input::Scan { .. } => Some(self.config.scans_handled.clone()),
                        Input::XrayScreened { .. } => Some(self.config.xray_settled.clone()),
                        _ => None,
                    };
                    self.handle(input)?;
                    if let Some(counter) = counter {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Ok(CoreMsg::Alarm(a)) => self.alarm(&a),
                Ok(CoreMsg::Command(command)) => self.command(*command)?,
                Ok(CoreMsg::Plc(o)) => {
                    match o {
                        DriverOutput::Input(input) => self.handle(input)?,
                        DriverOutput::Alarm(a) => self.alarm(&a),
                    }
                    // Deadlines due now are part of catching up, before the next poll.
                    self.tick()?;
                    self.handled.send_modify(|n| *n += 1);
                }
                Err(RecvTimeoutError::Timeout) => self.settle()?,
                Err(RecvTimeoutError::Disconnected) => break self.line.in_flight() == 0,
            }
            self.tick()?;
            self.config.next_due.store(self.line.next_timeout().map_or(u64::MAX, |t| t.0), Ordering::SeqCst);
            if checkpoint_poll.elapsed_ms() >= checkpoint_poll_ms {
                self.submit()?;
                self.audit.checkpoint_if_due(clock::wall_ms())?;
                self.line.stats().clone_into(&mut self.config.line_stats.lock().unwrap_or_else(|e| e.into_inner()));
                *self.config.line_mode.lock().unwrap_or_else(|e| e.into_inner()) = self.line.mode();
                checkpoint_poll = clock::Stopwatch::start();
            }
        };
        self.submit()?;
        self.settle()?;
        Ok(CoreEnd { line: self.line, audit: self.audit, now_ms: self.now_ms, drained })
    }

    fn tick(&mut self) -> Result<(), DaemonError> {
        self.now_ms = self.clock.now_ms().max(self.now_ms);
        if self.line.next_timeout().is_some_and(|t| t.0 <= self.now_ms) {
            self.handle(Input::Tick)?;
        }
        Ok(())
    }

    fn alarm(&mut self, a: &Alarm) {
        // An image that will never be screened is settled too.
        if matches!(a.code, "xray_image_refused" | "xray_store_failed" | "xray_screen_failed") {
            self.config.xray_settled.fetch_add(1, Ordering::SeqCst);
        }
        tracing::debug!(code = a.code, tracking = ?a.tracking, "{}", a.message);
        self.pending.push(recorder::alarm_entry(a, Millis(self.now_ms), clock::wall_ms()));
        self.screen.alarm(a);
    }

    fn handle(&mut self, input: Input) -> Result<(), DaemonError> {
        let out = self.step(input);
        self.route(out)
    }

    /// The line takes `input` now; the clock never runs backwards.
    fn step(&mut self, input: Input) -> Vec<Output> {
        self.now_ms = self.clock.now_ms().max(self.now_ms);
        let mut out = Vec::new();
        self.line.handle(input, Millis(self.now_ms), &mut out);
        out
    }

    /// An operator's command: stored, taken, recorded, answered (see [`Command`]).
    fn command(&mut self, command: Command) -> Result<(), DaemonError> {
        let Command { mut reply, input, respond } = command;
        // Deadlines due first, so that the command's entry sits right before its input's.
        self.tick()?;
        let mut out = Vec::new();
        if let Some(input) = input {
            let kind = input.kind();
            match self.store_operator(&input) {
                Err(why) => reply = reply.refused_with(why),
                Ok(()) => {
                    out = self.step(input);
                    let refused = out.iter().find_map(|o| match o {
                        Output::Record(Record::Refused { input, why, .. }) if input == kind => Some(why.clone()),
                        _ => None,
                    });
                    if let Some(why) = refused {
                        reply = reply.refused_with(why);
                    }
                }
            }
        }
        self.pending.push(recorder::command_entry(&reply, Millis(self.now_ms), clock::wall_ms()));
        self.route(out)?;
        // The answer says what the record says: durable first.
        self.submit()?;
        self.settle()?;
        if let Some(respond) = respond {
            // The asker gone (the publisher stopping) leaves the record as the answer.
            let _ = respond.send(reply);
        }
        Ok(())
    }

    /// Stores what an operator's input changes, before the line takes it. `Err`: the command
    /// is refused (the store says no, or failed: then an alarm too) and the line never sees it.
    fn store_operator(&mut self, input: &Input) -> Result<(), String> {
        let Some(store) = self.operator_store.as_mut() else { return Ok(()) };
        let stored = match input {
            Input::TargetAdd(target) => store.add_target(target, clock::wall_ms()),
            Input::TargetRemove { id, officer } => store.remove_target(id, officer, clock::wall_ms()),
            _ => match self.line.operator_state().after(input) {
                Some(Ok(next)) => store.save_state(&next, clock::wall_ms()),
                // Refused by the line, which records why: nothing changes, nothing to store.
                _ => Ok(()),
            },
        };
        match stored {
            Ok(()) => Ok(()),
            Err(e @ (StoreError::TargetExists(_) | StoreError::NoTarget(_))) => Err(e.to_string()),
            Err(e) => {
                let why = format!("not stored, so not applied: {e}");
                self.alarm(&Alarm {
                    code: "operator_store_failed",
                    severity: Severity::Critical,
                    tracking: None,
                    message: format!("operator's {} {why}", input.kind()),
                });
                Err(why)
            }
        }
    }

    /// Where the line's outputs go: records to the writer, destinations to the driver once
    /// their records are durable, the rest to the screen and the pre-screen.
    fn route(&mut self, out: Vec<Output>) -> Result<(), DaemonError> {
        let now = Millis(self.now_ms);
        let wall = clock::wall_ms();
        let mut destinations = Vec::new();
        for o in out {
            match o {
                Output::Record(r) => {
                    if let Record::Input(i @ Input::InspectionResult { .. }) = &r {
                        self.inspected.push(i.clone());
                    }
                    self.pending.push(recorder::entry(&r, now, wall))
                }
                Output::Alarm(a) => self.alarm(&a),
                Output::SetDestination { parcel, lane_id, .. } => {
                    destinations.push(Destination { boot: parcel.boot, tracking: parcel.tracking, lane_id })
                }
                Output::ReviewRequested(r) => self.screen.review_requested(&r),
                Output::ScreenImage { parcel, image_seq, sha256, manifest } => {
                    let job = crate::xray::station::ScreenJob { parcel, image_seq, sha256, manifest };
                    // Unscreened, the parcel is not released: the core holds it at its cut-off.
                    if self.screener.as_ref().is_none_or(|s| s.try_send(job).is_err()) {
                        self.alarm(&Alarm {
                            code: "xray_screen_failed",
                            severity: crate::core::Severity::Warning,
                            tracking: Some(parcel.tracking),
                            message: format!(
                                "X-ray image {image_seq} not screened: no pre-screen, or its queue is full"
                            ),
                        });
                    }
                }
                Output::ReviewClosed { parcel, review } => self.screen.review_closed(parcel, review),
                Output::Provisional(p) => self.screen.provisional(&p),
                Output::ParcelDone(report) => self.done.push(report),
            }
        }
        self.submit()?;
        if destinations.is_empty() {
            return Ok(());
        }
        // Durable before the destination leaves.
        self.settle()?;
        for d in destinations {
            self.destinations.blocking_send(d).map_err(|_| DaemonError::Stopped("PLC driver"))?;
        }
        Ok(())
    }

    /// Hands what is pending to the writer, without waiting.
    fn submit(&mut self) -> Result<(), DaemonError> {
        if !self.pending.is_empty() {
            self.last = Some(self.audit.submit(std::mem::take(&mut self.pending))?);
        }
        Ok(())
    }

    /// Waits until everything submitted is durable, then shows the stories it closed.
    fn settle(&mut self) -> Result<(), DaemonError> {
        if let Some(ticket) = self.last.take() {
            ticket.wait()?;
        }
        for report in std::mem::take(&mut self.done) {
            self.screen.parcel_done(report);
        }
        for result in std::mem::take(&mut self.inspected) {
            self.screen.inspection_result(&result);
        }
        Ok(())
    }
}

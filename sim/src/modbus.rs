//! The simulated PLC over Modbus TCP (or RTU, [`SimPlc::start_rtu`]): a [`World`] run in real time × a speed factor behind a
//! [`PlcRegisters`] bank, served with tokio-modbus on a loopback port chosen at run time.
//!
//! The PLC's events (gate, X-ray entry, divert confirmed, lost) go through the register map's
//! event ring; destinations come only through the destination ring. Everything else the World
//! says (scanner, officers, inspection bench) is not the PLC's and comes out of
//! [`SimPlc::start`]'s device channel, stamped with line time. The belt starts when the host
//! first acknowledges the PLC's boot (induct is held until then), so a run does not depend on
//! how fast the host connects.
//!
//! Lockstep ([`SimPlcConfig::lockstep_quantum_ms`]): instead of real time × speed, the line
//! advances a fixed quantum per host poll cycle (each read of the header starts one), over the
//! same Modbus traffic: as fast as the host polls, and a slow host slows the line rather than
//! missing its deadlines. The PLC's heartbeat and watchdog stay on real time.
//!
//! Fault knobs ([`SimPlc`]): drop every open connection, stall replies past the host's
//! timeout, answer with a Modbus exception, restart the PLC (or reset its memory: boot 1 again,
//! a new nonce), stop its heartbeat, break its watchdog, pause the destination ring (late destinations), fill a
//! lane, jam the belt or press the emergency stop.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use sortline_plc_contract::RegisterMap;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_modbus::server::tcp::Server;
use tokio_modbus::{ExceptionCode, Request, Response};

use crate::plc::PlcRegisters;
use crate::rtu;
use crate::world::{DestinationOutcome, World};
use crate::{Ms, Report, SimEvent};

/// How the simulated PLC runs.
#[derive(Clone, Debug)]
pub struct SimPlcConfig {
    /// Line milliseconds per real millisecond (20: a 10-minute run takes 30 s).
    pub speed: u64,
    /// The PLC's scan period, real time.
    pub scan: Duration,
    /// Lockstep: the line advances this many ms per host poll cycle (each read of the header
    /// starts one) instead of real time × `speed`. Deterministic in line time per poll and as
    /// fast as the host polls; the PLC's own heartbeat and watchdog stay on real time.
    pub lockstep_quantum_ms: Option<u64>,
    /// Lockstep: asked with the line time a poll would advance to and the number of device
    /// events sent so far; while it says no, the line waits (the host has not yet taken the
    /// devices' events in, or not yet handled its deadlines).
    pub lockstep_gate: Option<LockstepGate>,
    /// Told of every destination the PLC takes, as it takes it (under the PLC's lock: keep it
    /// short).
    pub on_destination: Option<DestinationHook>,
}

/// A destination the PLC took, in belt ms.
#[derive(Clone, Copy, Debug)]
pub struct Taken {
    pub tracking: u32,
    pub at_ms: Ms,
    /// The parcel's gate and latch times, while it is on the belt.
    pub gate_and_latch: Option<(Ms, Ms)>,
}

/// See [`SimPlcConfig::on_destination`].
#[derive(Clone)]
pub struct DestinationHook(pub Arc<dyn Fn(Taken) + Send + Sync>);

impl std::fmt::Debug for DestinationHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DestinationHook")
    }
}

/// See [`SimPlcConfig::lockstep_gate`].
#[derive(Clone)]
pub struct LockstepGate(pub Arc<dyn Fn(Ms, u64) -> bool + Send + Sync>);

impl std::fmt::Debug for LockstepGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockstepGate")
    }
}

impl Default for SimPlcConfig {
    fn default() -> Self {
        SimPlcConfig {
            speed: 20,
            scan: Duration::from_millis(5),
            lockstep_quantum_ms: None,
            lockstep_gate: None,
            on_destination: None,
        }
    }
}

/// Device events (not the PLC's), with the line time they happened at.
pub type DeviceEvents = mpsc::UnboundedReceiver<(Ms, SimEvent)>;

#[derive(Debug, Default)]
struct Faults {
    /// Replies to delay, and by how much.
    stall_requests: u32,
    stall: Duration,
    /// Requests to answer with this exception.
    exception_requests: u32,
    exception: u8,
}

struct State {
    world: World,
    regs: PlcRegisters,
    /// Real ms (since start) at which the belt started: the first sync.
    belt_started_ms: Option<u64>,
    devices: mpsc::UnboundedSender<(Ms, SimEvent)>,
    /// Device events sent so far, for [`SimPlcConfig::lockstep_gate`].
    devices_sent: u64,
    events: Vec<(Ms, SimEvent)>,
    /// Destination slots the PLC took (every boot): each ring index once.
    taken: u64,
    /// Lockstep line time: quanta of completed host poll cycles since the belt started.
    lockstep_line_ms: u64,
    /// The World moves on belt time, which stands while the belt does: line time at which the
    /// belt stopped, and the line time it stood before.
    stopped_at: Option<Ms>,
    stopped_total: Ms,
}

impl State {
    /// The belt's (the World's) time at line time `line_ms`.
    fn belt_ms(&self, line_ms: Ms) -> Ms {
        line_ms.min(self.stopped_at.unwrap_or(Ms::MAX)).saturating_sub(self.stopped_total)
    }

    /// Starts or stops the belt clock to match the PLC's belt at line time `now`.
    fn follow_belt(&mut self, now: Ms) {
        match (self.regs.belt_running(), self.stopped_at) {
            (false, None) => self.stopped_at = Some(now),
            (true, Some(at)) => {
                self.stopped_total += now.saturating_sub(at);
                self.stopped_at = None;
            }
            _ => {}
        }
    }
}

struct Shared {
    state: Mutex<State>,
    faults: Mutex<Faults>,
    /// Bumped by [`SimPlc::drop_connections`]: connections of an older generation fail.
    generation: AtomicU64,
    epoch: Instant,
    speed: u64,
    lockstep_quantum_ms: Option<u64>,
    lockstep_gate: Option<LockstepGate>,
    on_destination: Option<DestinationHook>,
    /// The infeed closed from outside ([`SimPlc::close_infeed`]), whatever the PLC says.
    infeed_closed: AtomicBool,
    /// The header's first address: a read there starts a host poll cycle.
    header_address: u16,
    finished: watch::Sender<bool>,
    safe_mode: watch::Sender<bool>,
}

impl Shared {
    fn new(world: World, map: &RegisterMap, config: &SimPlcConfig) -> (Arc<Shared>, DeviceEvents) {
        let (devices, device_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                world,
                regs: PlcRegisters::new(map, 0),
                belt_started_ms: None,
                devices,
                devices_sent: 0,
                events: Vec::new(),
                taken: 0,
                lockstep_line_ms: 0,
                stopped_at: None,
                stopped_total: 0,
            }),
            faults: Mutex::new(Faults::default()),
            generation: AtomicU64::new(0),
            // The simulated PLC's own clock: it stands for hardware that has one.
            #[allow(clippy::disallowed_methods)]
            epoch: Instant::now(),
            speed: config.speed.max(1),
            lockstep_quantum_ms: config.lockstep_quantum_ms.filter(|q| *q > 0),
            lockstep_gate: config.lockstep_gate.clone(),
            on_destination: config.on_destination.clone(),
            infeed_closed: AtomicBool::new(false),
            header_address: map.header_span().0,
            finished: watch::channel(false).0,
            safe_mode: watch::channel(true).0,
        });
        (shared, device_rx)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic in a test thread holding the lock must not hide the first failure.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the state with the belt's time now.
    fn at_now<R>(&self, f: impl FnOnce(&mut State, Ms) -> R) -> R {
        let real_ms = self.real_ms();
        let mut st = self.state();
        let now = self.line_ms(&st, real_ms).unwrap_or(0);
        let belt = st.belt_ms(now);
        f(&mut st, belt)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn real_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn line_ms(&self, st: &State, real_ms: u64) -> Option<Ms> {
        match self.lockstep_quantum_ms {
            Some(_) => st.belt_started_ms.map(|_| st.lockstep_line_ms),
            None => st.belt_started_ms.map(|s| real_ms.saturating_sub(s) * self.speed),
        }
    }

    /// One PLC scan: the conveyor up to now, its PLC events into the ring, the host's
    /// destinations out of it and onto the conveyor.
    fn step(&self) {
        let mut guard = self.state();
        self.step_locked(&mut guard);
    }

    fn step_locked(&self, st: &mut State) {
        let real_ms = self.real_ms();
        let line_ms = self.line_ms(st, real_ms);
        if let Some(now) = line_ms {
            let belt = st.belt_ms(now);
            st.world.advance(belt, &mut st.events);
            let codes = st.regs.map().codes.event.clone();
            let lost = PlcRegisters::code(&st.regs.map().codes.lost, "WINDOW_EMPTY");
            let shift = st.stopped_total;
            for (at, event) in std::mem::take(&mut st.events) {
                let at = at + shift;
                match event {
                    SimEvent::Gate { tracking, trigger, length_mm } => {
                        st.regs.event(at, codes.gate_entered, tracking, trigger, length_mm)
                    }
                    SimEvent::XrayEntered { tracking, image_seq } => {
                        st.regs.event(at, codes.xray_entered, tracking, image_seq, 0)
                    }
                    SimEvent::Weighed { tracking, weight_g } => st.regs.event(at, codes.weighed, tracking, weight_g, 0),
                    SimEvent::Divert { tracking, lane_id } => {
                        st.regs.event(at, codes.divert_confirmed, tracking, u32::from(lane_id), 0)
                    }
                    SimEvent::Lost { tracking } => st.regs.event(at, codes.parcel_lost, tracking, lost, 0),
                    SimEvent::ForcedHold { tracking, why } => {
                        let why = PlcRegisters::code(&st.regs.map().codes.forced_hold, why.code_name());
                        st.regs.event(at, codes.forced_hold, tracking, why, 0)
                    }
                    other => {
                        // The receiver gone means the test is over; nothing to tell.
                        let _ = st.devices.send((at, other));
                        st.devices_sent += 1;
                    }
                }
            }
        }
        let now = line_ms.unwrap_or(0);
        let scan = st.regs.scan(real_ms, now);
        st.taken += scan.taken.len() as u64;
        for slot in &scan.taken {
            let at_ms = st.belt_ms(now);
            if let Some(hook) = &self.on_destination {
                let gate_and_latch = st.world.gate_and_latch(slot.tracking);
                (hook.0)(Taken { tracking: slot.tracking, at_ms, gate_and_latch });
            }
            let reason = match st.world.set_destination(at_ms, slot.tracking, slot.lane_id) {
                DestinationOutcome::Applied => continue,
                DestinationOutcome::Late => "AFTER_LATCH",
                DestinationOutcome::UnknownTracking => "UNKNOWN_TRACKING",
                DestinationOutcome::BadLane => "BAD_LANE",
                DestinationOutcome::SafeMode => {
                    let code = st.regs.map().codes.event.forced_hold;
                    let why = PlcRegisters::code(&st.regs.map().codes.forced_hold, "SAFE_MODE");
                    st.regs.event(now, code, slot.tracking, why, 0);
                    continue;
                }
            };
            st.regs.reject(now, slot, reason);
        }
        if st.belt_started_ms.is_some() {
            let held = st.regs.induct_held() || self.infeed_closed.load(Ordering::SeqCst);
            st.world.set_induct_held(st.belt_ms(now), held);
        }
        if let Some(on) = scan.safe_mode_changed {
            if !on && st.belt_started_ms.is_none() {
                st.belt_started_ms = Some(real_ms);
            }
            st.world.set_safe_mode(st.belt_ms(now), on);
            self.safe_mode.send_replace(on);
        }
        // With the infeed closed from outside, parcels still wait to come: not finished.
        let waiting = self.infeed_closed.load(Ordering::SeqCst);
        if st.belt_started_ms.is_some() && !waiting && st.world.next_event_time().is_none() {
            self.finished.send_replace(true);
        }
    }

    fn serve(&self, req: Request<'_>) -> Result<Response, ExceptionCode> {
        let mut st = self.state();
        if let (Some(quantum_ms), Request::ReadHoldingRegisters(a, _)) = (self.lockstep_quantum_ms, &req) {
            if *a == self.header_address && st.belt_started_ms.is_some() {
                // A new host poll cycle: the line moves one quantum, unless the gate holds it,
                // and this poll sees its events.
                let to = st.lockstep_line_ms + quantum_ms;
                if self.lockstep_gate.as_ref().is_none_or(|g| (g.0)(to, st.devices_sent)) {
                    st.lockstep_line_ms = to;
                }
                self.step_locked(&mut st);
            }
        }
        let illegal = |_| ExceptionCode::IllegalDataAddress;
        match req {
            Request::ReadHoldingRegisters(a, n) => {
                st.regs.read(a, n).map(Response::ReadHoldingRegisters).map_err(illegal)
            }
            Request::WriteMultipleRegisters(a, words) => st
                .regs
                .write(a, &words)
                .map(|()| Response::WriteMultipleRegisters(a, words.len() as u16))
                .map_err(illegal),
            Request::WriteSingleRegister(a, w) => {
                st.regs.write(a, &[w]).map(|()| Response::WriteSingleRegister(a, w)).map_err(illegal)
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

/// The Modbus service of one connection.
struct PlcService {
    shared: Arc<Shared>,
}

impl tokio_modbus::server::Service for PlcService {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Response, ExceptionCode>> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            let (stall, exception) = {
                let mut f = shared.faults();
                let stall = (f.stall_requests > 0).then(|| {
                    f.stall_requests -= 1;
                    f.stall
                });
                let exception = (f.exception_requests > 0).then(|| {
                    f.exception_requests -= 1;
                    ExceptionCode::new(f.exception)
                });
                (stall, exception)
            };
            if let Some(stall) = stall {
                // The request is served after the stall, as a slow PLC would: its late reply is
                // what the host must never take for a later request's.
                tokio::time::sleep(stall).await;
            }
            if let Some(exception) = exception {
                return Err(exception);
            }
            shared.serve(req)
        })
    }
}

/// A connection that fails once [`SimPlc::drop_connections`] has been called: the next read
/// or write errors, the server drops the socket, and the host sees the link break.
struct Conn {
    inner: TcpStream,
    generation: u64,
    shared: Arc<Shared>,
}

impl Conn {
    fn dropped(&self) -> bool {
        self.shared.generation.load(Ordering::SeqCst) != self.generation
    }
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "simulated PLC dropped the connection")
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.dropped() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.dropped() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The simulated line's clock and officer screen, cloneable and usable from any thread.
#[derive(Clone)]
pub struct SimClock {
    shared: Arc<Shared>,
}

impl SimClock {
    /// The line's clock now; 0 until the belt starts.
    pub fn line_ms(&self) -> Ms {
        let real_ms = self.shared.real_ms();
        let st = self.shared.state();
        self.shared.line_ms(&st, real_ms).unwrap_or(0)
    }

    /// Host -> officer screen, at the line's time now.
    pub fn request_review(&self, tracking: u32) {
        self.shared.at_now(|st, belt| st.world.request_review(belt, tracking));
    }
}

/// The running simulated PLC. Dropping it stops the server and the line.
/// Where the host reaches a simulated PLC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Modbus TCP on loopback.
    Tcp(SocketAddr),
    /// Modbus RTU on this serial port (a pty slave).
    Rtu(PathBuf),
}

pub struct SimPlc {
    endpoint: Endpoint,
    shared: Arc<Shared>,
    finished: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl SimPlc {
    /// Binds 127.0.0.1:0, starts serving `map`'s registers and scanning. Call from a tokio
    /// runtime.
    pub async fn start(world: World, map: &RegisterMap, config: SimPlcConfig) -> io::Result<(SimPlc, DeviceEvents)> {
        SimPlc::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), world, map, config).await
    }

    /// Like [`SimPlc::start`], listening on `addr`.
    pub async fn start_on(
        addr: SocketAddr,
        world: World,
        map: &RegisterMap,
        config: SimPlcConfig,
    ) -> io::Result<(SimPlc, DeviceEvents)> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (shared, devices) = Shared::new(world, map, &config);
        let server = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let server = Server::new(listener);
                let on_connected = |stream: TcpStream, peer: SocketAddr| {
                    let shared = shared.clone();
                    async move {
                        tracing::debug!(%peer, "simulated PLC: host connected");
                        let generation = shared.generation.load(Ordering::SeqCst);
                        let service = PlcService { shared: shared.clone() };
                        Ok(Some((service, Conn { inner: stream, generation, shared })))
                    }
                };
                let on_error = |e: io::Error| tracing::debug!(error = %e, "simulated PLC: connection ended");
                if let Err(e) = server.serve(&on_connected, on_error).await {
                    tracing::error!(error = %e, "simulated PLC: server stopped");
                }
            })
        };
        Ok((SimPlc::running(Endpoint::Tcp(addr), shared, server, config.scan), devices))
    }

    /// Like [`SimPlc::start`], over Modbus RTU: serves unit `unit_id` on the master side of a
    /// new pseudo-terminal whose slave side ([`SimPlc::serial_path`]) the host opens as a
    /// serial port. Same registers, lockstep and fault knobs; see [`SimPlc::drop_connections`]
    /// for what a drop means on a serial line.
    pub async fn start_rtu(
        world: World,
        map: &RegisterMap,
        config: SimPlcConfig,
        unit_id: u8,
    ) -> io::Result<(SimPlc, DeviceEvents)> {
        let (master, path) = crate::pty::open_pty()?;
        let (shared, devices) = Shared::new(world, map, &config);
        let server = {
            let shared = shared.clone();
            let mut generation = shared.generation.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let service = PlcService { shared: shared.clone() };
                let answer = |req| tokio_modbus::server::Service::call(&service, req);
                let dropped = || {
                    let now = shared.generation.load(Ordering::SeqCst);
                    std::mem::replace(&mut generation, now) != now
                };
                if let Err(e) = rtu::serve(master, unit_id, answer, dropped).await {
                    tracing::error!(error = %e, "simulated PLC: RTU server stopped");
                }
            })
        };
        Ok((SimPlc::running(Endpoint::Rtu(path), shared, server, config.scan), devices))
    }

    fn running(endpoint: Endpoint, shared: Arc<Shared>, server: JoinHandle<()>, scan: Duration) -> SimPlc {
        let scanner = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(scan);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    shared.step();
                }
            })
        };
        let finished = shared.finished.subscribe();
        SimPlc { endpoint, shared, finished, tasks: vec![server, scanner] }
    }

    /// Where the host reaches this PLC.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The TCP address of a PLC from [`SimPlc::start`].
    ///
    /// # Panics
    /// For a PLC from [`SimPlc::start_rtu`].
    pub fn addr(&self) -> SocketAddr {
        match &self.endpoint {
            Endpoint::Tcp(addr) => *addr,
            Endpoint::Rtu(path) => panic!("the simulated PLC is on serial {}, not TCP", path.display()),
        }
    }

    /// The serial port (pty slave) of a PLC from [`SimPlc::start_rtu`], e.g. `/dev/pts/7`.
    ///
    /// # Panics
    /// For a PLC from [`SimPlc::start`].
    pub fn serial_path(&self) -> &Path {
        match &self.endpoint {
            Endpoint::Rtu(path) => path,
            Endpoint::Tcp(addr) => panic!("the simulated PLC is on TCP {addr}, not serial"),
        }
    }

    /// The line's clock now; `None` until the belt starts (the first sync).
    pub fn line_ms(&self) -> Option<Ms> {
        let real_ms = self.shared.real_ms();
        let st = self.shared.state();
        self.shared.line_ms(&st, real_ms)
    }

    /// The line's clock, to hand to the host (shares the simulator's state).
    pub fn clock(&self) -> SimClock {
        SimClock { shared: self.shared.clone() }
    }

    /// Host -> officer screen, at the line's time now.
    pub fn request_review(&self, tracking: u32) {
        self.shared.at_now(|st, belt| st.world.request_review(belt, tracking));
    }

    /// The referee's account so far.
    pub fn report(&self) -> Report {
        self.shared.state().world.report()
    }

    pub fn boot_count(&self) -> u16 {
        self.shared.state().regs.boot_count()
    }

    /// The `BOOT_NONCE` of the PLC's current boot.
    pub fn boot_nonce(&self) -> u32 {
        self.shared.state().regs.boot_nonce()
    }

    pub fn safe_mode(&self) -> bool {
        self.shared.state().regs.safe_mode()
    }

    /// Waits until every parcel has left the line (or `timeout` passes: false).
    pub async fn wait_finished(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.finished.wait_for(|f| *f)).await.is_ok_and(|r| r.is_ok())
    }

    /// Destination slots the PLC has taken, over every boot.
    pub fn destinations_taken(&self) -> u64 {
        self.shared.state().taken
    }

    /// Waits until the PLC's safe mode is `on` (or `timeout` passes: false).
    pub async fn wait_safe_mode(&self, on: bool, timeout: Duration) -> bool {
        let mut rx = self.shared.safe_mode.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s == on)).await.is_ok_and(|r| r.is_ok())
    }

    /// Closes (or opens again) the infeed: no parcel enters the belt while it is closed, as
    /// when the PLC holds the induct; the ones waiting enter once it opens.
    pub fn close_infeed(&self, closed: bool) {
        self.shared.infeed_closed.store(closed, Ordering::SeqCst);
    }

    /// Whether every parcel has left the line.
    pub fn finished(&self) -> bool {
        *self.finished.borrow()
    }

    /// Fault: every open connection fails at its next read or write. Over RTU, where there is
    /// no connection to break, the next request is swallowed (its partial frame too) and never
    /// answered: the host times out and reopens the port, as after a line glitch.
    pub fn drop_connections(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Fault: the next `requests` replies come `by` late.
    pub fn stall_next(&self, requests: u32, by: Duration) {
        let mut f = self.shared.faults();
        f.stall_requests = requests;
        f.stall = by;
    }

    /// Fault: the next `requests` requests are answered with Modbus exception `code`.
    pub fn exception_next(&self, requests: u32, code: u8) {
        let mut f = self.shared.faults();
        f.exception_requests = requests;
        f.exception = code;
    }

    /// Fault: the PLC restarts now: windows, rings and queues gone, boot count up, a new nonce.
    pub fn restart(&self) {
        self.start_again(PlcRegisters::restart);
    }

    /// Fault: the PLC's memory is reset (or its CPU replaced) and it starts now: as
    /// [`SimPlc::restart`], but the persistent boot count is gone, so this is boot 1 again and
    /// only `BOOT_NONCE` shows the restart (see [`PlcRegisters::memory_reset`]). Tracking ids
    /// are the World's and continue; a real PLC would start them from 1 again.
    pub fn memory_reset(&self) {
        self.start_again(PlcRegisters::memory_reset);
    }

    fn start_again(&self, start: impl FnOnce(&mut PlcRegisters, u64)) {
        let real_ms = self.shared.real_ms();
        self.shared.at_now(|st, belt| {
            st.world.plc_restart(belt);
            start(&mut st.regs, real_ms);
            // A PLC starts in safe mode (not synced); the scan reports only changes.
            st.world.set_safe_mode(belt, true);
        });
        self.shared.safe_mode.send_replace(true);
    }

    /// Fault: the PLC takes no destination for the next `line_ms` of line time (see
    /// [`PlcRegisters::pause_destinations`]); those it then takes too late it rejects.
    pub fn pause_destinations(&self, line_ms: u64) {
        self.shared.state().regs.pause_destinations(line_ms);
    }

    /// Fault: the lane-full sensor of `lane_id` turns on or off: `LANE_FULL` bit and
    /// `LANE_FULL_CHANGED` event, and while on, parcels bound for it are forced to hold.
    pub fn set_lane_full(&self, lane_id: u16, on: bool) {
        self.shared.at_now(|st, belt| {
            let now = st.regs.line_ms();
            st.world.set_lane_full(belt, lane_id, on);
            st.regs.set_lane_full(now, lane_id, on);
        });
    }

    /// Fault: a jam at eye `eye` (the belt stops, `JAM` bit, `JAM_CHANGED`) or its clearing.
    /// Parcels stand with the belt: the World's clock waits.
    pub fn jam(&self, eye: u32, on: bool) {
        self.belt_fault(|regs, now| regs.set_jam(now, eye, on));
    }

    /// Fault: the emergency stop is pressed (the belt stops, `ESTOP` bit) or reset.
    pub fn estop(&self, on: bool) {
        self.belt_fault(|regs, _| regs.set_estop(on));
    }

    fn belt_fault(&self, f: impl FnOnce(&mut PlcRegisters, Ms)) {
        let real_ms = self.shared.real_ms();
        let mut st = self.shared.state();
        let now = self.shared.line_ms(&st, real_ms).unwrap_or(0);
        f(&mut st.regs, now);
        st.follow_belt(now);
    }

    /// Fault: the PLC program hangs (heartbeat frozen) or resumes.
    pub fn stop_heartbeat(&self, stopped: bool) {
        self.shared.state().regs.stop_heartbeat(stopped);
    }

    /// Fault: the PLC's watchdog never trips (or works again).
    pub fn break_watchdog(&self, broken: bool) {
        self.shared.state().regs.break_watchdog(broken);
    }
}

impl Drop for SimPlc {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

//! The Modbus driver, over TCP or RTU (a serial line): moves registers between the PLC and the
//! pure handshake in [`super::protocol`], and nothing else.
//!
//! - Every Modbus call runs under `tokio::time::timeout`: tokio-modbus has no timeout of its
//!   own, and after one a late reply could be taken for the next request's. So after a timeout
//!   or any transport error the context is dropped (the socket or the serial port closed) and a
//!   new one opened, with a bounded, deterministic backoff (doubling from `backoff_initial` to
//!   `backoff_max`). A serial port's input is flushed when it is opened: a late reply that
//!   arrived during the backoff is discarded, not read as the next request's.
//! - A Modbus exception (the device said no) is not a broken link: alarm `plc_exception` (or
//!   `plc_busy`), the poll is abandoned and tried again next period on the same connection.
//! - Every new connection's first header is checked ([`check_identity`]): a PLC with another
//!   map version or watchdog is refused, and [`Driver::run`] returns that error.
//! - Inputs for the core (events, `DestinationWritten`, orphans after a PLC restart) and alarms
//!   go out on a bounded channel; destinations come in on another.
//! - Stopped, the driver writes no more heartbeats and reads the PLC's status until it reports
//!   the safe mode of its watchdog, bounded by the watchdog time plus a margin
//!   ([`SafeModeCheck`]): the PLC confirms that it holds everything now the host is gone.

use super::codec::Header;
use super::error::{LinkFault, ModbusException, Operation, PlcError};
use super::map::RegisterMap;
use super::protocol::{
    check_identity, event_time, host_control, BeltWatch, Destination, DestinationWriter, EventReader, Heartbeat,
    ResyncCause,
};
use crate::clock::Stopwatch;
use crate::core::{Alarm, Input, Millis, TrackingId};
use crate::metrics::Latency;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_modbus::client::{rtu, tcp, Context, Reader, Writer};
use tokio_modbus::Slave;
use tokio_serial::SerialPort;

/// How the host reaches the PLC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlcLink {
    /// Modbus TCP.
    Tcp(SocketAddr),
    /// Modbus RTU on a serial port.
    Serial(SerialLink),
}

impl std::fmt::Display for PlcLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlcLink::Tcp(addr) => write!(f, "{addr}"),
            PlcLink::Serial(s) => write!(f, "{}", s.path),
        }
    }
}

/// A serial port and its line settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialLink {
    pub path: String,
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: DataBits,
    pub stop_bits: StopBits,
}

impl SerialLink {
    /// The Modbus RTU default line: 19200 baud, 8 data bits, even parity, 1 stop bit.
    pub fn new(path: impl Into<String>) -> SerialLink {
        SerialLink {
            path: path.into(),
            baud: 19_200,
            parity: Parity::Even,
            data_bits: DataBits::Eight,
            stop_bits: StopBits::One,
        }
    }

    fn builder(&self) -> tokio_serial::SerialPortBuilder {
        tokio_serial::new(&self.path, self.baud)
            .parity(match self.parity {
                Parity::None => tokio_serial::Parity::None,
                Parity::Even => tokio_serial::Parity::Even,
                Parity::Odd => tokio_serial::Parity::Odd,
            })
            .data_bits(match self.data_bits {
                DataBits::Seven => tokio_serial::DataBits::Seven,
                DataBits::Eight => tokio_serial::DataBits::Eight,
            })
            .stop_bits(match self.stop_bits {
                StopBits::One => tokio_serial::StopBits::One,
                StopBits::Two => tokio_serial::StopBits::Two,
            })
    }
}

/// Parity bit of each character; Modbus RTU's default is even.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    None,
    #[default]
    Even,
    Odd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataBits {
    Seven,
    Eight,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopBits {
    One,
    Two,
}

impl PlcLink {
    /// Connects (TCP) or opens the port (RTU) and attaches a Modbus client for `unit`.
    async fn open(&self, unit: Slave) -> std::io::Result<Context> {
        match self {
            PlcLink::Tcp(addr) => tcp::connect_slave(*addr, unit).await,
            PlcLink::Serial(link) => {
                let port = tokio_serial::SerialStream::open(&link.builder())?;
                // Bytes queued before this open (a late reply to a request of the last port)
                // belong to no request of ours.
                port.clear(tokio_serial::ClearBuffer::Input)?;
                Ok(rtu::attach_slave(port, unit))
            }
        }
    }
}

/// How to reach and poll the PLC.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub link: PlcLink,
    pub unit_id: u8,
    pub poll_period: Duration,
    /// Per Modbus request, and per connection attempt.
    pub request_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Parcels remembered in flight for the restart report (the line's `max_in_flight`).
    pub max_in_flight: usize,
    /// Destinations waiting for room in the PLC's ring; more are refused (parcel held).
    pub max_queued_destinations: usize,
}

impl DriverConfig {
    /// Modbus TCP, with defaults fitting the shipped map's timing (host heartbeat every 200 ms).
    pub fn new(addr: SocketAddr) -> DriverConfig {
        DriverConfig::with_link(PlcLink::Tcp(addr))
    }

    /// Modbus RTU on a serial port, with the same defaults as [`DriverConfig::new`].
    pub fn serial(link: SerialLink) -> DriverConfig {
        DriverConfig::with_link(PlcLink::Serial(link))
    }

    pub fn with_link(link: PlcLink) -> DriverConfig {
        DriverConfig {
            link,
            unit_id: 1,
            poll_period: Duration::from_millis(50),
            request_timeout: Duration::from_millis(250),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            max_in_flight: 512,
            max_queued_destinations: 256,
        }
    }
}

/// What the driver tells the core's thread.
#[derive(Clone, Debug, PartialEq)]
pub enum DriverOutput {
    Input(Input),
    Alarm(Alarm),
}

/// The driver's counters, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DriverStats {
    /// A connection to the PLC is open now.
    pub connected: bool,
    pub connects: u64,
    pub polls: u64,
    pub link_errors: u64,
    pub exceptions: u64,
    pub events: u64,
    pub destinations_taken: u64,
    pub destinations_refused: u64,
    /// One whole poll: header, event slots, destination slots, control block.
    pub poll_cycle: Latency,
    /// From a destination's arrival at the driver to the PLC's read index passing it.
    pub destination_latency: Latency,
}

/// What the PLC showed after the driver stopped its heartbeat for a clean stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SafeModeCheck {
    /// The PLC reported `SAFE_MODE` with `WATCHDOG_TRIPPED` within the bound.
    pub confirmed: bool,
    /// From the stop to the confirmation, to the bound, or to the link failing.
    pub waited_ms: u64,
    /// There was no link at the stop, or it broke while waiting: the PLC could not tell.
    pub link_down: bool,
}

impl SafeModeCheck {
    /// Nothing confirmed: no link to the PLC (or none opened yet) to read its status on.
    pub fn link_down(waited_ms: u64) -> SafeModeCheck {
        SafeModeCheck { confirmed: false, waited_ms, link_down: true }
    }

    fn log(&self) {
        let waited_ms = self.waited_ms;
        if self.confirmed {
            tracing::info!(waited_ms, "the PLC confirmed safe mode: its watchdog tripped once the heartbeat stopped");
        } else if self.link_down {
            tracing::warn!(waited_ms, "PLC link down at stop: its safe mode is not confirmed");
        } else {
            tracing::warn!(waited_ms, "the PLC did not report its watchdog's safe mode in time");
        }
    }
}

/// Lockstep pacing, for a simulated PLC whose line advances per poll cycle: the driver starts
/// a poll only once the host has handled every output of the earlier polls, so a slow host
/// slows the line down instead of missing its deadlines. Never for a real PLC.
#[derive(Debug)]
pub struct Pace {
    /// How many of the driver's outputs the host has handled; a dropped sender ends pacing.
    pub handled: tokio::sync::watch::Receiver<u64>,
}

/// The line clock the core runs on (ms), read by the driver when it requests a header so that
/// events can be placed in line time by the PLC's own clock ([`event_time`]).
pub type LineTime = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The PLC link: one per PLC.
pub struct Driver {
    map: RegisterMap,
    config: DriverConfig,
    reader: EventReader,
    writer: DestinationWriter,
    heartbeat: Heartbeat,
    belt: BeltWatch,
    out: mpsc::Sender<DriverOutput>,
    destinations: mpsc::Receiver<Destination>,
    destinations_open: bool,
    stats: Arc<Mutex<DriverStats>>,
    /// Real time since start, for heartbeats and the stall timeout (a lockstep line's clock is
    /// not real time, the PLC's watchdog is).
    epoch: Stopwatch,
    /// The core's clock, for placing events; `None`: events carry no time of their own.
    line_time: Option<LineTime>,
    /// Arrival time of each destination not yet taken (bounded by the writer's capacity).
    arrived: HashMap<TrackingId, Stopwatch>,
    /// The last error's alarm code, so a fault that persists is raised once, not every poll.
    last_alarm: Option<&'static str>,
    pace: Option<Pace>,
    /// Outputs sent to the host, for [`Pace`].
    emitted: u64,
}

/// Why a connection ended.
enum Ended {
    Shutdown(SafeModeCheck),
    Fatal(PlcError),
    Broken,
}

impl Driver {
    pub fn new(
        map: &RegisterMap,
        config: DriverConfig,
        out: mpsc::Sender<DriverOutput>,
        destinations: mpsc::Receiver<Destination>,
    ) -> Driver {
        Driver {
            reader: EventReader::new(map, config.max_in_flight),
            writer: DestinationWriter::new(map, config.max_queued_destinations),
            heartbeat: Heartbeat::new(map),
            belt: BeltWatch::default(),
            map: map.clone(),
            config,
            out,
            destinations,
            destinations_open: true,
            stats: Arc::default(),
            epoch: Stopwatch::start(),
            line_time: None,
            arrived: HashMap::new(),
            last_alarm: None,
            pace: None,
            emitted: 0,
        }
    }

    /// Paces the polls by the host's progress (see [`Pace`]).
    pub fn paced(mut self, pace: Pace) -> Driver {
        self.pace = Some(pace);
        self
    }

    /// Places the events of each poll in the core's line time by the PLC's clock.
    pub fn with_line_time(mut self, line_time: LineTime) -> Driver {
        self.line_time = Some(line_time);
        self
    }

    /// The counters, shared: read them while the driver runs.
    pub fn stats(&self) -> Arc<Mutex<DriverStats>> {
        self.stats.clone()
    }

    fn stat(&self, f: impl FnOnce(&mut DriverStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn now(&self) -> Millis {
        Millis(self.epoch.elapsed_ms())
    }

    async fn emit(&mut self, o: DriverOutput) {
        self.emitted += 1;
        // The receiver gone means the daemon is stopping; its shutdown future ends the loop.
        let _ = self.out.send(o).await;
    }

    async fn raise(&mut self, e: &PlcError) {
        let alarm = e.alarm();
        if self.last_alarm != Some(alarm.code) {
            tracing::warn!(code = alarm.code, "{}", alarm.message);
            self.last_alarm = Some(alarm.code);
            self.emit(DriverOutput::Alarm(alarm)).await;
        }
    }

    /// Runs until `shutdown` completes, then waits for the PLC's safe mode (bounded, see
    /// [`SafeModeCheck`]) and returns what it showed; or until the PLC is refused (its
    /// [`PlcError`]).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<SafeModeCheck, PlcError> {
        tokio::pin!(shutdown);
        let mut backoff = self.config.backoff_initial;
        let check = loop {
            let connect = self.config.link.open(Slave(self.config.unit_id));
            let ctx = tokio::select! {
                () = &mut shutdown => break SafeModeCheck::link_down(0),
                r = tokio::time::timeout(self.config.request_timeout, connect) => r,
            };
            let ended = match ctx {
                Ok(Ok(ctx)) => {
                    self.stat(|s| {
                        s.connects += 1;
                        s.connected = true;
                    });
                    tracing::info!(link = %self.config.link, "connected to the PLC");
                    self.heartbeat.reconnected();
                    self.writer.link_lost();
                    self.connection(ctx, &mut shutdown, &mut backoff).await
                }
                Ok(Err(e)) => {
                    let fault = LinkFault::Io(format!("{}: {e}", self.config.link));
                    self.raise(&PlcError::Link { op: Operation::Connect, fault }).await;
                    Ended::Broken
                }
                Err(_) => {
                    let fault = LinkFault::Timeout { after_ms: self.config.request_timeout.as_millis() as u64 };
                    self.raise(&PlcError::Link { op: Operation::Connect, fault }).await;
                    Ended::Broken
                }
            };
            match ended {
                Ended::Shutdown(check) => break check,
                Ended::Fatal(e) => {
                    tracing::error!(error = %e, "refusing to drive the PLC");
                    return Err(e);
                }
                Ended::Broken => {
                    self.stat(|s| {
                        s.link_errors += 1;
                        s.connected = false;
                    });
                    // The context is gone (dropped with its socket or port): a late reply cannot
                    // reach us.
                    tokio::select! {
                        () = &mut shutdown => break SafeModeCheck::link_down(0),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.config.backoff_max);
                }
            }
        };
        check.log();
        Ok(check)
    }

    /// After the stop: no more heartbeats (nor any other write), only the header, until the PLC
    /// shows its watchdog's safe mode. Bounded by `WATCHDOG_MS` plus two polls and a second;
    /// a link that fails ends the wait at once (no reconnect: the stop must not hang on it).
    async fn confirm_safe_mode(&mut self, ctx: &mut Context) -> SafeModeCheck {
        let started = Stopwatch::start();
        let bound =
            Duration::from_millis(self.map.timing.watchdog_ms) + 2 * self.config.poll_period + Duration::from_secs(1);
        let (address, count) = self.map.header_span();
        let watch = async {
            let mut tick = tokio::time::interval(self.config.poll_period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match read(ctx, self.config.request_timeout, Operation::ReadHeader, address, count).await {
                    Ok(words) => {
                        let status = Header::decode(&self.map, &words).map(|h| h.status);
                        if status.is_some_and(|s| s.safe_mode && s.watchdog_tripped) {
                            return Ok(());
                        }
                    }
                    Err(e) if e.needs_reconnect() => return Err(e),
                    // The device said no: ask again next period.
                    Err(_) => {}
                }
            }
        };
        let outcome = tokio::time::timeout(bound, watch).await;
        let waited_ms = started.elapsed_ms();
        match outcome {
            Ok(Ok(())) => SafeModeCheck { confirmed: true, waited_ms, link_down: false },
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "PLC link failed while waiting for its safe mode");
                SafeModeCheck::link_down(waited_ms)
            }
            Err(_) => SafeModeCheck { confirmed: false, waited_ms, link_down: false },
        }
    }

    /// Polls on one connection until it breaks; `ctx` is dropped on return.
    async fn connection(
        &mut self,
        mut ctx: Context,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
        backoff: &mut Duration,
    ) -> Ended {
        let mut tick = tokio::time::interval(self.config.poll_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            loop {
                tokio::select! {
                    // Destinations already queued go out with this poll.
                    biased;
                    () = &mut *shutdown => return Ended::Shutdown(self.confirm_safe_mode(&mut ctx).await),
                    d = self.destinations.recv(), if self.destinations_open => match d {
                        Some(d) => self.accept(d).await,
                        None => self.destinations_open = false,
                    },
                    _ = tick.tick() => break,
                }
            }
            if let Some(pace) = &mut self.pace {
                let emitted = self.emitted;
                let host_gone = tokio::select! {
                    () = &mut *shutdown => None,
                    r = pace.handled.wait_for(|h| *h >= emitted) => Some(r.is_err()),
                };
                let Some(host_gone) = host_gone else {
                    return Ended::Shutdown(self.confirm_safe_mode(&mut ctx).await);
                };
                if host_gone {
                    self.pace = None;
                }
                // What the host decided meanwhile goes out with this poll.
                while let Ok(d) = self.destinations.try_recv() {
                    self.accept(d).await;
                }
            }
            let started = Stopwatch::start();
            match self.poll(&mut ctx, first).await {
                Ok(()) => {
                    first = false;
                    *backoff = self.config.backoff_initial;
                    self.last_alarm = None;
                    self.stat(|s| {
                        s.polls += 1;
                        s.poll_cycle.record(started.elapsed());
                    });
                }
                Err(e @ (PlcError::MapVersion { .. } | PlcError::Watchdog { .. })) => {
                    self.raise(&e).await;
                    return Ended::Fatal(e);
                }
                Err(e) if e.needs_reconnect() => {
                    self.raise(&e).await;
                    return Ended::Broken;
                }
                Err(e) => {
                    // The device said no: the link is in step, try again next period.
                    self.stat(|s| s.exceptions += 1);
                    self.raise(&e).await;
                }
            }
        }
    }

    async fn accept(&mut self, d: Destination) {
        match self.writer.push(d) {
            Ok(()) => {
                self.arrived.insert(d.tracking, Stopwatch::start());
            }
            Err(e) => {
                self.stat(|s| s.destinations_refused += 1);
                tracing::warn!(error = %e, "destination refused");
                self.emit(DriverOutput::Alarm(e.alarm())).await;
            }
        }
    }

    /// One poll, in the order of docs/register-map.md "Host side".
    async fn poll(&mut self, ctx: &mut Context, first: bool) -> Result<(), PlcError> {
        let timeout = self.config.request_timeout;
        let (address, count) = self.map.header_span();
        // Before the request: the PLC read its clock after this, so events placed by it are
        // early by at most the request's delay, never late.
        let header_at = self.line_time.as_ref().map(|now| Millis(now()));
        let words = read(ctx, timeout, Operation::ReadHeader, address, count).await?;
        let header = Header::decode(&self.map, &words).ok_or_else(|| PlcError::Link {
            op: Operation::ReadHeader,
            fault: LinkFault::Protocol(format!("{} words for a {count}-word header", words.len())),
        })?;
        if first {
            check_identity(&self.map, &header)?;
        }
        let now = self.now();
        self.heartbeat.handle_plc(header.plc_heartbeat, now)?;
        let (belt, estop) = self.belt.handle(&header.status);
        if let Some(input) = belt {
            self.emit(DriverOutput::Input(input)).await;
        }
        if let Some(alarm) = estop {
            self.emit(DriverOutput::Alarm(alarm)).await;
        }

        let span = self.reader.plan(&header, self.map.event_ring.slots);
        let mut slots = Vec::new();
        if let Some(span) = span {
            for (address, count) in self.reader.reads(span) {
                slots.extend(read(ctx, timeout, Operation::ReadEvents, address, count).await?);
            }
        }
        let poll = self.reader.handle(&header, span.map(|s| (s, slots.as_slice())));
        let mut orphaned = Vec::new();
        if let Some(resync) = &poll.resync {
            // The core orphans its parcels of the old boot, or all of them when events were lost.
            self.emit(DriverOutput::Input(resync.input())).await;
            orphaned.clone_from(&resync.orphaned);
            if resync.cause == ResyncCause::EventsLost {
                for d in self.writer.forget(&orphaned) {
                    self.arrived.remove(&d.tracking);
                    tracing::warn!(tracking = %d.tracking, lane_id = d.lane_id, "destination dropped: PLC events lost");
                }
            }
        }
        for fault in &poll.faults {
            self.emit(DriverOutput::Alarm(fault.alarm())).await;
        }
        self.stat(|s| s.events += poll.events.len() as u64);
        for event in &poll.events {
            let at = header_at.and_then(|h| event_time(h, header.plc_time_ms, event.plc_time_ms));
            if let Some(input) = event.event.to_input(&self.map.codes, at) {
                self.emit(DriverOutput::Input(input)).await;
            }
            if let Some(alarm) = event.alarm(&self.map) {
                self.emit(DriverOutput::Alarm(alarm)).await;
            }
        }

        let dest = self.writer.handle_header(&header, &orphaned);
        for d in &dest.taken {
            if let Some(at) = self.arrived.remove(&d.tracking) {
                self.stat(|s| s.destination_latency.record(at.elapsed()));
            }
            self.stat(|s| s.destinations_taken += 1);
            self.emit(DriverOutput::Input(d.written_input())).await;
        }
        for d in &dest.dropped {
            // Its parcel was of the old boot: reported orphaned (lost), held by the PLC default.
            self.arrived.remove(&d.tracking);
            tracing::warn!(tracking = %d.tracking, lane_id = d.lane_id, "destination dropped by a PLC restart");
        }
        if let Some(fault) = &dest.fault {
            self.emit(DriverOutput::Alarm(fault.alarm())).await;
        }

        let write = self.writer.poll_write();
        for w in &write.slots {
            write_regs(ctx, timeout, Operation::WriteDestinations, w.address, &w.words).await?;
        }
        self.writer.commit(&write);
        let counter = self.heartbeat.host_counter(now);
        if let Some(control) = host_control(counter, &self.reader, &self.writer) {
            let w = control.encode(&self.map);
            write_regs(ctx, timeout, Operation::WriteControl, w.address, &w.words).await?;
        }
        Ok(())
    }
}

fn link(op: Operation, e: tokio_modbus::Error) -> PlcError {
    let fault = match e {
        tokio_modbus::Error::Transport(e) => LinkFault::Io(e.to_string()),
        tokio_modbus::Error::Protocol(e) => LinkFault::Protocol(e.to_string()),
    };
    PlcError::Link { op, fault }
}

fn timed_out(op: Operation, after: Duration) -> PlcError {
    PlcError::Link { op, fault: LinkFault::Timeout { after_ms: after.as_millis() as u64 } }
}

async fn read(
    ctx: &mut Context,
    timeout: Duration,
    op: Operation,
    address: u16,
    count: u16,
) -> Result<Vec<u16>, PlcError> {
    match tokio::time::timeout(timeout, ctx.read_holding_registers(address, count)).await {
        Err(_) => Err(timed_out(op, timeout)),
        Ok(Err(e)) => Err(link(op, e)),
        Ok(Ok(Err(code))) => {
            Err(PlcError::Exception { op, address, count, exception: ModbusException::from_code(code.into()) })
        }
        Ok(Ok(Ok(words))) if words.len() == usize::from(count) => Ok(words),
        Ok(Ok(Ok(words))) => Err(PlcError::Link {
            op,
            fault: LinkFault::Protocol(format!("{} registers for a read of {count}", words.len())),
        }),
    }
}

async fn write_regs(
    ctx: &mut Context,
    timeout: Duration,
    op: Operation,
    address: u16,
    words: &[u16],
) -> Result<(), PlcError> {
    let count = words.len() as u16;
    match tokio::time::timeout(timeout, ctx.write_multiple_registers(address, words)).await {
        Err(_) => Err(timed_out(op, timeout)),
        Ok(Err(e)) => Err(link(op, e)),
        Ok(Ok(Err(code))) => {
            Err(PlcError::Exception { op, address, count, exception: ModbusException::from_code(code.into()) })
        }
        Ok(Ok(Ok(()))) => Ok(()),
    }
}

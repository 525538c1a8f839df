//! Simulated barcode scanners: the World's [`SimEvent::Scan`] framed as bytes, per a
//! [`SimFraming`], and served over a pseudo-terminal (the host opens the slave as a serial
//! port) or over TCP (the host connects to us, or we connect to the host).
//!
//! The device frames what the World says (a no-read is the no-read token); the label faults
//! (no read, misread, two labels) are the World's. The device adds the wire's faults, drawn
//! from one seeded generator in event order, so a seed and an event sequence give the same
//! bytes: noise between frames, a frame split across two writes, a frame sent twice, and
//! disconnects (TCP: the socket is closed; pty: a burst of garbage, as a cable pulled and
//! put back). Heartbeat frames go out every [`SimScannerConfig::heartbeat_every`].
//!
//! Bytes the device cannot deliver are lost, as a real scanner's are: over TCP while no host
//! is connected, over the pty while no one has the slave open. [`SimScanner::take_written`]
//! holds exactly the bytes handed to the transport, in order.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::pty::open_pty;
use crate::SimEvent;

/// How a scanner frames one reading, as its profile says.
///
/// A frame is `start`, then (with `trigger_first`) the trigger count in decimal and the
/// delimiter, then the codes joined by the delimiter or the no-read token, then `stop`.
/// A heartbeat frame is `start`, the heartbeat token, `stop`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimFraming {
    /// Empty: frames are told apart by `stop` alone.
    pub start: Vec<u8>,
    pub stop: Vec<u8>,
    pub delimiter: Vec<u8>,
    pub no_read: String,
    pub trigger_first: bool,
    pub heartbeat: Option<String>,
}

impl SimFraming {
    /// The bytes of the reading at `trigger`; no codes is a no-read.
    pub fn frame(&self, trigger: u32, codes: &[String]) -> Vec<u8> {
        let mut body = Vec::new();
        if self.trigger_first {
            body.extend(trigger.to_string().bytes());
            body.extend(&self.delimiter);
        }
        if codes.is_empty() {
            body.extend(self.no_read.bytes());
        }
        for (i, code) in codes.iter().enumerate() {
            if i > 0 {
                body.extend(&self.delimiter);
            }
            body.extend(code.bytes());
        }
        self.wrap(&body)
    }

    /// The heartbeat frame, if the profile has one.
    pub fn heartbeat_frame(&self) -> Option<Vec<u8>> {
        self.heartbeat.as_ref().map(|h| self.wrap(h.as_bytes()))
    }

    fn wrap(&self, body: &[u8]) -> Vec<u8> {
        [&self.start[..], body, &self.stop[..]].concat()
    }
}

/// The wire's faults. Probabilities are per framed reading, between 0 and 1.
#[derive(Clone, Debug, Default)]
pub struct ScannerFaults {
    pub seed: u64,
    /// Noise bytes before the frame (1 to `noise_max_bytes`). Noise never holds a byte of the
    /// start or stop sequence. With a start sequence the noise lies between frames, where the
    /// parser skips it; without one it could not be told from a frame's first field, so it is
    /// closed by the stop sequence and arrives as a junk frame of its own (it never merges
    /// into a real frame).
    pub noise: f64,
    pub noise_max_bytes: usize,
    /// The frame goes out in two writes, a moment apart.
    pub split: f64,
    /// The frame goes out twice (same trigger).
    pub duplicate: f64,
    /// After the frame: TCP closes the socket; the pty gets a garbage burst (noise bytes).
    pub disconnect: f64,
}

/// One simulated scanner.
#[derive(Clone, Debug)]
pub struct SimScannerConfig {
    pub framing: SimFraming,
    pub faults: ScannerFaults,
    /// Heartbeat frames this often (when the framing has a heartbeat token).
    pub heartbeat_every: Option<Duration>,
}

/// What the device has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimScannerStats {
    /// Scan events and disconnect requests handled (see [`SimScanner::wait_idle`]).
    pub handled: u64,
    /// Readings framed (duplicates not counted again).
    pub frames: u64,
    pub heartbeats: u64,
    pub noise_bytes: u64,
    pub splits: u64,
    pub duplicates: u64,
    pub disconnects: u64,
    /// Hosts that connected (TCP) or connections we made (TCP client mode).
    pub connections: u64,
    /// Bytes handed to the transport.
    pub bytes_written: u64,
    /// Bytes lost because no host was there (or it stopped reading).
    pub bytes_dropped: u64,
}

/// One step of the device on its transport.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Write {
    /// One write call.
    Bytes(Vec<u8>),
    /// A moment's pause, so a split frame reaches the host in two reads.
    Pause,
    /// TCP closes the connection; a pty gets these garbage bytes.
    Disconnect(Vec<u8>),
}

/// The pure device: framing and the wire's faults, no I/O.
struct Device {
    framing: SimFraming,
    faults: ScannerFaults,
    rng: ChaCha8Rng,
    /// Bytes noise may use: none of the start or stop bytes.
    noise_alphabet: Vec<u8>,
}

impl Device {
    fn new(framing: SimFraming, faults: ScannerFaults) -> Device {
        let noise_alphabet = (0..=255u8).filter(|b| !framing.start.contains(b) && !framing.stop.contains(b)).collect();
        let rng = ChaCha8Rng::seed_from_u64(faults.seed);
        Device { framing, faults, rng, noise_alphabet }
    }

    fn roll(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p.min(1.0))
    }

    fn noise(&mut self) -> Vec<u8> {
        if self.noise_alphabet.is_empty() || self.faults.noise_max_bytes == 0 {
            return Vec::new();
        }
        let n = self.rng.random_range(1..=self.faults.noise_max_bytes);
        (0..n).map(|_| self.noise_alphabet[self.rng.random_range(0..self.noise_alphabet.len())]).collect()
    }

    fn scan(&mut self, trigger: u32, codes: &[String], stats: &mut SimScannerStats) -> Vec<Write> {
        let mut out = Vec::new();
        let frame = self.framing.frame(trigger, codes);
        stats.frames += 1;
        if self.roll(self.faults.noise) {
            let mut noise = self.noise();
            stats.noise_bytes += noise.len() as u64;
            if !noise.is_empty() {
                if self.framing.start.is_empty() {
                    noise.extend(&self.framing.stop);
                }
                out.push(Write::Bytes(noise));
            }
        }
        if frame.len() > 1 && self.roll(self.faults.split) {
            stats.splits += 1;
            let at = self.rng.random_range(1..frame.len());
            out.extend([Write::Bytes(frame[..at].to_vec()), Write::Pause, Write::Bytes(frame[at..].to_vec())]);
        } else {
            out.push(Write::Bytes(frame.clone()));
        }
        if self.roll(self.faults.duplicate) {
            stats.duplicates += 1;
            out.push(Write::Bytes(frame));
        }
        if self.roll(self.faults.disconnect) {
            out.push(self.disconnect(stats));
        }
        out
    }

    fn disconnect(&mut self, stats: &mut SimScannerStats) -> Write {
        stats.disconnects += 1;
        Write::Disconnect(self.noise())
    }
}

enum Command {
    Scan { trigger: u32, codes: Vec<String> },
    Disconnect,
}

/// Longest a write may wait for a host that does not read; the rest is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const SPLIT_PAUSE: Duration = Duration::from_millis(2);
/// The record of written bytes keeps at most this many (tests and short demos stay below).
const WRITTEN_CAP: usize = 4 << 20;

/// Where the device's bytes go.
enum Port {
    Pty(AsyncFd<OwnedFd>),
    Listen { listener: TcpListener, conn: Option<TcpStream> },
    Connect { host: SocketAddr, conn: Option<TcpStream> },
}

/// Something the transport did on its own.
enum PortEvent {
    Accepted(io::Result<(TcpStream, SocketAddr)>),
    PeerClosed,
}

/// Reads and discards what the host sends; returns when the connection ends.
async fn drain(conn: &mut Option<TcpStream>) {
    let Some(stream) = conn else { return std::future::pending().await };
    let mut buf = [0u8; 256];
    while let Ok(1..) = stream.read(&mut buf).await {}
}

impl Port {
    async fn event(&mut self) -> PortEvent {
        match self {
            Port::Pty(_) => std::future::pending().await,
            Port::Listen { listener, conn } => tokio::select! {
                a = listener.accept() => PortEvent::Accepted(a),
                () = drain(conn) => PortEvent::PeerClosed,
            },
            Port::Connect { conn, .. } => {
                drain(conn).await;
                PortEvent::PeerClosed
            }
        }
    }

    /// Writes `bytes`; returns how many were delivered (the rest is lost).
    async fn write(&mut self, bytes: &[u8], stats: &mut SimScannerStats) -> usize {
        let conn = match self {
            Port::Pty(fd) => return pty_write(fd, bytes).await,
            Port::Listen { conn, .. } => conn,
            Port::Connect { host, conn } => {
                if conn.is_none() {
                    // A scanner in client mode connects when it has something to say.
                    if let Ok(Ok(s)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(*host)).await {
                        stats.connections += 1;
                        *conn = Some(s);
                    }
                }
                conn
            }
        };
        let Some(stream) = conn else { return 0 };
        let mut sent = 0;
        while sent < bytes.len() {
            match tokio::time::timeout(WRITE_TIMEOUT, stream.write(&bytes[sent..])).await {
                Ok(Ok(n)) if n > 0 => sent += n,
                _ => {
                    // Broken or not reading: the connection is given up, as a scanner would.
                    *conn = None;
                    break;
                }
            }
        }
        sent
    }

    /// Returns the bytes offered (the garbage on a pty, none on TCP) and how many went out.
    async fn disconnect<'a>(&mut self, garbage: &'a [u8], stats: &mut SimScannerStats) -> (&'a [u8], usize) {
        match self {
            Port::Pty(_) => (garbage, self.write(garbage, stats).await),
            Port::Listen { conn, .. } | Port::Connect { conn, .. } => {
                *conn = None;
                (&[], 0)
            }
        }
    }
}

/// Whether a host has the slave open. The master reads EIO while none has; what the host
/// sent is discarded (scanner commands are not simulated). Checked at each write rather
/// than polled, so a device without a peer never spins.
fn pty_peer(fd: &AsyncFd<OwnedFd>) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match nix::unistd::read(fd.get_ref().as_fd(), &mut buf) {
            Ok(0) | Err(Errno::EIO) => return false,
            Ok(_) => continue,
            Err(_) => return true,
        }
    }
}

/// A master's writes are buffered even with no peer and handed to the next opener, which a
/// serial line would not do: without a peer the bytes are dropped instead.
async fn pty_write(fd: &AsyncFd<OwnedFd>, bytes: &[u8]) -> usize {
    if !pty_peer(fd) {
        return 0;
    }
    let mut sent = 0;
    while sent < bytes.len() {
        let Ok(Ok(mut guard)) = tokio::time::timeout(WRITE_TIMEOUT, fd.writable()).await else { break };
        match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), &bytes[sent..]).map_err(io::Error::from)) {
            Ok(Ok(n)) => sent += n,
            Ok(Err(_)) => break,
            Err(_would_block) => {}
        }
    }
    sent
}

struct Shared {
    stats: watch::Sender<SimScannerStats>,
    written: Mutex<VecDeque<u8>>,
    /// Commands sent to the device task.
    sent: AtomicU64,
}

/// A running simulated scanner. Dropping it stops the device (and closes its transport).
pub struct SimScanner {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    slave: Option<PathBuf>,
    addr: Option<SocketAddr>,
    task: JoinHandle<()>,
}

impl SimScanner {
    /// A scanner on a serial line: a pty whose slave ([`SimScanner::slave_path`]) the host
    /// opens. Call from a tokio runtime.
    pub fn pty(config: SimScannerConfig) -> io::Result<SimScanner> {
        let (master, path) = open_pty()?;
        // SAFETY: an OwnedFd is a valid open descriptor, and the AsyncFd owns it until dropped.
        let fd = unsafe { AsyncFd::register(master) }?;
        Ok(SimScanner::spawn(config, Port::Pty(fd), Some(path), None))
    }

    /// A scanner as a TCP server (as Cognex on port 23 or SICK on 2112 are), on 127.0.0.1
    /// port 0 ([`SimScanner::addr`]). One host at a time: a new connection replaces the old.
    pub async fn tcp_listen(config: SimScannerConfig) -> io::Result<SimScanner> {
        SimScanner::tcp_listen_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Like [`SimScanner::tcp_listen`], on `addr`.
    pub async fn tcp_listen_on(config: SimScannerConfig, addr: SocketAddr) -> io::Result<SimScanner> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(SimScanner::spawn(config, Port::Listen { listener, conn: None }, None, Some(addr)))
    }

    /// A scanner as a TCP client of the host's listener at `host`: it connects when it has
    /// bytes to send and no connection (again after a disconnect).
    pub fn tcp_connect(config: SimScannerConfig, host: SocketAddr) -> SimScanner {
        SimScanner::spawn(config, Port::Connect { host, conn: None }, None, None)
    }

    fn spawn(config: SimScannerConfig, port: Port, slave: Option<PathBuf>, addr: Option<SocketAddr>) -> SimScanner {
        let (commands, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            stats: watch::channel(SimScannerStats::default()).0,
            written: Mutex::new(VecDeque::new()),
            sent: AtomicU64::new(0),
        });
        let task = tokio::spawn(serve(config, port, rx, shared.clone()));
        SimScanner { commands, shared, slave, addr, task }
    }

    /// The pty slave's path, for the host to open as a serial port.
    pub fn slave_path(&self) -> Option<&Path> {
        self.slave.as_deref()
    }

    /// The TCP server's address.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Frames a [`SimEvent::Scan`] (true); any other event is not the scanner's (false).
    pub fn send(&self, event: &SimEvent) -> bool {
        let SimEvent::Scan { trigger, codes } = event else { return false };
        self.command(Command::Scan { trigger: *trigger, codes: codes.clone() });
        true
    }

    /// Fault: disconnect now (TCP: close the socket; pty: a garbage burst).
    pub fn disconnect(&self) {
        self.command(Command::Disconnect);
    }

    fn command(&self, c: Command) {
        self.shared.sent.fetch_add(1, Ordering::SeqCst);
        // The task ends only when the SimScanner drops.
        let _ = self.commands.send(c);
    }

    pub fn stats(&self) -> SimScannerStats {
        self.shared.stats.borrow().clone()
    }

    /// The bytes handed to the transport since the last call, in order (at most the last
    /// 4 MiB: a long run should take them as it goes or not look at them).
    pub fn take_written(&self) -> Vec<u8> {
        let mut w = self.shared.written.lock().unwrap_or_else(|e| e.into_inner());
        w.drain(..).collect()
    }

    /// The bytes handed to the transport in all, once every event sent so far has gone out;
    /// `None` while some are still on their way.
    pub fn settled_bytes(&self) -> Option<u64> {
        let sent = self.shared.sent.load(Ordering::SeqCst);
        let stats = self.shared.stats.borrow();
        (stats.handled >= sent).then_some(stats.bytes_written)
    }

    /// Waits until every event sent so far has gone out (or `timeout` passes: false).
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let sent = self.shared.sent.load(Ordering::SeqCst);
        self.wait_stats(timeout, |s| s.handled >= sent).await
    }

    /// Waits until `n` connections have been made in all (or `timeout` passes: false).
    pub async fn wait_connections(&self, n: u64, timeout: Duration) -> bool {
        self.wait_stats(timeout, |s| s.connections >= n).await
    }

    async fn wait_stats(&self, timeout: Duration, f: impl FnMut(&SimScannerStats) -> bool) -> bool {
        let mut rx = self.shared.stats.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(f)).await.is_ok_and(|r| r.is_ok())
    }
}

impl Drop for SimScanner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    config: SimScannerConfig,
    mut port: Port,
    mut rx: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
) {
    let heartbeat = config.framing.heartbeat_frame().zip(config.heartbeat_every);
    let mut device = Device::new(config.framing, config.faults);
    let mut tick = tokio::time::interval(heartbeat.as_ref().map_or(Duration::from_secs(3600), |(_, every)| *every));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stats = SimScannerStats::default();
    loop {
        let writes = tokio::select! {
            event = port.event() => {
                match (event, &mut port) {
                    (PortEvent::Accepted(Ok((stream, peer))), Port::Listen { conn, .. }) => {
                        tracing::debug!(%peer, "simulated scanner: host connected");
                        stats.connections += 1;
                        *conn = Some(stream);
                    }
                    (PortEvent::Accepted(Err(e)), _) => tracing::debug!(error = %e, "simulated scanner: accept failed"),
                    (PortEvent::PeerClosed, Port::Listen { conn, .. } | Port::Connect { conn, .. }) => *conn = None,
                    _ => {}
                }
                Vec::new()
            }
            c = rx.recv() => {
                stats.handled += 1;
                match c {
                    Some(Command::Scan { trigger, codes }) => device.scan(trigger, &codes, &mut stats),
                    Some(Command::Disconnect) => vec![device.disconnect(&mut stats)],
                    None => return,
                }
            }
            _ = tick.tick(), if heartbeat.is_some() => {
                stats.heartbeats += 1;
                heartbeat.iter().map(|(frame, _)| Write::Bytes(frame.clone())).collect()
            }
        };
        for w in writes {
            let (bytes, sent) = match &w {
                Write::Bytes(b) => (&b[..], port.write(b, &mut stats).await),
                Write::Disconnect(garbage) => port.disconnect(garbage, &mut stats).await,
                Write::Pause => {
                    tokio::time::sleep(SPLIT_PAUSE).await;
                    continue;
                }
            };
            stats.bytes_written += sent as u64;
            stats.bytes_dropped += (bytes.len() - sent) as u64;
            let mut log = shared.written.lock().unwrap_or_else(|e| e.into_inner());
            log.extend(&bytes[..sent]);
            let over = log.len().saturating_sub(WRITTEN_CAP);
            log.drain(..over);
        }
        shared.stats.send_replace(stats.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stx_etx() -> SimFraming {
        SimFraming {
            start: vec![0x02],
            stop: vec![0x03],
            delimiter: b";".to_vec(),
            no_read: "NoRead".into(),
            trigger_first: true,
            heartbeat: Some("HB".into()),
        }
    }

    fn crlf() -> SimFraming {
        SimFraming {
            start: vec![],
            stop: b"\r\n".to_vec(),
            delimiter: b",".to_vec(),
            no_read: "NR".into(),
            trigger_first: false,
            heartbeat: None,
        }
    }

    fn codes(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn frames_match_the_description_byte_for_byte() {
        let f = stx_etx();
        assert_eq!(f.frame(42, &codes(&["EA123456785CN"])), b"\x0242;EA123456785CN\x03");
        assert_eq!(f.frame(7, &codes(&["EA123456785CN", "RR000000005CN"])), b"\x027;EA123456785CN;RR000000005CN\x03");
        assert_eq!(f.frame(0, &[]), b"\x020;NoRead\x03");
        assert_eq!(f.heartbeat_frame().unwrap(), b"\x02HB\x03");
        let f = crlf();
        assert_eq!(f.frame(42, &codes(&["EA123456785CN"])), b"EA123456785CN\r\n");
        assert_eq!(f.frame(42, &codes(&["A", "B"])), b"A,B\r\n");
        assert_eq!(f.frame(42, &[]), b"NR\r\n");
        assert_eq!(f.heartbeat_frame(), None);
    }

    fn run(framing: SimFraming, faults: ScannerFaults, n: u32) -> (Vec<Write>, SimScannerStats) {
        let mut d = Device::new(framing, faults);
        let mut stats = SimScannerStats::default();
        let mut out = Vec::new();
        for t in 0..n {
            let c = if t % 5 == 0 { vec![] } else { codes(&["EA123456785CN"]) };
            out.extend(d.scan(t, &c, &mut stats));
        }
        (out, stats)
    }

    fn noisy(seed: u64) -> ScannerFaults {
        ScannerFaults { seed, noise: 0.3, noise_max_bytes: 16, split: 0.3, duplicate: 0.1, disconnect: 0.05 }
    }

    #[test]
    fn without_faults_the_writes_are_the_frames() {
        let (writes, stats) = run(stx_etx(), ScannerFaults::default(), 20);
        let expected: Vec<Write> = (0..20)
            .map(|t| {
                let c = if t % 5 == 0 { vec![] } else { codes(&["EA123456785CN"]) };
                Write::Bytes(stx_etx().frame(t, &c))
            })
            .collect();
        assert_eq!(writes, expected);
        assert_eq!(stats.frames, 20);
    }

    #[test]
    fn faults_are_deterministic_per_seed() {
        let (a, sa) = run(stx_etx(), noisy(7), 300);
        let (b, sb) = run(stx_etx(), noisy(7), 300);
        let (c, _) = run(stx_etx(), noisy(8), 300);
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        assert_ne!(a, c);
        assert!(sa.noise_bytes > 0 && sa.splits > 0 && sa.duplicates > 0 && sa.disconnects > 0, "{sa:?}");
    }

    #[test]
    fn noise_never_holds_start_or_stop_bytes() {
        for seed in 0..20 {
            let mut d = Device::new(stx_etx(), noisy(seed));
            for _ in 0..50 {
                let noise = d.noise();
                assert!(!noise.is_empty() && !noise.contains(&0x02) && !noise.contains(&0x03));
            }
        }
        // Without a start sequence, noise is its own junk frame: closed by the stop sequence.
        let (writes, _) = run(crlf(), ScannerFaults { noise: 1.0, noise_max_bytes: 8, ..noisy(3) }, 50);
        let Write::Bytes(noise) = &writes[0] else { panic!("{writes:?}") };
        let (junk, stop) = noise.split_at(noise.len() - 2);
        assert_eq!(stop, b"\r\n");
        assert!(!junk.contains(&b'\r') && !junk.contains(&b'\n'));
    }

    #[test]
    fn the_frames_survive_splits_and_duplicates_in_order() {
        // Dropping the noise writes and joining the rest gives each frame once or twice, in order.
        let faults = ScannerFaults { noise: 0.0, disconnect: 0.0, ..noisy(11) };
        let (writes, stats) = run(stx_etx(), faults, 200);
        let joined: Vec<u8> = writes
            .iter()
            .flat_map(|w| match w {
                Write::Bytes(b) => b.clone(),
                _ => vec![],
            })
            .collect();
        let mut rest = &joined[..];
        for t in 0..200 {
            let c = if t % 5 == 0 { vec![] } else { codes(&["EA123456785CN"]) };
            let frame = stx_etx().frame(t, &c);
            assert!(rest.starts_with(&frame), "trigger {t}");
            rest = &rest[frame.len()..];
            if rest.starts_with(&frame) {
                rest = &rest[frame.len()..];
            }
        }
        assert!(rest.is_empty());
        assert!(stats.splits > 20 && stats.duplicates > 5, "{stats:?}");
    }

    #[tokio::test]
    async fn heartbeats_go_out_when_configured() {
        let config = SimScannerConfig {
            framing: stx_etx(),
            faults: ScannerFaults::default(),
            heartbeat_every: Some(Duration::from_millis(5)),
        };
        let scanner = SimScanner::tcp_listen(config).await.unwrap();
        let mut host = TcpStream::connect(scanner.addr().unwrap()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < 3 * 4 {
            let n = tokio::time::timeout(Duration::from_secs(5), host.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0);
            got.extend(&buf[..n]);
        }
        assert!(got.starts_with(b"\x02HB\x03\x02HB\x03\x02HB\x03"), "{got:?}");
    }
}

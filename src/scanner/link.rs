//! The scanner link: one tokio task per scanner that owns its transport (serial port, TCP
//! client or TCP server) and hands raw byte chunks to a consumer on a bounded channel. It
//! knows nothing of frames; the parser sits behind the channel.
//!
//! - Connects and opens run under a timeout; a lost link is reopened with a bounded,
//!   deterministic backoff (doubling from `backoff_initial_ms` to `backoff_max_ms`), reset once
//!   a connection delivers bytes.
//! - [`LinkEvent::Down`] is sent once per outage (not per failed attempt), [`LinkEvent::Up`] on
//!   each new connection. No byte for `silence_timeout_ms` while up sends [`LinkEvent::Silent`]
//!   once; the next bytes send [`LinkEvent::Alive`] before them. [`LinkEvent::alarm`] gives
//!   the alarms (`scanner_link_down`, `scanner_silent`).
//! - TCP server: one scanner at a time. A new connection replaces the current one (Down
//!   "replaced", then Up): a scanner that rebooted reconnects while its old socket still looks
//!   open to us, and refusing it would lock the real scanner out.
//! - Counters in a shared [`ScannerLinkStats`].

use crate::core::{Alarm, Severity};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How to reach one scanner, under a `[scanner]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScannerLinkConfig {
    pub transport: Transport,
    /// Per TCP connection attempt.
    pub connect_timeout_ms: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// No byte for this long while up: `scanner_silent`. Absent: never (a scanner without
    /// heartbeats on a quiet line is silent for good reason).
    #[serde(default)]
    pub silence_timeout_ms: Option<u64>,
}

/// The transport, e.g. `transport = { kind = "tcp_connect", addr = "10.0.0.7:2112" }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Transport {
    /// A serial port (RS-232/RS-485 or a USB adapter).
    Serial { path: PathBuf, baud: u32, parity: Parity, data_bits: u8, stop_bits: u8 },
    /// The scanner is a TCP server (Cognex port 23, SICK 2112): we connect. `host:port`.
    TcpConnect { addr: String },
    /// The scanner connects to us.
    TcpListen { addr: SocketAddr },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    None,
    Odd,
    Even,
}

impl ScannerLinkConfig {
    /// Checks what serde cannot, before any port is opened.
    pub fn validate(&self) -> Result<(), ScannerLinkError> {
        let invalid = |field, problem: &str| Err(ScannerLinkError::Config { field, problem: problem.to_string() });
        if let Transport::Serial { baud, data_bits, stop_bits, .. } = &self.transport {
            if *baud == 0 {
                return invalid("baud", "must be above 0");
            }
            if !(5..=8).contains(data_bits) {
                return invalid("data_bits", "must be 5, 6, 7 or 8");
            }
            if !(1..=2).contains(stop_bits) {
                return invalid("stop_bits", "must be 1 or 2");
            }
        }
        if self.connect_timeout_ms == 0 {
            return invalid("connect_timeout_ms", "must be above 0");
        }
        if self.backoff_initial_ms == 0 || self.backoff_initial_ms > self.backoff_max_ms {
            return invalid("backoff_initial_ms", "must be above 0 and at most backoff_max_ms");
        }
        if self.silence_timeout_ms == Some(0) {
            return invalid("silence_timeout_ms", "must be above 0 (leave it out for no silence alarm)");
        }
        Ok(())
    }
}

/// Why the link is down (or could not start).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScannerLinkError {
    #[error("scanner config: {field} {problem}")]
    Config { field: &'static str, problem: String },
    #[error("cannot open serial port {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("cannot connect to scanner at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("no connection to scanner at {addr} within {after_ms} ms")]
    ConnectTimeout { addr: String, after_ms: u64 },
    #[error("cannot listen for the scanner on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("scanner link read failed: {0}")]
    Read(String),
    #[error("scanner closed the link")]
    Closed,
    #[error("scanner link replaced by a new connection from {peer}")]
    Replaced { peer: SocketAddr },
}

impl ScannerLinkError {
    /// Without a scanner every parcel is a no-read and goes to hold: safe, but the line
    /// releases nothing.
    pub fn alarm(&self) -> Alarm {
        Alarm { code: "scanner_link_down", severity: Severity::Critical, tracking: None, message: self.to_string() }
    }
}

/// What the link tells its consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// A connection (or the port) is open.
    Up,
    /// Raw bytes, as read: frames may be split or joined anywhere.
    Bytes(Vec<u8>),
    /// The link is down; sent once per outage.
    Down(ScannerLinkError),
    /// No byte for `for_ms` (the silence timeout); sent once until bytes come again.
    Silent { for_ms: u64 },
    /// Bytes came again after [`LinkEvent::Silent`] (the bytes follow).
    Alive,
}

impl LinkEvent {
    /// The alarm this event raises, if any.
    pub fn alarm(&self) -> Option<Alarm> {
        match self {
            LinkEvent::Down(e) => Some(e.alarm()),
            LinkEvent::Silent { for_ms } => Some(Alarm {
                code: "scanner_silent",
                severity: Severity::Warning,
                tracking: None,
                message: format!("no byte from the scanner for {for_ms} ms"),
            }),
            LinkEvent::Up | LinkEvent::Bytes(_) | LinkEvent::Alive => None,
        }
    }
}

/// The link's counters, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ScannerLinkStats {
    /// The link is open now.
    pub connected: bool,
    pub connects: u64,
    pub connect_failures: u64,
    pub disconnects: u64,
    pub bytes: u64,
    pub silences: u64,
}

type Stream = Pin<Box<dyn AsyncRead + Send>>;

/// One scanner's link.
pub struct ScannerLink {
    config: ScannerLinkConfig,
    listener: Option<TcpListener>,
    out: mpsc::Sender<LinkEvent>,
    stats: Arc<Mutex<ScannerLinkStats>>,
    silent: bool,
    /// A Down was sent and no Up since: further failures of the same outage stay quiet.
    down_sent: bool,
}

/// Why a connection's read loop ended.
enum Ended {
    /// Shutdown, or the consumer has gone.
    Stop,
    Lost(ScannerLinkError),
    Replaced(TcpStream, SocketAddr),
}

const READ_BUF: usize = 4096;

impl ScannerLink {
    /// Validates `config` and, for a TCP server, binds its address now (so a wrong address
    /// fails at start, and port 0 is known: [`ScannerLink::local_addr`]). Serial ports and TCP
    /// clients open in [`ScannerLink::run`].
    pub async fn bind(
        config: ScannerLinkConfig,
        out: mpsc::Sender<LinkEvent>,
    ) -> Result<ScannerLink, ScannerLinkError> {
        config.validate()?;
        let listener = match &config.transport {
            Transport::TcpListen { addr } => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| ScannerLinkError::Listen { addr: addr.to_string(), reason: e.to_string() })?,
            ),
            _ => None,
        };
        Ok(ScannerLink { config, listener, out, stats: Arc::default(), silent: false, down_sent: false })
    }

    /// The TCP server's bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The counters, shared: read them while the link runs.
    pub fn stats(&self) -> Arc<Mutex<ScannerLinkStats>> {
        self.stats.clone()
    }

    fn stat(&self, f: impl FnOnce(&mut ScannerLinkStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// False when the consumer has gone.
    async fn emit(&self, e: LinkEvent) -> bool {
        self.out.send(e).await.is_ok()
    }

    async fn down(&mut self, e: ScannerLinkError) -> bool {
        if self.down_sent {
            tracing::debug!(error = %e, "scanner link still down");
            return true;
        }
        tracing::warn!(error = %e, "scanner link down");
        self.down_sent = true;
        self.emit(LinkEvent::Down(e)).await
    }

    /// Runs until `shutdown` completes or the consumer drops its receiver.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let initial = Duration::from_millis(self.config.backoff_initial_ms);
        let max = Duration::from_millis(self.config.backoff_max_ms);
        let mut backoff = initial;
        let mut next: Option<(TcpStream, SocketAddr)> = None;
        loop {
            let opened = match next.take() {
                Some((s, peer)) => Ok((Box::pin(s) as Stream, peer.to_string())),
                None => tokio::select! {
                    () = &mut shutdown => return,
                    r = self.open() => r,
                },
            };
            let ended = match opened {
                Ok((stream, peer)) => {
                    self.stat(|s| {
                        s.connects += 1;
                        s.connected = true;
                    });
                    tracing::info!(%peer, "scanner link up");
                    self.down_sent = false;
                    if !self.emit(LinkEvent::Up).await {
                        return;
                    }
                    self.connection(stream, &mut shutdown, &mut backoff).await
                }
                Err(e) => {
                    self.stat(|s| s.connect_failures += 1);
                    Ended::Lost(e)
                }
            };
            match ended {
                Ended::Stop => return,
                Ended::Replaced(stream, peer) => {
                    self.stat(|s| {
                        s.disconnects += 1;
                        s.connected = false;
                    });
                    if !self.down(ScannerLinkError::Replaced { peer }).await {
                        return;
                    }
                    next = Some((stream, peer));
                }
                Ended::Lost(e) => {
                    if !self.down(e).await {
                        return;
                    }
                    // A server waits for the scanner to call again; a client or a port retries.
                    if self.listener.is_none() {
                        tokio::select! {
                            () = &mut shutdown => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(max);
                    }
                }
            }
        }
    }

    /// Opens the transport: the stream and a name for its peer.
    async fn open(&mut self) -> Result<(Stream, String), ScannerLinkError> {
        let timeout_ms = self.config.connect_timeout_ms;
        match (&self.config.transport, &self.listener) {
            (Transport::Serial { path, baud, parity, data_bits, stop_bits }, _) => {
                let builder = tokio_serial::new(path.to_string_lossy(), *baud)
                    .parity(match parity {
                        Parity::None => tokio_serial::Parity::None,
                        Parity::Odd => tokio_serial::Parity::Odd,
                        Parity::Even => tokio_serial::Parity::Even,
                    })
                    .data_bits(match data_bits {
                        5 => tokio_serial::DataBits::Five,
                        6 => tokio_serial::DataBits::Six,
                        7 => tokio_serial::DataBits::Seven,
                        _ => tokio_serial::DataBits::Eight,
                    })
                    .stop_bits(if *stop_bits == 2 { tokio_serial::StopBits::Two } else { tokio_serial::StopBits::One });
                let port = tokio_serial::SerialStream::open(&builder)
                    .map_err(|e| ScannerLinkError::Open { path: path.display().to_string(), reason: e.to_string() })?;
                Ok((Box::pin(port), path.display().to_string()))
            }
            (Transport::TcpConnect { addr }, _) => {
                let addr = addr.clone();
                match tokio::time::timeout(Duration::from_millis(timeout_ms), TcpStream::connect(&addr)).await {
                    Ok(Ok(s)) => Ok((Box::pin(s), addr)),
                    Ok(Err(e)) => Err(ScannerLinkError::Connect { addr, reason: e.to_string() }),
                    Err(_) => Err(ScannerLinkError::ConnectTimeout { addr, after_ms: timeout_ms }),
                }
            }
            (Transport::TcpListen { addr }, Some(listener)) => match listener.accept().await {
                Ok((s, peer)) => Ok((Box::pin(s), peer.to_string())),
                Err(e) => {
                    // Out of descriptors, say: wait before trying again rather than spin.
                    let reason = e.to_string();
                    tokio::time::sleep(Duration::from_millis(self.config.backoff_max_ms)).await;
                    Err(ScannerLinkError::Listen { addr: addr.to_string(), reason })
                }
            },
            (Transport::TcpListen { .. }, None) => unreachable!("bind binds every TcpListen transport"),
        }
    }

    /// Reads one connection until it ends.
    async fn connection(
        &mut self,
        mut stream: Stream,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
        backoff: &mut Duration,
    ) -> Ended {
        let silence = self.config.silence_timeout_ms.map(Duration::from_millis);
        let mut last_byte = crate::clock::tokio_now();
        let mut buf = vec![0u8; READ_BUF];
        loop {
            let silent_at = silence.filter(|_| !self.silent).map(|s| last_byte + s);
            let accept = async {
                match &self.listener {
                    Some(l) => l.accept().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut *shutdown => return Ended::Stop,
                r = stream.read(&mut buf) => match r {
                    Ok(0) => return self.lost(ScannerLinkError::Closed),
                    Ok(n) => {
                        last_byte = crate::clock::tokio_now();
                        *backoff = Duration::from_millis(self.config.backoff_initial_ms);
                        self.stat(|s| s.bytes += n as u64);
                        if self.silent {
                            self.silent = false;
                            tracing::info!("scanner alive again");
                            if !self.emit(LinkEvent::Alive).await {
                                return Ended::Stop;
                            }
                        }
                        if !self.emit(LinkEvent::Bytes(buf[..n].to_vec())).await {
                            return Ended::Stop;
                        }
                    }
                    Err(e) => return self.lost(ScannerLinkError::Read(e.to_string())),
                },
                () = sleep_until(silent_at) => {
                    self.silent = true;
                    self.stat(|s| s.silences += 1);
                    tracing::warn!("scanner silent");
                    let for_ms = self.config.silence_timeout_ms.unwrap_or_default();
                    if !self.emit(LinkEvent::Silent { for_ms }).await {
                        return Ended::Stop;
                    }
                }
                Ok((s, peer)) = accept => return Ended::Replaced(s, peer),
            }
        }
    }

    fn lost(&self, e: ScannerLinkError) -> Ended {
        self.stat(|s| {
            s.disconnects += 1;
            s.connected = false;
        });
        Ended::Lost(e)
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_each_transport_and_refuses_unknown_fields() {
        let serial: ScannerLinkConfig = toml::from_str(
            r#"
            transport = { kind = "serial", path = "/dev/ttyS0", baud = 9600, parity = "even", data_bits = 7, stop_bits = 1 }
            connect_timeout_ms = 1000
            backoff_initial_ms = 100
            backoff_max_ms = 5000
            silence_timeout_ms = 30000
            "#,
        )
        .unwrap();
        assert!(serial.validate().is_ok());
        assert_eq!(
            serial.transport,
            Transport::Serial {
                path: "/dev/ttyS0".into(),
                baud: 9600,
                parity: Parity::Even,
                data_bits: 7,
                stop_bits: 1
            }
        );
        let tcp: ScannerLinkConfig = toml::from_str(
            r#"
            transport = { kind = "tcp_connect", addr = "10.0.0.7:2112" }
            connect_timeout_ms = 1000
            backoff_initial_ms = 100
            backoff_max_ms = 5000
            "#,
        )
        .unwrap();
        assert_eq!(tcp.silence_timeout_ms, None);
        let unknown = toml::from_str::<ScannerLinkConfig>(
            r#"
            transport = { kind = "tcp_listen", addr = "0.0.0.0:2112", baud = 9600 }
            connect_timeout_ms = 1000
            backoff_initial_ms = 100
            backoff_max_ms = 5000
            "#,
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn validation_catches_what_serde_cannot() {
        let base = ScannerLinkConfig {
            transport: Transport::Serial {
                path: "/dev/ttyS0".into(),
                baud: 9600,
                parity: Parity::None,
                data_bits: 9,
                stop_bits: 1,
            },
            connect_timeout_ms: 1000,
            backoff_initial_ms: 100,
            backoff_max_ms: 5000,
            silence_timeout_ms: None,
        };
        assert!(matches!(base.validate(), Err(ScannerLinkError::Config { field: "data_bits", .. })));
        let backwards = ScannerLinkConfig {
            transport: Transport::TcpConnect { addr: "127.0.0.1:23".into() },
            backoff_initial_ms: 6000,
            ..base
        };
        assert!(matches!(backwards.validate(), Err(ScannerLinkError::Config { field: "backoff_initial_ms", .. })));
    }

    #[test]
    fn alarms_have_stable_codes() {
        assert_eq!(LinkEvent::Down(ScannerLinkError::Closed).alarm().unwrap().code, "scanner_link_down");
        let silent = LinkEvent::Silent { for_ms: 100 }.alarm().unwrap();
        assert_eq!((silent.code, silent.severity), ("scanner_silent", Severity::Warning));
        assert_eq!(LinkEvent::Alive.alarm(), None);
    }
}

//! The TCP listener driver: sortline listens, the station connects and streams frames
//! (`stream`). One station at a time: a new connection replaces the current one (a station
//! that rebooted reconnects while its old socket still looks open to us, and refusing it
//! would lock the real station out), as the scanner's TCP listen mode does. Each connection
//! gets a fresh parser, so a half frame never joins the next session's bytes; a connection
//! that ends inside a frame reports it truncated.

use super::config::EnergyMode;
use super::decode::ImageLimits;
use super::store::{
    check_energy, refuse, take, ImageStore, IntakeError, IntakeOutput, Original, Source, XrayIntakeStats,
};
use super::stream::{StreamError, StreamFrame, StreamParser};
use crate::clock;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

const READ_BUF: usize = 64 * 1024;
/// After a failed accept (out of descriptors, say), before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for the X-ray station on {addr}: {source}")]
pub struct ListenError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Why a connection's read loop ended.
enum Ended {
    Stop,
    Lost(String),
    Replaced(TcpStream, SocketAddr),
}

/// The listener and what it needs to take images.
pub struct TcpIntake {
    listener: TcpListener,
    limits: ImageLimits,
    energy: EnergyMode,
    store: Arc<Mutex<ImageStore>>,
    stats: Arc<Mutex<XrayIntakeStats>>,
}

impl TcpIntake {
    /// Binds now, so that a wrong address fails at start and port 0 is known.
    pub async fn bind(
        addr: SocketAddr,
        limits: ImageLimits,
        energy: EnergyMode,
        store: Arc<Mutex<ImageStore>>,
        stats: Arc<Mutex<XrayIntakeStats>>,
    ) -> Result<TcpIntake, ListenError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| ListenError { addr, source })?;
        Ok(TcpIntake { listener, limits, energy, store, stats })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves stations until `shutdown` completes, handing each output to `deliver` in stream
    /// order.
    pub async fn run(self, mut deliver: impl FnMut(IntakeOutput), shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut next: Option<(TcpStream, SocketAddr)> = None;
        loop {
            let (stream, peer) = match next.take() {
                Some(c) => c,
                None => tokio::select! {
                    () = &mut shutdown => return,
                    r = self.listener.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "x-ray accept failed");
                            tokio::select! {
                                () = &mut shutdown => return,
                                () = tokio::time::sleep(ACCEPT_RETRY) => continue,
                            }
                        }
                    },
                },
            };
            tracing::info!(%peer, "x-ray station connected");
            let up = IntakeOutput::Connected { peer };
            XrayIntakeStats::record(&self.stats, &up, 0);
            deliver(up);
            let mut parser = StreamParser::new(self.limits);
            let ended = self.connection(stream, peer, &mut parser, &mut deliver, &mut shutdown).await;
            let reason = match ended {
                Ended::Stop => return,
                Ended::Lost(reason) => reason,
                Ended::Replaced(stream, new_peer) => {
                    next = Some((stream, new_peer));
                    format!("replaced by a new connection from {new_peer}")
                }
            };
            let mut results = Vec::new();
            parser.finish(&mut results);
            self.hand_on(results, peer, &mut deliver).await;
            tracing::warn!(%peer, %reason, "x-ray station disconnected");
            deliver(IntakeOutput::Disconnected { peer, reason });
        }
    }

    async fn connection(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        parser: &mut StreamParser,
        deliver: &mut impl FnMut(IntakeOutput),
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    ) -> Ended {
        let mut buf = vec![0u8; READ_BUF];
        let mut results = Vec::new();
        loop {
            tokio::select! {
                () = &mut *shutdown => return Ended::Stop,
                r = stream.read(&mut buf) => match r {
                    Ok(0) => return Ended::Lost("the station closed the connection".into()),
                    Ok(n) => {
                        parser.push(&buf[..n], &mut results);
                        self.hand_on(std::mem::take(&mut results), peer, deliver).await;
                    }
                    Err(e) => return Ended::Lost(format!("read failed: {e}")),
                },
                Ok((s, p)) = self.listener.accept() => return Ended::Replaced(s, p),
            }
        }
    }

    /// Stores good frames (on a blocking thread: hashing and an fsync) and reports all.
    async fn hand_on(
        &self,
        results: Vec<Result<StreamFrame, StreamError>>,
        peer: SocketAddr,
        deliver: &mut impl FnMut(IntakeOutput),
    ) {
        let source = Source::Tcp { peer };
        for result in results {
            let output = match result {
                Err(e) => refuse(&self.stats, source.clone(), e.into()),
                Ok(frame) => match check_energy(&frame.image, self.energy) {
                    Err(e) => refuse(&self.stats, source.clone(), e),
                    Ok(()) => {
                        let (store, stats, source) = (self.store.clone(), self.stats.clone(), source.clone());
                        let stored = tokio::task::spawn_blocking(move || {
                            let originals = [Original { bytes: &frame.bytes, ext: "xray", energy: None }];
                            take(&store, &stats, &originals, frame.image, frame.barcode, source, clock::wall_ms())
                        });
                        match stored.await {
                            Ok(output) => output,
                            Err(e) => refuse(
                                &self.stats,
                                Source::Tcp { peer },
                                IntakeError::Read { path: peer.to_string(), reason: format!("store task failed: {e}") },
                            ),
                        }
                    }
                },
            };
            deliver(output);
        }
    }
}

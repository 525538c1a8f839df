//! One scanner as the daemon sees it: its link's bytes through the frame parser into core
//! inputs. Every rejected chunk is an alarm (so a record) and a counter; link trouble is an
//! alarm; nothing here decides anything: a parcel whose frame was lost times out as a
//! no-read in the core, and is held.

use super::frame::{FrameParser, FrameStats};
use super::link::{LinkEvent, ScannerLink, ScannerLinkConfig, ScannerLinkError, ScannerLinkStats};
use super::profile::FrameProfile;
use crate::core::{Alarm, Input, Severity};
use serde::Serialize;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// What the reader hands the core.
#[derive(Clone, Debug, PartialEq)]
pub enum ScannerOutput {
    Input(Input),
    Alarm(Alarm),
}

/// A scanner's figures: frames as parsed, the link's counters, and derived rates.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScannerStats {
    pub frames: FrameStats,
    pub link: ScannerLinkStats,
    /// Reads over reads and no-reads, 0 before the first frame.
    pub read_rate: f64,
    pub no_read_rate: f64,
}

/// A scanner's link and parser, ready to run.
pub struct ScannerReader {
    link: ScannerLink,
    events: mpsc::Receiver<LinkEvent>,
    parser: FrameParser,
    link_stats: Arc<Mutex<ScannerLinkStats>>,
    frame_stats: Arc<Mutex<FrameStats>>,
    consumed: Arc<AtomicU64>,
}

impl ScannerReader {
    /// Checks the link's configuration and binds a listener if it has one; opens nothing else.
    pub async fn open(profile: FrameProfile, config: ScannerLinkConfig) -> Result<ScannerReader, ScannerLinkError> {
        let (tx, events) = mpsc::channel(256);
        let link = ScannerLink::bind(config, tx).await?;
        let link_stats = link.stats();
        Ok(ScannerReader {
            link,
            events,
            parser: FrameParser::new(profile),
            link_stats,
            frame_stats: Arc::default(),
            consumed: Arc::default(),
        })
    }

    /// The listener's address, for a scanner that connects to us.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.link.local_addr()
    }

    /// Bytes parsed and handed on so far (everything they produced has been delivered).
    pub fn consumed(&self) -> Arc<AtomicU64> {
        self.consumed.clone()
    }

    /// The counters, shared: read them while the reader runs.
    pub fn stats(&self) -> impl Fn() -> ScannerStats + Send + Sync + 'static {
        let (link, frames) = (self.link_stats.clone(), self.frame_stats.clone());
        move || {
            let frames = frames.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let link = link.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let total = frames.reads + frames.no_reads;
            let rate = |n: u64| if total == 0 { 0.0 } else { n as f64 / total as f64 };
            ScannerStats { read_rate: rate(frames.reads), no_read_rate: rate(frames.no_reads), frames, link }
        }
    }

    /// Runs until `shutdown` completes, handing each output to `deliver` in stream order.
    pub async fn run(
        mut self,
        mut deliver: impl FnMut(ScannerOutput),
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        let link = tokio::spawn(self.link.run(shutdown));
        let mut frames = Vec::new();
        // Ends when the link does: it drops its sender.
        while let Some(event) = self.events.recv().await {
            if let Some(alarm) = event.alarm() {
                deliver(ScannerOutput::Alarm(alarm));
            }
            let LinkEvent::Bytes(bytes) = event else { continue };
            self.parser.push(&bytes, &mut frames);
            for result in frames.drain(..) {
                match result {
                    Ok(frame) => {
                        if let Some(input) = frame.into_input() {
                            deliver(ScannerOutput::Input(input));
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "scanner frame refused");
                        deliver(ScannerOutput::Alarm(Alarm {
                            code: "scanner_frame_refused",
                            severity: Severity::Warning,
                            tracking: None,
                            message: format!("scanner frame refused: {e}"),
                        }));
                    }
                }
            }
            *self.frame_stats.lock().unwrap_or_else(|e| e.into_inner()) = self.parser.stats().clone();
            self.consumed.fetch_add(bytes.len() as u64, Ordering::SeqCst);
        }
        let _ = link.await;
    }
}

//! The frame parser: scanner bytes in, frames or rejected chunks out. Pure and incremental: a
//! stream split anywhere gives the same output, the buffer never outgrows the profile's maximum
//! frame length, and no byte allocates.

use super::profile::{FrameProfile, TriggerField};
use crate::core::{Input, TriggerCount};
use serde::Serialize;

/// What a frame says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Codes as read: trimmed, empty fields and no-read tokens dropped, duplicates kept.
    Read {
        trigger: Option<TriggerCount>,
        codes: Vec<String>,
    },
    NoRead {
        trigger: Option<TriggerCount>,
    },
    Heartbeat,
}

impl Frame {
    /// The core's input for a read or a no-read. With its trigger count the core pairs it with
    /// the PLC's gate event of the same count; without one, by the gate's time window. `None`
    /// for a heartbeat.
    pub fn into_input(self) -> Option<Input> {
        match self {
            Frame::Read { trigger, codes } => Some(Input::Scan { trigger, codes }),
            Frame::NoRead { trigger } => Some(Input::Scan { trigger, codes: Vec::new() }),
            Frame::Heartbeat => None,
        }
    }
}

/// A chunk of bytes the parser rejected. Each kind has its counter in [`FrameStats`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Bytes outside any frame (only with a start sequence). Reported when a start ends the
    /// run, or every `max_frame_len` bytes of a run that does not end.
    #[error("{bytes} bytes outside a frame")]
    Garbage { bytes: usize },
    /// A frame cut off by the next start sequence.
    #[error("frame of {len} bytes cut off by a new start")]
    Partial { len: usize },
    /// Content longer than `max_frame_len`: reported as soon as it is, with the `len` bytes
    /// dropped so far; the rest is dropped up to the next stop (or start), reported again
    /// every `max_frame_len` bytes if none comes.
    #[error("frame exceeds the maximum length ({len} bytes dropped)")]
    Oversize { len: usize },
    /// The first field is not a decimal trigger count (shown up to 32 characters).
    #[error("trigger field {field:?} is not a decimal count")]
    BadTrigger { field: String },
    #[error("frame is not UTF-8")]
    NotUtf8,
    #[error("a code holds a control character")]
    NonPrintable,
    /// Nothing but whitespace, or a trigger count without any code or no-read token.
    #[error("frame holds no code")]
    Empty,
}

/// Counters for metrics: one per outcome, plus the garbage bytes skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FrameStats {
    pub reads: u64,
    pub no_reads: u64,
    pub heartbeats: u64,
    pub garbage: u64,
    pub garbage_bytes: u64,
    pub partial: u64,
    pub oversize: u64,
    pub bad_trigger: u64,
    pub not_utf8: u64,
    pub non_printable: u64,
    pub empty: u64,
}

impl FrameStats {
    pub(super) fn count(&mut self, result: &Result<Frame, FrameError>) {
        let counter = match result {
            Ok(Frame::Read { .. }) => &mut self.reads,
            Ok(Frame::NoRead { .. }) => &mut self.no_reads,
            Ok(Frame::Heartbeat) => &mut self.heartbeats,
            Err(FrameError::Garbage { bytes }) => {
                self.garbage_bytes += *bytes as u64;
                &mut self.garbage
            }
            Err(FrameError::Partial { .. }) => &mut self.partial,
            Err(FrameError::Oversize { .. }) => &mut self.oversize,
            Err(FrameError::BadTrigger { .. }) => &mut self.bad_trigger,
            Err(FrameError::NotUtf8) => &mut self.not_utf8,
            Err(FrameError::NonPrintable) => &mut self.non_printable,
            Err(FrameError::Empty) => &mut self.empty,
        };
        *counter += 1;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for a start sequence; what comes before it is garbage.
    Hunting,
    /// Collecting a frame's content.
    InFrame,
    /// The frame grew past the maximum: dropping up to the next stop or start.
    Skipping,
}

/// Turns one scanner connection's bytes into frames. One parser per connection: a reconnect
/// starts a fresh one, so a half frame never joins the next session's bytes.
#[derive(Clone, Debug)]
pub struct FrameParser {
    profile: FrameProfile,
    state: State,
    /// The current frame, or (hunting, skipping) only the last bytes that may begin a marker.
    buf: Vec<u8>,
    /// Bytes of the current garbage run or oversize frame already let go of.
    dropped: usize,
    stats: FrameStats,
}

impl FrameParser {
    /// A parser for a validated profile ([`FrameProfile::load`] validates).
    pub fn new(profile: FrameProfile) -> FrameParser {
        let state = if profile.start.is_some() { State::Hunting } else { State::InFrame };
        let buf = Vec::with_capacity(profile.max_frame_len + profile.marker_window());
        FrameParser { profile, state, buf, dropped: 0, stats: FrameStats::default() }
    }

    pub fn profile(&self) -> &FrameProfile {
        &self.profile
    }

    pub fn stats(&self) -> &FrameStats {
        &self.stats
    }

    /// Bytes held for a frame not finished yet; at most `max_frame_len` plus the longer marker.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds bytes as they came off the wire; appends one result per frame or rejected chunk
    /// completed by them, in stream order.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Result<Frame, FrameError>>) {
        for &b in bytes {
            self.byte(b, out);
        }
    }

    fn byte(&mut self, b: u8, out: &mut Vec<Result<Frame, FrameError>>) {
        self.buf.push(b);
        let p = &self.profile;
        let start_len = p.start.as_ref().map_or(0, String::len);
        let at_start = p.start.as_ref().is_some_and(|s| self.buf.ends_with(s.as_bytes()));
        let stop_len = p.stop.len();
        let at_stop = self.buf.ends_with(p.stop.as_bytes());
        let (max, window) = (p.max_frame_len, p.marker_window());
        let result = match (self.state, at_stop, at_start) {
            (State::Hunting, _, true) => {
                self.state = State::InFrame;
                Some(self.end_run(start_len)).filter(|&n| n > 0).map(|bytes| Err(FrameError::Garbage { bytes }))
            }
            (State::Hunting, _, false) => {
                self.keep_last(start_len.saturating_sub(1));
                // A scanner that never sends the start must still show up in the counters.
                (self.dropped >= max).then(|| Err(FrameError::Garbage { bytes: std::mem::take(&mut self.dropped) }))
            }
            (State::InFrame, true, _) => {
                let len = self.buf.len() - stop_len;
                let result =
                    if len > max { Err(FrameError::Oversize { len }) } else { parse_content(p, &self.buf[..len]) };
                self.after_stop();
                Some(result)
            }
            (State::InFrame, false, true) => Some(Err(FrameError::Partial { len: self.end_run(start_len) })),
            (State::InFrame, false, false) => (self.buf.len() >= max + window).then(|| {
                self.state = State::Skipping;
                self.keep_last(window.saturating_sub(1));
                Err(FrameError::Oversize { len: std::mem::take(&mut self.dropped) })
            }),
            (State::Skipping, true, _) => {
                self.after_stop();
                None
            }
            (State::Skipping, false, true) => {
                self.state = State::InFrame;
                self.end_run(start_len);
                None
            }
            (State::Skipping, false, false) => {
                self.keep_last(window.saturating_sub(1));
                // A frame that never ends (a wrong terminator) must keep showing in the counters.
                (self.dropped >= max).then(|| Err(FrameError::Oversize { len: std::mem::take(&mut self.dropped) }))
            }
        };
        if let Some(result) = result {
            self.stats.count(&result);
            out.push(result);
        }
    }

    /// Drops the buffer up to its last `n` bytes, counting what it lets go of.
    fn keep_last(&mut self, n: usize) {
        let gone = self.buf.len().saturating_sub(n);
        self.buf.drain(..gone);
        self.dropped = self.dropped.saturating_add(gone);
    }

    /// Ends the current run at the marker just matched: its length before the marker.
    fn end_run(&mut self, marker_len: usize) -> usize {
        let n = self.dropped.saturating_add(self.buf.len()).saturating_sub(marker_len);
        self.buf.clear();
        self.dropped = 0;
        n
    }

    fn after_stop(&mut self) {
        self.buf.clear();
        self.dropped = 0;
        self.state = if self.profile.start.is_some() { State::Hunting } else { State::InFrame };
    }
}

/// One frame's content (markers removed) as the profile reads it.
fn parse_content(p: &FrameProfile, content: &[u8]) -> Result<Frame, FrameError> {
    let text = std::str::from_utf8(content).map_err(|_| FrameError::NotUtf8)?.trim();
    if text.is_empty() {
        return Err(FrameError::Empty);
    }
    if p.heartbeat.as_deref() == Some(text) {
        return Ok(Frame::Heartbeat);
    }
    let mut fields = text.split(p.delimiter.as_str()).map(str::trim);
    let trigger = match p.trigger_field {
        TriggerField::None => None,
        TriggerField::First => Some(parse_trigger(fields.next().unwrap_or(""))?),
    };
    let mut codes = Vec::new();
    let mut no_read = false;
    for field in fields.filter(|f| !f.is_empty()) {
        if field.chars().any(char::is_control) {
            return Err(FrameError::NonPrintable);
        }
        if field == p.no_read {
            no_read = true;
        } else {
            codes.push(field.to_owned());
        }
    }
    match (codes.is_empty(), no_read) {
        (false, _) => Ok(Frame::Read { trigger, codes }),
        (true, true) => Ok(Frame::NoRead { trigger }),
        (true, false) => Err(FrameError::Empty),
    }
}

/// 1 to 10 ASCII digits that fit a u32 (`str::parse` would also take a `+`).
fn parse_trigger(field: &str) -> Result<TriggerCount, FrameError> {
    let digits = !field.is_empty() && field.len() <= 10 && field.bytes().all(|b| b.is_ascii_digit());
    match field.parse() {
        Ok(n) if digits => Ok(TriggerCount(n)),
        _ => Err(FrameError::BadTrigger { field: field.chars().take(32).collect() }),
    }
}

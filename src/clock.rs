//! The one place that reads the machine's clocks (clippy's
//! `disallowed-methods` keeps them out of everything else), so that the core
//! and the simulator stay on passed-in time.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch, for records.
pub fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A monotonic stopwatch for measurements.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch(Instant::now())
    }

    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }

    pub fn elapsed_secs_f64(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// Now on tokio's clock, for timers (`sleep_until`, `interval_at`) that need a starting point.
pub fn tokio_now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

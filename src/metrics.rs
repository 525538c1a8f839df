//! Latency figures for metrics: a fixed-size log-linear histogram (8 buckets per power of two,
//! so a quantile is within 12.5 % of the truth), cheap to record on a hot path and to copy.

use serde::ser::SerializeStruct;
use std::time::Duration;

/// Sub-buckets per power of two (a power of two itself).
const SUB: u64 = 8;
const SUB_BITS: u32 = SUB.trailing_zeros();
/// Enough buckets for any u64 of microseconds.
const BUCKETS: usize = (SUB + (64 - SUB_BITS as u64) * SUB) as usize;

/// A duration's distribution, in microseconds. Serialised as count, min, average, p50, p99
/// and max (the quantiles are the upper edge of their bucket, never above the max).
#[derive(Clone, PartialEq, Eq)]
pub struct Latency {
    count: u64,
    min_us: u64,
    max_us: u64,
    total_us: u64,
    buckets: Box<[u64; BUCKETS]>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency { count: 0, min_us: 0, max_us: 0, total_us: 0, buckets: Box::new([0; BUCKETS]) }
    }
}

fn bucket(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros();
    let sub = (us >> (exp - SUB_BITS)) & (SUB - 1);
    (SUB + u64::from(exp - SUB_BITS) * SUB + sub) as usize
}

/// The largest value that falls in bucket `i`.
fn upper_edge(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = (i - SUB) / SUB;
    let lower = (SUB + (i - SUB) % SUB) << shift;
    lower + ((1u64 << shift) - 1)
}

impl Latency {
    pub fn record(&mut self, d: Duration) {
        self.record_us(d.as_micros().min(u128::from(u64::MAX)) as u64);
    }

    pub fn record_us(&mut self, us: u64) {
        self.min_us = if self.count == 0 { us } else { self.min_us.min(us) };
        self.max_us = self.max_us.max(us);
        self.total_us = self.total_us.saturating_add(us);
        self.count += 1;
        self.buckets[bucket(us)] += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn min_us(&self) -> u64 {
        self.min_us
    }

    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    pub fn avg_us(&self) -> u64 {
        self.total_us.checked_div(self.count).unwrap_or(0)
    }

    /// The `q` quantile (0..=1), 0 when nothing was recorded.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper_edge(i).clamp(self.min_us, self.max_us);
            }
        }
        self.max_us
    }
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} × min {} avg {} p50 {} p99 {} max {} µs",
            self.count,
            self.min_us,
            self.avg_us(),
            self.quantile_us(0.5),
            self.quantile_us(0.99),
            self.max_us
        )
    }
}

impl serde::Serialize for Latency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Latency", 6)?;
        st.serialize_field("count", &self.count)?;
        st.serialize_field("min_us", &self.min_us)?;
        st.serialize_field("avg_us", &self.avg_us())?;
        st.serialize_field("p50_us", &self.quantile_us(0.5))?;
        st.serialize_field("p99_us", &self.quantile_us(0.99))?;
        st.serialize_field("max_us", &self.max_us)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quantiles_of_a_known_spread() {
        let mut l = Latency::default();
        assert_eq!((l.quantile_us(0.5), l.avg_us()), (0, 0));
        for us in 1..=1000 {
            l.record_us(us);
        }
        assert_eq!((l.count(), l.min_us(), l.max_us(), l.avg_us()), (1000, 1, 1000, 500));
        let p50 = l.quantile_us(0.5);
        let p99 = l.quantile_us(0.99);
        assert!((500..=563).contains(&p50), "{p50}");
        assert!((990..=1000).contains(&p99), "{p99}");
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(json["p99_us"], p99);
        assert_eq!(json["count"], 1000);
    }

    proptest! {
        #[test]
        fn every_value_lies_in_its_bucket(us in any::<u64>()) {
            let i = bucket(us);
            prop_assert!(i < BUCKETS);
            prop_assert!(us <= upper_edge(i));
            prop_assert!(i == 0 || us > upper_edge(i - 1));
            // Within 12.5 % of the value.
            prop_assert!(upper_edge(i) - us <= us / SUB);
        }
    }
}

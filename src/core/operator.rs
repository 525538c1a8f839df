//! What operators set at run time (a line stop, rates, the review window): one value, changed
//! only through [`OperatorState::after`], so that the daemon can store the state an input
//! leads to before the line takes it, and restore it at the next start.

use super::line::Input;
use super::types::{OfficerId, PerChannel};
use serde::{Deserialize, Serialize};

/// The operators' settings in force. `None` leaves the configured value (`line.toml`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorState {
    /// Who stopped the line, while it is stopped.
    #[serde(default)]
    pub stopped_by: Option<OfficerId>,
    #[serde(default)]
    pub sample_rate: Option<PerChannel<f64>>,
    #[serde(default)]
    pub xray_review_ratio: Option<PerChannel<f64>>,
    #[serde(default)]
    pub review_window_ms: Option<u64>,
}

impl OperatorState {
    /// The state `input` leads to, or why the line refuses it; `None` when `input` is not an
    /// operator's setting.
    pub fn after(&self, input: &Input) -> Option<Result<OperatorState, String>> {
        if !matches!(input, Input::LineControl { .. } | Input::Parameters { .. }) {
            return None;
        }
        let mut next = self.clone();
        match input {
            Input::LineControl { running, officer } => match (*running, self.stopped_by.is_some()) {
                (false, false) => next.stopped_by = Some(officer.clone()),
                (true, true) => next.stopped_by = None,
                (_, stopped) => {
                    let is = if stopped { "stopped" } else { "running" };
                    return Some(Err(format!("the line is already {is}")));
                }
            },
            Input::Parameters { sample_rate, xray_review_ratio, review_window_ms, .. } => {
                let valid = |r: &Option<PerChannel<f64>>| {
                    r.is_none_or(|r| [r.green, r.red].iter().all(|x| x.is_finite() && (0.0..=1.0).contains(x)))
                };
                if !(valid(sample_rate) && valid(xray_review_ratio)) {
                    return Some(Err("rates and ratios must be between 0 and 1".into()));
                }
                if *review_window_ms == Some(0) {
                    return Some(Err("the review window must be above 0".into()));
                }
                next.sample_rate = sample_rate.or(self.sample_rate);
                next.xray_review_ratio = xray_review_ratio.or(self.xray_review_ratio);
                next.review_window_ms = review_window_ms.or(self.review_window_ms);
            }
            _ => return None,
        }
        Some(Ok(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op() -> OfficerId {
        OfficerId::new("op-1").unwrap()
    }

    #[test]
    fn stops_and_starts_once_each() {
        let s = OperatorState::default();
        let stopped = s.after(&Input::LineControl { running: false, officer: op() }).unwrap().unwrap();
        assert_eq!(stopped.stopped_by, Some(op()));
        assert!(stopped.after(&Input::LineControl { running: false, officer: op() }).unwrap().is_err());
        let running = stopped.after(&Input::LineControl { running: true, officer: op() }).unwrap().unwrap();
        assert_eq!(running, s);
        assert!(s.after(&Input::LineControl { running: true, officer: op() }).unwrap().is_err());
        assert!(s.after(&Input::Tick).is_none());
    }

    #[test]
    fn parameters_keep_what_they_leave_out_and_refuse_what_is_out_of_range() {
        let set = |sample: Option<f64>, window: Option<u64>| Input::Parameters {
            sample_rate: sample.map(|x| PerChannel { green: x, red: x }),
            xray_review_ratio: None,
            review_window_ms: window,
            officer: op(),
        };
        let s = OperatorState::default().after(&set(Some(0.5), None)).unwrap().unwrap();
        let s = s.after(&set(None, Some(900))).unwrap().unwrap();
        assert_eq!(s.sample_rate, Some(PerChannel { green: 0.5, red: 0.5 }));
        assert_eq!(s.review_window_ms, Some(900));
        for bad in [set(Some(1.5), None), set(Some(f64::NAN), None), set(None, Some(0))] {
            assert!(s.after(&bad).unwrap().is_err(), "{bad:?}");
        }
    }
}

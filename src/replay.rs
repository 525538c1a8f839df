//! `sortline audit replay`: feed the recorded inputs through a fresh core and
//! check that every recorded decision comes out the same. The determinism
//! guarantee, made checkable.
//!
//! Each `start` entry begins a run and carries the line's snapshot (settings,
//! rates, rules, targets); the secret is not recorded and comes from the
//! caller. Time comes from the entries: before each entry the core is ticked
//! to every deadline up to the entry's line time, as the daemon does.

use crate::audit::{self, AuditError};
use crate::core::{Input, Line, LineSnapshot, Millis, Output, Record, SiteSecret};
use crate::recorder;
use serde_json::Value;
use std::collections::VecDeque;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("entry {seq}: {problem}")]
    Unreadable { seq: u64, problem: String },
    #[error("entry {seq}: no secret for this run: {problem}")]
    Secret { seq: u64, problem: String },
}

/// A recorded decision the replay did not reproduce.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// The recorded decision's entry (0: a decision the replay made that the record lacks).
    pub seq: u64,
    pub recorded: Option<Value>,
    pub replayed: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplayReport {
    pub runs: u64,
    pub inputs: u64,
    pub decisions: u64,
    /// All mismatches found; `mismatches` keeps the first [`MAX_KEPT`].
    pub mismatch_count: u64,
    pub mismatches: Vec<Mismatch>,
}

impl ReplayReport {
    pub fn reproduced(&self) -> bool {
        self.mismatch_count == 0 && self.runs > 0
    }
}

/// Bound on mismatches kept for the report; the count past it is still exact.
pub const MAX_KEPT: usize = 100;

struct Run {
    line: Line,
    /// Decisions the replay made and the record has not yet been compared with.
    replayed: VecDeque<Value>,
    out: Vec<Output>,
}

impl Run {
    fn step(&mut self, input: Input, now: Millis) {
        self.line.handle(input, now, &mut self.out);
        for o in self.out.drain(..) {
            if let Output::Record(r @ Record::Decision { .. }) = o {
                self.replayed.push_back(recorder::entry(&r, now, 0).payload);
            }
        }
    }

    /// Fires every deadline due by `now`, each at its own time.
    fn tick_to(&mut self, now: Millis) {
        while let Some(t) = self.line.next_timeout().filter(|t| *t <= now) {
            self.step(Input::Tick, t);
        }
    }
}

/// Replays every run in the record. `secret_for` gets each run's `start`
/// payload and gives the secret that run used.
pub fn replay(
    db: &Path,
    mut secret_for: impl FnMut(&Value) -> Result<SiteSecret, String>,
) -> Result<ReplayReport, ReplayError> {
    let mut report = ReplayReport::default();
    let mut run: Option<Run> = None;
    let mut failure: Option<ReplayError> = None;
    audit::entries(db, |e| {
        if failure.is_some() {
            return Ok(());
        }
        let now = Millis(e.mono_ms);
        if e.kind == "start" {
            if let Some(old) = run.take() {
                leftovers(old, &mut report);
            }
            let snapshot = e.payload.get("line").cloned().unwrap_or(Value::Null);
            let started = serde_json::from_value::<LineSnapshot>(snapshot)
                .map_err(|err| ReplayError::Unreadable {
                    seq: e.seq,
                    problem: format!("start entry has no line snapshot: {err}"),
                })
                .and_then(|snapshot| {
                    let secret =
                        secret_for(&e.payload).map_err(|problem| ReplayError::Secret { seq: e.seq, problem })?;
                    snapshot
                        .line(secret)
                        .map_err(|err| ReplayError::Unreadable { seq: e.seq, problem: err.to_string() })
                });
            match started {
                Ok(line) => {
                    report.runs += 1;
                    run = Some(Run { line, replayed: VecDeque::new(), out: Vec::new() });
                }
                Err(err) => failure = Some(err),
            }
            return Ok(());
        }
        let Some(r) = run.as_mut() else { return Ok(()) };
        r.tick_to(now);
        if let Some(input) = recorder::input_of(&e.kind, &e.payload) {
            match input {
                Ok(input) => {
                    report.inputs += 1;
                    r.step(input, now);
                }
                Err(err) => failure = Some(ReplayError::Unreadable { seq: e.seq, problem: err.to_string() }),
            }
        } else if e.kind == "decision" {
            report.decisions += 1;
            let replayed = r.replayed.pop_front();
            if replayed.as_ref() != Some(&e.payload) {
                report.note(Mismatch { seq: e.seq, recorded: Some(e.payload), replayed });
            }
        }
        Ok(())
    })?;
    if let Some(err) = failure {
        return Err(err);
    }
    if let Some(old) = run.take() {
        leftovers(old, &mut report);
    }
    Ok(report)
}

impl ReplayReport {
    fn note(&mut self, m: Mismatch) {
        self.mismatch_count += 1;
        if self.mismatches.len() < MAX_KEPT {
            self.mismatches.push(m);
        }
    }
}

/// Decisions the replay made that the record never got: the core decided
/// something the daemon did not record.
fn leftovers(run: Run, report: &mut ReplayReport) {
    for replayed in run.replayed {
        report.note(Mismatch { seq: 0, recorded: None, replayed: Some(replayed) });
    }
}

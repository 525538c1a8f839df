//! Import of declaration files into the store: streamed, validated line by
//! line, stored in batches of one transaction each.

use super::model::Declaration;
use super::reader::{Parsed, ReadError};
use super::store::{ManifestStore, StoreError, Stored};
use crate::core::Carriers;

/// A line not imported: where, which field, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub line: u64,
    pub field: String,
    pub problem: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.field, self.problem)
    }
}

/// Counts of one import. `rejected` counts every [`Rejection`] reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub declarations: u64,
    pub new: u64,
    pub amended: u64,
    pub unchanged: u64,
    pub rejected: u64,
    pub batches: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read on; the batches committed before stay.
    #[error("{0}")]
    Read(#[from] ReadError),
    /// A batch failed to commit and was rolled back whole; the batches before it stay.
    #[error("batch starting at line {first_line} not stored (rolled back): {source}")]
    Store {
        first_line: u64,
        #[source]
        source: StoreError,
    },
}

/// Reads `lines` into `store`, `batch_size` declarations per transaction. Every rejected
/// line goes to `on_reject`: a field error at once, a refused version when its batch commits.
pub fn import(
    store: &mut ManifestStore,
    lines: impl Iterator<Item = Result<Parsed, ReadError>>,
    carriers: &Carriers,
    batch_size: usize,
    received_ms: i64,
    mut on_reject: impl FnMut(&Rejection),
) -> Result<ImportReport, ImportError> {
    let batch_size = batch_size.max(1);
    let mut report = ImportReport::default();
    let mut batch = Batch { lines: Vec::with_capacity(batch_size), declarations: Vec::with_capacity(batch_size) };
    for parsed in lines {
        let Parsed { line, result } = parsed?;
        report.declarations += 1;
        match result.and_then(|d| d.validate(carriers).map(|_| d)) {
            Ok(d) => {
                batch.lines.push(line);
                batch.declarations.push(d);
                if batch.lines.len() >= batch_size {
                    batch.flush(store, received_ms, &mut report, &mut on_reject)?;
                }
            }
            Err(e) => {
                report.rejected += 1;
                on_reject(&Rejection { line, field: e.field, problem: e.problem });
            }
        }
    }
    batch.flush(store, received_ms, &mut report, &mut on_reject)?;
    Ok(report)
}

/// Declarations waiting for their transaction, with their lines.
struct Batch {
    lines: Vec<u64>,
    declarations: Vec<Declaration>,
}

impl Batch {
    fn flush(
        &mut self,
        store: &mut ManifestStore,
        received_ms: i64,
        report: &mut ImportReport,
        on_reject: &mut impl FnMut(&Rejection),
    ) -> Result<(), ImportError> {
        let Some(&first_line) = self.lines.first() else { return Ok(()) };
        let outcomes = store
            .store_batch(&self.declarations, received_ms)
            .map_err(|source| ImportError::Store { first_line, source })?;
        report.batches += 1;
        for (outcome, (line, d)) in outcomes.into_iter().zip(self.lines.iter().zip(&self.declarations)) {
            match outcome {
                Stored::New => report.new += 1,
                Stored::Amended { .. } => report.amended += 1,
                Stored::Unchanged => report.unchanged += 1,
                Stored::Refused { held, why } => {
                    report.rejected += 1;
                    on_reject(&Rejection {
                        line: *line,
                        field: "version".into(),
                        problem: format!("{} version {} refused: {why} (held: version {held})", d.waybill, d.version),
                    });
                }
            }
        }
        self.lines.clear();
        self.declarations.clear();
        Ok(())
    }
}

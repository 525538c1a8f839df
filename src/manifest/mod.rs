//! Declaration lists (清单): the full model, its validation, the store and the
//! file import (see `docs/manifest.md`).
//!
//! # Layout
//! - `model`: [`Declaration`] as the platform sends it, [`Declaration::validate`] (errors
//!   name the field) and its conversion to the core's view, `core::Manifest`.
//! - `reader`: streaming JSON Lines and CSV readers, each declaration with its line number.
//! - `store`: [`ManifestStore`], `manifests.db`: every version, the manual targets, the
//!   operators' run-time state, and the in-memory index of current versions; [`OperatorStore`],
//!   the daemon's handle on the targets and that state.
//! - `import`: [`import()`], a file into the store in batches of one transaction each.
//! - `fuzzing`: the readers' invariants, shared by the fuzz target and a proptest.

#[doc(hidden)]
pub mod fuzzing;
mod import;
mod model;
mod reader;
mod store;

#[cfg(test)]
mod tests;

pub use import::{import, ImportError, ImportReport, Rejection};
pub use model::{is_iso_country, Declaration, DeclaredItem, Direction, FieldError, MAX_ITEMS};
pub use reader::{
    from_json, read, CsvRows, Format, JsonLines, Parsed, ReadError, CSV_DECLARATION_COLUMNS, CSV_ITEM_COLUMNS,
    MAX_LINE_BYTES,
};
pub use store::{new_target, ManifestStore, OperatorStore, StoreError, Stored, StoredTarget, DB_FILE};

//! sortline: the controller of a customs inspection sorting line.
//!
//! # Layout
//! - [`core`]: the sans-IO heart: waybills, manifests, reasons, the decision
//!   engine and the `Line` state machine (`handle(input, now) -> outputs`).
//! - [`config`]: `line.toml` and the rule files, parsed and validated before
//!   anything starts.
//! - [`demo`]: the line against the built-in simulator in virtual time.
pub mod config;
pub mod core;
pub mod demo;

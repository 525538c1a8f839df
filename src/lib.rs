//! sortline: the controller of a customs inspection sorting line.
//!
//! # Layout
//! - [`core`]: the sans-IO heart: waybills, manifests, reasons, the decision
//!   engine and the `Line` state machine (`handle(input, now) -> outputs`).
//! - [`config`]: `line.toml` and the rule files, parsed and validated before
//!   anything starts.
//! - [`audit`]: the hash-chained, signed, append-only record in SQLite.
//! - [`recorder`]: core records to audit entries and back (replay, `audit show`).
//! - [`replay`]: recorded inputs through a fresh core, compared with recorded decisions.
//! - [`report`]: the line's figures from the record.
//! - [`plc`]: the register-map contract with the PLC and its handshake.
//! - [`scanner`]: barcode scanners: the links that move their bytes (serial, TCP).
//! - [`daemon`]: the wiring: the core on its own thread, the PLC driver as a tokio task,
//!   records durable before destinations leave, shutdown from the caller's broadcast.
//! - [`scanner`]: scanner frame profiles and the incremental frame parser.
//! - [`clock`]: the only place that reads the machine's clocks.
//! - [`logs`]: tracing set-up for the programs.
//! - [`manifest`]: declaration lists: model, validation, `manifests.db`, file import, manual targets.
//! - [`mqtt`]: monitoring and commands over MQTT, through a durable outbox; the embedded broker.
//! - [`xray`]: the X-ray station: image intake, matching, pre-screen, review images, retention.
//! - [`console`]: the officers' screens over HTTP: review, live line, inspection desk, supervision.
pub mod audit;
pub mod clock;
pub mod config;
pub mod console;
pub mod core;
pub mod daemon;
pub mod logs;
pub mod manifest;
pub mod metrics;
pub mod mqtt;
pub mod plc;
pub mod recorder;
pub mod replay;
pub mod report;
pub mod scanner;
pub mod service;
pub mod xray;

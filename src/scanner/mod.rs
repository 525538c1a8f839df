//! Barcode scanners at the reading gate.
//!
//! - [`link`]: one task per scanner that owns its transport (serial port, TCP client or
//!   server) and hands raw byte chunks, up/down and silence events to a consumer.
pub mod link;

//! Barcode scanners: their output frames, read through configuration, and the links that
//! carry them.
//!
//! Fixed-mount readers (Cognex DataMan, SICK CLV/Lector, Datalogic DS/DX, ...) are set up to
//! send one frame per trigger: optional start bytes, the trigger count, the codes read (or a
//! no-read token) between delimiters, stop bytes; some send keep-alive frames. How a given
//! scanner frames its output is a [`FrameProfile`] (`firmware-config/scanners/*.toml`,
//! `docs/scanners.md`), not code:
//! - [`profile`]: the profile file, loaded and validated; the shipped profiles.
//! - [`frame`]: the pure, incremental [`FrameParser`]: bytes in, [`Frame`]s or [`FrameError`]s
//!   out, resynchronised after garbage, cut-off and oversize frames, each counted in
//!   [`FrameStats`].
//! - [`link`]: one task per scanner that owns its transport (serial port, TCP client or
//!   server) and hands raw byte chunks, up/down and silence events to a consumer.
//!
//! What a frame means for a parcel is the core's business (`core::waybill::identify`); a frame
//! becomes `Input::Scan` through [`Frame::into_input`].

pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod link;
pub mod profile;
pub mod reader;
#[cfg(test)]
mod tests;

pub use frame::{Frame, FrameError, FrameParser, FrameStats};
pub use profile::{FrameProfile, ProfileError, TriggerField};

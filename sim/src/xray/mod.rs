//! The simulated X-ray station: images synthesised for each parcel's contents, written to a
//! folder or streamed over TCP with the sequence number the simulated PLC reports.
//!
//! The simulator does not depend on sortline, so it has its own image type; its pixel
//! convention is sortline's `xray::XrayImage`'s: detector counts on 16 bits, `u16::MAX` the
//! open beam, 0 nothing through.

pub mod wire;

/// One synthesised image: one or two energies of the same geometry, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimImage {
    pub seq: u32,
    pub width: u32,
    pub height: u32,
    pub low: Vec<u16>,
    pub high: Option<Vec<u16>>,
}

pub mod synth;

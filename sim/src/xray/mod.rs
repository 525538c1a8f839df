//! The simulated X-ray station: images synthesised for each parcel's contents, written to a
//! folder or streamed over TCP with the sequence number the simulated PLC reports.
//!
//! The station has its own image type, as a real one would: what it writes is a file or a
//! frame, which sortline decodes into its `xray::XrayImage` (sortline's own unit tests encode
//! with it, and they cannot share types with this crate). Its pixel convention is sortline's:
//! detector counts on 16 bits, `u16::MAX` the open beam, 0 nothing through.

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

impl SimImage {
    /// A small image with a pixel pattern that differs per position, channel and seq: for
    /// tests of the wire formats, where the content does not matter but every pixel must
    /// arrive in its place.
    pub fn pattern(seq: u32, width: u32, height: u32, dual: bool) -> SimImage {
        let n = width * height;
        let pattern = |salt: u32| -> Vec<u16> {
            (0..n)
                .map(|i| (i.wrapping_mul(7919).wrapping_add(seq.wrapping_mul(31)).wrapping_add(salt) % 65_536) as u16)
                .collect()
        };
        SimImage { seq, width, height, low: pattern(0), high: dual.then(|| pattern(40_503)) }
    }
}

pub mod synth;

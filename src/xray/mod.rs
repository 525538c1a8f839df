//! The X-ray station (`docs/xray.md`): image intake (watched folder, TCP stream), matching to
//! parcels by the image sequence number the PLC reports, the automatic pre-screen (a pure
//! function over the pixels), review images for the officer's screen, and retention.
//!
//! Everything but the intake drivers is pure: bytes and pixels in, values out.
//!
//! - [`screen`]: the pre-screen: flags (dense object, undeclared metal, possible liquid,
//!   possible battery) with their regions, from an image and the declared goods.
//! - [`material`]: transmission, log attenuation and the material class of each pixel.
//! - [`profile`]: the calibration and goods profile tables (`firmware-config/xray/`).
//! - [`display`]: the officer's pseudo-colour review image with flagged regions outlined.

pub mod display;
pub mod material;
pub mod profile;
pub mod screen;

/// One X-ray image as the station delivered it: one or two energies of the same geometry.
///
/// Pixels are detector counts normalised to 16 bits (`u16::MAX` = the open beam, the
/// detector's white level; 0 = nothing gets through). An 8-bit image is scaled up (`v * 257`)
/// on intake so that every later stage sees one range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XrayImage {
    /// The sequence number the station gave the image; the PLC reports the same number when
    /// the parcel enters the tunnel (`Input::XrayEntered`).
    pub seq: u32,
    pub width: u32,
    pub height: u32,
    /// Bit depth as delivered (8 or 16), kept for the record.
    pub bit_depth: u8,
    /// Single-energy image, or the low-energy channel of a dual-energy one; row-major,
    /// `width * height` values.
    pub low: Vec<u16>,
    /// The high-energy channel of a dual-energy image, same geometry as `low`.
    pub high: Option<Vec<u16>>,
}

impl XrayImage {
    pub fn pixels(&self) -> usize {
        self.width as usize * self.height as usize
    }

    pub fn dual_energy(&self) -> bool {
        self.high.is_some()
    }
}

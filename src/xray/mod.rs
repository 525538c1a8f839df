//! The X-ray station (`docs/xray.md`): image intake (watched folder, TCP stream), matching to
//! parcels by the image sequence number the PLC reports, the automatic pre-screen (a pure
//! function over the pixels), review images for the officer's screen, and retention.
//!
//! Everything but the intake drivers is pure: bytes and pixels in, values out.
//!
//! Intake:
//! - [`config`]: the `[xray]` section ([`config::XrayConfig`]), validated before any port or
//!   folder is opened.
//! - [`name`]: the file-name pattern (`{seq}`, `{barcode}`, `{energy}`, `{ext}`, optional
//!   parts in `[...]`), compiled to an anchored regex.
//! - [`decode`]: PNG or TIFF, 8 or 16 bit, grey or grey+alpha, two files paired; limits
//!   checked on the header.
//! - [`stream`]: the pure, incremental parser of the TCP framing, resynchronised on the next
//!   magic after a bad frame.
//! - [`store`]: originals under `<data>/xray/` named by SHA-256, the SQLite index, the pure
//!   retention planner; and what the drivers hand on ([`store::IntakeOutput`]).
//! - [`folder`], [`tcp`]: the drivers (watched folder, TCP listener), tokio tasks.
//! - [`station`]: the station in a running daemon: drivers to core inputs, the pre-screen on
//!   its own thread, retention.
//!
//! Screening:
//! - [`screen`]: the pre-screen: flags (dense object, undeclared metal, possible liquid,
//!   possible battery) with their regions, from an image and the declared goods.
//! - [`material`]: transmission, log attenuation and the material class of each pixel.
//! - [`profile`]: the calibration and goods profile tables (`firmware-config/xray/`).
//! - [`display`]: the officer's pseudo-colour review image with flagged regions outlined.

pub mod config;
pub mod decode;
pub mod display;
pub mod folder;
#[doc(hidden)]
pub mod fuzzing;
pub mod material;
pub mod name;
pub mod profile;
pub mod screen;
pub mod station;
pub mod store;
pub mod stream;
pub mod tcp;

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

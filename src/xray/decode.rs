//! Image files as the station writes them, decoded into [`XrayImage`]s: PNG or TIFF, 8 or 16
//! bit, grey (single energy, or one half of a two-file pair) or grey+alpha (dual energy: grey
//! the low, alpha the high energy).
//!
//! The file size is checked before anything is read, the dimensions and the allocation on the
//! header (`image::Limits`), so a decompression bomb is refused without allocating its pixels.

use super::XrayImage;
use image::error::{ImageError, LimitErrorKind, UnsupportedErrorKind};
use image::{ColorType, DynamicImage, ExtendedColorType, ImageDecoder, ImageFormat, ImageReader, Limits};
use std::io::Cursor;

/// What the intake accepts, from `[xray]` (`max_bytes`, `max_width`, `max_height`): a file's
/// size, or a frame's size from magic to CRC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLimits {
    pub max_bytes: u64,
    pub max_width: u32,
    pub max_height: u32,
}

impl ImageLimits {
    /// The decoder's allocation bound: the largest image allowed at 2 channels of 16 bits,
    /// plus room for the decoder's own buffers.
    fn max_alloc(&self) -> u64 {
        u64::from(self.max_width) * u64::from(self.max_height) * 4 + (16 << 20)
    }
}

/// Why a file was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("too large: {what}")]
    TooLarge { what: String },
    #[error("wrong format: {found} (PNG or TIFF expected)")]
    WrongFormat { found: String },
    #[error("truncated {format}: {detail}")]
    Truncated { format: &'static str, detail: String },
    #[error("corrupt {format}: {detail}")]
    Corrupt { format: &'static str, detail: String },
    #[error("unsupported {format} colour type {colour} (grey or grey+alpha, 8 or 16 bit)")]
    Unsupported { format: &'static str, colour: String },
    /// The two files of a dual-energy image differ in geometry or depth, or one of them is not
    /// a single channel.
    #[error("mismatched pair: low is {low}, high is {high}")]
    MismatchedPair { low: String, high: String },
}

impl DecodeError {
    /// A stable name per kind, for counters and file names of reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::WrongFormat { .. } => "wrong_format",
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::Corrupt { .. } => "corrupt",
            DecodeError::Unsupported { .. } => "unsupported",
            DecodeError::MismatchedPair { .. } => "mismatched_pair",
        }
    }
}

/// The last chunk of every PNG: length 0, `IEND`, its CRC.
const PNG_IEND: &[u8] = b"\0\0\0\0IEND\xae\x42\x60\x82";

/// Decodes one file's bytes.
pub fn decode(bytes: &[u8], seq: u32, limits: &ImageLimits) -> Result<XrayImage, DecodeError> {
    if bytes.len() as u64 > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            what: format!("file of {} bytes, over the limit of {}", bytes.len(), limits.max_bytes),
        });
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DecodeError::Corrupt { format: "file", detail: e.to_string() })?;
    let format = match reader.format() {
        Some(ImageFormat::Png) => "PNG",
        Some(ImageFormat::Tiff) => "TIFF",
        Some(other) => return Err(DecodeError::WrongFormat { found: format!("{other:?}") }),
        None => return Err(DecodeError::WrongFormat { found: "not a known image format".into() }),
    };
    let mut reader = reader;
    let mut l = Limits::default();
    l.max_image_width = Some(limits.max_width);
    l.max_image_height = Some(limits.max_height);
    l.max_alloc = Some(limits.max_alloc());
    reader.limits(l);
    let fail = |e| classify(e, format, bytes, limits);
    let decoder = reader.into_decoder().map_err(fail)?;
    let (width, height) = decoder.dimensions();
    // Checked here too: not every decoder applies the limits' dimensions.
    if width > limits.max_width || height > limits.max_height {
        return Err(too_large_dimensions(limits, Some((width, height))));
    }
    let original = decoder.original_color_type();
    let bit_depth = match original {
        ExtendedColorType::L8 | ExtendedColorType::La8 => 8,
        ExtendedColorType::L16 | ExtendedColorType::La16 => 16,
        other => return Err(DecodeError::Unsupported { format, colour: format!("{other:?}") }),
    };
    let dynamic = DynamicImage::from_decoder(decoder).map_err(fail)?;
    let (low, high) = match (dynamic.color(), dynamic) {
        (ColorType::L8, DynamicImage::ImageLuma8(b)) => (b.into_raw().into_iter().map(widen).collect(), None),
        (ColorType::L16, DynamicImage::ImageLuma16(b)) => (b.into_raw(), None),
        (ColorType::La8, DynamicImage::ImageLumaA8(b)) => {
            let (l, h) = split_channels(&b.into_raw().into_iter().map(widen).collect::<Vec<_>>());
            (l, Some(h))
        }
        (ColorType::La16, DynamicImage::ImageLumaA16(b)) => {
            let (l, h) = split_channels(&b.into_raw());
            (l, Some(h))
        }
        (colour, _) => return Err(DecodeError::Unsupported { format, colour: format!("{colour:?}") }),
    };
    Ok(XrayImage { seq, width, height, bit_depth, low, high })
}

/// 8-bit counts onto the 16-bit scale: 255 → 65 535.
fn widen(v: u8) -> u16 {
    u16::from(v) * 257
}

fn split_channels(interleaved: &[u16]) -> (Vec<u16>, Vec<u16>) {
    interleaved.chunks_exact(2).map(|p| (p[0], p[1])).unzip()
}

fn too_large_dimensions(limits: &ImageLimits, found: Option<(u32, u32)>) -> DecodeError {
    let found = found.map_or(String::new(), |(w, h)| format!("{w} x {h}, "));
    DecodeError::TooLarge {
        what: format!("dimensions {found}over the limit of {} x {}", limits.max_width, limits.max_height),
    }
}

fn classify(e: ImageError, format: &'static str, bytes: &[u8], limits: &ImageLimits) -> DecodeError {
    let truncated = |detail: String| DecodeError::Truncated { format, detail };
    match e {
        ImageError::Limits(l) => match l.kind() {
            LimitErrorKind::DimensionError => too_large_dimensions(limits, None),
            _ => DecodeError::TooLarge { what: format!("decoding needs more memory than allowed ({l})") },
        },
        ImageError::Unsupported(u) => match u.kind() {
            UnsupportedErrorKind::Color(c) => DecodeError::Unsupported { format, colour: format!("{c:?}") },
            UnsupportedErrorKind::Format(f) => DecodeError::WrongFormat { found: f.to_string() },
            _ => DecodeError::Unsupported { format, colour: u.to_string() },
        },
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => truncated(io.to_string()),
        // A PNG ends with its IEND chunk; one that does not was cut off, whatever the decoder
        // tripped over first.
        e if format == "PNG" && !bytes.windows(PNG_IEND.len()).any(|w| w == PNG_IEND) => truncated(e.to_string()),
        e if is_eof(&e) => truncated(e.to_string()),
        e => DecodeError::Corrupt { format, detail: e.to_string() },
    }
}

/// The TIFF decoder reports a strip or directory past the end of the file as an I/O error
/// wrapped in a decoding error.
fn is_eof(e: &ImageError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof) {
            return true;
        }
        source = s.source();
    }
    false
}

/// Joins the two files of a dual-energy image: the same geometry and depth, one channel each.
pub fn pair(low: XrayImage, high: XrayImage) -> Result<XrayImage, DecodeError> {
    let describe = |i: &XrayImage| {
        let channels = if i.dual_energy() { "grey+alpha" } else { "grey" };
        format!("{} x {} {}-bit {channels}", i.width, i.height, i.bit_depth)
    };
    let same = (low.width, low.height, low.bit_depth) == (high.width, high.height, high.bit_depth);
    if !same || low.dual_energy() || high.dual_energy() {
        return Err(DecodeError::MismatchedPair { low: describe(&low), high: describe(&high) });
    }
    Ok(XrayImage { high: Some(high.low), ..low })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sortline_sim::xray::wire::{encode_file, to_8bit, FileFormat, Part};
    use sortline_sim::xray::SimImage;

    const LIMITS: ImageLimits = ImageLimits { max_bytes: 1 << 20, max_width: 64, max_height: 64 };

    fn scaled(v: &[u16], depth: u8) -> Vec<u16> {
        v.iter().map(|&v| if depth == 8 { widen(to_8bit(v)) } else { v }).collect()
    }

    #[test]
    fn grey_and_grey_alpha_decode_at_both_depths_in_both_formats() {
        for format in [FileFormat::Png, FileFormat::Tiff] {
            for depth in [8, 16] {
                let sim = SimImage::pattern(3, 5, 4, true);
                let single = decode(&encode_file(&sim, Part::Low, format, depth).unwrap(), 3, &LIMITS).unwrap();
                assert_eq!((single.width, single.height, single.bit_depth, single.seq), (5, 4, depth, 3));
                assert_eq!(single.low, scaled(&sim.low, depth), "{format:?} {depth}");
                assert_eq!(single.high, None);
                let high = decode(&encode_file(&sim, Part::High, format, depth).unwrap(), 3, &LIMITS).unwrap();
                let both = pair(single, high).unwrap();
                assert_eq!(both.high, Some(scaled(sim.high.as_ref().unwrap(), depth)));
            }
        }
        for depth in [8, 16] {
            let sim = SimImage::pattern(4, 3, 3, true);
            let two = decode(&encode_file(&sim, Part::Both, FileFormat::Png, depth).unwrap(), 4, &LIMITS).unwrap();
            assert_eq!(two.low, scaled(&sim.low, depth));
            assert_eq!(two.high, Some(scaled(sim.high.as_ref().unwrap(), depth)));
        }
    }

    #[test]
    fn a_pair_of_different_geometry_or_depth_is_refused() {
        let a = decode(
            &encode_file(&SimImage::pattern(1, 4, 4, false), Part::Low, FileFormat::Png, 16).unwrap(),
            1,
            &LIMITS,
        );
        let b = decode(
            &encode_file(&SimImage::pattern(1, 4, 5, false), Part::Low, FileFormat::Png, 16).unwrap(),
            1,
            &LIMITS,
        );
        let c = decode(
            &encode_file(&SimImage::pattern(1, 4, 4, false), Part::Low, FileFormat::Png, 8).unwrap(),
            1,
            &LIMITS,
        );
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        assert_eq!(pair(a.clone(), b).unwrap_err().kind(), "mismatched_pair");
        assert_eq!(pair(a.clone(), c).unwrap_err().kind(), "mismatched_pair");
        let two = XrayImage { high: Some(a.low.clone()), ..a.clone() };
        assert!(matches!(pair(a, two), Err(DecodeError::MismatchedPair { high, .. }) if high.contains("grey+alpha")));
    }

    #[test]
    fn bad_files_get_their_own_error() {
        let png = encode_file(&SimImage::pattern(1, 16, 16, false), Part::Low, FileFormat::Png, 16).unwrap();
        let tiff = encode_file(&SimImage::pattern(1, 16, 16, false), Part::Low, FileFormat::Tiff, 16).unwrap();
        let kind = |bytes: &[u8]| decode(bytes, 1, &LIMITS).unwrap_err().kind();
        assert_eq!(kind(&png[..png.len() / 2]), "truncated");
        assert_eq!(kind(&png[..png.len() - 12]), "truncated", "only IEND missing");
        assert_eq!(kind(&tiff[..tiff.len() / 2]), "truncated");
        assert_eq!(kind(&png[..20]), "truncated");
        let mut corrupt = png.clone();
        corrupt[60] ^= 0x5a;
        assert_eq!(kind(&corrupt), "corrupt");
        assert_eq!(kind(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"), "wrong_format");
        assert_eq!(kind(b"P5\n2 2\n255\n\x00\x00\x00\x00"), "wrong_format");
        assert_eq!(kind(b"plain text"), "wrong_format");
        assert_eq!(kind(&[]), "wrong_format");
        let small = ImageLimits { max_bytes: 100, ..LIMITS };
        assert!(matches!(decode(&png, 1, &small), Err(DecodeError::TooLarge { what }) if what.contains("bytes")));
        let rgb = image::DynamicImage::new_rgb8(2, 2);
        let mut buf = Cursor::new(Vec::new());
        rgb.write_to(&mut buf, ImageFormat::Png).unwrap();
        assert!(
            matches!(decode(buf.get_ref(), 1, &LIMITS), Err(DecodeError::Unsupported { colour, .. }) if colour.contains("Rgb8"))
        );
    }

    #[test]
    fn a_decompression_bomb_is_refused_on_its_header() {
        // A 60 000 × 60 000 grey PNG of zeros compresses to a few MB and would take 3.6 GB;
        // its header is enough to refuse it, so this one has only a token IDAT.
        let mut png = encode_file(&SimImage::pattern(1, 1, 1, false), Part::Low, FileFormat::Png, 8).unwrap();
        png[16..24].copy_from_slice(&[0, 0, 0xea, 0x60, 0, 0, 0xea, 0x60]);
        let crc = crc32fast::hash(&png[12..29]).to_be_bytes();
        png[29..33].copy_from_slice(&crc);
        let e = decode(&png, 1, &LIMITS).unwrap_err();
        assert!(matches!(&e, DecodeError::TooLarge { what } if what.contains("64 x 64")), "{e}");
    }
}

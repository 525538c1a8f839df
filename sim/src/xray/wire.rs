//! The simulated station's writers: a [`SimImage`] written to a watched folder as PNG or TIFF
//! files under a file-name pattern, or streamed over TCP in the X-ray framing
//! (`docs/xray.md`, "Stream framing"), both with seeded fault injection.
//!
//! One seeded generator per writer draws the faults in image order, so a seed and an image
//! sequence give the same bytes. Each call says which fault it applied, so a test knows what
//! the intake must answer.
//!
//! The TIFF encoder of the `image` crate writes grey only, not grey+alpha: dual energy in TIFF
//! is written as two files. TIFF has no checksum, so corrupt pixel data cannot be detected by
//! anyone; a corrupt TIFF here has a broken directory instead.

use super::SimImage;
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The first bytes of every frame.
pub const MAGIC: &[u8; 4] = b"XRAY";
pub const VERSION: u8 = 1;
/// Magic, version, energies, bit depth, reserved, seq, width, height, barcode length.
pub const HEADER_LEN: usize = 22;
pub const MAX_BARCODE_LEN: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Png,
    Tiff,
}

impl FileFormat {
    pub fn ext(self) -> &'static str {
        match self {
            FileFormat::Png => "png",
            FileFormat::Tiff => "tif",
        }
    }
}

/// How a dual-energy image goes into files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DualLayout {
    /// One grey+alpha file: grey the low energy, alpha the high (PNG only).
    TwoChannel,
    /// Two files, `energy` `low` and `high` in their names.
    TwoFiles,
}

/// How a file reaches the folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Written as `<name>.part`, then renamed into place.
    Rename,
    /// Written under its final name in `pieces` writes, `pause_ms` apart, as a station that
    /// streams to disk does.
    InPlace { pieces: usize, pause_ms: u64 },
}

/// A fault applied to one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WireFault {
    /// The file or frame is cut short.
    Truncated,
    /// Bytes inside are overwritten (PNG: pixel data, caught by its CRC; TIFF: the directory;
    /// a frame: a pixel byte, caught by the frame's CRC).
    Corrupt,
    /// The header declares dimensions far beyond any sane limit (100 000 × 100 000 in a
    /// PNG, 20 000 × 20 000 in a TIFF, 1 048 576 wide in a frame); the pixels are the real ones.
    Oversize,
    /// Not the format expected: a GIF file under a PNG or TIFF name; a frame of version 2.
    WrongFormat,
}

/// Fault probabilities per image, between 0 and 1; at most one of the first four per image.
#[derive(Clone, Debug, Default)]
pub struct WireFaults {
    pub seed: u64,
    pub truncated: f64,
    pub corrupt: f64,
    pub oversize: f64,
    pub wrong_format: f64,
    /// Stream only: 1 to `garbage_max_bytes` bytes of noise (never a magic) before the frame.
    pub garbage: f64,
    pub garbage_max_bytes: usize,
}

/// The faults' dice.
struct Dice {
    faults: WireFaults,
    rng: ChaCha8Rng,
}

impl Dice {
    fn new(faults: WireFaults) -> Dice {
        let rng = ChaCha8Rng::seed_from_u64(faults.seed);
        Dice { faults, rng }
    }

    fn fault(&mut self) -> Option<WireFault> {
        let f = &self.faults;
        let r: f64 = self.rng.random();
        let mut edge = 0.0;
        for (p, fault) in [
            (f.truncated, WireFault::Truncated),
            (f.corrupt, WireFault::Corrupt),
            (f.oversize, WireFault::Oversize),
            (f.wrong_format, WireFault::WrongFormat),
        ] {
            edge += p.max(0.0);
            if r < edge {
                return Some(fault);
            }
        }
        None
    }

    /// Noise bytes without an `X`, so that they never hold a magic.
    fn garbage(&mut self) -> Vec<u8> {
        let p = self.faults.garbage;
        if self.faults.garbage_max_bytes == 0 || p <= 0.0 || !self.rng.random_bool(p.min(1.0)) {
            return Vec::new();
        }
        let n = self.rng.random_range(1..=self.faults.garbage_max_bytes);
        (0..n).map(|_| self.rng.random::<u8>()).map(|b| if b == b'X' { b'x' } else { b }).collect()
    }

    /// A cut point in `from..len` (at least one byte gone).
    fn cut(&mut self, from: usize, len: usize) -> usize {
        self.rng.random_range(from.min(len - 1)..len)
    }
}

/// A 16-bit sample as an 8-bit station sends it; sortline scales it back by 257.
pub fn to_8bit(v: u16) -> u8 {
    ((u32::from(v) + 128) / 257) as u8
}

/// Which channels of an image go into one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Low,
    High,
    /// Grey + alpha; a single-energy image is written as grey alone.
    Both,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

/// One file's bytes, 8 or 16 bit.
pub fn encode_file(image: &SimImage, part: Part, format: FileFormat, bit_depth: u8) -> io::Result<Vec<u8>> {
    let (w, h) = (image.width, image.height);
    let channel = match part {
        Part::High => image.high.as_ref().ok_or_else(|| invalid("no high-energy channel".into()))?,
        Part::Low | Part::Both => &image.low,
    };
    let alpha = match part {
        Part::Both => image.high.as_ref(),
        Part::Low | Part::High => None,
    };
    if alpha.is_some() && format == FileFormat::Tiff {
        return Err(invalid("TIFF two-channel (grey+alpha) is not written; use two files".into()));
    }
    let bad = || invalid(format!("{} pixels do not fill {w}x{h}", channel.len()));
    let dynamic = match (bit_depth, alpha) {
        (8, None) => DynamicImage::ImageLuma8(
            ImageBuffer::<Luma<u8>, _>::from_raw(w, h, channel.iter().map(|&v| to_8bit(v)).collect())
                .ok_or_else(bad)?,
        ),
        (16, None) => {
            DynamicImage::ImageLuma16(ImageBuffer::<Luma<u16>, _>::from_raw(w, h, channel.clone()).ok_or_else(bad)?)
        }
        (8, Some(high)) => DynamicImage::ImageLumaA8(
            ImageBuffer::<LumaA<u8>, _>::from_raw(w, h, interleave(channel, high).map(to_8bit).collect())
                .ok_or_else(bad)?,
        ),
        (16, Some(high)) => DynamicImage::ImageLumaA16(
            ImageBuffer::<LumaA<u16>, _>::from_raw(w, h, interleave(channel, high).collect()).ok_or_else(bad)?,
        ),
        (depth, _) => return Err(invalid(format!("bit depth {depth}: 8 or 16"))),
    };
    let mut out = Cursor::new(Vec::new());
    let format = match format {
        FileFormat::Png => ImageFormat::Png,
        FileFormat::Tiff => ImageFormat::Tiff,
    };
    dynamic.write_to(&mut out, format).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(out.into_inner())
}

fn interleave<'a>(a: &'a [u16], b: &'a [u16]) -> impl Iterator<Item = u16> + 'a {
    a.iter().zip(b).flat_map(|(&x, &y)| [x, y])
}

/// A file name under `pattern`: `{seq}`, `{barcode}`, `{energy}` and `{ext}` replaced; a part
/// in `[...]` is kept only if every placeholder in it has a value. The pattern is taken as
/// valid (sortline validates the configured one).
pub fn file_name(pattern: &str, seq: u32, barcode: Option<&str>, energy: Option<&str>, ext: &str) -> String {
    let value = |name: &str| match name {
        "seq" => Some(seq.to_string()),
        "barcode" => barcode.map(str::to_owned),
        "energy" => energy.map(str::to_owned),
        "ext" => Some(ext.to_owned()),
        _ => None,
    };
    let mut out = String::new();
    let mut optional: Option<(String, bool)> = None;
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        let (text, complete) = match c {
            '[' => {
                optional = Some((String::new(), true));
                rest = &rest[1..];
                continue;
            }
            ']' => {
                if let Some((part, true)) = optional.take() {
                    out.push_str(&part);
                }
                rest = &rest[1..];
                continue;
            }
            '{' => {
                let end = rest.find('}').unwrap_or(rest.len() - 1);
                let v = value(&rest[1..end]);
                rest = &rest[end + 1..];
                (v.clone().unwrap_or_default(), v.is_some())
            }
            c => {
                rest = &rest[c.len_utf8()..];
                (c.to_string(), true)
            }
        };
        match &mut optional {
            Some((part, ok)) => {
                part.push_str(&text);
                *ok &= complete;
            }
            None => out.push_str(&text),
        }
    }
    out
}

/// A folder writer's settings.
#[derive(Clone, Debug)]
pub struct FolderWriterConfig {
    /// As sortline's `[xray] pattern`.
    pub pattern: String,
    pub format: FileFormat,
    pub bit_depth: u8,
    pub dual: DualLayout,
    pub mode: WriteMode,
    pub faults: WireFaults,
}

/// What one write did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The files' final paths, low energy first.
    pub files: Vec<PathBuf>,
    /// What each file holds, as written.
    pub bytes: Vec<Vec<u8>>,
    pub fault: Option<WireFault>,
}

/// Writes images into one folder.
pub struct FolderWriter {
    dir: PathBuf,
    config: FolderWriterConfig,
    dice: Dice,
}

impl FolderWriter {
    pub fn new(dir: impl Into<PathBuf>, config: FolderWriterConfig) -> FolderWriter {
        let dice = Dice::new(config.faults.clone());
        FolderWriter { dir: dir.into(), config, dice }
    }

    /// Writes one image (two files for a dual-energy one under [`DualLayout::TwoFiles`]); a
    /// fault, if one is drawn, goes into the first file only.
    pub async fn write(&mut self, image: &SimImage, barcode: Option<&str>) -> io::Result<Written> {
        let c = &self.config;
        let parts: &[(Part, Option<&str>)] = match (&image.high, c.dual) {
            (Some(_), DualLayout::TwoFiles) => &[(Part::Low, Some("low")), (Part::High, Some("high"))],
            _ => &[(Part::Both, None)],
        };
        let fault = self.dice.fault();
        let mut files = Vec::with_capacity(parts.len());
        let mut written = Vec::with_capacity(parts.len());
        for (i, &(part, energy)) in parts.iter().enumerate() {
            let mut bytes = encode_file(image, part, c.format, c.bit_depth)?;
            if let Some(fault) = fault.filter(|_| i == 0) {
                apply_file_fault(&mut bytes, c.format, fault, &mut self.dice);
            }
            let name = file_name(&c.pattern, image.seq, barcode, energy, c.format.ext());
            let path = self.dir.join(&name);
            put(&path, &bytes, c.mode).await?;
            files.push(path);
            written.push(bytes);
        }
        Ok(Written { files, bytes: written, fault })
    }
}

async fn put(path: &Path, bytes: &[u8], mode: WriteMode) -> io::Result<()> {
    match mode {
        WriteMode::Rename => {
            let mut part = path.as_os_str().to_owned();
            part.push(".part");
            tokio::fs::write(&part, bytes).await?;
            tokio::fs::rename(&part, path).await
        }
        WriteMode::InPlace { pieces, pause_ms } => {
            let mut file = tokio::fs::File::create(path).await?;
            let size = bytes.len().div_ceil(pieces.max(1)).max(1);
            for (i, piece) in bytes.chunks(size).enumerate() {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                }
                file.write_all(piece).await?;
                file.flush().await?;
            }
            file.sync_all().await
        }
    }
}

/// The PNG chunk CRC covers the chunk type and data.
fn png_chunk_crc(chunk_type_and_data: &[u8]) -> [u8; 4] {
    crc32fast::hash(chunk_type_and_data).to_be_bytes()
}

fn apply_file_fault(bytes: &mut Vec<u8>, format: FileFormat, fault: WireFault, dice: &mut Dice) {
    match (fault, format) {
        (WireFault::Truncated, _) => {
            let at = dice.cut(bytes.len() / 3, bytes.len());
            bytes.truncate(at);
        }
        // The first IDAT's data starts after the signature (8), IHDR (25) and its header (8).
        (WireFault::Corrupt, FileFormat::Png) => {
            let from = 41.min(bytes.len() - 1);
            let at = dice.rng.random_range(from..bytes.len().saturating_sub(12).max(from + 1));
            bytes[at] ^= 0x5a;
        }
        (WireFault::Corrupt, FileFormat::Tiff) => {
            if let Some(ifd) = tiff_ifd(bytes) {
                bytes[ifd] = 0;
                bytes[ifd + 1] = 0;
            }
        }
        (WireFault::Oversize, FileFormat::Png) => {
            // IHDR: length 8..12, type 12..16, width 16..20, height 20..24, CRC 29..33.
            if bytes.len() >= 33 {
                bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes());
                bytes[20..24].copy_from_slice(&100_000u32.to_be_bytes());
                let crc = png_chunk_crc(&bytes[12..29]);
                bytes[29..33].copy_from_slice(&crc);
            }
        }
        (WireFault::Oversize, FileFormat::Tiff) => tiff_oversize(bytes),
        (WireFault::WrongFormat, _) => {
            *bytes = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x00\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;".to_vec();
        }
    }
}

fn tiff_u16(bytes: &[u8], at: usize, le: bool) -> Option<u16> {
    let b: [u8; 2] = bytes.get(at..at + 2)?.try_into().ok()?;
    Some(if le { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) })
}

/// The offset of the first directory's entry count, if it lies inside the file.
fn tiff_ifd(bytes: &[u8]) -> Option<usize> {
    let le = bytes.get(..2)? == b"II";
    let b: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
    let at = if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) } as usize;
    (at + 2 <= bytes.len()).then_some(at)
}

/// The dimensions a TIFF's oversize fault declares.
const TIFF_OVERSIZE: u32 = 20_000;

/// Declares a [`TIFF_OVERSIZE`]-square image, consistently (rows per strip and the strip's
/// byte count follow), as a real station's oversized image would.
fn tiff_oversize(bytes: &mut [u8]) {
    let Some(ifd) = tiff_ifd(bytes) else { return };
    let le = bytes[..2] == *b"II";
    let count = tiff_u16(bytes, ifd, le).unwrap_or(0) as usize;
    let entry = |i: usize| ifd + 2 + 12 * i;
    // BitsPerSample (258), a SHORT in the entry's value field for one sample.
    let sample_bytes = (0..count)
        .find(|&i| tiff_u16(bytes, entry(i), le) == Some(258))
        .and_then(|i| tiff_u16(bytes, entry(i) + 8, le))
        .map_or(1, |bits| u32::from(bits / 8).max(1));
    for i in 0..count {
        let (Some(tag), Some(kind)) = (tiff_u16(bytes, entry(i), le), tiff_u16(bytes, entry(i) + 2, le)) else {
            return;
        };
        let value = match tag {
            256 | 257 | 278 => TIFF_OVERSIZE,
            279 => TIFF_OVERSIZE * TIFF_OVERSIZE * sample_bytes,
            _ => continue,
        };
        let Some(field) = bytes.get_mut(entry(i) + 8..entry(i) + 12) else { return };
        // SHORT (3) sits in the field's first two bytes; LONG (4) fills it.
        match (kind, le) {
            (3, _) if value > u32::from(u16::MAX) => {}
            (3, true) => field[..2].copy_from_slice(&(value as u16).to_le_bytes()),
            (3, false) => field[..2].copy_from_slice(&(value as u16).to_be_bytes()),
            (_, true) => field.copy_from_slice(&value.to_le_bytes()),
            (_, false) => field.copy_from_slice(&value.to_be_bytes()),
        }
    }
}

/// One image as a frame: header, barcode, pixels (low energy first), CRC-32.
pub fn encode_frame(image: &SimImage, barcode: Option<&str>, bit_depth: u8) -> Vec<u8> {
    let barcode = barcode.unwrap_or("").as_bytes();
    let barcode = &barcode[..barcode.len().min(MAX_BARCODE_LEN)];
    let energies: u8 = if image.high.is_some() { 2 } else { 1 };
    let sample_bytes = if bit_depth == 8 { 1 } else { 2 };
    let mut out = Vec::with_capacity(HEADER_LEN + barcode.len() + image.low.len() * sample_bytes * 2 + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[VERSION, energies, bit_depth, 0]);
    for v in [image.seq, image.width, image.height] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&(barcode.len() as u16).to_be_bytes());
    out.extend_from_slice(barcode);
    for channel in std::iter::once(&image.low).chain(image.high.as_ref()) {
        for &v in channel {
            if bit_depth == 8 {
                out.push(to_8bit(v));
            } else {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// What one send did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub fault: Option<WireFault>,
    /// Noise bytes sent before the frame.
    pub garbage_bytes: usize,
    /// Bytes written, noise included.
    pub bytes: usize,
}

/// A station streaming frames to sortline's listener.
pub struct StreamWriter {
    stream: TcpStream,
    bit_depth: u8,
    dice: Dice,
}

impl StreamWriter {
    pub async fn connect(addr: std::net::SocketAddr, bit_depth: u8, faults: WireFaults) -> io::Result<StreamWriter> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(StreamWriter { stream, bit_depth, dice: Dice::new(faults) })
    }

    pub async fn send(&mut self, image: &SimImage, barcode: Option<&str>) -> io::Result<Sent> {
        let mut bytes = self.dice.garbage();
        let garbage_bytes = bytes.len();
        let mut frame = encode_frame(image, barcode, self.bit_depth);
        let fault = self.dice.fault();
        match fault {
            Some(WireFault::Truncated) => {
                let at = self.dice.cut(HEADER_LEN, frame.len());
                frame.truncate(at);
            }
            Some(WireFault::Corrupt) => {
                let at = self.dice.rng.random_range(HEADER_LEN.min(frame.len() - 5)..frame.len() - 4);
                frame[at] ^= 0x5a;
            }
            Some(WireFault::Oversize) => frame[12..16].copy_from_slice(&(1u32 << 20).to_be_bytes()),
            Some(WireFault::WrongFormat) => frame[4] = VERSION + 1,
            None => {}
        }
        bytes.extend_from_slice(&frame);
        self.stream.write_all(&bytes).await?;
        Ok(Sent { fault, garbage_bytes, bytes: bytes.len() })
    }

    /// Raw bytes, for tests of what the intake does with them.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Closes the connection after everything written.
    pub async fn close(mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(high: bool) -> SimImage {
        let low: Vec<u16> = (0..12u16).map(|i| i * 5000).collect();
        let high = high.then(|| low.iter().map(|v| v / 2).collect());
        SimImage { seq: 7, width: 4, height: 3, low, high }
    }

    #[test]
    fn names_follow_the_pattern_and_drop_incomplete_optional_parts() {
        let p = "{seq}[_{barcode}][_{energy}].{ext}";
        assert_eq!(file_name(p, 12, Some("EA123456785CN"), Some("low"), "png"), "12_EA123456785CN_low.png");
        assert_eq!(file_name(p, 12, None, Some("high"), "tif"), "12_high.tif");
        assert_eq!(file_name(p, 12, None, None, "png"), "12.png");
        assert_eq!(file_name("img-{seq}.png", 3, Some("X"), None, "png"), "img-3.png");
    }

    #[test]
    fn a_frame_has_the_documented_layout() {
        let f = encode_frame(&image(true), Some("AB1"), 16);
        assert_eq!(&f[..8], b"XRAY\x01\x02\x10\x00");
        assert_eq!(&f[8..20], &[0, 0, 0, 7, 0, 0, 0, 4, 0, 0, 0, 3]);
        assert_eq!(&f[20..25], b"\x00\x03AB1");
        assert_eq!(f.len(), HEADER_LEN + 3 + 2 * 12 * 2 + 4);
        assert_eq!(&f[25..29], &[0, 0, 0x13, 0x88], "first low sample 0, second 5000, big-endian");
        let (body, crc) = f.split_at(f.len() - 4);
        assert_eq!(crc, crc32fast::hash(body).to_be_bytes());
        let eight = encode_frame(&image(false), None, 8);
        assert_eq!(eight.len(), HEADER_LEN + 12 + 4);
        assert_eq!(eight[HEADER_LEN + 1], to_8bit(5000));
    }

    #[test]
    fn files_encode_at_both_depths_and_tiff_refuses_two_channels() {
        for depth in [8, 16] {
            for format in [FileFormat::Png, FileFormat::Tiff] {
                let bytes = encode_file(&image(false), Part::Both, format, depth).unwrap();
                let back = image::load_from_memory(&bytes).unwrap();
                assert_eq!((back.width(), back.height()), (4, 3));
            }
        }
        assert!(encode_file(&image(true), Part::Both, FileFormat::Tiff, 16).is_err());
        assert!(encode_file(&image(false), Part::High, FileFormat::Png, 16).is_err());
        let la = image::load_from_memory(&encode_file(&image(true), Part::Both, FileFormat::Png, 16).unwrap()).unwrap();
        assert_eq!(la.color(), image::ColorType::La16);
    }

    #[test]
    fn the_same_seed_draws_the_same_faults() {
        let faults = WireFaults { seed: 3, truncated: 0.25, corrupt: 0.25, oversize: 0.25, ..WireFaults::default() };
        let draw = |f: &WireFaults| {
            let mut d = Dice::new(f.clone());
            (0..64).map(|_| d.fault()).collect::<Vec<_>>()
        };
        let a = draw(&faults);
        assert_eq!(a, draw(&faults));
        assert!(a.contains(&None) && a.contains(&Some(WireFault::Oversize)));
        assert!(!a.contains(&Some(WireFault::WrongFormat)));
    }

    #[test]
    fn file_faults_break_what_they_say() {
        let mut dice = Dice::new(WireFaults::default());
        for (format, depth) in [(FileFormat::Png, 16), (FileFormat::Tiff, 8), (FileFormat::Tiff, 16)] {
            let good = encode_file(&image(false), Part::Low, format, depth).unwrap();
            let mut big = good.clone();
            apply_file_fault(&mut big, format, WireFault::Oversize, &mut dice);
            let dims = image::ImageReader::new(Cursor::new(&big)).with_guessed_format().unwrap().into_dimensions();
            assert_eq!(dims.unwrap().0, if format == FileFormat::Png { 100_000 } else { TIFF_OVERSIZE }, "{format:?}");
            let mut corrupt = good.clone();
            apply_file_fault(&mut corrupt, format, WireFault::Corrupt, &mut dice);
            assert!(image::load_from_memory(&corrupt).is_err(), "{format:?}");
            let mut short = good;
            apply_file_fault(&mut short, format, WireFault::Truncated, &mut dice);
            assert!(image::load_from_memory(&short).is_err(), "{format:?}");
        }
    }
}

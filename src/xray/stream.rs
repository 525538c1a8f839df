//! The X-ray TCP framing (`docs/xray.md`, "Stream framing"), parsed purely and incrementally:
//! bytes in, frames or rejected chunks out. A stream split anywhere gives the same output.
//!
//! Limits are checked on the header, before any pixel is buffered. A bad header, barcode or
//! CRC drops only the frame's first byte: the rest is scanned again for the next magic, so a
//! frame cut short by the station's restart does not take the next good frame with it. Every
//! byte ends up in exactly one of: a frame, a garbage run, or the first byte of a rejected
//! frame (see [`StreamStats`]); the buffer never holds more than the largest frame allowed.

use super::decode::ImageLimits;
use super::XrayImage;
use serde::Serialize;
use std::collections::VecDeque;

pub const MAGIC: &[u8; 4] = b"XRAY";
pub const VERSION: u8 = 1;
/// Magic, version, energies, bit depth, reserved, seq, width, height, barcode length.
pub const HEADER_LEN: usize = 22;
pub const MAX_BARCODE_LEN: u16 = 64;
const CRC_LEN: usize = 4;
/// A garbage run that does not end is reported every this many bytes, so that a station
/// sending the wrong protocol still shows in the counters.
const GARBAGE_REPORT_BYTES: u64 = 64 * 1024;

/// One good frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamFrame {
    pub image: XrayImage,
    pub barcode: Option<String>,
    /// The frame as received, magic to CRC: the original the store keeps.
    pub bytes: Vec<u8>,
}

/// A rejected chunk of the stream. Each kind has its counter in [`StreamStats`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// Bytes outside any frame: reported when a magic ends the run, every 64 KiB of a run that
    /// does not end, and at the end of the connection.
    #[error("{bytes} bytes outside a frame")]
    Garbage { bytes: u64 },
    /// A header field out of its range (version, energies, bit depth, reserved, barcode
    /// length, a zero dimension).
    #[error("bad frame header: {field} is {value}")]
    BadHeader { field: &'static str, value: u64 },
    #[error("frame {seq}: barcode is not printable UTF-8")]
    BadBarcode { seq: u32 },
    /// Refused on the header: nothing of its pixels was buffered.
    #[error("frame {seq} too large: {what} {value} over the limit {max}")]
    TooLarge { seq: u32, what: &'static str, value: u64, max: u64 },
    #[error("frame {seq}: CRC {found:#010x} but the bytes give {computed:#010x}")]
    BadCrc { seq: u32, found: u32, computed: u32 },
    /// The connection ended inside a frame.
    #[error("frame {seq} cut off after {len} bytes", seq = seq.map_or("?".to_string(), |s| s.to_string()))]
    Truncated { seq: Option<u32>, len: usize },
}

impl StreamError {
    /// A stable name per kind, for counters and alarm messages.
    pub fn kind(&self) -> &'static str {
        match self {
            StreamError::Garbage { .. } => "garbage",
            StreamError::BadHeader { .. } => "bad_header",
            StreamError::BadBarcode { .. } => "bad_barcode",
            StreamError::TooLarge { .. } => "too_large",
            StreamError::BadCrc { .. } => "bad_crc",
            StreamError::Truncated { .. } => "truncated",
        }
    }
}

/// The parser's counters. `frame_bytes + garbage_bytes + ` the rejected frames (one byte
/// each) is every byte pushed, once [`StreamParser::finish`] has run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StreamStats {
    pub frames: u64,
    pub frame_bytes: u64,
    pub garbage: u64,
    pub garbage_bytes: u64,
    pub bad_header: u64,
    pub bad_barcode: u64,
    pub too_large: u64,
    pub bad_crc: u64,
    pub truncated: u64,
}

impl StreamStats {
    pub(super) fn count(&mut self, result: &Result<StreamFrame, StreamError>) {
        let counter = match result {
            Ok(f) => {
                self.frame_bytes += f.bytes.len() as u64;
                &mut self.frames
            }
            Err(StreamError::Garbage { bytes }) => {
                self.garbage_bytes += bytes;
                &mut self.garbage
            }
            Err(StreamError::BadHeader { .. }) => &mut self.bad_header,
            Err(StreamError::BadBarcode { .. }) => &mut self.bad_barcode,
            Err(StreamError::TooLarge { .. }) => &mut self.too_large,
            Err(StreamError::BadCrc { .. }) => &mut self.bad_crc,
            Err(StreamError::Truncated { .. }) => &mut self.truncated,
        };
        *counter += 1;
    }

    /// Frames rejected (each drops one byte; the rest is scanned again).
    pub fn rejected(&self) -> u64 {
        self.bad_header + self.bad_barcode + self.too_large + self.bad_crc + self.truncated
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    energies: u8,
    bit_depth: u8,
    seq: u32,
    width: u32,
    height: u32,
    barcode_len: usize,
}

impl Header {
    fn barcode_end(&self) -> usize {
        HEADER_LEN + self.barcode_len
    }

    fn samples(&self) -> u64 {
        u64::from(self.energies).saturating_mul(u64::from(self.width) * u64::from(self.height))
    }

    fn frame_len(&self) -> u64 {
        let sample_bytes = if self.bit_depth == 8 { 1 } else { 2 };
        ((self.barcode_end() + CRC_LEN) as u64).saturating_add(self.samples().saturating_mul(sample_bytes))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Looking for a magic; the buffer holds the part of one matched so far.
    Hunting,
    Header,
    Barcode(Header),
    Body(Header),
}

/// Turns one connection's bytes into frames. One parser per connection: a reconnect starts a
/// fresh one, so a half frame never joins the next session's bytes.
#[derive(Clone, Debug)]
pub struct StreamParser {
    limits: ImageLimits,
    state: State,
    /// The current frame's bytes from its magic on, or the partial magic.
    buf: Vec<u8>,
    /// Bytes of the current garbage run not reported yet.
    garbage_run: u64,
    stats: StreamStats,
}

type Output = Vec<Result<StreamFrame, StreamError>>;

impl StreamParser {
    pub fn new(limits: ImageLimits) -> StreamParser {
        StreamParser { limits, state: State::Hunting, buf: Vec::new(), garbage_run: 0, stats: StreamStats::default() }
    }

    pub fn stats(&self) -> &StreamStats {
        &self.stats
    }

    /// Bytes held for a frame not finished yet; at most the larger of `max_bytes` and a
    /// header with the longest barcode.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The bound [`StreamParser::buffered`] keeps to.
    pub fn buffer_bound(&self) -> usize {
        let limit = usize::try_from(self.limits.max_bytes).unwrap_or(usize::MAX);
        limit.max(HEADER_LEN + usize::from(MAX_BARCODE_LEN))
    }

    /// Feeds bytes as they came off the wire; appends one result per frame or rejected chunk
    /// they completed, in stream order.
    pub fn push(&mut self, bytes: &[u8], out: &mut Output) {
        // The bytes of rejected frames after their first, to be scanned before the rest of
        // `bytes`; each rejection makes the frames' bytes shorter, so this ends.
        let mut replay: VecDeque<u8> = VecDeque::new();
        let mut input = bytes;
        loop {
            let again = if replay.is_empty() {
                if input.is_empty() {
                    return;
                }
                let (n, again) = self.step(input, out);
                input = &input[n..];
                again
            } else {
                let (n, again) = self.step(replay.as_slices().0, out);
                replay.drain(..n);
                again
            };
            if let Some(again) = again {
                let mut front = VecDeque::from(again);
                front.append(&mut replay);
                replay = front;
            }
        }
    }

    /// The connection ended: a frame in progress is reported truncated (and its bytes scanned
    /// again), the garbage run so far is reported.
    pub fn finish(&mut self, out: &mut Output) {
        loop {
            if self.state == State::Hunting {
                self.garbage_run += self.buf.len() as u64;
                self.buf.clear();
                self.end_garbage(out);
                return;
            }
            let seq = match self.state {
                State::Barcode(h) | State::Body(h) => Some(h.seq),
                State::Hunting | State::Header => None,
            };
            let len = self.buf.len();
            let again = self.reject(StreamError::Truncated { seq, len }, out);
            self.push(&again, out);
        }
    }

    /// Consumes at least one byte of non-empty `input`; returns how many, and the bytes to scan
    /// again if a frame was rejected.
    fn step(&mut self, input: &[u8], out: &mut Output) -> (usize, Option<Vec<u8>>) {
        let need = match self.state {
            State::Hunting => return (self.hunt(input, out), None),
            State::Header => HEADER_LEN,
            State::Barcode(h) => h.barcode_end(),
            // The header checked that the frame fits the limits, hence usize.
            State::Body(h) => h.frame_len() as usize,
        };
        let n = need.saturating_sub(self.buf.len()).min(input.len());
        self.buf.extend_from_slice(&input[..n]);
        if self.buf.len() < need {
            return (n, None);
        }
        let again = match self.state {
            State::Header => self.header(out),
            State::Barcode(h) => self.barcode(h, out),
            State::Body(h) => self.body(h, out),
            State::Hunting => None,
        };
        (n, again)
    }

    /// Scans for a magic; the magic has no proper prefix that is also a suffix, so a
    /// mismatch only has to look at the byte itself again.
    fn hunt(&mut self, input: &[u8], out: &mut Output) -> usize {
        for (i, &b) in input.iter().enumerate() {
            if b == MAGIC[self.buf.len()] {
                self.buf.push(b);
            } else {
                self.garbage_run += self.buf.len() as u64;
                self.buf.clear();
                if b == MAGIC[0] {
                    self.buf.push(b);
                } else {
                    self.garbage_run += 1;
                }
            }
            if self.buf.len() == MAGIC.len() {
                self.end_garbage(out);
                self.state = State::Header;
                return i + 1;
            }
            if self.garbage_run >= GARBAGE_REPORT_BYTES {
                self.end_garbage(out);
            }
        }
        input.len()
    }

    fn end_garbage(&mut self, out: &mut Output) {
        let bytes = std::mem::take(&mut self.garbage_run);
        if bytes > 0 {
            self.emit(Err(StreamError::Garbage { bytes }), out);
        }
    }

    fn emit(&mut self, result: Result<StreamFrame, StreamError>, out: &mut Output) {
        self.stats.count(&result);
        out.push(result);
    }

    /// Reports a rejected frame; its bytes after the first are to be scanned again.
    fn reject(&mut self, error: StreamError, out: &mut Output) -> Vec<u8> {
        tracing::debug!(%error, "x-ray frame rejected");
        self.emit(Err(error), out);
        self.state = State::Hunting;
        let mut again = std::mem::take(&mut self.buf);
        again.drain(..1.min(again.len()));
        again
    }

    fn header(&mut self, out: &mut Output) -> Option<Vec<u8>> {
        let b = &self.buf;
        let be32 = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let h = Header {
            energies: b[5],
            bit_depth: b[6],
            seq: be32(8),
            width: be32(12),
            height: be32(16),
            barcode_len: usize::from(u16::from_be_bytes([b[20], b[21]])),
        };
        let bad = |field, value: u64| Some(StreamError::BadHeader { field, value });
        let limits = &self.limits;
        let too_large = |what, value: u64, max: u64| Some(StreamError::TooLarge { seq: h.seq, what, value, max });
        let error = if b[4] != VERSION {
            bad("version", b[4].into())
        } else if !(1..=2).contains(&h.energies) {
            bad("energies", h.energies.into())
        } else if h.bit_depth != 8 && h.bit_depth != 16 {
            bad("bit_depth", h.bit_depth.into())
        } else if b[7] != 0 {
            bad("reserved", b[7].into())
        } else if h.barcode_len > usize::from(MAX_BARCODE_LEN) {
            bad("barcode_len", h.barcode_len as u64)
        } else if h.width == 0 {
            bad("width", 0)
        } else if h.height == 0 {
            bad("height", 0)
        } else if h.width > limits.max_width {
            too_large("width", h.width.into(), limits.max_width.into())
        } else if h.height > limits.max_height {
            too_large("height", h.height.into(), limits.max_height.into())
        } else if h.frame_len() > limits.max_bytes {
            too_large("frame bytes", h.frame_len(), limits.max_bytes)
        } else {
            None
        };
        if let Some(error) = error {
            return Some(self.reject(error, out));
        }
        self.state = if h.barcode_len > 0 { State::Barcode(h) } else { State::Body(h) };
        None
    }

    fn barcode(&mut self, h: Header, out: &mut Output) -> Option<Vec<u8>> {
        let printable = std::str::from_utf8(&self.buf[HEADER_LEN..]).is_ok_and(|s| !s.chars().any(|c| c.is_control()));
        if !printable {
            return Some(self.reject(StreamError::BadBarcode { seq: h.seq }, out));
        }
        self.state = State::Body(h);
        None
    }

    fn body(&mut self, h: Header, out: &mut Output) -> Option<Vec<u8>> {
        let (data, crc) = self.buf.split_at(self.buf.len() - CRC_LEN);
        let found = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let computed = crc32fast::hash(data);
        if found != computed {
            return Some(self.reject(StreamError::BadCrc { seq: h.seq, found, computed }, out));
        }
        let bytes = std::mem::take(&mut self.buf);
        self.state = State::Hunting;
        let barcode = std::str::from_utf8(&bytes[HEADER_LEN..h.barcode_end()]).ok().filter(|s| !s.is_empty());
        let pixels = &bytes[h.barcode_end()..bytes.len() - CRC_LEN];
        let samples: Vec<u16> = if h.bit_depth == 8 {
            pixels.iter().map(|&v| u16::from(v) * 257).collect()
        } else {
            pixels.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]])).collect()
        };
        let n = samples.len() / usize::from(h.energies);
        let (low, high) = samples.split_at(n);
        let image = XrayImage {
            seq: h.seq,
            width: h.width,
            height: h.height,
            bit_depth: h.bit_depth,
            low: low.to_vec(),
            high: (h.energies == 2).then(|| high.to_vec()),
        };
        let frame = StreamFrame { image, barcode: barcode.map(str::to_owned), bytes };
        self.emit(Ok(frame), out);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::fuzzing::{check_stream, run, LIMITS};
    use super::*;
    use proptest::prelude::*;
    use sortline_sim::xray::wire::encode_frame;
    use sortline_sim::xray::SimImage;

    fn frames(out: &Output) -> Vec<(u32, Option<String>)> {
        out.iter().filter_map(|r| r.as_ref().ok()).map(|f| (f.image.seq, f.barcode.clone())).collect()
    }

    fn errors(out: &Output) -> Vec<&'static str> {
        out.iter().filter_map(|r| r.as_ref().err()).map(StreamError::kind).collect()
    }

    #[test]
    fn frames_decode_to_the_pixels_sent_at_both_depths() {
        for (depth, dual) in [(16, false), (16, true), (8, false), (8, true)] {
            let sim = SimImage::pattern(5, 7, 3, dual);
            let bytes = encode_frame(&sim, Some("EA123456785CN"), depth);
            let (out, stats) = run(&LIMITS, &bytes, &[bytes.len()]);
            let [Ok(f)] = &out[..] else { panic!("{out:?}") };
            let scale = |v: &u16| if depth == 8 { u16::from(sortline_sim::xray::wire::to_8bit(*v)) * 257 } else { *v };
            assert_eq!(f.image.low, sim.low.iter().map(scale).collect::<Vec<_>>());
            assert_eq!(f.image.high, sim.high.as_ref().map(|h| h.iter().map(scale).collect::<Vec<_>>()));
            assert_eq!((f.image.seq, f.image.width, f.image.height, f.image.bit_depth), (5, 7, 3, depth));
            assert_eq!(f.barcode.as_deref(), Some("EA123456785CN"));
            assert_eq!(f.bytes, bytes);
            assert_eq!((stats.frames, stats.frame_bytes), (1, bytes.len() as u64));
        }
    }

    /// Noise, a good frame, a corrupt one, a good one without barcode, a bad version.
    fn mixed() -> Vec<u8> {
        let mut s = b"noise XR".to_vec();
        s.extend(encode_frame(&SimImage::pattern(1, 4, 2, false), Some("A1"), 16));
        let mut bad = encode_frame(&SimImage::pattern(2, 4, 2, true), None, 8);
        bad[HEADER_LEN + 3] ^= 1;
        s.extend(bad);
        s.extend(encode_frame(&SimImage::pattern(3, 2, 2, true), None, 16));
        let mut v2 = encode_frame(&SimImage::pattern(4, 2, 2, false), None, 16);
        v2[4] = 2;
        s.extend(v2);
        s.extend(encode_frame(&SimImage::pattern(5, 1, 1, false), None, 8));
        s
    }

    #[test]
    fn a_stream_split_at_every_byte_boundary_gives_the_same_output() {
        let stream = mixed();
        let whole = run(&LIMITS, &stream, &[stream.len()]);
        assert_eq!(frames(&whole.0), vec![(1, Some("A1".into())), (3, None), (5, None)]);
        assert!(errors(&whole.0).starts_with(&["garbage", "bad_crc"]), "{:?}", errors(&whole.0));
        assert!(errors(&whole.0).contains(&"bad_header"));
        for at in 0..=stream.len() {
            assert_eq!(run(&LIMITS, &stream, &[at, stream.len()]), whole, "split at {at}");
        }
        assert_eq!(run(&LIMITS, &stream, &[1]), whole);
        check_stream(&[[0u8, 0x37].as_slice(), &stream].concat());
    }

    #[test]
    fn each_bad_header_field_is_refused_and_the_next_frame_recovered() {
        let good = encode_frame(&SimImage::pattern(9, 3, 3, false), None, 16);
        for (at, value, field) in [(4, 0, "version"), (5, 3, "energies"), (6, 12, "bit_depth"), (7, 1, "reserved")] {
            let mut bad = encode_frame(&SimImage::pattern(8, 3, 3, false), None, 16);
            bad[at] = value;
            let stream = [bad, good.clone()].concat();
            let (out, stats) = run(&LIMITS, &stream, &[stream.len()]);
            assert!(matches!(out[0], Err(StreamError::BadHeader { field: f, .. }) if f == field), "{out:?}");
            assert_eq!(frames(&out), vec![(9, None)], "{field}");
            assert_eq!(stats.bad_header, 1);
        }
        let mut long = encode_frame(&SimImage::pattern(8, 3, 3, false), None, 16);
        long[20..22].copy_from_slice(&65u16.to_be_bytes());
        let (out, _) = run(&LIMITS, &long, &[long.len()]);
        assert!(matches!(out[0], Err(StreamError::BadHeader { field: "barcode_len", value: 65 })));
        let mut not_utf8 = encode_frame(&SimImage::pattern(8, 3, 3, false), Some("AB"), 16);
        not_utf8[HEADER_LEN] = 0xff;
        let (out, stats) = run(&LIMITS, &[not_utf8, good].concat(), &[1000]);
        assert_eq!(
            (errors(&out), stats.bad_barcode, frames(&out)),
            (vec!["bad_barcode", "garbage"], 1, vec![(9, None)])
        );
    }

    #[test]
    fn an_oversized_frame_is_refused_on_its_header_before_any_pixel_is_buffered() {
        let limits = ImageLimits { max_bytes: 1 << 20, max_width: 64, max_height: 64 };
        let mut wide = encode_frame(&SimImage::pattern(3, 65, 1, false), None, 8);
        wide.truncate(HEADER_LEN);
        let mut parser = StreamParser::new(limits);
        let mut out = Vec::new();
        parser.push(&wide, &mut out);
        assert_eq!(out, vec![Err(StreamError::TooLarge { seq: 3, what: "width", value: 65, max: 64 })]);
        assert_eq!(parser.buffered(), 0);
        // 64 × 64 × 2 energies × 2 bytes is over 16 KiB: refused on the byte count.
        let small = ImageLimits { max_bytes: 16 * 1024, ..limits };
        let mut big = encode_frame(&SimImage::pattern(4, 64, 64, true), None, 16);
        big.truncate(HEADER_LEN);
        let mut parser = StreamParser::new(small);
        parser.push(&big, &mut out);
        assert!(matches!(out[1], Err(StreamError::TooLarge { what: "frame bytes", .. })), "{out:?}");
        // A claimed 4G × 4G frame is refused as fast, without allocating.
        let mut bomb = big.clone();
        bomb[12..20].copy_from_slice(&[0xff; 8]);
        let mut parser = StreamParser::new(ImageLimits { max_width: u32::MAX, max_height: u32::MAX, ..small });
        parser.push(&bomb, &mut out);
        assert!(matches!(out[2], Err(StreamError::TooLarge { what: "frame bytes", .. })), "{out:?}");
    }

    #[test]
    fn a_frame_cut_short_does_not_take_the_next_one_with_it() {
        let mut cut = encode_frame(&SimImage::pattern(1, 8, 8, false), None, 16);
        cut.truncate(60);
        let next = encode_frame(&SimImage::pattern(2, 2, 2, false), Some("B2"), 16);
        let stream = [cut, next].concat();
        let mut parser = StreamParser::new(LIMITS);
        let mut out = Vec::new();
        parser.push(&stream, &mut out);
        assert!(out.is_empty(), "the cut frame still waits for its pixels");
        parser.finish(&mut out);
        assert_eq!(errors(&out), vec!["truncated", "garbage"]);
        assert_eq!(frames(&out), vec![(2, Some("B2".into()))]);
        let stats = parser.stats();
        assert_eq!(stats.frame_bytes + stats.garbage_bytes + stats.rejected(), stream.len() as u64);
    }

    #[test]
    fn garbage_that_never_ends_still_shows_in_the_counters() {
        let noise = vec![b'.'; 3 * GARBAGE_REPORT_BYTES as usize + 5];
        let (out, stats) = run(&LIMITS, &noise, &[10_000]);
        assert_eq!(out.len(), 4);
        assert_eq!((stats.garbage, stats.garbage_bytes), (4, noise.len() as u64));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn arbitrary_bytes_keep_the_invariants(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            check_stream(&data);
        }

        #[test]
        fn good_frames_among_noise_and_broken_frames_all_come_through(
            items in proptest::collection::vec((0u8..4, 1u32..6, 1u32..6, any::<bool>(), any::<u16>()), 1..8),
            chunk in 1usize..64,
        ) {
            let mut stream = Vec::new();
            let mut want = Vec::new();
            for (i, &(kind, w, h, dual, noise)) in items.iter().enumerate() {
                let seq = i as u32;
                let mut f = encode_frame(&SimImage::pattern(seq, w, h, dual), Some("Z9"), if dual { 16 } else { 8 });
                match kind {
                    0 => want.push(seq),
                    1 => { let at = HEADER_LEN + 2 + usize::from(noise) % (f.len() - HEADER_LEN - 2); f[at] ^= 0x80; }
                    2 => f.extend(noise.to_be_bytes().map(|b| if b == b'X' { 0 } else { b })),
                    _ => { f.truncate(HEADER_LEN + usize::from(noise) % (f.len() - HEADER_LEN)); }
                }
                if kind == 2 { want.push(seq); }
                stream.extend(f);
            }
            let (out, stats) = run(&LIMITS, &stream, &[chunk]);
            let got: Vec<u32> = frames(&out).into_iter().map(|(s, _)| s).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(stats.frame_bytes + stats.garbage_bytes + stats.rejected(), stream.len() as u64);
        }
    }
}

//! The stream-parsing harness shared by the fuzz target (`fuzz/fuzz_targets/xray_frames.rs`,
//! cargo fuzz on nightly) and property tests (stable, so CI runs it). It panics when an
//! invariant breaks; that is its purpose.

use super::decode::ImageLimits;
use super::stream::{StreamError, StreamFrame, StreamParser, StreamStats, HEADER_LEN, MAGIC, MAX_BARCODE_LEN};

/// Limits small enough that arbitrary input reaches them.
pub const LIMITS: ImageLimits = ImageLimits { max_bytes: 4096, max_width: 64, max_height: 64 };

/// The limit sets byte 0 of a fuzz input picks from.
const LIMIT_SETS: [ImageLimits; 3] = [
    LIMITS,
    ImageLimits { max_bytes: 64, max_width: 8, max_height: 8 },
    ImageLimits { max_bytes: 1 << 20, max_width: 1024, max_height: 1024 },
];

pub type Output = Vec<Result<StreamFrame, StreamError>>;

/// Feeds `stream` in chunks of the given sizes (cycled; 0 counts as 1), checking after every
/// push that the buffer stays within its bound, then finishes the stream.
pub fn run(limits: &ImageLimits, stream: &[u8], chunks: &[usize]) -> (Output, StreamStats) {
    let mut parser = StreamParser::new(*limits);
    let bound = parser.buffer_bound();
    let mut out = Vec::new();
    for piece in crate::scanner::fuzzing::pieces(stream, chunks) {
        parser.push(piece, &mut out);
        assert!(parser.buffered() <= bound, "buffer {} over its bound {bound}", parser.buffered());
    }
    parser.finish(&mut out);
    assert_eq!(parser.buffered(), 0, "bytes left after finish");
    (out, parser.stats().clone())
}

/// Input layout: byte 0 picks the limits, byte 1 the chunk sizes, the rest is the stream.
/// Checks that the stream gives the same results whole, byte by byte and in chunks, that the
/// counters match the results, that every byte is accounted for once, and that every frame
/// is well formed and within the limits.
pub fn check_stream(data: &[u8]) {
    let [pick, chunking, stream @ ..] = data else { return };
    let limits = &LIMIT_SETS[usize::from(*pick) % LIMIT_SETS.len()];
    let whole = run(limits, stream, &[stream.len()]);
    assert_eq!(run(limits, stream, &[1]), whole, "byte by byte differs from whole");
    let sizes = [usize::from(chunking & 0x0f), usize::from(chunking >> 4), 3];
    assert_eq!(run(limits, stream, &sizes), whole, "chunked differs from whole");
    let (out, stats) = whole;
    let mut counted = StreamStats::default();
    for result in &out {
        counted.count(result);
        if let Ok(frame) = result {
            check_frame(limits, frame);
        }
    }
    assert_eq!(counted, stats, "counters do not match the results");
    let accounted = stats.frame_bytes + stats.garbage_bytes + stats.rejected();
    assert_eq!(accounted, stream.len() as u64, "bytes not accounted for exactly once");
}

fn check_frame(limits: &ImageLimits, f: &StreamFrame) {
    let img = &f.image;
    assert!(f.bytes.starts_with(MAGIC) && f.bytes.len() >= HEADER_LEN + 4);
    assert!(f.bytes.len() as u64 <= limits.max_bytes, "frame of {} bytes over the limit", f.bytes.len());
    assert!(img.width >= 1 && img.width <= limits.max_width && img.height >= 1 && img.height <= limits.max_height);
    assert_eq!(img.low.len(), img.pixels());
    assert!(img.high.as_ref().is_none_or(|h| h.len() == img.pixels()));
    assert!(img.bit_depth == 8 || img.bit_depth == 16);
    if img.bit_depth == 8 {
        assert!(img.low.iter().chain(img.high.iter().flatten()).all(|v| v % 257 == 0), "8-bit not scaled by 257");
    }
    let (body, crc) = f.bytes.split_at(f.bytes.len() - 4);
    assert_eq!(crc32fast::hash(body).to_be_bytes(), crc, "a frame with a bad CRC came through");
    if let Some(code) = &f.barcode {
        assert!(!code.is_empty() && code.len() <= usize::from(MAX_BARCODE_LEN));
        assert!(!code.chars().any(char::is_control));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_seed_corpus_passes_the_harness_and_holds_good_frames() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/xray_frames");
        let mut good = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            super::check_stream(&data);
            let limits = &super::LIMIT_SETS[usize::from(data[0]) % super::LIMIT_SETS.len()];
            good += super::run(limits, &data[2..], &[data.len()]).1.frames;
        }
        assert!(good >= 3, "the corpus should hold good frames, found {good}");
    }
}

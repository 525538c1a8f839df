//! Scanner frame parser benchmark: frames and bytes per second through `FrameParser::push`,
//! for each shipped profile, fed in the chunk sizes a serial port and a TCP socket deliver.
//! Prints figures; asserts nothing about time. Run: `cargo bench --bench scanner`
//! (docs/performance.md).

use sortline::clock::Stopwatch;
use sortline::scanner::{FrameParser, FrameProfile, TriggerField};
use std::hint::black_box;
use std::path::Path;

/// Frames in the pre-built stream (two waybills per read, one no-read in 30).
const FRAMES: u32 = 200_000;
/// A line needs about 14 frames a second (50,000 parcels an hour).
const REQUIRED_FRAMES_PER_S: f64 = 50_000.0 / 3600.0;

fn stream(p: &FrameProfile) -> Vec<u8> {
    let mut out = Vec::new();
    for n in 0..FRAMES {
        out.extend(p.start.as_deref().unwrap_or("").bytes());
        if p.trigger_field == TriggerField::First {
            out.extend(n.to_string().bytes());
            out.extend(p.delimiter.bytes());
        }
        if n % 30 == 0 {
            out.extend(p.no_read.bytes());
        } else {
            out.extend(format!("EA{:08}5CN", n % 100_000_000).bytes());
            out.extend(p.delimiter.bytes());
            out.extend(b"4006381333931");
        }
        out.extend(p.stop.bytes());
    }
    out
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/scanners");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    println!("{:<22} {:>6} {:>14} {:>12} {:>10}", "profile", "chunk", "frames/s", "MB/s", "x need");
    for path in files {
        let profile = FrameProfile::load(&path).unwrap();
        let bytes = stream(&profile);
        // A serial port hands over a few bytes at a time; a socket, whole segments.
        for chunk in [16usize, 1460] {
            let mut parser = FrameParser::new(profile.clone());
            let mut out = Vec::with_capacity(64);
            let mut frames = 0u64;
            let sw = Stopwatch::start();
            for c in bytes.chunks(chunk) {
                parser.push(black_box(c), &mut out);
                frames += out.len() as u64;
                out.clear();
            }
            let secs = sw.elapsed_secs_f64();
            assert_eq!(frames, u64::from(FRAMES), "every frame parsed");
            let name = path.file_stem().unwrap().to_string_lossy();
            println!(
                "{:<22} {:>6} {:>14.0} {:>12.1} {:>10.0}",
                name,
                chunk,
                frames as f64 / secs,
                bytes.len() as f64 / secs / 1e6,
                frames as f64 / secs / REQUIRED_FRAMES_PER_S
            );
        }
    }
}

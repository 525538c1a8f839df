//! Arbitrary bytes into the X-ray stream parser: it must never panic, its buffer must stay
//! within the largest frame allowed, splitting the stream anywhere must not change what comes
//! out, every byte must be accounted for once, and every frame must be well formed.
//! The harness is `sortline::xray::fuzzing::check_stream`, which proptests also run under
//! stable. Input: byte 0 picks the limits, byte 1 the chunk sizes, the rest is the stream.
//!
//! Run: `cargo fuzz run xray_frames fuzz/corpus/xray_frames` (from the repository root, nightly).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sortline::xray::fuzzing::check_stream(data);
});

//! Arbitrary scanner bytes into the frame parser, under each shipped profile: it must never
//! panic, its buffer must stay bounded, splitting the stream anywhere must not change what comes
//! out, and every frame must be well formed for its profile.
//! The harness is `sortline::scanner::fuzzing::check_frames`, which proptests also run under
//! stable. Input: byte 0 picks the profile, byte 1 the chunk sizes, the rest is the stream.
//!
//! Run: `cargo fuzz run scanner_frames fuzz/corpus/scanner_frames` (from the repository root, nightly).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sortline::scanner::fuzzing::check_frames(data);
});

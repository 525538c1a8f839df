//! Arbitrary bytes into the declaration readers (JSON Lines and CSV): they must never
//! panic, number lines in order, name the field of every error, and read back what
//! they read. The checks are `sortline::manifest::fuzzing`, which a proptest also
//! runs under stable.
//!
//! Run: `cargo fuzz run manifest_lines fuzz/corpus/manifest_lines` (from the repository root, nightly).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sortline::manifest::fuzzing::check_json_lines(data);
    sortline::manifest::fuzzing::check_csv(data);
});

//! Arbitrary bytes into the command parser that MQTT commands and the officer console's
//! actions share: byte 0 picks the command. The checks are
//! `sortline::mqtt::command::fuzzing::check_command`, which a proptest also runs under stable.
//!
//! Run: `cargo fuzz run commands fuzz/corpus/commands` (from the repository root, nightly).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sortline::mqtt::command::fuzzing::check_command(data);
});

//! Arbitrary register blocks into the event-ring reader: it must never panic and never return
//! an event it did not read from a well-formed slot at its own index, nor repeat or skip one.
//! The harness is `sortline::plc::fuzzing::check_register_polls`, which the unit tests also run
//! under stable (proptest), so CI exercises the same checks without nightly.
//!
//! Run: `cargo fuzz run registers fuzz/corpus/registers` (from the repository root, nightly).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sortline::plc::fuzzing::check_register_polls(data);
});

//! Arbitrary scanner output into waybill identification: it must never panic,
//! and never identify a parcel unless exactly one waybill was read cleanly.
//! The checks are `sortline::core::waybill::fuzzing::check_codes`, which a
//! proptest also runs under stable.
//!
//! Run: `cargo fuzz run codes fuzz/corpus/codes` (from the repository root, nightly).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sortline::core::waybill::fuzzing::check_codes(data);
});

//! Fuzz target: see `imds::fuzzing::store_location`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imds::fuzzing::store_location(data));

//! Fuzz target: see `imds::fuzzing::request_path`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imds::fuzzing::request_path(data));

//! Fuzz target: see `imds::fuzzing::control_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imds::fuzzing::control_request(data));

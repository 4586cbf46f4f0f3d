//! Fuzz target: see `imds::fuzzing::session_token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imds::fuzzing::session_token(data));

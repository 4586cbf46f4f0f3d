//! Fuzz target: see `imds::fuzzing::config_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imds::fuzzing::config_file(data));

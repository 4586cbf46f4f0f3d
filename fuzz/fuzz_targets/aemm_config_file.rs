//! Fuzz target: see `imds::fuzzing::aemm_config_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imds::fuzzing::aemm_config_file(data));

//! Fuzz target: see `imds::fuzzing::token_ttl`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imds::fuzzing::token_ttl(data));

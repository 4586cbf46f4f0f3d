//! Fuzz target: see `imds::fuzzing::policy_document`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imds::fuzzing::policy_document(data));

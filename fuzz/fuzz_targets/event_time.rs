//! Fuzz target: see `imds::fuzzing::event_time`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imds::fuzzing::event_time(data));

//! Integration tests: a real imds on an ephemeral port, spoken to over HTTP the way clients do.

mod access_log;
mod cli;
mod clock;
mod conformance;

mod connections;
mod control;
mod fuzz_corpus;
mod harness;
mod hop_limit;
mod identity;
mod instance_config;
mod link_local;
mod netns;
mod paths;
mod process;
mod recordings;
mod ssrf;
mod sts;
mod tokens;

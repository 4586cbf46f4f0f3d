//! Integration tests: a real imds on an ephemeral port, spoken to over HTTP the way clients do.

mod access_log;
mod acknowledged;
mod addresses;
mod aemm;
mod browsers;
mod cli;
mod clock;
mod cloudwatch;
mod conformance;

mod connections;
mod console;
mod control;
mod control_router;
mod ctl_fleet;
mod events;
mod fault_clients;
mod faults;
mod fleet;
mod fleet_guests;
mod fuzz_corpus;
mod harness;
mod hop_limit;
mod identity;
mod instance_config;
mod invariants;
mod link_local;
mod many_hosts;
mod netns;
mod network;
mod outcome_unknown;
mod paths;
mod persistence;
mod postgres;
mod process;
mod recordings;
mod reload_drop_races;
mod reload_race;
mod secrets;
mod slow_clients;
mod ssrf;
mod sts;
#[cfg(feature = "testing")]
mod testing_kit;
mod throttling;
mod tokens;

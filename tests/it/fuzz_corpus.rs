//! Replays every input in `fuzz/corpus/<target>/` through the fuzz targets' entry points, so the
//! corpus (seeds and anything a fuzzing run found and saved) is checked on every test run.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0, "no corpus in {}", dir.display());
}

#[test]
fn request_path_corpus_replays_cleanly() {
    replay("request_path", imds::fuzzing::request_path);
}

#[test]
fn session_token_corpus_replays_cleanly() {
    replay("session_token", imds::fuzzing::session_token);
}

#[test]
fn token_ttl_corpus_replays_cleanly() {
    replay("token_ttl", imds::fuzzing::token_ttl);
}

#[test]
fn store_location_corpus_replays_cleanly() {
    replay("store_location", imds::fuzzing::store_location);
}

#[test]
fn config_file_corpus_replays_cleanly() {
    replay("config_file", imds::fuzzing::config_file);
}

#[test]
fn aemm_config_file_corpus_replays_cleanly() {
    replay("aemm_config_file", imds::fuzzing::aemm_config_file);
}

#[test]
fn event_time_corpus_replays_cleanly() {
    replay("event_time", imds::fuzzing::event_time);
}

#[test]
fn policy_document_corpus_replays_cleanly() {
    replay("policy_document", imds::fuzzing::policy_document);
}

#[test]
fn control_request_corpus_replays_cleanly() {
    replay("control_request", imds::fuzzing::control_request);
}

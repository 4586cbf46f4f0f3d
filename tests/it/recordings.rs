//! Replays recordings of the real IMDS (shared/real-imds-traffic) against imds and compares what
//! clients depend on: status, the set of header names, and the body's shape.

use std::path::PathBuf;

use http::{Method, StatusCode};
use serde_json::Value;

use crate::harness::TestImds;

fn recordings_dir() -> PathBuf {
    std::env::var_os("IMDS_RECORDINGS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/real-imds-traffic")
        })
}

/// One recorded exchange with IMDS.
struct Exchange {
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    status: u16,
    header_names: Vec<String>,
    body: String,
}

fn exchanges(file: &str) -> Vec<Exchange> {
    let path = recordings_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (set IMDS_RECORDINGS_DIR to shared/real-imds-traffic)",
            path.display()
        )
    });
    let recording: Value = serde_json::from_str(&text).unwrap();
    let mut out: Vec<Exchange> = Vec::new();
    let mut in_imds = false;
    for event in recording["events"].as_array().unwrap() {
        let action = &event["action"];
        if let Some(request) = action.get("Request") {
            let request = &request["request"];
            let uri = request["uri"].as_str().unwrap();
            in_imds = uri.starts_with("http://169.254.169.254/");
            let Some(path) = uri.strip_prefix("http://169.254.169.254") else {
                continue;
            };
            let headers = request["headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v[0].as_str().unwrap().to_owned()))
                .collect();
            out.push(Exchange {
                method: request["method"].as_str().unwrap().parse().unwrap(),
                path: path.to_owned(),
                headers,
                status: 0,
                header_names: Vec::new(),
                body: String::new(),
            });
        } else if let Some(response) = action.get("Response") {
            let Some(last) = out.last_mut().filter(|e| in_imds && e.status == 0) else {
                continue;
            };
            let ok = &response["response"]["Ok"];
            last.status = ok["status"].as_u64().unwrap() as u16;
            let mut names: Vec<String> =
                ok["headers"].as_object().unwrap().keys().cloned().collect();
            names.sort();
            last.header_names = names;
        } else if let Some(data) = action.get("Data") {
            if in_imds && data["direction"] == "Response" {
                if let Some(last) = out.last_mut() {
                    last.body
                        .push_str(data["data"]["Utf8"].as_str().unwrap_or_default());
                }
            }
        }
    }
    // 503s were injected by the recording's test setup, not real IMDS behaviour.
    out.retain(|e| e.status != 503);
    out
}

async fn replay(file: &str, imds: &TestImds) {
    let mut token = String::new();
    let exchanges = exchanges(file);
    assert!(!exchanges.is_empty(), "{file} has no IMDS exchanges");
    for exchange in exchanges {
        let headers: Vec<(&str, &str)> = exchange
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if k == "x-aws-ec2-metadata-token" {
                        token.as_str()
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
        let answer = imds
            .send(exchange.method.clone(), &exchange.path, &headers)
            .await;
        let what = format!("{file}: {} {}", exchange.method, exchange.path);
        assert_eq!(
            answer.status,
            StatusCode::from_u16(exchange.status).unwrap(),
            "{what}"
        );
        if exchange.header_names.iter().any(|n| n == "server") {
            assert_eq!(
                answer.header_names(),
                exchange.header_names,
                "{what}: header names"
            );
        }
        if exchange.method == Method::PUT && answer.status == StatusCode::OK {
            assert_eq!(answer.body.len(), 56, "{what}: token length");
            token = answer.text().to_owned();
        } else if let Ok(Value::Object(recorded)) = serde_json::from_str::<Value>(&exchange.body) {
            let ours: serde_json::Map<String, Value> =
                serde_json::from_slice(&answer.body).unwrap();
            let recorded_keys: Vec<&String> = recorded.keys().collect();
            let our_keys: Vec<&String> = ours.keys().collect();
            assert_eq!(our_keys, recorded_keys, "{what}: JSON keys");
            let layout = |s: &str| {
                s.lines()
                    .map(|l| l.split(" : ").next().unwrap_or("").to_owned())
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                layout(answer.text()),
                layout(&exchange.body),
                "{what}: JSON layout"
            );
        } else {
            assert_eq!(answer.text(), exchange.body, "{what}: body");
        }
    }
}

const ROLE: &str = "[instance.iam]\nrole = \"imds-assume-role-test\"\n";

#[tokio::test]
async fn the_successful_credential_chain_replays_identically() {
    let imds = TestImds::setup().toml(ROLE).start().await;
    replay("imds_default_chain_success.json", &imds).await;
    replay("imds_default_chain_retries.json", &imds).await;
    replay("imds_assume_role.json", &imds).await;
}

#[tokio::test]
async fn an_instance_without_a_role_replays_the_real_404() {
    let imds = TestImds::setup()
        .toml("[instance]\niam = {}\n")
        .start()
        .await;
    replay("imds_no_iam_role.json", &imds).await;
    replay("imds_default_chain_error.json", &imds).await;
}

#[tokio::test]
async fn a_disabled_endpoint_replays_the_real_403() {
    let imds = TestImds::setup()
        .toml("[instance.metadata_options]\nhttp_endpoint = \"disabled\"\n")
        .start()
        .await;
    replay("imds_token_fail.json", &imds).await;
}

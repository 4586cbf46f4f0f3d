//! Real clients against injected faults: botocore's and the Rust SDK's (`aws-config`, with its
//! default retries and timeouts) retry and fallback behave as their code documents. Installed
//! by `scripts/install-test-deps`; ignored by a plain `cargo test`.

use serde_json::Value;

use crate::conformance::{python, repo, run, rust_client, served_credentials};
use crate::harness::TestImds;

const PUT: &str = "path = \"/latest/api/token\"\nmethod = \"PUT\"\n";
const ROLE: &str = "path = \"/latest/meta-data/iam/security-credentials/*\"\n";

async fn imds_with(fault: &str) -> TestImds {
    TestImds::setup()
        .toml(&format!("[[instance.faults]]\n{fault}"))
        .start()
        .await
}

async fn botocore(imds: &TestImds, env: &[(&str, &str)]) -> Result<Value, String> {
    let script = repo().join("tests/conformance/python/botocore_client.py");
    run(imds, &python(), &[script.to_str().unwrap()], env).await
}

async fn rust_sdk(imds: &TestImds) -> Result<Value, String> {
    let env = [("IMDS_CONFORMANCE_SDK_DEFAULTS", "true")];
    run(imds, &rust_client(), &["credentials"], &env).await
}

/// The client got exactly the credentials imds serves with a session token (IMDSv2).
async fn got_v2_set(imds: &TestImds, got: &Value) {
    assert_eq!(
        got["access_key_id"],
        served_credentials(imds).await["AccessKeyId"]
    );
}

/// The client got exactly the credentials imds serves without a token: it fell back to IMDSv1
/// (whose credentials are a different set, `ec2:RoleDelivery` 1.0).
async fn got_v1_set(imds: &TestImds, got: &Value) {
    let v1 = imds.get(ROLE_V1).await;
    let v1: Value = serde_json::from_slice(&v1.body).unwrap();
    assert_eq!(got["access_key_id"], v1["AccessKeyId"]);
}

const ROLE_V1: &str = "/latest/meta-data/iam/security-credentials/imds-default-role";

#[tokio::test]
#[ignore = "needs the real SDK clients: run scripts/test"]
async fn a_forbidden_token_put_sends_botocore_to_imdsv1_and_stops_the_rust_sdk() {
    let fault = format!("{PUT}status = 403\n");
    let imds = imds_with(&fault).await;
    let got = botocore(&imds, &[]).await.unwrap();
    got_v1_set(&imds, &got).await;
    let refused = botocore(&imds, &[("AWS_EC2_METADATA_V1_DISABLED", "true")])
        .await
        .unwrap_err();
    assert!(refused.contains("botocore failed"), "{refused}");
    let error = rust_sdk(&imds).await.unwrap_err();
    assert!(error.contains("Forbidden"), "{error}");
}

#[tokio::test]
#[ignore = "needs the real SDK clients: run scripts/test"]
async fn one_503_on_the_token_put_the_rust_sdk_retries_and_botocore_falls_back() {
    let fault = format!("{PUT}status = 503\ncount = 1\n");
    let imds = imds_with(&fault).await;
    let got = rust_sdk(&imds).await.unwrap();
    got_v2_set(&imds, &got).await;
    // botocore, with its one attempt, goes on without a token.
    let imds = imds_with(&fault).await;
    let got = botocore(&imds, &[]).await.unwrap();
    got_v1_set(&imds, &got).await;
    let imds = imds_with(&fault).await;
    let v1_disabled = [("AWS_EC2_METADATA_V1_DISABLED", "true")];
    assert!(botocore(&imds, &v1_disabled).await.is_err());
}

#[tokio::test]
#[ignore = "needs the real SDK clients: run scripts/test"]
async fn one_503_on_the_role_the_rust_sdk_recovers_and_botocore_needs_a_second_attempt() {
    let fault = format!("{ROLE}method = \"GET\"\nstatus = 503\ncount = 1\n");
    let imds = imds_with(&fault).await;
    let got = rust_sdk(&imds).await.unwrap();
    got_v2_set(&imds, &got).await;
    let imds = imds_with(&fault).await;
    let failed = botocore(&imds, &[]).await.unwrap_err();
    assert!(failed.contains("no credentials"), "{failed}");
    let imds = imds_with(&fault).await;
    let got = botocore(&imds, &[("AWS_METADATA_SERVICE_NUM_ATTEMPTS", "2")])
        .await
        .unwrap();
    got_v2_set(&imds, &got).await;
}

#[tokio::test]
#[ignore = "needs the real SDK clients: run scripts/test"]
async fn a_token_put_that_never_answers_botocore_falls_back_the_rust_sdk_fails() {
    // What a caller beyond the hop limit sees: the PUT's answer never arrives.
    let fault = format!("{PUT}no_answer = true\n");
    let imds = imds_with(&fault).await;
    let got = botocore(&imds, &[]).await.unwrap();
    got_v1_set(&imds, &got).await;
    let error = rust_sdk(&imds).await.unwrap_err();
    assert!(
        error.to_lowercase().contains("timeout") || error.contains("timed out"),
        "{error}"
    );
}

//! Real, unmodified AWS SDK clients against a running imds, in both token modes: botocore,
//! `@smithy/credential-provider-imds`, `@aws-sdk/ec2-metadata-service` and the `aws-config`
//! crate. The clients are installed by `scripts/install-test-deps` (run by `scripts/test`); these
//! tests are ignored by a plain `cargo test` and fail loudly when a client is missing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use crate::harness::TestImds;

const ROLE_PATH: &str = "/latest/meta-data/iam/security-credentials/imds-default-role";

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn deps() -> PathBuf {
    std::env::var_os("IMDS_CONFORMANCE_DEPS")
        .map_or_else(|| repo().join(".test-deps"), PathBuf::from)
}

fn installed(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps (scripts/test does)",
        path.display()
    );
    path
}

pub fn python() -> PathBuf {
    installed(deps().join("venv/bin/python"))
}

fn node_script(name: &str) -> PathBuf {
    installed(repo().join("tests/conformance/node/node_modules"));
    repo().join("tests/conformance/node").join(name)
}

pub fn rust_client() -> PathBuf {
    installed(repo().join("target/conformance/debug/imds-conformance-rust-sdk"))
}

/// Runs a client against `imds` with a clean AWS environment; returns its JSON, or its stderr.
pub async fn run(
    imds: &TestImds,
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<Value, String> {
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new(program);
    command.args(args).env_clear();
    for keep in ["PATH", "LANG", "SYSTEMROOT"] {
        if let Some(value) = std::env::var_os(keep) {
            command.env(keep, value);
        }
    }
    command
        .env("HOME", home.path())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint())
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("client finished within 60 s")
        .unwrap();
    if output.status.success() {
        let stdout = String::from_utf8_lossy(&output.stdout);
        Ok(serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {stdout}", program.display())))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The credentials imds serves right now, read directly.
pub async fn served_credentials(imds: &TestImds) -> Value {
    let token = imds.token(60).await;
    serde_json::from_slice(&imds.get_with_token(ROLE_PATH, &token).await.body).unwrap()
}

async fn both_modes(check: impl AsyncFn(&TestImds)) {
    check(&TestImds::start().await).await;
    check(&TestImds::setup().required().start().await).await;
}

#[tokio::test]
#[ignore = "needs the real SDK clients: run scripts/test"]
async fn botocore_gets_credentials_and_region() {
    both_modes(async |imds| {
        for v1_disabled in ["false", "true"] {
            let script = repo().join("tests/conformance/python/botocore_client.py");
            let env = [("AWS_EC2_METADATA_V1_DISABLED", v1_disabled)];
            let got = run(imds, &python(), &[script.to_str().unwrap()], &env)
                .await
                .unwrap();
            let served = served_credentials(imds).await;
            assert_eq!(got["method"], "iam-role");
            assert_eq!(got["access_key_id"], served["AccessKeyId"]);
            assert_eq!(got["secret_access_key"], served["SecretAccessKey"]);
            assert_eq!(got["token"], served["Token"]);
            assert_eq!(got["region"], "us-east-1");
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the real SDK clients: run scripts/test"]
async fn smithy_credential_provider_gets_credentials() {
    both_modes(async |imds| {
        let got = run(
            imds,
            Path::new("node"),
            &[node_script("smithy_credentials.mjs").to_str().unwrap()],
            &[],
        )
        .await
        .unwrap();
        let served = served_credentials(imds).await;
        assert_eq!(got["accessKeyId"], served["AccessKeyId"]);
        assert_eq!(got["secretAccessKey"], served["SecretAccessKey"]);
        assert_eq!(got["sessionToken"], served["Token"]);
        let expiration = |v: &Value| {
            time::OffsetDateTime::parse(
                v.as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        };
        assert_eq!(
            expiration(&got["expiration"]),
            expiration(&served["Expiration"])
        );
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the real SDK clients: run scripts/test"]
async fn ec2_metadata_service_reads_any_path() {
    let paths = [
        "/latest/meta-data/instance-id",
        "/latest/meta-data/placement/region",
        "/latest/dynamic/instance-identity/document",
    ];
    both_modes(async |imds| {
        let script = node_script("metadata_service.mjs");
        let mut args = vec![script.to_str().unwrap()];
        args.extend(paths);
        let got = run(imds, Path::new("node"), &args, &[]).await.unwrap();
        for path in paths {
            assert_eq!(
                got[path],
                imds.get_with_token(path, &imds.token(60).await)
                    .await
                    .text(),
                "{path}"
            );
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the real SDK clients: run scripts/test"]
async fn a_token_less_client_works_only_while_tokens_are_optional() {
    let script = node_script("metadata_service.mjs");
    let args = [script.to_str().unwrap(), "/latest/meta-data/instance-id"];
    let v1 = [("IMDS_CONFORMANCE_DISABLE_TOKEN", "true")];
    let optional = TestImds::start().await;
    let got = run(&optional, Path::new("node"), &args, &v1).await.unwrap();
    assert_eq!(got["/latest/meta-data/instance-id"], "i-0b4f7d2c9a1e83f56");
    let required = TestImds::setup().required().start().await;
    let refused = run(&required, Path::new("node"), &args, &v1)
        .await
        .unwrap_err();
    assert!(refused.contains("401"), "{refused}");
}

#[tokio::test]
#[ignore = "needs the real SDK clients: run scripts/test"]
async fn aws_config_crate_gets_metadata_credentials_and_region() {
    both_modes(async |imds| {
        let client = rust_client();
        let got = run(
            imds,
            &client,
            &[
                "get",
                "/latest/meta-data/instance-id",
                "/latest/meta-data/iam/security-credentials/",
            ],
            &[],
        )
        .await
        .unwrap();
        assert_eq!(got["/latest/meta-data/instance-id"], "i-0b4f7d2c9a1e83f56");
        assert_eq!(
            got["/latest/meta-data/iam/security-credentials/"],
            "imds-default-role"
        );
        let credentials = run(imds, &client, &["credentials"], &[]).await.unwrap();
        let served = served_credentials(imds).await;
        assert_eq!(credentials["access_key_id"], served["AccessKeyId"]);
        assert_eq!(credentials["secret_access_key"], served["SecretAccessKey"]);
        assert_eq!(credentials["session_token"], served["Token"]);
        let region = run(imds, &client, &["region"], &[]).await.unwrap();
        assert_eq!(region["region"], "us-east-1");
    })
    .await;
}

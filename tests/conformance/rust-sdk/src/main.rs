//! Runs the unmodified `aws-config` IMDS client and providers against the endpoint in
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT` (read by the SDK itself) and prints one JSON object.
//!
//! `get PATH...` → `{"PATH": value}`; `credentials` → access key, secret, token, expiry (Unix
//! seconds); `region` → `{"region": ...}`. Exits 1 with the SDK's error on stderr.

use std::process::ExitCode;

use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::imds::region::ImdsRegionProvider;
use aws_config::imds::Client;
use aws_credential_types::provider::ProvideCredentials;
use serde_json::{json, Map, Value};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("get") => get(&args[1..]).await,
        Some("credentials") => credentials().await,
        Some("region") => region().await,
        _ => Err("usage: imds-conformance-rust-sdk get PATH... | credentials | region".into()),
    };
    match result {
        Ok(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("aws-config failed: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn get(paths: &[String]) -> Result<Value, String> {
    let client = Client::builder().build();
    let mut out = Map::new();
    for path in paths {
        let value = client.get(path.as_str()).await.map_err(|e| format!("{path}: {e:?}"))?;
        out.insert(path.clone(), Value::String(value.as_ref().to_owned()));
    }
    Ok(Value::Object(out))
}

async fn credentials() -> Result<Value, String> {
    let provider = ImdsCredentialsProvider::builder().build();
    let credentials = provider.provide_credentials().await.map_err(|e| format!("{e:?}"))?;
    let expiry = credentials
        .expiry()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    Ok(json!({
        "access_key_id": credentials.access_key_id(),
        "secret_access_key": credentials.secret_access_key(),
        "session_token": credentials.session_token(),
        "expiry": expiry,
    }))
}

async fn region() -> Result<Value, String> {
    let provider = ImdsRegionProvider::builder().build();
    let region = provider.region().await.ok_or("no region from IMDS")?;
    Ok(json!({ "region": region.as_ref() }))
}

//! Runs the unmodified `aws-config` IMDS client and providers against the endpoint in
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT` (read by the SDK itself) and prints one JSON object.
//!
//! `get PATH...` → `{"PATH": value, ...}`; `credentials` → access key, secret, token and expiry
//! (Unix seconds); `region` → `{"region": ...}`. One attempt, 2 s timeouts (the SDK's defaults
//! with `IMDS_CONFORMANCE_SDK_DEFAULTS=true`); exits 1 with the SDK's error on stderr.

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::imds::region::ImdsRegionProvider;
use aws_config::imds::Client;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::provider::ProvideCredentials;
use serde_json::{json, Map, Value};

const USAGE: &str = "usage: imds-conformance-rust-sdk get PATH... | credentials | region";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("get") if args.len() > 1 => get(&args[1..]).await,
        Some("credentials") => credentials().await,
        Some("region") => region().await,
        _ => Err(USAGE.to_owned()),
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

/// The SDK's defaults (environment, profile files) with its hyper client minus TLS.
fn provider_config() -> ProviderConfig {
    ProviderConfig::default().with_http_client(aws_smithy_http_client::Builder::new().build_http())
}

/// The SDK's IMDS client, endpoint and token handling as configured, failing fast; with
/// `IMDS_CONFORMANCE_SDK_DEFAULTS=true`, with the SDK's own retries and timeouts (for the fault
/// tests).
fn client(config: &ProviderConfig) -> Client {
    let builder = Client::builder().configure(config);
    match std::env::var("IMDS_CONFORMANCE_SDK_DEFAULTS").as_deref() {
        Ok("true") => builder.build(),
        _ => builder
            .max_attempts(1)
            .connect_timeout(Duration::from_secs(2))
            .read_timeout(Duration::from_secs(2))
            .build(),
    }
}

async fn get(paths: &[String]) -> Result<Value, String> {
    let client = client(&provider_config());
    let mut values = Map::new();
    for path in paths {
        let value = client
            .get(path.as_str())
            .await
            .map_err(|e| format!("{path}: {e:?}"))?;
        values.insert(path.clone(), Value::String(value.into()));
    }
    Ok(Value::Object(values))
}

async fn credentials() -> Result<Value, String> {
    let config = provider_config();
    let provider = ImdsCredentialsProvider::builder()
        .configure(&config)
        .imds_client(client(&config))
        .build();
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let expiry = credentials
        .expiry()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    Ok(json!({
        "access_key_id": credentials.access_key_id(),
        "secret_access_key": credentials.secret_access_key(),
        "session_token": credentials.session_token(),
        "expiry": expiry,
    }))
}

async fn region() -> Result<Value, String> {
    let config = provider_config();
    let provider = ImdsRegionProvider::builder()
        .configure(&config)
        .imds_client(client(&config))
        .build();
    // The provider logs and swallows IMDS errors; `get /latest/meta-data/placement/region` shows them.
    let region = provider
        .region()
        .await
        .ok_or("ImdsRegionProvider found no region")?;
    Ok(json!({ "region": region.as_ref() }))
}

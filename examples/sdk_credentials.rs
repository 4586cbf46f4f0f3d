//! The AWS SDK for Rust's IMDS credentials provider against an in-process imds
//! (`imds::testing`), as a test of code that runs on EC2 would use it:
//!
//! ```sh
//! cargo run --example sdk_credentials --features testing
//! ```
//!
//! Prints the access key id of the role credentials the SDK read.

use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::provider::ProvideCredentials;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let imds = imds::testing::Imds::start().await;
    // The SDK's own hyper client, plain HTTP (IMDS has no TLS).
    let config = ProviderConfig::default()
        .with_http_client(aws_smithy_http_client::Builder::new().build_http());
    let client = aws_config::imds::Client::builder()
        .configure(&config)
        .endpoint(imds.endpoint())?
        .build();
    let provider = ImdsCredentialsProvider::builder()
        .configure(&config)
        .imds_client(client)
        .build();
    let credentials = provider.provide_credentials().await?;
    println!("{}", credentials.access_key_id());
    Ok(())
}

//! `imds::testing` as a Rust test uses it: the AWS SDK's IMDS providers against `Imds::start()`,
//! changes made through the handle seen by guests, and the ports freed by dropping it.

use std::net::SocketAddr;
use std::time::Duration;

use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::imds::region::ImdsRegionProvider;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::provider::ProvideCredentials;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use imds::testing::{Fault, HttpTokens, Imds, Options, SpotAction};
use tokio::net::{TcpListener, TcpStream};

/// The SDK's IMDS client for `imds`, over its own plain-HTTP hyper client, with the SDK's
/// retries.
fn sdk(imds: &Imds) -> (ProviderConfig, aws_config::imds::Client) {
    let config = ProviderConfig::default()
        .with_http_client(aws_smithy_http_client::Builder::new().build_http());
    let client = aws_config::imds::Client::builder()
        .configure(&config)
        .endpoint(imds.endpoint())
        .unwrap()
        .build();
    (config, client)
}

async fn credentials(imds: &Imds) -> aws_credential_types::Credentials {
    let (config, client) = sdk(imds);
    ImdsCredentialsProvider::builder()
        .configure(&config)
        .imds_client(client)
        .build()
        .provide_credentials()
        .await
        .expect("the SDK gets credentials")
}

/// A plain GET on a new connection, without a token: the status and the body.
async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn the_sdk_gets_role_credentials_and_the_region_from_imds_start() {
    let imds = Imds::start().await;
    let credentials = credentials(&imds).await;
    assert!(
        credentials.access_key_id().starts_with("ASIA"),
        "{}",
        credentials.access_key_id()
    );
    assert!(credentials.session_token().is_some());
    let (config, client) = sdk(&imds);
    let region = ImdsRegionProvider::builder()
        .configure(&config)
        .imds_client(client)
        .build()
        .region()
        .await;
    assert_eq!(region.as_ref().map(|r| r.as_ref()), Some("us-east-1"));
}

#[tokio::test]
async fn requiring_tokens_through_set_options_makes_a_token_less_get_401() {
    let imds = Imds::start().await;
    let path = "/latest/meta-data/instance-id";
    assert_eq!(
        get(imds.addr(), path).await,
        (StatusCode::OK, imds.instance_id().to_owned())
    );
    imds.set_options(Options {
        http_tokens: Some(HttpTokens::Required),
        ..Options::default()
    })
    .await
    .unwrap();
    assert_eq!(get(imds.addr(), path).await.0, StatusCode::UNAUTHORIZED);
    // The SDK's IMDSv2 client still gets in.
    credentials(&imds).await;
}

#[tokio::test]
async fn a_spot_interruption_appears_in_the_metadata() {
    let imds = Imds::start().await;
    let path = "/latest/meta-data/spot/instance-action";
    assert_eq!(get(imds.addr(), path).await.0, StatusCode::NOT_FOUND);
    imds.spot_interrupt(SpotAction::Terminate, Duration::from_secs(120))
        .await
        .unwrap();
    let (status, body) = get(imds.addr(), path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#""action": "terminate""#), "{body}");
    let (status, _) = get(
        imds.addr(),
        "/latest/meta-data/events/recommendations/rebalance",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_sdk_retries_past_a_503_on_the_role_path_and_still_gets_credentials() {
    let imds = Imds::start().await;
    imds.add_fault(Fault::status("/latest/meta-data/iam/security-credentials/*", 503).times(1))
        .await
        .unwrap();
    credentials(&imds).await;
    let xml = imds.control("DescribeFaults", &[]).await.unwrap();
    assert!(xml.contains("<fired>1</fired>"), "{xml}");
}

#[tokio::test]
async fn the_builder_shapes_the_instance_and_an_invalid_change_is_ec2s_error() {
    let imds = Imds::builder()
        .user_data("#!/bin/sh\necho hi\n")
        .tag("Name", "web")
        .role("web-role")
        .config_toml("[instance.metadata_options]\ninstance_metadata_tags = \"enabled\"")
        .start()
        .await
        .unwrap();
    let addr = imds.addr();
    assert_eq!(
        get(addr, "/latest/user-data").await.1,
        "#!/bin/sh\necho hi\n"
    );
    assert_eq!(
        get(addr, "/latest/meta-data/tags/instance/Name").await.1,
        "web"
    );
    assert_eq!(
        get(addr, "/latest/meta-data/iam/security-credentials/")
            .await
            .1,
        "web-role"
    );
    imds.tag("Team", "payments").await.unwrap();
    assert_eq!(
        get(addr, "/latest/meta-data/tags/instance/Team").await.1,
        "payments"
    );
    let error = imds
        .spot_interrupt(SpotAction::Stop, Duration::from_secs(1))
        .await
        .unwrap_err();
    let imds::testing::Error::Ec2 { code, message } = error else {
        panic!("{error}")
    };
    assert_eq!(code, "InvalidParameterValue");
    assert!(message.contains("PT2M"), "{message}");
}

#[tokio::test]
async fn an_instance_without_a_role_has_no_credentials() {
    let imds = Imds::builder().no_role().required().start().await.unwrap();
    assert_eq!(
        get(imds.addr(), "/latest/meta-data/").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (config, client) = sdk(&imds);
    let provider = ImdsCredentialsProvider::builder()
        .configure(&config)
        .imds_client(client)
        .build();
    assert!(provider.provide_credentials().await.is_err());
}

#[tokio::test]
async fn a_fleet_launches_instances_with_run_instance() {
    let imds = Imds::builder().fleet(true).start().await.unwrap();
    assert_eq!(
        get(imds.addr(), "/latest/meta-data/instance-id").await.1,
        imds.instance_id()
    );
    let id = imds.run_instance(&[]).await.unwrap();
    assert!(id.starts_with("i-") && id != imds.instance_id(), "{id}");
    let xml = imds.control("DescribeInstances", &[]).await.unwrap();
    assert!(xml.contains(&id), "{xml}");
    let single = Imds::start().await;
    let error = single.run_instance(&[]).await.unwrap_err();
    assert!(error.to_string().contains("fleet"), "{error}");
}

#[tokio::test]
async fn dropping_the_handle_frees_both_ports() {
    let imds = Imds::start().await;
    let guest = imds.addr();
    let control: SocketAddr = imds
        .control_endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    assert_eq!(get(guest, "/latest/meta-data/").await.0, StatusCode::OK);
    assert_eq!(get(control, "/healthz").await.0, StatusCode::OK);
    drop(imds);
    for addr in [guest, control] {
        let mut freed = false;
        for _ in 0..200 {
            if TcpListener::bind(addr).await.is_ok() {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(freed, "{addr} is still taken");
    }
}

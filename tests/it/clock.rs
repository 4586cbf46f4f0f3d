//! Time-dependent answers with an injected clock, through the guest API's request handler.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use imds::app::config::{Config, Overrides};
use imds::clock::ManualClock;
use imds::fleet::secret::ServerSecret;
use imds::App;

use crate::harness::keys_with;

const PEER: &str = "10.0.21.74:40000";
const LAUNCH_MILLIS: u64 = 1_793_607_269_000; // 2026-11-02T08:14:29Z, the default pending_time

fn app(clock: Arc<ManualClock>, toml: &str) -> App {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.toml");
    std::fs::write(&path, toml).unwrap();
    let loaded = Config::load(Some(&path))
        .unwrap()
        .resolve(&Overrides::default(), Some(&path))
        .unwrap();
    App::new(
        loaded,
        &keys_with(ServerSecret::random()),
        clock,
        Default::default(),
        None,
    )
    .expect("the test fleet has one owner per address")
}

async fn call(
    app: &App,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app.api.handle(
        &request.body(()).unwrap(),
        PEER.parse::<SocketAddr>().unwrap(),
    );
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn tokens_expire_after_their_ttl() {
    let clock = Arc::new(ManualClock::at_millis(LAUNCH_MILLIS + 1000));
    let app = app(clock.clone(), "");
    let (status, _, token) = call(
        &app,
        "PUT",
        "/latest/api/token",
        &[("x-aws-ec2-metadata-token-ttl-seconds", "2")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let headers = [("x-aws-ec2-metadata-token", token.as_str())];
    let get = || call(&app, "GET", "/latest/meta-data/instance-id", &headers);
    let (status, headers, _) = get().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-aws-ec2-metadata-token-ttl-seconds"], "2");
    clock.advance(Duration::from_millis(1500));
    let (_, headers, _) = get().await;
    assert_eq!(headers["x-aws-ec2-metadata-token-ttl-seconds"], "1");
    clock.advance(Duration::from_millis(500));
    assert_eq!(get().await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn role_credentials_rotate_before_the_old_ones_run_low() {
    let clock = Arc::new(ManualClock::at_millis(LAUNCH_MILLIS));
    let app = app(
        clock.clone(),
        "[instance.iam]\nrole = \"short\"\ncredential_lifetime_seconds = 900\n",
    );
    let path = "/latest/meta-data/iam/security-credentials/short";
    let parse = |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap();
    let mut previous = parse(&call(&app, "GET", path, &[]).await.2);
    let mut rotations = 0;
    for _ in 0..60 {
        clock.advance(Duration::from_secs(60));
        let now = time::OffsetDateTime::from_unix_timestamp(
            (imds::clock::Clock::now_millis(&*clock) / 1000) as i64,
        )
        .unwrap();
        let (status, headers, body) = call(&app, "GET", path, &[]).await;
        assert_eq!(status, StatusCode::OK);
        let current = parse(&body);
        let expires = time::OffsetDateTime::parse(
            current["Expiration"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(
            expires - now >= time::Duration::minutes(5),
            "served credentials with under 5 minutes left"
        );
        if current["AccessKeyId"] != previous["AccessKeyId"] {
            rotations += 1;
            assert_ne!(current["LastUpdated"], previous["LastUpdated"]);
            let old_expiry = time::OffsetDateTime::parse(
                previous["Expiration"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            assert!(
                old_expiry - now >= time::Duration::minutes(5),
                "rotated too late"
            );
            let last_modified =
                httpdate::parse_http_date(headers["last-modified"].to_str().unwrap()).unwrap();
            let last_updated = time::OffsetDateTime::parse(
                current["LastUpdated"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            assert_eq!(time::OffsetDateTime::from(last_modified), last_updated);
        }
        previous = current;
    }
    assert_eq!(rotations, 8, "one new set every 7.5 minutes over an hour");
}

#[tokio::test]
async fn v1_and_v2_callers_get_separate_role_credentials_that_rotate_independently() {
    let clock = Arc::new(ManualClock::at_millis(LAUNCH_MILLIS));
    let app = app(clock.clone(), "");
    let (_, _, token) = call(
        &app,
        "PUT",
        "/latest/api/token",
        &[("x-aws-ec2-metadata-token-ttl-seconds", "21600")],
    )
    .await;
    let role = "/latest/meta-data/iam/security-credentials/imds-default-role";
    let extended = "/latest/meta-data/iam/security-credentials-extended/imds-default-role";
    let key_id = |body: String| -> String {
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        value["AccessKeyId"].as_str().unwrap().to_owned()
    };
    let with_token = [("x-aws-ec2-metadata-token", token.as_str())];
    let v1 = || async { key_id(call(&app, "GET", role, &[]).await.2) };
    let v2 = || async { key_id(call(&app, "GET", role, &with_token).await.2) };
    let (first_v1, first_v2) = (v1().await, v2().await);
    assert_ne!(
        first_v1, first_v2,
        "ec2:RoleDelivery 1.0 and 2.0 sets differ"
    );
    assert_eq!(key_id(call(&app, "GET", extended, &[]).await.2), first_v1);
    assert_eq!(
        key_id(call(&app, "GET", extended, &with_token).await.2),
        first_v2
    );

    clock.advance(Duration::from_secs(90 * 60));
    assert_ne!(v1().await, first_v1, "the v1 set rotated at +1.5 h");
    assert_eq!(v2().await, first_v2, "the v2 set did not");
    let second_v1 = v1().await;
    clock.advance(Duration::from_secs(90 * 60));
    assert_ne!(v2().await, first_v2, "the v2 set rotated at +3 h");
    assert_eq!(v1().await, second_v1, "the v1 set did not");
}

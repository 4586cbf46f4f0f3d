//! IMDSv2 as clients use it: the token PUT and its refusals, token-carrying GETs, and the
//! `HttpTokens` / `HttpEndpoint` options.

use http::{Method, StatusCode};
use imds::fleet::secret::ServerSecret;

use crate::harness::TestImds;

#[tokio::test]
async fn token_put_answers_a_56_character_token_and_echoes_the_ttl() {
    let imds = TestImds::start().await;
    let answer = imds.put_token("21600").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text().len(), 56);
    assert!(answer.text().ends_with("=="));
    assert!(!answer.text().contains('\n'));
    assert_eq!(
        answer.header("x-aws-ec2-metadata-token-ttl-seconds"),
        Some("21600")
    );
    assert_eq!(answer.header("content-type"), Some("text/plain"));
    // As recorded from real IMDS: no Accept-Ranges or Last-Modified on the PUT answer.
    assert_eq!(
        answer.header_names(),
        [
            "connection",
            "content-length",
            "content-type",
            "date",
            "server",
            "x-aws-ec2-metadata-token-ttl-seconds"
        ]
    );
}

#[tokio::test]
async fn token_put_with_a_bad_ttl_is_a_400() {
    let imds = TestImds::start().await;
    for ttl in ["", "0", "21601", "-1", "abc", "1.5", "99999999999"] {
        let answer = imds.put_token(ttl).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "ttl {ttl:?}");
        assert!(answer.body.is_empty());
    }
    let missing = imds.send(Method::PUT, "/latest/api/token", &[]).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(imds.put_token("1").await.status, StatusCode::OK);
}

#[tokio::test]
async fn token_put_with_x_forwarded_for_is_refused() {
    let imds = TestImds::start().await;
    let answer = imds
        .send(
            Method::PUT,
            "/latest/api/token",
            &[
                ("x-aws-ec2-metadata-token-ttl-seconds", "60"),
                ("X-Forwarded-For", "203.0.113.9"),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(answer.body.is_empty());
}

#[tokio::test]
async fn token_put_on_any_other_path_is_refused() {
    let imds = TestImds::start().await;
    for path in [
        "/2021-03-23/api/token",
        "/latest/api/token/",
        "/latest/meta-data/",
        "/",
    ] {
        let answer = imds
            .send(
                Method::PUT,
                path,
                &[("x-aws-ec2-metadata-token-ttl-seconds", "60")],
            )
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}");
    }
}

#[tokio::test]
async fn token_gets_carry_the_remaining_ttl_and_v1_gets_do_not() {
    let imds = TestImds::start().await;
    let token = imds.token(120).await;
    let with = imds
        .get_with_token("/latest/meta-data/instance-id", &token)
        .await;
    let left: u32 = with
        .header("x-aws-ec2-metadata-token-ttl-seconds")
        .unwrap()
        .parse()
        .unwrap();
    assert!((119..=120).contains(&left), "{left}");
    let missing = imds.get_with_token("/latest/meta-data/none", &token).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing
        .header("x-aws-ec2-metadata-token-ttl-seconds")
        .is_some());
    let without = imds.get("/latest/meta-data/instance-id").await;
    assert_eq!(without.header("x-aws-ec2-metadata-token-ttl-seconds"), None);
}

#[tokio::test]
async fn an_invalid_token_is_a_401_even_when_tokens_are_optional() {
    let imds = TestImds::start().await;
    let token = imds.token(60).await;
    let mut tampered = token.clone().into_bytes();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in [
        "",
        "not-a-token",
        "AQAEAKQRRHnsX8GCPgYTGMShrFJkMhru3n-8Ul5Gzvzj-bpWKYZuiw==",
        tampered.as_str(),
    ] {
        let answer = imds
            .get_with_token("/latest/meta-data/instance-id", bad)
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{bad:?}");
        assert!(answer.body.is_empty());
    }
}

#[tokio::test]
async fn tokens_from_another_key_are_refused_and_a_shared_key_is_accepted() {
    let key = b"a key file shared by two replicas of imds".to_vec();
    let first = TestImds::setup()
        .secret(ServerSecret::from_bytes(&key))
        .start()
        .await;
    let second = TestImds::setup()
        .secret(ServerSecret::from_bytes(&key))
        .start()
        .await;
    let stranger = TestImds::start().await;
    let token = first.token(60).await;
    assert_eq!(
        second
            .get_with_token("/latest/meta-data/instance-id", &token)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        stranger
            .get_with_token("/latest/meta-data/instance-id", &token)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_token_is_valid_only_on_the_instance_that_issued_it() {
    let key = b"one key, two different instances behind it".to_vec();
    let first = TestImds::setup()
        .secret(ServerSecret::from_bytes(&key))
        .start()
        .await;
    let other = TestImds::setup()
        .secret(ServerSecret::from_bytes(&key))
        .toml("[instance]\ninstance_id = \"i-0123456789abcdef0\"\n")
        .start()
        .await;
    let token = first.token(60).await;
    assert_eq!(
        other
            .get_with_token("/latest/meta-data/instance-id", &token)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn required_tokens_refuse_every_token_less_get() {
    let imds = TestImds::setup().required().start().await;
    for path in [
        "/",
        "/latest/",
        "/latest/meta-data/instance-id",
        "/latest/user-data",
        "/latest/nothing",
    ] {
        let answer = imds.get(path).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(answer.body.is_empty());
    }
    let token = imds.token(60).await;
    assert_eq!(
        imds.get_with_token("/latest/meta-data/instance-id", &token)
            .await
            .text(),
        "i-0b4f7d2c9a1e83f56"
    );
    assert_eq!(
        imds.get_with_token("/", &token).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_disabled_endpoint_refuses_everything() {
    let imds = TestImds::setup()
        .toml("[instance.metadata_options]\nhttp_endpoint = \"disabled\"\n")
        .start()
        .await;
    assert_eq!(
        imds.get("/latest/meta-data/").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(imds.put_token("60").await.status, StatusCode::FORBIDDEN);
    assert_eq!(imds.get("/").await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn two_token_headers_are_refused_even_when_one_is_valid() {
    let imds = TestImds::start().await;
    let token = imds.token(60).await;
    let path = "/latest/meta-data/instance-id";
    for pair in [
        [token.as_str(), "forged"],
        ["forged", token.as_str()],
        [token.as_str(), token.as_str()],
    ] {
        let answer = imds
            .send(
                Method::GET,
                path,
                &[
                    ("x-aws-ec2-metadata-token", pair[0]),
                    ("x-aws-ec2-metadata-token", pair[1]),
                ],
            )
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{pair:?}");
        assert!(answer.body.is_empty());
    }
    assert_eq!(
        imds.get_with_token(path, &token).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn each_refused_token_is_counted_by_its_reason_and_version() {
    use imds::clock::{Clock, ManualClock};
    use imds::fleet::token::{TokenSealer, TokenTtl};
    use imds::server::Surface;
    use std::sync::Arc;

    let clock = Arc::new(ManualClock::at_millis(1_800_000_000_000));
    let imds = TestImds::setup()
        .required()
        .clock(clock.clone())
        .start()
        .await;
    let path = "/latest/meta-data/instance-id";
    let token = imds.token(60).await;
    let mut altered = token.clone().into_bytes();
    altered[10] = if altered[10] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let foreign = TokenSealer::new(&imds.keys.secret).issue(
        "i-0123456789abcdef0",
        clock.now_millis(),
        TokenTtl::parse(b"60").unwrap(),
    );
    assert_eq!(imds.get_with_token(path, "forged").await.status, 401);
    assert_eq!(imds.get_with_token(path, &altered).await.status, 401);
    assert_eq!(imds.get_with_token(path, &foreign).await.status, 401);
    assert_eq!(imds.get(path).await.status, 401);
    clock.advance(std::time::Duration::from_secs(60));
    assert_eq!(imds.get_with_token(path, &token).await.status, 401);
    let text = imds.api.metrics().render(&imds.state.instances());
    for line in [
        "imds_tokens_rejected_total{version=\"v2\",reason=\"malformed\"} 1",
        "imds_tokens_rejected_total{version=\"v2\",reason=\"bad_seal\"} 1",
        "imds_tokens_rejected_total{version=\"v2\",reason=\"wrong_instance\"} 1",
        "imds_tokens_rejected_total{version=\"v2\",reason=\"expired\"} 1",
        "imds_tokens_rejected_total{version=\"v1\",reason=\"missing\"} 1",
        "imds_tokens_rejected_total{version=\"v2\",reason=\"ambiguous\"} 0",
        // The access log and imds_requests_total count the same requests under the same versions.
        "imds_requests_total{surface=\"guest\",version=\"v2\",route=\"meta_data\",status=\"401\"} 4",
        "imds_requests_total{surface=\"guest\",version=\"v1\",route=\"meta_data\",status=\"401\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
}

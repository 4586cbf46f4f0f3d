//! `RotateKeys` and the rotation schedule, with the injected clock: new tokens are sealed with
//! the newest key generation, and a token of an older one stays valid until every token it can
//! have sealed has expired (6 hours after its successor appeared, plus 5 minutes for clocks).

use std::time::Duration;

use base64::Engine;
use http::{Method, StatusCode};

use super::{assert_ok, guest, text, token, Fixture};

/// The key generation that sealed `token` (its 18th byte).
fn generation(token: &str) -> u8 {
    base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .unwrap()[17]
}

async fn signature(fixture: &Fixture) -> String {
    let path = "/latest/dynamic/instance-identity/signature";
    guest(&fixture.app, Method::GET, path, &[]).await.1
}

async fn read_with(fixture: &Fixture, token: &str) -> StatusCode {
    guest(
        &fixture.app,
        Method::GET,
        "/latest/meta-data/instance-id",
        &[("x-aws-ec2-metadata-token", token)],
    )
    .await
    .0
}

#[tokio::test]
async fn rotate_keys_seals_new_tokens_with_a_new_generation_and_keeps_old_ones_valid() {
    let fixture = Fixture::new("");
    let old = token(&fixture.app).await;
    assert_eq!(generation(&old), 0);
    let answer = fixture.query("Action=RotateKeys").await;
    let xml = assert_ok(&answer, "RotateKeysResponse");
    assert_eq!(text(xml, "tokenKeyGeneration"), "1");
    assert!(!xml.contains("signingKeyGeneration"));
    let new = token(&fixture.app).await;
    assert_eq!(generation(&new), 1);
    assert_eq!(read_with(&fixture, &new).await, StatusCode::OK);
    // The old token lives out its six hours...
    fixture.advance(Duration::from_secs(21_599));
    assert_eq!(read_with(&fixture, &old).await, StatusCode::OK);
    // ...and its generation is retired once no token of it can be alive.
    fixture.advance(Duration::from_secs(301));
    assert_eq!(read_with(&fixture, &old).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_schedule_rotates_every_period_and_never_refuses_a_live_token() {
    let fixture = Fixture::new("");
    let control = fixture.app.control.clone();
    tokio::spawn(control.rotate_on_schedule(Duration::from_secs(3600)));
    tokio::task::yield_now().await;
    let first = token(&fixture.app).await;
    assert_eq!(generation(&first), 0);
    let mut live = vec![first];
    for hour in 1..=8u8 {
        fixture.advance(Duration::from_secs(3600));
        // The schedule wakes on the clock's advance and takes the account lock.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        let fresh = token(&fixture.app).await;
        assert_eq!(generation(&fresh), hour, "hour {hour}");
        live.push(fresh);
        // Every token issued in the last six hours is still accepted.
        for issued in live.iter().rev().take(6) {
            assert_eq!(
                read_with(&fixture, issued).await,
                StatusCode::OK,
                "hour {hour}"
            );
        }
    }
}

#[tokio::test]
async fn rotate_keys_with_signing_key_signs_every_document_again() {
    let fixture = Fixture::new("");
    let before = signature(&fixture).await;
    let answer = fixture.query("Action=RotateKeys&SigningKey=true").await;
    let xml = assert_ok(&answer, "RotateKeysResponse");
    assert_eq!(text(xml, "signingKeyGeneration"), "1");
    let after = signature(&fixture).await;
    assert_ne!(before, after, "the document is signed with the new key");
    let answer = fixture.query("Action=RotateKeys&SigningKey=maybe").await;
    super::assert_error(&answer, StatusCode::BAD_REQUEST, "InvalidParameterValue");
    assert_eq!(
        generation(&token(&fixture.app).await),
        1,
        "a refused request rotates nothing"
    );
}

#[tokio::test]
async fn rotations_that_would_make_two_accepted_generations_share_a_byte_are_refused() {
    let fixture = Fixture::new("");
    let first = token(&fixture.app).await;
    for number in 1..=255 {
        let answer = fixture.query("Action=RotateKeys").await;
        let xml = assert_ok(&answer, "RotateKeysResponse");
        assert_eq!(text(xml, "tokenKeyGeneration"), number.to_string());
    }
    // Generation 0 is still accepted: 256 would be read as it.
    let (status, refused) = fixture.query("Action=RotateKeys").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(refused.contains("Too many rotations"), "{refused}");
    assert_eq!(read_with(&fixture, &first).await, StatusCode::OK);
    // Once generation 0 is retired, the next rotation goes through, and tokens of the
    // generations still accepted keep working.
    fixture.advance(Duration::from_secs(21_600 + 301));
    let newest = token(&fixture.app).await;
    assert_eq!(generation(&newest), 255);
    let answer = fixture.query("Action=RotateKeys").await;
    let xml = assert_ok(&answer, "RotateKeysResponse");
    assert_eq!(text(xml, "tokenKeyGeneration"), "256");
    let wrapped = token(&fixture.app).await;
    assert_eq!(generation(&wrapped), 0);
    assert_eq!(read_with(&fixture, &wrapped).await, StatusCode::OK);
    assert_eq!(read_with(&fixture, &newest).await, StatusCode::OK);
    assert_eq!(read_with(&fixture, &first).await, StatusCode::UNAUTHORIZED);
}

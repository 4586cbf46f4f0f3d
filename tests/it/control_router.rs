//! Every control API action driven in-process through `ControlApi::handle`, with an injected
//! clock: the EC2 Query request as the AWS CLI and boto3 send it, the XML they read back (element
//! names as in botocore's EC2 model), EC2's error codes, and what the guest API then answers
//! (through `GuestApi::handle`, faults decided as the guest listener does).

mod automation;
mod console;
mod defaults;
mod events;
mod faults;
mod guardrails;
mod iam;
mod instance_status;
mod instances;
mod maintenance;
mod rotation;
mod tags;
mod template_launches;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use imds::app::config::{Config, Overrides};
use imds::clock::{Clock, ManualClock};
use imds::fleet::faults::Effect;
use imds::fleet::secret::ServerSecret;
use imds::App;

use crate::harness::keys_with;

/// 2026-11-02T08:14:29Z, the default instance's launch.
pub const START: u64 = 1_793_607_269_000;
/// The default instance.
pub const INSTANCE: &str = "i-0b4f7d2c9a1e83f56";
/// A well-formed id of an instance imds does not serve.
pub const OTHER_INSTANCE: &str = "i-0123456789abcdef0";
/// The guest that asks.
pub const PEER: &str = "10.0.21.74:40000";

/// An app on the built-in default instance with `toml` over it, and the clock it reads.
pub struct Fixture {
    pub app: App,
    pub clock: Arc<ManualClock>,
}

impl Fixture {
    pub fn new(toml: &str) -> Fixture {
        let clock = Arc::new(ManualClock::at_millis(START));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("instance.toml");
        std::fs::write(&path, toml).unwrap();
        let loaded = Config::load(Some(&path))
            .unwrap()
            .resolve(&Overrides::default(), Some(&path))
            .unwrap();
        let app = App::new(
            loaded,
            &keys_with(ServerSecret::random()),
            clock.clone(),
            Default::default(),
            None,
        )
        .expect("the test fleet has one owner per address");
        Fixture { app, clock }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Clock milliseconds now.
    pub fn now(&self) -> u64 {
        self.clock.now_millis()
    }

    /// An EC2 Query request (`Action=...&...`, `Version` added) POSTed to the control API.
    pub async fn query(&self, params: &str) -> (StatusCode, String) {
        query(&self.app, params).await
    }

    /// A `GET` of `path` from the guest at [`PEER`].
    pub async fn guest(&self, path: &str) -> (StatusCode, String) {
        guest(&self.app, Method::GET, path, &[]).await
    }
}

/// Sends `params` (with `Version=2016-11-15`) as a form-encoded POST to the control API: the
/// status and the XML answer.
pub async fn query(app: &App, params: &str) -> (StatusCode, String) {
    let request = Request::post("/")
        .header(header::HOST, "127.0.0.1:8770")
        .header(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(Full::new(Bytes::from(format!(
            "{params}&Version=2016-11-15"
        ))))
        .unwrap();
    control(app, request).await
}

/// Any request to the control API: the status and the body.
pub async fn control(app: &App, request: Request<Full<Bytes>>) -> (StatusCode, String) {
    let response = app.control.handle(request).await;
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// A guest request from [`PEER`], answered as the guest listener answers it: an injected
/// fault's status instead of the answer when one fires (a reset or silence fails the test).
pub async fn guest(
    app: &App,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(()).unwrap();
    let peer: SocketAddr = PEER.parse().unwrap();
    let slot = app
        .api
        .instance_for(peer)
        .expect("one instance answers everyone");
    let response = match app.api.fault(&slot, &request, peer).map(|f| f.effect) {
        None | Some(Effect::Answer) => app.api.handle(&request, peer),
        Some(Effect::Status(status)) => app.api.injected_status(status),
        Some(effect) => panic!("{path}: no answer ({effect:?})"),
    };
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// A fresh IMDSv2 token from the guest API.
pub async fn token(app: &App) -> String {
    let (status, token) = guest(
        app,
        Method::PUT,
        "/latest/api/token",
        &[("x-aws-ec2-metadata-token-ttl-seconds", "21600")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "token PUT");
    token
}

/// The text of the first `<tag>` element.
pub fn element<'x>(xml: &'x str, tag: &str) -> Option<&'x str> {
    elements(xml, tag).into_iter().next()
}

/// The text of every `<tag>` element without elements inside, in order.
pub fn elements<'x>(xml: &'x str, tag: &str) -> Vec<&'x str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        found.push(&rest[..end]);
        rest = &rest[end + close.len()..];
    }
    found
}

/// The text of the first `<tag>`, which must be there.
pub fn text<'x>(xml: &'x str, tag: &str) -> &'x str {
    element(xml, tag).unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
}

/// Asserts an EC2 error answer: `status`, `<Errors><Error><Code>code`; its message.
#[track_caller]
pub fn assert_error(answer: &(StatusCode, String), status: StatusCode, code: &str) -> String {
    let (got, xml) = answer;
    assert_eq!(*got, status, "{xml}");
    assert!(xml.contains("<Response><Errors><Error>"), "{xml}");
    assert_eq!(element(xml, "Code"), Some(code), "{xml}");
    assert!(element(xml, "RequestID").is_some(), "{xml}");
    text(xml, "Message").to_owned()
}

/// Asserts a successful answer whose root is `<{root} xmlns=EC2's>` with a `requestId`.
#[track_caller]
pub fn assert_ok<'x>(answer: &'x (StatusCode, String), root: &str) -> &'x str {
    let (status, xml) = answer;
    assert_eq!(*status, StatusCode::OK, "{xml}");
    assert!(
        xml.contains(&format!(
            "<{root} xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>"
        )),
        "{xml}"
    );
    assert!(xml.ends_with(&format!("</{root}>")), "{xml}");
    xml
}

/// `2026-11-02T08:14:29Z` for clock milliseconds.
pub fn iso(millis: u64) -> String {
    imds::fleet::events::rfc3339(imds::fleet::events::datetime(millis))
}

#[tokio::test]
async fn healthz_answers_ok() {
    let f = Fixture::new("");
    let request = Request::get("/healthz").body(Full::default()).unwrap();
    assert_eq!(
        control(&f.app, request).await,
        (StatusCode::OK, "ok\n".to_owned())
    );
}

#[tokio::test]
async fn metrics_count_each_action_by_outcome_and_unknown_actions_under_one_label() {
    let f = Fixture::new("");
    f.query("Action=DescribeInstances").await;
    f.query("Action=DescribeInstances").await;
    f.query("Action=CreateTags&ResourceId.1=i-0b4f7d2c9a1e83f56")
        .await;
    f.query("Action=AttachVolume").await;
    f.query("Action=DetachVolume").await;
    let request = Request::get("/metrics")
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = f.app.control.handle(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/plain; version=0.0.4"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    for line in [
        "imds_control_requests_total{action=\"DescribeInstances\",outcome=\"ok\"} 2",
        "imds_control_requests_total{action=\"CreateTags\",outcome=\"MissingParameter\"} 1",
        "imds_control_requests_total{action=\"(invalid)\",outcome=\"InvalidAction\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
    assert!(
        !text.contains("AttachVolume") && !text.contains("DetachVolume"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unknown_action_is_invalid_action_and_none_is_a_missing_parameter() {
    let f = Fixture::new("");
    let message = assert_error(
        &f.query("Action=AttachVolume").await,
        StatusCode::BAD_REQUEST,
        "InvalidAction",
    );
    assert!(message.contains("AttachVolume"), "{message}");
    let message = assert_error(
        &f.query("DryRun=false").await,
        StatusCode::BAD_REQUEST,
        "MissingParameter",
    );
    assert!(message.contains("Action"), "{message}");
}

#[tokio::test]
async fn a_query_string_on_a_get_works_like_a_form_body_and_other_methods_are_refused() {
    let f = Fixture::new("");
    let request = Request::get(format!(
        "/?Action=DescribeInstances&Version=2016-11-15&InstanceId.1={INSTANCE}"
    ))
    .body(Full::default())
    .unwrap();
    let answer = control(&f.app, request).await;
    assert_eq!(
        text(
            assert_ok(&answer, "DescribeInstancesResponse"),
            "instanceId"
        ),
        INSTANCE
    );
    let request = Request::put("/")
        .body(Full::new(Bytes::from("Action=DescribeInstances")))
        .unwrap();
    assert_error(
        &control(&f.app, request).await,
        StatusCode::BAD_REQUEST,
        "UnsupportedOperation",
    );
}

const KEY_ID: &str = "AKIAIMDSCONTROLTEST1";
const SECRET: &str = "imds-control-test-secret-key-0123456789ab";

/// An instance whose control requests must be signed with [`KEY_ID`] and [`SECRET`].
fn signed_fixture() -> Fixture {
    Fixture::new(&format!(
        "[control]\naccess_key_id = \"{KEY_ID}\"\nsecret_access_key = \"{SECRET}\"\n"
    ))
}

/// A form POST of `body` signed with SigV4 for EC2 (as the AWS CLI signs) at `at` with `secret`.
fn signed(body: &str, at: SystemTime, secret: &str) -> Request<Full<Bytes>> {
    let request = Request::post("/").header(
        header::CONTENT_TYPE,
        "application/x-www-form-urlencoded; charset=utf-8",
    );
    signed_request(request, "/", body, at, secret)
}

/// `request` to `uri` with `body`, signed with SigV4 for EC2 at `at` with `secret`.
fn signed_request(
    request: http::request::Builder,
    uri: &str,
    body: &str,
    at: SystemTime,
    secret: &str,
) -> Request<Full<Bytes>> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let mut request = request
        .uri(uri)
        .header(header::HOST, "127.0.0.1:8770")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let identity =
        aws_credential_types::Credentials::new(KEY_ID, secret, None, None, "test").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("ec2")
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str(), value.to_str().unwrap()));
    let method = request.method().as_str().to_owned();
    let signable =
        SignableRequest::new(&method, uri, headers, SignableBody::Bytes(body.as_bytes())).unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    instructions.apply_to_request_http1x(&mut request);
    request
}

/// The clock's time as a `SystemTime`, moved by `offset_seconds`.
fn clock_time(f: &Fixture, offset_seconds: i64) -> SystemTime {
    let millis = f.now() as i64 + offset_seconds * 1000;
    UNIX_EPOCH + Duration::from_millis(millis as u64)
}

const DESCRIBE: &str = "Action=DescribeInstances&Version=2016-11-15";

#[tokio::test]
async fn with_control_keys_an_unsigned_request_is_refused_with_auth_failure() {
    let f = signed_fixture();
    let message = assert_error(
        &f.query("Action=DescribeInstances").await,
        StatusCode::UNAUTHORIZED,
        "AuthFailure",
    );
    assert!(message.contains("credentials"), "{message}");
    let wrong_secret = signed(DESCRIBE, clock_time(&f, 0), "not-the-secret");
    assert_error(
        &control(&f.app, wrong_secret).await,
        StatusCode::UNAUTHORIZED,
        "AuthFailure",
    );
    // Health and metrics stay open.
    let health = Request::get("/healthz").body(Full::default()).unwrap();
    assert_eq!(control(&f.app, health).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_request_signed_at_the_clock_time_passes_and_one_signed_20_minutes_earlier_does_not() {
    let f = signed_fixture();
    // The clock is far from the wall clock: the signature's time is checked against it.
    f.advance(Duration::from_secs(400 * 24 * 3600));
    let now = signed(DESCRIBE, clock_time(&f, 0), SECRET);
    let answer = control(&f.app, now).await;
    assert_eq!(
        text(
            assert_ok(&answer, "DescribeInstancesResponse"),
            "instanceId"
        ),
        INSTANCE
    );
    // Within the 15 minutes allowed either way.
    for offset in [-14 * 60, 14 * 60] {
        let skewed = signed(DESCRIBE, clock_time(&f, offset), SECRET);
        assert_eq!(control(&f.app, skewed).await.0, StatusCode::OK, "{offset}s");
    }
    for offset in [-20 * 60, 20 * 60] {
        let stale = signed(DESCRIBE, clock_time(&f, offset), SECRET);
        assert_error(
            &control(&f.app, stale).await,
            StatusCode::UNAUTHORIZED,
            "AuthFailure",
        );
    }
    let at_wall_clock = signed(DESCRIBE, SystemTime::now(), SECRET);
    assert_error(
        &control(&f.app, at_wall_clock).await,
        StatusCode::UNAUTHORIZED,
        "AuthFailure",
    );
}

#[tokio::test]
async fn a_signed_request_cannot_have_its_body_changed() {
    let f = signed_fixture();
    let request = signed(DESCRIBE, clock_time(&f, 0), SECRET);
    let (parts, _) = request.into_parts();
    let tampered = Request::from_parts(
        parts,
        Full::new(Bytes::from(
            "Action=ModifyInstanceMetadataOptions&Version=2016-11-15&InstanceId=i-0b4f7d2c9a1e83f56&HttpEndpoint=disabled",
        )),
    );
    assert_error(
        &control(&f.app, tampered).await,
        StatusCode::UNAUTHORIZED,
        "AuthFailure",
    );
    assert_eq!(
        f.guest("/latest/meta-data/instance-id").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_captured_request_replayed_with_its_original_payload_hash_and_a_new_body_changes_nothing()
{
    use sha2::Digest;
    let f = signed_fixture();
    let captured = signed(DESCRIBE, clock_time(&f, 0), SECRET);
    let (mut parts, _) = captured.into_parts();
    let original_hash: String = sha2::Sha256::digest(DESCRIBE.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    parts
        .headers
        .insert("x-amz-content-sha256", original_hash.parse().unwrap());
    for body in [
        format!("Action=ModifyInstanceMetadataOptions&Version=2016-11-15&InstanceId={INSTANCE}&HttpEndpoint=disabled"),
        format!("Action=TerminateInstances&Version=2016-11-15&InstanceId.1={INSTANCE}"),
        "Action=RotateKeys&Version=2016-11-15".to_owned(),
    ] {
        let replayed = Request::from_parts(parts.clone(), Full::new(Bytes::from(body.clone())));
        assert_error(
            &control(&f.app, replayed).await,
            StatusCode::UNAUTHORIZED,
            "AuthFailure",
        );
    }
    // The same header with the body it was computed from is the request as signed.
    let replayed = Request::from_parts(parts, Full::new(Bytes::from(DESCRIBE)));
    assert_eq!(control(&f.app, replayed).await.0, StatusCode::OK);
    assert_eq!(
        f.guest("/latest/meta-data/instance-id").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn no_debug_output_of_a_running_imds_shows_a_credential_or_the_control_secret() {
    let f = signed_fixture();
    let (status, role) = f.guest("/latest/meta-data/iam/security-credentials/").await;
    assert_eq!(status, StatusCode::OK);
    let mut secrets = vec![SECRET.to_owned()];
    for path in [
        format!("/latest/meta-data/iam/security-credentials/{role}"),
        "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance".to_owned(),
    ] {
        let (status, body) = f.guest(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let document: serde_json::Value = serde_json::from_str(&body).unwrap();
        for field in ["SecretAccessKey", "Token"] {
            secrets.push(document[field].as_str().unwrap().to_owned());
        }
    }
    let shown = format!("{:?}", f.app);
    assert!(shown.len() > 1000, "the whole app is shown: {shown}");
    for secret in &secrets {
        assert!(
            !shown.contains(secret.as_str()),
            "a secret shows in {shown}"
        );
    }
}

/// A GET of `/?{query}` signed with SigV4 for EC2 at `at`.
fn signed_get(query: &str, at: SystemTime) -> Request<Full<Bytes>> {
    signed_request(Request::get("/"), &format!("/?{query}"), "", at, SECRET)
}

/// SigV4 sorts the query's parameters, so a captured GET with a parameter given twice verifies
/// in any order; imds reads the first, so the order (unsigned) must not decide what it does: a
/// repeated parameter is refused.
#[tokio::test]
async fn a_signed_get_whose_repeated_parameter_is_reordered_does_not_change_what_it_does() {
    let f = signed_fixture();
    let at = clock_time(&f, 0);
    let signed = signed_get(
        &format!("Action=ModifyInstanceMetadataOptions&Version=2016-11-15&InstanceId={INSTANCE}&HttpTokens=required&HttpTokens=optional"),
        at,
    );
    let (mut parts, body) = signed.into_parts();
    let reordered = format!("/?Action=ModifyInstanceMetadataOptions&Version=2016-11-15&InstanceId={INSTANCE}&HttpTokens=optional&HttpTokens=required");
    let first = control(&f.app, Request::from_parts(parts.clone(), body.clone())).await;
    let first_tokens = element(&first.1, "httpTokens").map(str::to_owned);
    parts.uri = reordered.parse().unwrap();
    let second = control(&f.app, Request::from_parts(parts, body)).await;
    let second_tokens = element(&second.1, "httpTokens").map(str::to_owned);
    assert!(
        first.0 != StatusCode::OK || second.0 != StatusCode::OK || first_tokens == second_tokens,
        "one signature, two outcomes: {first_tokens:?} then {second_tokens:?}"
    );
}

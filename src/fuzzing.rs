//! Entry points for the fuzz targets in `fuzz/`, shared with the test that replays their corpus
//! (`tests/it/fuzz_corpus.rs`), so CI runs every corpus input on stable Rust. Each must return
//! normally for any input: a panic is a bug.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};

use crate::app::config::Config;
use crate::clock::ManualClock;
use crate::control::{ControlApi, ControlKeys, Persisted};
use crate::fleet::keys::Keys;
use crate::fleet::metadata::path::{self, GuestPath};
use crate::fleet::secret::ServerSecret;
use crate::fleet::state::{Snapshot, SnapshotBuilder, State};
use crate::fleet::token::{TokenSealer, TokenTtl};
use crate::metrics::Metrics;

const INSTANCE_ID: &str = "i-0b4f7d2c9a1e83f56";

/// A sealer for a fuzzed control API (its rotations must not touch the shared one).
fn sealer_for_control() -> TokenSealer {
    TokenSealer::new(&ServerSecret::from_bytes(
        b"fuzzing secret for the control api",
    ))
}

fn sealer() -> &'static TokenSealer {
    static SEALER: OnceLock<TokenSealer> = OnceLock::new();
    SEALER.get_or_init(|| {
        TokenSealer::new(&ServerSecret::from_bytes(
            b"fuzzing key, not a secret at all",
        ))
    })
}

fn snapshot() -> &'static Snapshot {
    static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let loaded = Config::load(None)
            .and_then(|c| c.resolve(&Default::default(), None))
            .expect("the built-in configuration is valid");
        let keys = Keys::ephemeral().expect("an RSA key can be generated");
        Snapshot::new(loaded.instance, &keys, 0)
    })
}

/// A request path: parsing and tree lookup never panic, and every segment found is non-empty.
pub fn request_path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(GuestPath::Metadata(parsed)) = path::parse(text) {
        assert!(parsed.segments().all(|s| !s.is_empty() && !s.contains('/')));
        let _ = snapshot()
            .timeline
            .at(0)
            .find(parsed.version, parsed.segments());
    }
}

/// A presented session token: verification never panics and never accepts a forgery.
pub fn session_token(data: &[u8]) {
    let now = 1_800_000_000_000;
    assert!(
        sealer().verify(INSTANCE_ID, data, now).is_err(),
        "a fuzzer forged a token: {data:?}"
    );
    let token = sealer().issue(
        INSTANCE_ID,
        now,
        TokenTtl::parse(b"60").expect("60 is a valid TTL"),
    );
    let mut tampered = token.into_bytes();
    for (i, byte) in data.iter().enumerate().take(tampered.len()) {
        tampered[i] ^= byte;
    }
    if data.iter().take(tampered.len()).any(|b| *b != 0) {
        assert!(
            sealer().verify(INSTANCE_ID, &tampered, now).is_err(),
            "a tampered token passed"
        );
    }
}

/// A TTL header value: parsing never panics and accepts only 1..=21600.
pub fn token_ttl(data: &[u8]) {
    if let Ok(ttl) = TokenTtl::parse(data) {
        assert!((1..=21_600).contains(&ttl.seconds()));
        assert!(data.iter().all(u8::is_ascii_digit));
    }
}

/// A store location (`--store`, `IMDS_STORE`): parsing and redaction never panic, and what
/// redaction shows never carries a password that PostgreSQL's client would send.
pub fn store_location(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::store::Location::parse(text);
    let shown = crate::store::redact(text);
    if let Ok(config) = shown.parse::<tokio_postgres::Config>() {
        let password = config.get_password().unwrap_or_default();
        assert!(
            password.is_empty() || password == b"***",
            "{text:?} is shown as {shown:?}, with a password"
        );
    }
}

/// A config file: loading and validation never panic, whatever the text.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("fuzz.toml");
    if let Ok(config) = Config::from_text(path, text) {
        let _ = config.resolve(&Default::default(), Some(path));
    }
}

/// An AEMM JSON config file: turning it into an imds configuration never panics.
pub fn aemm_config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("aemm-config.json");
    if let Ok(settings) = crate::app::aemm::settings::Settings::from_file_text(path, text) {
        let _ = crate::app::aemm::from_settings(&settings, None, 1_800_000_000_000);
    }
}

/// An event time (`+30s`, `2m`, an RFC 3339 time): parsing never panics, and a time prints
/// back to itself.
pub fn event_time(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(when) = text.parse::<crate::fleet::events::When>() {
        let millis = when.resolve(1_800_000_000_000);
        if let crate::fleet::events::When::At(_) = when {
            let again: crate::fleet::events::When =
                when.to_string().parse().expect("printed times parse");
            assert_eq!(again.resolve(0) / 1000, millis / 1000, "{text:?}");
        }
    }
}

/// A guardrail policy document: parsing never panics, and a policy that parses decides
/// RunInstances and ModifyInstanceMetadataOptions requests without panicking, the same way
/// twice.
pub fn policy_document(data: &[u8]) {
    use crate::control::policy::{key, Policy, PolicySet, Request, RequestContext};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::parse(text) else {
        return;
    };
    let set = PolicySet::default().with("fuzz", policy);
    let instance = format!("arn:aws:ec2:us-east-1:111122223333:instance/{INSTANCE_ID}");
    let requests = [
        Request::new(
            RequestContext::new("ec2:RunInstances")
                .with_resource("arn:aws:ec2:us-east-1:111122223333:instance/*")
                .with_value(key::METADATA_HTTP_TOKENS, "optional")
                .with_value(key::METADATA_HTTP_PUT_RESPONSE_HOP_LIMIT, "2")
                .with_value(key::METADATA_HTTP_ENDPOINT, "enabled")
                .with_request_tag("Name", "web"),
        )
        .and(
            RequestContext::new("ec2:RunInstances")
                .with_resource("arn:aws:ec2:us-east-1:111122223333:volume/*"),
        ),
        RequestContext::new("ec2:ModifyInstanceMetadataOptions")
            .with_resource(instance.as_str())
            .with_value("ec2:Attribute/HttpTokens", "required")
            .with_value("aws:SourceIp", "192.0.2.1")
            .into(),
        RequestContext::new("ec2:DescribeInstances").into(),
    ];
    for request in &requests {
        assert_eq!(set.evaluate(request), set.evaluate(request));
    }
}

/// The instance the control API fuzz target changes: the built-in default (which has a role,
/// so its association can be replaced or removed), with control keys, a maintenance event that
/// can be rescheduled, completed or canceled, and a fault that can be cleared.
const CONTROL_CONFIG: &str = r#"
[control]
access_key_id = "AKIAIMDSFUZZCONTROL1"
secret_access_key = "imds-fuzzing-control-secret-not-a-secret"

[instance.events]
[[instance.events.maintenance]]
id = "instance-event-0123456789abcdef0"
code = "system-reboot"
not_before = "+2h"
not_before_deadline = "+7d"

[[instance.faults]]
id = "fault-0000c0de"
path = "/latest/api/token"
method = "PUT"
status = 503
count = 1
"#;

/// What the fuzzed control API's clock always shows: 2027-01-15T08:00:00Z.
const CONTROL_NOW_MILLIS: u64 = 1_800_000_000_000;

/// At most this many requests are taken from one input.
const MAX_CONTROL_REQUESTS: usize = 8;

/// What every control request input starts from, built once.
struct ControlFixture {
    runtime: tokio::runtime::Runtime,
    keys: ControlKeys,
    clock: Arc<ManualClock>,
    snapshots: Arc<SnapshotBuilder>,
    initial: Arc<Snapshot>,
}

impl ControlFixture {
    fn get() -> &'static ControlFixture {
        static FIXTURE: OnceLock<ControlFixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let path = std::path::Path::new("fuzz-control.toml");
            let loaded = Config::from_text(path, CONTROL_CONFIG)
                .and_then(|c| c.resolve(&Default::default(), Some(path)))
                .expect("the control fuzzing configuration is valid");
            let keys = loaded.control.keys().expect("it sets control keys");
            let clock = Arc::new(ManualClock::at_millis(CONTROL_NOW_MILLIS));
            let snapshots = Arc::new(SnapshotBuilder::new(
                Keys::ephemeral().expect("an RSA key can be generated"),
                clock.clone(),
                None,
            ));
            let initial = Arc::new(snapshots.build(loaded.instance));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime can be built");
            ControlFixture {
                runtime,
                keys,
                clock,
                snapshots,
                initial,
            }
        })
    }

    /// A control API over a fresh copy of the initial state, with the fixed keys or none.
    fn api(&self, keys: Option<ControlKeys>) -> ControlApi {
        ControlApi::new(
            Arc::new(State::single(self.initial.clone())),
            self.snapshots.clone(),
            self.clock.clone(),
            Arc::new(Metrics::default()),
            keys,
            Persisted::default(),
            self.initial.instance.config.clone(),
            Arc::new(sealer_for_control()),
            Vec::new(),
        )
    }
}

/// One request's answers from the control API with keys and from the one without.
#[derive(Debug)]
struct ControlExchange {
    signed: (StatusCode, Bytes),
    open: (StatusCode, Bytes),
}

/// One request of a control request input: the first line is the method and request target
/// (`POST /` or `GET /?Action=...`; anything after a second space is ignored), then
/// `Name: value` headers up to an empty line, then the body, verbatim. Lines end with `\n`
/// (a `\r` before it is dropped). `None` when the method or target is not one HTTP allows (hyper
/// refuses those before the API sees them); headers it would refuse are left out.
fn control_request_from(data: &[u8]) -> Option<Request<Full<Bytes>>> {
    let mut rest = data;
    let mut next_line = || {
        let (line, after) = match rest.iter().position(|b| *b == b'\n') {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = after;
        line.strip_suffix(b"\r").unwrap_or(line)
    };
    let mut words = next_line().split(|b| *b == b' ');
    let method = Method::from_bytes(words.next()?).ok()?;
    let uri = Uri::try_from(words.next().unwrap_or(b"/")).ok()?;
    let mut headers = http::HeaderMap::new();
    loop {
        let line = next_line();
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    let mut request = Request::new(Full::new(Bytes::copy_from_slice(rest)));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Some(request)
}

/// Sends each request of `data` to a fresh control API with keys and a fresh one without.
fn control_exchanges(data: &[u8]) -> Vec<ControlExchange> {
    let fixture = ControlFixture::get();
    let signed = fixture.api(Some(fixture.keys.clone()));
    let open = fixture.api(None);
    fixture.runtime.block_on(async {
        let mut exchanges = Vec::new();
        let requests = data
            .split(|b| *b == 0)
            .filter_map(control_request_from)
            .take(MAX_CONTROL_REQUESTS);
        for request in requests {
            let copy = clone_request(&request);
            exchanges.push(ControlExchange {
                signed: answer(&signed, request).await,
                open: answer(&open, copy).await,
            });
        }
        exchanges
    })
}

fn clone_request(request: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut copy = Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    copy
}

async fn answer(api: &ControlApi, request: Request<Full<Bytes>>) -> (StatusCode, Bytes) {
    let response = api.handle(request).await;
    let status = response.status();
    let body = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    (status, body)
}

/// Whether `c` may appear in an XML 1.0 document.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Control API requests (the EC2 Query API: form body or query string, SigV4 headers), through
/// the real [`ControlApi::handle`], in-process. `data` is one or more requests separated by NUL
/// bytes (at most 8 are sent), each in a plain text form: the request line
/// (`POST /`, `GET /?Action=DescribeInstances&Version=2016-11-15`), `Name: value` header lines,
/// an empty line, then the body:
///
/// ```text
/// POST /
/// Host: 127.0.0.1:1339
/// Content-Type: application/x-www-form-urlencoded; charset=utf-8
/// X-Amz-Date: 20270115T080000Z
/// Authorization: AWS4-HMAC-SHA256 Credential=.../20270115/us-east-1/ec2/aws4_request, ...
///
/// Action=DescribeInstances&Version=2016-11-15
/// ```
///
/// Each input starts from the same instance, on a clock that always shows
/// 2027-01-15T08:00:00Z, and is sent to two control APIs: one with control keys (so every
/// request's SigV4 signature is verified; the seeds are signed with them) and one without (so
/// every action's parameters are parsed and applied, even when the signature is wrong); their
/// changes are dropped after the input. Never panics, answers only 200, 400, 401, 403 (a
/// request signed for another region) and 412, each XML answer with characters XML allows
/// only, and the API with keys answers a request it accepts as the one without does.
pub fn control_request(data: &[u8]) {
    let mut diverged = false;
    for exchange in control_exchanges(data) {
        let (signed, open) = (&exchange.signed, &exchange.open);
        for (status, body) in [signed, open] {
            assert!(
                [200, 400, 401, 403, 412].contains(&status.as_u16()),
                "answered {status}: {body:?}"
            );
            let text = std::str::from_utf8(body).expect("answers are UTF-8");
            assert!(text.chars().all(xml_char), "not XML: {text:?}");
            assert!(
                status.as_u16() != 403 || text.contains("<Code>SignatureDoesNotMatch</Code>"),
                "403 only for another region: {text:?}"
            );
        }
        assert_ne!(open.0, StatusCode::UNAUTHORIZED, "refused without keys");
        if !diverged && signed.0 != StatusCode::UNAUTHORIZED {
            assert_eq!(signed.0, open.0, "{signed:?} / {open:?}");
        }
        diverged |= signed.0 == StatusCode::UNAUTHORIZED;
    }
}

#[cfg(test)]
pub(crate) mod control_seeds;

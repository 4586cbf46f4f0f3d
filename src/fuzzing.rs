//! Entry points for the fuzz targets in `fuzz/`, shared with the test that replays their corpus
//! (`tests/it/fuzz_corpus.rs`), so CI runs every corpus input on stable Rust. Each must return
//! normally for any input: a panic is a bug.

use std::sync::OnceLock;

use crate::app::config::Config;
use crate::fleet::keys::Keys;
use crate::fleet::metadata::path::{self, GuestPath};
use crate::fleet::secret::ServerSecret;
use crate::fleet::state::Snapshot;
use crate::fleet::token::{TokenSealer, TokenTtl};

const INSTANCE_ID: &str = "i-0b4f7d2c9a1e83f56";

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
    use crate::control::policy::{key, Policy, PolicySet, RequestContext};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::parse(text) else {
        return;
    };
    let set = PolicySet::default().with("fuzz", policy);
    let instance = format!("arn:aws:ec2:us-east-1:111122223333:instance/{INSTANCE_ID}");
    let requests = [
        RequestContext::new("ec2:RunInstances")
            .with_resource(instance.as_str())
            .with_resource("arn:aws:ec2:us-east-1:111122223333:volume/vol-0123")
            .with_value(key::METADATA_HTTP_TOKENS, "optional")
            .with_value(key::METADATA_HTTP_PUT_RESPONSE_HOP_LIMIT, "2")
            .with_value(key::METADATA_HTTP_ENDPOINT, "enabled")
            .with_request_tag("Name", "web"),
        RequestContext::new("ec2:ModifyInstanceMetadataOptions")
            .with_resource(instance.as_str())
            .with_value("ec2:Attribute/HttpTokens", "required")
            .with_value("aws:SourceIp", "192.0.2.1"),
        RequestContext::new("ec2:DescribeInstances"),
    ];
    for request in &requests {
        assert_eq!(set.evaluate(request), set.evaluate(request));
    }
}

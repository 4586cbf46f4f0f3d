//! Role and instance-identity credentials, rotated on a schedule derived from the clock.
//!
//! Time is cut into periods of half the credential lifetime, counted from the instance's launch.
//! Period `k` has one set of credentials, issued at its start and expiring one lifetime later,
//! so a fresh set (new `LastUpdated`) is always served while the previous one still has half its
//! life left. Values are derived from the server secret, the instance, the role and `k` (HMAC),
//! so no scheduler runs and replicas sharing a key file serve the same credentials. The rendered
//! documents of the current period are cached and swapped lock-free when the period changes.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::HeaderValue;
use serde::Serialize;
use sha2::Sha256;
use time::OffsetDateTime;

use crate::fleet::metadata::render;
use crate::fleet::secret::ServerSecret;

/// Which role credentials a caller gets: EC2 delivers different sets to token-less (IMDSv1) and
/// token (IMDSv2) callers, which IAM policies tell apart with `ec2:RoleDelivery` (1.0 or 2.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A request without a session token.
    V1,
    /// A request with a valid session token.
    V2,
}

impl Delivery {
    /// `ec2:RoleDelivery`'s value for this delivery.
    pub fn role_delivery(self) -> &'static str {
        match self {
            Delivery::V1 => "1.0",
            Delivery::V2 => "2.0",
        }
    }
}

/// One set of credentials, rendered once for its period. Its `Debug` never shows the
/// documents (they hold the secret key and the session token).
pub struct IssuedSet {
    period: u64,
    /// The credentials document.
    pub document: Bytes,
    /// The same plus `AccountId` (`iam/security-credentials-extended/<role>`); roles only.
    pub extended: Option<Bytes>,
    /// `Last-Modified` of these documents: their `LastUpdated`.
    pub last_modified: HeaderValue,
}

impl std::fmt::Debug for IssuedSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedSet")
            .field("period", &self.period)
            .field("last_modified", &self.last_modified)
            .finish_non_exhaustive()
    }
}

/// Issues the credentials of one instance: the role's (a set per delivery) and the identity
/// credentials, each set on its own rotation schedule.
#[derive(Debug)]
pub struct CredentialIssuer {
    key: Hmac<Sha256>,
    instance_id: String,
    account_id: String,
    role_v1: Option<Stream>,
    role_v2: Option<Stream>,
    identity: Stream,
}

/// One rotating stream of credential sets.
#[derive(Debug)]
struct Stream {
    /// Derivation labels (`role`, name, delivery).
    purpose: Vec<String>,
    /// Period 0 starts here; periods are half a lifetime long.
    anchor_millis: u64,
    /// No set is issued before launch.
    launched_millis: u64,
    lifetime_millis: u64,
    extended: bool,
    current: ArcSwapOption<IssuedSet>,
}

/// The JSON of a set of credentials, keys in IMDS' order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CredentialsDocument<'a> {
    code: &'static str,
    last_updated: &'a str,
    #[serde(rename = "Type")]
    kind: &'static str,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
}

impl CredentialsDocument<'_> {
    /// The document and, with `account_id`, its extended form.
    fn render(
        last_updated: &str,
        keys: &KeySet,
        expiration: &str,
        account_id: Option<&str>,
    ) -> (Bytes, Option<Bytes>) {
        let document = |account_id| {
            render::json(&CredentialsDocument {
                code: "Success",
                last_updated,
                kind: "AWS-HMAC",
                access_key_id: &keys.access_key_id,
                secret_access_key: &keys.secret_access_key,
                token: &keys.token,
                expiration,
                account_id,
            })
        };
        (document(None), account_id.map(|id| document(Some(id))))
    }
}

/// One set of keys.
pub struct KeySet {
    /// `AccessKeyId`.
    pub access_key_id: String,
    /// `SecretAccessKey`.
    pub secret_access_key: String,
    /// `Token`.
    pub token: String,
}

/// The documents of one set of role credentials obtained elsewhere (STS), with `AccountId` in
/// the extended form.
pub fn role_documents(
    keys: &KeySet,
    last_updated: OffsetDateTime,
    expiration: OffsetDateTime,
    account_id: &str,
) -> IssuedSet {
    let (document, extended) = CredentialsDocument::render(
        &render::iso_seconds(last_updated),
        keys,
        &render::iso_seconds(expiration),
        Some(account_id),
    );
    IssuedSet {
        period: 0,
        document,
        extended,
        last_modified: http_date(last_updated),
    }
}

impl CredentialIssuer {
    /// An issuer for one instance. `launched_millis` anchors the periods; `lifetime_seconds` is
    /// each set's lifetime (≥ 900).
    pub fn new(
        secret: &ServerSecret,
        instance_id: &str,
        account_id: &str,
        role: Option<&str>,
        launched_millis: u64,
        lifetime_seconds: u64,
    ) -> CredentialIssuer {
        let key = secret.derive("imds credentials v1");
        let lifetime_millis = lifetime_seconds * 1000;
        let stream = |purpose: &[&str], offset_millis: u64, extended: bool| Stream {
            purpose: purpose.iter().map(|p| (*p).to_owned()).collect(),
            anchor_millis: launched_millis.saturating_sub(offset_millis),
            launched_millis,
            lifetime_millis,
            extended,
            current: ArcSwapOption::empty(),
        };
        // The v1 set rotates a quarter lifetime apart from the v2 set: separate sessions, as on EC2.
        let role_stream = |delivery: Delivery, offset| {
            role.map(|role| stream(&["role", role, delivery.role_delivery()], offset, true))
        };
        CredentialIssuer {
            key: Hmac::new_from_slice(&key).expect("HMAC accepts 32-byte keys"),
            instance_id: instance_id.to_owned(),
            account_id: account_id.to_owned(),
            role_v1: role_stream(Delivery::V1, lifetime_millis / 4),
            role_v2: role_stream(Delivery::V2, 0),
            identity: stream(&["identity"], 0, false),
        }
    }

    /// The role credentials for `delivery` at `now_millis`, if the instance has a role.
    pub fn role(&self, delivery: Delivery, now_millis: u64) -> Option<Arc<IssuedSet>> {
        let stream = match delivery {
            Delivery::V1 => self.role_v1.as_ref(),
            Delivery::V2 => self.role_v2.as_ref(),
        };
        stream.map(|stream| self.at(stream, now_millis))
    }

    /// The identity credentials at `now_millis`.
    pub fn identity(&self, now_millis: u64) -> Arc<IssuedSet> {
        self.at(&self.identity, now_millis)
    }

    fn at(&self, stream: &Stream, now_millis: u64) -> Arc<IssuedSet> {
        let period = now_millis.saturating_sub(stream.anchor_millis) / stream.period_millis();
        if let Some(current) = stream.current.load_full() {
            if current.period == period {
                return current;
            }
        }
        let issued = Arc::new(self.issue(stream, period));
        stream.current.store(Some(issued.clone()));
        issued
    }

    fn issue(&self, stream: &Stream, period: u64) -> IssuedSet {
        let issued_millis =
            (stream.anchor_millis + period * stream.period_millis()).max(stream.launched_millis);
        let issued_at = whole_seconds(issued_millis);
        let expires_at = whole_seconds(issued_millis + stream.lifetime_millis);
        let keys = self.keys(&stream.purpose, period);
        let (document, extended) = CredentialsDocument::render(
            &render::iso_seconds(issued_at),
            &keys,
            &render::iso_seconds(expires_at),
            stream.extended.then_some(self.account_id.as_str()),
        );
        IssuedSet {
            period,
            document,
            extended,
            last_modified: http_date(issued_at),
        }
    }

    /// Realistic keys: `ASIA` + 16, a 40-character secret, a long session token.
    fn keys(&self, purpose: &[String], period: u64) -> KeySet {
        let stream = |label: &str, len: usize| -> Vec<u8> {
            let mut out = Vec::with_capacity(len + 32);
            let mut counter = 0u32;
            while out.len() < len {
                let mut mac = self.key.clone();
                mac.update(self.instance_id.as_bytes());
                for part in purpose {
                    mac.update(b"\0");
                    mac.update(part.as_bytes());
                }
                mac.update(&period.to_be_bytes());
                mac.update(label.as_bytes());
                mac.update(&counter.to_be_bytes());
                out.extend_from_slice(&mac.finalize().into_bytes());
                counter += 1;
            }
            out.truncate(len);
            out
        };
        const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let access_key_id = std::iter::once("ASIA".to_owned())
            .chain(
                stream("access key", 16)
                    .iter()
                    .map(|b| char::from(KEY_ALPHABET[usize::from(b % 32)]).to_string()),
            )
            .collect();
        let secret_access_key = STANDARD.encode(stream("secret", 30));
        let token = STANDARD.encode(stream("session token", 720));
        KeySet {
            access_key_id,
            secret_access_key,
            token,
        }
    }
}

impl Stream {
    /// Half the lifetime: how often a new set is issued.
    fn period_millis(&self) -> u64 {
        (self.lifetime_millis / 2).max(1)
    }
}

fn whole_seconds(millis: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp((millis / 1000) as i64)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// An HTTP date header value (`Mon, 20 Sep 2021 21:41:54 GMT`).
pub fn http_date(at: OffsetDateTime) -> HeaderValue {
    let system =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(at.unix_timestamp().max(0) as u64);
    HeaderValue::from_str(&httpdate::fmt_http_date(system)).expect("HTTP dates are visible ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAUNCH: u64 = 1_800_000_000_000;
    const HOUR: u64 = 3_600_000;

    fn issuer(lifetime_seconds: u64) -> CredentialIssuer {
        let secret = ServerSecret::from_bytes(b"credentials test secret 0123456789");
        CredentialIssuer::new(
            &secret,
            "i-0b4f7d2c9a1e83f56",
            "123456789012",
            Some("web"),
            LAUNCH,
            lifetime_seconds,
        )
    }

    fn field(document: &Bytes, key: &str) -> String {
        let value: serde_json::Value = serde_json::from_slice(document).unwrap();
        value[key].as_str().unwrap().to_owned()
    }

    fn seconds_left(document: &Bytes, now_millis: u64) -> i64 {
        let expiration = OffsetDateTime::parse(
            &field(document, "Expiration"),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        expiration.unix_timestamp() - (now_millis / 1000) as i64
    }

    #[test]
    fn credentials_look_real() {
        let issuer = issuer(21600);
        let issued = issuer.role(Delivery::V2, LAUNCH).unwrap();
        let role = &issued.document;
        let key = field(role, "AccessKeyId");
        assert!(key.starts_with("ASIA") && key.len() == 20, "{key}");
        assert!(key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
        assert_eq!(field(role, "SecretAccessKey").len(), 40);
        assert!(field(role, "Token").len() > 900);
        assert_eq!(field(role, "Code"), "Success");
        assert_eq!(field(role, "Type"), "AWS-HMAC");
        assert!(!role.ends_with(b"\n"));
        let extended = issued.extended.as_ref().unwrap();
        assert_eq!(field(extended, "AccountId"), "123456789012");
        assert_eq!(field(extended, "AccessKeyId"), key);
        let identity = issuer.identity(LAUNCH);
        assert_ne!(field(&identity.document, "AccessKeyId"), key);
        assert!(identity.extended.is_none());
    }

    #[test]
    fn v1_and_v2_callers_get_different_sets_rotating_at_different_times() {
        let issuer = issuer(21600);
        let key =
            |delivery, now| field(&issuer.role(delivery, now).unwrap().document, "AccessKeyId");
        assert_ne!(key(Delivery::V1, LAUNCH), key(Delivery::V2, LAUNCH));
        let (mut v1_changes, mut v2_changes) = (Vec::new(), Vec::new());
        let mut now = LAUNCH;
        while now < LAUNCH + 24 * HOUR {
            let next = now + 60_000;
            if key(Delivery::V1, now) != key(Delivery::V1, next) {
                v1_changes.push(next - LAUNCH);
            }
            if key(Delivery::V2, now) != key(Delivery::V2, next) {
                v2_changes.push(next - LAUNCH);
            }
            now = next;
        }
        assert_eq!(
            v2_changes,
            [
                3 * HOUR,
                6 * HOUR,
                9 * HOUR,
                12 * HOUR,
                15 * HOUR,
                18 * HOUR,
                21 * HOUR,
                24 * HOUR
            ]
        );
        assert_eq!(v1_changes.len(), 8);
        assert!(
            v1_changes.iter().all(|t| !v2_changes.contains(t)),
            "{v1_changes:?}"
        );
        let first_v1 = issuer.role(Delivery::V1, LAUNCH).unwrap();
        assert_eq!(
            field(&first_v1.document, "LastUpdated"),
            "2027-01-15T08:00:00Z",
            "no set is issued before launch"
        );
    }

    #[test]
    fn default_lifetime_always_leaves_at_least_an_hour() {
        let issuer = issuer(21600);
        let mut now = LAUNCH;
        while now < LAUNCH + 48 * HOUR {
            for delivery in [Delivery::V1, Delivery::V2] {
                let issued = issuer.role(delivery, now).unwrap();
                let left = seconds_left(&issued.document, now);
                assert!(left >= 3600, "only {left}s left at +{}ms", now - LAUNCH);
                assert!(left <= 21600);
            }
            now += 7 * 60_000 + 13_000;
        }
    }

    #[test]
    fn rotation_brings_new_keys_before_the_old_ones_near_expiry() {
        let issuer = issuer(900);
        let first = issuer.role(Delivery::V2, LAUNCH).unwrap();
        let same = issuer.role(Delivery::V2, LAUNCH + 449_000).unwrap();
        assert!(
            Arc::ptr_eq(&first, &same),
            "documents are cached within a period"
        );
        let next = issuer.role(Delivery::V2, LAUNCH + 450_000).unwrap();
        let (old, new) = (&first.document, &next.document);
        assert_ne!(field(old, "AccessKeyId"), field(new, "AccessKeyId"));
        assert_ne!(field(old, "LastUpdated"), field(new, "LastUpdated"));
        assert!(
            seconds_left(old, LAUNCH + 450_000) >= 5 * 60,
            "the old set still had over 5 minutes"
        );
        assert_ne!(first.last_modified, next.last_modified);
    }

    #[test]
    fn same_secret_same_credentials() {
        let a = issuer(21600).role(Delivery::V1, LAUNCH + 5 * HOUR).unwrap();
        let b = issuer(21600).role(Delivery::V1, LAUNCH + 5 * HOUR).unwrap();
        assert_eq!(a.document, b.document);
    }

    #[test]
    fn no_role_no_role_documents() {
        let secret = ServerSecret::random();
        let issuer = CredentialIssuer::new(
            &secret,
            "i-0b4f7d2c9a1e83f56",
            "123456789012",
            None,
            LAUNCH,
            21600,
        );
        assert!(issuer.role(Delivery::V1, LAUNCH).is_none());
        assert!(issuer.role(Delivery::V2, LAUNCH).is_none());
    }
}

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

use crate::metadata::render;
use crate::secret::ServerSecret;

/// The documents of one credential period, rendered once.
#[derive(Debug)]
pub struct IssuedCredentials {
    period: u64,
    /// `iam/security-credentials/<role>` (absent without a role).
    pub role: Option<Bytes>,
    /// `iam/security-credentials-extended/<role>`: the same plus `AccountId`.
    pub role_extended: Option<Bytes>,
    /// `identity-credentials/ec2/security-credentials/ec2-instance`.
    pub identity: Bytes,
    /// `Last-Modified` of these documents: their `LastUpdated`.
    pub last_modified: HeaderValue,
}

/// Issues the credentials of one instance.
#[derive(Debug)]
pub struct CredentialIssuer {
    key: Hmac<Sha256>,
    instance_id: String,
    account_id: String,
    role: Option<String>,
    anchor_millis: u64,
    lifetime_millis: u64,
    current: ArcSwapOption<IssuedCredentials>,
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

/// One set of generated keys.
struct KeySet {
    access_key_id: String,
    secret_access_key: String,
    token: String,
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
        CredentialIssuer {
            key: Hmac::new_from_slice(&key).expect("HMAC accepts 32-byte keys"),
            instance_id: instance_id.to_owned(),
            account_id: account_id.to_owned(),
            role: role.map(str::to_owned),
            anchor_millis: launched_millis,
            lifetime_millis: lifetime_seconds * 1000,
            current: ArcSwapOption::empty(),
        }
    }

    /// The credentials served at `now_millis`.
    pub fn at(&self, now_millis: u64) -> Arc<IssuedCredentials> {
        let period = now_millis.saturating_sub(self.anchor_millis) / self.period_millis();
        if let Some(current) = self.current.load_full() {
            if current.period == period {
                return current;
            }
        }
        let issued = Arc::new(self.issue(period));
        self.current.store(Some(issued.clone()));
        issued
    }

    /// Half the lifetime: how often a new set is issued.
    fn period_millis(&self) -> u64 {
        (self.lifetime_millis / 2).max(1)
    }

    fn issue(&self, period: u64) -> IssuedCredentials {
        let issued_millis = self.anchor_millis + period * self.period_millis();
        let issued_at = whole_seconds(issued_millis);
        let expires_at = whole_seconds(issued_millis + self.lifetime_millis);
        let last_updated = render::iso_seconds(issued_at);
        let expiration = render::iso_seconds(expires_at);
        let document = |keys: &KeySet, account_id: Option<&str>| {
            render::json(&CredentialsDocument {
                code: "Success",
                last_updated: &last_updated,
                kind: "AWS-HMAC",
                access_key_id: &keys.access_key_id,
                secret_access_key: &keys.secret_access_key,
                token: &keys.token,
                expiration: &expiration,
                account_id,
            })
        };
        let role_keys = self
            .role
            .as_deref()
            .map(|role| self.keys(&["role", role], period));
        let identity_keys = self.keys(&["identity"], period);
        IssuedCredentials {
            period,
            role: role_keys.as_ref().map(|keys| document(keys, None)),
            role_extended: role_keys
                .as_ref()
                .map(|keys| document(keys, Some(&self.account_id))),
            identity: document(&identity_keys, None),
            last_modified: http_date(issued_at),
        }
    }

    /// Realistic keys: `ASIA` + 16, a 40-character secret, a long session token.
    fn keys(&self, purpose: &[&str], period: u64) -> KeySet {
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
        let issued = issuer(21600).at(LAUNCH);
        let role = issued.role.as_ref().unwrap();
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
        let extended = issued.role_extended.as_ref().unwrap();
        assert_eq!(field(extended, "AccountId"), "123456789012");
        assert_eq!(field(extended, "AccessKeyId"), key);
        assert_ne!(field(&issued.identity, "AccessKeyId"), key);
    }

    #[test]
    fn default_lifetime_always_leaves_at_least_an_hour() {
        let issuer = issuer(21600);
        let mut now = LAUNCH;
        while now < LAUNCH + 48 * HOUR {
            let issued = issuer.at(now);
            let left = seconds_left(issued.role.as_ref().unwrap(), now);
            assert!(left >= 3600, "only {left}s left at +{}ms", now - LAUNCH);
            assert!(left <= 21600);
            now += 7 * 60_000 + 13_000;
        }
    }

    #[test]
    fn rotation_brings_new_keys_before_the_old_ones_near_expiry() {
        let issuer = issuer(900);
        let first = issuer.at(LAUNCH);
        let same = issuer.at(LAUNCH + 449_000);
        assert!(
            Arc::ptr_eq(&first, &same),
            "documents are cached within a period"
        );
        let next = issuer.at(LAUNCH + 450_000);
        let (old, new) = (first.role.as_ref().unwrap(), next.role.as_ref().unwrap());
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
        let a = issuer(21600).at(LAUNCH + 5 * HOUR);
        let b = issuer(21600).at(LAUNCH + 5 * HOUR);
        assert_eq!(a.role, b.role);
    }

    #[test]
    fn no_role_no_role_documents() {
        let secret = ServerSecret::random();
        let issued = CredentialIssuer::new(
            &secret,
            "i-0b4f7d2c9a1e83f56",
            "123456789012",
            None,
            LAUNCH,
            21600,
        )
        .at(LAUNCH);
        assert!(issued.role.is_none() && issued.role_extended.is_none());
    }
}

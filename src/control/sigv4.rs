//! Verification of AWS Signature Version 4 on control requests, when `[control]` keys are
//! configured. The canonical request is rebuilt from exactly the headers the client says it
//! signed (`SignedHeaders`), so any SigV4 client (the AWS CLI, boto3, the SDKs) is accepted;
//! the signature is compared in constant time and `X-Amz-Date` must be within 15 minutes.
//! The payload hash is always computed from the body received: a request whose
//! `x-amz-content-sha256` disagrees with it (or says `UNSIGNED-PAYLOAD`) is refused, as S3
//! refuses it, so a signature covers the whole request and a captured one changes nothing.

use hmac::{Hmac, Mac};
use http::request::Parts;
use sha2::{Digest, Sha256};

use super::hex;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// Largest accepted difference between the request's time and ours.
const MAX_SKEW_SECONDS: i64 = 15 * 60;

/// The keys control requests must be signed with.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlKeys {
    /// The access key id clients use.
    pub access_key_id: String,
    /// The secret they sign with.
    pub secret_access_key: String,
}

impl std::fmt::Debug for ControlKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlKeys")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Why a request's signature is not accepted (the detail is logged, never answered).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Authorization: AWS4-HMAC-SHA256 ...` header.
    #[error("the request is not signed with SigV4")]
    Unsigned,
    /// The header is not SigV4's shape.
    #[error("malformed Authorization header")]
    Malformed,
    /// Another access key id.
    #[error("unknown access key id")]
    UnknownKey,
    /// `X-Amz-Date` is missing, malformed or too far from now.
    #[error("request time missing or more than 15 minutes away")]
    Skewed,
    /// The signature does not match.
    #[error("signature mismatch")]
    Mismatch,
    /// `x-amz-content-sha256` is not the SHA-256 of the body received (`UNSIGNED-PAYLOAD`
    /// included: every control request binds its body).
    #[error("x-amz-content-sha256 does not match the body received")]
    PayloadMismatch,
}

impl ControlKeys {
    /// Checks the signature of a request with `parts` and `body` at `now`.
    pub fn verify(
        &self,
        parts: &Parts,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), SignatureError> {
        let authorization = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("AWS4-HMAC-SHA256 "))
            .ok_or(SignatureError::Unsigned)?;
        let mut credential = None;
        let mut signed_headers = None;
        let mut signature = None;
        for field in authorization.split(',') {
            match field.trim().split_once('=') {
                Some(("Credential", v)) => credential = Some(v),
                Some(("SignedHeaders", v)) => signed_headers = Some(v),
                Some(("Signature", v)) => signature = Some(v),
                _ => {}
            }
        }
        let (credential, signed_headers, signature) = match (credential, signed_headers, signature)
        {
            (Some(c), Some(h), Some(s)) => (c, h, s),
            _ => return Err(SignatureError::Malformed),
        };
        let mut scope = credential.splitn(5, '/');
        let (key_id, date, region, service, terminator) = match (
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
        ) {
            (Some(k), Some(d), Some(r), Some(s), Some(t)) => (k, d, r, s, t),
            _ => return Err(SignatureError::Malformed),
        };
        if terminator != "aws4_request" {
            return Err(SignatureError::Malformed);
        }
        if key_id != self.access_key_id {
            return Err(SignatureError::UnknownKey);
        }
        let amz_date = header(parts, "x-amz-date").ok_or(SignatureError::Skewed)?;
        let at = PrimitiveDateTime::parse(
            amz_date,
            format_description!("[year][month][day]T[hour][minute][second]Z"),
        )
        .map_err(|_| SignatureError::Skewed)?
        .assume_utc();
        if (at - now).whole_seconds().abs() > MAX_SKEW_SECONDS || !amz_date.starts_with(date) {
            return Err(SignatureError::Skewed);
        }

        let mut canonical = format!(
            "{}\n{}\n{}\n",
            parts.method,
            canonical_path(parts.uri.path()),
            canonical_query(parts.uri.query().unwrap_or(""))
        );
        for name in signed_headers.split(';') {
            let values: Vec<String> = parts
                .headers
                .get_all(name)
                .iter()
                .map(|v| collapse_spaces(&String::from_utf8_lossy(v.as_bytes())))
                .collect();
            let value = match (name, values.is_empty()) {
                ("host", true) => parts
                    .uri
                    .authority()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                _ => values.join(","),
            };
            canonical.push_str(&format!("{name}:{value}\n"));
        }
        // The signature binds the body received, never a hash the client claims: a captured
        // request replayed with another body and its original hash in this header is refused.
        let payload = hex(&Sha256::digest(body));
        if let Some(claimed) = parts.headers.get("x-amz-content-sha256") {
            if claimed.as_bytes() != payload.as_bytes() {
                return Err(SignatureError::PayloadMismatch);
            }
        }
        canonical.push_str(&format!("\n{signed_headers}\n{payload}"));
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let mut key = format!("AWS4{}", self.secret_access_key).into_bytes();
        for part in [date, region, service, "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let expected = crate::control::unhex(signature).ok_or(SignatureError::Mismatch)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
        mac.update(string_to_sign.as_bytes());
        // `verify_slice` compares in constant time.
        mac.verify_slice(&expected)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// The region a SigV4-signed request is scoped to (its `Credential=KEY/DATE/REGION/...`),
/// signed with the control keys or not.
pub fn scope_region(parts: &Parts) -> Option<&str> {
    let authorization = header(parts, "authorization")?.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let credential = authorization
        .split(',')
        .find_map(|field| field.trim().strip_prefix("Credential="))?;
    credential.split('/').nth(2)
}

fn header<'p>(parts: &'p Parts, name: &str) -> Option<&'p str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn collapse_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The path as clients sign it: empty becomes `/`; it arrives already percent-encoded.
fn canonical_path(path: &str) -> &str {
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

/// Query parameters sorted by name then value, each encoded the SigV4 way.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (encode(&k), encode(&v)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `get-vanilla` request of AWS' SigV4 test suite, with its published signature.
    #[test]
    fn the_aws_test_suite_vanilla_request_verifies() {
        let keys = ControlKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        };
        let request = http::Request::get("/")
            .header("host", "example.amazonaws.com")
            .header("x-amz-date", "20150830T123600Z")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            )
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let now = OffsetDateTime::from_unix_timestamp(1_440_938_160).unwrap();
        assert_eq!(keys.verify(&parts, b"", now), Ok(()));
        let later = now + time::Duration::minutes(16);
        assert_eq!(keys.verify(&parts, b"", later), Err(SignatureError::Skewed));
        assert_eq!(
            keys.verify(&parts, b"x", now),
            Err(SignatureError::Mismatch)
        );
        let other = ControlKeys {
            secret_access_key: "another".into(),
            ..keys.clone()
        };
        assert_eq!(
            other.verify(&parts, b"", now),
            Err(SignatureError::Mismatch)
        );
        let stranger = ControlKeys {
            access_key_id: "AKIDOTHER".into(),
            ..keys
        };
        assert_eq!(
            stranger.verify(&parts, b"", now),
            Err(SignatureError::UnknownKey)
        );
    }

    const KEY_ID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn keys() -> ControlKeys {
        ControlKeys {
            access_key_id: KEY_ID.into(),
            secret_access_key: SECRET.into(),
        }
    }

    /// A POST of `body` signed as boto3 signs EC2 requests, at `now`; with `claim_hash`, the
    /// signer also sends (and signs) `x-amz-content-sha256`, as S3 clients do.
    fn signed_post(body: &[u8], now: OffsetDateTime, claim_hash: bool) -> Parts {
        let mut request = http::Request::post("/")
            .header("host", "127.0.0.1:1339")
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(())
            .unwrap();
        crate::fuzzing::control_seeds::sign_ec2(
            &mut request,
            body,
            (KEY_ID, SECRET),
            now.into(),
            claim_hash,
        );
        request.into_parts().0
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    const DESCRIBE: &[u8] = b"Action=DescribeInstances&Version=2016-11-15";
    const DISABLE: &[u8] = b"Action=ModifyInstanceMetadataOptions&Version=2016-11-15&InstanceId=i-0b4f7d2c9a1e83f56&HttpEndpoint=disabled";

    #[test]
    fn a_replayed_request_with_another_body_and_the_original_hash_is_refused() {
        let parts = signed_post(DESCRIBE, now(), false);
        assert_eq!(keys().verify(&parts, DESCRIBE, now()), Ok(()));
        let mut replayed = parts.clone();
        let original = hex(&Sha256::digest(DESCRIBE));
        replayed
            .headers
            .insert("x-amz-content-sha256", original.parse().unwrap());
        assert_eq!(
            keys().verify(&replayed, DISABLE, now()),
            Err(SignatureError::PayloadMismatch)
        );
        assert_eq!(
            keys().verify(&parts, DISABLE, now()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_signed_content_hash_header_is_accepted_only_with_its_own_body() {
        let parts = signed_post(DESCRIBE, now(), true);
        assert!(parts.headers.contains_key("x-amz-content-sha256"));
        assert_eq!(keys().verify(&parts, DESCRIBE, now()), Ok(()));
        assert_eq!(
            keys().verify(&parts, DISABLE, now()),
            Err(SignatureError::PayloadMismatch)
        );
        let mut rehashed = parts.clone();
        let forged = hex(&Sha256::digest(DISABLE));
        rehashed
            .headers
            .insert("x-amz-content-sha256", forged.parse().unwrap());
        assert_eq!(
            keys().verify(&rehashed, DISABLE, now()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn an_unsigned_payload_is_refused() {
        let mut parts = signed_post(DESCRIBE, now(), false);
        parts
            .headers
            .insert("x-amz-content-sha256", "UNSIGNED-PAYLOAD".parse().unwrap());
        assert_eq!(
            keys().verify(&parts, DESCRIBE, now()),
            Err(SignatureError::PayloadMismatch)
        );
    }

    proptest::proptest! {
        /// Whatever body is sent with a captured signature, and whatever hash it claims, only
        /// the signed body is accepted.
        #[test]
        fn a_signature_accepts_only_the_body_it_was_made_for(
            signed_body in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            sent_body in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            claim in 0u8..4,
            claim_hash in proptest::bool::ANY,
        ) {
            let mut parts = signed_post(&signed_body, now(), claim_hash);
            let claimed = match claim {
                0 => None,
                1 => Some(hex(&Sha256::digest(&signed_body))),
                2 => Some(hex(&Sha256::digest(&sent_body))),
                _ => Some("UNSIGNED-PAYLOAD".to_owned()),
            };
            if let Some(claimed) = claimed {
                parts.headers.insert("x-amz-content-sha256", claimed.parse().unwrap());
            }
            let verdict = keys().verify(&parts, &sent_body, now());
            if sent_body != signed_body {
                proptest::prop_assert!(verdict.is_err(), "{verdict:?}");
            }
        }
    }
}

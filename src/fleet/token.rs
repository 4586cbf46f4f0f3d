//! IMDSv2 session tokens: stateless and sealed.
//!
//! A token is 40 bytes, shown as 56 characters of URL-safe base64 ending in `==` like the real
//! ones: a version byte, the expiry (milliseconds since the epoch), an 8-byte binding to the
//! instance that issued it (a keyed hash of its id), 7 random bytes, and a 16-byte HMAC-SHA256
//! tag over all of those. So a token proves its own expiry and instance; nothing is stored per
//! token, and memory stays flat however many are issued. Because the binding is sealed inside,
//! a refusal can tell a forged or foreign-key token (bad seal) from another instance's token
//! (wrong instance) and from an expired one.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::fleet::secret::ServerSecret;

/// Largest TTL IMDS grants: 6 hours.
pub const MAX_TTL_SECONDS: u32 = 21_600;

const VERSION: u8 = 2;
const BODY_LEN: usize = 24;
/// Where the instance binding sits in the body.
const BINDING: std::ops::Range<usize> = 9..17;
const TAG_LEN: usize = 16;
const TOKEN_LEN: usize = BODY_LEN + TAG_LEN;
/// Length of a token as sent on the wire.
pub const TOKEN_TEXT_LEN: usize = 56;

/// A token lifetime from `X-aws-ec2-metadata-token-ttl-seconds`: a decimal integer 1..=21600.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenTtl(u32);

/// A TTL header value that IMDS answers with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    /// Empty, signed, or not decimal digits.
    #[error("token TTL is not a decimal integer")]
    NotAnInteger,
    /// Outside 1..=21600.
    #[error("token TTL is outside 1..=21600 seconds")]
    TtlOutOfRange,
}

impl TokenTtl {
    /// The TTL in seconds.
    pub fn seconds(self) -> u32 {
        self.0
    }

    /// Parses a header value's bytes.
    pub fn parse(value: &[u8]) -> Result<TokenTtl, TtlError> {
        if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            return Err(TtlError::NotAnInteger);
        }
        let digits = value.iter().skip_while(|b| **b == b'0');
        let mut seconds: u32 = 0;
        for (i, digit) in digits.enumerate() {
            if i >= 5 {
                return Err(TtlError::TtlOutOfRange);
            }
            seconds = seconds * 10 + u32::from(digit - b'0');
        }
        if (1..=MAX_TTL_SECONDS).contains(&seconds) {
            Ok(TokenTtl(seconds))
        } else {
            Err(TtlError::TtlOutOfRange)
        }
    }
}

impl FromStr for TokenTtl {
    type Err = TtlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TokenTtl::parse(s.as_bytes())
    }
}

impl fmt::Display for TokenTtl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a presented token is refused (all answer 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not 56 characters of base64 of a known token version.
    #[error("token is malformed")]
    Malformed,
    /// The tag does not match: forged, altered, or sealed with another key.
    #[error("token seal does not match")]
    BadSeal,
    /// Sealed with this key, but issued to another instance.
    #[error("token was issued to another instance")]
    WrongInstance,
    /// Past its expiry.
    #[error("token has expired")]
    Expired,
}

/// What binds a token to one instance, derived from its id with the sealer's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBinding([u8; 8]);

/// Issues and verifies tokens with one key.
#[derive(Clone)]
pub struct TokenSealer {
    keyed: Hmac<Sha256>,
}

impl fmt::Debug for TokenSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSealer(..)")
    }
}

impl TokenSealer {
    /// A sealer keyed from the server secret.
    pub fn new(secret: &ServerSecret) -> TokenSealer {
        let key = secret.derive("imds session token v1");
        TokenSealer {
            keyed: Hmac::new_from_slice(&key).expect("HMAC accepts 32-byte keys"),
        }
    }

    fn tag(&self, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        mac.update(body);
        mac
    }

    /// The 8 bytes binding a token to `instance_id` (worth computing once per instance: the
    /// guest path keeps it on the instance's slot).
    pub fn binding(&self, instance_id: &str) -> TokenBinding {
        let mut mac = self.keyed.clone();
        mac.update(b"instance\0");
        mac.update(instance_id.as_bytes());
        let hash = mac.finalize().into_bytes();
        TokenBinding(hash[..8].try_into().expect("SHA-256 has 32 bytes"))
    }

    /// A token for `instance_id` valid for `ttl` from `now_millis`.
    pub fn issue(&self, instance_id: &str, now_millis: u64, ttl: TokenTtl) -> String {
        let mut raw = [0u8; TOKEN_LEN];
        raw[0] = VERSION;
        let expiry = now_millis + u64::from(ttl.seconds()) * 1000;
        raw[1..9].copy_from_slice(&expiry.to_be_bytes());
        raw[BINDING].copy_from_slice(&self.binding(instance_id).0);
        rand::thread_rng().fill_bytes(&mut raw[BINDING.end..BODY_LEN]);
        let tag = self.tag(&raw[..BODY_LEN]).finalize().into_bytes();
        raw[BODY_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        URL_SAFE.encode(raw)
    }

    /// Checks a presented token for `instance_id` at `now_millis`; on success, the whole seconds
    /// it has left (rounded up), as IMDS reports them in `X-Aws-Ec2-Metadata-Token-Ttl-Seconds`.
    pub fn verify(
        &self,
        instance_id: &str,
        token: &[u8],
        now_millis: u64,
    ) -> Result<u32, TokenError> {
        self.verify_bound(&self.binding(instance_id), token, now_millis)
    }

    /// [`TokenSealer::verify`] for the instance whose binding is `binding`.
    pub fn verify_bound(
        &self,
        binding: &TokenBinding,
        token: &[u8],
        now_millis: u64,
    ) -> Result<u32, TokenError> {
        if token.len() != TOKEN_TEXT_LEN {
            return Err(TokenError::Malformed);
        }
        let mut raw = [0u8; TOKEN_LEN + 2];
        let len = URL_SAFE
            .decode_slice(token, &mut raw)
            .map_err(|_| TokenError::Malformed)?;
        if len != TOKEN_LEN || raw[0] != VERSION {
            return Err(TokenError::Malformed);
        }
        self.tag(&raw[..BODY_LEN])
            .verify_truncated_left(&raw[BODY_LEN..TOKEN_LEN])
            .map_err(|_| TokenError::BadSeal)?;
        if raw[BINDING] != binding.0 {
            return Err(TokenError::WrongInstance);
        }
        let expiry = u64::from_be_bytes(raw[1..9].try_into().expect("8 bytes"));
        if expiry <= now_millis {
            return Err(TokenError::Expired);
        }
        let left = (expiry - now_millis).div_ceil(1000);
        Ok(left.min(u64::from(MAX_TTL_SECONDS)) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "i-0b4f7d2c9a1e83f56";
    const T0: u64 = 1_800_000_000_000;

    fn sealer() -> TokenSealer {
        TokenSealer::new(&ServerSecret::from_bytes(
            b"test secret for tokens 0123456789",
        ))
    }

    #[test]
    fn tokens_look_like_real_ones() {
        let token = sealer().issue(ID, T0, TokenTtl(21600));
        assert_eq!(token.len(), TOKEN_TEXT_LEN);
        assert!(token.ends_with("=="));
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)));
    }

    #[test]
    fn remaining_ttl_counts_down_and_expiry_holds() {
        let sealer = sealer();
        let token = sealer.issue(ID, T0, TokenTtl(60));
        assert_eq!(sealer.verify(ID, token.as_bytes(), T0), Ok(60));
        assert_eq!(sealer.verify(ID, token.as_bytes(), T0 + 500), Ok(60));
        assert_eq!(sealer.verify(ID, token.as_bytes(), T0 + 1000), Ok(59));
        assert_eq!(sealer.verify(ID, token.as_bytes(), T0 + 59_999), Ok(1));
        assert_eq!(
            sealer.verify(ID, token.as_bytes(), T0 + 60_000),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn tokens_are_bound_to_instance_and_key() {
        let token = sealer().issue(ID, T0, TokenTtl(60));
        assert_eq!(
            sealer().verify("i-0123456789abcdef0", token.as_bytes(), T0),
            Err(TokenError::WrongInstance)
        );
        let other = TokenSealer::new(&ServerSecret::from_bytes(
            b"another secret entirely, 32 bytes",
        ));
        assert_eq!(
            other.verify(ID, token.as_bytes(), T0),
            Err(TokenError::BadSeal)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let sealer = sealer();
        for token in [
            "",
            "abc",
            "AQAEAKQRRHnsX8GCPgYTGMShrFJkMhru3n-8Ul5Gzvzj-bpWKYZuiw==",
        ] {
            assert!(sealer.verify(ID, token.as_bytes(), T0).is_err(), "{token}");
        }
        assert_eq!(
            sealer.verify(ID, &[b'!'; 56], T0),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn ttl_parsing_is_strict_decimal() {
        assert_eq!("1".parse::<TokenTtl>(), Ok(TokenTtl(1)));
        assert_eq!("21600".parse::<TokenTtl>(), Ok(TokenTtl(21600)));
        assert_eq!("0021600".parse::<TokenTtl>(), Ok(TokenTtl(21600)));
        for bad in ["", "+5", "-1", " 5", "5s", "1e3", "0x10"] {
            assert_eq!(
                bad.parse::<TokenTtl>(),
                Err(TtlError::NotAnInteger),
                "{bad:?}"
            );
        }
        for bad in ["0", "21601", "4294967296", "99999999999999999999"] {
            assert_eq!(
                bad.parse::<TokenTtl>(),
                Err(TtlError::TtlOutOfRange),
                "{bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn ttl_accepts_exactly_one_to_21600(n in 0u64..100_000) {
            let parsed = n.to_string().parse::<TokenTtl>();
            prop_assert_eq!(parsed.is_ok(), (1..=21600).contains(&n));
        }

        #[test]
        fn ttl_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = TokenTtl::parse(&bytes);
        }

        #[test]
        fn sealed_tokens_verify_until_expiry(ttl in 1u32..=21600, now in 0u64..4_000_000_000_000, elapsed in 0u64..30_000_000) {
            let sealer = sealer();
            let token = sealer.issue(ID, now, TokenTtl(ttl));
            let result = sealer.verify(ID, token.as_bytes(), now + elapsed);
            if elapsed < u64::from(ttl) * 1000 {
                let left = result.unwrap();
                prop_assert!(left >= 1 && left <= ttl);
            } else {
                prop_assert_eq!(result, Err(TokenError::Expired));
            }
        }

        #[test]
        fn an_altered_token_is_never_accepted(position in 0usize..TOKEN_LEN, bit in 0u8..8) {
            let sealer = sealer();
            let token = sealer.issue(ID, T0, TokenTtl(60));
            let mut raw = URL_SAFE.decode(&token).unwrap();
            raw[position] ^= 1 << bit;
            let altered = URL_SAFE.encode(&raw);
            let result = sealer.verify(ID, altered.as_bytes(), T0);
            prop_assert!(
                matches!(result, Err(TokenError::BadSeal | TokenError::Malformed)),
                "{:?}", result
            );
        }

        #[test]
        fn another_instances_token_is_refused_as_such(other in "i-[0-9a-f]{17}") {
            prop_assume!(other != ID);
            let sealer = sealer();
            let token = sealer.issue(&other, T0, TokenTtl(60));
            prop_assert_eq!(sealer.verify(ID, token.as_bytes(), T0), Err(TokenError::WrongInstance));
        }

        #[test]
        fn tampering_with_any_byte_fails(position in 0usize..TOKEN_LEN, flip in 1u8..=255) {
            let sealer = sealer();
            let token = sealer.issue(ID, T0, TokenTtl(21600));
            let mut raw = URL_SAFE.decode(&token).unwrap();
            raw[position] ^= flip;
            let tampered = URL_SAFE.encode(&raw);
            prop_assert!(sealer.verify(ID, tampered.as_bytes(), T0).is_err());
        }

        #[test]
        fn verify_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = sealer().verify(ID, &bytes, T0);
        }
    }
}

//! IMDSv2 session tokens: stateless and sealed.
//!
//! A token is 40 bytes, shown as 56 characters of URL-safe base64 ending in `==` like the real
//! ones: a version byte, the expiry (milliseconds since the epoch), an 8-byte binding to the
//! instance that issued it (a keyed hash of its id), the key generation that sealed it (one
//! byte), 6 random bytes, and a 16-byte HMAC-SHA256 tag over all of those. So a token proves
//! its own expiry and instance; nothing is stored per token, and memory stays flat however many
//! are issued. Because the binding is sealed inside, a refusal can tell a forged or
//! foreign-key token (bad seal) from another instance's token (wrong instance) and from an
//! expired one.
//!
//! Key generations: generation 0 is derived from the server secret; `rotate-keys` adds random
//! ones (shared by every host through the store). New tokens are sealed with the newest;
//! an older generation stays accepted until every token it can have sealed has expired
//! ([`MAX_TTL_SECONDS`] after its successor appeared, plus [`CLOCK_SLACK_MILLIS`] for hosts'
//! clocks). The binding is always keyed by the server secret, so it does not change with the
//! generation and each instance's stays cached. Version-2 tokens (before generations) are
//! generation 0's.
//!
//! Clients send the same token with every request for hours, so each thread remembers the
//! last tokens whose seal it checked (a few dozen, by the token's text, with the key
//! generations in force then): the same text under the same generations is not decoded or
//! hashed again. Its instance, its expiry and its generation's retirement are checked on every
//! request, as for a token seen for the first time; only tokens whose seal checked out are
//! remembered, so a client sending forged tokens gains nothing but full checks.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::fleet::secret::ServerSecret;

/// Largest TTL IMDS grants: 6 hours.
pub const MAX_TTL_SECONDS: u32 = 21_600;

const VERSION: u8 = 3;
/// Tokens issued before key generations: sealed by generation 0.
const VERSION_BEFORE_GENERATIONS: u8 = 2;
const BODY_LEN: usize = 24;
/// Where the instance binding sits in the body.
const BINDING: std::ops::Range<usize> = 9..17;
/// Where the key generation (its low byte) sits in the body.
const GENERATION: usize = 17;
/// How far apart hosts' clocks may be when they retire a generation.
pub const CLOCK_SLACK_MILLIS: u64 = 5 * 60 * 1000;
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

/// One key generation: its number and its key.
#[derive(Clone)]
pub struct TokenGeneration {
    /// Its number (0: derived from the server secret).
    pub number: u32,
    /// When it was created (milliseconds since the epoch).
    pub created_millis: u64,
    /// Its key (32 bytes).
    pub key: zeroize::Zeroizing<Vec<u8>>,
}

impl fmt::Debug for TokenGeneration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenGeneration")
            .field("number", &self.number)
            .field("created_millis", &self.created_millis)
            .finish_non_exhaustive()
    }
}

/// A generation as the sealer uses it.
#[derive(Clone)]
struct Sealing {
    number: u32,
    keyed: Hmac<Sha256>,
    /// Tokens of this generation are refused from then on (`u64::MAX`: the newest).
    retired_at: u64,
}

/// The generations in force: the newest seals, all verify until retired.
#[derive(Clone)]
struct Generations {
    newest: Sealing,
    older: Vec<Sealing>,
    /// Tells these generations from every other set in the process, past or future (of any
    /// sealer): a seal checked under them is checked under nothing else.
    epoch: u64,
}

/// Where the next set of generations takes its [`Generations::epoch`].
static EPOCHS: AtomicU64 = AtomicU64::new(0);

/// What a token whose seal checked out says, as a thread remembers it.
#[derive(Debug, Clone, Copy)]
struct CheckedSeal {
    text: [u8; TOKEN_TEXT_LEN],
    /// The generations in force when its seal was checked.
    epoch: u64,
    /// When its generation is retired (`u64::MAX`: the newest).
    retired_at: u64,
    binding: [u8; 8],
    expiry: u64,
}

/// How many checked seals a thread remembers.
const REMEMBERED: usize = 64;

thread_local! {
    /// The last tokens whose seal this thread checked, by a hash of their tag.
    static CHECKED: RefCell<[Option<CheckedSeal>; REMEMBERED]> =
        const { RefCell::new([None; REMEMBERED]) };
}

/// Where a token's checked seal is remembered: from two characters of its tag (random in
/// every token imds issues; a collision only costs a full check).
fn remembered_at(token: &[u8; TOKEN_TEXT_LEN]) -> usize {
    (usize::from(token[40]) * 31 + usize::from(token[41])) % REMEMBERED
}

/// Issues and verifies tokens with the key generations in force.
pub struct TokenSealer {
    /// Keys instance bindings, and is generation 0's key.
    root: Hmac<Sha256>,
    generations: arc_swap::ArcSwap<Generations>,
}

impl fmt::Debug for TokenSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let generations = self.generations.load();
        f.debug_struct("TokenSealer")
            .field("newest", &generations.newest.number)
            .field("older", &generations.older.len())
            .finish_non_exhaustive()
    }
}

impl TokenSealer {
    /// A sealer keyed from the server secret, with generation 0 only.
    pub fn new(secret: &ServerSecret) -> TokenSealer {
        let key = secret.derive("imds session token v1");
        let root = Hmac::new_from_slice(&key).expect("HMAC accepts 32-byte keys");
        let newest = Sealing {
            number: 0,
            keyed: root.clone(),
            retired_at: u64::MAX,
        };
        TokenSealer {
            root,
            generations: arc_swap::ArcSwap::from_pointee(Generations {
                newest,
                older: Vec::new(),
                epoch: EPOCHS.fetch_add(1, Ordering::Relaxed),
            }),
        }
    }

    /// Puts `generations` (besides generation 0, which is always known) in force at
    /// `now_millis`: the newest seals from now on; each older one is retired
    /// [`MAX_TTL_SECONDS`] (plus the clock slack) after the next one was created, and one
    /// retired by `now_millis` is forgotten, so a token's check looks at the few generations
    /// that can still have live tokens, however many rotations came before.
    pub fn set_generations(&self, generations: &[TokenGeneration], now_millis: u64) {
        let mut all: Vec<(u32, u64, Hmac<Sha256>)> = generations
            .iter()
            .filter(|g| g.number > 0)
            .map(|g| {
                let keyed = Hmac::new_from_slice(&g.key).expect("HMAC accepts keys of any length");
                (g.number, g.created_millis, keyed)
            })
            .collect();
        all.push((0, 0, self.root.clone()));
        all.sort_by_key(|(number, _, _)| std::cmp::Reverse(*number));
        all.dedup_by_key(|(number, _, _)| *number);
        let lifetime = u64::from(MAX_TTL_SECONDS) * 1000 + CLOCK_SLACK_MILLIS;
        let mut sealings = Vec::with_capacity(all.len());
        let mut successor_created: Option<u64> = None;
        for (number, created, keyed) in all {
            let retired_at = successor_created.map_or(u64::MAX, |c| c.saturating_add(lifetime));
            sealings.push(Sealing {
                number,
                keyed,
                retired_at,
            });
            successor_created = Some(created);
        }
        let newest = sealings.remove(0);
        sealings.retain(|sealing| now_millis < sealing.retired_at);
        self.generations.store(std::sync::Arc::new(Generations {
            newest,
            older: sealings,
            epoch: EPOCHS.fetch_add(1, Ordering::Relaxed),
        }));
    }

    /// The generation new tokens are sealed with.
    pub fn newest_generation(&self) -> u32 {
        self.generations.load().newest.number
    }

    /// The generations still accepted at `now_millis`, newest first.
    pub fn accepted_generations(&self, now_millis: u64) -> Vec<u32> {
        let generations = self.generations.load();
        std::iter::once(&generations.newest)
            .chain(&generations.older)
            .filter(|g| now_millis < g.retired_at)
            .map(|g| g.number)
            .collect()
    }

    /// The 8 bytes binding a token to `instance_id` (worth computing once per instance: the
    /// guest path keeps it on the instance's slot).
    pub fn binding(&self, instance_id: &str) -> TokenBinding {
        let mut mac = self.root.clone();
        mac.update(b"instance\0");
        mac.update(instance_id.as_bytes());
        let hash = mac.finalize().into_bytes();
        TokenBinding(hash[..8].try_into().expect("SHA-256 has 32 bytes"))
    }

    /// A token for `instance_id` valid for `ttl` from `now_millis`.
    pub fn issue(&self, instance_id: &str, now_millis: u64, ttl: TokenTtl) -> String {
        self.issue_bound(&self.binding(instance_id), now_millis, ttl)
    }

    /// [`TokenSealer::issue`] for the instance whose binding is `binding`.
    pub fn issue_bound(&self, binding: &TokenBinding, now_millis: u64, ttl: TokenTtl) -> String {
        let generations = self.generations.load();
        let sealing = &generations.newest;
        let mut raw = [0u8; TOKEN_LEN];
        raw[0] = VERSION;
        let expiry = now_millis + u64::from(ttl.seconds()) * 1000;
        raw[1..9].copy_from_slice(&expiry.to_be_bytes());
        raw[BINDING].copy_from_slice(&binding.0);
        raw[GENERATION] = sealing.number as u8;
        rand::thread_rng().fill_bytes(&mut raw[GENERATION + 1..BODY_LEN]);
        let mut mac = sealing.keyed.clone();
        mac.update(&raw[..BODY_LEN]);
        let tag = mac.finalize().into_bytes();
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
        let text: &[u8; TOKEN_TEXT_LEN] = token.try_into().map_err(|_| TokenError::Malformed)?;
        let generations = self.generations.load();
        let at = remembered_at(text);
        let remembered = CHECKED.with_borrow(|checked| {
            checked[at].filter(|seal| {
                seal.epoch == generations.epoch
                    && seal.text == *text
                    && now_millis < seal.retired_at
            })
        });
        let seal = match remembered {
            Some(seal) => seal,
            None => {
                let seal = unseal(&generations, text, now_millis)?;
                CHECKED.with_borrow_mut(|checked| checked[at] = Some(seal));
                seal
            }
        };
        if seal.binding != binding.0 {
            return Err(TokenError::WrongInstance);
        }
        if seal.expiry <= now_millis {
            return Err(TokenError::Expired);
        }
        let left = (seal.expiry - now_millis).div_ceil(1000);
        Ok(left.min(u64::from(MAX_TTL_SECONDS)) as u32)
    }
}

/// Decodes `token` and checks its seal with the generation that sealed it, if it is one of
/// `generations` not yet retired at `now_millis`.
fn unseal(
    generations: &Generations,
    token: &[u8; TOKEN_TEXT_LEN],
    now_millis: u64,
) -> Result<CheckedSeal, TokenError> {
    let mut raw = [0u8; TOKEN_LEN + 2];
    let len = URL_SAFE
        .decode_slice(token, &mut raw)
        .map_err(|_| TokenError::Malformed)?;
    let generation = match raw[0] {
        VERSION => raw[GENERATION],
        VERSION_BEFORE_GENERATIONS => 0,
        _ => return Err(TokenError::Malformed),
    };
    if len != TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let sealing = std::iter::once(&generations.newest)
        .chain(&generations.older)
        .find(|g| g.number as u8 == generation && now_millis < g.retired_at)
        .ok_or(TokenError::BadSeal)?;
    let mut mac = sealing.keyed.clone();
    mac.update(&raw[..BODY_LEN]);
    mac.verify_truncated_left(&raw[BODY_LEN..TOKEN_LEN])
        .map_err(|_| TokenError::BadSeal)?;
    Ok(CheckedSeal {
        text: *token,
        epoch: generations.epoch,
        retired_at: sealing.retired_at,
        binding: raw[BINDING].try_into().expect("8 bytes"),
        expiry: u64::from_be_bytes(raw[1..9].try_into().expect("8 bytes")),
    })
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

    fn generation(number: u32, created_millis: u64) -> TokenGeneration {
        TokenGeneration {
            number,
            created_millis,
            key: zeroize::Zeroizing::new(vec![number as u8; 32]),
        }
    }

    #[test]
    fn a_rotation_keeps_old_tokens_valid_until_they_can_have_expired() {
        let sealer = sealer();
        let old = sealer.issue(ID, T0, TokenTtl(21600));
        let rotated = T0 + 1000;
        sealer.set_generations(&[generation(1, rotated)], rotated);
        assert_eq!(sealer.newest_generation(), 1);
        let new = sealer.issue(ID, rotated, TokenTtl(60));
        assert_eq!(sealer.verify(ID, new.as_bytes(), rotated), Ok(60));
        assert!(sealer.verify(ID, old.as_bytes(), rotated).is_ok());
        assert_eq!(sealer.accepted_generations(rotated), vec![1, 0]);
        let retired = rotated + 21_600_000 + CLOCK_SLACK_MILLIS;
        assert_eq!(sealer.accepted_generations(retired), vec![1]);
        // A host that never learned of generation 1 refuses its tokens as foreign.
        assert_eq!(
            super::TokenSealer::new(&ServerSecret::from_bytes(
                b"test secret for tokens 0123456789",
            ))
            .verify(ID, new.as_bytes(), rotated),
            Err(TokenError::BadSeal)
        );
    }

    #[test]
    fn two_hosts_with_the_same_generations_accept_each_others_tokens() {
        let (a, b) = (sealer(), sealer());
        for host in [&a, &b] {
            host.set_generations(&[generation(2, T0), generation(1, T0 - 1)], T0);
        }
        let token = a.issue(ID, T0, TokenTtl(100));
        assert_eq!(b.verify(ID, token.as_bytes(), T0), Ok(100));
    }

    #[test]
    fn generations_retired_by_now_are_forgotten_however_many_rotations_came_before() {
        let sealer = sealer();
        let hour = 3_600_000;
        // A rotation every hour for a year.
        let rotations: Vec<TokenGeneration> = (1..=8760)
            .map(|n| generation(n, T0 + u64::from(n) * hour))
            .collect();
        let now = T0 + 8760 * hour;
        sealer.set_generations(&rotations, now);
        let accepted = sealer.accepted_generations(now);
        assert_eq!(accepted.first(), Some(&8760));
        assert!(accepted.len() <= 8, "{accepted:?}");
        assert_eq!(sealer.generations.load().older.len(), accepted.len() - 1);
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

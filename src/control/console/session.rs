//! Console sessions and their CSRF tokens, signed with a random key of this process (so a
//! restart signs everyone out, and nothing about them is stored).
//!
//! A session is a random id and an expiry; its cookie is `EXPIRY.ID.MAC`, the MAC an
//! HMAC-SHA256 of both, checked in constant time. Its CSRF token is an HMAC of its id under
//! another label, so it is bound to the session and cannot be forged without the key. Without
//! control keys every request shares the open session, whose CSRF token is fixed for the
//! process.

use hmac::{Hmac, Mac};
use http::{header, HeaderMap, HeaderValue};
use serde::Deserialize;
use sha2::Sha256;

use super::error::ConsoleError;
use crate::control::{hex, ControlKeys};

/// The session cookie's name.
const COOKIE: &str = "imds_console";
/// How long a session lasts, in seconds.
pub const LIFETIME: u64 = 12 * 60 * 60;
/// The id of the session every request shares without control keys.
const OPEN: &str = "open";

/// One console session: who signed in, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    id: String,
    /// Unix seconds after which it is no longer accepted.
    expires: u64,
}

impl Session {
    /// The session of every request when no control keys are configured.
    pub fn open() -> Session {
        Session {
            id: OPEN.to_owned(),
            expires: u64::MAX,
        }
    }
}

/// Why a session cookie is refused (logged at debug, never shown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Not `EXPIRY.ID.MAC`.
    #[error("malformed session cookie")]
    Malformed,
    /// Not signed with this process' key.
    #[error("session cookie signature mismatch")]
    Forged,
    /// Past its expiry.
    #[error("session expired")]
    Expired,
}

/// Issues and checks sessions and CSRF tokens with one secret key.
pub struct Sessions {
    key: [u8; 32],
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    /// Sessions signed with a fresh random key.
    pub fn random() -> Sessions {
        Sessions {
            key: rand::random(),
        }
    }

    fn mac(&self, label: &str, parts: &[&str]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(label.as_bytes());
        for part in parts {
            mac.update(b"|");
            mac.update(part.as_bytes());
        }
        mac
    }

    /// A new session, started at `now` (Unix seconds).
    pub fn issue(&self, now: u64) -> Session {
        Session {
            id: hex(&rand::random::<[u8; 16]>()),
            expires: now + LIFETIME,
        }
    }

    /// The cookie's value for `session`.
    fn cookie_value(&self, session: &Session) -> String {
        let expires = session.expires.to_string();
        let mac = self.mac("session", &[&expires, &session.id]).finalize();
        format!("{expires}.{}.{}", session.id, hex(&mac.into_bytes()))
    }

    /// `Set-Cookie` for `session`: not readable by scripts, never sent cross-site, only to
    /// the console's paths.
    pub fn cookie_header(&self, session: &Session) -> HeaderValue {
        let value = format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/console; Max-Age={LIFETIME}",
            self.cookie_value(session)
        );
        HeaderValue::from_str(&value).expect("a cookie of hex digits and dots is a header value")
    }

    /// The session whose cookie value is `value`, if it is ours and not expired at `now`.
    pub fn verify(&self, value: &str, now: u64) -> Result<Session, SessionError> {
        let mut fields = value.split('.');
        let (Some(expires), Some(id), Some(mac), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(SessionError::Malformed);
        };
        let mac = crate::control::unhex(mac).ok_or(SessionError::Malformed)?;
        self.mac("session", &[expires, id])
            .verify_slice(&mac)
            .map_err(|_| SessionError::Forged)?;
        let expires: u64 = expires.parse().map_err(|_| SessionError::Malformed)?;
        if now >= expires {
            return Err(SessionError::Expired);
        }
        Ok(Session {
            id: id.to_owned(),
            expires,
        })
    }

    /// The CSRF token of `session`.
    pub fn csrf(&self, session: &Session) -> String {
        hex(&self.mac("csrf", &[&session.id]).finalize().into_bytes())
    }

    /// `CsrfMismatch` unless `given` is `session`'s CSRF token (compared in constant time).
    pub fn check_csrf(&self, session: &Session, given: Option<&str>) -> Result<(), ConsoleError> {
        let given = given
            .and_then(crate::control::unhex)
            .ok_or(ConsoleError::CsrfMismatch)?;
        self.mac("csrf", &[&session.id])
            .verify_slice(&given)
            .map_err(|_| ConsoleError::CsrfMismatch)
    }
}

/// `Set-Cookie` that ends the session in the browser.
pub fn expired_cookie() -> HeaderValue {
    HeaderValue::from_static("imds_console=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0")
}

/// The session cookie's value among a request's cookies.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// A sign-in: the control keys, as typed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Login {
    access_key_id: String,
    secret_access_key: String,
}

impl Login {
    /// A sign-in from a JSON body (`Content-Type: application/json`, which a cross-site form
    /// cannot send).
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Login, ConsoleError> {
        super::actions::require_json(headers)?;
        serde_json::from_slice(body).map_err(|e| {
            ConsoleError::BadRequest(format!(
                "A sign-in is JSON with accessKeyId and secretAccessKey: {e}"
            ))
        })
    }

    /// Whether these are `keys` (compared in constant time).
    pub fn matches(&self, keys: &ControlKeys) -> bool {
        let same = |a: &str, b: &str| {
            a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0, |d, (x, y)| d | (x ^ y)) == 0
        };
        let id = same(&self.access_key_id, &keys.access_key_id);
        let secret = same(&self.secret_access_key, &keys.secret_access_key);
        id & secret
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_946_400;

    #[test]
    fn a_session_round_trips_through_its_cookie_until_it_expires() {
        let sessions = Sessions::random();
        let session = sessions.issue(NOW);
        let value = sessions.cookie_value(&session);
        assert_eq!(sessions.verify(&value, NOW), Ok(session.clone()));
        assert_eq!(sessions.verify(&value, NOW + LIFETIME - 1), Ok(session));
        assert_eq!(
            sessions.verify(&value, NOW + LIFETIME),
            Err(SessionError::Expired)
        );
    }

    #[test]
    fn a_tampered_or_foreign_cookie_is_refused() {
        let sessions = Sessions::random();
        let value = sessions.cookie_value(&sessions.issue(NOW));
        let (expires, rest) = value.split_once('.').unwrap();
        let later: u64 = expires.parse::<u64>().unwrap() + LIFETIME;
        assert_eq!(
            sessions.verify(&format!("{later}.{rest}"), NOW),
            Err(SessionError::Forged)
        );
        let other = Sessions::random();
        assert_eq!(other.verify(&value, NOW), Err(SessionError::Forged));
        for broken in ["", "1.2", "1.2.3.4", "1.abc.zz", "x.abc.00"] {
            assert!(sessions.verify(broken, NOW).is_err(), "{broken}");
        }
    }

    #[test]
    fn the_csrf_token_is_bound_to_its_session() {
        let sessions = Sessions::random();
        let (one, two) = (sessions.issue(NOW), sessions.issue(NOW));
        let token = sessions.csrf(&one);
        assert_eq!(sessions.check_csrf(&one, Some(&token)), Ok(()));
        assert_eq!(
            sessions.check_csrf(&two, Some(&token)),
            Err(ConsoleError::CsrfMismatch)
        );
        assert_eq!(
            sessions.check_csrf(&one, None),
            Err(ConsoleError::CsrfMismatch)
        );
        assert_eq!(
            sessions.check_csrf(&one, Some("not hex")),
            Err(ConsoleError::CsrfMismatch)
        );
        let open = Session::open();
        assert_eq!(
            sessions.check_csrf(&open, Some(&sessions.csrf(&open))),
            Ok(())
        );
        assert_ne!(Sessions::random().csrf(&open), sessions.csrf(&open));
    }

    #[test]
    fn the_cookie_is_found_among_others_and_set_with_its_protections() {
        let sessions = Sessions::random();
        let header = sessions.cookie_header(&sessions.issue(NOW));
        let text = header.to_str().unwrap();
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Path=/console",
            "Max-Age=43200",
        ] {
            assert!(text.contains(part), "{text}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; imds_console=v.w.x; b=2"),
        );
        assert_eq!(cookie(&headers), Some("v.w.x"));
        assert_eq!(cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn a_login_matches_only_the_exact_keys() {
        let keys = ControlKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "secret".into(),
        };
        let login = |id: &str, secret: &str| Login {
            access_key_id: id.into(),
            secret_access_key: secret.into(),
        };
        assert!(login("AKIDEXAMPLE", "secret").matches(&keys));
        assert!(!login("AKIDEXAMPLE", "secreT").matches(&keys));
        assert!(!login("AKIDEXAMPLE", "secret2").matches(&keys));
        assert!(!login("AKIDEXAMPLF", "secret").matches(&keys));
    }
}

//! Store locations without their passwords: [`redact`] for messages and [`StoreUrl`], the
//! location as configured, whose `Debug` and `Display` never show the password, so no log line,
//! `--help` or derived `Debug` of a configuration can print it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What stands for a hidden password.
const HIDDEN: &str = "***";

/// A store location as given (`--store`, `IMDS_STORE`, `[server] store`): a PostgreSQL URL or
/// libpq connection string, or a state directory. Shown only redacted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoreUrl(String);

impl StoreUrl {
    /// The location with its password, for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for StoreUrl {
    fn from(text: String) -> StoreUrl {
        StoreUrl(text)
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> Result<StoreUrl, Self::Err> {
        Ok(StoreUrl(text.to_owned()))
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact(&self.0))
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

/// `text` (a `postgres://` URL or a libpq `key=value` connection string) with any password
/// hidden, for messages. Text it cannot read is hidden from that point on.
pub fn redact(text: &str) -> String {
    match text.find("://") {
        Some(at) => redact_url(&text[..at + 3], &text[at + 3..]),
        None => redact_pairs(text),
    }
}

/// A URL: the user info keeps only the user; a `password` query parameter is hidden.
fn redact_url(scheme: &str, rest: &str) -> String {
    // The password may hold `/`, `?` or `@` unescaped: the host starts after the last `@`.
    let (user, after) = match rest.rsplit_once('@') {
        Some((userinfo, after)) => {
            let end = userinfo.find([':', '/', '?']).unwrap_or(userinfo.len());
            (Some(&userinfo[..end]), after)
        }
        None => (None, rest),
    };
    let (authority, tail) = after.split_at(after.find(['/', '?']).unwrap_or(after.len()));
    let mut out = String::from(scheme);
    if let Some(user) = user {
        out.push_str(user);
        out.push('@');
    }
    out.push_str(authority);
    match tail.split_once('?') {
        None => out.push_str(tail),
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if is_password(key) => format!("{key}={HIDDEN}"),
                    _ => pair.to_owned(),
                })
                .collect();
            out.push_str(&pairs.join("&"));
        }
    }
    out
}

/// A libpq connection string: `key = value` pairs, values bare or in single quotes with
/// backslash escapes (`password = 'a b'`).
fn redact_pairs(text: &str) -> String {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        let Some(after_equals) = rest[key_end..].trim_start().strip_prefix('=') else {
            // Not `key=value`: nothing after this point can be told from a password.
            out.push(format!("{key} {HIDDEN}"));
            break;
        };
        let value_text = after_equals.trim_start();
        let Some(value_len) = value_length(value_text) else {
            out.push(format!("{key}={HIDDEN}"));
            break;
        };
        let value = &value_text[..value_len];
        match is_password(key) {
            true => out.push(format!("{key}={HIDDEN}")),
            false => out.push(format!("{key}={value}")),
        }
        rest = value_text[value_len..].trim_start();
    }
    out.join(" ")
}

/// The length of the value at the start of `text`: quoted up to its closing quote, bare up to
/// white space, each with backslash escapes; `None` for a quote never closed.
fn value_length(text: &str) -> Option<usize> {
    let quoted = text.starts_with('\'');
    let mut escaped = false;
    for (at, c) in text.char_indices().skip(usize::from(quoted)) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '\'' if quoted => return Some(at + 1),
            c if !quoted && c.is_whitespace() => return Some(at),
            _ => {}
        }
    }
    (!quoted).then_some(text.len())
}

fn is_password(key: &str) -> bool {
    key.eq_ignore_ascii_case("password")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("postgres://imds:s3cret@db.example:5432/imds?sslmode=require"),
            "postgres://imds@db.example:5432/imds?sslmode=require"
        );
        assert_eq!(
            redact("postgresql://db:5432/imds?password=s3cret&sslmode=disable"),
            "postgresql://db:5432/imds?password=***&sslmode=disable"
        );
        assert_eq!(
            redact("host=db user=imds password=s3cret dbname=imds"),
            "host=db user=imds password=*** dbname=imds"
        );
        assert_eq!(
            redact("host=db password = 'a b\\' c' dbname=imds"),
            "host=db password=*** dbname=imds"
        );
        assert_eq!(
            redact("postgres://imds:pa/ss?w@db:5432/imds"),
            "postgres://imds@db:5432/imds"
        );
        assert_eq!(
            redact("host=db password='never closed"),
            "host=db password=***"
        );
    }

    #[test]
    fn a_store_url_shows_only_redacted() {
        let url: StoreUrl = "postgres://imds:s3cret@db/imds".parse().unwrap();
        assert_eq!(url.to_string(), "postgres://imds@db/imds");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(url.expose(), "postgres://imds:s3cret@db/imds");
    }

    /// A password in libpq's quoted form.
    fn quoted(password: &str) -> String {
        let escaped = password.replace('\\', "\\\\").replace('\'', "\\'");
        format!("'{escaped}'")
    }

    proptest! {
        /// Whatever characters a password has, and wherever it is given, it is never shown.
        #[test]
        fn no_password_survives_redaction(
            secret in "[a-zA-Z0-9 @/?:=&'\\\\%#-]{1,24}",
            form in 0u8..5,
        ) {
            let password = format!("PW{secret}");
            let text = match form {
                0 => format!("postgres://imds:{password}@db:5432/imds"),
                1 => format!("postgresql://db/imds?sslmode=require&password={password}"),
                2 => format!("host=db user=imds password={} dbname=imds", quoted(&password)),
                3 => format!("host=db password = {}", quoted(&password)),
                _ => format!("password={} host=db", quoted(&password)),
            };
            let shown = redact(&text);
            prop_assert!(!shown.contains(&password), "{text} -> {shown}");
            prop_assert!(!shown.contains("PW"), "{text} -> {shown}");
        }
    }
}

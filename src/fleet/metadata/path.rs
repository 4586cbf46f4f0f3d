//! Request paths: which API version and which segments a guest asked for.
//!
//! Empty segments collapse (`//latest//meta-data` is `/latest/meta-data`), a trailing slash is
//! ignored (leaves answer as leaves, directories with their listing), and no path can leave the
//! tree: segments only ever descend (`.` and `..` are plain names that no node has), and nothing
//! is percent-decoded, so `%2e%2e` is just a name that matches nothing. Parsing is one pass over
//! the path with no allocation.

use super::version::ApiVersion;

/// A parsed guest request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestPath<'a> {
    /// `/`: the list of API versions.
    VersionList,
    /// `/latest/api/token` exactly (the token endpoint).
    TokenEndpoint,
    /// Below a version root.
    Metadata(MetadataPath<'a>),
}

/// A path below `/<version>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataPath<'a> {
    /// The version named by the first segment.
    pub version: ApiVersion,
    rest: &'a str,
}

/// Why a path names nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The first segment is not a known API version.
    #[error("unknown API version")]
    UnknownVersion,
}

impl<'a> MetadataPath<'a> {
    /// The path below `version`'s root whose text after the version is `rest`.
    pub fn new(version: ApiVersion, rest: &'a str) -> MetadataPath<'a> {
        MetadataPath { version, rest }
    }

    /// The text after the version (a suffix of the parsed path).
    pub fn rest(&self) -> &'a str {
        self.rest
    }

    /// The segments after the version, without empty ones.
    pub fn segments(&self) -> Segments<'a> {
        Segments(self.rest)
    }
}

/// The non-empty segments of a path, in order: a byte loop, which for names this short beats
/// a general string search.
#[derive(Debug, Clone)]
pub struct Segments<'a>(&'a str);

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.0.as_bytes();
        let Some(start) = bytes.iter().position(|b| *b != b'/') else {
            self.0 = "";
            return None;
        };
        let end = bytes[start..]
            .iter()
            .position(|b| *b == b'/')
            .map_or(bytes.len(), |end| start + end);
        // Both ends are at a '/' or an end of the text: character boundaries.
        let segment = self.0.get(start..end)?;
        self.0 = self.0.get(end..)?;
        Some(segment)
    }
}

/// Parses the path part of a request target (no query string).
pub fn parse(path: &str) -> Result<GuestPath<'_>, PathError> {
    let trimmed = path.trim_start_matches('/');
    if trimmed.is_empty() {
        return Ok(GuestPath::VersionList);
    }
    let end = trimmed.bytes().position(|b| b == b'/');
    let (first, after_version) = trimmed.split_at(end.unwrap_or(trimmed.len()));
    let version = ApiVersion::from_name(first).ok_or(PathError::UnknownVersion)?;
    if version == ApiVersion::LATEST && !path.ends_with('/') {
        let mut rest = Segments(after_version);
        if rest.next() == Some("api") && rest.next() == Some("token") && rest.next().is_none() {
            return Ok(GuestPath::TokenEndpoint);
        }
    }
    Ok(GuestPath::Metadata(MetadataPath {
        version,
        rest: after_version,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn segments(path: &str) -> Vec<&str> {
        match parse(path).unwrap() {
            GuestPath::Metadata(m) => m.segments().collect(),
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn slashes_collapse_and_trailing_slash_is_ignored() {
        assert_eq!(
            segments("/latest/meta-data/placement/availability-zone/"),
            ["meta-data", "placement", "availability-zone"]
        );
        assert_eq!(
            segments("//latest//meta-data///reservation-id"),
            ["meta-data", "reservation-id"]
        );
        assert_eq!(segments("/latest"), Vec::<&str>::new());
        assert_eq!(
            segments("/2021-03-23/dynamic/instance-identity"),
            ["dynamic", "instance-identity"]
        );
    }

    #[test]
    fn root_and_token_endpoint() {
        assert_eq!(parse("/"), Ok(GuestPath::VersionList));
        assert_eq!(parse("//"), Ok(GuestPath::VersionList));
        assert_eq!(parse("/latest/api/token"), Ok(GuestPath::TokenEndpoint));
        assert_eq!(parse("//latest/api/token"), Ok(GuestPath::TokenEndpoint));
        assert!(matches!(
            parse("/latest/api/token/"),
            Ok(GuestPath::Metadata(_))
        ));
        assert!(matches!(
            parse("/2021-03-23/api/token"),
            Ok(GuestPath::Metadata(_))
        ));
    }

    #[test]
    fn nothing_escapes_the_tree() {
        // Dot segments are names, never steps up: they can only fail to match.
        assert_eq!(
            segments("/latest/meta-data/../user-data"),
            ["meta-data", "..", "user-data"]
        );
        assert_eq!(segments("/latest/./meta-data"), [".", "meta-data"]);
        assert_eq!(parse("/../etc/passwd"), Err(PathError::UnknownVersion));
        assert_eq!(parse("/%2e%2e/latest"), Err(PathError::UnknownVersion));
        assert_eq!(
            segments("/latest/meta-data/%2e%2e"),
            ["meta-data", "%2e%2e"]
        );
        assert_eq!(parse("/etc/passwd"), Err(PathError::UnknownVersion));
    }

    #[test]
    fn version_names_are_exact() {
        assert_eq!(parse("/LATEST/meta-data"), Err(PathError::UnknownVersion));
        assert!(
            matches!(parse("/1.0/meta-data"), Ok(GuestPath::Metadata(m)) if m.version == ApiVersion::OLDEST)
        );
    }

    proptest! {
        #[test]
        fn segments_are_the_non_empty_pieces_between_slashes(rest in "[/a-zé.-]{0,30}") {
            let expected: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
            prop_assert_eq!(Segments(&rest).collect::<Vec<_>>(), expected);
        }

        #[test]
        fn parsing_never_panics_and_never_yields_empty_segments(path in "[/a-z0-9.%-]{0,40}") {
            if let Ok(GuestPath::Metadata(m)) = parse(&path) {
                for segment in m.segments() {
                    prop_assert!(!segment.is_empty() && !segment.contains('/'));
                }
            }
        }

        #[test]
        fn extra_slashes_do_not_change_the_meaning(parts in proptest::collection::vec("[a-z0-9-]{1,8}", 0..5), extra in 1usize..4) {
            let plain = format!("/latest/{}", parts.join("/"));
            let sep = "/".repeat(extra);
            let doubled = format!("{sep}latest{sep}{}{sep}", parts.join(&sep));
            let a = parse(&plain).unwrap();
            let b = parse(&doubled).unwrap();
            match (a, b) {
                (GuestPath::Metadata(a), GuestPath::Metadata(b)) => {
                    prop_assert_eq!(a.segments().collect::<Vec<_>>(), b.segments().collect::<Vec<_>>());
                }
                (GuestPath::TokenEndpoint, GuestPath::Metadata(_)) => {} // trailing slash: not the token endpoint
                (a, b) => prop_assert_eq!(a, b),
            }
        }
    }
}

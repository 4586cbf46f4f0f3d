//! The request paths a thread answered last, and what it worked out about each. A guest asks the
//! same few paths again and again (its SDK's token and credentials, an agent polling a leaf),
//! and what a path parses to, the metric class of its route and the node it names in a tree
//! depend on nothing else: the path's text, and the tree, which never changes once built. So
//! each thread keeps them for its last few paths, and a path seen again costs one comparison
//! of its text rather than a parse, a scan for the route's names and a search of the tree.
//!
//! Per thread, so nothing is locked or shared; a few entries, each in the slot a cheap hash of
//! the path picks (a collision only means working a path out again); paths longer than an
//! entry holds are worked out every time.

use std::cell::RefCell;

use crate::fleet::metadata::path::{self, GuestPath, MetadataPath, PathError};
use crate::fleet::metadata::version::ApiVersion;
use crate::fleet::metadata::{Found, MetadataTree};
use crate::metrics::RouteClass;

/// Entries per thread.
const ENTRIES: usize = 8;
/// Longest path remembered.
const LONGEST: usize = 96;

/// What a path parses to, without borrowing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parsed {
    VersionList,
    TokenEndpoint,
    /// Below `version`, the rest of the path starting at byte `rest_at`.
    Metadata {
        version: ApiVersion,
        rest_at: usize,
    },
    UnknownVersion,
}

impl Parsed {
    fn of(path: &str, parsed: &Result<GuestPath<'_>, PathError>) -> Parsed {
        match parsed {
            Ok(GuestPath::VersionList) => Parsed::VersionList,
            Ok(GuestPath::TokenEndpoint) => Parsed::TokenEndpoint,
            Ok(GuestPath::Metadata(metadata)) => Parsed::Metadata {
                version: metadata.version,
                rest_at: path.len() - metadata.rest().len(),
            },
            Err(PathError::UnknownVersion) => Parsed::UnknownVersion,
        }
    }

    /// The parse of `path` this stands for (`None` if `path` cannot hold it).
    fn of_path(self, path: &str) -> Option<Result<GuestPath<'_>, PathError>> {
        Some(match self {
            Parsed::VersionList => Ok(GuestPath::VersionList),
            Parsed::TokenEndpoint => Ok(GuestPath::TokenEndpoint),
            Parsed::Metadata { version, rest_at } => Ok(GuestPath::Metadata(MetadataPath::new(
                version,
                path.get(rest_at..)?,
            ))),
            Parsed::UnknownVersion => Err(PathError::UnknownVersion),
        })
    }
}

/// One remembered path.
#[derive(Debug, Clone, Copy)]
struct Entry {
    len: usize,
    text: [u8; LONGEST],
    parsed: Parsed,
    class: RouteClass,
    /// The tree it was last looked up in, and the node it named there.
    found: Option<(u64, Option<usize>)>,
}

const EMPTY: Option<Entry> = None;

thread_local! {
    static RECENT: RefCell<[Option<Entry>; ENTRIES]> = const { RefCell::new([EMPTY; ENTRIES]) };
}

/// The entry slot of `path`.
fn slot(path: &[u8]) -> usize {
    let last = path.last().copied().unwrap_or(0);
    let middle = path.get(path.len() / 2).copied().unwrap_or(0);
    (path.len() ^ usize::from(last) ^ (usize::from(middle) << 1)) % ENTRIES
}

/// What `path` parses to and the class of its route, remembered if this thread met the path
/// lately.
pub(super) fn parse(path: &str) -> (Result<GuestPath<'_>, PathError>, RouteClass) {
    let bytes = path.as_bytes();
    let at = slot(bytes);
    let known = RECENT.with_borrow(|recent| {
        recent[at]
            .as_ref()
            .filter(|entry| entry.text.get(..entry.len) == Some(bytes))
            .map(|entry| (entry.parsed, entry.class))
    });
    if let Some((parsed, class)) = known {
        if let Some(parsed) = parsed.of_path(path) {
            return (parsed, class);
        }
    }
    let parsed = path::parse(path);
    let class = RouteClass::of(path);
    if bytes.len() <= LONGEST {
        let mut text = [0; LONGEST];
        text[..bytes.len()].copy_from_slice(bytes);
        let entry = Entry {
            len: bytes.len(),
            text,
            parsed: Parsed::of(path, &parsed),
            class,
            found: None,
        };
        RECENT.with_borrow_mut(|recent| recent[at] = Some(entry));
    }
    (parsed, class)
}

/// What `metadata` (parsed from `path`) names in `tree`, remembered if this thread looked the
/// path up in this tree lately.
pub(super) fn find<'t>(
    tree: &'t MetadataTree,
    path: &str,
    metadata: &MetadataPath<'_>,
) -> Option<Found<'t>> {
    let bytes = path.as_bytes();
    let at = slot(bytes);
    let known = RECENT.with_borrow(|recent| {
        recent[at]
            .as_ref()
            .filter(|entry| entry.text.get(..entry.len) == Some(bytes))
            .and_then(|entry| entry.found)
            .filter(|(id, _)| *id == tree.id() && tree.id() != 0)
            .map(|(_, node)| node)
    });
    let node = match known {
        Some(node) => node,
        None => {
            let node = tree.node(metadata.version, metadata.segments());
            RECENT.with_borrow_mut(|recent| {
                let entry = recent[at]
                    .as_mut()
                    .filter(|entry| entry.text.get(..entry.len) == Some(bytes));
                if let Some(entry) = entry {
                    entry.found = Some((tree.id(), node));
                }
            });
            node
        }
    };
    tree.found(node?, metadata.version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::metadata::{Leaf, TreeBuilder};
    use proptest::prelude::*;

    fn tree(value: &str) -> MetadataTree {
        let mut builder = TreeBuilder::default();
        builder
            .text("meta-data/ami-id", "1.0", "ami-1")
            .text("meta-data/instance-id", "1.0", value)
            .text("meta-data/placement/region", "2020-08-24", "us-east-1");
        builder.build()
    }

    fn leaf_text(found: Option<Found<'_>>) -> Option<String> {
        match found? {
            Found::Leaf(Leaf::Text(body)) => Some(String::from_utf8_lossy(body).into_owned()),
            Found::Listing(body) => Some(format!("listing {}", String::from_utf8_lossy(body))),
            Found::Leaf(_) => None,
        }
    }

    fn look_up(tree: &MetadataTree, path: &str) -> Option<String> {
        match parse(path).0 {
            Ok(GuestPath::Metadata(metadata)) => leaf_text(find(tree, path, &metadata)),
            _ => None,
        }
    }

    #[test]
    fn a_path_seen_again_answers_as_the_first_time_in_each_tree() {
        let (a, b) = (tree("i-a"), tree("i-b"));
        for _ in 0..3 {
            assert_eq!(
                look_up(&a, "/latest/meta-data/instance-id").as_deref(),
                Some("i-a")
            );
            assert_eq!(
                look_up(&b, "/latest/meta-data/instance-id").as_deref(),
                Some("i-b")
            );
            assert_eq!(look_up(&a, "/latest/meta-data/nothing"), None);
            assert_eq!(
                look_up(&a, "/2009-04-04/meta-data/placement/region"),
                None,
                "not in that version"
            );
            assert_eq!(
                look_up(&a, "/latest/meta-data/placement/region").as_deref(),
                Some("us-east-1")
            );
        }
        let long = format!("/latest/meta-data/{}", "x/".repeat(60));
        assert_eq!(look_up(&a, &long), None);
        assert_eq!(parse("/latest/api/token").1, RouteClass::Token);
        assert_eq!(parse("/latest/api/token").0, Ok(GuestPath::TokenEndpoint));
    }

    proptest! {
        #[test]
        fn remembered_facts_are_the_facts(
            paths in proptest::collection::vec(
                prop_oneof![
                    Just("/latest/meta-data/instance-id".to_owned()),
                    Just("/latest/meta-data/ami-id/".to_owned()),
                    Just("/latest/meta-data/".to_owned()),
                    Just("/latest/api/token".to_owned()),
                    Just("/".to_owned()),
                    Just("/1.0/meta-data/placement/region".to_owned()),
                    "/[a-z0-9./-]{0,20}",
                ],
                1..40,
            )
        ) {
            let trees = [tree("i-a"), tree("i-b")];
            for (i, path) in paths.iter().enumerate() {
                let (parsed, class) = parse(path);
                prop_assert_eq!(&parsed, &path::parse(path));
                prop_assert_eq!(class, RouteClass::of(path));
                if let Ok(GuestPath::Metadata(metadata)) = parsed {
                    let tree = &trees[i % 2];
                    prop_assert_eq!(
                        leaf_text(find(tree, path, &metadata)),
                        leaf_text(tree.find(metadata.version, metadata.segments()))
                    );
                }
            }
        }
    }
}

//! The metadata tree of one instance: directories and leaves with their bodies prebuilt, and the
//! API version each node appeared in, so one tree answers every dated version.

pub mod build;
pub mod events;
pub mod path;
pub mod render;
pub mod version;

use bytes::Bytes;

use self::version::ApiVersion;

/// What a leaf serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    /// Fixed text (`text/plain`).
    Text(Bytes),
    /// User data (`application/octet-stream`).
    UserData(Bytes),
    /// Rotating credentials, looked up at request time.
    Credentials(CredentialsLeaf),
}

/// Which rotating credentials document a leaf serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialsLeaf {
    /// `iam/security-credentials/<role>`.
    Role,
    /// `iam/security-credentials-extended/<role>`.
    RoleExtended,
    /// `identity-credentials/ec2/security-credentials/ec2-instance`.
    Identity,
}

/// What a path resolves to in one API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found<'a> {
    /// A directory's listing.
    Listing(&'a Bytes),
    /// A leaf.
    Leaf(&'a Leaf),
}

/// The prebuilt tree below a version root (`/<version>/`).
#[derive(Debug, Clone, Default)]
pub struct MetadataTree {
    nodes: Vec<Node>,
    /// Tells this tree (and its clones, which are the same) from every other built in the
    /// process; 0 for an empty default tree.
    id: u64,
}

/// Where the next built tree takes its id.
static TREE_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

#[derive(Debug, Clone)]
struct Node {
    since: ApiVersion,
    kind: NodeKind,
}

#[derive(Debug, Clone)]
enum NodeKind {
    Dir(Dir),
    Leaf(Leaf),
}

#[derive(Debug, Clone, Default)]
struct Dir {
    /// Sorted by name for binary search.
    children: Vec<(Box<str>, usize)>,
    /// Listing bodies, one per version at which the set of visible children changes, ascending.
    listings: Vec<(ApiVersion, Bytes)>,
    /// Names shown in listings where they differ from the path name (`0` → `0=my-key`).
    shown_as: Vec<(Box<str>, Box<str>)>,
    /// Listing order where IMDS does not sort (names not in it follow, sorted).
    listing_order: Vec<Box<str>>,
    /// Children served to whoever asks for them by name but never listed.
    unlisted: Vec<Box<str>>,
}

impl MetadataTree {
    /// Resolves `segments` (empty segments already removed) in `version`. Trailing slashes do not
    /// matter: a leaf answers as itself, a directory with its listing.
    pub fn find<'a, 'p>(
        &'a self,
        version: ApiVersion,
        segments: impl Iterator<Item = &'p str>,
    ) -> Option<Found<'a>> {
        self.found(self.node(version, segments)?, version)
    }

    /// What no other tree is: a tree never changes once built, so what a path names in it can
    /// be remembered by this id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The node `segments` name in `version` (see [`MetadataTree::find`]).
    pub fn node<'p>(
        &self,
        version: ApiVersion,
        segments: impl Iterator<Item = &'p str>,
    ) -> Option<usize> {
        let mut at = 0;
        let mut node = self.nodes.first()?;
        for segment in segments {
            let NodeKind::Dir(dir) = &node.kind else {
                return None;
            };
            let index = dir
                .children
                .binary_search_by(|(name, _)| compare_names(name.as_bytes(), segment.as_bytes()))
                .ok()?;
            at = dir.children[index].1;
            node = &self.nodes[at];
            if node.since > version {
                return None;
            }
        }
        Some(at)
    }

    /// What node `at` (from [`MetadataTree::node`] with `version`) answers in `version`.
    pub fn found(&self, at: usize, version: ApiVersion) -> Option<Found<'_>> {
        match &self.nodes.get(at)?.kind {
            NodeKind::Dir(dir) => dir
                .listings
                .iter()
                .rev()
                .find(|(since, _)| *since <= version)
                .map(|(_, body)| Found::Listing(body)),
            NodeKind::Leaf(leaf) => Some(Found::Leaf(leaf)),
        }
    }
}

/// `a` against `b` as `str` orders them: eight bytes at a time (as big-endian words, which
/// order as their bytes do), then byte by byte. Names here are short and share prefixes
/// (`instance-id`, `instance-type`), where a call to compare memory costs more than this.
fn compare_names(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let (mut a_rest, mut b_rest) = (a, b);
    while let (Some((x, a_next)), Some((y, b_next))) = (
        a_rest.split_first_chunk::<8>(),
        b_rest.split_first_chunk::<8>(),
    ) {
        if x != y {
            return u64::from_be_bytes(*x).cmp(&u64::from_be_bytes(*y));
        }
        (a_rest, b_rest) = (a_next, b_next);
    }
    for (x, y) in a_rest.iter().zip(b_rest) {
        if x != y {
            return x.cmp(y);
        }
    }
    a_rest.len().cmp(&b_rest.len())
}

/// The trees of one instance over time: each serves from its start (clock milliseconds) until
/// the next one's, so what a request sees is decided by its own time, never by a timer.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// Ascending by start; the first starts at 0.
    trees: Vec<(u64, MetadataTree)>,
}

impl Timeline {
    /// The timeline of `trees` (start, tree), the first starting at 0.
    pub fn new(trees: Vec<(u64, MetadataTree)>) -> Timeline {
        debug_assert!(trees.first().is_some_and(|(start, _)| *start == 0));
        debug_assert!(trees.windows(2).all(|w| w[0].0 < w[1].0));
        Timeline { trees }
    }

    /// Whether the tree never changes (no clock reading is needed).
    pub fn is_fixed(&self) -> bool {
        self.trees.len() == 1
    }

    /// The tree serving at `now` (clock milliseconds).
    pub fn at(&self, now: u64) -> &MetadataTree {
        let next = self.trees.partition_point(|(start, _)| *start <= now);
        &self.trees[next.saturating_sub(1)].1
    }

    /// The tree serving now: read from `clock` only when the tree changes over time.
    pub fn current(&self, clock: &dyn crate::clock::Clock) -> &MetadataTree {
        match self.is_fixed() {
            true => &self.trees[0].1,
            false => self.at(clock.now_millis()),
        }
    }
}

/// Builds a [`MetadataTree`] from paths.
#[derive(Debug)]
pub struct TreeBuilder {
    nodes: Vec<Node>,
}

impl Default for TreeBuilder {
    fn default() -> Self {
        TreeBuilder {
            nodes: vec![Node {
                since: ApiVersion::OLDEST,
                kind: NodeKind::Dir(Dir::default()),
            }],
        }
    }
}

impl TreeBuilder {
    /// Adds a leaf at `path` (`meta-data/placement/region`) that exists from API version `since`
    /// (a release date or `1.0`). Missing directories are created.
    pub fn leaf(&mut self, path: &str, since: &str, leaf: Leaf) -> &mut Self {
        let since = ApiVersion::first_including(since);
        let (parent, name) = path.rsplit_once('/').map_or(("", path), |(p, n)| (p, n));
        let dir = self.dir(parent);
        let index = self.nodes.len();
        self.nodes.push(Node {
            since,
            kind: NodeKind::Leaf(leaf),
        });
        self.attach(dir, name, index);
        self
    }

    /// Adds a text leaf.
    pub fn text(&mut self, path: &str, since: &str, value: impl Into<String>) -> &mut Self {
        self.leaf(path, since, Leaf::Text(Bytes::from(value.into())))
    }

    /// Shows the directory `path` as `shown` in its parent's listing (`public-keys/0` → `0=my-key`).
    pub fn show_as(&mut self, path: &str, shown: &str) -> &mut Self {
        let (parent, name) = path.rsplit_once('/').map_or(("", path), |(p, n)| (p, n));
        let dir = self.dir(parent);
        if let NodeKind::Dir(dir) = &mut self.nodes[dir].kind {
            dir.shown_as.push((name.into(), shown.into()));
        }
        self
    }

    /// Lists the directory `path` in `order` instead of sorted, as IMDS does for a few.
    pub fn list_in_order(&mut self, path: &str, order: &[&str]) -> &mut Self {
        let dir = self.dir(path);
        if let NodeKind::Dir(dir) = &mut self.nodes[dir].kind {
            dir.listing_order = order.iter().map(|&name| name.into()).collect();
        }
        self
    }

    /// Serves `path` to whoever asks for it by name, but leaves it out of its parent's listing,
    /// so that crawlers (cloud-init) never reach it.
    pub fn unlisted(&mut self, path: &str) -> &mut Self {
        let (parent, name) = path.rsplit_once('/').map_or(("", path), |(p, n)| (p, n));
        let dir = self.dir(parent);
        if let NodeKind::Dir(dir) = &mut self.nodes[dir].kind {
            dir.unlisted.push(name.into());
        }
        self
    }

    /// The directory at `path`, created (with its parents) if missing.
    fn dir(&mut self, path: &str) -> usize {
        let mut current = 0;
        for name in path.split('/').filter(|s| !s.is_empty()) {
            let existing = match &self.nodes[current].kind {
                NodeKind::Dir(dir) => dir
                    .children
                    .iter()
                    .find(|(n, _)| &**n == name)
                    .map(|(_, i)| *i),
                NodeKind::Leaf(_) => panic!("metadata path {path:?} passes through a leaf"),
            };
            current = match existing {
                Some(index) => index,
                None => {
                    let index = self.nodes.len();
                    self.nodes.push(Node {
                        since: ApiVersion::LATEST,
                        kind: NodeKind::Dir(Dir::default()),
                    });
                    self.attach(current, name, index);
                    index
                }
            };
        }
        current
    }

    fn attach(&mut self, dir: usize, name: &str, child: usize) {
        let NodeKind::Dir(dir) = &mut self.nodes[dir].kind else {
            panic!("metadata node {name:?} attached under a leaf");
        };
        assert!(
            dir.children.iter().all(|(n, _)| &**n != name),
            "metadata path segment {name:?} added twice"
        );
        dir.children.push((name.into(), child));
    }

    /// Finishes the tree: directories appear with their oldest child, children are sorted, and
    /// listings are rendered for each version at which they change.
    pub fn build(mut self) -> MetadataTree {
        self.finish(0);
        let id = TREE_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        MetadataTree {
            nodes: self.nodes,
            id,
        }
    }

    /// Returns the node's `since`, after finishing its subtree.
    fn finish(&mut self, index: usize) -> ApiVersion {
        let NodeKind::Dir(dir) = &self.nodes[index].kind else {
            return self.nodes[index].since;
        };
        let children: Vec<(Box<str>, usize)> = dir.children.clone();
        let unlisted = dir.unlisted.clone();
        let mut entries = Vec::with_capacity(children.len());
        for (name, child) in &children {
            let since = self.finish(*child);
            if unlisted.contains(name) {
                continue;
            }
            let is_dir = matches!(self.nodes[*child].kind, NodeKind::Dir(_));
            entries.push((name.clone(), since, is_dir));
        }
        let NodeKind::Dir(dir) = &mut self.nodes[index].kind else {
            unreachable!("checked above");
        };
        dir.children.sort_by(|a, b| a.0.cmp(&b.0));
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let rank = |name: &str| dir.listing_order.iter().position(|n| &**n == name);
        entries.sort_by_key(|(name, _, _)| rank(name).unwrap_or(usize::MAX));
        let mut cuts: Vec<ApiVersion> = entries.iter().map(|(_, since, _)| *since).collect();
        cuts.sort();
        cuts.dedup();
        dir.listings = cuts
            .iter()
            .map(|&cut| {
                let shown = entries.iter().filter(|(_, since, _)| *since <= cut).map(
                    |(name, _, is_dir)| {
                        let label = dir
                            .shown_as
                            .iter()
                            .find(|(n, _)| n == name)
                            .map_or(&**name, |(_, s)| &**s);
                        // A renamed entry (`0=my-key`) is listed without the directory slash, as IMDS does.
                        let renamed = dir.shown_as.iter().any(|(n, _)| n == name);
                        // The version root lists `dynamic`, `meta-data` without slashes, as IMDS does.
                        if *is_dir && !renamed && index != 0 {
                            format!("{label}/")
                        } else {
                            label.to_owned()
                        }
                    },
                );
                (cut, render::lines(shown))
            })
            .collect();
        let oldest = cuts.first().copied().unwrap_or(ApiVersion::LATEST);
        let node = &mut self.nodes[index];
        if index != 0 {
            node.since = oldest;
        }
        node.since
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn names_compare_as_strings_do(a in "(instance-)?[a-zé0-9.-]{0,12}", b in "(instance-)?[a-zé0-9.-]{0,12}") {
            prop_assert_eq!(compare_names(a.as_bytes(), b.as_bytes()), a.as_str().cmp(b.as_str()));
            prop_assert_eq!(compare_names(a.as_bytes(), a.as_bytes()), std::cmp::Ordering::Equal);
        }
    }

    fn tree() -> MetadataTree {
        let mut builder = TreeBuilder::default();
        builder
            .text("meta-data/ami-id", "1.0", "ami-1")
            .text(
                "meta-data/placement/availability-zone",
                "2008-02-01",
                "us-east-1a",
            )
            .text("meta-data/placement/region", "2020-08-24", "us-east-1")
            .text(
                "meta-data/public-keys/0/openssh-key",
                "1.0",
                "ssh-ed25519 AAAA k",
            )
            .show_as("meta-data/public-keys/0", "0=k")
            .text("user-data", "1.0", "#!");
        builder.build()
    }

    fn get<'a>(tree: &'a MetadataTree, version: &str, path: &str) -> Option<&'a [u8]> {
        let version = version::ApiVersion::from_name(version).unwrap();
        match tree.find(version, path.split('/').filter(|s| !s.is_empty()))? {
            Found::Listing(body) => Some(body),
            Found::Leaf(Leaf::Text(body) | Leaf::UserData(body)) => Some(body),
            Found::Leaf(Leaf::Credentials(_)) => None,
        }
    }

    #[test]
    fn listings_are_sorted_with_slashes_on_directories() {
        let tree = tree();
        assert_eq!(get(&tree, "latest", "").unwrap(), b"meta-data\nuser-data");
        assert_eq!(
            get(&tree, "latest", "meta-data/").unwrap(),
            b"ami-id\nplacement/\npublic-keys/"
        );
        assert_eq!(
            get(&tree, "latest", "meta-data/public-keys").unwrap(),
            b"0=k"
        );
        assert_eq!(
            get(&tree, "latest", "meta-data/public-keys/0/").unwrap(),
            b"openssh-key"
        );
    }

    #[test]
    fn newer_categories_are_absent_in_older_versions() {
        let tree = tree();
        assert_eq!(
            get(&tree, "latest", "meta-data/placement").unwrap(),
            b"availability-zone\nregion"
        );
        assert_eq!(
            get(&tree, "2020-10-27", "meta-data/placement/region").unwrap(),
            b"us-east-1"
        );
        assert_eq!(
            get(&tree, "2019-10-01", "meta-data/placement").unwrap(),
            b"availability-zone"
        );
        assert_eq!(get(&tree, "2019-10-01", "meta-data/placement/region"), None);
        assert_eq!(
            get(&tree, "1.0", "meta-data").unwrap(),
            b"ami-id\npublic-keys/"
        );
        assert_eq!(get(&tree, "1.0", "meta-data/placement"), None);
    }

    #[test]
    fn leaves_do_not_have_children() {
        let tree = tree();
        assert_eq!(
            get(&tree, "latest", "meta-data/ami-id/"),
            Some(&b"ami-1"[..])
        );
        assert_eq!(get(&tree, "latest", "meta-data/ami-id/x"), None);
        assert_eq!(get(&tree, "latest", "meta-data/nothing"), None);
    }
}

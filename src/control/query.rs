//! EC2 Query requests: a form-encoded body (or query string) of `Action`, `Version` and
//! parameters, with lists spelled `Name.1`, `Name.2`, ... and structures `Tag.1.Key`.
//!
//! A request is indexed once, when it is parsed, so that what actions ask of it costs no more
//! than what they get back: `get` is one hash lookup, and `list`, `members` and `filters` walk
//! only the parameters under their prefix. Actions ask in loops (`Filter.N.Name` for each `N`),
//! and a body of 1 MiB holds tens of thousands of parameters, so a scan of every parameter per
//! question would cost seconds on the threads that also answer guests.
//!
//! The index is a tree of the names' dot-separated segments: the node of a prefix
//! (`Filter.3.Value`) records, in parameter order, each parameter that is the prefix and one
//! index (`Filter.3.Value.1`, for `list`), and each index with more after it (`Filter.3.Name`,
//! for `members`). Indexes are read as EC2 lists are numbered (`u32`), so `Tag.01.Key` is index
//! 1; names are compared as given.

use std::collections::HashMap;

use super::error::ControlError;

/// Most ids (`InstanceId.N`, `ResourceId.N`) one request may name, as on EC2.
pub const MAX_IDS: usize = 1000;
/// Most filters one request may carry.
pub const MAX_FILTERS: usize = 200;
/// Most filter values one request may carry, counted over all its filters, as on EC2.
pub const MAX_FILTER_VALUES: usize = 200;
/// Longest filter value EC2 accepts, in characters.
pub const MAX_FILTER_VALUE_CHARS: usize = 255;

/// One parsed Query request.
#[derive(Debug, Clone, Default)]
pub struct QueryRequest {
    params: Vec<(String, String)>,
    /// Each name's first parameter.
    first: HashMap<String, usize>,
    /// The first parameter whose name an earlier one has already.
    repeated: Option<usize>,
    /// The prefix tree; node 0 is the root, whose children are the names' first segments.
    nodes: Vec<Node>,
}

/// What the parameters under one prefix hold.
#[derive(Debug, Clone, Default)]
struct Node {
    /// `prefix.N` parameters: `N` and the parameter, in parameter order.
    items: Vec<(u32, usize)>,
    /// `N` of each `prefix.N.<anything>` parameter, in parameter order (repeats included).
    members: Vec<u32>,
    /// The node of each longer prefix, by the segment it adds.
    children: HashMap<Box<str>, usize>,
}

impl PartialEq for QueryRequest {
    /// Requests are equal when their parameters are (the index follows from them).
    fn eq(&self, other: &QueryRequest) -> bool {
        self.params == other.params
    }
}

impl Eq for QueryRequest {}

impl QueryRequest {
    /// Parses a form-encoded body (`Action=DescribeInstances&Version=2016-11-15&...`).
    pub fn parse(body: &[u8]) -> QueryRequest {
        QueryRequest::from_params(form_urlencoded::parse(body).into_owned().collect())
    }

    /// Indexes `params`, in linear time.
    pub(super) fn from_params(params: Vec<(String, String)>) -> QueryRequest {
        let mut request = QueryRequest {
            first: HashMap::with_capacity(params.len()),
            repeated: None,
            nodes: vec![Node::default()],
            params: Vec::new(),
        };
        for (position, (name, _)) in params.iter().enumerate() {
            if request.first.contains_key(name.as_str()) {
                request.repeated = request.repeated.or(Some(position));
            } else {
                request.first.insert(name.clone(), position);
            }
            request.index(name, position);
        }
        request.params = params;
        request
    }

    /// Records `name` (the parameter at `position`) under each of its prefixes that an index
    /// follows. Nodes are made only down to the last index: below it nothing is asked.
    fn index(&mut self, name: &str, position: usize) {
        let segments: Vec<&str> = name.split('.').collect();
        let Some(last_index) = segments
            .iter()
            .rposition(|s| s.parse::<u32>().is_ok())
            .filter(|&at| at > 0)
        else {
            return;
        };
        let mut node = 0;
        for (at, segment) in segments.iter().enumerate().take(last_index + 1) {
            if at > 0 {
                if let Ok(n) = segment.parse::<u32>() {
                    match at + 1 == segments.len() {
                        true => self.nodes[node].items.push((n, position)),
                        false => self.nodes[node].members.push(n),
                    }
                }
            }
            if at == last_index {
                break;
            }
            node = match self.nodes[node].children.get(*segment) {
                Some(&child) => child,
                None => {
                    let child = self.nodes.len();
                    self.nodes[node].children.insert(Box::from(*segment), child);
                    self.nodes.push(Node::default());
                    child
                }
            };
        }
    }

    /// The node of `prefix`, if any parameter has an index after it.
    fn node(&self, prefix: &str) -> Option<&Node> {
        let mut node = &self.nodes[0];
        for segment in prefix.split('.') {
            node = &self.nodes[*node.children.get(segment)?];
        }
        Some(node)
    }

    /// The single value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let position = *self.first.get(name)?;
        Some(self.params[position].1.as_str())
    }

    /// The value of `name`, or `MissingParameter`.
    pub fn require(&self, name: &str) -> Result<&str, ControlError> {
        self.get(name)
            .ok_or_else(|| ControlError::MissingParameter(name.to_owned()))
    }

    /// `Action`.
    pub fn action(&self) -> Result<&str, ControlError> {
        self.require("Action")
    }

    /// Refuses a parameter given twice: which value would count depends on an order a SigV4
    /// signature does not cover (it signs the parameters sorted).
    pub fn each_once(&self) -> Result<(), ControlError> {
        match self.repeated {
            Some(position) => Err(ControlError::InvalidParameterCombination(format!(
                "The parameter {} is given more than once",
                self.params[position].0
            ))),
            None => Ok(()),
        }
    }

    /// A list parameter: the values of `prefix.1`, `prefix.2`, ... in index order.
    pub fn list(&self, prefix: &str) -> Vec<&str> {
        let Some(node) = self.node(prefix) else {
            return Vec::new();
        };
        let mut items = node.items.clone();
        // Stable: one index given twice (`.1` and `.01`) keeps the parameters' order.
        items.sort_by_key(|(index, _)| *index);
        items
            .into_iter()
            .map(|(_, position)| self.params[position].1.as_str())
            .collect()
    }

    /// [`QueryRequest::list`], refused with EC2's `InvalidRequest` when it has more than `most`
    /// values (`what` names them in the message), before anything is done with them.
    pub fn list_at_most(
        &self,
        prefix: &str,
        most: usize,
        what: &str,
    ) -> Result<Vec<&str>, ControlError> {
        let count = self.node(prefix).map_or(0, |node| node.items.len());
        if count > most {
            return Err(ControlError::InvalidRequest(format!(
                "{count} exceeds the maximum number of {what} that can be specified ({most}). \
                 Please specify at most {most} {what}."
            )));
        }
        Ok(self.list(prefix))
    }

    /// The indexes `N` present as `prefix.N.<anything>`, ascending.
    pub fn members(&self, prefix: &str) -> Vec<u32> {
        let Some(node) = self.node(prefix) else {
            return Vec::new();
        };
        let mut indexes = node.members.clone();
        indexes.sort_unstable();
        indexes.dedup();
        indexes
    }

    /// `Filter.N.Name` with its `Filter.N.Value.M` values. EC2's limits are checked first, so a
    /// request over them costs nothing more: at most [`MAX_FILTERS`] filters and
    /// [`MAX_FILTER_VALUES`] values in all, each at most [`MAX_FILTER_VALUE_CHARS`] long
    /// (`FilterLimitExceeded`).
    pub fn filters(&self) -> Result<Vec<(String, Vec<String>)>, ControlError> {
        let members = self.members("Filter");
        if members.len() > MAX_FILTERS {
            return Err(ControlError::FilterLimitExceeded(format!(
                "The maximum number of filters specified on a single call is {MAX_FILTERS}"
            )));
        }
        let values: Vec<Vec<&str>> = members
            .iter()
            .map(|n| self.list(&format!("Filter.{n}.Value")))
            .collect();
        if values.iter().map(Vec::len).sum::<usize>() > MAX_FILTER_VALUES {
            return Err(ControlError::FilterLimitExceeded(format!(
                "The maximum number of filter values specified on a single call is {MAX_FILTER_VALUES}"
            )));
        }
        if values
            .iter()
            .flatten()
            .any(|value| value.chars().nth(MAX_FILTER_VALUE_CHARS).is_some())
        {
            return Err(ControlError::FilterLimitExceeded(format!(
                "The maximum length for a filter value is {MAX_FILTER_VALUE_CHARS} characters"
            )));
        }
        members
            .into_iter()
            .zip(values)
            .map(|(n, values)| {
                let name = self.require(&format!("Filter.{n}.Name"))?.to_owned();
                Ok((name, values.into_iter().map(str::to_owned).collect()))
            })
            .collect()
    }

    /// Every parameter whose name starts with `prefix` and a dot, that start cut off, in
    /// order (a scan of every parameter: for actions that take a whole structure).
    pub fn under(&self, prefix: &str) -> Vec<(String, String)> {
        self.params
            .iter()
            .filter_map(|(name, value)| {
                let rest = name.strip_prefix(prefix)?.strip_prefix('.')?;
                Some((rest.to_owned(), value.clone()))
            })
            .collect()
    }

    /// Every parameter, in order.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// Every parameter but `name`, in order.
    pub fn without(&self, name: &str) -> Vec<(String, String)> {
        self.params
            .iter()
            .filter(|(key, _)| key != name)
            .cloned()
            .collect()
    }

    /// `true` when `DryRun=true`.
    pub fn dry_run(&self) -> bool {
        self.get("DryRun")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The obvious answers, by scanning every parameter per question: what the index must
    /// agree with.
    mod reference {
        use super::super::{MAX_FILTERS, MAX_FILTER_VALUES, MAX_FILTER_VALUE_CHARS};
        use crate::control::error::ControlError;

        pub fn get<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
            params
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        }

        pub fn each_once(params: &[(String, String)]) -> Result<(), ControlError> {
            for (at, (name, _)) in params.iter().enumerate() {
                if params[..at].iter().any(|(earlier, _)| earlier == name) {
                    return Err(ControlError::InvalidParameterCombination(format!(
                        "The parameter {name} is given more than once"
                    )));
                }
            }
            Ok(())
        }

        pub fn list<'a>(params: &'a [(String, String)], prefix: &str) -> Vec<&'a str> {
            let mut items: Vec<(u32, &str)> = params
                .iter()
                .filter_map(|(key, value)| {
                    let index = key.strip_prefix(prefix)?.strip_prefix('.')?;
                    Some((index.parse().ok()?, value.as_str()))
                })
                .collect();
            items.sort_by_key(|(index, _)| *index);
            items.into_iter().map(|(_, value)| value).collect()
        }

        pub fn members(params: &[(String, String)], prefix: &str) -> Vec<u32> {
            let mut indexes: Vec<u32> = params
                .iter()
                .filter_map(|(key, _)| {
                    let rest = key.strip_prefix(prefix)?.strip_prefix('.')?;
                    rest.split_once('.')?.0.parse().ok()
                })
                .collect();
            indexes.sort_unstable();
            indexes.dedup();
            indexes
        }

        pub fn filters(
            params: &[(String, String)],
        ) -> Result<Vec<(String, Vec<String>)>, ControlError> {
            let members = members(params, "Filter");
            if members.len() > MAX_FILTERS {
                return Err(ControlError::FilterLimitExceeded(format!(
                    "The maximum number of filters specified on a single call is {MAX_FILTERS}"
                )));
            }
            let values: Vec<Vec<&str>> = members
                .iter()
                .map(|n| list(params, &format!("Filter.{n}.Value")))
                .collect();
            if values.iter().map(Vec::len).sum::<usize>() > MAX_FILTER_VALUES {
                return Err(ControlError::FilterLimitExceeded(format!(
                    "The maximum number of filter values specified on a single call is {MAX_FILTER_VALUES}"
                )));
            }
            if values
                .iter()
                .flatten()
                .any(|value| value.chars().count() > MAX_FILTER_VALUE_CHARS)
            {
                return Err(ControlError::FilterLimitExceeded(format!(
                    "The maximum length for a filter value is {MAX_FILTER_VALUE_CHARS} characters"
                )));
            }
            members
                .into_iter()
                .zip(values)
                .map(|(n, values)| {
                    let name = get(params, &format!("Filter.{n}.Name")).ok_or_else(|| {
                        ControlError::MissingParameter(format!("Filter.{n}.Name"))
                    })?;
                    Ok((
                        name.to_owned(),
                        values.into_iter().map(str::to_owned).collect(),
                    ))
                })
                .collect()
        }
    }

    /// Names made of segments that collide on purpose: indexes spelled two ways (`1`, `01`,
    /// `+1`), one too large for an index, empty segments, and the words actions ask for.
    fn name() -> impl Strategy<Value = String> {
        let segment = prop::sample::select(vec![
            "Filter",
            "Value",
            "Name",
            "Tag",
            "Key",
            "1",
            "2",
            "3",
            "01",
            "+1",
            "",
            "x",
            "4294967296",
        ]);
        let any = prop::collection::vec(segment, 1..6).prop_map(|segments| segments.join("."));
        let index = || prop::sample::select(vec!["1", "2", "01", "3"]);
        let filter = (index(), prop::option::of(index())).prop_map(|(n, m)| match m {
            Some(m) => format!("Filter.{n}.Value.{m}"),
            None => format!("Filter.{n}.Name"),
        });
        prop_oneof![any, filter]
    }

    fn params() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec((name(), "[a-c]{0,3}"), 0..40)
    }

    proptest! {
        #[test]
        fn the_index_answers_as_a_scan_of_every_parameter(
            params in params(),
            asked in prop::collection::vec(name(), 0..10),
        ) {
            let request = QueryRequest::from_params(params.clone());
            // Every name given, each of its dot-separated prefixes, and names never given.
            let mut names: Vec<String> = asked;
            for (name, _) in &params {
                names.extend(name.match_indices('.').map(|(at, _)| name[..at].to_owned()));
                names.push(name.clone());
            }
            for name in &names {
                prop_assert_eq!(request.get(name), reference::get(&params, name), "get {}", name);
                prop_assert_eq!(request.list(name), reference::list(&params, name), "list {}", name);
                prop_assert_eq!(
                    request.members(name),
                    reference::members(&params, name),
                    "members {}",
                    name
                );
            }
            prop_assert_eq!(request.filters(), reference::filters(&params));
            prop_assert_eq!(request.each_once(), reference::each_once(&params));
        }

        #[test]
        fn parsing_indexes_whatever_the_body_says(body in "[A-Za-z0-9.=&%+]{0,200}") {
            let request = QueryRequest::parse(body.as_bytes());
            let params: Vec<(String, String)> =
                form_urlencoded::parse(body.as_bytes()).into_owned().collect();
            prop_assert_eq!(request.each_once(), reference::each_once(&params));
            prop_assert_eq!(request.filters(), reference::filters(&params));
            for (name, _) in &params {
                prop_assert_eq!(request.get(name), reference::get(&params, name));
                prop_assert_eq!(request.list(name), reference::list(&params, name));
                prop_assert_eq!(request.members(name), reference::members(&params, name));
            }
        }
    }

    /// `DescribeInstances` with `filters` filters of `values` values each.
    fn with_filters(filters: usize, values: usize, value: &str) -> QueryRequest {
        let mut body = String::from("Action=DescribeInstances");
        for n in 1..=filters {
            body.push_str(&format!("&Filter.{n}.Name=tag-key"));
            for m in 1..=values {
                body.push_str(&format!("&Filter.{n}.Value.{m}={value}"));
            }
        }
        QueryRequest::parse(body.as_bytes())
    }

    #[test]
    fn filters_up_to_ec2s_limits_are_taken() {
        assert_eq!(with_filters(2, 100, "a").filters().unwrap().len(), 2);
        assert_eq!(with_filters(200, 1, "a").filters().unwrap().len(), 200);
        assert_eq!(
            with_filters(MAX_FILTERS, 0, "a").filters().unwrap().len(),
            200
        );
        let longest = "é".repeat(MAX_FILTER_VALUE_CHARS);
        assert_eq!(
            with_filters(1, 1, &longest).filters().unwrap()[0].1,
            [longest]
        );
    }

    #[test]
    fn filters_beyond_ec2s_limits_are_refused_with_its_code() {
        for (request, message) in [
            (
                with_filters(3, 67, "a"),
                "The maximum number of filter values specified on a single call is 200",
            ),
            (
                with_filters(1, 201, "a"),
                "The maximum number of filter values specified on a single call is 200",
            ),
            (
                with_filters(201, 0, "a"),
                "The maximum number of filters specified on a single call is 200",
            ),
            (
                with_filters(1, 1, &"a".repeat(256)),
                "The maximum length for a filter value is 255 characters",
            ),
        ] {
            let refused = request.filters().unwrap_err();
            assert_eq!(refused.code(), "FilterLimitExceeded");
            assert_eq!(refused.to_string(), message);
        }
    }

    #[test]
    fn more_ids_than_ec2_takes_are_refused_before_any_is_read() {
        let body: String = (1..=MAX_IDS + 1)
            .map(|n| format!("&InstanceId.{n}=i-{n:017x}"))
            .collect();
        let request = QueryRequest::parse(body.as_bytes());
        let refused = request
            .list_at_most("InstanceId", MAX_IDS, "instance IDs")
            .unwrap_err();
        assert_eq!(refused.code(), "InvalidRequest");
        assert!(refused.to_string().starts_with("1001 exceeds"), "{refused}");
        let taken = request.list_at_most("InstanceId", MAX_IDS + 1, "instance IDs");
        assert_eq!(taken.unwrap().len(), MAX_IDS + 1);
    }

    #[test]
    fn lists_and_filters_come_out_in_index_order() {
        let request = QueryRequest::parse(
            b"Action=DescribeInstances&InstanceId.2=i-b&InstanceId.1=i-a\
              &Filter.2.Name=tag%3AName&Filter.2.Value.1=web&Filter.1.Name=instance-id\
              &Filter.1.Value.2=i-2&Filter.1.Value.1=i-1",
        );
        assert_eq!(request.action().unwrap(), "DescribeInstances");
        assert_eq!(request.list("InstanceId"), ["i-a", "i-b"]);
        assert_eq!(
            request.filters().unwrap(),
            [
                (
                    "instance-id".to_owned(),
                    vec!["i-1".to_owned(), "i-2".to_owned()]
                ),
                ("tag:Name".to_owned(), vec!["web".to_owned()]),
            ]
        );
        assert!(!request.dry_run());
    }

    #[test]
    fn a_parameter_given_twice_is_refused_whatever_its_values() {
        for body in [
            &b"Action=ModifyInstanceMetadataOptions&HttpTokens=required&HttpTokens=optional"[..],
            b"Action=TerminateInstances&InstanceId.1=i-a&InstanceId.1=i-a",
            b"Action=DescribeInstances&Action=TerminateInstances",
        ] {
            let refused = QueryRequest::parse(body).each_once().unwrap_err();
            assert_eq!(refused.code(), "InvalidParameterCombination", "{refused}");
        }
        let once = QueryRequest::parse(b"Action=TerminateInstances&InstanceId.1=a&InstanceId.2=b");
        assert_eq!(once.each_once(), Ok(()));
    }

    #[test]
    fn a_missing_parameter_is_named() {
        let request = QueryRequest::parse(b"Version=2016-11-15");
        assert_eq!(
            request.action().unwrap_err(),
            ControlError::MissingParameter("Action".into())
        );
    }
}

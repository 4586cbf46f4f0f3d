//! What a control request asks for, as the policies see it: the action, the resources it
//! touches, and the condition keys with their values.

use std::collections::BTreeMap;

/// Condition keys the control API fills in, spelled as AWS documents them. Keys are compared
/// ignoring case, so these spellings are for reading, not a requirement.
pub mod key {
    /// `required` or `optional`: the `HttpTokens` a `RunInstances` request asks for.
    pub const METADATA_HTTP_TOKENS: &str = "ec2:MetadataHttpTokens";
    /// The `HttpPutResponseHopLimit` a `RunInstances` request asks for (a number).
    pub const METADATA_HTTP_PUT_RESPONSE_HOP_LIMIT: &str = "ec2:MetadataHttpPutResponseHopLimit";
    /// `enabled` or `disabled`: the `HttpEndpoint` a `RunInstances` request asks for.
    pub const METADATA_HTTP_ENDPOINT: &str = "ec2:MetadataHttpEndpoint";
    /// The instance type a `RunInstances` request asks for.
    pub const INSTANCE_TYPE: &str = "ec2:InstanceType";
    /// The keys of the tags a request applies (multivalued).
    pub const TAG_KEYS: &str = "aws:TagKeys";
    /// Followed by a tag key: the value the request gives that tag.
    pub const REQUEST_TAG_PREFIX: &str = "aws:RequestTag/";
    /// Followed by a parameter name (`HttpTokens`, `HttpPutResponseHopLimit`, `HttpEndpoint`):
    /// the value a `ModifyInstanceMetadataOptions` request sets, absent when it sets none.
    pub const ATTRIBUTE_PREFIX: &str = "ec2:Attribute/";
}

/// A request to decide: `ec2:RunInstances` on some ARNs with condition key values.
///
/// Condition keys are case-insensitive, as in IAM. Every key holds a list of values: a
/// single-valued key (`ec2:MetadataHttpTokens`) holds one, a multivalued key (`aws:TagKeys`)
/// any number. A key with no values is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    action: String,
    resources: Vec<String>,
    values: BTreeMap<String, Vec<String>>,
}

impl RequestContext {
    /// A request for `action` (`service:Name`, e.g. `ec2:RunInstances`), with no resources or
    /// keys yet.
    pub fn new(action: impl Into<String>) -> RequestContext {
        RequestContext {
            action: action.into(),
            ..RequestContext::default()
        }
    }

    /// Adds a resource the request touches, by ARN.
    pub fn with_resource(mut self, arn: impl Into<String>) -> RequestContext {
        self.resources.push(arn.into());
        self
    }

    /// Adds `value` to condition key `key`.
    pub fn with_value(mut self, key: &str, value: impl Into<String>) -> RequestContext {
        self.values
            .entry(key.to_lowercase())
            .or_default()
            .push(value.into());
        self
    }

    /// Adds each of `values` to condition key `key` (none leaves the key absent).
    pub fn with_values<I, S>(mut self, key: &str, values: I) -> RequestContext
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let list = self.values.entry(key.to_lowercase()).or_default();
        list.extend(values.into_iter().map(Into::into));
        if list.is_empty() {
            self.values.remove(&key.to_lowercase());
        }
        self
    }

    /// Adds a tag the request applies: `aws:RequestTag/<tag_key>` holds `value` and
    /// `aws:TagKeys` gains `tag_key`.
    pub fn with_request_tag(self, tag_key: &str, value: impl Into<String>) -> RequestContext {
        self.with_value(&format!("{}{tag_key}", key::REQUEST_TAG_PREFIX), value)
            .with_value(key::TAG_KEYS, tag_key)
    }

    /// The action, as given.
    pub fn action(&self) -> &str {
        &self.action
    }

    /// The resources' ARNs, as given.
    pub fn resources(&self) -> &[String] {
        &self.resources
    }

    /// The values of condition key `key` (any case), empty when the key is absent.
    pub fn values(&self, key: &str) -> &[String] {
        self.values
            .get(&key.to_lowercase())
            .map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_keys_are_found_whatever_their_case() {
        let context = RequestContext::new("ec2:RunInstances")
            .with_value("EC2:MetadataHttpTokens", "required")
            .with_value("ec2:metadatahttptokens", "optional");
        assert_eq!(
            context.values(key::METADATA_HTTP_TOKENS),
            ["required", "optional"]
        );
        assert!(context.values("ec2:InstanceType").is_empty());
    }

    #[test]
    fn a_request_tag_sets_its_value_and_its_key() {
        let context = RequestContext::new("ec2:RunInstances")
            .with_request_tag("Name", "web")
            .with_request_tag("team", "a");
        assert_eq!(context.values("aws:requesttag/name"), ["web"]);
        assert_eq!(context.values("aws:TagKeys"), ["Name", "team"]);
    }

    #[test]
    fn a_key_given_no_values_stays_absent() {
        let context = RequestContext::new("ec2:RunInstances")
            .with_values("aws:TagKeys", Vec::<String>::new());
        assert_eq!(context, RequestContext::new("ec2:RunInstances"));
    }
}

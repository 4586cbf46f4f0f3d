//! What a control request asks for, as the policies see it: IAM decides one [`RequestContext`]
//! (an action, one resource, the condition keys that resource type has) at a time, and a
//! [`Request`] (one API call) is allowed only when each of its contexts is.

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
    /// `enabled` or `disabled`: the `InstanceMetadataTags` a `RunInstances` request asks for.
    pub const INSTANCE_METADATA_TAGS: &str = "ec2:InstanceMetadataTags";
    /// The instance type a `RunInstances` request asks for.
    pub const INSTANCE_TYPE: &str = "ec2:InstanceType";
    /// The region of the resource (every EC2 resource type has it).
    pub const REGION: &str = "ec2:Region";
    /// The region the request is sent to (every request has it).
    pub const REQUESTED_REGION: &str = "aws:RequestedRegion";
    /// The AMI id, on the image a `RunInstances` request launches.
    pub const IMAGE_ID: &str = "ec2:ImageID";
    /// The subnet id, on the subnet a `RunInstances` request launches into.
    pub const SUBNET_ID: &str = "ec2:SubnetID";
    /// The group id, on each security group a `RunInstances` request uses.
    pub const SECURITY_GROUP_ID: &str = "ec2:SecurityGroupID";
    /// The key pair's name, on the key pair a `RunInstances` request uses.
    pub const KEY_PAIR_NAME: &str = "ec2:KeyPairName";
    /// The action that creates the resource `ec2:CreateTags` tags on create (`RunInstances`).
    pub const CREATE_ACTION: &str = "ec2:CreateAction";
    /// The keys of the tags a request applies (multivalued).
    pub const TAG_KEYS: &str = "aws:TagKeys";
    /// Followed by a tag key: the value the request gives that tag.
    pub const REQUEST_TAG_PREFIX: &str = "aws:RequestTag/";
    /// The ARN of the launch template a `RunInstances` launches from (absent on a direct
    /// launch).
    pub const LAUNCH_TEMPLATE: &str = "ec2:LaunchTemplate";
    /// `true` or `false`: whether a resource of a launch from a template is the template's (not
    /// one the request names over it).
    pub const IS_LAUNCH_TEMPLATE_RESOURCE: &str = "ec2:IsLaunchTemplateResource";
    /// Followed by a tag key: the value an existing resource has for that tag (set where imds
    /// knows the resource's tags: the launch template of a launch).
    pub const RESOURCE_TAG_PREFIX: &str = "aws:ResourceTag/";
    /// Followed by a parameter name (`HttpTokens`, `HttpPutResponseHopLimit`, `HttpEndpoint`):
    /// the value a `ModifyInstanceMetadataOptions` request sets, absent when it sets none.
    pub const ATTRIBUTE_PREFIX: &str = "ec2:Attribute/";
}

/// One thing to decide: an action (`ec2:RunInstances`) on one resource (by ARN) with the
/// condition keys and values IAM sets for that resource type.
///
/// Condition keys are case-insensitive, as in IAM. Every key holds a list of values: a
/// single-valued key (`ec2:MetadataHttpTokens`) holds one, a multivalued key (`aws:TagKeys`)
/// any number. A key with no values is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    action: String,
    resource: Option<String>,
    values: BTreeMap<String, Vec<String>>,
}

impl RequestContext {
    /// A request for `action` (`service:Name`, e.g. `ec2:RunInstances`), with no resource or
    /// keys yet.
    pub fn new(action: impl Into<String>) -> RequestContext {
        RequestContext {
            action: action.into(),
            ..RequestContext::default()
        }
    }

    /// Sets the resource decided, by ARN (replacing any set before).
    pub fn with_resource(mut self, arn: impl Into<String>) -> RequestContext {
        self.resource = Some(arn.into());
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

    /// The resource's ARN, as given; `*` for an action without resource-level permissions
    /// (no resource set), which only `"Resource": "*"` (or a `NotResource`) covers.
    pub fn resource(&self) -> &str {
        self.resource.as_deref().unwrap_or("*")
    }

    /// The values of condition key `key` (any case), empty when the key is absent.
    pub fn values(&self, key: &str) -> &[String] {
        self.values
            .get(&key.to_lowercase())
            .map_or(&[], Vec::as_slice)
    }
}

/// One API call as IAM authorises it: a context per resource it touches (and per action,
/// when a call needs more than one, as a `RunInstances` that tags on create also needs
/// `ec2:CreateTags`). Never empty, so deciding a request always decides something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    contexts: Vec<RequestContext>,
}

impl Request {
    /// A request of `first` alone.
    pub fn new(first: RequestContext) -> Request {
        Request {
            contexts: vec![first],
        }
    }

    /// Adds `context`, decided after those already added.
    pub fn and(mut self, context: RequestContext) -> Request {
        self.contexts.push(context);
        self
    }

    /// The contexts, in the order added (at least one).
    pub fn contexts(&self) -> &[RequestContext] {
        &self.contexts
    }
}

impl From<RequestContext> for Request {
    fn from(context: RequestContext) -> Request {
        Request::new(context)
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

    #[test]
    fn a_context_without_a_resource_is_about_star() {
        let context = RequestContext::new("ec2:DescribeInstances");
        assert_eq!(context.resource(), "*");
        let context = context
            .with_resource("arn:aws:ec2:us-east-1:111122223333:volume/*")
            .with_resource("arn:aws:ec2:us-east-1:111122223333:instance/*");
        assert_eq!(
            context.resource(),
            "arn:aws:ec2:us-east-1:111122223333:instance/*"
        );
    }
}

//! Guardrails: the configured service control policies ([`super::policy`]), evaluated on the
//! control path for `RunInstances` and `ModifyInstanceMetadataOptions` with the condition keys
//! EC2 sets for them, from the request's own parameters (a key the request leaves out is
//! absent, as in IAM: "require IMDSv2" policies deny a launch that does not ask for it). An
//! explicit Deny, or an action no allow-list allows, answers `UnauthorizedOperation`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::ControlError;
use super::policy::{key, PolicySet, RequestContext};
use super::query::QueryRequest;
use super::ControlApi;

/// The request context of a `RunInstances` launching instances of `instance_type` with `tags`.
pub(super) fn run_instances(
    query: &QueryRequest,
    instance_type: &str,
    tags: &BTreeMap<String, String>,
) -> RequestContext {
    let mut context = RequestContext::new("ec2:RunInstances")
        .with_resource("arn:aws:ec2:*:*:instance/*")
        .with_value(key::INSTANCE_TYPE, instance_type);
    for (name, key) in [
        ("HttpTokens", key::METADATA_HTTP_TOKENS),
        (
            "HttpPutResponseHopLimit",
            key::METADATA_HTTP_PUT_RESPONSE_HOP_LIMIT,
        ),
        ("HttpEndpoint", key::METADATA_HTTP_ENDPOINT),
    ] {
        if let Some(value) = query.get(&format!("MetadataOptions.{name}")) {
            context = context.with_value(key, value);
        }
    }
    for (tag, value) in tags {
        context = context.with_request_tag(tag, value.as_str());
    }
    context
}

/// The request context of a `ModifyInstanceMetadataOptions` on `instance_arn`: each option it
/// sets as `ec2:Attribute/NAME`, and the `ec2:Metadata*` keys with the same values.
pub(super) fn modify_instance_metadata_options(
    query: &QueryRequest,
    instance_arn: &str,
) -> RequestContext {
    let mut context =
        RequestContext::new("ec2:ModifyInstanceMetadataOptions").with_resource(instance_arn);
    for (name, metadata_key) in [
        ("HttpTokens", Some(key::METADATA_HTTP_TOKENS)),
        (
            "HttpPutResponseHopLimit",
            Some(key::METADATA_HTTP_PUT_RESPONSE_HOP_LIMIT),
        ),
        ("HttpEndpoint", Some(key::METADATA_HTTP_ENDPOINT)),
        ("HttpProtocolIpv6", None),
        ("InstanceMetadataTags", None),
    ] {
        if let Some(value) = query.get(name) {
            context = context.with_value(&format!("{}{name}", key::ATTRIBUTE_PREFIX), value);
            if let Some(metadata_key) = metadata_key {
                context = context.with_value(metadata_key, value);
            }
        }
    }
    context
}

impl ControlApi {
    /// `UnauthorizedOperation` unless the guardrails allow `context`.
    pub(super) fn check_policies(&self, context: &RequestContext) -> Result<(), ControlError> {
        let policies = self.policies();
        let decision = policies.evaluate(context);
        if decision.is_allowed() {
            return Ok(());
        }
        tracing::info!(action = context.action(), %decision, "refused by a guardrail policy");
        Err(ControlError::UnauthorizedOperation(format!(
            "You are not authorized to perform this operation. {decision}"
        )))
    }

    /// The guardrail policies in force.
    pub fn policies(&self) -> Arc<PolicySet> {
        self.policies.load_full()
    }

    /// Puts `policies` in force (at start and at SIGHUP).
    pub fn set_policies(&self, policies: PolicySet) {
        self.policies.store(Arc::new(policies));
    }
}

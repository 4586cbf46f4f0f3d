//! Guardrails: the configured service control policies ([`super::policy`]), evaluated on the
//! control path for every change (every action but the reads: `Describe*`, `Get*`, `List*`)
//! as IAM evaluates them; `RunInstances` and `ModifyInstanceMetadataOptions` in detail:
//! one request context per resource the Service Authorization Reference lists for the action,
//! each ARN in this imds' partition, region and account, each with the condition keys of its
//! resource type, filled from the request's own parameters (a key the request leaves out is
//! absent, as in IAM: "require IMDSv2" policies deny a launch that does not ask for it). An
//! explicit Deny on any resource, or a resource no allow-list allows, answers
//! `UnauthorizedOperation`.
//!
//! A launch from a launch template is also decided on the template
//! (`launch-template/lt-...`, with its tags as `aws:ResourceTag/*`), and every one of its
//! contexts carries `ec2:LaunchTemplate` (the template's ARN) and `ec2:IsLaunchTemplateResource`:
//! `false` on a resource the request itself names over the template's (an `ImageId` for the
//! image, a `SubnetId` or `NetworkInterface` for the subnet and the interface, security groups,
//! a `KeyName`, a `BlockDeviceMapping` for the volume), `true` on the others, as the EC2 User
//! Guide's launch template policies expect. A direct launch has neither key, so "deny
//! `RunInstances` unless from a launch template" is `"Null": {"ec2:LaunchTemplate": "true"}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::ControlError;
use super::launch_templates::TemplateLaunch;
use super::policy::{key, PolicySet, Request, RequestContext};
use super::query::{QueryRequest, MAX_IDS};
use super::ControlApi;

/// Tags a request applies on create, by `TagSpecification` `ResourceType` (`instance`,
/// `volume`, `network-interface`, ...), then by key.
pub(super) type TagsByType = BTreeMap<String, BTreeMap<String, String>>;

/// Where the resources a request touches live: the parts of their ARNs that are not theirs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Place<'a> {
    /// `aws`, `aws-cn` or `aws-us-gov`.
    pub(super) partition: &'a str,
    /// The region, e.g. `us-east-1`.
    pub(super) region: &'a str,
    /// The 12-digit account id.
    pub(super) account: &'a str,
}

impl Place<'_> {
    /// The ARN of an EC2 resource of this account: `resource` is `type/id` (or `type/*`).
    fn arn(&self, resource: &str) -> String {
        format!(
            "arn:{}:ec2:{}:{}:{resource}",
            self.partition, self.region, self.account
        )
    }

    /// The ARN of an image, which names no account.
    fn image_arn(&self, image_id: &str) -> String {
        format!(
            "arn:{}:ec2:{}::image/{image_id}",
            self.partition, self.region
        )
    }

    /// A context for `action` on `arn`, with the keys every EC2 request and resource has.
    fn context(&self, action: &str, arn: String) -> RequestContext {
        RequestContext::new(action)
            .with_resource(arn)
            .with_value(key::REGION, self.region)
            .with_value(key::REQUESTED_REGION, self.region)
    }
}

/// What a `RunInstances` launches and with what, once its names are resolved against the
/// network registry (so a name that resolves to nothing has already been refused).
#[derive(Debug, Clone)]
pub(super) struct Launch<'a> {
    /// The AMI id.
    pub(super) image_id: &'a str,
    /// The instance type.
    pub(super) instance_type: &'a str,
    /// The subnet launched into (given or default).
    pub(super) subnet_id: &'a str,
    /// The security groups, by id (given by id or name, or the VPC's default).
    pub(super) security_group_ids: Vec<&'a str>,
    /// The key pair's name, when one is given.
    pub(super) key_name: Option<&'a str>,
    /// The tags applied on create.
    pub(super) tags: &'a TagsByType,
    /// The launch template launched from, if any.
    pub(super) template: Option<&'a TemplateLaunch>,
}

/// The top-level `RunInstances` parameters that decide each resource type of a launch: given
/// by the request (not the template), the resource is not the launch template's.
const DECIDED_BY: &[(&str, &[&str])] = &[
    ("image", &["ImageId"]),
    ("subnet", &["SubnetId", "NetworkInterface"]),
    (
        "network-interface",
        &[
            "NetworkInterface",
            "SubnetId",
            "PrivateIpAddress",
            "SecondaryPrivateIpAddressCount",
            "Ipv6AddressCount",
            "Ipv6Address",
        ],
    ),
    (
        "security-group",
        &["SecurityGroupId", "SecurityGroup", "NetworkInterface"],
    ),
    ("key-pair", &["KeyName"]),
    ("volume", &["BlockDeviceMapping"]),
];

/// `context` (of a `resource_type` resource) with the launch template keys of `template`.
fn from_template(
    context: RequestContext,
    place: Place<'_>,
    template: Option<&TemplateLaunch>,
    resource_type: &str,
) -> RequestContext {
    let Some(template) = template else {
        return context;
    };
    let overridden = DECIDED_BY
        .iter()
        .find(|(kind, _)| *kind == resource_type)
        .is_some_and(|(_, params)| params.iter().any(|p| template.given.contains(*p)));
    context
        .with_value(
            key::LAUNCH_TEMPLATE,
            place.arn(&format!("launch-template/{}", template.id)),
        )
        .with_value(key::IS_LAUNCH_TEMPLATE_RESOURCE, (!overridden).to_string())
}

/// `RunInstances` as IAM authorises it: `ec2:RunInstances` on the instance, the image, the
/// subnet, the network interface, each security group, the key pair (when given), the volume
/// and the launch template (when launched from one); and, when the launch tags on create,
/// `ec2:CreateTags` on each tagged resource type with `ec2:CreateAction` `RunInstances`.
pub(super) fn run_instances(
    query: &QueryRequest,
    place: Place<'_>,
    launch: &Launch<'_>,
) -> Request {
    let run = |arn: String| place.context("ec2:RunInstances", arn);
    let of = |context: RequestContext, resource_type: &str| {
        from_template(context, place, launch.template, resource_type)
    };
    let tagged = |context: RequestContext, resource_type: &str| match launch.tags.get(resource_type)
    {
        Some(tags) => with_request_tags(context, tags),
        None => context,
    };
    let mut instance = tagged(run(place.arn("instance/*")), "instance")
        .with_value(key::INSTANCE_TYPE, launch.instance_type);
    for (name, key) in [
        ("HttpTokens", key::METADATA_HTTP_TOKENS),
        (
            "HttpPutResponseHopLimit",
            key::METADATA_HTTP_PUT_RESPONSE_HOP_LIMIT,
        ),
        ("HttpEndpoint", key::METADATA_HTTP_ENDPOINT),
        ("InstanceMetadataTags", key::INSTANCE_METADATA_TAGS),
    ] {
        if let Some(value) = query.get(&format!("MetadataOptions.{name}")) {
            instance = instance.with_value(key, value);
        }
    }
    let mut request = Request::new(of(instance, "instance"))
        .and(of(
            run(place.image_arn(launch.image_id)).with_value(key::IMAGE_ID, launch.image_id),
            "image",
        ))
        .and(of(
            run(place.arn(&format!("subnet/{}", launch.subnet_id)))
                .with_value(key::SUBNET_ID, launch.subnet_id),
            "subnet",
        ))
        .and(of(
            tagged(run(place.arn("network-interface/*")), "network-interface"),
            "network-interface",
        ));
    for group in &launch.security_group_ids {
        request = request.and(of(
            run(place.arn(&format!("security-group/{group}")))
                .with_value(key::SECURITY_GROUP_ID, *group),
            "security-group",
        ));
    }
    if let Some(name) = launch.key_name {
        request = request.and(of(
            run(place.arn(&format!("key-pair/{name}"))).with_value(key::KEY_PAIR_NAME, name),
            "key-pair",
        ));
    }
    request = request.and(of(tagged(run(place.arn("volume/*")), "volume"), "volume"));
    if let Some(template) = launch.template {
        let context = run(place.arn(&format!("launch-template/{}", template.id)));
        let context = template.tags.iter().fold(context, |context, (tag, value)| {
            context.with_value(
                &format!("{}{tag}", key::RESOURCE_TAG_PREFIX),
                value.as_str(),
            )
        });
        request = request.and(of(context, "launch-template"));
    }
    for (resource_type, tags) in launch.tags {
        if tags.is_empty() {
            continue;
        }
        let create_tags = place
            .context("ec2:CreateTags", place.arn(&format!("{resource_type}/*")))
            .with_value(key::CREATE_ACTION, "RunInstances");
        request = request.and(with_request_tags(create_tags, tags));
    }
    request
}

/// The IAM action a Query action is authorised as: EC2's own under `ec2:`, imds' test-kit
/// actions (events, faults, key rotation) under `imds:`; `None` for a read, which guardrails
/// do not decide.
pub(super) fn iam_action(action: &str) -> Option<String> {
    const IMDS_OWN: [&str; 8] = [
        "ScheduleInstanceEvent",
        "CompleteInstanceEvent",
        "CancelInstanceEvent",
        "SetTargetLifecycleState",
        "ClearInstanceEvents",
        "InjectFault",
        "ClearFaults",
        "RotateKeys",
    ];
    let read = ["Describe", "Get", "List"]
        .iter()
        .any(|prefix| action.starts_with(prefix));
    match (read, IMDS_OWN.contains(&action)) {
        (true, _) => None,
        (false, true) => Some(format!("imds:{action}")),
        (false, false) => Some(format!("ec2:{action}")),
    }
}

/// Most tags EC2 lets a resource have, and so one `CreateTags` apply.
const MAX_TAGS: usize = 50;

/// Any other change, as IAM authorises it: `iam_action` on each resource the request names
/// (instances by `InstanceId`/`InstanceId.N`, tagged resources by `ResourceId.N`, a launch
/// template by `LaunchTemplateId` or, resolved by the caller, by its name: `named_template`;
/// each as its ARN), or on `*` when it names none; the tags `CreateTags` applies as
/// `aws:RequestTag/*` and `aws:TagKeys`. More ids than EC2 takes in one request are refused
/// before any is looked at.
pub(super) fn other_change(
    query: &QueryRequest,
    place: Place<'_>,
    iam_action: &str,
    named_template: Option<&str>,
) -> Result<Request, ControlError> {
    let mut ids: Vec<&str> = query.list_at_most("InstanceId", MAX_IDS, "instance IDs")?;
    ids.extend(query.get("InstanceId"));
    ids.extend(query.list_at_most("ResourceId", MAX_IDS, "resource IDs")?);
    ids.extend(query.get("LaunchTemplateId").or(named_template));
    let arns: Vec<String> = ids.iter().map(|id| resource_arn(place, id)).collect();
    let mut tags = BTreeMap::new();
    if iam_action == "ec2:CreateTags" {
        // EC2's limit, checked before any context carries the tags.
        let members = query.members("Tag");
        if members.len() > MAX_TAGS {
            return Err(ControlError::TagLimitExceeded(format!(
                "The maximum number of tags per resource is {MAX_TAGS}"
            )));
        }
        for n in members {
            if let Some(key) = query.get(&format!("Tag.{n}.Key")) {
                let value = query.get(&format!("Tag.{n}.Value")).unwrap_or("");
                tags.insert(key.to_owned(), value.to_owned());
            }
        }
    }
    let context = |arn: Option<String>| {
        let context = match arn {
            Some(arn) => place.context(iam_action, arn),
            None => RequestContext::new(iam_action)
                .with_value(key::REGION, place.region)
                .with_value(key::REQUESTED_REGION, place.region),
        };
        with_request_tags(context, &tags)
    };
    let mut arns = arns.into_iter();
    let mut request = Request::new(context(arns.next()));
    for arn in arns {
        request = request.and(context(Some(arn)));
    }
    Ok(request)
}

/// The ARN of the resource `id` names, by its prefix (`i-`, `subnet-`, `sg-`, `vpc-`, `key-`,
/// `lt-`); any other id is the resource `*` of no type imds knows.
fn resource_arn(place: Place<'_>, id: &str) -> String {
    let kind = match id.split_once('-').map(|(prefix, _)| prefix) {
        Some("i") => "instance",
        Some("subnet") => "subnet",
        Some("sg") => "security-group",
        Some("vpc") => "vpc",
        Some("key") => "key-pair",
        Some("lt") => "launch-template",
        _ => return "*".to_owned(),
    };
    place.arn(&format!("{kind}/{id}"))
}

fn with_request_tags(context: RequestContext, tags: &BTreeMap<String, String>) -> RequestContext {
    tags.iter().fold(context, |context, (tag, value)| {
        context.with_request_tag(tag, value.as_str())
    })
}

/// The request context of a `ModifyInstanceMetadataOptions` on instance `instance_id`: each
/// option it sets as `ec2:Attribute/NAME`, and the `ec2:Metadata*` keys with the same values.
pub(super) fn modify_instance_metadata_options(
    query: &QueryRequest,
    place: Place<'_>,
    instance_id: &str,
) -> Request {
    let mut context = place.context(
        "ec2:ModifyInstanceMetadataOptions",
        place.arn(&format!("instance/{instance_id}")),
    );
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
    Request::new(context)
}

impl ControlApi {
    /// `UnauthorizedOperation` unless the guardrails allow `request`.
    pub(super) fn check_policies(&self, request: &Request) -> Result<(), ControlError> {
        let policies = self.policies();
        let decision = policies.evaluate(request);
        if decision.is_allowed() {
            return Ok(());
        }
        tracing::info!(%decision, "refused by a guardrail policy");
        Err(ControlError::UnauthorizedOperation(format!(
            "You are not authorized to perform this operation. {decision}"
        )))
    }

    /// The guardrail policies in force.
    pub fn policies(&self) -> Arc<PolicySet> {
        self.account.policies()
    }

    /// Puts `policies` in force (at start and at SIGHUP).
    pub fn set_policies(&self, policies: PolicySet) {
        self.account.set_policies(policies);
    }
}

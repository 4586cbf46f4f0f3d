//! A policy set deciding requests with the example policies AWS publishes
//! (`tests/policies/`), and its SCP semantics over requests of one context per resource.

use std::path::PathBuf;

use proptest::prelude::*;

use super::*;

const INSTANCE: &str = "arn:aws:ec2:us-east-1:111122223333:instance/*";
const VOLUME: &str = "arn:aws:ec2:us-east-1:111122223333:volume/*";
const IMAGE: &str = "arn:aws:ec2:us-east-1::image/ami-0abcdef1234567890";
const SUBNET: &str = "arn:aws:ec2:us-east-1:111122223333:subnet/subnet-0123";
const SPECIFIC_INSTANCE: &str = "arn:aws:ec2:us-east-1:111122223333:instance/i-0b4f7d2c9a1e83f56";

fn example_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/policies")
        .join(format!("{name}.json"))
}

fn example(name: &str) -> PolicySet {
    PolicySet::load(&[example_path(name)]).unwrap()
}

fn parsed(json: &str) -> PolicySet {
    PolicySet::default().with("p", Policy::parse(json).unwrap())
}

/// `action` on `arn`, in us-east-1.
fn on(action: &str, arn: &str) -> RequestContext {
    RequestContext::new(action)
        .with_resource(arn)
        .with_value(key::REGION, "us-east-1")
        .with_value(key::REQUESTED_REGION, "us-east-1")
}

/// `ec2:RunInstances` on the instance, without its keys.
fn instance() -> RequestContext {
    on("ec2:RunInstances", INSTANCE)
}

/// `ec2:RunInstances` on the volume, without tags.
fn volume() -> RequestContext {
    on("ec2:RunInstances", VOLUME)
}

/// A launch as imds decides it: the instance and volume contexts given, the image, subnet,
/// network interface, security group and key pair ones as imds builds them.
fn launch(instance: RequestContext, volume: RequestContext) -> Request {
    let run = |arn: &str| on("ec2:RunInstances", arn);
    Request::new(instance)
        .and(run(IMAGE).with_value(key::IMAGE_ID, "ami-0abcdef1234567890"))
        .and(run(SUBNET).with_value(key::SUBNET_ID, "subnet-0123"))
        .and(run(
            "arn:aws:ec2:us-east-1:111122223333:network-interface/*",
        ))
        .and(
            run("arn:aws:ec2:us-east-1:111122223333:security-group/sg-0123")
                .with_value(key::SECURITY_GROUP_ID, "sg-0123"),
        )
        .and(
            run("arn:aws:ec2:us-east-1:111122223333:key-pair/ops")
                .with_value(key::KEY_PAIR_NAME, "ops"),
        )
        .and(volume)
}

/// A launch whose instance context is `instance` and whose volume is untagged.
fn run(instance: RequestContext) -> Request {
    launch(instance, volume())
}

/// `ec2:CreateTags` of a launch that tags resources of `resource_type` with `tags`.
fn tag_on_create(resource_type: &str, tags: &[(&str, &str)]) -> RequestContext {
    let arn = format!("arn:aws:ec2:us-east-1:111122223333:{resource_type}/*");
    tags.iter().fold(
        on("ec2:CreateTags", &arn).with_value(key::CREATE_ACTION, "RunInstances"),
        |context, (tag, value)| context.with_request_tag(tag, *value),
    )
}

fn tagged(context: RequestContext, tags: &[(&str, &str)]) -> RequestContext {
    tags.iter().fold(context, |context, (tag, value)| {
        context.with_request_tag(tag, *value)
    })
}

fn modify_options() -> RequestContext {
    on("ec2:ModifyInstanceMetadataOptions", SPECIFIC_INSTANCE)
}

fn deny(policy: &str, sid: Option<&str>, action: &str, resource: &str) -> Decision {
    Decision::ExplicitDeny {
        policy: policy.to_owned(),
        sid: sid.map(str::to_owned),
        action: action.to_owned(),
        resource: resource.to_owned(),
    }
}

fn not_allowed(policy: &str, action: &str, resource: &str) -> Decision {
    Decision::NotAllowed {
        policy: policy.to_owned(),
        action: action.to_owned(),
        resource: resource.to_owned(),
    }
}

#[test]
fn an_empty_set_allows_everything() {
    let set = PolicySet::default();
    assert!(set.is_empty());
    assert_eq!(set.evaluate(&run(instance())), Decision::Allowed);
    assert_eq!(
        set.evaluate(&RequestContext::new("ec2:TerminateInstances").into()),
        Decision::Allowed
    );
}

#[test]
fn require_imdsv2_denies_launches_that_do_not_require_tokens() {
    let set = example("require-imdsv2");
    let denied = deny(
        "require-imdsv2",
        Some("RequireImdsV2"),
        "ec2:RunInstances",
        INSTANCE,
    );
    assert_eq!(set.evaluate(&run(instance())), denied);
    assert_eq!(
        set.evaluate(&run(
            instance().with_value(key::METADATA_HTTP_TOKENS, "optional")
        )),
        denied
    );
    assert_eq!(
        set.evaluate(&run(
            instance().with_value(key::METADATA_HTTP_TOKENS, "required")
        )),
        Decision::Allowed
    );
    // The statement is about instances: the volume, which has no metadata keys, is not hit.
    assert_eq!(set.evaluate(&volume().into()), Decision::Allowed);
    assert_eq!(set.evaluate(&modify_options().into()), Decision::Allowed);
}

#[test]
fn a_region_scoped_require_imdsv2_applies_in_its_region_only() {
    let scoped = |region: &str| {
        parsed(&format!(
            r#"{{"Version": "2012-10-17", "Statement": {{"Sid": "RequireImdsV2InRegion", "Effect": "Deny",
            "Action": "ec2:RunInstances", "Resource": "arn:aws:ec2:{region}:*:instance/*",
            "Condition": {{"StringNotEquals": {{"ec2:MetadataHttpTokens": "required"}}}}}}}}"#
        ))
    };
    let optional = run(instance().with_value(key::METADATA_HTTP_TOKENS, "optional"));
    assert_eq!(
        scoped("us-east-1").evaluate(&optional),
        deny(
            "p",
            Some("RequireImdsV2InRegion"),
            "ec2:RunInstances",
            INSTANCE
        )
    );
    assert!(!scoped("us-*").evaluate(&optional).is_allowed());
    assert_eq!(scoped("eu-west-1").evaluate(&optional), Decision::Allowed);
    assert!(!scoped("us-east-?").evaluate(&optional).is_allowed());
    assert_eq!(scoped("us-west-?").evaluate(&optional), Decision::Allowed);
}

#[test]
fn a_region_condition_applies_to_every_resource_of_the_launch() {
    let set = parsed(
        r#"{"Version": "2012-10-17", "Statement": {"Sid": "OnlyEu", "Effect": "Deny", "Action": "ec2:*",
        "Resource": "*", "Condition": {"StringNotLike": {"aws:RequestedRegion": "eu-*"}}}}"#,
    );
    assert_eq!(
        set.evaluate(&run(instance())),
        deny("p", Some("OnlyEu"), "ec2:RunInstances", INSTANCE)
    );
    let eu = RequestContext::new("ec2:RunInstances")
        .with_resource("arn:aws:ec2:eu-west-1:111122223333:instance/*")
        .with_value(key::REQUESTED_REGION, "eu-west-1");
    assert_eq!(set.evaluate(&eu.into()), Decision::Allowed);
}

#[test]
fn an_account_scoped_statement_of_another_account_does_not_apply() {
    let scoped = |account: &str| {
        parsed(&format!(
            r#"{{"Version": "2012-10-17", "Statement": {{"Effect": "Deny", "Action": "ec2:RunInstances",
            "Resource": "arn:aws:ec2:*:{account}:instance/*"}}}}"#
        ))
    };
    assert!(!scoped("111122223333")
        .evaluate(&run(instance()))
        .is_allowed());
    assert_eq!(
        scoped("444455556666").evaluate(&run(instance())),
        Decision::Allowed
    );
    // An allow-list for another account allows nothing here.
    let elsewhere = parsed(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "ec2:RunInstances",
        "Resource": ["arn:aws:ec2:*:444455556666:*", "arn:aws:ec2:*::image/*"]}}"#,
    );
    assert_eq!(
        elsewhere.evaluate(&run(instance())),
        not_allowed("p", "ec2:RunInstances", INSTANCE)
    );
}

#[test]
fn a_deny_on_any_one_resource_refuses_the_whole_launch() {
    let set = parsed(
        r#"{"Version": "2012-10-17", "Statement": {"Sid": "NoThatImage", "Effect": "Deny",
        "Action": "ec2:RunInstances", "Resource": "arn:aws:ec2:*::image/ami-0abcdef1234567890"}}"#,
    );
    assert_eq!(
        set.evaluate(&run(instance())),
        deny("p", Some("NoThatImage"), "ec2:RunInstances", IMAGE)
    );
    assert_eq!(set.evaluate(&instance().into()), Decision::Allowed);
}

#[test]
fn an_allow_list_must_allow_every_resource_of_the_launch() {
    let set = parsed(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "ec2:RunInstances",
        "Resource": "arn:aws:ec2:*:*:instance/*"}}"#,
    );
    assert_eq!(set.evaluate(&instance().into()), Decision::Allowed);
    assert_eq!(
        set.evaluate(&run(instance())),
        not_allowed("p", "ec2:RunInstances", IMAGE)
    );
}

#[test]
fn resource_condition_keys_hold_only_on_their_resource() {
    // A Deny keyed on the image (the re:Post answer to "restrict AMIs with NotResource"):
    // only the image has ec2:ImageID, so the instance and the rest are not hit.
    let set = parsed(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Deny", "Action": "ec2:RunInstances",
        "NotResource": "arn:aws:ec2:us-east-1::image/ami-0aaaaaaaaaaaaaaaa",
        "Condition": {"Null": {"ec2:ImageID": "false"}}}}"#,
    );
    assert_eq!(
        set.evaluate(&run(instance())),
        deny("p", None, "ec2:RunInstances", IMAGE)
    );
}

#[test]
fn max_hop_limit_denies_launches_above_three_hops() {
    let set = example("max-hop-limit");
    let hops = |n: &str| run(instance().with_value(key::METADATA_HTTP_PUT_RESPONSE_HOP_LIMIT, n));
    let denied = deny(
        "max-hop-limit",
        Some("MaxImdsHopLimit"),
        "ec2:RunInstances",
        INSTANCE,
    );
    assert_eq!(set.evaluate(&hops("1")), Decision::Allowed);
    assert_eq!(set.evaluate(&hops("3")), Decision::Allowed);
    assert_eq!(set.evaluate(&hops("4")), denied);
    assert_eq!(set.evaluate(&hops("64")), denied);
    // Not a negated operator: a launch that leaves the hop limit out is not denied by it.
    assert_eq!(set.evaluate(&run(instance())), Decision::Allowed);
}

#[test]
fn deny_imdsv1_opt_out_denies_modifications_that_set_tokens_optional() {
    let set = example("deny-imdsv1-opt-out");
    let denied = deny(
        "deny-imdsv1-opt-out",
        Some("DenyIMDSv1HttpTokensModification"),
        "ec2:ModifyInstanceMetadataOptions",
        SPECIFIC_INSTANCE,
    );
    let tokens = |v: &str| {
        modify_options()
            .with_value("ec2:Attribute/HttpTokens", v)
            .into()
    };
    assert_eq!(set.evaluate(&tokens("optional")), denied);
    assert_eq!(set.evaluate(&tokens("required")), Decision::Allowed);
    // Changing only the hop limit leaves HttpTokens absent: Null false keeps it allowed.
    assert_eq!(
        set.evaluate(
            &modify_options()
                .with_value("ec2:Attribute/HttpPutResponseHopLimit", "2")
                .into()
        ),
        Decision::Allowed
    );
}

#[test]
fn only_imds_admins_may_modify_metadata_options() {
    let set = example("only-imds-admins-modify-options");
    let denied = deny(
        "only-imds-admins-modify-options",
        Some("AllowOnlyImdsAdminsToModifySettings"),
        "ec2:ModifyInstanceMetadataOptions",
        SPECIFIC_INSTANCE,
    );
    let by = |arn: &str| modify_options().with_value("aws:PrincipalArn", arn).into();
    assert_eq!(
        set.evaluate(&by("arn:aws:iam::111122223333:role/ec2-imds-admins")),
        Decision::Allowed
    );
    assert_eq!(
        set.evaluate(&by("arn:aws:iam::111122223333:role/developer")),
        denied
    );
    // No principal known: StringNotLike on a missing key is true, so the deny applies.
    assert_eq!(set.evaluate(&modify_options().into()), denied);
}

#[test]
fn deny_modify_metadata_options_denies_every_modification() {
    let set = example("deny-modify-metadata-options");
    let action = "ec2:ModifyInstanceMetadataOptions";
    assert_eq!(
        set.evaluate(
            &modify_options()
                .with_value("ec2:Attribute/HttpTokens", "required")
                .into()
        ),
        deny(
            "deny-modify-metadata-options",
            None,
            action,
            SPECIFIC_INSTANCE
        )
    );
    assert_eq!(
        set.evaluate(&RequestContext::new(action).into()),
        deny("deny-modify-metadata-options", None, action, "*")
    );
    assert_eq!(set.evaluate(&run(instance())), Decision::Allowed);
}

#[test]
fn require_role_credentials_from_imdsv2_compares_decimals() {
    let set = example("require-imdsv2-role-credentials");
    let delivery = |v: &str| {
        RequestContext::new("ec2:DescribeInstances")
            .with_value("ec2:RoleDelivery", v)
            .into()
    };
    let denied = deny(
        "require-imdsv2-role-credentials",
        Some("RequireAllEc2RolesToUseV2"),
        "ec2:DescribeInstances",
        "*",
    );
    assert_eq!(set.evaluate(&delivery("1.0")), denied);
    assert_eq!(set.evaluate(&delivery("2.0")), Decision::Allowed);
    assert_eq!(set.evaluate(&delivery("2")), Decision::Allowed);
    // Credentials that are not EC2 role credentials carry no RoleDelivery: the control API's
    // own callers (SigV4 with the operator's keys) are never denied by it.
    assert_eq!(
        set.evaluate(&RequestContext::new("ec2:DescribeInstances").into()),
        Decision::Allowed
    );
    assert_eq!(set.evaluate(&run(instance())), Decision::Allowed);
}

#[test]
fn require_tag_on_create_denies_launches_without_project_and_cost_center_on_instance_and_volume() {
    let set = example("require-tag-on-create");
    let name = "require-tag-on-create";
    let run_instances = "ec2:RunInstances";
    assert_eq!(
        set.evaluate(&run(instance())),
        deny(
            name,
            Some("DenyRunInstanceWithNoProjectTag"),
            run_instances,
            INSTANCE
        )
    );
    assert_eq!(
        set.evaluate(&run(tagged(instance(), &[("Project", "imds")]))),
        deny(
            name,
            Some("DenyRunInstanceWithNoCostCenterTag"),
            run_instances,
            INSTANCE
        )
    );
    let both = [("project", "imds"), ("costcenter", "42")];
    // The volume is created too, and must be tagged as well.
    assert_eq!(
        set.evaluate(&run(tagged(instance(), &both))),
        deny(
            name,
            Some("DenyRunInstanceWithNoProjectTag"),
            run_instances,
            VOLUME
        )
    );
    assert_eq!(
        set.evaluate(
            &launch(tagged(instance(), &both), tagged(volume(), &both))
                .and(tag_on_create("instance", &both))
                .and(tag_on_create("volume", &both))
        ),
        Decision::Allowed,
        "condition keys, tag keys included, ignore case"
    );
    assert_eq!(
        set.evaluate(&RequestContext::new("secretsmanager:CreateSecret").into()),
        deny(
            name,
            Some("DenyCreateSecretWithNoProjectTag"),
            "secretsmanager:CreateSecret",
            "*"
        )
    );
}

#[test]
fn tag_on_create_only_purpose_test_allows_only_that_tag() {
    let set = example("tag-on-create-only-purpose-test");
    let name = "tag-on-create-only-purpose-test";
    assert_eq!(set.evaluate(&run(instance())), Decision::Allowed);
    let with_tags =
        |tags: &[(&str, &str)]| run(tagged(instance(), tags)).and(tag_on_create("instance", tags));
    assert_eq!(
        set.evaluate(&with_tags(&[("purpose", "test")])),
        Decision::Allowed
    );
    assert_eq!(
        set.evaluate(&with_tags(&[("purpose", "prod")])),
        not_allowed(name, "ec2:CreateTags", INSTANCE)
    );
    assert_eq!(
        set.evaluate(&with_tags(&[("purpose", "test"), ("owner", "me")])),
        not_allowed(name, "ec2:CreateTags", INSTANCE),
        "ForAllValues: every tag key must be listed"
    );
    assert_eq!(
        set.evaluate(
            &RequestContext::new("ec2:TerminateInstances")
                .with_resource(SPECIFIC_INSTANCE)
                .into()
        ),
        not_allowed(name, "ec2:TerminateInstances", SPECIFIC_INSTANCE),
        "an allow-list policy allows nothing else"
    );
}

#[test]
fn tag_on_create_at_least_one_needs_an_environment_or_webserver_tag_on_instances_and_volumes() {
    let set = example("tag-on-create-at-least-one");
    let name = "tag-on-create-at-least-one";
    let run_instances = "ec2:RunInstances";
    let with_tags = |instance_tags: &[(&str, &str)], volume_tags: &[(&str, &str)]| {
        let mut request = launch(
            tagged(instance(), instance_tags),
            tagged(volume(), volume_tags),
        );
        for (resource_type, tags) in [("instance", instance_tags), ("volume", volume_tags)] {
            if !tags.is_empty() {
                request = request.and(tag_on_create(resource_type, tags));
            }
        }
        request
    };
    assert_eq!(
        set.evaluate(&with_tags(&[], &[])),
        not_allowed(name, run_instances, INSTANCE)
    );
    assert_eq!(
        set.evaluate(&with_tags(&[("owner", "me")], &[("owner", "me")])),
        not_allowed(name, run_instances, INSTANCE)
    );
    let tags = [("owner", "me"), ("environment", "prod")];
    assert_eq!(
        set.evaluate(&with_tags(&tags, &[])),
        not_allowed(name, run_instances, VOLUME)
    );
    assert_eq!(set.evaluate(&with_tags(&tags, &tags)), Decision::Allowed);
    assert_eq!(
        set.evaluate(&with_tags(&[("webserver", "")], &[("environment", "test")])),
        Decision::Allowed
    );
    // The statements name us-east-1 and account 111122223333: anywhere else, nothing is allowed.
    let elsewhere = RequestContext::new(run_instances)
        .with_resource("arn:aws:ec2:eu-west-1:111122223333:instance/*")
        .with_request_tag("environment", "prod");
    assert_eq!(
        set.evaluate(&elsewhere.into()),
        not_allowed(
            name,
            run_instances,
            "arn:aws:ec2:eu-west-1:111122223333:instance/*"
        )
    );
}

#[test]
fn a_deny_wins_over_every_allow() {
    let set = PolicySet::load(&[
        example_path("full-aws-access"),
        example_path("require-imdsv2"),
    ])
    .unwrap();
    assert_eq!(
        set.evaluate(&run(instance())),
        deny(
            "require-imdsv2",
            Some("RequireImdsV2"),
            "ec2:RunInstances",
            INSTANCE
        )
    );
    assert_eq!(
        set.evaluate(&run(
            instance().with_value(key::METADATA_HTTP_TOKENS, "required")
        )),
        Decision::Allowed
    );
}

#[test]
fn an_explicit_deny_on_a_later_resource_is_reported_over_an_earlier_implicit_one() {
    let set = parsed(
        r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ec2:RunInstances", "Resource": "arn:aws:ec2:*:*:volume/*"},
            {"Sid": "NoVolumes", "Effect": "Deny", "Action": "ec2:RunInstances", "Resource": "arn:aws:ec2:*:*:volume/*"}]}"#,
    );
    assert_eq!(
        set.evaluate(&run(instance())),
        deny("p", Some("NoVolumes"), "ec2:RunInstances", VOLUME)
    );
}

#[test]
fn every_allow_list_policy_must_allow_the_request() {
    let ec2_only = Policy::parse(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}}"#,
    )
    .unwrap();
    let describe_only = Policy::parse(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}}"#,
    )
    .unwrap();
    let full = PolicySet::load(&[example_path("full-aws-access")]).unwrap();
    let set = full
        .with("ec2-only", ec2_only)
        .with("describe-only", describe_only);
    assert_eq!(
        set.evaluate(&RequestContext::new("ec2:DescribeInstances").into()),
        Decision::Allowed
    );
    assert_eq!(
        set.evaluate(&run(instance())),
        not_allowed("describe-only", "ec2:RunInstances", INSTANCE)
    );
    assert_eq!(
        set.evaluate(&RequestContext::new("s3:ListBuckets").into()),
        not_allowed("ec2-only", "s3:ListBuckets", "*")
    );
}

#[test]
fn a_policy_with_only_denies_is_a_deny_list_over_full_access() {
    let set = example("require-imdsv2").with(
        "describe-only",
        Policy::parse(
            r#"{"Statement": {"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}}"#,
        )
        .unwrap(),
    );
    let terminate = Request::from(RequestContext::new("ec2:TerminateInstances"));
    // The deny-only policy lets TerminateInstances through; the allow-list one does not.
    assert_eq!(
        set.evaluate(&terminate),
        not_allowed("describe-only", "ec2:TerminateInstances", "*")
    );
    assert!(example("require-imdsv2").evaluate(&terminate).is_allowed());
}

#[test]
fn the_first_deny_in_load_order_is_reported() {
    let set = PolicySet::load(&[
        example_path("deny-modify-metadata-options"),
        example_path("only-imds-admins-modify-options"),
    ])
    .unwrap();
    assert_eq!(
        set.names().collect::<Vec<_>>(),
        [
            "deny-modify-metadata-options",
            "only-imds-admins-modify-options"
        ]
    );
    assert_eq!(
        set.evaluate(&modify_options().into()),
        deny(
            "deny-modify-metadata-options",
            None,
            "ec2:ModifyInstanceMetadataOptions",
            SPECIFIC_INSTANCE
        )
    );
}

#[test]
fn decisions_read_as_the_reason_naming_the_statement_action_and_resource() {
    assert_eq!(Decision::Allowed.to_string(), "allowed");
    assert_eq!(
        deny(
            "require-imdsv2",
            Some("RequireImdsV2"),
            "ec2:RunInstances",
            INSTANCE
        )
        .to_string(),
        "explicit deny in service control policy require-imdsv2 (statement RequireImdsV2) \
         for ec2:RunInstances on arn:aws:ec2:us-east-1:111122223333:instance/*"
    );
    assert_eq!(
        deny("p", None, "ec2:RunInstances", IMAGE).to_string(),
        "explicit deny in service control policy p for ec2:RunInstances on \
         arn:aws:ec2:us-east-1::image/ami-0abcdef1234567890"
    );
    assert_eq!(
        not_allowed("p", "ec2:RunInstances", SUBNET).to_string(),
        "no statement in service control policy p allows ec2:RunInstances on \
         arn:aws:ec2:us-east-1:111122223333:subnet/subnet-0123"
    );
}

#[test]
fn loading_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        r#"{"Version": "2012-10-17", "Statement": {"Sid": "X", "Effect": "Deny", "Action": "*"}}"#,
    )
    .unwrap();
    let message = PolicySet::load(std::slice::from_ref(&broken))
        .unwrap_err()
        .to_string();
    assert!(message.contains("broken.json"), "{message}");
    assert!(
        message.contains("statement #1 (Sid \"X\") has no Resource or NotResource"),
        "{message}"
    );

    let missing = dir.path().join("missing.json");
    let error = PolicySet::load(&[missing]).unwrap_err();
    assert!(matches!(error, PolicyError::Read { .. }));
    assert!(error.to_string().contains("missing.json"), "{error}");

    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let again = other_dir.join("require-imdsv2.json");
    std::fs::copy(example_path("require-imdsv2"), &again).unwrap();
    assert!(matches!(
        PolicySet::load(&[example_path("require-imdsv2"), again]),
        Err(PolicyError::DuplicateName { name, .. }) if name == "require-imdsv2"
    ));
}

#[test]
fn every_example_policy_parses() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/policies");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 10);
    let set = PolicySet::load(&paths).unwrap();
    assert_eq!(set.names().count(), paths.len());
}

/// JSON built from the words policies are made of, so that generated documents get past the
/// first checks and exercise the deeper ones.
fn policy_like_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let words = prop::sample::select(vec![
        "Version",
        "2012-10-17",
        "2008-10-17",
        "Statement",
        "Sid",
        "Effect",
        "Allow",
        "Deny",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
        "Principal",
        "*",
        "ec2:*",
        "ec2:RunInstances",
        "arn:aws:ec2:*:*:instance/*",
        "StringEquals",
        "StringNotEqualsIfExists",
        "ForAllValues:StringLike",
        "ForAnyValue:NumericLessThan",
        "Null",
        "Bool",
        "IpAddress",
        "ArnNotLike",
        "DateLessThan",
        "ec2:MetadataHttpTokens",
        "aws:TagKeys",
        "required",
        "true",
        "2",
        "10.0.0.0/8",
        "${aws:username}",
        "",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        words.clone().prop_map(|w| Value::String(w.to_owned())),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((words.clone(), inner), 0..6).prop_map(|entries| {
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                )
            }),
        ]
    })
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_json(json in policy_like_json()) {
        if let Ok(policy) = Policy::parse(&json.to_string()) {
            let set = PolicySet::default().with("generated", policy);
            let _ = set.evaluate(&run(instance().with_value(key::METADATA_HTTP_TOKENS, "optional")));
            let _ = set.evaluate(&RequestContext::new("ec2:DescribeInstances").into());
        }
    }

    #[test]
    fn parse_never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
        let _ = Policy::parse(&text);
    }

    #[test]
    fn require_imdsv2_denies_exactly_when_tokens_are_not_required_or_missing(
        tokens in proptest::option::of(prop_oneof![
            Just("required".to_owned()),
            Just("optional".to_owned()),
            Just("Required".to_owned()),
            "[a-z]{0,8}",
        ]),
        hops in proptest::option::of(1u32..=64),
    ) {
        let set = example("require-imdsv2");
        let mut context = instance();
        if let Some(t) = &tokens {
            context = context.with_value(key::METADATA_HTTP_TOKENS, t.clone());
        }
        if let Some(h) = hops {
            context = context.with_value(key::METADATA_HTTP_PUT_RESPONSE_HOP_LIMIT, h.to_string());
        }
        let denied = tokens.as_deref() != Some("required");
        prop_assert_eq!(!set.evaluate(&run(context)).is_allowed(), denied);
    }

    #[test]
    fn a_hop_limit_is_denied_exactly_above_the_maximum(hops in 1u32..=64) {
        let set = example("max-hop-limit");
        let context = instance().with_value(key::METADATA_HTTP_PUT_RESPONSE_HOP_LIMIT, hops.to_string());
        prop_assert_eq!(set.evaluate(&run(context)).is_allowed(), hops <= 3);
    }
}

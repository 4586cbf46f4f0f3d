//! A policy set deciding requests with the example policies AWS publishes
//! (`tests/policies/`), and its SCP semantics.

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

fn run_instances() -> RequestContext {
    RequestContext::new("ec2:RunInstances")
        .with_resource(INSTANCE)
        .with_resource(VOLUME)
        .with_resource(IMAGE)
        .with_resource(SUBNET)
}

fn modify_options() -> RequestContext {
    RequestContext::new("ec2:ModifyInstanceMetadataOptions").with_resource(SPECIFIC_INSTANCE)
}

fn deny(policy: &str, sid: Option<&str>) -> Decision {
    Decision::ExplicitDeny {
        policy: policy.to_owned(),
        sid: sid.map(str::to_owned),
    }
}

#[test]
fn an_empty_set_allows_everything() {
    let set = PolicySet::default();
    assert!(set.is_empty());
    assert_eq!(set.evaluate(&run_instances()), Decision::Allowed);
    assert_eq!(
        set.evaluate(&RequestContext::new("ec2:TerminateInstances")),
        Decision::Allowed
    );
}

#[test]
fn require_imdsv2_denies_launches_that_do_not_require_tokens() {
    let set = example("require-imdsv2");
    let denied = deny("require-imdsv2", Some("RequireImdsV2"));
    assert_eq!(set.evaluate(&run_instances()), denied);
    assert_eq!(
        set.evaluate(&run_instances().with_value(key::METADATA_HTTP_TOKENS, "optional")),
        denied
    );
    assert_eq!(
        set.evaluate(&run_instances().with_value(key::METADATA_HTTP_TOKENS, "required")),
        Decision::Allowed
    );
    // The statement is about instances: a launch that names no instance resource is not hit.
    assert_eq!(
        set.evaluate(&RequestContext::new("ec2:RunInstances").with_resource(VOLUME)),
        Decision::Allowed
    );
    assert_eq!(set.evaluate(&modify_options()), Decision::Allowed);
}

#[test]
fn max_hop_limit_denies_launches_above_three_hops() {
    let set = example("max-hop-limit");
    let hops = |n: &str| run_instances().with_value(key::METADATA_HTTP_PUT_RESPONSE_HOP_LIMIT, n);
    let denied = deny("max-hop-limit", Some("MaxImdsHopLimit"));
    assert_eq!(set.evaluate(&hops("1")), Decision::Allowed);
    assert_eq!(set.evaluate(&hops("3")), Decision::Allowed);
    assert_eq!(set.evaluate(&hops("4")), denied);
    assert_eq!(set.evaluate(&hops("64")), denied);
    // Not a negated operator: a launch that leaves the hop limit out is not denied by it.
    assert_eq!(set.evaluate(&run_instances()), Decision::Allowed);
}

#[test]
fn deny_imdsv1_opt_out_denies_modifications_that_set_tokens_optional() {
    let set = example("deny-imdsv1-opt-out");
    let denied = deny(
        "deny-imdsv1-opt-out",
        Some("DenyIMDSv1HttpTokensModification"),
    );
    let tokens = |v: &str| modify_options().with_value("ec2:Attribute/HttpTokens", v);
    assert_eq!(set.evaluate(&tokens("optional")), denied);
    assert_eq!(set.evaluate(&tokens("required")), Decision::Allowed);
    // Changing only the hop limit leaves HttpTokens absent: Null false keeps it allowed.
    assert_eq!(
        set.evaluate(&modify_options().with_value("ec2:Attribute/HttpPutResponseHopLimit", "2")),
        Decision::Allowed
    );
}

#[test]
fn only_imds_admins_may_modify_metadata_options() {
    let set = example("only-imds-admins-modify-options");
    let denied = deny(
        "only-imds-admins-modify-options",
        Some("AllowOnlyImdsAdminsToModifySettings"),
    );
    let by = |arn: &str| modify_options().with_value("aws:PrincipalArn", arn);
    assert_eq!(
        set.evaluate(&by("arn:aws:iam::111122223333:role/ec2-imds-admins")),
        Decision::Allowed
    );
    assert_eq!(
        set.evaluate(&by("arn:aws:iam::111122223333:role/developer")),
        denied
    );
    // No principal known: StringNotLike on a missing key is true, so the deny applies.
    assert_eq!(set.evaluate(&modify_options()), denied);
}

#[test]
fn deny_modify_metadata_options_denies_every_modification() {
    let set = example("deny-modify-metadata-options");
    assert_eq!(
        set.evaluate(&modify_options().with_value("ec2:Attribute/HttpTokens", "required")),
        deny("deny-modify-metadata-options", None)
    );
    assert_eq!(
        set.evaluate(&RequestContext::new("ec2:ModifyInstanceMetadataOptions")),
        deny("deny-modify-metadata-options", None)
    );
    assert_eq!(set.evaluate(&run_instances()), Decision::Allowed);
}

#[test]
fn require_role_credentials_from_imdsv2_compares_decimals() {
    let set = example("require-imdsv2-role-credentials");
    let delivery =
        |v: &str| RequestContext::new("ec2:DescribeInstances").with_value("ec2:RoleDelivery", v);
    let denied = deny(
        "require-imdsv2-role-credentials",
        Some("RequireAllEc2RolesToUseV2"),
    );
    assert_eq!(set.evaluate(&delivery("1.0")), denied);
    assert_eq!(set.evaluate(&delivery("2.0")), Decision::Allowed);
    assert_eq!(set.evaluate(&delivery("2")), Decision::Allowed);
    // Credentials that are not EC2 role credentials carry no RoleDelivery.
    assert_eq!(
        set.evaluate(&RequestContext::new("ec2:DescribeInstances")),
        Decision::Allowed
    );
}

#[test]
fn require_tag_on_create_denies_launches_without_project_and_cost_center() {
    let set = example("require-tag-on-create");
    assert_eq!(
        set.evaluate(&run_instances()),
        deny(
            "require-tag-on-create",
            Some("DenyRunInstanceWithNoProjectTag")
        )
    );
    assert_eq!(
        set.evaluate(&run_instances().with_request_tag("Project", "imds")),
        deny(
            "require-tag-on-create",
            Some("DenyRunInstanceWithNoCostCenterTag")
        )
    );
    assert_eq!(
        set.evaluate(
            &run_instances()
                .with_request_tag("project", "imds")
                .with_request_tag("costcenter", "42")
        ),
        Decision::Allowed,
        "condition keys, tag keys included, ignore case"
    );
    assert_eq!(
        set.evaluate(&RequestContext::new("secretsmanager:CreateSecret")),
        deny(
            "require-tag-on-create",
            Some("DenyCreateSecretWithNoProjectTag")
        )
    );
}

#[test]
fn tag_on_create_only_purpose_test_allows_only_that_tag() {
    let set = example("tag-on-create-only-purpose-test");
    let not_allowed = Decision::NotAllowed {
        policy: "tag-on-create-only-purpose-test".to_owned(),
    };
    assert_eq!(set.evaluate(&run_instances()), Decision::Allowed);
    let create_tags = || {
        RequestContext::new("ec2:CreateTags")
            .with_resource(SPECIFIC_INSTANCE)
            .with_value("ec2:CreateAction", "RunInstances")
    };
    assert_eq!(
        set.evaluate(&create_tags().with_request_tag("purpose", "test")),
        Decision::Allowed
    );
    assert_eq!(
        set.evaluate(&create_tags().with_request_tag("purpose", "prod")),
        not_allowed
    );
    assert_eq!(
        set.evaluate(
            &create_tags()
                .with_request_tag("purpose", "test")
                .with_request_tag("owner", "me")
        ),
        not_allowed,
        "ForAllValues: every tag key must be listed"
    );
    assert_eq!(
        set.evaluate(
            &RequestContext::new("ec2:TerminateInstances").with_resource(SPECIFIC_INSTANCE)
        ),
        not_allowed,
        "an allow-list policy allows nothing else"
    );
}

#[test]
fn tag_on_create_at_least_one_needs_an_environment_or_webserver_tag_on_instances() {
    let set = example("tag-on-create-at-least-one");
    let not_allowed = Decision::NotAllowed {
        policy: "tag-on-create-at-least-one".to_owned(),
    };
    assert_eq!(set.evaluate(&run_instances()), not_allowed);
    assert_eq!(
        set.evaluate(&run_instances().with_request_tag("owner", "me")),
        not_allowed
    );
    assert_eq!(
        set.evaluate(
            &run_instances()
                .with_request_tag("owner", "me")
                .with_request_tag("environment", "prod")
        ),
        Decision::Allowed
    );
    // The image, subnet and the rest are allowed without tags; the instance is what needs one.
    assert_eq!(
        set.evaluate(
            &RequestContext::new("ec2:RunInstances")
                .with_resource(IMAGE)
                .with_resource(SUBNET)
        ),
        Decision::Allowed
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
        set.evaluate(&run_instances()),
        deny("require-imdsv2", Some("RequireImdsV2"))
    );
    assert_eq!(
        set.evaluate(&run_instances().with_value(key::METADATA_HTTP_TOKENS, "required")),
        Decision::Allowed
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
        set.evaluate(&RequestContext::new("ec2:DescribeInstances")),
        Decision::Allowed
    );
    assert_eq!(
        set.evaluate(&run_instances()),
        Decision::NotAllowed {
            policy: "describe-only".to_owned()
        }
    );
    assert_eq!(
        set.evaluate(&RequestContext::new("s3:ListBuckets")),
        Decision::NotAllowed {
            policy: "ec2-only".to_owned()
        }
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
    // The deny-only policy lets TerminateInstances through; the allow-list one does not.
    assert_eq!(
        set.evaluate(&RequestContext::new("ec2:TerminateInstances")),
        Decision::NotAllowed {
            policy: "describe-only".to_owned()
        }
    );
    assert!(example("require-imdsv2")
        .evaluate(&RequestContext::new("ec2:TerminateInstances"))
        .is_allowed());
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
        set.evaluate(&modify_options()),
        deny("deny-modify-metadata-options", None)
    );
}

#[test]
fn decisions_read_as_the_reason() {
    assert_eq!(Decision::Allowed.to_string(), "allowed");
    assert_eq!(
        deny("require-imdsv2", Some("RequireImdsV2")).to_string(),
        "explicit deny in service control policy require-imdsv2 (statement RequireImdsV2)"
    );
    assert_eq!(
        Decision::NotAllowed {
            policy: "p".to_owned()
        }
        .to_string(),
        "no statement in service control policy p allows it"
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
            let _ = set.evaluate(&run_instances().with_value(key::METADATA_HTTP_TOKENS, "optional"));
            let _ = set.evaluate(&RequestContext::new("ec2:DescribeInstances"));
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
        let mut context = run_instances();
        if let Some(t) = &tokens {
            context = context.with_value(key::METADATA_HTTP_TOKENS, t.clone());
        }
        if let Some(h) = hops {
            context = context.with_value(key::METADATA_HTTP_PUT_RESPONSE_HOP_LIMIT, h.to_string());
        }
        let denied = tokens.as_deref() != Some("required");
        prop_assert_eq!(!set.evaluate(&context).is_allowed(), denied);
    }

    #[test]
    fn a_hop_limit_is_denied_exactly_above_the_maximum(hops in 1u32..=64) {
        let set = example("max-hop-limit");
        let context = run_instances().with_value(key::METADATA_HTTP_PUT_RESPONSE_HOP_LIMIT, hops.to_string());
        prop_assert_eq!(set.evaluate(&context).is_allowed(), hops <= 3);
    }
}

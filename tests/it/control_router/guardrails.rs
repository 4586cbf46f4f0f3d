//! Guardrail policies deciding `RunInstances` and `ModifyInstanceMetadataOptions` as IAM does:
//! one decision per resource the action touches, in this imds' region (us-east-1) and account
//! (123456789012), so region- and account-scoped statements apply; every example policy
//! AWS publishes (`tests/policies/`, account id substituted) allowing and refusing what it does
//! on AWS; and launches from launch templates (`ec2:LaunchTemplate`,
//! `ec2:IsLaunchTemplateResource`, the template's own ARN and tags).

use http::StatusCode;
use imds::control::policy::{Policy, PolicySet};

use super::{element, Fixture};

/// The account of the built-in instance, which the examples' 111122223333 becomes.
const ACCOUNT: &str = "123456789012";

/// A fleet with `policies` (JSON documents) in force, and one instance launched before them.
async fn fleet_with(policies: &[(&str, String)]) -> Fixture {
    let f = Fixture::new("[server]\nfleet = true\n");
    launch(&f, "").await.unwrap();
    let set = policies
        .iter()
        .fold(PolicySet::default(), |set, (name, json)| {
            set.with(*name, Policy::parse(json).unwrap())
        });
    f.app.control.set_policies(set);
    f
}

/// The example `name` from `tests/policies/`, its account id replaced by this imds' own.
fn example(name: &str) -> (&str, String) {
    let path = format!("{}/tests/policies/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let json = std::fs::read_to_string(path).unwrap();
    (name, json.replace("111122223333", ACCOUNT))
}

/// `RunInstances` of one instance with `params` added: `Ok` with the answer, or the
/// `UnauthorizedOperation` message (any other refusal fails the test).
async fn launch(f: &Fixture, params: &str) -> Result<String, String> {
    let (status, answer) = f
        .query(&format!(
            "Action=RunInstances&ImageId=ami-0abcdef1234567890&MinCount=1&MaxCount=1{params}"
        ))
        .await;
    refused_only_by_guardrails(status, answer)
}

/// `ModifyInstanceMetadataOptions` of an instance of the fleet with `params`.
async fn modify(f: &Fixture, params: &str) -> Result<String, String> {
    let (_, described) = f.query("Action=DescribeInstances").await;
    let instance = element(&described, "instanceId").unwrap();
    let (status, answer) = f
        .query(&format!(
            "Action=ModifyInstanceMetadataOptions&InstanceId={instance}{params}"
        ))
        .await;
    refused_only_by_guardrails(status, answer)
}

fn refused_only_by_guardrails(status: StatusCode, answer: String) -> Result<String, String> {
    if status == StatusCode::OK {
        return Ok(answer);
    }
    assert_eq!(
        element(&answer, "Code"),
        Some("UnauthorizedOperation"),
        "{answer}"
    );
    Err(element(&answer, "Message").unwrap_or_default().to_owned())
}

/// `TagSpecification`s tagging `resource_types` with `tags`.
fn tag_specifications(resource_types: &[&str], tags: &[(&str, &str)]) -> String {
    let mut params = String::new();
    for (n, resource_type) in resource_types.iter().enumerate() {
        let n = n + 1;
        params.push_str(&format!(
            "&TagSpecification.{n}.ResourceType={resource_type}"
        ));
        for (m, (key, value)) in tags.iter().enumerate() {
            let m = m + 1;
            params.push_str(&format!(
                "&TagSpecification.{n}.Tag.{m}.Key={key}&TagSpecification.{n}.Tag.{m}.Value={value}"
            ));
        }
    }
    params
}

fn require_imdsv2_in(region: &str) -> (&'static str, String) {
    (
        "require-imdsv2-in-region",
        format!(
            r#"{{"Version": "2012-10-17", "Statement": [{{"Sid": "RequireImdsV2InRegion",
            "Effect": "Deny", "Action": "ec2:RunInstances",
            "Resource": "arn:aws:ec2:{region}:*:instance/*",
            "Condition": {{"StringNotEquals": {{"ec2:MetadataHttpTokens": "required"}}}}}}]}}"#
        ),
    )
}

#[tokio::test]
async fn a_require_imdsv2_deny_scoped_to_us_east_1_refuses_an_optional_launch_there() {
    let f = fleet_with(&[require_imdsv2_in("us-east-1")]).await;
    let refused = launch(&f, "&MetadataOptions.HttpTokens=optional")
        .await
        .unwrap_err();
    assert!(
        refused.contains(
            "explicit deny in service control policy require-imdsv2-in-region (statement \
             RequireImdsV2InRegion) for ec2:RunInstances on \
             arn:aws:ec2:us-east-1:123456789012:instance/*"
        ),
        "{refused}"
    );
    launch(&f, "&MetadataOptions.HttpTokens=required")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_require_imdsv2_deny_scoped_to_another_region_does_not_apply() {
    let f = fleet_with(&[require_imdsv2_in("eu-west-1")]).await;
    launch(&f, "&MetadataOptions.HttpTokens=optional")
        .await
        .unwrap();
}

#[tokio::test]
async fn an_account_scoped_deny_applies_to_this_account_only() {
    let deny = |account: &str| {
        (
            "deny-launches",
            format!(
                r#"{{"Version": "2012-10-17", "Statement": {{"Effect": "Deny",
                "Action": "ec2:RunInstances", "Resource": "arn:aws:ec2:*:{account}:*"}}}}"#
            ),
        )
    };
    let f = fleet_with(&[deny("444455556666")]).await;
    launch(&f, "").await.unwrap();
    let f = fleet_with(&[deny(ACCOUNT)]).await;
    launch(&f, "").await.unwrap_err();
}

#[tokio::test]
async fn a_launch_is_decided_on_its_image_subnet_security_groups_and_key_pair_too() {
    let deny = |resource: &str| {
        (
            "deny-one",
            format!(
                r#"{{"Version": "2012-10-17", "Statement": {{"Effect": "Deny",
                "Action": "ec2:RunInstances", "Resource": "{resource}"}}}}"#
            ),
        )
    };
    for resource in [
        "arn:aws:ec2:us-east-1::image/ami-0abcdef1234567890",
        "arn:aws:ec2:us-east-1:123456789012:subnet/subnet-*",
        "arn:aws:ec2:us-east-1:123456789012:security-group/sg-*",
        "arn:aws:ec2:us-east-1:123456789012:network-interface/*",
        "arn:aws:ec2:us-east-1:123456789012:volume/*",
    ] {
        let f = fleet_with(&[deny(resource)]).await;
        let refused = launch(&f, "").await.unwrap_err();
        assert!(
            refused.contains("for ec2:RunInstances on arn:aws:ec2:us-east-1:"),
            "{refused}"
        );
    }
    let f = fleet_with(&[deny("arn:aws:ec2:us-east-1::image/ami-0ffffffffffffffff")]).await;
    launch(&f, "").await.unwrap();
    let f = fleet_with(&[deny("arn:aws:ec2:us-east-1:123456789012:key-pair/*")]).await;
    launch(&f, "").await.unwrap();
    let (status, imported) = f
        .query(&format!(
            "Action=ImportKeyPair&KeyName=ops&PublicKeyMaterial={}",
            form_urlencoded::byte_serialize(KEY.as_bytes()).collect::<String>()
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{imported}");
    let refused = launch(&f, "&KeyName=ops").await.unwrap_err();
    assert!(
        refused.contains("on arn:aws:ec2:us-east-1:123456789012:key-pair/ops"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_launch_into_an_unknown_subnet_is_refused_before_any_policy_could_allow_it() {
    let f = fleet_with(&[example("full-aws-access")]).await;
    let (status, answer) = f
        .query("Action=RunInstances&ImageId=ami-0abcdef1234567890&MinCount=1&MaxCount=1&SubnetId=subnet-0000000000000000f")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(element(&answer, "Code"), Some("InvalidSubnetID.NotFound"));
}

#[tokio::test]
async fn aws_require_imdsv2_for_run_instances_refuses_launches_that_do_not_require_tokens() {
    let f = fleet_with(&[example("require-imdsv2")]).await;
    launch(&f, "").await.unwrap_err();
    launch(&f, "&MetadataOptions.HttpTokens=optional")
        .await
        .unwrap_err();
    launch(&f, "&MetadataOptions.HttpTokens=required")
        .await
        .unwrap();
    modify(&f, "&HttpTokens=optional").await.unwrap();
}

#[tokio::test]
async fn tag_on_create_at_least_one_allows_a_tagged_launch_and_refuses_an_untagged_one() {
    let f = fleet_with(&[example("tag-on-create-at-least-one")]).await;
    let refused = launch(&f, "").await.unwrap_err();
    assert!(
        refused.contains(
            "no statement in service control policy tag-on-create-at-least-one allows \
             ec2:RunInstances on arn:aws:ec2:us-east-1:123456789012:instance/*"
        ),
        "{refused}"
    );
    let tags = [("environment", "prod"), ("owner", "me")];
    // The volume is created with the instance and needs its tag as well.
    launch(&f, &tag_specifications(&["instance"], &tags))
        .await
        .unwrap_err();
    launch(
        &f,
        &tag_specifications(&["instance", "volume"], &[("owner", "me")]),
    )
    .await
    .unwrap_err();
    let launched = launch(&f, &tag_specifications(&["instance", "volume"], &tags))
        .await
        .unwrap();
    assert!(launched.contains("<key>environment</key>"), "{launched}");
}

#[tokio::test]
async fn every_example_policy_allows_and_refuses_what_it_does_on_aws() {
    let both = |tags: &[(&str, &str)]| tag_specifications(&["instance", "volume"], tags);
    let launches: &[(&str, &[String], &[String])] = &[
        (
            "require-imdsv2",
            &["&MetadataOptions.HttpTokens=required".into()],
            &["".into(), "&MetadataOptions.HttpTokens=optional".into()],
        ),
        (
            "max-hop-limit",
            &[
                "".into(),
                "&MetadataOptions.HttpPutResponseHopLimit=3".into(),
            ],
            &["&MetadataOptions.HttpPutResponseHopLimit=4".into()],
        ),
        (
            "require-tag-on-create",
            &[both(&[("Project", "imds"), ("CostCenter", "42")])],
            &[
                "".into(),
                both(&[("Project", "imds")]),
                tag_specifications(&["instance"], &[("Project", "imds"), ("CostCenter", "42")]),
            ],
        ),
        (
            "tag-on-create-only-purpose-test",
            &["".into(), both(&[("purpose", "test")])],
            &[
                both(&[("purpose", "prod")]),
                both(&[("purpose", "test"), ("owner", "me")]),
            ],
        ),
        (
            "tag-on-create-at-least-one",
            &[both(&[("webserver", "")]), both(&[("environment", "test")])],
            &["".into(), both(&[("owner", "me")])],
        ),
        ("full-aws-access", &["".into()], &[]),
        // No control API caller has role credentials from an instance: never refused here.
        ("require-imdsv2-role-credentials", &["".into()], &[]),
        ("deny-modify-metadata-options", &["".into()], &[]),
        ("only-imds-admins-modify-options", &["".into()], &[]),
        ("deny-imdsv1-opt-out", &["".into()], &[]),
        // Launches from templates: see the tests of launch templates below.
        ("launch-template-no-overrides", &[], &["".into()]),
        ("launch-template-tagged-webservers", &[], &["".into()]),
    ];
    for (name, allowed, refused) in launches {
        let f = fleet_with(&[example(name)]).await;
        for params in *allowed {
            assert!(launch(&f, params).await.is_ok(), "{name} refused {params}");
        }
        for params in *refused {
            assert!(launch(&f, params).await.is_err(), "{name} allowed {params}");
        }
    }
    let modifications: &[(&str, &[&str], &[&str])] = &[
        (
            "deny-imdsv1-opt-out",
            &["&HttpTokens=required", "&HttpPutResponseHopLimit=2"],
            &["&HttpTokens=optional"],
        ),
        (
            "deny-modify-metadata-options",
            &[],
            &["&HttpTokens=required"],
        ),
        // imds knows no caller principal: aws:PrincipalARN is absent, so StringNotLike holds.
        (
            "only-imds-admins-modify-options",
            &[],
            &["&HttpTokens=required"],
        ),
        ("require-imdsv2", &["&HttpTokens=optional"], &[]),
        (
            "require-imdsv2-role-credentials",
            &["&HttpTokens=required"],
            &[],
        ),
        ("full-aws-access", &["&HttpTokens=required"], &[]),
        // An allow-list of RunInstances and CreateTags: anything else is not allowed.
        ("tag-on-create-at-least-one", &[], &["&HttpTokens=required"]),
        (
            "tag-on-create-only-purpose-test",
            &[],
            &["&HttpTokens=required"],
        ),
        ("max-hop-limit", &["&HttpPutResponseHopLimit=64"], &[]),
        ("require-tag-on-create", &["&HttpTokens=required"], &[]),
        // Allow-lists of RunInstances alone.
        (
            "launch-template-no-overrides",
            &[],
            &["&HttpTokens=required"],
        ),
        (
            "launch-template-tagged-webservers",
            &[],
            &["&HttpTokens=required"],
        ),
    ];
    for (name, allowed, refused) in modifications {
        let f = fleet_with(&[example(name)]).await;
        for params in *allowed {
            assert!(modify(&f, params).await.is_ok(), "{name} refused {params}");
        }
        for params in *refused {
            assert!(modify(&f, params).await.is_err(), "{name} allowed {params}");
        }
    }
}

#[tokio::test]
async fn every_example_policy_file_is_covered() {
    let dir = format!("{}/tests/policies", env!("CARGO_MANIFEST_DIR"));
    let count = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(
        count, 12,
        "add the new example to every_example_policy_allows_and_refuses_what_it_does_on_aws"
    );
}

/// `ssh-keygen -t ed25519`, for machines without `ssh-keygen`.
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGvzRkPnQpC3hJtcQq9Z0hQwVpPX4r4c0M1bM8vJ3f5x test@imds";

/// A one-statement Deny of `action` on every resource, unconditional.
fn deny_all(action: &str) -> (&'static str, String) {
    (
        "deny-action",
        format!(
            r#"{{"Version": "2012-10-17", "Statement": [{{"Sid": "DenyIt",
            "Effect": "Deny", "Action": "{action}", "Resource": "*"}}]}}"#
        ),
    )
}

/// The `UnauthorizedOperation` refusal of `params`, or `Ok` with the answer.
async fn act(f: &Fixture, params: &str) -> Result<String, String> {
    let (status, answer) = f.query(params).await;
    refused_only_by_guardrails(status, answer)
}

#[tokio::test]
async fn a_deny_on_modify_instance_metadata_defaults_refuses_it() {
    let f = fleet_with(&[deny_all("ec2:ModifyInstanceMetadataDefaults")]).await;
    act(
        &f,
        "Action=ModifyInstanceMetadataDefaults&HttpPutResponseHopLimit=64",
    )
    .await
    .unwrap_err();
}

#[tokio::test]
async fn a_deny_on_terminate_instances_refuses_it() {
    let f = fleet_with(&[deny_all("ec2:TerminateInstances")]).await;
    let (_, described) = f.query("Action=DescribeInstances").await;
    let instance = element(&described, "instanceId").unwrap().to_owned();
    act(
        &f,
        &format!("Action=TerminateInstances&InstanceId.1={instance}"),
    )
    .await
    .unwrap_err();
}

#[tokio::test]
async fn a_deny_on_create_tags_refuses_it() {
    let f = fleet_with(&[deny_all("ec2:CreateTags")]).await;
    let (_, described) = f.query("Action=DescribeInstances").await;
    let instance = element(&described, "instanceId").unwrap().to_owned();
    act(
        &f,
        &format!("Action=CreateTags&ResourceId.1={instance}&Tag.1.Key=Name&Tag.1.Value=x"),
    )
    .await
    .unwrap_err();
}

/// As in IAM, a launch's condition keys are the request's own: one that relies on the
/// account's defaults carries no `ec2:MetadataHttpPutResponseHopLimit`, so `max-hop-limit`
/// alone does not see a hop limit of 64 set as the default (on AWS neither). A Deny on
/// `ec2:ModifyInstanceMetadataDefaults` beside it closes that door, and it now applies.
#[tokio::test]
async fn max_hop_limit_with_a_deny_on_the_defaults_keeps_every_launch_within_three_hops() {
    let f = fleet_with(&[
        example("max-hop-limit"),
        deny_all("ec2:ModifyInstanceMetadataDefaults"),
    ])
    .await;
    launch(&f, "&MetadataOptions.HttpPutResponseHopLimit=64")
        .await
        .unwrap_err();
    let (status, answer) = f
        .query("Action=ModifyInstanceMetadataDefaults&HttpPutResponseHopLimit=64")
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(element(&answer, "Code"), Some("UnauthorizedOperation"));
    let launched = launch(&f, "").await.unwrap();
    assert_eq!(element(&launched, "httpPutResponseHopLimit"), Some("1"));
}

#[tokio::test]
async fn imds_own_actions_are_decided_as_imds_actions_and_reads_are_not_decided() {
    let f = fleet_with(&[deny_all("ec2:*"), deny_all_named("imds:RotateKeys")]).await;
    let (status, answer) = f.query("Action=RotateKeys").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let (_, described) = f.query("Action=DescribeInstances").await;
    let instance = element(&described, "instanceId")
        .expect("reads are answered")
        .to_owned();
    let (status, answer) = f
        .query(&format!(
            "Action=InjectFault&InstanceId={instance}&Status=500"
        ))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "ec2:* does not cover imds' faults: {answer}"
    );
    let (status, answer) = f
        .query(&format!("Action=StopInstances&InstanceId.1={instance}"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
}

/// [`deny_all`] under another policy name, so that two can be attached together.
fn deny_all_named(action: &str) -> (&'static str, String) {
    ("deny-other-action", deny_all(action).1)
}

/// A fleet with the launch templates `web` (tagged `Purpose=Webservers`) and `other`, made
/// before `policies` are put in force (allow-lists of launches allow nothing else): their ids.
async fn fleet_with_templates(policies: &[(&str, String)]) -> (Fixture, String, String) {
    let f = Fixture::new("[server]\nfleet = true\n");
    let mut ids = Vec::new();
    for (name, tags) in [
        (
            "web",
            "&TagSpecification.1.ResourceType=launch-template\
             &TagSpecification.1.Tag.1.Key=Purpose&TagSpecification.1.Tag.1.Value=Webservers",
        ),
        ("other", ""),
    ] {
        let (status, answer) = f
            .query(&format!(
                "Action=CreateLaunchTemplate&LaunchTemplateName={name}\
                 &LaunchTemplateData.ImageId=ami-0aaaaaaaaaaaaaaa1{tags}"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        ids.push(element(&answer, "launchTemplateId").unwrap().to_owned());
    }
    let set = policies
        .iter()
        .fold(PolicySet::default(), |set, (name, json)| {
            set.with(*name, Policy::parse(json).unwrap())
        });
    f.app.control.set_policies(set);
    let other = ids.pop().unwrap();
    (f, ids.pop().unwrap(), other)
}

/// `RunInstances` of one instance with `params` (naming a template, no image of its own).
async fn from_template(f: &Fixture, params: &str) -> Result<String, String> {
    let (status, answer) = f
        .query(&format!(
            "Action=RunInstances&MinCount=1&MaxCount=1{params}"
        ))
        .await;
    refused_only_by_guardrails(status, answer)
}

#[tokio::test]
async fn aws_launch_template_policies_allow_only_launches_that_keep_the_templates_resources() {
    let (f, web, other) = fleet_with_templates(&[example("launch-template-no-overrides")]).await;
    let (_, subnets) = f.query("Action=DescribeSubnets").await;
    let subnet = element(&subnets, "subnetId").unwrap().to_owned();
    for params in [
        "&LaunchTemplate.LaunchTemplateName=web".to_owned(),
        format!("&LaunchTemplate.LaunchTemplateId={other}&LaunchTemplate.Version=$Latest"),
        // Not a resource: the instance type is the request's to choose.
        format!("&LaunchTemplate.LaunchTemplateId={web}&InstanceType=t3.small"),
    ] {
        let launched = from_template(&f, &params).await.unwrap();
        assert!(launched.contains("<instanceId>"), "{launched}");
    }
    // A resource the request names over the template's is not the template's.
    for (params, resource) in [
        (
            "&ImageId=ami-0abcdef1234567890".to_owned(),
            "arn:aws:ec2:us-east-1::image/ami-0abcdef1234567890".to_owned(),
        ),
        (
            format!("&SubnetId={subnet}"),
            format!("arn:aws:ec2:us-east-1:{ACCOUNT}:subnet/{subnet}"),
        ),
    ] {
        let refused = from_template(
            &f,
            &format!("&LaunchTemplate.LaunchTemplateName=web{params}"),
        )
        .await
        .unwrap_err();
        assert!(
            refused.contains(&format!(
                "no statement in service control policy launch-template-no-overrides allows \
                 ec2:RunInstances on {resource}"
            )),
            "{params}: {refused}"
        );
    }
    // Without a template, nothing is allowed.
    let refused = launch(&f, "").await.unwrap_err();
    assert!(
        refused.contains(&format!(
            "allows ec2:RunInstances on arn:aws:ec2:us-east-1:{ACCOUNT}:instance/*"
        )),
        "{refused}"
    );

    // Only from a template tagged Purpose=Webservers: the template is decided with its tags.
    let (f, web, other) =
        fleet_with_templates(&[example("launch-template-tagged-webservers")]).await;
    from_template(&f, &format!("&LaunchTemplate.LaunchTemplateId={web}"))
        .await
        .unwrap();
    let refused = from_template(&f, &format!("&LaunchTemplate.LaunchTemplateId={other}"))
        .await
        .unwrap_err();
    assert!(
        refused.contains(&format!(
            "ec2:RunInstances on arn:aws:ec2:us-east-1:{ACCOUNT}:launch-template/{other}"
        )),
        "{refused}"
    );
    from_template(
        &f,
        "&LaunchTemplate.LaunchTemplateName=web&ImageId=ami-0abcdef1234567890",
    )
    .await
    .unwrap_err();
}

#[tokio::test]
async fn an_scp_denying_launches_without_a_launch_template_lets_only_template_launches_through() {
    let no_template = (
        "launch-from-templates-only",
        r#"{"Version": "2012-10-17", "Statement": [{"Sid": "DenyWithoutTemplate",
            "Effect": "Deny", "Action": "ec2:RunInstances", "Resource": "arn:aws:ec2:*:*:instance/*",
            "Condition": {"Null": {"ec2:LaunchTemplate": "true"}}}]}"#
            .to_owned(),
    );
    let (f, web, _) = fleet_with_templates(&[example("full-aws-access"), no_template]).await;
    let refused = launch(&f, "").await.unwrap_err();
    assert!(
        refused.contains(
            "explicit deny in service control policy launch-from-templates-only \
             (statement DenyWithoutTemplate) for ec2:RunInstances"
        ),
        "{refused}"
    );
    // From any template, overrides and all (this SCP does not forbid them).
    from_template(&f, "&LaunchTemplate.LaunchTemplateName=other")
        .await
        .unwrap();
    from_template(
        &f,
        &format!("&LaunchTemplate.LaunchTemplateId={web}&ImageId=ami-0abcdef1234567890"),
    )
    .await
    .unwrap();

    // Only from one template: ArnNotLike holds for a direct launch too (the key is absent).
    let one_template = format!(
        r#"{{"Version": "2012-10-17", "Statement": [{{"Sid": "DenyOtherTemplates",
        "Effect": "Deny", "Action": "ec2:RunInstances", "Resource": "*",
        "Condition": {{"ArnNotLike": {{"ec2:LaunchTemplate":
            "arn:aws:ec2:us-east-1:{ACCOUNT}:launch-template/{web}"}}}}}}]}}"#
    );
    let (_, full) = example("full-aws-access");
    f.app.control.set_policies(
        PolicySet::default()
            .with("full-aws-access", Policy::parse(&full).unwrap())
            .with(
                "launch-from-web-only",
                Policy::parse(&one_template).unwrap(),
            ),
    );
    launch(&f, "").await.unwrap_err();
    from_template(&f, "&LaunchTemplate.LaunchTemplateName=other")
        .await
        .unwrap_err();
    from_template(&f, "&LaunchTemplate.LaunchTemplateName=web")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_deny_on_one_launch_template_applies_whether_it_is_named_by_id_or_by_name() {
    let (f, web, _) = fleet_with_templates(&[]).await;
    let deny = format!(
        r#"{{"Version": "2012-10-17", "Statement": [{{"Sid": "KeepWeb", "Effect": "Deny",
        "Action": ["ec2:DeleteLaunchTemplateVersions", "ec2:CreateLaunchTemplateVersion"],
        "Resource": "arn:aws:ec2:us-east-1:{ACCOUNT}:launch-template/{web}"}}]}}"#
    );
    f.app
        .control
        .set_policies(PolicySet::default().with("keep-web", Policy::parse(&deny).unwrap()));
    for named in [
        format!("LaunchTemplateId={web}"),
        "LaunchTemplateName=web".to_owned(),
    ] {
        for action in [
            "DeleteLaunchTemplateVersions&LaunchTemplateVersion.1=1",
            "CreateLaunchTemplateVersion&LaunchTemplateData.InstanceType=t3.small",
        ] {
            let refused = act(&f, &format!("Action={action}&{named}"))
                .await
                .unwrap_err();
            assert!(
                refused.contains(&format!("launch-template/{web}")),
                "{action} {named}: {refused}"
            );
        }
    }
    act(
        &f,
        "Action=CreateLaunchTemplateVersion&LaunchTemplateName=other&LaunchTemplateData.InstanceType=t3.small",
    )
    .await
    .unwrap();
}

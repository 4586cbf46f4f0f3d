//! What configuration management, monitoring and infrastructure-as-code tools call and read:
//! the whole `DescribeInstances` shape (one reservation per launch, values the guest API agrees
//! with), legacy filter names, launch templates (stored, guarded, overridden), created key
//! pairs, instance attributes with EC2's state rules, the region/zone/type/image catalog, and
//! tags on every resource kind.

use std::time::Duration;

use http::StatusCode;
use imds::control::policy::{Policy, PolicySet};

use super::{assert_error, assert_ok, element, elements, text, Fixture, INSTANCE};

const FLEET: &str = "[server]\nfleet = true\n";
const LAUNCH: &str = "Action=RunInstances&ImageId=ami-0abcdef1234567890&MinCount=1&MaxCount=1";
const LAUNCH_TWO: &str = "Action=RunInstances&ImageId=ami-0abcdef1234567890&MinCount=2&MaxCount=2";

/// The ids `RunInstances` with `params` launched.
async fn launch(f: &Fixture, params: &str) -> Vec<String> {
    let answer = f.query(&format!("{LAUNCH}{params}")).await;
    elements(assert_ok(&answer, "RunInstancesResponse"), "instanceId")
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// The `<item>` of instance `id` in `DescribeInstances`.
async fn described(f: &Fixture, id: &str) -> String {
    let answer = f
        .query(&format!("Action=DescribeInstances&InstanceId.1={id}"))
        .await;
    assert_ok(&answer, "DescribeInstancesResponse").to_owned()
}

#[tokio::test]
async fn a_launch_of_two_is_one_reservation_with_interfaces_devices_and_key() {
    let f = Fixture::new(FLEET);
    let created = f
        .query("Action=CreateKeyPair&KeyName=deploy&KeyType=ed25519")
        .await;
    assert_ok(&created, "CreateKeyPairResponse");
    let before = elements(
        &f.query("Action=DescribeInstances").await.1,
        "reservationId",
    )
    .len();
    let answer = f
        .query(&format!(
            "{LAUNCH_TWO}&KeyName=deploy&ClientToken=two-at-once&DisableApiTermination=true"
        ))
        .await;
    let ids: Vec<String> = elements(assert_ok(&answer, "RunInstancesResponse"), "instanceId")
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 2);
    let all = f.query("Action=DescribeInstances").await.1;
    assert_eq!(
        elements(&all, "reservationId").len(),
        before + 1,
        "one reservation for the launch of two: {all}"
    );
    let item = described(&f, &ids[0]).await;
    assert_eq!(elements(&item, "instanceId").len(), 1);
    for (element_name, expected) in [
        ("keyName", "deploy"),
        ("clientToken", "two-at-once"),
        ("status", "attached"),
        ("interfaceType", "interface"),
        ("deviceIndex", "0"),
        ("platformDetails", "Linux/UNIX"),
        ("capacityReservationPreference", "open"),
        ("autoRecovery", "default"),
        ("hostnameType", "ip-name"),
        ("code", "0"),
    ] {
        assert_eq!(
            element(&item, element_name),
            Some(expected),
            "{element_name}: {item}"
        );
    }
    // m1.small: one core, one thread.
    assert_eq!(element(&item, "coreCount"), Some("1"));
    assert_eq!(element(&item, "threadsPerCore"), Some("1"));
    assert!(text(&item, "networkInterfaceId").starts_with("eni-"));
    assert!(text(&item, "attachmentId").starts_with("eni-attach-"));
    assert!(text(&item, "volumeId").starts_with("vol-"));
    assert_eq!(text(&item, "code"), "0", "pending at first");
    f.advance(Duration::from_secs(1));
    let running = described(&f, &ids[0]).await;
    assert_eq!(element(&running, "name"), Some("running"));
    assert!(!running.contains("<stateReason>"), "{running}");
    // DisableApiTermination holds the instance until it is lifted.
    let terminate = format!("Action=TerminateInstances&InstanceId.1={}", ids[0]);
    assert_error(
        &f.query(&terminate).await,
        StatusCode::BAD_REQUEST,
        "OperationNotPermitted",
    );
    let lift = format!(
        "Action=ModifyInstanceAttribute&InstanceId={}&DisableApiTermination.Value=false",
        ids[0]
    );
    assert_ok(&f.query(&lift).await, "ModifyInstanceAttributeResponse");
    assert_ok(&f.query(&terminate).await, "TerminateInstancesResponse");
    f.advance(Duration::from_secs(1));
    let gone = described(&f, &ids[0]).await;
    assert_eq!(element(&gone, "name"), Some("terminated"));
    assert!(
        text(&gone, "reason").starts_with("User initiated ("),
        "{gone}"
    );
    assert!(gone.contains("<stateReason><code>Client.UserInitiatedShutdown</code>"));
    // Changes to a terminated instance are EC2's IncorrectInstanceState.
    let modify = format!(
        "Action=ModifyInstanceMetadataOptions&InstanceId={}&HttpTokens=required",
        ids[0]
    );
    assert_error(
        &f.query(&modify).await,
        StatusCode::BAD_REQUEST,
        "IncorrectInstanceState",
    );
}

#[tokio::test]
async fn describe_instances_agrees_with_the_guest_api() {
    let f = Fixture::new("");
    let item = described(&f, INSTANCE).await;
    let mac = f.guest("/latest/meta-data/mac").await.1;
    assert_eq!(element(&item, "macAddress"), Some(mac.as_str()));
    let nic = |leaf: &str| format!("/latest/meta-data/network/interfaces/macs/{mac}/{leaf}");
    for (leaf, element_name) in [
        ("interface-id", "networkInterfaceId"),
        ("subnet-id", "subnetId"),
        ("vpc-id", "vpcId"),
        ("local-ipv4s", "privateIpAddress"),
        ("owner-id", "ownerId"),
    ] {
        let served = f.guest(&nic(leaf)).await.1;
        assert_eq!(
            element(&item, element_name),
            served.lines().next(),
            "{leaf}"
        );
    }
    let root = f
        .guest("/latest/meta-data/block-device-mapping/root")
        .await
        .1;
    assert_eq!(element(&item, "rootDeviceName"), Some(root.as_str()));
    assert_eq!(element(&item, "deviceName"), Some(root.as_str()));
    let groups = f.guest(&nic("security-group-ids")).await.1;
    assert!(
        elements(&item, "groupId").contains(&groups.lines().next().unwrap()),
        "{groups} in {item}"
    );
    let profile = f.guest("/latest/meta-data/iam/info").await.1;
    assert!(profile.contains(text(&item, "arn")), "{profile}");
    // t3.medium: one core, two threads.
    assert_eq!(element(&item, "coreCount"), Some("1"));
    assert_eq!(element(&item, "threadsPerCore"), Some("2"));
}

#[tokio::test]
async fn legacy_filter_names_work_and_unknown_ones_are_ec2s_error() {
    let f = Fixture::new("");
    let (status, vpcs) = f
        .query("Action=DescribeVpcs&Filter.1.Name=isDefault&Filter.1.Value.1=true")
        .await;
    assert_eq!(status, StatusCode::OK, "{vpcs}");
    assert_eq!(elements(&vpcs, "vpcId").len(), 1);
    let (_, subnets) = f
        .query("Action=DescribeSubnets&Filter.1.Name=availabilityZone&Filter.1.Value.1=us-east-1a&Filter.2.Name=defaultForAz&Filter.2.Value.1=true")
        .await;
    assert_eq!(elements(&subnets, "subnetId").len(), 1, "{subnets}");
    for action in [
        "DescribeVpcs",
        "DescribeSubnets",
        "DescribeInstances",
        "DescribeSecurityGroups",
        "DescribeKeyPairs",
        "DescribeLaunchTemplates",
        "DescribeAvailabilityZones",
        "DescribeImages",
        "DescribeInstanceTypes",
        "DescribeTags",
    ] {
        let message = assert_error(
            &f.query(&format!(
                "Action={action}&Filter.1.Name=is_default&Filter.1.Value.1=true"
            ))
            .await,
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        );
        // Quotes arrive escaped in the XML.
        assert_eq!(
            message, "The filter &apos;is_default&apos; is invalid",
            "{action}"
        );
    }
    let (_, found) = f
        .query("Action=DescribeInstances&Filter.1.Name=network-interface.mac-address&Filter.1.Value.1=0e:*")
        .await;
    assert_eq!(elements(&found, "instanceId"), [INSTANCE]);
}

#[tokio::test]
async fn the_metadata_options_state_filter_reads_pending_then_applied() {
    let f = Fixture::new("");
    let state = |value: &'static str| {
        format!("Action=DescribeInstances&Filter.1.Name=metadata-options.state&Filter.1.Value.1={value}")
    };
    let count = |answer: (StatusCode, String)| elements(&answer.1, "instanceId").len();
    assert_eq!(count(f.query(&state("applied")).await), 1);
    let modify =
        format!("Action=ModifyInstanceMetadataOptions&InstanceId={INSTANCE}&HttpTokens=required");
    assert_ok(
        &f.query(&modify).await,
        "ModifyInstanceMetadataOptionsResponse",
    );
    assert_eq!(count(f.query(&state("pending")).await), 1);
    assert_eq!(count(f.query(&state("applied")).await), 0);
    f.advance(Duration::from_secs(1));
    assert_eq!(count(f.query(&state("applied")).await), 1);
}

const TEMPLATE: &str = "Action=CreateLaunchTemplate&LaunchTemplateName=web&VersionDescription=first\
    &LaunchTemplateData.ImageId=ami-0aaaaaaaaaaaaaaa1&LaunchTemplateData.InstanceType=t3.micro\
    &LaunchTemplateData.MetadataOptions.HttpTokens=required\
    &LaunchTemplateData.MetadataOptions.HttpPutResponseHopLimit=2\
    &LaunchTemplateData.TagSpecification.1.ResourceType=instance\
    &LaunchTemplateData.TagSpecification.1.Tag.1.Key=Role&LaunchTemplateData.TagSpecification.1.Tag.1.Value=web\
    &TagSpecification.1.ResourceType=launch-template&TagSpecification.1.Tag.1.Key=Team&TagSpecification.1.Tag.1.Value=blue";

#[tokio::test]
async fn a_launch_template_launches_with_its_options_and_the_request_overrides_them() {
    let f = Fixture::new(FLEET);
    let created = f.query(TEMPLATE).await;
    let id = text(
        assert_ok(&created, "CreateLaunchTemplateResponse"),
        "launchTemplateId",
    )
    .to_owned();
    assert_eq!(element(&created.1, "defaultVersionNumber"), Some("1"));
    assert_error(
        &f.query(TEMPLATE).await,
        StatusCode::BAD_REQUEST,
        "InvalidLaunchTemplateName.AlreadyExistsException",
    );
    let version = f
        .query(&format!(
            "Action=CreateLaunchTemplateVersion&LaunchTemplateId={id}&SourceVersion=1&LaunchTemplateData.InstanceType=t3.small"
        ))
        .await;
    assert_eq!(
        element(
            assert_ok(&version, "CreateLaunchTemplateVersionResponse"),
            "versionNumber"
        ),
        Some("2")
    );
    assert_eq!(
        element(&version.1, "imageId"),
        Some("ami-0aaaaaaaaaaaaaaa1")
    );
    assert_eq!(element(&version.1, "httpTokens"), Some("required"));

    // $Default is version 1; $Latest version 2.
    let ids = launch(&f, "&LaunchTemplate.LaunchTemplateName=web").await;
    let item = described(&f, &ids[0]).await;
    assert_eq!(element(&item, "instanceType"), Some("t3.micro"));
    assert_eq!(
        element(&item, "imageId"),
        Some("ami-0abcdef1234567890"),
        "the request's"
    );
    assert_eq!(element(&item, "httpTokens"), Some("required"));
    assert_eq!(element(&item, "httpPutResponseHopLimit"), Some("2"));
    assert!(item.contains("<key>Role</key><value>web</value>"), "{item}");
    let ids = launch(
        &f,
        &format!("&LaunchTemplate.LaunchTemplateId={id}&LaunchTemplate.Version=$Latest&MetadataOptions.HttpTokens=optional"),
    )
    .await;
    let item = described(&f, &ids[0]).await;
    assert_eq!(element(&item, "instanceType"), Some("t3.small"));
    assert_eq!(
        element(&item, "httpTokens"),
        Some("optional"),
        "the request's options"
    );
    assert_eq!(
        element(&item, "httpPutResponseHopLimit"),
        Some("1"),
        "replaced whole"
    );

    // Default version 2, then described.
    let modified = f
        .query(&format!(
            "Action=ModifyLaunchTemplate&LaunchTemplateId={id}&SetDefaultVersion=2"
        ))
        .await;
    assert_eq!(
        element(
            assert_ok(&modified, "ModifyLaunchTemplateResponse"),
            "defaultVersionNumber"
        ),
        Some("2")
    );
    let versions = f
        .query("Action=DescribeLaunchTemplateVersions&LaunchTemplateName=web&LaunchTemplateVersion.1=$Default")
        .await;
    assert_eq!(elements(&versions.1, "versionNumber"), ["2"]);
    let all = f
        .query("Action=DescribeLaunchTemplateVersions&LaunchTemplateName=web")
        .await;
    assert_eq!(elements(&all.1, "versionNumber"), ["1", "2"]);
    let listed = f
        .query("Action=DescribeLaunchTemplates&Filter.1.Name=tag:Team&Filter.1.Value.1=bl*")
        .await;
    assert_eq!(elements(&listed.1, "launchTemplateId"), [id.as_str()]);

    // Unknown templates and versions are EC2's errors, never a launch without them.
    for (params, code) in [
        (
            "&LaunchTemplate.LaunchTemplateName=nope",
            "InvalidLaunchTemplateName.NotFoundException",
        ),
        (
            "&LaunchTemplate.LaunchTemplateId=lt-0123456789abcdef0",
            "InvalidLaunchTemplateId.NotFound",
        ),
        (
            "&LaunchTemplate.LaunchTemplateName=web&LaunchTemplate.Version=9",
            "InvalidLaunchTemplateId.VersionNotFound",
        ),
    ] {
        assert_error(
            &f.query(&format!("{LAUNCH}{params}")).await,
            StatusCode::BAD_REQUEST,
            code,
        );
    }
    assert_ok(
        &f.query(&format!(
            "Action=DeleteLaunchTemplate&LaunchTemplateId={id}"
        ))
        .await,
        "DeleteLaunchTemplateResponse",
    );
    assert_error(
        &f.query(&format!("{LAUNCH}&LaunchTemplate.LaunchTemplateId={id}"))
            .await,
        StatusCode::BAD_REQUEST,
        "InvalidLaunchTemplateId.NotFound",
    );
}

#[tokio::test]
async fn a_templates_metadata_options_are_guarded_like_a_direct_launch() {
    let f = Fixture::new(FLEET);
    let path = format!(
        "{}/tests/policies/require-imdsv2.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let policy = std::fs::read_to_string(path).unwrap();
    f.app
        .control
        .set_policies(PolicySet::default().with("require-imdsv2", Policy::parse(&policy).unwrap()));
    let optional = "Action=CreateLaunchTemplate&LaunchTemplateName=loose\
        &LaunchTemplateData.MetadataOptions.HttpTokens=optional";
    assert_ok(&f.query(optional).await, "CreateLaunchTemplateResponse");
    let strict = "Action=CreateLaunchTemplate&LaunchTemplateName=strict\
        &LaunchTemplateData.MetadataOptions.HttpTokens=required";
    assert_ok(&f.query(strict).await, "CreateLaunchTemplateResponse");
    assert_error(
        &f.query(&format!("{LAUNCH}&LaunchTemplate.LaunchTemplateName=loose"))
            .await,
        StatusCode::FORBIDDEN,
        "UnauthorizedOperation",
    );
    assert_eq!(
        launch(&f, "&LaunchTemplate.LaunchTemplateName=strict")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn created_key_pairs_return_their_private_key_once_with_ec2s_fingerprints() {
    let f = Fixture::new(FLEET);
    let rsa = f.query("Action=CreateKeyPair&KeyName=rsa-key").await;
    let rsa = assert_ok(&rsa, "CreateKeyPairResponse").to_owned();
    assert!(text(&rsa, "keyMaterial").starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    // SHA-1: 20 bytes in colon-separated hex.
    assert_eq!(text(&rsa, "keyFingerprint").len(), 59, "{rsa}");
    let ed = f
        .query("Action=CreateKeyPair&KeyName=ed-key&KeyType=ed25519&KeyFormat=ppk")
        .await;
    let ed = assert_ok(&ed, "CreateKeyPairResponse").to_owned();
    assert!(text(&ed, "keyMaterial").starts_with("PuTTY-User-Key-File-2: ssh-ed25519"));
    assert!(text(&ed, "keyFingerprint").ends_with('='));
    assert_error(
        &f.query("Action=CreateKeyPair&KeyName=ed-key").await,
        StatusCode::BAD_REQUEST,
        "InvalidKeyPair.Duplicate",
    );
    let described = f
        .query("Action=DescribeKeyPairs&IncludePublicKey=true&KeyName.1=ed-key")
        .await
        .1;
    assert!(!described.contains("keyMaterial"), "{described}");
    assert_eq!(element(&described, "keyType"), Some("ed25519"));
    assert_eq!(
        element(&described, "keyFingerprint"),
        element(&ed, "keyFingerprint")
    );
    let public = text(&described, "publicKey").to_owned();
    // The instance launched with it serves the public half.
    let ids = launch(&f, "&KeyName=ed-key").await;
    let item = described_item(&f, &ids[0]).await;
    assert_eq!(element(&item, "keyName"), Some("ed-key"));
    let config = f
        .app
        .state
        .instance(&ids[0].parse().unwrap())
        .unwrap()
        .current()
        .instance
        .config
        .public_keys
        .clone();
    assert_eq!(config[0].openssh_key, public);
}

async fn described_item(f: &Fixture, id: &str) -> String {
    described(f, id).await
}

#[tokio::test]
async fn instance_attributes_follow_ec2s_state_rules() {
    let f = Fixture::new(FLEET);
    let ids = launch(
        &f,
        "&UserData=aGVsbG8=&InstanceInitiatedShutdownBehavior=terminate",
    )
    .await;
    f.advance(Duration::from_secs(1));
    let attribute = |name: &str| {
        format!(
            "Action=DescribeInstanceAttribute&InstanceId={}&Attribute={name}",
            ids[0]
        )
    };
    let user_data = f.query(&attribute("userData")).await;
    assert_eq!(
        element(
            assert_ok(&user_data, "DescribeInstanceAttributeResponse"),
            "value"
        ),
        Some("aGVsbG8=")
    );
    let behaviour = f
        .query(&attribute("instanceInitiatedShutdownBehavior"))
        .await;
    assert_eq!(element(&behaviour.1, "value"), Some("terminate"));
    let change_type = format!(
        "Action=ModifyInstanceAttribute&InstanceId={}&InstanceType.Value=t3.large",
        ids[0]
    );
    assert_error(
        &f.query(&change_type).await,
        StatusCode::BAD_REQUEST,
        "IncorrectInstanceState",
    );
    let stop = format!("Action=StopInstances&InstanceId.1={}", ids[0]);
    assert_ok(&f.query(&stop).await, "StopInstancesResponse");
    f.advance(Duration::from_secs(1));
    assert_ok(
        &f.query(&change_type).await,
        "ModifyInstanceAttributeResponse",
    );
    let kind = f.query(&attribute("instanceType")).await;
    assert_eq!(element(&kind.1, "value"), Some("t3.large"));
    let console = f
        .query(&format!("Action=GetConsoleOutput&InstanceId={}", ids[0]))
        .await;
    assert_eq!(
        element(
            assert_ok(&console, "GetConsoleOutputResponse"),
            "instanceId"
        ),
        Some(ids[0].as_str())
    );
}

#[tokio::test]
async fn the_region_zones_account_types_and_images_are_described() {
    let f = Fixture::new("");
    let regions = f.query("Action=DescribeRegions").await;
    assert_eq!(elements(&regions.1, "regionName"), ["us-east-1"]);
    let zones = f
        .query(
            "Action=DescribeAvailabilityZones&Filter.1.Name=zone-name&Filter.1.Value.1=us-east-1a",
        )
        .await;
    assert_eq!(elements(&zones.1, "zoneId"), ["use1-az4"]);
    let attributes = f
        .query("Action=DescribeAccountAttributes&AttributeName.1=default-vpc")
        .await;
    assert_eq!(
        element(&attributes.1, "attributeValue"),
        Some("vpc-0c4f6a8e2b1d35792")
    );
    let types = f
        .query("Action=DescribeInstanceTypes&InstanceType.1=t3.medium")
        .await;
    assert_eq!(element(&types.1, "defaultVCpus"), Some("2"));
    assert_eq!(element(&types.1, "sizeInMiB"), Some("4096"));
    assert_error(
        &f.query("Action=DescribeInstanceTypes&InstanceType.1=x9.huge")
            .await,
        StatusCode::BAD_REQUEST,
        "InvalidInstanceType",
    );
    let page = f.query("Action=DescribeInstanceTypes&MaxResults=5").await;
    assert_eq!(elements(&page.1, "instanceType").len(), 5);
    let token = text(&page.1, "nextToken").to_owned();
    let next = f
        .query(&format!(
            "Action=DescribeInstanceTypes&MaxResults=5&NextToken={token}"
        ))
        .await;
    assert_ne!(
        elements(&next.1, "instanceType"),
        elements(&page.1, "instanceType")
    );
    let images = f.query("Action=DescribeImages&Owner.1=self").await;
    assert_eq!(elements(&images.1, "imageId"), ["ami-0f3c9c466bb525749"]);
    assert_error(
        &f.query("Action=DescribeImages&ImageId.1=ami-0123456789abcdef0")
            .await,
        StatusCode::BAD_REQUEST,
        "InvalidAMIID.NotFound",
    );
}

#[tokio::test]
async fn every_resource_kind_takes_tags_and_describe_tags_pages_with_wildcards() {
    let f = Fixture::new("");
    let subnet = "subnet-0a3e5c7b9d1f24681";
    let vpc = "vpc-0c4f6a8e2b1d35792";
    let tag = format!("Action=CreateTags&ResourceId.1={subnet}&ResourceId.2={vpc}&ResourceId.3={INSTANCE}&Tag.1.Key=Stage&Tag.1.Value=prod-1&Tag.2.Key=Owner&Tag.2.Value=ops");
    assert_ok(&f.query(&tag).await, "CreateTagsResponse");
    let (_, subnets) = f
        .query("Action=DescribeSubnets&Filter.1.Name=tag:Stage&Filter.1.Value.1=prod-*")
        .await;
    assert_eq!(elements(&subnets, "subnetId"), [subnet]);
    let (_, tags) = f
        .query("Action=DescribeTags&Filter.1.Name=value&Filter.1.Value.1=prod-?")
        .await;
    let mut ids = elements(&tags, "resourceId");
    ids.sort();
    assert_eq!(ids, [INSTANCE, subnet, vpc]);
    assert!(elements(&tags, "resourceType").contains(&"subnet"));
    let (_, first) = f.query("Action=DescribeTags&MaxResults=5").await;
    let token = text(&first, "nextToken").to_owned();
    let (_, second) = f
        .query(&format!(
            "Action=DescribeTags&MaxResults=5&NextToken={token}"
        ))
        .await;
    assert!(!elements(&second, "key").is_empty());
    assert_error(
        &f.query("Action=CreateTags&ResourceId.1=subnet-0123456789abcdef0&Tag.1.Key=a")
            .await,
        StatusCode::BAD_REQUEST,
        "InvalidSubnetID.NotFound",
    );
    let delete = format!("Action=DeleteTags&ResourceId.1={subnet}");
    assert_ok(&f.query(&delete).await, "DeleteTagsResponse");
    let (_, left) = f
        .query(&format!(
            "Action=DescribeTags&Filter.1.Name=resource-id&Filter.1.Value.1={subnet}"
        ))
        .await;
    assert!(elements(&left, "key").is_empty(), "{left}");
}

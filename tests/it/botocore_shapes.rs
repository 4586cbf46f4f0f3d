//! botocore's model of EC2's answers walked against what imds answers, as the AWS CLI prints
//! it: every member of the output shapes of `DescribeInstances` (`Instance`),
//! `DescribeInstanceStatus` (`InstanceStatus`), `DescribeLaunchTemplates` (`LaunchTemplate`),
//! `DescribeLaunchTemplateVersions` (`LaunchTemplateVersion`, with its data) and
//! `DescribeKeyPairs` (`KeyPairInfo`), into nested structures and lists, for a fleet that uses
//! everything imds models (a launch template holding every parameter imds keeps, an instance
//! launched from one with a key pair, an instance profile, a public address and a scheduled
//! event).
//!
//! The members imds leaves empty are reported with the reason for each (a feature imds does not
//! model, or a value EC2 also leaves out for an instance like this one); the report is printed
//! and written to `target/tmp/botocore-unfilled.md` (run with `-- --nocapture` to see it). The
//! test fails when a member is left empty without a reason (a new botocore, or a regression)
//! and when a member given a reason is filled now (the report would be stale).

use std::process::Command;

use serde_json::Value;

use crate::conformance::python;
use crate::control::aws;
use crate::fleet::{fleet_config, serve_fleet, SUBNET};

/// Members left empty, by path (`NetworkInterfaces[].Ipv4Prefixes[] (empty)`: a list given
/// empty), with the reason.
type Unfilled = &'static [(&'static str, &'static str)];

const NOT_MANAGED: &str =
    "no service provider manages it (`Managed` is false; imds manages nothing on anyone's behalf)";
const REFUSED: &str =
    "not modelled: refused in a launch template (`UnsupportedOperation`), never kept and ignored";

/// `Instance`, launched from a template with a key pair, an instance profile and a public
/// address, running.
const INSTANCE: Unfilled = &[
    ("BlockDeviceMappings[].Ebs.AssociatedResource", "EC2 sets it only for a volume attached to a resource another service manages"),
    ("BlockDeviceMappings[].Ebs.VolumeOwnerId", "EC2 sets it only for a volume another account owns for a managed resource"),
    ("BlockDeviceMappings[].Ebs.Operator", "imds sets `Operator` on the instance; no service provider manages its volume"),
    ("BlockDeviceMappings[].Ebs.EbsCardIndex", "EC2 sets it for instance types with several EBS cards; imds' have one"),
    ("InstanceLifecycle", "an on-demand launch (imds answers `spot` for spot instances)"),
    ("ElasticGpuAssociations", "Elastic GPUs: not modelled by imds"),
    ("ElasticInferenceAcceleratorAssociations", "Elastic Inference: not modelled by imds"),
    ("NetworkInterfaces[].Association.CarrierIp", "Wavelength carrier addresses: not modelled by imds"),
    ("NetworkInterfaces[].Association.CustomerOwnedIp", "Outposts customer-owned addresses: not modelled by imds"),
    ("NetworkInterfaces[].Attachment.EnaSrdSpecification", "ENA Express: not modelled by imds"),
    ("NetworkInterfaces[].Attachment.EnaQueueCount", "ENA queue counts: not modelled by imds"),
    ("NetworkInterfaces[].Ipv6Addresses[] (empty)", "launched without IPv6 (`--ipv6-address-count` fills it)"),
    ("NetworkInterfaces[].PrivateIpAddresses[].Association.CarrierIp", "Wavelength carrier addresses: not modelled by imds"),
    ("NetworkInterfaces[].PrivateIpAddresses[].Association.CustomerOwnedIp", "Outposts customer-owned addresses: not modelled by imds"),
    ("NetworkInterfaces[].Ipv4Prefixes[] (empty)", "prefix delegation: not modelled by imds"),
    ("NetworkInterfaces[].Ipv6Prefixes[] (empty)", "prefix delegation: not modelled by imds"),
    ("NetworkInterfaces[].ConnectionTrackingConfiguration", "connection tracking timeouts: not modelled by imds"),
    ("NetworkInterfaces[].Operator", "imds sets `Operator` on the instance; no service provider manages its interface"),
    ("OutpostArn", "Outposts: not modelled by imds"),
    ("SpotInstanceRequestId", "not a spot request"),
    ("SriovNetSupport", "EC2 sets it for Intel 82599 VF networking only; imds' types use ENA"),
    ("StateReason", "running: EC2 gives a state reason to pending, stopped and terminated instances (imds does too)"),
    ("CpuOptions.AmdSevSnp", "AMD SEV-SNP: not modelled by imds"),
    ("CpuOptions.NestedVirtualization", "nested virtualization: not modelled by imds"),
    ("CapacityBlockId", "Capacity Blocks: not modelled by imds"),
    ("CapacityReservationId", "capacity reservations: not modelled by imds"),
    ("CapacityReservationSpecification.CapacityReservationTarget", "preference `open`: no target reservation"),
    ("Licenses", "License Manager: not modelled by imds"),
    ("Ipv6Address", "launched without IPv6"),
    ("TpmSupport", "NitroTPM: not modelled by imds"),
    ("Operator.Principal", NOT_MANAGED),
    ("Operator.HiddenByDefault", NOT_MANAGED),
    ("SecondaryInterfaces", "secondary interfaces: not modelled by imds"),
    ("ProductCodes[] (empty)", "no Marketplace product codes on imds' images"),
    ("Placement.Affinity", "dedicated hosts: not modelled by imds"),
    ("Placement.HostId", "dedicated hosts: not modelled by imds"),
    ("Placement.HostResourceGroupArn", "dedicated hosts: not modelled by imds"),
    ("Placement.PartitionNumber", "launched into no placement group (a configured instance may have one)"),
    ("Placement.SpreadDomain", "launched into no placement group"),
    ("Placement.GroupId", "launched into no placement group"),
    ("KernelId", "HVM images have no kernel image"),
    ("RamdiskId", "HVM images have no RAM disk"),
    ("Platform", "a Linux instance (EC2 sets it for Windows only)"),
    ("Monitoring.MetricCategoryIds", "detailed monitoring metric categories: not modelled by imds"),
];

/// `InstanceStatus` of that instance, with a scheduled event.
const INSTANCE_STATUS: Unfilled = &[
    ("OutpostArn", "Outposts: not modelled by imds"),
    ("Operator.Principal", NOT_MANAGED),
    ("Operator.HiddenByDefault", NOT_MANAGED),
    (
        "InstanceStatus.Details[].ImpairedSince",
        "never impaired: imds has no hardware to fail",
    ),
    (
        "SystemStatus.Details[].ImpairedSince",
        "never impaired: imds has no hardware to fail",
    ),
    (
        "AttachedEbsStatus.Details[].ImpairedSince",
        "never impaired: imds has no volumes to fail",
    ),
    (
        "ApplicationStatus",
        "application health checks: not modelled by imds",
    ),
    (
        "PerformanceStatus",
        "performance status checks: not modelled by imds",
    ),
];

/// `LaunchTemplate`.
const LAUNCH_TEMPLATE: Unfilled = &[
    ("Operator.Principal", NOT_MANAGED),
    ("Operator.HiddenByDefault", NOT_MANAGED),
];

/// `LaunchTemplateVersion` of a template holding every parameter imds keeps; the others are
/// refused when the template is made (`UnsupportedOperation`), never kept and ignored.
const LAUNCH_TEMPLATE_VERSION: Unfilled = &[
    ("LaunchTemplateData.KernelId", REFUSED),
    ("LaunchTemplateData.RamDiskId", REFUSED),
    ("LaunchTemplateData.BlockDeviceMappings", REFUSED),
    (
        "LaunchTemplateData.NetworkInterfaces[].AssociateCarrierIpAddress",
        REFUSED,
    ),
    (
        "LaunchTemplateData.NetworkInterfaces[].InterfaceType",
        REFUSED,
    ),
    (
        "LaunchTemplateData.NetworkInterfaces[].Ipv6Addresses",
        REFUSED,
    ),
    (
        "LaunchTemplateData.NetworkInterfaces[].NetworkInterfaceId",
        REFUSED,
    ),
    (
        "LaunchTemplateData.NetworkInterfaces[].PrivateIpAddresses",
        REFUSED,
    ),
    (
        "LaunchTemplateData.NetworkInterfaces[].NetworkCardIndex",
        REFUSED,
    ),
    (
        "LaunchTemplateData.NetworkInterfaces[].Ipv4Prefixes",
        REFUSED,
    ),
    (
        "LaunchTemplateData.NetworkInterfaces[].Ipv4PrefixCount",
        REFUSED,
    ),
    (
        "LaunchTemplateData.NetworkInterfaces[].Ipv6Prefixes",
        REFUSED,
    ),
    (
        "LaunchTemplateData.NetworkInterfaces[].Ipv6PrefixCount",
        REFUSED,
    ),
    (
        "LaunchTemplateData.NetworkInterfaces[].PrimaryIpv6",
        REFUSED,
    ),
    (
        "LaunchTemplateData.NetworkInterfaces[].EnaSrdSpecification",
        REFUSED,
    ),
    (
        "LaunchTemplateData.NetworkInterfaces[].ConnectionTrackingSpecification",
        REFUSED,
    ),
    (
        "LaunchTemplateData.NetworkInterfaces[].EnaQueueCount",
        REFUSED,
    ),
    ("LaunchTemplateData.Monitoring.MetricCategoryIds", REFUSED),
    ("LaunchTemplateData.Placement.AvailabilityZoneId", REFUSED),
    ("LaunchTemplateData.Placement.Affinity", REFUSED),
    ("LaunchTemplateData.Placement.HostId", REFUSED),
    ("LaunchTemplateData.Placement.SpreadDomain", REFUSED),
    ("LaunchTemplateData.Placement.HostResourceGroupArn", REFUSED),
    ("LaunchTemplateData.Placement.PartitionNumber", REFUSED),
    ("LaunchTemplateData.Placement.GroupId", REFUSED),
    ("LaunchTemplateData.ElasticGpuSpecifications", REFUSED),
    ("LaunchTemplateData.ElasticInferenceAccelerators", REFUSED),
    ("LaunchTemplateData.InstanceMarketOptions", REFUSED),
    ("LaunchTemplateData.CreditSpecification", REFUSED),
    ("LaunchTemplateData.CpuOptions", REFUSED),
    (
        "LaunchTemplateData.CapacityReservationSpecification",
        REFUSED,
    ),
    ("LaunchTemplateData.LicenseSpecifications", REFUSED),
    ("LaunchTemplateData.HibernationOptions", REFUSED),
    ("LaunchTemplateData.EnclaveOptions", REFUSED),
    ("LaunchTemplateData.InstanceRequirements", REFUSED),
    ("LaunchTemplateData.PrivateDnsNameOptions", REFUSED),
    ("LaunchTemplateData.MaintenanceOptions", REFUSED),
    ("LaunchTemplateData.DisableApiStop", REFUSED),
    ("LaunchTemplateData.Operator.Principal", NOT_MANAGED),
    ("LaunchTemplateData.Operator.HiddenByDefault", NOT_MANAGED),
    ("LaunchTemplateData.NetworkPerformanceOptions", REFUSED),
    ("LaunchTemplateData.SecondaryInterfaces", REFUSED),
    ("Operator.Principal", NOT_MANAGED),
    ("Operator.HiddenByDefault", NOT_MANAGED),
];

/// `KeyPairInfo` of a created key pair, described with `--include-public-key`.
const KEY_PAIR_INFO: Unfilled = &[];

/// The members of botocore's shape `shape` that `value` (as the AWS CLI printed it) lacks,
/// into structures and the first item of lists; an empty list is reported as `NAME[] (empty)`.
fn missing_members(shape: &str, value: &Value) -> Vec<String> {
    let script = r#"
import json, sys
import botocore.session
model = botocore.session.get_session().get_service_model("ec2")
def walk(shape, value, path, out):
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            where = f"{path}.{name}" if path else name
            if name not in value:
                out.append(where)
            else:
                walk(member, value[name], where, out)
    elif shape.type_name == "list" and isinstance(value, list):
        if not value:
            out.append(path + "[] (empty)")
        for item in value[:1]:
            walk(shape.member, item, path + "[]", out)
asked = json.load(sys.stdin)
out = []
walk(model.shape_for(asked["shape"]), asked["value"], "", out)
print(json.dumps(out))
"#;
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let asked = serde_json::json!({ "shape": shape, "value": value });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(asked.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    serde_json::from_slice(&output.stdout).unwrap()
}

/// One shape's part of the report, and what disagrees with `expected`.
struct Walked {
    report: String,
    problems: Vec<String>,
}

fn walk(shape: &str, value: &Value, expected: Unfilled) -> Walked {
    let missing = missing_members(shape, value);
    let mut report = format!("\n### `{shape}`\n\n");
    if missing.is_empty() {
        report.push_str("Every member is filled.\n");
    }
    let mut problems = Vec::new();
    for path in &missing {
        match expected.iter().find(|(p, _)| p == path) {
            Some((_, reason)) => report.push_str(&format!("- `{path}`: {reason}\n")),
            None => problems.push(format!("{shape}: `{path}` is left empty without a reason")),
        }
    }
    for (path, _) in expected {
        if !missing.iter().any(|m| m == path) {
            problems.push(format!(
                "{shape}: `{path}` is filled now: drop it from the list"
            ));
        }
    }
    Walked { report, problems }
}

/// An imds action the AWS CLI does not know, POSTed unsigned (the fleet has no control keys).
fn imds_action(control: &str, params: &str) -> String {
    let output = Command::new("curl")
        .args([
            "-sS",
            "-d",
            &format!("{params}&Version=2016-11-15"),
            control,
        ])
        .output()
        .unwrap();
    let body = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success() && !body.contains("<Errors>"),
        "{body}"
    );
    body
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn botocore_output_shapes_imds_leaves_empty_are_reported_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let served = serve_fleet(&config, &dir.path().join("state"));
    let run = |args: &[&str]| aws(&served, args).unwrap();

    run(&[
        "create-key-pair",
        "--key-name",
        "deploy",
        "--key-type",
        "ed25519",
        "--tag-specifications",
        "ResourceType=key-pair,Tags=[{Key=team,Value=web}]",
    ]);
    // Every parameter imds keeps in a template.
    let everything = format!(
        r#"{{"ImageId": "ami-0abcdef1234567890", "InstanceType": "t3.micro", "KeyName": "deploy",
        "SecurityGroupIds": ["sg-0e1f2a3b4c5d6e7f8"], "SecurityGroups": ["default"],
        "UserData": "IyEvYmluL3NoCg==",
        "MetadataOptions": {{"HttpTokens": "required", "HttpPutResponseHopLimit": 2,
            "HttpEndpoint": "enabled", "HttpProtocolIpv6": "disabled", "InstanceMetadataTags": "enabled"}},
        "IamInstanceProfile": {{"Arn": "arn:aws:iam::123456789012:instance-profile/web-role", "Name": "web-role"}},
        "TagSpecifications": [{{"ResourceType": "instance", "Tags": [{{"Key": "Role", "Value": "web"}}]}}],
        "Placement": {{"AvailabilityZone": "us-east-1a", "GroupName": "web-group", "Tenancy": "default"}},
        "DisableApiTermination": false, "InstanceInitiatedShutdownBehavior": "stop",
        "NetworkInterfaces": [{{"DeviceIndex": 0, "SubnetId": "{SUBNET}", "Groups": ["sg-0e1f2a3b4c5d6e7f8"],
            "AssociatePublicIpAddress": true, "DeleteOnTermination": true, "Description": "primary",
            "PrivateIpAddress": "127.16.0.50", "SecondaryPrivateIpAddressCount": 1, "Ipv6AddressCount": 0}}],
        "Monitoring": {{"Enabled": true}}, "EbsOptimized": true}}"#
    );
    run(&[
        "create-launch-template",
        "--launch-template-name",
        "everything",
        "--version-description",
        "every parameter imds keeps",
        "--launch-template-data",
        &everything,
        "--tag-specifications",
        "ResourceType=launch-template,Tags=[{Key=Purpose,Value=Webservers}]",
    ]);
    run(&[
        "create-launch-template",
        "--launch-template-name",
        "web",
        "--launch-template-data",
        r#"{"ImageId": "ami-0abcdef1234567890", "InstanceType": "t3.micro", "KeyName": "deploy",
            "IamInstanceProfile": {"Name": "web-role"},
            "MetadataOptions": {"HttpTokens": "required", "InstanceMetadataTags": "enabled"},
            "NetworkInterfaces": [{"DeviceIndex": 0, "AssociatePublicIpAddress": true}],
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "Role", "Value": "web"}]}]}"#,
    ]);
    let launched = run(&[
        "run-instances",
        "--launch-template",
        "LaunchTemplateName=web",
        "--subnet-id",
        SUBNET,
    ]);
    let id = launched["Instances"][0]["InstanceId"]
        .as_str()
        .unwrap()
        .to_owned();
    imds_action(
        &served.control[0],
        &format!(
            "Action=ScheduleInstanceEvent&InstanceId={id}&Code=system-reboot\
             &NotBefore=%2B48h&NotAfter=%2B50h&NotBeforeDeadline=%2B200h&Description=hardware"
        ),
    );
    std::thread::sleep(std::time::Duration::from_millis(600));

    let instance = run(&["describe-instances", "--instance-ids", &id]);
    let status = run(&["describe-instance-status", "--instance-ids", &id]);
    let templates = run(&[
        "describe-launch-templates",
        "--launch-template-names",
        "everything",
    ]);
    let versions = run(&[
        "describe-launch-template-versions",
        "--launch-template-name",
        "everything",
    ]);
    let pairs = run(&[
        "describe-key-pairs",
        "--key-names",
        "deploy",
        "--include-public-key",
    ]);
    let walked = [
        walk(
            "Instance",
            &instance["Reservations"][0]["Instances"][0],
            INSTANCE,
        ),
        walk(
            "InstanceStatus",
            &status["InstanceStatuses"][0],
            INSTANCE_STATUS,
        ),
        walk(
            "LaunchTemplate",
            &templates["LaunchTemplates"][0],
            LAUNCH_TEMPLATE,
        ),
        walk(
            "LaunchTemplateVersion",
            &versions["LaunchTemplateVersions"][0],
            LAUNCH_TEMPLATE_VERSION,
        ),
        walk("KeyPairInfo", &pairs["KeyPairs"][0], KEY_PAIR_INFO),
    ];
    let report: String = std::iter::once(
        "## Members of botocore's EC2 output shapes imds leaves empty\n".to_owned(),
    )
    .chain(walked.iter().map(|w| w.report.clone()))
    .collect();
    println!("{report}");
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("botocore-unfilled.md");
    std::fs::write(&file, &report).unwrap();
    let problems: Vec<&String> = walked.iter().flat_map(|w| &w.problems).collect();
    assert!(
        problems.is_empty(),
        "{problems:#?}\n(the report: {})",
        file.display()
    );
    served.stop("TERM");
}

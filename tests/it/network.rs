//! The networking objects instances launch into (VPCs, subnets, security groups, key pairs):
//! in-process through `ControlApi::handle`, then with the unmodified AWS CLI against a running
//! `imds serve` (ignored by a plain `cargo test`; `scripts/test` runs them), including EC2's
//! error exits and a restart with `--state-dir`.

use std::path::Path;

use http::StatusCode;
use serde_json::Value;

use crate::control::aws;
use crate::control_router::{element, elements, Fixture};
use crate::process::{serve, Served};

const VPC: &str = "vpc-0c4f6a8e2b1d35792";
const SUBNET: &str = "subnet-0a3e5c7b9d1f24681";
const DEFAULT_GROUP: &str = "sg-0e1f2a3b4c5d6e7f8";
/// `ssh-keygen -t rsa -b 2048`, for machines without `ssh-keygen`.
const RSA_KEY: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDYdvchKIrJUMO5g0QcsRVx/OYbiVxVRs0aeaKwTPeKsDqkQUEpzcIgal8skT1xCf6CpAF6nmvIDYRXzXSWALwiIk0OrjalQrPn6y7kVwzKKRCsR27dCTyJY/KKX4JNkio/1AWcQqC2rjguJx8FQTmU4JYMNKTZF7eBAxInDSow/MTtnXTTUcgucLQpWS6q+lIFStA8FTY4yNpNPH1OJ2C29hDPVdNrzu3WzyUCLot9vuXL1pTUMbQGRnpYp633I7xOBua9HJAhRe14cyGCnUpXggsX8FT3UTHlau8Lp6mn3E5uMZTOPt8QVUXbf4aaiz+cbpbgzf5Uw2ilbxcyheYb test@imds";
/// What `openssl pkey -pubin -outform DER | openssl md5 -c` prints for [`RSA_KEY`].
const RSA_FINGERPRINT: &str = "04:86:e6:86:c7:4d:c2:29:ce:cd:29:8a:c7:74:db:26";

/// The EC2 error code of a refused request.
fn code(answer: &(StatusCode, String)) -> &str {
    assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{}", answer.1);
    element(&answer.1, "Code").unwrap()
}

#[tokio::test]
async fn the_default_vpc_holds_the_built_in_instances_network() {
    let f = Fixture::new("");
    let (status, vpcs) = f.query("Action=DescribeVpcs").await;
    assert_eq!(status, StatusCode::OK, "{vpcs}");
    assert_eq!(elements(&vpcs, "vpcId"), [VPC]);
    assert_eq!(elements(&vpcs, "isDefault"), ["true"]);
    assert_eq!(element(&vpcs, "cidrBlock"), Some("10.0.0.0/16"));

    let (_, subnets) = f
        .query(&format!("Action=DescribeSubnets&Filter.1.Name=vpc-id&Filter.1.Value.1={VPC}&Filter.2.Name=default-for-az&Filter.2.Value.1=true"))
        .await;
    let zones = elements(&subnets, "availabilityZone");
    assert_eq!(zones.len(), 6, "{subnets}");
    assert!(elements(&subnets, "subnetId").contains(&SUBNET));

    let (_, own) = f
        .query("Action=DescribeSubnets&Filter.1.Name=cidr-block&Filter.1.Value.1=10.0.16.0/20")
        .await;
    assert_eq!(elements(&own, "subnetId"), [SUBNET]);
    assert_eq!(element(&own, "availabilityZoneId"), Some("use1-az4"));
    // A /20 has 4091 usable addresses; the instance holds one.
    assert_eq!(element(&own, "availableIpAddressCount"), Some("4090"));

    let (_, groups) = f
        .query("Action=DescribeSecurityGroups&GroupName.1=default")
        .await;
    assert_eq!(elements(&groups, "groupId"), [DEFAULT_GROUP]);
}

#[tokio::test]
async fn subnets_are_created_checked_and_deleted() {
    let f = Fixture::new("");
    let create = |cidr: &str| {
        format!("Action=CreateSubnet&VpcId={VPC}&CidrBlock={cidr}&AvailabilityZone=us-east-1b&TagSpecification.1.ResourceType=subnet&TagSpecification.1.Tag.1.Key=Name&TagSpecification.1.Tag.1.Value=app")
    };
    let (status, created) = f.query(&create("10.0.200.0/24")).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = element(&created, "subnetId").unwrap().to_owned();
    assert_eq!(element(&created, "availabilityZone"), Some("us-east-1b"));
    assert_eq!(element(&created, "defaultForAz"), Some("false"));
    assert_eq!(element(&created, "value"), Some("app"));

    assert_eq!(
        code(&f.query(&create("10.0.200.0/25")).await),
        "InvalidSubnet.Conflict"
    );
    assert_eq!(
        code(&f.query(&create("192.168.0.0/24")).await),
        "InvalidSubnet.Range"
    );
    let unknown = "Action=CreateSubnet&VpcId=vpc-0123456789abcdef0&CidrBlock=10.0.1.0/24";
    assert_eq!(code(&f.query(unknown).await), "InvalidVpcID.NotFound");
    let dry = format!("{}&DryRun=true", create("10.0.201.0/24"));
    assert_eq!(f.query(&dry).await.0, StatusCode::PRECONDITION_FAILED);

    let (_, tagged) = f
        .query("Action=DescribeSubnets&Filter.1.Name=tag:Name&Filter.1.Value.1=ap*")
        .await;
    assert_eq!(elements(&tagged, "subnetId"), [id.as_str()]);

    let delete = |id: &str| format!("Action=DeleteSubnet&SubnetId={id}");
    assert_eq!(f.query(&delete(&id)).await.0, StatusCode::OK);
    assert_eq!(
        code(&f.query(&delete(&id)).await),
        "InvalidSubnetID.NotFound"
    );
    assert_eq!(code(&f.query(&delete(SUBNET)).await), "DependencyViolation");
    let unknown = format!("Action=DescribeSubnets&SubnetId.1={id}");
    assert_eq!(code(&f.query(&unknown).await), "InvalidSubnetID.NotFound");
}

#[tokio::test]
async fn security_groups_are_created_and_the_default_one_stays() {
    let f = Fixture::new("");
    let create = "Action=CreateSecurityGroup&GroupName=web&GroupDescription=web%20servers";
    let (status, created) = f.query(create).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = element(&created, "groupId").unwrap().to_owned();
    assert_eq!(code(&f.query(create).await), "InvalidGroup.Duplicate");
    let (_, found) = f
        .query(&format!("Action=DescribeSecurityGroups&Filter.1.Name=group-name&Filter.1.Value.1=web&Filter.2.Name=vpc-id&Filter.2.Value.1={VPC}"))
        .await;
    assert_eq!(elements(&found, "groupId"), [id.as_str()]);
    assert_eq!(element(&found, "groupDescription"), Some("web servers"));

    let default = format!("Action=DeleteSecurityGroup&GroupId={DEFAULT_GROUP}");
    assert_eq!(code(&f.query(&default).await), "CannotDelete");
    let (status, deleted) = f.query("Action=DeleteSecurityGroup&GroupName=web").await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    let again = format!("Action=DeleteSecurityGroup&GroupId={id}");
    assert_eq!(code(&f.query(&again).await), "InvalidGroup.NotFound");
    let bad_filter = "Action=DescribeSecurityGroups&Filter.1.Name=colour&Filter.1.Value.1=x";
    assert_eq!(code(&f.query(bad_filter).await), "InvalidParameterValue");
}

#[tokio::test]
async fn key_pairs_are_imported_described_and_deleted() {
    let f = Fixture::new("");
    use base64::Engine;
    let material = base64::engine::general_purpose::STANDARD.encode(RSA_KEY);
    let material: String = form_urlencoded::byte_serialize(material.as_bytes()).collect();
    let import = format!("Action=ImportKeyPair&KeyName=laptop&PublicKeyMaterial={material}");
    let (status, imported) = f.query(&import).await;
    assert_eq!(status, StatusCode::OK, "{imported}");
    assert_eq!(element(&imported, "keyFingerprint"), Some(RSA_FINGERPRINT));
    let id = element(&imported, "keyPairId").unwrap().to_owned();
    assert_eq!(code(&f.query(&import).await), "InvalidKeyPair.Duplicate");
    let broken = "Action=ImportKeyPair&KeyName=broken&PublicKeyMaterial=c3NoLXJzYSBBQUFB";
    assert_eq!(code(&f.query(broken).await), "InvalidKey.Format");

    let (_, described) = f
        .query("Action=DescribeKeyPairs&KeyName.1=laptop&IncludePublicKey=true")
        .await;
    assert_eq!(elements(&described, "keyPairId"), [id.as_str()]);
    assert_eq!(element(&described, "keyType"), Some("rsa"));
    assert_eq!(element(&described, "publicKey"), Some(RSA_KEY));
    assert_eq!(
        element(&described, "createTime"),
        Some("2026-11-02T08:14:29.000Z")
    );
    let (_, all) = f.query("Action=DescribeKeyPairs").await;
    assert_eq!(elements(&all, "keyName"), ["imds-dev", "laptop"]);

    let missing = "Action=DescribeKeyPairs&KeyName.1=nope";
    assert_eq!(code(&f.query(missing).await), "InvalidKeyPair.NotFound");
    let delete = format!("Action=DeleteKeyPair&KeyPairId={id}");
    let (status, deleted) = f.query(&delete).await;
    assert_eq!(
        (status, element(&deleted, "keyPairId")),
        (StatusCode::OK, Some(id.as_str()))
    );
    let (status, _) = f.query("Action=DeleteKeyPair&KeyName=laptop").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "deleting a missing key pair succeeds, as on EC2"
    );
}

/// `aws ec2 ARGS` that must fail: its exit code is 255 and stderr names `code`.
fn refused(served: &Served, args: &[&str], code: &str) {
    let (exit, stderr) = aws(served, args).unwrap_err();
    assert_eq!(exit, 255, "{stderr}");
    assert!(stderr.contains(&format!("({code})")), "{stderr}");
}

/// A fresh OpenSSH public key from `ssh-keygen`, or the fixed one without it.
fn public_key(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("key");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "cli@imds", "-f"])
        .arg(&path)
        .status()
        .is_ok_and(|s| s.success());
    let public = dir.join("key.pub");
    if !made {
        std::fs::write(&public, format!("{RSA_KEY}\n")).unwrap();
    }
    public
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn the_aws_cli_drives_vpcs_subnets_and_security_groups() {
    let served = serve(&[]);
    let vpcs = aws(
        &served,
        &["describe-vpcs", "--filters", "Name=is-default,Values=true"],
    )
    .unwrap();
    assert_eq!(vpcs["Vpcs"][0]["VpcId"], VPC);
    assert_eq!(
        vpcs["Vpcs"][0]["CidrBlockAssociationSet"][0]["CidrBlock"],
        "10.0.0.0/16"
    );
    let subnets = aws(
        &served,
        &[
            "describe-subnets",
            "--filters",
            "Name=availability-zone,Values=us-east-1a",
        ],
    )
    .unwrap();
    assert_eq!(subnets["Subnets"][0]["SubnetId"], SUBNET);
    assert_eq!(subnets["Subnets"][0]["DefaultForAz"], true);
    assert_eq!(subnets["Subnets"][0]["AvailableIpAddressCount"], 4090);

    let created = aws(
        &served,
        &[
            "create-subnet",
            "--vpc-id",
            VPC,
            "--cidr-block",
            "10.0.128.0/24",
            "--availability-zone",
            "us-east-1c",
            "--tag-specifications",
            "ResourceType=subnet,Tags=[{Key=Name,Value=cli}]",
        ],
    )
    .unwrap();
    let subnet = created["Subnet"]["SubnetId"].as_str().unwrap().to_owned();
    assert_eq!(created["Subnet"]["Tags"][0]["Value"], "cli");
    assert_eq!(created["Subnet"]["AvailabilityZone"], "us-east-1c");
    refused(
        &served,
        &[
            "create-subnet",
            "--vpc-id",
            VPC,
            "--cidr-block",
            "10.0.128.0/25",
        ],
        "InvalidSubnet.Conflict",
    );
    refused(
        &served,
        &[
            "create-subnet",
            "--vpc-id",
            VPC,
            "--cidr-block",
            "172.16.0.0/24",
        ],
        "InvalidSubnet.Range",
    );
    refused(
        &served,
        &[
            "create-subnet",
            "--vpc-id",
            "vpc-0123456789abcdef0",
            "--cidr-block",
            "10.0.1.0/24",
        ],
        "InvalidVpcID.NotFound",
    );
    let listed = aws(&served, &["describe-subnets", "--subnet-ids", &subnet]).unwrap();
    assert_eq!(listed["Subnets"][0]["CidrBlock"], "10.0.128.0/24");
    aws(&served, &["delete-subnet", "--subnet-id", &subnet]).unwrap();
    refused(
        &served,
        &["delete-subnet", "--subnet-id", &subnet],
        "InvalidSubnetID.NotFound",
    );
    refused(
        &served,
        &["delete-subnet", "--subnet-id", SUBNET],
        "DependencyViolation",
    );

    let group = aws(
        &served,
        &[
            "create-security-group",
            "--group-name",
            "web",
            "--description",
            "web servers",
            "--vpc-id",
            VPC,
        ],
    )
    .unwrap();
    let group = group["GroupId"].as_str().unwrap().to_owned();
    refused(
        &served,
        &[
            "create-security-group",
            "--group-name",
            "web",
            "--description",
            "again",
        ],
        "InvalidGroup.Duplicate",
    );
    let groups = aws(
        &served,
        &["describe-security-groups", "--group-ids", &group],
    )
    .unwrap();
    assert_eq!(groups["SecurityGroups"][0]["GroupName"], "web");
    assert_eq!(groups["SecurityGroups"][0]["VpcId"], VPC);
    refused(
        &served,
        &["delete-security-group", "--group-id", DEFAULT_GROUP],
        "CannotDelete",
    );
    aws(&served, &["delete-security-group", "--group-id", &group]).unwrap();
    refused(
        &served,
        &["delete-security-group", "--group-id", &group],
        "InvalidGroup.NotFound",
    );
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn the_aws_cli_imports_a_key_made_by_ssh_keygen() {
    let served = serve(&[]);
    let dir = tempfile::tempdir().unwrap();
    let public = public_key(dir.path());
    let material = format!("fileb://{}", public.display());
    let imported = aws(
        &served,
        &[
            "import-key-pair",
            "--key-name",
            "cli",
            "--public-key-material",
            &material,
        ],
    )
    .unwrap();
    let id = imported["KeyPairId"].as_str().unwrap().to_owned();
    assert!(id.starts_with("key-"));
    let text = std::fs::read_to_string(&public).unwrap();
    if text.starts_with("ssh-ed25519") {
        let listed = std::process::Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&public)
            .output()
            .unwrap();
        let listed = String::from_utf8(listed.stdout).unwrap();
        let sha256 = listed.split_whitespace().nth(1).unwrap();
        let fingerprint = imported["KeyFingerprint"].as_str().unwrap();
        assert_eq!(
            format!("SHA256:{}", fingerprint.trim_end_matches('=')),
            sha256
        );
    } else {
        assert_eq!(imported["KeyFingerprint"], RSA_FINGERPRINT);
    }
    refused(
        &served,
        &[
            "import-key-pair",
            "--key-name",
            "cli",
            "--public-key-material",
            &material,
        ],
        "InvalidKeyPair.Duplicate",
    );
    let garbage = dir.path().join("garbage.pub");
    std::fs::write(&garbage, "not a key\n").unwrap();
    refused(
        &served,
        &[
            "import-key-pair",
            "--key-name",
            "garbage",
            "--public-key-material",
            &format!("fileb://{}", garbage.display()),
        ],
        "InvalidKey.Format",
    );

    let described = aws(
        &served,
        &[
            "describe-key-pairs",
            "--filters",
            "Name=key-name,Values=cli",
            "--include-public-key",
        ],
    )
    .unwrap();
    let pair = &described["KeyPairs"][0];
    assert_eq!(pair["KeyPairId"], id.as_str());
    assert_eq!(pair["PublicKey"], text.trim());
    assert!(pair["CreateTime"].as_str().is_some());
    refused(
        &served,
        &["describe-key-pairs", "--key-names", "nope"],
        "InvalidKeyPair.NotFound",
    );
    aws(&served, &["delete-key-pair", "--key-name", "cli"]).unwrap();
    aws(&served, &["delete-key-pair", "--key-name", "cli"]).unwrap();
    let all = aws(&served, &["describe-key-pairs"]).unwrap();
    let names: Vec<&Value> = all["KeyPairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["KeyName"])
        .collect();
    assert_eq!(names, ["imds-dev"]);
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn subnets_groups_and_key_pairs_survive_a_restart_with_a_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state_arg = state.to_str().unwrap();
    let served = serve(&["--state-dir", state_arg]);
    let subnet = aws(
        &served,
        &[
            "create-subnet",
            "--vpc-id",
            VPC,
            "--cidr-block",
            "10.0.129.0/24",
        ],
    )
    .unwrap();
    let subnet = subnet["Subnet"]["SubnetId"].as_str().unwrap().to_owned();
    let group = aws(
        &served,
        &[
            "create-security-group",
            "--group-name",
            "kept",
            "--description",
            "kept",
        ],
    )
    .unwrap();
    let group = group["GroupId"].as_str().unwrap().to_owned();
    let public = dir.path().join("key.pub");
    std::fs::write(&public, RSA_KEY).unwrap();
    let material = format!("fileb://{}", public.display());
    aws(
        &served,
        &[
            "import-key-pair",
            "--key-name",
            "kept",
            "--public-key-material",
            &material,
        ],
    )
    .unwrap();
    served.stop("TERM");

    let served = serve(&["--state-dir", state_arg]);
    let subnets = aws(&served, &["describe-subnets", "--subnet-ids", &subnet]).unwrap();
    assert_eq!(subnets["Subnets"][0]["CidrBlock"], "10.0.129.0/24");
    let groups = aws(
        &served,
        &["describe-security-groups", "--group-names", "kept"],
    )
    .unwrap();
    assert_eq!(groups["SecurityGroups"][0]["GroupId"], group.as_str());
    let pairs = aws(&served, &["describe-key-pairs", "--key-names", "kept"]).unwrap();
    assert_eq!(pairs["KeyPairs"][0]["KeyFingerprint"], RSA_FINGERPRINT);
    refused(
        &served,
        &["delete-subnet", "--subnet-id", SUBNET],
        "DependencyViolation",
    );
}

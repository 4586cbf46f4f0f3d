//! Instances shaped by config: what disappears when a feature is absent, what appears when added.

use http::StatusCode;

use crate::harness::TestImds;

const BARE: &str = r#"
[instance]
user_data = ""
public_keys = []
iam = {}
tags = {}

[[instance.network_interfaces]]
mac = "0e:11:22:33:44:55"
interface_id = "eni-0123456789abcdef0"
subnet_id = "subnet-0123456789abcdef0"
subnet_ipv4_cidr_block = "172.31.32.0/20"
vpc_id = "vpc-0123456789abcdef0"
vpc_ipv4_cidr_blocks = ["172.31.0.0/16"]
private_ipv4s = ["172.31.40.7"]
security_groups = [{ name = "default", id = "sg-0123456789abcdef0" }]
"#;

#[tokio::test]
async fn an_instance_without_role_key_public_ip_or_user_data_lists_none_of_them() {
    let imds = TestImds::setup().toml(BARE).start().await;
    let listing = imds.get("/latest/meta-data/").await;
    for absent in [
        "iam/",
        "public-keys/",
        "public-ipv4",
        "public-hostname",
        "tags/",
    ] {
        assert!(
            !listing.text().split('\n').any(|e| e == absent),
            "{absent} listed:\n{}",
            listing.text()
        );
    }
    assert_eq!(
        imds.get("/latest/meta-data/iam/security-credentials/")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        imds.get("/latest/user-data").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(imds.get("/latest/").await.text(), "dynamic\nmeta-data");
    assert_eq!(
        imds.get("/latest/meta-data/local-ipv4").await.text(),
        "172.31.40.7"
    );
    assert_eq!(
        imds.get("/latest/meta-data/hostname").await.text(),
        "ip-172-31-40-7.ec2.internal"
    );
    // The identity credentials exist without a role, as on EC2.
    assert_eq!(
        imds.get("/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance")
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn several_interfaces_each_get_their_mac_subtree_and_ipv6() {
    let toml = r#"
[instance.placement]
availability_zone = "eu-west-1b"
availability_zone_id = "euw1-az1"

[[instance.network_interfaces]]
mac = "0a:00:00:00:00:01"
interface_id = "eni-0000000000000000a"
subnet_id = "subnet-0000000000000000a"
subnet_ipv4_cidr_block = "10.1.0.0/24"
subnet_ipv6_cidr_blocks = ["2a05:d018:1:100::/64"]
vpc_id = "vpc-0000000000000000a"
vpc_ipv4_cidr_blocks = ["10.1.0.0/16", "100.64.0.0/16"]
vpc_ipv6_cidr_blocks = ["2a05:d018:1:100::/56"]
private_ipv4s = ["10.1.0.10", "10.1.0.11"]
public_ipv4 = "52.16.1.2"
ipv6s = ["2a05:d018:1:100::10"]
security_groups = [{ name = "a", id = "sg-0000000000000000a" }, { name = "b", id = "sg-0000000000000000b" }]

[[instance.network_interfaces]]
mac = "0a:00:00:00:00:02"
interface_id = "eni-0000000000000000b"
device_number = 1
subnet_id = "subnet-0000000000000000a"
subnet_ipv4_cidr_block = "10.1.0.0/24"
vpc_id = "vpc-0000000000000000a"
vpc_ipv4_cidr_blocks = ["10.1.0.0/16"]
private_ipv4s = ["10.1.0.20"]
security_groups = [{ name = "b", id = "sg-0000000000000000b" }]
"#;
    let imds = TestImds::setup().toml(toml).start().await;
    let get = |path: String| {
        let imds = &imds;
        async move {
            imds.get(&format!("/latest/meta-data/{path}"))
                .await
                .text()
                .to_owned()
        }
    };
    assert_eq!(
        get("network/interfaces/macs/".into()).await,
        "0a:00:00:00:00:01/\n0a:00:00:00:00:02/"
    );
    let first = |leaf: &str| format!("network/interfaces/macs/0a:00:00:00:00:01/{leaf}");
    assert_eq!(get(first("local-ipv4s")).await, "10.1.0.10\n10.1.0.11");
    assert_eq!(get(first("ipv6s")).await, "2a05:d018:1:100::10");
    assert_eq!(
        get(first("vpc-ipv4-cidr-blocks")).await,
        "10.1.0.0/16\n100.64.0.0/16"
    );
    assert_eq!(
        get(first("security-group-ids")).await,
        "sg-0000000000000000a\nsg-0000000000000000b"
    );
    assert_eq!(get(first("ipv4-associations/52.16.1.2")).await, "10.1.0.10");
    assert_eq!(
        get(first("public-hostname")).await,
        "ec2-52-16-1-2.eu-west-1.compute.amazonaws.com"
    );
    assert_eq!(
        get("network/interfaces/macs/0a:00:00:00:00:02/device-number".into()).await,
        "1"
    );
    assert_eq!(get("ipv6".into()).await, "2a05:d018:1:100::10");
    assert_eq!(
        get("local-hostname".into()).await,
        "ip-10-1-0-10.eu-west-1.compute.internal"
    );
    assert_eq!(get("placement/region".into()).await, "eu-west-1");
    assert_eq!(get("mac".into()).await, "0a:00:00:00:00:01");
}

#[tokio::test]
async fn tags_are_served_only_when_enabled() {
    let off = TestImds::start().await;
    assert_eq!(
        off.get("/latest/meta-data/tags/instance/").await.status,
        StatusCode::NOT_FOUND
    );
    let on = TestImds::setup()
        .toml("[instance.metadata_options]\ninstance_metadata_tags = \"enabled\"\n[instance.tags]\nName = \"web-1\"\n\"aws:team\" = \"core\"\n")
        .start()
        .await;
    // As on EC2, tags of the reserved `aws:` prefix are not in the instance's metadata.
    assert_eq!(
        on.get("/latest/meta-data/tags/instance").await.text(),
        "Name"
    );
    assert_eq!(
        on.get("/latest/meta-data/tags/instance/Name").await.text(),
        "web-1"
    );
}

use super::*;
use crate::app::config::Config;
use crate::fleet::instance::Instance;
use proptest::prelude::*;

fn instance() -> Instance {
    Config::load(None)
        .and_then(|c| c.resolve(&Default::default(), None))
        .unwrap()
        .instance
}

fn network() -> Network {
    Network::default_for(&instance())
}

const VPC: &str = "vpc-0c4f6a8e2b1d35792";
const SUBNET: &str = "subnet-0a3e5c7b9d1f24681";

fn new_subnet(cidr: &str) -> NewSubnet<'_> {
    NewSubnet {
        vpc_id: VPC,
        cidr,
        ..NewSubnet::default()
    }
}

#[test]
fn the_default_vpc_contains_the_configured_instance() {
    let network = network();
    let vpc = network.default_vpc().unwrap();
    assert_eq!(vpc.id, VPC);
    assert_eq!(vpc.cidrs, ["10.0.0.0/16".parse::<Ipv4Net>().unwrap()]);
    let subnet = network.subnet(SUBNET).unwrap();
    assert_eq!(subnet.cidr.to_string(), "10.0.16.0/20");
    assert_eq!(subnet.availability_zone, "us-east-1a");
    assert_eq!(subnet.availability_zone_id, "use1-az4");
    assert!(subnet.default_for_az);
    assert!(subnet.is_in_use("10.0.21.74".parse().unwrap()));
    let default = network.security_group("sg-0e1f2a3b4c5d6e7f8").unwrap();
    assert!(default.is_default());
    assert_eq!(default.vpc_id, VPC);
    assert_eq!(
        network.security_group_named(VPC, "imds-web").unwrap().id,
        "sg-05a4b3c2d1e0f9a8b"
    );
    assert_eq!(
        network.key_pair("imds-dev").unwrap().key_type,
        KeyType::Ed25519
    );
}

#[test]
fn every_zone_of_us_east_1_has_one_default_subnet_and_none_overlap() {
    let network = network();
    let defaults: Vec<&Subnet> = network.subnets().filter(|s| s.default_for_az).collect();
    let zones: Vec<&str> = defaults
        .iter()
        .map(|s| s.availability_zone.as_str())
        .collect();
    let mut sorted = zones.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "us-east-1a",
            "us-east-1b",
            "us-east-1c",
            "us-east-1d",
            "us-east-1e",
            "us-east-1f"
        ]
    );
    let vpc = network.default_vpc().unwrap().cidrs[0];
    for (i, a) in defaults.iter().enumerate() {
        assert!(vpc.contains(&a.cidr));
        assert_eq!(a.cidr.prefix_len(), 20);
        assert!(a.map_public_ip_on_launch);
        for b in &defaults[i + 1..] {
            assert!(!overlaps_v4(&a.cidr, &b.cidr), "{} and {}", a.cidr, b.cidr);
        }
    }
    assert_eq!(
        network
            .default_subnet(Some("us-east-1c"))
            .unwrap()
            .availability_zone,
        "us-east-1c"
    );
    assert_eq!(network.default_subnet(None).unwrap().id, SUBNET);
}

#[test]
fn the_default_registry_is_the_same_each_time() {
    assert_eq!(network(), network());
}

#[test]
fn the_registry_survives_a_json_round_trip_without_its_pools() {
    let mut network = network();
    let ip = network.allocate_ipv4(SUBNET, None, |_| false).unwrap();
    let json = serde_json::to_string(&network).unwrap();
    assert!(!json.contains(&format!("\"{ip}\"")), "{json}");
    let mut back: Network = serde_json::from_str(&json).unwrap();
    assert!(!back.subnet(SUBNET).unwrap().is_in_use(IpAddr::V4(ip)));
    back.adopt_pools(&network);
    assert_eq!(back, network);
    back.clear_pools();
    assert!(!back.subnet(SUBNET).unwrap().is_in_use(IpAddr::V4(ip)));
    assert_eq!(back.subnet(SUBNET).unwrap().addresses_in_use(), 0);
}

#[test]
fn an_older_registry_with_its_pools_is_still_read() {
    let mut network = network();
    let ip = network.allocate_ipv4(SUBNET, None, |_| false).unwrap();
    let mut json: serde_json::Value = serde_json::to_value(&network).unwrap();
    json["subnets"][SUBNET]["ipv4"] =
        serde_json::json!({ "in_use": [ip.to_string()], "next": null });
    let back: Network = serde_json::from_value(json).unwrap();
    assert!(back.subnet(SUBNET).unwrap().is_in_use(IpAddr::V4(ip)));
}

#[test]
fn a_subnet_must_lie_inside_its_vpc_and_beside_the_others() {
    let mut network = network();
    let created = network.create_subnet(new_subnet("10.0.200.0/24")).unwrap();
    assert!(created.id.starts_with("subnet-"));
    assert!(!created.default_for_az);
    assert_eq!(created.available_ip_address_count(), 251);
    let code = |n: &mut Network, cidr| n.create_subnet(new_subnet(cidr)).unwrap_err().code();
    assert_eq!(code(&mut network, "10.1.0.0/24"), "InvalidSubnet.Range");
    assert_eq!(code(&mut network, "10.0.200.0/29"), "InvalidSubnet.Range");
    assert_eq!(
        code(&mut network, "10.0.200.128/25"),
        "InvalidSubnet.Conflict"
    );
    assert_eq!(code(&mut network, "10.0.17.0/24"), "InvalidSubnet.Conflict");
    assert_eq!(code(&mut network, "10.0.200.5/24"), "InvalidParameterValue");
    assert_eq!(code(&mut network, "banana"), "InvalidParameterValue");
    let error = network
        .create_subnet(NewSubnet {
            vpc_id: "vpc-0123456789abcdef0",
            cidr: "10.0.201.0/24",
            ..NewSubnet::default()
        })
        .unwrap_err();
    assert_eq!(error.code(), "InvalidVpcID.NotFound");
    let error = network
        .create_subnet(NewSubnet {
            availability_zone: Some("us-east-1z"),
            ..new_subnet("10.0.201.0/24")
        })
        .unwrap_err();
    assert_eq!(error.code(), "InvalidParameterValue");
}

#[test]
fn a_subnet_with_addresses_in_use_cannot_be_deleted() {
    let mut network = network();
    let id = network
        .create_subnet(new_subnet("10.0.200.0/24"))
        .unwrap()
        .id
        .clone();
    let ip = network.allocate_ipv4(&id, None, |_| false).unwrap();
    assert_eq!(ip, Ipv4Addr::new(10, 0, 200, 4));
    assert_eq!(
        network.delete_subnet(&id).unwrap_err().code(),
        "DependencyViolation"
    );
    assert!(network.release_ipv4(&id, ip));
    network.delete_subnet(&id).unwrap();
    assert_eq!(
        network.delete_subnet(&id).unwrap_err().code(),
        "InvalidSubnetID.NotFound"
    );
    assert_eq!(
        network.delete_subnet(SUBNET).unwrap_err().code(),
        "DependencyViolation"
    );
}

#[test]
fn allocation_errors_are_ec2s() {
    let mut network = network();
    let used = Ipv4Addr::new(10, 0, 21, 74);
    let error = network
        .allocate_ipv4(SUBNET, Some(used), |_| false)
        .unwrap_err();
    assert_eq!(error.code(), "InvalidIPAddress.InUse");
    let error = network
        .allocate_ipv4(SUBNET, Some(Ipv4Addr::new(10, 0, 40, 1)), |_| false)
        .unwrap_err();
    assert_eq!(error.code(), "InvalidParameterValue");
    let error = network
        .allocate_ipv4("subnet-0123456789abcdef0", None, |_| false)
        .unwrap_err();
    assert_eq!(error.code(), "InvalidSubnetID.NotFound");
    let error = network.allocate_ipv6(SUBNET, None, |_| false).unwrap_err();
    assert_eq!(error.code(), "InvalidParameterValue");
    let small = network
        .create_subnet(new_subnet("10.0.250.0/28"))
        .unwrap()
        .id
        .clone();
    for _ in 0..11 {
        network.allocate_ipv4(&small, None, |_| false).unwrap();
    }
    let error = network.allocate_ipv4(&small, None, |_| false).unwrap_err();
    assert_eq!(error.code(), "InsufficientFreeAddressesInSubnet");
}

#[test]
fn ipv6_addresses_come_from_the_subnets_ipv6_block() {
    let mut config = instance().config;
    let nic = &mut config.network_interfaces[0];
    nic.vpc_ipv6_cidr_blocks = vec!["2600:1f18:4a3:6a00::/56".parse().unwrap()];
    nic.subnet_ipv6_cidr_blocks = vec!["2600:1f18:4a3:6a00::/64".parse().unwrap()];
    nic.ipv6s = vec!["2600:1f18:4a3:6a00::4".parse().unwrap()];
    let mut network = Network::default_for(&Instance::new(config).unwrap());
    let ip = network.allocate_ipv6(SUBNET, None, |_| false).unwrap();
    assert_eq!(ip, "2600:1f18:4a3:6a00::5".parse::<Ipv6Addr>().unwrap());
    let other = network.default_subnet(Some("us-east-1b")).unwrap();
    let block = other.ipv6_cidr.unwrap();
    assert_eq!(block.prefix_len(), 64);
    assert_ne!(block.to_string(), "2600:1f18:4a3:6a00::/64");
}

#[test]
fn security_group_names_are_unique_per_vpc_and_the_default_stays() {
    let mut network = network();
    let id = network
        .create_security_group("web", "web servers", None, Tags::new())
        .unwrap()
        .id
        .clone();
    let error = network
        .create_security_group("web", "again", Some(VPC), Tags::new())
        .unwrap_err();
    assert_eq!(error.code(), "InvalidGroup.Duplicate");
    let error = network
        .create_security_group("sg-web", "bad", None, Tags::new())
        .unwrap_err();
    assert_eq!(error.code(), "InvalidParameterValue");
    let unused = |_: &str| false;
    let error = network
        .delete_security_group(Some("sg-0e1f2a3b4c5d6e7f8"), None, unused)
        .unwrap_err();
    assert_eq!(error.code(), "CannotDelete");
    let error = network
        .delete_security_group(None, Some("web"), |group| group == id)
        .unwrap_err();
    assert_eq!(error.code(), "DependencyViolation", "an instance uses it");
    assert_eq!(
        network
            .delete_security_group(None, Some("web"), unused)
            .unwrap()
            .id,
        id
    );
    let error = network
        .delete_security_group(Some(&id), None, unused)
        .unwrap_err();
    assert_eq!(error.code(), "InvalidGroup.NotFound");
}

#[test]
fn key_pairs_are_imported_once_and_deleted_idempotently() {
    let mut network = network();
    let at = OffsetDateTime::UNIX_EPOCH;
    let pair = network
        .import_key_pair("laptop", key_pair::tests::RSA, at, Tags::new())
        .unwrap();
    assert_eq!(pair.fingerprint, key_pair::tests::RSA_FINGERPRINT);
    let id = pair.id.clone();
    let error = network
        .import_key_pair("laptop", key_pair::tests::ED25519, at, Tags::new())
        .unwrap_err();
    assert_eq!(error.code(), "InvalidKeyPair.Duplicate");
    let error = network
        .import_key_pair("broken", "ssh-rsa AAAA", at, Tags::new())
        .unwrap_err();
    assert_eq!(error.code(), "InvalidKey.Format");
    assert_eq!(network.key_pair_by_id(&id).unwrap().name, "laptop");
    assert!(network.delete_key_pair(None, Some(&id)).is_some());
    assert!(network.delete_key_pair(Some("laptop"), None).is_none());
    assert_eq!(
        network.key_pair("laptop").unwrap_err().code(),
        "InvalidKeyPair.NotFound"
    );
}

proptest! {
    #[test]
    fn created_subnets_never_overlap(cidrs in proptest::collection::vec((0u8..=255, 0u8..=255, 16u8..=28), 1..40)) {
        let mut network = network();
        for (a, b, len) in cidrs {
            let net = Ipv4Net::new(Ipv4Addr::new(10, 0, a, b), len).unwrap().trunc().to_string();
            let _ = network.create_subnet(new_subnet(&net));
        }
        let subnets: Vec<&Subnet> = network.subnets().collect();
        for (i, a) in subnets.iter().enumerate() {
            prop_assert!("10.0.0.0/16".parse::<Ipv4Net>().unwrap().contains(&a.cidr));
            for b in &subnets[i + 1..] {
                prop_assert!(!overlaps_v4(&a.cidr, &b.cidr));
            }
        }
    }
}

#[test]
fn another_configured_instance_adds_its_subnet_and_addresses() {
    let mut network = network();
    let mut config = instance().config;
    config.instance_id = "i-0123456789abcdef0".into();
    let nic = &mut config.network_interfaces[0];
    nic.subnet_id = "subnet-0123456789abcdef0".into();
    nic.subnet_ipv4_cidr_block = "10.0.240.0/24".parse().unwrap();
    nic.private_ipv4s = vec!["10.0.240.10".parse().unwrap()];
    let other = Instance::new(config).unwrap();
    network.add_instance(&other);
    network.add_instance(&other);
    let subnet = network.subnet("subnet-0123456789abcdef0").unwrap();
    assert_eq!(subnet.vpc_id, VPC);
    assert!(
        !subnet.default_for_az,
        "us-east-1a keeps its default subnet"
    );
    assert_eq!(subnet.addresses_in_use(), 1);
    assert_eq!(
        network.default_subnet(Some("us-east-1a")).unwrap().id,
        SUBNET
    );
    assert_eq!(network.vpcs().count(), 1);
}

#[test]
fn hosts_sharing_a_store_look_for_free_addresses_from_different_places() {
    let mut a = network();
    let mut b = network();
    let first = network()
        .allocate_ipv4(SUBNET, None, |_| false)
        .expect("a free address");
    a.spread_allocations(1_000);
    b.spread_allocations(2_000);
    let from_a = a.allocate_ipv4(SUBNET, None, |_| false).unwrap();
    let from_b = b.allocate_ipv4(SUBNET, None, |_| false).unwrap();
    assert!(from_a != from_b && from_a != first && from_b != first);
    // Then on from there, and a registry learned from the store keeps the place.
    let next = a.allocate_ipv4(SUBNET, None, |_| false).unwrap();
    assert_eq!(u32::from(next), u32::from(from_a) + 1);
    let json = serde_json::to_string(&a).unwrap();
    let mut learned: Network = serde_json::from_str(&json).unwrap();
    learned.adopt_pools(&a);
    assert_eq!(
        learned.allocate_ipv4(SUBNET, None, |_| false).unwrap(),
        a.allocate_ipv4(SUBNET, None, |_| false).unwrap()
    );
}

//! The registry of a fresh region: the default VPC around the configured instance.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::{Ipv4Net, Ipv6Net};
use time::OffsetDateTime;

use super::addresses::{overlaps_v4, overlaps_v6};
use super::{derived_id, key_pair, KeyPair, Network, SecurityGroup, Subnet, Tags, Vpc, Zone};
use crate::fleet::instance::{zone_id_prefix, Instance};

/// Zone letters of us-east-1, the one region with six.
const US_EAST_1_ZONES: &str = "abcdef";
/// Zone letters assumed for any other region.
const OTHER_ZONES: &str = "abc";

impl Network {
    /// The registry of `instance`'s region before any change: its default VPC (the instance's
    /// primary interface's VPC, with its CIDRs), one default subnet per zone (the instance's own
    /// subnet for its zone, same-sized blocks of the VPC for the others, each with a `/64` of the
    /// VPC's IPv6 block when it has one), the instance's other VPCs, subnets and security
    /// groups, a `default` group per VPC, the instance's key pairs, and its addresses in use.
    pub fn default_for(instance: &Instance) -> Network {
        let config = &instance.config;
        let zones = zones_of(
            &instance.region,
            &config.placement.availability_zone,
            &config.placement.availability_zone_id,
        );
        let mut network = Network {
            region: instance.region.clone(),
            partition: instance.partition.to_owned(),
            owner_id: config.account_id.clone(),
            zones,
            vpcs: BTreeMap::new(),
            subnets: BTreeMap::new(),
            security_groups: BTreeMap::new(),
            key_pairs: BTreeMap::new(),
            spread: 0,
        };
        network.add_instance(instance);
        network.add_default_subnets();
        network
    }

    /// Registers what a configured `instance` uses and the registry lacks (its VPCs, subnets,
    /// security groups and key pairs; its first VPC becomes the default one when there is none)
    /// and marks its addresses in use. Idempotent: call it for every configured instance at
    /// start, whether the registry is fresh or stored.
    pub fn add_instance(&mut self, instance: &Instance) {
        let config = &instance.config;
        let placement = &config.placement;
        if !self
            .zones
            .iter()
            .any(|z| z.name == placement.availability_zone)
            && placement.availability_zone.starts_with(&self.region)
        {
            self.zones.push(Zone {
                name: placement.availability_zone.clone(),
                id: placement.availability_zone_id.clone(),
            });
        }
        for (index, nic) in config.network_interfaces.iter().enumerate() {
            let primary = index == 0;
            let no_default_vpc = self.default_vpc().is_err();
            let vpc = self.vpcs.entry(nic.vpc_id.clone()).or_insert_with(|| Vpc {
                id: nic.vpc_id.clone(),
                cidrs: nic.vpc_ipv4_cidr_blocks.clone(),
                ipv6_cidrs: nic.vpc_ipv6_cidr_blocks.clone(),
                is_default: primary && no_default_vpc,
                dhcp_options_id: derived_id("dopt-", &nic.vpc_id),
                tags: Tags::new(),
            });
            let default_for_az = primary
                && vpc.is_default
                && !self.subnets.values().any(|s| {
                    s.vpc_id == nic.vpc_id
                        && s.default_for_az
                        && s.availability_zone == placement.availability_zone
                });
            self.subnets
                .entry(nic.subnet_id.clone())
                .or_insert_with(|| Subnet {
                    id: nic.subnet_id.clone(),
                    vpc_id: nic.vpc_id.clone(),
                    cidr: nic.subnet_ipv4_cidr_block,
                    ipv6_cidr: nic.subnet_ipv6_cidr_blocks.first().copied(),
                    availability_zone: placement.availability_zone.clone(),
                    availability_zone_id: placement.availability_zone_id.clone(),
                    default_for_az,
                    map_public_ip_on_launch: default_for_az,
                    tags: Tags::new(),
                    ipv4: Default::default(),
                    ipv6: Default::default(),
                });
            for group in &nic.security_groups {
                self.security_groups
                    .entry(group.id.clone())
                    .or_insert_with(|| SecurityGroup {
                        id: group.id.clone(),
                        name: group.name.clone(),
                        description: describe_group(&group.name),
                        vpc_id: nic.vpc_id.clone(),
                        tags: Tags::new(),
                    });
            }
        }
        self.add_default_groups();
        for key in &config.public_keys {
            self.add_configured_key(&key.name, &key.openssh_key, config.pending_time);
        }
        for nic in &config.network_interfaces {
            let addresses = nic
                .private_ipv4s
                .iter()
                .map(|ip| IpAddr::V4(*ip))
                .chain(nic.ipv6s.iter().map(|ip| IpAddr::V6(*ip)));
            for ip in addresses {
                // Configuration keeps addresses inside the subnet; an IPv6 address outside
                // the subnet's first block has nowhere to be counted.
                if let Err(error) = self.mark_in_use(&nic.subnet_id, ip) {
                    tracing::debug!(%error, "a configured address is not counted");
                }
            }
        }
    }

    /// Gives every VPC without one its `default` security group.
    fn add_default_groups(&mut self) {
        let vpc_ids: Vec<String> = self.vpcs.keys().cloned().collect();
        for vpc_id in vpc_ids {
            if self.security_group_named(&vpc_id, "default").is_err() {
                let id = derived_id("sg-", &format!("{vpc_id}/default"));
                self.security_groups.insert(
                    id.clone(),
                    SecurityGroup {
                        id,
                        name: "default".into(),
                        description: describe_group("default"),
                        vpc_id,
                        tags: Tags::new(),
                    },
                );
            }
        }
    }

    /// Gives every zone without one a default subnet in the default VPC.
    fn add_default_subnets(&mut self) {
        let Ok(vpc) = self.default_vpc().cloned() else {
            return;
        };
        let Some(&vpc_cidr) = vpc.cidrs.first() else {
            return;
        };
        let taken: Vec<&Subnet> = self
            .subnets
            .values()
            .filter(|s| s.vpc_id == vpc.id)
            .collect();
        let prefix = taken
            .iter()
            .map(|s| s.cidr.prefix_len())
            .max()
            .unwrap_or(20)
            .max(vpc_cidr.prefix_len());
        let existing_v4: Vec<Ipv4Net> = taken.iter().map(|s| s.cidr).collect();
        let mut used_v6: Vec<Ipv6Net> = taken.iter().filter_map(|s| s.ipv6_cidr).collect();
        let missing: Vec<Zone> = self
            .zones
            .iter()
            .filter(|z| {
                !taken
                    .iter()
                    .any(|s| s.default_for_az && s.availability_zone == z.name)
            })
            .cloned()
            .collect();
        // Blocks of one size never overlap each other: only the existing subnets are in the way.
        let mut free_v4 = vpc_cidr
            .subnets(prefix)
            .into_iter()
            .flatten()
            .filter(|candidate| !existing_v4.iter().any(|u| overlaps_v4(u, candidate)));
        let vpc_v6 = vpc.ipv6_cidrs.first().filter(|c| c.prefix_len() <= 64);
        for zone in missing {
            let Some(cidr) = free_v4.next() else {
                break;
            };
            let ipv6_cidr = vpc_v6.and_then(|block| {
                let free = first_free_v6_64(block, &used_v6)?;
                used_v6.push(free);
                Some(free)
            });
            let id = derived_id("subnet-", &format!("{}/{}", vpc.id, zone.name));
            self.subnets.insert(
                id.clone(),
                Subnet {
                    id,
                    vpc_id: vpc.id.clone(),
                    cidr,
                    ipv6_cidr,
                    availability_zone: zone.name,
                    availability_zone_id: zone.id,
                    default_for_az: true,
                    map_public_ip_on_launch: true,
                    tags: Tags::new(),
                    ipv4: Default::default(),
                    ipv6: Default::default(),
                },
            );
        }
    }

    /// Imports a key pair of the configuration file; keys EC2 could not import are left out.
    fn add_configured_key(&mut self, name: &str, openssh_key: &str, created: OffsetDateTime) {
        let Ok(key) = key_pair::parse_openssh(openssh_key) else {
            tracing::debug!(
                key = name,
                "configured key pair not importable into EC2; left out"
            );
            return;
        };
        self.key_pairs
            .entry(name.to_owned())
            .or_insert_with(|| KeyPair {
                id: derived_id("key-", &format!("{}/{name}", self.owner_id)),
                name: name.to_owned(),
                key_type: key.key_type,
                fingerprint: key.fingerprint,
                public_key: key.openssh,
                created,
                tags: Tags::new(),
            });
    }
}

fn describe_group(name: &str) -> String {
    match name {
        "default" => "default VPC security group".into(),
        other => other.to_owned(),
    }
}

/// The zones of `region`, including the configured one (which keeps its id); the others get
/// ids numbered like EC2's (`use1-az1`, ...), skipping the configured one's number.
fn zones_of(region: &str, configured: &str, configured_id: &str) -> Vec<Zone> {
    let letters = if region == "us-east-1" {
        US_EAST_1_ZONES
    } else {
        OTHER_ZONES
    };
    let prefix = zone_id_prefix(region);
    let taken: Option<u32> = configured_id
        .strip_prefix(&format!("{prefix}-az"))
        .and_then(|n| n.parse().ok());
    let mut numbers = (1..).filter(|n| Some(*n) != taken);
    let mut zones: Vec<Zone> = letters
        .chars()
        .map(|letter| {
            let name = format!("{region}{letter}");
            let id = if name == configured {
                configured_id.to_owned()
            } else {
                format!("{prefix}-az{}", numbers.next().unwrap_or_default())
            };
            Zone { name, id }
        })
        .collect();
    if !zones.iter().any(|z| z.name == configured) {
        zones.push(Zone {
            name: configured.to_owned(),
            id: configured_id.to_owned(),
        });
    }
    zones
}

/// The first `/64` of `block` that overlaps none of `used`, skipping each used block whole (a
/// used `/32` in a `/32` VPC block is one step, not 2^32).
fn first_free_v6_64(block: &Ipv6Net, used: &[Ipv6Net]) -> Option<Ipv6Net> {
    let step: u128 = 1 << 64;
    let last = u128::from(block.broadcast());
    let mut start = u128::from(block.network());
    loop {
        let candidate = Ipv6Net::new(start.into(), 64).ok()?;
        let next = match used.iter().find(|u| overlaps_v6(u, &candidate)) {
            None => return Some(candidate),
            // Past the used block, or past the candidate when the used block is inside it.
            Some(u) => u128::from(u.broadcast())
                .max(start + (step - 1))
                .checked_add(1)?,
        };
        if next > last {
            return None;
        }
        start = next & !(step - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_ipv6_64_is_found_past_used_blocks_of_any_size() {
        let net = |s: &str| s.parse::<Ipv6Net>().unwrap();
        let vpc = net("2001:db8::/32");
        assert_eq!(first_free_v6_64(&vpc, &[vpc]), None, "one step, not 2^32");
        assert_eq!(
            first_free_v6_64(&vpc, &[net("2001:db8::/33")]),
            Some(net("2001:db8:8000::/64"))
        );
        assert_eq!(
            first_free_v6_64(
                &net("2600:1f18:4a3:6a00::/56"),
                &[
                    net("2600:1f18:4a3:6a00::/64"),
                    net("2600:1f18:4a3:6a01::/80")
                ]
            ),
            Some(net("2600:1f18:4a3:6a02::/64"))
        );
        assert_eq!(
            first_free_v6_64(&net("2001:db8::/64"), &[]),
            Some(net("2001:db8::/64"))
        );
    }

    #[test]
    fn zone_ids_are_abbreviated_like_ec2s() {
        assert_eq!(zone_id_prefix("us-east-1"), "use1");
        assert_eq!(zone_id_prefix("ap-southeast-2"), "apse2");
        assert_eq!(zone_id_prefix("eu-central-1"), "euc1");
        assert_eq!(zone_id_prefix("us-gov-west-1"), "usgw1");
    }

    #[test]
    fn the_configured_zone_keeps_its_id_and_the_others_skip_its_number() {
        let zones = zones_of("us-east-1", "us-east-1a", "use1-az4");
        let ids: Vec<&str> = zones.iter().map(|z| z.id.as_str()).collect();
        assert_eq!(
            ids,
            ["use1-az4", "use1-az1", "use1-az2", "use1-az3", "use1-az5", "use1-az6"]
        );
        let zones = zones_of("eu-west-1", "eu-west-1b", "euw1-az1");
        assert_eq!(zones.len(), 3);
        assert_eq!(zones[1].id, "euw1-az1");
    }
}

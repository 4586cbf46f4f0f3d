//! The networking objects instances launch into: `DescribeVpcs`, `CreateSubnet`,
//! `DeleteSubnet`, `DescribeSubnets`, `CreateSecurityGroup`, `DeleteSecurityGroup` and
//! `DescribeSecurityGroups`, over the region's [`Network`] registry. A change is made on a
//! copy under the change lock, stored whole (the account value `network`: its objects; the
//! addresses in use are rows of their own), then swapped in.

use std::sync::Arc;

use super::error::ControlError;
use super::query::QueryRequest;
use super::xml::Xml;
use super::ControlApi;
use crate::fleet::lock_order::Unlocked;
use crate::fleet::network::{Network, NewSubnet, SecurityGroup, Subnet, Tags, Vpc};
use crate::fleet::state::State;

/// The registry's name in the store's account values.
pub(super) const NETWORK: &str = "network";

/// The registry to start from: the stored one, else the default one of the first instance's
/// region; either way with every live instance's network objects and addresses in it. The
/// stored addresses in use (`addresses`) stay in use: other hosts' instances may hold them (an
/// instance leaves a host's file through a reload, which frees its addresses for every host).
/// A host `shared` with others looks for free addresses from a random place of each subnet.
pub(super) fn initial_network(
    stored: Option<Network>,
    addresses: &[crate::store::StoredAddress],
    shared: bool,
    state: &State,
    template: &crate::fleet::instance::InstanceConfig,
) -> Arc<Network> {
    let mut network = stored.unwrap_or_else(|| match state.first() {
        Some(first) => Network::default_for(&first.snapshot().instance),
        None => Network::default_for(
            &crate::fleet::instance::Instance::new(template.clone())
                .expect("the built-in instance is valid"),
        ),
    });
    // The rows say which addresses are in use (an older imds's pools were migrated to them).
    network.clear_pools();
    for row in addresses {
        mark_stored(&mut network, &row.subnet_id, &row.address);
    }
    mark_held(&mut network, state);
    if shared {
        network.spread_allocations(rand::random::<u64>().max(1));
    }
    Arc::new(network)
}

/// Marks the stored address `address` of `subnet_id` in use; one that does not parse or is
/// outside the registry's subnets is left out, at debug level (a subnet another host's file
/// instances live in, which it stores with its registry).
pub(super) fn mark_stored(network: &mut Network, subnet_id: &str, address: &str) {
    let marked = address
        .parse::<std::net::IpAddr>()
        .map_err(|e| e.to_string())
        .and_then(|ip| {
            network
                .mark_in_use(subnet_id, ip)
                .map_err(|e| e.to_string())
        });
    if let Err(error) = marked {
        tracing::debug!(subnet = subnet_id, address, %error, "a stored address in use is not counted");
    }
}

/// Gives the stored address `address` of `subnet_id` back (its row was deleted).
pub(super) fn release_stored(network: &mut Network, subnet_id: &str, address: &str) {
    if let Ok(ip) = address.parse::<std::net::IpAddr>() {
        network.release(subnet_id, ip);
    }
}

/// Records in `network` every address a live instance of `state` holds (the fleet index owns
/// them; the registry's pools follow), with its network objects; the addresses the registry had
/// lost (a registry learned from another host that does not know this host's file instances).
pub(super) fn mark_held(network: &mut Network, state: &State) -> Vec<std::net::IpAddr> {
    let mut missing = Vec::new();
    // Terminated instances gave their addresses back.
    let holding = state.instances().into_iter().filter(|slot| {
        let lifecycle = slot.changes().lifecycle;
        lifecycle.is_none_or(|l| l.holds_addresses())
    });
    for slot in holding {
        let instance = &slot.snapshot().instance;
        for (subnet, ip) in super::launch::addresses(instance) {
            if !network.subnet(&subnet).is_ok_and(|s| s.is_in_use(ip)) {
                missing.push(ip);
            }
        }
        network.add_instance(instance);
    }
    missing
}

impl ControlApi {
    /// Applies `edit` to a copy of the registry under the account lock, stores the result and
    /// swaps it in; on any error nothing changes.
    pub(super) async fn change_network<T>(
        &self,
        order: &mut Unlocked,
        edit: impl FnOnce(&mut Network) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        let account = self.account.lock(order).await;
        let before = self.inventory.network();
        let mut network = (*before).clone();
        let out = edit(&mut network)?;
        let mut commit = self.account_write(
            crate::store::Commit::default(),
            NETWORK,
            super::sync::to_json(&network),
        );
        // A subnet deleted must still have no address in use when this commits (a launch
        // through another host may have taken one since this host last learned).
        for subnet in before.subnets() {
            if network.subnet(&subnet.id).is_err() {
                commit = commit.vacant(&subnet.id);
            }
        }
        let revision = self.persist(commit).await?;
        self.inventory.set_network(network, &account);
        self.account.set_revision(NETWORK, revision, &account);
        Ok(out)
    }

    /// `DescribeVpcs` (`VpcId.N`; filters `vpc-id`, `is-default`, `cidr`,
    /// `cidr-block-association.cidr-block`, `state`, `owner-id`, `dhcp-options-id`, `tag:KEY`,
    /// `tag-key`).
    pub(super) fn describe_vpcs(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let network = self.inventory.network();
        let ids = query.list("VpcId");
        for id in &ids {
            network.vpc(id)?;
        }
        let filters = Filters::new(
            query,
            &[
                "vpc-id",
                "is-default",
                "cidr",
                "cidr-block-association.cidr-block",
                "cidr-block-association.association-id",
                "cidr-block-association.state",
                "ipv6-cidr-block-association.ipv6-cidr-block",
                "ipv6-cidr-block-association.association-id",
                "ipv6-cidr-block-association.state",
                "ipv6-cidr-block-association.ipv6-pool",
                "state",
                "owner-id",
                "dhcp-options-id",
            ],
        )?;
        let mut xml = Xml::response("DescribeVpcsResponse", request_id);
        xml.open("vpcSet");
        for vpc in network.vpcs() {
            if !ids.is_empty() && !ids.contains(&vpc.id.as_str()) {
                continue;
            }
            let shown = filters.matches(&vpc.tags, |name| match name {
                "vpc-id" => vec![vpc.id.clone()],
                "is-default" => vec![vpc.is_default.to_string()],
                "cidr" => vpc
                    .cidrs
                    .first()
                    .map(ToString::to_string)
                    .into_iter()
                    .collect(),
                "cidr-block-association.cidr-block" => {
                    vpc.cidrs.iter().map(ToString::to_string).collect()
                }
                "cidr-block-association.association-id" => (0..vpc.cidrs.len())
                    .map(|index| vpc.cidr_association_id(index))
                    .collect(),
                "ipv6-cidr-block-association.ipv6-cidr-block" => {
                    vpc.ipv6_cidrs.iter().map(ToString::to_string).collect()
                }
                "ipv6-cidr-block-association.association-id" => (0..vpc.ipv6_cidrs.len())
                    .map(|index| vpc.ipv6_association_id(index))
                    .collect(),
                "cidr-block-association.state" => vec!["associated".into()],
                "ipv6-cidr-block-association.state" if !vpc.ipv6_cidrs.is_empty() => {
                    vec!["associated".into()]
                }
                "ipv6-cidr-block-association.ipv6-pool" if !vpc.ipv6_cidrs.is_empty() => {
                    vec!["Amazon".into()]
                }
                "state" => vec!["available".into()],
                "owner-id" => vec![network.owner_id.clone()],
                "dhcp-options-id" => vec![vpc.dhcp_options_id.clone()],
                _ => Vec::new(),
            });
            if shown {
                xml.open("item");
                vpc_xml(&mut xml, &network, vpc);
                xml.close();
            }
        }
        Ok(xml.finish())
    }

    /// `CreateSubnet` (`VpcId`, `CidrBlock`, `Ipv6CidrBlock`, `AvailabilityZone` or
    /// `AvailabilityZoneId`, `TagSpecification.N` of `subnet`, `DryRun`).
    pub(super) async fn create_subnet(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let vpc_id = query.require("VpcId")?;
        let cidr = query.require("CidrBlock")?;
        let tags = tag_specifications(query, "subnet")?;
        let subnet = self
            .change_network(order, |network| {
                let subnet = network
                    .create_subnet(NewSubnet {
                        vpc_id,
                        cidr,
                        ipv6_cidr: query.get("Ipv6CidrBlock"),
                        availability_zone: query.get("AvailabilityZone"),
                        availability_zone_id: query.get("AvailabilityZoneId"),
                        tags,
                    })?
                    .clone();
                dry_run(query)?;
                Ok(subnet)
            })
            .await?;
        tracing::info!(subnet = subnet.id, cidr = %subnet.cidr, "subnet created");
        let network = self.inventory.network();
        let mut xml = Xml::response("CreateSubnetResponse", request_id);
        xml.open("subnet");
        subnet_xml(&mut xml, &network, &subnet);
        xml.close();
        Ok(xml.finish())
    }

    /// `DeleteSubnet` (`SubnetId`, `DryRun`): refused while instances have addresses in it.
    pub(super) async fn delete_subnet(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let id = query.require("SubnetId")?;
        self.change_network(order, |network| {
            network.delete_subnet(id)?;
            dry_run(query)
        })
        .await?;
        tracing::info!(subnet = id, "subnet deleted");
        Ok(done("DeleteSubnetResponse", request_id))
    }

    /// `DescribeSubnets` (`SubnetId.N`; filters `subnet-id`, `vpc-id`, `availability-zone`,
    /// `availability-zone-id`, `default-for-az`, `cidr-block` (also `cidr`, `cidrBlock`),
    /// `ipv6-cidr-block-association.ipv6-cidr-block`, `map-public-ip-on-launch`, `state`,
    /// `owner-id`, `tag:KEY`, `tag-key`).
    pub(super) fn describe_subnets(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let network = self.inventory.network();
        let ids = query.list("SubnetId");
        for id in &ids {
            network.subnet(id)?;
        }
        let filters = Filters::new(
            query,
            &[
                "subnet-id",
                "vpc-id",
                "availability-zone",
                "availability-zone-id",
                "default-for-az",
                "defaultForAz",
                "cidr-block",
                "cidr",
                "cidrBlock",
                "ipv6-cidr-block-association.ipv6-cidr-block",
                "ipv6-cidr-block-association.association-id",
                "ipv6-cidr-block-association.state",
                "map-public-ip-on-launch",
                "available-ip-address-count",
                "subnet-arn",
                "ipv6-native",
                "state",
                "owner-id",
            ],
        )?;
        let mut xml = Xml::response("DescribeSubnetsResponse", request_id);
        xml.open("subnetSet");
        for subnet in network.subnets() {
            if !ids.is_empty() && !ids.contains(&subnet.id.as_str()) {
                continue;
            }
            let shown = filters.matches(&subnet.tags, |name| match name {
                "subnet-id" => vec![subnet.id.clone()],
                "vpc-id" => vec![subnet.vpc_id.clone()],
                "availability-zone" => vec![subnet.availability_zone.clone()],
                "availability-zone-id" => vec![subnet.availability_zone_id.clone()],
                "default-for-az" | "defaultForAz" => vec![subnet.default_for_az.to_string()],
                "ipv6-cidr-block-association.ipv6-cidr-block" => {
                    subnet.ipv6_cidr.iter().map(ToString::to_string).collect()
                }
                "ipv6-cidr-block-association.association-id" => subnet
                    .ipv6_cidr
                    .map(|_| subnet.ipv6_association_id())
                    .into_iter()
                    .collect(),
                "ipv6-cidr-block-association.state" => subnet
                    .ipv6_cidr
                    .map(|_| "associated".to_owned())
                    .into_iter()
                    .collect(),
                "map-public-ip-on-launch" => vec![subnet.map_public_ip_on_launch.to_string()],
                "available-ip-address-count" => {
                    vec![subnet.available_ip_address_count().to_string()]
                }
                "subnet-arn" => vec![subnet_arn(&network, subnet)],
                "ipv6-native" => vec!["false".into()],
                "state" => vec!["available".into()],
                "owner-id" => vec![network.owner_id.clone()],
                "cidr-block" | "cidr" | "cidrBlock" => vec![subnet.cidr.to_string()],
                _ => Vec::new(),
            });
            if shown {
                xml.open("item");
                subnet_xml(&mut xml, &network, subnet);
                xml.close();
            }
        }
        Ok(xml.finish())
    }

    /// `CreateSecurityGroup` (`GroupName`, `GroupDescription`, `VpcId` (default: the default
    /// VPC), `TagSpecification.N` of `security-group`, `DryRun`).
    pub(super) async fn create_security_group(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let name = query.require("GroupName")?;
        let description = query.require("GroupDescription")?;
        let tags = tag_specifications(query, "security-group")?;
        let group = self
            .change_network(order, |network| {
                let group = network
                    .create_security_group(name, description, query.get("VpcId"), tags)?
                    .clone();
                dry_run(query)?;
                Ok(group)
            })
            .await?;
        tracing::info!(
            group = group.id,
            name = group.name,
            "security group created"
        );
        let network = self.inventory.network();
        let mut xml = Xml::response("CreateSecurityGroupResponse", request_id);
        xml.leaf("return", true).leaf("groupId", &group.id);
        tag_set(&mut xml, &group.tags);
        xml.leaf("securityGroupArn", group_arn(&network, &group));
        Ok(xml.finish())
    }

    /// `DeleteSecurityGroup` (`GroupId`, or `GroupName` in the default VPC; `DryRun`); a VPC's
    /// `default` group cannot be deleted.
    pub(super) async fn delete_security_group(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let (id, name) = (query.get("GroupId"), query.get("GroupName"));
        if id.is_none() && name.is_none() {
            return Err(ControlError::MissingParameter("GroupId".into()));
        }
        // The groups of every instance that is not terminated (they keep their interfaces).
        let in_use: std::collections::BTreeSet<String> = self
            .inventory
            .state
            .instances()
            .iter()
            .filter(|slot| {
                let lifecycle = slot.changes().lifecycle;
                lifecycle.is_none_or(|l| l.last != crate::fleet::lifecycle::Transition::Terminate)
            })
            .flat_map(|slot| {
                let snapshot = slot.snapshot();
                let interfaces = &snapshot.instance.config.network_interfaces;
                interfaces
                    .iter()
                    .flat_map(|nic| nic.security_groups.iter().map(|g| g.id.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let group = self
            .change_network(order, |network| {
                let group =
                    network.delete_security_group(id, name, |group| in_use.contains(group))?;
                dry_run(query)?;
                Ok(group)
            })
            .await?;
        tracing::info!(group = group.id, "security group deleted");
        let mut xml = Xml::response("DeleteSecurityGroupResponse", request_id);
        xml.leaf("return", true).leaf("groupId", &group.id);
        Ok(xml.finish())
    }

    /// `DescribeSecurityGroups` (`GroupId.N`, `GroupName.N` of the default VPC; filters
    /// `group-id`, `group-name`, `vpc-id`, `description`, `owner-id`, `tag:KEY`, `tag-key`).
    pub(super) fn describe_security_groups(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let network = self.inventory.network();
        let ids = query.list("GroupId");
        for id in &ids {
            network.security_group(id)?;
        }
        let names = query.list("GroupName");
        let mut named = Vec::new();
        if !names.is_empty() {
            let vpc = network.default_vpc()?.id.clone();
            for name in &names {
                named.push(network.security_group_named(&vpc, name)?.id.clone());
            }
        }
        let filters = Filters::new(
            query,
            &[
                "group-id",
                "group-name",
                "vpc-id",
                "description",
                "owner-id",
                "egress.ip-permission.cidr",
                "egress.ip-permission.protocol",
            ],
        )?;
        let mut xml = Xml::response("DescribeSecurityGroupsResponse", request_id);
        xml.open("securityGroupInfo");
        for group in network.security_groups() {
            if !ids.is_empty() && !ids.contains(&group.id.as_str()) {
                continue;
            }
            if !names.is_empty() && !named.contains(&group.id) {
                continue;
            }
            let shown = filters.matches(&group.tags, |name| match name {
                "group-id" => vec![group.id.clone()],
                "group-name" => vec![group.name.clone()],
                "vpc-id" => vec![group.vpc_id.clone()],
                "description" => vec![group.description.clone()],
                "owner-id" => vec![network.owner_id.clone()],
                "egress.ip-permission.cidr" => vec!["0.0.0.0/0".into()],
                "egress.ip-permission.protocol" => vec!["-1".into()],
                _ => Vec::new(),
            });
            if shown {
                xml.open("item");
                group_xml(&mut xml, &network, group);
                xml.close();
            }
        }
        Ok(xml.finish())
    }
}

fn vpc_xml(xml: &mut Xml, network: &Network, vpc: &Vpc) {
    xml.leaf("ownerId", &network.owner_id)
        .leaf("instanceTenancy", "default");
    xml.open("cidrBlockAssociationSet");
    for (index, cidr) in vpc.cidrs.iter().enumerate() {
        xml.open("item")
            .leaf("associationId", vpc.cidr_association_id(index))
            .leaf("cidrBlock", cidr)
            .open("cidrBlockState")
            .leaf("state", "associated")
            .close()
            .close();
    }
    xml.close();
    if !vpc.ipv6_cidrs.is_empty() {
        xml.open("ipv6CidrBlockAssociationSet");
        for (index, cidr) in vpc.ipv6_cidrs.iter().enumerate() {
            xml.open("item")
                .leaf("associationId", vpc.ipv6_association_id(index))
                .leaf("ipv6CidrBlock", cidr)
                .open("ipv6CidrBlockState")
                .leaf("state", "associated")
                .close()
                .leaf("networkBorderGroup", &network.region)
                .leaf("ipv6Pool", "Amazon")
                .leaf("ipv6AddressAttribute", "public")
                .leaf("ipSource", "amazon")
                .close();
        }
        xml.close();
    }
    xml.leaf("isDefault", vpc.is_default)
        .open("blockPublicAccessStates")
        .leaf("internetGatewayBlockMode", "off")
        .close()
        .leaf("vpcId", &vpc.id)
        .leaf("state", "available");
    if let Some(cidr) = vpc.cidrs.first() {
        xml.leaf("cidrBlock", cidr);
    }
    xml.leaf("dhcpOptionsId", &vpc.dhcp_options_id);
    tag_set(xml, &vpc.tags);
}

fn subnet_xml(xml: &mut Xml, network: &Network, subnet: &Subnet) {
    xml.leaf("availabilityZoneId", &subnet.availability_zone_id)
        .leaf("mapCustomerOwnedIpOnLaunch", false)
        .leaf("ownerId", &network.owner_id)
        .leaf("assignIpv6AddressOnCreation", false);
    xml.open("ipv6CidrBlockAssociationSet");
    if let Some(cidr) = subnet.ipv6_cidr {
        xml.open("item")
            .leaf("associationId", subnet.ipv6_association_id())
            .leaf("ipv6CidrBlock", cidr)
            .open("ipv6CidrBlockState")
            .leaf("state", "associated")
            .close()
            .leaf("ipv6AddressAttribute", "public")
            .leaf("ipSource", "amazon")
            .close();
    }
    xml.close();
    xml.leaf("subnetArn", subnet_arn(network, subnet))
        .leaf("enableDns64", false)
        .leaf("ipv6Native", false)
        .open("privateDnsNameOptionsOnLaunch")
        .leaf("hostnameType", "ip-name")
        .leaf("enableResourceNameDnsARecord", false)
        .leaf("enableResourceNameDnsAAAARecord", false)
        .close()
        .open("blockPublicAccessStates")
        .leaf("internetGatewayBlockMode", "off")
        .close()
        .leaf("subnetId", &subnet.id)
        .leaf("state", "available")
        .leaf("vpcId", &subnet.vpc_id)
        .leaf("cidrBlock", subnet.cidr)
        .leaf(
            "availableIpAddressCount",
            subnet.available_ip_address_count(),
        )
        .leaf("availabilityZone", &subnet.availability_zone)
        .leaf("defaultForAz", subnet.default_for_az)
        .leaf("mapPublicIpOnLaunch", subnet.map_public_ip_on_launch);
    tag_set(xml, &subnet.tags);
}

fn subnet_arn(network: &Network, subnet: &Subnet) -> String {
    format!(
        "arn:{}:ec2:{}:{}:subnet/{}",
        network.partition, network.region, network.owner_id, subnet.id
    )
}

fn group_xml(xml: &mut Xml, network: &Network, group: &SecurityGroup) {
    xml.leaf("ownerId", &network.owner_id)
        .leaf("groupId", &group.id)
        .leaf("groupName", &group.name)
        .leaf("groupDescription", &group.description)
        .leaf("vpcId", &group.vpc_id)
        .leaf("securityGroupArn", group_arn(network, group))
        .open("ipPermissions")
        .close()
        // Every group EC2 creates lets all traffic out.
        .open("ipPermissionsEgress")
        .open("item")
        .leaf("ipProtocol", "-1")
        .open("groups")
        .close()
        .open("ipRanges")
        .open("item")
        .leaf("cidrIp", "0.0.0.0/0")
        .close()
        .close()
        .open("ipv6Ranges")
        .close()
        .open("prefixListIds")
        .close()
        .close()
        .close();
    tag_set(xml, &group.tags);
}

fn group_arn(network: &Network, group: &SecurityGroup) -> String {
    format!(
        "arn:{}:ec2:{}:{}:security-group/{}",
        network.partition, network.region, network.owner_id, group.id
    )
}

/// `<tagSet>` with one `item` per tag, left out when there are none.
pub(super) fn tag_set(xml: &mut Xml, tags: &Tags) {
    if tags.is_empty() {
        return;
    }
    xml.open("tagSet");
    for (key, value) in tags {
        xml.open("item")
            .leaf("key", key)
            .leaf("value", value)
            .close();
    }
    xml.close();
}

/// The tags of `TagSpecification.N` (`ResourceType` must be `resource_type`).
pub(super) fn tag_specifications(
    query: &QueryRequest,
    resource_type: &str,
) -> Result<Tags, ControlError> {
    let mut tags = Tags::new();
    for n in query.members("TagSpecification") {
        let kind = query.require(&format!("TagSpecification.{n}.ResourceType"))?;
        if kind != resource_type {
            return Err(ControlError::InvalidParameterValue(format!(
                "'{kind}' is not a valid taggable resource type for this operation."
            )));
        }
        let prefix = format!("TagSpecification.{n}.Tag");
        for m in query.members(&prefix) {
            let key = query.require(&format!("{prefix}.{m}.Key"))?;
            let value = query.get(&format!("{prefix}.{m}.Value")).unwrap_or("");
            super::tags::check_tag(key, value)?;
            tags.insert(key.to_owned(), value.to_owned());
        }
    }
    Ok(tags)
}

/// `Filter.N`, checked against the names an action knows (`tag:KEY` and `tag-key` always).
pub(super) struct Filters(Vec<(String, Vec<String>)>);

impl Filters {
    /// The request's filters, each by its documented name; `InvalidParameterValue` for a
    /// name EC2 does not take (see [`canonical_filter`]).
    pub(super) fn new(query: &QueryRequest, known: &[&str]) -> Result<Filters, ControlError> {
        let filters = query
            .filters()?
            .into_iter()
            .map(|(name, values)| Ok((canonical_filter(&name, known)?, values)))
            .collect::<Result<_, ControlError>>()?;
        Ok(Filters(filters))
    }

    /// [`Filters::new`] for an action whose answers carry no tags (`DescribeInstanceStatus`):
    /// `tag:KEY`, `tag-key` and `tag-value` are EC2's `InvalidParameterValue` as well.
    pub(super) fn untagged(query: &QueryRequest, known: &[&str]) -> Result<Filters, ControlError> {
        let filters = Filters::new(query, known)?;
        match filters
            .0
            .iter()
            .find(|(name, _)| !known.contains(&name.as_str()))
        {
            Some((name, _)) => Err(ControlError::InvalidFilter(name.clone())),
            None => Ok(filters),
        }
    }

    /// Whether every filter has a value matching one of the resource's: `field(name)` gives
    /// them for the names the action knows. Values may use `*` and `?` wildcards.
    pub(super) fn matches(&self, tags: &Tags, field: impl Fn(&str) -> Vec<String>) -> bool {
        self.0.iter().all(|(name, wanted)| {
            let actual: Vec<String> = if let Some(key) = name.strip_prefix("tag:") {
                tags.get(key).cloned().into_iter().collect()
            } else if name == "tag-key" {
                tags.keys().cloned().collect()
            } else if name == "tag-value" {
                tags.values().cloned().collect()
            } else {
                field(name)
            };
            wanted
                .iter()
                .any(|pattern| actual.iter().any(|value| glob(pattern, value)))
        })
    }
}

/// The documented name of filter `name` among `known` (plus `tag:KEY`, `tag-key` and
/// `tag-value`, which every Describe action takes): itself, or the name its legacy camelCase
/// spelling stands for (`isDefault` for `is-default`, `availabilityZone`, `defaultForAz`),
/// which EC2 still takes; any other name is EC2's `InvalidParameterValue`.
pub(super) fn canonical_filter(name: &str, known: &[&str]) -> Result<String, ControlError> {
    if name.starts_with("tag:") || known.contains(&name) || name == "tag-key" {
        return Ok(name.to_owned());
    }
    let mut kebab = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            kebab.push('-');
            kebab.push(c.to_ascii_lowercase());
        } else {
            kebab.push(c);
        }
    }
    if kebab != name && (known.contains(&kebab.as_str()) || kebab == "tag-key") {
        return Ok(kebab);
    }
    if name == "tag-value" || kebab == "tag-value" {
        return Ok("tag-value".to_owned());
    }
    Err(ControlError::InvalidFilter(name.to_owned()))
}

/// EC2's filter wildcards: `*` any run of characters, `?` any one.
pub(super) fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

pub(super) fn dry_run(query: &QueryRequest) -> Result<(), ControlError> {
    match query.dry_run() {
        true => Err(ControlError::DryRunOperation),
        false => Ok(()),
    }
}

/// The answer of an action that returns only success.
pub(super) fn done(root: &'static str, request_id: &str) -> String {
    let mut xml = Xml::response(root, request_id);
    xml.leaf("return", true);
    xml.finish()
}

#[cfg(test)]
mod tests {
    use super::{canonical_filter, glob};

    #[test]
    fn legacy_camel_case_filter_names_stand_for_the_documented_ones() {
        let known = ["is-default", "availability-zone", "vpc-id"];
        for (given, canonical) in [
            ("isDefault", "is-default"),
            ("is-default", "is-default"),
            ("availabilityZone", "availability-zone"),
            ("vpcId", "vpc-id"),
            ("tag:Name", "tag:Name"),
            ("tagKey", "tag-key"),
            ("tag-value", "tag-value"),
        ] {
            assert_eq!(canonical_filter(given, &known).unwrap(), canonical);
        }
        for unknown in ["isdefault", "IsDefault", "is_default", "default", ""] {
            let refused = canonical_filter(unknown, &known).unwrap_err();
            assert_eq!(refused.code(), "InvalidParameterValue", "{unknown}");
            assert_eq!(
                refused.to_string(),
                format!("The filter '{unknown}' is invalid")
            );
        }
    }

    #[test]
    fn filter_wildcards_match_like_ec2s() {
        assert!(glob("us-east-1*", "us-east-1a"));
        assert!(glob("10.0.?.0/24", "10.0.1.0/24"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b", "aXXc"));
        assert!(!glob("us-east-1a", "us-east-1b"));
    }
}

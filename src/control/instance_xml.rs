//! One instance as `DescribeInstances` and `RunInstances` show it: every member of botocore's
//! `Instance` shape that EC2 fills for an EBS-backed VPC instance, each from the same
//! configuration the guest API serves (interfaces, addresses, MACs, groups, block devices, key
//! pairs, placement, profile), so a tool reading either sees one instance.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::xml::Xml;
use crate::fleet::changes::InstanceAttributes;
use crate::fleet::instance::{Instance, Interface};
use crate::fleet::metadata::render;
use crate::fleet::options::MetadataOptions;

/// What one instance item shows besides its configuration.
pub(super) struct Shown<'a> {
    /// The instance served.
    pub(super) instance: &'a Instance,
    /// Its metadata options in force.
    pub(super) options: &'a MetadataOptions,
    /// `pending` shortly after an options change, else `applied`.
    pub(super) options_state: &'static str,
    /// Its state code and name now.
    pub(super) state: (u16, &'static str),
    /// Why it is in that state, when EC2 says (`stateReason`, `reason`).
    pub(super) reason: Option<StateReason>,
    /// What was set at launch or with `ModifyInstanceAttribute`.
    pub(super) attributes: &'a InstanceAttributes,
}

/// Why an instance is in its state: EC2's `stateReason` and `StateTransitionReason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StateReason {
    /// For example `Client.UserInitiatedShutdown`.
    pub(super) code: &'static str,
    /// For example `Client.UserInitiatedShutdown: User initiated shutdown`.
    pub(super) message: &'static str,
    /// `User initiated (2026-11-02 08:14:29 GMT)`, or empty while pending.
    pub(super) transition: String,
}

impl StateReason {
    /// A launch or start still pending.
    pub(super) fn pending() -> StateReason {
        StateReason {
            code: "pending",
            message: "pending",
            transition: String::new(),
        }
    }

    /// A stop or termination the user asked for at `at`.
    pub(super) fn user(at: OffsetDateTime) -> StateReason {
        StateReason {
            code: "Client.UserInitiatedShutdown",
            message: "Client.UserInitiatedShutdown: User initiated shutdown",
            transition: format!("User initiated ({})", gmt(at)),
        }
    }

    /// A spot interruption that stopped or terminated the instance at `at`.
    pub(super) fn spot(at: OffsetDateTime) -> StateReason {
        StateReason {
            code: "Server.SpotInstanceTermination",
            message: "Server.SpotInstanceTermination: Spot instance termination",
            transition: format!("Service initiated ({})", gmt(at)),
        }
    }
}

/// `2026-11-02 08:14:29 GMT`, as EC2 writes transition times.
fn gmt(at: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::FormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] GMT");
    at.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_default()
}

/// `prefix` and 17 hex digits derived from `seed`: the same instance always shows the same
/// volume and attachment ids.
pub(super) fn derived_id(prefix: &str, seed: &str) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    format!("{prefix}{}", &super::hex(&digest)[..17])
}

/// The EBS volumes EC2 lists for the instance: its root device, then `ebsN` of
/// `block-device-mapping/` (device names as `/dev/...`), each with a volume id of its own.
pub(super) fn ebs_devices(instance: &Instance) -> Vec<(String, String)> {
    let mapping = &instance.config.block_device_mapping;
    let device = |name: &str| match name.starts_with("/dev/") {
        true => name.to_owned(),
        false => format!("/dev/{name}"),
    };
    let mut devices: Vec<String> = mapping.get("root").map(|r| device(r)).into_iter().collect();
    let mut ebs: Vec<(u32, &String)> = mapping
        .iter()
        .filter_map(|(key, name)| Some((key.strip_prefix("ebs")?.parse().ok()?, name)))
        .collect();
    ebs.sort();
    devices.extend(ebs.into_iter().map(|(_, name)| device(name)));
    devices.dedup();
    devices
        .into_iter()
        .map(|name| {
            let id = derived_id("vol-", &format!("{}{name}", instance.id()));
            (name, id)
        })
        .collect()
}

/// Writes `<item>` of one instance.
pub(super) fn instance_item(xml: &mut Xml, shown: &Shown<'_>) {
    let instance = shown.instance;
    let c = &instance.config;
    let primary = instance.primary_interface();
    let nic = &primary.config;
    let launched = render::iso_seconds(c.pending_time);
    let kind = crate::fleet::instance_types::find(&c.instance_type);
    xml.open("item")
        .leaf("instanceId", instance.id())
        .leaf("imageId", &c.ami_id)
        .open("instanceState")
        .leaf("code", shown.state.0)
        .leaf("name", shown.state.1)
        .close()
        .leaf("privateDnsName", &primary.local_hostname)
        .leaf("dnsName", primary.public_hostname.as_deref().unwrap_or(""))
        .leaf(
            "reason",
            shown.reason.as_ref().map_or("", |r| r.transition.as_str()),
        );
    if let Some(key) = c.public_keys.first() {
        xml.leaf("keyName", &key.name);
    }
    xml.leaf("amiLaunchIndex", c.ami_launch_index)
        .open("productCodes");
    for code in &c.product_codes {
        xml.open("item")
            .leaf("productCode", code)
            .leaf("type", "marketplace")
            .close();
    }
    xml.close()
        .leaf("instanceType", &c.instance_type)
        .leaf("launchTime", &launched)
        .open("placement")
        .leaf("availabilityZoneId", &c.placement.availability_zone_id)
        .leaf("availabilityZone", &c.placement.availability_zone)
        .leaf("groupName", c.placement.group_name.as_deref().unwrap_or(""));
    if let Some(partition) = c.placement.partition_number {
        xml.leaf("partitionNumber", partition);
    }
    if let Some(host) = &c.placement.host_id {
        xml.leaf("hostId", host);
    }
    xml.leaf(
        "tenancy",
        if c.placement.host_id.is_some() {
            "host"
        } else {
            "default"
        },
    )
    .close();
    if let Some(kernel) = &c.kernel_id {
        xml.leaf("kernelId", kernel);
    }
    if let Some(ramdisk) = &c.ramdisk_id {
        xml.leaf("ramdiskId", ramdisk);
    }
    xml.open("monitoring")
        .leaf("state", "disabled")
        .close()
        .leaf("subnetId", &nic.subnet_id)
        .leaf("vpcId", &nic.vpc_id)
        .leaf("privateIpAddress", nic.private_ipv4s[0]);
    if let Some(public) = nic.public_ipv4 {
        xml.leaf("ipAddress", public);
    }
    xml.leaf("sourceDestCheck", true);
    groups(xml, primary);
    if let Some(reason) = &shown.reason {
        xml.open("stateReason")
            .leaf("code", reason.code)
            .leaf("message", reason.message)
            .close();
    }
    xml.leaf("architecture", &c.architecture)
        .leaf("rootDeviceType", "ebs");
    if let Some(root) = c.block_device_mapping.get("root") {
        xml.leaf("rootDeviceName", root);
    }
    xml.open("blockDeviceMapping");
    for (device, volume) in ebs_devices(instance) {
        xml.open("item")
            .leaf("deviceName", device)
            .open("ebs")
            .leaf("volumeId", volume)
            .leaf("status", "attached")
            .leaf("attachTime", &launched)
            .leaf("deleteOnTermination", true)
            .close()
            .close();
    }
    xml.close().leaf("virtualizationType", "hvm").leaf(
        "clientToken",
        shown.attributes.client_token.as_deref().unwrap_or(""),
    );
    // Only spot instances are interrupted: an interruption makes the instance one, as the
    // guest API's `instance-life-cycle` says.
    if c.instance_life_cycle == "spot" || c.events.spot.is_some() {
        xml.leaf("instanceLifecycle", "spot");
    }
    xml.open("tagSet");
    for (key, value) in &c.tags {
        xml.open("item")
            .leaf("key", key)
            .leaf("value", value)
            .close();
    }
    xml.close().leaf("hypervisor", "xen");
    xml.open("networkInterfaceSet");
    for interface in &instance.interfaces {
        network_interface(xml, instance, interface, &launched);
    }
    xml.close();
    if let Some(profile) = &instance.iam {
        xml.open("iamInstanceProfile")
            .leaf("arn", &profile.instance_profile_arn)
            .leaf("id", &profile.instance_profile_id)
            .close();
    }
    let nitro = kind.map_or(c.system.as_deref() == Some("nitro"), |k| k.ena_supported());
    xml.leaf("ebsOptimized", nitro).leaf("enaSupport", nitro);
    if let Some(kind) = kind {
        xml.open("cpuOptions")
            .leaf("coreCount", kind.cores())
            .leaf("threadsPerCore", kind.threads_per_core)
            .close();
    }
    xml.open("capacityReservationSpecification")
        .leaf("capacityReservationPreference", "open")
        .close()
        .open("hibernationOptions")
        .leaf("configured", c.hibernation_configured)
        .close();
    xml.open("metadataOptions")
        .leaf("state", shown.options_state)
        .leaf(
            "httpTokens",
            super::instances::tokens(shown.options.http_tokens),
        )
        .leaf(
            "httpPutResponseHopLimit",
            shown.options.http_put_response_hop_limit,
        )
        .leaf(
            "httpEndpoint",
            super::instances::switch(shown.options.http_endpoint),
        )
        .leaf(
            "httpProtocolIpv6",
            super::instances::switch(shown.options.http_protocol_ipv6),
        )
        .leaf(
            "instanceMetadataTags",
            super::instances::switch(shown.options.instance_metadata_tags),
        )
        .close()
        .open("enclaveOptions")
        .leaf("enabled", false)
        .close();
    let boot = match c.architecture.as_str() {
        "arm64" => "uefi",
        _ => "legacy-bios",
    };
    xml.leaf("bootMode", boot)
        .leaf("platformDetails", "Linux/UNIX")
        .leaf("usageOperation", "RunInstances")
        .leaf(
            "usageOperationUpdateTime",
            render::iso_seconds(c.pending_time),
        )
        .open("privateDnsNameOptions")
        .leaf("hostnameType", "ip-name")
        .leaf("enableResourceNameDnsARecord", false)
        .leaf("enableResourceNameDnsAAAARecord", false)
        .close();
    if let Some(first) = nic.ipv6s.first() {
        xml.leaf("ipv6Address", first);
    }
    xml.open("maintenanceOptions")
        .leaf("autoRecovery", "default")
        .leaf("rebootMigration", "default")
        .close()
        .leaf("currentInstanceBootMode", boot)
        .open("networkPerformanceOptions")
        .leaf("bandwidthWeighting", "default")
        .close()
        .open("operator")
        .leaf("managed", false)
        .close()
        .close();
}

fn groups(xml: &mut Xml, interface: &Interface) {
    xml.open("groupSet");
    for group in &interface.config.security_groups {
        xml.open("item")
            .leaf("groupId", &group.id)
            .leaf("groupName", &group.name)
            .close();
    }
    xml.close();
}

/// `<association>` of a public address, when the interface has one.
fn association(xml: &mut Xml, interface: &Interface) {
    if let Some(public) = interface.config.public_ipv4 {
        xml.open("association")
            .leaf("publicIp", public)
            .leaf(
                "publicDnsName",
                interface.public_hostname.as_deref().unwrap_or(""),
            )
            .leaf("ipOwnerId", "amazon")
            .close();
    }
}

fn network_interface(xml: &mut Xml, instance: &Instance, interface: &Interface, launched: &str) {
    let nic = &interface.config;
    xml.open("item")
        .leaf("networkInterfaceId", &nic.interface_id)
        .leaf("subnetId", &nic.subnet_id)
        .leaf("vpcId", &nic.vpc_id)
        .leaf("description", "")
        .leaf("ownerId", &instance.config.account_id)
        .leaf("status", "in-use")
        .leaf("macAddress", &nic.mac)
        .leaf("privateIpAddress", nic.private_ipv4s[0])
        .leaf("privateDnsName", &interface.local_hostname)
        .leaf("sourceDestCheck", true);
    groups(xml, interface);
    xml.open("attachment")
        .leaf("attachmentId", derived_id("eni-attach-", &nic.interface_id))
        .leaf("deviceIndex", nic.device_number)
        .leaf("networkCardIndex", nic.network_card_index)
        .leaf("status", "attached")
        .leaf("attachTime", launched)
        .leaf("deleteOnTermination", nic.device_number == 0)
        .close();
    association(xml, interface);
    xml.open("privateIpAddressesSet");
    for (index, ip) in nic.private_ipv4s.iter().enumerate() {
        xml.open("item").leaf("privateIpAddress", ip);
        // EC2's name for every private address of a VPC interface is the one of its primary.
        xml.leaf("privateDnsName", private_dns_name(interface, *ip))
            .leaf("primary", index == 0);
        if index == 0 {
            association(xml, interface);
        }
        xml.close();
    }
    xml.close().open("ipv6AddressesSet");
    for ip in &nic.ipv6s {
        xml.open("item")
            .leaf("ipv6Address", ip)
            .leaf("isPrimaryIpv6", false)
            .close();
    }
    xml.close()
        .leaf("interfaceType", "interface")
        .open("ipv4PrefixSet")
        .close()
        .open("ipv6PrefixSet")
        .close()
        .close();
}

/// `ip-10-0-0-5.ec2.internal` for address `ip` of `interface` (the primary's name, with the
/// address's dashes).
fn private_dns_name(interface: &Interface, ip: std::net::Ipv4Addr) -> String {
    let primary = interface.config.private_ipv4s[0]
        .to_string()
        .replace('.', "-");
    let this = ip.to_string().replace('.', "-");
    interface.local_hostname.replacen(&primary, &this, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_reasons_name_the_time_in_gmt() {
        let at = time::macros::datetime!(2026-11-02 08:14:29 UTC);
        assert_eq!(
            StateReason::user(at).transition,
            "User initiated (2026-11-02 08:14:29 GMT)"
        );
        assert_eq!(StateReason::pending().transition, "");
    }

    #[test]
    fn derived_ids_are_stable_and_shaped_like_ec2s() {
        let id = derived_id("vol-", "i-0123/dev/xvda");
        assert_eq!(id, derived_id("vol-", "i-0123/dev/xvda"));
        assert_eq!(id.len(), "vol-".len() + 17);
        assert_ne!(id, derived_id("vol-", "i-0123/dev/sdb"));
    }
}

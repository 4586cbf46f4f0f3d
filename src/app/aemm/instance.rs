//! The instance AEMM's metadata values describe: AEMM v1.13's defaults ([`defaults`]) with
//! the values of the flags, environment and config file over them, turned into imds'
//! `[instance]` configuration. imds serves one consistent instance, so a value that contradicts
//! another given value (an address outside a given subnet) is refused with both keys, and the
//! network of an address no default block holds is the one the address implies.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{Ipv4Net, Ipv6Net};
use time::OffsetDateTime;

use super::defaults;
use super::settings::{Origin, Settings};
use super::{invalid, AemmError};
use crate::fleet::instance::{
    IamConfig, Instance, InstanceConfig, InterfaceConfig, PublicKeyConfig, SecurityGroup,
};
use crate::fleet::options::Switch;

/// Where AEMM's metadata values live among its settings.
const PREFIX: &str = "metadata.values.";

/// Metadata values by AEMM key (lower-case, `-` for `.`): those given, over AEMM's defaults.
pub struct Values<'a> {
    given: BTreeMap<String, (&'a str, &'a Origin)>,
}

static DEFAULT: Origin = Origin::Default;

impl<'a> Values<'a> {
    /// The metadata values of `settings`, over AEMM's defaults.
    pub fn of(settings: &'a Settings) -> Values<'a> {
        let given = settings
            .under(PREFIX)
            .map(|(key, value, origin)| (normalise(key), (value, origin)))
            .collect();
        Values { given }
    }

    /// The value of `key` (given, else AEMM's default) and where it came from.
    pub fn get(&self, key: &str) -> Option<(&'a str, &'a Origin)> {
        self.given.get(key).copied().or_else(|| {
            defaults::METADATA_VALUES
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v, &DEFAULT))
        })
    }

    /// The value of `key` when it was given (not AEMM's default).
    fn given(&self, key: &str) -> Option<(&'a str, &'a Origin)> {
        self.given.get(key).copied()
    }

    /// The value of the first of `keys` that was given, else of the first with a default;
    /// two given keys that disagree are refused.
    fn one_of(&self, keys: &[&str]) -> Result<Option<(&'a str, &'a Origin, String)>, AemmError> {
        let given: Vec<_> = keys
            .iter()
            .filter_map(|k| self.given(k).map(|(v, o)| (*k, v, o)))
            .collect();
        if let [(k1, v1, o1), rest @ ..] = given.as_slice() {
            if let Some((k2, v2, o2)) = rest.iter().find(|(_, v, _)| v != v1) {
                return Err(AemmError(format!(
                    "{PREFIX}{k1} (\"{v1}\", from the {o1}) and {PREFIX}{k2} (\"{v2}\", from the {o2}) name the same value: give one, or the same in both"
                )));
            }
            return Ok(Some((*v1, *o1, (*k1).to_owned())));
        }
        Ok(keys
            .iter()
            .find_map(|k| self.get(k).map(|(v, o)| (v, o, (*k).to_owned()))))
    }

    /// The given keys imds does not apply: those it derives (with what from), then those it
    /// does not know.
    pub fn not_applied(&self) -> (Vec<String>, Vec<String>) {
        let mut derived = Vec::new();
        let mut unknown = Vec::new();
        for key in self.given.keys() {
            if let Some((_, from)) = defaults::DERIVED.iter().find(|(k, _)| k == key) {
                derived.push(format!("{key} (from {from})"));
            } else if !APPLIED.contains(&key.as_str()) && key != "event-id" {
                unknown.push(key.clone());
            }
        }
        (derived, unknown)
    }
}

/// The keys [`build`] applies (besides `event-id`, which names the scheduled event).
const APPLIED: &[&str] = &[
    "ami-id",
    "ami-launch-index",
    "ami-manifest-path",
    "block-device-mapping-ami",
    "block-device-mapping-ebs",
    "block-device-mapping-ephemeral",
    "block-device-mapping-root",
    "block-device-mapping-swap",
    "instance-id",
    "instance-life-cycle",
    "instance-type",
    "kernel-id",
    "ramdisk-id",
    "reservation-id",
    "local-ipv4",
    "mac-local-ipv4s",
    "mac",
    "mac-mac",
    "mac-device-number",
    "mac-network-interface-card-index",
    "mac-network-interface-id",
    "public-ipv4",
    "mac-public-ipv4s",
    "mac-ipv6-associations",
    "security-groups",
    "mac-security-groups",
    "mac-security-group-ids",
    "mac-subnet-id",
    "mac-subnet-ipv4-cidr-block",
    "mac-subnet-ipv6-cidr-blocks",
    "mac-vpc-id",
    "mac-vpc-ipv4-cidr-block",
    "mac-vpc-ipv4-cidr-blocks",
    "mac-vpc-ipv6-cidr-blocks",
    "placement-availability-zone",
    "placement-availability-zone-id",
    "placement-group-name",
    "placement-host-id",
    "placement-partition-number",
    "placement-region",
    "product-codes",
    "public-key",
    "tags-instance-name",
    "tags-instance-test",
    "iam-security-credentials-role",
    "iam-info-instanceprofilearn",
    "iam-info-instanceprofileid",
];

/// AEMM's spelling of a metadata value key: lower-case, nested keys joined with `-`.
fn normalise(key: &str) -> String {
    key.to_ascii_lowercase().replace(['.', '_'], "-")
}

/// The instance `values` describe, from `base` (imds' built-in instance, for what AEMM has no
/// value for: architecture, credential lifetime, ...), validated as imds validates a file.
pub fn build(values: &Values<'_>, mut base: InstanceConfig) -> Result<InstanceConfig, AemmError> {
    let text = |key: &str| values.get(key).map(|(v, _)| v.to_owned());
    let optional = |key: &str| text(key).filter(|v| !v.is_empty());
    let c = &mut base;
    c.instance_id = text("instance-id").unwrap_or_default();
    c.instance_type = text("instance-type").unwrap_or_default();
    c.ami_id = text("ami-id").unwrap_or_default();
    c.ami_launch_index = number(values, "ami-launch-index")?.unwrap_or(0);
    c.ami_manifest_path = text("ami-manifest-path").unwrap_or_default();
    c.reservation_id = text("reservation-id").unwrap_or_default();
    c.instance_life_cycle = text("instance-life-cycle").unwrap_or_default();
    c.kernel_id = optional("kernel-id");
    c.ramdisk_id = optional("ramdisk-id");
    c.product_codes = list(values, "product-codes");
    // AEMM does not serve `system`; an m4 is no Nitro instance.
    c.system = None;
    c.pending_time = OffsetDateTime::parse(
        defaults::PENDING_TIME,
        &time::format_description::well_known::Rfc3339,
    )
    .expect("AEMM's pendingTime is RFC 3339");
    c.block_device_mapping = [
        ("ami", "block-device-mapping-ami"),
        ("ebs0", "block-device-mapping-ebs"),
        ("ephemeral0", "block-device-mapping-ephemeral"),
        ("root", "block-device-mapping-root"),
        ("swap", "block-device-mapping-swap"),
    ]
    .into_iter()
    .filter_map(|(device, key)| Some((device.to_owned(), optional(key)?)))
    .collect();
    c.tags = [
        ("Name", "tags-instance-name"),
        ("Test", "tags-instance-test"),
    ]
    .into_iter()
    .filter_map(|(tag, key)| Some((tag.to_owned(), text(key)?)))
    .collect();
    // AEMM serves the tags without being asked to.
    c.metadata_options.instance_metadata_tags = Switch::Enabled;
    c.public_keys = optional("public-key")
        .map(|key| {
            // AEMM serves no key name; the key's comment stands in for it.
            let name = key
                .split_whitespace()
                .nth(2)
                .filter(|n| !n.contains('/'))
                .unwrap_or("aemm")
                .to_owned();
            vec![PublicKeyConfig {
                name,
                openssh_key: key,
            }]
        })
        .unwrap_or_default();
    placement(values, c)?;
    iam(values, c)?;
    let nic = c
        .network_interfaces
        .first()
        .cloned()
        .expect("the built-in instance has an interface");
    c.network_interfaces = vec![interface(values, nic)?];
    Instance::new(base.clone()).map_err(|e| {
        let key = FIELDS
            .iter()
            .find(|(field, _)| e.key == *field || e.key.starts_with(&format!("{field}[")))
            .map(|(_, key)| *key);
        match key.and_then(|k| values.get(k).map(|(v, o)| (k, v, o))) {
            Some((key, value, origin)) => AemmError(format!(
                "{PREFIX}{key} \"{value}\" (from the {origin}): {}",
                e.reason
            )),
            None => AemmError(format!("metadata values: {e}")),
        }
    })?;
    Ok(base)
}

/// imds' field (as its errors name it) and the AEMM key that sets it.
const FIELDS: &[(&str, &str)] = &[
    ("instance_id", "instance-id"),
    ("instance_type", "instance-type"),
    ("ami_id", "ami-id"),
    ("reservation_id", "reservation-id"),
    ("instance_life_cycle", "instance-life-cycle"),
    ("kernel_id", "kernel-id"),
    ("ramdisk_id", "ramdisk-id"),
    ("account_id", "iam-info-instanceprofilearn"),
    (
        "placement.availability_zone_id",
        "placement-availability-zone-id",
    ),
    ("placement.availability_zone", "placement-availability-zone"),
    ("placement.region", "placement-region"),
    ("network_interfaces[0].mac", "mac"),
    (
        "network_interfaces[0].interface_id",
        "mac-network-interface-id",
    ),
    ("network_interfaces[0].subnet_id", "mac-subnet-id"),
    ("network_interfaces[0].vpc_id", "mac-vpc-id"),
    ("network_interfaces[0].device_number", "mac-device-number"),
    (
        "network_interfaces[0].security_groups",
        "mac-security-group-ids",
    ),
    ("network_interfaces[0].ipv6s", "mac-ipv6-associations"),
    ("public_keys", "public-key"),
    ("iam.role", "iam-security-credentials-role"),
    ("iam.instance_profile_id", "iam-info-instanceprofileid"),
    ("tags", "tags-instance-name"),
];

fn placement(values: &Values<'_>, c: &mut InstanceConfig) -> Result<(), AemmError> {
    let p = &mut c.placement;
    let optional = |key: &str| {
        values
            .get(key)
            .map(|(v, _)| v.to_owned())
            .filter(|v| !v.is_empty())
    };
    p.availability_zone = optional("placement-availability-zone").unwrap_or_default();
    // AEMM's default region and zone id belong to its default zone: another zone keeps them
    // only when they are given too.
    let zone_given = values.given("placement-availability-zone").is_some();
    p.region = match zone_given {
        true => values.given("placement-region").map(|(v, _)| v.to_owned()),
        false => optional("placement-region"),
    }
    .filter(|v| !v.is_empty());
    p.availability_zone_id = match (zone_given, values.given("placement-availability-zone-id")) {
        (_, Some((id, _))) => id.to_owned(),
        (false, None) => optional("placement-availability-zone-id").unwrap_or_default(),
        (true, None) => {
            let region = p
                .region
                .clone()
                .or_else(|| crate::fleet::instance::region_of_zone(&p.availability_zone));
            region
                .and_then(|r| crate::fleet::instance::derived_zone_id(&p.availability_zone, &r))
                .unwrap_or_default()
        }
    };
    p.group_name = optional("placement-group-name");
    p.host_id = optional("placement-host-id");
    p.partition_number = number(values, "placement-partition-number")?;
    Ok(())
}

fn iam(values: &Values<'_>, c: &mut InstanceConfig) -> Result<(), AemmError> {
    let (arn, arn_origin) = values
        .get("iam-info-instanceprofilearn")
        .expect("AEMM has a default InstanceProfileArn");
    let (account, profile) = profile_arn(arn).ok_or_else(|| {
        invalid(
            "metadata.values.iam-info.InstanceProfileArn",
            arn,
            arn_origin,
            "arn:aws:iam::ACCOUNT:instance-profile/NAME",
        )
    })?;
    c.account_id = account.to_owned();
    let arn_given = values.given("iam-info-instanceprofilearn").is_some();
    let role = match (values.given("iam-security-credentials-role"), arn_given) {
        (Some((role, origin)), true) if role != profile => {
            return Err(AemmError(format!(
                "{PREFIX}iam-security-credentials-role \"{role}\" (from the {origin}) is not the instance profile of {PREFIX}iam-info.InstanceProfileArn \"{arn}\" (from the {arn_origin}): imds names the role and its instance profile alike"
            )))
        }
        (Some((role, _)), _) => role.to_owned(),
        (None, true) => profile.to_owned(),
        (None, false) => values
            .get("iam-security-credentials-role")
            .map(|(v, _)| v.to_owned())
            .unwrap_or_default(),
    };
    if role.is_empty() {
        c.iam = IamConfig::default();
        return Ok(());
    }
    // AEMM's profile id belongs to its own role; another role gets one derived from its name.
    let default_role = values.given("iam-security-credentials-role").is_none() && !arn_given;
    let id = match values.given("iam-info-instanceprofileid") {
        Some((id, _)) => Some(id.to_owned()),
        None if default_role => values
            .get("iam-info-instanceprofileid")
            .map(|(v, _)| v.to_owned()),
        None => None,
    };
    c.iam = IamConfig {
        role: Some(role),
        instance_profile_id: id,
        credential_lifetime_seconds: c.iam.credential_lifetime_seconds,
        ..IamConfig::default()
    };
    Ok(())
}

/// The account and name of `arn:PARTITION:iam::ACCOUNT:instance-profile/[PATH/]NAME`.
fn profile_arn(arn: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "iam", "", account, resource] if !partition.is_empty() => {
            let name = resource
                .strip_prefix("instance-profile/")?
                .rsplit('/')
                .next()?;
            (!name.is_empty()).then_some((*account, name))
        }
        _ => None,
    }
}

fn interface(values: &Values<'_>, mut nic: InterfaceConfig) -> Result<InterfaceConfig, AemmError> {
    let text = |key: &str| {
        values
            .get(key)
            .map(|(v, _)| v.to_owned())
            .unwrap_or_default()
    };
    nic.mac = values
        .one_of(&["mac", "mac-mac"])?
        .map(|(v, _, _)| v.to_owned())
        .unwrap_or_default();
    nic.interface_id = text("mac-network-interface-id");
    nic.device_number = number(values, "mac-device-number")?.unwrap_or(0);
    nic.network_card_index = number(values, "mac-network-interface-card-index")?.unwrap_or(0);
    nic.subnet_id = text("mac-subnet-id");
    nic.vpc_id = text("mac-vpc-id");
    // local-ipv4 is the primary address; a given mac-local-ipv4s may add secondary ones (or,
    // alone, name them all, the primary first).
    let listed = match values.given("mac-local-ipv4s") {
        Some(_) => parse_list::<Ipv4Addr>(values, "mac-local-ipv4s", "IPv4 addresses")?,
        None => Vec::new(),
    };
    let primary = match (values.given("local-ipv4"), listed.first()) {
        (None, Some(first)) => Some(*first),
        _ => parse_one::<Ipv4Addr>(values, "local-ipv4", "an IPv4 address")?,
    };
    let mut addresses: Vec<Ipv4Addr> = primary.into_iter().collect();
    for ip in listed {
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    nic.private_ipv4s = addresses;
    nic.public_ipv4 =
        match values.one_of(&["public-ipv4", "mac-public-ipv4s"])? {
            Some(("", _, _)) | None => None,
            Some((text, origin, key)) => Some(text.trim().parse().map_err(|_| {
                invalid(&format!("{PREFIX}{key}"), text, origin, "an IPv4 address")
            })?),
        };
    nic.ipv6s = parse_list::<Ipv6Addr>(values, "mac-ipv6-associations", "IPv6 addresses")?;
    let names = match values.given("mac-security-groups") {
        Some(_) => list(values, "mac-security-groups"),
        None => list(values, "security-groups"),
    };
    let ids = list(values, "mac-security-group-ids");
    if names.len() != ids.len() {
        return Err(AemmError(format!(
            "{PREFIX}mac-security-groups ({}) and {PREFIX}mac-security-group-ids ({}) must list as many groups, in the same order",
            names.join(" "),
            ids.join(" ")
        )));
    }
    nic.security_groups = names
        .into_iter()
        .zip(ids)
        .map(|(name, id)| SecurityGroup { name, id })
        .collect();
    ipv4_network(values, &mut nic)?;
    ipv6_network(values, &mut nic)?;
    Ok(nic)
}

/// The subnet and VPC blocks: those given (which must hold the addresses), else AEMM's default
/// where it holds them, else the network the primary address implies (its /24 in its /16).
fn ipv4_network(values: &Values<'_>, nic: &mut InterfaceConfig) -> Result<(), AemmError> {
    let Some(primary) = nic.private_ipv4s.first().copied() else {
        return Err(AemmError(format!(
            "{PREFIX}local-ipv4: an instance needs a private IPv4 address"
        )));
    };
    let subnet_key = "mac-subnet-ipv4-cidr-block";
    let vpc_given = given_blocks::<Ipv4Net>(
        values,
        &["mac-vpc-ipv4-cidr-block", "mac-vpc-ipv4-cidr-blocks"],
    )?;
    let subnet = match values.given(subnet_key) {
        Some((text, origin)) => {
            let subnet = parse_block::<Ipv4Net>(subnet_key, text, origin)?;
            if let Some(outside) = nic.private_ipv4s.iter().find(|ip| !subnet.contains(*ip)) {
                return Err(outside_of(
                    values,
                    "local-ipv4",
                    outside,
                    subnet_key,
                    &subnet,
                ));
            }
            subnet
        }
        None => {
            let default = default_block::<Ipv4Net>(subnet_key)
                .filter(|s| nic.private_ipv4s.iter().all(|ip| s.contains(ip)));
            let implied = Ipv4Net::new(primary, 24)
                .expect("24 is a prefix length")
                .trunc();
            let narrower = vpc_given
                .iter()
                .find(|(vpc, _)| vpc.contains(&primary) && vpc.prefix_len() > 24)
                .map(|(vpc, _)| *vpc);
            default.or(narrower).unwrap_or(implied)
        }
    };
    nic.subnet_ipv4_cidr_block = subnet;
    nic.vpc_ipv4_cidr_blocks = match vpc_given.as_slice() {
        [] => {
            let default = default_block::<Ipv4Net>("mac-vpc-ipv4-cidr-block")
                .filter(|vpc| vpc.contains(&subnet));
            let implied = match subnet.prefix_len() {
                0..=16 => subnet,
                _ => Ipv4Net::new(subnet.addr(), 16)
                    .expect("16 is a prefix length")
                    .trunc(),
            };
            vec![default.unwrap_or(implied)]
        }
        given => {
            if !given.iter().any(|(vpc, _)| vpc.contains(&subnet)) {
                let (key, shown) = match values.given(subnet_key) {
                    Some(_) => (subnet_key, subnet.to_string()),
                    None => ("local-ipv4", primary.to_string()),
                };
                return Err(AemmError(format!(
                    "{PREFIX}{key} {shown} is not inside {PREFIX}mac-vpc-ipv4-cidr-block(s) {}: give blocks that hold it",
                    given.iter().map(|(b, _)| b.to_string()).collect::<Vec<_>>().join(", ")
                )));
            }
            given.iter().map(|(b, _)| *b).collect()
        }
    };
    Ok(())
}

/// IPv6 as IPv4: blocks given, else AEMM's defaults where they hold the addresses, else the
/// /64 of the first address in its /56.
fn ipv6_network(values: &Values<'_>, nic: &mut InterfaceConfig) -> Result<(), AemmError> {
    let subnet_key = "mac-subnet-ipv6-cidr-blocks";
    let vpc_key = "mac-vpc-ipv6-cidr-blocks";
    let holds = |blocks: &[Ipv6Net], ip: &Ipv6Addr| blocks.iter().any(|b| b.contains(ip));
    let subnets: Vec<Ipv6Net> = match values.given(subnet_key) {
        Some(_) => {
            let given: Vec<Ipv6Net> = given_blocks(values, &[subnet_key])?
                .into_iter()
                .map(|(b, _)| b)
                .collect();
            if let Some(outside) = nic.ipv6s.iter().find(|ip| !holds(&given, ip)) {
                return Err(AemmError(format!(
                    "{PREFIX}mac-ipv6-associations {outside} is not inside {PREFIX}{subnet_key} {}",
                    shown(&given)
                )));
            }
            given
        }
        None => match nic.ipv6s.first() {
            None => Vec::new(),
            Some(first) => {
                let default: Vec<Ipv6Net> = default_block(subnet_key).into_iter().collect();
                match nic.ipv6s.iter().all(|ip| holds(&default, ip)) {
                    true => default,
                    false => vec![Ipv6Net::new(*first, 64)
                        .expect("64 is a prefix length")
                        .trunc()],
                }
            }
        },
    };
    nic.vpc_ipv6_cidr_blocks = match values.given(vpc_key) {
        Some(_) => {
            let given: Vec<Ipv6Net> = given_blocks(values, &[vpc_key])?
                .into_iter()
                .map(|(b, _)| b)
                .collect();
            if let Some(outside) = subnets
                .iter()
                .find(|s| !given.iter().any(|v| v.contains(*s)))
            {
                return Err(AemmError(format!(
                    "{PREFIX}{subnet_key} {outside} is not inside {PREFIX}{vpc_key} {}",
                    shown(&given)
                )));
            }
            given
        }
        None if subnets.is_empty() => Vec::new(),
        None => {
            let default: Vec<Ipv6Net> = default_block(vpc_key).into_iter().collect();
            match subnets
                .iter()
                .all(|s| default.iter().any(|v| v.contains(s)))
            {
                true => default,
                false => {
                    let first = subnets[0];
                    vec![match first.prefix_len() {
                        0..=56 => first,
                        _ => Ipv6Net::new(first.addr(), 56)
                            .expect("56 is a prefix length")
                            .trunc(),
                    }]
                }
            }
        }
    };
    nic.subnet_ipv6_cidr_blocks = subnets;
    Ok(())
}

fn shown<T: std::fmt::Display>(blocks: &[T]) -> String {
    blocks
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn outside_of(
    values: &Values<'_>,
    key: &str,
    ip: &Ipv4Addr,
    block_key: &str,
    block: &Ipv4Net,
) -> AemmError {
    let origin = |k: &str| {
        values
            .get(k)
            .map(|(_, o)| o.to_string())
            .unwrap_or_default()
    };
    AemmError(format!(
        "{PREFIX}{key} {ip} (from the {}) is not inside {PREFIX}{block_key} {block} (from the {}): give a block that holds it, or leave the block out to take the network the address implies",
        origin(key),
        origin(block_key)
    ))
}

/// AEMM's default block under `key`.
fn default_block<T: FromStr>(key: &str) -> Option<T> {
    defaults::METADATA_VALUES
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// The blocks given under any of `keys` (lists separated by spaces, commas or new lines), in
/// order and without repeats.
fn given_blocks<T: FromStr + PartialEq + Copy>(
    values: &Values<'_>,
    keys: &[&str],
) -> Result<Vec<(T, String)>, AemmError> {
    let mut blocks: Vec<(T, String)> = Vec::new();
    for key in keys {
        let Some((text, origin)) = values.given(key) else {
            continue;
        };
        for item in split(text) {
            let block = parse_block::<T>(key, item, origin)?;
            if !blocks.iter().any(|(b, _)| *b == block) {
                blocks.push((block, (*key).to_owned()));
            }
        }
    }
    Ok(blocks)
}

fn parse_block<T: FromStr>(key: &str, text: &str, origin: &Origin) -> Result<T, AemmError> {
    text.trim().parse().map_err(|_| {
        invalid(
            &format!("{PREFIX}{key}"),
            text,
            origin,
            "a CIDR block such as 10.0.0.0/24 (or 2001:db8::/64)",
        )
    })
}

fn parse_one<T: FromStr>(
    values: &Values<'_>,
    key: &str,
    expected: &str,
) -> Result<Option<T>, AemmError> {
    match values.get(key) {
        None | Some(("", _)) => Ok(None),
        Some((text, origin)) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| invalid(&format!("{PREFIX}{key}"), text, origin, expected)),
    }
}

fn parse_list<T: FromStr>(
    values: &Values<'_>,
    key: &str,
    expected: &str,
) -> Result<Vec<T>, AemmError> {
    let Some((text, origin)) = values.get(key) else {
        return Ok(Vec::new());
    };
    split(text)
        .map(|item| {
            item.parse()
                .map_err(|_| invalid(&format!("{PREFIX}{key}"), text, origin, expected))
        })
        .collect()
}

/// The items of a list value, as IMDS lists them (one a line) or separated by spaces or commas.
fn split(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|item| !item.is_empty())
}

fn list(values: &Values<'_>, key: &str) -> Vec<String> {
    values
        .get(key)
        .map(|(text, _)| split(text).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn number<T: FromStr>(values: &Values<'_>, key: &str) -> Result<Option<T>, AemmError> {
    match values.get(key) {
        None | Some(("", _)) => Ok(None),
        Some((text, origin)) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| invalid(&format!("{PREFIX}{key}"), text, origin, "a whole number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn built(json: &str) -> Result<InstanceConfig, AemmError> {
        let settings = Settings::from_file_text(Path::new("aemm.json"), json)?;
        let base = crate::app::config::Config::load(None).unwrap().instance;
        build(&Values::of(&settings), base)
    }

    #[test]
    fn without_values_the_instance_is_aemms_default() {
        let c = built("{}").unwrap();
        assert_eq!(c.instance_id, "i-1234567890abcdef0");
        assert_eq!(c.instance_type, "m4.xlarge");
        assert_eq!(c.account_id, "896453262835");
        assert_eq!(c.iam.role.as_deref(), Some("baskinc-role"));
        assert_eq!(
            c.iam.instance_profile_id.as_deref(),
            Some("AIPA5BOGHHXZELSK34VU4")
        );
        let nic = &c.network_interfaces[0];
        assert_eq!(
            nic.private_ipv4s,
            ["172.16.34.43".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(nic.subnet_ipv4_cidr_block.to_string(), "172.16.34.0/24");
        assert_eq!(shown(&nic.vpc_ipv4_cidr_blocks), "172.16.0.0/16");
        assert_eq!(shown(&nic.subnet_ipv6_cidr_blocks), "2001:db8::/32");
        assert_eq!(c.tags["Name"], "test-instance");
        assert_eq!(c.public_keys[0].name, "test");
    }

    #[test]
    fn an_address_outside_the_defaults_takes_the_network_it_implies() {
        let c = built(r#"{"metadata": {"values": {"local-ipv4": "10.1.2.3"}}}"#).unwrap();
        let nic = &c.network_interfaces[0];
        assert_eq!(nic.private_ipv4s[0].to_string(), "10.1.2.3");
        assert_eq!(nic.subnet_ipv4_cidr_block.to_string(), "10.1.2.0/24");
        assert_eq!(shown(&nic.vpc_ipv4_cidr_blocks), "10.1.0.0/16");
        // AEMM's own network holds an address inside it.
        let c = built(r#"{"metadata": {"values": {"local-ipv4": "192.0.2.10"}}}"#).unwrap();
        assert_eq!(
            c.network_interfaces[0].subnet_ipv4_cidr_block.to_string(),
            "192.0.2.0/24"
        );
    }

    #[test]
    fn given_network_blocks_are_honoured_and_must_hold_the_address() {
        let c = built(
            r#"{"metadata": {"values": {"local-ipv4": "10.8.3.4",
                "mac-subnet-ipv4-cidr-block": "10.8.0.0/20", "mac-vpc-ipv4-cidr-blocks": "10.8.0.0/16"}}}"#,
        )
        .unwrap();
        let nic = &c.network_interfaces[0];
        assert_eq!(nic.subnet_ipv4_cidr_block.to_string(), "10.8.0.0/20");
        assert_eq!(shown(&nic.vpc_ipv4_cidr_blocks), "10.8.0.0/16");
        let err = built(
            r#"{"metadata": {"values": {"local-ipv4": "10.9.3.4", "mac-subnet-ipv4-cidr-block": "10.8.0.0/20"}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("metadata.values.local-ipv4 10.9.3.4")
                && err.contains("mac-subnet-ipv4-cidr-block 10.8.0.0/20"),
            "{err}"
        );
        let err = built(
            r#"{"metadata": {"values": {"mac-subnet-ipv4-cidr-block": "172.16.34.0/24", "mac-vpc-ipv4-cidr-block": "10.0.0.0/16"}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("is not inside metadata.values.mac-vpc"),
            "{err}"
        );
    }

    #[test]
    fn another_zone_gets_its_own_zone_id_and_region() {
        let c = built(r#"{"metadata": {"values": {"placement-availability-zone": "eu-west-1b"}}}"#)
            .unwrap();
        assert_eq!(c.placement.availability_zone_id, "euw1-az2");
        assert_eq!(c.placement.region, None);
    }

    #[test]
    fn another_role_gets_its_own_profile_and_a_contradicting_arn_is_refused() {
        let c =
            built(r#"{"metadata": {"values": {"iam-security-credentials-role": "web"}}}"#).unwrap();
        assert_eq!(c.iam.role.as_deref(), Some("web"));
        assert_eq!(c.iam.instance_profile_id, None, "derived for the new role");
        let c = built(
            r#"{"metadata": {"values": {"iam-info": {"InstanceProfileArn": "arn:aws:iam::111122223333:instance-profile/ci"}}}}"#,
        )
        .unwrap();
        assert_eq!(
            (c.account_id.as_str(), c.iam.role.as_deref()),
            ("111122223333", Some("ci"))
        );
        let err = built(
            r#"{"metadata": {"values": {"iam-security-credentials-role": "web",
                "iam-info": {"InstanceProfileArn": "arn:aws:iam::111122223333:instance-profile/ci"}}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("iam-security-credentials-role \"web\""),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_aemm_key_and_where_it_came_from() {
        let err = built(r#"{"metadata": {"values": {"mac": "FOO"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("metadata.values.mac \"FOO\" (from the config file aemm.json)"),
            "{err}"
        );
        let err = built(r#"{"metadata": {"values": {"mac": "0e:00:00:00:00:01", "mac-mac": "0e:00:00:00:00:02"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("name the same value"), "{err}");
    }
}

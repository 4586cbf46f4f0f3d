//! The instance model: what one EC2 instance looks like, validated and with its derived values
//! (region, hostnames, partition) computed once so that every place that shows them agrees.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use bytes::Bytes;
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::fleet::options::MetadataOptions;

/// Largest user data EC2 accepts (16 KiB, before base64).
pub const MAX_USER_DATA_BYTES: usize = 16 * 1024;

/// An instance as written in a config file (`[instance]`); see `imds print-config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// `i-` followed by 17 (or 8) lower-case hex digits.
    pub instance_id: String,
    /// `r-` followed by 17 (or 8) hex digits.
    pub reservation_id: String,
    /// The 12-digit AWS account that owns the instance.
    pub account_id: String,
    /// The AMI the instance was launched from.
    pub ami_id: String,
    /// Launch index within the reservation.
    #[serde(default)]
    pub ami_launch_index: u32,
    /// `(unknown)` for EBS-backed AMIs.
    #[serde(default = "default_manifest_path")]
    pub ami_manifest_path: String,
    /// AMIs this one was rebundled from (rare).
    #[serde(default)]
    pub ancestor_ami_ids: Vec<String>,
    /// For example `t3.medium`.
    pub instance_type: String,
    /// `x86_64` or `arm64` (identity document).
    pub architecture: String,
    /// `on-demand` or `spot`.
    #[serde(default = "default_life_cycle")]
    pub instance_life_cycle: String,
    /// Paravirtual kernel (absent on HVM instances).
    pub kernel_id: Option<String>,
    /// Paravirtual ramdisk (absent on HVM instances).
    pub ramdisk_id: Option<String>,
    /// Marketplace product codes.
    #[serde(default)]
    pub product_codes: Vec<String>,
    /// Virtualisation profile, `default-hvm`.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Hypervisor, `nitro` or `xen`.
    pub system: Option<String>,
    /// Launch time: the identity document's `pendingTime`.
    #[serde(with = "time::serde::rfc3339")]
    pub pending_time: OffsetDateTime,
    /// Whether hibernation is configured.
    #[serde(default)]
    pub hibernation_configured: bool,
    /// User data as text; empty means none (404).
    #[serde(default)]
    pub user_data: String,
    /// Device name to mapping, e.g. `ami = "/dev/xvda"`, `root = "/dev/xvda"`, `ebs1 = "sdb"`.
    #[serde(default)]
    pub block_device_mapping: BTreeMap<String, String>,
    /// Instance tags (shown under `tags/instance/` when `instance_metadata_tags` is enabled).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Key pairs, `public-keys/N=name`.
    #[serde(default)]
    pub public_keys: Vec<PublicKeyConfig>,
    /// Availability zone and placement group.
    pub placement: PlacementConfig,
    /// Network interfaces; the first is the primary (device 0).
    pub network_interfaces: Vec<InterfaceConfig>,
    /// The instance profile; without `role` the instance has none.
    #[serde(default)]
    pub iam: IamConfig,
    /// How the metadata service answers (EC2's `MetadataOptions`).
    #[serde(default)]
    pub metadata_options: MetadataOptions,
    /// What EC2 announces: spot interruption, rebalance, maintenance, lifecycle states.
    #[serde(default)]
    pub events: crate::fleet::events::EventsConfig,
    /// Faults the guest API injects (latency, statuses, resets, silence).
    #[serde(default)]
    pub faults: Vec<crate::fleet::faults::FaultConfig>,
    /// Its request budget and connection cap (absent keys: the server-wide defaults).
    #[serde(
        default,
        skip_serializing_if = "crate::fleet::throttle::ThrottleConfig::is_unset"
    )]
    pub throttle: crate::fleet::throttle::ThrottleConfig,
}

fn default_manifest_path() -> String {
    "(unknown)".into()
}
fn default_life_cycle() -> String {
    "on-demand".into()
}
fn default_profile() -> String {
    "default-hvm".into()
}

/// One key pair as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyConfig {
    /// The key pair's name.
    pub name: String,
    /// The public key in OpenSSH format.
    pub openssh_key: String,
}

/// Placement as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementConfig {
    /// For example `us-east-1a`.
    pub availability_zone: String,
    /// For example `use1-az4`.
    pub availability_zone_id: String,
    /// Derived from the zone (`us-east-1a` → `us-east-1`) when omitted.
    pub region: Option<String>,
    /// Placement group.
    pub group_name: Option<String>,
    /// Partition in a partition placement group.
    pub partition_number: Option<u32>,
    /// Dedicated host.
    pub host_id: Option<String>,
}

/// One network interface as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Lower-case MAC address.
    pub mac: String,
    /// `eni-...`.
    pub interface_id: String,
    /// Device index (0 for the primary interface).
    #[serde(default)]
    pub device_number: u32,
    /// Network card index.
    #[serde(default)]
    pub network_card_index: u32,
    /// `subnet-...`.
    pub subnet_id: String,
    /// The subnet's IPv4 CIDR; private addresses must lie inside it.
    pub subnet_ipv4_cidr_block: Ipv4Net,
    /// The subnet's IPv6 CIDRs; IPv6 addresses must lie inside one.
    #[serde(default)]
    pub subnet_ipv6_cidr_blocks: Vec<Ipv6Net>,
    /// `vpc-...`.
    pub vpc_id: String,
    /// The VPC's IPv4 CIDRs; the first is the primary.
    pub vpc_ipv4_cidr_blocks: Vec<Ipv4Net>,
    /// The VPC's IPv6 CIDRs.
    #[serde(default)]
    pub vpc_ipv6_cidr_blocks: Vec<Ipv6Net>,
    /// Private IPv4 addresses; the first is the primary.
    pub private_ipv4s: Vec<Ipv4Addr>,
    /// Public IPv4 address of the primary private address; omit for none.
    pub public_ipv4: Option<Ipv4Addr>,
    /// IPv6 addresses.
    #[serde(default)]
    pub ipv6s: Vec<Ipv6Addr>,
    /// Security groups, each `{ name = "...", id = "sg-..." }`.
    pub security_groups: Vec<SecurityGroup>,
}

/// A security group attached to an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroup {
    /// Group name.
    pub name: String,
    /// `sg-...`.
    pub id: String,
}

/// The instance profile as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IamConfig {
    /// Role name; the instance profile has the same name. Absent: no instance profile.
    pub role: Option<String>,
    /// `AIPA...`; derived from the role name when omitted.
    pub instance_profile_id: Option<String>,
    /// Lifetime of each set of role credentials, in seconds (900..=43200).
    #[serde(default = "default_credential_lifetime")]
    pub credential_lifetime_seconds: u64,
    /// Where role credentials come from.
    #[serde(default)]
    pub credentials: CredentialSource,
    /// `sts`: the role to assume (`arn:aws:iam::ACCOUNT:role/NAME`).
    pub role_arn: Option<String>,
    /// `sts`: the external id the role's trust policy asks for.
    pub external_id: Option<String>,
    /// `sts`: the role session name (default: the instance id, as EC2 names it).
    pub session_name: Option<String>,
    /// `sts`: the session duration, in seconds (1800..=43200, default 3600).
    pub duration_seconds: Option<u64>,
    /// `sts`: the region whose STS endpoint is called (default: the instance's region).
    pub sts_region: Option<String>,
    /// `sts`: the shared config/credentials profile holding the base credentials (default: the
    /// `AWS_*` environment variables, then `AWS_PROFILE` or `default`).
    pub base_profile: Option<String>,
    /// `sts`: read the base credentials from this credentials file only (profile `base_profile`,
    /// default `default`) instead of the environment and `~/.aws`.
    pub base_credentials_file: Option<std::path::PathBuf>,
}

/// Where an instance's role credentials come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialSource {
    /// Made up by imds: realistic, rotating, accepted by no AWS service.
    #[default]
    Generated,
    /// Real credentials from STS `AssumeRole` of `role_arn`.
    Sts,
}

fn default_credential_lifetime() -> u64 {
    6 * 3600
}

impl Default for IamConfig {
    fn default() -> Self {
        IamConfig {
            role: None,
            instance_profile_id: None,
            credential_lifetime_seconds: default_credential_lifetime(),
            credentials: CredentialSource::Generated,
            role_arn: None,
            external_id: None,
            session_name: None,
            duration_seconds: None,
            sts_region: None,
            base_profile: None,
            base_credentials_file: None,
        }
    }
}

/// A value in the instance config that cannot describe a real instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instance.{key}: {reason}")]
pub struct InstanceError {
    /// Dotted key under `instance`, e.g. `network_interfaces[0].mac`.
    pub key: String,
    /// Why the value is refused.
    pub reason: String,
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> InstanceError {
    InstanceError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A validated instance with its derived values.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The configuration it was built from (all given values, unchanged).
    pub config: InstanceConfig,
    /// Region (given or derived from the zone).
    pub region: String,
    /// `aws`, `aws-cn` or `aws-us-gov`, from the region.
    pub partition: &'static str,
    /// `amazonaws.com` or `amazonaws.com.cn`, from the region.
    pub services_domain: &'static str,
    /// The network interfaces with their derived hostnames.
    pub interfaces: Vec<Interface>,
    /// The instance profile, if any.
    pub iam: Option<IamProfile>,
    /// User data bytes, if any.
    pub user_data: Option<Bytes>,
}

/// A validated network interface with derived hostnames.
#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    /// As configured.
    pub config: InterfaceConfig,
    /// `ip-10-0-0-74.ec2.internal` style.
    pub local_hostname: String,
    /// `ec2-3-91-204-17.compute-1.amazonaws.com` style, when a public address exists.
    pub public_hostname: Option<String>,
}

/// The instance profile and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamProfile {
    /// The role (and instance profile) name.
    pub role: String,
    /// `arn:aws:iam::ACCOUNT:instance-profile/ROLE`.
    pub instance_profile_arn: String,
    /// `AIPA...`.
    pub instance_profile_id: String,
    /// Lifetime of each set of credentials.
    pub credential_lifetime: Duration,
    /// Real credentials from STS, or `None` for generated ones.
    pub sts: Option<StsRole>,
}

/// A role whose credentials come from STS `AssumeRole`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsRole {
    /// The role assumed.
    pub role_arn: String,
    /// The account in `role_arn`.
    pub account_id: String,
    /// `ExternalId`, when the trust policy asks for one.
    pub external_id: Option<String>,
    /// `RoleSessionName`.
    pub session_name: String,
    /// `DurationSeconds`.
    pub duration: Duration,
    /// The region of the STS endpoint.
    pub region: String,
    /// The profile with the base credentials; `None`: environment, then the default chain.
    pub base_profile: Option<String>,
    /// The only credentials file to read them from, when given.
    pub base_credentials_file: Option<std::path::PathBuf>,
}

impl Instance {
    /// Validates `config` and computes the derived values.
    pub fn new(config: InstanceConfig) -> Result<Instance, InstanceError> {
        check_id("instance_id", &config.instance_id, "i-")?;
        check_id("reservation_id", &config.reservation_id, "r-")?;
        check_id("ami_id", &config.ami_id, "ami-")?;
        for (i, ami) in config.ancestor_ami_ids.iter().enumerate() {
            check_id(&format!("ancestor_ami_ids[{i}]"), ami, "ami-")?;
        }
        if let Some(kernel) = &config.kernel_id {
            check_id("kernel_id", kernel, "aki-")?;
        }
        if let Some(ramdisk) = &config.ramdisk_id {
            check_id("ramdisk_id", ramdisk, "ari-")?;
        }
        if config.account_id.len() != 12 || !config.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("account_id", "must be 12 digits"));
        }
        check_token("instance_type", &config.instance_type)?;
        for (i, fault) in config.faults.iter().enumerate() {
            fault
                .validate()
                .map_err(|e| invalid(format!("faults[{i}]"), e.to_string()))?;
        }
        if !matches!(config.architecture.as_str(), "x86_64" | "arm64" | "i386") {
            return Err(invalid("architecture", "must be x86_64, arm64 or i386"));
        }
        if !matches!(
            config.instance_life_cycle.as_str(),
            "on-demand" | "spot" | "scheduled"
        ) {
            return Err(invalid(
                "instance_life_cycle",
                "must be on-demand, spot or scheduled",
            ));
        }
        if config.user_data.len() > MAX_USER_DATA_BYTES {
            return Err(invalid(
                "user_data",
                format!(
                    "{} bytes is more than EC2's limit of 16384",
                    config.user_data.len()
                ),
            ));
        }
        let region = region_of(&config.placement)?;
        check_zone_id(&config.placement, &region)?;
        let (partition, services_domain) = partition_of(&region);
        let interfaces = check_interfaces(&config, &region)?;
        let iam = check_iam(&config)?;
        check_public_keys(&config.public_keys)?;
        if config.metadata_options.instance_metadata_tags.is_enabled() {
            for (key, value) in config.tags.iter().filter(|(k, _)| !is_system_tag(k)) {
                check_imds_tag(key, value)?;
            }
        }
        let user_data =
            (!config.user_data.is_empty()).then(|| Bytes::from(config.user_data.clone()));
        Ok(Instance {
            config,
            region,
            partition,
            services_domain,
            interfaces,
            iam,
            user_data,
        })
    }

    /// The instance id.
    pub fn id(&self) -> &str {
        &self.config.instance_id
    }

    /// The primary network interface (device 0).
    pub fn primary_interface(&self) -> &Interface {
        &self.interfaces[0]
    }

    /// The metadata options in force.
    pub fn options(&self) -> MetadataOptions {
        self.config.metadata_options
    }
}

fn check_id(key: &str, value: &str, prefix: &str) -> Result<(), InstanceError> {
    let hex = value.strip_prefix(prefix).unwrap_or("");
    let ok = matches!(hex.len(), 8 | 17)
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("`{value}` is not `{prefix}` followed by 8 or 17 lower-case hex digits"),
        ))
    }
}

fn check_token(key: &str, value: &str) -> Result<(), InstanceError> {
    let ok = !value.is_empty()
        && value.len() <= 255
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("`{value}` must be non-empty letters, digits, `-`, `.`, `_` or `:`"),
        ))
    }
}

fn region_of(placement: &PlacementConfig) -> Result<String, InstanceError> {
    let zone = &placement.availability_zone;
    let derived = zone
        .strip_suffix(|c: char| c.is_ascii_lowercase())
        .filter(|r| is_region_name(r));
    match (&placement.region, derived) {
        (Some(region), _) if !is_region_name(region) => Err(invalid(
            "placement.region",
            format!("`{region}` is not a region name like `us-east-1`"),
        )),
        (Some(region), _) if !zone.starts_with(region.as_str()) => Err(invalid(
            "placement.availability_zone",
            format!("`{zone}` is not a zone of region `{region}`"),
        )),
        (Some(region), _) => Ok(region.clone()),
        (None, Some(region)) => Ok(region.to_owned()),
        (None, None) => Err(invalid(
            "placement.availability_zone",
            format!("`{zone}` is not a zone name like `us-east-1a` (for a Local Zone, also set placement.region)"),
        )),
    }
}

/// A zone id names its region the way EC2 abbreviates it (`use1-az4` is a zone of us-east-1,
/// Local Zone ids such as `usw2-lax1-az1` too): a zone id of another region contradicts the zone.
fn check_zone_id(placement: &PlacementConfig, region: &str) -> Result<(), InstanceError> {
    let id = &placement.availability_zone_id;
    let prefix = zone_id_prefix(region);
    if id.starts_with(&format!("{prefix}-")) && id.len() > prefix.len() + 1 {
        return Ok(());
    }
    let example = derived_zone_id(&placement.availability_zone, region)
        .unwrap_or_else(|| format!("{prefix}-az1"));
    Err(invalid(
        "placement.availability_zone_id",
        format!(
            "`{id}` is not a zone id of {region} (the region of zone `{}`): zone ids there start with `{prefix}-`, e.g. `{example}`; or leave it out to derive it from the zone",
            placement.availability_zone
        ),
    ))
}

/// The region of a zone name (`us-east-1a` → `us-east-1`), when it is an ordinary zone's.
pub fn region_of_zone(zone: &str) -> Option<String> {
    zone.strip_suffix(|c: char| c.is_ascii_lowercase())
        .filter(|r| is_region_name(r))
        .map(str::to_owned)
}

/// A zone id for `zone` of `region` when none is given: the region's prefix and the zone
/// letter's place (`eu-west-1b` → `euw1-az2`). EC2 maps letters to ids per account; this
/// mapping is one such. `None` for zones that are not a region and a letter (Local Zones).
pub fn derived_zone_id(zone: &str, region: &str) -> Option<String> {
    let letter = zone.strip_prefix(region)?;
    let [letter] = letter.as_bytes() else {
        return None;
    };
    letter
        .is_ascii_lowercase()
        .then(|| format!("{}-az{}", zone_id_prefix(region), letter - b'a' + 1))
}

/// EC2's abbreviation of a region in its zone ids: `use1` for `us-east-1`, `apse2` for
/// `ap-southeast-2`, `usgw1` for `us-gov-west-1`.
pub fn zone_id_prefix(region: &str) -> String {
    let parts: Vec<&str> = region.split('-').collect();
    let Some((first, rest)) = parts.split_first() else {
        return region.to_owned();
    };
    let mut prefix = (*first).to_owned();
    for part in rest {
        let short = match *part {
            "northeast" => "ne",
            "southeast" => "se",
            "northwest" => "nw",
            "southwest" => "sw",
            other if other.chars().all(|c| c.is_ascii_digit()) => other,
            other => other.get(..1).unwrap_or_default(),
        };
        prefix.push_str(short);
    }
    prefix
}

/// `us-east-1`, `cn-north-1`, `us-gov-west-1`: letters, dashes, a final number.
fn is_region_name(name: &str) -> bool {
    let Some((words, number)) = name.rsplit_once('-') else {
        return false;
    };
    !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && words.split('-').count() >= 2
        && words
            .split('-')
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
}

fn partition_of(region: &str) -> (&'static str, &'static str) {
    if region.starts_with("cn-") {
        ("aws-cn", "amazonaws.com.cn")
    } else if region.starts_with("us-gov-") {
        ("aws-us-gov", "amazonaws.com")
    } else {
        ("aws", "amazonaws.com")
    }
}

/// The private DNS name EC2 gives an address: `ip-10-0-0-74.ec2.internal` in us-east-1,
/// `ip-10-0-0-74.eu-west-1.compute.internal` elsewhere.
pub fn private_hostname(ip: Ipv4Addr, region: &str) -> String {
    let dashed = ip.to_string().replace('.', "-");
    if region == "us-east-1" {
        format!("ip-{dashed}.ec2.internal")
    } else {
        format!("ip-{dashed}.{region}.compute.internal")
    }
}

/// The public DNS name EC2 gives an address: `ec2-3-91-204-17.compute-1.amazonaws.com` in
/// us-east-1, `ec2-3-91-204-17.eu-west-1.compute.amazonaws.com` elsewhere.
pub fn public_hostname(ip: Ipv4Addr, region: &str, domain: &str) -> String {
    let dashed = ip.to_string().replace('.', "-");
    if region == "us-east-1" {
        format!("ec2-{dashed}.compute-1.{domain}")
    } else {
        format!("ec2-{dashed}.{region}.compute.{domain}")
    }
}

fn check_interfaces(
    config: &InstanceConfig,
    region: &str,
) -> Result<Vec<Interface>, InstanceError> {
    if config.network_interfaces.is_empty() {
        return Err(invalid(
            "network_interfaces",
            "an instance needs at least one network interface",
        ));
    }
    let (_, domain) = partition_of(region);
    let mut macs = HashSet::new();
    let mut devices = HashSet::new();
    let mut interfaces = Vec::with_capacity(config.network_interfaces.len());
    for (i, nic) in config.network_interfaces.iter().enumerate() {
        let key = |field: &str| format!("network_interfaces[{i}].{field}");
        if !is_mac(&nic.mac) {
            return Err(invalid(
                key("mac"),
                format!(
                    "`{}` is not a lower-case MAC like `0e:8c:1f:6b:2d:35`",
                    nic.mac
                ),
            ));
        }
        if !macs.insert(nic.mac.as_str()) {
            return Err(invalid(
                key("mac"),
                format!("`{}` is used by two interfaces", nic.mac),
            ));
        }
        if !devices.insert(nic.device_number) {
            return Err(invalid(
                key("device_number"),
                format!("device {} is used by two interfaces", nic.device_number),
            ));
        }
        if i == 0 && nic.device_number != 0 {
            return Err(invalid(
                key("device_number"),
                "the first (primary) interface must be device 0",
            ));
        }
        check_id(&key("interface_id"), &nic.interface_id, "eni-")?;
        check_id(&key("subnet_id"), &nic.subnet_id, "subnet-")?;
        check_id(&key("vpc_id"), &nic.vpc_id, "vpc-")?;
        if nic.vpc_ipv4_cidr_blocks.is_empty() {
            return Err(invalid(
                key("vpc_ipv4_cidr_blocks"),
                "a VPC has at least one IPv4 CIDR block",
            ));
        }
        if !nic
            .vpc_ipv4_cidr_blocks
            .iter()
            .any(|vpc| vpc.contains(&nic.subnet_ipv4_cidr_block))
        {
            return Err(invalid(
                key("subnet_ipv4_cidr_block"),
                format!(
                    "{} is not inside any of the VPC's CIDR blocks",
                    nic.subnet_ipv4_cidr_block
                ),
            ));
        }
        let Some(primary) = nic.private_ipv4s.first() else {
            return Err(invalid(
                key("private_ipv4s"),
                "an interface has at least one private IPv4 address",
            ));
        };
        for ip in &nic.private_ipv4s {
            if !nic.subnet_ipv4_cidr_block.contains(ip) {
                return Err(invalid(
                    key("private_ipv4s"),
                    format!(
                        "{ip} is not inside the subnet {}",
                        nic.subnet_ipv4_cidr_block
                    ),
                ));
            }
        }
        for ip in &nic.ipv6s {
            if !nic
                .subnet_ipv6_cidr_blocks
                .iter()
                .any(|net| net.contains(ip))
            {
                return Err(invalid(
                    key("ipv6s"),
                    format!("{ip} is not inside any of the subnet's IPv6 CIDR blocks"),
                ));
            }
        }
        for subnet in &nic.subnet_ipv6_cidr_blocks {
            if !nic
                .vpc_ipv6_cidr_blocks
                .iter()
                .any(|vpc| vpc.contains(subnet))
            {
                return Err(invalid(
                    key("subnet_ipv6_cidr_blocks"),
                    format!("{subnet} is not inside any of the VPC's IPv6 CIDR blocks"),
                ));
            }
        }
        if nic.security_groups.is_empty() {
            return Err(invalid(
                key("security_groups"),
                "an interface has at least one security group",
            ));
        }
        for (g, group) in nic.security_groups.iter().enumerate() {
            check_id(&key(&format!("security_groups[{g}].id")), &group.id, "sg-")?;
            if group.name.is_empty() || group.name.contains('\n') {
                return Err(invalid(
                    key(&format!("security_groups[{g}].name")),
                    "must be a non-empty single line",
                ));
            }
        }
        interfaces.push(Interface {
            config: nic.clone(),
            local_hostname: private_hostname(*primary, region),
            public_hostname: nic
                .public_ipv4
                .map(|ip| public_hostname(ip, region, domain)),
        });
    }
    Ok(interfaces)
}

fn is_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts.iter().all(|p| {
            p.len() == 2
                && p.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

fn check_iam(config: &InstanceConfig) -> Result<Option<IamProfile>, InstanceError> {
    let iam = &config.iam;
    let lifetime = iam.credential_lifetime_seconds;
    if !(900..=43_200).contains(&lifetime) {
        return Err(invalid(
            "iam.credential_lifetime_seconds",
            format!("{lifetime} is outside 900..=43200 (15 minutes to 12 hours, as STS allows)"),
        ));
    }
    let sts = match iam.credentials {
        CredentialSource::Generated => None,
        CredentialSource::Sts => Some(check_sts(config)?),
    };
    let role = match (&iam.role, &sts) {
        (Some(role), Some(sts)) if !sts.role_arn.ends_with(&format!("/{role}")) => {
            return Err(invalid(
                "iam.role",
                format!(
                    "`{role}` is not the role of role_arn `{}`; leave it out",
                    sts.role_arn
                ),
            ))
        }
        (Some(role), _) => role.as_str(),
        (None, Some(sts)) => sts.role_arn.rsplit('/').next().unwrap_or_default(),
        (None, None) => return Ok(None),
    };
    let valid_name = !role.is_empty()
        && role.len() <= 64
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if !valid_name {
        return Err(invalid(
            "iam.role",
            format!("`{role}` is not an IAM role name (1-64 of letters, digits, +=,.@_-)"),
        ));
    }
    let instance_profile_id = match &iam.instance_profile_id {
        Some(id) => {
            let ok = id.len() == 21
                && id.starts_with("AIPA")
                && id
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if !ok {
                return Err(invalid(
                    "iam.instance_profile_id",
                    format!("`{id}` is not `AIPA` + 17 upper-case letters or digits"),
                ));
            }
            id.clone()
        }
        None => derived_profile_id(&config.account_id, role),
    };
    Ok(Some(IamProfile {
        role: role.to_owned(),
        instance_profile_arn: format!(
            "arn:{}:iam::{}:instance-profile/{role}",
            partition_of(&region_of(&config.placement)?).0,
            config.account_id
        ),
        instance_profile_id,
        credential_lifetime: Duration::from_secs(lifetime),
        sts,
    }))
}

/// Validates the `credentials = "sts"` settings.
fn check_sts(config: &InstanceConfig) -> Result<StsRole, InstanceError> {
    let iam = &config.iam;
    let Some(role_arn) = &iam.role_arn else {
        return Err(invalid(
            "iam.role_arn",
            "is needed with credentials = \"sts\" (arn:aws:iam::ACCOUNT:role/NAME)",
        ));
    };
    let parts: Vec<&str> = role_arn.splitn(6, ':').collect();
    let account_id = match parts.as_slice() {
        ["arn", partition, "iam", "", account, resource]
            if !partition.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource
                    .strip_prefix("role/")
                    .is_some_and(|r| !r.is_empty() && !r.ends_with('/') && r.len() <= 512) =>
        {
            (*account).to_owned()
        }
        _ => {
            return Err(invalid(
                "iam.role_arn",
                format!("`{role_arn}` is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
            ))
        }
    };
    let session_name = iam
        .session_name
        .clone()
        .unwrap_or_else(|| config.instance_id.clone());
    let session_ok = (2..=64).contains(&session_name.len())
        && session_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if !session_ok {
        return Err(invalid(
            "iam.session_name",
            format!(
                "`{session_name}` is not a role session name (2-64 of letters, digits, +=,.@_-)"
            ),
        ));
    }
    if let Some(external_id) = &iam.external_id {
        let ok = (2..=1224).contains(&external_id.len())
            && external_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@:/_-".contains(&b));
        if !ok {
            return Err(invalid(
                "iam.external_id",
                "must be 2-1224 of letters, digits, +=,.@:/_-",
            ));
        }
    }
    let duration = iam.duration_seconds.unwrap_or(3600);
    if !(1800..=43_200).contains(&duration) {
        return Err(invalid(
            "iam.duration_seconds",
            format!("{duration} is outside 1800..=43200: imds renews a session while it has 20 minutes left and never serves one with under 15, so sessions must last at least 30 minutes"),
        ));
    }
    Ok(StsRole {
        role_arn: role_arn.clone(),
        account_id,
        external_id: iam.external_id.clone(),
        session_name,
        duration: Duration::from_secs(duration),
        region: match &iam.sts_region {
            Some(region) => region.clone(),
            None => region_of(&config.placement)?,
        },
        base_profile: iam.base_profile.clone(),
        base_credentials_file: iam.base_credentials_file.clone(),
    })
}

/// A stable `AIPA` id for a role that has none configured.
fn derived_profile_id(account: &str, role: &str) -> String {
    use sha2::{Digest, Sha256};
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(format!("{account}/{role}"));
    let tail: String = digest
        .iter()
        .take(17)
        .map(|b| ALPHABET[(*b % 32) as usize] as char)
        .collect();
    format!("AIPA{tail}")
}

fn check_public_keys(keys: &[PublicKeyConfig]) -> Result<(), InstanceError> {
    for (i, key) in keys.iter().enumerate() {
        let name_ok = !key.name.is_empty() && !key.name.contains(['\n', '/']);
        if !name_ok {
            return Err(invalid(
                format!("public_keys[{i}].name"),
                "must be a non-empty single line without `/`",
            ));
        }
        let mut words = key.openssh_key.split_whitespace();
        let ok = matches!(words.next(), Some(kind) if kind.starts_with("ssh-") || kind.starts_with("ecdsa-"))
            && words.next().is_some()
            && !key.openssh_key.trim_end().contains('\n');
        if !ok {
            return Err(invalid(
                format!("public_keys[{i}].openssh_key"),
                "must be one OpenSSH public key line, e.g. `ssh-ed25519 AAAA... name`",
            ));
        }
    }
    Ok(())
}

/// Whether tag `key` is one of EC2's own (`aws:` in any case: `aws:ec2launchtemplate:id`,
/// ...), which IMDS does not show under `tags/instance/` and users cannot change.
pub fn is_system_tag(key: &str) -> bool {
    key.get(..4)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("aws:"))
}

/// Checks a tag against what IMDS can show: keys of `[a-zA-Z0-9+-=._:@]` up to 128 characters,
/// not `.`, `..` or `_index`; values up to 256 characters.
pub fn check_imds_tag(key: &str, value: &str) -> Result<(), InstanceError> {
    let charset_ok = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+-=._:@".contains(&b));
    if key.is_empty() || key.len() > 128 || !charset_ok || matches!(key, "." | ".." | "_index") {
        return Err(invalid(
            format!("tags.{key}"),
            "with instance_metadata_tags enabled, tag keys must be 1-128 of a-z A-Z 0-9 + - = . _ : @ and not `.`, `..` or `_index`",
        ));
    }
    if value.chars().count() > 256 {
        return Err(invalid(
            format!("tags.{key}"),
            "tag values are at most 256 characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_follow_the_region_rule() {
        let ip = Ipv4Addr::new(10, 0, 0, 74);
        assert_eq!(
            private_hostname(ip, "us-east-1"),
            "ip-10-0-0-74.ec2.internal"
        );
        assert_eq!(
            private_hostname(ip, "ap-northeast-1"),
            "ip-10-0-0-74.ap-northeast-1.compute.internal"
        );
        let public = Ipv4Addr::new(3, 91, 204, 17);
        assert_eq!(
            public_hostname(public, "us-east-1", "amazonaws.com"),
            "ec2-3-91-204-17.compute-1.amazonaws.com"
        );
        assert_eq!(
            public_hostname(public, "eu-west-1", "amazonaws.com"),
            "ec2-3-91-204-17.eu-west-1.compute.amazonaws.com"
        );
    }

    #[test]
    fn region_is_the_zone_without_its_letter() {
        let placement = |zone: &str, region: Option<&str>| PlacementConfig {
            availability_zone: zone.into(),
            availability_zone_id: "use1-az4".into(),
            region: region.map(Into::into),
            group_name: None,
            partition_number: None,
            host_id: None,
        };
        assert_eq!(
            region_of(&placement("us-east-1a", None)).unwrap(),
            "us-east-1"
        );
        assert_eq!(
            region_of(&placement("us-gov-west-1b", None)).unwrap(),
            "us-gov-west-1"
        );
        assert!(region_of(&placement("us-west-2-lax-1a", None)).is_err());
        assert_eq!(
            region_of(&placement("us-west-2-lax-1a", Some("us-west-2"))).unwrap(),
            "us-west-2"
        );
        assert!(region_of(&placement("eu-west-1a", Some("us-east-1"))).is_err());
        assert!(region_of(&placement("nowhere", None)).is_err());
    }

    #[test]
    fn a_zone_id_of_another_region_contradicts_the_zone() {
        let placement = |zone: &str, id: &str| PlacementConfig {
            availability_zone: zone.into(),
            availability_zone_id: id.into(),
            region: None,
            group_name: None,
            partition_number: None,
            host_id: None,
        };
        assert!(check_zone_id(&placement("us-east-1a", "use1-az4"), "us-east-1").is_ok());
        assert!(check_zone_id(&placement("eu-west-1b", "euw1-az2"), "eu-west-1").is_ok());
        let err = check_zone_id(&placement("eu-west-1a", "use1-az4"), "eu-west-1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`use1-az4` is not a zone id of eu-west-1") && err.contains("`euw1-az1`"),
            "{err}"
        );
        assert!(check_zone_id(&placement("us-east-1a", "use1-"), "us-east-1").is_err());
        assert_eq!(
            derived_zone_id("eu-west-1b", "eu-west-1").as_deref(),
            Some("euw1-az2")
        );
        assert_eq!(derived_zone_id("us-west-2-lax-1a", "us-west-2"), None);
        assert_eq!(
            region_of_zone("ap-southeast-2c").as_deref(),
            Some("ap-southeast-2")
        );
    }

    #[test]
    fn partitions_follow_the_region() {
        assert_eq!(partition_of("us-east-1"), ("aws", "amazonaws.com"));
        assert_eq!(partition_of("cn-north-1"), ("aws-cn", "amazonaws.com.cn"));
        assert_eq!(
            partition_of("us-gov-west-1"),
            ("aws-us-gov", "amazonaws.com")
        );
    }

    #[test]
    fn ids_need_their_prefix_and_hex() {
        assert!(check_id("k", "i-0123456789abcdef0", "i-").is_ok());
        assert!(check_id("k", "i-01234567", "i-").is_ok());
        assert!(check_id("k", "i-0123456789ABCDEF0", "i-").is_err());
        assert!(check_id("k", "r-0123456789abcdef0", "i-").is_err());
        assert!(check_id("k", "i-", "i-").is_err());
    }

    #[test]
    fn tags_that_imds_cannot_show_are_named() {
        assert!(check_imds_tag("Name", "web").is_ok());
        assert!(check_imds_tag("aws:x@y=z+1.2_3-4", "v").is_ok());
        for key in ["", ".", "..", "_index", "has space", "a/b"] {
            assert!(check_imds_tag(key, "v").is_err(), "{key:?}");
        }
        assert!(check_imds_tag("k", &"v".repeat(257)).is_err());
    }
}

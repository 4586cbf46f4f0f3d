//! The EC2 networking objects instances launch into, one registry per region: VPCs, subnets
//! with their address pools, security groups (names and ids, no rules) and imported key pairs.
//!
//! A fresh registry ([`Network::default_for`]) holds the region's **default VPC**, built around
//! the configured instance so it stays consistent: its VPC, subnet and security groups keep
//! their ids and CIDRs, its subnet is the default subnet of its zone, and every other zone of the
//! region gets a default subnet of the same size inside the VPC. Each VPC has a `default`
//! security group; the configured key pairs are imported.
//!
//! RunInstances takes addresses with [`Network::allocate_ipv4`] (and [`Network::allocate_ipv6`])
//! and gives them back with [`Network::release_ipv4`]; a subnet with addresses in use cannot be
//! deleted. The pools here record addresses for subnets and for other hosts; who holds an
//! address is owned by the fleet index ([`crate::fleet::state`]), which allocation consults
//! (`held`) and which refuses a second owner, so a pool that lags behind (a learned registry,
//! a reloaded file) never hands out an address a live instance holds. The registry's objects
//! are plain serde data, which the control API stores as one JSON value; the pools are not part
//! of it (the store keeps one row per address in use, so launches through different hosts write
//! different rows): [`Network::clear_pools`], [`Network::adopt_pools`] and
//! [`Network::mark_in_use`] rebuild them from those rows.

pub mod addresses;
mod default_vpc;
pub mod key_pair;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use self::addresses::{overlaps_v4, overlaps_v6, Block, Pool, PoolError};
pub use self::key_pair::KeyType;

/// Tags of a resource, key to value.
pub type Tags = BTreeMap<String, String>;

/// Smallest and largest IPv4 subnet EC2 creates (`/28` to `/16`).
const SUBNET_PREFIXES: std::ops::RangeInclusive<u8> = 16..=28;
/// The prefix of every IPv6 subnet CIDR EC2 creates.
const IPV6_SUBNET_PREFIX: u8 = 64;
/// Longest security group name and description EC2 accepts.
const MAX_GROUP_TEXT: usize = 255;
/// Longest key pair name EC2 accepts.
const MAX_KEY_NAME: usize = 255;

/// Why a networking request failed; each is one of EC2's error codes ([`NetworkError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// No VPC has this id.
    #[error("The vpc ID '{0}' does not exist")]
    VpcNotFound(String),
    /// There is no default VPC to use.
    #[error("No default VPC for this user")]
    NoDefaultVpc,
    /// No subnet has this id.
    #[error("The subnet ID '{0}' does not exist")]
    SubnetNotFound(String),
    /// A subnet CIDR of the wrong size, or outside its VPC.
    #[error("The CIDR '{0}' is invalid.")]
    SubnetRange(String),
    /// A subnet CIDR that overlaps another subnet of the VPC.
    #[error("The CIDR '{0}' conflicts with another subnet")]
    SubnetConflict(String),
    /// The subnet still has addresses in use.
    #[error("The subnet '{0}' has dependencies and cannot be deleted.")]
    SubnetInUse(String),
    /// Instances that are not terminated still use the security group.
    #[error("resource {0} has a dependent object")]
    GroupInUse(String),
    /// The zone has no default subnet.
    #[error("No default subnet for availability zone: '{0}'.")]
    NoDefaultSubnet(String),
    /// The zone is not one of the region's.
    #[error("Value ({0}) for parameter availabilityZone is invalid. Subnets can currently only be created in the following availability zones: {1}.")]
    UnknownZone(String, String),
    /// A security group of this name exists in the VPC.
    #[error("The security group '{0}' already exists for VPC '{1}'")]
    GroupDuplicate(String, String),
    /// No security group has this id (or name, in the default VPC).
    #[error("The security group '{0}' does not exist")]
    GroupNotFound(String),
    /// The `default` security group of a VPC.
    #[error("the specified group: \"{0}\" name: \"default\" cannot be deleted by a user")]
    DefaultGroup(String),
    /// A key pair of this name exists.
    #[error("The keypair '{0}' already exists.")]
    KeyPairDuplicate(String),
    /// No key pair has this name or id.
    #[error("The key pair '{0}' does not exist")]
    KeyPairNotFound(String),
    /// The public key cannot be imported.
    #[error("{0}")]
    KeyFormat(String),
    /// The address is taken.
    #[error("Address {0} is in use.")]
    AddressInUse(IpAddr),
    /// The subnet has no free address.
    #[error("There are not enough free addresses in subnet '{0}' to satisfy the requested number of instances.")]
    SubnetFull(String),
    /// Any other value EC2 refuses (a malformed CIDR, an address outside the subnet, ...).
    #[error("{0}")]
    InvalidParameterValue(String),
}

impl NetworkError {
    /// EC2's error code.
    pub fn code(&self) -> &'static str {
        match self {
            NetworkError::VpcNotFound(_) => "InvalidVpcID.NotFound",
            NetworkError::NoDefaultVpc => "VPCIdNotSpecified",
            NetworkError::SubnetNotFound(_) => "InvalidSubnetID.NotFound",
            NetworkError::SubnetRange(_) => "InvalidSubnet.Range",
            NetworkError::SubnetConflict(_) => "InvalidSubnet.Conflict",
            NetworkError::SubnetInUse(_) => "DependencyViolation",
            NetworkError::GroupInUse(_) => "DependencyViolation",
            NetworkError::NoDefaultSubnet(_) => "MissingInput",
            NetworkError::UnknownZone(..) => "InvalidParameterValue",
            NetworkError::GroupDuplicate(..) => "InvalidGroup.Duplicate",
            NetworkError::GroupNotFound(_) => "InvalidGroup.NotFound",
            NetworkError::DefaultGroup(_) => "CannotDelete",
            NetworkError::KeyPairDuplicate(_) => "InvalidKeyPair.Duplicate",
            NetworkError::KeyPairNotFound(_) => "InvalidKeyPair.NotFound",
            NetworkError::KeyFormat(_) => "InvalidKey.Format",
            NetworkError::AddressInUse(_) => "InvalidIPAddress.InUse",
            NetworkError::SubnetFull(_) => "InsufficientFreeAddressesInSubnet",
            NetworkError::InvalidParameterValue(_) => "InvalidParameterValue",
        }
    }
}

/// An availability zone of the region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    /// For example `us-east-1a`.
    pub name: String,
    /// For example `use1-az4`.
    pub id: String,
}

/// A VPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vpc {
    /// `vpc-...`.
    pub id: String,
    /// Its IPv4 CIDRs; the first is the primary.
    pub cidrs: Vec<Ipv4Net>,
    /// Its IPv6 CIDRs.
    #[serde(default)]
    pub ipv6_cidrs: Vec<Ipv6Net>,
    /// Whether it is the region's default VPC.
    pub is_default: bool,
    /// `dopt-...`.
    pub dhcp_options_id: String,
    /// Its tags.
    #[serde(default)]
    pub tags: Tags,
}

impl Vpc {
    /// The association id of CIDR number `index` (`vpc-cidr-assoc-...`).
    pub fn cidr_association_id(&self, index: usize) -> String {
        derived_id("vpc-cidr-assoc-", &format!("{}/{index}", self.id))
    }

    /// The association id of IPv6 CIDR number `index`.
    pub fn ipv6_association_id(&self, index: usize) -> String {
        derived_id("vpc-cidr-assoc-", &format!("{}/ipv6/{index}", self.id))
    }
}

/// A subnet and the addresses in use in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// `subnet-...`.
    pub id: String,
    /// Its VPC.
    pub vpc_id: String,
    /// Its IPv4 CIDR.
    pub cidr: Ipv4Net,
    /// Its IPv6 CIDR, if it has one.
    pub ipv6_cidr: Option<Ipv6Net>,
    /// For example `us-east-1a`.
    pub availability_zone: String,
    /// For example `use1-az4`.
    pub availability_zone_id: String,
    /// Whether it is the default subnet of its zone.
    pub default_for_az: bool,
    /// Whether instances get a public IPv4 address by default.
    pub map_public_ip_on_launch: bool,
    /// Its tags.
    #[serde(default)]
    pub tags: Tags,
    /// IPv4 addresses in use (never stored with the registry: the store keeps one row per
    /// address; an older imds's stored pools are read once, when the store migrates them).
    #[serde(default, skip_serializing)]
    ipv4: Pool<Ipv4Addr>,
    /// IPv6 addresses in use (likewise).
    #[serde(default, skip_serializing)]
    ipv6: Pool<Ipv6Addr>,
}

impl Subnet {
    /// IPv4 addresses still free for instances (`availableIpAddressCount`).
    pub fn available_ip_address_count(&self) -> u64 {
        let usable = Block::v4(self.cidr).usable_count() as u64;
        usable.saturating_sub(self.ipv4.len() as u64)
    }

    /// Addresses (IPv4 and IPv6) in use: instances depend on the subnet while this is not zero.
    pub fn addresses_in_use(&self) -> usize {
        self.ipv4.len() + self.ipv6.len()
    }

    /// Whether `ip` is in use in this subnet.
    pub fn is_in_use(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => self.ipv4.is_in_use(ip),
            IpAddr::V6(ip) => self.ipv6.is_in_use(ip),
        }
    }

    /// The association id of its IPv6 CIDR (`subnet-cidr-assoc-...`).
    pub fn ipv6_association_id(&self) -> String {
        derived_id("subnet-cidr-assoc-", &self.id)
    }
}

/// A security group (names and ids; imds keeps no rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    /// `sg-...`.
    pub id: String,
    /// Its name, unique in its VPC.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its VPC.
    pub vpc_id: String,
    /// Its tags.
    #[serde(default)]
    pub tags: Tags,
}

impl SecurityGroup {
    /// Whether it is its VPC's `default` group, which cannot be deleted.
    pub fn is_default(&self) -> bool {
        self.name == "default"
    }
}

/// An imported key pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPair {
    /// `key-...`.
    pub id: String,
    /// Its name, unique in the region.
    pub name: String,
    /// `rsa` or `ed25519`.
    pub key_type: KeyType,
    /// EC2's fingerprint of an imported key.
    pub fingerprint: String,
    /// The OpenSSH public key line, served at `public-keys/N/openssh-key`.
    pub public_key: String,
    /// When it was imported.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Its tags.
    #[serde(default)]
    pub tags: Tags,
}

/// What `CreateSubnet` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewSubnet<'a> {
    /// `VpcId`.
    pub vpc_id: &'a str,
    /// `CidrBlock`, as given.
    pub cidr: &'a str,
    /// `Ipv6CidrBlock`, as given.
    pub ipv6_cidr: Option<&'a str>,
    /// `AvailabilityZone`.
    pub availability_zone: Option<&'a str>,
    /// `AvailabilityZoneId`.
    pub availability_zone_id: Option<&'a str>,
    /// Tags from `TagSpecification`.
    pub tags: Tags,
}

/// The networking registry of one region and account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// For example `us-east-1`.
    pub region: String,
    /// `aws`, `aws-cn` or `aws-us-gov`.
    pub partition: String,
    /// The account owning everything here.
    pub owner_id: String,
    zones: Vec<Zone>,
    vpcs: BTreeMap<String, Vpc>,
    subnets: BTreeMap<String, Subnet>,
    security_groups: BTreeMap<String, SecurityGroup>,
    /// By name.
    key_pairs: BTreeMap<String, KeyPair>,
    /// Where this process starts looking for free addresses in each subnet, as a number the
    /// subnet's size divides (0: at its first usable address). Processes sharing a store start
    /// at different places, so launches through different hosts rarely want the same address.
    #[serde(skip)]
    spread: u64,
}

impl Network {
    /// The availability zones of the region.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// Every VPC, by id.
    pub fn vpcs(&self) -> impl Iterator<Item = &Vpc> {
        self.vpcs.values()
    }

    /// Every subnet, by id.
    pub fn subnets(&self) -> impl Iterator<Item = &Subnet> {
        self.subnets.values()
    }

    /// Every security group, by id.
    pub fn security_groups(&self) -> impl Iterator<Item = &SecurityGroup> {
        self.security_groups.values()
    }

    /// Every key pair, by name.
    pub fn key_pairs(&self) -> impl Iterator<Item = &KeyPair> {
        self.key_pairs.values()
    }

    /// The VPC `id`.
    pub fn vpc(&self, id: &str) -> Result<&Vpc, NetworkError> {
        self.vpcs
            .get(id)
            .ok_or_else(|| NetworkError::VpcNotFound(id.to_owned()))
    }

    /// The region's default VPC.
    pub fn default_vpc(&self) -> Result<&Vpc, NetworkError> {
        self.vpcs
            .values()
            .find(|vpc| vpc.is_default)
            .ok_or(NetworkError::NoDefaultVpc)
    }

    /// The subnet `id`.
    pub fn subnet(&self, id: &str) -> Result<&Subnet, NetworkError> {
        self.subnets
            .get(id)
            .ok_or_else(|| NetworkError::SubnetNotFound(id.to_owned()))
    }

    /// The default subnet of zone `az` (by name, e.g. `us-east-1b`), or of the region's first
    /// zone that has one when `az` is `None`, as RunInstances without `SubnetId` picks.
    pub fn default_subnet(&self, az: Option<&str>) -> Result<&Subnet, NetworkError> {
        let vpc = self.default_vpc()?;
        let defaults = |zone: &str| {
            self.subnets
                .values()
                .find(|s| s.vpc_id == vpc.id && s.default_for_az && s.availability_zone == zone)
        };
        match az {
            Some(zone) => {
                self.zone(Some(zone), None)?;
                defaults(zone).ok_or_else(|| NetworkError::NoDefaultSubnet(zone.to_owned()))
            }
            None => self
                .zones
                .iter()
                .find_map(|zone| defaults(&zone.name))
                .ok_or_else(|| NetworkError::NoDefaultSubnet(self.region.clone())),
        }
    }

    /// The security group `id`.
    pub fn security_group(&self, id: &str) -> Result<&SecurityGroup, NetworkError> {
        self.security_groups
            .get(id)
            .ok_or_else(|| NetworkError::GroupNotFound(id.to_owned()))
    }

    /// The security group called `name` in VPC `vpc_id` (RunInstances' `SecurityGroup.N` names
    /// groups of the default VPC).
    pub fn security_group_named(
        &self,
        vpc_id: &str,
        name: &str,
    ) -> Result<&SecurityGroup, NetworkError> {
        self.security_groups
            .values()
            .find(|g| g.vpc_id == vpc_id && g.name == name)
            .ok_or_else(|| NetworkError::GroupNotFound(name.to_owned()))
    }

    /// The key pair called `name`.
    pub fn key_pair(&self, name: &str) -> Result<&KeyPair, NetworkError> {
        self.key_pairs
            .get(name)
            .ok_or_else(|| NetworkError::KeyPairNotFound(name.to_owned()))
    }

    /// The key pair with id `id`.
    pub fn key_pair_by_id(&self, id: &str) -> Result<&KeyPair, NetworkError> {
        self.key_pairs
            .values()
            .find(|k| k.id == id)
            .ok_or_else(|| NetworkError::KeyPairNotFound(id.to_owned()))
    }

    /// `CreateSubnet`: a `/16`..`/28` CIDR inside the VPC that overlaps none of its subnets, in
    /// the given zone (default: the region's first).
    pub fn create_subnet(&mut self, new: NewSubnet<'_>) -> Result<&Subnet, NetworkError> {
        let vpc = self.vpc(new.vpc_id)?;
        let cidr: Ipv4Net = new.cidr.parse().map_err(|_| {
            NetworkError::InvalidParameterValue(format!(
                "Value ({}) for parameter cidrBlock is invalid. This is not a valid CIDR block.",
                new.cidr
            ))
        })?;
        if cidr.trunc() != cidr {
            return Err(NetworkError::InvalidParameterValue(format!(
                "Value ({}) for parameter cidrBlock is invalid. This is not a valid CIDR block.",
                new.cidr
            )));
        }
        if !SUBNET_PREFIXES.contains(&cidr.prefix_len())
            || !vpc.cidrs.iter().any(|outer| outer.contains(&cidr))
        {
            return Err(NetworkError::SubnetRange(new.cidr.to_owned()));
        }
        let siblings = || self.subnets.values().filter(|s| s.vpc_id == vpc.id);
        if siblings().any(|s| overlaps_v4(&s.cidr, &cidr)) {
            return Err(NetworkError::SubnetConflict(new.cidr.to_owned()));
        }
        let ipv6_cidr = match new.ipv6_cidr {
            None => None,
            Some(text) => {
                let net: Ipv6Net = text.parse().map_err(|_| {
                    NetworkError::InvalidParameterValue(format!(
                        "Value ({text}) for parameter ipv6CidrBlock is invalid. This is not a valid IPv6 CIDR block."
                    ))
                })?;
                if net.prefix_len() != IPV6_SUBNET_PREFIX
                    || net.trunc() != net
                    || !vpc.ipv6_cidrs.iter().any(|outer| outer.contains(&net))
                {
                    return Err(NetworkError::SubnetRange(text.to_owned()));
                }
                if siblings().any(|s| s.ipv6_cidr.is_some_and(|o| overlaps_v6(&o, &net))) {
                    return Err(NetworkError::SubnetConflict(text.to_owned()));
                }
                Some(net)
            }
        };
        let zone = self
            .zone(new.availability_zone, new.availability_zone_id)?
            .clone();
        let subnet = Subnet {
            id: random_id("subnet-"),
            vpc_id: vpc.id.clone(),
            cidr,
            ipv6_cidr,
            availability_zone: zone.name,
            availability_zone_id: zone.id,
            default_for_az: false,
            map_public_ip_on_launch: false,
            tags: new.tags,
            ipv4: Pool::default(),
            ipv6: Pool::default(),
        };
        let id = subnet.id.clone();
        Ok(self.subnets.entry(id).or_insert(subnet))
    }

    /// `DeleteSubnet`: refused while addresses are in use in it.
    pub fn delete_subnet(&mut self, id: &str) -> Result<Subnet, NetworkError> {
        let subnet = self.subnet(id)?;
        if subnet.addresses_in_use() > 0 {
            return Err(NetworkError::SubnetInUse(id.to_owned()));
        }
        self.subnets
            .remove(id)
            .ok_or_else(|| NetworkError::SubnetNotFound(id.to_owned()))
    }

    /// `CreateSecurityGroup` in `vpc_id` (default: the default VPC).
    pub fn create_security_group(
        &mut self,
        name: &str,
        description: &str,
        vpc_id: Option<&str>,
        tags: Tags,
    ) -> Result<&SecurityGroup, NetworkError> {
        let vpc_id = match vpc_id {
            Some(id) => self.vpc(id)?.id.clone(),
            None => self.default_vpc()?.id.clone(),
        };
        check_group_text("GroupName", name)?;
        check_group_text("GroupDescription", description)?;
        if name.to_ascii_lowercase().starts_with("sg-") {
            return Err(NetworkError::InvalidParameterValue(
                "Group names may not be in the format sg-*".into(),
            ));
        }
        if self.security_group_named(&vpc_id, name).is_ok() {
            return Err(NetworkError::GroupDuplicate(name.to_owned(), vpc_id));
        }
        let group = SecurityGroup {
            id: random_id("sg-"),
            name: name.to_owned(),
            description: description.to_owned(),
            vpc_id,
            tags,
        };
        let id = group.id.clone();
        Ok(self.security_groups.entry(id).or_insert(group))
    }

    /// `DeleteSecurityGroup` by id, or by name in the default VPC; the `default` group stays.
    pub fn delete_security_group(
        &mut self,
        id: Option<&str>,
        name: Option<&str>,
        in_use: impl Fn(&str) -> bool,
    ) -> Result<SecurityGroup, NetworkError> {
        let group = match (id, name) {
            (Some(id), _) => self.security_group(id)?,
            (None, Some(name)) => {
                let vpc = self.default_vpc()?.id.clone();
                self.security_group_named(&vpc, name)?
            }
            (None, None) => {
                return Err(NetworkError::InvalidParameterValue(
                    "A GroupId or GroupName is required".into(),
                ))
            }
        };
        if group.is_default() {
            return Err(NetworkError::DefaultGroup(group.id.clone()));
        }
        if in_use(&group.id) {
            return Err(NetworkError::GroupInUse(group.id.clone()));
        }
        let id = group.id.clone();
        self.security_groups
            .remove(&id)
            .ok_or(NetworkError::GroupNotFound(id))
    }

    /// `ImportKeyPair`: one OpenSSH public key line (RSA or ED25519), imported at `created`.
    pub fn import_key_pair(
        &mut self,
        name: &str,
        openssh_key: &str,
        created: OffsetDateTime,
        tags: Tags,
    ) -> Result<&KeyPair, NetworkError> {
        if name.is_empty() || name.len() > MAX_KEY_NAME || !name.is_ascii() {
            return Err(NetworkError::InvalidParameterValue(format!(
                "Value ({name}) for parameter keyName is invalid. Key pair names are 1 to {MAX_KEY_NAME} ASCII characters."
            )));
        }
        if self.key_pairs.contains_key(name) {
            return Err(NetworkError::KeyPairDuplicate(name.to_owned()));
        }
        let key = key_pair::parse_openssh(openssh_key)
            .map_err(|e| NetworkError::KeyFormat(e.0.to_owned()))?;
        let pair = KeyPair {
            id: random_id("key-"),
            name: name.to_owned(),
            key_type: key.key_type,
            fingerprint: key.fingerprint,
            public_key: key.openssh,
            created,
            tags,
        };
        Ok(self.key_pairs.entry(name.to_owned()).or_insert(pair))
    }

    /// `CreateKeyPair`: the public half of a key imds just made, with EC2's fingerprint of a
    /// created key (not of an imported one).
    pub fn add_created_key_pair(
        &mut self,
        name: &str,
        openssh_key: &str,
        fingerprint: String,
        created: OffsetDateTime,
        tags: Tags,
    ) -> Result<&KeyPair, NetworkError> {
        self.import_key_pair(name, openssh_key, created, tags)?;
        let pair = self
            .key_pairs
            .get_mut(name)
            .ok_or_else(|| NetworkError::KeyPairNotFound(name.to_owned()))?;
        pair.fingerprint = fingerprint;
        Ok(pair)
    }

    /// `DeleteKeyPair` by name or id: the pair removed, `None` when there was none (EC2
    /// succeeds then too).
    pub fn delete_key_pair(&mut self, name: Option<&str>, id: Option<&str>) -> Option<KeyPair> {
        let name = match (name, id) {
            (Some(name), _) => name.to_owned(),
            (None, Some(id)) => self.key_pair_by_id(id).ok()?.name.clone(),
            (None, None) => return None,
        };
        self.key_pairs.remove(&name)
    }

    /// Starts this process's searches for free addresses at a place of each subnet derived
    /// from `seed` rather than at its first usable address (see [`Network`]'s `spread`).
    pub fn spread_allocations(&mut self, seed: u64) {
        self.spread = seed;
    }

    /// Takes `wanted` (EC2's `PrivateIpAddress`) or the next free address of subnet
    /// `subnet_id`, never one of the five EC2 reserves nor one `held` says a live instance
    /// holds (the fleet index's answer, whatever this registry recorded).
    pub fn allocate_ipv4(
        &mut self,
        subnet_id: &str,
        wanted: Option<Ipv4Addr>,
        held: impl Fn(IpAddr) -> bool,
    ) -> Result<Ipv4Addr, NetworkError> {
        let spread = self.spread;
        let subnet = self.subnet_mut(subnet_id)?;
        let block = Block::v4(subnet.cidr);
        subnet.ipv4.start_search_at(block, u128::from(spread));
        subnet
            .ipv4
            .allocate(block, wanted, |ip| held(IpAddr::V4(ip)))
            .map_err(|e| pool_error(e, subnet_id, wanted.map(IpAddr::V4)))
    }

    /// Frees `ip` in subnet `subnet_id`; `false` when it was not in use there.
    pub fn release_ipv4(&mut self, subnet_id: &str, ip: Ipv4Addr) -> bool {
        self.subnets
            .get_mut(subnet_id)
            .is_some_and(|s| s.ipv4.release(ip))
    }

    /// Takes `wanted` (EC2's `Ipv6Address`) or the next free IPv6 address of subnet
    /// `subnet_id`, which must have an IPv6 CIDR, never one `held` says a live instance holds.
    pub fn allocate_ipv6(
        &mut self,
        subnet_id: &str,
        wanted: Option<Ipv6Addr>,
        held: impl Fn(IpAddr) -> bool,
    ) -> Result<Ipv6Addr, NetworkError> {
        let spread = self.spread;
        let subnet = self.subnet_mut(subnet_id)?;
        let Some(cidr) = subnet.ipv6_cidr else {
            return Err(NetworkError::InvalidParameterValue(format!(
                "The subnet '{subnet_id}' has no IPv6 CIDR block, so instances in it cannot have IPv6 addresses."
            )));
        };
        subnet
            .ipv6
            .start_search_at(Block::v6(cidr), u128::from(spread));
        subnet
            .ipv6
            .allocate(Block::v6(cidr), wanted, |ip| held(IpAddr::V6(ip)))
            .map_err(|e| pool_error(e, subnet_id, wanted.map(IpAddr::V6)))
    }

    /// Frees IPv6 `ip` in subnet `subnet_id`; `false` when it was not in use there.
    pub fn release_ipv6(&mut self, subnet_id: &str, ip: Ipv6Addr) -> bool {
        self.subnets
            .get_mut(subnet_id)
            .is_some_and(|s| s.ipv6.release(ip))
    }

    /// Frees `ip` (either family) in subnet `subnet_id`; `false` when it was not in use there.
    pub fn release(&mut self, subnet_id: &str, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => self.release_ipv4(subnet_id, ip),
            IpAddr::V6(ip) => self.release_ipv6(subnet_id, ip),
        }
    }

    /// Records `ip` as in use in subnet `subnet_id` (the addresses of instances from the
    /// configuration file); idempotent. Refused when `ip` is not inside the subnet.
    pub fn mark_in_use(&mut self, subnet_id: &str, ip: IpAddr) -> Result<(), NetworkError> {
        let subnet = self.subnet_mut(subnet_id)?;
        let inside = match ip {
            IpAddr::V4(v4) => subnet.cidr.contains(&v4),
            IpAddr::V6(v6) => subnet.ipv6_cidr.is_some_and(|c| c.contains(&v6)),
        };
        if !inside {
            return Err(outside(ip, subnet_id));
        }
        match ip {
            IpAddr::V4(v4) => subnet.ipv4.mark(v4),
            IpAddr::V6(v6) => subnet.ipv6.mark(v6),
        }
        Ok(())
    }

    /// The tags of the VPC, subnet, security group or key pair (by `key-...` id) `id`, to
    /// change them; `None` when no such object exists.
    pub fn tags_mut(&mut self, id: &str) -> Option<&mut Tags> {
        if let Some(vpc) = self.vpcs.get_mut(id) {
            return Some(&mut vpc.tags);
        }
        if let Some(subnet) = self.subnets.get_mut(id) {
            return Some(&mut subnet.tags);
        }
        if let Some(group) = self.security_groups.get_mut(id) {
            return Some(&mut group.tags);
        }
        self.key_pairs
            .values_mut()
            .find(|pair| pair.id == id)
            .map(|pair| &mut pair.tags)
    }

    /// Forgets every address in use (before marking the ones the store and the live instances
    /// say are).
    pub fn clear_pools(&mut self) {
        for subnet in self.subnets.values_mut() {
            subnet.ipv4 = Pool::default();
            subnet.ipv6 = Pool::default();
        }
    }

    /// Takes the pools of `from`'s subnets (the addresses in use this process knows) for the
    /// same subnets here, and where its searches start: a registry learned from the store
    /// carries objects, not pools.
    pub fn adopt_pools(&mut self, from: &Network) {
        self.spread = from.spread;
        for (id, subnet) in &mut self.subnets {
            if let Some(known) = from.subnets.get(id) {
                subnet.ipv4 = known.ipv4.clone();
                subnet.ipv6 = known.ipv6.clone();
            }
        }
    }

    fn subnet_mut(&mut self, id: &str) -> Result<&mut Subnet, NetworkError> {
        self.subnets
            .get_mut(id)
            .ok_or_else(|| NetworkError::SubnetNotFound(id.to_owned()))
    }

    /// The zone named `name` or with id `id` (the region's first when neither is given).
    fn zone(&self, name: Option<&str>, id: Option<&str>) -> Result<&Zone, NetworkError> {
        let found = match (name, id) {
            (Some(name), _) => self.zones.iter().find(|z| z.name == name),
            (None, Some(id)) => self.zones.iter().find(|z| z.id == id),
            (None, None) => self.zones.first(),
        };
        found.ok_or_else(|| {
            let names: Vec<&str> = self.zones.iter().map(|z| z.name.as_str()).collect();
            NetworkError::UnknownZone(name.or(id).unwrap_or_default().to_owned(), names.join(", "))
        })
    }
}

fn check_group_text(parameter: &str, text: &str) -> Result<(), NetworkError> {
    if text.is_empty() || text.chars().count() > MAX_GROUP_TEXT {
        return Err(NetworkError::InvalidParameterValue(format!(
            "Value for parameter {parameter} is invalid: it must be 1 to {MAX_GROUP_TEXT} characters long"
        )));
    }
    Ok(())
}

fn pool_error(error: PoolError, subnet_id: &str, wanted: Option<IpAddr>) -> NetworkError {
    let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    match error {
        PoolError::InUse => NetworkError::AddressInUse(wanted.unwrap_or(unspecified)),
        PoolError::Outside => outside(wanted.unwrap_or(unspecified), subnet_id),
        PoolError::Reserved => NetworkError::InvalidParameterValue(format!(
            "Address {} is reserved by AWS and cannot be assigned in subnet '{subnet_id}'.",
            wanted.unwrap_or(unspecified)
        )),
        PoolError::Full => NetworkError::SubnetFull(subnet_id.to_owned()),
    }
}

fn outside(ip: IpAddr, subnet_id: &str) -> NetworkError {
    NetworkError::InvalidParameterValue(format!(
        "Address {ip} does not fall within the subnet's address range (subnet '{subnet_id}')."
    ))
}

/// `prefix` and 17 hex digits derived from `seed`: the same seed gives the same id.
fn derived_id(prefix: &str, seed: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(seed.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{}", &hex[..17])
}

/// `prefix` and 17 random hex digits, as EC2 ids look.
fn random_id(prefix: &str) -> String {
    let hex: String = rand::random::<[u8; 9]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{prefix}{}", &hex[..17])
}

#[cfg(test)]
mod tests;

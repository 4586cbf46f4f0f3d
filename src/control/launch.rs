//! `RunInstances`: new instances in fleet mode, each built from the built-in instance with what
//! the request says (image, type, subnet and addresses, security groups, key pair, tags,
//! metadata options, instance profile, user data), addresses taken from the subnet, the
//! account's instance metadata defaults applied, guardrail policies checked, and everything
//! stored in one transaction before the answer: the instances, one row per address taken (so
//! launches through different hosts conflict only when they want the same address), and the
//! `ClientToken`. A `ClientToken` makes a retried request return the first one's instances, as
//! long as the token is kept (a day after its last instance was forgotten, which is an hour
//! after it terminated): the instances EC2 no longer shows are then listed as terminated, with
//! their ids, image, type and launch index, in the first answer's reservation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use base64::Engine;

use super::error::ControlError;
use super::guardrails::{Launch, Place, TagsByType};
use super::query::QueryRequest;
use super::xml::Xml;
use super::{hex, ControlApi};
use crate::fleet::changes::InstanceChanges;
use crate::fleet::instance::{Instance, InterfaceConfig, PublicKeyConfig};
use crate::fleet::instance_id::InstanceId;
use crate::fleet::lifecycle::{Lifecycle, Transition};
use crate::fleet::lock_order::Unlocked;
use crate::fleet::network::Network;
use crate::fleet::options::{HopLimit, MetadataOptions};
use crate::fleet::state::InstanceSlot;
use crate::store::{ClientToken, StoreError};

/// Most instances one `RunInstances` launches.
const MAX_COUNT: u32 = 1000;
/// Longest `ClientToken` EC2 accepts, in ASCII characters.
const MAX_CLIENT_TOKEN: usize = 64;
/// Largest user data EC2 accepts, once decoded.
const MAX_USER_DATA: usize = 16 * 1024;

/// The launch parameters every instance of one request shares.
struct Plan {
    image_id: String,
    instance_type: String,
    subnet_id: String,
    private_ip: Option<Ipv4Addr>,
    secondary_count: usize,
    ipv6_addresses: Vec<Ipv6Addr>,
    ipv6_count: usize,
    public_ip: bool,
    groups: Vec<crate::fleet::instance::SecurityGroup>,
    key: Option<PublicKeyConfig>,
    tags: TagsByType,
    options: MetadataOptions,
    role: Option<String>,
    user_data: String,
}

impl ControlApi {
    /// `RunInstances` (fleet mode).
    pub(super) async fn run_instances(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        if self.inventory.state.is_single() {
            return Err(ControlError::Unsupported(
                "RunInstances needs fleet mode (imds serve --fleet): this imds serves one instance"
                    .into(),
            ));
        }
        let (min, max) = counts(query)?;
        let token = query.get("ClientToken").map(str::to_owned);
        if let Some(token) = &token {
            // EC2's rule, and what keeps each remembered token small.
            if token.len() > MAX_CLIENT_TOKEN || !token.is_ascii() {
                return Err(ControlError::InvalidParameterValue(format!(
                    "Value for parameter ClientToken is invalid: it must be at most {MAX_CLIENT_TOKEN} ASCII characters"
                )));
            }
        }
        let request_sha256 = request_digest(query);
        let mut account = self.account.lock(order).await;
        if let Some(token) = &token {
            if let Some(launched) = self.launched_with(token).await? {
                if launched.request_sha256 != request_sha256 {
                    return Err(ControlError::IdempotentParameterMismatch(token.clone()));
                }
                // The launch is stored but may not be learned yet (made through another host,
                // or by a request whose answer was lost): learn it before answering.
                let unknown = |id: &String| {
                    id.parse::<InstanceId>()
                        .map_or(true, |id| self.inventory.state.instance(&id).is_none())
                };
                if launched.instance_ids.iter().any(unknown) {
                    self.catch_up_locked(&mut account)
                        .await
                        .map_err(|error| ControlError::Unavailable(error.to_string()))?;
                }
                return Ok(self.retried_reservation_xml(query, request_id, &launched));
            }
        }
        // Decided on the newest addresses in use: a launch through another host that took an
        // address is learned first, so the two do not pick the same one.
        self.catch_up_locked(&mut account)
            .await
            .map_err(|error| ControlError::Unavailable(error.to_string()))?;
        // A template's parameters under the request's own: then decided as a direct launch.
        let from_template = self.with_launch_template(query)?;
        let (query, template) = match &from_template {
            Some((merged, template)) => (merged, Some(template)),
            None => (query, None),
        };
        let mut network = (*self.inventory.network()).clone();
        let mut plan = self.plan(query, &network)?;
        let attributes = super::attributes::at_launch(query, token.as_deref())?;
        let place = Place {
            partition: &network.partition,
            region: &network.region,
            account: &network.owner_id,
        };
        let launch = Launch {
            image_id: &plan.image_id,
            instance_type: &plan.instance_type,
            subnet_id: &plan.subnet_id,
            security_group_ids: plan.groups.iter().map(|g| g.id.as_str()).collect(),
            key_name: plan.key.as_ref().map(|k| k.name.as_str()),
            tags: &plan.tags,
            template,
        };
        self.check_policies(&super::guardrails::run_instances(query, place, &launch))?;
        // EC2's system tags, which no request gives (nor any policy sees as a request tag).
        if let Some(template) = template {
            let tags = plan.tags.entry("instance".to_owned()).or_default();
            tags.extend(template.system_tags());
        }
        if query.dry_run() {
            return Err(ControlError::DryRunOperation);
        }
        let count = max;
        if plan.private_ip.is_some() && count > 1 {
            return Err(ControlError::InvalidParameterCombination(
                "Cannot specify a private IP address when launching more than one instance".into(),
            ));
        }
        let now = self.clock.now_millis();
        let launched_at = time::OffsetDateTime::from_unix_timestamp((now / 1000) as i64)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let reservation_id = format!("r-{}", &hex(&rand::random::<[u8; 9]>())[..17]);
        let mut instances = Vec::with_capacity(count as usize);
        for index in 0..count {
            match self.one_instance(&plan, &mut network, index, &reservation_id, launched_at) {
                Ok(instance) => instances.push(instance),
                // Fewer than MaxCount is fine down to MinCount, as on EC2.
                Err(error) if index >= min => {
                    tracing::info!(%error, launched = index, "RunInstances launched fewer than MaxCount");
                    break;
                }
                Err(error) => return Err(error),
            }
        }
        self.inventory
            .state
            .admits(&instances.iter().collect::<Vec<_>>())?;
        let lifecycle = InstanceChanges {
            lifecycle: Some(Lifecycle::new(Transition::Launch, now)),
            attributes: Some(attributes),
            ..InstanceChanges::default()
        };
        let changes_json = super::sync::to_json(&lifecycle);
        // The options were decided on the defaults (HttpTokensEnforced among them), the subnet
        // and groups on the registry's objects.
        let mut commit = self
            .decided_on_defaults(crate::store::Commit::default())
            .unchanged(
                super::vpc::NETWORK,
                self.account.revision(super::vpc::NETWORK),
            );
        for instance in &instances {
            commit = commit.instance(crate::store::InstanceWrite {
                instance_id: instance.id().to_owned(),
                config: Some(super::sync::to_json(&instance.config)),
                changes: changes_json.clone(),
                expected: 0,
            });
            for (subnet, ip) in addresses(instance) {
                commit = commit.take(&subnet, ip, instance.id());
            }
        }
        let client_token = token.map(|token| ClientToken {
            token,
            request_sha256,
            instance_ids: instances.iter().map(|i| i.id().to_owned()).collect(),
            created_millis: now as i64,
            reservation_id: reservation_id.clone(),
            owner_id: network.owner_id.clone(),
            expires_millis: None,
        });
        if let Some(token) = &client_token {
            commit = commit.client_token(token.clone());
        }
        let revision = self.persist(commit).await?;
        self.inventory.set_network(network, &account);
        let snapshots = self.inventory.snapshots.clone();
        let built = tokio::task::spawn_blocking(move || snapshots.build_all(instances))
            .await
            .map_err(|error| {
                tracing::error!(%error, "building the launched instances failed");
                ControlError::InternalError
            })?;
        let slots: Vec<Arc<InstanceSlot>> = built
            .into_iter()
            .map(|snapshot| InstanceSlot::stored(snapshot, lifecycle.clone(), revision))
            .collect();
        self.inventory.state.insert(slots.clone())?;
        if let Some(token) = client_token {
            self.inventory.remember_client_token(token);
        }
        tracing::info!(
            reservation = reservation_id,
            instances = slots.len(),
            "instances launched"
        );
        Ok(self.reservation_xml("RunInstancesResponse", request_id, &slots))
    }

    /// What the `ClientToken` `token` launched, here or (kept in the store) before a restart
    /// or through another host; `None` when it was never used.
    async fn launched_with(&self, token: &str) -> Result<Option<ClientToken>, ControlError> {
        if let Some(known) = self.inventory.client_token(token) {
            return Ok(Some(known));
        }
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let stored = store
            .client_token(token)
            .await
            .map_err(|error| match error {
                StoreError::Unavailable { .. } => ControlError::Unavailable(error.to_string()),
                error => {
                    tracing::error!(%error, "a client token could not be read");
                    ControlError::InternalError
                }
            })?;
        if let Some(stored) = &stored {
            self.inventory.remember_client_token(stored.clone());
        }
        Ok(stored)
    }

    /// What every instance of the request shares, checked against the network registry.
    fn plan(&self, query: &QueryRequest, network: &Network) -> Result<Plan, ControlError> {
        let nic = |name: &str| query.get(&format!("NetworkInterface.1.{name}"));
        let zone = query.get("Placement.AvailabilityZone");
        let subnet = match query.get("SubnetId").or(nic("SubnetId")) {
            Some(id) => network.subnet(id)?,
            None => network.default_subnet(zone)?,
        };
        if let Some(zone) = zone.filter(|z| *z != subnet.availability_zone) {
            return Err(ControlError::InvalidParameterValue(format!(
                "The subnet {} is in {}, not in the requested Availability Zone {zone}",
                subnet.id, subnet.availability_zone
            )));
        }
        let mut group_ids: Vec<&str> = query.list("SecurityGroupId");
        group_ids.extend(query.list("NetworkInterface.1.SecurityGroupId"));
        let mut groups = Vec::new();
        for id in group_ids {
            let group = network.security_group(id)?;
            groups.push((group.id.clone(), group.name.clone(), group.vpc_id.clone()));
        }
        for name in query.list("SecurityGroup") {
            let group = network.security_group_named(&subnet.vpc_id, name)?;
            groups.push((group.id.clone(), group.name.clone(), group.vpc_id.clone()));
        }
        if let Some((id, _, vpc)) = groups.iter().find(|(_, _, vpc)| *vpc != subnet.vpc_id) {
            return Err(ControlError::InvalidParameterValue(format!(
                "Security group {id} is in {vpc}, not in the subnet's VPC {}",
                subnet.vpc_id
            )));
        }
        if groups.is_empty() {
            let group = network.security_group_named(&subnet.vpc_id, "default")?;
            groups.push((group.id.clone(), group.name.clone(), group.vpc_id.clone()));
        }
        let key = match query.get("KeyName") {
            Some(name) => {
                let pair = network.key_pair(name)?;
                Some(PublicKeyConfig {
                    name: pair.name.clone(),
                    openssh_key: pair.public_key.clone(),
                })
            }
            None => None,
        };
        let private_ip = query
            .get("PrivateIpAddress")
            .or(nic("PrivateIpAddress"))
            .map(|ip| {
                ip.parse::<Ipv4Addr>().map_err(|_| {
                    ControlError::InvalidParameterValue(format!("Invalid IPv4 address: {ip}"))
                })
            })
            .transpose()?;
        let number = |name: &str, value: Option<&str>| -> Result<usize, ControlError> {
            value.map_or(Ok(0), |v| {
                v.parse::<usize>().ok().filter(|n| *n <= 32).ok_or_else(|| {
                    ControlError::InvalidParameterValue(format!(
                        "Value ({v}) for parameter {name} is invalid"
                    ))
                })
            })
        };
        let secondary_count = number(
            "SecondaryPrivateIpAddressCount",
            query
                .get("SecondaryPrivateIpAddressCount")
                .or(nic("SecondaryPrivateIpAddressCount")),
        )?;
        let ipv6_count = number(
            "Ipv6AddressCount",
            query.get("Ipv6AddressCount").or(nic("Ipv6AddressCount")),
        )?;
        let ipv6_addresses = query
            .members("Ipv6Address")
            .into_iter()
            .filter_map(|n| query.get(&format!("Ipv6Address.{n}.Ipv6Address")))
            .chain(
                query
                    .members("NetworkInterface.1.Ipv6AddressesSet")
                    .into_iter()
                    .filter_map(|n| {
                        query.get(&format!(
                            "NetworkInterface.1.Ipv6AddressesSet.{n}.Ipv6Address"
                        ))
                    }),
            )
            .map(|ip| {
                ip.parse::<Ipv6Addr>().map_err(|_| {
                    ControlError::InvalidParameterValue(format!("Invalid IPv6 address: {ip}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let public_ip = nic("AssociatePublicIpAddress")
            .map(|v| v.eq_ignore_ascii_case("true"))
            .unwrap_or(subnet.map_public_ip_on_launch);
        let user_data = match query.get("UserData") {
            Some(encoded) => user_data(encoded)?,
            None => String::new(),
        };
        let role = match (
            query.get("IamInstanceProfile.Name"),
            query.get("IamInstanceProfile.Arn"),
        ) {
            (Some(name), _) => Some(name.to_owned()),
            (None, Some(arn)) => Some(
                arn.rsplit_once(":instance-profile/")
                    .map(|(_, path)| path.rsplit('/').next().unwrap_or(path).to_owned())
                    .filter(|name| !name.is_empty())
                    .ok_or_else(|| {
                        ControlError::InvalidParameterValue(format!(
                            "Value ({arn}) for parameter iamInstanceProfile.arn is invalid. Invalid ARN"
                        ))
                    })?,
            ),
            (None, None) => None,
        };
        Ok(Plan {
            image_id: query
                .get("ImageId")
                .unwrap_or(&self.inventory.template.ami_id)
                .to_owned(),
            instance_type: query.get("InstanceType").unwrap_or("m1.small").to_owned(),
            subnet_id: subnet.id.clone(),
            private_ip,
            secondary_count,
            ipv6_addresses,
            ipv6_count,
            public_ip,
            groups: groups
                .into_iter()
                .map(|(id, name, _)| crate::fleet::instance::SecurityGroup { name, id })
                .collect(),
            key,
            tags: tags_on_create(query)?,
            options: self.launch_options(query)?,
            role,
            user_data,
        })
    }

    /// The metadata options of a new instance: the request's, else the account's defaults,
    /// else EC2's launch defaults.
    fn launch_options(&self, query: &QueryRequest) -> Result<MetadataOptions, ControlError> {
        let defaults = self.account.defaults();
        let mut options = MetadataOptions::default();
        if let Some(tokens) = defaults.http_tokens {
            options.http_tokens = tokens;
        }
        if let Some(hops) = defaults.hop_limit {
            options.http_put_response_hop_limit = hops;
        }
        if let Some(endpoint) = defaults.http_endpoint {
            options.http_endpoint = endpoint;
        }
        if let Some(tags) = defaults.instance_metadata_tags {
            options.instance_metadata_tags = tags;
        }
        let get = |name: &str| query.get(&format!("MetadataOptions.{name}"));
        if let Some(value) = get("HttpTokens") {
            options.http_tokens = super::instances::parse_tokens(value)?;
        }
        if options.http_tokens == crate::fleet::options::HttpTokens::Optional
            && defaults.http_tokens_enforced == Some(true)
        {
            return Err(ControlError::Unsupported(
                "IMDSv1 cannot be enabled: HttpTokensEnforced is enabled in the instance metadata defaults of this account and Region".into(),
            ));
        }
        if let Some(value) = get("HttpPutResponseHopLimit") {
            options.http_put_response_hop_limit = value.parse::<HopLimit>().map_err(|_| {
                ControlError::InvalidParameterValue(format!(
                    "The HttpPutResponseHopLimit value ({value}) is invalid. Specify an integer from 1 to 64."
                ))
            })?;
        }
        for (name, slot) in [
            ("HttpEndpoint", &mut options.http_endpoint),
            ("HttpProtocolIpv6", &mut options.http_protocol_ipv6),
            ("InstanceMetadataTags", &mut options.instance_metadata_tags),
        ] {
            if let Some(value) = get(name) {
                *slot = super::instances::parse_switch(name, value)?;
            }
        }
        Ok(options)
    }

    /// The `index`th instance of a launch, its addresses taken from `network`.
    fn one_instance(
        &self,
        plan: &Plan,
        network: &mut Network,
        index: u32,
        reservation_id: &str,
        launched_at: time::OffsetDateTime,
    ) -> Result<Instance, ControlError> {
        let subnet = network.subnet(&plan.subnet_id)?.clone();
        let vpc = network.vpc(&subnet.vpc_id)?.clone();
        // The fleet index owns who holds an address; the pools only record it.
        let held = |ip: IpAddr| self.inventory.state.holder(ip).is_some();
        let mut private_ipv4s = vec![network.allocate_ipv4(&subnet.id, plan.private_ip, held)?];
        for _ in 0..plan.secondary_count {
            private_ipv4s.push(network.allocate_ipv4(&subnet.id, None, held)?);
        }
        let mut ipv6s = Vec::new();
        for wanted in &plan.ipv6_addresses {
            ipv6s.push(network.allocate_ipv6(&subnet.id, Some(*wanted), held)?);
        }
        for _ in 0..plan.ipv6_count {
            ipv6s.push(network.allocate_ipv6(&subnet.id, None, held)?);
        }
        let id = format!("i-{}", &hex(&rand::random::<[u8; 9]>())[..17]);
        let mac_bytes = rand::random::<[u8; 5]>();
        let mut config = self.inventory.template.clone();
        config.instance_id = id;
        // The registry's account owns what launches into it (the guardrails decided for it).
        config.account_id = network.owner_id.clone();
        config.reservation_id = reservation_id.to_owned();
        config.ami_id = plan.image_id.clone();
        config.ami_launch_index = index;
        config.instance_type = plan.instance_type.clone();
        config.pending_time = launched_at;
        config.user_data = plan.user_data.clone();
        config.tags = plan.tags.get("instance").cloned().unwrap_or_default();
        config.public_keys = plan.key.iter().cloned().collect();
        config.placement.availability_zone = subnet.availability_zone.clone();
        config.placement.availability_zone_id = subnet.availability_zone_id.clone();
        config.placement.region = Some(network.region.clone());
        config.metadata_options = plan.options;
        config.iam = crate::fleet::instance::IamConfig {
            role: plan.role.clone(),
            ..Default::default()
        };
        config.events = Default::default();
        config.faults = Vec::new();
        config.network_interfaces = vec![InterfaceConfig {
            mac: format!(
                "0e:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                mac_bytes[0], mac_bytes[1], mac_bytes[2], mac_bytes[3], mac_bytes[4]
            ),
            interface_id: format!("eni-{}", &hex(&rand::random::<[u8; 9]>())[..17]),
            device_number: 0,
            network_card_index: 0,
            subnet_id: subnet.id.clone(),
            subnet_ipv4_cidr_block: subnet.cidr,
            subnet_ipv6_cidr_blocks: subnet.ipv6_cidr.into_iter().collect(),
            vpc_id: vpc.id.clone(),
            vpc_ipv4_cidr_blocks: vpc.cidrs.clone(),
            vpc_ipv6_cidr_blocks: vpc.ipv6_cidrs.clone(),
            private_ipv4s,
            public_ipv4: plan.public_ip.then(public_ipv4),
            ipv6s,
            security_groups: plan.groups.clone(),
        }];
        Instance::new(config).map_err(|e| ControlError::InvalidParameterValue(e.to_string()))
    }

    /// A reservation answer (`RunInstances`) listing `slots`.
    fn reservation_xml(
        &self,
        root: &'static str,
        request_id: &str,
        slots: &[Arc<InstanceSlot>],
    ) -> String {
        let now = self.clock.now_millis();
        let mut xml = Xml::response(root, request_id);
        let first = slots.first().map(|s| s.current());
        xml.leaf(
            "reservationId",
            first
                .as_ref()
                .map_or("", |s| s.instance.config.reservation_id.as_str()),
        )
        .leaf(
            "ownerId",
            first
                .as_ref()
                .map_or("", |s| s.instance.config.account_id.as_str()),
        )
        .open("groupSet")
        .close()
        .open("instancesSet");
        for slot in slots {
            let snapshot = slot.current();
            let state = super::instances::instance_state(slot, &snapshot, now);
            self.instance_xml(&mut xml, slot, &snapshot.instance, &snapshot.options, state);
        }
        xml.close();
        xml.finish()
    }

    /// The answer to a retry of the launch that `launched` recorded: its reservation with each
    /// instance as it is now, or as terminated, with what the request (the same as the first)
    /// said of it, once EC2 no longer shows it (forgotten an hour after it terminated).
    fn retried_reservation_xml(
        &self,
        query: &QueryRequest,
        request_id: &str,
        launched: &ClientToken,
    ) -> String {
        let now = self.clock.now_millis();
        let slots: Vec<(&str, Option<Arc<InstanceSlot>>)> = launched
            .instance_ids
            .iter()
            .map(|id| {
                let slot = id
                    .parse::<InstanceId>()
                    .ok()
                    .and_then(|id| self.inventory.state.instance(&id));
                (id.as_str(), slot)
            })
            .collect();
        let first = slots
            .iter()
            .find_map(|(_, slot)| slot.as_ref().map(|s| s.current()));
        let or_first = |kept: &str, of: fn(&crate::fleet::instance::InstanceConfig) -> &str| match (
            kept, &first,
        ) {
            ("", Some(first)) => of(&first.instance.config).to_owned(),
            (kept, _) => kept.to_owned(),
        };
        let reservation = or_first(&launched.reservation_id, |c| &c.reservation_id);
        let owner = or_first(&launched.owner_id, |c| &c.account_id);
        let mut xml = Xml::response("RunInstancesResponse", request_id);
        xml.leaf("reservationId", &reservation)
            .leaf("ownerId", &owner)
            .open("groupSet")
            .close()
            .open("instancesSet");
        let terminated = crate::fleet::lifecycle::InstanceState::Terminated;
        for (index, (id, slot)) in slots.iter().enumerate() {
            match slot {
                Some(slot) => {
                    let snapshot = slot.current();
                    let state = super::instances::instance_state(slot, &snapshot, now);
                    self.instance_xml(&mut xml, slot, &snapshot.instance, &snapshot.options, state);
                }
                None => {
                    xml.open("item")
                        .leaf("instanceId", *id)
                        .leaf(
                            "imageId",
                            query
                                .get("ImageId")
                                .unwrap_or(&self.inventory.template.ami_id),
                        )
                        .open("instanceState")
                        .leaf("code", terminated.code())
                        .leaf("name", terminated.name())
                        .close()
                        .leaf("reason", "")
                        .leaf("amiLaunchIndex", index)
                        .leaf(
                            "instanceType",
                            query.get("InstanceType").unwrap_or("m1.small"),
                        )
                        .close();
                }
            }
        }
        xml.close();
        xml.finish()
    }
}

/// The SHA-256 (hex) of the request's parameters but `ClientToken`, in a fixed order: what a
/// retry with the same token must repeat.
fn request_digest(query: &QueryRequest) -> String {
    use sha2::{Digest, Sha256};
    let mut request = query.without("ClientToken");
    request.sort();
    hex(&Sha256::digest(super::sync::to_json(&request)))
}

/// `MinCount` and `MaxCount`: 1 ≤ min ≤ max ≤ 1000.
fn counts(query: &QueryRequest) -> Result<(u32, u32), ControlError> {
    let parse = |name: &str| -> Result<u32, ControlError> {
        let value = query.require(name)?;
        value
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                ControlError::InvalidParameterValue(format!(
                    "Value ({value}) for parameter {name} is invalid. Expected a positive integer."
                ))
            })
    };
    let (min, max) = (parse("MinCount")?, parse("MaxCount")?);
    if min > max {
        return Err(ControlError::InvalidParameterValue(
            "MinCount must not be greater than MaxCount".into(),
        ));
    }
    if min > MAX_COUNT {
        return Err(ControlError::InstanceLimitExceeded(format!(
            "You have requested more instances ({min}) than this imds launches at once ({MAX_COUNT})"
        )));
    }
    Ok((min, max.min(MAX_COUNT)))
}

/// The tags of each `TagSpecification.N`, by its `ResourceType` (the instance keeps those of
/// `instance`; the guardrails see them all).
fn tags_on_create(query: &QueryRequest) -> Result<TagsByType, ControlError> {
    let mut tags = TagsByType::new();
    for n in query.members("TagSpecification") {
        let kind = query.require(&format!("TagSpecification.{n}.ResourceType"))?;
        let of_type = tags.entry(kind.to_owned()).or_default();
        for m in query.members(&format!("TagSpecification.{n}.Tag")) {
            let key = query.require(&format!("TagSpecification.{n}.Tag.{m}.Key"))?;
            let value = query
                .get(&format!("TagSpecification.{n}.Tag.{m}.Value"))
                .unwrap_or("");
            super::tags::check_tag(key, value)?;
            of_type.insert(key.to_owned(), value.to_owned());
        }
    }
    Ok(tags)
}

/// `UserData`, base64 as the AWS CLI and the SDKs send it, at most 16 KiB decoded.
fn user_data(encoded: &str) -> Result<String, ControlError> {
    let invalid =
        |why: &str| ControlError::InvalidParameterValue(format!("Invalid user data: {why}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| invalid("not base64"))?;
    if bytes.len() > MAX_USER_DATA {
        return Err(invalid("larger than 16 KiB"));
    }
    String::from_utf8(bytes).map_err(|_| invalid("imds serves user data that is UTF-8 text"))
}

/// A public IPv4 address for a new instance: random, from 100.64.0.0/10 (shared address
/// space, which no real host on the internet has).
fn public_ipv4() -> Ipv4Addr {
    let [a, b, c] = rand::random::<[u8; 3]>();
    Ipv4Addr::new(100, 64 | (a & 0x3f), b, c.max(1))
}

/// Every address of `instance`'s interfaces with their subnets.
pub(super) fn addresses(instance: &Instance) -> Vec<(String, IpAddr)> {
    instance
        .config
        .network_interfaces
        .iter()
        .flat_map(|nic| {
            nic.private_ipv4s
                .iter()
                .map(|ip| IpAddr::V4(*ip))
                .chain(nic.ipv6s.iter().map(|ip| IpAddr::V6(*ip)))
                .map(|ip| (nic.subnet_id.clone(), ip))
        })
        .collect()
}

//! `DescribeInstances` and `ModifyInstanceMetadataOptions`.

use super::error::ControlError;
use super::query::{QueryRequest, MAX_IDS};
use super::xml::Xml;
use super::{Change, ControlApi};
use crate::fleet::changes::OptionFields;
use crate::fleet::events::SpotAction;
use crate::fleet::instance::{Instance, InstanceConfig};
use std::sync::Arc;

use base64::Engine;

use super::instance_xml::{instance_item, Shown, StateReason};
use super::vpc::Filters;
use crate::fleet::changes::InstanceAttributes;
use crate::fleet::instance::InterfaceConfig;
use crate::fleet::lifecycle::{InstanceState, Transition};
use crate::fleet::lock_order::Unlocked;
use crate::fleet::metadata::render;
use crate::fleet::options::{HopLimit, HttpTokens, MetadataOptions, Switch};
use crate::fleet::state::{InstanceSlot, Snapshot};

/// The filters `DescribeInstances` knows besides `tag:KEY` and `tag-key`.
const INSTANCE_FILTERS: &[&str] = &[
    "instance-id",
    "instance-state-name",
    "instance-state-code",
    "instance-type",
    "instance-lifecycle",
    "image-id",
    "key-name",
    "availability-zone",
    "subnet-id",
    "vpc-id",
    "private-ip-address",
    "private-dns-name",
    "ip-address",
    "network-interface.addresses.private-ip-address",
    "network-interface.ipv6-addresses.ipv6-address",
    "reservation-id",
    "owner-id",
    "iam-instance-profile.arn",
    "tag-value",
    "metadata-options.http-tokens",
    "metadata-options.http-endpoint",
    "metadata-options.http-put-response-hop-limit",
    "metadata-options.http-protocol-ipv6",
    "metadata-options.instance-metadata-tags",
    "metadata-options.state",
    "architecture",
    "dns-name",
    "hypervisor",
    "iam-instance-profile.id",
    "instance.group-id",
    "instance.group-name",
    "group-id",
    "group-name",
    "launch-time",
    "launch-index",
    "ami-launch-index",
    "client-token",
    "network-interface.network-interface-id",
    "network-interface.mac-address",
    "network-interface.subnet-id",
    "network-interface.vpc-id",
    "network-interface.status",
    "network-interface.owner-id",
    "network-interface.private-dns-name",
    "network-interface.group-id",
    "network-interface.group-name",
    "network-interface.attachment.device-index",
    "network-interface.attachment.status",
    "network-interface.addresses.primary",
    "network-interface.addresses.association.public-ip",
    "network-interface.association.public-ip",
    "placement-group-name",
    "placement-partition-number",
    "root-device-name",
    "root-device-type",
    "block-device-mapping.device-name",
    "block-device-mapping.volume-id",
    "block-device-mapping.status",
    "virtualization-type",
    "tenancy",
    "monitoring-state",
    "platform-details",
    "usage-operation",
    "boot-mode",
    "current-instance-boot-mode",
    "hibernation-options.configured",
    "ipv6-address",
    "availability-zone-id",
    "reason",
    "state-reason-code",
    "state-reason-message",
    "ebs-optimized",
    "ena-support",
    "source-dest-check",
    "maintenance-options.auto-recovery",
    "enclave-options.enabled",
    "capacity-reservation-specification.capacity-reservation-preference",
    "private-dns-name-options.hostname-type",
];

/// What an instance filter reads beside the snapshot.
struct Seen<'a> {
    /// The state code and name now.
    state: (u16, &'static str),
    /// `pending` or `applied`.
    options_state: &'static str,
    /// What was set at launch or with `ModifyInstanceAttribute`.
    attributes: &'a InstanceAttributes,
    /// Why the instance is in its state.
    reason: Option<StateReason>,
}

/// The values of `name` (one of [`INSTANCE_FILTERS`]) for an instance.
fn instance_field(name: &str, snapshot: &Snapshot, seen: &Seen<'_>) -> Vec<String> {
    let Seen {
        state,
        options_state,
        attributes,
        reason,
    } = seen;
    let instance = &snapshot.instance;
    let c = &instance.config;
    let nics = |field: &dyn Fn(&InterfaceConfig) -> Vec<String>| {
        c.network_interfaces
            .iter()
            .flat_map(field)
            .collect::<Vec<_>>()
    };
    let devices = match name.starts_with("block-device-mapping.") {
        true => super::instance_xml::ebs_devices(instance),
        false => Vec::new(),
    };
    let primary = instance.primary_interface();
    let options = &snapshot.options;
    let one = |value: &str| vec![value.to_owned()];
    match name {
        "instance-id" => one(instance.id()),
        "instance-state-name" => one(state.1),
        "instance-state-code" => vec![state.0.to_string()],
        "instance-type" => one(&c.instance_type),
        "instance-lifecycle" => match c.instance_life_cycle == "spot" || c.events.spot.is_some() {
            true => one("spot"),
            false => Vec::new(),
        },
        "image-id" => one(&c.ami_id),
        "key-name" => c.public_keys.iter().map(|k| k.name.clone()).collect(),
        "availability-zone" => one(&c.placement.availability_zone),
        "subnet-id" => one(&primary.config.subnet_id),
        "vpc-id" => one(&primary.config.vpc_id),
        "private-ip-address" => vec![primary.config.private_ipv4s[0].to_string()],
        "private-dns-name" => one(&primary.local_hostname),
        "ip-address" => primary
            .config
            .public_ipv4
            .iter()
            .map(ToString::to_string)
            .collect(),
        "network-interface.addresses.private-ip-address" => c
            .network_interfaces
            .iter()
            .flat_map(|nic| nic.private_ipv4s.iter().map(ToString::to_string))
            .collect(),
        "network-interface.ipv6-addresses.ipv6-address" => c
            .network_interfaces
            .iter()
            .flat_map(|nic| nic.ipv6s.iter().map(ToString::to_string))
            .collect(),
        "reservation-id" => one(&c.reservation_id),
        "owner-id" => one(&c.account_id),
        "iam-instance-profile.arn" => instance
            .iam
            .iter()
            .map(|p| p.instance_profile_arn.clone())
            .collect(),
        "tag-value" => c.tags.values().cloned().collect(),
        "metadata-options.http-tokens" => one(tokens(options.http_tokens)),
        "metadata-options.http-endpoint" => one(switch(options.http_endpoint)),
        "metadata-options.http-put-response-hop-limit" => {
            vec![options.http_put_response_hop_limit.get().to_string()]
        }
        "metadata-options.http-protocol-ipv6" => one(switch(options.http_protocol_ipv6)),
        "metadata-options.instance-metadata-tags" => one(switch(options.instance_metadata_tags)),
        "metadata-options.state" => one(options_state),
        "architecture" => one(&c.architecture),
        "dns-name" => primary.public_hostname.iter().cloned().collect(),
        "hypervisor" => one("xen"),
        "iam-instance-profile.id" => instance
            .iam
            .iter()
            .map(|p| p.instance_profile_id.clone())
            .collect(),
        "instance.group-id" | "group-id" | "network-interface.group-id" => {
            nics(&|nic| nic.security_groups.iter().map(|g| g.id.clone()).collect())
        }
        "instance.group-name" | "group-name" | "network-interface.group-name" => {
            nics(&|nic| nic.security_groups.iter().map(|g| g.name.clone()).collect())
        }
        "launch-time" => one(&render::iso_seconds(c.pending_time)),
        "launch-index" | "ami-launch-index" => vec![c.ami_launch_index.to_string()],
        "client-token" => attributes.client_token.iter().cloned().collect(),
        "network-interface.network-interface-id" => nics(&|nic| vec![nic.interface_id.clone()]),
        "network-interface.mac-address" => nics(&|nic| vec![nic.mac.clone()]),
        "network-interface.subnet-id" => nics(&|nic| vec![nic.subnet_id.clone()]),
        "network-interface.vpc-id" => nics(&|nic| vec![nic.vpc_id.clone()]),
        "network-interface.status" => one("in-use"),
        "network-interface.attachment.status" => one("attached"),
        "network-interface.owner-id" => one(&c.account_id),
        "network-interface.private-dns-name" => instance
            .interfaces
            .iter()
            .map(|i| i.local_hostname.clone())
            .collect(),
        "network-interface.attachment.device-index" => {
            nics(&|nic| vec![nic.device_number.to_string()])
        }
        "network-interface.addresses.primary" => vec!["true".into(), "false".into()],
        "network-interface.addresses.association.public-ip"
        | "network-interface.association.public-ip" => {
            nics(&|nic| nic.public_ipv4.iter().map(ToString::to_string).collect())
        }
        "placement-group-name" => c.placement.group_name.iter().cloned().collect(),
        "placement-partition-number" => c
            .placement
            .partition_number
            .iter()
            .map(ToString::to_string)
            .collect(),
        "root-device-name" => c
            .block_device_mapping
            .get("root")
            .cloned()
            .into_iter()
            .collect(),
        "root-device-type" => one("ebs"),
        "block-device-mapping.device-name" => devices.iter().map(|(d, _)| d.clone()).collect(),
        "block-device-mapping.volume-id" => devices.iter().map(|(_, v)| v.clone()).collect(),
        "block-device-mapping.status" => one("attached"),
        "virtualization-type" => one("hvm"),
        "tenancy" => one(match c.placement.host_id {
            Some(_) => "host",
            None => "default",
        }),
        "monitoring-state" => one("disabled"),
        "platform-details" => one("Linux/UNIX"),
        "usage-operation" => one("RunInstances"),
        "boot-mode" | "current-instance-boot-mode" => one(match c.architecture.as_str() {
            "arm64" => "uefi",
            _ => "legacy-bios",
        }),
        "hibernation-options.configured" => vec![c.hibernation_configured.to_string()],
        "ipv6-address" => nics(&|nic| nic.ipv6s.iter().map(ToString::to_string).collect()),
        "availability-zone-id" => one(&c.placement.availability_zone_id),
        "reason" => reason.iter().map(|r| r.transition.clone()).collect(),
        "state-reason-code" => reason.iter().map(|r| r.code.to_owned()).collect(),
        "state-reason-message" => reason.iter().map(|r| r.message.to_owned()).collect(),
        "ebs-optimized" | "ena-support" => {
            let nitro = crate::fleet::instance_types::find(&c.instance_type)
                .map_or(c.system.as_deref() == Some("nitro"), |t| t.ena_supported());
            vec![nitro.to_string()]
        }
        "source-dest-check" => one("true"),
        "maintenance-options.auto-recovery" => one("default"),
        "enclave-options.enabled" => one("false"),
        "capacity-reservation-specification.capacity-reservation-preference" => one("open"),
        "private-dns-name-options.hostname-type" => one("ip-name"),
        _ => Vec::new(),
    }
}

/// `MaxResults` and `NextToken`: how many instances one page shows, after which one.
struct Page {
    size: usize,
    after: Option<String>,
}

impl Page {
    /// The page a request asks for; EC2 refuses `MaxResults` with instance ids, and outside
    /// 5..=1000.
    fn of(query: &QueryRequest, with_ids: bool) -> Result<Page, ControlError> {
        let size = match query.get("MaxResults") {
            None => usize::MAX,
            Some(_) if with_ids => {
                return Err(ControlError::InvalidParameterCombination(
                    "The parameter instancesSet cannot be used with the parameter maxResults"
                        .into(),
                ))
            }
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (5..=1000).contains(n))
                .ok_or_else(|| {
                    ControlError::InvalidParameterValue(format!(
                        "Value ({text}) for parameter maxResults is invalid. Expecting a value between 5 and 1000."
                    ))
                })?,
        };
        let after = match query.get("NextToken") {
            None => None,
            Some(token) => Some(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(token)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| {
                        ControlError::InvalidParameterValue(format!("Invalid NextToken: {token}"))
                    })?,
            ),
        };
        Ok(Page { size, after })
    }
}

/// The `NextToken` that continues after the instance `id`.
fn page_token(id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

impl ControlApi {
    /// The instances `InstanceId.N` names (each must exist, and at most `most` of them), or
    /// every instance without any.
    pub(super) fn named_or_all(
        &self,
        query: &QueryRequest,
        most: usize,
    ) -> Result<Vec<Arc<InstanceSlot>>, ControlError> {
        let named = query
            .list_at_most("InstanceId", most, "instance IDs")?
            .into_iter()
            .map(|id| self.slot(id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(match named.is_empty() {
            true => self.inventory.state.instances(),
            false => named,
        })
    }

    /// `DescribeInstances`: every instance that the ids and filters leave in, one reservation
    /// each.
    pub(super) fn describe_instances(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let filters = Filters::new(query, INSTANCE_FILTERS)?;
        let page = Page::of(query, !query.list("InstanceId").is_empty())?;
        let candidates = self.named_or_all(query, MAX_IDS)?;
        let now = self.clock.now_millis();
        let mut shown = Vec::new();
        let mut next_token = None;
        for slot in candidates {
            if page
                .after
                .as_deref()
                .is_some_and(|after| slot.id().as_str() <= after)
            {
                continue;
            }
            let snapshot = slot.current();
            let state = instance_state(&slot, &snapshot, now);
            // Terminated instances disappear from view an hour after, as on EC2.
            if slot.changes().lifecycle.is_some_and(|l| l.is_gone(now)) {
                continue;
            }
            let instance = &snapshot.instance;
            let attributes = slot.changes().attributes.unwrap_or_default();
            let seen = Seen {
                state,
                options_state: self.options_state(&slot),
                attributes: &attributes,
                reason: state_reason(&slot, state, now),
            };
            let fields = |name: &str| instance_field(name, &snapshot, &seen);
            if !filters.matches(&instance.config.tags, fields) {
                continue;
            }
            if shown.len() == page.size {
                next_token = shown
                    .last()
                    .map(|(slot, _, _): &(Arc<InstanceSlot>, _, _)| page_token(slot.id().as_str()));
                break;
            }
            shown.push((slot, snapshot, state));
        }
        let mut xml = Xml::response("DescribeInstancesResponse", request_id);
        xml.open("reservationSet");
        // One reservation per RunInstances call, as on EC2: its instances, in page order.
        let mut reservations: Vec<(&str, Vec<usize>)> = Vec::new();
        for (index, (_, snapshot, _)) in shown.iter().enumerate() {
            let id = snapshot.instance.config.reservation_id.as_str();
            match reservations.iter_mut().find(|(r, _)| *r == id) {
                Some((_, members)) => members.push(index),
                None => reservations.push((id, vec![index])),
            }
        }
        for (reservation, members) in reservations {
            let first = &shown[members[0]].1.instance;
            xml.open("item")
                .leaf("reservationId", reservation)
                .leaf("ownerId", &first.config.account_id)
                .open("groupSet")
                .close()
                .open("instancesSet");
            for index in members {
                let (slot, snapshot, state) = &shown[index];
                self.instance_xml(
                    &mut xml,
                    slot,
                    &snapshot.instance,
                    &snapshot.options,
                    *state,
                );
            }
            xml.close().close();
        }
        xml.close();
        if let Some(token) = next_token {
            xml.leaf("nextToken", token);
        }
        Ok(xml.finish())
    }

    /// Writes one instance's `<item>` (see [`super::instance_xml`]).
    pub(super) fn instance_xml(
        &self,
        xml: &mut Xml,
        slot: &InstanceSlot,
        instance: &Instance,
        options: &MetadataOptions,
        state: (u16, &'static str),
    ) {
        let changes = slot.changes();
        let attributes = changes.attributes.unwrap_or_default();
        let shown = Shown {
            instance,
            options,
            options_state: self.options_state(slot),
            state,
            reason: state_reason(slot, state, self.clock.now_millis()),
            attributes: &attributes,
        };
        instance_item(xml, &shown);
    }

    /// `<{element}>` with the options and whether the last change is applied yet.
    fn metadata_options_xml(
        &self,
        xml: &mut Xml,
        slot: &InstanceSlot,
        element: &'static str,
        o: &MetadataOptions,
    ) {
        xml.open(element)
            .leaf("state", self.options_state(slot))
            .leaf("httpTokens", tokens(o.http_tokens))
            .leaf("httpPutResponseHopLimit", o.http_put_response_hop_limit)
            .leaf("httpEndpoint", switch(o.http_endpoint))
            .leaf("httpProtocolIpv6", switch(o.http_protocol_ipv6))
            .leaf("instanceMetadataTags", switch(o.instance_metadata_tags))
            .close();
    }

    /// `ModifyInstanceMetadataOptions`: omitted options keep their value; the change reads
    /// `pending` for a moment, as on EC2, while the guest API already follows it.
    pub(super) async fn modify_instance_metadata_options(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let slot = self.slot(query.require("InstanceId")?)?;
        let request = {
            let snapshot = slot.current();
            let instance = &snapshot.instance;
            let place = super::guardrails::Place {
                partition: instance.partition,
                region: &instance.region,
                account: &instance.config.account_id,
            };
            super::guardrails::modify_instance_metadata_options(query, place, slot.id().as_str())
        };
        self.check_policies(&request)?;
        // The options as the request sets them, refusing IMDSv1 while it is enforced.
        let edit = |enforced: bool| {
            move |_: &Instance, config: &mut InstanceConfig| -> Result<(), ControlError> {
                let o = &mut config.metadata_options;
                if let Some(value) = query.get("HttpTokens") {
                    o.http_tokens = parse_tokens(value)?;
                    if o.http_tokens == HttpTokens::Optional && enforced {
                        return Err(ControlError::Unsupported(
                                "IMDSv1 cannot be enabled: HttpTokensEnforced is enabled in the instance metadata defaults of this account and Region".into(),
                            ));
                    }
                }
                if let Some(value) = query.get("HttpPutResponseHopLimit") {
                    o.http_put_response_hop_limit = value.parse::<HopLimit>().map_err(|_| {
                            ControlError::InvalidParameterValue(format!(
                                "The HttpPutResponseHopLimit value ({value}) is invalid. Specify an integer from 1 to 64."
                            ))
                        })?;
                }
                for (name, slot) in [
                    ("HttpEndpoint", &mut o.http_endpoint),
                    ("HttpProtocolIpv6", &mut o.http_protocol_ipv6),
                    ("InstanceMetadataTags", &mut o.instance_metadata_tags),
                ] {
                    if let Some(value) = query.get(name) {
                        *slot = parse_switch(name, value)?;
                    }
                }
                if query.dry_run() {
                    return Err(ControlError::DryRunOperation);
                }
                Ok(())
            }
        };
        let named = OptionFields::named(|name| query.get(name).is_some());
        let applied = match query.get("HttpTokens") == Some("optional") {
            // Turning IMDSv1 on is decided on HttpTokensEnforced: under the account lock
            // (which ModifyInstanceMetadataDefaults and learning from the store take), and
            // stored only if no host changed the defaults since they were read.
            true => {
                let mut account = self.account.lock(order).await;
                let enforced = self.account.defaults().http_tokens_enforced == Some(true);
                let checks = self.decided_on_defaults(crate::store::Commit::default());
                self.change_checked(
                    &mut account,
                    &slot,
                    Change::Options(named),
                    checks,
                    edit(enforced),
                )
                .await?
            }
            false => {
                self.change(order, &slot, Change::Options(named), edit(false))
                    .await?
            }
        };
        let mut xml = Xml::response("ModifyInstanceMetadataOptionsResponse", request_id);
        xml.leaf("instanceId", applied.id());
        self.metadata_options_xml(
            &mut xml,
            &slot,
            "instanceMetadataOptions",
            &applied.options(),
        );
        Ok(xml.finish())
    }
}

/// Why the instance is in `state` (its code and name now): a pending launch or start, a
/// stop or termination the user asked for, or a spot interruption; `None` while running.
fn state_reason(slot: &InstanceSlot, state: (u16, &str), now: u64) -> Option<StateReason> {
    let lifecycle = slot.changes().lifecycle;
    let at = |millis: u64| crate::fleet::events::datetime(millis);
    match (state.1, lifecycle) {
        ("running", _) => None,
        ("pending", _) => Some(StateReason::pending()),
        (_, Some(l)) if matches!(l.last, Transition::Stop | Transition::Terminate) => {
            Some(StateReason::user(at(l.at_millis)))
        }
        // Stopped or terminated while the lifecycle says running: a spot interruption.
        _ => {
            let spot = slot.current().schedule.spot.map_or(now, |spot| spot.at);
            Some(StateReason::spot(at(spot)))
        }
    }
}

/// The instance's state code and name at `now`: as its lifecycle says (launched, stopped,
/// terminated through the control API); while running, until a spot interruption's action
/// time, then terminated or stopped (hibernated instances are stopped).
pub(super) fn instance_state(
    slot: &InstanceSlot,
    snapshot: &Snapshot,
    now: u64,
) -> (u16, &'static str) {
    let state = slot.changes().lifecycle.map(|l| l.state(now));
    if let Some(state) = state.filter(|s| *s != InstanceState::Running) {
        return (state.code(), state.name());
    }
    match snapshot.schedule.spot.filter(|spot| spot.at <= now) {
        None => (16, "running"),
        Some(spot) if spot.action == SpotAction::Terminate => (48, "terminated"),
        Some(_) => (80, "stopped"),
    }
}

pub(super) fn tokens(value: HttpTokens) -> &'static str {
    match value {
        HttpTokens::Optional => "optional",
        HttpTokens::Required => "required",
    }
}

pub(super) fn switch(value: Switch) -> &'static str {
    match value {
        Switch::Enabled => "enabled",
        Switch::Disabled => "disabled",
    }
}

pub(super) fn parse_tokens(value: &str) -> Result<HttpTokens, ControlError> {
    match value {
        "optional" => Ok(HttpTokens::Optional),
        "required" => Ok(HttpTokens::Required),
        _ => Err(ControlError::InvalidParameterValue(format!(
            "Value ({value}) for parameter HttpTokens is invalid. Valid values: optional, required"
        ))),
    }
}

pub(super) fn parse_switch(name: &str, value: &str) -> Result<Switch, ControlError> {
    match value {
        "enabled" => Ok(Switch::Enabled),
        "disabled" => Ok(Switch::Disabled),
        _ => Err(ControlError::InvalidParameterValue(format!(
            "Value ({value}) for parameter {name} is invalid. Valid values: enabled, disabled"
        ))),
    }
}

//! `DescribeInstanceStatus`: each instance (running ones, or every one with
//! `IncludeAllInstances=true`) with its announced, not yet ended scheduled events, its state,
//! and its system, instance and attached EBS status checks (`ok` with reachability `passed`
//! while running, `not-applicable` otherwise: imds has no hardware to fail).
//!
//! As on EC2: at most 100 `InstanceId.N`; `MaxResults` (5 to 1000) and `NextToken` page in
//! instance id order, and `MaxResults` cannot be given with instance ids; the filters are the
//! ones EC2 documents for this action (legacy camelCase spellings too), any other name
//! (`instance-id`, `tag:KEY`: an instance status has no tags) is EC2's
//! `InvalidParameterValue`. Event times match in EC2's form (`2026-11-23T10:00:00.000Z`) or
//! without milliseconds, with `*` and `?` wildcards as in every filter.

use std::sync::Arc;

use super::error::ControlError;
use super::events::event_xml;
use super::instances::instance_state;
use super::key_pairs::iso_millis;
use super::paging::Page;
use super::query::QueryRequest;
use super::vpc::Filters;
use super::xml::Xml;
use super::ControlApi;
use crate::fleet::events::{datetime, MaintenanceEvent};
use crate::fleet::metadata::render;
use crate::fleet::network::Tags;
use crate::fleet::state::{InstanceSlot, Snapshot};

/// Most instance ids one `DescribeInstanceStatus` may name, as on EC2.
const MAX_STATUS_IDS: usize = 100;
/// The smallest and largest `MaxResults`, as on EC2.
const PAGE_SIZES: (usize, usize) = (5, 1000);

/// The filters EC2 documents for `DescribeInstanceStatus` (botocore's model lists the same).
const STATUS_FILTERS: &[&str] = &[
    "availability-zone",
    "availability-zone-id",
    "event.code",
    "event.description",
    "event.instance-event-id",
    "event.not-after",
    "event.not-before",
    "event.not-before-deadline",
    "instance-state-code",
    "instance-state-name",
    "instance-status.reachability",
    "instance-status.status",
    "system-status.reachability",
    "system-status.status",
    "attached-ebs-status.status",
    "application-status.status",
    "operator.managed",
    "operator.principal",
];

/// One instance as `DescribeInstanceStatus` shows it.
struct Row {
    slot: Arc<InstanceSlot>,
    snapshot: Arc<Snapshot>,
    state: (u16, &'static str),
    events: Vec<MaintenanceEvent>,
}

impl Row {
    /// `ok` while running, `not-applicable` otherwise: every status check's summary.
    fn status(&self) -> &'static str {
        match self.state.1 {
            "running" => "ok",
            _ => "not-applicable",
        }
    }

    /// The checks' reachability detail: `passed` while running, none otherwise.
    fn reachability(&self) -> Option<&'static str> {
        (self.state.1 == "running").then_some("passed")
    }

    /// The values of filter `name` (one of [`STATUS_FILTERS`]).
    fn field(&self, name: &str) -> Vec<String> {
        let placement = &self.snapshot.instance.config.placement;
        let events = |value: &dyn Fn(&MaintenanceEvent) -> Vec<String>| {
            self.events.iter().flat_map(value).collect::<Vec<_>>()
        };
        let times = |millis: u64| {
            let at = datetime(millis);
            vec![iso_millis(at), render::iso_seconds(at)]
        };
        match name {
            "availability-zone" => vec![placement.availability_zone.clone()],
            "availability-zone-id" => vec![placement.availability_zone_id.clone()],
            "event.code" => events(&|e| vec![e.code.as_str().to_owned()]),
            "event.description" => events(&|e| vec![e.description.clone()]),
            "event.instance-event-id" => events(&|e| vec![e.id.clone()]),
            "event.not-after" => events(&|e| times(e.not_after)),
            "event.not-before" => events(&|e| times(e.not_before)),
            "event.not-before-deadline" => {
                events(&|e| e.not_before_deadline.map(times).unwrap_or_default())
            }
            "instance-state-code" => vec![self.state.0.to_string()],
            "instance-state-name" => vec![self.state.1.to_owned()],
            "instance-status.status" | "system-status.status" | "attached-ebs-status.status" => {
                vec![self.status().to_owned()]
            }
            "instance-status.reachability" | "system-status.reachability" => {
                self.reachability().into_iter().map(str::to_owned).collect()
            }
            "operator.managed" => vec!["false".to_owned()],
            // No application status is monitored, and no service provider manages instances.
            _ => Vec::new(),
        }
    }

    /// The `<item>` of this instance.
    fn xml(&self, xml: &mut Xml) {
        let instance = &self.snapshot.instance;
        xml.open("item")
            .leaf("instanceId", instance.id())
            .leaf(
                "availabilityZone",
                &instance.config.placement.availability_zone,
            )
            .leaf(
                "availabilityZoneId",
                &instance.config.placement.availability_zone_id,
            )
            .open("operator")
            .leaf("managed", false)
            .close()
            .open("eventsSet");
        for event in &self.events {
            xml.open("item");
            event_xml(xml, event);
            xml.close();
        }
        xml.close()
            .open("instanceState")
            .leaf("code", self.state.0)
            .leaf("name", self.state.1)
            .close();
        for part in ["systemStatus", "instanceStatus", "attachedEbsStatus"] {
            xml.open(part).leaf("status", self.status()).open("details");
            if let Some(reachability) = self.reachability() {
                xml.open("item")
                    .leaf("name", "reachability")
                    .leaf("status", reachability)
                    .close();
            }
            xml.close().close();
        }
        xml.close();
    }
}

impl ControlApi {
    /// `DescribeInstanceStatus` (`InstanceId.N`, `IncludeAllInstances`, `Filter.N`,
    /// `MaxResults`, `NextToken`).
    pub(super) fn describe_instance_status(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let filters = Filters::untagged(query, STATUS_FILTERS)?;
        if query.get("MaxResults").is_some() && !query.list("InstanceId").is_empty() {
            return Err(ControlError::InvalidParameterCombination(
                "The parameter instancesSet cannot be used with the parameter maxResults".into(),
            ));
        }
        let page = Page::of(query, PAGE_SIZES.0, PAGE_SIZES.1)?;
        let candidates = self.named_or_all(query, MAX_STATUS_IDS)?;
        let now = self.clock.now_millis();
        let include_all = query
            .get("IncludeAllInstances")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let mut rows = Vec::new();
        for slot in candidates {
            // Terminated instances disappear from view an hour after, as on EC2.
            if slot.changes().lifecycle.is_some_and(|l| l.is_gone(now)) {
                continue;
            }
            let snapshot = slot.current();
            let state = instance_state(&slot, &snapshot, now);
            if !include_all && state.1 != "running" {
                continue;
            }
            let events = snapshot
                .schedule
                .at(now)
                .scheduled
                .into_iter()
                .cloned()
                .collect();
            let row = Row {
                slot,
                snapshot,
                state,
                events,
            };
            if filters.matches(&Tags::new(), |name| row.field(name)) {
                rows.push((row.slot.id().to_string(), row));
            }
        }
        let (shown, next) = page.cut(rows);
        let mut xml = Xml::response("DescribeInstanceStatusResponse", request_id);
        xml.open("instanceStatusSet");
        for row in &shown {
            row.xml(&mut xml);
        }
        xml.close();
        if let Some(token) = next {
            xml.leaf("nextToken", token);
        }
        Ok(xml.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_filter_is_known_and_tags_are_not() {
        for name in STATUS_FILTERS {
            let body = format!("Filter.1.Name={name}&Filter.1.Value.1=x");
            assert!(
                Filters::untagged(&QueryRequest::parse(body.as_bytes()), STATUS_FILTERS).is_ok(),
                "{name}"
            );
        }
        for name in [
            "instance-id",
            "tag:Name",
            "tag-key",
            "tag-value",
            "event.kind",
        ] {
            let body = format!("Filter.1.Name={name}&Filter.1.Value.1=x");
            let refused = Filters::untagged(&QueryRequest::parse(body.as_bytes()), STATUS_FILTERS)
                .err()
                .unwrap_or_else(|| panic!("{name} is taken"));
            assert_eq!(refused.code(), "InvalidParameterValue", "{name}");
        }
        let legacy = QueryRequest::parse(b"Filter.1.Name=availabilityZone&Filter.1.Value.1=x");
        assert!(Filters::untagged(&legacy, STATUS_FILTERS).is_ok());
    }
}

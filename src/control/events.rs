//! Events through the control plane. EC2's own actions where they exist:
//! `DescribeInstanceStatus` (scheduled events, and the instance's state after a spot
//! interruption; see `instance_status`) and `ModifyInstanceEventStartTime` (rescheduling, with
//! EC2's rules). imds'
//! actions in the same Query style elsewhere:
//! - `SendSpotInstanceInterruptions` (FIS' `aws:ec2:send-spot-instance-interruptions`):
//!   `DurationBeforeInterruption` (ISO 8601, PT2M..PT15M, default PT2M) until the interruption;
//!   the rebalance recommendation now (unless `RebalanceRecommendation=false`), the notice two
//!   minutes before; `InstanceInterruptionBehavior` terminate (default), stop or hibernate.
//! - `ScheduleInstanceEvent` (`Code`, `NotBefore`, `NotAfter`, `NotBeforeDeadline`,
//!   `Description`), `CompleteInstanceEvent` and `CancelInstanceEvent` (`InstanceEventId`).
//! - `SetTargetLifecycleState` (`State`, optionally `At`): Auto Scaling's target state.
//! - `ClearInstanceEvents`: nothing announced any more (the limit on the clients that see
//!   events, `client_limit`, is a setting, not an event: it stays).
//!
//! Times are ISO 8601 (`2026-11-23T10:00:00Z`); imds' actions also take delays (`+30s`, `1h`).
//! Every change is kept like the others (state directory), with its times fixed.

use std::sync::Arc;
use std::time::Duration;

use super::error::ControlError;
use super::query::QueryRequest;
use super::xml::Xml;
use super::{Change, ControlApi};
use crate::fleet::events::{
    datetime, new_event_id, rfc3339, EventCode, EventsConfig, LifecycleConfig, LifecycleState,
    MaintenanceConfig, Outcome, SpotAction, SpotConfig, When, SPOT_WARNING,
};
use crate::fleet::instance::InstanceConfig;
use crate::fleet::lock_order::Unlocked;
use crate::fleet::metadata::render;
use crate::fleet::state::InstanceSlot;

/// The shortest and longest `DurationBeforeInterruption` FIS accepts.
const INTERRUPTION_RANGE: (Duration, Duration) =
    (Duration::from_secs(120), Duration::from_secs(900));
/// How far ahead a rescheduled event must start (EC2's rule).
const RESCHEDULE_LEAD: u64 = 60 * 60_000;

impl ControlApi {
    /// Applies `edit` to the instance's events, with every time fixed, as one control change;
    /// what can no longer be shown is dropped ([`EventsConfig::bounded`]).
    async fn change_events(
        &self,
        order: &mut Unlocked,
        query: &QueryRequest,
        edit: impl FnOnce(&mut EventsConfig, u64) -> Result<(), ControlError>,
    ) -> Result<(Arc<InstanceSlot>, crate::fleet::instance::Instance), ControlError> {
        let slot = self.slot(query.require("InstanceId")?)?;
        let started = self.inventory.snapshots.started();
        let now = self.clock.now_millis();
        let instance = self
            .change(
                order,
                &slot,
                Change::Events,
                |current, config: &mut InstanceConfig| {
                    let mut events = config.events.fixed(started, current.id());
                    let before = events.in_force(started, now);
                    edit(&mut events, now)?;
                    // What can no longer show goes; adding past the limits is refused.
                    events
                        .bounded(started, now, before)
                        .map_err(ControlError::InvalidParameterValue)?;
                    if query.dry_run() {
                        return Err(ControlError::DryRunOperation);
                    }
                    config.events = events;
                    Ok(())
                },
            )
            .await?;
        Ok((slot, instance))
    }

    /// `SendSpotInstanceInterruptions`.
    pub(super) async fn send_spot_instance_interruptions(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let duration = match query.get("DurationBeforeInterruption") {
            Some(text) => iso_duration(text).ok_or_else(|| {
                ControlError::InvalidParameterValue(format!(
                    "DurationBeforeInterruption ({text}) must be an ISO 8601 duration from PT2M to PT15M"
                ))
            })?,
            None => INTERRUPTION_RANGE.0,
        };
        if duration < INTERRUPTION_RANGE.0 || duration > INTERRUPTION_RANGE.1 {
            return Err(ControlError::InvalidParameterValue(format!(
                "DurationBeforeInterruption must be from PT2M to PT15M, not {}",
                humantime::format_duration(duration)
            )));
        }
        let action = match query.get("InstanceInterruptionBehavior") {
            Some(text) => text
                .parse::<SpotAction>()
                .map_err(ControlError::InvalidParameterValue)?,
            None => SpotAction::Terminate,
        };
        let rebalance = match query.get("RebalanceRecommendation") {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(ControlError::InvalidParameterValue(format!(
                    "RebalanceRecommendation ({other}) must be true or false"
                )))
            }
        };
        let (slot, instance) = self
            .change_events(order, query, |events, now| {
                let at = now + duration.as_millis() as u64;
                events.spot = Some(SpotConfig {
                    action,
                    notice: When::at_millis(at - SPOT_WARNING.as_millis() as u64),
                    warning_seconds: SPOT_WARNING.as_secs(),
                });
                if rebalance {
                    events.rebalance = Some(When::at_millis(now));
                }
                Ok(())
            })
            .await?;
        let schedule = &slot.current().schedule;
        let spot = schedule.spot.expect("just scheduled");
        let mut xml = Xml::response("SendSpotInstanceInterruptionsResponse", request_id);
        xml.open("spotInstanceInterruption")
            .leaf("instanceId", instance.id())
            .leaf("instanceInterruptionBehavior", spot.action.as_str())
            .leaf("noticeTime", rfc3339(datetime(spot.notice)))
            .leaf("interruptionTime", rfc3339(datetime(spot.at)));
        if let Some(at) = schedule.rebalance.filter(|_| rebalance) {
            xml.leaf("rebalanceRecommendationTime", rfc3339(datetime(at)));
        }
        xml.close();
        Ok(xml.finish())
    }

    /// `ScheduleInstanceEvent`.
    pub(super) async fn schedule_instance_event(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let code = query
            .require("Code")?
            .parse::<EventCode>()
            .map_err(ControlError::InvalidParameterValue)?;
        let not_before = when(query, "NotBefore")?.unwrap_or(When::After(Duration::ZERO));
        let not_after = when(query, "NotAfter")?;
        let deadline = when(query, "NotBeforeDeadline")?;
        let description = query.get("Description").map(str::to_owned);
        let id = new_event_id();
        let event_id = id.clone();
        self.change_events(order, query, |events, now| {
            let fix = |w: When| When::at_millis(w.resolve(now));
            let (start, end) = (not_before.resolve(now), not_after.map(|w| w.resolve(now)));
            if end.is_some_and(|end| end <= start) {
                return Err(ControlError::InvalidParameterValue(
                    "NotAfter must be later than NotBefore".into(),
                ));
            }
            if deadline.is_some_and(|d| d.resolve(now) < start) {
                return Err(ControlError::InvalidParameterValue(
                    "NotBeforeDeadline must not be earlier than NotBefore".into(),
                ));
            }
            events.maintenance.push(MaintenanceConfig {
                id: Some(event_id),
                code,
                description,
                not_before: fix(not_before),
                not_after: not_after.map(fix),
                not_before_deadline: deadline.map(fix),
                announced: Some(When::at_millis(now)),
                completed: None,
                canceled: None,
            });
            Ok(())
        })
        .await?;
        self.event_answer(query, "ScheduleInstanceEventResponse", request_id, &id)
    }

    /// `CompleteInstanceEvent` and `CancelInstanceEvent`: the event moves to the history.
    pub(super) async fn end_instance_event(
        &self,
        query: &QueryRequest,
        request_id: &str,
        outcome: Outcome,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let id = query.require("InstanceEventId")?.to_owned();
        self.change_events(order, query, |events, now| {
            let event = scheduled_event(events, &id, now)?;
            match outcome {
                Outcome::Completed => event.completed = Some(When::at_millis(now)),
                Outcome::Canceled => event.canceled = Some(When::at_millis(now)),
            }
            Ok(())
        })
        .await?;
        let root = match outcome {
            Outcome::Completed => "CompleteInstanceEventResponse",
            Outcome::Canceled => "CancelInstanceEventResponse",
        };
        self.event_answer(query, root, request_id, &id)
    }

    /// `ModifyInstanceEventStartTime`, with EC2's rules: only an event with a
    /// `NotBeforeDeadline`, not started and not starting within five minutes, to a time at least
    /// an hour ahead and before the deadline. Its window keeps its length.
    pub(super) async fn modify_instance_event_start_time(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let id = query.require("InstanceEventId")?.to_owned();
        let text = query.require("NotBefore")?;
        let Some(When::At(new_start)) = text.parse::<When>().ok() else {
            return Err(ControlError::InvalidParameterValue(format!(
                "Value ({text}) for parameter NotBefore is invalid: expected a timestamp such as 2026-11-23T10:00:00Z"
            )));
        };
        let new_start = When::At(new_start).resolve(0);
        let started = self.inventory.snapshots.started();
        self.change_events(order, query, |events, now| {
            let event = scheduled_event(events, &id, now)?;
            let at = |w: When| w.resolve(started);
            let Some(deadline) = event.not_before_deadline.map(at) else {
                return Err(ControlError::InvalidParameterValue(format!(
                    "The event {id} cannot be rescheduled: it has no NotBeforeDeadline"
                )));
            };
            let start = at(event.not_before);
            if start <= now + 5 * 60_000 {
                return Err(ControlError::InvalidParameterValue(format!(
                    "The event {id} has started or starts within 5 minutes and cannot be rescheduled"
                )));
            }
            if new_start < now + RESCHEDULE_LEAD || new_start > deadline {
                return Err(ControlError::InvalidParameterValue(format!(
                    "The new start time must be at least 60 minutes from now and no later than the event's NotBeforeDeadline ({})",
                    rfc3339(datetime(deadline))
                )));
            }
            let end = event.not_after.map_or(start + 2 * 3_600_000, at);
            event.not_before = When::at_millis(new_start);
            event.not_after = Some(When::at_millis(new_start + (end - start)));
            Ok(())
        })
        .await?;
        self.event_answer(
            query,
            "ModifyInstanceEventStartTimeResponse",
            request_id,
            &id,
        )
    }

    /// `SetTargetLifecycleState`.
    pub(super) async fn set_target_lifecycle_state(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let state = query
            .require("State")?
            .parse::<LifecycleState>()
            .map_err(ControlError::InvalidParameterValue)?;
        let at = when(query, "At")?.unwrap_or(When::After(Duration::ZERO));
        let (_, instance) = self
            .change_events(order, query, |events, now| {
                events.target_lifecycle.push(LifecycleConfig {
                    state,
                    at: When::at_millis(at.resolve(now)),
                });
                Ok(())
            })
            .await?;
        let mut xml = Xml::response("SetTargetLifecycleStateResponse", request_id);
        xml.leaf("instanceId", instance.id())
            .leaf("targetLifecycleState", state.as_str())
            .leaf("at", rfc3339(datetime(at.resolve(self.clock.now_millis()))));
        Ok(xml.finish())
    }

    /// `ClearInstanceEvents`: every event goes; `client_limit` stays.
    pub(super) async fn clear_instance_events(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        self.change_events(order, query, |events, _| {
            *events = EventsConfig {
                client_limit: events.client_limit,
                ..EventsConfig::default()
            };
            Ok(())
        })
        .await?;
        let mut xml = Xml::response("ClearInstanceEventsResponse", request_id);
        xml.leaf("return", true);
        Ok(xml.finish())
    }

    /// An answer carrying the event `id` as it now is.
    fn event_answer(
        &self,
        query: &QueryRequest,
        root: &'static str,
        request_id: &str,
        id: &str,
    ) -> Result<String, ControlError> {
        let snapshot = self.slot(query.require("InstanceId")?)?.current();
        let event = snapshot
            .schedule
            .maintenance
            .iter()
            .find(|e| e.id == id)
            .ok_or_else(|| ControlError::InvalidParameterValue(format!("no event {id}")))?;
        let mut xml = Xml::response(root, request_id);
        xml.open("event");
        event_xml(&mut xml, event);
        xml.close();
        Ok(xml.finish())
    }
}

/// An `InstanceStatusEvent`.
pub(super) fn event_xml(xml: &mut Xml, event: &crate::fleet::events::MaintenanceEvent) {
    let iso = |millis: u64| render::iso_seconds(datetime(millis));
    xml.leaf("instanceEventId", &event.id)
        .leaf("code", event.code.as_str())
        .leaf("description", &event.description)
        .leaf("notBefore", iso(event.not_before))
        .leaf("notAfter", iso(event.not_after));
    if let Some(deadline) = event.not_before_deadline {
        xml.leaf("notBeforeDeadline", iso(deadline));
    }
}

/// The configured event `id`, if it has not ended by `now`.
fn scheduled_event<'e>(
    events: &'e mut EventsConfig,
    id: &str,
    now: u64,
) -> Result<&'e mut MaintenanceConfig, ControlError> {
    let ended = |e: &MaintenanceConfig| {
        let past = |w: Option<When>| w.is_some_and(|w| w.resolve(0) <= now);
        past(e.completed) || past(e.canceled) || past(e.not_after)
    };
    events
        .maintenance
        .iter_mut()
        .find(|e| e.id.as_deref() == Some(id))
        .filter(|e| !ended(e))
        .ok_or_else(|| {
            ControlError::InvalidParameterValue(format!(
                "The event ID '{id}' does not exist or the event has ended"
            ))
        })
}

/// The parameter `name` as a time or delay.
fn when(query: &QueryRequest, name: &str) -> Result<Option<When>, ControlError> {
    query
        .get(name)
        .map(|text| {
            text.parse::<When>().map_err(|e| {
                ControlError::InvalidParameterValue(format!("Value for parameter {name}: {e}"))
            })
        })
        .transpose()
}

/// An ISO 8601 duration of hours, minutes and seconds (`PT2M`, `PT2M30S`, `PT150S`); `None`
/// also when it does not fit in `u64` seconds.
fn iso_duration(text: &str) -> Option<Duration> {
    let mut rest = text.strip_prefix("PT")?;
    let mut total = 0u64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let value: u64 = rest[..digits].parse().ok()?;
        let unit = rest[digits..].chars().next()?;
        let seconds = match unit {
            'H' => 3600,
            'M' => 60,
            'S' => 1,
            _ => return None,
        };
        total = total.checked_add(value.checked_mul(seconds)?)?;
        rest = &rest[digits + 1..];
    }
    Some(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_durations_of_minutes_and_seconds() {
        assert_eq!(iso_duration("PT2M"), Some(Duration::from_secs(120)));
        assert_eq!(iso_duration("PT2M30S"), Some(Duration::from_secs(150)));
        assert_eq!(iso_duration("PT15M"), Some(Duration::from_secs(900)));
        assert_eq!(iso_duration("PT"), None);
        assert_eq!(iso_duration("2M"), None);
        assert_eq!(iso_duration("PT2X"), None);
        assert_eq!(iso_duration("PTM"), None);
        assert_eq!(iso_duration("PT18446744073709551615H"), None);
        assert_eq!(iso_duration("PT18446744073709551615S1S"), None);
    }
}

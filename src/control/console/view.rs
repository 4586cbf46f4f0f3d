//! What the page shows, as JSON: the fleet (one row per instance) and one instance in detail
//! (its token-less request history, recent IMDSv1 callers, events and faults). Only what an
//! operator needs to see: never credentials, tokens, keys or user data.

use std::time::SystemTime;

use serde_json::{json, Value};

use crate::control::instances::{instance_state, switch, tokens};
use crate::control::{ControlApi, ControlError};
use crate::fleet::events::{datetime, rfc3339};
use crate::fleet::history::{NoTokenHistory, NoTokenMetric};
use crate::fleet::state::{InstanceSlot, Snapshot};

/// Minutes of history the page shows (and counts as "the last hour").
pub const MINUTES: u64 = 60;
/// Rows the fleet view lists at most.
pub const MAX_ROWS: usize = 500;

impl ControlApi {
    /// Every instance still in view, one row each (at most [`MAX_ROWS`]), and the version of
    /// the state it shows.
    pub(super) fn fleet_view(&self) -> Value {
        let now = self.clock.now_millis();
        let slots = self.inventory.state.instances();
        let mut rows = Vec::new();
        let mut total = 0;
        for slot in &slots {
            // Terminated instances disappear from view an hour after, as in DescribeInstances.
            if slot.changes().lifecycle.is_some_and(|l| l.is_gone(now)) {
                continue;
            }
            total += 1;
            if rows.len() < MAX_ROWS {
                rows.push(self.row(slot, &slot.current(), now));
            }
        }
        json!({
            "version": self.console_version(),
            "instances": rows,
            "total": total,
        })
    }

    fn row(&self, slot: &InstanceSlot, snapshot: &Snapshot, now: u64) -> Value {
        let instance = &snapshot.instance;
        let c = &instance.config;
        let options = &snapshot.options;
        let addresses: Vec<String> = c
            .network_interfaces
            .iter()
            .flat_map(|nic| {
                let private = nic.private_ipv4s.iter().map(ToString::to_string);
                let public = nic.public_ipv4.iter().map(ToString::to_string);
                let ipv6 = nic.ipv6s.iter().map(ToString::to_string);
                private.chain(public).chain(ipv6)
            })
            .collect();
        let history = &slot.counters().no_token_history;
        let minute = now / 60_000;
        json!({
            "instanceId": instance.id(),
            "name": c.tags.get("Name"),
            "state": instance_state(slot, snapshot, now).1,
            "addresses": addresses,
            "httpTokens": tokens(options.http_tokens),
            "hopLimit": options.http_put_response_hop_limit.get(),
            "endpoint": switch(options.http_endpoint),
            "optionsState": self.options_state(slot),
            "noTokenLastHour": {
                "answered": last_hour(history, NoTokenMetric::Answered, minute),
                "rejected": last_hour(history, NoTokenMetric::Rejected, minute),
            },
        })
    }

    /// The instance `id` in detail.
    pub(super) fn instance_view(&self, id: &str) -> Result<Value, ControlError> {
        let slot = self.slot(id)?;
        let snapshot = slot.current();
        let now = self.clock.now_millis();
        let minute = now / 60_000;
        let history = &slot.counters().no_token_history;
        let first = minute + 1 - MINUTES;
        let series = |metric| -> Vec<u64> {
            (first..=minute)
                .map(|m| history.at(metric, m, minute))
                .collect()
        };
        // Another user's command line may carry its secrets: only operators who signed in
        // with the control keys see it; without keys the console shows imds' own user's.
        let own = crate::fleet::callers::own_uid();
        let callers: Vec<Value> = slot
            .counters()
            .recent_callers
            .list()
            .into_iter()
            .map(|caller| {
                let shown = self.keys.is_some() || own == Some(caller.uid);
                json!({
                    "pid": caller.pid,
                    "uid": caller.uid,
                    "commandLine": shown.then_some(caller.command_line),
                    "requests": caller.requests,
                    "lastSeen": rfc3339(datetime(unix_millis(caller.last_seen))),
                })
            })
            .collect();
        let faults: Vec<Value> = slot
            .faults()
            .list()
            .into_iter()
            .map(|listed| {
                let mut fault = serde_json::to_value(&listed.config).unwrap_or_default();
                fault["fired"] = listed.fired.into();
                fault
            })
            .collect();
        Ok(json!({
            "row": self.row(&slot, &snapshot, now),
            "history": {
                "firstMinute": rfc3339(datetime(first * 60_000)),
                "answered": series(NoTokenMetric::Answered),
                "rejected": series(NoTokenMetric::Rejected),
            },
            "callers": {
                "lookedUp": self.callers_looked_up(),
                "recent": callers,
            },
            "events": events(&snapshot, now),
            "faults": faults,
        }))
    }
}

/// Token-less requests of `metric` in the [`MINUTES`] up to `minute`.
fn last_hour(history: &NoTokenHistory, metric: NoTokenMetric, minute: u64) -> u64 {
    (minute + 1 - MINUTES..=minute)
        .map(|m| history.at(metric, m, minute))
        .sum()
}

fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The events in force at `now`: a spot interruption (announced or to come), the rebalance
/// recommendation, scheduled maintenance, the target lifecycle state.
fn events(snapshot: &Snapshot, now: u64) -> Value {
    let schedule = &snapshot.schedule;
    let visible = schedule.at(now);
    let at = |millis: u64| rfc3339(datetime(millis));
    let maintenance: Vec<Value> = visible
        .scheduled
        .iter()
        .map(|event| {
            json!({
                "id": event.id,
                "code": event.code.as_str(),
                "description": event.description,
                "notBefore": at(event.not_before),
                "notAfter": at(event.not_after),
            })
        })
        .collect();
    json!({
        "spot": schedule.spot.map(|spot| json!({
            "action": spot.action.as_str(),
            "noticeAt": at(spot.notice),
            "at": at(spot.at),
        })),
        "rebalanceAt": schedule.rebalance.map(at),
        "maintenance": maintenance,
        "targetLifecycleState": visible.lifecycle.map(|state| state.as_str()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_hour_counts_sixty_minutes_and_no_more() {
        let history = NoTokenHistory::default();
        let minute = 29_932_440;
        history.count(NoTokenMetric::Rejected, minute * 60_000);
        history.count(NoTokenMetric::Rejected, (minute - 59) * 60_000);
        history.count(NoTokenMetric::Rejected, (minute - 60) * 60_000);
        assert_eq!(last_hour(&history, NoTokenMetric::Rejected, minute), 2);
        assert_eq!(last_hour(&history, NoTokenMetric::Answered, minute), 0);
    }
}

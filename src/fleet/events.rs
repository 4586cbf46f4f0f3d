//! What EC2 announces to an instance through IMDS, as a schedule: a spot interruption (with its
//! rebalance recommendation), scheduled maintenance events, and Auto Scaling target lifecycle
//! states. The configuration ([`EventsConfig`]) says when things happen, absolutely or after a
//! delay from the start; [`Schedule`] is the same with every time resolved to clock
//! milliseconds; [`Schedule::at`] is what is visible at one moment. Nothing here reads a clock:
//! snapshots prebuild one metadata tree per moment at which visibility changes
//! ([`Schedule::change_points`]), and each request picks the tree for its own time.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// When something happens: at a fixed time, or a delay after the service started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// At this time.
    At(OffsetDateTime),
    /// This long after the start.
    After(Duration),
}

/// A `When` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is neither an RFC 3339 time (2026-11-23T10:00:00Z) nor a delay (+30s, 2m, 1h30m)")]
pub struct BadWhen(String);

impl FromStr for When {
    type Err = BadWhen;
    fn from_str(s: &str) -> Result<When, BadWhen> {
        let text = s.trim();
        if let Ok(at) = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        {
            return Ok(When::At(at));
        }
        let delay = text.strip_prefix('+').unwrap_or(text);
        match delay {
            "0" | "now" => Ok(When::After(Duration::ZERO)),
            _ => humantime::parse_duration(delay)
                .map(When::After)
                .map_err(|_| BadWhen(s.to_owned())),
        }
    }
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            When::At(at) => f.write_str(&rfc3339(*at)),
            When::After(delay) => write!(f, "+{}", humantime::format_duration(*delay)),
        }
    }
}

impl Serialize for When {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for When {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<When, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl When {
    /// Clock milliseconds of this time, for a service started at `started` (milliseconds).
    pub fn resolve(&self, started: u64) -> u64 {
        match self {
            When::At(at) => (at.unix_timestamp_nanos() / 1_000_000).max(0) as u64,
            When::After(delay) => started.saturating_add(delay.as_millis() as u64),
        }
    }

    /// The fixed time `millis` (clock milliseconds).
    pub fn at_millis(millis: u64) -> When {
        When::At(datetime(millis))
    }
}

/// What a spot interruption does to the instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpotAction {
    /// The instance is terminated.
    #[default]
    Terminate,
    /// The instance is stopped.
    Stop,
    /// The instance is hibernated.
    Hibernate,
}

impl SpotAction {
    /// The name in `spot/instance-action`.
    pub fn as_str(self) -> &'static str {
        match self {
            SpotAction::Terminate => "terminate",
            SpotAction::Stop => "stop",
            SpotAction::Hibernate => "hibernate",
        }
    }
}

impl FromStr for SpotAction {
    type Err = String;
    fn from_str(s: &str) -> Result<SpotAction, String> {
        match s {
            "terminate" => Ok(SpotAction::Terminate),
            "stop" => Ok(SpotAction::Stop),
            "hibernate" => Ok(SpotAction::Hibernate),
            other => Err(format!(
                "`{other}` is not a spot interruption action: terminate, stop or hibernate"
            )),
        }
    }
}

/// How long before the interruption EC2 issues the notice.
pub const SPOT_WARNING: Duration = Duration::from_secs(120);

/// A spot interruption as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpotConfig {
    /// What happens to the instance.
    #[serde(default)]
    pub action: SpotAction,
    /// When the notice (`spot/instance-action`) appears.
    pub notice: When,
    /// Seconds from the notice to the action (EC2: 120; 0 for hibernation, which starts at once).
    #[serde(default = "default_warning_seconds")]
    pub warning_seconds: u64,
}

fn default_warning_seconds() -> u64 {
    SPOT_WARNING.as_secs()
}

/// A scheduled event's code (EC2's `EventCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventCode {
    /// `instance-reboot`.
    InstanceReboot,
    /// `system-reboot`.
    SystemReboot,
    /// `system-maintenance`.
    SystemMaintenance,
    /// `instance-retirement`.
    InstanceRetirement,
    /// `instance-stop`.
    InstanceStop,
}

impl EventCode {
    /// The code as EC2 writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventCode::InstanceReboot => "instance-reboot",
            EventCode::SystemReboot => "system-reboot",
            EventCode::SystemMaintenance => "system-maintenance",
            EventCode::InstanceRetirement => "instance-retirement",
            EventCode::InstanceStop => "instance-stop",
        }
    }

    /// The description EC2 gives an event of this code.
    pub fn description(self) -> &'static str {
        match self {
            EventCode::InstanceReboot => "scheduled reboot",
            EventCode::SystemReboot => "scheduled reboot",
            EventCode::SystemMaintenance => "scheduled maintenance",
            EventCode::InstanceRetirement => "The instance is running on degraded hardware",
            EventCode::InstanceStop => "The instance is running on degraded hardware",
        }
    }
}

impl FromStr for EventCode {
    type Err = String;
    fn from_str(s: &str) -> Result<EventCode, String> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
            format!("`{s}` is not an event code: instance-reboot, system-reboot, system-maintenance, instance-retirement or instance-stop")
        })
    }
}

/// A scheduled maintenance event as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// `instance-event-` and 17 hex digits; derived from the instance and position when omitted.
    pub id: Option<String>,
    /// What EC2 will do.
    pub code: EventCode,
    /// The description (default: EC2's for the code).
    pub description: Option<String>,
    /// When the event's window opens (`NotBefore`).
    pub not_before: When,
    /// When it closes (`NotAfter`; default: two hours after `not_before`). The event is
    /// completed then, unless completed or canceled before.
    pub not_after: Option<When>,
    /// The latest time it can be rescheduled to (`NotBeforeDeadline`); without one it cannot be.
    pub not_before_deadline: Option<When>,
    /// When it is announced (default: the start).
    pub announced: Option<When>,
    /// When it was completed early.
    pub completed: Option<When>,
    /// When it was canceled.
    pub canceled: Option<When>,
}

/// An Auto Scaling target lifecycle state (`autoscaling/target-lifecycle-state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LifecycleState {
    /// `InService`.
    InService,
    /// `Terminated`.
    Terminated,
    /// `Detached`.
    Detached,
    /// `Standby`.
    Standby,
    /// `Warmed:Stopped`.
    #[serde(rename = "Warmed:Stopped")]
    WarmedStopped,
    /// `Warmed:Running`.
    #[serde(rename = "Warmed:Running")]
    WarmedRunning,
    /// `Warmed:Hibernated`.
    #[serde(rename = "Warmed:Hibernated")]
    WarmedHibernated,
    /// `Warmed:Terminated`.
    #[serde(rename = "Warmed:Terminated")]
    WarmedTerminated,
}

impl LifecycleState {
    /// The state as IMDS writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleState::InService => "InService",
            LifecycleState::Terminated => "Terminated",
            LifecycleState::Detached => "Detached",
            LifecycleState::Standby => "Standby",
            LifecycleState::WarmedStopped => "Warmed:Stopped",
            LifecycleState::WarmedRunning => "Warmed:Running",
            LifecycleState::WarmedHibernated => "Warmed:Hibernated",
            LifecycleState::WarmedTerminated => "Warmed:Terminated",
        }
    }
}

impl FromStr for LifecycleState {
    type Err = String;
    fn from_str(s: &str) -> Result<LifecycleState, String> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
            format!("`{s}` is not a target lifecycle state: InService, Terminated, Detached, Standby, Warmed:Stopped, Warmed:Running, Warmed:Hibernated or Warmed:Terminated")
        })
    }
}

/// A move to a target lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// The state.
    pub state: LifecycleState,
    /// When `target-lifecycle-state` shows it.
    pub at: When,
}

/// An instance's events as configured (`[instance.events]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// A spot interruption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot: Option<SpotConfig>,
    /// When `events/recommendations/rebalance` appears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<When>,
    /// Scheduled maintenance events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintenance: Vec<MaintenanceConfig>,
    /// Auto Scaling target lifecycle states, in any order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_lifecycle: Vec<LifecycleConfig>,
    /// Only the first this many distinct client addresses to ask for `spot/`, `events/` or
    /// `autoscaling/` see any event (AEMM's `--mock-ip-count`); every client when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_limit: Option<usize>,
}

/// Most maintenance events in force (not yet completed, canceled or past their window) one
/// instance may have.
pub const MAX_SCHEDULED: usize = 50;
/// Most ended maintenance events kept for `events/maintenance/history`: the latest ones.
pub const MAX_HISTORY: usize = 20;
/// Most target lifecycle states still to come one instance may have.
pub const MAX_PENDING_LIFECYCLE: usize = 50;

impl MaintenanceConfig {
    /// When the event ended by `now` (completed, canceled, or its window closed), if it has;
    /// times count from `started` where relative.
    fn ended(&self, started: u64, now: u64) -> Option<u64> {
        let at = |w: When| w.resolve(started);
        let closes = self
            .not_after
            .map_or(at(self.not_before).saturating_add(2 * 3_600_000), at);
        [self.completed.map(at), self.canceled.map(at), Some(closes)]
            .into_iter()
            .flatten()
            .filter(|end| *end <= now)
            .min()
    }
}

impl EventsConfig {
    /// How many maintenance events are in force at `now`, and how many target lifecycle
    /// states are still to come.
    pub fn in_force(&self, started: u64, now: u64) -> (usize, usize) {
        let scheduled = self
            .maintenance
            .iter()
            .filter(|event| event.ended(started, now).is_none())
            .count();
        let to_come = self
            .target_lifecycle
            .iter()
            .filter(|change| change.at.resolve(started) > now)
            .count();
        (scheduled, to_come)
    }

    /// Keeps what can still be shown at `now` or later, so an instance's events (and the trees
    /// prebuilt for them) grow with the events in force, not with its history: every
    /// maintenance event in force and the latest [`MAX_HISTORY`] ended ones, the target
    /// lifecycle state in force and those still to come. An error when a change (which had
    /// `before` in force, see [`EventsConfig::in_force`]) leaves more in force than
    /// [`MAX_SCHEDULED`] or still to come than [`MAX_PENDING_LIFECYCLE`]: one that lowers the
    /// count is never refused, whatever the count.
    pub fn bounded(
        &mut self,
        started: u64,
        now: u64,
        before: (usize, usize),
    ) -> Result<(), String> {
        let (in_force, to_come) = self.in_force(started, now);
        if in_force > MAX_SCHEDULED && in_force > before.0 {
            return Err(format!(
                "an instance has at most {MAX_SCHEDULED} scheduled events that are not completed or canceled"
            ));
        }
        let mut ended: Vec<u64> = self
            .maintenance
            .iter()
            .filter_map(|event| event.ended(started, now))
            .collect();
        ended.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(oldest_kept) = ended.get(MAX_HISTORY.saturating_sub(1)).copied() {
            // Ended at the same time as the oldest kept: as many as leave MAX_HISTORY in all.
            let mut ties = MAX_HISTORY - ended.iter().filter(|end| **end > oldest_kept).count();
            self.maintenance
                .retain(|event| match event.ended(started, now) {
                    None => true,
                    Some(end) if end > oldest_kept => true,
                    Some(end) if end == oldest_kept && ties > 0 => {
                        ties -= 1;
                        true
                    }
                    Some(_) => false,
                });
        }
        self.target_lifecycle
            .sort_by_key(|change| change.at.resolve(started));
        let shown = self
            .target_lifecycle
            .iter()
            .rposition(|change| change.at.resolve(started) <= now);
        if let Some(shown) = shown {
            self.target_lifecycle.drain(..shown);
        }
        if to_come > MAX_PENDING_LIFECYCLE && to_come > before.1 {
            return Err(format!(
                "an instance has at most {MAX_PENDING_LIFECYCLE} target lifecycle states still to come"
            ));
        }
        Ok(())
    }

    /// The same events with every delay fixed to a time, for a service started at `started`:
    /// what the control plane keeps, so a restart does not move them. Events get the ids they
    /// have on the instance `instance_id`.
    pub fn fixed(&self, started: u64, instance_id: &str) -> EventsConfig {
        let fix = |when: When| When::at_millis(when.resolve(started));
        let fix_opt = |when: Option<When>| when.map(fix);
        EventsConfig {
            spot: self.spot.clone().map(|spot| SpotConfig {
                notice: fix(spot.notice),
                ..spot
            }),
            rebalance: fix_opt(self.rebalance),
            maintenance: self
                .maintenance
                .iter()
                .enumerate()
                .map(|(i, event)| MaintenanceConfig {
                    id: Some(
                        event
                            .id
                            .clone()
                            .unwrap_or_else(|| derived_event_id(instance_id, i)),
                    ),
                    not_before: fix(event.not_before),
                    not_after: fix_opt(event.not_after),
                    not_before_deadline: fix_opt(event.not_before_deadline),
                    announced: Some(event.announced.map_or(When::at_millis(started), fix)),
                    completed: fix_opt(event.completed),
                    canceled: fix_opt(event.canceled),
                    ..event.clone()
                })
                .collect(),
            target_lifecycle: self
                .target_lifecycle
                .iter()
                .map(|change| LifecycleConfig {
                    at: fix(change.at),
                    ..*change
                })
                .collect(),
            client_limit: self.client_limit,
        }
    }
}

/// A spot interruption with resolved times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpotInterruption {
    /// What happens.
    pub action: SpotAction,
    /// When the notice appears (clock milliseconds).
    pub notice: u64,
    /// When the action happens.
    pub at: u64,
}

/// How a maintenance event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (`[Completed] `).
    Completed,
    /// Called off (`[Canceled] `).
    Canceled,
}

/// A maintenance event with resolved times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceEvent {
    /// `instance-event-...`.
    pub id: String,
    /// Its code.
    pub code: EventCode,
    /// Its description, without a history prefix.
    pub description: String,
    /// `NotBefore`.
    pub not_before: u64,
    /// `NotAfter`.
    pub not_after: u64,
    /// `NotBeforeDeadline`.
    pub not_before_deadline: Option<u64>,
    /// When it appears under `scheduled`.
    pub announced: u64,
    /// How and when it ended, if it did before `not_after`.
    pub ended: Option<(Outcome, u64)>,
}

impl MaintenanceEvent {
    /// How it has ended by `now`, if it has: as recorded, else completed at `not_after`.
    pub fn outcome_at(&self, now: u64) -> Option<Outcome> {
        match self.ended {
            Some((outcome, at)) if at <= now => Some(outcome),
            _ if self.not_after <= now => Some(Outcome::Completed),
            _ => None,
        }
    }
}

/// An instance's events with every time resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    /// The spot interruption.
    pub spot: Option<SpotInterruption>,
    /// When the rebalance recommendation appears.
    pub rebalance: Option<u64>,
    /// Maintenance events, in configured order.
    pub maintenance: Vec<MaintenanceEvent>,
    /// Target lifecycle states, by time.
    pub lifecycle: Vec<(u64, LifecycleState)>,
    /// How many client addresses may see events (all when `None`).
    pub client_limit: Option<usize>,
}

/// What the events look like at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsNow<'a> {
    /// The spot interruption, once noticed.
    pub spot: Option<SpotInterruption>,
    /// The rebalance recommendation's notice time, once issued.
    pub rebalance: Option<u64>,
    /// Announced events still to come or in progress.
    pub scheduled: Vec<&'a MaintenanceEvent>,
    /// Ended events.
    pub history: Vec<(&'a MaintenanceEvent, Outcome)>,
    /// The target lifecycle state, once there is one.
    pub lifecycle: Option<LifecycleState>,
}

impl Schedule {
    /// `config` resolved for a service started at `started` (clock milliseconds) on the
    /// instance `instance_id` (which seeds the ids of events configured without one).
    pub fn resolve(config: &EventsConfig, started: u64, instance_id: &str) -> Schedule {
        let spot = config.spot.as_ref().map(|spot| {
            let notice = spot.notice.resolve(started);
            SpotInterruption {
                action: spot.action,
                notice,
                at: notice.saturating_add(spot.warning_seconds.saturating_mul(1000)),
            }
        });
        let maintenance = config
            .maintenance
            .iter()
            .enumerate()
            .map(|(i, event)| {
                let not_before = event.not_before.resolve(started);
                let ended = [
                    (Outcome::Canceled, event.canceled),
                    (Outcome::Completed, event.completed),
                ]
                .into_iter()
                .filter_map(|(outcome, at)| Some((outcome, at?.resolve(started))))
                .min_by_key(|(_, at)| *at);
                MaintenanceEvent {
                    id: event
                        .id
                        .clone()
                        .unwrap_or_else(|| derived_event_id(instance_id, i)),
                    code: event.code,
                    description: event
                        .description
                        .clone()
                        .unwrap_or_else(|| event.code.description().to_owned()),
                    not_before,
                    not_after: event
                        .not_after
                        .map_or(not_before + 2 * 3_600_000, |w| w.resolve(started)),
                    not_before_deadline: event.not_before_deadline.map(|w| w.resolve(started)),
                    announced: event.announced.map_or(started, |w| w.resolve(started)),
                    ended,
                }
            })
            .collect();
        let mut lifecycle: Vec<(u64, LifecycleState)> = config
            .target_lifecycle
            .iter()
            .map(|change| (change.at.resolve(started), change.state))
            .collect();
        lifecycle.sort_by_key(|(at, _)| *at);
        Schedule {
            spot,
            rebalance: config.rebalance.map(|w| w.resolve(started)),
            maintenance,
            lifecycle,
            client_limit: config.client_limit,
        }
    }

    /// Every moment at which what is visible changes, ascending, without repeats.
    pub fn change_points(&self) -> Vec<u64> {
        let mut points: Vec<u64> = self.spot.iter().map(|s| s.notice).collect();
        points.extend(self.rebalance);
        for event in &self.maintenance {
            points.extend([event.announced, event.not_after]);
            points.extend(event.ended.map(|(_, at)| at));
        }
        points.extend(self.lifecycle.iter().map(|(at, _)| *at));
        points.sort_unstable();
        points.dedup();
        points
    }

    /// What is visible at `now`.
    pub fn at(&self, now: u64) -> EventsNow<'_> {
        let mut visible = EventsNow {
            spot: self.spot.filter(|s| s.notice <= now),
            rebalance: self.rebalance.filter(|at| *at <= now),
            lifecycle: self
                .lifecycle
                .iter()
                .rev()
                .find(|(at, _)| *at <= now)
                .map(|(_, state)| *state),
            ..EventsNow::default()
        };
        for event in self.maintenance.iter().filter(|e| e.announced <= now) {
            match event.outcome_at(now) {
                Some(outcome) => visible.history.push((event, outcome)),
                None => visible.scheduled.push(event),
            }
        }
        visible
    }
}

/// A stable `instance-event-` id for the `index`th configured event of an instance.
fn derived_event_id(instance_id: &str, index: usize) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{instance_id}/event/{index}"));
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("instance-event-{}", &hex[..17])
}

/// A new random `instance-event-` id.
pub fn new_event_id() -> String {
    let hex: String = rand::random::<[u8; 9]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("instance-event-{}", &hex[..17])
}

/// The time at clock milliseconds `millis`, in UTC.
pub fn datetime(millis: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `2026-11-23T10:00:00Z`: spot and rebalance times, and `When` in text.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .expect("formatting a UTC date with a fixed description cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: u64 = 1_800_000_000_000;

    fn config(toml_text: &str) -> EventsConfig {
        toml::from_str(toml_text).unwrap()
    }

    fn maintenance(n: u64, ended: Option<u64>) -> MaintenanceConfig {
        MaintenanceConfig {
            id: Some(format!("instance-event-{n:017x}")),
            code: EventCode::SystemReboot,
            description: None,
            not_before: When::at_millis(START + 3_600_000 + n),
            not_after: None,
            not_before_deadline: None,
            announced: None,
            completed: ended.map(When::at_millis),
            canceled: None,
        }
    }

    #[test]
    fn events_keep_what_is_in_force_and_the_latest_history() {
        let now = START + 1_000_000;
        let mut events = EventsConfig {
            maintenance: (0..100)
                .map(|n| maintenance(n, (n < 60).then_some(START + n)))
                .collect(),
            target_lifecycle: (0..30)
                .map(|n| LifecycleConfig {
                    state: LifecycleState::InService,
                    at: When::at_millis(START + n * 60_000),
                })
                .collect(),
            ..EventsConfig::default()
        };
        events.bounded(START, now, (0, 0)).unwrap();
        let ids: Vec<u64> = events
            .maintenance
            .iter()
            .map(|e| u64::from_str_radix(&e.id.as_ref().unwrap()[15..], 16).unwrap())
            .collect();
        // The 40 in force, and the 20 that ended last (40 to 59).
        assert_eq!(ids, (40..100).collect::<Vec<_>>());
        // The state shown now (minute 16, the last at or before now), and the 13 to come.
        assert_eq!(events.target_lifecycle.len(), 14);
        assert_eq!(
            events.target_lifecycle[0].at.resolve(0),
            START + 16 * 60_000
        );

        let mut crowded = EventsConfig {
            maintenance: (0..=MAX_SCHEDULED as u64)
                .map(|n| maintenance(n, None))
                .collect(),
            ..EventsConfig::default()
        };
        assert!(crowded.bounded(START, now, (MAX_SCHEDULED, 0)).is_err());
        // Already over the cap (from a config file): a change that does not add is allowed.
        let over = crowded.in_force(START, now);
        assert!(crowded.bounded(START, now, over).is_ok());
        crowded.maintenance.pop();
        assert!(crowded.bounded(START, now, over).is_ok());
    }

    #[test]
    fn when_reads_delays_and_times() {
        assert_eq!("+30s".parse(), Ok(When::After(Duration::from_secs(30))));
        assert_eq!("2m".parse(), Ok(When::After(Duration::from_secs(120))));
        assert_eq!("1h30m".parse(), Ok(When::After(Duration::from_secs(5400))));
        assert_eq!("0".parse(), Ok(When::After(Duration::ZERO)));
        let at: When = "2027-01-21T09:00:43Z".parse().unwrap();
        assert_eq!(at.resolve(0), 1_800_522_043_000);
        assert_eq!(at.to_string(), "2027-01-21T09:00:43Z");
        assert!("soon".parse::<When>().is_err());
        assert_eq!(When::After(Duration::from_secs(90)).to_string(), "+1m 30s");
    }

    #[test]
    fn a_spot_notice_appears_at_its_time_and_keeps_its_action_time() {
        let schedule = Schedule::resolve(
            &config("[spot]\naction = \"stop\"\nnotice = \"+30s\"\n"),
            START,
            "i-1",
        );
        assert_eq!(schedule.at(START + 29_999).spot, None);
        let spot = schedule.at(START + 30_000).spot.unwrap();
        assert_eq!(spot.action, SpotAction::Stop);
        assert_eq!(spot.at, START + 150_000);
        assert_eq!(schedule.at(START + 600_000).spot.unwrap().at, spot.at);
        assert_eq!(schedule.change_points(), vec![START + 30_000]);
    }

    #[test]
    fn maintenance_events_move_to_history_when_they_end() {
        let schedule = Schedule::resolve(
            &config(
                "[[maintenance]]\ncode = \"system-reboot\"\nnot_before = \"+1h\"\n\
                 [[maintenance]]\ncode = \"instance-stop\"\nnot_before = \"+2h\"\nannounced = \"+10m\"\ncanceled = \"+20m\"\n",
            ),
            START,
            "i-1",
        );
        let hour = 3_600_000;
        let now = schedule.at(START);
        assert_eq!(now.scheduled.len(), 1);
        assert!(now.history.is_empty());
        let later = schedule.at(START + 15 * 60_000);
        assert_eq!(later.scheduled.len(), 2);
        let canceled = schedule.at(START + 20 * 60_000);
        assert_eq!(canceled.scheduled.len(), 1);
        assert_eq!(canceled.history[0].1, Outcome::Canceled);
        let done = schedule.at(START + 3 * hour);
        assert!(done.scheduled.is_empty());
        assert_eq!(done.history.len(), 2);
        assert_eq!(done.history[0].1, Outcome::Completed);
        assert_eq!(
            schedule.maintenance[0].id.len(),
            "instance-event-".len() + 17
        );
        assert_ne!(schedule.maintenance[0].id, schedule.maintenance[1].id);
    }

    #[test]
    fn the_lifecycle_state_is_the_latest_reached() {
        let schedule = Schedule::resolve(
            &config(
                "[[target_lifecycle]]\nstate = \"Terminated\"\nat = \"+10m\"\n\
                 [[target_lifecycle]]\nstate = \"InService\"\nat = \"0\"\n",
            ),
            START,
            "i-1",
        );
        assert_eq!(
            schedule.at(START).lifecycle,
            Some(LifecycleState::InService)
        );
        assert_eq!(
            schedule.at(START + 600_000).lifecycle,
            Some(LifecycleState::Terminated)
        );
        assert_eq!(schedule.at(START - 1).lifecycle, None);
        assert_eq!(
            "Warmed:Hibernated".parse(),
            Ok(LifecycleState::WarmedHibernated)
        );
    }
}

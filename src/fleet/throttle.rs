//! Per-instance throttling, as EC2 throttles IMDS per instance, so that one noisy guest cannot
//! starve the others: a budget of requests per second and a cap on simultaneous connections,
//! each owned by the instance's [`crate::fleet::state::InstanceSlot`].
//!
//! EC2 documents that it throttles queries to IMDS "on a per-instance basis" and limits "the
//! number of simultaneous connections from an instance to the IMDS", without a figure (EC2 User
//! Guide, "Retrieve instance metadata", section "Query throttling"). The only published figure
//! for the link-local services is the one for the Amazon-provided DNS server, which each network
//! interface may send at most 1024 packets per second, beyond which packets are dropped (Amazon
//! VPC User Guide, "DNS quotas"; AWS knowledge center "vpc-find-cause-of-failed-dns-queries").
//! imds takes that figure as its default budget, counted in requests rather than packets: a
//! request costs several packets on EC2, so a client that works on EC2 is never throttled by it.
//!
//! The budget is a token bucket holding one second's worth of requests (the burst equals the
//! rate), kept as the generic cell rate algorithm: one `AtomicU64`, the theoretical arrival
//! time of the next request in nanoseconds, moved by a compare-and-swap loop. Lock-free, O(1),
//! no allocation, and the reading and the refill can never tear apart as two words could.
//!
//! The connection cap is kept as the instance's open connections, each with a handle that can
//! tell whether it is waiting for its client and close it ([`Evictable`]), in one map under one
//! lock per instance. The lock is taken only when one of the instance's connections opens or
//! closes, never per request. At the cap, a new connection makes room by evicting the
//! instance's connections that have waited longest for their client (idle between requests,
//! or with no complete request head yet), as a full server does; connections answering are
//! never evicted, and other instances' connections are not the instance's to evict.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id_map::IdMap;
use crate::log_limit::LogLimit;

/// `[instance.throttle]`: one instance's limits; an absent key takes the server-wide default
/// (`[server] instance_requests_per_second`, `instance_max_connections`); 0 is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Requests answered per second, with a burst of as many at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<u32>,
    /// Connections open at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
}

impl ThrottleConfig {
    /// Whether nothing is set (the server-wide defaults apply).
    pub fn is_unset(&self) -> bool {
        *self == ThrottleConfig::default()
    }
}

/// The limits in force for one instance; 0 is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThrottleLimits {
    /// Requests answered per second (and at most as many at once).
    pub requests_per_second: u32,
    /// Connections open at once.
    pub max_connections: u32,
}

impl ThrottleLimits {
    /// The limits of an instance configured with `own`, taking `defaults` for what it leaves out.
    pub fn of(own: &ThrottleConfig, defaults: ThrottleLimits) -> ThrottleLimits {
        ThrottleLimits {
            requests_per_second: own
                .requests_per_second
                .unwrap_or(defaults.requests_per_second),
            max_connections: own.max_connections.unwrap_or(defaults.max_connections),
        }
    }
}

/// Why a request was throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleReason {
    /// Beyond the instance's requests per second.
    Requests,
    /// On a connection beyond the instance's simultaneous connections.
    Connections,
}

impl ThrottleReason {
    /// Every reason, in counter order.
    pub const ALL: [ThrottleReason; 2] = [ThrottleReason::Requests, ThrottleReason::Connections];

    /// `requests` or `connections`, as in the `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            ThrottleReason::Requests => "requests",
            ThrottleReason::Connections => "connections",
        }
    }
}

const NANOS_PER_MILLI: u64 = 1_000_000;
const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// A budget of requests per second with a burst of one second's worth: a token bucket, kept as
/// the time (nanoseconds since the epoch) at which it would be full again.
#[derive(Debug, Default)]
pub struct RequestBudget {
    /// When the bucket is full again; up to one second ahead of the latest admitted request.
    full_at: AtomicU64,
}

impl RequestBudget {
    /// Takes one request out of a budget of `per_second` (0: unlimited) at `now_millis` (clock
    /// milliseconds); false when the budget is spent. A clock that steps back leaves the
    /// bucket as if it had been full.
    pub fn admit(&self, now_millis: u64, per_second: u32) -> bool {
        if per_second == 0 {
            return true;
        }
        // One request's worth of time, rounded up so that the rate is never exceeded.
        let interval = NANOS_PER_SECOND.div_ceil(u64::from(per_second));
        let burst = interval * u64::from(per_second);
        let now = now_millis.saturating_mul(NANOS_PER_MILLI);
        let limit = now.saturating_add(burst);
        let mut current = self.full_at.load(Ordering::Relaxed);
        loop {
            // Beyond reach only when the clock stepped back (or the rate was lowered).
            let from = match current > limit {
                true => now,
                false => current.max(now),
            };
            let next = from + interval;
            if next > limit {
                return false;
            }
            match self.full_at.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

/// An open connection as its instance's cap sees it.
pub trait Evictable: Send + Sync {
    /// How long it has been waiting for its client (idle since its last answer, or since it
    /// opened with no complete request head yet); `None` while a request is being answered or
    /// once it is closing.
    fn waiting(&self) -> Option<Duration>;

    /// Closes it to make room if it is still waiting for its client; false if it no longer is.
    fn evict(&self) -> bool;
}

/// An instance's open connections, each counted against its cap.
#[derive(Default)]
struct OpenConnections {
    next: u64,
    open: IdMap<Arc<dyn Evictable>>,
}

impl std::fmt::Debug for OpenConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenConnections")
            .field("open", &self.open.len())
            .finish_non_exhaustive()
    }
}

impl OpenConnections {
    /// Evicts the connections that have waited longest for their client (at least `grace`)
    /// until fewer than `max` are open; the number evicted. Evicts none when too few are
    /// waiting to get below `max`.
    fn make_room(&mut self, max: usize, grace: Duration) -> u32 {
        let needed = self.open.len() + 1 - max;
        let mut waiting: Vec<(Duration, u64)> = self
            .open
            .iter()
            .filter_map(|(id, connection)| Some((connection.waiting()?, *id)))
            .filter(|(waited, _)| *waited >= grace)
            .collect();
        if waiting.len() < needed {
            return 0;
        }
        // Longest waiting first; of those that started waiting in the same millisecond, the
        // one counted first.
        waiting.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut evicted = 0;
        for (_, id) in waiting {
            if self.open.len() < max {
                break;
            }
            // A request may have arrived on it since: then it stays.
            if self.open[&id].evict() {
                self.open.remove(&id);
                evicted += 1;
            }
        }
        evicted
    }
}

/// What counting a new connection against its instance's cap did.
#[derive(Debug)]
pub struct Admission {
    /// The connection as counted; `None` when the instance had as many open as it may and not
    /// enough of them were waiting for their client to make room.
    pub counted: Option<ConnectionGuard>,
    /// The instance's connections closed to make room.
    pub evicted: u32,
}

/// One instance's throttle: its request budget, its open connections, what it throttled, and
/// the log line it may write (once a minute).
#[derive(Debug)]
pub struct Throttle {
    budget: RequestBudget,
    connections: Arc<Mutex<OpenConnections>>,
    throttled: [AtomicU64; ThrottleReason::ALL.len()],
    log: LogLimit,
}

/// How often a throttled instance is logged.
const LOG_PERIOD: Duration = Duration::from_secs(60);

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle {
            budget: RequestBudget::default(),
            connections: Arc::default(),
            throttled: Default::default(),
            log: LogLimit::new(LOG_PERIOD),
        }
    }
}

/// A connection counted against its instance's cap, uncounted when dropped (when the
/// connection closes) or when it is evicted to make room, whichever comes first.
#[derive(Debug)]
pub struct ConnectionGuard {
    connections: Arc<Mutex<OpenConnections>>,
    id: u64,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        lock(&self.connections).open.remove(&self.id);
    }
}

/// The map holds no invariant a panic could break halfway: a poisoned lock is taken as is.
fn lock(connections: &Mutex<OpenConnections>) -> MutexGuard<'_, OpenConnections> {
    connections.lock().unwrap_or_else(|e| e.into_inner())
}

impl Throttle {
    /// Takes one request out of the budget of `per_second` (0: unlimited) at `now_millis`.
    pub fn admit(&self, now_millis: u64, per_second: u32) -> bool {
        self.budget.admit(now_millis, per_second)
    }

    /// Counts `connection` against a cap of `max` (0: unlimited). When `max` are open, first
    /// evicts the connections that have waited longest for their client, if they have for at
    /// least `grace`.
    pub fn connect(&self, max: u32, connection: Arc<dyn Evictable>, grace: Duration) -> Admission {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        let mut connections = lock(&self.connections);
        let evicted = match max != 0 && connections.open.len() >= max {
            true => connections.make_room(max, grace),
            false => 0,
        };
        if max != 0 && connections.open.len() >= max {
            return Admission {
                counted: None,
                evicted,
            };
        }
        let id = connections.next;
        connections.next += 1;
        connections.open.insert(id, connection);
        Admission {
            counted: Some(ConnectionGuard {
                connections: self.connections.clone(),
                id,
            }),
            evicted,
        }
    }

    /// Connections open now.
    pub fn connections(&self) -> u32 {
        u32::try_from(lock(&self.connections).open.len()).unwrap_or(u32::MAX)
    }

    /// Counts a throttled request; `Some(lines held back)` when it may be logged (at most once
    /// a minute).
    pub fn throttled(&self, why: ThrottleReason) -> Option<u64> {
        self.throttled[why as usize].fetch_add(1, Ordering::Relaxed);
        self.log.allow()
    }

    /// Requests throttled so far for `why`.
    pub fn throttled_total(&self, why: ThrottleReason) -> u64 {
        self.throttled[why as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Requests admitted at `at` until the first refusal.
    fn drain(budget: &RequestBudget, at: u64, per_second: u32) -> u64 {
        let mut admitted = 0;
        while budget.admit(at, per_second) {
            admitted += 1;
            assert!(admitted <= u64::from(per_second), "never beyond the burst");
        }
        admitted
    }

    #[test]
    fn a_full_budget_admits_one_second_of_requests_at_once_then_refuses() {
        let budget = RequestBudget::default();
        assert_eq!(drain(&budget, 1_000_000, 5), 5);
        assert!(!budget.admit(1_000_000, 5));
        assert!(
            !budget.admit(1_000_199, 5),
            "a fifth of a second not yet gone"
        );
        assert!(
            budget.admit(1_000_200, 5),
            "one request back every fifth of a second"
        );
        assert!(!budget.admit(1_000_200, 5));
        assert_eq!(drain(&budget, 1_010_000, 5), 5, "full again, not fuller");
    }

    #[test]
    fn zero_requests_per_second_is_unlimited() {
        let budget = RequestBudget::default();
        assert!((0..100_000).all(|_| budget.admit(7, 0)));
    }

    #[test]
    fn a_clock_stepped_back_finds_the_budget_full_rather_than_spent_for_as_long() {
        let budget = RequestBudget::default();
        assert_eq!(drain(&budget, 10_000_000, 10), 10);
        assert_eq!(drain(&budget, 6_400_000, 10), 10, "an hour earlier");
    }

    /// A connection that waits for its client for `waiting` ms (`None`: answering).
    #[derive(Debug, Default)]
    struct Fake {
        waiting: std::sync::Mutex<Option<u64>>,
        evicted: std::sync::atomic::AtomicBool,
    }

    impl Fake {
        fn new(waiting: Option<u64>) -> Arc<Fake> {
            Arc::new(Fake {
                waiting: std::sync::Mutex::new(waiting),
                evicted: Default::default(),
            })
        }

        fn evicted(&self) -> bool {
            self.evicted.load(Ordering::Relaxed)
        }
    }

    impl Evictable for Fake {
        fn waiting(&self) -> Option<Duration> {
            let waiting = (*self.waiting.lock().unwrap())?;
            (!self.evicted()).then(|| Duration::from_millis(waiting))
        }

        fn evict(&self) -> bool {
            self.waiting().is_some() && !self.evicted.swap(true, Ordering::Relaxed)
        }
    }

    const GRACE: Duration = Duration::from_millis(100);

    fn connect(throttle: &Throttle, max: u32, connection: &Arc<Fake>) -> Admission {
        throttle.connect(max, connection.clone(), GRACE)
    }

    #[test]
    fn connections_beyond_the_cap_are_refused_while_all_are_answering_until_one_closes() {
        let throttle = Throttle::default();
        let answering = Fake::new(None);
        let first = connect(&throttle, 2, &answering).counted.unwrap();
        let _second = connect(&throttle, 2, &answering).counted.unwrap();
        let refused = connect(&throttle, 2, &Fake::new(Some(5000)));
        assert!(refused.counted.is_none());
        assert_eq!(refused.evicted, 0);
        assert_eq!(throttle.connections(), 2);
        drop(first);
        assert_eq!(throttle.connections(), 1);
        assert!(connect(&throttle, 2, &answering).counted.is_some());
        assert!((0..1000)
            .map(|_| connect(&throttle, 0, &answering))
            .all(|a| a.counted.is_some() && a.evicted == 0));
    }

    #[test]
    fn at_the_cap_the_connection_waiting_longest_for_its_client_makes_room() {
        let throttle = Throttle::default();
        let answering = Fake::new(None);
        let idle = Fake::new(Some(200));
        let idle_longest = Fake::new(Some(30_000));
        let headless = Fake::new(Some(1_000));
        let guards: Vec<_> = [&answering, &idle, &idle_longest, &headless]
            .into_iter()
            .map(|c| connect(&throttle, 4, c).counted.unwrap())
            .collect();

        let newcomer = connect(&throttle, 4, &Fake::new(Some(0)));
        assert!(newcomer.counted.is_some());
        assert_eq!(newcomer.evicted, 1);
        assert!(idle_longest.evicted());
        assert!(!idle.evicted() && !headless.evicted() && !answering.evicted());
        assert_eq!(throttle.connections(), 4, "the newcomer took its place");

        assert_eq!(connect(&throttle, 4, &Fake::new(Some(0))).evicted, 1);
        assert!(headless.evicted(), "the next longest");
        // The evicted connection closing later uncounts nothing more.
        drop(guards);
        assert_eq!(throttle.connections(), 1, "only the first newcomer is left");
    }

    #[test]
    fn a_connection_that_has_just_connected_is_given_the_grace_to_send_its_request() {
        let throttle = Throttle::default();
        let just_connected = Fake::new(Some(20));
        let _held = connect(&throttle, 1, &just_connected).counted.unwrap();
        let refused = connect(&throttle, 1, &Fake::new(Some(0)));
        assert!(refused.counted.is_none());
        assert!(!just_connected.evicted());
        *just_connected.waiting.lock().unwrap() = Some(100);
        assert!(connect(&throttle, 1, &Fake::new(Some(0))).counted.is_some());
        assert!(just_connected.evicted());
    }

    #[test]
    fn a_connection_whose_request_arrives_first_is_not_evicted() {
        let throttle = Throttle::default();
        // Waiting as seen, but already answering when asked to close.
        struct Racing;
        impl Evictable for Racing {
            fn waiting(&self) -> Option<Duration> {
                Some(Duration::from_secs(9))
            }
            fn evict(&self) -> bool {
                false
            }
        }
        let _held = throttle
            .connect(1, Arc::new(Racing), GRACE)
            .counted
            .unwrap();
        let refused = connect(&throttle, 1, &Fake::new(Some(0)));
        assert!(refused.counted.is_none());
        assert_eq!(throttle.connections(), 1);
    }

    #[test]
    fn below_a_lowered_cap_evicts_only_when_enough_are_waiting_to_fit() {
        let throttle = Throttle::default();
        let idle = Fake::new(Some(500));
        let answering = Fake::new(None);
        let _guards: Vec<_> = [&idle, &answering, &answering]
            .into_iter()
            .map(|c| connect(&throttle, 0, c).counted.unwrap())
            .collect();
        let refused = connect(&throttle, 2, &Fake::new(Some(0)));
        assert!(refused.counted.is_none());
        assert!(!idle.evicted(), "evicting it would not have made room");
        let two_idle = Throttle::default();
        let others: Vec<_> = (0..3).map(|_| Fake::new(Some(500))).collect();
        let _guards: Vec<_> = others
            .iter()
            .map(|c| connect(&two_idle, 0, c).counted.unwrap())
            .collect();
        let admitted = connect(&two_idle, 2, &Fake::new(Some(0)));
        assert!(admitted.counted.is_some());
        assert_eq!(admitted.evicted, 2);
        assert_eq!(two_idle.connections(), 2);
    }

    #[test]
    fn one_instance_at_its_cap_evicts_none_of_another_instance_s_connections() {
        let busy = Throttle::default();
        let idle_elsewhere = Fake::new(Some(60_000));
        let quiet = Throttle::default();
        let _theirs = connect(&quiet, 1, &idle_elsewhere).counted.unwrap();
        let _held = connect(&busy, 1, &Fake::new(None)).counted.unwrap();
        assert!(connect(&busy, 1, &Fake::new(Some(0))).counted.is_none());
        assert!(!idle_elsewhere.evicted());
        assert_eq!(quiet.connections(), 1);
    }

    #[test]
    fn an_instance_takes_the_defaults_for_what_it_leaves_out() {
        let defaults = ThrottleLimits {
            requests_per_second: 1024,
            max_connections: 256,
        };
        let own = ThrottleConfig {
            requests_per_second: Some(0),
            max_connections: None,
        };
        let limits = ThrottleLimits::of(&own, defaults);
        assert_eq!(limits.requests_per_second, 0);
        assert_eq!(limits.max_connections, 256);
    }

    proptest! {
        #[test]
        fn no_window_admits_more_than_the_burst_and_its_duration_at_the_rate(
            per_second in 1u32..2000,
            steps in proptest::collection::vec((0u64..50, 1u32..40), 1..200),
        ) {
            let budget = RequestBudget::default();
            let mut now = 1_700_000_000_000u64;
            let mut admitted: Vec<u64> = Vec::new();
            for (advance, tries) in steps {
                now += advance;
                for _ in 0..tries {
                    if budget.admit(now, per_second) {
                        admitted.push(now);
                    }
                }
            }
            // Every window from one admission to a later one.
            for (i, &start) in admitted.iter().enumerate() {
                for (j, &end) in admitted.iter().enumerate().skip(i) {
                    let count = (j - i + 1) as u64;
                    let allowed = u64::from(per_second) * 1000 + u64::from(per_second) * (end - start);
                    prop_assert!(
                        count * 1000 <= allowed,
                        "{count} admitted within {} ms at {per_second}/s",
                        end - start
                    );
                }
            }
        }

        #[test]
        fn a_spent_budget_refills_at_the_configured_rate_up_to_one_second(
            per_second in 1u32..5000,
            waited in 0u64..3000,
        ) {
            let budget = RequestBudget::default();
            let start = 1_700_000_000_000u64;
            prop_assert_eq!(drain(&budget, start, per_second), u64::from(per_second));
            let refilled = drain(&budget, start + waited, per_second);
            let at_rate = (u64::from(per_second) * waited / 1000).min(u64::from(per_second));
            // The interval is rounded up to whole nanoseconds: at most one request late.
            prop_assert!(refilled <= at_rate, "{refilled} > {at_rate}");
            prop_assert!(refilled + 1 >= at_rate, "{refilled} << {at_rate}");
        }
    }
}

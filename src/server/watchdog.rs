//! One coarse watchdog per connection: it closes a connection whose client has kept it waiting
//! for a request head longer than the deadline, or, when the server is full, for longer than a
//! short grace (also while the client is still sending a body, which has its own deadline). It
//! never counts while a request is being answered.
//!
//! A connection's surface may evict it too ([`ClientWait`] is a
//! [`crate::fleet::throttle::Evictable`]): the guest API does so to make room under an
//! instance's connection cap. Either way the eviction is claimed by one compare-and-swap on the
//! connection's phase, the same word a request head's arrival moves, so a connection is evicted
//! only while it waits for its client and a request that arrives meanwhile is never answered
//! on a connection already given up.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Notify;

use crate::fleet::throttle::Evictable;

/// Why a connection waiting for its client was closed to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Every connection slot of the server was taken.
    ServerFull,
    /// Its instance had as many connections open as it may, and another of its connections
    /// or requests wanted one.
    InstanceCap,
}

impl Eviction {
    /// Every reason, in counter order.
    pub const ALL: [Eviction; 2] = [Eviction::ServerFull, Eviction::InstanceCap];

    /// `server_full` or `instance_cap`, as in the `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Eviction::ServerFull => "server_full",
            Eviction::InstanceCap => "instance_cap",
        }
    }

    /// The connection's phase once evicted for this reason.
    fn phase(self) -> u8 {
        match self {
            Eviction::ServerFull => EVICTED_SERVER_FULL,
            Eviction::InstanceCap => EVICTED_INSTANCE_CAP,
        }
    }
}

/// Why the watchdog ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overdue {
    /// The client kept it waiting past the deadline.
    Deadline,
    /// The connection was waiting for its client and was closed to make room.
    Evicted(Eviction),
}

/// Waiting for a request head.
const IDLE: u8 = 0;
/// A head has arrived; the body is still coming (it has a deadline of its own).
const READING_BODY: u8 = 1;
/// The request is being answered.
const ANSWERING: u8 = 2;
/// Evicted because the server was full: closing, never answering again.
const EVICTED_SERVER_FULL: u8 = 3;
/// Evicted to make room under its instance's cap: closing, never answering again.
const EVICTED_INSTANCE_CAP: u8 = 4;

/// Why a connection in `phase` was evicted, if it was.
fn evicted(phase: u8) -> Option<Eviction> {
    match phase {
        EVICTED_SERVER_FULL => Some(Eviction::ServerFull),
        EVICTED_INSTANCE_CAP => Some(Eviction::InstanceCap),
        _ => None,
    }
}

/// What a connection is doing, and since when it has waited for its client.
#[derive(Debug)]
pub struct ClientWait {
    opened: Instant,
    phase: AtomicU8,
    /// Milliseconds after `opened` at which the last answer was handed over.
    idle_since_millis: AtomicU64,
    /// Wakes the watchdog once the connection is evicted.
    evicted: Notify,
}

/// Held from a request head's arrival until its answer is handed over; the wait for the client
/// starts again when dropped.
#[derive(Debug)]
pub struct Answering(Arc<ClientWait>);

impl Answering {
    /// The body has arrived: the request is being answered. False when the connection was
    /// evicted while the body came: the request must not be answered.
    pub fn body_read(&self) -> bool {
        self.0
            .phase
            .compare_exchange(READING_BODY, ANSWERING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        let now = self.0.millis();
        self.0.idle_since_millis.store(now, Ordering::Relaxed);
        // An evicted connection stays evicted.
        let _ = self
            .0
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |phase| {
                matches!(phase, READING_BODY | ANSWERING).then_some(IDLE)
            });
    }
}

impl ClientWait {
    /// A connection that has just opened (and waits for its first request head).
    pub fn new() -> ClientWait {
        ClientWait {
            opened: Instant::now(),
            phase: AtomicU8::new(IDLE),
            idle_since_millis: AtomicU64::new(0),
            evicted: Notify::new(),
        }
    }

    fn millis(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// A whole request head has arrived: the deadline pauses until the answer is handed over
    /// (the connection may still be evicted while its body is coming). `None` when the
    /// connection has been evicted: the request must not be answered.
    pub fn request_arrived(self: Arc<Self>) -> Option<Answering> {
        self.phase
            .compare_exchange(IDLE, READING_BODY, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        Some(Answering(self))
    }

    /// Claims the connection for eviction if it is waiting for its client (for a request head
    /// or the rest of a body), and wakes its watchdog to close it; false if it is not (it is
    /// answering, or already evicted).
    pub fn evict(&self, why: Eviction) -> bool {
        let claimed = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |phase| {
                matches!(phase, IDLE | READING_BODY).then_some(why.phase())
            })
            .is_ok();
        if claimed {
            self.evicted.notify_one();
        }
        claimed
    }

    /// How long the connection has waited for a request head; `None` otherwise.
    fn waited(&self) -> Option<Duration> {
        if self.phase.load(Ordering::Acquire) != IDLE {
            return None;
        }
        Some(self.since_idle())
    }

    /// How long since the connection opened or last handed over an answer.
    fn since_idle(&self) -> Duration {
        let since = self.idle_since_millis.load(Ordering::Relaxed);
        Duration::from_millis(self.millis().saturating_sub(since))
    }

    /// Whether a full server may close the connection: it is waiting for its client (for a
    /// request head for at least `grace`, or for the rest of a body).
    fn evictable(&self, grace: Duration) -> bool {
        match self.phase.load(Ordering::Acquire) {
            READING_BODY => true,
            IDLE => self.waited().is_some_and(|waited| waited >= grace),
            _ => false,
        }
    }

    /// Completes once the client has kept the connection waiting for `deadline` (checked every
    /// half deadline, so it closes between 1 and 1.5 deadlines after), when `full` is notified
    /// while it has waited at least `evictable_after`, or once it is evicted ([`Self::evict`]).
    pub async fn overdue(
        &self,
        deadline: Duration,
        full: &Notify,
        evictable_after: Duration,
    ) -> Overdue {
        let period = (deadline / 2).max(Duration::from_millis(5));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    if self.waited().is_some_and(|waited| waited >= deadline) {
                        return Overdue::Deadline;
                    }
                }
                () = full.notified() => {
                    if self.evictable(evictable_after) && self.evict(Eviction::ServerFull) {
                        return Overdue::Evicted(Eviction::ServerFull);
                    }
                }
                () = self.evicted.notified() => {}
            }
            if let Some(why) = evicted(self.phase.load(Ordering::Acquire)) {
                return Overdue::Evicted(why);
            }
        }
    }
}

impl Default for ClientWait {
    fn default() -> ClientWait {
        ClientWait::new()
    }
}

impl Evictable for ClientWait {
    fn waiting(&self) -> Option<Duration> {
        match self.phase.load(Ordering::Acquire) {
            IDLE | READING_BODY => Some(self.since_idle()),
            _ => None,
        }
    }

    fn evict(&self) -> bool {
        ClientWait::evict(self, Eviction::InstanceCap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_pauses_while_answering_and_starts_again_after() {
        let wait = Arc::new(ClientWait::new());
        assert!(wait.waited().is_some());
        let answering = wait.clone().request_arrived().unwrap();
        assert_eq!(wait.waited(), None, "no deadline once a head has arrived");
        assert!(
            wait.evictable(Duration::ZERO),
            "evictable while the body comes"
        );
        assert!(answering.body_read());
        assert!(!wait.evictable(Duration::ZERO), "never while answering");
        drop(answering);
        assert!(wait.waited().expect("waiting again") < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_answering_for_longer_than_the_deadline_is_not_overdue() {
        let wait = Arc::new(ClientWait::new());
        let full = Notify::new();
        let answering = wait.clone().request_arrived().unwrap();
        assert!(answering.body_read());
        let deadline = Duration::from_millis(200);
        let overdue = wait.overdue(deadline, &full, Duration::ZERO);
        tokio::pin!(overdue);
        // Paused time: the timeout advances the clock without waiting for real.
        assert!(
            tokio::time::timeout(Duration::from_secs(6), overdue.as_mut())
                .await
                .is_err()
        );
        drop(answering);
        assert_eq!(overdue.await, Overdue::Deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn only_connections_waiting_for_their_client_are_evicted() {
        let idle = Arc::new(ClientWait::new());
        let busy = Arc::new(ClientWait::new());
        let answering = busy.clone().request_arrived().unwrap();
        assert!(answering.body_read());
        let full = Notify::new();
        let deadline = Duration::from_secs(60);
        let grace = Duration::from_millis(100);
        let idle_watch = idle.overdue(deadline, &full, grace);
        let busy_watch = busy.overdue(deadline, &full, grace);
        tokio::pin!(idle_watch, busy_watch);
        tokio::time::advance(Duration::from_millis(150)).await;
        let notify = async {
            tokio::task::yield_now().await;
            full.notify_waiters();
            std::future::pending::<()>().await
        };
        tokio::select! {
            why = idle_watch.as_mut() => assert_eq!(why, Overdue::Evicted(Eviction::ServerFull)),
            _ = busy_watch.as_mut() => panic!("an answering connection was evicted"),
            () = notify => unreachable!(),
        }
    }

    #[test]
    fn a_connection_answering_is_never_evicted_and_an_evicted_one_answers_nothing_more() {
        let wait = Arc::new(ClientWait::new());
        let answering = wait.clone().request_arrived().unwrap();
        assert!(answering.body_read());
        assert_eq!(Evictable::waiting(&*wait), None);
        assert!(!wait.evict(Eviction::InstanceCap), "answering");
        drop(answering);
        assert!(Evictable::waiting(&*wait).is_some(), "idle again");
        assert!(wait.evict(Eviction::InstanceCap));
        assert!(!wait.evict(Eviction::ServerFull), "evicted once");
        assert!(wait.clone().request_arrived().is_none(), "no request after");
        assert_eq!(Evictable::waiting(&*wait), None);
    }

    #[test]
    fn a_connection_evicted_while_its_body_comes_does_not_answer_it() {
        let wait = Arc::new(ClientWait::new());
        let answering = wait.clone().request_arrived().unwrap();
        assert!(wait.evict(Eviction::InstanceCap));
        assert!(!answering.body_read());
        drop(answering);
        assert!(wait.clone().request_arrived().is_none(), "still evicted");
    }

    #[tokio::test(start_paused = true)]
    async fn an_evicted_connection_s_watchdog_ends_it_with_the_reason() {
        let wait = Arc::new(ClientWait::new());
        let full = Notify::new();
        let watch = wait.overdue(Duration::from_secs(60), &full, Duration::from_millis(100));
        tokio::pin!(watch);
        tokio::select! {
            _ = watch.as_mut() => panic!("not overdue yet"),
            () = tokio::task::yield_now() => {}
        }
        assert!(wait.evict(Eviction::InstanceCap));
        assert_eq!(watch.await, Overdue::Evicted(Eviction::InstanceCap));
    }
}

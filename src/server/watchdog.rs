//! One coarse watchdog per connection: it closes a connection whose client has kept it waiting
//! for a request head longer than the deadline, or, when the server is full, for longer than a
//! short grace (also while the client is still sending a body, which has its own deadline). It
//! never counts while a request is being answered.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Notify;

/// Why the watchdog ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overdue {
    /// The client kept it waiting past the deadline.
    Deadline,
    /// The server was full and the connection was waiting for its client.
    Evicted,
}

/// Waiting for a request head.
const IDLE: u8 = 0;
/// A head has arrived; the body is still coming (it has a deadline of its own).
const READING_BODY: u8 = 1;
/// The request is being answered.
const ANSWERING: u8 = 2;

/// What a connection is doing, and since when it has waited for its client.
#[derive(Debug)]
pub struct ClientWait {
    opened: Instant,
    phase: AtomicU8,
    /// Milliseconds after `opened` at which the last answer was handed over.
    idle_since_millis: AtomicU64,
}

/// Held from a request head's arrival until its answer is handed over; the wait for the client
/// starts again when dropped.
#[derive(Debug)]
pub struct Answering(Arc<ClientWait>);

impl Answering {
    /// The body has arrived: the request is being answered.
    pub fn body_read(&self) {
        self.0.phase.store(ANSWERING, Ordering::Release);
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        let now = self.0.millis();
        self.0.idle_since_millis.store(now, Ordering::Relaxed);
        self.0.phase.store(IDLE, Ordering::Release);
    }
}

impl ClientWait {
    /// A connection that has just opened (and waits for its first request head).
    pub fn new() -> ClientWait {
        ClientWait {
            opened: Instant::now(),
            phase: AtomicU8::new(IDLE),
            idle_since_millis: AtomicU64::new(0),
        }
    }

    fn millis(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// A whole request head has arrived: the deadline pauses until the answer is handed over
    /// (a full server may still evict the connection while its body is coming).
    pub fn request_arrived(self: Arc<Self>) -> Answering {
        self.phase.store(READING_BODY, Ordering::Release);
        Answering(self)
    }

    /// How long the connection has waited for a request head; `None` otherwise.
    fn waited(&self) -> Option<Duration> {
        if self.phase.load(Ordering::Acquire) != IDLE {
            return None;
        }
        let since = self.idle_since_millis.load(Ordering::Relaxed);
        Some(Duration::from_millis(self.millis().saturating_sub(since)))
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
    /// half deadline, so it closes between 1 and 1.5 deadlines after), or when `full` is
    /// notified while it has waited at least `evictable_after`.
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
                    if self.evictable(evictable_after) {
                        return Overdue::Evicted;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_pauses_while_answering_and_starts_again_after() {
        let wait = Arc::new(ClientWait::new());
        assert!(wait.waited().is_some());
        let answering = wait.clone().request_arrived();
        assert_eq!(wait.waited(), None, "no deadline once a head has arrived");
        assert!(
            wait.evictable(Duration::ZERO),
            "evictable while the body comes"
        );
        answering.body_read();
        assert!(!wait.evictable(Duration::ZERO), "never while answering");
        drop(answering);
        assert!(wait.waited().expect("waiting again") < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_answering_for_longer_than_the_deadline_is_not_overdue() {
        let wait = Arc::new(ClientWait::new());
        let full = Notify::new();
        let answering = wait.clone().request_arrived();
        answering.body_read();
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
        let answering = busy.clone().request_arrived();
        answering.body_read();
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
            why = idle_watch.as_mut() => assert_eq!(why, Overdue::Evicted),
            _ = busy_watch.as_mut() => panic!("an answering connection was evicted"),
            () = notify => unreachable!(),
        }
    }
}

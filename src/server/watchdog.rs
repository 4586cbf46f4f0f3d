//! The watchdog of one server's connections: it closes a connection whose client has kept it
//! waiting for a request head longer than the deadline, or, when the server is full, for longer
//! than a short grace (also while the client is still sending a body, which has its own
//! deadline). It never counts while a request is being answered.
//!
//! One task per server sweeps every connection's [`ClientWait`] twice per deadline, and the
//! accept loop of a full server goes through them the same way; the connection's own task only
//! waits for one message ([`Closing`]): to close, or to finish its request and stop. So a
//! connection arms no timer of its own, and serving a request costs it nothing but the phase
//! changes below: the clock, the lock of a list shared by every connection, and the wakeups of
//! a shared notification would each be paid on every request otherwise.
//!
//! A connection's surface may evict it too ([`ClientWait`] is a
//! [`crate::fleet::throttle::Evictable`]): the guest API does so to make room under an
//! instance's connection cap. Either way the closing is claimed by one compare-and-swap on the
//! connection's phase, the same word a request head's arrival moves, so a connection is closed
//! only while it waits for its client and a request that arrives meanwhile is never answered
//! on a connection already given up.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::fleet::throttle::Evictable;
use crate::id_map::IdMap;

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
}

/// Why the watchdog ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overdue {
    /// The client kept it waiting past the deadline.
    Deadline,
    /// The connection was waiting for its client and was closed to make room.
    Evicted(Eviction),
}

impl Overdue {
    /// The connection's phase once closed for this reason.
    fn phase(self) -> u8 {
        match self {
            Overdue::Deadline => OVERDUE,
            Overdue::Evicted(Eviction::ServerFull) => EVICTED_SERVER_FULL,
            Overdue::Evicted(Eviction::InstanceCap) => EVICTED_INSTANCE_CAP,
        }
    }
}

/// What a connection's task is told, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Close now: the connection was waiting for its client and is given up.
    Close(Overdue),
    /// The server is stopping: finish the request in progress, if any, and close.
    Stop,
}

/// The message a connection's task waits for beside serving its requests: polling it costs
/// one atomic load.
pub type Closing = oneshot::Receiver<Signal>;

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
/// Its client kept it waiting past the deadline: closing, never answering again.
const OVERDUE: u8 = 5;

/// What a connection is doing, and since when it has waited for its client.
#[derive(Debug)]
pub struct ClientWait {
    opened: Instant,
    phase: AtomicU8,
    /// Milliseconds after `opened` at which the last answer was handed over.
    idle_since_millis: AtomicU64,
    /// Tells the connection's task to close or stop; taken by the first to tell it.
    signal: Mutex<Option<oneshot::Sender<Signal>>>,
}

/// Held from a request head's arrival until its answer is handed over; the wait for the client
/// starts again when dropped.
#[derive(Debug)]
pub struct Answering<'a>(&'a ClientWait);

impl Answering<'_> {
    /// [`ClientWait::body_read`].
    pub fn body_read(&self) -> bool {
        self.0.body_read()
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        let now = self.0.millis();
        self.0.idle_since_millis.store(now, Ordering::Relaxed);
        // A connection given up stays given up.
        let _ = self
            .0
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |phase| {
                matches!(phase, READING_BODY | ANSWERING).then_some(IDLE)
            });
    }
}

impl ClientWait {
    /// A connection that has just opened (and waits for its first request head), and the
    /// message its task waits for.
    pub fn new() -> (Arc<ClientWait>, Closing) {
        let (signal, closing) = oneshot::channel();
        let wait = ClientWait {
            opened: Instant::now(),
            phase: AtomicU8::new(IDLE),
            idle_since_millis: AtomicU64::new(0),
            signal: Mutex::new(Some(signal)),
        };
        (Arc::new(wait), closing)
    }

    fn millis(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// A whole request head has arrived: the deadline pauses until the answer is handed over
    /// (the connection may still be evicted while its body is coming). `None` when the
    /// connection has been given up: the request must not be answered.
    pub fn request_arrived(&self) -> Option<Answering<'_>> {
        self.phase
            .compare_exchange(IDLE, READING_BODY, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        Some(Answering(self))
    }

    /// The body of the request that arrived has too: the request is being answered. False
    /// when the connection was evicted while the body came: the request must not be answered.
    pub fn body_read(&self) -> bool {
        self.phase
            .compare_exchange(READING_BODY, ANSWERING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Claims the connection for eviction if it is waiting for its client (for a request head
    /// or the rest of a body), and tells its task to close; false if it is not (it is
    /// answering, or already given up).
    pub fn evict(&self, why: Eviction) -> bool {
        let claimed = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |phase| {
                matches!(phase, IDLE | READING_BODY).then_some(Overdue::Evicted(why).phase())
            })
            .is_ok();
        if claimed {
            self.tell(Signal::Close(Overdue::Evicted(why)));
        }
        claimed
    }

    /// Closes the connection if its client has kept it waiting for a request head for
    /// `deadline`; whether it did.
    fn expire(&self, deadline: Duration) -> bool {
        if self.waited().is_none_or(|waited| waited < deadline) {
            return false;
        }
        let claimed = self
            .phase
            .compare_exchange(IDLE, OVERDUE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if claimed {
            self.tell(Signal::Close(Overdue::Deadline));
        }
        claimed
    }

    /// Sends the connection's task `signal`, unless it was told something already.
    fn tell(&self, signal: Signal) {
        let sender = lock(&self.signal).take();
        if let Some(sender) = sender {
            let _ = sender.send(signal);
        }
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

/// The open connections of one server, as the watchdog goes through them. Locked when a
/// connection opens or closes, at each sweep, when the server is full and when it stops; never
/// per request.
#[derive(Debug, Default)]
pub struct Watchdog {
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    next: u64,
    waits: IdMap<Arc<ClientWait>>,
    stopping: bool,
}

/// A connection watched until dropped (when the connection ends).
#[derive(Debug)]
pub struct Watched<'a> {
    watchdog: &'a Watchdog,
    id: u64,
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        lock(&self.watchdog.open).waits.remove(&self.id);
    }
}

impl Watchdog {
    /// Watches a new connection's `wait` until the returned handle is dropped; a connection
    /// that opens once the server is stopping is told so at once.
    pub fn watch(&self, wait: &Arc<ClientWait>) -> Watched<'_> {
        let mut open = lock(&self.open);
        let id = open.next;
        open.next += 1;
        open.waits.insert(id, wait.clone());
        if open.stopping {
            wait.tell(Signal::Stop);
        }
        Watched { watchdog: self, id }
    }

    /// Closes the connections whose client has kept them waiting for a request head for
    /// `deadline`; how many.
    pub fn sweep(&self, deadline: Duration) -> usize {
        let open = lock(&self.open);
        open.waits
            .values()
            .filter(|wait| wait.expire(deadline))
            .count()
    }

    /// Evicts the connections waiting for their client (for a request head for at least
    /// `grace`, or for the rest of a body) to make room in a full server; how many.
    pub fn make_room(&self, grace: Duration) -> usize {
        let open = lock(&self.open);
        open.waits
            .values()
            .filter(|wait| wait.evictable(grace) && wait.evict(Eviction::ServerFull))
            .count()
    }

    /// Tells every connection, and every one that opens from now on, that the server stops.
    pub fn stop(&self) {
        let mut open = lock(&self.open);
        open.stopping = true;
        for wait in open.waits.values() {
            wait.tell(Signal::Stop);
        }
    }
}

/// The period of the sweep for `deadline`: a connection closes between 1 and 1.5 deadlines
/// after its client last did anything.
pub fn sweep_period(deadline: Duration) -> Duration {
    (deadline / 2).max(Duration::from_millis(5))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_pauses_while_answering_and_starts_again_after() {
        let (wait, _closing) = ClientWait::new();
        assert!(wait.waited().is_some());
        let answering = wait.request_arrived().unwrap();
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
        let watchdog = Watchdog::default();
        let (wait, mut closing) = ClientWait::new();
        let _watched = watchdog.watch(&wait);
        let answering = wait.request_arrived().unwrap();
        assert!(answering.body_read());
        let deadline = Duration::from_millis(200);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(watchdog.sweep(deadline), 0, "answering");
        drop(answering);
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(watchdog.sweep(deadline), 0, "waiting, not yet for long");
        assert!(closing.try_recv().is_err());
        tokio::time::advance(Duration::from_millis(50)).await;
        assert_eq!(watchdog.sweep(deadline), 1);
        assert_eq!(closing.await, Ok(Signal::Close(Overdue::Deadline)));
        assert!(wait.request_arrived().is_none(), "no request after");
        assert_eq!(watchdog.sweep(deadline), 0, "closed once");
    }

    #[tokio::test(start_paused = true)]
    async fn only_connections_waiting_for_their_client_long_enough_are_evicted() {
        let watchdog = Watchdog::default();
        let (idle, mut idle_closing) = ClientWait::new();
        let (busy, mut busy_closing) = ClientWait::new();
        let _watched = [&idle, &busy].map(|wait| watchdog.watch(wait));
        let answering = busy.request_arrived().unwrap();
        assert!(answering.body_read());
        let grace = Duration::from_millis(100);
        tokio::time::advance(Duration::from_millis(150)).await;
        let (young, mut young_closing) = ClientWait::new();
        let _young = watchdog.watch(&young);
        assert_eq!(watchdog.make_room(grace), 1);
        assert_eq!(
            idle_closing.try_recv(),
            Ok(Signal::Close(Overdue::Evicted(Eviction::ServerFull)))
        );
        assert!(busy_closing.try_recv().is_err(), "answering");
        assert!(young_closing.try_recv().is_err(), "just connected");
        let _body_coming = young.request_arrived().unwrap();
        assert_eq!(watchdog.make_room(grace), 1, "a body still coming");
        assert!(young_closing.try_recv().is_ok());
    }

    #[test]
    fn a_connection_answering_is_never_evicted_and_an_evicted_one_answers_nothing_more() {
        let (wait, mut closing) = ClientWait::new();
        let answering = wait.request_arrived().unwrap();
        assert!(answering.body_read());
        assert_eq!(Evictable::waiting(&*wait), None);
        assert!(!wait.evict(Eviction::InstanceCap), "answering");
        assert!(closing.try_recv().is_err());
        drop(answering);
        assert!(Evictable::waiting(&*wait).is_some(), "idle again");
        assert!(wait.evict(Eviction::InstanceCap));
        assert!(!wait.evict(Eviction::ServerFull), "evicted once");
        assert!(wait.request_arrived().is_none(), "no request after");
        assert_eq!(Evictable::waiting(&*wait), None);
        assert_eq!(
            closing.try_recv(),
            Ok(Signal::Close(Overdue::Evicted(Eviction::InstanceCap)))
        );
    }

    #[test]
    fn a_connection_evicted_while_its_body_comes_does_not_answer_it() {
        let (wait, _closing) = ClientWait::new();
        let answering = wait.request_arrived().unwrap();
        assert!(wait.evict(Eviction::InstanceCap));
        assert!(!answering.body_read());
        drop(answering);
        assert!(wait.request_arrived().is_none(), "still evicted");
    }

    #[test]
    fn stopping_tells_every_connection_once_and_those_that_open_after() {
        let watchdog = Watchdog::default();
        let (open, mut open_closing) = ClientWait::new();
        let (evicted, mut evicted_closing) = ClientWait::new();
        let watched = [&open, &evicted].map(|wait| watchdog.watch(wait));
        assert!(evicted.evict(Eviction::InstanceCap));
        watchdog.stop();
        assert_eq!(open_closing.try_recv(), Ok(Signal::Stop));
        assert_eq!(
            evicted_closing.try_recv(),
            Ok(Signal::Close(Overdue::Evicted(Eviction::InstanceCap))),
            "the first message stands"
        );
        let (late, mut late_closing) = ClientWait::new();
        let _late = watchdog.watch(&late);
        assert_eq!(late_closing.try_recv(), Ok(Signal::Stop));
        drop(watched);
        assert_eq!(lock(&watchdog.open).waits.len(), 1, "the late one only");
    }
}

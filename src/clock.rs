//! Time, injected: the server reads the wall clock through [`Clock`] so tests can move it, and
//! background work waits for a clock time through it ([`Clock::sleep_until`]), so moving a
//! test's clock wakes that work at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// A wait for a clock time, as [`Clock::sleep_until`] returns it.
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> u64;

    /// Completes once the clock reads `at_millis` or later (at once if it already does). Must be
    /// awaited within a Tokio runtime.
    fn sleep_until(&self, at_millis: u64) -> Sleep<'_>;
}

/// The longest the system clock sleeps before reading the wall clock again: a step of the wall
/// clock, or a machine suspended meanwhile, delays a wake-up by at most this.
const SYSTEM_STEP: Duration = Duration::from_secs(30);

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn sleep_until(&self, at_millis: u64) -> Sleep<'_> {
        Box::pin(async move {
            loop {
                let now = self.now_millis();
                if now >= at_millis {
                    return;
                }
                let left = Duration::from_millis(at_millis - now);
                tokio::time::sleep(left.min(SYSTEM_STEP)).await;
            }
        })
    }
}

/// A clock that moves only when told (tests). Its sleepers wake as soon as [`advance`]
/// reaches their time, and a test can see what they wait for ([`sleepers`], [`next_wake`]).
///
/// [`advance`]: ManualClock::advance
/// [`sleepers`]: ManualClock::sleepers
/// [`next_wake`]: ManualClock::next_wake
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicU64,
    /// Told on every [`ManualClock::advance`].
    advanced: watch::Sender<()>,
    /// The pending sleepers' wake-up times, by sleeper.
    sleepers: watch::Sender<BTreeMap<u64, u64>>,
    next_sleeper: AtomicU64,
}

impl Default for ManualClock {
    fn default() -> ManualClock {
        ManualClock::at_millis(0)
    }
}

impl ManualClock {
    /// A clock showing `millis` since the epoch.
    pub fn at_millis(millis: u64) -> ManualClock {
        ManualClock {
            now: AtomicU64::new(millis),
            advanced: watch::Sender::new(()),
            sleepers: watch::Sender::new(BTreeMap::new()),
            next_sleeper: AtomicU64::new(0),
        }
    }

    /// Moves the clock forward, waking the sleepers whose time has come.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
        self.advanced.send_replace(());
    }

    /// The clock times the pending sleepers wait for, earliest first.
    pub fn sleepers(&self) -> Vec<u64> {
        let mut times: Vec<u64> = self.sleepers.borrow().values().copied().collect();
        times.sort_unstable();
        times
    }

    /// Waits (in real time, without bound: callers bound it) until a sleeper waits for a time
    /// later than the clock's now, and returns the earliest such time. Background work that
    /// sleeps on this clock has then done what the current time asked of it.
    pub async fn next_wake(&self) -> u64 {
        let mut sleepers = self.sleepers.subscribe();
        loop {
            let now = self.now_millis();
            let next = sleepers
                .borrow_and_update()
                .values()
                .copied()
                .filter(|at| *at > now)
                .min();
            if let Some(at) = next {
                return at;
            }
            if sleepers.changed().await.is_err() {
                // The sender lives in `self`, which outlives this borrow.
                unreachable!("a ManualClock's sleepers channel closed while borrowed");
            }
        }
    }
}

/// A pending [`ManualClock`] sleeper, listed while it exists.
struct Listed<'a> {
    clock: &'a ManualClock,
    id: u64,
}

impl<'a> Listed<'a> {
    fn new(clock: &'a ManualClock, at_millis: u64) -> Listed<'a> {
        let id = clock.next_sleeper.fetch_add(1, Ordering::Relaxed);
        clock.sleepers.send_modify(|sleepers| {
            sleepers.insert(id, at_millis);
        });
        Listed { clock, id }
    }
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.clock.sleepers.send_modify(|sleepers| {
            sleepers.remove(&self.id);
        });
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, at_millis: u64) -> Sleep<'_> {
        Box::pin(async move {
            let mut advanced = self.advanced.subscribe();
            if self.now_millis() >= at_millis {
                return;
            }
            let _listed = Listed::new(self, at_millis);
            while self.now_millis() < at_millis {
                if advanced.changed().await.is_err() {
                    unreachable!("a ManualClock's advance channel closed while borrowed");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_sleeper_wakes_when_the_clock_reaches_its_time_and_not_before() {
        let clock = ManualClock::at_millis(1_000);
        let mut sleep = clock.sleep_until(5_000);
        let poll = |sleep: &mut Sleep<'_>| {
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            sleep.as_mut().poll(&mut cx).is_ready()
        };
        assert!(!poll(&mut sleep));
        assert_eq!(clock.sleepers(), vec![5_000]);
        assert_eq!(clock.next_wake().await, 5_000);
        clock.advance(Duration::from_millis(3_999));
        assert!(!poll(&mut sleep), "one millisecond early");
        clock.advance(Duration::from_millis(1));
        assert!(poll(&mut sleep));
        drop(sleep);
        assert!(clock.sleepers().is_empty(), "a woken sleeper is not listed");
        assert!(
            poll(&mut clock.sleep_until(5_000)),
            "a past time is no wait"
        );
    }

    #[tokio::test]
    async fn a_dropped_manual_sleeper_is_no_longer_listed() {
        let clock = ManualClock::at_millis(0);
        let mut sleep = clock.sleep_until(10);
        let waker = std::task::Waker::noop();
        assert!(sleep
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
            .is_pending());
        assert_eq!(clock.sleepers(), vec![10]);
        drop(sleep);
        assert_eq!(clock.sleepers(), Vec::<u64>::new());
    }

    #[tokio::test]
    async fn advancing_a_manual_clock_wakes_a_waiting_task_at_once() {
        let clock = std::sync::Arc::new(ManualClock::at_millis(0));
        let waiting = clock.clone();
        let task = tokio::spawn(async move { waiting.sleep_until(60_000).await });
        assert_eq!(clock.next_wake().await, 60_000);
        clock.advance(Duration::from_secs(60));
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("woken by the advance")
            .unwrap();
    }

    #[tokio::test]
    async fn the_system_clock_sleeps_until_the_wall_clock_reads_the_time() {
        let clock = SystemClock;
        let target = clock.now_millis() + 50;
        clock.sleep_until(target).await;
        assert!(clock.now_millis() >= target);
        let past = clock.now_millis() - 1_000;
        let started = std::time::Instant::now();
        clock.sleep_until(past).await;
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "a past time is no wait"
        );
    }
}

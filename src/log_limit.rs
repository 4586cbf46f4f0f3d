//! Log lines that clients can trigger at will (refused tokens, refused browsers) are written at
//! most once per period per kind, each telling how many were held back since the last one. No
//! lock: one atomic load on the common path, a compare-and-swap once per period.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one line per period.
#[derive(Debug)]
pub struct LogLimit {
    epoch: Instant,
    period_millis: u64,
    /// Milliseconds after `epoch` from which the next line may be written.
    next_millis: AtomicU64,
    held_back: AtomicU64,
}

impl LogLimit {
    /// One line per `period`; the first may be written at once.
    pub fn new(period: Duration) -> LogLimit {
        LogLimit {
            epoch: Instant::now(),
            period_millis: period.as_millis().max(1) as u64,
            next_millis: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be written now; `None` (and
    /// one more held back) otherwise.
    pub fn allow(&self) -> Option<u64> {
        let now = self.epoch.elapsed().as_millis() as u64;
        let next = self.next_millis.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_millis
                .compare_exchange(
                    next,
                    now + self.period_millis,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::Relaxed));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_and_the_next_tells_how_many_were_held_back() {
        let limit = LogLimit::new(Duration::from_secs(3600));
        assert_eq!(limit.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(limit.allow(), None);
        }
        // Open the next period at once, as if an hour had passed.
        limit.next_millis.store(0, Ordering::Relaxed);
        assert_eq!(limit.allow(), Some(5));
        assert_eq!(limit.allow(), None);
    }
}

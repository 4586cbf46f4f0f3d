//! Each instance's minute-by-minute history of token-less requests, as EC2 publishes it to
//! CloudWatch: `MetadataNoToken` (answered) and `MetadataNoTokenRejected` (refused with 401
//! because `HttpTokens=required`), for the last 24 hours.
//!
//! Layout, chosen for memory: one ring per metric of [`MINUTES`] words, allocated on the
//! metric's first count (an instance nobody calls without a token costs two null pointers).
//! Each word packs the day it counts for ([`STAMP_BITS`] bits of `minute / MINUTES`) over the
//! count ([`COUNT_BITS`] bits); a ring is 1440 × 8 bytes = 11.25 KiB, and an instance rarely
//! has both (a token-less caller is either answered or refused, unless the option changes).
//! Counting is lock-free and allocation-free after the first count: an index, a load, a
//! compare of the stamp and an atomic add; a stale word (last counted a day or more ago) is
//! reset with a compare-and-swap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Minutes kept: 24 hours.
pub const MINUTES: usize = 1440;
/// Bits of a word holding the count.
const COUNT_BITS: u32 = 48;
/// Bits of a word holding the day stamp.
const STAMP_BITS: u32 = 64 - COUNT_BITS;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;

/// The two metrics kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NoTokenMetric {
    /// Token-less requests answered (`MetadataNoToken`).
    Answered,
    /// Token-less requests refused under `HttpTokens=required` (`MetadataNoTokenRejected`).
    Rejected,
}

impl NoTokenMetric {
    /// Both, in the order CloudWatch lists them.
    pub const ALL: [NoTokenMetric; 2] = [NoTokenMetric::Answered, NoTokenMetric::Rejected];

    /// Its CloudWatch metric name.
    pub fn name(self) -> &'static str {
        match self {
            NoTokenMetric::Answered => "MetadataNoToken",
            NoTokenMetric::Rejected => "MetadataNoTokenRejected",
        }
    }

    /// The metric CloudWatch calls `name`.
    pub fn from_name(name: &str) -> Option<NoTokenMetric> {
        NoTokenMetric::ALL.into_iter().find(|m| m.name() == name)
    }
}

type Ring = Box<[AtomicU64; MINUTES]>;

/// One instance's token-less request history: per metric, a lazily allocated ring of minute
/// counts.
#[derive(Debug, Default)]
pub struct NoTokenHistory {
    answered: OnceLock<Ring>,
    rejected: OnceLock<Ring>,
}

fn new_ring() -> Ring {
    let words: Vec<AtomicU64> = (0..MINUTES).map(|_| AtomicU64::new(0)).collect();
    words
        .into_boxed_slice()
        .try_into()
        .expect("exactly MINUTES words")
}

fn stamp(minute: u64) -> u64 {
    (minute / MINUTES as u64) & STAMP_MASK
}

impl NoTokenHistory {
    fn ring(&self, metric: NoTokenMetric) -> &OnceLock<Ring> {
        match metric {
            NoTokenMetric::Answered => &self.answered,
            NoTokenMetric::Rejected => &self.rejected,
        }
    }

    /// Counts one request of `metric` at `now_millis` (clock milliseconds).
    pub fn count(&self, metric: NoTokenMetric, now_millis: u64) {
        let minute = now_millis / 60_000;
        let word = &self.ring(metric).get_or_init(new_ring)[(minute % MINUTES as u64) as usize];
        let stamp = stamp(minute);
        let mut current = word.load(Ordering::Relaxed);
        loop {
            if current >> COUNT_BITS == stamp {
                word.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // Last counted a day or more ago: start this minute afresh.
            match word.compare_exchange_weak(
                current,
                (stamp << COUNT_BITS) | 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// The count of `metric` in `minute` (minutes since the clock's epoch), if that minute is
    /// within the 24 hours up to `now_minute`: 0 for a minute with no request.
    pub fn at(&self, metric: NoTokenMetric, minute: u64, now_minute: u64) -> u64 {
        if minute > now_minute || now_minute - minute >= MINUTES as u64 {
            return 0;
        }
        let Some(ring) = self.ring(metric).get() else {
            return 0;
        };
        let word = ring[(minute % MINUTES as u64) as usize].load(Ordering::Relaxed);
        match word >> COUNT_BITS == stamp(minute) {
            true => word & COUNT_MASK,
            false => 0,
        }
    }

    /// Whether `metric` counted any request in the `minutes` minutes up to `now_minute` (at
    /// most the 24 hours kept).
    pub fn has_data(&self, metric: NoTokenMetric, now_minute: u64, minutes: u64) -> bool {
        let minutes = minutes.clamp(1, MINUTES as u64);
        self.ring(metric).get().is_some()
            && (now_minute.saturating_sub(minutes - 1)..=now_minute)
                .any(|m| self.at(metric, m, now_minute) > 0)
    }

    /// Raises the count of `metric` in `minute` to at least `count` (a count kept in the store
    /// before a restart), if that minute is within the 24 hours up to `now_minute`.
    pub fn restore(&self, metric: NoTokenMetric, minute: u64, count: u64, now_minute: u64) {
        if count == 0 || minute > now_minute || now_minute - minute >= MINUTES as u64 {
            return;
        }
        let word = &self.ring(metric).get_or_init(new_ring)[(minute % MINUTES as u64) as usize];
        let restored = (stamp(minute) << COUNT_BITS) | count.min(COUNT_MASK);
        let mut current = word.load(Ordering::Relaxed);
        loop {
            let counted = match current >> COUNT_BITS == stamp(minute) {
                true => current & COUNT_MASK,
                false => 0,
            };
            if counted >= count {
                return;
            }
            match word.compare_exchange_weak(
                current,
                restored,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// Heap bytes it holds (its rings).
    pub fn heap_bytes(&self) -> usize {
        NoTokenMetric::ALL
            .into_iter()
            .filter(|m| self.ring(*m).get().is_some())
            .count()
            * MINUTES
            * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;
    /// A clock reading well past the epoch, mid-minute.
    const T0: u64 = 1_795_946_400_000 + 30_000;

    #[test]
    fn counts_land_in_their_minute_and_roll_over_to_the_next() {
        use crate::clock::{Clock, ManualClock};
        use std::time::Duration;

        let clock = ManualClock::at_millis(T0);
        let history = NoTokenHistory::default();
        let m0 = T0 / MINUTE;
        history.count(NoTokenMetric::Answered, clock.now_millis());
        clock.advance(Duration::from_millis(29_999));
        history.count(NoTokenMetric::Answered, clock.now_millis());
        clock.advance(Duration::from_millis(1));
        history.count(NoTokenMetric::Answered, clock.now_millis());
        let now = clock.now_millis() / MINUTE;
        assert_eq!(now, m0 + 1);
        assert_eq!(history.at(NoTokenMetric::Answered, m0, now), 2);
        assert_eq!(history.at(NoTokenMetric::Answered, m0 + 1, now), 1);
        assert_eq!(history.at(NoTokenMetric::Rejected, m0, now), 0);
    }

    #[test]
    fn the_two_metrics_are_kept_apart_and_allocated_only_when_counted() {
        let history = NoTokenHistory::default();
        assert_eq!(history.heap_bytes(), 0);
        history.count(NoTokenMetric::Rejected, T0);
        assert_eq!(history.heap_bytes(), MINUTES * 8);
        let m0 = T0 / MINUTE;
        assert_eq!(history.at(NoTokenMetric::Rejected, m0, m0), 1);
        assert_eq!(history.at(NoTokenMetric::Answered, m0, m0), 0);
        assert!(history.has_data(NoTokenMetric::Rejected, m0, 1));
        assert!(!history.has_data(NoTokenMetric::Answered, m0, 1));
    }

    #[test]
    fn a_minute_is_kept_for_24_hours_and_then_forgotten() {
        let history = NoTokenHistory::default();
        let m0 = T0 / MINUTE;
        history.count(NoTokenMetric::Answered, T0);
        let last = m0 + MINUTES as u64 - 1;
        assert_eq!(history.at(NoTokenMetric::Answered, m0, last), 1);
        assert!(history.has_data(NoTokenMetric::Answered, last, MINUTES as u64));
        assert_eq!(history.at(NoTokenMetric::Answered, m0, last + 1), 0);
        assert!(!history.has_data(NoTokenMetric::Answered, last + 1, MINUTES as u64));
    }

    #[test]
    fn a_stale_bucket_is_reset_when_its_minute_comes_round_again() {
        let history = NoTokenHistory::default();
        let m0 = T0 / MINUTE;
        for _ in 0..5 {
            history.count(NoTokenMetric::Answered, T0);
        }
        // The same bucket, one day later: the old count is not carried over.
        let next_day = T0 + MINUTES as u64 * MINUTE;
        history.count(NoTokenMetric::Answered, next_day);
        let m1 = m0 + MINUTES as u64;
        assert_eq!(history.at(NoTokenMetric::Answered, m1, m1), 1);
        // Nor is it read back as yesterday's minute.
        assert_eq!(history.at(NoTokenMetric::Answered, m0 + 1, m1), 0);
        // A bucket last written two days ago reads as empty.
        let m3 = m0 + 3 * MINUTES as u64 - 10;
        assert_eq!(
            history.at(NoTokenMetric::Answered, m0 + 2 * MINUTES as u64, m3),
            0
        );
    }

    #[test]
    fn concurrent_counts_are_all_kept() {
        let history = std::sync::Arc::new(NoTokenHistory::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let history = history.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        history.count(NoTokenMetric::Answered, T0 + (i % 2) * MINUTE);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let m0 = T0 / MINUTE;
        assert_eq!(history.at(NoTokenMetric::Answered, m0, m0 + 1), 20_000);
        assert_eq!(history.at(NoTokenMetric::Answered, m0 + 1, m0 + 1), 20_000);
    }

    #[test]
    fn restored_counts_read_back_and_never_lower_a_count() {
        let history = NoTokenHistory::default();
        let m0 = T0 / MINUTE;
        history.restore(NoTokenMetric::Answered, m0 - 5, 7, m0);
        history.count(NoTokenMetric::Answered, T0);
        history.count(NoTokenMetric::Answered, T0);
        history.restore(NoTokenMetric::Answered, m0, 1, m0);
        history.restore(NoTokenMetric::Rejected, m0 - MINUTES as u64, 3, m0);
        assert_eq!(history.at(NoTokenMetric::Answered, m0 - 5, m0), 7);
        assert_eq!(history.at(NoTokenMetric::Answered, m0, m0), 2);
        assert_eq!(
            history.heap_bytes(),
            MINUTES * 8,
            "a minute too old allocates nothing"
        );
    }

    #[test]
    fn minutes_in_the_future_read_as_empty() {
        let history = NoTokenHistory::default();
        let m0 = T0 / MINUTE;
        history.count(NoTokenMetric::Answered, T0);
        assert_eq!(history.at(NoTokenMetric::Answered, m0, m0 - 1), 0);
    }
}

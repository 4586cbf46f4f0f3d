//! The token-less request history kept in the store, so a restart does not erase it: restored
//! into the instances' rings at start, and each minute's count so far written every minute
//! (and at shutdown). A stored count only ever rises, so writing a minute again is harmless.
//! Each host writes what it counted; an instance's guests reach the host they run on, so that
//! host's counts are the instance's.
//!
//! A failed flush is carried over to the next one, for at most [`MAX_PENDING_MINUTES`]
//! minutes: older ones are dropped (and counted in `imds_store_history_minutes_dropped_total`),
//! so a store that fails for a while never makes each flush larger than the last. The store
//! writes it in batches on a connection of its own, never holding the one control writes need.

use std::sync::Arc;
use std::time::Duration;

use super::ControlApi;
use crate::fleet::history::{NoTokenMetric, MINUTES};
use crate::store::{MinuteCount, StoreError};

/// How often the counts are written.
const FLUSH_EVERY: Duration = Duration::from_secs(60);
const MINUTE_MILLIS: u64 = 60_000;
/// Most minutes before the current one a flush carries after failed ones.
const MAX_PENDING_MINUTES: u64 = 10;

/// The first minute the flush at `now_minute` writes when the last good flush was at
/// `from_minute`, and how many minutes are dropped for it.
fn pending(from_minute: u64, now_minute: u64) -> (u64, u64) {
    let oldest = now_minute.saturating_sub(MAX_PENDING_MINUTES);
    match from_minute < oldest {
        true => (oldest, oldest - from_minute),
        false => (from_minute, 0),
    }
}

impl ControlApi {
    /// Raises the instances' histories to the counts the store kept for the last 24 hours; how
    /// many minute counts were restored.
    pub async fn restore_history(&self) -> Result<usize, StoreError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let now_minute = self.clock.now_millis() / MINUTE_MILLIS;
        let oldest = now_minute.saturating_sub(MINUTES as u64 - 1);
        let mut restored = 0;
        for row in store.history(oldest as i64).await? {
            let (Ok(id), Some(metric)) = (
                row.instance_id.parse(),
                NoTokenMetric::from_name(&row.metric),
            ) else {
                continue;
            };
            let Some(slot) = self.inventory.state.instance(&id) else {
                continue;
            };
            let (Ok(minute), Ok(count)) = (u64::try_from(row.minute), u64::try_from(row.count))
            else {
                continue;
            };
            slot.counters()
                .no_token_history
                .restore(metric, minute, count, now_minute);
            restored += 1;
        }
        Ok(restored)
    }

    /// Writes every instance's counts of the minutes from `from_minute` to now.
    pub async fn flush_history(&self, from_minute: u64) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let now_minute = self.clock.now_millis() / MINUTE_MILLIS;
        let slots = self.inventory.state.instances();
        let mut counts = Vec::new();
        for slot in &slots {
            let history = &slot.counters().no_token_history;
            for metric in NoTokenMetric::ALL {
                for minute in from_minute.min(now_minute)..=now_minute {
                    let count = history.at(metric, minute, now_minute);
                    if count > 0 {
                        counts.push(MinuteCount {
                            instance_id: slot.id().as_str(),
                            metric: metric.name(),
                            minute: minute as i64,
                            count: count as i64,
                        });
                    }
                }
            }
        }
        let oldest = now_minute.saturating_sub(MINUTES as u64 - 1) as i64;
        store.save_history(&counts, oldest).await
    }

    /// Writes the counts every minute until the process ends (each write covers the minute
    /// the previous one was in, which may have counted more since).
    pub async fn keep_history(self: Arc<Self>) {
        if self.store.is_none() {
            return;
        }
        let mut from = self.clock.now_millis() / MINUTE_MILLIS;
        loop {
            tokio::time::sleep(FLUSH_EVERY).await;
            let now = self.clock.now_millis() / MINUTE_MILLIS;
            let (first, dropped) = pending(from, now);
            if dropped > 0 {
                self.store_stats.history_minutes_dropped(dropped);
                tracing::warn!(
                    minutes = dropped,
                    "token-less request history not written for too long: its oldest minutes are dropped"
                );
            }
            from = first;
            match self.flush_history(from).await {
                Ok(()) => from = now,
                Err(error) => {
                    tracing::debug!(%error, "the token-less request history was not written; trying again in a minute")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_after_failures_carries_at_most_ten_minutes() {
        assert_eq!(pending(100, 101), (100, 0));
        assert_eq!(pending(100, 110), (100, 0));
        assert_eq!(pending(100, 111), (101, 1));
        assert_eq!(pending(100, 1_000), (990, 890));
        assert_eq!(pending(0, 3), (0, 0));
        for (from, now) in [(5, 500), (480, 500), (499, 500)] {
            let (first, dropped) = pending(from, now);
            assert!(now - first <= MAX_PENDING_MINUTES);
            assert_eq!(first - from, dropped);
        }
    }
}

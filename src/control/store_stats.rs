//! What the store's upkeep counts for `/metrics`: unreadable rows skipped, history minutes
//! dropped after failed flushes, instances forgotten, rows pruned, and writes that raced
//! another host's and were retried.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the store's upkeep.
#[derive(Debug, Default)]
pub(super) struct StoreStats {
    /// Stored rows that do not parse, skipped (at start or when learned).
    corrupt_rows: AtomicU64,
    /// Minutes of token-less history not written, dropped after failed flushes.
    history_minutes_dropped: AtomicU64,
    /// Terminated instances whose rows were deleted (by this process or learned).
    instances_forgotten: AtomicU64,
    /// Tombstones and `ClientToken`s pruned by this process.
    tombstones_pruned: AtomicU64,
    client_tokens_pruned: AtomicU64,
    /// Control writes that raced another host's write of the same row and were retried.
    conflicts_retried: AtomicU64,
}

impl StoreStats {
    /// Counts `n` unreadable rows skipped.
    pub(super) fn corrupt_rows(&self, n: u64) {
        self.corrupt_rows.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` history minutes dropped.
    pub(super) fn history_minutes_dropped(&self, n: u64) {
        self.history_minutes_dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` instances forgotten.
    pub(super) fn instances_forgotten(&self, n: u64) {
        self.instances_forgotten.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts what a prune removed.
    pub(super) fn pruned(&self, pruned: crate::store::Pruned) {
        self.tombstones_pruned
            .fetch_add(pruned.tombstones, Ordering::Relaxed);
        self.client_tokens_pruned
            .fetch_add(pruned.client_tokens, Ordering::Relaxed);
    }

    /// Counts a write retried after a conflict.
    pub(super) fn conflict_retried(&self) {
        self.conflicts_retried.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus lines.
    pub(super) fn render(&self, out: &mut String) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counters = [
            (
                "imds_store_corrupt_rows_total",
                "Stored rows that do not parse, reported and skipped.",
                load(&self.corrupt_rows),
            ),
            (
                "imds_store_history_minutes_dropped_total",
                "Minutes of token-less request history not written after failed flushes (each flush carries at most the last 10 minutes).",
                load(&self.history_minutes_dropped),
            ),
            (
                "imds_store_instances_forgotten_total",
                "Terminated instances whose stored rows were deleted an hour after termination.",
                load(&self.instances_forgotten),
            ),
            (
                "imds_store_tombstones_pruned_total",
                "Tombstones of deleted rows pruned after an hour.",
                load(&self.tombstones_pruned),
            ),
            (
                "imds_store_client_tokens_pruned_total",
                "ClientTokens pruned a day after the last instance they launched was forgotten.",
                load(&self.client_tokens_pruned),
            ),
            (
                "imds_store_conflicts_retried_total",
                "Control writes that raced another host's write of the same row and were retried on the newer state.",
                load(&self.conflicts_retried),
            ),
        ];
        for (name, help, value) in counters {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            );
        }
    }
}

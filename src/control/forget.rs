//! Terminated instances are forgotten once EC2 would no longer show them (an hour after they
//! terminated): their stored rows (changes, launch configuration, token-less history) are
//! deleted in one store write that leaves a tombstone, then their slot (snapshot, prebuilt
//! trees, token-less history, throttle), their `/metrics` series and their STS renewals go.
//! Other hosts learn the tombstone when they catch up and forget the instance too; a restart
//! reads only what is live. The `ClientToken` that launched them is kept a day longer
//! ([`crate::store::CLIENT_TOKEN_RETENTION`]), and the sweep prunes the store's tombstones
//! and expired tokens. An instance of the config file stays while the file lists it.
//!
//! Memory forgets only what the store forgot: while the store is away, terminated instances
//! stay (hidden, as EC2 hides them) until a sweep can delete their rows.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::ControlApi;
use crate::fleet::instance_id::InstanceId;
use crate::fleet::lock_order::{AccountGuard, Unlocked};
use crate::store::ForgetInstance;

/// How often terminated instances are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl ControlApi {
    /// Forgets every launched instance terminated long enough ago to have disappeared, in the
    /// store first; how many. Under the account's lock, as every change to the set of
    /// instances.
    pub async fn forget_gone(&self) -> usize {
        let mut order = Unlocked::task();
        let account = self.account.lock(&mut order).await;
        let now = self.clock.now_millis();
        let from_file = self.inventory.file_instances();
        let gone: Vec<ForgetInstance> = self
            .inventory
            .state
            .instances()
            .into_iter()
            .filter(|slot| !from_file.contains(slot.id()))
            .filter(|slot| slot.changes().lifecycle.is_some_and(|l| l.is_gone(now)))
            .map(|slot| {
                let config = &slot.current().instance.config;
                ForgetInstance {
                    instance_id: slot.id().to_string(),
                    expected: slot.revision(),
                    reservation_id: config.reservation_id.clone(),
                    owner_id: config.account_id.clone(),
                }
            })
            .chain(
                self.inventory
                    .gone_unserved()
                    .into_iter()
                    .map(|(instance_id, expected)| ForgetInstance {
                        instance_id,
                        expected,
                        reservation_id: String::new(),
                        owner_id: String::new(),
                    }),
            )
            .collect();
        let forgotten: BTreeSet<String> = match &self.store {
            _ if gone.is_empty() => BTreeSet::new(),
            None => gone.into_iter().map(|g| g.instance_id).collect(),
            Some(store) => match store.forget(gone, now as i64).await {
                Ok(done) => {
                    if !done.kept.is_empty() {
                        tracing::debug!(kept = ?done.kept, "terminated instances changed since they were seen: forgotten at the next sweep");
                    }
                    if done.revision > 0 {
                        self.store_stats.instances_forgotten(done.gone.len() as u64);
                    }
                    done.gone.into_iter().collect()
                }
                Err(error) => {
                    tracing::warn!(%error, "terminated instances could not be deleted from the store: kept until the next sweep");
                    BTreeSet::new()
                }
            },
        };
        self.inventory.forget_gone_unserved(&forgotten);
        let ids: Vec<InstanceId> = forgotten.iter().filter_map(|id| id.parse().ok()).collect();
        let count = self.forget_in_memory(&ids, &account);
        drop(account);
        if count > 0 {
            tracing::info!(
                instances = count,
                "terminated instances forgotten: EC2 no longer shows them"
            );
        }
        self.prune(now).await;
        count
    }

    /// Forgets the launched instances `ids` (their rows are gone from the store): slot, series,
    /// refusal; starts the retention of the `ClientToken`s that launched them. How many were
    /// served.
    pub(super) fn forget_in_memory(&self, ids: &[InstanceId], _: &AccountGuard<'_>) -> usize {
        let from_file = self.inventory.file_instances();
        let served: Vec<InstanceId> = ids
            .iter()
            .filter(|id| !from_file.contains(*id))
            .filter(|id| self.inventory.state.instance(id).is_some())
            .cloned()
            .collect();
        // Terminated instances hold no address: removing them never gives one a second owner.
        if let Err(conflict) = self.inventory.state.apply(Vec::new(), Vec::new(), &served) {
            tracing::error!(%conflict, "terminated instances could not be forgotten");
            return 0;
        }
        for id in ids.iter().filter(|id| !from_file.contains(*id)) {
            self.inventory.snapshots.forget(id.as_str());
            self.inventory.forget_refused(id);
        }
        let forgotten: BTreeSet<String> = ids.iter().map(ToString::to_string).collect();
        let state = &self.inventory.state;
        let now = self.clock.now_millis() as i64;
        self.inventory.expire_client_tokens(
            &forgotten,
            |id| id.parse().is_ok_and(|id| state.instance(&id).is_some()),
            now,
        );
        served.len()
    }

    /// Prunes the store's old tombstones and expired `ClientToken`s, and the remembered tokens.
    async fn prune(&self, now: u64) {
        self.inventory
            .expire_client_tokens(&BTreeSet::new(), |_| true, now as i64);
        let Some(store) = &self.store else {
            return;
        };
        match store.prune(now as i64).await {
            Ok(pruned) => self.store_stats.pruned(pruned),
            Err(error) => {
                tracing::debug!(%error, "the store's tombstones and tokens were not pruned: again at the next sweep")
            }
        }
    }

    /// Forgets terminated instances at once (those gone while imds was stopped) and then every
    /// minute until the process ends.
    pub async fn forget_gone_on_schedule(self: Arc<Self>) {
        loop {
            self.forget_gone().await;
            let next = self.clock.now_millis() + SWEEP_EVERY.as_millis() as u64;
            self.clock.sleep_until(next).await;
        }
    }
}

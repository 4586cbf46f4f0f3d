//! Terminated instances are forgotten once EC2 would no longer show them (an hour after they
//! terminated): their slot (snapshot, prebuilt trees, token-less history, throttle), their
//! `/metrics` series and their STS renewals go with it. Their stored rows stay, and a restart
//! skips them; an instance of the config file stays while the file lists it.

use std::sync::Arc;
use std::time::Duration;

use super::ControlApi;
use crate::fleet::instance_id::InstanceId;
use crate::fleet::lock_order::Unlocked;

/// How often terminated instances are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl ControlApi {
    /// Forgets every launched instance terminated long enough ago to have disappeared; how
    /// many. Under the account's lock, as every change to the set of instances.
    pub async fn forget_gone(&self) -> usize {
        let mut order = Unlocked::task();
        let _account = self.account.lock(&mut order).await;
        let now = self.clock.now_millis();
        let from_file = self.inventory.file_instances();
        let gone: Vec<InstanceId> = self
            .inventory
            .state
            .instances()
            .into_iter()
            .filter(|slot| !from_file.contains(slot.id()))
            .filter(|slot| slot.changes().lifecycle.is_some_and(|l| l.is_gone(now)))
            .map(|slot| slot.id().clone())
            .collect();
        if gone.is_empty() {
            return 0;
        }
        // Terminated instances hold no address: removing them never gives one a second owner.
        if let Err(conflict) = self.inventory.state.apply(Vec::new(), Vec::new(), &gone) {
            tracing::error!(%conflict, "terminated instances could not be forgotten");
            return 0;
        }
        for id in &gone {
            self.inventory.snapshots.forget(id.as_str());
            self.inventory.forget_refused(id);
        }
        tracing::info!(
            instances = gone.len(),
            "terminated instances forgotten: EC2 no longer shows them"
        );
        gone.len()
    }

    /// Forgets terminated instances every minute until the process ends.
    pub async fn forget_gone_on_schedule(self: Arc<Self>) {
        loop {
            let next = self.clock.now_millis() + SWEEP_EVERY.as_millis() as u64;
            self.clock.sleep_until(next).await;
            self.forget_gone().await;
        }
    }
}

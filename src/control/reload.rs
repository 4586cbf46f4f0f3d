//! SIGHUP: the config file's instances reloaded as one change, under the same locks as
//! control changes (the account's, then each instance's), so a reload never overwrites an
//! acknowledged change:
//! - instances served already are rebuilt with the control plane's changes over them;
//! - new ones are added with the changes stored for them (and their revision, so later changes
//!   write over the row they saw);
//! - instances the file no longer lists stop being served and free their addresses (their
//!   stored changes are kept, should the file list them again).
//!
//! The fleet index takes the whole set or refuses it: when an address would get a second live
//! owner nothing is swapped and the running instances stay as they were. The network registry
//! then records the addresses the file's instances hold, and stores them for the other hosts.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use super::ControlApi;
use crate::fleet::changes::InstanceChanges;
use crate::fleet::faults::FaultSet;
use crate::fleet::instance::Instance;
use crate::fleet::instance_id::InstanceId;
use crate::fleet::lock_order::{lock_instances, Unlocked};
use crate::fleet::state::{AddressInUse, InstanceSlot};

impl ControlApi {
    /// Serves `instances` (the config file's, reloaded) with the control plane's changes over
    /// them, as one change; the instances now served, or why none changed. The file's faults
    /// replace the running ones (and their counts) only when they changed.
    pub async fn reload_file(
        &self,
        instances: Vec<Instance>,
    ) -> Result<Vec<Instance>, AddressInUse> {
        let mut order = Unlocked::task();
        let mut account = self.account.lock(&mut order).await;
        // Added instances start from what is stored for them (by an earlier run, or another
        // host): catch up first, under the account lock as learning takes it.
        if let Err(error) = self.catch_up_locked(&mut account).await {
            tracing::warn!(%error, "the store could not be read: instances the file adds start from the changes known so far and catch up later");
        }
        let listed: BTreeSet<InstanceId> = instances
            .iter()
            .filter_map(|instance| instance.id().parse().ok())
            .collect();
        // Instances the file listed and lists no more stop being served, and free their
        // addresses; their stored changes are kept for the day the file lists them again.
        let dropped: Vec<Arc<InstanceSlot>> = self
            .inventory
            .file_instances()
            .difference(&listed)
            .filter_map(|id| self.inventory.state.instance(id))
            .collect();
        let mut served = Vec::new();
        let mut added = Vec::new();
        for base in instances {
            let slot = base
                .id()
                .parse::<InstanceId>()
                .ok()
                .and_then(|id| self.inventory.state.instance(&id));
            match slot {
                Some(slot) => served.push((slot, base)),
                None => added.push(base),
            }
        }
        let locked: Vec<Arc<InstanceSlot>> = served
            .iter()
            .map(|(slot, _)| slot.clone())
            .chain(dropped.iter().cloned())
            .collect();
        let locks = lock_instances(
            locked.iter().map(|slot| (slot.id(), slot.instance_lock())),
            &mut account,
        )
        .await;
        let reloaded: Vec<(Arc<InstanceSlot>, Instance, Instance)> = served
            .into_iter()
            .map(|(slot, base)| {
                let before = slot.current().instance.clone();
                let changes = slot.changes();
                changes.log_shadowed(&base);
                let instance = self.layer(&changes, base);
                (slot, before, instance)
            })
            .collect();
        let snapshots = reloaded
            .iter()
            .map(|(slot, _, instance)| {
                self.inventory
                    .snapshots
                    .build_after(Some(&slot.current()), instance.clone())
            })
            .collect();
        let added: Vec<(Instance, InstanceChanges, i64)> = added
            .into_iter()
            .map(|base| {
                let (changes, revision) = self.inventory.unplaced_changes(base.id());
                (self.layer(&changes, base), changes, revision)
            })
            .collect();
        let new_slots: Vec<Arc<InstanceSlot>> = added
            .iter()
            .map(|(instance, changes, revision)| {
                let snapshot = self.inventory.snapshots.build(instance.clone());
                InstanceSlot::stored(snapshot, changes.clone(), *revision)
            })
            .collect();
        let removed: Vec<InstanceId> = dropped.iter().map(|slot| slot.id().clone()).collect();
        self.inventory.state.apply(snapshots, new_slots, &removed)?;
        for (instance, _, _) in &added {
            self.inventory.forget_unplaced(instance.id());
        }
        let mut network = (*self.inventory.network()).clone();
        let mut released = Vec::new();
        for slot in &dropped {
            self.inventory
                .keep_unplaced(slot.id().to_string(), slot.changes(), slot.revision());
            for (subnet, ip) in super::launch::addresses(&slot.current().instance) {
                network.release(&subnet, ip);
                released.push(crate::store::AddressWrite::new(
                    &subnet,
                    ip,
                    slot.id().as_str(),
                ));
            }
            tracing::info!(instance = %slot.id(), "the config file no longer lists this instance: it is not served any more");
        }
        for (slot, before, instance) in &reloaded {
            if instance.config.faults != before.config.faults {
                match FaultSet::new(instance.config.faults.clone()) {
                    Ok(faults) => {
                        let held = slot
                            .guard_in(&locks)
                            .expect("every slot reloaded is locked");
                        slot.set_faults(faults, held)
                    }
                    Err(error) => tracing::error!(%error, "the file's faults are not applied"),
                }
            }
            let now: Vec<(String, IpAddr)> = super::launch::addresses(instance);
            for (subnet, ip) in super::launch::addresses(before) {
                if !now.contains(&(subnet.clone(), ip)) {
                    network.release(&subnet, ip);
                    released.push(crate::store::AddressWrite::new(&subnet, ip, before.id()));
                }
            }
        }
        let reloaded: Vec<Instance> = reloaded
            .into_iter()
            .map(|(_, _, instance)| instance)
            .chain(added.into_iter().map(|(instance, _, _)| instance))
            .collect();
        // Instances launched elsewhere that an address of this file kept out may be served now.
        self.inventory.serve_refused(self.clock.now_millis());
        super::vpc::mark_held(&mut network, &self.inventory.state);
        drop(locks);
        self.inventory.set_network(network, &account);
        self.inventory.set_file_instances(listed, &account);
        if let Err(error) = self.store_registry(&mut account, released).await {
            tracing::warn!(%error, "the addresses the reloaded file holds could not be stored yet: other hosts learn them at the next registry write");
        }
        self.inventory.notify_applied();
        Ok(reloaded)
    }
}

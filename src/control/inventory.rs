//! The inventory: the instances this imds serves and everything that binds them together. It
//! owns the fleet index ([`State`], the one owner of "one live instance per address", from
//! which guests are answered), the snapshot builder, the network registry (the subnets whose
//! pools addresses come from, changed only under the account's lock), the instance that
//! `RunInstances` starts from, the `ClientToken`s seen, the stored changes of config-file
//! instances not served yet, the terminated instances the store still has but this process
//! does not serve, and the count of applied changes others wait on.
//! The `ClientToken`s remembered are bounded (see [`super::client_tokens`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::client_tokens::ClientTokens;
use crate::fleet::changes::InstanceChanges;
use crate::fleet::instance::InstanceConfig;
use crate::fleet::instance_id::InstanceId;
use crate::fleet::lock_order::AccountGuard;
use crate::fleet::network::Network;
use crate::fleet::state::{InstanceSlot, SnapshotBuilder, State};
use crate::store::ClientToken;

/// The instances served and what binds them.
#[derive(Debug)]
pub(super) struct Inventory {
    /// The fleet index: instances by id and by address.
    pub(super) state: Arc<State>,
    /// Builds the snapshots swapped into it.
    pub(super) snapshots: Arc<SnapshotBuilder>,
    /// What `RunInstances` builds new instances from: the built-in instance.
    pub(super) template: InstanceConfig,
    /// The region's VPCs, subnets, security groups and key pairs (changed on a copy, swapped).
    network: Mutex<Arc<Network>>,
    /// `RunInstances`' client tokens and what they launched.
    client_tokens: Mutex<ClientTokens>,
    /// Launched instances gone (terminated an hour ago) that the store still has but this
    /// process does not serve (gone before it started, or when it learned them), by id, with
    /// their row's revision: the next sweep deletes their rows.
    gone_unserved: Mutex<BTreeMap<String, i64>>,
    /// Stored changes (and their row's revision) of config-file instances not served yet:
    /// an instance a SIGHUP adds starts from them.
    unplaced: Mutex<BTreeMap<String, (InstanceChanges, i64)>>,
    /// Instances launched through another host that this host refused to serve while a live
    /// instance of its own held their address; served once it no longer does.
    refused: Mutex<BTreeMap<InstanceId, Arc<InstanceSlot>>>,
    /// The instances the config file lists (fleet mode: `[[instances]]`; the others were
    /// launched), as last loaded.
    from_file: Mutex<BTreeSet<InstanceId>>,
    /// Counts applied instance changes, for whoever reacts to them (the link-local endpoint).
    applied: tokio::sync::watch::Sender<u64>,
}

/// A mutex's guard, whether or not a holder panicked (the values stay consistent: each is
/// replaced whole, or changed in one step).
fn held<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inventory {
    /// The inventory of `state`, whose network registry is `network`.
    pub(super) fn new(
        state: Arc<State>,
        snapshots: Arc<SnapshotBuilder>,
        template: InstanceConfig,
        network: Arc<Network>,
        unplaced: BTreeMap<String, (InstanceChanges, i64)>,
        from_file: BTreeSet<InstanceId>,
    ) -> Inventory {
        Inventory {
            from_file: Mutex::new(from_file),
            refused: Mutex::new(BTreeMap::new()),
            state,
            snapshots,
            template,
            network: Mutex::new(network),
            client_tokens: Mutex::new(ClientTokens::default()),
            gone_unserved: Mutex::new(BTreeMap::new()),
            unplaced: Mutex::new(unplaced),
            applied: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The network registry now.
    pub(super) fn network(&self) -> Arc<Network> {
        held(&self.network).clone()
    }

    /// Swaps in `network` (stored or learned, under the account's lock).
    pub(super) fn set_network(&self, network: Network, _: &AccountGuard<'_>) {
        *held(&self.network) = Arc::new(network);
    }

    /// What the `ClientToken` `token` launched, when this process remembers it.
    pub(super) fn client_token(&self, token: &str) -> Option<ClientToken> {
        held(&self.client_tokens).get(token).cloned()
    }

    /// Remembers `token` (launched with, or read from the store).
    pub(super) fn remember_client_token(&self, token: ClientToken) {
        held(&self.client_tokens).remember(token);
    }

    /// Starts the retention of the remembered tokens whose instances are all forgotten, now
    /// that `forgotten` were, and forgets the tokens whose retention ended by `now_millis`.
    pub(super) fn expire_client_tokens(
        &self,
        forgotten: &BTreeSet<String>,
        served: impl Fn(&str) -> bool,
        now_millis: i64,
    ) -> usize {
        held(&self.client_tokens).expire(forgotten, served, now_millis)
    }

    /// Records that the store still has `id`'s rows (at `revision`), a gone instance this
    /// process does not serve.
    pub(super) fn keep_gone_unserved(&self, id: String, revision: i64) {
        held(&self.gone_unserved).insert(id, revision);
    }

    /// The gone instances not served whose rows the store still has.
    pub(super) fn gone_unserved(&self) -> BTreeMap<String, i64> {
        held(&self.gone_unserved).clone()
    }

    /// Forgets `ids` among the gone instances not served (their rows are gone).
    pub(super) fn forget_gone_unserved<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        let mut gone = held(&self.gone_unserved);
        for id in ids {
            gone.remove(id);
        }
    }

    /// The changes stored for `id`, a config-file instance not served yet, and their revision
    /// (none and 0 when nothing is stored).
    pub(super) fn unplaced_changes(&self, id: &str) -> (InstanceChanges, i64) {
        held(&self.unplaced).get(id).cloned().unwrap_or_default()
    }

    /// Keeps the stored changes of a config-file instance this host does not serve (yet), for
    /// a reload that adds it; an older revision than the one kept is ignored.
    pub(super) fn keep_unplaced(&self, id: String, changes: InstanceChanges, revision: i64) {
        let mut unplaced = held(&self.unplaced);
        let newer = unplaced.get(&id).is_none_or(|(_, seen)| *seen < revision);
        if newer {
            unplaced.insert(id, (changes, revision));
        }
    }

    /// Forgets the stored changes of `id` once it is served (its slot holds them now).
    pub(super) fn forget_unplaced(&self, id: &str) {
        held(&self.unplaced).remove(id);
    }

    /// The instances the config file listed at its last load.
    pub(super) fn file_instances(&self) -> BTreeSet<InstanceId> {
        held(&self.from_file).clone()
    }

    /// Records the instances the config file lists now (under the account's lock).
    pub(super) fn set_file_instances(&self, ids: BTreeSet<InstanceId>, _: &AccountGuard<'_>) {
        *held(&self.from_file) = ids;
    }

    /// Keeps `slot`, launched elsewhere and refused here, for [`Inventory::serve_refused`].
    pub(super) fn keep_refused(&self, slot: Arc<InstanceSlot>) {
        held(&self.refused).insert(slot.id().clone(), slot);
    }

    /// Forgets a refused instance once it is served.
    pub(super) fn forget_refused(&self, id: &InstanceId) {
        held(&self.refused).remove(id);
    }

    /// Serves the refused instances whose address is free now (after a reload freed it), unless
    /// they are gone at `now`; the others stay refused.
    pub(super) fn serve_refused(&self, now: u64) {
        let mut refused = held(&self.refused);
        refused.retain(|_, slot| {
            if slot.changes().lifecycle.is_some_and(|l| l.is_gone(now)) {
                return false;
            }
            match self.state.insert(vec![slot.clone()]) {
                Ok(()) => {
                    tracing::info!(instance = %slot.id(), "an instance launched through another host is served now: its address is free here");
                    false
                }
                Err(_) => true,
            }
        });
    }

    /// Tells whoever waits that a change was applied.
    pub(super) fn notify_applied(&self) {
        self.applied.send_modify(|count| *count += 1);
    }

    /// Notified after each change applied.
    pub(super) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }
}

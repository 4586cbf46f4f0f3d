//! The control plane and the store: changes are made durable before they are acknowledged,
//! and changes other hosts made are learned through the same locks as local ones.
//!
//! - **Writing.** Every write names the revision of each row as this process last saw it; a
//!   write that raced another host's is refused by the store as a whole ([`StoreError::Conflict`]),
//!   so no acknowledged change is ever overwritten. The request is then retried from the top
//!   on the newer state, after a random wait that grows with the attempts (up to
//!   [`MAX_RETRY_WAIT`]), until it is made or [`RETRY_DEADLINE`] has passed: writers racing on
//!   one row from several hosts take turns, and are answered, not refused.
//! - **Learning.** [`ControlApi::catch_up`] loads every row newer than the newest revision
//!   seen and applies it: instance changes under the instance's change lock (a row already
//!   applied, e.g. this process's own, is skipped), instances launched elsewhere built and added,
//!   account values and token key generations swapped in, addresses taken marked in use,
//!   deletions (tombstones) applied: instances forgotten, addresses given back. A row that does
//!   not parse is reported and skipped. [`ControlApi::follow_store`] runs it at each hint of the
//!   store (a PostgreSQL notification, a reconnection) and at a slow poll.
//! - **Away.** While the store is unreachable, writes fail at once with `Unavailable` (503) and
//!   nothing changes; reads and guests are answered from memory.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::ControlError;
use super::query::QueryRequest;
use super::{ControlApi, DEFAULTS};
use crate::fleet::changes::InstanceChanges;
use crate::fleet::instance::{Instance, InstanceConfig};
use crate::fleet::instance_id::InstanceId;
use crate::fleet::lock_order::{AccountGuard, Unlocked};
use crate::fleet::network::Network;
use crate::fleet::state::InstanceSlot;
use crate::store::{
    AddressWrite, Changed, Commit, Deleted, Health, InstanceWrite, StoreError, StoredInstance,
};

/// How long a request that raced other hosts' changes is retried before it is answered
/// `Unavailable` (well within the AWS CLI's and SDKs' 60 s read timeout).
const RETRY_DEADLINE: Duration = Duration::from_secs(20);
/// The first retry waits a random part of this; each next one up to twice as long, at most
/// [`MAX_RETRY_WAIT`]: hosts racing for one row take turns instead of colliding again.
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(2);
/// The longest a retry waits.
const MAX_RETRY_WAIT: Duration = Duration::from_millis(100);
/// How often the registry is stored again when another host stored it meanwhile.
const ATTEMPTS: u32 = 30;
/// How often the store is read without a hint: a backstop for a lost notification.
const POLL_SHARED: Duration = Duration::from_secs(30);
/// How often the embedded store is read (other processes, e.g. `imds cert`, may write keys).
const POLL_EMBEDDED: Duration = Duration::from_secs(10);

/// The row writing `changes` of `slot`, expecting the revision it last had.
pub(super) fn instance_write(slot: &InstanceSlot, changes: &InstanceChanges) -> InstanceWrite {
    InstanceWrite {
        instance_id: slot.id().to_string(),
        config: None,
        changes: to_json(changes),
        expected: slot.revision(),
    }
}

/// The JSON text of a value to store.
pub(super) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("stored values serialise to JSON")
}

impl ControlApi {
    /// Makes `commit` durable, when there is a store; its revision (0 without one).
    pub(super) async fn persist(&self, commit: Commit) -> Result<i64, ControlError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let commit = Commit {
            at_millis: self.clock.now_millis() as i64,
            ..commit
        };
        match store.commit(commit).await {
            Ok(revision) => Ok(revision),
            Err(StoreError::Conflict { what }) => {
                tracing::debug!(
                    what,
                    "a control change raced another host's; retrying on the newer state"
                );
                Err(ControlError::Conflict(what))
            }
            Err(error @ StoreError::OutcomeUnknown { .. }) => {
                tracing::error!(%error, "a control change may or may not have been stored; catching up with the store to learn which");
                Err(ControlError::OutcomeUnknown(error.to_string()))
            }
            Err(error @ StoreError::Unavailable { .. }) => {
                tracing::warn!(%error, "a control change is refused: the store is unreachable");
                Err(ControlError::Unavailable(error.to_string()))
            }
            Err(error) => {
                tracing::error!(%error, "a control change could not be stored; nothing changed");
                Err(ControlError::InternalError)
            }
        }
    }

    /// The account value `name`'s row, expecting the revision it last had.
    pub(super) fn account_write(&self, commit: Commit, name: &str, value: String) -> Commit {
        let expected = self.account.revision(name);
        commit.value(name, value, expected)
    }

    /// Dispatches `query`, retrying it on the newer state when it raced another host.
    pub(super) async fn dispatch_retrying(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let deadline = Instant::now() + RETRY_DEADLINE;
        let mut most = FIRST_RETRY_WAIT;
        loop {
            // Each attempt is a task of its own in the lock order: it holds no lock in between.
            let mut order = Unlocked::task();
            match self.dispatch(query, request_id, &mut order).await {
                Err(ControlError::Conflict(what)) if Instant::now() < deadline => {
                    self.store_stats.conflict_retried();
                    let wait = most.mul_f64(rand::random::<f64>());
                    most = (most * 2).min(MAX_RETRY_WAIT);
                    tokio::time::sleep(wait).await;
                    if let Err(error) = self.catch_up().await {
                        tracing::warn!(%error, what, "cannot load the newer state to retry on");
                        return Err(ControlError::Unavailable(error.to_string()));
                    }
                }
                Err(ControlError::Conflict(what)) => {
                    tracing::warn!(
                        what,
                        "a control change kept racing other hosts' changes for {} s: refused",
                        RETRY_DEADLINE.as_secs()
                    );
                    return Err(ControlError::Conflict(what));
                }
                other => return other,
            }
        }
    }

    /// `GET /healthz`'s answer: `ok`, or `degraded` and why.
    pub(super) fn health(&self) -> String {
        let Some(store) = &self.store else {
            return "ok\n".into();
        };
        match store.health() {
            Health::Up => "ok\n".into(),
            Health::Down {
                since_millis,
                reason,
            } => {
                let since = time::OffsetDateTime::from_unix_timestamp((since_millis / 1000) as i64)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_default();
                format!(
                    "degraded: the store {} is unreachable since {since} ({reason}); guests are served from memory, control changes are refused until it is back\n",
                    store.describe()
                )
            }
        }
    }

    /// The store's Prometheus lines: whether it takes writes, and the newest revision seen.
    pub(super) fn store_metrics(&self) -> String {
        let Some(store) = &self.store else {
            return String::new();
        };
        let up = u8::from(store.health() == Health::Up);
        let mut out = format!(
            "# HELP imds_store_up Whether the store takes writes (0: unreachable; guests are still served).\n\
             # TYPE imds_store_up gauge\n\
             imds_store_up {up}\n\
             # HELP imds_store_revision The newest store revision this process has loaded.\n\
             # TYPE imds_store_revision gauge\n\
             imds_store_revision {}\n",
            self.seen.load(Ordering::Acquire)
        );
        self.store_stats.render(&mut out);
        out
    }

    /// Follows the store until the process ends: catches up at each hint and at a slow poll.
    pub async fn follow_store(self: Arc<Self>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let poll = match store.is_shared() {
            true => POLL_SHARED,
            false => POLL_EMBEDDED,
        };
        let mut hints = store.hints();
        loop {
            match &mut hints {
                Some(hints) => {
                    tokio::select! {
                        changed = hints.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                        () = tokio::time::sleep(poll) => {}
                    }
                }
                None => tokio::time::sleep(poll).await,
            }
            if let Err(error) = self.catch_up().await {
                tracing::debug!(%error, "catching up with the store failed; trying again at the next hint");
            }
        }
    }

    /// Stores the addresses this host's file instances hold, so that other hosts learn them
    /// before they launch (at start, before imds says where it listens).
    pub async fn publish_addresses(&self) {
        if self.store.is_none() {
            return;
        }
        let mut order = Unlocked::task();
        let mut account = self.account.lock(&mut order).await;
        if let Err(error) = self.store_registry(&mut account, Vec::new()).await {
            tracing::warn!(%error, "the addresses of this host's file instances could not be stored yet; they are at the next registry write");
        }
    }

    /// Stores the network registry's objects as this host holds them (with its file instances'
    /// networks, merged with what other hosts stored), the addresses its file instances hold,
    /// and gives back `released` (addresses file instances no longer hold), so that every host
    /// sees them before it launches; on another host's newer registry, catches up and tries
    /// again.
    pub(super) async fn store_registry(
        &self,
        account: &mut AccountGuard<'_>,
        released: Vec<AddressWrite>,
    ) -> Result<(), ControlError> {
        let mut attempt = 1;
        loop {
            let network = self.inventory.network();
            let mut commit = self.account_write(
                Commit {
                    released: released.clone(),
                    ..Commit::default()
                },
                super::vpc::NETWORK,
                to_json(&*network),
            );
            let from_file = self.inventory.file_instances();
            for slot in self.inventory.state.instances() {
                let holds = slot.changes().lifecycle.is_none_or(|l| l.holds_addresses());
                if from_file.contains(slot.id()) && holds {
                    for (subnet, ip) in super::launch::addresses(&slot.current().instance) {
                        commit = commit.publish(&subnet, ip, slot.id().as_str());
                    }
                }
            }
            match self.persist(commit).await {
                Ok(revision) => {
                    self.account
                        .set_revision(super::vpc::NETWORK, revision, account);
                    return Ok(());
                }
                Err(ControlError::Conflict(what)) if attempt < ATTEMPTS => {
                    attempt += 1;
                    self.catch_up_locked(account)
                        .await
                        .map_err(|error| ControlError::Unavailable(error.to_string()))?;
                    tracing::debug!(
                        what,
                        "storing the registry raced another host; again on the newer one"
                    );
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Loads and applies every row stored after the newest revision seen; how many were new.
    pub async fn catch_up(&self) -> Result<usize, StoreError> {
        // The account lock first, as changes spanning instances take it: a launch is either
        // applied here or learned, never both.
        let mut order = Unlocked::task();
        let mut account = self.account.lock(&mut order).await;
        self.catch_up_locked(&mut account).await
    }

    /// [`ControlApi::catch_up`] for a caller that holds the account lock.
    pub(super) async fn catch_up_locked(
        &self,
        account: &mut AccountGuard<'_>,
    ) -> Result<usize, StoreError> {
        let Some(store) = self.store.clone() else {
            return Ok(0);
        };
        let changed = store.load_since(self.seen.load(Ordering::Acquire)).await?;
        let revision = changed.revision;
        let applied = self.learn(changed, account).await;
        self.seen.fetch_max(revision, Ordering::AcqRel);
        if applied > 0 {
            self.inventory.notify_applied();
            tracing::debug!(applied, revision, "learned changes from the store");
        }
        Ok(applied)
    }

    /// Applies what another writer stored, under the account lock.
    async fn learn(&self, changed: Changed, account: &mut AccountGuard<'_>) -> usize {
        let mut applied = 0;
        // The registry: its objects as another host stored them (when they changed), with the
        // addresses in use this process knows, changed by the rows learned and merged with
        // the addresses held here once the instance rows are applied (an instance terminated
        // in this batch holds none).
        let current = self.inventory.network();
        let mut network: Option<Network> = None;
        for value in changed.account {
            if value.revision <= self.account.revision(&value.name) {
                continue;
            }
            let learned = match value.name.as_str() {
                DEFAULTS => serde_json::from_str(&value.value)
                    .map(|defaults| self.account.set_defaults(defaults, account)),
                super::vpc::NETWORK => {
                    serde_json::from_str::<Network>(&value.value).map(|mut learned| {
                        learned.adopt_pools(&current);
                        network = Some(learned);
                    })
                }
                super::launch_templates::TEMPLATES => serde_json::from_str(&value.value)
                    .map(|templates| self.account.set_templates(templates, account)),
                _ => continue,
            };
            self.account
                .set_revision(&value.name, value.revision, account);
            match learned {
                Ok(()) => applied += 1,
                Err(error) => {
                    self.store_stats.corrupt_rows(1);
                    tracing::warn!(name = value.name, %error, "a stored account value is unreadable: skipped (a later change replaces it)")
                }
            }
        }
        self.learn_signer(&changed.keys, account).await;
        let generations = crate::fleet::keys::token_generations(&changed.keys);
        if !generations.is_empty() {
            applied += generations.len();
            self.account
                .learn_token_generations(generations, self.clock.now_millis());
        }
        // Deletions: instances forgotten elsewhere are forgotten here; after pruned tombstones,
        // every launched instance the complete load does not have.
        let mut forgotten: Vec<InstanceId> = Vec::new();
        let mut released = Vec::new();
        for tombstone in &changed.tombstones {
            match &tombstone.deleted {
                Deleted::Instance(id) => forgotten.extend(id.parse::<InstanceId>().ok()),
                Deleted::Address { subnet_id, address } => released.push((subnet_id, address)),
            }
        }
        if changed.complete {
            let stored: BTreeSet<&str> = changed
                .instances
                .iter()
                .map(|row| row.instance_id.as_str())
                .collect();
            let from_file = self.inventory.file_instances();
            forgotten.extend(
                self.inventory
                    .state
                    .instances()
                    .into_iter()
                    .map(|slot| slot.id().clone())
                    .filter(|id| !from_file.contains(id) && !stored.contains(id.as_str())),
            );
        }
        if !forgotten.is_empty() {
            let ids: Vec<String> = forgotten.iter().map(ToString::to_string).collect();
            self.inventory.forget_gone_unserved(&ids);
            applied += self.forget_in_memory(&forgotten, account);
            tracing::info!(
                instances = forgotten.len(),
                "terminated instances forgotten through another host"
            );
        }
        let mut lifecycles = false;
        let mut launched = Vec::new();
        for row in changed.instances {
            let Ok(id) = row.instance_id.parse::<InstanceId>() else {
                self.store_stats.corrupt_rows(1);
                tracing::warn!(
                    instance = row.instance_id,
                    "a stored instance id is malformed: skipped"
                );
                continue;
            };
            let changes: InstanceChanges = match serde_json::from_str(&row.changes) {
                Ok(changes) => changes,
                Err(error) => {
                    self.store_stats.corrupt_rows(1);
                    tracing::warn!(instance = row.instance_id, %error, "stored changes are unreadable: skipped (a later change replaces them)");
                    if let Some(slot) = self.inventory.state.instance(&id) {
                        let held = slot.lock(account).await;
                        slot.set_revision(row.revision.max(slot.revision()), &held);
                    }
                    continue;
                }
            };
            match self.inventory.state.instance(&id) {
                Some(slot) => {
                    let held = slot.lock(account).await;
                    if row.revision <= slot.revision() {
                        continue;
                    }
                    lifecycles |= slot.changes().lifecycle != changes.lifecycle;
                    let current = slot.current();
                    let instance = self.layer(&changes, current.instance.clone());
                    slot.set_changes(changes, &held);
                    slot.set_revision(row.revision, &held);
                    let built = self
                        .inventory
                        .snapshots
                        .build_after(Some(&current), instance);
                    if let Err(conflict) = self.inventory.state.replace(built) {
                        tracing::error!(%conflict, "a learned change is not served: it would give an address two instances");
                    }
                    applied += 1;
                }
                None if row.config.is_none() => {
                    self.inventory
                        .keep_unplaced(row.instance_id, changes, row.revision)
                }
                None => {
                    if let Some(instance) = self.launched_elsewhere(&row, &changes) {
                        launched.push((instance, changes, row.revision));
                    }
                }
            }
        }
        if !launched.is_empty() {
            applied += launched.len();
            self.add_launched(launched).await;
        }
        if lifecycles {
            if let Err(conflict) = self.inventory.state.reindex() {
                tracing::error!(%conflict, "learned lifecycles are not indexed: an address would have two instances");
            }
        }
        let addresses_changed =
            changed.complete || !released.is_empty() || !changed.addresses.is_empty();
        if network.is_some() || addresses_changed {
            let mut network = network.unwrap_or_else(|| (*current).clone());
            if changed.complete {
                network.clear_pools();
            }
            for (subnet_id, address) in released {
                super::vpc::release_stored(&mut network, subnet_id, address);
            }
            for row in &changed.addresses {
                super::vpc::mark_stored(&mut network, &row.subnet_id, &row.address);
            }
            self.learn_network(&mut network);
            self.inventory.set_network(network, account);
        }
        applied
    }

    /// Merges a registry another host stored with what this host's live instances hold: the
    /// addresses it lacks (this host's file instances, which the other host does not know) are
    /// marked again, and reported, never dropped.
    fn learn_network(&self, network: &mut Network) {
        let missing = super::vpc::mark_held(network, &self.inventory.state);
        if !missing.is_empty() {
            tracing::warn!(
                ?missing,
                "the network registry learned from the store lacked addresses this host's instances hold; they stay in use"
            );
        }
    }

    /// The instance another host launched, as `row` stores it (`None`: not one, or gone).
    fn launched_elsewhere(
        &self,
        row: &StoredInstance,
        changes: &InstanceChanges,
    ) -> Option<Instance> {
        let config = row.config.as_deref()?;
        if self.inventory.state.is_single() {
            return None;
        }
        if changes
            .lifecycle
            .is_some_and(|l| l.is_gone(self.clock.now_millis()))
        {
            // Not served; its rows go at the next sweep (whichever host sweeps first).
            self.inventory
                .keep_gone_unserved(row.instance_id.clone(), row.revision);
            return None;
        }
        let config = match serde_json::from_str::<InstanceConfig>(config) {
            Ok(config) => config,
            Err(error) => {
                self.store_stats.corrupt_rows(1);
                tracing::warn!(instance = row.instance_id, %error, "a stored launched instance is unreadable: skipped");
                return None;
            }
        };
        match Instance::new(config) {
            Ok(instance) => Some(self.layer(changes, instance)),
            Err(error) => {
                tracing::error!(instance = row.instance_id, %error, "a stored launched instance is not valid; not served");
                None
            }
        }
    }

    /// Builds (on blocking threads: identity documents are signed) and serves instances
    /// launched elsewhere.
    async fn add_launched(&self, launched: Vec<(Instance, InstanceChanges, i64)>) {
        let (instances, rest): (Vec<Instance>, Vec<(InstanceChanges, i64)>) = launched
            .into_iter()
            .map(|(instance, changes, revision)| (instance, (changes, revision)))
            .unzip();
        let snapshots = self.inventory.snapshots.clone();
        let built = match tokio::task::spawn_blocking(move || snapshots.build_all(instances)).await
        {
            Ok(built) => built,
            Err(error) => {
                tracing::error!(%error, "building instances launched elsewhere failed");
                return;
            }
        };
        let slots: Vec<Arc<InstanceSlot>> = built
            .into_iter()
            .zip(rest)
            .map(|(snapshot, (changes, revision))| {
                InstanceSlot::stored(snapshot, changes, revision)
            })
            .collect();
        let mut served = 0;
        // One at a time: an instance claiming an address a live one here holds is refused
        // alone, loudly, and the others are served.
        for slot in slots {
            match self.inventory.state.insert(vec![slot.clone()]) {
                Ok(()) => {
                    self.inventory.forget_refused(slot.id());
                    served += 1
                }
                Err(conflict) => {
                    tracing::error!(
                        %conflict,
                        instance = %slot.id(),
                        "an instance launched through another host is not served here while its address belongs to a live instance of this host (the hosts' config files differ)"
                    );
                    self.inventory.keep_refused(slot);
                }
            }
        }
        tracing::info!(served, "serving instances launched through another host");
    }
}

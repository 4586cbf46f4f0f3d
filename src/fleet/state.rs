//! Shared state: the fleet index ([`State`]) of instance slots ([`InstanceSlot`]), each owning
//! one instance's [`Snapshot`], swapped whole (lock-free for readers), so a request never sees a
//! half-applied change. The index owns "one live instance per address" and refuses a change
//! that would give an address a second owner (see [`index`]).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::clock::Clock;
use crate::fleet::changes::InstanceChanges;
use crate::fleet::credentials::{CredentialIssuer, Delivery, IssuedSet};
use crate::fleet::events::Schedule;
use crate::fleet::faults::FaultSet;
use crate::fleet::instance::{Instance, StsRole};
use crate::fleet::instance_id::InstanceId;
use crate::fleet::keys::Keys;
use crate::fleet::lock_order::{BeforeInstances, InstanceGuard, InstanceLock};
use crate::fleet::metadata::{build, Timeline};
use crate::fleet::options::MetadataOptions;
use crate::fleet::sts::AssumedRole;
use crate::fleet::throttle::Throttle;

mod index;

use self::index::Index;
pub use self::index::{addresses_of, AddressInUse};

/// Everything needed to answer one instance's requests, built once per change.
#[derive(Debug)]
pub struct Snapshot {
    /// The instance described.
    pub instance: Instance,
    /// Its metadata options (copied out of the instance for the hot path).
    pub options: MetadataOptions,
    /// Its events, with resolved times.
    pub schedule: Schedule,
    /// Its prebuilt metadata trees, one per stretch of time in which its events look the same.
    pub timeline: Timeline,
    /// With a client limit on events: the trees without any event, for the other clients.
    pub quiet: Option<Timeline>,
    /// Its generated credentials (identity, and the role's unless they come from STS).
    pub credentials: CredentialIssuer,
    /// The role's credentials from STS, when configured so.
    pub assumed_role: Option<Arc<AssumedRole>>,
    /// `Last-Modified` of its fixed leaves: when this snapshot was built.
    pub last_modified: HeaderValue,
    /// Its signed identity document (kept so that the next snapshot can reuse the signatures).
    pub identity: Arc<build::SignedIdentity>,
}

impl Snapshot {
    /// Builds the snapshot of `instance` for a service started at `started` (clock
    /// milliseconds; delays in its events count from there): credentials derived from the keys'
    /// secret, the identity document signed by their signer.
    pub fn new(instance: Instance, keys: &Keys, started: u64) -> Snapshot {
        Snapshot::after(instance, keys, started, None)
    }

    /// [`Snapshot::new`], reusing `previous`'s signatures when its identity document is the
    /// same and signed by the same key.
    pub fn after(
        instance: Instance,
        keys: &Keys,
        started: u64,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let launched = instance.config.pending_time.unix_timestamp().max(0) as u64 * 1000;
        let credentials = CredentialIssuer::new(
            &keys.secret,
            instance.id(),
            &instance.config.account_id,
            instance
                .iam
                .as_ref()
                .filter(|p| p.sts.is_none())
                .map(|p| p.role.as_str()),
            launched,
            instance
                .iam
                .as_ref()
                .map_or(21_600, |p| p.credential_lifetime.as_secs()),
        );
        let last_modified = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now()))
            .expect("HTTP dates are visible ASCII");
        let schedule = Schedule::resolve(&instance.config.events, started, instance.id());
        let identity = Arc::new(build::sign_identity(
            &instance,
            &keys.signer,
            previous.map(|p| &*p.identity),
        ));
        let quiet = schedule
            .client_limit
            .map(|_| build::timeline(&instance, &identity, &Schedule::default()));
        Snapshot {
            options: instance.options(),
            timeline: build::timeline(&instance, &identity, &schedule),
            identity,
            quiet,
            schedule,
            credentials,
            assumed_role: None,
            last_modified,
            instance,
        }
    }
}

impl Snapshot {
    /// The snapshot serving the role's credentials from `assumed_role`.
    pub fn with_assumed_role(mut self, assumed_role: Arc<AssumedRole>) -> Snapshot {
        self.assumed_role = Some(assumed_role);
        self
    }

    /// The role credentials a caller gets by `delivery` at `now_millis`; `None` without a role
    /// (or while STS has not provided any).
    pub fn role_credentials(&self, delivery: Delivery, now_millis: u64) -> Option<Arc<IssuedSet>> {
        match &self.assumed_role {
            Some(assumed) => assumed.credentials(delivery, now_millis),
            None => self.credentials.role(delivery, now_millis),
        }
    }
}

/// Builds snapshots. An STS-backed role keeps its credentials across rebuilds while its
/// settings stay the same, and starts fetching anew when they change.
#[derive(Debug)]
pub struct SnapshotBuilder {
    /// Swapped whole when the signing key rotates.
    keys: arc_swap::ArcSwap<Keys>,
    clock: Arc<dyn Clock>,
    /// When the service started (clock milliseconds): event delays count from here.
    started: u64,
    sts_endpoint: Option<String>,
    /// Per instance (by id): the STS-backed role in use and the settings it was started with.
    assumed_roles: Mutex<HashMap<String, (StsRole, Arc<AssumedRole>)>>,
}

impl SnapshotBuilder {
    /// A builder signing and deriving with `keys`, calling STS at `sts_endpoint` (default: the
    /// regional endpoint) when a role's credentials come from STS.
    pub fn new(keys: Keys, clock: Arc<dyn Clock>, sts_endpoint: Option<String>) -> SnapshotBuilder {
        SnapshotBuilder {
            keys: arc_swap::ArcSwap::from_pointee(keys),
            started: clock.now_millis(),
            clock,
            sts_endpoint,
            assumed_roles: Mutex::new(HashMap::new()),
        }
    }

    /// The snapshot of `instance`. Starting an STS-backed role needs a Tokio runtime.
    pub fn build(&self, instance: Instance) -> Snapshot {
        self.build_after(None, instance)
    }

    /// The snapshot of `instance` replacing `previous` (whose document signatures are reused
    /// when the document has not changed).
    pub fn build_after(&self, previous: Option<&Snapshot>, instance: Instance) -> Snapshot {
        let sts = instance.iam.as_ref().and_then(|p| p.sts.clone());
        let id = instance.id().to_owned();
        let snapshot = Snapshot::after(instance, &self.keys.load(), self.started, previous);
        let mut roles = self.assumed_roles.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sts) = sts else {
            roles.remove(&id);
            return snapshot;
        };
        let assumed = match roles.get(&id) {
            Some((running, assumed)) if *running == sts => assumed.clone(),
            _ => {
                let endpoint = self.sts_endpoint.as_deref();
                let assumed = AssumedRole::start(&sts, endpoint, self.clock.clone());
                roles.insert(id, (sts, assumed.clone()));
                assumed
            }
        };
        snapshot.with_assumed_role(assumed)
    }

    /// The snapshots of `instances`, built on every core (each signs its identity document,
    /// which is most of the work), in order.
    pub fn build_all(&self, instances: Vec<Instance>) -> Vec<Snapshot> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads < 2 || instances.len() < 16 {
            return instances.into_iter().map(|i| self.build(i)).collect();
        }
        let runtime = tokio::runtime::Handle::try_current().ok();
        let chunk = instances.len().div_ceil(threads);
        let mut chunks: Vec<Vec<Instance>> = Vec::with_capacity(threads);
        let mut rest = instances;
        while !rest.is_empty() {
            let tail = rest.split_off(chunk.min(rest.len()));
            chunks.push(std::mem::replace(&mut rest, tail));
        }
        std::thread::scope(|scope| {
            let workers: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    let runtime = runtime.clone();
                    scope.spawn(move || {
                        // STS-backed roles start their renewal task on the caller's runtime.
                        let _entered = runtime.as_ref().map(|r| r.enter());
                        chunk.into_iter().map(|i| self.build(i)).collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().expect("building a snapshot does not panic"))
                .collect()
        })
    }

    /// Forgets the instance `id`'s STS-backed role, which ends its renewals.
    pub fn forget(&self, id: &str) {
        self.assumed_roles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// The key identity documents are signed with now.
    pub fn signer(&self) -> Arc<crate::fleet::identity::IdentitySigner> {
        self.keys.load().signer.clone()
    }

    /// Signs identity documents built from now on with `signer` (a rotated signing key).
    pub fn set_signer(&self, signer: Arc<crate::fleet::identity::IdentitySigner>) {
        let mut keys = Keys::clone(&self.keys.load());
        keys.signer = signer;
        self.keys.store(Arc::new(keys));
    }

    /// When the service started (clock milliseconds).
    pub fn started(&self) -> u64 {
        self.started
    }

    /// Waits (at most `bound` each) for the first STS fetch of every instance whose role
    /// credentials come from STS; false when STS did not provide some.
    pub async fn first_sts_fetch(&self, bound: std::time::Duration) -> bool {
        let assumed: Vec<Arc<AssumedRole>> = self
            .assumed_roles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|(_, assumed)| assumed.clone())
            .collect();
        let mut all = true;
        for role in assumed {
            all &= role.first_fetch(bound).await;
        }
        all
    }
}

/// The client addresses that see an instance's events when only the first few may: admitted
/// on their first request for an event path while there is room, and for good. Readers take no
/// lock; admissions take turns.
#[derive(Debug, Default)]
pub struct Audience {
    admitted: ArcSwap<Vec<IpAddr>>,
    admitting: Mutex<()>,
}

impl Audience {
    /// Whether `peer` sees events, admitting it when `asking` for them and fewer than `limit`
    /// addresses are admitted. IPv4-mapped IPv6 addresses count as their IPv4 address.
    pub fn sees(&self, peer: IpAddr, limit: usize, asking: bool) -> bool {
        let peer = peer.to_canonical();
        if self.admitted.load().contains(&peer) {
            return true;
        }
        if !asking {
            return false;
        }
        let _one_at_a_time = self.admitting.lock().unwrap_or_else(|e| e.into_inner());
        let admitted = self.admitted.load_full();
        if admitted.contains(&peer) {
            return true;
        }
        if admitted.len() >= limit {
            return false;
        }
        let mut more = (*admitted).clone();
        more.push(peer);
        self.admitted.store(Arc::new(more));
        true
    }
}

/// Counters of one instance, rendered per instance at `GET /metrics`.
#[derive(Debug, Default)]
pub struct InstanceCounters {
    /// Requests without a session token (EC2's `MetadataNoToken`).
    pub no_token: AtomicU64,
    /// Role credentials delivered, `[v1, v2]`.
    pub role_deliveries: [AtomicU64; 2],
    /// Token-less requests answered and refused, minute by minute over the last 24 hours.
    pub no_token_history: crate::fleet::history::NoTokenHistory,
    /// The local processes behind its recent token-less requests, when the access log finds them.
    pub recent_callers: crate::fleet::callers::RecentCallers,
}

/// The one owner of everything about one instance: its current snapshot, the faults injected
/// into it, who sees its events, its counters, and what the control plane changed on it (with
/// the lock that makes those changes one at a time).
#[derive(Debug)]
pub struct InstanceSlot {
    id: InstanceId,
    snapshot: ArcSwap<Snapshot>,
    faults: ArcSwap<FaultSet>,
    audience: Audience,
    counters: InstanceCounters,
    /// One control change at a time (after the account's lock, see [`crate::fleet::lock_order`]).
    lock: InstanceLock,
    changes: Mutex<InstanceChanges>,
    /// Until when (clock millis) the last options change reads `pending`.
    pending_until: AtomicU64,
    /// Its request budget and connection count.
    throttle: Throttle,
    /// What binds session tokens to this instance, derived on first use.
    token_binding: std::sync::OnceLock<crate::fleet::token::TokenBinding>,
    /// The store revision of its changes as last written or learned (0: never stored).
    revision: std::sync::atomic::AtomicI64,
}

impl InstanceSlot {
    /// A slot serving `snapshot` (which may be shared: it is never changed, only replaced),
    /// with the faults its configuration sets and `changes` as what the control plane changed
    /// so far.
    pub fn new(snapshot: impl Into<Arc<Snapshot>>, changes: InstanceChanges) -> Arc<InstanceSlot> {
        let snapshot: Arc<Snapshot> = snapshot.into();
        let faults = FaultSet::new(snapshot.instance.config.faults.clone())
            .expect("an instance's faults are validated with it");
        let id = snapshot
            .instance
            .id()
            .parse()
            .expect("an instance's id is validated with it");
        Arc::new(InstanceSlot {
            id,
            snapshot: ArcSwap::new(snapshot),
            faults: ArcSwap::from_pointee(faults),
            audience: Audience::default(),
            counters: InstanceCounters::default(),
            lock: InstanceLock::default(),
            changes: Mutex::new(changes),
            pending_until: AtomicU64::new(0),
            throttle: Throttle::default(),
            token_binding: std::sync::OnceLock::new(),
            revision: std::sync::atomic::AtomicI64::new(0),
        })
    }

    /// [`InstanceSlot::new`], with `changes` as stored at `revision`.
    pub fn stored(
        snapshot: impl Into<Arc<Snapshot>>,
        changes: InstanceChanges,
        revision: i64,
    ) -> Arc<InstanceSlot> {
        let slot = InstanceSlot::new(snapshot, changes);
        slot.revision.store(revision, Ordering::Release);
        slot
    }

    /// Waits for this instance's lock, after whatever `before` holds (the lock order's
    /// [`crate::fleet::lock_order::BeforeInstances`]).
    pub async fn lock<'a, B: BeforeInstances>(&'a self, before: &'a mut B) -> InstanceGuard<'a> {
        self.lock.lock(before).await
    }

    /// Its lock, for [`crate::fleet::lock_order::lock_instances`] (several in id order).
    pub fn instance_lock(&self) -> &InstanceLock {
        &self.lock
    }

    /// Which of `guards` holds its lock.
    pub fn guard_in<'g, 'a>(
        &self,
        guards: &'g [InstanceGuard<'a>],
    ) -> Option<&'g InstanceGuard<'a>> {
        guards.iter().find(|guard| guard.holds(&self.lock))
    }

    /// The instance's id.
    pub fn id(&self) -> &InstanceId {
        &self.id
    }

    /// The current snapshot, for one request (lock-free).
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// The current snapshot, to keep.
    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Swaps in a new snapshot whole; requests in flight finish with the one they loaded.
    pub fn replace(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    /// The faults injected into the instance, for one request (lock-free).
    pub fn faults(&self) -> arc_swap::Guard<Arc<FaultSet>> {
        self.faults.load()
    }

    /// Replaces the faults injected into the instance (under its lock).
    pub fn set_faults(&self, faults: FaultSet, held: &InstanceGuard<'_>) {
        debug_assert!(held.holds(&self.lock), "another instance's lock");
        self.faults.store(Arc::new(faults));
    }

    /// What binds session tokens to this instance (`derive` runs once, on first use).
    pub fn token_binding(
        &self,
        derive: impl FnOnce() -> crate::fleet::token::TokenBinding,
    ) -> &crate::fleet::token::TokenBinding {
        self.token_binding.get_or_init(derive)
    }

    /// Who sees the instance's events when only the first few clients may.
    pub fn audience(&self) -> &Audience {
        &self.audience
    }

    /// The instance's counters.
    pub fn counters(&self) -> &InstanceCounters {
        &self.counters
    }

    /// Its throttle: request budget, connections open, requests throttled.
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// What the control plane changed on the instance so far.
    pub fn changes(&self) -> InstanceChanges {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records what the control plane changed (under its lock).
    pub fn set_changes(&self, changes: InstanceChanges, held: &InstanceGuard<'_>) {
        debug_assert!(held.holds(&self.lock), "another instance's lock");
        *self.changes.lock().unwrap_or_else(|e| e.into_inner()) = changes;
    }

    /// The store revision of its changes as last written or learned (0: never stored).
    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Records the store revision of its changes (under its lock).
    pub fn set_revision(&self, revision: i64, held: &InstanceGuard<'_>) {
        debug_assert!(held.holds(&self.lock), "another instance's lock");
        self.revision.store(revision, Ordering::Release);
    }

    /// Until when (clock milliseconds) the last options change reads `pending`.
    pub fn pending_until(&self) -> u64 {
        self.pending_until.load(Ordering::Relaxed)
    }

    /// Makes the options read `pending` until `millis` (clock milliseconds).
    pub fn set_pending_until(&self, millis: u64) {
        self.pending_until.store(millis, Ordering::Relaxed);
    }

    /// Every address of the instance (private IPv4 and IPv6 of each interface).
    fn addresses(&self) -> Vec<IpAddr> {
        index::addresses_of(&self.snapshot.load().instance)
    }
}

/// The instances served (the fleet index), and the one owner of "one live instance per
/// address" (see [`index`]): each caller's instance found by its address, in O(1) without a
/// lock. In single-instance mode the one instance answers every caller; in fleet mode a caller
/// whose address belongs to no running instance gets none. Every change that adds instances or
/// changes their addresses goes through here and is refused whole when it would give an address
/// a second live owner.
#[derive(Debug)]
pub struct State {
    index: ArcSwap<Index>,
    single: bool,
    /// Index rebuilds take turns.
    reindexing: Mutex<()>,
}

impl State {
    /// State serving one instance to every caller, with the faults its configuration sets.
    pub fn single(snapshot: impl Into<Arc<Snapshot>>) -> State {
        State::single_with(snapshot, InstanceChanges::default())
    }

    /// State serving one instance to every caller, `changes` being what the control plane
    /// changed on it so far.
    pub fn single_with(snapshot: impl Into<Arc<Snapshot>>, changes: InstanceChanges) -> State {
        State::single_slot(InstanceSlot::new(snapshot, changes))
    }

    /// State serving the instance of `slot` to every caller.
    pub fn single_slot(slot: Arc<InstanceSlot>) -> State {
        let state = State {
            index: ArcSwap::from_pointee(Index::default()),
            single: true,
            reindexing: Mutex::new(()),
        };
        state
            .apply(Vec::new(), vec![slot], &[])
            .expect("one instance cannot hold an address another holds");
        state
    }

    /// State serving each of `slots` to the callers at its addresses (fleet mode); refused when
    /// two live ones share an address (the later in `slots` is the claimant).
    pub fn fleet(slots: Vec<Arc<InstanceSlot>>) -> Result<State, AddressInUse> {
        let state = State {
            index: ArcSwap::from_pointee(Index::default()),
            single: false,
            reindexing: Mutex::new(()),
        };
        for slot in slots {
            state.apply(Vec::new(), vec![slot], &[])?;
        }
        Ok(state)
    }

    /// Whether one instance answers every caller.
    pub fn is_single(&self) -> bool {
        self.single
    }

    /// The instance answering a caller at `peer` (IPv4-mapped IPv6 counts as IPv4).
    pub fn for_peer(&self, peer: IpAddr) -> Option<Arc<InstanceSlot>> {
        self.with_caller(peer, |slot| slot.cloned())
    }

    /// `answer` called with the instance answering a caller at `peer`, borrowed: unlike
    /// [`State::for_peer`], no reference count shared by all of the instance's requests moves.
    pub fn with_caller<R>(
        &self,
        peer: IpAddr,
        answer: impl FnOnce(Option<&Arc<InstanceSlot>>) -> R,
    ) -> R {
        let index = self.index.load();
        match &index.everyone {
            Some(everyone) => answer(Some(everyone)),
            None => answer(index.by_address.get(&peer.to_canonical())),
        }
    }

    /// The live instance (running or stopped) holding `address`, if any.
    pub fn holder(&self, address: IpAddr) -> Option<InstanceId> {
        self.index
            .load()
            .owners
            .get(&address.to_canonical())
            .cloned()
    }

    /// Whether `instances` (new ones, or new versions of ones served) could be served without
    /// an address having two live owners; for checking a change before it is made durable.
    pub fn admits(&self, instances: &[&Instance]) -> Result<(), AddressInUse> {
        let index = self.index.load();
        let mut claimed: HashMap<IpAddr, InstanceId> = HashMap::new();
        for instance in instances {
            let Ok(claimant) = instance.id().parse::<InstanceId>() else {
                continue;
            };
            for address in index::addresses_of(instance) {
                let address = address.to_canonical();
                let holder = claimed
                    .insert(address, claimant.clone())
                    .or_else(|| index.owners.get(&address).cloned());
                match holder {
                    Some(holder) if holder != claimant => {
                        return Err(AddressInUse {
                            address,
                            holder,
                            claimant,
                        })
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The instance with id `id`.
    pub fn instance(&self, id: &InstanceId) -> Option<Arc<InstanceSlot>> {
        self.index.load().by_id.get(id).cloned()
    }

    /// Every instance, by id.
    pub fn instances(&self) -> Vec<Arc<InstanceSlot>> {
        self.index.load().by_id.values().cloned().collect()
    }

    /// The first instance by id (single-instance mode: the only one).
    pub fn first(&self) -> Option<Arc<InstanceSlot>> {
        self.index.load().by_id.values().next().cloned()
    }

    /// The current snapshot of the first instance (single-instance mode: the only one).
    pub fn current(&self) -> Arc<Snapshot> {
        self.first()
            .expect("single-instance mode always has its instance")
            .current()
    }

    /// Swaps in a new snapshot of its instance, re-indexing when its addresses changed;
    /// refused (nothing swapped) when that would take an address another live instance holds.
    pub fn replace(&self, snapshot: Snapshot) -> Result<(), AddressInUse> {
        self.apply(vec![snapshot], Vec::new(), &[])
    }

    /// Adds instances (fleet mode) and re-indexes; refused whole (nothing added) when one of
    /// them claims an address a live instance holds.
    pub fn insert(&self, slots: Vec<Arc<InstanceSlot>>) -> Result<(), AddressInUse> {
        self.apply(Vec::new(), slots, &[])
    }

    /// Re-indexes after an instance stopped serving guests, started again or was terminated
    /// (its state changed; it keeps its addresses until terminated).
    pub fn reindex(&self) -> Result<(), AddressInUse> {
        self.apply(Vec::new(), Vec::new(), &[])
    }

    /// Swaps in new snapshots of served instances, adds `added` and stops serving `removed`,
    /// as one change: refused whole (nothing swapped, added or removed) when an address would
    /// have two live owners. Addresses may move between the instances of one change.
    pub fn apply(
        &self,
        replaced: Vec<Snapshot>,
        added: Vec<Arc<InstanceSlot>>,
        removed: &[InstanceId],
    ) -> Result<(), AddressInUse> {
        let _one_at_a_time = self.reindexing.lock().unwrap_or_else(|e| e.into_inner());
        let mut by_id = self.index.load().by_id.clone();
        for id in removed {
            by_id.remove(id);
        }
        let mut claiming = BTreeMap::new();
        for slot in added {
            claiming.insert(slot.id.clone(), slot.addresses());
            by_id.insert(slot.id.clone(), slot);
        }
        let mut swaps = Vec::with_capacity(replaced.len());
        for snapshot in replaced {
            let Ok(id) = snapshot.instance.id().parse::<InstanceId>() else {
                continue;
            };
            let Some(slot) = by_id.get(&id).cloned() else {
                continue;
            };
            let addresses = index::addresses_of(&snapshot.instance);
            if addresses != slot.addresses() {
                claiming.insert(id, addresses);
            }
            swaps.push((slot, snapshot));
        }
        let index = Index::build(by_id, self.single, &claiming)?;
        for (slot, snapshot) in swaps {
            slot.replace(snapshot);
        }
        self.index.store(Arc::new(index));
        Ok(())
    }
}

#[cfg(test)]
mod tests;

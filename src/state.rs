//! Shared state: one [`Snapshot`] per instance, each swapped whole (lock-free for readers), so a
//! request never sees a half-applied change.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::clock::Clock;
use crate::credentials::{CredentialIssuer, Delivery, IssuedSet};
use crate::events::Schedule;
use crate::faults::FaultSet;
use crate::instance::{Instance, StsRole};
use crate::keys::Keys;
use crate::metadata::{build, Timeline};
use crate::options::MetadataOptions;
use crate::sts::AssumedRole;

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
}

impl Snapshot {
    /// Builds the snapshot of `instance` for a service started at `started` (clock
    /// milliseconds; delays in its events count from there): credentials derived from the keys'
    /// secret, the identity document signed by their signer.
    pub fn new(instance: Instance, keys: &Keys, started: u64) -> Snapshot {
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
        let quiet = schedule
            .client_limit
            .map(|_| build::timeline(&instance, &keys.signer, &Schedule::default()));
        Snapshot {
            options: instance.options(),
            timeline: build::timeline(&instance, &keys.signer, &schedule),
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
    keys: Keys,
    clock: Arc<dyn Clock>,
    /// When the service started (clock milliseconds): event delays count from here.
    started: u64,
    sts_endpoint: Option<String>,
    /// The STS-backed role in use and the settings it was started with.
    assumed_role: Mutex<Option<(StsRole, Arc<AssumedRole>)>>,
}

impl SnapshotBuilder {
    /// A builder signing and deriving with `keys`, calling STS at `sts_endpoint` (default: the
    /// regional endpoint) when a role's credentials come from STS.
    pub fn new(keys: Keys, clock: Arc<dyn Clock>, sts_endpoint: Option<String>) -> SnapshotBuilder {
        SnapshotBuilder {
            keys,
            started: clock.now_millis(),
            clock,
            sts_endpoint,
            assumed_role: Mutex::new(None),
        }
    }

    /// The snapshot of `instance`. Starting an STS-backed role needs a Tokio runtime.
    pub fn build(&self, instance: Instance) -> Snapshot {
        let sts = instance.iam.as_ref().and_then(|p| p.sts.clone());
        let snapshot = Snapshot::new(instance, &self.keys, self.started);
        let mut current = self.assumed_role.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sts) = sts else {
            *current = None;
            return snapshot;
        };
        let assumed = match current.as_ref() {
            Some((running, assumed)) if *running == sts => assumed.clone(),
            _ => {
                let endpoint = self.sts_endpoint.as_deref();
                let assumed = AssumedRole::start(&sts, endpoint, self.clock.clone());
                *current = Some((sts, assumed.clone()));
                assumed
            }
        };
        snapshot.with_assumed_role(assumed)
    }

    /// When the service started (clock milliseconds).
    pub fn started(&self) -> u64 {
        self.started
    }

    /// Waits (at most `bound`) for the first STS fetch when a role's credentials come from STS;
    /// false when STS did not provide them.
    pub async fn first_sts_fetch(&self, bound: std::time::Duration) -> bool {
        let assumed = self
            .assumed_role
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, assumed)| assumed.clone());
        match assumed {
            Some(assumed) => assumed.first_fetch(bound).await,
            None => true,
        }
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

/// The instances served, their current snapshots, the faults injected into each and who sees
/// their events.
#[derive(Debug)]
pub struct State {
    instances: Vec<ArcSwap<Snapshot>>,
    faults: Vec<ArcSwap<FaultSet>>,
    audiences: Vec<Audience>,
}

impl State {
    /// State serving one instance to every caller, with the faults its configuration sets. The
    /// snapshot may be shared with other states (it is never changed, only replaced).
    pub fn single(snapshot: impl Into<Arc<Snapshot>>) -> State {
        let snapshot = snapshot.into();
        let faults = FaultSet::new(snapshot.instance.config.faults.clone())
            .expect("an instance's faults are validated with it");
        State {
            instances: vec![ArcSwap::new(snapshot)],
            faults: vec![ArcSwap::from_pointee(faults)],
            audiences: vec![Audience::default()],
        }
    }

    /// Who sees the instance's events (single-instance mode: the only one).
    pub fn event_audience(&self) -> &Audience {
        self.audiences
            .first()
            .expect("a state serves at least one instance")
    }

    /// The faults injected into the instance (single-instance mode: the only one).
    pub fn faults(&self) -> Arc<FaultSet> {
        self.faults
            .first()
            .expect("a state serves at least one instance")
            .load_full()
    }

    /// Replaces the faults injected into the instance.
    pub fn set_faults(&self, faults: FaultSet) {
        if let Some(current) = self.faults.first() {
            current.store(Arc::new(faults));
        }
    }

    /// The faults for a caller at `peer` (single-instance mode: the only instance's).
    pub fn faults_for_peer(&self, _peer: IpAddr) -> Option<arc_swap::Guard<Arc<FaultSet>>> {
        self.faults.first().map(ArcSwap::load)
    }

    /// Swaps in a new snapshot whole (single-instance mode: for the only instance); requests in
    /// flight finish with the one they loaded.
    pub fn replace(&self, snapshot: Snapshot) {
        if let Some(current) = self.instances.first() {
            current.store(Arc::new(snapshot));
        }
    }

    /// The current snapshot (single-instance mode: of the only instance).
    pub fn current(&self) -> Arc<Snapshot> {
        self.instances
            .first()
            .expect("a state serves at least one instance")
            .load_full()
    }

    /// The snapshot that answers a caller at `peer` (single-instance mode: the only one).
    pub fn for_peer(&self, _peer: IpAddr) -> Option<arc_swap::Guard<Arc<Snapshot>>> {
        self.instances.first().map(ArcSwap::load)
    }
}

//! Shared state: one [`Snapshot`] per instance, each swapped whole (lock-free for readers), so a
//! request never sees a half-applied change.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::credentials::{CredentialIssuer, Delivery, IssuedSet};
use crate::instance::Instance;
use crate::keys::Keys;
use crate::metadata::{build, MetadataTree};
use crate::options::MetadataOptions;

/// Everything needed to answer one instance's requests, built once per change.
#[derive(Debug)]
pub struct Snapshot {
    /// The instance described.
    pub instance: Instance,
    /// Its metadata options (copied out of the instance for the hot path).
    pub options: MetadataOptions,
    /// Its prebuilt metadata tree.
    pub tree: MetadataTree,
    /// Its rotating credentials.
    pub credentials: CredentialIssuer,
    /// `Last-Modified` of its fixed leaves: when this snapshot was built.
    pub last_modified: HeaderValue,
}

impl Snapshot {
    /// Builds the snapshot of `instance`: credentials derived from the keys' secret, the identity
    /// document signed by their signer.
    pub fn new(instance: Instance, keys: &Keys) -> Snapshot {
        let launched = instance.config.pending_time.unix_timestamp().max(0) as u64 * 1000;
        let credentials = CredentialIssuer::new(
            &keys.secret,
            instance.id(),
            &instance.config.account_id,
            instance.iam.as_ref().map(|p| p.role.as_str()),
            launched,
            instance
                .iam
                .as_ref()
                .map_or(21_600, |p| p.credential_lifetime.as_secs()),
        );
        let last_modified = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now()))
            .expect("HTTP dates are visible ASCII");
        Snapshot {
            options: instance.options(),
            tree: build::tree(&instance, &keys.signer),
            credentials,
            last_modified,
            instance,
        }
    }
}

impl Snapshot {
    /// The role credentials a caller gets by `delivery` at `now_millis`; `None` without a role.
    pub fn role_credentials(&self, delivery: Delivery, now_millis: u64) -> Option<Arc<IssuedSet>> {
        self.credentials.role(delivery, now_millis)
    }
}

/// The instances served and their current snapshots.
#[derive(Debug)]
pub struct State {
    instances: Vec<ArcSwap<Snapshot>>,
}

impl State {
    /// State serving one instance to every caller.
    pub fn single(snapshot: Snapshot) -> State {
        State {
            instances: vec![ArcSwap::from_pointee(snapshot)],
        }
    }

    /// Swaps in a new snapshot whole (single-instance mode: for the only instance); requests in
    /// flight finish with the one they loaded.
    pub fn replace(&self, snapshot: Snapshot) {
        if let Some(current) = self.instances.first() {
            current.store(Arc::new(snapshot));
        }
    }

    /// The snapshot that answers a caller at `peer` (single-instance mode: the only one).
    pub fn for_peer(&self, _peer: IpAddr) -> Option<arc_swap::Guard<Arc<Snapshot>>> {
        self.instances.first().map(ArcSwap::load)
    }
}

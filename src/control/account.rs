//! The account: what belongs to the region and account rather than to one instance (the
//! instance metadata defaults, the launch templates, the guardrail policies, the session token key generations and
//! the identity signing key generation), the revision of each of its stored values, and the
//! account's lock ([`AccountLock`]), first in the lock order. Values that must change only
//! under the lock take its guard.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::defaults::MetadataDefaults;
use super::policy::PolicySet;
use crate::fleet::launch_templates::LaunchTemplates;
use crate::fleet::lock_order::{AccountGuard, AccountLock, Unlocked};
use crate::fleet::token::{TokenGeneration, TokenSealer};

/// The account's values and its lock.
#[derive(Debug)]
pub(super) struct Account {
    lock: AccountLock,
    defaults: Mutex<MetadataDefaults>,
    policies: arc_swap::ArcSwap<PolicySet>,
    /// Seals session tokens for the guest API; rotations and learned generations go here.
    tokens: Arc<TokenSealer>,
    /// The token key generations known (besides generation 0).
    token_generations: Mutex<Vec<TokenGeneration>>,
    /// The signing key generation in use; `None` when it comes from files (not rotated).
    signing_generation: Mutex<Option<u32>>,
    /// The revision of each stored account value as last stored or learned.
    revisions: Mutex<BTreeMap<String, i64>>,
    /// The launch templates (changed on a copy, swapped).
    templates: Mutex<Arc<LaunchTemplates>>,
}

/// A mutex's guard, whether or not a holder panicked (the values stay consistent: each is
/// replaced whole).
fn held<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Account {
    /// The account as stored (`defaults`, `templates`, `revisions`), sealing tokens with `tokens` and the
    /// `generations` known, signing with `signing_generation` (`None`: files imds never rotates).
    pub(super) fn new(
        (defaults, templates): (MetadataDefaults, LaunchTemplates),
        revisions: BTreeMap<String, i64>,
        tokens: Arc<TokenSealer>,
        (generations, now_millis): (Vec<TokenGeneration>, u64),
        signing_generation: Option<u32>,
    ) -> Account {
        tokens.set_generations(&generations, now_millis);
        let accepted = tokens.accepted_generations(now_millis);
        let mut generations = generations;
        generations.retain(|g| accepted.contains(&g.number));
        Account {
            lock: AccountLock::default(),
            defaults: Mutex::new(defaults),
            policies: arc_swap::ArcSwap::from_pointee(PolicySet::default()),
            tokens,
            token_generations: Mutex::new(generations),
            signing_generation: Mutex::new(signing_generation),
            revisions: Mutex::new(revisions),
            templates: Mutex::new(Arc::new(templates)),
        }
    }

    /// The launch templates now.
    pub(super) fn templates(&self) -> Arc<LaunchTemplates> {
        held(&self.templates).clone()
    }

    /// Puts `templates` in force (stored or learned, under the account's lock).
    pub(super) fn set_templates(&self, templates: LaunchTemplates, _: &AccountGuard<'_>) {
        *held(&self.templates) = Arc::new(templates);
    }

    /// Waits for the account's lock.
    pub(super) async fn lock<'a>(&'a self, order: &'a mut Unlocked) -> AccountGuard<'a> {
        self.lock.lock(order).await
    }

    /// The instance metadata defaults now.
    pub(super) fn defaults(&self) -> MetadataDefaults {
        *held(&self.defaults)
    }

    /// Puts `defaults` in force (stored or learned, under the account's lock).
    pub(super) fn set_defaults(&self, defaults: MetadataDefaults, _: &AccountGuard<'_>) {
        *held(&self.defaults) = defaults;
    }

    /// The guardrail policies in force.
    pub(super) fn policies(&self) -> Arc<PolicySet> {
        self.policies.load_full()
    }

    /// Puts `policies` in force (at start and at SIGHUP).
    pub(super) fn set_policies(&self, policies: PolicySet) {
        self.policies.store(Arc::new(policies));
    }

    /// What seals session tokens.
    pub(super) fn tokens(&self) -> &TokenSealer {
        &self.tokens
    }

    /// Adds `learned` to the token key generations known and puts them in force at
    /// `now_millis`; the ones retired by then are forgotten (the newest is always kept).
    pub(super) fn learn_token_generations(&self, learned: Vec<TokenGeneration>, now_millis: u64) {
        let mut known = held(&self.token_generations);
        for generation in learned {
            if !known.iter().any(|g| g.number == generation.number) {
                known.push(generation);
            }
        }
        self.tokens.set_generations(&known, now_millis);
        let accepted = self.tokens.accepted_generations(now_millis);
        known.retain(|g| accepted.contains(&g.number));
    }

    /// When the newest token key generation was created (clock milliseconds), if it was.
    pub(super) fn newest_generation_created(&self) -> Option<u64> {
        held(&self.token_generations)
            .iter()
            .max_by_key(|g| g.number)
            .map(|g| g.created_millis)
    }

    /// The signing key generation in use (`None`: from files, never rotated by imds).
    pub(super) fn signing_generation(&self) -> Option<u32> {
        *held(&self.signing_generation)
    }

    /// Records that identity documents are signed with generation `number` from now on.
    pub(super) fn set_signing_generation(&self, number: u32, _: &AccountGuard<'_>) {
        *held(&self.signing_generation) = Some(number);
    }

    /// The revision of the stored value `name` as last stored or learned (0: never).
    pub(super) fn revision(&self, name: &str) -> i64 {
        held(&self.revisions).get(name).copied().unwrap_or(0)
    }

    /// Records that the stored value `name` is at `revision` (stored or learned).
    pub(super) fn set_revision(&self, name: &str, revision: i64, _: &AccountGuard<'_>) {
        held(&self.revisions).insert(name.to_owned(), revision);
    }
}

//! imds' `RotateKeys`: a new session token key generation. New tokens are sealed with it at
//! once (on every host once it learns of it, within a notification's time); tokens of older
//! generations stay valid until every one of them can have expired (see
//! [`crate::fleet::token`]). With a store the generation is stored first (as a secret: it
//! never leaves the store or the process), so every host and every restart shares it.
//!
//! With `SigningKey=true` the identity documents' signing key is replaced too: a new RSA key
//! and self-signed certificate, stored (the older ones stay, for `imds cert --all`), and every
//! instance's document signed again, here and on every host that learns of it. A signing key
//! from files (`--signing-key`) is the operator's: imds does not rotate it.
//!
//! The answer names the generations, never their keys.

use super::error::ControlError;
use super::query::QueryRequest;
use super::xml::Xml;
use super::ControlApi;
use crate::fleet::lock_order::{lock_instances, AccountGuard, Unlocked};

/// The answer to a key that could not be made or stored (`what` happened; nothing changed).
fn refused(error: crate::fleet::keys::KeysError, what: &str) -> ControlError {
    tracing::error!(%error, "{what}; nothing changed");
    match error {
        crate::fleet::keys::KeysError::Store(
            error @ crate::store::StoreError::Unavailable { .. },
        ) => ControlError::Unavailable(error.to_string()),
        _ => ControlError::InternalError,
    }
}

impl ControlApi {
    /// `RotateKeys`.
    pub(super) async fn rotate_keys(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let with_signing_key = match query.get("SigningKey") {
            Some("true") => true,
            None | Some("false") => false,
            Some(other) => {
                return Err(ControlError::InvalidParameterValue(format!(
                    "Value ({other}) for parameter SigningKey is invalid. Valid values: true, false"
                )))
            }
        };
        if query.dry_run() {
            return Err(ControlError::DryRunOperation);
        }
        let mut account = self.account.lock(order).await;
        let now = self.clock.now_millis();
        let number = self.add_token_generation(now, &account).await?;
        let signing = match with_signing_key {
            true => Some(self.rotate_signing_key(&mut account).await?),
            false => None,
        };
        let mut xml = Xml::response("RotateKeysResponse", request_id);
        xml.leaf("tokenKeyGeneration", number);
        xml.open("acceptedTokenKeyGenerationSet");
        for accepted in self.account.tokens().accepted_generations(now) {
            xml.leaf("item", accepted);
        }
        xml.close();
        if let Some(signing) = signing {
            xml.leaf("signingKeyGeneration", signing);
        }
        Ok(xml.finish())
    }

    /// A new token key generation, stored and put in force under the account lock; its number.
    async fn add_token_generation(
        &self,
        now: u64,
        _: &AccountGuard<'_>,
    ) -> Result<u32, ControlError> {
        let newest = self.account.tokens().newest_generation();
        // A token carries its generation's low byte: two generations accepted at once must
        // not share it, so 256 rotations within a token's longest life are too many.
        let byte = (newest + 1) & 0xff;
        let accepted = self.account.tokens().accepted_generations(now);
        if let Some(clash) = accepted.iter().find(|g| *g & 0xff == byte) {
            return Err(ControlError::Unsupported(format!(
                "Too many rotations: token key generation {clash} is still accepted (tokens sealed with it may live until 6 hours after its successor appeared), and generation {} would be read as it. Rotate again later.",
                newest + 1
            )));
        }
        let generation =
            crate::fleet::keys::add_token_generation(self.store.as_deref(), newest + 1, now)
                .await
                .map_err(|error| refused(error, "a new token key could not be stored"))?;
        let number = generation.number;
        self.account.learn_token_generations(vec![generation], now);
        if let Some(store) = self.store.as_deref() {
            // The generations every host has retired leave the store with this rotation.
            if let Err(error) = crate::fleet::keys::prune_token_generations(store, now).await {
                tracing::debug!(%error, "retired token key generations stay stored until the next rotation");
            }
        }
        tracing::warn!(
            generation = number,
            "session token key rotated: new tokens are sealed with the new key; older ones stay valid until they expire"
        );
        Ok(number)
    }

    /// Rotates the token key every `every` until the process ends, counted from the newest
    /// key's creation (from now when only generation 0 exists); a rotation another host made
    /// meanwhile resets the count.
    pub async fn rotate_on_schedule(self: std::sync::Arc<Self>, every: std::time::Duration) {
        let every = every.as_millis() as u64;
        let started = self.clock.now_millis();
        loop {
            let due = self.account.newest_generation_created().unwrap_or(started) + every;
            self.clock.sleep_until(due).await;
            let mut order = Unlocked::task();
            let account = self.account.lock(&mut order).await;
            let now = self.clock.now_millis();
            if self.account.newest_generation_created().unwrap_or(started) + every > now {
                continue;
            }
            if let Err(error) = self.add_token_generation(now, &account).await {
                tracing::warn!(%error, "the scheduled token key rotation failed; trying again in a minute");
                drop(account);
                self.clock.sleep_until(now + 60_000).await;
            }
        }
    }

    /// A new signing key, stored and put in use under the account lock.
    async fn rotate_signing_key(
        &self,
        account: &mut AccountGuard<'_>,
    ) -> Result<u32, ControlError> {
        let Some(current) = self.account.signing_generation() else {
            return Err(ControlError::Unsupported(
                "the identity signing key comes from --signing-key/--signing-cert: replace those files to rotate it".into(),
            ));
        };
        let signer = crate::fleet::keys::add_signing_generation(self.store.as_deref(), current + 1)
            .await
            .map_err(|error| refused(error, "a new signing key could not be made or stored"))?;
        self.use_signer(current + 1, signer, account).await;
        Ok(current + 1)
    }

    /// Signs every instance's identity document with `signer` (generation `number`) from now
    /// on (the caller holds the account lock; each instance's lock is taken, so no change is
    /// overwritten by the re-signed snapshot).
    pub(super) async fn use_signer(
        &self,
        number: u32,
        signer: crate::fleet::identity::IdentitySigner,
        account: &mut AccountGuard<'_>,
    ) {
        self.account.set_signing_generation(number, account);
        self.inventory
            .snapshots
            .set_signer(std::sync::Arc::new(signer));
        let slots = self.inventory.state.instances();
        let locks = lock_instances(
            slots.iter().map(|slot| (slot.id(), slot.instance_lock())),
            account,
        )
        .await;
        let instances = slots.iter().map(|s| s.current().instance.clone()).collect();
        let snapshots = self.inventory.snapshots.clone();
        match tokio::task::spawn_blocking(move || snapshots.build_all(instances)).await {
            Ok(built) => {
                // The same addresses, newly signed documents: the index takes them as they are.
                if let Err(conflict) = self.inventory.state.apply(built, Vec::new(), &[]) {
                    tracing::error!(%conflict, "the re-signed documents were not swapped in");
                }
                tracing::warn!(
                    generation = number,
                    instances = slots.len(),
                    "identity signing key rotated: every instance's document is signed with the new key"
                );
            }
            Err(error) => tracing::error!(%error, "signing the documents again failed"),
        }
        drop(locks);
        self.inventory.notify_applied();
    }

    /// Puts a signing key another host rotated to in use, if it is newer than this one's.
    pub(super) async fn learn_signer(
        &self,
        keys: &[crate::store::StoredKey],
        account: &mut AccountGuard<'_>,
    ) {
        let Some(current) = self.account.signing_generation() else {
            return;
        };
        match crate::fleet::keys::rotated_signer(keys) {
            Ok(Some((number, signer))) if number > current => {
                self.use_signer(number, signer, account).await
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "a stored signing key is unusable; not applied"),
        }
    }
}

//! imds' `RotateKeys`: a new session token key generation. New tokens are sealed with it at
//! once (on every host once it learns of it, within a notification's time); tokens of older
//! generations stay valid until every one of them can have expired (see
//! [`crate::fleet::token`]). With a store the generation is stored first (as a secret: it
//! never leaves the store or the process), so every host and every restart shares it.
//!
//! The answer names the generations, never their keys.

use super::error::ControlError;
use super::query::QueryRequest;
use super::xml::Xml;
use super::ControlApi;
use crate::fleet::token::TokenGeneration;

impl ControlApi {
    /// `RotateKeys`.
    pub(super) async fn rotate_keys(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        if query.dry_run() {
            return Err(ControlError::DryRunOperation);
        }
        let _one_at_a_time = self.changing.lock().await;
        let newest = self.tokens.newest_generation();
        let now = self.clock.now_millis();
        let generation =
            crate::fleet::keys::add_token_generation(self.store.as_deref(), newest + 1, now)
                .await
                .map_err(|error| {
                    tracing::error!(%error, "a new token key could not be stored; nothing changed");
                    match error {
                        crate::fleet::keys::KeysError::Store(
                            error @ crate::store::StoreError::Unavailable { .. },
                        ) => ControlError::Unavailable(error.to_string()),
                        _ => ControlError::InternalError,
                    }
                })?;
        let number = generation.number;
        self.learn_token_generations(vec![generation]);
        tracing::warn!(
            generation = number,
            "session token key rotated: new tokens are sealed with the new key; older ones stay valid until they expire"
        );
        let mut xml = Xml::response("RotateKeysResponse", request_id);
        xml.leaf("tokenKeyGeneration", number);
        xml.open("acceptedTokenKeyGenerationSet");
        for accepted in self.tokens.accepted_generations(now) {
            xml.leaf("item", accepted);
        }
        xml.close();
        Ok(xml.finish())
    }

    /// Adds `learned` to the generations known and puts them all in force.
    pub(super) fn learn_token_generations(&self, learned: Vec<TokenGeneration>) {
        let mut known = self
            .token_generations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for generation in learned {
            if !known.iter().any(|g| g.number == generation.number) {
                known.push(generation);
            }
        }
        self.tokens.set_generations(&known);
    }
}

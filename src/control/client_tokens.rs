//! The `ClientToken`s a process remembers: the ones it launched with and the ones it read from
//! the store, at most [`MAX_CLIENT_TOKENS`] (with a store they are read again from it when
//! needed; without one, the oldest beyond the bound are forgotten early), each until
//! [`CLIENT_TOKEN_RETENTION`] after the last instance it launched was forgotten.

use std::collections::{BTreeMap, BTreeSet};

use crate::store::{ClientToken, CLIENT_TOKEN_RETENTION};

/// Most `ClientToken`s remembered (each is its digest and instance ids: about 200 bytes and
/// 40 per instance).
pub(super) const MAX_CLIENT_TOKENS: usize = 10_000;

/// Remembered tokens, by token.
#[derive(Debug, Default)]
pub(super) struct ClientTokens {
    tokens: BTreeMap<String, ClientToken>,
}

impl ClientTokens {
    /// What `token` launched, when remembered.
    pub(super) fn get(&self, token: &str) -> Option<&ClientToken> {
        self.tokens.get(token)
    }

    /// Remembers `token`; the oldest beyond [`MAX_CLIENT_TOKENS`] are forgotten.
    pub(super) fn remember(&mut self, token: ClientToken) {
        self.tokens.insert(token.token.clone(), token);
        while self.tokens.len() > MAX_CLIENT_TOKENS {
            let oldest = self
                .tokens
                .values()
                .min_by_key(|t| (t.created_millis, &t.token))
                .map(|t| t.token.clone())
                .expect("more tokens than the bound");
            self.tokens.remove(&oldest);
        }
    }

    /// Starts the retention of the tokens some of whose instances are among `forgotten` and
    /// none of which is served any more (`served` says which are), and forgets the tokens
    /// whose retention ended by `now_millis`; how many were forgotten.
    pub(super) fn expire(
        &mut self,
        forgotten: &BTreeSet<String>,
        served: impl Fn(&str) -> bool,
        now_millis: i64,
    ) -> usize {
        for token in self.tokens.values_mut() {
            let affected = token.instance_ids.iter().any(|id| forgotten.contains(id));
            if token.expires_millis.is_none()
                && affected
                && !token.instance_ids.iter().any(|id| served(id))
            {
                token.expires_millis = Some(now_millis + CLIENT_TOKEN_RETENTION.as_millis() as i64);
            }
        }
        let before = self.tokens.len();
        self.tokens
            .retain(|_, t| t.expires_millis.is_none_or(|at| at >= now_millis));
        before - self.tokens.len()
    }

    /// How many are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.tokens.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: usize, ids: &[&str]) -> ClientToken {
        ClientToken {
            token: format!("t{n}"),
            request_sha256: String::new(),
            instance_ids: ids.iter().map(|id| id.to_string()).collect(),
            created_millis: n as i64,
            reservation_id: String::new(),
            owner_id: String::new(),
            expires_millis: None,
        }
    }

    #[test]
    fn at_most_ten_thousand_are_remembered_the_oldest_go_first() {
        let mut tokens = ClientTokens::default();
        for n in 0..MAX_CLIENT_TOKENS + 5 {
            tokens.remember(token(n, &["i-1"]));
        }
        assert_eq!(tokens.len(), MAX_CLIENT_TOKENS);
        assert!(tokens.get("t4").is_none());
        assert!(tokens.get("t5").is_some());
        assert!(tokens.get(&format!("t{}", MAX_CLIENT_TOKENS + 4)).is_some());
    }

    #[test]
    fn a_token_is_kept_a_day_after_its_last_instance_is_forgotten() {
        let day = CLIENT_TOKEN_RETENTION.as_millis() as i64;
        let mut tokens = ClientTokens::default();
        tokens.remember(token(1, &["i-1", "i-2"]));
        tokens.remember(token(2, &["i-3"]));
        // One of its two instances forgotten, the other still served: no retention yet.
        let forgotten = BTreeSet::from(["i-1".to_owned()]);
        assert_eq!(tokens.expire(&forgotten, |id| id == "i-2", 1_000), 0);
        assert_eq!(tokens.get("t1").unwrap().expires_millis, None);
        // The last one forgotten: kept a day from then.
        let forgotten = BTreeSet::from(["i-2".to_owned()]);
        tokens.expire(&forgotten, |_| false, 2_000);
        assert_eq!(tokens.get("t1").unwrap().expires_millis, Some(2_000 + day));
        assert_eq!(tokens.get("t2").unwrap().expires_millis, None);
        assert_eq!(tokens.expire(&BTreeSet::new(), |_| false, 2_000 + day), 0);
        assert_eq!(tokens.expire(&BTreeSet::new(), |_| false, 2_001 + day), 1);
        assert!(tokens.get("t1").is_none() && tokens.get("t2").is_some());
    }
}

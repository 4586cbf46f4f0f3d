//! The service's keys: the root secret (session tokens, generated credentials) and the identity
//! signer. Each comes from its own file when one is named, else from the state directory's
//! [`Store`] (created on first start and reused after), else is new for this process.
//!
//! State directories written before the store kept the keys in files (`token.key`,
//! `identity.pem`); those are taken into the store when it has no key yet, so upgrading keeps
//! every token and certificate valid.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::fleet::identity::{IdentityError, IdentitySigner};
use crate::fleet::secret::{SecretError, ServerSecret};
use crate::fleet::token::TokenGeneration;
use crate::store::{Store, StoreError, StoredKey};
use zeroize::Zeroizing;

/// The token key's name in the store (and its file in older state directories).
const TOKEN_KEY: &str = "token.key";
/// The signing key and certificate's name in the store (and their file in older state
/// directories).
const IDENTITY: &str = "identity.pem";
/// The prefix of rotated signing keys' names in the store (`identity.pem/N`, N from 1).
const SIGNING_GENERATION_PREFIX: &str = "identity.pem/";
/// The prefix of token key generations' names in the store.
const TOKEN_GENERATION_PREFIX: &str = "token-key/";

/// Why the keys could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The token key file is unusable.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The state directory's store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The signing key or certificate is unusable.
    #[error("{path}: {source}")]
    Identity {
        /// The file.
        path: PathBuf,
        /// Why.
        source: IdentityError,
    },
    /// No key could be generated.
    #[error(transparent)]
    Generate(IdentityError),
    /// `imds cert` was asked for a key that lives only inside a server process.
    #[error("no signing key to print: without --state-dir or --signing-key/--signing-cert each `imds serve` signs with a key of its own; start it with --state-dir DIR and run `imds cert --state-dir DIR`")]
    Ephemeral,
}

/// The root secret and the identity signer of one deployment.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Keys tokens and generated credentials.
    pub secret: ServerSecret,
    /// Signs identity documents.
    pub signer: Arc<IdentitySigner>,
    /// The token key generations stored besides generation 0 (derived from `secret`).
    pub token_generations: Vec<TokenGeneration>,
}

/// The files that hold the keys, as `[server]` names them (`None`: from the store, else new).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFiles {
    /// Keys tokens and generated credentials.
    pub token_key_file: Option<std::path::PathBuf>,
    /// The identity document's signing key (PEM).
    pub signing_key_file: Option<std::path::PathBuf>,
    /// Its certificate (PEM).
    pub signing_cert_file: Option<std::path::PathBuf>,
}

impl Keys {
    /// The keys `server` names, kept in (and created in, when missing) `store`, which held
    /// `stored` when the process started.
    pub async fn load(
        server: &KeyFiles,
        store: Option<&Store>,
        stored: &[StoredKey],
    ) -> Result<Keys, KeysError> {
        let secret = match (&server.token_key_file, store) {
            (Some(file), _) => ServerSecret::from_file(file)?,
            (None, Some(store)) => stored_secret(store, stored).await?,
            (None, None) => ServerSecret::random(),
        };
        Ok(Keys {
            secret,
            signer: Arc::new(signer(server, store, stored).await?),
            token_generations: token_generations(stored),
        })
    }

    /// The signer `server` names; an error when it would be a new key per process (for
    /// `imds cert`, which must print what a server uses).
    pub async fn lasting_signer(
        server: &KeyFiles,
        store: Option<&Store>,
        stored: &[StoredKey],
    ) -> Result<IdentitySigner, KeysError> {
        if store.is_none() && server.signing_key_file.is_none() {
            return Err(KeysError::Ephemeral);
        }
        signer(server, store, stored).await
    }

    /// New keys for this process only.
    pub fn ephemeral() -> Result<Keys, KeysError> {
        Ok(Keys {
            secret: ServerSecret::random(),
            signer: Arc::new(IdentitySigner::generate().map_err(KeysError::Generate)?),
            token_generations: Vec::new(),
        })
    }
}

/// The token key generations among `stored` (named `token-key/N`, N from 1).
pub fn token_generations(stored: &[StoredKey]) -> Vec<TokenGeneration> {
    stored
        .iter()
        .filter_map(|key| {
            let number = key
                .name
                .strip_prefix(TOKEN_GENERATION_PREFIX)?
                .parse()
                .ok()?;
            Some(TokenGeneration {
                number,
                created_millis: u64::try_from(key.created_millis).unwrap_or(0),
                key: key.value.clone(),
            })
        })
        .filter(|generation| generation.number > 0)
        .collect()
}

/// The store's name of token key generation `number`.
pub fn token_generation_name(number: u32) -> String {
    format!("{TOKEN_GENERATION_PREFIX}{number}")
}

/// Deletes from `store` the token key generations that no token can need any more: those whose
/// successor was created a token's longest life (plus the clock slack) before `now_millis`,
/// the moment every host stops accepting them. How many.
pub async fn prune_token_generations(store: &Store, now_millis: u64) -> Result<u64, StoreError> {
    let lifetime = u64::from(crate::fleet::token::MAX_TTL_SECONDS) * 1000
        + crate::fleet::token::CLOCK_SLACK_MILLIS;
    let replaced_before = now_millis.saturating_sub(lifetime);
    store
        .prune_replaced_keys(TOKEN_GENERATION_PREFIX, replaced_before as i64)
        .await
}

/// A new random token key of generation `number`, stored (the first stored wins when two
/// hosts rotate at once) and returned as stored.
pub async fn add_token_generation(
    store: Option<&Store>,
    number: u32,
    created_millis: u64,
) -> Result<TokenGeneration, KeysError> {
    let mut fresh = Zeroizing::new(vec![0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
    let key = match store {
        Some(store) => {
            store
                .add_key(
                    &token_generation_name(number),
                    &fresh,
                    created_millis as i64,
                )
                .await?
        }
        None => fresh,
    };
    Ok(TokenGeneration {
        number,
        created_millis,
        key,
    })
}

async fn signer(
    server: &KeyFiles,
    store: Option<&Store>,
    stored: &[StoredKey],
) -> Result<IdentitySigner, KeysError> {
    match (&server.signing_key_file, &server.signing_cert_file, store) {
        (Some(key), Some(cert), _) => {
            let key_pem = read_text(key)?;
            let cert_pem = read_text(cert)?;
            IdentitySigner::from_pem(&key_pem, &cert_pem).map_err(|source| {
                let path = match source {
                    IdentityError::Certificate(_) | IdentityError::Mismatch => cert.clone(),
                    _ => key.clone(),
                };
                KeysError::Identity { path, source }
            })
        }
        (_, _, Some(store)) => stored_signer(store, stored).await,
        _ => IdentitySigner::generate().map_err(KeysError::Generate),
    }
}

/// The file an older state directory kept `name` in, when it is there.
fn legacy_file(store: &Store, name: &str) -> Option<PathBuf> {
    let Store::Sqlite(sqlite) = store else {
        return None;
    };
    let path = sqlite.path().parent()?.join(name);
    path.exists().then_some(path)
}

/// The key `name` among `stored`.
fn find<'a>(stored: &'a [StoredKey], name: &str) -> Option<&'a StoredKey> {
    stored.iter().find(|key| key.name == name)
}

async fn stored_secret(store: &Store, stored: &[StoredKey]) -> Result<ServerSecret, KeysError> {
    let material = match find(stored, TOKEN_KEY) {
        Some(key) => key.value.clone(),
        None => {
            let fresh = match legacy_file(store, TOKEN_KEY) {
                Some(path) => {
                    // Checked as a key file, then kept as it was so its tokens stay valid.
                    ServerSecret::from_file(&path)?;
                    Zeroizing::new(fs::read(&path).map_err(|source| KeysError::Io {
                        path: path.clone(),
                        source,
                    })?)
                }
                None => {
                    let mut bytes = Zeroizing::new(vec![0u8; 32]);
                    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
                    bytes
                }
            };
            store.add_key(TOKEN_KEY, &fresh, now_millis()).await?
        }
    };
    Ok(ServerSecret::from_bytes(&material))
}

/// The signing keys among `stored`, oldest first: `identity.pem` (generation 0) and each
/// rotated `identity.pem/N`, with their generation.
fn signing_keys(stored: &[StoredKey]) -> Vec<(u32, &StoredKey)> {
    let mut keys: Vec<(u32, &StoredKey)> = stored
        .iter()
        .filter_map(|key| match key.name.as_str() {
            IDENTITY => Some((0, key)),
            name => Some((
                name.strip_prefix(SIGNING_GENERATION_PREFIX)?.parse().ok()?,
                key,
            )),
        })
        .collect();
    keys.sort_by_key(|(generation, _)| *generation);
    keys
}

/// The newest rotated signing key among `stored` (generation and signer), if any.
pub fn rotated_signer(stored: &[StoredKey]) -> Result<Option<(u32, IdentitySigner)>, KeysError> {
    match signing_keys(stored).into_iter().rfind(|(g, _)| *g > 0) {
        Some((generation, key)) => Ok(Some((generation, parse_signer(&key.value, &key.name)?))),
        None => Ok(None),
    }
}

/// Every signing certificate among `stored` (PEM), oldest first: documents signed before a
/// rotation verify with an older one.
pub fn certificates(stored: &[StoredKey]) -> Result<Vec<String>, KeysError> {
    signing_keys(stored)
        .into_iter()
        .map(|(_, key)| parse_signer(&key.value, &key.name).map(|s| s.certificate_pem().to_owned()))
        .collect()
}

/// A new signing key of generation `number` (with its self-signed certificate), stored (the
/// first stored wins when two hosts rotate at once) and returned as stored.
pub async fn add_signing_generation(
    store: Option<&Store>,
    number: u32,
) -> Result<IdentitySigner, KeysError> {
    let signer = tokio::task::spawn_blocking(IdentitySigner::generate)
        .await
        .map_err(|e| KeysError::Generate(IdentityError::Generate(e.to_string())))?
        .map_err(KeysError::Generate)?;
    let Some(store) = store else {
        return Ok(signer);
    };
    let mut pem = signer.private_key_pem();
    pem.push_str(signer.certificate_pem());
    let name = format!("{SIGNING_GENERATION_PREFIX}{number}");
    let stored = store.add_key(&name, pem.as_bytes(), now_millis()).await?;
    parse_signer(&stored, &name)
}

/// The signer a stored PEM (key, then certificate) holds.
fn parse_signer(pem: &[u8], name: &str) -> Result<IdentitySigner, KeysError> {
    let identity = |source| KeysError::Identity {
        path: PathBuf::from(name),
        source,
    };
    let pem = std::str::from_utf8(pem)
        .map_err(|_| identity(IdentityError::Certificate("not UTF-8 PEM".into())))?;
    let start = pem
        .find("-----BEGIN CERTIFICATE-----")
        .ok_or_else(|| identity(IdentityError::Certificate("no CERTIFICATE block".into())))?;
    IdentitySigner::from_pem(&pem[..start], &pem[start..]).map_err(identity)
}

async fn stored_signer(store: &Store, stored: &[StoredKey]) -> Result<IdentitySigner, KeysError> {
    if let Some((_, signer)) = rotated_signer(stored)? {
        return Ok(signer);
    }
    let pem = match find(stored, IDENTITY) {
        Some(key) => key.value.clone(),
        None => {
            let fresh = match legacy_file(store, IDENTITY) {
                Some(path) => Zeroizing::new(read_text(&path)?.into_bytes()),
                None => {
                    let signer = IdentitySigner::generate().map_err(KeysError::Generate)?;
                    let mut pem = signer.private_key_pem();
                    pem.push_str(signer.certificate_pem());
                    Zeroizing::new(pem.as_bytes().to_vec())
                }
            };
            store.add_key(IDENTITY, &fresh, now_millis()).await?
        }
    };
    parse_signer(&pem, IDENTITY)
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn read_text(path: &Path) -> Result<String, KeysError> {
    fs::read_to_string(path).map_err(|source| KeysError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    fn server() -> KeyFiles {
        KeyFiles::default()
    }

    async fn open(dir: &Path) -> Store {
        Store::open(&crate::store::Location::StateDir(dir.to_owned()))
            .await
            .unwrap()
    }

    async fn load(server: &KeyFiles, store: Option<&Store>) -> Result<Keys, KeysError> {
        let stored = match store {
            Some(store) => store.load_since(-1).await.unwrap().keys,
            None => Vec::new(),
        };
        Keys::load(server, store, &stored).await
    }

    #[tokio::test]
    async fn a_store_keeps_both_keys_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let first = load(&server(), Some(&open(dir.path()).await))
            .await
            .unwrap();
        let second = load(&server(), Some(&open(dir.path()).await))
            .await
            .unwrap();
        assert_eq!(
            first.signer.certificate_pem(),
            second.signer.certificate_pem()
        );
        assert_eq!(first.secret.derive("x"), second.secret.derive("x"));
    }

    #[tokio::test]
    async fn keys_of_an_older_state_directory_are_taken_into_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let own = IdentitySigner::generate().unwrap();
        let mut pem = own.private_key_pem();
        pem.push_str(own.certificate_pem());
        fs::write(dir.path().join(IDENTITY), pem.as_bytes()).unwrap();
        fs::write(dir.path().join(TOKEN_KEY), [7u8; 32]).unwrap();
        let store = open(dir.path()).await;
        let keys = load(&server(), Some(&store)).await.unwrap();
        assert_eq!(keys.signer.certificate_pem(), own.certificate_pem());
        let expected = ServerSecret::from_bytes(&[7u8; 32]).derive("x");
        assert_eq!(keys.secret.derive("x"), expected);
        // The store has them now; the files are no longer read.
        fs::remove_file(dir.path().join(IDENTITY)).unwrap();
        fs::remove_file(dir.path().join(TOKEN_KEY)).unwrap();
        let again = load(&server(), Some(&store)).await.unwrap();
        assert_eq!(again.signer.certificate_pem(), own.certificate_pem());
        assert_eq!(again.secret.derive("x"), expected);
    }

    #[tokio::test]
    async fn without_a_store_keys_are_per_process() {
        let a = load(&server(), None).await.unwrap();
        let b = load(&server(), None).await.unwrap();
        assert_ne!(a.signer.certificate_pem(), b.signer.certificate_pem());
        assert!(matches!(
            Keys::lasting_signer(&server(), None, &[]).await,
            Err(KeysError::Ephemeral)
        ));
    }

    #[tokio::test]
    async fn a_named_key_and_certificate_win_over_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("state")).await;
        let own = IdentitySigner::generate().unwrap();
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        fs::write(&key, own.private_key_pem().as_bytes()).unwrap();
        fs::write(&cert, own.certificate_pem()).unwrap();
        let mut server = server();
        server.signing_key_file = Some(key.clone());
        server.signing_cert_file = Some(cert.clone());
        let keys = load(&server, Some(&store)).await.unwrap();
        assert_eq!(keys.signer.certificate_pem(), own.certificate_pem());
        fs::write(&cert, IdentitySigner::generate().unwrap().certificate_pem()).unwrap();
        let error = load(&server, Some(&store)).await.unwrap_err().to_string();
        assert!(
            error.contains("cert.pem") && error.contains("not the signing key"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn token_generations_are_shared_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let made = add_token_generation(Some(&store), 1, 42).await.unwrap();
        let raced = add_token_generation(Some(&store), 1, 43).await.unwrap();
        assert_eq!(*made.key, *raced.key, "the first stored wins");
        let keys = load(&server(), Some(&store)).await.unwrap();
        assert_eq!(keys.token_generations.len(), 1);
        assert_eq!(keys.token_generations[0].number, 1);
    }
}

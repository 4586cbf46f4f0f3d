//! The server secret: random per process or read from `--token-key-file`, from which the token
//! sealing key and the credential derivation key are derived (one secret, one key per purpose).

use std::path::Path;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Fewest bytes a key file must hold.
pub const MIN_KEY_FILE_BYTES: usize = 32;

/// The root secret of one imds deployment.
#[derive(Clone)]
pub struct ServerSecret([u8; 32]);

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("token key file {path}: cannot read: {source}")]
    Unreadable {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds too little key material.
    #[error("token key file {path}: holds {len} bytes, needs at least {MIN_KEY_FILE_BYTES} (try `head -c 32 /dev/urandom > {path}`)")]
    TooShort {
        /// The file.
        path: String,
        /// Its length.
        len: usize,
    },
}

impl ServerSecret {
    /// A fresh random secret (tokens die with the process).
    pub fn random() -> ServerSecret {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        ServerSecret(bytes)
    }

    /// The secret held in a file (any bytes, at least 32), hashed to 32 bytes.
    pub fn from_file(path: &Path) -> Result<ServerSecret, SecretError> {
        let shown = path.display().to_string();
        let content = std::fs::read(path).map_err(|source| SecretError::Unreadable {
            path: shown.clone(),
            source,
        })?;
        if content.len() < MIN_KEY_FILE_BYTES {
            return Err(SecretError::TooShort {
                path: shown,
                len: content.len(),
            });
        }
        Ok(ServerSecret::from_bytes(&content))
    }

    /// A secret from arbitrary bytes (tests, key files).
    pub fn from_bytes(material: &[u8]) -> ServerSecret {
        use sha2::Digest;
        ServerSecret(Sha256::digest(material).into())
    }

    /// The key for one purpose: HMAC-SHA256(secret, purpose).
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerSecret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_get_different_keys() {
        let secret = ServerSecret::from_bytes(b"0123456789abcdef0123456789abcdef");
        assert_ne!(secret.derive("token"), secret.derive("credentials"));
        assert_eq!(secret.derive("token"), secret.derive("token"));
    }

    #[test]
    fn short_key_files_are_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, b"short").unwrap();
        let err = ServerSecret::from_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("holds 5 bytes") && err.contains("/dev/urandom"),
            "{err}"
        );
        std::fs::write(&path, [7u8; 32]).unwrap();
        assert!(ServerSecret::from_file(&path).is_ok());
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        assert_eq!(format!("{:?}", ServerSecret::random()), "ServerSecret(..)");
    }
}

//! The service's keys: the root secret (session tokens, generated credentials) and the identity
//! signer. Each comes from its own file when one is named, else from the state directory
//! (created on first start and reused after), else is new for this process.
//!
//! State directory layout: `token.key` (32 random bytes) and `identity.pem` (the signing key
//! followed by its certificate). Files are written to a temporary name and linked into place, so
//! two processes starting at once agree on one key and a crash never leaves half a file.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::ServerConfig;
use crate::identity::{IdentityError, IdentitySigner};
use crate::secret::{SecretError, ServerSecret};
use zeroize::Zeroizing;

/// The token key in the state directory.
pub const TOKEN_KEY_FILE: &str = "token.key";
/// The signing key and certificate in the state directory.
pub const IDENTITY_FILE: &str = "identity.pem";

/// Why the keys could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The token key file is unusable.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A file could not be read or written.
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
}

impl Keys {
    /// The keys `server` names, created in its state directory when missing there.
    pub fn load(server: &ServerConfig) -> Result<Keys, KeysError> {
        let state_dir = server
            .state_dir
            .as_deref()
            .map(open_state_dir)
            .transpose()?;
        let secret = match (&server.token_key_file, &state_dir) {
            (Some(file), _) => ServerSecret::from_file(file)?,
            (None, Some(dir)) => token_key(dir)?,
            (None, None) => ServerSecret::random(),
        };
        Ok(Keys {
            secret,
            signer: Arc::new(signer(server, state_dir.as_deref())?),
        })
    }

    /// The signer `server` names; an error when it would be a new key per process (for
    /// `imds cert`, which must print what a server uses).
    pub fn lasting_signer(server: &ServerConfig) -> Result<IdentitySigner, KeysError> {
        if server.state_dir.is_none() && server.signing_key_file.is_none() {
            return Err(KeysError::Ephemeral);
        }
        let state_dir = server
            .state_dir
            .as_deref()
            .map(open_state_dir)
            .transpose()?;
        signer(server, state_dir.as_deref())
    }

    /// New keys for this process only.
    pub fn ephemeral() -> Result<Keys, KeysError> {
        Ok(Keys {
            secret: ServerSecret::random(),
            signer: Arc::new(IdentitySigner::generate().map_err(KeysError::Generate)?),
        })
    }
}

fn signer(server: &ServerConfig, state_dir: Option<&Path>) -> Result<IdentitySigner, KeysError> {
    match (
        &server.signing_key_file,
        &server.signing_cert_file,
        state_dir,
    ) {
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
        (_, _, Some(dir)) => stored_signer(dir),
        _ => IdentitySigner::generate().map_err(KeysError::Generate),
    }
}

fn open_state_dir(dir: &Path) -> Result<PathBuf, KeysError> {
    let io = |source| KeysError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io)?;
    Ok(dir.to_owned())
}

fn token_key(dir: &Path) -> Result<ServerSecret, KeysError> {
    let path = dir.join(TOKEN_KEY_FILE);
    if !path.exists() {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        create_once(&path, &bytes)?;
    }
    Ok(ServerSecret::from_file(&path)?)
}

fn stored_signer(dir: &Path) -> Result<IdentitySigner, KeysError> {
    let path = dir.join(IDENTITY_FILE);
    if !path.exists() {
        let signer = IdentitySigner::generate().map_err(KeysError::Generate)?;
        let mut pem = signer.private_key_pem();
        pem.push_str(signer.certificate_pem());
        create_once(&path, pem.as_bytes())?;
    }
    let pem = Zeroizing::new(read_text(&path)?);
    let identity = |source| KeysError::Identity {
        path: path.clone(),
        source,
    };
    let start = pem
        .find("-----BEGIN CERTIFICATE-----")
        .ok_or_else(|| identity(IdentityError::Certificate("no CERTIFICATE block".into())))?;
    IdentitySigner::from_pem(&pem[..start], &pem[start..]).map_err(identity)
}

/// Writes `content` to `path` unless it exists: written and synced under a temporary name, then
/// hard-linked into place (which fails if another process got there first; its file wins).
fn create_once(path: &Path, content: &[u8]) -> Result<(), KeysError> {
    let io = |source| KeysError::Io {
        path: path.to_owned(),
        source,
    };
    let temporary = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(io)?;
    let written = file.write_all(content).and_then(|()| file.sync_all());
    let linked = written.and_then(|()| match fs::hard_link(&temporary, path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    });
    let _ = fs::remove_file(&temporary);
    linked.map_err(io)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
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
    use crate::config::Config;

    fn server_with(dir: Option<&Path>) -> ServerConfig {
        let mut server = Config::load(None).unwrap().server;
        server.state_dir = dir.map(Path::to_owned);
        server
    }

    #[test]
    fn a_state_directory_keeps_both_keys_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = Keys::load(&server_with(Some(&state))).unwrap();
        let second = Keys::load(&server_with(Some(&state))).unwrap();
        assert_eq!(
            first.signer.certificate_pem(),
            second.signer.certificate_pem()
        );
        assert_eq!(first.secret.derive("x"), second.secret.derive("x"));
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(IDENTITY_FILE)), 0o600);
        assert_eq!(mode(&state.join(TOKEN_KEY_FILE)), 0o600);
        let leftovers = fs::read_dir(&state).unwrap().count();
        assert_eq!(leftovers, 2, "no temporary files remain");
    }

    #[test]
    fn without_a_state_directory_keys_are_per_process() {
        let a = Keys::load(&server_with(None)).unwrap();
        let b = Keys::load(&server_with(None)).unwrap();
        assert_ne!(a.signer.certificate_pem(), b.signer.certificate_pem());
        assert!(matches!(
            Keys::lasting_signer(&server_with(None)),
            Err(KeysError::Ephemeral)
        ));
    }

    #[test]
    fn a_named_key_and_certificate_win_over_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let own = IdentitySigner::generate().unwrap();
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        fs::write(&key, own.private_key_pem().as_bytes()).unwrap();
        fs::write(&cert, own.certificate_pem()).unwrap();
        let mut server = server_with(Some(&dir.path().join("state")));
        server.signing_key_file = Some(key.clone());
        server.signing_cert_file = Some(cert.clone());
        let keys = Keys::load(&server).unwrap();
        assert_eq!(keys.signer.certificate_pem(), own.certificate_pem());
        fs::write(&cert, IdentitySigner::generate().unwrap().certificate_pem()).unwrap();
        let error = Keys::load(&server).unwrap_err().to_string();
        assert!(
            error.contains("cert.pem") && error.contains("not the signing key"),
            "{error}"
        );
    }
}

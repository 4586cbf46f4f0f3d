//! The storage boundary: what must outlive a restart, and what many imds hosts share.
//!
//! Two backends keep the same schema (migrations in `store/migrations/`, applied at open by
//! refinery, and refused with a clear message when the database is newer than this binary):
//! - [`sqlite`]: embedded, in the state directory (`--state-dir`), for one host;
//! - [`postgres`]: one PostgreSQL database shared by every host (`--store postgres://...`).
//!
//! What is kept: the service's keys, each instance's control-plane changes, the instances
//! launched through `RunInstances`, the account's values (instance metadata defaults, the
//! network registry) and the token-less request history.
//!
//! Every write is one transaction that first takes the next *revision* from a single counter
//! row (so revisions commit in order) and stamps every row it writes with it. A process that
//! has seen every revision up to N loads what changed with [`Store::load_since`]`(N)`.
//! Instance and account rows are written only if their revision is still the one the writer
//! last saw ([`Expected`]), so two hosts changing one instance at once never overwrite each
//! other: the second gets [`StoreError::Conflict`], catches up and retries.
//!
//! The guest API never touches the store: guests are served from memory, so the database can
//! be away without any guest noticing. Control writes need it, and fail fast while it is.

mod migrations;
pub mod postgres;
mod redact;
pub mod sqlite;

use std::path::PathBuf;

use zeroize::Zeroizing;

pub use self::redact::{redact, StoreUrl};

/// The revision a writer last saw of a row: the row is written only if it still has it. `0`
/// for a row it has never seen (new, or still as an older imds stored it).
pub type Expected = i64;

/// Where the store lives, as `--state-dir` or `--store` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The embedded database in this state directory.
    StateDir(PathBuf),
    /// A PostgreSQL database, as a libpq-style URL or connection string.
    Postgres(StoreUrl),
}

impl Location {
    /// The location `--store` names: a `postgres://`/`postgresql://` URL or libpq connection
    /// string, or `sqlite:DIR` / a path for the embedded store.
    pub fn parse(text: &str) -> Result<Location, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err(
                "the store is empty: give postgres://USER@HOST:PORT/DB or a state directory".into(),
            );
        }
        if let Some(dir) = text.strip_prefix("sqlite:") {
            return Ok(Location::StateDir(PathBuf::from(dir)));
        }
        if text.starts_with("postgres://")
            || text.starts_with("postgresql://")
            || text.contains('=')
        {
            postgres::parse_config(text)?;
            return Ok(Location::Postgres(StoreUrl::from(text.to_owned())));
        }
        if text.contains("://") {
            return Err(format!(
                "unsupported store `{}`: use postgres://USER@HOST:PORT/DB, or a state directory",
                redact(text)
            ));
        }
        Ok(Location::StateDir(PathBuf::from(text)))
    }
}

/// An instance's stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInstance {
    /// The instance id.
    pub instance_id: String,
    /// Its configuration (JSON) when it was launched through `RunInstances`; `None` for an
    /// instance of a config file.
    pub config: Option<String>,
    /// Its control-plane changes (JSON).
    pub changes: String,
    /// The revision that last wrote it.
    pub revision: i64,
}

/// An account value's stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    /// Its name.
    pub name: String,
    /// Its JSON text.
    pub value: String,
    /// The revision that last wrote it.
    pub revision: i64,
}

/// A stored key (secret: never logged).
#[derive(Clone)]
pub struct StoredKey {
    /// Its name.
    pub name: String,
    /// Its material.
    pub value: Zeroizing<Vec<u8>>,
    /// When it was created (milliseconds since the epoch; 0 for keys stored before revisions).
    pub created_millis: i64,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("name", &self.name)
            .field("created_millis", &self.created_millis)
            .finish_non_exhaustive()
    }
}

/// What changed after a revision.
#[derive(Debug, Clone, Default)]
pub struct Changed {
    /// Instance rows written after it.
    pub instances: Vec<StoredInstance>,
    /// Account values written after it.
    pub account: Vec<StoredValue>,
    /// Keys written after it.
    pub keys: Vec<StoredKey>,
    /// The newest revision committed when these were read: load after it next time.
    pub revision: i64,
}

/// One instance row to write.
#[derive(Debug, Clone)]
pub struct InstanceWrite {
    /// The instance id.
    pub instance_id: String,
    /// Its configuration (JSON), for an instance being launched.
    pub config: Option<String>,
    /// Its control-plane changes (JSON).
    pub changes: String,
    /// The revision the writer last saw of it.
    pub expected: Expected,
}

/// One account value to write.
#[derive(Debug, Clone)]
pub struct ValueWrite {
    /// Its name.
    pub name: String,
    /// Its JSON text.
    pub value: String,
    /// The revision the writer last saw of it.
    pub expected: Expected,
}

/// An account value a write was decided on, which must still be at the revision seen.
#[derive(Debug, Clone)]
pub struct ValueCheck {
    /// Its name.
    pub name: String,
    /// The revision the writer decided on.
    pub expected: Expected,
}

/// Rows written in one transaction: all of them, or none.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// Instance rows.
    pub instances: Vec<InstanceWrite>,
    /// Account values.
    pub account: Vec<ValueWrite>,
    /// Account values not written but read to decide the write (e.g. the defaults'
    /// `HttpTokensEnforced`): a change of one since makes the whole commit a conflict.
    pub checks: Vec<ValueCheck>,
    /// The `ClientToken` of the launch this commit makes; a token stored already makes the
    /// whole commit a conflict.
    pub client_token: Option<ClientToken>,
}

/// A `RunInstances` `ClientToken` and what it launched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientToken {
    /// The token.
    pub token: String,
    /// The SHA-256 (hex) of the request's parameters but the token: a retry must repeat them.
    pub request_sha256: String,
    /// The instances it launched.
    pub instance_ids: Vec<String>,
    /// When it was first used (milliseconds since the epoch).
    pub created_millis: i64,
}

impl Commit {
    /// Adds an instance row.
    pub fn instance(mut self, write: InstanceWrite) -> Commit {
        self.instances.push(write);
        self
    }

    /// Requires the account value `name` to be still at revision `expected` (0: never
    /// stored) when the commit is made.
    pub fn unchanged(mut self, name: &str, expected: Expected) -> Commit {
        self.checks.push(ValueCheck {
            name: name.to_owned(),
            expected,
        });
        self
    }

    /// Records the launch's `ClientToken`.
    pub fn client_token(mut self, token: ClientToken) -> Commit {
        self.client_token = Some(token);
        self
    }

    /// Adds an account value.
    pub fn value(mut self, name: &str, value: String, expected: Expected) -> Commit {
        self.account.push(ValueWrite {
            name: name.to_owned(),
            value,
            expected,
        });
        self
    }
}

/// One minute's count of one token-less request metric of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteCount<'a> {
    /// The instance id.
    pub instance_id: &'a str,
    /// `MetadataNoToken` or `MetadataNoTokenRejected`.
    pub metric: &'a str,
    /// Minutes since the epoch.
    pub minute: i64,
    /// Requests counted in it.
    pub count: i64,
}

/// A stored minute count, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCount {
    /// The instance id.
    pub instance_id: String,
    /// `MetadataNoToken` or `MetadataNoTokenRejected`.
    pub metric: String,
    /// Minutes since the epoch.
    pub minute: i64,
    /// Requests counted in it.
    pub count: i64,
}

/// Whether the store can take writes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Reachable.
    Up,
    /// Unreachable since `since` (milliseconds since the epoch), for `reason`.
    Down {
        /// When it went away.
        since_millis: u64,
        /// Why.
        reason: String,
    },
}

/// Why the store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created.
    #[error("{path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("{path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// PostgreSQL failed or is unreachable.
    #[error("{location}: {reason}")]
    Postgres {
        /// The database, without its password.
        location: String,
        /// Why.
        reason: String,
    },
    /// The database is away: writes are refused until it is back.
    #[error("{location} is unreachable ({reason}); changes are refused until it is back")]
    Unavailable {
        /// The database, without its password.
        location: String,
        /// Why.
        reason: String,
    },
    /// The connection was lost, or stopped answering, after a write's COMMIT was sent: it may
    /// or may not have been committed. The process catches up with the store to find out.
    #[error("{location} stopped answering after a write was sent ({reason}); it may have been committed")]
    OutcomeUnknown {
        /// The database, without its password.
        location: String,
        /// Why.
        reason: String,
    },
    /// A row changed since the writer last saw it (another host wrote it): nothing was written.
    #[error("{what} was changed by another writer")]
    Conflict {
        /// Which row.
        what: String,
    },
    /// The migrations could not be applied.
    #[error("{location}: cannot migrate the schema: {reason}")]
    Migration {
        /// The database.
        location: String,
        /// Why.
        reason: String,
    },
    /// The database was written by a newer imds.
    #[error("{location}: the schema has migration {found}, newer than this imds understands (it knows up to {known}); upgrade imds or use another store")]
    NewerSchema {
        /// The database.
        location: String,
        /// The newest migration applied there.
        found: i64,
        /// The newest this binary has.
        known: i64,
    },
    /// A stored value does not parse (written by a newer imds, or edited by hand).
    #[error("{location}: stored {what} is unreadable: {reason}")]
    Corrupt {
        /// The database.
        location: String,
        /// Which value.
        what: String,
        /// Why.
        reason: String,
    },
}

/// The store of one imds process: embedded or shared.
#[derive(Debug)]
pub enum Store {
    /// SQLite in a state directory.
    Sqlite(sqlite::SqliteStore),
    /// A shared PostgreSQL database.
    Postgres(postgres::PostgresStore),
}

impl Store {
    /// Opens the store at `location`, applying migrations. A PostgreSQL store that cannot be
    /// reached is an error: a host does not start without its inventory.
    pub async fn open(location: &Location) -> Result<Store, StoreError> {
        match location {
            Location::StateDir(dir) => Ok(Store::Sqlite(sqlite::SqliteStore::open(dir).await?)),
            Location::Postgres(url) => Ok(Store::Postgres(
                postgres::PostgresStore::open(url.expose()).await?,
            )),
        }
    }

    /// Where it is, for messages (never with a password).
    pub fn describe(&self) -> String {
        match self {
            Store::Sqlite(store) => store.path().display().to_string(),
            Store::Postgres(store) => store.location().to_owned(),
        }
    }

    /// Whether it is shared between hosts.
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Every row written after revision `after` (`-1`: every row).
    pub async fn load_since(&self, after: i64) -> Result<Changed, StoreError> {
        match self {
            Store::Sqlite(store) => store.load_since(after).await,
            Store::Postgres(store) => store.load_since(after).await,
        }
    }

    /// Writes `commit` in one transaction, durably, and returns its revision; nothing is
    /// written if any row's revision is not the expected one ([`StoreError::Conflict`]).
    pub async fn commit(&self, commit: Commit) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(store) => store.commit(commit).await,
            Store::Postgres(store) => store.commit(commit).await,
        }
    }

    /// The `ClientToken` `token`, when a launch stored it.
    pub async fn client_token(&self, token: &str) -> Result<Option<ClientToken>, StoreError> {
        match self {
            Store::Sqlite(store) => store.client_token(token).await,
            Store::Postgres(store) => store.client_token(token).await,
        }
    }

    /// Stores `value` as the key `name` (created at `created_millis`) unless one is stored
    /// already, and returns the stored one: two processes creating a key at once agree on the
    /// first committed.
    pub async fn add_key(
        &self,
        name: &str,
        value: &[u8],
        created_millis: i64,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        match self {
            Store::Sqlite(store) => store.add_key(name, value, created_millis).await,
            Store::Postgres(store) => store.add_key(name, value, created_millis).await,
        }
    }

    /// Raises the stored counts to these (a count never goes down: each flush sends the
    /// minute's total so far), and forgets minutes before `oldest_minute`.
    pub async fn save_history(
        &self,
        counts: &[MinuteCount<'_>],
        oldest_minute: i64,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => store.save_history(counts, oldest_minute).await,
            Store::Postgres(store) => store.save_history(counts, oldest_minute).await,
        }
    }

    /// Every stored minute count from `oldest_minute` on.
    pub async fn history(&self, oldest_minute: i64) -> Result<Vec<StoredCount>, StoreError> {
        match self {
            Store::Sqlite(store) => store.history(oldest_minute).await,
            Store::Postgres(store) => store.history(oldest_minute).await,
        }
    }

    /// Whether writes can be made now.
    pub fn health(&self) -> Health {
        match self {
            Store::Sqlite(_) => Health::Up,
            Store::Postgres(store) => store.health(),
        }
    }

    /// Bumped whenever another writer may have committed (a PostgreSQL notification, or a
    /// reconnection after which anything may have changed); `None` for the embedded store.
    pub fn hints(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        match self {
            Store::Sqlite(_) => None,
            Store::Postgres(store) => Some(store.hints()),
        }
    }
}

/// The newest revision committed (both backends: `$1`-style parameters work in SQLite too).
const SELECT_REVISION: &str = "SELECT value FROM revision WHERE id = 1";
/// Takes the next revision, inside a write's transaction: writers queue on this one row, so
/// revisions commit in order.
const NEXT_REVISION: &str = "UPDATE revision SET value = value + 1 WHERE id = 1 RETURNING value";
/// Instance rows after revision `$1`, with the configuration of launched ones.
const SELECT_INSTANCES: &str = "SELECT c.instance_id, l.config, c.changes, c.revision
     FROM instance_changes c LEFT JOIN launched_instances l USING (instance_id)
     WHERE c.revision > $1 ORDER BY c.revision, c.instance_id";
/// The revision of the account value `$1` (0 when it was never stored).
const SELECT_VALUE_REVISION: &str =
    "SELECT coalesce(max(revision), 0) FROM account WHERE name = $1";
/// Stores a `ClientToken` unless it is stored already.
const INSERT_CLIENT_TOKEN: &str = "INSERT INTO client_tokens
     (token, request_sha256, instance_ids, created_at_ms, revision) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (token) DO NOTHING";
/// The `ClientToken` `$1`.
const SELECT_CLIENT_TOKEN: &str = "SELECT token, request_sha256, instance_ids, created_at_ms
     FROM client_tokens WHERE token = $1";

/// The row a `ClientToken` conflict names in errors.
fn client_token_row(token: &str) -> String {
    format!("client token {token}")
}

/// The stored JSON array of a token's instance ids, or the reason it does not parse.
fn instance_ids(json: &str) -> Result<Vec<String>, String> {
    serde_json::from_str(json).map_err(|e| e.to_string())
}

/// A token's instance ids as stored.
fn instance_ids_json(ids: &[String]) -> String {
    serde_json::to_string(ids).expect("a list of strings serialises to JSON")
}

/// Account values after revision `$1`.
const SELECT_ACCOUNT: &str =
    "SELECT name, value, revision FROM account WHERE revision > $1 ORDER BY revision";
/// Keys after revision `$1`.
const SELECT_KEYS: &str =
    "SELECT name, value, created_at_ms FROM keys WHERE revision > $1 ORDER BY name";

/// Token-less request counts from minute `$1` on.
const SELECT_HISTORY: &str = "SELECT instance_id, metric, minute, count FROM no_token_history
     WHERE minute >= $1 ORDER BY instance_id, metric, minute";

/// The rows a conflict check names in errors.
fn instance_row(id: &str) -> String {
    format!("instance {id}")
}

/// The account value a conflict check names in errors.
fn account_row(name: &str) -> String {
    format!("account value {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_as_written_and_never_show_a_password() {
        let url = "postgres://imds:pw@db:5432/imds?sslmode=require";
        assert_eq!(
            Location::parse(url),
            Ok(Location::Postgres(url.to_owned().into()))
        );
        assert!(!format!("{:?}", Location::parse(url)).contains("pw"));
        let libpq = "host=db user=imds dbname=imds";
        assert_eq!(
            Location::parse(libpq),
            Ok(Location::Postgres(libpq.to_owned().into()))
        );
        assert_eq!(
            Location::parse("sqlite:/var/lib/imds"),
            Ok(Location::StateDir("/var/lib/imds".into()))
        );
        assert_eq!(
            Location::parse("/var/lib/imds"),
            Ok(Location::StateDir("/var/lib/imds".into()))
        );
        let error = Location::parse("mysql://imds:pw@db/imds").unwrap_err();
        assert!(
            error.contains("unsupported store") && !error.contains("pw"),
            "{error}"
        );
        assert!(Location::parse("  ").is_err());
        let error = Location::parse("postgres://imds:pw@db:port/imds").unwrap_err();
        assert!(!error.contains(":pw"), "{error}");
    }
}

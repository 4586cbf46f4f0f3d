//! The storage boundary: what must outlive a restart, and what many imds hosts share.
//!
//! Two backends keep the same schema (migrations in `store/migrations/`, applied at open by
//! refinery, and refused with a clear message when the database is newer than this binary):
//! - [`sqlite`]: embedded, in the state directory (`--state-dir`), for one host;
//! - [`postgres`]: one PostgreSQL database shared by every host (`--store postgres://...`).
//!
//! What is kept: the service's keys, each instance's control-plane changes, the instances
//! launched through `RunInstances` (with their `ClientToken`s), the account's values (instance
//! metadata defaults, the network registry), one row per address in use, and the token-less
//! request history.
//!
//! Every write is one transaction that first takes the next *revision* from a single counter
//! row (so revisions commit in order) and stamps every row it writes with it. A process that
//! has seen every revision up to N loads what changed with [`Store::load_since`]`(N)`.
//! Instance and account rows are written only if their revision is still the one the writer
//! last saw ([`Expected`]), so two hosts changing one instance at once never overwrite each
//! other: the second gets [`StoreError::Conflict`], catches up and retries.
//!
//! Rows are deleted too: a terminated instance forgotten ([`Store::forget`]) takes its rows
//! with it, an address given back its row. Each deletion leaves a *tombstone* stamped with the
//! revision that deleted it, so a process catching up learns deletions as it learns writes.
//! Tombstones are pruned after [`TOMBSTONE_RETENTION`] ([`Store::prune`]); a process that has
//! not caught up since the newest one pruned gets every row instead ([`Changed::complete`]), and
//! forgets what it holds that is not among them.
//!
//! Bounds, so that months of churn keep the store the size of the live fleet: instance rows
//! live until an hour after their instance terminated (then [`Store::forget`]), tombstones
//! [`TOMBSTONE_RETENTION`], `ClientToken`s [`CLIENT_TOKEN_RETENTION`] after the last instance
//! they launched is forgotten, token-less history 24 hours.
//!
//! The guest API never touches the store: guests are served from memory, so the database can
//! be away without any guest noticing. Control writes need it, and fail fast while it is.

mod migrations;
pub mod postgres;
mod redact;
mod sql;
pub mod sqlite;

use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

pub use self::redact::{redact, StoreUrl};

/// The revision a writer last saw of a row: the row is written only if it still has it. `0`
/// for a row it has never seen (new, or still as an older imds stored it).
pub type Expected = i64;

/// How long tombstones are kept: a process that has not caught up for longer reloads every
/// row (processes following the store catch up at least every 30 s).
pub const TOMBSTONE_RETENTION: Duration = Duration::from_secs(3600);
/// How long a `ClientToken` is kept once the last instance it launched is forgotten (an hour
/// after it terminated): a retry is answered as the first request was at least 25 hours after
/// termination (EC2 keeps a token at least 24 hours after).
pub const CLIENT_TOKEN_RETENTION: Duration = Duration::from_secs(24 * 3600);

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

/// An address in use, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAddress {
    /// Its subnet.
    pub subnet_id: String,
    /// The address (IPv4 or IPv6, as text).
    pub address: String,
    /// The instance holding it (empty: not known, as an older imds stored it).
    pub holder: String,
    /// The revision that last wrote it.
    pub revision: i64,
}

/// What a tombstone says was deleted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Deleted {
    /// A forgotten instance: its rows are gone.
    Instance(String),
    /// An address given back.
    Address {
        /// Its subnet.
        subnet_id: String,
        /// The address, as text.
        address: String,
    },
}

impl Deleted {
    /// The tombstone's kind and name columns.
    fn key(&self) -> (&'static str, String) {
        match self {
            Deleted::Instance(id) => (TOMBSTONE_INSTANCE, id.clone()),
            Deleted::Address { subnet_id, address } => {
                (TOMBSTONE_ADDRESS, format!("{subnet_id} {address}"))
            }
        }
    }

    /// The deletion a tombstone's kind and name columns say; `None` for a kind this imds does
    /// not know.
    fn from_key(kind: &str, name: String) -> Option<Deleted> {
        match kind {
            TOMBSTONE_INSTANCE => Some(Deleted::Instance(name)),
            TOMBSTONE_ADDRESS => {
                let (subnet_id, address) = name.split_once(' ')?;
                Some(Deleted::Address {
                    subnet_id: subnet_id.to_owned(),
                    address: address.to_owned(),
                })
            }
            _ => None,
        }
    }
}

/// A deletion and the revision that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// What was deleted.
    pub deleted: Deleted,
    /// The revision of the write that deleted it.
    pub revision: i64,
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
    /// Addresses taken after it.
    pub addresses: Vec<StoredAddress>,
    /// Rows deleted after it.
    pub tombstones: Vec<Tombstone>,
    /// Every row there is (a first load, or the tombstones after the revision asked for were
    /// pruned): what the reader holds that is not here was deleted.
    pub complete: bool,
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

/// An address row to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressWrite {
    /// Its subnet.
    pub subnet_id: String,
    /// The address, as text.
    pub address: String,
    /// The instance holding it.
    pub holder: String,
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
    /// Addresses taken (a launch): one stored already makes the whole commit a conflict.
    pub taken: Vec<AddressWrite>,
    /// Addresses given back by their holder (a termination, a config-file instance dropped);
    /// a row held by another instance stays.
    pub released: Vec<AddressWrite>,
    /// Addresses a host's config-file instances hold: stored unless another instance holds
    /// them (which the host's own fleet index refuses anyway).
    pub published: Vec<AddressWrite>,
    /// Subnets that must have no address in use (`DeleteSubnet`): one that has makes the
    /// whole commit a conflict.
    pub vacant: Vec<String>,
    /// When the change is made (milliseconds since the epoch, on the writer's clock): the
    /// tombstones it leaves are pruned [`TOMBSTONE_RETENTION`] after.
    pub at_millis: i64,
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
    /// The reservation it launched (a retry once its instances are forgotten names it).
    pub reservation_id: String,
    /// The account owning the reservation.
    pub owner_id: String,
    /// When it may be forgotten (milliseconds since the epoch): `None` while an instance it
    /// launched is stored.
    pub expires_millis: Option<i64>,
}

/// One instance to forget, as the forgetting process last saw its row.
#[derive(Debug, Clone)]
pub struct ForgetInstance {
    /// The instance id.
    pub instance_id: String,
    /// The revision of its row it saw: a row changed since is kept (for the next sweep).
    pub expected: Expected,
    /// Its reservation and owner, recorded on its `ClientToken` when the token does not have
    /// them (stored by an older imds).
    pub reservation_id: String,
    /// Its account.
    pub owner_id: String,
}

/// What [`Store::forget`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// The revision of the write (0: nothing was deleted).
    pub revision: i64,
    /// The instances whose rows are gone now (deleted by this write, or before).
    pub gone: Vec<String>,
    /// The instances whose rows changed since they were seen: kept.
    pub kept: Vec<String>,
}

/// What [`Store::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Tombstones older than [`TOMBSTONE_RETENTION`].
    pub tombstones: u64,
    /// `ClientToken`s past their [`CLIENT_TOKEN_RETENTION`].
    pub client_tokens: u64,
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

    /// Takes `address` of `subnet_id` for `holder` (a conflict when it is taken already).
    pub fn take(mut self, subnet_id: &str, address: std::net::IpAddr, holder: &str) -> Commit {
        self.taken
            .push(AddressWrite::new(subnet_id, address, holder));
        self
    }

    /// Gives `address` of `subnet_id` back, when `holder` (or nobody known) holds it.
    pub fn release(mut self, subnet_id: &str, address: std::net::IpAddr, holder: &str) -> Commit {
        self.released
            .push(AddressWrite::new(subnet_id, address, holder));
        self
    }

    /// Records `address` of `subnet_id` as held by the config-file instance `holder`.
    pub fn publish(mut self, subnet_id: &str, address: std::net::IpAddr, holder: &str) -> Commit {
        self.published
            .push(AddressWrite::new(subnet_id, address, holder));
        self
    }

    /// Requires subnet `subnet_id` to have no address in use when the commit is made.
    pub fn vacant(mut self, subnet_id: &str) -> Commit {
        self.vacant.push(subnet_id.to_owned());
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

impl AddressWrite {
    /// The row of `address` in `subnet_id`, held by `holder`.
    pub fn new(subnet_id: &str, address: std::net::IpAddr, holder: &str) -> AddressWrite {
        AddressWrite {
            subnet_id: subnet_id.to_owned(),
            address: address.to_string(),
            holder: holder.to_owned(),
        }
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

    /// Deletes the rows of `instances` (terminated ones EC2 no longer shows) in one
    /// transaction that leaves a tombstone for each, and starts the retention of the
    /// `ClientToken`s whose last instance goes (until `now_millis` + [`CLIENT_TOKEN_RETENTION`]).
    /// A row changed since it was seen is kept; a row already gone counts as forgotten.
    pub async fn forget(
        &self,
        instances: Vec<ForgetInstance>,
        now_millis: i64,
    ) -> Result<Forgotten, StoreError> {
        match self {
            Store::Sqlite(store) => store.forget(instances, now_millis).await,
            Store::Postgres(store) => store.forget(instances, now_millis).await,
        }
    }

    /// Removes the tombstones older than [`TOMBSTONE_RETENTION`] and the `ClientToken`s past
    /// their retention, at `now_millis`.
    pub async fn prune(&self, now_millis: i64) -> Result<Pruned, StoreError> {
        match self {
            Store::Sqlite(store) => store.prune(now_millis).await,
            Store::Postgres(store) => store.prune(now_millis).await,
        }
    }

    /// How many rows each table has (for `/metrics`, and to see that the store stays the size
    /// of the live fleet).
    pub async fn row_counts(&self) -> Result<Vec<(&'static str, i64)>, StoreError> {
        match self {
            Store::Sqlite(store) => store.row_counts().await,
            Store::Postgres(store) => store.row_counts().await,
        }
    }

    /// Deletes the keys named `prefix…` replaced by a later key of that prefix created at or
    /// before `replaced_before_millis` (session token generations retired everywhere); how
    /// many. The newest key of a prefix is never deleted.
    pub async fn prune_replaced_keys(
        &self,
        prefix: &str,
        replaced_before_millis: i64,
    ) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(store) => {
                store
                    .prune_replaced_keys(prefix, replaced_before_millis)
                    .await
            }
            Store::Postgres(store) => {
                store
                    .prune_replaced_keys(prefix, replaced_before_millis)
                    .await
            }
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

/// The tombstone kind of a forgotten instance.
const TOMBSTONE_INSTANCE: &str = "instance";
/// The tombstone kind of an address given back.
const TOMBSTONE_ADDRESS: &str = "address";

/// The tombstone kind and name of `address` of `subnet_id`.
fn address_tombstone(write: &AddressWrite) -> (&'static str, String) {
    Deleted::Address {
        subnet_id: write.subnet_id.clone(),
        address: write.address.clone(),
    }
    .key()
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

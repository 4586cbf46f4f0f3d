//! Persistence of what must outlive a restart, in an embedded SQLite database in the state
//! directory (`state.db`): the service's keys, each instance's control-plane changes, and the
//! account's instance metadata defaults.
//!
//! Every write is one transaction in WAL mode with `synchronous=FULL`, so when a write returns
//! it is on disk: a control change is acknowledged only after that, and a crash (even `kill -9`
//! mid-write) leaves the previous state or the new one, never a mix. Readers and writers of
//! other processes (`imds cert` beside a running server) wait on SQLite's lock, not fail.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{de::DeserializeOwned, Serialize};
use zeroize::Zeroizing;

/// The database's file name in the state directory.
pub const DATABASE_FILE: &str = "state.db";

/// The schema's version, kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keys (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS instance_changes (
    instance_id TEXT PRIMARY KEY,
    changes     TEXT NOT NULL,
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
CREATE TABLE IF NOT EXISTS launched_instances (
    instance_id TEXT PRIMARY KEY,
    config      TEXT NOT NULL,
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
CREATE TABLE IF NOT EXISTS account (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
";

const UPSERT_CHANGES: &str = "INSERT INTO instance_changes (instance_id, changes) VALUES (?1, ?2)
     ON CONFLICT (instance_id) DO UPDATE SET changes = excluded.changes,
         updated_at = excluded.updated_at";
const UPSERT_ACCOUNT: &str = "INSERT INTO account (name, value) VALUES (?1, ?2)
     ON CONFLICT (name) DO UPDATE SET value = excluded.value,
         updated_at = excluded.updated_at";

/// The JSON text of a value to store.
fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("stored values serialise to JSON")
}

/// How long a writer waits for another process holding the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

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
    Database {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// A stored value does not parse (written by a newer imds, or edited by hand).
    #[error("{path}: stored {what} is unreadable: {reason}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// Which value.
        what: String,
        /// Why.
        reason: String,
    },
    /// The database was written by a newer imds.
    #[error("{path}: schema version {found} is newer than this imds understands ({SCHEMA_VERSION}); upgrade imds or use another --state-dir")]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: i64,
    },
}

/// The state directory's database. Control-plane writes are rare, so one connection behind a
/// mutex serves them; the guest API never touches it.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    connection: Mutex<Connection>,
}

impl Store {
    /// Opens (creating when missing: the directory 0700, the database 0600) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::Directory {
                path: dir.to_owned(),
                source,
            })?;
        let path = dir.join(DATABASE_FILE);
        // Created 0600 before SQLite opens it, so the keys are never readable by others.
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StoreError::Directory {
                path: path.clone(),
                source,
            })?;
        let db = |source| StoreError::Database {
            path: path.clone(),
            source,
        };
        let connection = Connection::open(&path).map_err(db)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        let store = Store {
            path,
            connection: Mutex::new(connection),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&self) -> Result<(), StoreError> {
        self.write(|tx| {
            let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
            if found > SCHEMA_VERSION {
                return Ok(Err(found));
            }
            tx.execute_batch(SCHEMA)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            Ok(Ok(()))
        })?
        .map_err(|found| StoreError::NewerSchema {
            path: self.path.clone(),
            found,
        })
    }

    /// The key `name`, if stored.
    pub fn key(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let found: Option<Vec<u8>> = self.read(|c| {
            c.query_row("SELECT value FROM keys WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
        })?;
        Ok(found.map(Zeroizing::new))
    }

    /// Stores `value` as the key `name` unless one is stored already, and returns the stored
    /// one: two processes creating a key at once agree on the first committed.
    pub fn add_key(&self, name: &str, value: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO keys (name, value) VALUES (?1, ?2)",
                params![name, value],
            )?;
            tx.query_row("SELECT value FROM keys WHERE name = ?1", [name], |r| {
                r.get(0)
            })
        })
        .map(Zeroizing::new)
    }

    /// The control-plane changes stored for `instance_id`, if any.
    pub fn instance_changes<T: DeserializeOwned>(
        &self,
        instance_id: &str,
    ) -> Result<Option<T>, StoreError> {
        let select = "SELECT changes FROM instance_changes WHERE instance_id = ?1";
        self.get_json(select, instance_id, &format!("changes of {instance_id}"))
    }

    /// Stores the control-plane changes of `instance_id`, durably, replacing the previous ones.
    pub fn save_instance_changes<T: Serialize>(
        &self,
        instance_id: &str,
        changes: &T,
    ) -> Result<(), StoreError> {
        self.put_json(UPSERT_CHANGES, instance_id, changes)
    }

    /// Every instance launched through the control API (`RunInstances`), as stored.
    pub fn launched_instances<T: DeserializeOwned>(&self) -> Result<Vec<T>, StoreError> {
        let rows: Vec<(String, String)> = self.read(|c| {
            let mut select = c.prepare(
                "SELECT instance_id, config FROM launched_instances ORDER BY instance_id",
            )?;
            let rows = select.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })?;
        rows.iter()
            .map(|(id, json)| self.parse(json, &format!("launched instance {id}")))
            .collect()
    }

    /// Stores a launch in one transaction, durably: each instance's configuration and changes
    /// (its lifecycle) and the account value `account_name` (the network registry, with the
    /// addresses the instances took).
    pub fn save_launch<C: Serialize, H: Serialize, A: Serialize>(
        &self,
        instances: &[(String, C, H)],
        account_name: &str,
        account_value: &A,
    ) -> Result<(), StoreError> {
        let rows: Vec<(String, String, String)> = instances
            .iter()
            .map(|(id, config, changes)| (id.clone(), to_json(config), to_json(changes)))
            .collect();
        let account = to_json(account_value);
        self.write(|tx| {
            for (id, config, changes) in &rows {
                tx.execute(
                    "INSERT INTO launched_instances (instance_id, config) VALUES (?1, ?2)
                     ON CONFLICT (instance_id) DO UPDATE SET config = excluded.config",
                    params![id, config],
                )?;
                tx.execute(UPSERT_CHANGES, params![id, changes])?;
            }
            tx.execute(UPSERT_ACCOUNT, params![account_name, account])?;
            Ok(())
        })
    }

    /// Stores the changes of several instances and the account value `account_name` in one
    /// transaction, durably (a termination: lifecycles, and the addresses given back).
    pub fn save_changes_and_account<H: Serialize, A: Serialize>(
        &self,
        changes: &[(String, H)],
        account_name: &str,
        account_value: &A,
    ) -> Result<(), StoreError> {
        let rows: Vec<(String, String)> = changes
            .iter()
            .map(|(id, changes)| (id.clone(), to_json(changes)))
            .collect();
        let account = to_json(account_value);
        self.write(|tx| {
            for (id, changes) in &rows {
                tx.execute(UPSERT_CHANGES, params![id, changes])?;
            }
            tx.execute(UPSERT_ACCOUNT, params![account_name, account])?;
            Ok(())
        })
    }

    /// The account-level value `name` (e.g. the instance metadata defaults), if stored.
    pub fn account<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        self.get_json("SELECT value FROM account WHERE name = ?1", name, name)
    }

    /// Stores the account-level value `name`, durably.
    pub fn save_account<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StoreError> {
        self.put_json(UPSERT_ACCOUNT, name, value)
    }

    /// The JSON value `select` finds for `key`, parsed; `what` names it in errors.
    fn get_json<T: DeserializeOwned>(
        &self,
        select: &str,
        key: &str,
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        let json: Option<String> =
            self.read(|c| c.query_row(select, [key], |r| r.get(0)).optional())?;
        json.map(|json| self.parse(&json, what)).transpose()
    }

    /// Writes `value` as JSON for `key` with `upsert`, durably.
    fn put_json<T: Serialize>(&self, upsert: &str, key: &str, value: &T) -> Result<(), StoreError> {
        let json = to_json(value);
        self.write(|tx| tx.execute(upsert, params![key, json]).map(drop))
    }

    fn parse<T: DeserializeOwned>(&self, json: &str, what: &str) -> Result<T, StoreError> {
        serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            what: what.to_owned(),
            reason: e.to_string(),
        })
    }

    fn read<T>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        query(&connection).map_err(|source| StoreError::Database {
            path: self.path.clone(),
            source,
        })
    }

    /// Runs `change` in one immediate transaction and commits it; durable when this returns.
    fn write<T>(
        &self,
        change: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        let db = |source| StoreError::Database {
            path: self.path.clone(),
            source,
        };
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let value = change(&tx).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn values_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tags = BTreeMap::from([("Name".to_owned(), "web".to_owned())]);
        store.save_instance_changes("i-1", &tags).unwrap();
        store.save_account("defaults", &7u32).unwrap();
        assert!(store.key("token").unwrap().is_none());
        let key = store.add_key("token", &[1, 2, 3]).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.instance_changes("i-1").unwrap(), Some(tags));
        assert_eq!(
            store
                .instance_changes::<BTreeMap<String, String>>("i-2")
                .unwrap(),
            None
        );
        assert_eq!(store.account::<u32>("defaults").unwrap(), Some(7));
        assert_eq!(*store.key("token").unwrap().unwrap(), *key);
    }

    #[test]
    fn the_first_key_stored_wins() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(dir.path()).unwrap();
        let b = Store::open(dir.path()).unwrap();
        assert_eq!(*a.add_key("k", &[1]).unwrap(), vec![1]);
        assert_eq!(*b.add_key("k", &[2]).unwrap(), vec![1]);
    }

    #[test]
    fn the_database_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        Store::open(&state).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(DATABASE_FILE)), 0o600);
    }

    #[test]
    fn a_newer_schema_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path()).unwrap();
        let c = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let error = Store::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("schema version 99"), "{error}");
    }

    #[test]
    fn an_unreadable_value_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save_account("defaults", &"text").unwrap();
        let error = store.account::<u32>("defaults").unwrap_err().to_string();
        assert!(error.contains("stored defaults is unreadable"), "{error}");
    }
}

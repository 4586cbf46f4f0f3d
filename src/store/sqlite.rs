//! The embedded store: SQLite in the state directory (`state.db`), for one host.
//!
//! Every write is one immediate transaction in WAL mode with `synchronous=FULL`, so when a
//! write returns it is on disk: a control change is acknowledged only after that, and a crash
//! (even `kill -9` mid-write) leaves the previous state or the new one, never a mix. Other
//! processes on the same directory (`imds cert` beside a running server) wait on SQLite's lock,
//! not fail. Calls run on tokio's blocking threads, never on the runtime's.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use zeroize::Zeroizing;

use super::sql::*;
use super::{
    address_tombstone, migrations, Changed, ClientToken, Commit, Deleted, ForgetInstance,
    Forgotten, MinuteCount, Pruned, StoreError, StoredAddress, StoredCount, StoredInstance,
    StoredKey, StoredValue, Tombstone, CLIENT_TOKEN_RETENTION, TOMBSTONE_RETENTION,
};

/// The database's file name in the state directory.
pub const DATABASE_FILE: &str = "state.db";

/// The schema version older imds releases read from `PRAGMA user_version` (they refuse newer).
const LEGACY_SCHEMA_VERSION: i64 = 3;

/// How long a writer waits for another process holding the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most minute counts written in one transaction: the history is written in several, so
/// control writes waiting for the connection never wait behind a large flush.
const HISTORY_BATCH: usize = 2_000;

/// The state directory's database. Control-plane writes are rare, so one connection behind a
/// mutex serves them.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    path: PathBuf,
    connection: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating when missing: the directory 0700, the database 0600) the store in `dir`.
    pub async fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        let dir = dir.to_owned();
        match tokio::task::spawn_blocking(move || SqliteStore::open_blocking(&dir)).await {
            Ok(opened) => opened,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }

    /// [`SqliteStore::open`] on the calling thread.
    pub fn open_blocking(dir: &Path) -> Result<SqliteStore, StoreError> {
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
        let db = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut connection = Connection::open(&path).map_err(db)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        migrate(&mut connection, &path)?;
        Ok(SqliteStore {
            path,
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every row written after revision `after`.
    pub async fn load_since(&self, after: i64) -> Result<Changed, StoreError> {
        self.blocking(move |c| load_since(c, after)).await
    }

    /// Writes `commit` in one transaction; see [`super::Store::commit`].
    pub async fn commit(&self, commit: Commit) -> Result<i64, StoreError> {
        self.blocking(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let written = write(&tx, &commit)?;
            if written.is_ok() {
                tx.commit()?;
            }
            Ok(written)
        })
        .await?
        .map_err(|what| StoreError::Conflict { what })
    }

    /// Deletes forgotten instances' rows; see [`super::Store::forget`].
    pub async fn forget(
        &self,
        instances: Vec<ForgetInstance>,
        now_millis: i64,
    ) -> Result<Forgotten, StoreError> {
        self.blocking(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let revision = next_revision(&tx)?;
            let mut forgotten = Forgotten::default();
            let mut deleted = false;
            for instance in &instances {
                let id = &instance.instance_id;
                let removed = tx.execute(DELETE_CHANGES, params![id, instance.expected])? > 0;
                if !removed {
                    let stored: Option<i64> = tx
                        .query_row(SELECT_CHANGES_REVISION, [id], |r| r.get(0))
                        .optional()?;
                    match stored {
                        Some(_) => forgotten.kept.push(id.clone()),
                        None => forgotten.gone.push(id.clone()),
                    }
                    continue;
                }
                deleted = true;
                let token: Option<Option<String>> = tx
                    .query_row(DELETE_LAUNCHED, [id], |r| r.get(0))
                    .optional()?;
                tx.execute(DELETE_HISTORY_OF, [id])?;
                let (kind, name) = Deleted::Instance(id.clone()).key();
                tx.execute(UPSERT_TOMBSTONE, params![kind, name, revision, now_millis])?;
                if let Some(Some(token)) = token {
                    tx.execute(
                        FILL_CLIENT_TOKEN,
                        params![instance.reservation_id, instance.owner_id, token],
                    )?;
                    let expires = now_millis + CLIENT_TOKEN_RETENTION.as_millis() as i64;
                    tx.execute(EXPIRE_CLIENT_TOKEN, params![expires, token])?;
                }
                forgotten.gone.push(id.clone());
            }
            if deleted {
                tx.commit()?;
                forgotten.revision = revision;
            }
            Ok(forgotten)
        })
        .await
    }

    /// Deletes replaced keys; see [`super::Store::prune_replaced_keys`].
    pub async fn prune_replaced_keys(
        &self,
        prefix: &str,
        replaced_before_millis: i64,
    ) -> Result<u64, StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(move |c| {
            c.execute(PRUNE_REPLACED_KEYS, params![replaced_before_millis, prefix])
                .map(|n| n as u64)
        })
        .await
    }

    /// Prunes tombstones and expired tokens; see [`super::Store::prune`].
    pub async fn prune(&self, now_millis: i64) -> Result<Pruned, StoreError> {
        self.blocking(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let before = now_millis - TOMBSTONE_RETENTION.as_millis() as i64;
            let revisions: Vec<i64> = {
                let mut prune = tx.prepare(PRUNE_TOMBSTONES)?;
                let rows = prune.query_map([before], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            if let Some(newest) = revisions.iter().max() {
                tx.execute(SET_PRUNED, [newest])?;
            }
            let client_tokens = tx.execute(PRUNE_CLIENT_TOKENS, [now_millis])?;
            tx.commit()?;
            Ok(Pruned {
                tombstones: revisions.len() as u64,
                client_tokens: client_tokens as u64,
            })
        })
        .await
    }

    /// Rows per table; see [`super::Store::row_counts`].
    pub async fn row_counts(&self) -> Result<Vec<(&'static str, i64)>, StoreError> {
        self.blocking(|c| {
            TABLES
                .iter()
                .map(|table| {
                    let count =
                        c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
                    Ok((*table, count))
                })
                .collect()
        })
        .await
    }

    /// The `ClientToken` `token`; see [`super::Store::client_token`].
    pub async fn client_token(&self, token: &str) -> Result<Option<ClientToken>, StoreError> {
        let token = token.to_owned();
        let row = self
            .blocking(move |c| {
                c.query_row(SELECT_CLIENT_TOKEN, [&token], |r| {
                    let token = ClientToken {
                        token: r.get(0)?,
                        request_sha256: r.get(1)?,
                        instance_ids: Vec::new(),
                        created_millis: r.get(3)?,
                        reservation_id: r.get(4)?,
                        owner_id: r.get(5)?,
                        expires_millis: r.get(6)?,
                    };
                    Ok((token, r.get::<_, String>(2)?))
                })
                .optional()
            })
            .await?;
        let Some((mut token, ids)) = row else {
            return Ok(None);
        };
        token.instance_ids = instance_ids(&ids).map_err(|reason| StoreError::Corrupt {
            location: self.path.display().to_string(),
            what: client_token_row(&token.token),
            reason,
        })?;
        Ok(Some(token))
    }

    /// Stores a key unless one is stored under `name`; see [`super::Store::add_key`].
    pub async fn add_key(
        &self,
        name: &str,
        value: &[u8],
        created_millis: i64,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let (name, value) = (name.to_owned(), Zeroizing::new(value.to_vec()));
        self.blocking(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let stored: Option<Vec<u8>> = tx
                .query_row("SELECT value FROM keys WHERE name = ?1", [&name], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(stored) = stored {
                return Ok(Zeroizing::new(stored));
            }
            let revision = next_revision(&tx)?;
            tx.execute(
                "INSERT INTO keys (name, value, revision, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![name, value.as_slice(), revision, created_millis],
            )?;
            tx.commit()?;
            Ok(value)
        })
        .await
    }

    /// Raises the stored minute counts; see [`super::Store::save_history`]. Written in
    /// transactions of at most [`HISTORY_BATCH`] counts, the connection given back between
    /// them.
    pub async fn save_history(
        &self,
        counts: &[MinuteCount<'_>],
        oldest_minute: i64,
    ) -> Result<(), StoreError> {
        for batch in counts.chunks(HISTORY_BATCH) {
            let rows: Vec<StoredCount> = batch.iter().map(StoredCount::from).collect();
            self.blocking(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                {
                    let mut raise = tx.prepare_cached(
                        "INSERT INTO no_token_history (instance_id, metric, minute, count)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (instance_id, metric, minute)
                         DO UPDATE SET count = max(count, excluded.count)",
                    )?;
                    for row in &rows {
                        raise.execute(params![
                            row.instance_id,
                            row.metric,
                            row.minute,
                            row.count
                        ])?;
                    }
                }
                tx.commit()
            })
            .await?;
        }
        self.blocking(move |c| c.execute(PRUNE_HISTORY, [oldest_minute]).map(drop))
            .await
    }

    /// The stored minute counts from `oldest_minute` on.
    pub async fn history(&self, oldest_minute: i64) -> Result<Vec<StoredCount>, StoreError> {
        self.blocking(move |c| {
            let mut select = c.prepare(SELECT_HISTORY)?;
            let rows = select.query_map([oldest_minute], |r| {
                Ok(StoredCount {
                    instance_id: r.get(0)?,
                    metric: r.get(1)?,
                    minute: r.get(2)?,
                    count: r.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Runs `work` with the connection on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut connection = store.connection.lock().unwrap_or_else(|e| e.into_inner());
            work(&mut connection).map_err(|source| StoreError::Sqlite {
                path: store.path.clone(),
                source,
            })
        })
        .await;
        match done {
            Ok(result) => result,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
}

impl From<&MinuteCount<'_>> for StoredCount {
    fn from(count: &MinuteCount<'_>) -> StoredCount {
        StoredCount {
            instance_id: count.instance_id.to_owned(),
            metric: count.metric.to_owned(),
            minute: count.minute,
            count: count.count,
        }
    }
}

/// Applies the migrations this binary has, after refusing a database a newer imds wrote.
fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let location = path.display().to_string();
    let db = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let runner = migrations::sqlite();
    let known = migrations::newest(&runner);
    let legacy: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(db)?;
    let has_history: bool = connection
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [migrations::HISTORY_TABLE],
            |row| row.get(0),
        )
        .map_err(db)?;
    let applied: i64 = match has_history {
        true => connection
            .query_row(
                &format!(
                    "SELECT coalesce(max(version), 0) FROM {}",
                    migrations::HISTORY_TABLE
                ),
                [],
                |row| row.get(0),
            )
            .map_err(db)?,
        false if legacy > LEGACY_SCHEMA_VERSION => legacy,
        false => 0,
    };
    if applied > known {
        return Err(StoreError::NewerSchema {
            location,
            found: applied,
            known,
        });
    }
    runner
        .run(connection)
        .map_err(|error| StoreError::Migration {
            location,
            reason: error.to_string(),
        })?;
    Ok(())
}

/// Takes the next revision (inside the write's transaction).
fn next_revision(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<i64> {
    tx.query_row(NEXT_REVISION, [], |row| row.get(0))
}

fn load_since(c: &mut Connection, after: i64) -> rusqlite::Result<Changed> {
    // One read transaction, so the rows and the revision agree.
    let tx = c.transaction()?;
    let (revision, pruned): (i64, i64) =
        tx.query_row(SELECT_REVISION, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let complete = after < 0 || after < pruned;
    let after = if complete { -1 } else { after };
    let instances = rows(&tx, SELECT_INSTANCES, after, |r| {
        Ok(StoredInstance {
            instance_id: r.get(0)?,
            config: r.get(1)?,
            changes: r.get(2)?,
            revision: r.get(3)?,
        })
    })?;
    let account = rows(&tx, SELECT_ACCOUNT, after, |r| {
        Ok(StoredValue {
            name: r.get(0)?,
            value: r.get(1)?,
            revision: r.get(2)?,
        })
    })?;
    let keys = rows(&tx, SELECT_KEYS, after, |r| {
        Ok(StoredKey {
            name: r.get(0)?,
            value: Zeroizing::new(r.get(1)?),
            created_millis: r.get(2)?,
        })
    })?;
    let addresses = rows(&tx, SELECT_ADDRESSES, after, |r| {
        Ok(StoredAddress {
            subnet_id: r.get(0)?,
            address: r.get(1)?,
            holder: r.get(2)?,
            revision: r.get(3)?,
        })
    })?;
    let tombstones = match complete {
        true => Vec::new(),
        false => rows(&tx, SELECT_TOMBSTONES, after, |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))
        })?
        .into_iter()
        .filter_map(|(kind, name, revision)| {
            Some(Tombstone {
                deleted: Deleted::from_key(&kind, name)?,
                revision,
            })
        })
        .collect(),
    };
    tx.finish()?;
    Ok(Changed {
        instances,
        account,
        keys,
        addresses,
        tombstones,
        complete,
        revision,
    })
}

/// The rows `select` gives for revisions after `after`.
fn rows<T>(
    tx: &rusqlite::Transaction<'_>,
    select: &str,
    after: i64,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut select = tx.prepare(select)?;
    let rows = select.query_map([after], row)?;
    rows.collect()
}

/// Writes `commit` in `tx` at the next revision: the revision, or the row that conflicted
/// (then `tx` must be dropped, not committed).
fn write(tx: &rusqlite::Transaction<'_>, commit: &Commit) -> rusqlite::Result<Result<i64, String>> {
    let revision = next_revision(tx)?;
    for check in &commit.checks {
        let stored: i64 = tx.query_row(SELECT_VALUE_REVISION, [&check.name], |r| r.get(0))?;
        if stored != check.expected {
            return Ok(Err(account_row(&check.name)));
        }
    }
    for subnet in &commit.vacant {
        let in_use: i64 = tx.query_row(ADDRESSES_IN_SUBNET, [subnet], |r| r.get(0))?;
        if in_use > 0 {
            return Ok(Err(format!("the addresses in use in {subnet}")));
        }
    }
    let token = commit.client_token.as_ref();
    if let Some(token) = token {
        let inserted = tx.execute(
            INSERT_CLIENT_TOKEN,
            params![
                token.token,
                token.request_sha256,
                instance_ids_json(&token.instance_ids),
                token.created_millis,
                revision,
                token.reservation_id,
                token.owner_id
            ],
        )?;
        if inserted == 0 {
            return Ok(Err(client_token_row(&token.token)));
        }
    }
    for row in &commit.instances {
        if let Some(config) = &row.config {
            let launched_with = token
                .filter(|t| t.instance_ids.contains(&row.instance_id))
                .map(|t| t.token.as_str());
            tx.execute(
                UPSERT_LAUNCHED,
                params![row.instance_id, config, revision, launched_with],
            )?;
        }
        let written = tx.execute(
            UPSERT_CHANGES,
            params![row.instance_id, row.changes, revision, row.expected],
        )?;
        if written == 0 {
            return Ok(Err(instance_row(&row.instance_id)));
        }
    }
    for row in &commit.account {
        let written = tx.execute(
            UPSERT_VALUE,
            params![row.name, row.value, revision, row.expected],
        )?;
        if written == 0 {
            return Ok(Err(account_row(&row.name)));
        }
    }
    for address in &commit.released {
        let released = tx.execute(
            RELEASE_ADDRESS,
            params![address.subnet_id, address.address, address.holder],
        )?;
        if released > 0 {
            let (kind, name) = address_tombstone(address);
            tx.execute(
                UPSERT_TOMBSTONE,
                params![kind, name, revision, commit.at_millis],
            )?;
        }
    }
    for (address, statement, conflicts) in commit
        .taken
        .iter()
        .map(|a| (a, TAKE_ADDRESS, true))
        .chain(commit.published.iter().map(|a| (a, PUBLISH_ADDRESS, false)))
    {
        let written = tx.execute(
            statement,
            params![address.subnet_id, address.address, address.holder, revision],
        )?;
        if written > 0 {
            let (kind, name) = address_tombstone(address);
            tx.execute(DELETE_TOMBSTONE, params![kind, name])?;
        } else if conflicts {
            return Ok(Err(address_row(&address.subnet_id, &address.address)));
        }
    }
    Ok(Ok(revision))
}

#[cfg(test)]
mod tests {
    use super::super::{Expected, InstanceWrite};
    use super::*;

    fn write(id: &str, changes: &str, expected: Expected) -> InstanceWrite {
        InstanceWrite {
            instance_id: id.into(),
            config: None,
            changes: changes.into(),
            expected,
        }
    }

    #[tokio::test]
    async fn only_keys_replaced_long_enough_ago_are_pruned_and_the_newest_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        for (name, created) in [
            ("token-key/1", 0),
            ("token-key/2", 1_000),
            ("token-key/3", 5_000),
            ("signing-key/1", 0),
            ("signing-key/2", 100),
        ] {
            store.add_key(name, b"secret", created).await.unwrap();
        }
        let names = |store: &SqliteStore| {
            let store = store.clone();
            async move {
                let mut names: Vec<String> = store
                    .load_since(-1)
                    .await
                    .unwrap()
                    .keys
                    .into_iter()
                    .map(|k| k.name)
                    .collect();
                names.sort();
                names
            }
        };
        assert_eq!(
            store.prune_replaced_keys("token-key/", 999).await.unwrap(),
            0
        );
        assert_eq!(
            store
                .prune_replaced_keys("token-key/", 1_000)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            names(&store).await,
            [
                "signing-key/1",
                "signing-key/2",
                "token-key/2",
                "token-key/3"
            ]
        );
        assert_eq!(
            store
                .prune_replaced_keys("token-key/", i64::MAX)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            names(&store).await,
            ["signing-key/1", "signing-key/2", "token-key/3"],
            "the newest stays, and other prefixes are not touched"
        );
    }

    #[tokio::test]
    async fn rows_survive_reopening_with_their_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let first = store
            .commit(Commit::default().instance(write("i-1", "{\"a\":1}", 0)))
            .await
            .unwrap();
        let second = store
            .commit(Commit::default().value("defaults", "7".into(), 0))
            .await
            .unwrap();
        assert!(second > first);
        drop(store);
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let all = store.load_since(-1).await.unwrap();
        assert_eq!(all.revision, second);
        assert_eq!(all.instances[0].changes, "{\"a\":1}");
        assert_eq!(all.instances[0].revision, first);
        assert_eq!(all.account[0].value, "7");
        let newer = store.load_since(first).await.unwrap();
        assert!(newer.instances.is_empty());
        assert_eq!(newer.account.len(), 1);
    }

    #[tokio::test]
    async fn a_stale_writer_conflicts_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let seen = store
            .commit(Commit::default().instance(write("i-1", "1", 0)))
            .await
            .unwrap();
        store
            .commit(Commit::default().instance(write("i-1", "2", seen)))
            .await
            .unwrap();
        let stale = Commit::default()
            .value("network", "x".into(), 0)
            .instance(write("i-1", "3", seen));
        let error = store.commit(stale).await.unwrap_err();
        assert!(matches!(error, StoreError::Conflict { .. }), "{error}");
        let all = store.load_since(-1).await.unwrap();
        assert_eq!(all.instances[0].changes, "2");
        assert!(all.account.is_empty(), "the whole commit is refused");
    }

    #[tokio::test]
    async fn the_first_key_stored_wins() {
        let dir = tempfile::tempdir().unwrap();
        let a = SqliteStore::open(dir.path()).await.unwrap();
        let b = SqliteStore::open(dir.path()).await.unwrap();
        assert_eq!(*a.add_key("k", &[1], 5).await.unwrap(), vec![1]);
        assert_eq!(*b.add_key("k", &[2], 6).await.unwrap(), vec![1]);
        let keys = b.load_since(-1).await.unwrap().keys;
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].created_millis, 5);
    }

    #[tokio::test]
    async fn history_counts_only_rise_and_old_minutes_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let count = |minute, count| MinuteCount {
            instance_id: "i-1",
            metric: "MetadataNoToken",
            minute,
            count,
        };
        store
            .save_history(&[count(10, 5), count(11, 2)], 0)
            .await
            .unwrap();
        store.save_history(&[count(11, 1)], 11).await.unwrap();
        let kept = store.history(0).await.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!((kept[0].minute, kept[0].count), (11, 2));
    }

    #[test]
    fn the_database_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        SqliteStore::open_blocking(&state).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(DATABASE_FILE)), 0o600);
    }

    #[test]
    fn a_newer_schema_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        SqliteStore::open_blocking(dir.path()).unwrap();
        let c = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        c.execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES (99, 'future', '2030-01-01T00:00:00Z', '0')",
            [],
        )
        .unwrap();
        drop(c);
        let error = SqliteStore::open_blocking(dir.path())
            .unwrap_err()
            .to_string();
        assert!(error.contains("migration 99, newer"), "{error}");
    }

    #[test]
    fn a_state_directory_of_an_older_imds_is_migrated_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let c = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        c.execute_batch(include_str!("migrations/sqlite/V1__initial.sql"))
            .unwrap();
        c.execute(
            "INSERT INTO instance_changes (instance_id, changes) VALUES ('i-1', '{}')",
            [],
        )
        .unwrap();
        c.pragma_update(None, "user_version", 2).unwrap();
        drop(c);
        let store = SqliteStore::open_blocking(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let all = rt.block_on(store.load_since(-1)).unwrap();
        assert_eq!(all.instances[0].instance_id, "i-1");
        assert_eq!(all.instances[0].revision, 0);
    }
}

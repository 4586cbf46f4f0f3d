//! The shared store: one PostgreSQL database for every imds host.
//!
//! One connection per host, kept by a supervisor task: it `LISTEN`s on [`CHANNEL`], turns each
//! notification (sent by every write, carrying its revision) into a hint for the host to load
//! what is newer, and when the connection drops it marks the store down, reconnects with
//! backoff (up to [`MAX_BACKOFF`]) and hints again once back, since anything may have changed
//! meanwhile. While the store is down, writes fail at once ([`StoreError::Unavailable`]);
//! a write that takes longer than [`WRITE_TIMEOUT`] fails too (the database may be
//! unreachable without the connection knowing yet). Guests never wait on any of it.
//!
//! TLS is used when the URL asks for it (`sslmode=require`, or `prefer`, the default, when the
//! server offers it), with the system's root certificates.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::{AsyncMessage, Client, Config, IsolationLevel};
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use super::sql::*;
use super::{
    address_tombstone, migrations, redact, Changed, ClientToken, Commit, Deleted, ForgetInstance,
    Forgotten, Health, MinuteCount, Pruned, StoreError, StoredAddress, StoredCount, StoredInstance,
    StoredKey, StoredValue, Tombstone, CLIENT_TOKEN_RETENTION, TOMBSTONE_RETENTION,
};

/// The channel writes notify on, with their revision as payload.
pub const CHANNEL: &str = "imds_changes";
/// The advisory lock hosts take while they migrate (an arbitrary constant: "imds" in ASCII).
const MIGRATION_LOCK: i64 = 0x696d_6473;
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read or write may take before it is given up as unavailable.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The first wait before reconnecting; doubled at each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a history flush may take on its connection.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(30);
/// Most minute counts one statement of the history flush writes.
const HISTORY_BATCH: usize = 5_000;

/// The configuration `text` (a URL or a libpq connection string) gives.
pub fn parse_config(text: &str) -> Result<Config, String> {
    let mut config: Config = text
        .parse()
        .map_err(|e| format!("invalid store `{}`: {e}", redact(text)))?;
    if config.get_hosts().is_empty() {
        return Err(format!("the store `{}` names no host", redact(text)));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("imds");
    }
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(10));
    config.tcp_user_timeout(Duration::from_secs(10));
    Ok(config)
}

/// The shared database, its connection and what the supervisor knows of it.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    shared: Arc<Shared>,
}

struct Shared {
    location: String,
    config: Config,
    tls: MakeRustlsConnect,
    client: tokio::sync::Mutex<Option<Client>>,
    /// The history's connection, when open.
    history: tokio::sync::Mutex<Option<Client>>,
    health: Mutex<Health>,
    hints: tokio::sync::watch::Sender<u64>,
}

impl PostgresStore {
    /// Connects to the database `url` names and applies the migrations; an error when it cannot
    /// be reached (a host does not start without its inventory).
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let config = parse_config(url).map_err(|reason| StoreError::Postgres {
            location: redact(url),
            reason,
        })?;
        let shared = Arc::new(Shared {
            location: redact(url),
            config,
            tls: tls(),
            client: tokio::sync::Mutex::new(None),
            history: tokio::sync::Mutex::new(None),
            health: Mutex::new(Health::Up),
            hints: tokio::sync::watch::Sender::new(0),
        });
        let (mut client, connection) =
            shared
                .connect()
                .await
                .map_err(|reason| StoreError::Postgres {
                    location: shared.location.clone(),
                    reason: format!("cannot connect: {reason}"),
                })?;
        // The connection answers only while it is driven: the supervisor drives it from now on.
        tokio::spawn(supervise(shared.clone(), connection));
        migrate(&mut client, &shared.location).await?;
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| shared.error(e))?;
        *shared.client.lock().await = Some(client);
        Ok(PostgresStore { shared })
    }

    /// The database, without its password.
    pub fn location(&self) -> &str {
        &self.shared.location
    }

    /// Whether writes can be made now.
    pub fn health(&self) -> Health {
        self.shared
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Bumped at each notification and each reconnection.
    pub fn hints(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.hints.subscribe()
    }

    /// Every row written after revision `after`, read in one snapshot.
    pub async fn load_since(&self, after: i64) -> Result<Changed, StoreError> {
        self.with_client(|client| {
            Box::pin(async move {
                let tx = client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await?;
                let row = tx.query_one(SELECT_REVISION, &[]).await?;
                let (revision, pruned): (i64, i64) = (row.get(0), row.get(1));
                let complete = after < 0 || after < pruned;
                let after = if complete { -1 } else { after };
                let instances = tx
                    .query(SELECT_INSTANCES, &[&after])
                    .await?
                    .into_iter()
                    .map(|r| StoredInstance {
                        instance_id: r.get(0),
                        config: r.get(1),
                        changes: r.get(2),
                        revision: r.get(3),
                    })
                    .collect();
                let account = tx
                    .query(SELECT_ACCOUNT, &[&after])
                    .await?
                    .into_iter()
                    .map(|r| StoredValue {
                        name: r.get(0),
                        value: r.get(1),
                        revision: r.get(2),
                    })
                    .collect();
                let keys = tx
                    .query(SELECT_KEYS, &[&after])
                    .await?
                    .into_iter()
                    .map(|r| StoredKey {
                        name: r.get(0),
                        value: Zeroizing::new(r.get(1)),
                        created_millis: r.get(2),
                    })
                    .collect();
                let addresses = tx
                    .query(SELECT_ADDRESSES, &[&after])
                    .await?
                    .into_iter()
                    .map(|r| StoredAddress {
                        subnet_id: r.get(0),
                        address: r.get(1),
                        holder: r.get(2),
                        revision: r.get(3),
                    })
                    .collect();
                let tombstones = match complete {
                    true => Vec::new(),
                    false => tx
                        .query(SELECT_TOMBSTONES, &[&after])
                        .await?
                        .into_iter()
                        .filter_map(|r| {
                            Some(Tombstone {
                                deleted: Deleted::from_key(r.get(0), r.get(1))?,
                                revision: r.get(2),
                            })
                        })
                        .collect(),
                };
                tx.commit().await?;
                Ok(Ok(Changed {
                    instances,
                    account,
                    keys,
                    addresses,
                    tombstones,
                    complete,
                    revision,
                }))
            })
        })
        .await
    }

    /// Writes `commit` in one transaction; see [`super::Store::commit`].
    pub async fn commit(&self, commit: Commit) -> Result<i64, StoreError> {
        let commit = Arc::new(commit);
        // Set once COMMIT is sent: a write lost after that may have been committed.
        let sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let committing = sent.clone();
        let done = self
            .with_client(move |client| {
                Box::pin(async move {
                    let tx = client.transaction().await?;
                    let revision = match write(&tx, &commit).await? {
                        Ok(revision) => revision,
                        Err(row) => return Ok(Err(row)),
                    };
                    notify(&tx, revision).await?;
                    committing.store(true, std::sync::atomic::Ordering::Release);
                    tx.commit().await?;
                    Ok(Ok(revision))
                })
            })
            .await;
        match done {
            Err(StoreError::Unavailable { location, reason })
                if sent.load(std::sync::atomic::Ordering::Acquire) =>
            {
                // Whoever follows the store catches up, and so learns the write if it committed.
                self.shared.hints.send_modify(|n| *n += 1);
                Err(StoreError::OutcomeUnknown { location, reason })
            }
            other => other,
        }
    }

    /// Deletes forgotten instances' rows; see [`super::Store::forget`].
    pub async fn forget(
        &self,
        instances: Vec<ForgetInstance>,
        now_millis: i64,
    ) -> Result<Forgotten, StoreError> {
        let instances = Arc::new(instances);
        self.with_client(move |client| {
            Box::pin(async move {
                let tx = client.transaction().await?;
                let revision = next_revision(&tx).await?;
                let mut forgotten = Forgotten::default();
                let mut deleted = false;
                for instance in instances.iter() {
                    let id = &instance.instance_id;
                    let removed = tx
                        .execute(DELETE_CHANGES, &[id, &instance.expected])
                        .await?
                        > 0;
                    if !removed {
                        match tx.query_opt(SELECT_CHANGES_REVISION, &[id]).await? {
                            Some(_) => forgotten.kept.push(id.clone()),
                            None => forgotten.gone.push(id.clone()),
                        }
                        continue;
                    }
                    deleted = true;
                    let token: Option<String> = tx
                        .query_opt(DELETE_LAUNCHED, &[id])
                        .await?
                        .and_then(|r| r.get(0));
                    tx.execute(DELETE_HISTORY_OF, &[id]).await?;
                    let (kind, name) = Deleted::Instance(id.clone()).key();
                    tx.execute(UPSERT_TOMBSTONE, &[&kind, &name, &revision, &now_millis])
                        .await?;
                    if let Some(token) = token {
                        tx.execute(
                            FILL_CLIENT_TOKEN,
                            &[&instance.reservation_id, &instance.owner_id, &token],
                        )
                        .await?;
                        let expires = now_millis + CLIENT_TOKEN_RETENTION.as_millis() as i64;
                        tx.execute(EXPIRE_CLIENT_TOKEN, &[&expires, &token]).await?;
                    }
                    forgotten.gone.push(id.clone());
                }
                if deleted {
                    notify(&tx, revision).await?;
                    tx.commit().await?;
                    forgotten.revision = revision;
                } else {
                    tx.rollback().await?;
                }
                Ok(Ok(forgotten))
            })
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
        self.with_client(move |client| {
            Box::pin(async move {
                let deleted = client
                    .execute(PRUNE_REPLACED_KEYS, &[&replaced_before_millis, &prefix])
                    .await?;
                Ok(Ok(deleted))
            })
        })
        .await
    }

    /// Prunes tombstones and expired tokens; see [`super::Store::prune`].
    pub async fn prune(&self, now_millis: i64) -> Result<Pruned, StoreError> {
        self.with_client(move |client| {
            Box::pin(async move {
                let tx = client.transaction().await?;
                let before = now_millis - TOMBSTONE_RETENTION.as_millis() as i64;
                let revisions: Vec<i64> = tx
                    .query(PRUNE_TOMBSTONES, &[&before])
                    .await?
                    .into_iter()
                    .map(|r| r.get(0))
                    .collect();
                if let Some(newest) = revisions.iter().max() {
                    tx.execute(SET_PRUNED, &[newest]).await?;
                }
                let client_tokens = tx.execute(PRUNE_CLIENT_TOKENS, &[&now_millis]).await?;
                tx.commit().await?;
                Ok(Ok(Pruned {
                    tombstones: revisions.len() as u64,
                    client_tokens,
                }))
            })
        })
        .await
    }

    /// Rows per table; see [`super::Store::row_counts`].
    pub async fn row_counts(&self) -> Result<Vec<(&'static str, i64)>, StoreError> {
        self.with_client(move |client| {
            Box::pin(async move {
                let mut counts = Vec::with_capacity(TABLES.len());
                for table in TABLES {
                    let row = client
                        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                        .await?;
                    counts.push((table, row.get(0)));
                }
                Ok(Ok(counts))
            })
        })
        .await
    }

    /// The `ClientToken` `token`; see [`super::Store::client_token`].
    pub async fn client_token(&self, token: &str) -> Result<Option<ClientToken>, StoreError> {
        let token = token.to_owned();
        let row = self
            .with_client(move |client| {
                Box::pin(async move {
                    let row = client.query_opt(SELECT_CLIENT_TOKEN, &[&token]).await?;
                    Ok(Ok(row.map(|r| {
                        let ids: String = r.get(2);
                        let token = ClientToken {
                            token: r.get(0),
                            request_sha256: r.get(1),
                            instance_ids: Vec::new(),
                            created_millis: r.get(3),
                            reservation_id: r.get(4),
                            owner_id: r.get(5),
                            expires_millis: r.get(6),
                        };
                        (token, ids)
                    })))
                })
            })
            .await?;
        let Some((mut token, ids)) = row else {
            return Ok(None);
        };
        token.instance_ids = instance_ids(&ids).map_err(|reason| StoreError::Corrupt {
            location: self.shared.location.clone(),
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
        self.with_client(move |client| {
            Box::pin(async move {
                let tx = client.transaction().await?;
                let revision = next_revision(&tx).await?;
                let inserted = tx
                    .execute(
                        "INSERT INTO keys (name, value, revision, created_at_ms)
                         VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
                        &[&name, &value.as_slice(), &revision, &created_millis],
                    )
                    .await?;
                let stored: Vec<u8> = tx
                    .query_one("SELECT value FROM keys WHERE name = $1", &[&name])
                    .await?
                    .get(0);
                if inserted > 0 {
                    notify(&tx, revision).await?;
                }
                tx.commit().await?;
                Ok(Ok(Zeroizing::new(stored)))
            })
        })
        .await
    }

    /// Raises the stored minute counts; see [`super::Store::save_history`]. On the history's
    /// own connection, in statements of at most [`HISTORY_BATCH`] counts, within
    /// [`HISTORY_TIMEOUT`].
    pub async fn save_history(
        &self,
        counts: &[MinuteCount<'_>],
        oldest_minute: i64,
    ) -> Result<(), StoreError> {
        let shared = &self.shared;
        let done = tokio::time::timeout(HISTORY_TIMEOUT, async {
            let mut history = shared.history.lock().await;
            if history.as_ref().is_none_or(Client::is_closed) {
                let (client, connection) = shared
                    .connect()
                    .await
                    .map_err(|reason| shared.unavailable(reason))?;
                // Driven until it closes; the next flush then opens another.
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "the history's store connection closed");
                    }
                });
                *history = Some(client);
            }
            let client = history.as_mut().expect("connected above");
            let tx = client.transaction().await.map_err(|e| shared.error(e))?;
            for batch in counts.chunks(HISTORY_BATCH) {
                let ids: Vec<&str> = batch.iter().map(|c| c.instance_id).collect();
                let metrics: Vec<&str> = batch.iter().map(|c| c.metric).collect();
                let minutes: Vec<i64> = batch.iter().map(|c| c.minute).collect();
                let values: Vec<i64> = batch.iter().map(|c| c.count).collect();
                tx.execute(
                    "INSERT INTO no_token_history (instance_id, metric, minute, count)
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[])
                     ON CONFLICT (instance_id, metric, minute)
                     DO UPDATE SET count = GREATEST(no_token_history.count, excluded.count)",
                    &[&ids, &metrics, &minutes, &values],
                )
                .await
                .map_err(|e| shared.error(e))?;
            }
            tx.execute(PRUNE_HISTORY, &[&oldest_minute])
                .await
                .map_err(|e| shared.error(e))?;
            tx.commit().await.map_err(|e| shared.error(e))
        })
        .await;
        match done {
            Ok(result) => result,
            Err(_) => {
                // The connection may be mid-statement: the next flush opens another.
                shared.history.lock().await.take();
                Err(shared.unavailable(format!(
                    "the history was not written within {} s",
                    HISTORY_TIMEOUT.as_secs()
                )))
            }
        }
    }

    /// The stored minute counts from `oldest_minute` on.
    pub async fn history(&self, oldest_minute: i64) -> Result<Vec<StoredCount>, StoreError> {
        self.with_client(move |client| {
            Box::pin(async move {
                let rows = client.query(SELECT_HISTORY, &[&oldest_minute]).await?;
                Ok(Ok(rows
                    .into_iter()
                    .map(|r| StoredCount {
                        instance_id: r.get(0),
                        metric: r.get(1),
                        minute: r.get(2),
                        count: r.get(3),
                    })
                    .collect()))
            })
        })
        .await
    }

    /// Runs `work` on the connection within [`WRITE_TIMEOUT`]; at once unavailable while the
    /// store is down. `work` answers `Err(row)` for a conflict on `row`.
    async fn with_client<T>(
        &self,
        work: impl for<'c> FnOnce(&'c mut Client) -> Work<'c, T>,
    ) -> Result<T, StoreError> {
        let shared = &self.shared;
        if let Health::Down { reason, .. } = self.health() {
            return Err(shared.unavailable(reason));
        }
        let done = tokio::time::timeout(WRITE_TIMEOUT, async {
            let mut client = shared.client.lock().await;
            let Some(client) = client.as_mut() else {
                return Err(shared.unavailable("not connected".into()));
            };
            work(client).await.map_err(|e| shared.error(e))
        })
        .await;
        match done {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(what))) => Err(StoreError::Conflict { what }),
            Ok(Err(error)) => Err(error),
            Err(_) => {
                Err(shared.unavailable(format!("no answer within {} s", WRITE_TIMEOUT.as_secs())))
            }
        }
    }
}

/// The stream of a connection, with or without TLS.
type TlsStream =
    <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream;

/// What a unit of work on the connection returns: a value, or the row that conflicted.
type Work<'c, T> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<Result<T, String>, tokio_postgres::Error>>
            + Send
            + 'c,
    >,
>;

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("location", &self.location)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl Shared {
    async fn connect(
        &self,
    ) -> Result<
        (
            Client,
            tokio_postgres::Connection<tokio_postgres::Socket, TlsStream>,
        ),
        String,
    > {
        self.config
            .connect(self.tls.clone())
            .await
            .map_err(|e| describe(&e))
    }

    fn unavailable(&self, reason: String) -> StoreError {
        StoreError::Unavailable {
            location: self.location.clone(),
            reason,
        }
    }

    /// A failed call: unavailable when the connection is gone, else the database's error.
    fn error(&self, error: tokio_postgres::Error) -> StoreError {
        match error.is_closed() {
            true => self.unavailable(describe(&error)),
            false => StoreError::Postgres {
                location: self.location.clone(),
                reason: describe(&error),
            },
        }
    }

    fn set_health(&self, health: Health) {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = health;
    }
}

/// An error with its cause (tokio-postgres keeps the interesting part in the source).
fn describe(error: &tokio_postgres::Error) -> String {
    use std::error::Error;
    match error.source() {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

/// Drives the connection, forwards notifications as hints, and reconnects when it drops.
async fn supervise<S, T>(shared: Arc<Shared>, connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut reason = drive(&shared, connection).await;
    loop {
        shared.client.lock().await.take();
        let since_millis = now_millis();
        tracing::error!(store = shared.location, %reason, "the store is unreachable: guests are served from memory, control changes are refused until it is back");
        shared.set_health(Health::Down {
            since_millis,
            reason: reason.clone(),
        });
        let mut backoff = FIRST_BACKOFF;
        let connection = loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match shared.connect().await {
                Ok((client, connection)) => {
                    // LISTEN needs the connection driven, so drive it while asking.
                    let (listened, connection) = listen(client, connection).await;
                    match listened {
                        Ok(client) => {
                            *shared.client.lock().await = Some(client);
                            break connection;
                        }
                        Err(error) => {
                            reason = error;
                            shared.set_health(Health::Down {
                                since_millis,
                                reason: reason.clone(),
                            });
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(store = shared.location, %error, "reconnecting to the store failed");
                    reason = error;
                    shared.set_health(Health::Down {
                        since_millis,
                        reason: reason.clone(),
                    });
                }
            }
        };
        shared.set_health(Health::Up);
        tracing::warn!(
            store = shared.location,
            down_for_ms = now_millis().saturating_sub(since_millis),
            "the store is reachable again: catching up"
        );
        shared.hints.send_modify(|n| *n += 1);
        reason = drive(&shared, connection).await;
    }
}

/// Sends `LISTEN` on a new connection while driving it; the client back when it worked.
async fn listen<S, T>(
    client: Client,
    mut connection: tokio_postgres::Connection<S, T>,
) -> (Result<Client, String>, tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let query = format!("LISTEN {CHANNEL}");
    let listened = {
        let asked = client.batch_execute(&query);
        tokio::pin!(asked);
        loop {
            tokio::select! {
                done = &mut asked => break done.map_err(|e| describe(&e)),
                message = std::future::poll_fn(|cx| connection.poll_message(cx)) => {
                    if let None | Some(Err(_)) = message {
                        break Err("the connection closed while listening".into());
                    }
                }
            }
        }
    };
    (listened.map(|()| client), connection)
}

/// Polls the connection until it ends, turning notifications into hints; why it ended.
async fn drive<S, T>(shared: &Shared, mut connection: tokio_postgres::Connection<S, T>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(_))) => shared.hints.send_modify(|n| *n += 1),
            Some(Ok(AsyncMessage::Notice(notice))) => {
                tracing::debug!(store = shared.location, %notice, "notice from the store")
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return describe(&error),
            None => return "the connection closed".into(),
        }
    }
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Takes the next revision (inside the write's transaction; writers queue on this row, so
/// revisions commit in order).
async fn next_revision(tx: &tokio_postgres::Transaction<'_>) -> Result<i64, tokio_postgres::Error> {
    Ok(tx.query_one(NEXT_REVISION, &[]).await?.get(0))
}

/// Notifies every listening host of `revision` (delivered when the transaction commits).
async fn notify(
    tx: &tokio_postgres::Transaction<'_>,
    revision: i64,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &revision.to_string()],
    )
    .await
    .map(drop)
}

/// Writes `commit` in `tx` at the next revision: the revision, or the row that conflicted
/// (then `tx` must be dropped, not committed).
async fn write(
    tx: &tokio_postgres::Transaction<'_>,
    commit: &Commit,
) -> Result<Result<i64, String>, tokio_postgres::Error> {
    // Every writer holds the revision row from here to its commit, so what this reads is what
    // the rows are when this commits.
    let revision = next_revision(tx).await?;
    for check in &commit.checks {
        let stored: i64 = tx
            .query_one(SELECT_VALUE_REVISION, &[&check.name])
            .await?
            .get(0);
        if stored != check.expected {
            return Ok(Err(account_row(&check.name)));
        }
    }
    for subnet in &commit.vacant {
        let in_use: i64 = tx.query_one(ADDRESSES_IN_SUBNET, &[subnet]).await?.get(0);
        if in_use > 0 {
            return Ok(Err(format!("the addresses in use in {subnet}")));
        }
    }
    let token = commit.client_token.as_ref();
    if let Some(token) = token {
        let inserted = tx
            .execute(
                INSERT_CLIENT_TOKEN,
                &[
                    &token.token,
                    &token.request_sha256,
                    &instance_ids_json(&token.instance_ids),
                    &token.created_millis,
                    &revision,
                    &token.reservation_id,
                    &token.owner_id,
                ],
            )
            .await?;
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
                &[&row.instance_id, config, &revision, &launched_with],
            )
            .await?;
        }
        let written = tx
            .execute(
                UPSERT_CHANGES,
                &[&row.instance_id, &row.changes, &revision, &row.expected],
            )
            .await?;
        if written == 0 {
            return Ok(Err(instance_row(&row.instance_id)));
        }
    }
    for row in &commit.account {
        let written = tx
            .execute(
                UPSERT_VALUE,
                &[&row.name, &row.value, &revision, &row.expected],
            )
            .await?;
        if written == 0 {
            return Ok(Err(account_row(&row.name)));
        }
    }
    for address in &commit.released {
        let released = tx
            .execute(
                RELEASE_ADDRESS,
                &[&address.subnet_id, &address.address, &address.holder],
            )
            .await?;
        if released > 0 {
            let (kind, name) = address_tombstone(address);
            tx.execute(
                UPSERT_TOMBSTONE,
                &[&kind, &name, &revision, &commit.at_millis],
            )
            .await?;
        }
    }
    let writes = commit
        .taken
        .iter()
        .map(|a| (a, TAKE_ADDRESS, true))
        .chain(commit.published.iter().map(|a| (a, PUBLISH_ADDRESS, false)));
    for (address, statement, conflicts) in writes {
        let written = tx
            .execute(
                statement,
                &[
                    &address.subnet_id,
                    &address.address,
                    &address.holder,
                    &revision,
                ],
            )
            .await?;
        if written > 0 {
            let (kind, name) = address_tombstone(address);
            tx.execute(DELETE_TOMBSTONE, &[&kind, &name]).await?;
        } else if conflicts {
            return Ok(Err(address_row(&address.subnet_id, &address.address)));
        }
    }
    Ok(Ok(revision))
}

/// Applies the migrations this binary has, after refusing a database a newer imds wrote.
async fn migrate(client: &mut Client, location: &str) -> Result<(), StoreError> {
    let runner = migrations::postgres();
    let known = migrations::newest(&runner);
    let failed = |e: tokio_postgres::Error| StoreError::Migration {
        location: location.to_owned(),
        reason: describe(&e),
    };
    // Hosts starting together on a new database migrate one at a time; the others then find
    // every migration applied.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(failed)?;
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&migrations::HISTORY_TABLE],
        )
        .await
        .map_err(failed)?
        .get(0);
    if exists {
        let applied: i64 = client
            .query_one(
                &format!(
                    "SELECT coalesce(max(version), 0)::bigint FROM {}",
                    migrations::HISTORY_TABLE
                ),
                &[],
            )
            .await
            .map_err(failed)?
            .get(0);
        if applied > known {
            return Err(StoreError::NewerSchema {
                location: location.to_owned(),
                found: applied,
                known,
            });
        }
    }
    let ran = runner
        .run_async(client)
        .await
        .map_err(|error| StoreError::Migration {
            location: location.to_owned(),
            reason: error.to_string(),
        });
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(failed)?;
    ran.map(drop)
}

/// TLS for URLs that ask for it, trusting the system's root certificates.
fn tls() -> MakeRustlsConnect {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::debug!(%error, "a system root certificate could not be loaded");
    }
    roots.add_parsable_certificates(found.certs);
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    MakeRustlsConnect::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse_or_say_why() {
        assert!(parse_config("postgres://imds@127.0.0.1:5432/imds").is_ok());
        assert!(parse_config("host=127.0.0.1 port=5432 user=imds dbname=imds").is_ok());
        let error = parse_config("postgres://imds:pw@127.0.0.1:notaport/imds").unwrap_err();
        assert!(!error.contains("pw"), "{error}");
        let error = parse_config("postgres:///imds").unwrap_err();
        assert!(error.contains("names no host"), "{error}");
    }
}

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

use super::{
    account_row, client_token_row, instance_ids, instance_ids_json, instance_row, migrations,
    redact, Changed, ClientToken, Commit, Health, MinuteCount, StoreError, StoredCount,
    StoredInstance, StoredKey, StoredValue, INSERT_CLIENT_TOKEN, NEXT_REVISION, SELECT_ACCOUNT,
    SELECT_CLIENT_TOKEN, SELECT_HISTORY, SELECT_INSTANCES, SELECT_KEYS, SELECT_REVISION,
    SELECT_VALUE_REVISION,
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
                let revision: i64 = tx.query_one(SELECT_REVISION, &[]).await?.get(0);
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
                tx.commit().await?;
                Ok(Ok(Changed {
                    instances,
                    account,
                    keys,
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
                    // Every writer holds the revision row from here to its commit, so what this
                    // reads is what the values are when this commits.
                    let revision = next_revision(&tx).await?;
                    for check in &commit.checks {
                        let stored: i64 = tx
                            .query_one(SELECT_VALUE_REVISION, &[&check.name])
                            .await?
                            .get(0);
                        if stored != check.expected {
                            return Ok(Err(account_row(&check.name)));
                        }
                    }
                    if let Some(token) = &commit.client_token {
                        let inserted = tx
                            .execute(
                                INSERT_CLIENT_TOKEN,
                                &[
                                    &token.token,
                                    &token.request_sha256,
                                    &instance_ids_json(&token.instance_ids),
                                    &token.created_millis,
                                    &revision,
                                ],
                            )
                            .await?;
                        if inserted == 0 {
                            return Ok(Err(client_token_row(&token.token)));
                        }
                    }
                    for row in &commit.instances {
                        if let Some(config) = &row.config {
                            tx.execute(
                                "INSERT INTO launched_instances (instance_id, config, revision)
                             VALUES ($1, $2, $3)
                             ON CONFLICT (instance_id) DO UPDATE SET config = excluded.config,
                                 revision = excluded.revision",
                                &[&row.instance_id, config, &revision],
                            )
                            .await?;
                        }
                        let written = tx
                            .execute(
                                "INSERT INTO instance_changes (instance_id, changes, revision)
                             VALUES ($1, $2, $3)
                             ON CONFLICT (instance_id) DO UPDATE SET changes = excluded.changes,
                                 revision = excluded.revision, updated_at = now()
                             WHERE instance_changes.revision = $4",
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
                                "INSERT INTO account (name, value, revision) VALUES ($1, $2, $3)
                             ON CONFLICT (name) DO UPDATE SET value = excluded.value,
                                 revision = excluded.revision, updated_at = now()
                             WHERE account.revision = $4",
                                &[&row.name, &row.value, &revision, &row.expected],
                            )
                            .await?;
                        if written == 0 {
                            return Ok(Err(account_row(&row.name)));
                        }
                    }
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

    /// The `ClientToken` `token`; see [`super::Store::client_token`].
    pub async fn client_token(&self, token: &str) -> Result<Option<ClientToken>, StoreError> {
        let token = token.to_owned();
        let row = self
            .with_client(move |client| {
                Box::pin(async move {
                    let row = client.query_opt(SELECT_CLIENT_TOKEN, &[&token]).await?;
                    Ok(Ok(row.map(|r| {
                        let ids: String = r.get(2);
                        (
                            r.get::<_, String>(0),
                            r.get::<_, String>(1),
                            ids,
                            r.get::<_, i64>(3),
                        )
                    })))
                })
            })
            .await?;
        let Some((token, request_sha256, ids, created_millis)) = row else {
            return Ok(None);
        };
        let instance_ids = instance_ids(&ids).map_err(|reason| StoreError::Corrupt {
            location: self.shared.location.clone(),
            what: format!("client token {token}"),
            reason,
        })?;
        Ok(Some(ClientToken {
            token,
            request_sha256,
            instance_ids,
            created_millis,
        }))
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

    /// Raises the stored minute counts; see [`super::Store::save_history`].
    pub async fn save_history(
        &self,
        counts: &[MinuteCount<'_>],
        oldest_minute: i64,
    ) -> Result<(), StoreError> {
        let rows: Arc<Vec<StoredCount>> = Arc::new(counts.iter().map(StoredCount::from).collect());
        self.with_client(move |client| {
            Box::pin(async move {
                let tx = client.transaction().await?;
                for row in rows.iter() {
                    tx.execute(
                        "INSERT INTO no_token_history (instance_id, metric, minute, count)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (instance_id, metric, minute)
                         DO UPDATE SET count = GREATEST(no_token_history.count, excluded.count)",
                        &[&row.instance_id, &row.metric, &row.minute, &row.count],
                    )
                    .await?;
                }
                tx.execute(
                    "DELETE FROM no_token_history WHERE minute < $1",
                    &[&oldest_minute],
                )
                .await?;
                tx.commit().await?;
                Ok(Ok(()))
            })
        })
        .await
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

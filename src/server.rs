//! Serving HTTP/1.1 on already-bound listeners: connection limit, client deadline, request
//! head size limit, `Connection: close` or keep-alive, and a graceful drain at shutdown.
//!
//! The client deadline is enforced by one coarse watchdog per connection rather than hyper's
//! per-request header timer: arming a timer for every request cost a quarter of keep-alive
//! throughput (`scripts/bench`), while a connection records when it last received a request
//! with one clock read and one atomic store.
//!
//! With an access log, the caller of an IMDSv1 request is looked up before its answer is written,
//! while the client surely still holds its socket (see [`crate::access_log`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::faults::Effect;
use crate::guest_api::GuestApi;
use crate::net::{HopLimitedStream, ResponseHopLimit, WantedHopLimit};

/// Connection handling settings.
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    /// Persistent connections; otherwise one request per connection.
    pub keep_alive: bool,
    /// Connections served at once.
    pub max_connections: usize,
    /// A client must send each request head within this long of connecting or of its previous
    /// request; idle keep-alive connections are closed after it too.
    pub header_read_timeout: Duration,
    /// Largest request head in bytes.
    pub max_request_header_bytes: usize,
    /// How long in-flight requests get at shutdown.
    pub shutdown_grace: Duration,
}

/// Serves `api` on every listener until `shutdown` completes, then lets connections finish their
/// current request for up to the grace period.
pub async fn run(
    listeners: Vec<TcpListener>,
    api: Arc<GuestApi>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let server = Server::new(api, settings);
    let accepting: Vec<Accepting> = listeners.into_iter().map(|l| server.accept_on(l)).collect();
    shutdown.await;
    drop(accepting);
    server.drain().await;
}

/// A guest server whose listeners can come and go while it runs (the link-local IPv6 endpoint
/// opens and closes with `HttpProtocolIpv6`).
#[derive(Debug)]
pub struct Server {
    api: Arc<GuestApi>,
    http: http1::Builder,
    settings: ServerSettings,
    permits: Arc<Semaphore>,
    stop: watch::Sender<bool>,
}

/// Accepting on one listener; dropping it closes the listener (open connections carry on).
#[derive(Debug)]
pub struct Accepting(tokio::task::JoinHandle<()>);

impl Drop for Accepting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Server {
    /// A server for `api`; it accepts nothing until given listeners.
    pub fn new(api: Arc<GuestApi>, settings: ServerSettings) -> Server {
        let mut http = http1::Builder::new();
        http.max_buf_size(settings.max_request_header_bytes)
            .keep_alive(settings.keep_alive);
        Server {
            api,
            http,
            settings,
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            stop: watch::channel(false).0,
        }
    }

    /// Starts accepting connections on `listener`.
    pub fn accept_on(&self, listener: TcpListener) -> Accepting {
        Accepting(tokio::spawn(accept_loop(
            listener,
            self.api.clone(),
            self.http.clone(),
            self.settings.header_read_timeout,
            self.permits.clone(),
            self.stop.subscribe(),
        )))
    }

    /// Asks every connection to finish its current request and waits for them, at most the
    /// grace period. Drop the [`Accepting`] handles first.
    pub async fn drain(self) {
        let _ = self.stop.send(true);
        let max = u32::try_from(self.settings.max_connections).unwrap_or(u32::MAX);
        let grace = self.settings.shutdown_grace;
        if tokio::time::timeout(grace, self.permits.acquire_many(max))
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "connections still open after the shutdown grace period; closing them"
            );
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    api: Arc<GuestApi>,
    http: http1::Builder,
    deadline: Duration,
    permits: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
) {
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let api = api.clone();
        let http = http.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, api, http, deadline, stop).await;
            drop(permit);
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    api: Arc<GuestApi>,
    http: http1::Builder,
    deadline: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    // Only with an access log: where the connection arrived, to find an IMDSv1 caller's process.
    let log = api
        .access_log()
        .map(|log| Arc::new(log.connection(peer, stream.local_addr().ok())));
    let waiting = Arc::new(ClientWait::new());
    let marker = waiting.clone();
    let wanted_hops = WantedHopLimit::default();
    let stream = HopLimitedStream::new(stream, wanted_hops.clone());
    let faults_stop = stop.clone();
    let service = service_fn(move |request| {
        marker.request_arrived();
        let fault = api.fault(&request, peer);
        // No answer is built for a reset or silence.
        let mut response = match fault.map(|f| f.effect) {
            None | Some(Effect::Answer) => Some(api.handle(&request, peer)),
            Some(Effect::Status(status)) => Some(api.injected_status(status)),
            Some(Effect::Reset | Effect::NoAnswer) => None,
        };
        if let Some(response) = &response {
            wanted_hops.set(response.extensions().get::<ResponseHopLimit>().copied());
        }
        let v1_entry = log
            .as_ref()
            .zip(response.as_mut())
            .and_then(|(log, response)| Some((log.clone(), log.take_awaiting(response)?)));
        let faulty = fault.map(|fault| (fault, wanted_hops.clone(), faults_stop.clone()));
        async move {
            // An IMDSv1 caller is looked up while it still holds its socket: before answering.
            if let Some((log, entry)) = v1_entry {
                log.finish(entry).await;
            }
            if let Some((fault, hops, mut stop)) = faulty {
                tokio::time::sleep(fault.delay).await;
                match fault.effect {
                    Effect::Reset => {
                        hops.reset();
                        return Err(InjectedFault::Reset);
                    }
                    Effect::NoAnswer => {
                        stopping(&mut stop).await;
                        return Err(InjectedFault::NoAnswer);
                    }
                    Effect::Answer | Effect::Status(_) => {}
                }
            }
            Ok(response.expect("every request but a reset or a silent one has an answer"))
        }
    });
    let connection = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = waiting.overdue(deadline) => {
            tracing::debug!(%peer, ?deadline, "client too slow or idle; closing");
            return;
        }
        () = stopping(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Why a connection ended without an answer: an injected fault.
#[derive(Debug, thiserror::Error)]
enum InjectedFault {
    /// The connection was reset.
    #[error("injected fault: connection reset")]
    Reset,
    /// The request got no answer until shutdown.
    #[error("injected fault: no answer")]
    NoAnswer,
}

/// Completes when shutdown has begun (or the sender is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// When a connection last heard a whole request head from its client (or opened).
struct ClientWait {
    opened: Instant,
    last_request_millis: AtomicU64,
}

impl ClientWait {
    fn new() -> ClientWait {
        ClientWait {
            opened: Instant::now(),
            last_request_millis: AtomicU64::new(0),
        }
    }

    fn request_arrived(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        self.last_request_millis.store(now, Ordering::Relaxed);
    }

    /// Completes once the client has gone `deadline` without a request head, checked every
    /// half deadline (so the connection closes between 1 and 1.5 deadlines after).
    async fn overdue(&self, deadline: Duration) {
        let period = (deadline / 2).max(Duration::from_millis(5));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let waited = self.opened.elapsed().saturating_sub(Duration::from_millis(
                self.last_request_millis.load(Ordering::Relaxed),
            ));
            if waited >= deadline {
                return;
            }
        }
    }
}

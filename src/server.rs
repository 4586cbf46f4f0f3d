//! Serving HTTP/1.1 on already-bound listeners, the same way for both surfaces (the guest API
//! and the control API, each a [`Surface`]): a connection limit per server, a deadline for
//! every request head, a request head size limit, idle connections evicted when the server is
//! full, `Connection: close` or keep-alive, a `Host` check against DNS rebinding on loopback
//! connections ([`browser`]), and a graceful drain at shutdown.
//!
//! The client deadline is enforced by one coarse watchdog per server ([`watchdog`]) rather
//! than hyper's per-request header timer: arming a timer for every request cost a quarter of
//! keep-alive throughput (`scripts/bench`), while a connection records when it became idle
//! with one clock read and two atomic stores. The deadline only runs while the connection waits
//! for its client: a request being answered (an injected latency, a silent fault, a control
//! request reading its body under its own deadline) is never cut off by it.
//!
//! When every connection slot is taken, the accept loop closes the connections that are waiting
//! for a request head (idle keep-alive clients, slowloris clients, connections that never sent
//! anything), so a real request gets in promptly however many such clients there are.
//! A surface may evict its own connections the same way ([`ClientWait::evict`]): the guest API
//! does so at an instance's connection cap.
//!
//! A request costs the server no lock, no shared counter and no reference count moved on a
//! value every connection shares: what a request needs from the server is borrowed for the
//! connection's lifetime, and the connection's task waits for its watchdog's one message with
//! one atomic load.

pub mod browser;
pub mod net;
pub mod watchdog;

use std::cell::RefCell;
use std::future::{Future, Ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Once, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

pub use self::browser::{BrowserRefusal, HostGuard, PassedHost};
use self::watchdog::{Answering, Signal, Watchdog};
pub use self::watchdog::{ClientWait, Eviction};
use crate::log_limit::LogLimit;
use crate::metrics::{Metrics, SurfaceKind};
use crate::server::net::{HopLimitedStream, WantedHopLimit};

/// Connection handling settings.
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    /// Persistent connections; otherwise one request per connection.
    pub keep_alive: bool,
    /// Connections served at once.
    pub max_connections: usize,
    /// A client must send each request head within this long of connecting or of its previous
    /// answer; idle keep-alive connections are closed after it too.
    pub header_read_timeout: Duration,
    /// Largest request head in bytes.
    pub max_request_header_bytes: usize,
    /// How long in-flight requests get at shutdown.
    pub shutdown_grace: Duration,
}

/// Why a request got no answer: the surface chose silence or a reset (injected faults).
#[derive(Debug, thiserror::Error)]
pub enum NoAnswer {
    /// The connection was reset.
    #[error("injected fault: connection reset")]
    Reset,
    /// The request got no answer until the client left or the server stopped.
    #[error("injected fault: no answer")]
    Silence,
}

/// What a request gets: a response, or none (an injected fault).
pub type Answered = Result<Response<Full<Bytes>>, NoAnswer>;

/// A surface's answer to one request: ready at once, as most are (held inline: nothing is
/// allocated for it, and hyper moves nothing larger than the response), or still to come (a
/// delayed or silent fault, a body to read, a lookup to finish first).
pub enum Answer<'a> {
    /// Answered already.
    Now(Ready<Answered>),
    /// Answered when the future completes.
    Later(Pin<Box<dyn Future<Output = Answered> + Send + 'a>>),
    /// Never answered: the connection is being closed.
    Never,
}

impl<'a> Answer<'a> {
    /// The answer `answered`, given at once.
    pub fn now(answered: Answered) -> Answer<'a> {
        Answer::Now(std::future::ready(answered))
    }

    /// The answer `answering` completes with.
    pub fn later(answering: impl Future<Output = Answered> + Send + 'a) -> Answer<'a> {
        Answer::Later(Box::pin(answering))
    }
}

impl Future for Answer<'_> {
    type Output = Answered;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answered> {
        match self.get_mut() {
            Answer::Now(ready) => Pin::new(ready).poll(cx),
            Answer::Later(answering) => answering.as_mut().poll(cx),
            Answer::Never => Poll::Pending,
        }
    }
}

impl std::fmt::Debug for Answer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Answer::Now(_) => "Answer::Now",
            Answer::Later(_) => "Answer::Later",
            Answer::Never => "Answer::Never",
        })
    }
}

/// Why the server answered a request without asking its surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A request a web browser was made to send (see [`browser`]).
    Browser(BrowserRefusal),
    /// The body is larger than the surface reads.
    BodyTooLarge,
    /// The body did not arrive whole within the client deadline.
    BodyIncomplete,
}

impl From<BrowserRefusal> for Refusal {
    fn from(why: BrowserRefusal) -> Refusal {
        Refusal::Browser(why)
    }
}

/// One accepted connection as a surface sees it.
#[derive(Debug)]
pub struct Connection<T> {
    /// The client's address.
    pub peer: SocketAddr,
    /// The address the client connected to.
    pub local: Option<SocketAddr>,
    /// The IP TTL the next answer leaves with, or a reset.
    pub hops: WantedHopLimit,
    /// Turns true when the server stops.
    pub stop: watch::Receiver<bool>,
    /// What the surface keeps for this connection.
    pub surface: T,
}

/// A surface served by a [`Server`]: it answers requests; the server handles connections.
pub trait Surface: Send + Sync + Sized + 'static {
    /// What the surface keeps per connection.
    type PerConnection: Send + Sync + 'static;

    /// Which surface this is, for metrics and logs.
    const KIND: SurfaceKind;

    /// Largest request body read (0: bodies are never read).
    const MAX_BODY: usize;

    /// Whether requests a browser marks as cross-site are refused.
    const REFUSES_CROSS_SITE: bool;

    /// What to keep for a new connection from `peer` to `local`, which the surface may evict
    /// through `waiting` while it waits for its client.
    fn connect(
        &self,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        waiting: &Arc<ClientWait>,
    ) -> Self::PerConnection;

    /// The answer to `request` on `connection` (or none, for an injected fault).
    fn respond(
        self: &Arc<Self>,
        connection: &Arc<Connection<Self::PerConnection>>,
        request: Request<Full<Bytes>>,
    ) -> Answer<'static>;

    /// The answer to a request the server refused before it reached the surface.
    fn refused(&self, why: Refusal) -> Response<Full<Bytes>>;

    /// The counters the server adds to.
    fn metrics(&self) -> &Metrics;
}

/// Serves `surface` on every listener until `shutdown` completes, then lets connections finish
/// their current request for up to the grace period.
pub async fn run<S: Surface>(
    listeners: Vec<TcpListener>,
    surface: Arc<S>,
    settings: ServerSettings,
    hosts: Arc<HostGuard>,
    shutdown: impl Future<Output = ()>,
) {
    let server = Server::new(surface, settings, hosts);
    let accepting: Vec<Accepting> = listeners.into_iter().map(|l| server.accept_on(l)).collect();
    shutdown.await;
    drop(accepting);
    server.drain().await;
}

/// A server whose listeners can come and go while it runs (the link-local IPv6 endpoint opens
/// and closes with `HttpProtocolIpv6`).
#[derive(Debug)]
pub struct Server<S> {
    shared: Arc<Shared<S>>,
    settings: ServerSettings,
    stop: watch::Sender<bool>,
    /// Starts the watchdog's sweep with the first listener.
    sweeping: Once,
}

/// What every connection of one server shares.
#[derive(Debug)]
struct Shared<S> {
    surface: Arc<S>,
    http: http1::Builder,
    deadline: Duration,
    hosts: Arc<HostGuard>,
    permits: Arc<Semaphore>,
    /// Every open connection's wait for its client.
    watchdog: Watchdog,
}

/// Accepting on one listener; dropping it closes the listener (open connections carry on).
#[derive(Debug)]
pub struct Accepting(tokio::task::JoinHandle<()>);

impl Drop for Accepting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a connection must have waited for its client before a full server (or its
/// instance's cap) evicts it, so a client that has just connected gets the time to send its
/// request.
pub const EVICTABLE_AFTER: Duration = Duration::from_millis(100);

impl<S: Surface> Server<S> {
    /// A server for `surface`; it accepts nothing until given listeners.
    pub fn new(surface: Arc<S>, settings: ServerSettings, hosts: Arc<HostGuard>) -> Server<S> {
        let mut http = http1::Builder::new();
        // Answers are a few hundred bytes: copied behind their head and sent in one buffer, they
        // cost less than a vectored write of the two (scripts/bench: +6 % keep-alive GETs, where
        // the same setting makes the bare hyper baseline no faster).
        http.max_buf_size(settings.max_request_header_bytes)
            .keep_alive(settings.keep_alive)
            .writev(false);
        Server {
            shared: Arc::new(Shared {
                surface,
                http,
                deadline: settings.header_read_timeout,
                hosts,
                permits: Arc::new(Semaphore::new(settings.max_connections)),
                watchdog: Watchdog::default(),
            }),
            settings,
            stop: watch::channel(false).0,
            sweeping: Once::new(),
        }
    }

    /// Starts accepting connections on `listener`.
    pub fn accept_on(&self, listener: TcpListener) -> Accepting {
        self.sweeping.call_once(|| {
            tokio::spawn(sweep(Arc::downgrade(&self.shared)));
        });
        Accepting(tokio::spawn(accept_loop(
            listener,
            self.shared.clone(),
            self.stop.subscribe(),
        )))
    }

    /// Asks every connection to finish its current request and waits for them, at most the
    /// grace period. Drop the [`Accepting`] handles first.
    pub async fn drain(self) {
        let _ = self.stop.send(true);
        self.shared.watchdog.stop();
        let max = u32::try_from(self.settings.max_connections).unwrap_or(u32::MAX);
        let grace = self.settings.shutdown_grace;
        let permits = self.shared.permits.clone();
        if tokio::time::timeout(grace, permits.acquire_many(max))
            .await
            .is_err()
        {
            tracing::warn!(
                surface = S::KIND.label(),
                ?grace,
                "connections still open after the shutdown grace period; closing them"
            );
        }
    }
}

async fn accept_loop<S: Surface>(
    listener: TcpListener,
    shared: Arc<Shared<S>>,
    stop: watch::Receiver<bool>,
) {
    // Bound to one address, the listener's address is every connection's local address (no
    // system call to ask for it).
    let bound = listener
        .local_addr()
        .ok()
        .filter(|addr| !addr.ip().is_unspecified());
    // Clients can make accepting fail (by holding every file descriptor): one line a minute.
    let accept_failures = LogLimit::new(Duration::from_secs(60));
    loop {
        let permit = match shared.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::Closed) => return,
            Err(tokio::sync::TryAcquireError::NoPermits) => loop {
                // Full: close the connections waiting for their clients to make room, again
                // while none has (the ones that just connected become evictable shortly).
                let evicted = shared.watchdog.make_room(EVICTABLE_AFTER);
                for _ in 0..evicted {
                    let metrics = shared.surface.metrics();
                    metrics.connection_evicted(S::KIND, Eviction::ServerFull);
                }
                let wait =
                    tokio::time::timeout(EVICTABLE_AFTER, shared.permits.clone().acquire_owned());
                match wait.await {
                    Ok(Ok(permit)) => break permit,
                    Ok(Err(_)) => return,
                    Err(_) => continue,
                }
            },
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                shared.surface.metrics().accept_failed(S::KIND);
                if let Some(held_back) = accept_failures.allow() {
                    tracing::warn!(%error, surface = S::KIND.label(), held_back, "accept failed; retrying in 50 ms");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let metrics = shared.surface.metrics();
            metrics.connection_opened(S::KIND);
            let local = bound.or_else(|| stream.local_addr().ok());
            serve_connection(stream, peer, local, &shared, stop).await;
            shared.surface.metrics().connection_closed(S::KIND);
            drop(permit);
        });
    }
}

/// Closes the connections whose clients have kept them waiting past the deadline, twice per
/// deadline, while the server or any of its connections is there.
async fn sweep<S: Surface>(shared: Weak<Shared<S>>) {
    let Some(deadline) = shared.upgrade().map(|shared| shared.deadline) else {
        return;
    };
    let period = watchdog::sweep_period(deadline);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.watchdog.sweep(deadline);
    }
}

async fn serve_connection<S: Surface>(
    stream: TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    shared: &Shared<S>,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    // DNS rebinding only reaches imds through a loopback address.
    let check_host = local.is_some_and(|local| local.ip().to_canonical().is_loopback());
    let (waiting, mut closing) = ClientWait::new();
    let _watched = shared.watchdog.watch(&waiting);
    let connection = Arc::new(Connection {
        peer,
        local,
        hops: WantedHopLimit::default(),
        stop,
        surface: shared.surface.connect(peer, local, &waiting),
    });
    let stream = HopLimitedStream::new(stream, local, connection.hops.clone());
    let this = &connection;
    let wait = &*waiting;
    // A loopback client's `Host` that passed, to pass its next requests without parsing it.
    let passed = check_host.then(|| RefCell::new(PassedHost::default()));
    let service = service_fn(move |request: Request<Incoming>| {
        let mut passed = passed.as_ref().map(RefCell::borrow_mut);
        answer(shared, this, wait, passed.as_deref_mut(), request)
    });
    let serving = shared.http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(serving);
    let result = tokio::select! {
        biased;
        result = serving.as_mut() => result,
        signal = &mut closing => match signal {
            Ok(Signal::Close(why)) => {
                tracing::debug!(%peer, surface = S::KIND.label(), ?why, "client too slow or idle; closing");
                return;
            }
            Ok(Signal::Stop) | Err(_) => {
                serving.as_mut().graceful_shutdown();
                serving.await
            }
        },
    };
    if let Err(error) = result {
        tracing::debug!(%peer, surface = S::KIND.label(), %error, "connection ended with an error");
    }
}

/// The answer to one request on `connection`: the server's checks, the body when the surface
/// reads one, then the surface's answer. Nothing shared by the server's connections is cloned,
/// and a surface that reads no body answers here, before hyper first polls the answer: hyper
/// may read from the socket before polling it, and while the request lives, the buffer its
/// head was read into cannot be reused (each read would allocate a new one).
fn answer<'a, S: Surface>(
    shared: &'a Shared<S>,
    connection: &'a Arc<Connection<S::PerConnection>>,
    waiting: &'a ClientWait,
    passed: Option<&mut PassedHost>,
    request: Request<Incoming>,
) -> Reply<'a> {
    // A connection given up answers nothing more; its task is closing it.
    let Some(answering) = waiting.request_arrived() else {
        return Reply {
            answer: Answer::Never,
            answering: None,
        };
    };
    let surface = &shared.surface;
    if let Err(why) = check(&request, passed, &shared.hosts, &**surface) {
        return Reply {
            answer: Answer::now(Ok(surface.refused(why))),
            answering: Some(answering),
        };
    }
    let answer = match S::MAX_BODY {
        0 => match answering.body_read() {
            true => {
                let (parts, _) = request.into_parts();
                let request = Request::from_parts(parts, Full::new(Bytes::new()));
                surface.respond(connection, request)
            }
            false => Answer::Never,
        },
        max => Answer::later(async move {
            let (parts, body) = request.into_parts();
            // While the body comes, a full server may still evict the connection.
            let body = match read_body(body, max, shared.deadline).await {
                Ok(body) => body,
                Err(why) => return Ok(surface.refused(why)),
            };
            if !waiting.body_read() {
                return std::future::pending().await;
            }
            surface
                .respond(connection, Request::from_parts(parts, Full::new(body)))
                .await
        }),
    };
    Reply {
        answer,
        answering: Some(answering),
    }
}

/// A request's answer, with the connection marked as answering until it is handed over.
struct Reply<'a> {
    answer: Answer<'a>,
    answering: Option<Answering<'a>>,
}

impl Future for Reply<'_> {
    type Output = Answered;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answered> {
        let this = self.get_mut();
        let answered = std::task::ready!(Pin::new(&mut this.answer).poll(cx));
        // The wait for the client starts again.
        this.answering = None;
        Poll::Ready(answered)
    }
}

/// The server's own checks before a request reaches its surface: on a loopback connection
/// (which remembers the `Host` that `passed`) the `Host`, and on a surface that refuses them,
/// cross-site requests.
fn check<S: Surface>(
    request: &Request<Incoming>,
    passed: Option<&mut PassedHost>,
    hosts: &HostGuard,
    surface: &S,
) -> Result<(), Refusal> {
    let headers = request.headers();
    if let Some(passed) = passed {
        hosts.check_host_again(headers, S::KIND, surface.metrics(), passed)?;
    }
    if S::REFUSES_CROSS_SITE {
        hosts.check_site(headers, S::KIND, surface.metrics())?;
    }
    Ok(())
}

/// Reads a whole request body of at most `max` bytes within `deadline`.
async fn read_body(body: Incoming, max: usize, deadline: Duration) -> Result<Bytes, Refusal> {
    match tokio::time::timeout(deadline, Limited::new(body, max).collect()).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(error)) if error.is::<LengthLimitError>() => Err(Refusal::BodyTooLarge),
        Ok(Err(_)) | Err(_) => Err(Refusal::BodyIncomplete),
    }
}

/// Completes when shutdown has begun (or the sender is gone).
pub async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

//! `--access-log FILE|-`: one JSON line per guest request, so operators can see who calls and,
//! above all, which local processes still call IMDSv1.
//!
//! A line: `{"time":"2026-11-02T08:14:29.123Z","peer":"127.0.0.1:50412","instance":"i-0b4f...",
//! "method":"GET","path":"/latest/meta-data/ami-id","status":200,"version":"v1","latency_us":57,
//! "pid":4242,"cmdline":"python3 poll.py"}`.
//! - `time`: when the answer was ready (RFC 3339, UTC, milliseconds).
//! - `path`: the request path as received, without the query string.
//! - `version`: `v2` for a token PUT or a request carrying a token (valid or not), `v1`
//!   otherwise, as in the `version` label of `imds_requests_total`.
//! - `latency_us`: microseconds from the request head to the answer, caller lookup included.
//! - `pid`, `cmdline`: for `v1` requests from a process this host can see (see below); absent
//!   otherwise.
//!
//! Header values and bodies are never logged, so neither tokens (headers, and the PUT's answer)
//! nor credentials (answer bodies) can leak into the file.
//!
//! **Cost.** Without an access log the guest handler does one `Option` check. With one, it sends
//! a small [`Entry`] into a bounded queue (never blocking: when full the entry is dropped and
//! counted in `imds_access_log_dropped_total`, with a warning at most every 10 s); a writer
//! thread formats the JSON and appends through a buffer flushed whenever the queue runs empty.
//! `scripts/bench --access-log` (2 cores, wrk on the same machine): keep-alive IMDSv2 GETs at 16
//! connections ran at 0.90-1.05x the rate without the log (within the run-to-run noise).
//!
//! **Finding an IMDSv1 caller's process** (netlink sock_diag and `/proc`, see
//! `access_log/caller.rs`) must happen while the client still holds its socket. With real IMDS'
//! `Connection: close` the client reads the answer, closes and often exits within a millisecond,
//! so a lookup made after answering (by the writer) would mostly find nothing. So the connection
//! looks the caller up *before* writing a `v1` answer, in a blocking task (at most [`LOOKUPS`] at
//! once, each answer waiting at most [`LOOKUP_BUDGET`], after which the line goes without a pid),
//! only for peers on this host, and once per connection (keep-alive callers pay it once). `v2`
//! answers never wait. A lookup took 30 us for a recent caller and 120 us when scanning 78
//! processes (`caller_lookup_cost`, release build), so IMDSv1 over new connections as fast as
//! wrk can open them ran at 0.46x the rate without the log.

mod caller;
mod proc_net_tcp;
mod sock_diag;
mod writer;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{Method, Response, Uri};
use tokio::sync::{OnceCell, Semaphore};

use self::caller::{Caller, CallerFinder};
pub use self::writer::{AccessLogError, Destination};
use crate::metrics::{ImdsVersion, Metrics};

/// Entries waiting for the writer; more are dropped (and counted).
const QUEUE: usize = 4096;
/// Caller lookups running at once.
pub const LOOKUPS: usize = 2;
/// Longest an IMDSv1 answer waits for its caller lookup.
pub const LOOKUP_BUDGET: Duration = Duration::from_millis(100);

/// The access log of a running server: a cheap handle to its queue and writer.
#[derive(Clone)]
pub struct AccessLog(Arc<Shared>);

struct Shared {
    queue: SyncSender<Line>,
    reopen: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    lookups: Arc<Semaphore>,
    callers: Arc<CallerFinder>,
}

/// One answered guest request, as the handler saw it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// When the answer was ready.
    pub time: SystemTime,
    /// The client's address.
    pub peer: SocketAddr,
    /// The instance that answered.
    pub instance: String,
    /// The request method.
    pub method: Method,
    /// The request target; only its path is logged.
    pub uri: Uri,
    /// The answer's status code.
    pub status: u16,
    /// How the request identified itself.
    pub version: ImdsVersion,
    /// Time taken to answer.
    pub latency: Duration,
}

/// What the writer receives: an entry and, for IMDSv1, the calling process if found.
struct Line {
    entry: Entry,
    caller: Option<Arc<Caller>>,
}

/// An IMDSv1 entry attached to its answer, for the connection to log once it has looked the
/// caller up ([`ConnectionLog::finish`]).
#[derive(Debug, Clone)]
pub struct AwaitingCaller(Entry);

/// The lookup did not run (too many at once) or did not finish in time; try again next request.
struct Skipped;

impl AccessLog {
    /// Starts writing to `destination` on a blocking task of the current Tokio runtime; it ends,
    /// having flushed everything, once every handle is dropped.
    pub fn start(destination: Destination, metrics: Arc<Metrics>) -> AccessLog {
        let (queue, lines) = mpsc::sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = writer::Writer::new(destination, reopen.clone(), metrics.clone());
        tokio::task::spawn_blocking(move || writer.run(lines));
        AccessLog(Arc::new(Shared {
            queue,
            reopen,
            metrics,
            lookups: Arc::new(Semaphore::new(LOOKUPS)),
            callers: Arc::new(CallerFinder::default()),
        }))
    }

    /// Reopens the file before the next line (SIGHUP, after logrotate has moved it away).
    pub fn reopen(&self) {
        self.0.reopen.store(true, Ordering::Relaxed);
    }

    /// Logs `entry`, answered by `response`; an IMDSv1 entry instead rides on the response to
    /// its connection, which looks the caller up before answering.
    pub fn answered<B>(&self, entry: Entry, response: &mut Response<B>) {
        match entry.version {
            ImdsVersion::V2 => self.send(Line {
                entry,
                caller: None,
            }),
            ImdsVersion::V1 => {
                response.extensions_mut().insert(AwaitingCaller(entry));
            }
        }
    }

    /// The log of a connection from `peer` that arrived at `server` (`None`: unknown).
    pub fn connection(&self, peer: SocketAddr, server: Option<SocketAddr>) -> ConnectionLog {
        ConnectionLog {
            log: self.clone(),
            peer,
            server: server.filter(|server| same_host(peer, *server)),
            caller: OnceCell::new(),
        }
    }

    /// Queues a line without waiting; counts it as dropped when the queue is full.
    fn send(&self, line: Line) {
        if self.0.queue.try_send(line).is_err() {
            self.0.metrics.access_log_dropped();
        }
    }

    /// The process connected from `client` to `server`, looked up on a blocking thread.
    async fn find(
        &self,
        client: SocketAddr,
        server: SocketAddr,
    ) -> Result<Option<Arc<Caller>>, Skipped> {
        let (lookups, callers) = (self.0.lookups.clone(), self.0.callers.clone());
        let lookup = async move {
            let permit = lookups.acquire_owned().await.map_err(|_| Skipped)?;
            // The permit goes with the lookup: one that outlives the budget still counts.
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                callers.find(client, server).map(Arc::new)
            })
            .await
            .map_err(|_| Skipped)
        };
        tokio::time::timeout(LOOKUP_BUDGET, lookup)
            .await
            .map_err(|_| Skipped)?
    }
}

/// Whether `peer` is on this host, seen from a connection that arrived at `server`: loopback,
/// or the same address (a host connecting to its own address uses it as the source too).
fn same_host(peer: SocketAddr, server: SocketAddr) -> bool {
    let peer = peer.ip().to_canonical();
    peer.is_loopback() || peer == server.ip().to_canonical()
}

/// The access log as one connection sees it: it remembers the connection's caller.
pub struct ConnectionLog {
    log: AccessLog,
    peer: SocketAddr,
    /// Where the connection arrived, when the peer is on this host.
    server: Option<SocketAddr>,
    caller: OnceCell<Option<Arc<Caller>>>,
}

impl ConnectionLog {
    /// Takes the IMDSv1 entry off `response`, to [`finish`](Self::finish) before answering.
    pub fn take_awaiting<B>(&self, response: &mut Response<B>) -> Option<AwaitingCaller> {
        response.extensions_mut().remove::<AwaitingCaller>()
    }

    /// Looks up the caller (once per connection), logs the entry and returns the caller found.
    pub async fn finish(&self, awaiting: AwaitingCaller) -> Option<Arc<Caller>> {
        let started = Instant::now();
        let caller = match self.server {
            Some(server) => self
                .caller
                .get_or_try_init(|| self.log.find(self.peer, server))
                .await
                .ok()
                .cloned()
                .flatten(),
            None => None,
        };
        let mut entry = awaiting.0;
        entry.latency += started.elapsed();
        self.log.send(Line {
            entry,
            caller: caller.clone(),
        });
        caller
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_peers_on_this_host_are_looked_up() {
        let server: SocketAddr = "10.0.21.74:80".parse().unwrap();
        for (peer, local) in [
            ("127.0.0.1:5000", true),
            ("[::1]:5000", true),
            ("[::ffff:127.0.0.1]:5000", true),
            ("10.0.21.74:5000", true),
            ("10.0.21.75:5000", false),
            ("[fd00::1]:5000", false),
        ] {
            assert_eq!(same_host(peer.parse().unwrap(), server), local, "{peer}");
        }
    }
}

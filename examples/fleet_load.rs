//! A load generator for fleet mode: keep-alive IMDSv2 GETs of a metadata leaf, each connection
//! from its own source address, so that imds answers every connection as a different instance.
//!
//! `cargo run --release --example fleet_load -- --target 127.0.0.1:1338 --sources FILE`
//! opens `--connections` connections, each bound to a source address from `FILE` (one address a
//! line, e.g. the instances' 127.x.y.z loopback addresses) before connecting: the addresses are
//! cut into K equal blocks and connection `i` uses the `i`-th block's in turn, so together they
//! reach every address and the first ones are spread over all of them. On
//! each connection it fetches a token (`PUT /latest/api/token`), then GETs the leaf with it until
//! `--per-connection` requests are done (then it reconnects from its next address) or the
//! `--duration` is over. Without `--sources` every connection comes from 127.0.0.1.
//!
//! Prints one JSON line: GETs answered, requests per second, p50 and p99 latency of the GETs in
//! microseconds, connections opened, distinct source addresses used, and requests not answered
//! with 200 (any of those makes the exit status 1). Used by `scripts/bench --fleet`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;

/// What to load and how hard.
#[derive(Debug, Parser)]
struct Args {
    /// The imds guest listener.
    #[arg(long)]
    target: SocketAddr,
    /// A file of source addresses, one a line; default: 127.0.0.1 only.
    #[arg(long)]
    sources: Option<PathBuf>,
    /// Connections open at once.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// How long to send requests, in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// GETs per connection before it reconnects from its next source address; 0: never.
    #[arg(long, default_value_t = 0)]
    per_connection: u64,
    /// The path to GET.
    #[arg(long, default_value = "/latest/meta-data/instance-id")]
    path: String,
}

/// What one connection worker saw.
#[derive(Debug, Default)]
struct Tally {
    /// Latency of each GET answered with 200, in microseconds.
    latencies: Vec<u32>,
    /// Connections opened.
    connections: u64,
    /// Requests (token PUTs and GETs) answered with anything but 200, or not answered.
    failures: u64,
    /// The first failure, for the report.
    first_failure: Option<String>,
    /// Source addresses used.
    sources: Vec<IpAddr>,
}

impl Tally {
    fn fail(&mut self, what: String) {
        self.failures += 1;
        self.first_failure.get_or_insert(what);
    }
}

/// One request on `sender`: its status, or why there was none.
async fn exchange(
    sender: &mut SendRequest<Empty<Bytes>>,
    request: Request<Empty<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, body.to_bytes()))
}

/// Opens a connection from `source` to `target` and fetches a token on it.
async fn connect(
    source: IpAddr,
    target: SocketAddr,
    host: &str,
) -> Result<(SendRequest<Empty<Bytes>>, String), String> {
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket
        .connect(target)
        .await
        .map_err(|e| format!("connect from {source}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    // Closed with a reset: thousands of reconnections from one address leave no TIME_WAIT
    // sockets behind to exhaust its ports.
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let put = Request::builder()
        .method(Method::PUT)
        .uri("/latest/api/token")
        .header(http::header::HOST, host)
        .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
        .body(Empty::new())
        .expect("a valid request");
    match exchange(&mut sender, put).await? {
        (StatusCode::OK, token) => Ok((sender, String::from_utf8_lossy(&token).into_owned())),
        (status, _) => Err(format!("token PUT from {source}: {status}")),
    }
}

/// Sends GETs until `deadline`, from `sources` in turn.
async fn worker(args: std::sync::Arc<Args>, sources: Vec<IpAddr>, deadline: Instant) -> Tally {
    let host = args.target.to_string();
    let mut tally = Tally::default();
    let mut next = 0;
    while Instant::now() < deadline {
        let source = sources[next % sources.len()];
        next += 1;
        let (mut sender, token) = match connect(source, args.target, &host).await {
            Ok(connected) => connected,
            Err(why) => {
                tally.fail(why);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        tally.connections += 1;
        if next <= sources.len() {
            tally.sources.push(source);
        }
        let mut sent = 0;
        while Instant::now() < deadline && (args.per_connection == 0 || sent < args.per_connection)
        {
            sent += 1;
            let get = Request::builder()
                .uri(args.path.as_str())
                .header(http::header::HOST, host.as_str())
                .header("x-aws-ec2-metadata-token", token.as_str())
                .body(Empty::new())
                .expect("a valid request");
            let started = Instant::now();
            match exchange(&mut sender, get).await {
                Ok((StatusCode::OK, _)) => {
                    let micros = started.elapsed().as_micros();
                    tally.latencies.push(micros.try_into().unwrap_or(u32::MAX));
                }
                Ok((status, _)) => tally.fail(format!("GET from {source}: {status}")),
                Err(why) => {
                    tally.fail(format!("GET from {source}: {why}"));
                    break;
                }
            }
        }
    }
    tally
}

fn read_sources(path: &PathBuf) -> std::io::Result<Vec<IpAddr>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            line.parse()
                .map_err(|e| std::io::Error::other(format!("{line}: {e}")))
        })
        .collect()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let sources = match &args.sources {
        Some(path) => read_sources(path)?,
        None => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
    };
    if sources.is_empty() || args.connections == 0 {
        return Err(std::io::Error::other(
            "at least one source and one connection",
        ));
    }
    let args = std::sync::Arc::new(args);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let workers: Vec<_> = (0..args.connections)
        .map(|i| {
            // Connection i takes the i-th of K equal blocks of the addresses (at least one,
            // wrapping around), so that the first addresses used are spread over all of them.
            let (n, k) = (sources.len(), args.connections);
            let own: Vec<IpAddr> = match n > i {
                true => sources[i * n / k..((i + 1) * n / k).max(i * n / k + 1)].to_vec(),
                false => vec![sources[i % n]],
            };
            tokio::spawn(worker(args.clone(), own, deadline))
        })
        .collect();
    let mut all = Tally::default();
    for handle in workers {
        let tally = handle.await.map_err(std::io::Error::other)?;
        all.latencies.extend(tally.latencies);
        all.connections += tally.connections;
        all.failures += tally.failures;
        all.sources.extend(tally.sources);
        if all.first_failure.is_none() {
            all.first_failure = tally.first_failure;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    all.latencies.sort_unstable();
    all.sources.sort_unstable();
    all.sources.dedup();
    let percentile = |p: f64| -> u32 {
        match all.latencies.len() {
            0 => 0,
            n => all.latencies[((n as f64 * p) as usize).min(n - 1)],
        }
    };
    let report = serde_json::json!({
        "requests": all.latencies.len(),
        "seconds": seconds,
        "rate": all.latencies.len() as f64 / seconds,
        "p50_us": percentile(0.50),
        "p99_us": percentile(0.99),
        "connections": all.connections,
        "sources": all.sources.len(),
        "failures": all.failures,
        "first_failure": all.first_failure,
    });
    println!("{report}");
    if all.failures > 0 {
        std::process::exit(1);
    }
    Ok(())
}

//! One guest floods imds while another measures its latency: the quiet guest's p50/p99 without a
//! flood, with a flood and throttling off, with the default throttle, and with a tight throttle
//! on the noisy instance. Fleet mode on loopback, in one process: the noisy guest calls from
//! 127.0.0.2, the quiet one from 127.0.0.3, a new connection per request as real IMDS has it.
//!
//! `cargo run --release --example noisy_neighbour -- [SECONDS per scenario, default 5]`

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use imds::app::config::{Config, Overrides};
use imds::clock::SystemClock;
use imds::fleet::identity::IdentitySigner;
use imds::fleet::keys::Keys;
use imds::fleet::secret::ServerSecret;
use imds::App;
use tokio::net::{TcpListener, TcpSocket};

/// Concurrent requests of the flooding guest.
const FLOODERS: usize = 32;

fn fleet_toml(server: &str, noisy: &str) -> String {
    let instance = |n: u32, throttle: &str| {
        format!(
            r#"
[[instances]]
instance_id = "i-0000000000000000{n}"
{throttle}
[[instances.network_interfaces]]
mac = "0e:00:00:00:00:0{n}"
interface_id = "eni-0000000000000000{n}"
subnet_id = "subnet-0000000000000000{n}"
subnet_ipv4_cidr_block = "127.0.0.0/24"
vpc_id = "vpc-00000000000000001"
vpc_ipv4_cidr_blocks = ["127.0.0.0/16"]
private_ipv4s = ["127.0.0.{n}"]
security_groups = [{{ name = "default", id = "sg-0000000000000000{n}" }}]
"#
        )
    };
    format!(
        "[server]\nfleet = true\n{server}\n{}{}",
        instance(2, noisy),
        instance(3, "")
    )
}

/// One GET from `source`, on a new connection; its status.
async fn get(source: IpAddr, imds: SocketAddr) -> Option<u16> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(source, 0)).ok()?;
    let stream = socket.connect(imds).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    let request = Request::get("/latest/meta-data/instance-id")
        .header("host", imds.to_string())
        .body(Empty::<Bytes>::new())
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    let status = response.status().as_u16();
    response.into_body().collect().await.ok()?;
    Some(status)
}

async fn scenario(name: &str, toml: &str, flood: bool, seconds: u64) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("fleet.toml");
    std::fs::write(&path, toml).expect("the config written");
    let loaded = Config::load(Some(&path))
        .and_then(|c| c.resolve(&Overrides::default(), Some(&path)))
        .expect("a valid fleet config");
    let keys = Keys {
        secret: ServerSecret::random(),
        signer: Arc::new(IdentitySigner::generate().expect("a signing key")),
        token_generations: Vec::new(),
    };
    let app = App::new(
        loaded,
        &keys,
        Arc::new(SystemClock),
        Default::default(),
        None,
    )
    .expect("the example fleet has one owner per address");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("its address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(imds::server::run(
        vec![listener],
        app.api.clone(),
        app.settings,
        app.hosts.clone(),
        async {
            let _ = stopped.await;
        },
    ));

    let done = Arc::new(AtomicBool::new(false));
    let (ok, throttled) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let noisy: IpAddr = [127, 0, 0, 2].into();
    let flooders: Vec<_> = (0..if flood { FLOODERS } else { 0 })
        .map(|_| {
            let (done, ok, throttled) = (done.clone(), ok.clone(), throttled.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    match get(noisy, addr).await {
                        Some(200) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => throttled.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();

    let quiet: IpAddr = [127, 0, 0, 3].into();
    let mut latencies = Vec::new();
    let mut failures = 0;
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        let started = Instant::now();
        if get(quiet, addr).await != Some(200) {
            failures += 1;
        }
        latencies.push(started.elapsed());
        // About 200 requests per second: a guest that is not itself flooding.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done.store(true, Ordering::Relaxed);
    for flooder in flooders {
        let _ = flooder.await;
    }
    let _ = stop.send(());
    let _ = server.await;

    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let (ok, throttled) = (
        ok.load(Ordering::Relaxed),
        throttled.load(Ordering::Relaxed),
    );
    println!(
        "{name:<44} quiet: {} requests, {failures} failed, p50 {:>7.2?} p99 {:>7.2?} | noisy: {:>6.0} 200/s {:>6.0} other/s",
        latencies.len(),
        at(0.5),
        at(0.99),
        ok as f64 / seconds as f64,
        throttled as f64 / seconds as f64,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let off = "instance_requests_per_second = 0\ninstance_max_connections = 0";
    scenario("no flood", &fleet_toml(off, ""), false, seconds).await;
    scenario("flood, throttling off", &fleet_toml(off, ""), true, seconds).await;
    scenario(
        "flood, default throttle (1024/s, 256 conns)",
        &fleet_toml("", ""),
        true,
        seconds,
    )
    .await;
    let tight = "[instances.throttle]\nrequests_per_second = 100\nmax_connections = 8";
    scenario(
        "flood, noisy at 100/s and 8 connections",
        &fleet_toml("", tight),
        true,
        seconds,
    )
    .await;
}

//! Per-instance throttling: 429 beyond an instance's requests per second or its simultaneous
//! connections, recovery as its clock moves, idle connections making room at the cap rather
//! than locking their instance out, and in fleet mode one flooding guest leaving the others'
//! requests untouched.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use imds::clock::ManualClock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use crate::harness::{send_on, Answer, TestImds};

const LEAF: &str = "/latest/meta-data/instance-id";

/// The statuses of `n` GETs of a leaf, each on a new connection.
async fn statuses(imds: &TestImds, n: usize) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        statuses.push(imds.get(LEAF).await.status.as_u16());
    }
    statuses
}

/// The metrics text, read from the control API in-process.
async fn metrics(imds: &TestImds) -> String {
    let request = Request::get("/metrics")
        .body(Full::<Bytes>::default())
        .unwrap();
    let body = imds.control_api.handle(request).await.into_body();
    String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[tokio::test]
async fn an_instance_beyond_its_budget_gets_429_until_its_clock_moves_on() {
    let clock = Arc::new(ManualClock::at_millis(1_800_000_000_000));
    let imds = TestImds::setup()
        .toml("[instance.throttle]\nrequests_per_second = 3\n")
        .clock(clock.clone())
        .start()
        .await;
    assert_eq!(statuses(&imds, 5).await, [200, 200, 200, 429, 429]);

    let throttled = imds.put_token("21600").await;
    assert_eq!(
        throttled.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the PUT too"
    );
    assert_eq!(
        throttled.header_names(),
        [
            "connection",
            "content-length",
            "content-type",
            "date",
            "server"
        ],
        "IMDS' usual headers"
    );
    assert_eq!(throttled.header("server"), Some("EC2ws"));
    assert_eq!(throttled.header("content-length"), Some("0"));
    assert!(throttled.body.is_empty());

    clock.advance(Duration::from_millis(334));
    assert_eq!(
        statuses(&imds, 2).await,
        [200, 429],
        "one back a third of a second later"
    );
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        statuses(&imds, 4).await,
        [200, 200, 200, 429],
        "a second's worth after a long pause, not more"
    );

    let text = metrics(&imds).await;
    let instance = "i-0b4f7d2c9a1e83f56";
    for line in [
        format!("imds_throttled_total{{instance_id=\"{instance}\",reason=\"requests\"}} 5"),
        format!("imds_throttled_total{{instance_id=\"{instance}\",reason=\"connections\"}} 0"),
        "imds_requests_total{surface=\"guest\",version=\"v1\",route=\"meta_data\",status=\"429\"} 4"
            .to_owned(),
        "imds_requests_total{surface=\"guest\",version=\"v2\",route=\"token\",status=\"429\"} 1"
            .to_owned(),
    ] {
        assert!(has_line(&text, &line), "missing {line}\n{text}");
    }
}

#[tokio::test]
async fn the_server_wide_budget_applies_unless_the_instance_sets_its_own_and_zero_is_unlimited() {
    let clock = Arc::new(ManualClock::at_millis(1_800_000_000_000));
    let imds = TestImds::setup()
        .toml("[server]\ninstance_requests_per_second = 2\n")
        .clock(clock.clone())
        .start()
        .await;
    assert_eq!(statuses(&imds, 3).await, [200, 200, 429]);

    let clock = Arc::new(ManualClock::at_millis(1_800_000_000_000));
    let imds = TestImds::setup()
        .toml("[server]\ninstance_requests_per_second = 2\n[instance.throttle]\nrequests_per_second = 0\n")
        .clock(clock)
        .start()
        .await;
    assert!(statuses(&imds, 50).await.iter().all(|s| *s == 200));
}

#[tokio::test]
async fn a_connection_beyond_the_instance_cap_gets_429_and_is_closed_until_one_closes() {
    const SLOW: &str = "/latest/meta-data/ami-id";
    let imds = TestImds::setup()
        .toml(&format!(
            "[instance.throttle]\nmax_connections = 1\n\n[[instance.faults]]\npath = \"{SLOW}\"\nlatency_ms = 2000\n"
        ))
        .keep_alive()
        .start()
        .await;
    // One persistent connection holds the only slot, busy answering a slow request.
    let stream = TcpStream::connect(imds.addr).await.unwrap();
    let (mut held, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let holding = tokio::spawn(connection);
    let first = send_on(&mut held, imds.addr, Method::GET, LEAF, &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    let addr = imds.addr;
    let slow = tokio::spawn(async move {
        let answer = send_on(&mut held, addr, Method::GET, SLOW, &[]).await;
        (held, answer.status)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let refused = imds.get(LEAF).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.header("connection"), Some("close"));
    let (mut held, slow) = slow.await.unwrap();
    assert_eq!(
        slow,
        StatusCode::OK,
        "the busy connection was left to answer"
    );
    let again = send_on(&mut held, imds.addr, Method::GET, LEAF, &[]).await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "the held connection still works"
    );

    drop(held);
    holding.await.unwrap().unwrap();
    // The server counts the connection out as soon as it sees it closed.
    let mut answer = imds.get(LEAF).await;
    for _ in 0..200 {
        if answer.status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        answer = imds.get(LEAF).await;
    }
    assert_eq!(answer.status, StatusCode::OK, "the slot came back");
    let text = metrics(&imds).await;
    assert!(
        text.lines().any(|l| l.starts_with(
            "imds_throttled_total{instance_id=\"i-0b4f7d2c9a1e83f56\",reason=\"connections\"}"
        ) && !l.ends_with(" 0")),
        "{text}"
    );
}

/// Two instances in fleet mode, answering callers at 127.0.0.2 and 127.0.0.3.
fn fleet_toml(requests_per_second: u32) -> String {
    format!(
        "[server]\nfleet = true\ninstance_requests_per_second = {requests_per_second}\n{}{}",
        fleet_instance(2, ""),
        fleet_instance(3, "")
    )
}

/// Instance `n` of a fleet, answering callers at 127.0.0.`n`, with `more` (TOML tables of
/// the instance, such as `[instances.throttle]`).
fn fleet_instance(n: u32, more: &str) -> String {
    format!(
        r#"
[[instances]]
instance_id = "i-0000000000000000{n}"
[[instances.network_interfaces]]
mac = "0e:00:00:00:00:0{n}"
interface_id = "eni-0000000000000000{n}"
subnet_id = "subnet-0000000000000000{n}"
subnet_ipv4_cidr_block = "127.0.0.0/24"
vpc_id = "vpc-00000000000000001"
vpc_ipv4_cidr_blocks = ["127.0.0.0/16"]
private_ipv4s = ["127.0.0.{n}"]
security_groups = [{{ name = "default", id = "sg-0000000000000000{n}" }}]
{more}
"#
    )
}

/// A TCP connection to `imds` from `source`.
async fn tcp_from(source: IpAddr, imds: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    socket.connect(imds).await.unwrap()
}

/// A GET of `path` from `source` on a new connection.
async fn get_from(source: IpAddr, imds: SocketAddr, path: &str) -> Answer {
    let (mut sender, _) = client_from(source, imds).await;
    send_on(&mut sender, imds, Method::GET, path, &[]).await
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>;

/// An HTTP client connection from `source`; its task ends when the server closes it.
async fn client_from(source: IpAddr, imds: SocketAddr) -> (Sender, JoinHandle<bool>) {
    let stream = tcp_from(source, imds).await;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    (
        sender,
        tokio::spawn(async move { connection.await.is_ok() }),
    )
}

/// `n` keep-alive connections from `source` that each got one answer to a GET of `path` and
/// now sit idle, oldest first.
async fn idle_connections(
    n: usize,
    source: IpAddr,
    imds: SocketAddr,
    path: &str,
) -> Vec<(Sender, JoinHandle<bool>)> {
    let mut idle = Vec::with_capacity(n);
    for _ in 0..n {
        let (mut sender, closed) = client_from(source, imds).await;
        let answer = send_on(&mut sender, imds, Method::GET, path, &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        idle.push((sender, closed));
    }
    idle
}

/// How long a connection waits for its client before its instance's cap may evict it (imds
/// gives a client that has just connected this long to send its request).
const EVICTABLE_AFTER: Duration = Duration::from_millis(150);

/// Whether the server closes `closed`'s connection within a few seconds.
async fn closed_by_server(closed: &mut JoinHandle<bool>) -> bool {
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .is_ok()
}

/// The value of the metrics line starting with `series`.
fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

const EVICTED_AT_CAP: &str =
    "imds_connections_evicted_total{surface=\"guest\",reason=\"instance_cap\"}";

#[tokio::test]
async fn idle_keep_alive_connections_at_the_instance_cap_make_room_for_a_new_request() {
    // The default cap of 256 and a 30 s client deadline: only eviction can let a request in.
    let imds = TestImds::setup()
        .toml("[server]\nheader_read_timeout_ms = 30000\n")
        .keep_alive()
        .start()
        .await;
    let agent: IpAddr = "127.16.0.7".parse().unwrap();
    let mut idle = idle_connections(256, agent, imds.addr, LEAF).await;
    tokio::time::sleep(EVICTABLE_AFTER).await;

    let started = Instant::now();
    let answer = get_from(agent, imds.addr, LEAF).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "not locked out by its own idle connections"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        closed_by_server(&mut idle[0].1).await,
        "the oldest idle connection was closed"
    );
    for (sender, closed) in &idle[1..] {
        assert!(
            !closed.is_finished() && !sender.is_closed(),
            "the others stay"
        );
    }
    let (sender, _) = &mut idle[255];
    let again = send_on(sender, imds.addr, Method::GET, LEAF, &[]).await;
    assert_eq!(again.status, StatusCode::OK, "and still answer");

    let text = metrics(&imds).await;
    assert_eq!(value(&text, EVICTED_AT_CAP), 1);
    let instance = "i-0b4f7d2c9a1e83f56";
    assert_eq!(
        value(
            &text,
            &format!("imds_throttled_total{{instance_id=\"{instance}\",reason=\"connections\"}}")
        ),
        0
    );
}

#[tokio::test]
async fn connections_that_never_sent_a_whole_request_head_make_room_at_the_instance_cap() {
    let imds = TestImds::setup()
        .toml("[server]\nheader_read_timeout_ms = 30000\n\n[instance.throttle]\nmax_connections = 64\n")
        .keep_alive()
        .start()
        .await;
    let agent: IpAddr = "127.16.0.8".parse().unwrap();
    // Half say nothing, half send part of a request head.
    let mut silent = Vec::with_capacity(64);
    for i in 0..64 {
        let mut stream = tcp_from(agent, imds.addr).await;
        if i % 2 == 1 {
            stream
                .write_all(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.2")
                .await
                .unwrap();
        }
        silent.push(stream);
    }
    tokio::time::sleep(EVICTABLE_AFTER).await;

    // Two clients that keep their connections: each needs a slot of its own.
    let started = Instant::now();
    let mut kept = Vec::new();
    for n in 0..2 {
        let (mut sender, closed) = client_from(agent, imds.addr).await;
        let answer = send_on(&mut sender, imds.addr, Method::GET, LEAF, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "request {n}");
        kept.push((sender, closed));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The two oldest were closed: each reads the end of the stream, and nothing else.
    for stream in &mut silent[..2] {
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "closed without an answer: {read:?} {rest:?}"
        );
    }
    let mut byte = [0u8; 1];
    let still_open = tokio::time::timeout(Duration::from_millis(100), silent[2].read(&mut byte));
    assert!(still_open.await.is_err(), "the third waits on");
    assert_eq!(value(&metrics(&imds).await, EVICTED_AT_CAP), 2);
}

#[tokio::test]
async fn in_fleet_mode_only_the_instance_at_its_cap_loses_idle_connections_and_answering_ones_are_kept(
) {
    const CAP: usize = 8;
    let throttle = format!("[instances.throttle]\nmax_connections = {CAP}\n");
    // Instance 3's instance-id takes 3 s to answer: its connections are all answering.
    let slow = format!("{throttle}[[instances.faults]]\npath = \"{LEAF}\"\nlatency_ms = 3000\n");
    let toml = format!(
        "[server]\nfleet = true\nheader_read_timeout_ms = 30000\n{}{}",
        fleet_instance(2, &throttle),
        fleet_instance(3, &slow)
    );
    let imds = TestImds::setup().toml(&toml).keep_alive().start().await;
    let idle_guest: IpAddr = "127.0.0.2".parse().unwrap();
    let busy_guest: IpAddr = "127.0.0.3".parse().unwrap();

    // Instance 3 at its cap, every connection waiting for its answer.
    let addr = imds.addr;
    let answering: Vec<_> = (0..CAP)
        .map(|_| tokio::spawn(async move { get_from(busy_guest, addr, LEAF).await.status }))
        .collect();
    // Instance 2 at its cap, every connection idle.
    let mut idle = idle_connections(CAP, idle_guest, addr, "/latest/meta-data/").await;
    tokio::time::sleep(EVICTABLE_AFTER).await;
    let text = metrics(&imds).await;
    for n in 2..=3 {
        let series =
            format!("imds_instance_connections_open{{instance_id=\"i-0000000000000000{n}\"}}");
        assert_eq!(value(&text, &series), CAP as u64, "{series}");
    }

    let started = Instant::now();
    let refused = get_from(busy_guest, addr, "/latest/meta-data/").await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "no connection of its own to spare"
    );
    assert_eq!(refused.header("connection"), Some("close"));
    let answer = get_from(idle_guest, addr, "/latest/meta-data/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        closed_by_server(&mut idle[0].1).await,
        "its oldest idle one made room"
    );
    assert!(idle[1..].iter().all(|(_, closed)| !closed.is_finished()));

    for task in answering {
        assert_eq!(
            task.await.unwrap(),
            StatusCode::OK,
            "answering connections are kept"
        );
    }
    let text = metrics(&imds).await;
    assert_eq!(value(&text, EVICTED_AT_CAP), 1);
    assert_eq!(
        value(
            &text,
            "imds_throttled_total{instance_id=\"i-00000000000000003\",reason=\"connections\"}"
        ),
        1
    );
    assert_eq!(
        value(
            &text,
            "imds_throttled_total{instance_id=\"i-00000000000000002\",reason=\"connections\"}"
        ),
        0
    );
}

#[tokio::test]
async fn in_fleet_mode_one_guest_flooding_is_throttled_while_the_other_is_always_answered() {
    let imds = TestImds::setup().toml(&fleet_toml(50)).start().await;
    let noisy: IpAddr = "127.0.0.2".parse().unwrap();
    let quiet: IpAddr = "127.0.0.3".parse().unwrap();
    assert_eq!(
        get_from(quiet, imds.addr, LEAF).await.text(),
        "i-00000000000000003",
        "each caller is answered as the instance owning its address"
    );

    let addr = imds.addr;
    let flood: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..150 {
                    statuses.push(get_from(noisy, addr, LEAF).await.status.as_u16());
                }
                statuses
            })
        })
        .collect();
    let mut quiet_statuses = Vec::new();
    for _ in 0..40 {
        quiet_statuses.push(get_from(quiet, addr, LEAF).await.status.as_u16());
    }
    let mut noisy_statuses = Vec::new();
    for task in flood {
        noisy_statuses.extend(task.await.unwrap());
    }
    assert!(
        quiet_statuses.iter().all(|s| *s == 200),
        "{quiet_statuses:?}"
    );
    let throttled = noisy_statuses.iter().filter(|s| **s == 429).count();
    assert!(throttled > 0, "the flooding guest was throttled");
    assert_eq!(
        throttled + noisy_statuses.iter().filter(|s| **s == 200).count(),
        noisy_statuses.len(),
        "it got 200s within its budget and 429s beyond it, nothing else"
    );
    let text = metrics(&imds).await;
    assert!(has_line(
        &text,
        &format!(
            "imds_throttled_total{{instance_id=\"i-00000000000000002\",reason=\"requests\"}} {throttled}"
        )
    ));
    assert!(has_line(
        &text,
        "imds_throttled_total{instance_id=\"i-00000000000000003\",reason=\"requests\"} 0"
    ));
}

/// botocore (`tests/conformance/python/botocore_client.py`) resolving credentials and region
/// from `imds`, with `env`.
async fn botocore(imds: &TestImds, env: &[(&str, &str)]) -> Result<serde_json::Value, String> {
    use crate::conformance::{python, repo, run};
    let script = repo().join("tests/conformance/python/botocore_client.py");
    run(imds, &python(), &[script.to_str().unwrap()], env).await
}

#[tokio::test]
#[ignore = "needs the real SDK clients: run scripts/test"]
async fn botocore_on_a_spent_budget_falls_back_to_imdsv1_fails_without_waiting_and_succeeds_once_refilled(
) {
    let clock = Arc::new(ManualClock::at_millis(1_800_000_000_000));
    let imds = TestImds::setup()
        .toml("[instance.throttle]\nrequests_per_second = 10\n")
        .clock(clock.clone())
        .start()
        .await;
    // Another process on the instance spends the budget; the clock stands still.
    assert_eq!(statuses(&imds, 10).await, [200; 10]);

    let failed = botocore(&imds, &[]).await.unwrap_err();
    assert!(failed.contains("no credentials"), "{failed}");
    let text = metrics(&imds).await;
    for line in [
        // The PUT's 429 is to botocore what a timeout is: it goes on without a token...
        "imds_requests_total{surface=\"guest\",version=\"v2\",route=\"token\",status=\"429\"} 1",
        // ...and gives up on its one IMDSv1 attempt at the role name.
        "imds_requests_total{surface=\"guest\",version=\"v1\",route=\"credentials\",status=\"429\"} 1",
    ] {
        assert!(has_line(&text, line), "missing {line}\n{text}");
    }

    // More attempts follow each other at once: within the same spent second, all refused.
    let attempts = [("AWS_METADATA_SERVICE_NUM_ATTEMPTS", "3")];
    assert!(botocore(&imds, &attempts).await.is_err());

    // A second later the budget is back, and botocore gets the IMDSv2 credentials.
    clock.advance(Duration::from_secs(1));
    let got = botocore(&imds, &[]).await.unwrap();
    let served = crate::conformance::served_credentials(&imds).await;
    assert_eq!(got["access_key_id"], served["AccessKeyId"]);
    assert_eq!(got["region"], "us-east-1");
}

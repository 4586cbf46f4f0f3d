//! Clients that are slow, silent or many: the client deadline runs only while imds waits for
//! its client, injected latencies and silences last as long as asked, a trickling control body
//! is cut off, and a flood of idle or slowloris connections never keeps operators out.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use imds::server::Surface;

use crate::harness::TestImds;
use crate::process::{exchange, Served, IMDS};

const ID: &str = "/latest/meta-data/instance-id";

/// A config whose client deadline is 200 ms, with `faults` (TOML) on the instance-id path.
fn short_deadline_with(fault: &str) -> String {
    format!(
        "[server]\nheader_read_timeout_ms = 200\n\n[[instance.faults]]\npath = \"{ID}\"\n{fault}\n"
    )
}

/// Sends a GET for `path` on a new connection; the stream, ready to read the answer.
fn send_get(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    stream
}

fn open_guest_connections(imds: &TestImds) -> u64 {
    let text = imds.api.metrics().render(&imds.state.instances());
    let line = text
        .lines()
        .find(|l| l.starts_with("imds_connections_open{surface=\"guest\"}"))
        .expect("the gauge is rendered");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_latency_longer_than_the_client_deadline_still_delivers_its_answer() {
    let imds = TestImds::setup()
        .toml(&short_deadline_with("latency_ms = 700"))
        .start()
        .await;
    let addr = imds.addr;
    let (took, answer) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut stream = send_get(addr, ID);
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        (started.elapsed(), answer)
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer:?}");
    assert!(answer.ends_with("i-0b4f7d2c9a1e83f56"), "{answer:?}");
    assert!(took >= Duration::from_millis(700), "{took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_fault_keeps_the_connection_open_until_the_client_gives_up() {
    let imds = TestImds::setup()
        .toml(&short_deadline_with("no_answer = true"))
        .start()
        .await;
    let addr = imds.addr;
    let stream = tokio::task::spawn_blocking(move || {
        let mut stream = send_get(addr, ID);
        // Four client deadlines: the server must neither answer nor hang up.
        stream
            .set_read_timeout(Some(Duration::from_millis(800)))
            .unwrap();
        let mut byte = [0u8; 1];
        let error = stream.read(&mut byte).expect_err("no answer, no close");
        assert!(
            matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{error:?}"
        );
        stream
    })
    .await
    .unwrap();
    assert_eq!(open_guest_connections(&imds), 1);
    drop(stream);
    // The client gave up: the server lets the connection go (polled for at most 5 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_guest_connections(&imds) != 0 {
        assert!(Instant::now() < deadline, "the connection is still held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `imds serve` with control keys, a control listener of `slots` connections and a 30 s client
/// deadline (so only eviction can let a new client in quickly).
fn serve_with_keys(dir: &tempfile::TempDir, slots: usize) -> Served {
    let config = dir.path().join("imds.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nheader_read_timeout_ms = 30000\ncontrol_max_connections = {slots}\n\n[control]\naccess_key_id = \"AKIAIMDSCONTROLTEST1\"\nsecret_access_key = \"imds-control-test-secret-key-0123456789ab\"\n"
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new(IMDS);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config);
    Served::spawn(command)
}

/// `imds ctl describe`, signed with the test keys: whether it succeeded, and how long it took.
fn signed_describe(served: &Served) -> (bool, Duration) {
    let started = Instant::now();
    let output = std::process::Command::new(IMDS)
        .args(["ctl", "--endpoint", &served.control[0], "describe"])
        .env("IMDS_CONTROL_ACCESS_KEY_ID", "AKIAIMDSCONTROLTEST1")
        .env(
            "IMDS_CONTROL_SECRET_ACCESS_KEY",
            "imds-control-test-secret-key-0123456789ab",
        )
        .output()
        .unwrap();
    let ok = output.status.success()
        && String::from_utf8_lossy(&output.stdout).contains("i-0b4f7d2c9a1e83f56");
    (ok, started.elapsed())
}

fn open_descriptors(served: &Served) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", served.child.id()))
        .unwrap()
        .count()
}

#[test]
fn a_signed_control_request_gets_through_a_thousand_idle_and_slowloris_connections() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve_with_keys(&dir, 64);
    let control = served.control[0].trim_start_matches("http://").to_owned();
    let (ok, _) = signed_describe(&served);
    assert!(ok, "the control API answers signed requests");
    let before = open_descriptors(&served);

    // 700 clients that connect and say nothing, 300 that send half a request head.
    let mut flood = Vec::with_capacity(1000);
    for i in 0..1000 {
        let mut stream = TcpStream::connect(&control).unwrap();
        if i % 10 >= 7 {
            let _ = stream.write_all(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le");
        }
        flood.push(stream);
    }
    let (ok, took) = signed_describe(&served);
    assert!(ok, "a signed request still succeeds");
    // The 30 s client deadline cannot explain a prompt answer: the idle ones made room.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let during = open_descriptors(&served);
    assert!(
        during <= before + 64,
        "{during} descriptors open, {before} before the flood, 64 control slots"
    );
    let (status, metrics) = exchange(
        &served.control[0],
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 200);
    let evicted = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "imds_connections_evicted_total{surface=\"control\",reason=\"server_full\"} ",
            )
        })
        .map(|n| n.parse::<u64>().unwrap())
        .unwrap();
    assert!(evicted > 0, "{metrics}");
    drop(flood);
}

#[test]
fn a_control_body_that_trickles_in_is_cut_off_at_the_client_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("imds.toml");
    std::fs::write(&config, "[server]\nheader_read_timeout_ms = 300\n").unwrap();
    let mut command = std::process::Command::new(IMDS);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config);
    let served = Served::spawn(command);
    let control = served.control[0].trim_start_matches("http://");
    let mut stream = TcpStream::connect(control).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: {control}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nAction=Desc"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert!(answer.contains("did not arrive whole"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

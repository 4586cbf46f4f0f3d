//! Connection behaviour: close vs keep-alive, IPv6, request limits, shutdown.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{send_on, TestImds};

async fn raw_exchange(imds: &TestImds, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(imds.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("server closes the connection")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn by_default_the_server_closes_after_each_answer() {
    let imds = TestImds::start().await;
    let answer = raw_exchange(
        &imds,
        b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer
        .to_ascii_lowercase()
        .contains("\r\nconnection: close\r\n"));
    assert!(answer.ends_with("\r\n\r\ni-0b4f7d2c9a1e83f56"));
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let imds = TestImds::setup().keep_alive().start().await;
    let stream = TcpStream::connect(imds.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let put = send_on(
        &mut sender,
        imds.addr,
        Method::PUT,
        "/latest/api/token",
        &[("x-aws-ec2-metadata-token-ttl-seconds", "60")],
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    for _ in 0..5 {
        let answer = send_on(
            &mut sender,
            imds.addr,
            Method::GET,
            "/latest/meta-data/instance-id",
            &[("x-aws-ec2-metadata-token", put.text())],
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("connection"), None);
    }
}

#[tokio::test]
async fn ipv6_loopback_is_served() {
    let imds = TestImds::setup().ipv6().start().await;
    assert!(imds.addr.is_ipv6());
    let token = imds.token(60).await;
    assert_eq!(
        imds.get_with_token("/latest/meta-data/instance-id", &token)
            .await
            .text(),
        "i-0b4f7d2c9a1e83f56"
    );
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let imds = TestImds::start().await;
    let huge = format!(
        "GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = raw_exchange(&imds, huge.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(80)]
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let imds = TestImds::setup()
        .toml("[server]\nheader_read_timeout_ms = 300\n")
        .start()
        .await;
    let mut stream = TcpStream::connect(imds.addr).await.unwrap();
    stream
        .write_all(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer)).await;
    assert!(closed.is_ok(), "connection still open after 5 s");
}

#[tokio::test]
async fn garbage_gets_a_400_and_the_server_keeps_serving() {
    let imds = TestImds::start().await;
    let answer = raw_exchange(&imds, b"\x00\x01NOT HTTP AT ALL\r\n\r\n").await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    assert_eq!(
        imds.get("/latest/meta-data/instance-id").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn shutdown_lets_idle_keep_alive_connections_go_and_finishes() {
    let imds = TestImds::setup().keep_alive().start().await;
    let stream = TcpStream::connect(imds.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let answer = send_on(
        &mut sender,
        imds.addr,
        Method::GET,
        "/latest/meta-data/instance-id",
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(3), imds.stop())
        .await
        .expect("shutdown finishes promptly");
    let ended = tokio::time::timeout(Duration::from_secs(3), connection).await;
    assert!(
        ended.is_ok(),
        "the idle connection was closed by the server"
    );
}

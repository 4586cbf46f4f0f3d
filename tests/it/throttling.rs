//! Per-instance throttling: 429 beyond an instance's requests per second or its simultaneous
//! connections, recovery as its clock moves, and in fleet mode one flooding guest leaving the
//! others' requests untouched.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use imds::clock::ManualClock;
use tokio::net::{TcpSocket, TcpStream};

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
    let imds = TestImds::setup()
        .toml("[instance.throttle]\nmax_connections = 1\n")
        .keep_alive()
        .start()
        .await;
    // One persistent connection holds the only slot.
    let stream = TcpStream::connect(imds.addr).await.unwrap();
    let (mut held, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let holding = tokio::spawn(connection);
    let first = send_on(&mut held, imds.addr, Method::GET, LEAF, &[]).await;
    assert_eq!(first.status, StatusCode::OK);

    let refused = imds.get(LEAF).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.header("connection"), Some("close"));
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
    let instance = |n: u32| {
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
"#
        )
    };
    format!(
        "[server]\nfleet = true\ninstance_requests_per_second = {requests_per_second}\n{}{}",
        instance(2),
        instance(3)
    )
}

/// A GET of `path` from `source` on a new connection.
async fn get_from(source: IpAddr, imds: SocketAddr, path: &str) -> Answer {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let stream = socket.connect(imds).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    send_on(&mut sender, imds, Method::GET, path, &[]).await
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

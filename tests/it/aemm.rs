//! AEMM compatibility: imds invoked as `ec2-metadata-mock` (a symlink) or as `imds aemm`, with
//! AEMM's commands, flags, `AEMM_*` environment and JSON config file. The delays are watched
//! on a server in this process, built from AEMM's settings the way `imds aemm` builds it, with
//! an injected clock; the processes show that flags and environment reach the server.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use http::StatusCode;
use imds::app::aemm::cli::AemmCli;
use imds::clock::{Clock, ManualClock};

use crate::harness::TestImds;
use crate::process::{Served, IMDS};

const M: &str = "/latest/meta-data";
/// 2026-11-02T08:14:29Z, the default instance's launch.
const START: u64 = 1_793_607_269_000;

/// The binary under the name `ec2-metadata-mock`, through a symlink in `dir`.
fn symlinked(dir: &tempfile::TempDir) -> PathBuf {
    let link = dir.path().join("ec2-metadata-mock");
    std::os::unix::fs::symlink(IMDS, &link).unwrap();
    link
}

/// `command` with a clean AEMM environment, a free port on loopback (unless the arguments say
/// otherwise) and a free control port.
fn start(mut command: Command, dir: &tempfile::TempDir) -> Served {
    command.env("HOME", dir.path());
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("AEMM_")) {
        command.env_remove(name);
    }
    Served::spawn(command)
}

/// A GET from `source` (an address to bind the client to, or any): status and body.
fn get_from(served: &Served, source: Option<IpAddr>, path: &str, headers: &str) -> (u16, String) {
    let port: u16 = served.endpoints[0]
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (stream, host) = match source {
        Some(source) => {
            let target = SocketAddr::new(source, port);
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(target),
                socket2::Type::STREAM,
                None,
            )
            .unwrap();
            socket.bind(&SocketAddr::new(source, 0).into()).unwrap();
            socket.connect(&target.into()).unwrap();
            (TcpStream::from(socket), target.to_string())
        }
        None => {
            let addr = served.endpoints[0].trim_start_matches("http://").to_owned();
            (TcpStream::connect(&addr).unwrap(), addr)
        }
    };
    let mut stream = stream;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (answer[9..12].parse().unwrap(), body.unwrap_or_default())
}

fn get(served: &Served, path: &str) -> (u16, String) {
    get_from(served, None, &format!("{M}/{path}"), "")
}

#[test]
fn invoked_as_ec2_metadata_mock_the_spot_command_serves_the_spot_notice_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(symlinked(&dir));
    command.args([
        "spot",
        "-a",
        "stop",
        "-t",
        "2030-01-02T03:04:05Z",
        "-n",
        "127.0.0.1",
        "-p",
        "0",
    ]);
    let served = start(command, &dir);
    assert_eq!(
        get(&served, "spot/instance-action").1,
        "{\"action\": \"stop\", \"time\": \"2030-01-02T03:04:05Z\"}"
    );
    assert_eq!(
        get(&served, "spot/termination-time").0,
        404,
        "only for terminate"
    );
    let rebalance = get(&served, "events/recommendations/rebalance");
    assert_eq!(rebalance.0, 200);
    assert_eq!(get(&served, "events/maintenance/scheduled").1, "[]");
    assert_eq!(get(&served, "autoscaling/target-lifecycle-state").0, 404);
    assert_eq!(get(&served, "instance-life-cycle").1, "spot");
}

/// `imds aemm ARGS` with the environment `env`, served in this process on `clock`: the
/// configuration is planned from the settings as `imds aemm` plans it, for a start read from the
/// clock.
async fn aemm_in_process(args: &[&str], env: &[(&str, &str)], clock: Arc<ManualClock>) -> TestImds {
    let dir = tempfile::tempdir().unwrap();
    // An empty config file, so no $HOME/aemm-config.json is read.
    let file = dir.path().join("aemm-config.json");
    std::fs::write(&file, "{}").unwrap();
    let cli = AemmCli::parse_from(
        ["ec2-metadata-mock", "-c", file.to_str().unwrap()]
            .iter()
            .chain(args),
    );
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    let loaded = imds::app::aemm::plan(&cli, &env, clock.now_millis()).unwrap();
    TestImds::setup().loaded(loaded).clock(clock).start().await
}

#[tokio::test]
async fn imds_aemm_without_a_command_serves_every_mock_after_its_delay_from_the_start() {
    let clock = Arc::new(ManualClock::at_millis(START));
    let imds = aemm_in_process(
        &["-x", "-1", "--rebalance-delay-sec", "1"],
        &[
            ("AEMM_MOCK_DELAY_SEC", "3"),
            ("AEMM_EVENTS_CODE", "instance-stop"),
            ("AEMM_ASG_TERMINATION_DELAY_SEC", "5"),
        ],
        clock.clone(),
    )
    .await;
    let get = |path: &'static str| {
        let imds = &imds;
        async move { imds.get(&format!("{M}/{path}")).await }
    };
    assert_eq!(
        get("spot/instance-action").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("events/recommendations/rebalance").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get("events/maintenance/scheduled").await.text(), "[]");
    assert_eq!(
        get("autoscaling/target-lifecycle-state").await.text(),
        "InService"
    );
    // --rebalance-delay-sec 1.
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        get("events/recommendations/rebalance").await.text(),
        "{\"noticeTime\": \"2026-11-02T08:14:30Z\"}"
    );
    // AEMM_MOCK_DELAY_SEC=3: the notice (two minutes ahead of its action) and the event.
    clock.advance(Duration::from_millis(1_999));
    assert_eq!(
        get("spot/instance-action").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get("events/maintenance/scheduled").await.text(), "[]");
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        get("spot/instance-action").await.text(),
        "{\"action\": \"terminate\", \"time\": \"2026-11-02T08:16:32Z\"}"
    );
    assert_eq!(
        get("spot/termination-time").await.text(),
        "2026-11-02T08:16:32Z"
    );
    let scheduled = get("events/maintenance/scheduled").await;
    let scheduled = scheduled.text();
    assert!(
        scheduled.contains("\"Code\" : \"instance-stop\""),
        "{scheduled}"
    );
    assert!(scheduled.contains("\"State\" : \"active\""), "{scheduled}");
    assert!(
        scheduled.contains("\"NotBefore\" : \"02 Nov 2026 08:14:29 GMT\""),
        "NotBefore defaults to the start: {scheduled}"
    );
    // AEMM_ASG_TERMINATION_DELAY_SEC=5.
    clock.advance(Duration::from_millis(1_999));
    assert_eq!(
        get("autoscaling/target-lifecycle-state").await.text(),
        "InService"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        get("autoscaling/target-lifecycle-state").await.text(),
        "Terminated"
    );
}

#[test]
fn imds_aemm_without_a_command_takes_its_delays_from_flags_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(IMDS);
    command
        .args(["aemm", "-n", "127.0.0.1", "-p", "0", "-x", "-1"])
        .args(["--rebalance-delay-sec", "3600"])
        .env("AEMM_MOCK_DELAY_SEC", "0")
        .env("AEMM_EVENTS_CODE", "instance-stop")
        .env("AEMM_ASG_TERMINATION_DELAY_SEC", "3600");
    let served = start(command, &dir);
    // A zero delay shows at once; an hour's does not (the delays are watched in
    // `imds_aemm_without_a_command_serves_every_mock_after_its_delay_from_the_start`).
    let (status, notice) = get(&served, "spot/instance-action");
    assert_eq!(status, 200);
    assert!(notice.contains("\"terminate\""), "{notice}");
    assert_eq!(get(&served, "spot/termination-time").0, 200);
    let scheduled = get(&served, "events/maintenance/scheduled").1;
    assert!(
        scheduled.contains("\"Code\" : \"instance-stop\""),
        "{scheduled}"
    );
    assert!(scheduled.contains("\"State\" : \"active\""), "{scheduled}");
    assert!(scheduled.contains(" GMT\""), "{scheduled}");
    assert_eq!(get(&served, "events/recommendations/rebalance").0, 404);
    assert_eq!(
        get(&served, "autoscaling/target-lifecycle-state").1,
        "InService"
    );
}

#[test]
fn flags_beat_the_environment_which_beats_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aemm-config.json");
    std::fs::write(
        &file,
        r#"{
          "metadata": {"values": {"instance-id": "i-0123456789abcdef0", "instance-type": "c5.9xlarge",
                                  "event-id": "instance-event-0123456789abcdef0"}},
          "userdata": {"values": {"userdata": "IyEvYmluL2Jhc2gKZWNobyBoZWxsbwo="}},
          "spot": {"action": "terminate"},
          "events": {"code": "system-maintenance", "state": "canceled"},
          "imdsv2": false,
          "server": {"port": "1"}
        }"#,
    )
    .unwrap();
    let mut command = Command::new(symlinked(&dir));
    command
        .args([
            "-c",
            file.to_str().unwrap(),
            "-n",
            "127.0.0.1",
            "-p",
            "0",
            "-I",
        ])
        .env("AEMM_SPOT_ACTION", "hibernate")
        .env("AEMM_SERVER_PORT", "2")
        .env("AEMM_METADATA_VALUES_INSTANCE_TYPE", "m6i.large");
    let served = start(command, &dir);
    // -I: IMDSv2 only.
    assert_eq!(get(&served, "instance-id").0, 401);
    let addr = served.endpoints[0].trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "PUT /latest/api/token HTTP/1.1\r\nHost: {addr}\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let token = answer.split_once("\r\n\r\n").unwrap().1.to_owned();
    let header = format!("X-aws-ec2-metadata-token: {token}\r\n");
    let get = |path: &str| get_from(&served, None, path, &header);
    assert_eq!(get(&format!("{M}/instance-id")).1, "i-0123456789abcdef0");
    assert_eq!(
        get(&format!("{M}/instance-type")).1,
        "m6i.large",
        "env over file"
    );
    assert_eq!(get("/latest/user-data").1, "#!/bin/bash\necho hello\n");
    let notice = get(&format!("{M}/spot/instance-action")).1;
    assert!(notice.contains("\"hibernate\""), "env over file: {notice}");
    // A canceled event is in the history, as on EC2.
    let history = get(&format!("{M}/events/maintenance/history")).1;
    assert!(
        history.contains("instance-event-0123456789abcdef0"),
        "{history}"
    );
    assert!(history.contains("[Canceled] "), "{history}");
    let document = get("/latest/dynamic/instance-identity/document").1;
    assert!(
        document.contains("\"instanceId\" : \"i-0123456789abcdef0\""),
        "{document}"
    );
}

#[test]
fn only_the_first_clients_see_events_and_ipv6_clients_count_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(IMDS);
    command.args(["aemm", "-n", "::", "-p", "0", "-x", "2"]);
    let served = start(command, &dir);
    let v4: IpAddr = "127.0.0.1".parse().unwrap();
    let v4b: IpAddr = "127.0.0.2".parse().unwrap();
    let v6: IpAddr = "::1".parse().unwrap();
    let spot = format!("{M}/spot/instance-action");
    // Asking for anything else admits no one.
    assert_eq!(
        get_from(&served, Some(v6), &format!("{M}/ami-id"), "").0,
        200
    );
    assert_eq!(get_from(&served, Some(v6), &spot, "").0, 200);
    assert_eq!(get_from(&served, Some(v4), &spot, "").0, 200);
    assert_eq!(
        get_from(&served, Some(v4b), &spot, "").0,
        404,
        "a third address"
    );
    let other = get_from(
        &served,
        Some(v4b),
        &format!("{M}/autoscaling/target-lifecycle-state"),
        "",
    );
    assert_eq!(other.0, 404);
    assert_eq!(
        get_from(&served, Some(v6), &spot, "").0,
        200,
        "admitted for good"
    );
    let listing = get_from(&served, Some(v4b), &format!("{M}/"), "").1;
    assert!(!listing.contains("spot/"), "{listing}");
}

#[test]
fn bad_aemm_values_are_refused_with_the_key_and_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(symlinked(&dir))
        .args(["events", "-p", "0"])
        .env("HOME", dir.path())
        .env("AEMM_EVENTS_CODE", "reboot-now")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("events.code") && stderr.contains("AEMM_EVENTS_CODE"),
        "{stderr}"
    );
}

#[test]
fn two_mocks_on_their_own_ports_start_side_by_side_without_a_control_api() {
    let dir = tempfile::tempdir().unwrap();
    let mock = || {
        let mut command = Command::new(symlinked_once(&dir));
        command
            .args(["-n", "127.0.0.1", "-p", "0"])
            // As a test suite starts them: nothing about imds' own control listener.
            .env_remove("IMDS_CONTROL_LISTEN");
        start(command, &dir)
    };
    let first = mock();
    let second = mock();
    for served in [&first, &second] {
        assert!(served.control.is_empty(), "AEMM has no control API");
        assert_eq!(get(served, "instance-id").0, 200);
    }
    assert_ne!(first.endpoints, second.endpoints);
}

/// The `ec2-metadata-mock` symlink in `dir`, made on first use.
fn symlinked_once(dir: &tempfile::TempDir) -> PathBuf {
    let link = dir.path().join("ec2-metadata-mock");
    if !link.exists() {
        return symlinked(dir);
    }
    link
}

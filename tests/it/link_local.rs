//! `imds serve --link-local` in a network namespace of its own: EC2's addresses appear, answer,
//! and disappear again at SIGTERM; a leftover from a killed run is replaced at the next start.
//! Needs root, iproute2 and curl (scripts/test runs it where it can).

use std::process::Command;

use crate::netns::Namespaces;
use crate::process::IMDS;

const V4: &str = "http://169.254.169.254/latest/meta-data/instance-id";
const V6: &str = "http://[fd00:ec2::254]/latest/meta-data/instance-id";

fn ipv6_config() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v6.toml");
    std::fs::write(
        &path,
        "[instance.metadata_options]\nhttp_protocol_ipv6 = \"enabled\"\n",
    )
    .unwrap();
    let path = path.to_str().unwrap().to_owned();
    (dir, path)
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it where it can"]
fn link_local_addresses_are_served_and_removed_at_exit() {
    let ns = Namespaces::new("l", &["host"]);
    let (_dir, config) = ipv6_config();
    let imds = ns.serve(
        "host",
        &[
            "--link-local",
            "--config",
            &config,
            "--listen",
            "127.0.0.1:0",
        ],
    );
    assert!(
        imds.endpoints
            .contains(&"http://169.254.169.254:80".to_owned()),
        "{:?}",
        imds.endpoints
    );
    assert!(
        imds.endpoints
            .contains(&"http://[fd00:ec2::254]:80".to_owned()),
        "{:?}",
        imds.endpoints
    );
    for url in [V4, V6] {
        assert_eq!(
            ns.curl("host", "GET", url),
            Some((200, "i-0b4f7d2c9a1e83f56".to_owned())),
            "{url}"
        );
    }
    let (status, stderr) = imds.stop("TERM");
    assert!(status.success(), "{stderr}");
    let left = ns.addresses("host");
    assert!(
        !left.contains("169.254.169.254") && !left.contains("fd00:ec2::254"),
        "{left}"
    );
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it where it can"]
fn only_ipv4_without_http_protocol_ipv6() {
    let ns = Namespaces::new("4", &["host"]);
    let imds = ns.serve("host", &["--link-local", "--listen", "127.0.0.1:0"]);
    assert_eq!(imds.endpoints.len(), 2, "{:?}", imds.endpoints);
    assert!(!ns.addresses("host").contains("fd00:ec2::254"));
    assert_eq!(ns.curl("host", "GET", V4).map(|a| a.0), Some(200));
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it where it can"]
fn a_killed_run_leaves_addresses_that_the_next_start_replaces() {
    let ns = Namespaces::new("k", &["host"]);
    let (_dir, config) = ipv6_config();
    let args = [
        "--link-local",
        "--config",
        &config,
        "--listen",
        "127.0.0.1:0",
    ];
    let (_, _) = ns.serve("host", &args).stop("KILL");
    assert!(
        ns.addresses("host").contains("169.254.169.254"),
        "kill -9 leaves the address behind"
    );
    let imds = ns.serve("host", &args);
    assert_eq!(ns.curl("host", "GET", V4).map(|a| a.0), Some(200));
    assert_eq!(ns.curl("host", "GET", V6).map(|a| a.0), Some(200));
    let (status, stderr) = imds.stop("TERM");
    assert!(status.success());
    assert!(
        stderr.contains("did not stop cleanly"),
        "the leftover was reported:\n{stderr}"
    );
    assert!(!ns.addresses("host").contains("169.254.169.254"));
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it where it can"]
fn without_root_link_local_fails_with_one_clear_line() {
    let ns = Namespaces::new("u", &["host"]);
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name("host"),
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .args([IMDS, "serve", "--link-local", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("needs root") && stderr.contains("imds link-local --print-rules"),
        "{stderr}"
    );
    assert!(!ns.addresses("host").contains("169.254.169.254"));
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it where it can"]
fn reloading_http_protocol_ipv6_opens_and_closes_the_ipv6_endpoint() {
    let ns = Namespaces::new("r", &["host"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("i.toml");
    let ipv6 = |state: &str| {
        let text = format!("[instance.metadata_options]\nhttp_protocol_ipv6 = \"{state}\"\n");
        std::fs::write(&file, text).unwrap();
    };
    ipv6("disabled");
    let imds = ns.serve(
        "host",
        &[
            "--link-local",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let hangup = || imds.signal("HUP");
    let eventually = |want: bool| ipv6_endpoint_becomes(&ns, want);
    assert!(!ns.addresses("host").contains("fd00:ec2::254"));
    ipv6("enabled");
    hangup();
    eventually(true);
    ipv6("disabled");
    hangup();
    eventually(false);
    assert_eq!(
        ns.curl("host", "GET", V4).map(|a| a.0),
        Some(200),
        "IPv4 stays up"
    );
    let (status, _) = imds.stop("TERM");
    assert!(status.success());
    assert!(!ns.addresses("host").contains("169.254.169.254"));
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it where it can"]
fn a_control_change_of_http_protocol_ipv6_opens_and_closes_the_ipv6_endpoint() {
    let ns = Namespaces::new("c", &["host"]);
    let imds = ns.serve("host", &["--link-local", "--listen", "127.0.0.1:0"]);
    let ctl = |state: &str| {
        let output = Command::new("ip")
            .args(["netns", "exec", &ns.name("host"), IMDS, "ctl", "--endpoint"])
            .arg(&imds.control[0])
            .args(["options", "--http-protocol-ipv6", state])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "imds ctl: {stderr}");
    };
    assert!(!ns.addresses("host").contains("fd00:ec2::254"));
    ctl("enabled");
    ipv6_endpoint_becomes(&ns, true);
    ctl("disabled");
    ipv6_endpoint_becomes(&ns, false);
    let (status, _) = imds.stop("TERM");
    assert!(status.success());
}

/// Waits (at most 5 s) until the link-local IPv6 endpoint in `ns`'s `host` is served, or gone.
fn ipv6_endpoint_becomes(ns: &Namespaces, want: bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let served = ns.addresses("host").contains("fd00:ec2::254")
            && ns
                .try_curl("host", "GET", V6)
                .is_ok_and(|a| a.is_some_and(|a| a.0 == 200));
        if served == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "IPv6 endpoint still {}",
            if want { "closed" } else { "open" }
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

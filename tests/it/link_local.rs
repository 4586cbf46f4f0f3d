//! `imds serve --link-local` in a network namespace of its own: EC2's addresses appear, answer,
//! and disappear again at SIGTERM; a leftover from a killed run is replaced at the next start.
//! Needs root, iproute2 and curl (scripts/test runs it where it can).

use std::process::Command;

use crate::netns::{Namespaces, IMDS};

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
    let (status, stderr) = imds.signal("TERM");
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
    let (_, _) = ns.serve("host", &args).signal("KILL");
    assert!(
        ns.addresses("host").contains("169.254.169.254"),
        "kill -9 leaves the address behind"
    );
    let imds = ns.serve("host", &args);
    assert_eq!(ns.curl("host", "GET", V4).map(|a| a.0), Some(200));
    assert_eq!(ns.curl("host", "GET", V6).map(|a| a.0), Some(200));
    let (status, stderr) = imds.signal("TERM");
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

//! `imds serve --access-log FILE`: a JSON line per request, naming the local process behind each
//! IMDSv1 request, and never a token or a credential.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::{Served, IMDS};

const INSTANCE: &str = "i-0b4f7d2c9a1e83f56";
const ROLE_PATH: &str = "/latest/meta-data/iam/security-credentials/imds-default-role";
/// An argument that marks the test's client processes in their command lines.
const MARKER: &str = "imds-access-log-test-client";

/// A Python client making the requests an SDK makes (each on its own connection, as urllib
/// sends `Connection: close`): token PUT, v2 GET, v1 GET, v1 and v2 role credentials. Prints the
/// token and both secret keys.
const CLIENT: &str = r#"
import json, sys, urllib.request
url = sys.argv[1]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def call(path, method="GET", headers={}):
    with opener.open(urllib.request.Request(url + path, method=method, headers=headers)) as r:
        return r.read().decode()
token = call("/latest/api/token", "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
v2 = {"X-aws-ec2-metadata-token": token}
call("/latest/meta-data/instance-id", headers=v2)
call("/latest/meta-data/instance-id")
v1_secret = json.loads(call(sys.argv[2]))["SecretAccessKey"]
v2_secret = json.loads(call(sys.argv[2], headers=v2))["SecretAccessKey"]
print(token, v1_secret, v2_secret)
"#;

fn serve(log: &Path, args: &[&str]) -> Served {
    let mut command = Command::new(IMDS);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--access-log"])
        .arg(log)
        .args(args)
        .env_remove("IMDS_HTTP_TOKENS");
    Served::spawn(command)
}

/// The log's lines once it has at least `count` (waiting at most 10 s), each parsed.
fn lines(log: &Path, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().count() >= count {
            return text
                .lines()
                .map(|line| serde_json::from_str(line).expect("a JSON line"))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{} lines in the access log, wanted {count}:\n{text}",
            text.lines().count()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `2026-11-02T08:14:29.123Z`, within a minute of now.
fn is_recent_rfc3339_millis_utc(time: &str) -> bool {
    let format = &time::format_description::well_known::Rfc3339;
    let Ok(parsed) = time::OffsetDateTime::parse(time, format) else {
        return false;
    };
    let age = time::OffsetDateTime::now_utc() - parsed;
    time.len() == 24 && time.ends_with('Z') && age.whole_seconds().abs() < 60
}

#[test]
fn access_log_names_each_request_and_the_imdsv1_callers_process() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let served = serve(&log, &[]);
    let endpoint = &served.endpoints[0];
    let script = dir.path().join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let client = Command::new("python3")
        .arg(&script)
        .args([endpoint, ROLE_PATH, MARKER])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = client.id();
    let output = client.wait_with_output().unwrap();
    assert!(output.status.success(), "the Python client failed");
    let printed = String::from_utf8(output.stdout).unwrap();
    let secrets: Vec<&str> = printed.split_whitespace().collect();
    assert_eq!(secrets.len(), 3, "{printed}");

    let lines = lines(&log, 5);
    let expected = [
        ("PUT", "/latest/api/token", "v2"),
        ("GET", "/latest/meta-data/instance-id", "v2"),
        ("GET", "/latest/meta-data/instance-id", "v1"),
        ("GET", ROLE_PATH, "v1"),
        ("GET", ROLE_PATH, "v2"),
    ];
    assert_eq!(lines.len(), expected.len());
    let host = endpoint.trim_start_matches("http://");
    for (line, (method, path, version)) in lines.iter().zip(expected) {
        assert_eq!(line["method"], method, "{line}");
        assert_eq!(line["path"], path, "{line}");
        assert_eq!(line["version"], version, "{line}");
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["instance"], INSTANCE, "{line}");
        assert!(line["latency_us"].is_u64(), "{line}");
        let time = line["time"].as_str().unwrap();
        assert!(is_recent_rfc3339_millis_utc(time), "{line}");
        let peer = line["peer"].as_str().unwrap();
        assert!(peer.starts_with("127.0.0.1:") && peer != host, "{line}");
        match version {
            "v1" => {
                assert_eq!(line["pid"], pid, "the v1 caller's pid: {line}");
                let cmdline = line["cmdline"].as_str().unwrap();
                assert!(
                    cmdline.contains("python3") && cmdline.contains("client.py"),
                    "{line}"
                );
                assert!(cmdline.ends_with(MARKER), "{line}");
            }
            _ => {
                let keys = line.as_object().unwrap();
                assert!(!keys.contains_key("pid") && !keys.contains_key("cmdline"));
            }
        }
    }
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in secrets {
        assert!(!text.contains(secret), "a token or secret leaked: {text}");
    }
    for credential_field in ["ASIA", "SecretAccessKey", "Token\"", "AccessKeyId"] {
        assert!(
            !text.contains(credential_field),
            "{credential_field}: {text}"
        );
    }
    let (status, stderr) = served.stop("TERM");
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn keep_alive_imdsv1_callers_are_named_on_every_request_of_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let served = serve(&log, &["--keep-alive", "--http-tokens", "required"]);
    let url = format!("{}/latest/meta-data/ami-id", served.endpoints[0]);
    let curl = Command::new("curl")
        .args(["-s", "--noproxy", "*", "-o", "/dev/null", &url, &url])
        .args(["-H", &format!("X-Marker: {MARKER}")])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = curl.id();
    assert!(curl.wait_with_output().unwrap().status.success());
    let lines = lines(&log, 2);
    assert_eq!(lines[0]["peer"], lines[1]["peer"], "one connection");
    for line in &lines {
        assert_eq!(line["status"], 401, "{line}");
        assert_eq!(line["version"], "v1", "{line}");
        assert_eq!(line["pid"], pid, "{line}");
        let cmdline = line["cmdline"].as_str().unwrap();
        assert!(
            cmdline.starts_with("curl ") && cmdline.contains(MARKER),
            "{line}"
        );
    }
}

#[test]
fn sighup_reopens_the_access_log_so_logrotate_can_move_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let served = serve(&log, &[]);
    let get = || {
        let url = format!("{}/latest/meta-data/instance-id", served.endpoints[0]);
        let status = Command::new("curl")
            .args(["-sf", "--noproxy", "*", "-o", "/dev/null", &url])
            .status()
            .unwrap();
        assert!(status.success());
    };
    get();
    lines(&log, 1);
    std::fs::rename(&log, &rotated).unwrap();
    served.signal("HUP");
    // The reopen happens before the next line is written, or within a second when idle.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.exists() {
        assert!(Instant::now() < deadline, "no new access log after SIGHUP");
        get();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(lines(&log, 1)[0]["path"], "/latest/meta-data/instance-id");
    assert_eq!(
        lines(&rotated, 1)[0]["path"],
        "/latest/meta-data/instance-id"
    );
    let (status, stderr) = served.stop("TERM");
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn an_access_log_that_cannot_be_opened_stops_the_start_naming_the_path() {
    let output = Command::new(IMDS)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--control-listen",
            "127.0.0.1:0",
        ])
        .env("IMDS_ACCESS_LOG", "/nonexistent/imds/access.log")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot open the access log /nonexistent/imds/access.log"),
        "{stderr}"
    );
}

#[test]
fn access_log_dash_writes_json_lines_to_stdout_after_the_addresses() {
    let mut child = Command::new(IMDS)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--control-listen",
            "127.0.0.1:0",
        ])
        .args(["--access-log", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let endpoint = stdout
        .next()
        .unwrap()
        .unwrap()
        .strip_prefix("listening on ")
        .expect("the address first")
        .to_owned();
    let url = format!("{endpoint}/latest/meta-data/instance-id");
    let status = Command::new("curl")
        .args(["-sf", "--noproxy", "*", "-o", "/dev/null", &url])
        .status()
        .unwrap();
    assert!(status.success());
    let json = stdout
        .find_map(|line| line.ok().filter(|l| l.starts_with('{')))
        .expect("a JSON line");
    let _ = child.kill();
    let _ = child.wait();
    let line: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(line["path"], "/latest/meta-data/instance-id");
    assert_eq!(line["version"], "v1");
}

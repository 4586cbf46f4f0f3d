//! Injected faults on a real `imds serve`, set with `imds ctl fault` and in the config file, seen
//! by a client on a real socket: statuses, latency, throttling, resets, silence.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{ctl_ok, serve, Served, IMDS};

/// `imds ctl fault ARGS`: its stdout.
fn ctl(served: &Served, args: &[&str]) -> String {
    let mut all = vec!["fault"];
    all.extend_from_slice(args);
    ctl_ok(served, &all)
}

/// One request; the status and body, or the I/O error the client saw.
fn request(served: &Served, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let addr = served.endpoints[0].trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let ttl = match method {
        "PUT" => "X-aws-ec2-metadata-token-ttl-seconds: 60\r\n",
        _ => "",
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{ttl}\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    Ok((status, body.unwrap_or_default()))
}

const ID: &str = "/latest/meta-data/instance-id";

#[test]
fn a_counted_status_then_normal_answers() {
    let served = serve(&[]);
    let added = ctl(
        &served,
        &[
            "add",
            "--path",
            "/latest/api/token",
            "--method",
            "PUT",
            "--status",
            "503",
            "--count",
            "1",
        ],
    );
    assert!(added.contains("status=503 count=1 fired=0"), "{added}");
    assert_eq!(
        request(&served, "GET", ID).unwrap().0,
        200,
        "GETs untouched"
    );
    let (status, body) = request(&served, "PUT", "/latest/api/token").unwrap();
    assert_eq!((status, body.as_str()), (503, ""));
    assert_eq!(request(&served, "PUT", "/latest/api/token").unwrap().0, 200);
    let listed = ctl(&served, &["list"]);
    assert!(listed.contains("fired=1"), "{listed}");
    ctl(&served, &["clear"]);
    assert_eq!(ctl(&served, &["list"]), "no faults\n");
}

#[test]
fn latency_reset_and_silence() {
    let served = serve(&[]);
    ctl(&served, &["add", "--path", ID, "--latency", "300ms"]);
    let started = Instant::now();
    assert_eq!(request(&served, "GET", ID).unwrap().0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    ctl(
        &served,
        &["add", "--path", "/latest/meta-data/iam/*", "--reset"],
    );
    let error = request(&served, "GET", "/latest/meta-data/iam/info").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");

    // What a token PUT looks like from beyond the hop limit: nothing comes back.
    ctl(
        &served,
        &[
            "add",
            "--path",
            "/latest/api/token",
            "--method",
            "PUT",
            "--no-answer",
        ],
    );
    let error = request(&served, "PUT", "/latest/api/token").unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{error}"
    );
    assert_eq!(
        request(&served, "GET", "/latest/meta-data/ami-id")
            .unwrap()
            .0,
        200
    );
    let listed = ctl(&served, &["list"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    let reset_id = listed
        .lines()
        .find(|l| l.contains("reset=true"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert_eq!(
        ctl(&served, &["clear", &reset_id]),
        format!("cleared {reset_id}\n")
    );
    assert_eq!(
        request(&served, "GET", "/latest/meta-data/iam/info")
            .unwrap()
            .0,
        200
    );
}

#[test]
fn a_rate_limit_throttles_with_429_and_probability_fires_some_of_the_time() {
    let served = serve(&[]);
    ctl(&served, &["add", "--rate-limit", "5"]);
    let statuses: Vec<u16> = (0..20)
        .map(|_| request(&served, "GET", ID).unwrap().0)
        .collect();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert!(throttled >= 5, "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 200).count() >= 5,
        "{statuses:?}"
    );
    ctl(&served, &["clear"]);

    ctl(&served, &["add", "--status", "500", "--probability", "0.5"]);
    let failed = (0..200)
        .filter(|_| request(&served, "GET", ID).unwrap().0 == 500)
        .count();
    assert!((50..=150).contains(&failed), "{failed} of 200 at p=0.5");
    let output = Command::new(IMDS)
        .args(["ctl", "--endpoint", &served.control[0], "fault", "add"])
        .args(["--status", "200"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("InvalidParameterValue: status must be from 400 to 599"),
        "{stderr}"
    );
}

#[test]
fn faults_from_the_config_file_apply_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("faults.toml");
    std::fs::write(
        &file,
        "[[instance.faults]]\npath = \"/latest/meta-data/*\"\nmethod = \"GET\"\nstatus = 500\ncount = 2\n",
    )
    .unwrap();
    let served = serve(&["--config", file.to_str().unwrap()]);
    assert_eq!(request(&served, "GET", ID).unwrap().0, 500);
    assert_eq!(request(&served, "GET", ID).unwrap().0, 500);
    assert_eq!(request(&served, "GET", ID).unwrap().0, 200);

    std::fs::write(&file, "[[instance.faults]]\nstatus = 42\n").unwrap();
    let output = Command::new(IMDS)
        .args(["check-config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("faults[0]") && stderr.contains("400 to 599"),
        "{stderr}"
    );
}

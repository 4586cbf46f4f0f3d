//! No secret in output: a run with every secret set (the store's password, the control keys),
//! serving credentials and tokens, refusing bad signatures and losing its database, prints none
//! of them in any log line, answer or `--help`.

use std::process::Command;

use crate::postgres::Postgres;
use crate::process::{exchange, Served, IMDS};

const STORE_PASSWORD: &str = "pw-store-5e1f0a";
const CONTROL_SECRET: &str = "control-secret-8c2d4e6f0a1b3c5d";

/// `imds ARGS --help` with every secret in the environment: its output.
fn help(args: &[&str], store: &str) -> String {
    let output = Command::new(IMDS)
        .args(args)
        .arg("--help")
        .env("IMDS_STORE", store)
        .env("IMDS_CONTROL_ACCESS_KEY_ID", "AKIAIMDSSECRETSTEST1")
        .env("IMDS_CONTROL_SECRET_ACCESS_KEY", CONTROL_SECRET)
        .output()
        .unwrap();
    assert!(output.status.success(), "imds {args:?} --help");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn help_never_shows_a_secret_from_the_environment() {
    let store = format!("postgres://imds:{STORE_PASSWORD}@127.0.0.1:1/imds");
    for args in [&["serve"][..], &["ctl"], &["cert"], &["check-config"]] {
        let shown = help(args, &store);
        assert!(
            !shown.contains(STORE_PASSWORD),
            "imds {args:?} --help: {shown}"
        );
        assert!(
            !shown.contains(CONTROL_SECRET),
            "imds {args:?} --help: {shown}"
        );
    }
    assert!(help(&["serve"], &store).contains("IMDS_STORE"));
}

/// A control request signed with the test keys through `imds ctl`: exit code and output.
fn ctl(served: &Served, args: &[&str]) -> (i32, String) {
    let output = Command::new(IMDS)
        .args(["ctl", "--endpoint", &served.control[0]])
        .args(args)
        .env("IMDS_CONTROL_ACCESS_KEY_ID", "AKIAIMDSSECRETSTEST1")
        .env("IMDS_CONTROL_SECRET_ACCESS_KEY", CONTROL_SECRET)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn a_run_with_every_secret_set_prints_none_of_them() {
    let pg = Postgres::start();
    let url = pg.database("secrets").replace(
        "postgres://imds@",
        &format!("postgres://imds:{STORE_PASSWORD}@"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("imds.toml");
    std::fs::write(
        &config,
        format!("[control]\naccess_key_id = \"AKIAIMDSSECRETSTEST1\"\nsecret_access_key = \"{CONTROL_SECRET}\"\n"),
    )
    .unwrap();
    let mut command = Command::new(IMDS);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "debug"])
        .args(["--config", config.to_str().unwrap()])
        .env("IMDS_STORE", &url);
    let served = Served::spawn(command);
    let guest = &served.endpoints[0];

    // Credentials and tokens, as SDKs fetch them.
    let mut secrets = vec![STORE_PASSWORD.to_owned(), CONTROL_SECRET.to_owned()];
    let (status, token) = exchange(
        guest,
        "PUT /latest/api/token HTTP/1.1\r\nHost: {addr}\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 200);
    secrets.push(token.clone());
    let get = |path: &str| {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {{addr}}\r\nX-aws-ec2-metadata-token: {token}\r\nConnection: close\r\n\r\n"
        );
        exchange(guest, &request).unwrap()
    };
    let (_, role) = get("/latest/meta-data/iam/security-credentials/");
    for path in [
        format!("/latest/meta-data/iam/security-credentials/{role}"),
        "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance".to_owned(),
    ] {
        let (status, body) = get(&path);
        assert_eq!(status, 200, "{path}");
        let document: serde_json::Value = serde_json::from_str(&body).unwrap();
        for field in ["SecretAccessKey", "Token"] {
            secrets.push(document[field].as_str().unwrap().to_owned());
        }
    }

    // Signed changes, a bad signature, then the database goes away.
    let (code, out) = ctl(&served, &["tag", "Team=blue"]);
    assert_eq!(code, 0, "{out}");
    let (status, _) = exchange(
        &served.control[0],
        "POST / HTTP/1.1\r\nHost: {addr}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIAIMDSSECRETSTEST1/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=00\r\nContent-Length: 24\r\nConnection: close\r\n\r\nAction=DescribeInstances",
    )
    .unwrap();
    assert_eq!(status, 401);
    pg.stop();
    let (code, refused) = ctl(&served, &["tag", "Team=green"]);
    assert_ne!(code, 0, "{refused}");
    assert!(refused.contains("Unavailable"), "{refused}");
    for detail in [&pg.port.to_string(), "secrets", "imds@"] {
        assert!(
            !refused.contains(detail),
            "the answer names the database ({detail}): {refused}"
        );
    }

    let (_, stderr) = served.stop("TERM");
    assert!(
        stderr.contains("DEBUG") || stderr.contains("debug"),
        "{stderr}"
    );
    for secret in &secrets {
        assert!(
            !stderr.contains(secret.as_str()),
            "a secret ({} characters) is in the log: {stderr}",
            secret.len()
        );
    }
}

#[test]
fn a_flood_of_bad_signatures_writes_one_log_line_and_is_counted_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("imds.toml");
    std::fs::write(
        &config,
        format!("[control]\naccess_key_id = \"AKIAIMDSSECRETSTEST1\"\nsecret_access_key = \"{CONTROL_SECRET}\"\n"),
    )
    .unwrap();
    let served = crate::process::serve(&["--config", config.to_str().unwrap()]);
    let forged = "POST / HTTP/1.1\r\nHost: {addr}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIAIMDSSECRETSTEST1/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=00\r\nContent-Length: 24\r\nConnection: close\r\n\r\nAction=DescribeInstances";
    for _ in 0..200 {
        assert_eq!(exchange(&served.control[0], forged).unwrap().0, 401);
    }
    let (status, metrics) = exchange(
        &served.control[0],
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            "imds_control_requests_total{action=\"(unauthenticated)\",outcome=\"AuthFailure\"} 200"
        ),
        "{metrics}"
    );
    let (_, stderr) = served.stop("TERM");
    assert_eq!(
        stderr.matches("bad signature").count(),
        1,
        "one line a minute: {stderr}"
    );
}

//! Role credentials from a real, independent STS: `moto_server` (PyPI `moto[server]`, installed
//! by `scripts/install-test-deps`) on loopback, enforcing IAM authentication, so only keys it
//! issued are accepted. Ignored by a plain `cargo test`; `scripts/test` runs them. Renewal is
//! timed on an injected clock: the test moves it to the moments the renewal task sleeps until.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imds::clock::{Clock, ManualClock};
use serde_json::Value;

use crate::conformance::{python, repo, run};
use crate::harness::TestImds;
use crate::process::{Served, IMDS};

const ROLE: &str = "/latest/meta-data/iam/security-credentials/imds-sts-role";
const INSTANCE_ID: &str = "i-0b4f7d2c9a1e83f56";

/// A moto server with an IAM user allowed to assume `imds-sts-role`.
struct Moto {
    child: Child,
    endpoint: String,
    access_key_id: String,
    secret_access_key: String,
    role_arn: String,
}

impl Moto {
    fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = python().with_file_name("moto_server");
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "4")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", server.display()));
        let endpoint = format!("http://127.0.0.1:{port}");
        // moto is a Python program: starting it takes real time (a second or so, several on a
        // loaded machine), and it cannot be faked without faking what this file tests.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !answers(port) {
            assert!(Instant::now() < deadline, "moto did not start within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let setup = moto_script(&["setup", &endpoint]).expect("moto setup");
        Moto {
            child,
            endpoint,
            access_key_id: setup["access_key_id"].as_str().unwrap().to_owned(),
            secret_access_key: setup["secret_access_key"].as_str().unwrap().to_owned(),
            role_arn: setup["role_arn"].as_str().unwrap().to_owned(),
        }
    }

    /// Who moto says holds `credentials` (a served credentials document).
    fn whoami(&self, credentials: &Value) -> Result<String, String> {
        let field = |key: &str| credentials[key].as_str().unwrap().to_owned();
        moto_script(&[
            "whoami",
            &self.endpoint,
            &field("AccessKeyId"),
            &field("SecretAccessKey"),
            &field("Token"),
        ])
        .map(|answer| answer["arn"].as_str().unwrap().to_owned())
    }

    /// The instance config assuming moto's role with base credentials from `file`.
    fn config(&self, file: &std::path::Path) -> String {
        format!(
            "[instance.iam]\ncredentials = \"sts\"\nrole_arn = \"{}\"\nbase_credentials_file = \"{}\"\n",
            self.role_arn,
            file.display()
        )
    }

    /// A credentials file with the user's keys as `default` (or a wrong secret).
    fn credentials_file(&self, dir: &std::path::Path, secret: &str) -> std::path::PathBuf {
        let path = dir.join("aws-credentials");
        std::fs::write(
            &path,
            format!(
                "[default]\naws_access_key_id = {}\naws_secret_access_key = {secret}\n",
                self.access_key_id
            ),
        )
        .unwrap();
        path
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let request = "GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut answer = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}

fn moto_script(args: &[&str]) -> Result<Value, String> {
    let script = repo().join("tests/conformance/python/moto_sts.py");
    let output = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    match output.status.success() {
        true => Ok(serde_json::from_slice(&output.stdout).unwrap()),
        false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
    }
}

/// Waits until the renewal task has done what the clock's time asks and sleeps on `clock`
/// again: the clock time it sleeps until. At most 10 s of real time (a fetch from moto takes a
/// fraction of a second; the bound is for a loaded machine).
async fn task_asleep(clock: &ManualClock) -> u64 {
    tokio::time::timeout(Duration::from_secs(10), clock.next_wake())
        .await
        .expect("the renewal task still busy after 10 s")
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs moto_server: run scripts/test"]
async fn botocore_receives_credentials_that_moto_issued_for_the_role() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = moto.credentials_file(dir.path(), &moto.secret_access_key);
    let imds = TestImds::setup()
        .toml(&moto.config(&file))
        .sts_endpoint(&moto.endpoint)
        .start()
        .await;

    let script = repo().join("tests/conformance/python/botocore_client.py");
    let got = run(&imds, &python(), &[script.to_str().unwrap()], &[])
        .await
        .unwrap();
    let token = imds.token(60).await;
    let v2 = json(&imds.get_with_token(ROLE, &token).await.body);
    assert_eq!(
        got["access_key_id"], v2["AccessKeyId"],
        "botocore uses IMDSv2"
    );
    assert_eq!(got["token"], v2["Token"]);
    let expected = format!("arn:aws:sts::123456789012:assumed-role/imds-sts-role/{INSTANCE_ID}");
    let presented = serde_json::json!({
        "AccessKeyId": got["access_key_id"],
        "SecretAccessKey": got["secret_access_key"],
        "Token": got["token"],
    });
    let moto = Arc::new(moto);
    let who = {
        let moto = moto.clone();
        tokio::task::spawn_blocking(move || moto.whoami(&presented))
            .await
            .unwrap()
    };
    assert_eq!(who.unwrap(), expected, "moto issued what botocore received");

    let v1 = json(&imds.get(ROLE).await.body);
    assert_ne!(
        v1["AccessKeyId"], v2["AccessKeyId"],
        "separate v1 and v2 sessions"
    );
    let who = tokio::task::spawn_blocking(move || moto.whoami(&v1))
        .await
        .unwrap();
    assert_eq!(who.unwrap(), expected, "the v1 set is real too");
    let extended = imds
        .get("/latest/meta-data/iam/security-credentials-extended/imds-sts-role")
        .await;
    assert_eq!(json(&extended.body)["AccountId"], "123456789012");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs moto_server: run scripts/test"]
async fn credentials_are_renewed_early_and_kept_until_expiry_while_sts_is_down() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = moto.credentials_file(dir.path(), &moto.secret_access_key);
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let clock = Arc::new(ManualClock::at_millis(start));
    let imds = TestImds::setup()
        .toml(&moto.config(&file))
        .sts_endpoint(&moto.endpoint)
        .clock(clock.clone())
        .start()
        .await;
    let token = imds.token(21600).await;
    let v1 = || async { json(&imds.get(ROLE).await.body) };
    let v2 = || async { json(&imds.get_with_token(ROLE, &token).await.body) };
    let (first_v1, first) = (v1().await, v2().await);
    let expiration = |v: &Value| {
        time::OffsetDateTime::parse(
            v["Expiration"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let left = expiration(&first) - time::OffsetDateTime::now_utc();
    assert!(
        left > time::Duration::minutes(59),
        "a one-hour session: {left}"
    );

    // A one-hour session is renewed once 20 minutes remain (less the moment STS took to
    // answer), not before: the task sleeps until then.
    let twenty_minutes_left = start + 40 * 60_000;
    let window = twenty_minutes_left - 10_000..=twenty_minutes_left;
    let renew_at = task_asleep(&clock).await;
    assert!(
        window.contains(&renew_at),
        "renewal at +{}ms",
        renew_at - start
    );
    clock.advance(Duration::from_millis(renew_at - 1 - start));
    assert_eq!(task_asleep(&clock).await, renew_at, "nothing to do before");
    assert_eq!(v2().await["AccessKeyId"], first["AccessKeyId"]);
    assert_eq!(v1().await["AccessKeyId"], first_v1["AccessKeyId"]);
    // Each set at its own moment (they were fetched one after the other).
    let mut moments = 0;
    loop {
        let wake = task_asleep(&clock).await;
        if v1().await["AccessKeyId"] != first_v1["AccessKeyId"]
            && v2().await["AccessKeyId"] != first["AccessKeyId"]
        {
            break;
        }
        assert!(window.contains(&wake), "renewal at +{}ms", wake - start);
        moments += 1;
        assert!(moments <= 2, "one renewal moment per set");
        clock.advance(Duration::from_millis(wake - clock.now_millis()));
    }
    let renewed = v2().await;
    assert_ne!(renewed["LastUpdated"], first["LastUpdated"]);

    // STS goes away: past the renewal moment the fetch fails and is retried after 2 s, then
    // 4 s; the renewed set is served while it lasts, then the role is 404.
    moto.stop();
    clock.advance(Duration::from_secs(50 * 60));
    let now = clock.now_millis();
    assert_eq!(task_asleep(&clock).await, now + 2_000, "the first retry");
    let stale = imds.get_with_token(ROLE, &token).await;
    assert_eq!(stale.status, 200);
    assert_eq!(json(&stale.body)["AccessKeyId"], renewed["AccessKeyId"]);
    clock.advance(Duration::from_secs(2));
    assert_eq!(task_asleep(&clock).await, now + 6_000, "the second retry");
    assert_eq!(v2().await["AccessKeyId"], renewed["AccessKeyId"]);
    clock.advance(Duration::from_secs(11 * 60));
    assert_eq!(imds.get_with_token(ROLE, &token).await.status, 404);
    assert_eq!(imds.get(ROLE).await.status, 404);
}

#[test]
#[ignore = "needs moto_server: run scripts/test"]
fn bad_base_credentials_are_a_clear_error_and_the_role_answers_404() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("instance.toml");
    std::fs::write(
        &config,
        format!(
            "[instance.iam]\ncredentials = \"sts\"\nrole_arn = \"{}\"\n",
            moto.role_arn
        ),
    )
    .unwrap();
    let mut command = Command::new(IMDS);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .args(["--sts-endpoint", &moto.endpoint])
        .env("HOME", dir.path())
        .env_remove("AWS_PROFILE")
        .env("AWS_ACCESS_KEY_ID", &moto.access_key_id)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "wrong-secret-wrong-secret-wrong-secret-00",
        );
    let served = Served::spawn(command);
    let endpoint = served.endpoints[0].trim_start_matches("http://").to_owned();
    let get = |path: &str| {
        let mut stream = TcpStream::connect(&endpoint).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer[9..12].to_owned()
    };
    assert_eq!(get(ROLE), "404");
    assert_eq!(get("/latest/meta-data/iam/info"), "200");
    assert_eq!(get("/latest/meta-data/instance-id"), "200");
    let (status, stderr) = served.stop("TERM");
    assert!(status.success());
    let line = stderr
        .lines()
        .find(|l| l.contains("cannot assume the role"))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        line.contains("ERROR") && line.contains(&moto.role_arn),
        "{line}"
    );
    assert!(
        line.contains("SignatureDoesNotMatch"),
        "the STS error is named: {line}"
    );
    assert!(
        !stderr.contains("wrong-secret"),
        "the secret appears in the log"
    );
    eprintln!("{stderr}");
}

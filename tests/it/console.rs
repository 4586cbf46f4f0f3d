//! The web console at `/console`: headless Chromium (Debian's `chromium`, driven by
//! `playwright-core`) signs in with the control keys, sees the instances DescribeInstances
//! lists, requires IMDSv2 on one with a click, and sees the refused token-less request counted
//! in the graph without a reload, with the calling process listed; the AWS CLI confirms the
//! change. Raw HTTP checks that cross-site POSTs, POSTs without the CSRF token and requests
//! without a session are refused and change nothing, and that a console session never stands
//! in for SigV4 on the EC2 API.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::conformance::repo;
use crate::control::aws;
use crate::fleet::{fleet_config, get, SUBNET};
use crate::process::{Served, IMDS};

const FIRST: &str = "i-0aaaaaaaaaaaaaaa1";
const SECOND: &str = "i-0aaaaaaaaaaaaaaa2";
const THIRD: &str = "i-0aaaaaaaaaaaaaaa3";
/// The keys `crate::control::aws` signs with.
const KEY_ID: &str = "AKIAIMDSCONTROLTEST1";
const SECRET: &str = "imds-control-test-secret-key-0123456789ab";

/// Two more instances (127.16.0.11 and .12), a Name tag on each, and, `with_keys`, control keys.
fn extra(with_keys: bool) -> String {
    let mut extra = String::from("[instances.tags]\nName = \"web-1\"\n");
    for (n, id) in [(1, SECOND), (2, THIRD)] {
        extra.push_str(&format!(
            r#"
[[instances]]
instance_id = "{id}"
[instances.tags]
Name = "web-{}"
[[instances.network_interfaces]]
mac = "0e:8c:1f:6b:2d:3{n}"
interface_id = "eni-0d9a1b7c3e5f2468{n}"
subnet_id = "{SUBNET}"
subnet_ipv4_cidr_block = "127.16.0.0/16"
vpc_id = "vpc-0c4f6a8e2b1d35792"
vpc_ipv4_cidr_blocks = ["127.0.0.0/8"]
private_ipv4s = ["127.16.0.1{n}"]
security_groups = [{{ name = "default", id = "sg-0e1f2a3b4c5d6e7f8" }}]
"#,
            n + 1
        ));
    }
    if with_keys {
        extra.push_str(&format!(
            "\n[control]\naccess_key_id = \"{KEY_ID}\"\nsecret_access_key = \"{SECRET}\"\n"
        ));
    }
    extra
}

/// A fleet of three instances with an access log (so IMDSv1 callers are looked up).
fn serve(dir: &Path, with_keys: bool) -> Served {
    let config = fleet_config(dir, &extra(with_keys));
    let mut command = Command::new(IMDS);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--access-log")
        .arg(dir.join("access.log"));
    Served::spawn(command)
}

/// One HTTP/1.1 exchange with the control listener: status, head and body.
fn http(
    served: &Served,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let addr = served.control[0].trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (
        head[9..12].parse().unwrap(),
        head.to_owned(),
        body.to_owned(),
    )
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Each instance's `HttpTokens` as the console's fleet view shows it.
fn tokens_shown(served: &Served, headers: &[(&str, &str)]) -> Vec<(String, String)> {
    let (status, _, body) = http(served, "GET", "/console/api/fleet", headers, "");
    assert_eq!(status, 200, "{body}");
    json(&body)["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["instanceId"].as_str().unwrap().to_owned(),
                i["httpTokens"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

const REQUIRE_FIRST: &str = r#"{"action":"requireImdsv2","instanceId":"i-0aaaaaaaaaaaaaaa1"}"#;

#[test]
fn a_console_post_without_the_csrf_token_or_from_another_site_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), false);
    let json_type = ("Content-Type", "application/json");
    let evil = [
        json_type,
        ("Origin", "http://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
    ];
    let (status, _, body) = http(
        &served,
        "POST",
        "/console/api/actions",
        &evil,
        REQUIRE_FIRST,
    );
    assert_eq!(status, 403, "a cross-site POST: {body}");

    let (status, _, body) = http(
        &served,
        "POST",
        "/console/api/actions",
        &[json_type],
        REQUIRE_FIRST,
    );
    assert_eq!(status, 403, "a POST without the CSRF token: {body}");
    assert_eq!(json(&body)["code"], "CsrfTokenMismatch");
    let forged = [
        json_type,
        ("X-Imds-Csrf", "00112233445566778899aabbccddeeff"),
    ];
    let (status, _, _) = http(
        &served,
        "POST",
        "/console/api/actions",
        &forged,
        REQUIRE_FIRST,
    );
    assert_eq!(status, 403, "a POST with a made-up token");

    let (status, _, body) = http(&served, "GET", "/console/api/session", &[], "");
    assert_eq!(status, 200);
    let csrf = json(&body)["csrf"].as_str().unwrap().to_owned();
    // With the token, a cross-site POST is still refused; so is a form (not JSON) body.
    let evil_with_token = [evil[0], evil[1], evil[2], ("X-Imds-Csrf", csrf.as_str())];
    let (status, _, _) = http(
        &served,
        "POST",
        "/console/api/actions",
        &evil_with_token,
        REQUIRE_FIRST,
    );
    assert_eq!(status, 403);
    let form = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("X-Imds-Csrf", csrf.as_str()),
    ];
    let (status, _, _) = http(
        &served,
        "POST",
        "/console/api/actions",
        &form,
        REQUIRE_FIRST,
    );
    assert_eq!(status, 400);
    assert!(tokens_shown(&served, &[])
        .iter()
        .all(|(_, t)| t == "optional"));
    // The EC2 API's own cross-site refusal is unchanged.
    let ec2 = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Sec-Fetch-Site", "cross-site"),
    ];
    let body = format!("Action=ModifyInstanceMetadataOptions&Version=2016-11-15&InstanceId={FIRST}&HttpTokens=required");
    assert_eq!(http(&served, "POST", "/", &ec2, &body).0, 403);

    let same_origin = [json_type, ("X-Imds-Csrf", csrf.as_str())];
    let (status, _, body) = http(
        &served,
        "POST",
        "/console/api/actions",
        &same_origin,
        REQUIRE_FIRST,
    );
    assert_eq!(status, 200, "{body}");
    let shown = tokens_shown(&served, &[]);
    assert!(
        shown.contains(&(FIRST.to_owned(), "required".to_owned())),
        "{shown:?}"
    );
    assert!(
        shown.contains(&(SECOND.to_owned(), "optional".to_owned())),
        "{shown:?}"
    );
    // Bad input is a clear 4xx with EC2's code, never a crash.
    let hop = format!(r#"{{"action":"setHopLimit","instanceId":"{FIRST}","hopLimit":99}}"#);
    let (status, _, body) = http(&served, "POST", "/console/api/actions", &same_origin, &hop);
    assert_eq!(
        (status, json(&body)["code"].as_str()),
        (400, Some("InvalidParameterValue"))
    );
    let (status, _, body) = http(
        &served,
        "GET",
        "/console/api/instances/i-0ffffffffffffffff",
        &[],
        "",
    );
    assert_eq!(
        (status, json(&body)["code"].as_str()),
        (400, Some("InvalidInstanceID.NotFound"))
    );
}

#[test]
fn with_control_keys_the_console_needs_a_session_and_the_session_is_not_a_signature() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), true);
    let (status, head, body) = http(&served, "GET", "/console", &[], "");
    assert_eq!(status, 200, "the page (with its sign-in form) loads");
    assert!(head
        .to_ascii_lowercase()
        .contains("content-security-policy"));
    assert!(body.contains("login-form"));
    for (method, path) in [
        ("GET", "/console/api/fleet"),
        ("GET", "/console/api/session"),
        ("GET", "/console/api/changes"),
    ] {
        let (status, _, body) = http(&served, method, path, &[], "");
        assert_eq!(
            (status, json(&body)["code"].as_str()),
            (401, Some("NoSession")),
            "{path}"
        );
    }
    let json_type = ("Content-Type", "application/json");
    let (status, _, _) = http(
        &served,
        "POST",
        "/console/api/actions",
        &[json_type],
        REQUIRE_FIRST,
    );
    assert_eq!(status, 401);
    let forged = [("Cookie", "imds_console=99999999999.0011.0011")];
    assert_eq!(
        http(&served, "GET", "/console/api/fleet", &forged, "").0,
        401
    );

    let login = |secret: &str| {
        let body = format!(r#"{{"accessKeyId":"{KEY_ID}","secretAccessKey":"{secret}"}}"#);
        http(&served, "POST", "/console/api/login", &[json_type], &body)
    };
    let (status, head, body) = login("wrong-secret");
    assert_eq!(
        (status, json(&body)["code"].as_str()),
        (401, Some("AuthFailure"))
    );
    assert!(!head.to_ascii_lowercase().contains("set-cookie"));
    let (status, head, body) = login(SECRET);
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains(SECRET), "the secret is never sent back");
    let set_cookie = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .expect("a session cookie")
        .to_owned();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set_cookie.contains(part), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let csrf = json(&body)["csrf"].as_str().unwrap().to_owned();
    let session = [("Cookie", cookie.as_str())];
    assert_eq!(tokens_shown(&served, &session).len(), 3);

    let without_token = [json_type, ("Cookie", cookie.as_str())];
    assert_eq!(
        http(
            &served,
            "POST",
            "/console/api/actions",
            &without_token,
            REQUIRE_FIRST
        )
        .0,
        403
    );
    let with_token = [
        json_type,
        ("Cookie", cookie.as_str()),
        ("X-Imds-Csrf", csrf.as_str()),
    ];
    assert_eq!(
        http(
            &served,
            "POST",
            "/console/api/actions",
            &with_token,
            REQUIRE_FIRST
        )
        .0,
        200
    );

    // The session opens the console only: the EC2 API still wants a SigV4 signature.
    let query = "/?Action=DescribeInstances&Version=2016-11-15";
    let (status, _, body) = http(&served, "GET", query, &session, "");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("AuthFailure"), "{body}");
}

/// `path`, after checking it exists (`scripts/install-test-deps` installs it).
fn installed(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps (scripts/test does)",
        path.display()
    );
    path
}

/// Reads the script's next JSON line.
fn next_step(lines: &mut impl Iterator<Item = std::io::Result<String>>, step: &str) -> Value {
    let line = lines
        .next()
        .unwrap_or_else(|| panic!("the browser script ended before {step:?}"))
        .unwrap();
    let value = json(&line);
    assert_eq!(value["step"], step, "{line}");
    value
}

#[test]
#[ignore = "needs Chromium, playwright-core and the AWS CLI: run scripts/test"]
fn chromium_requires_imdsv2_in_the_console_and_sees_the_refused_request_counted_live() {
    let started = Instant::now();
    let chromium = installed(PathBuf::from("/usr/bin/chromium"));
    let script_dir = repo().join("tests/console");
    installed(script_dir.join("node_modules/playwright-core"));
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), true);
    let out = repo().join("target/test-output/console");
    std::fs::create_dir_all(&out).unwrap();
    let screenshot = out.join("console.png");
    let _ = std::fs::remove_file(&screenshot);
    let options = serde_json::json!({
        "url": served.control[0],
        "target": SECOND,
        "keys": { "id": KEY_ID, "secret": SECRET },
        "screenshot": screenshot,
        "chromium": chromium,
    });
    let mut browser = Command::new("node")
        .arg(script_dir.join("console.mjs"))
        .arg(options.to_string())
        .current_dir(&script_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(browser.stdout.take().unwrap()).lines();

    let listed = next_step(&mut lines, "listed");
    assert!(
        listed["wrongKeysError"]
            .as_str()
            .unwrap()
            .contains("AuthFailure"),
        "{listed}"
    );
    let described = aws(&served, &["describe-instances"]).unwrap();
    let instances: Vec<&Value> = described["Reservations"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["Instances"].as_array().unwrap())
        .collect();
    let mut described_ids: Vec<&str> = instances
        .iter()
        .map(|i| i["InstanceId"].as_str().unwrap())
        .collect();
    let mut shown_ids: Vec<&str> = listed["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    described_ids.sort_unstable();
    shown_ids.sort_unstable();
    assert_eq!(shown_ids, described_ids);
    assert_eq!(shown_ids, [FIRST, SECOND, THIRD]);

    let required = next_step(&mut lines, "required");
    assert_eq!(required["rejectedBefore"], "0", "{required}");
    let described = aws(&served, &["describe-instances", "--instance-ids", SECOND]).unwrap();
    let options = &described["Reservations"][0]["Instances"][0]["MetadataOptions"];
    assert_eq!(options["HttpTokens"], "required", "{described}");
    let others = aws(
        &served,
        &["describe-instances", "--instance-ids", FIRST, THIRD],
    )
    .unwrap();
    for reservation in others["Reservations"].as_array().unwrap() {
        assert_eq!(
            reservation["Instances"][0]["MetadataOptions"]["HttpTokens"],
            "optional"
        );
    }

    // A token-less request from the instance's own address: refused, counted, its caller found.
    let (status, _) = get(&served, "127.16.0.11", "/latest/meta-data/instance-id");
    assert_eq!(status, 401, "IMDSv1 is refused once IMDSv2 is required");
    writeln!(browser.stdin.as_mut().unwrap(), "sent").unwrap();

    let done = next_step(&mut lines, "done");
    assert_eq!(
        done["reloaded"], false,
        "the page updated without a reload: {done}"
    );
    assert_eq!(done["secretSent"], false, "no secret reached the page");
    assert_eq!(done["pageErrors"], serde_json::json!([]), "{done}");
    assert!(
        done["bars"].as_u64().unwrap() >= 1,
        "the graph draws the refusal: {done}"
    );
    assert!(done["rowTokens"].as_str().unwrap().starts_with("required"));
    let callers = done["callers"].as_str().unwrap();
    assert!(
        callers.contains(&std::process::id().to_string()),
        "the test process is listed as an IMDSv1 caller: {callers}"
    );
    assert!(browser.wait().unwrap().success());
    assert!(screenshot.exists());
    println!(
        "console: {} ({}); change shown {} ms after the click, refusal counted {} ms after the request; whole test {} ms; screenshot {}",
        done["chromium"],
        chromium.display(),
        required["clickToShownMs"],
        done["sentToShownMs"],
        started.elapsed().as_millis(),
        screenshot.display()
    );
}

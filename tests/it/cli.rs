//! The `imds` binary as a user runs it.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{Served, IMDS};

fn imds(args: &[&str]) -> std::process::Output {
    Command::new(IMDS)
        .args(args)
        .env_remove("IMDS_HTTP_TOKENS")
        .env("IMDS_CONTROL_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap()
}

/// `imds serve ARGS` with extra environment, in the background.
fn serve(args: &[&str], env: &[(&str, &str)]) -> Served {
    let mut command = Command::new(IMDS);
    command.arg("serve").args(args).envs(env.iter().copied());
    Served::spawn(command)
}

/// A blocking GET through curl-free plain TCP.
fn http_get(endpoint: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn serve_prints_its_addresses_answers_and_stops_cleanly_on_sigterm() {
    let served = serve(&["--listen", "127.0.0.1:0", "--listen", "[::1]:0"], &[]);
    assert_eq!(served.endpoints.len(), 2);
    assert!(served.endpoints[0].starts_with("http://127.0.0.1:"));
    assert!(served.endpoints[1].starts_with("http://[::1]:"));
    assert_eq!(
        served.export_line,
        format!(
            "export AWS_EC2_METADATA_SERVICE_ENDPOINT={}",
            served.endpoints[0]
        )
    );
    for endpoint in &served.endpoints {
        assert_eq!(
            http_get(endpoint, "/latest/meta-data/instance-id", &[]),
            (200, "i-0b4f7d2c9a1e83f56".into())
        );
    }
    let (status, stderr) = served.stop("TERM");
    assert!(status.success(), "{status}: {stderr}");
    let info: Vec<&str> = stderr.lines().filter(|l| l.contains("INFO")).collect();
    assert_eq!(info.len(), 2, "one line at start, one at stop:\n{stderr}");
    assert!(info[0].contains("imds started"), "{stderr}");
    assert!(
        info[1].contains("imds stopped") && info[1].contains("SIGTERM"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "no terminal colours in logs sent to a pipe"
    );
}

#[test]
fn flags_beat_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("i.toml");
    std::fs::write(
        &file,
        "[instance.metadata_options]\nhttp_tokens = \"optional\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let served = serve(
        &["--config", file, "--listen", "127.0.0.1:0"],
        &[("IMDS_HTTP_TOKENS", "required")],
    );
    assert_eq!(
        http_get(&served.endpoints[0], "/latest/meta-data/instance-id", &[]).0,
        401
    );
    let served = serve(
        &[
            "--config",
            file,
            "--listen",
            "127.0.0.1:0",
            "--http-tokens",
            "optional",
        ],
        &[("IMDS_HTTP_TOKENS", "required")],
    );
    assert_eq!(
        http_get(&served.endpoints[0], "/latest/meta-data/instance-id", &[]).0,
        200
    );
}

#[test]
fn print_config_round_trips_through_check_config() {
    let printed = imds(&["print-config"]);
    assert!(printed.status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("my-instance.toml");
    std::fs::write(&file, &printed.stdout).unwrap();
    let checked = imds(&["check-config", file.to_str().unwrap()]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let out = String::from_utf8_lossy(&checked.stdout);
    assert!(
        out.contains("ok") && out.contains("i-0b4f7d2c9a1e83f56"),
        "{out}"
    );
}

#[test]
fn check_config_names_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(&file, "[instance]\naccount_id = \"12345\"\n").unwrap();
    let checked = imds(&["check-config", file.to_str().unwrap()]);
    assert_eq!(checked.status.code(), Some(1));
    let err = String::from_utf8_lossy(&checked.stderr);
    assert!(
        err.contains("broken.toml")
            && err.contains("instance.account_id")
            && err.contains("12 digits"),
        "{err}"
    );

    let missing = imds(&["check-config", "/nonexistent/instance.toml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("/nonexistent/instance.toml: cannot read"));
}

#[test]
fn a_busy_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = imds(&["serve", "--listen", &addr]);
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains(&format!("cannot listen on {addr} for the guest API"))
            && err.contains("--listen ADDR:PORT"),
        "{err}"
    );
    // The control API's port, taken by another imds: named, with the flag that moves it.
    let output = imds(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--control-listen",
        &addr,
    ]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains(&format!("cannot listen on {addr} for the control API"))
            && err.contains("move the control API with --control-listen ADDR:PORT"),
        "{err}"
    );
    // ec2-metadata-mock's own flags move its listener.
    let output = imds(&[
        "aemm",
        "-n",
        "127.0.0.1",
        "-p",
        addr.rsplit(':').next().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("-p/--port PORT"), "{err}");
}

#[test]
fn a_short_token_key_file_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("token.key");
    std::fs::write(&key, "too short").unwrap();
    let output = imds(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--token-key-file",
        key.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("needs at least 32"));
}

#[test]
fn help_teaches_how_to_point_sdks_at_imds() {
    let help = imds(&["--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("AWS_EC2_METADATA_SERVICE_ENDPOINT"));
    let serve_help = String::from_utf8_lossy(&imds(&["serve", "--help"]).stdout).into_owned();
    for flag in [
        "--config",
        "--listen",
        "--http-tokens",
        "--http-endpoint",
        "--instance-metadata-tags",
        "--keep-alive",
        "--log-level",
        "IMDS_HTTP_TOKENS",
    ] {
        assert!(serve_help.contains(flag), "serve --help lacks {flag}");
    }
}

#[test]
fn link_local_print_rules_points_at_the_given_address() {
    let output = imds(&["link-local", "--print-rules", "--to", "172.17.0.1:1338"]);
    assert!(output.status.success());
    let rules = String::from_utf8_lossy(&output.stdout);
    assert!(rules.contains("iptables -t nat -A PREROUTING -d 169.254.169.254/32 -p tcp --dport 80 -j DNAT --to-destination 172.17.0.1:1338"), "{rules}");
    assert!(rules.contains("dnat to 172.17.0.1:1338"), "{rules}");
    assert!(
        !imds(&["link-local"]).status.success(),
        "nothing to do without --print-rules"
    );
}

#[test]
fn sighup_reloads_the_config_file_and_keeps_the_old_one_when_the_new_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("i.toml");
    std::fs::write(&file, "[instance]\ninstance_type = \"t3.micro\"\n").unwrap();
    let served = serve(
        &[
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let endpoint = served.endpoints[0].clone();
    let hangup = || served.signal("HUP");
    let wait_for = |path: &str, expected: (u16, &str)| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = http_get(&endpoint, path, &[]);
            if (got.0, got.1.as_str()) == expected {
                return;
            }
            assert!(Instant::now() < deadline, "{path} still answers {got:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert_eq!(
        http_get(&endpoint, "/latest/meta-data/instance-type", &[]),
        (200, "t3.micro".into())
    );

    std::fs::write(&file, "[instance]\ninstance_type = \"c5.large\"\n[instance.metadata_options]\nhttp_tokens = \"required\"\n").unwrap();
    hangup();
    wait_for("/latest/meta-data/instance-type", (401, ""));

    std::fs::write(&file, "[instance]\ninstance_type = \n").unwrap();
    hangup();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        http_get(&endpoint, "/latest/meta-data/instance-type", &[]).0,
        401,
        "still the last good config"
    );

    let (status, stderr) = served.stop("TERM");
    assert!(status.success());
    assert!(
        stderr.contains("imds reloaded") && stderr.contains("reload failed"),
        "{stderr}"
    );
}

#[test]
fn a_reload_applies_the_file_options_no_control_change_named_and_names_those_it_shadows() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("i.toml");
    std::fs::write(
        &file,
        "[instance.metadata_options]\nhttp_put_response_hop_limit = 1\n",
    )
    .unwrap();
    let served = serve(
        &[
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let ctl = |args: &[&str]| crate::process::ctl_ok(&served, args);
    ctl(&["options", "--http-tokens", "required"]);
    // The file's hop limit is edited: the control change named only HttpTokens.
    std::fs::write(
        &file,
        "[instance.metadata_options]\nhttp_put_response_hop_limit = 3\n",
    )
    .unwrap();
    served.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    let described = loop {
        let described = ctl(&["describe"]);
        if described.contains("HttpPutResponseHopLimit=3") {
            break described;
        }
        assert!(
            Instant::now() < deadline,
            "the hop limit edit was dropped: {described}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(described.contains("HttpTokens=required"), "{described}");
    let (_, stderr) = served.stop("TERM");
    let warning: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("not applied: a control change"))
        .collect();
    assert_eq!(warning.len(), 1, "once: {stderr}");
    assert!(
        warning[0].contains("http_tokens (file: optional, served: required)")
            && warning[0].contains("imds ctl options --http-tokens optional")
            && !warning[0].contains("hop_limit"),
        "{stderr}"
    );
    assert!(
        stderr.contains("http_tokens=required"),
        "EC2's spelling: {stderr}"
    );
    assert!(
        !stderr.contains("Required") && !stderr.contains("Optional"),
        "no Rust Debug: {stderr}"
    );
}

#[test]
fn check_config_of_a_fleet_file_lists_every_entry_and_names_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.toml");
    let entry = |id: &str, ip: &str, extra: &str| {
        format!(
            "[[instances]]\ninstance_id = \"{id}\"\n{extra}[[instances.network_interfaces]]\nmac = \"0e:00:00:00:00:{}\"\ninterface_id = \"eni-0aaaaaaaaaaaaaaaa\"\nsubnet_id = \"subnet-0a3e5c7b9d1f24681\"\nsubnet_ipv4_cidr_block = \"127.0.0.0/24\"\nvpc_id = \"vpc-0c4f6a8e2b1d35792\"\nvpc_ipv4_cidr_blocks = [\"127.0.0.0/8\"]\nprivate_ipv4s = [\"{ip}\"]\nsecurity_groups = [{{ name = \"default\", id = \"sg-0e1f2a3b4c5d6e7f8\" }}]\n",
            &id[id.len() - 2..]
        )
    };
    let good = format!(
        "{}{}",
        entry("i-0aaaaaaaaaaaaaaaa", "127.0.0.2", ""),
        entry(
            "i-0bbbbbbbbbbbbbbbb",
            "127.0.0.3",
            "metadata_options = { http_tokens = \"required\" }\n"
        )
    );
    std::fs::write(&file, &good).unwrap();
    let output = imds(&["check-config", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.contains("2 [[instances]]") && stdout.contains("--fleet"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "entry 1: i-0aaaaaaaaaaaaaaaa (t3.medium, us-east-1a, 127.0.0.2), HttpTokens=optional"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("entry 2: i-0bbbbbbbbbbbbbbbb") && stdout.contains("HttpTokens=required"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("i-0b4f7d2c9a1e83f56"),
        "not the built-in instance: {stdout}"
    );
    // A bad value in the second entry: the entry, its id and the key.
    std::fs::write(&file, good.replace("127.0.0.3\"]", "10.9.9.9\"]")).unwrap();
    let output = imds(&["check-config", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("[[instances]] entry 2 (instance_id = \"i-0bbbbbbbbbbbbbbbb\"): network_interfaces[0].private_ipv4s"),
        "{stderr}"
    );
    // A key of the wrong type in the first: named the same way.
    std::fs::write(
        &file,
        good.replacen(
            "instance_id = \"i-0aaaaaaaaaaaaaaaa\"\n",
            "instance_id = \"i-0aaaaaaaaaaaaaaaa\"\nami_launch_index = \"x\"\n",
            1,
        ),
    )
    .unwrap();
    let output = imds(&["check-config", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "[[instances]] entry 1 (instance_id = \"i-0aaaaaaaaaaaaaaaa\"): ami_launch_index"
        ),
        "{stderr}"
    );
}

#[test]
fn ctl_with_control_keys_signs_for_the_region_the_server_serves() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("i.toml");
    std::fs::write(
        &file,
        "[instance.placement]\navailability_zone = \"eu-west-1b\"\n[control]\naccess_key_id = \"AKIAIMDSCONTROL00001\"\nsecret_access_key = \"s3cr3t-for-this-test\"\n",
    )
    .unwrap();
    let served = serve(
        &[
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let output = Command::new(IMDS)
        .args(["ctl", "--endpoint", &served.control[0]])
        .args(["--access-key-id", "AKIAIMDSCONTROL00001"])
        .args(["--secret-access-key", "s3cr3t-for-this-test", "describe"])
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("eu-west-1b"), "{stdout}");
}

/// A PUT over plain TCP; returns the token.
fn http_put_token(endpoint: &str) -> String {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let request = format!("PUT /latest/api/token HTTP/1.1\r\nHost: {addr}\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[test]
fn replicas_sharing_a_token_key_file_accept_each_others_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("token.key");
    std::fs::write(&key, [42u8; 32]).unwrap();
    let key = key.to_str().unwrap();
    let args = ["--listen", "127.0.0.1:0", "--token-key-file", key];
    let (first, second) = (serve(&args, &[]), serve(&args, &[]));
    let stranger = serve(&["--listen", "127.0.0.1:0"], &[]);
    let token = http_put_token(&first.endpoints[0]);
    let header = [("X-aws-ec2-metadata-token", token.as_str())];
    assert_eq!(
        http_get(
            &second.endpoints[0],
            "/latest/meta-data/instance-id",
            &header
        )
        .0,
        200
    );
    assert_eq!(
        http_get(
            &stranger.endpoints[0],
            "/latest/meta-data/instance-id",
            &header
        )
        .0,
        401
    );
}

#[test]
fn debug_logging_shows_each_request_without_its_token() {
    let served = serve(&["--listen", "127.0.0.1:0", "--log-level", "debug"], &[]);
    let token = http_put_token(&served.endpoints[0]);
    let header = [("X-aws-ec2-metadata-token", token.as_str())];
    assert_eq!(
        http_get(
            &served.endpoints[0],
            "/latest/meta-data/iam/security-credentials/imds-default-role",
            &header
        )
        .0,
        200
    );
    let (status, stderr) = served.stop("TERM");
    assert!(status.success());
    let requests: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("guest request"))
        .collect();
    assert_eq!(requests.len(), 2, "{stderr}");
    assert!(
        requests[1].contains("imds_version=\"v2\"") && requests[1].contains("status=200"),
        "{stderr}"
    );
    assert!(!stderr.contains(&token), "the token appears in the log");
    assert!(!stderr.contains("ASIA"), "credentials appear in the log");
}

#[test]
fn rust_log_sets_the_log_level_unless_the_flag_says_otherwise() {
    let served = serve(&["--listen", "127.0.0.1:0"], &[("RUST_LOG", "imds=debug")]);
    http_get(&served.endpoints[0], "/latest/meta-data/instance-id", &[]);
    let (_, stderr) = served.stop("TERM");
    assert!(stderr.contains("guest request"), "{stderr}");
    let served = serve(
        &["--listen", "127.0.0.1:0", "--log-level", "info"],
        &[("RUST_LOG", "imds=debug")],
    );
    http_get(&served.endpoints[0], "/latest/meta-data/instance-id", &[]);
    let (_, stderr) = served.stop("TERM");
    assert!(!stderr.contains("guest request"), "{stderr}");
    let output = Command::new(IMDS)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "imds=loud")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid RUST_LOG `imds=loud`"), "{stderr}");
}

#[test]
fn role_credentials_served_to_imdsv1_callers_are_reported_at_info_level() {
    let served = serve(&["--listen", "127.0.0.1:0"], &[]);
    let role = "/latest/meta-data/iam/security-credentials/imds-default-role";
    let token = http_put_token(&served.endpoints[0]);
    let header = [("X-aws-ec2-metadata-token", token.as_str())];
    let (_, v2) = http_get(&served.endpoints[0], role, &header);
    for _ in 0..12 {
        assert_eq!(http_get(&served.endpoints[0], role, &[]).0, 200);
    }
    let (_, v1) = http_get(&served.endpoints[0], role, &[]);
    assert_ne!(v1, v2, "v1 and v2 callers get different credentials");
    let (status, stderr) = served.stop("TERM");
    assert!(status.success());
    let reports: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("delivered to an IMDSv1"))
        .collect();
    assert_eq!(reports.len(), 2, "the 1st and the 10th: {stderr}");
    assert!(reports[0].contains("INFO") && reports[0].contains("role_delivery=\"1.0\""));
    assert!(reports[0].contains("peer=127.0.0.1:"), "{}", reports[0]);
    assert!(reports[1].contains("v1_deliveries=10") && reports[1].contains("v2_deliveries=1"));
    assert!(!stderr.contains("ASIA"), "credentials appear in the log");
}

//! The control API driven by the unmodified AWS CLI (`aws ec2 ... --endpoint-url`), installed
//! by `scripts/install-test-deps`, against a running `imds serve`; the guest API's answers are
//! checked before and after each change. Ignored by a plain `cargo test`; `scripts/test` runs them.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::conformance::python;
use crate::process::{ctl, exchange, get, serve, Served, IMDS};

const INSTANCE: &str = "i-0b4f7d2c9a1e83f56";

/// `aws ec2 ARGS` against the control API: its JSON, or its stderr and exit code.
pub fn aws(served: &Served, args: &[&str]) -> Result<Value, (i32, String)> {
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(python().with_file_name("aws"))
        .arg("ec2")
        .args(args)
        .args([
            "--endpoint-url",
            &served.control[0],
            "--region",
            "us-east-1",
            "--output",
            "json",
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("AWS_ACCESS_KEY_ID", "AKIAIMDSCONTROLTEST1")
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "imds-control-test-secret-key-0123456789ab",
        )
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap();
    match output.status.success() {
        true if output.stdout.is_empty() => Ok(Value::Null),
        true => Ok(serde_json::from_slice(&output.stdout).unwrap()),
        false => Err((
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )),
    }
}

fn metadata_options(served: &Served) -> Value {
    let described = aws(served, &["describe-instances", "--instance-ids", INSTANCE]).unwrap();
    described["Reservations"][0]["Instances"][0]["MetadataOptions"].clone()
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn modify_instance_metadata_options_turns_imdsv1_off_within_a_second() {
    let served = serve(&[]);
    assert_eq!(
        get(&served, "/latest/meta-data/instance-id"),
        (200, INSTANCE.to_owned())
    );
    let options = metadata_options(&served);
    assert_eq!(options["HttpTokens"], "optional");
    assert_eq!(options["State"], "applied");

    let answer = aws(
        &served,
        &[
            "modify-instance-metadata-options",
            "--instance-id",
            INSTANCE,
            "--http-tokens",
            "required",
            "--http-put-response-hop-limit",
            "2",
        ],
    )
    .unwrap();
    let options = &answer["InstanceMetadataOptions"];
    assert_eq!(answer["InstanceId"], INSTANCE);
    assert_eq!(options["State"], "pending");
    assert_eq!(options["HttpTokens"], "required");
    assert_eq!(options["HttpPutResponseHopLimit"], 2);
    assert_eq!(
        options["HttpEndpoint"], "enabled",
        "omitted options keep their value"
    );

    let deadline = Instant::now() + Duration::from_secs(1);
    while get(&served, "/latest/meta-data/instance-id").0 != 401 {
        assert!(
            Instant::now() < deadline,
            "v1 GETs still answered after a second"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while metadata_options(&served)["State"] != "applied" {
        assert!(Instant::now() < deadline, "the change never read applied");
        std::thread::sleep(Duration::from_millis(100));
    }
    let filtered = |tokens: &str| {
        let found = aws(
            &served,
            &[
                "describe-instances",
                "--filters",
                &format!("Name=metadata-options.http-tokens,Values={tokens}"),
            ],
        )
        .unwrap();
        found["Reservations"].as_array().unwrap().len()
    };
    assert_eq!((filtered("required"), filtered("optional")), (1, 0));

    let (code, stderr) = aws(
        &served,
        &[
            "modify-instance-metadata-options",
            "--instance-id",
            INSTANCE,
            "--http-put-response-hop-limit",
            "65",
        ],
    )
    .unwrap_err();
    assert_eq!(
        code, 255,
        "AWS CLI v1 exits 255 on a service error: {stderr}"
    );
    assert!(stderr.contains("InvalidParameterValue"), "{stderr}");
    let (_, stderr) = aws(
        &served,
        &[
            "modify-instance-metadata-options",
            "--instance-id",
            INSTANCE,
            "--http-tokens",
            "optional",
            "--dry-run",
        ],
    )
    .unwrap_err();
    assert!(stderr.contains("DryRunOperation"), "{stderr}");
    assert_eq!(
        metadata_options(&served)["HttpTokens"],
        "required",
        "a dry run changes nothing"
    );
    served.stop("TERM");
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn tags_created_with_the_cli_appear_in_imds_and_go_when_deleted() {
    let served = serve(&["--instance-metadata-tags", "enabled"]);
    assert_eq!(get(&served, "/latest/meta-data/tags/instance/Team").0, 404);
    aws(
        &served,
        &[
            "create-tags",
            "--resources",
            INSTANCE,
            "--tags",
            "Key=Team,Value=blue",
        ],
    )
    .unwrap();
    assert_eq!(
        get(&served, "/latest/meta-data/tags/instance/Team"),
        (200, "blue".to_owned())
    );
    let described = aws(
        &served,
        &["describe-tags", "--filters", "Name=key,Values=Team"],
    )
    .unwrap();
    assert_eq!(described["Tags"][0]["ResourceId"], INSTANCE);
    assert_eq!(described["Tags"][0]["Value"], "blue");
    let found = aws(
        &served,
        &[
            "describe-instances",
            "--filters",
            "Name=tag:Team,Values=blue",
        ],
    )
    .unwrap();
    assert_eq!(found["Reservations"].as_array().unwrap().len(), 1);

    let (_, stderr) = aws(
        &served,
        &[
            "create-tags",
            "--resources",
            INSTANCE,
            "--tags",
            "Key=has space,Value=x",
        ],
    )
    .unwrap_err();
    assert!(
        stderr.contains("InvalidParameterValue"),
        "keys IMDS cannot show are refused: {stderr}"
    );

    aws(
        &served,
        &["delete-tags", "--resources", INSTANCE, "--tags", "Key=Team"],
    )
    .unwrap();
    assert_eq!(get(&served, "/latest/meta-data/tags/instance/Team").0, 404);
    served.stop("TERM");
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn errors_carry_ec2_codes() {
    let served = serve(&[]);
    let (_, stderr) = aws(
        &served,
        &[
            "describe-instances",
            "--instance-ids",
            "i-0123456789abcdef0",
        ],
    )
    .unwrap_err();
    assert!(stderr.contains("InvalidInstanceID.NotFound"), "{stderr}");
    let (_, stderr) = aws(&served, &["describe-instances", "--instance-ids", "web-1"]).unwrap_err();
    assert!(stderr.contains("InvalidInstanceID.Malformed"), "{stderr}");
    let (_, stderr) = aws(
        &served,
        &["run-instances", "--image-id", "ami-0f3c9c466bb525749"],
    )
    .unwrap_err();
    // One instance answers every caller: new ones need fleet mode.
    assert!(stderr.contains("UnsupportedOperation"), "{stderr}");
    assert!(stderr.contains("--fleet"), "{stderr}");
    let (_, stderr) = aws(
        &served,
        &[
            "attach-volume",
            "--device",
            "/dev/sdf",
            "--instance-id",
            INSTANCE,
            "--volume-id",
            "vol-0123456789abcdef0",
        ],
    )
    .unwrap_err();
    assert!(stderr.contains("InvalidAction"), "{stderr}");
    served.stop("TERM");
}

#[test]
fn the_control_api_refuses_non_loopback_addresses() {
    let output = Command::new(IMDS)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--control-listen",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("control_listen") && stderr.contains("loopback"),
        "{stderr}"
    );
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn instance_profile_associations_change_the_role_and_its_credentials() {
    let served = serve(&[]);
    let credentials = "/latest/meta-data/iam/security-credentials/";
    assert_eq!(
        get(&served, credentials),
        (200, "imds-default-role".to_owned())
    );
    let listed = aws(
        &served,
        &[
            "describe-iam-instance-profile-associations",
            "--filters",
            &format!("Name=instance-id,Values={INSTANCE}"),
        ],
    )
    .unwrap();
    let association = listed["IamInstanceProfileAssociations"][0]["AssociationId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(association.starts_with("iip-assoc-"), "{association}");

    let (_, stderr) = aws(
        &served,
        &[
            "associate-iam-instance-profile",
            "--instance-id",
            INSTANCE,
            "--iam-instance-profile",
            "Name=other",
        ],
    )
    .unwrap_err();
    assert!(
        stderr.contains("IncorrectState"),
        "one association per instance: {stderr}"
    );

    let replaced = aws(
        &served,
        &[
            "replace-iam-instance-profile-association",
            "--association-id",
            &association,
            "--iam-instance-profile",
            "Arn=arn:aws:iam::123456789012:instance-profile/web-server",
        ],
    )
    .unwrap();
    let association = replaced["IamInstanceProfileAssociation"]["AssociationId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(get(&served, credentials), (200, "web-server".to_owned()));
    let (status, body) = get(&served, &format!("{credentials}web-server"));
    assert_eq!(status, 200);
    assert!(body.contains("\"Code\" : \"Success\""), "{body}");
    assert_eq!(
        get(&served, &format!("{credentials}imds-default-role")).0,
        404
    );

    aws(
        &served,
        &[
            "disassociate-iam-instance-profile",
            "--association-id",
            &association,
        ],
    )
    .unwrap();
    assert_eq!(get(&served, credentials).0, 404);
    assert_eq!(get(&served, "/latest/meta-data/iam/info").0, 404);
    let listed = aws(&served, &["describe-iam-instance-profile-associations"]).unwrap();
    assert_eq!(
        listed["IamInstanceProfileAssociations"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    aws(
        &served,
        &[
            "associate-iam-instance-profile",
            "--instance-id",
            INSTANCE,
            "--iam-instance-profile",
            "Name=batch",
        ],
    )
    .unwrap();
    assert_eq!(get(&served, credentials), (200, "batch".to_owned()));
    served.stop("TERM");
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn http_tokens_enforced_keeps_imdsv1_off() {
    let served = serve(&["--http-tokens", "required"]);
    let defaults = aws(&served, &["get-instance-metadata-defaults"]).unwrap();
    assert_eq!(defaults["AccountLevel"]["ManagedBy"], "account");
    assert!(defaults["AccountLevel"].get("HttpTokensEnforced").is_none());
    aws(
        &served,
        &[
            "modify-instance-metadata-defaults",
            "--http-tokens",
            "required",
            "--http-tokens-enforced",
            "enabled",
        ],
    )
    .unwrap();
    let defaults = aws(&served, &["get-instance-metadata-defaults"]).unwrap();
    assert_eq!(defaults["AccountLevel"]["HttpTokensEnforced"], "enabled");
    assert_eq!(defaults["AccountLevel"]["HttpTokens"], "required");

    let (_, stderr) = aws(
        &served,
        &[
            "modify-instance-metadata-options",
            "--instance-id",
            INSTANCE,
            "--http-tokens",
            "optional",
        ],
    )
    .unwrap_err();
    assert!(
        stderr.contains("UnsupportedOperation") && stderr.contains("HttpTokensEnforced"),
        "{stderr}"
    );
    assert_eq!(
        get(&served, "/latest/meta-data/instance-id").0,
        401,
        "IMDSv1 stays off"
    );

    aws(
        &served,
        &[
            "modify-instance-metadata-defaults",
            "--http-tokens-enforced",
            "no-preference",
        ],
    )
    .unwrap();
    aws(
        &served,
        &[
            "modify-instance-metadata-options",
            "--instance-id",
            INSTANCE,
            "--http-tokens",
            "optional",
        ],
    )
    .unwrap();
    assert_eq!(get(&served, "/latest/meta-data/instance-id").0, 200);
    served.stop("TERM");
}

/// A raw request to the control API.
fn http_(addr: &str, request: &str) -> (u16, String) {
    exchange(addr, request).unwrap()
}

#[test]
fn metrics_count_guest_requests_by_version_tokens_and_control_actions() {
    let served = serve(&[]);
    let guest = &served.endpoints[0];
    let control = &served.control[0];
    assert_eq!(
        http_(
            control,
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        ),
        (200, "ok\n".to_owned())
    );
    for _ in 0..3 {
        assert_eq!(get(&served, "/latest/meta-data/ami-id").0, 200);
    }
    let put = "PUT /latest/api/token HTTP/1.1\r\nHost: {addr}\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n";
    let (status, token) = http_(guest, &format!("{put}\r\n"));
    assert_eq!(status, 200);
    assert_eq!(
        http_(guest, &format!("{put}X-Forwarded-For: 10.0.0.9\r\n\r\n")).0,
        403
    );
    let with_token = |token: &str| {
        format!("GET /latest/meta-data/iam/security-credentials/imds-default-role HTTP/1.1\r\nHost: {{addr}}\r\nX-aws-ec2-metadata-token: {token}\r\n\r\n")
    };
    assert_eq!(http_(guest, &with_token(&token)).0, 200);
    assert_eq!(http_(guest, &with_token("forged")).0, 401);
    assert_eq!(http_(control, "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 24\r\nConnection: close\r\n\r\nAction=DescribeInstances").0, 200);
    assert_eq!(http_(control, "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 13\r\nConnection: close\r\n\r\nAction=Reboot").0, 400);

    let (status, text) = http_(
        control,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    for line in [
        "imds_requests_total{surface=\"guest\",version=\"v1\",route=\"meta_data\",status=\"200\"} 3",
        "imds_requests_total{surface=\"guest\",version=\"v2\",route=\"token\",status=\"200\"} 1",
        "imds_requests_total{surface=\"guest\",version=\"v2\",route=\"token\",status=\"403\"} 1",
        "imds_requests_total{surface=\"guest\",version=\"v2\",route=\"credentials\",status=\"200\"} 1",
        "imds_requests_total{surface=\"guest\",version=\"v2\",route=\"credentials\",status=\"401\"} 1",
        "imds_metadata_no_token_total{instance_id=\"i-0b4f7d2c9a1e83f56\"} 3",
        "imds_tokens_issued_total 1",
        "imds_tokens_rejected_total{version=\"v2\",reason=\"forwarded\"} 1",
        "imds_tokens_rejected_total{version=\"v2\",reason=\"malformed\"} 1",
        "imds_connections_open{surface=\"control\"} 1",
        "imds_role_credentials_delivered_total{instance_id=\"i-0b4f7d2c9a1e83f56\",role_delivery=\"2.0\"} 1",
        "imds_control_requests_total{action=\"DescribeInstances\",outcome=\"ok\"} 1",
        "imds_control_requests_total{action=\"(invalid)\",outcome=\"InvalidAction\"} 1",
        "imds_request_duration_seconds_count 7",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
    }
    served.stop("TERM");
}

#[test]
fn imds_ctl_changes_options_tags_role_and_defaults() {
    let served = serve(&["--instance-metadata-tags", "enabled"]);
    let (code, out, _) = ctl(
        &served,
        &["options", "--http-tokens", "required", "--hop-limit", "3"],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("HttpTokens=required") && out.contains("HttpPutResponseHopLimit=3"),
        "{out}"
    );
    assert_eq!(get(&served, "/latest/meta-data/instance-id").0, 401);

    let (code, _, _) = ctl(&served, &["options", "--http-tokens", "optional"]);
    assert_eq!(code, 0);
    assert_eq!(ctl(&served, &["tag", "Name=web", "Team=blue"]).0, 0);
    assert_eq!(
        get(&served, "/latest/meta-data/tags/instance/Team"),
        (200, "blue".to_owned())
    );
    assert_eq!(ctl(&served, &["untag", "Team"]).0, 0);
    assert_eq!(get(&served, "/latest/meta-data/tags/instance/Team").0, 404);

    assert_eq!(ctl(&served, &["role", "batch-worker"]).0, 0);
    assert_eq!(
        get(&served, "/latest/meta-data/iam/security-credentials/"),
        (200, "batch-worker".to_owned())
    );
    assert_eq!(ctl(&served, &["role", "--none"]).0, 0);
    assert_eq!(
        get(&served, "/latest/meta-data/iam/security-credentials/").0,
        404
    );

    let (_, out, _) = ctl(&served, &["describe"]);
    assert!(
        out.contains("instance i-0b4f7d2c9a1e83f56 (t3.medium, us-east-1a)"),
        "{out}"
    );
    assert!(out.contains("tags Environment=dev Name=web"), "{out}");
    assert!(out.contains("HttpTokens=optional"), "{out}");

    let (_, out, _) = ctl(
        &served,
        &[
            "defaults",
            "--http-tokens",
            "required",
            "--http-tokens-enforced",
            "enabled",
        ],
    );
    assert_eq!(
        out,
        "defaults: HttpTokens=required HttpTokensEnforced=enabled\n"
    );
    let (_, _, _) = ctl(&served, &["options", "--http-tokens", "required"]);
    let (code, _, err) = ctl(&served, &["options", "--http-tokens", "optional"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("UnsupportedOperation: IMDSv1 cannot be enabled"),
        "{err}"
    );
    let (code, _, err) = ctl(&served, &["options", "--http-tokens", "maybe"]);
    assert_eq!(code, 1);
    assert!(err.contains("InvalidParameterValue"), "{err}");
    served.stop("TERM");

    let output = Command::new(IMDS)
        .args(["ctl", "--endpoint", "http://127.0.0.1:1", "describe"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        err.contains("cannot reach the control API at http://127.0.0.1:1"),
        "{err}"
    );
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn with_control_keys_only_requests_signed_with_them_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("imds.toml");
    let write = |secret: &str| {
        std::fs::write(
            &config,
            format!("[control]\naccess_key_id = \"AKIAIMDSCONTROLTEST1\"\nsecret_access_key = \"{secret}\"\n"),
        )
        .unwrap()
    };
    // The keys the `aws` helper signs with; now a non-loopback control address is allowed.
    write("imds-control-test-secret-key-0123456789ab");
    let mut served = serve(&[
        "--config",
        config.to_str().unwrap(),
        "--control-listen",
        "0.0.0.0:0",
    ]);
    let port = served.control[0].rsplit(':').next().unwrap().to_owned();
    served.control = vec![format!("http://127.0.0.1:{port}")];
    let described = aws(&served, &["describe-instances"]).unwrap();
    assert_eq!(
        described["Reservations"][0]["Instances"][0]["InstanceId"],
        INSTANCE
    );
    served.stop("TERM");

    write("a-different-secret-than-the-client-signs-with");
    let served = serve(&["--config", config.to_str().unwrap()]);
    let (_, stderr) = aws(&served, &["describe-instances"]).unwrap_err();
    assert!(stderr.contains("AuthFailure"), "{stderr}");
    let (status, body) = http_(
        &served.control[0],
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 24\r\nConnection: close\r\n\r\nAction=DescribeInstances",
    );
    assert_eq!(status, 401, "unsigned requests are refused too");
    assert!(body.contains("<Code>AuthFailure</Code>"), "{body}");
    let (_, stderr) = served.stop("TERM");
    assert!(stderr.contains("bad signature"), "{stderr}");
    assert!(
        !stderr.contains("a-different-secret"),
        "the secret appears in the log"
    );
}

#[test]
#[ignore = "needs botocore: run scripts/test"]
fn a_request_botocore_signed_cannot_be_replayed_with_another_body() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("imds.toml");
    std::fs::write(
        &config,
        "[control]\naccess_key_id = \"AKIAIMDSCONTROLTEST1\"\nsecret_access_key = \"imds-control-test-secret-key-0123456789ab\"\n",
    )
    .unwrap();
    let served = serve(&["--config", config.to_str().unwrap()]);
    let script = crate::conformance::repo().join("tests/conformance/python/botocore_replay.py");
    let output = Command::new(python())
        .arg(script)
        .args([&served.control[0], INSTANCE])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "botocore_replay.py: {stderr}");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    for (action, answer) in result["replays"].as_object().unwrap() {
        assert_eq!(answer[0], 401, "{action}: {answer}");
        assert_eq!(answer[1], "AuthFailure", "{action}: {answer}");
    }
    assert_eq!(result["signed"][0], 200, "{result}");
    // Nothing changed: the endpoint still answers, the instance runs, the options are as before.
    assert_eq!(
        get(&served, "/latest/meta-data/instance-id"),
        (200, INSTANCE.to_owned())
    );
    let options = metadata_options(&served);
    assert_eq!(options["HttpEndpoint"], "enabled");
}

#[test]
fn imds_ctl_signs_with_the_control_keys_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("imds.toml");
    std::fs::write(
        &config,
        "[control]\naccess_key_id = \"AKIAIMDSCTLSIGNTEST1\"\nsecret_access_key = \"ctl-sign-test-secret-0123456789abcdef\"\n",
    )
    .unwrap();
    let served = serve(&["--config", config.to_str().unwrap()]);
    let (code, _, err) = ctl(&served, &["describe"]);
    assert_ne!(code, 0);
    assert!(err.contains("AuthFailure"), "unsigned: {err}");
    let keys = |secret: &str| {
        let output = Command::new(IMDS)
            .args(["ctl", "--endpoint", &served.control[0], "--access-key-id"])
            .arg("AKIAIMDSCTLSIGNTEST1")
            .env("IMDS_CONTROL_SECRET_ACCESS_KEY", secret)
            .args(["tag", "Signed=yes"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stderr)
    };
    let (ok, err) = keys("a-wrong-secret-0123456789abcdefghijkl");
    assert!(!ok && err.contains("AuthFailure"), "wrong secret: {err}");
    let (ok, err) = keys("ctl-sign-test-secret-0123456789abcdef");
    assert!(ok, "right secret: {err}");
    let signed = Command::new(IMDS)
        .args(["ctl", "--endpoint", &served.control[0], "describe"])
        .env("IMDS_CONTROL_ACCESS_KEY_ID", "AKIAIMDSCTLSIGNTEST1")
        .env(
            "IMDS_CONTROL_SECRET_ACCESS_KEY",
            "ctl-sign-test-secret-0123456789abcdef",
        )
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&signed.stdout);
    assert!(out.contains("Signed=yes"), "{out}");
}

#[test]
#[ignore = "needs boto3: run scripts/test"]
fn boto3_ec2_client_drives_every_action_and_the_guest_api_follows() {
    let served = serve(&["--instance-metadata-tags", "enabled"]);
    let script = crate::conformance::repo().join("tests/conformance/python/boto3_ec2.py");
    let output = Command::new(python())
        .arg(script)
        .args([&served.control[0], &served.endpoints[0]])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "boto3_ec2.py: {stderr}");
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(seen["instance_id"], INSTANCE);
    assert_eq!(seen["state"], "running");
    assert_eq!(seen["zone"], "us-east-1a");
    assert_eq!(
        seen["profile_arn"],
        "arn:aws:iam::123456789012:instance-profile/imds-default-role"
    );
    assert_eq!(seen["options_before"]["HttpTokens"], "optional");
    assert_eq!(seen["options_before"]["State"], "applied");
    assert_eq!(seen["unknown_instance"], "InvalidInstanceID.NotFound");
    assert_eq!(seen["malformed_instance"], "InvalidInstanceID.Malformed");

    // ModifyInstanceMetadataOptions: pending, then applied; v1 gets 401 within a second.
    assert_eq!(seen["dry_run"], "DryRunOperation");
    assert_eq!(seen["bad_hop_limit"], "InvalidParameterValue");
    assert_eq!(seen["required_before"], 0);
    assert_eq!(seen["v1_before"], 200);
    assert_eq!(seen["modify_answer"]["State"], "pending");
    assert_eq!(seen["modify_answer"]["HttpTokens"], "required");
    assert_eq!(seen["v1_after"], 401);
    assert!(seen["seconds_to_401"].as_f64().unwrap() < 1.0, "{seen}");
    assert_eq!(seen["required_after"], 1);
    assert_eq!(seen["options_after"]["State"], "applied");
    assert_eq!(seen["options_after"]["HttpPutResponseHopLimit"], 2);

    // Tags, live in tags/instance/.
    assert_eq!(seen["tag_in_imds"], serde_json::json!([200, "payments"]));
    assert_eq!(seen["described_tags"][0]["Value"], "payments");
    assert_eq!(seen["described_tags"][0]["ResourceType"], "instance");
    assert_eq!(seen["unshowable_tag"], "InvalidParameterValue");
    assert_eq!(seen["tag_deleted"], 404);

    // Role associations: the role under iam/ follows.
    assert_eq!(seen["association_state"], "associated");
    assert_eq!(
        seen["role_after_replace"],
        serde_json::json!([200, "reporting"])
    );
    assert_eq!(seen["credentials_code"], "Success");
    assert_eq!(seen["stale_association"], "InvalidAssociationID.NotFound");
    assert_eq!(seen["role_after_disassociate"], 404);
    assert_eq!(
        seen["associated_arn"],
        "arn:aws:iam::123456789012:instance-profile/web"
    );
    assert_eq!(
        seen["role_after_associate"],
        serde_json::json!([200, "web"])
    );
    assert_eq!(seen["second_association"], "IncorrectState");

    // Account defaults and the HttpTokensEnforced guardrail.
    assert!(
        seen["defaults_before"].get("HttpTokens").is_none(),
        "{seen}"
    );
    assert_eq!(seen["defaults_after"]["HttpTokens"], "required");
    assert_eq!(seen["defaults_after"]["HttpTokensEnforced"], "enabled");
    assert_eq!(seen["optional_while_enforced"], "UnsupportedOperation");
    assert_eq!(seen["v1_while_enforced"], 401);
    served.stop("TERM");
}

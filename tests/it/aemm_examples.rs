//! AEMM's own documented examples, run against `imds aemm`: the commands and curl requests of
//! amazon-ec2-metadata-mock v1.13's README and docs (usage, configuration, defaults), with the
//! values AEMM documents for them. Each mock listens on a free port; `localhost:1338` in an
//! example becomes its address. Where imds answers differently on purpose (docs/aemm.md), the
//! test says so and asserts imds' documented answer.

use std::process::Command;

use crate::process::{Served, IMDS};

/// `imds aemm ARGS` on a free loopback port, with a clean AEMM environment and no config file.
fn mock(args: &[&str]) -> (Served, tempfile::TempDir) {
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new(IMDS);
    command
        .arg("aemm")
        .args(args)
        .args(["-n", "127.0.0.1", "-p", "0"])
        .env("HOME", home.path())
        .env_remove("IMDS_CONTROL_LISTEN");
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("AEMM_")) {
        command.env_remove(name);
    }
    (Served::spawn(command), home)
}

/// An example's shell line, with `localhost:1338` pointing at `served`: its stdout.
fn run(served: &Served, line: &str) -> String {
    let address = served.endpoints[0].trim_start_matches("http://");
    let line = line.replace("localhost:1338", address);
    let output = Command::new("sh").args(["-c", &line]).output().unwrap();
    assert!(output.status.success(), "{line}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// `curl -s ARGS` (the examples' curl, quiet), with the status code on a last line.
fn curl(served: &Served, args: &str) -> (u16, String) {
    let out = run(served, &format!("curl -s -w '\\n%{{http_code}}' {args}"));
    let (body, status) = out.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn the_readmes_listing_instance_id_and_static_values_are_aemms() {
    // `ec2-metadata-mock`, then `curl localhost:1338/latest/meta-data`.
    let (served, _home) = mock(&[]);
    let (status, listing) = curl(&served, "localhost:1338/latest/meta-data");
    assert_eq!(status, 200);
    let entries: Vec<&str> = listing.lines().collect();
    let aemm = [
        "ami-id",
        "ami-launch-index",
        "ami-manifest-path",
        "autoscaling/",
        "block-device-mapping/",
        "events/",
        "hostname",
        "iam/",
        "instance-action",
        "instance-id",
        "instance-life-cycle",
        "instance-type",
        "kernel-id",
        "local-hostname",
        "local-ipv4",
        "mac",
        "network/",
        "placement/",
        "product-codes",
        "public-hostname",
        "public-ipv4",
        "public-keys/",
        "ramdisk-id",
        "reservation-id",
        "security-groups",
        "services/",
        "spot/",
        "tags/",
    ];
    // With `-x` (default 2), imds lists `spot/` and `autoscaling/` to a client once it has asked
    // for one of them and is among the first two (docs/aemm.md); AEMM lists them to everyone.
    let admitted_later = ["autoscaling/", "spot/"];
    for entry in aemm.iter().filter(|e| !admitted_later.contains(e)) {
        assert!(entries.contains(entry), "{entry} missing from {entries:?}");
    }
    assert_eq!(
        curl(
            &served,
            "localhost:1338/latest/meta-data/spot/instance-action"
        )
        .0,
        200
    );
    let (_, listing) = curl(&served, "localhost:1338/latest/meta-data");
    let entries: Vec<&str> = listing.lines().collect();
    for entry in aemm {
        assert!(entries.contains(&entry), "{entry} missing from {entries:?}");
    }
    // Elastic Inference, which EC2 has retired, is the one entry imds does not serve.
    assert!(!entries.contains(&"elastic-inference/"));
    assert_eq!(
        curl(&served, "localhost:1338/latest/meta-data/instance-id"),
        (200, "i-1234567890abcdef0".into())
    );
}

/// AEMM v1.13's default values (docs/defaults.md) that imds serves alike, by path.
const DEFAULTS: &[(&str, &str)] = &[
    ("ami-id", "ami-0a887e401f7654935"),
    ("ami-launch-index", "0"),
    ("ami-manifest-path", "(unknown)"),
    ("block-device-mapping/ami", "/dev/xvda"),
    ("block-device-mapping/ebs0", "sdb"),
    ("block-device-mapping/ephemeral0", "sdb"),
    ("block-device-mapping/root", "/dev/xvda"),
    ("block-device-mapping/swap", "sdcs"),
    ("hostname", "ip-172-16-34-43.ec2.internal"),
    ("iam/security-credentials", "baskinc-role"),
    ("instance-action", "none"),
    ("instance-id", "i-1234567890abcdef0"),
    ("instance-type", "m4.xlarge"),
    ("kernel-id", "aki-5c21674b"),
    ("local-hostname", "ip-172-16-34-43.ec2.internal"),
    ("local-ipv4", "172.16.34.43"),
    ("mac", "0e:49:61:0f:c3:11"),
    (
        "network/interfaces/macs/0e:49:61:0f:c3:11/device-number",
        "0",
    ),
    (
        "network/interfaces/macs/0e:49:61:0f:c3:11/interface-id",
        "eni-0f95d3625f5c521cc",
    ),
    (
        "network/interfaces/macs/0e:49:61:0f:c3:11/ipv6s",
        "2001:db8:8:4::2",
    ),
    (
        "network/interfaces/macs/0e:49:61:0f:c3:11/local-hostname",
        "ip-172-16-34-43.ec2.internal",
    ),
    (
        "network/interfaces/macs/0e:49:61:0f:c3:11/local-ipv4s",
        "172.16.34.43",
    ),
    (
        "network/interfaces/macs/0e:49:61:0f:c3:11/mac",
        "0e:49:61:0f:c3:11",
    ),
    (
        "network/interfaces/macs/0e:49:61:0f:c3:11/network-card-index",
        "0",
    ),
    (
        "network/interfaces/macs/0e:49:61:0f:c3:11/public-hostname",
        "ec2-192-0-2-54.compute-1.amazonaws.com",
    ),
    (
        "network/interfaces/macs/0e:49:61:0f:c3:11/public-ipv4s",
        "192.0.2.54",
    ),
    (
        "network/interfaces/macs/0e:49:61:0f:c3:11/security-group-ids",
        "sg-0b07f8f6cb485d4df",
    ),
    (
        "network/interfaces/macs/0e:49:61:0f:c3:11/security-groups",
        "ura-launch-wizard-harry-1",
    ),
    (
        "network/interfaces/macs/0e:49:61:0f:c3:11/subnet-id",
        "subnet-0ac62554",
    ),
    (
        "network/interfaces/macs/0e:49:61:0f:c3:11/subnet-ipv6-cidr-blocks",
        "2001:db8::/32",
    ),
    (
        "network/interfaces/macs/0e:49:61:0f:c3:11/vpc-id",
        "vpc-d295a6a7",
    ),
    (
        "network/interfaces/macs/0e:49:61:0f:c3:11/vpc-ipv6-cidr-blocks",
        "2001:db8::/32",
    ),
    ("placement/availability-zone", "us-east-1a"),
    ("placement/availability-zone-id", "use1-az4"),
    ("placement/group-name", "a-placement-group"),
    ("placement/host-id", "h-0da999999f9999fb9"),
    ("placement/partition-number", "1"),
    ("placement/region", "us-east-1"),
    ("product-codes", "3iplms73etrdhxdepv72l6ywj"),
    ("public-hostname", "ec2-192-0-2-54.compute-1.amazonaws.com"),
    ("public-ipv4", "192.0.2.54"),
    ("ramdisk-id", "ari-01bb5768"),
    ("reservation-id", "r-046cb3eca3e201d2f"),
    ("security-groups", "ura-launch-wizard-harry-1"),
    ("services/domain", "amazonaws.com"),
    ("services/partition", "aws"),
    ("tags/instance/Name", "test-instance"),
    ("tags/instance/Test", "test-tag"),
];

#[test]
fn every_default_value_aemm_documents_is_served_alike() {
    let (served, _home) = mock(&[]);
    for (path, value) in DEFAULTS {
        let url = format!("localhost:1338/latest/meta-data/{path}");
        assert_eq!(curl(&served, &url), (200, (*value).to_owned()), "{path}");
    }
    let public_key = curl(
        &served,
        "localhost:1338/latest/meta-data/public-keys/0/openssh-key",
    );
    assert!(
        public_key
            .1
            .starts_with("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC/JxGByvHDHgQAU+0nRF")
            && public_key.1.ends_with("O/xcTt test"),
        "{public_key:?}"
    );
    let info = json(&curl(&served, "localhost:1338/latest/meta-data/iam/info").1);
    assert_eq!(info["Code"], "Success");
    assert_eq!(
        info["InstanceProfileArn"],
        "arn:aws:iam::896453262835:instance-profile/baskinc-role"
    );
    assert_eq!(info["InstanceProfileId"], "AIPA5BOGHHXZELSK34VU4");
    // The credentials have AEMM's shape; imds generates their values.
    let credentials = json(
        &curl(
            &served,
            "localhost:1338/latest/meta-data/iam/security-credentials/baskinc-role",
        )
        .1,
    );
    let keys: Vec<&str> = credentials
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "Code",
        "LastUpdated",
        "Type",
        "AccessKeyId",
        "SecretAccessKey",
        "Token",
        "Expiration",
    ] {
        assert!(keys.contains(&key), "{key} missing from {credentials}");
    }
    assert_eq!(credentials["Type"], "AWS-HMAC");
    let document = json(
        &curl(
            &served,
            "localhost:1338/latest/dynamic/instance-identity/document",
        )
        .1,
    );
    assert_eq!(document["instanceId"], "i-1234567890abcdef0");
    assert_eq!(document["instanceType"], "m4.xlarge");
    assert_eq!(document["region"], "us-east-1");
    assert_eq!(document["architecture"], "x86_64");
    assert_eq!(document["pendingTime"], "2019-10-31T07:02:24Z");
    assert_eq!(document["version"], "2017-09-30");
    assert_eq!(
        curl(
            &served,
            "localhost:1338/latest/dynamic/fws/instance-monitoring"
        ),
        (200, "disabled".into())
    );
    assert_eq!(
        curl(&served, "localhost:1338/latest/user-data"),
        (200, "1234,john,reboot,true\n".into())
    );
}

#[test]
fn the_readmes_spot_examples_answer_as_aemm_documents() {
    // `ec2-metadata-mock spot`: the notice at once, with AEMM's default action.
    let (served, _home) = mock(&["spot"]);
    let (status, notice) = curl(
        &served,
        "localhost:1338/latest/meta-data/spot/instance-action",
    );
    assert_eq!(status, 200);
    let notice = json(&notice);
    assert_eq!(notice["action"], "terminate");
    assert!(notice["time"].as_str().unwrap().ends_with('Z'), "{notice}");
    let rebalance = json(
        &curl(
            &served,
            "localhost:1338/latest/meta-data/events/recommendations/rebalance",
        )
        .1,
    );
    assert!(rebalance["noticeTime"].is_string(), "{rebalance}");
    drop(served);
    // `ec2-metadata-mock spot -d 10`: 404 before the delay has passed.
    let (served, _home) = mock(&["spot", "-d", "10"]);
    assert_eq!(
        curl(
            &served,
            "localhost:1338/latest/meta-data/spot/instance-action"
        )
        .0,
        404
    );
    drop(served);
    // docs/usage.md: `ec2-metadata-mock spot -a stop`.
    let (served, _home) = mock(&["spot", "-a", "stop"]);
    let notice = json(
        &curl(
            &served,
            "localhost:1338/latest/meta-data/spot/instance-action",
        )
        .1,
    );
    assert_eq!(notice["action"], "stop");
}

#[test]
fn the_readmes_events_example_has_aemms_code_state_id_and_times() {
    let (served, _home) = mock(&[
        "events",
        "--code",
        "instance-reboot",
        "-a",
        "2020-01-07T01:03:47Z",
        "-b",
        "2020-01-01T01:03:47Z",
        "-l",
        "2020-01-10T01:03:47Z",
        "--state",
        "completed",
    ]);
    // AEMM lists a completed event under `scheduled`; EC2, and imds, under `history`, with
    // days zero-padded (docs/aemm.md).
    let scheduled = curl(
        &served,
        "localhost:1338/latest/meta-data/events/maintenance/scheduled",
    );
    assert_eq!(scheduled, (200, "[]".into()));
    let history = json(
        &curl(
            &served,
            "localhost:1338/latest/meta-data/events/maintenance/history",
        )
        .1,
    );
    let event = &history[0];
    assert_eq!(event["Code"], "instance-reboot");
    assert_eq!(event["State"], "completed");
    assert_eq!(event["EventId"], "instance-event-1234567890abcdef0");
    assert_eq!(event["NotBefore"], "01 Jan 2020 01:03:47 GMT");
    assert_eq!(event["NotAfter"], "07 Jan 2020 01:03:47 GMT");
    assert_eq!(event["NotBeforeDeadline"], "10 Jan 2020 01:03:47 GMT");
}

#[test]
fn the_readmes_asglifecycle_example_is_terminated_at_once() {
    let (served, _home) = mock(&["asglifecycle"]);
    assert_eq!(
        curl(
            &served,
            "localhost:1338/latest/meta-data/autoscaling/target-lifecycle-state"
        ),
        (200, "Terminated".into())
    );
}

#[test]
fn the_readmes_imdsv2_examples_answer_401_the_mac_and_400() {
    let (served, _home) = mock(&["--imdsv2"]);
    assert_eq!(curl(&served, "localhost:1338/latest/meta-data/mac").0, 401);
    let mac = run(
        &served,
        "TOKEN=`curl -s -X PUT \"localhost:1338/latest/api/token\" -H \"X-aws-ec2-metadata-token-ttl-seconds: 21600\"` \
         && curl -s -H \"X-aws-ec2-metadata-token: $TOKEN\" localhost:1338/latest/meta-data/mac",
    );
    assert_eq!(mac, "0e:49:61:0f:c3:11");
    assert_eq!(
        curl(
            &served,
            "-X PUT \"localhost:1338/latest/api/token\" -H \"X-aws-ec2-metadata-token-ttl-seconds: 0\""
        )
        .0,
        400
    );
}

#[test]
fn the_configuration_docs_overrides_move_the_mac_its_paths_and_the_public_address() {
    // docs/configuration.md's config-overrides.json.
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("config-overrides.json");
    std::fs::write(
        &file,
        r#"{
  "metadata": {
    "values": {
      "mac": "0e:49:61:0f:c3:77",
      "public-ipv4": "54.92.157.77"
    }
  },
  "spot": {
    "action": "terminate",
    "time": "2020-01-07T01:03:47Z"
  }
}"#,
    )
    .unwrap();
    let (served, _home) = mock(&["-c", file.to_str().unwrap()]);
    let get = |path: &str| curl(&served, &format!("localhost:1338/latest/meta-data/{path}"));
    assert_eq!(get("mac").1, "0e:49:61:0f:c3:77");
    assert_eq!(get("public-ipv4").1, "54.92.157.77");
    // AEMM's static test: the interface's paths follow the MAC, its values stay.
    assert_eq!(
        get("network/interfaces/macs/0e:49:61:0f:c3:77/interface-id").1,
        "eni-0f95d3625f5c521cc"
    );
    assert_eq!(
        get("network/interfaces/macs/0e:49:61:0f:c3:11/interface-id").0,
        404
    );
    // ipv4-associations/PUBLIC answers the private address it maps to, as on EC2 (AEMM: the
    // public one).
    assert_eq!(
        get("network/interfaces/macs/0e:49:61:0f:c3:77/ipv4-associations/54.92.157.77").1,
        "172.16.34.43"
    );
    let notice = json(&get("spot/instance-action").1);
    assert_eq!(notice["time"], "2020-01-07T01:03:47Z");
}

#[test]
fn an_aemm_address_outside_the_default_network_starts_with_the_network_it_implies() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("aemm-config.json");
    std::fs::write(
        &file,
        r#"{"metadata": {"values": {"local-ipv4": "10.20.30.40"}}}"#,
    )
    .unwrap();
    let (served, _home) = mock(&["-c", file.to_str().unwrap()]);
    let get = |path: &str| {
        curl(
            &served,
            &format!(
                "localhost:1338/latest/meta-data/network/interfaces/macs/0e:49:61:0f:c3:11/{path}"
            ),
        )
        .1
    };
    assert_eq!(get("local-ipv4s"), "10.20.30.40");
    assert_eq!(get("subnet-ipv4-cidr-block"), "10.20.30.0/24");
    assert_eq!(get("vpc-ipv4-cidr-block"), "10.20.0.0/16");
    assert_eq!(get("local-hostname"), "ip-10-20-30-40.ec2.internal");
    drop(served);
    // AEMM's own subnet and VPC keys are honoured.
    let (served, _home) = {
        let mut command = Command::new(IMDS);
        command
            .args(["aemm", "-n", "127.0.0.1", "-p", "0"])
            .env("HOME", home.path())
            .env("AEMM_METADATA_VALUES_LOCAL_IPV4", "10.20.30.40")
            .env(
                "AEMM_METADATA_VALUES_MAC_SUBNET_IPV4_CIDR_BLOCK",
                "10.20.16.0/20",
            )
            .env(
                "AEMM_METADATA_VALUES_MAC_VPC_IPV4_CIDR_BLOCKS",
                "10.20.0.0/16",
            )
            .env_remove("IMDS_CONTROL_LISTEN");
        (Served::spawn(command), ())
    };
    let get = |path: &str| {
        curl(
            &served,
            &format!(
                "localhost:1338/latest/meta-data/network/interfaces/macs/0e:49:61:0f:c3:11/{path}"
            ),
        )
        .1
    };
    assert_eq!(get("subnet-ipv4-cidr-block"), "10.20.16.0/20");
    assert_eq!(get("vpc-ipv4-cidr-blocks"), "10.20.0.0/16");
    drop(served);
    // A subnet that does not hold the address is refused, naming both keys.
    let output = Command::new(IMDS)
        .args(["aemm", "-n", "127.0.0.1", "-p", "0"])
        .env("HOME", home.path())
        .env("AEMM_METADATA_VALUES_LOCAL_IPV4", "10.20.30.40")
        .env(
            "AEMM_METADATA_VALUES_MAC_SUBNET_IPV4_CIDR_BLOCK",
            "10.99.0.0/24",
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("metadata.values.local-ipv4 10.20.30.40 (from the environment variable AEMM_METADATA_VALUES_LOCAL_IPV4)")
            && stderr.contains("mac-subnet-ipv4-cidr-block 10.99.0.0/24"),
        "{stderr}"
    );
    assert!(!stderr.contains("built-in default"), "{stderr}");
}

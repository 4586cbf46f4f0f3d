//! `imds ctl` drives a fleet (`imds serve --fleet`) without the AWS CLI: `run` launches
//! instances into a loopback subnet, `list` shows them, `--instance-id` (or IMDS_INSTANCE_ID)
//! picks the instance that `options`, `tag`, `describe` and `fault` change, and `stop`, `start`
//! and `terminate` move them through EC2's states; each guest, calling from its instance's own
//! address, follows.

use std::process::Command;
use std::time::Duration;

use crate::fleet::{fleet_config, get, get_v2, serve_fleet, SUBNET};
use crate::process::{ctl, ctl_ok, Served, IMDS};

/// The instance configured in the file of [`fleet_config`], and its address.
const CONFIGURED: (&str, &str) = ("i-0aaaaaaaaaaaaaaa1", "127.16.0.10");

/// `imds ctl ARGS` with IMDS_INSTANCE_ID set: exit code, stdout and stderr.
fn ctl_as(served: &Served, instance: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(IMDS)
        .args(["ctl", "--endpoint", &served.control[0]])
        .args(args)
        .env("IMDS_INSTANCE_ID", instance)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The words of `list`'s (or `run`'s) line for `id`: id, state, address, Name, HttpTokens.
fn line_of(listed: &str, id: &str) -> Vec<String> {
    listed
        .lines()
        .find(|line| line.starts_with(id))
        .unwrap_or_else(|| panic!("no line for {id} in:\n{listed}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn imds_ctl_launches_lists_changes_and_terminates_instances_that_guests_follow() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve_fleet(&fleet_config(dir.path(), ""), &dir.path().join("state"));

    let launched = ctl_ok(
        &served,
        &[
            "run",
            "--count",
            "2",
            "--subnet-id",
            SUBNET,
            "--instance-type",
            "t3.micro",
            "--tag",
            "Name=web",
            "--tag",
            "Team=blue",
            "--http-tokens",
            "required",
            "--hop-limit",
            "2",
            "--user-data",
            "#!/bin/sh\necho hello",
        ],
    );
    let new: Vec<Vec<&str>> = launched
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(new.len(), 2, "{launched}");
    for words in &new {
        assert!(words[0].starts_with("i-"), "{launched}");
        assert_eq!(words[1], "pending", "{launched}");
        assert!(words[2].starts_with("127.16."), "{launched}");
        assert_eq!(&words[3..], ["web", "required"], "{launched}");
    }
    let (ids, ips): (Vec<&str>, Vec<&str>) = new.iter().map(|w| (w[0], w[2])).unzip();
    assert_ne!(ips[0], ips[1]);

    // Pending settles into running within half a second; `list` shows the whole fleet.
    std::thread::sleep(Duration::from_millis(600));
    let listed = ctl_ok(&served, &["list"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert_eq!(
        line_of(&listed, CONFIGURED.0),
        [
            CONFIGURED.0,
            "running",
            CONFIGURED.1,
            "imds-default",
            "optional"
        ]
    );
    for (id, ip) in ids.iter().zip(&ips) {
        assert_eq!(
            line_of(&listed, id),
            [*id, "running", *ip, "web", "required"]
        );
        assert_eq!(
            get_v2(&served, ip, "/latest/meta-data/instance-id"),
            (200, id.to_string())
        );
        assert_eq!(
            get_v2(&served, ip, "/latest/meta-data/instance-type"),
            (200, "t3.micro".into())
        );
        assert_eq!(
            get_v2(&served, ip, "/latest/user-data").1,
            "#!/bin/sh\necho hello"
        );
        assert_eq!(get(&served, ip, "/latest/meta-data/instance-id").0, 401);
    }

    // With many instances, a per-instance command must say which; nothing changes otherwise.
    let (code, _, stderr) = ctl(&served, &["options", "--http-tokens", "optional"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("serves 3 instances"), "{stderr}");
    assert!(stderr.contains("--instance-id"), "{stderr}");

    // --instance-id before or after the command: IMDSv1 back on for the first one only.
    let out = ctl_ok(
        &served,
        &[
            "--instance-id",
            ids[0],
            "options",
            "--http-tokens",
            "optional",
        ],
    );
    assert!(out.contains("HttpTokens=optional"), "{out}");
    assert_eq!(
        get(&served, ips[0], "/latest/meta-data/instance-id"),
        (200, ids[0].to_string())
    );
    assert_eq!(get(&served, ips[1], "/latest/meta-data/instance-id").0, 401);
    ctl_ok(
        &served,
        &[
            "options",
            "--instance-metadata-tags",
            "enabled",
            "--instance-id",
            ids[1],
        ],
    );

    // IMDS_INSTANCE_ID names the instance as well: a tag on the second one only.
    let (code, _, stderr) = ctl_as(&served, ids[1], &["tag", "Name=api"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        get_v2(&served, ips[1], "/latest/meta-data/tags/instance/Name"),
        (200, "api".into())
    );
    let listed = ctl_ok(&served, &["list"]);
    assert_eq!(line_of(&listed, ids[0])[3], "web");
    assert_eq!(line_of(&listed, ids[1])[3], "api");
    let described = ctl_ok(&served, &["describe", "--instance-id", ids[1]]);
    assert!(
        described.contains(&format!("instance {}", ids[1])),
        "{described}"
    );
    assert!(described.contains("Name=api"), "{described}");
    assert!(
        described.contains("InstanceMetadataTags=enabled"),
        "{described}"
    );

    // A fault on one instance is that instance's alone.
    ctl_ok(
        &served,
        &[
            "--instance-id",
            ids[0],
            "fault",
            "add",
            "--path",
            "/latest/meta-data/ami-id",
            "--status",
            "503",
        ],
    );
    assert_eq!(get(&served, ips[0], "/latest/meta-data/ami-id").0, 503);
    assert_eq!(
        get(&served, CONFIGURED.1, "/latest/meta-data/ami-id").0,
        200
    );
    let faults = ctl_ok(&served, &["--instance-id", CONFIGURED.0, "fault", "list"]);
    assert_eq!(faults, "no faults\n");

    // Stopped instances answer no guest until started; terminated ones never again.
    let stopped = ctl_ok(&served, &["stop", ids[1]]);
    assert_eq!(stopped, format!("{} running -> stopping\n", ids[1]));
    assert_eq!(get(&served, ips[1], "/latest/meta-data/instance-id").0, 403);
    std::thread::sleep(Duration::from_millis(600));
    let started = ctl_ok(&served, &["start", ids[1]]);
    assert_eq!(started, format!("{} stopped -> pending\n", ids[1]));
    assert_eq!(
        get_v2(&served, ips[1], "/latest/meta-data/instance-id"),
        (200, ids[1].to_string())
    );
    let terminated = ctl_ok(&served, &["terminate", ids[0]]);
    assert_eq!(terminated, format!("{} running -> shutting-down\n", ids[0]));
    assert_eq!(get(&served, ips[0], "/latest/meta-data/instance-id").0, 403);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        line_of(&ctl_ok(&served, &["list"]), ids[0])[1],
        "terminated"
    );
    let (code, _, stderr) = ctl(&served, &["start", ids[0]]);
    assert_ne!(code, 0);
    assert!(stderr.contains("IncorrectInstanceState"), "{stderr}");
    let (code, _, stderr) = ctl(&served, &["terminate", "i-0123456789abcdef0"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("InvalidInstanceID.NotFound"), "{stderr}");
}

#[test]
fn imds_ctl_run_takes_an_address_a_role_and_user_data_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve_fleet(&fleet_config(dir.path(), ""), &dir.path().join("state"));
    let user_data = dir.path().join("cloud-init.yaml");
    std::fs::write(&user_data, "#cloud-config\nhostname: db\n").unwrap();
    let launched = ctl_ok(
        &served,
        &[
            "run",
            "--subnet-id",
            SUBNET,
            "--private-ip",
            "127.16.0.50",
            "--role",
            "batch-worker",
            "--user-data",
            &format!("@{}", user_data.display()),
        ],
    );
    let words: Vec<&str> = launched.split_whitespace().collect();
    assert_eq!(words[2], "127.16.0.50", "{launched}");
    assert_eq!(
        &words[3..],
        ["-", "optional"],
        "EC2's launch defaults: {launched}"
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        get_v2(&served, "127.16.0.50", "/latest/user-data"),
        (200, "#cloud-config\nhostname: db\n".into())
    );
    assert_eq!(
        get_v2(
            &served,
            "127.16.0.50",
            "/latest/meta-data/iam/security-credentials/"
        ),
        (200, "batch-worker".into())
    );
    // The address is taken now; a file that is not there is named.
    let (code, _, stderr) = ctl(
        &served,
        &["run", "--subnet-id", SUBNET, "--private-ip", "127.16.0.50"],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("InvalidIPAddress.InUse"), "{stderr}");
    let (code, _, stderr) = ctl(&served, &["run", "--user-data", "@/nonexistent/file"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("/nonexistent/file"), "{stderr}");
}

#[test]
fn imds_ctl_help_shows_the_fleet_commands_with_examples() {
    let help = |args: &[&str]| {
        let output = Command::new(IMDS).args(args).output().unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap()
    };
    let top = help(&["ctl", "--help"]);
    for word in ["run", "list", "terminate", "stop", "start", "--instance-id"] {
        assert!(top.contains(word), "{word} missing from:\n{top}");
    }
    assert!(top.contains("IMDS_INSTANCE_ID"), "{top}");
    let run = help(&["ctl", "run", "--help"]);
    assert!(
        run.contains("imds ctl run --count 3 --tag Name=web"),
        "{run}"
    );
    assert!(run.contains("@FILE"), "{run}");
}

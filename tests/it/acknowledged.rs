//! Acknowledged control-plane changes are never undone by what happens to the config file: an
//! edit that makes one part of them invalid keeps every other part (HttpTokens, a removed
//! role), and an instance a SIGHUP adds to a fleet file starts from the changes stored for it,
//! then takes new ones; HttpTokens=optional racing HttpTokensEnforced never lands after
//! enforcement; and a RunInstances retried with its ClientToken after a restart launches nothing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::fleet::{fleet_config, get as get_from, serve_fleet};
use crate::process::{exchange, get, Served, IMDS};

/// The built-in instance.
const INSTANCE: &str = "i-0b4f7d2c9a1e83f56";

/// A control Query POST of `form` to `served`: status and body.
fn control(served: &Served, form: &str) -> (u16, String) {
    let form = format!("{form}&Version=2016-11-15");
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {{addr}}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    exchange(&served.control[0], &request).unwrap()
}

/// `control`, which must answer 200: its body.
fn control_ok(served: &Served, form: &str) -> String {
    let (status, xml) = control(served, form);
    assert_eq!(status, 200, "{form}: {xml}");
    xml
}

/// The text of the first `<name>` in `xml`.
fn first<'x>(xml: &'x str, name: &str) -> Option<&'x str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    Some(&xml[start..start + xml[start..].find('<')?])
}

/// Waits (at most 10 s) until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `imds serve --config CONFIG --state-dir STATE` of one instance.
fn serve_single(config: &Path, state: &Path) -> Served {
    let mut command = Command::new(IMDS);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--state-dir")
        .arg(state);
    Served::spawn(command)
}

fn described(served: &Served, id: &str) -> (u16, String) {
    control(
        served,
        &format!("Action=DescribeInstances&InstanceId.1={id}"),
    )
}

/// What guests and operators see of the single instance: IMDSv1's answer, DescribeInstances'
/// HttpTokens, the role served and the instance type.
fn single_seen(served: &Served) -> (u16, String, String, String) {
    let (v1, _) = get(served, "/latest/meta-data/instance-id");
    let xml = control_ok(
        served,
        &format!("Action=DescribeInstances&InstanceId.1={INSTANCE}"),
    );
    let tokens = first(&xml, "httpTokens").unwrap_or_default().to_owned();
    let kind = first(&xml, "instanceType").unwrap_or_default().to_owned();
    let associations = control_ok(served, "Action=DescribeIamInstanceProfileAssociations");
    let role = first(&associations, "arn").unwrap_or("none").to_owned();
    (v1, tokens, role, kind)
}

#[test]
fn a_file_edit_that_invalidates_tags_keeps_the_acknowledged_options_and_removed_role() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("imds.toml");
    let state = dir.path().join("state");
    std::fs::write(&config, "[instance]\ninstance_type = \"t3.small\"\n").unwrap();
    let served = serve_single(&config, &state);
    let associations = control_ok(&served, "Action=DescribeIamInstanceProfileAssociations");
    let association = first(&associations, "associationId").unwrap().to_owned();
    control_ok(
        &served,
        &format!("Action=DisassociateIamInstanceProfile&AssociationId={association}"),
    );
    control_ok(
        &served,
        &format!("Action=ModifyInstanceMetadataOptions&InstanceId={INSTANCE}&HttpTokens=required&InstanceMetadataTags=enabled"),
    );
    let acknowledged = (401, "required".to_owned(), "none".to_owned());

    // The file gains a tag that instance metadata tags cannot serve (a space in its key).
    std::fs::write(
        &config,
        "[instance]\ninstance_type = \"t3.large\"\n[instance.tags]\n\"Cost Center\" = \"42\"\n",
    )
    .unwrap();
    served.signal("HUP");
    eventually("the reload is applied", || {
        single_seen(&served).3 == "t3.large"
    });
    let (v1, tokens, role, _) = single_seen(&served);
    assert_eq!((v1, tokens, role), acknowledged, "after SIGHUP");
    let metrics = exchange(
        &served.control[0],
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
    )
    .unwrap()
    .1;
    assert!(
        metrics.contains("imds_changes_skipped_total{part=\"tags\"} 1"),
        "the operator sees the left-out tags: {metrics}"
    );
    let (_, log) = served.stop("TERM");
    assert!(
        log.contains("no longer fits") && log.contains("part=\"tags\""),
        "{log}"
    );

    // And at the next start from the same file and store.
    let served = serve_single(&config, &state);
    let (v1, tokens, role, kind) = single_seen(&served);
    assert_eq!((v1, tokens, role), acknowledged, "after a restart");
    assert_eq!(kind, "t3.large");
}

/// A second configured instance of the fleet file, at 127.16.0.11.
const ADDED: &str = "i-0aaaaaaaaaaaaaaa2";
const ADDED_IP: &str = "127.16.0.11";
const SECOND: &str = r#"
[[instances]]
instance_id = "i-0aaaaaaaaaaaaaaa2"
[[instances.network_interfaces]]
mac = "0e:8c:1f:6b:2d:36"
interface_id = "eni-0d9a1b7c3e5f24681"
subnet_id = "subnet-0a3e5c7b9d1f24681"
subnet_ipv4_cidr_block = "127.16.0.0/16"
vpc_id = "vpc-0c4f6a8e2b1d35792"
vpc_ipv4_cidr_blocks = ["127.0.0.0/8"]
private_ipv4s = ["127.16.0.11"]
security_groups = [{ name = "default", id = "sg-0e1f2a3b4c5d6e7f8" }]
"#;

#[test]
fn an_instance_a_sighup_adds_keeps_its_stored_http_tokens_and_takes_new_changes() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = fleet_config(dir.path(), SECOND);
    let served = serve_fleet(&config, &state);
    control_ok(
        &served,
        &format!("Action=ModifyInstanceMetadataOptions&InstanceId={ADDED}&HttpTokens=required"),
    );
    drop(served);

    // Restarted without the instance in its file, then the file brings it back.
    let config = fleet_config(dir.path(), "");
    let served = serve_fleet(&config, &state);
    assert_eq!(described(&served, ADDED).0, 400);
    let config = fleet_config(dir.path(), SECOND);
    served.signal("HUP");
    eventually("the added instance is served", || {
        described(&served, ADDED).0 == 200
    });
    let (_, xml) = described(&served, ADDED);
    assert_eq!(first(&xml, "httpTokens"), Some("required"), "{xml}");
    assert_eq!(
        get_from(&served, ADDED_IP, "/latest/meta-data/instance-id").0,
        401,
        "IMDSv1 stays off"
    );
    control_ok(
        &served,
        &format!("Action=CreateTags&ResourceId.1={ADDED}&Tag.1.Key=Name&Tag.1.Value=back"),
    );
    control_ok(
        &served,
        &format!(
            "Action=ModifyInstanceMetadataOptions&InstanceId={ADDED}&HttpPutResponseHopLimit=3"
        ),
    );
    drop(served);

    let served = serve_fleet(&config, &state);
    let (_, xml) = described(&served, ADDED);
    assert_eq!(first(&xml, "httpTokens"), Some("required"), "{xml}");
    assert_eq!(first(&xml, "httpPutResponseHopLimit"), Some("3"), "{xml}");
    assert!(xml.contains("<value>back</value>"), "{xml}");
}

/// The store revisions of the instance's row and of the account defaults' row in the state
/// directory `state`.
fn stored_revisions(state: &Path, instance: &str) -> (i64, i64) {
    let db = rusqlite::Connection::open(state.join("state.db")).unwrap();
    let revision =
        |sql: &str, key: &str| -> i64 { db.query_row(sql, [key], |r| r.get(0)).unwrap() };
    (
        revision(
            "SELECT revision FROM instance_changes WHERE instance_id = ?1",
            instance,
        ),
        revision(
            "SELECT revision FROM account WHERE name = ?1",
            "instance-metadata-defaults",
        ),
    )
}

/// Races `enforce` (turning HttpTokensEnforced on) against `optional` (turning IMDSv1 on)
/// `rounds` times from `required` and enforcement off, and checks after each that IMDSv1 was
/// turned on only before enforcement was stored: `revisions` gives the instance's and the
/// defaults' store revisions.
pub(crate) fn race_enforcement(
    rounds: usize,
    reset: impl Fn(),
    enforce: impl Fn() -> (u16, String) + Sync,
    optional: impl Fn() -> (u16, String) + Sync,
    revisions: impl Fn() -> (i64, i64),
) {
    let mut accepted = 0;
    for round in 0..rounds {
        reset();
        let barrier = std::sync::Barrier::new(2);
        let (enforced, turned_on) = std::thread::scope(|scope| {
            let a = scope.spawn(|| {
                barrier.wait();
                enforce()
            });
            let b = scope.spawn(|| {
                barrier.wait();
                optional()
            });
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!(enforced.0, 200, "round {round}: {}", enforced.1);
        match turned_on.0 {
            200 => {
                accepted += 1;
                let (instance, defaults) = revisions();
                assert!(
                    instance < defaults,
                    "round {round}: HttpTokens=optional (revision {instance}) was stored after HttpTokensEnforced=enabled (revision {defaults}) was acknowledged"
                );
            }
            _ => assert!(
                turned_on.1.contains("HttpTokensEnforced"),
                "round {round}: {}",
                turned_on.1
            ),
        }
    }
    println!("{accepted} of {rounds} rounds turned IMDSv1 on before enforcement");
}

#[test]
fn http_tokens_optional_racing_http_tokens_enforced_never_lands_after_enforcement() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let served = crate::process::serve(&["--state-dir", state.to_str().unwrap()]);
    let options = |tokens: &str| {
        format!("Action=ModifyInstanceMetadataOptions&InstanceId={INSTANCE}&HttpTokens={tokens}")
    };
    race_enforcement(
        30,
        || {
            control_ok(
                &served,
                "Action=ModifyInstanceMetadataDefaults&HttpTokensEnforced=disabled",
            );
            control_ok(&served, &options("required"));
        },
        || {
            control(
                &served,
                "Action=ModifyInstanceMetadataDefaults&HttpTokensEnforced=enabled",
            )
        },
        || control(&served, &options("optional")),
        || stored_revisions(&state, INSTANCE),
    );
}

/// `RunInstances` of one instance in the fleet's loopback subnet with `token`; `extra`
/// parameters are added.
fn run_with_token(served: &Served, token: &str, extra: &str) -> (u16, String) {
    control(
        served,
        &format!("Action=RunInstances&ImageId=ami-0abcdef1234567890&MinCount=1&MaxCount=1&SubnetId=subnet-0a3e5c7b9d1f24681&ClientToken={token}{extra}"),
    )
}

#[test]
fn a_run_instances_retry_with_the_same_client_token_after_a_restart_launches_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = fleet_config(dir.path(), "");
    let served = serve_fleet(&config, &state);
    let (status, xml) = run_with_token(&served, "retry-1", "");
    assert_eq!(status, 200, "{xml}");
    let launched = first(&xml, "instanceId").unwrap().to_owned();
    served.signal("KILL");
    drop(served);

    let served = serve_fleet(&config, &state);
    let (status, xml) = run_with_token(&served, "retry-1", "");
    assert_eq!(status, 200, "{xml}");
    assert_eq!(first(&xml, "instanceId"), Some(launched.as_str()));
    let (status, xml) = run_with_token(&served, "retry-1", "&InstanceType=t3.large");
    assert_eq!(status, 400, "{xml}");
    assert!(xml.contains("IdempotentParameterMismatch"), "{xml}");
    let all = control_ok(&served, "Action=DescribeInstances");
    assert_eq!(all.matches("<instanceId>").count(), 2, "{all}");
}

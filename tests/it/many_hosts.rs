//! Many imds hosts sharing one PostgreSQL inventory (a real server from Debian's packages, see
//! `postgres`): an instance launched through one host is served by another, tokens cross hosts,
//! changes flow both ways, concurrent changes lose nothing, keys rotate without refusing a live
//! token, the database can go away under guest load and come back, and `kill -9` during
//! writes loses nothing acknowledged.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::control::aws;
use crate::fleet::{fleet_config, get, get_v2, guest, run_one};
use crate::postgres::Postgres;
use crate::process::{ctl_ok, exchange, Served, IMDS};

/// The configured instance of [`fleet_config`].
pub(crate) const CONFIGURED: &str = "i-0aaaaaaaaaaaaaaa1";
pub(crate) const CONFIGURED_IP: &str = "127.16.0.10";

/// `imds serve` of the fleet in `config`, keeping everything in the database `url`.
pub(crate) fn host(config: &std::path::Path, url: &str) -> Served {
    let mut command = Command::new(IMDS);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .args(["--store", url]);
    Served::spawn(command)
}

/// A control Query POST of `params` to `served`: status and body.
pub(crate) fn control(served: &Served, params: &str) -> (u16, String) {
    let body = format!("{params}&Version=2016-11-15");
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {{addr}}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(&served.control[0], &request).unwrap()
}

/// Waits (at most 10 s) until `check` holds; how long it took.
pub(crate) fn eventually(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn tag_keys(served: &Served, instance: &str) -> Vec<String> {
    let (status, xml) = control(
        served,
        &format!("Action=DescribeTags&Filter.1.Name=resource-id&Filter.1.Value.1={instance}"),
    );
    assert_eq!(status, 200, "{xml}");
    let mut keys: Vec<String> = xml
        .split("<key>")
        .skip(1)
        .map(|rest| rest.split("</key>").next().unwrap().to_owned())
        .collect();
    keys.sort();
    keys
}

/// The key generation that sealed `token` (its 18th byte).
fn generation_of(token: &str) -> u8 {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .unwrap()[17]
}

pub(crate) fn health(served: &Served) -> String {
    let request = "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n";
    exchange(&served.control[0], request).unwrap().1
}

#[test]
#[ignore = "needs the AWS CLI and PostgreSQL: run scripts/test"]
fn an_instance_launched_through_one_host_is_served_by_another_with_its_tokens() {
    let pg = Postgres::start();
    let url = pg.database("fleet");
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let a = host(&config, &url);
    let b = host(&config, &url);

    let launched = run_one(
        &a,
        &[
            "--tag-specifications",
            "ResourceType=instance,Tags=[{Key=Name,Value=shared}]",
        ],
    )
    .unwrap();
    let instance = &launched["Instances"][0];
    let id = instance["InstanceId"].as_str().unwrap().to_owned();
    let ip = instance["PrivateIpAddress"].as_str().unwrap().to_owned();
    let learned = eventually("host B serves the instance launched through A", || {
        get(&b, &ip, "/latest/meta-data/instance-id") == (200, id.clone())
    });
    println!("launch through A answered by B's guest API after {learned:?}");
    let described = aws(&b, &["describe-instances", "--instance-ids", &id]).unwrap();
    assert_eq!(
        described["Reservations"][0]["Instances"][0]["Tags"][0]["Value"],
        "shared"
    );

    // A token from host A is good at host B (and the other way round).
    let (status, token) = guest(
        &a,
        &ip,
        "PUT /latest/api/token HTTP/1.1\r\nHost: {addr}\r\nX-aws-ec2-metadata-token-ttl-seconds: 300\r\n\r\n",
    );
    assert_eq!(status, 200);
    let with_token = format!(
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: {{addr}}\r\nX-aws-ec2-metadata-token: {token}\r\n\r\n"
    );
    assert_eq!(guest(&b, &ip, &with_token), (200, id.clone()));
    assert_eq!(
        get_v2(&b, CONFIGURED_IP, "/latest/meta-data/instance-id").1,
        CONFIGURED
    );

    // A change through B reaches A's guests and A's API.
    aws(
        &b,
        &[
            "modify-instance-metadata-options",
            "--instance-id",
            &id,
            "--http-tokens",
            "required",
        ],
    )
    .unwrap();
    eventually("host A enforces the change made through B", || {
        get(&a, &ip, "/latest/meta-data/instance-id").0 == 401
    });
    let described = aws(&a, &["describe-instances", "--instance-ids", &id]).unwrap();
    assert_eq!(
        described["Reservations"][0]["Instances"][0]["MetadataOptions"]["HttpTokens"],
        "required"
    );
    assert_eq!(guest(&a, &ip, &with_token), (200, id.clone()));

    // Terminated through A: B stops answering and gives the address back too.
    aws(&a, &["terminate-instances", "--instance-ids", &id]).unwrap();
    eventually("host B stops serving the terminated instance", || {
        get(&b, &ip, "/latest/meta-data/instance-id").0 == 403
    });
}

#[test]
#[ignore = "needs PostgreSQL: run scripts/test"]
fn three_hosts_started_together_migrate_once_and_lose_no_acknowledged_change() {
    let pg = Postgres::start();
    let url = pg.database("race");
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    // Started together on the new database: one migrates, the others wait for it.
    let hosts: Vec<Served> = std::thread::scope(|scope| {
        let starting: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| host(&config, &url)))
            .collect();
        starting.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let initial = tag_keys(&hosts[0], CONFIGURED);
    let acknowledged: Vec<Vec<String>> = std::thread::scope(|scope| {
        let writers: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(h, served)| {
                scope.spawn(move || {
                    let mut acked = Vec::new();
                    for n in 0..15 {
                        let key = format!("h{h}-{n:02}");
                        let (status, body) = control(
                            served,
                            &format!("Action=CreateTags&ResourceId.1={CONFIGURED}&Tag.1.Key={key}&Tag.1.Value=v"),
                        );
                        assert_eq!(status, 200, "{body}");
                        acked.push(key);
                    }
                    acked
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let written: Vec<String> = acknowledged.into_iter().flatten().collect();
    assert_eq!(written.len(), 45);
    let mut expected: Vec<String> = written.iter().cloned().chain(initial).collect();
    expected.sort();
    for served in &hosts {
        eventually("every host has every acknowledged tag", || {
            tag_keys(served, CONFIGURED) == expected
        });
    }
    let stored = pg.psql(
        "race",
        &format!("SELECT changes FROM instance_changes WHERE instance_id = '{CONFIGURED}'"),
    );
    for key in &expected {
        assert!(
            stored.contains(&format!("\"{key}\"")),
            "{key} missing from {stored}"
        );
    }
}

#[test]
#[ignore = "needs PostgreSQL: run scripts/test"]
fn a_key_rotation_through_one_host_keeps_every_live_token_valid_on_all() {
    let pg = Postgres::start();
    let url = pg.database("keys");
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let a = host(&config, &url);
    let b = host(&config, &url);
    let put = "PUT /latest/api/token HTTP/1.1\r\nHost: {addr}\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\n\r\n";
    let read = |served: &Served, token: &str| {
        guest(
            served,
            CONFIGURED_IP,
            &format!("GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: {{addr}}\r\nX-aws-ec2-metadata-token: {token}\r\n\r\n"),
        )
        .0
    };
    let (_, before) = guest(&a, CONFIGURED_IP, put);
    assert_eq!(read(&b, &before), 200);
    let rotated = ctl_ok(&b, &["rotate-keys"]);
    assert!(
        rotated.contains("generation 1 seals new tokens; accepted: 1, 0"),
        "{rotated}"
    );
    // A learns the new generation and seals with it; both accept both generations.
    eventually("host A seals with the new key", || {
        let (_, after) = guest(&a, CONFIGURED_IP, put);
        generation_of(&after) == 1 && read(&b, &after) == 200
    });
    assert_eq!(generation_of(&before), 0);
    assert_eq!(read(&a, &before), 200);
    assert_eq!(read(&b, &before), 200);
    let names = pg.psql(
        "keys",
        "SELECT string_agg(name, ',' ORDER BY name) FROM keys",
    );
    assert_eq!(names, "identity.pem,token-key/1,token.key");
    // A restarted host starts with both generations.
    drop(a);
    let a = host(&config, &url);
    assert_eq!(read(&a, &before), 200);
}

#[test]
#[ignore = "needs PostgreSQL: run scripts/test"]
fn guests_are_served_while_the_database_is_away_and_changes_flow_again_after() {
    let pg = Postgres::start();
    let url = pg.database("outage");
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let a = host(&config, &url);
    let b = host(&config, &url);
    assert_eq!(health(&a), "ok\n");
    let initial = tag_keys(&a, CONFIGURED);

    let stop = AtomicBool::new(false);
    let (served, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|scope| {
        for served_host in [&a, &b] {
            let (stop, served, failed) = (&stop, &served, &failed);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match get(served_host, CONFIGURED_IP, "/latest/meta-data/instance-id") {
                        (200, id) if id == CONFIGURED => served.fetch_add(1, Ordering::Relaxed),
                        (status, body) => {
                            eprintln!("guest request failed: {status} {body}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    // Paced below the instance's default request budget (1024/s): what
                    // is measured is the store's outage, not the throttle.
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
        }
        // Whatever fails, the load stops (else the scope would wait for it forever).
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pg.stop();
            eventually("host A reports the store degraded", || {
                health(&a).starts_with("degraded")
            });
            let said = health(&a);
            assert!(
                said.contains("unreachable") && said.contains("127.0.0.1"),
                "{said}"
            );
            assert!(!said.contains("password"), "{said}");
            let asked = Instant::now();
            let (status, body) = control(
                &a,
                &format!(
                    "Action=CreateTags&ResourceId.1={CONFIGURED}&Tag.1.Key=during&Tag.1.Value=x"
                ),
            );
            let refused_in = asked.elapsed();
            assert_eq!(status, 503, "{body}");
            assert!(body.contains("<Code>Unavailable</Code>"), "{body}");
            assert!(
                refused_in < Duration::from_secs(1),
                "refused after {refused_in:?}"
            );
            // Reads still answer, from memory.
            assert_eq!(tag_keys(&b, CONFIGURED), initial);
            std::thread::sleep(Duration::from_millis(500));
            pg.start_server();
            eventually("host A reconnects", || health(&a) == "ok\n");
            eventually("host B reconnects", || health(&b) == "ok\n");
        }));
        stop.store(true, Ordering::Relaxed);
        if let Err(panic) = checked {
            std::panic::resume_unwind(panic);
        }
    });
    let (served, failed) = (served.into_inner(), failed.into_inner());
    println!("guest requests during the outage: {served} served, {failed} failed");
    assert_eq!(failed, 0);
    assert!(served > 100, "{served}");

    let (status, body) = control(
        &a,
        &format!("Action=CreateTags&ResourceId.1={CONFIGURED}&Tag.1.Key=after&Tag.1.Value=x"),
    );
    assert_eq!(status, 200, "{body}");
    eventually("the change after the outage reaches host B", || {
        tag_keys(&b, CONFIGURED).contains(&"after".to_owned())
    });
}

#[test]
#[ignore = "needs PostgreSQL: run scripts/test"]
fn kill_9_during_writes_loses_nothing_acknowledged() {
    let pg = Postgres::start();
    let url = pg.database("crash");
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let mut a = host(&config, &url);
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let endpoint = a.control[0].clone();
    let writer = {
        let acknowledged = acknowledged.clone();
        std::thread::spawn(move || {
            for n in 0.. {
                let body = format!("Action=CreateTags&ResourceId.1={CONFIGURED}&Tag.1.Key=k{n:04}&Tag.1.Value=v&Version=2016-11-15");
                let request = format!(
                    "POST / HTTP/1.1\r\nHost: {{addr}}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                match exchange(&endpoint, &request) {
                    Ok((200, _)) => acknowledged.lock().unwrap().push(format!("k{n:04}")),
                    _ => return,
                }
            }
        })
    };
    eventually("some writes are acknowledged", || {
        acknowledged.lock().unwrap().len() >= 20
    });
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    writer.join().unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let b = host(&config, &url);
    let kept = tag_keys(&b, CONFIGURED);
    for key in &acknowledged {
        assert!(kept.contains(key), "acknowledged {key} was lost");
    }
    println!(
        "{} acknowledged before kill -9, {} kept",
        acknowledged.len(),
        kept.len()
    );
}

#[test]
#[ignore = "needs PostgreSQL: run scripts/test"]
fn a_host_does_not_start_without_its_database_or_with_a_newer_schema() {
    let pg = Postgres::start();
    let url = pg.database("start");
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let run = |url: &str| {
        Command::new(IMDS)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .args(["--store", url])
            .env("IMDS_CONTROL_LISTEN", "127.0.0.1:0")
            .output()
            .unwrap()
    };
    drop(host(&config, &url));
    pg.psql("start", "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (99, 'future', '2030-01-01', '0')");
    let newer = run(&url);
    let said = String::from_utf8_lossy(&newer.stderr);
    assert!(!newer.status.success());
    assert!(
        said.contains("migration 99, newer than this imds"),
        "{said}"
    );
    pg.stop();
    let away = run(&format!(
        "postgres://imds:hunter2@127.0.0.1:{}/start",
        pg.port
    ));
    let said = String::from_utf8_lossy(&away.stderr);
    assert!(!away.status.success());
    assert!(said.contains("cannot connect"), "{said}");
    assert!(
        !said.contains("hunter2"),
        "the password is never shown: {said}"
    );
}

#[test]
#[ignore = "needs PostgreSQL and openssl: run scripts/test"]
fn a_signing_key_rotated_through_one_host_signs_every_hosts_documents_and_its_history_is_kept() {
    let pg = Postgres::start();
    let url = pg.database("signing");
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let a = host(&config, &url);
    let b = host(&config, &url);
    let document = "/latest/dynamic/instance-identity/document";
    let signature = "/latest/dynamic/instance-identity/signature";
    let before = get_v2(&a, CONFIGURED_IP, signature).1;
    let said = ctl_ok(&b, &["rotate-keys", "--signing-key"]);
    assert!(said.contains("signing key generation 1 signs"), "{said}");
    eventually("host A signs with the new key", || {
        get_v2(&a, CONFIGURED_IP, signature).1 != before
    });
    let cert = |extra: &[&str]| {
        let output = Command::new(IMDS)
            .args(["cert", "--store", &url])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let all = cert(&["--all"]);
    assert_eq!(all.matches("BEGIN CERTIFICATE").count(), 2, "{all}");
    let newest = cert(&[]);
    assert!(all.ends_with(&newest) && !all.starts_with(&newest));
    // openssl verifies host A's new signature with the newest certificate.
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("cert.pem"), &newest).unwrap();
    std::fs::write(
        work.path().join("document"),
        get_v2(&a, CONFIGURED_IP, document).1,
    )
    .unwrap();
    std::fs::write(
        work.path().join("sig.b64"),
        get_v2(&a, CONFIGURED_IP, signature).1,
    )
    .unwrap();
    let verified = Command::new("sh")
        .arg("-c")
        .arg("openssl x509 -pubkey -noout -in cert.pem > pubkey.pem && base64 -d sig.b64 > sig.bin && openssl dgst -sha256 -verify pubkey.pem -signature sig.bin document")
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
}

#[test]
#[ignore = "needs PostgreSQL: run scripts/test"]
fn http_tokens_optional_on_one_host_never_lands_after_enforcement_on_another() {
    let pg = Postgres::start();
    let url = pg.database("enforced");
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let a = host(&config, &url);
    let b = host(&config, &url);
    let options = |tokens: &str| {
        format!("Action=ModifyInstanceMetadataOptions&InstanceId={CONFIGURED}&HttpTokens={tokens}")
    };
    let revision = |sql: &str| pg.psql("enforced", sql).parse::<i64>().unwrap();
    crate::acknowledged::race_enforcement(
        20,
        || {
            let (status, xml) = control(
                &a,
                "Action=ModifyInstanceMetadataDefaults&HttpTokensEnforced=disabled",
            );
            assert_eq!(status, 200, "{xml}");
            let (status, xml) = control(&b, &options("required"));
            assert_eq!(status, 200, "{xml}");
        },
        || {
            control(
                &a,
                "Action=ModifyInstanceMetadataDefaults&HttpTokensEnforced=enabled",
            )
        },
        || control(&b, &options("optional")),
        || {
            (
                revision(&format!(
                    "SELECT revision FROM instance_changes WHERE instance_id = '{CONFIGURED}'"
                )),
                revision("SELECT revision FROM account WHERE name = 'instance-metadata-defaults'"),
            )
        },
    );
}

#[test]
#[ignore = "needs PostgreSQL: run scripts/test"]
fn a_run_instances_retried_through_another_host_with_its_client_token_launches_nothing_new() {
    let pg = Postgres::start();
    let url = pg.database("tokens");
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let a = host(&config, &url);
    let b = host(&config, &url);
    let launch = "Action=RunInstances&ImageId=ami-0abcdef1234567890&MinCount=1&MaxCount=1&SubnetId=subnet-0a3e5c7b9d1f24681&ClientToken=once";
    let id = |xml: &str| xml.split("<instanceId>").nth(1).map(|r| r[..19].to_owned());
    let (status, first) = control(&a, launch);
    assert_eq!(status, 200, "{first}");
    let (status, again) = control(&b, launch);
    assert_eq!(status, 200, "{again}");
    assert_eq!(id(&again), id(&first));
    assert_eq!(
        pg.psql("tokens", "SELECT count(*) FROM launched_instances"),
        "1"
    );
}

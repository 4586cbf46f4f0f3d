//! SIGHUP racing control changes on `imds serve --fleet --state-dir`: while one client streams
//! CreateTags with increasing values and another toggles ModifyInstanceMetadataOptions on an
//! instance of the config file, the file keeps changing that instance's type and imds is sent
//! SIGHUP after each change. No acknowledged change may be lost to a reload: each client reads
//! its own change back at once (DescribeInstances and the guest API), and at the end the last
//! acknowledged tag and options are what DescribeInstances, the guest API and a restart from the
//! store show, with the file's last instance type.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::fleet::{get, get_v2, SUBNET};
use crate::process::{Served, IMDS};

const INSTANCE: &str = "i-0aaaaaaaaaaaaaaa1";
const ADDRESS: &str = "127.16.0.10";
/// How long the churn lasts.
const CHURN: Duration = Duration::from_secs(2);

/// The fleet file: one instance at [`ADDRESS`] whose type is `instance_type`, written whole
/// and renamed into place, so that a reload never reads half a file.
fn write_config(file: &Path, instance_type: &str) {
    let text = format!(
        r#"[server]
fleet = true

[[instances]]
instance_id = "{INSTANCE}"
instance_type = "{instance_type}"
[instances.metadata_options]
instance_metadata_tags = "enabled"
[[instances.network_interfaces]]
mac = "0e:8c:1f:6b:2d:35"
interface_id = "eni-0d9a1b7c3e5f24680"
subnet_id = "{SUBNET}"
subnet_ipv4_cidr_block = "127.16.0.0/16"
vpc_id = "vpc-0c4f6a8e2b1d35792"
vpc_ipv4_cidr_blocks = ["127.0.0.0/8"]
private_ipv4s = ["{ADDRESS}"]
security_groups = [{{ name = "default", id = "sg-0e1f2a3b4c5d6e7f8" }}]
"#
    );
    let partial = file.with_extension("toml.partial");
    std::fs::write(&partial, text).unwrap();
    std::fs::rename(&partial, file).unwrap();
}

/// `imds serve --fleet` of `config` with `state`, its stderr read all along (hundreds of
/// reloads and changes log more than a pipe holds, and a full pipe would stop the server).
fn serve(config: &Path, state: &Path) -> (Served, std::thread::JoinHandle<String>) {
    let mut command = std::process::Command::new(IMDS);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--state-dir")
        .arg(state);
    let mut served = Served::spawn(command);
    let mut stderr = served.child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    (served, log)
}

/// One unsigned EC2 Query request to the control API: the status and XML.
fn control(served: &Served, params: &[(&str, &str)]) -> (u16, String) {
    let addr = served.control[0].trim_start_matches("http://");
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .append_pair("Version", "2016-11-15")
        .finish();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let xml = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, xml.to_owned())
}

/// The text of the first `<name>` after `marker` in `xml`.
fn after<'x>(xml: &'x str, marker: &str, name: &str) -> Option<&'x str> {
    let rest = &xml[xml.find(marker)? + marker.len()..];
    let open = format!("<{name}>");
    let start = rest.find(&open)? + open.len();
    Some(&rest[start..start + rest[start..].find('<')?])
}

/// What DescribeInstances shows of the instance: the Counter tag, HttpTokens, the hop limit
/// and the instance type.
#[derive(Debug, PartialEq)]
struct Shown {
    counter: Option<String>,
    http_tokens: String,
    hop_limit: String,
    instance_type: String,
}

fn describe(served: &Served) -> Shown {
    let (status, xml) = control(
        served,
        &[("Action", "DescribeInstances"), ("InstanceId.1", INSTANCE)],
    );
    assert_eq!(status, 200, "{xml}");
    Shown {
        counter: after(&xml, "<key>Counter</key>", "value").map(str::to_owned),
        http_tokens: after(&xml, "<metadataOptions>", "httpTokens")
            .unwrap()
            .to_owned(),
        hop_limit: after(&xml, "<metadataOptions>", "httpPutResponseHopLimit")
            .unwrap()
            .to_owned(),
        instance_type: after(&xml, "<instanceId>", "instanceType")
            .unwrap()
            .to_owned(),
    }
}

/// What happened, in order, across the clients and the reloads.
struct Journal {
    start: Instant,
    lines: Mutex<Vec<String>>,
}

impl Journal {
    fn note(&self, what: String) {
        let at = self.start.elapsed().as_micros();
        self.lines
            .lock()
            .unwrap()
            .push(format!("{at:>8} µs {what}"));
    }

    /// The last `n` lines.
    fn tail(&self, n: usize) -> String {
        let lines = self.lines.lock().unwrap();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// The options the `n`th ModifyInstanceMetadataOptions sets.
fn options(n: u32) -> (&'static str, String) {
    let tokens = match n % 2 {
        0 => "required",
        _ => "optional",
    };
    (tokens, (1 + n % 64).to_string())
}

#[test]
fn sighup_reloads_racing_control_changes_lose_no_acknowledged_change() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fleet.toml");
    let state = dir.path().join("state");
    write_config(&config, "t3.small");
    let (served, log) = serve(&config, &state);
    let journal = Journal {
        start: Instant::now(),
        lines: Mutex::new(Vec::new()),
    };
    let stop = AtomicBool::new(false);
    let last_tag = Mutex::new(None::<u32>);
    let last_options = Mutex::new(None::<u32>);
    let types_seen = Mutex::new(std::collections::BTreeSet::new());
    let mut reloads = 0;

    let failure = std::thread::scope(|scope| {
        // CreateTags Counter=1, 2, 3, ...: each read back at once from both APIs.
        let tags = scope.spawn(|| -> Result<(), String> {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let value = n.to_string();
                let (status, xml) = control(
                    &served,
                    &[
                        ("Action", "CreateTags"),
                        ("ResourceId.1", INSTANCE),
                        ("Tag.1.Key", "Counter"),
                        ("Tag.1.Value", &value),
                    ],
                );
                if status != 200 {
                    return Err(format!("CreateTags Counter={n}: {status} {xml}"));
                }
                *last_tag.lock().unwrap() = Some(n);
                journal.note(format!("CreateTags Counter={n} acknowledged"));
                let shown = describe(&served).counter;
                let guest = get_v2(&served, ADDRESS, "/latest/meta-data/tags/instance/Counter");
                journal.note(format!(
                    "read back Counter: DescribeInstances {shown:?}, guest {guest:?}"
                ));
                if shown.as_deref() != Some(value.as_str()) || guest != (200, value.clone()) {
                    return Err(format!(
                        "Counter={n} acknowledged, then DescribeInstances shows {shown:?} and the guest {guest:?}"
                    ));
                }
            }
            Ok(())
        });
        // ModifyInstanceMetadataOptions toggling HttpTokens and moving the hop limit.
        let modify = scope.spawn(|| -> Result<(), String> {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (tokens, hops) = options(n);
                let (status, xml) = control(
                    &served,
                    &[
                        ("Action", "ModifyInstanceMetadataOptions"),
                        ("InstanceId", INSTANCE),
                        ("HttpTokens", tokens),
                        ("HttpPutResponseHopLimit", &hops),
                        ("InstanceMetadataTags", "enabled"),
                    ],
                );
                if status != 200 {
                    return Err(format!("ModifyInstanceMetadataOptions #{n}: {status} {xml}"));
                }
                *last_options.lock().unwrap() = Some(n);
                journal.note(format!(
                    "ModifyInstanceMetadataOptions #{n} HttpTokens={tokens} hop limit {hops} acknowledged"
                ));
                let shown = describe(&served);
                let v1 = get(&served, ADDRESS, "/latest/meta-data/instance-id").0;
                journal.note(format!("read back options: {shown:?}, IMDSv1 {v1}"));
                types_seen
                    .lock()
                    .unwrap()
                    .insert(shown.instance_type.clone());
                let v1_expected = match tokens {
                    "required" => 401,
                    _ => 200,
                };
                if shown.http_tokens != tokens || shown.hop_limit != hops || v1 != v1_expected {
                    return Err(format!(
                        "#{n} HttpTokens={tokens} hop limit {hops} acknowledged, then DescribeInstances shows {shown:?} and IMDSv1 gets {v1}"
                    ));
                }
            }
            Ok(())
        });
        // The file changes the instance type; SIGHUP after each change.
        let deadline = Instant::now() + CHURN;
        while Instant::now() < deadline && !tags.is_finished() && !modify.is_finished() {
            reloads += 1;
            let instance_type = ["t3.medium", "t3.small"][reloads % 2];
            write_config(&config, instance_type);
            served.signal("HUP");
            journal.note(format!(
                "file instance_type={instance_type}, SIGHUP #{reloads}"
            ));
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
        let results = [tags.join(), modify.join()];
        results.into_iter().find_map(|result| match result {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(panic) => Some(format!("a client panicked: {panic:?}")),
        })
    });
    if let Some(why) = failure {
        served.signal("KILL");
        drop(served);
        let log = log.join().unwrap();
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .collect();
        panic!(
            "{why}\nthe last events:\n{}\nthe server's errors and warnings:\n{}",
            journal.tail(40),
            errors.join("\n")
        );
    }

    // The file's last change, applied by one more SIGHUP with no control change running.
    write_config(&config, "t3.xlarge");
    served.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while get_v2(&served, ADDRESS, "/latest/meta-data/instance-type").1 != "t3.xlarge" {
        assert!(Instant::now() < deadline, "the last SIGHUP was not applied");
        std::thread::sleep(Duration::from_millis(20));
    }
    let tag = last_tag.lock().unwrap().expect("a tag was acknowledged");
    let n = last_options
        .lock()
        .unwrap()
        .expect("options were acknowledged");
    assert!(reloads > 20, "only {reloads} reloads");
    // The reloads took effect while the changes streamed.
    let types_seen = types_seen.into_inner().unwrap();
    assert!(
        types_seen.contains("t3.small") && types_seen.contains("t3.medium"),
        "{types_seen:?}"
    );
    assert!(tag > 5 && n > 5, "only {tag} tags and {n} options changes");
    let (tokens, hops) = options(n);
    let expected = Shown {
        counter: Some(tag.to_string()),
        http_tokens: tokens.to_owned(),
        hop_limit: hops,
        instance_type: "t3.xlarge".to_owned(),
    };
    let check = |served: &Served, when: &str| {
        assert_eq!(describe(served), expected, "{when}");
        assert_eq!(
            get_v2(served, ADDRESS, "/latest/meta-data/tags/instance/Counter"),
            (200, tag.to_string()),
            "{when}"
        );
        assert_eq!(
            get_v2(served, ADDRESS, "/latest/meta-data/instance-type"),
            (200, "t3.xlarge".to_owned()),
            "{when}"
        );
        let v1 = get(served, ADDRESS, "/latest/meta-data/instance-id").0;
        assert_eq!(v1, if tokens == "required" { 401 } else { 200 }, "{when}");
    };
    check(&served, "after the churn");
    // The store kept exactly the acknowledged changes: a restart shows the same.
    served.signal("KILL");
    drop(served);
    let log = log.join().unwrap();
    assert!(!log.contains("ERROR"), "{log}");
    let (served, _log) = serve(&config, &state);
    check(&served, "after a restart from the store");
}

//! `--state-dir`: control-plane changes, keys and defaults survive restarts, including `kill -9`
//! in the middle of a stream of changes, and stay layered over the config file at SIGHUP.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::{exchange, Served, IMDS};

const INSTANCE: &str = "i-0b4f7d2c9a1e83f56";

/// `imds serve --state-dir STATE EXTRA...`.
fn serve(state: &Path, extra: &[&str]) -> Served {
    let mut args = vec!["--state-dir", state.to_str().unwrap()];
    args.extend_from_slice(extra);
    crate::process::serve(&args)
}

/// A control API Query request (form-encoded POST).
fn control(served: &Served, form: &str) -> std::io::Result<(u16, String)> {
    post(&served.control[0], form)
}

fn post(addr: &str, form: &str) -> std::io::Result<(u16, String)> {
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {{addr}}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    exchange(addr, &request)
}

fn get(served: &Served, path: &str, headers: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {{addr}}\r\n{headers}\r\n");
    exchange(&served.endpoints[0], &request).unwrap()
}

/// The text of every `<name>...</name>` in `xml`, in order.
fn elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(text, _)| text))
        .collect()
}

/// The instance's tags and hop limit as `DescribeInstances` shows them.
fn described(served: &Served) -> (BTreeMap<String, String>, u8) {
    let (status, xml) = control(served, "Action=DescribeInstances&Version=2016-11-15").unwrap();
    assert_eq!(status, 200, "{xml}");
    let tags = elements(&xml, "tagSet")[0];
    let tags = elements(tags, "key")
        .into_iter()
        .zip(elements(tags, "value"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let hops = elements(&xml, "httpPutResponseHopLimit")[0]
        .parse()
        .unwrap();
    (tags, hops)
}

/// A change a writer sent: acknowledged, or sent when the server died (it may or may not
/// have been made durable before the kill).
#[derive(Debug, Clone)]
enum Sent {
    Tag(String, String),
    Hops(u8),
}

/// Sends changes as fast as the server takes them until it dies; returns the acknowledged ones
/// in order and the one in flight at the kill.
fn write_until_killed(addr: String, round: usize) -> (Vec<Sent>, Option<Sent>) {
    let mut acknowledged = Vec::new();
    for i in 0usize.. {
        let change = match i % 2 {
            0 => Sent::Tag(format!("k{}", i % 14), format!("r{round}-{i}")),
            _ => Sent::Hops((i / 2 % 64 + 1) as u8),
        };
        let form = match &change {
            Sent::Tag(key, value) => format!(
                "Action=CreateTags&Version=2016-11-15&ResourceId.1={INSTANCE}&Tag.1.Key={key}&Tag.1.Value={value}"
            ),
            Sent::Hops(hops) => format!(
                "Action=ModifyInstanceMetadataOptions&Version=2016-11-15&InstanceId={INSTANCE}&HttpPutResponseHopLimit={hops}"
            ),
        };
        match post(&addr, &form) {
            Ok((200, _)) => acknowledged.push(change),
            Ok((status, body)) => panic!("change refused with {status}: {body}"),
            Err(_) => return (acknowledged, Some(change)),
        }
    }
    unreachable!()
}

#[test]
fn every_acknowledged_change_survives_kill_9_in_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut tags: BTreeMap<String, String> = BTreeMap::new();
    let mut hops = 1u8;
    let mut in_flight: Option<Sent> = None;
    let mut certificate = None;
    let mut token = None;
    let mut total = 0;
    for round in 0..8 {
        let served = serve(&state, &[]);
        let (shown_tags, shown_hops) = described(&served);
        // Every acknowledged change is there; the one in flight at the kill may be too.
        let mut expected = tags.clone();
        let mut expected_hops = hops;
        match &in_flight {
            Some(Sent::Tag(key, value)) if shown_tags.get(key) == Some(value) => {
                expected.insert(key.clone(), value.clone());
            }
            Some(Sent::Hops(h)) if shown_hops == *h => expected_hops = *h,
            _ => {}
        }
        for (key, value) in &expected {
            assert_eq!(shown_tags.get(key), Some(value), "round {round}: tag {key}");
        }
        assert_eq!(shown_hops, expected_hops, "round {round}: hop limit");
        (tags, hops) = (expected, expected_hops);
        // The keys are the same at every start: tokens and the certificate stay valid.
        let (_, document_signature) =
            get(&served, "/latest/dynamic/instance-identity/signature", "");
        let cert = certificate.get_or_insert(document_signature.clone());
        assert_eq!(*cert, document_signature, "round {round}: same signing key");
        let token = token.get_or_insert_with(|| {
            let (status, token) = exchange(
                &served.endpoints[0],
                "PUT /latest/api/token HTTP/1.1\r\nHost: {addr}\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\n\r\n",
            )
            .unwrap();
            assert_eq!(status, 200);
            token
        });
        let header = format!("X-aws-ec2-metadata-token: {token}\r\n");
        let (status, _) = get(&served, "/latest/meta-data/instance-id", &header);
        assert_eq!(
            status, 200,
            "round {round}: the first round's token is accepted"
        );

        let addr = served.control[0].clone();
        let writer = std::thread::spawn(move || write_until_killed(addr, round));
        std::thread::sleep(Duration::from_millis(150 + 97 * round as u64 % 300));
        let mut served = served;
        served.child.kill().unwrap();
        served.child.wait().unwrap();
        let (acknowledged, pending) = writer.join().unwrap();
        assert!(
            !acknowledged.is_empty(),
            "round {round}: some changes landed"
        );
        total += acknowledged.len();
        for change in acknowledged {
            match change {
                Sent::Tag(key, value) => {
                    tags.insert(key, value);
                }
                Sent::Hops(h) => hops = h,
            }
        }
        in_flight = pending;
    }
    assert!(total > 40, "only {total} changes in 8 rounds");
    let db = rusqlite::Connection::open(state.join("state.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn a_sighup_keeps_control_changes_over_the_reloaded_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("instance.toml");
    let config = |instance_type: &str| {
        format!(
            "[instance]\ninstance_type = \"{instance_type}\"\ntags = {{ Name = \"from-file\", Team = \"core\" }}\n\
             [instance.metadata_options]\ninstance_metadata_tags = \"enabled\"\n"
        )
    };
    std::fs::write(&file, config("m5.large")).unwrap();
    let state = dir.path().join("state");
    let served = serve(&state, &["--config", file.to_str().unwrap()]);
    let form = format!(
        "Action=CreateTags&Version=2016-11-15&ResourceId.1={INSTANCE}&Tag.1.Key=Name&Tag.1.Value=from-control"
    );
    assert_eq!(control(&served, &form).unwrap().0, 200);
    let form = format!(
        "Action=ModifyInstanceMetadataOptions&Version=2016-11-15&InstanceId={INSTANCE}&HttpTokens=required"
    );
    assert_eq!(control(&served, &form).unwrap().0, 200);

    std::fs::write(&file, config("c6i.xlarge")).unwrap();
    served.signal("HUP");
    let token = || {
        exchange(
            &served.endpoints[0],
            "PUT /latest/api/token HTTP/1.1\r\nHost: {addr}\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n",
        )
        .unwrap()
        .1
    };
    let header = format!("X-aws-ec2-metadata-token: {}\r\n", token());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while get(&served, "/latest/meta-data/instance-type", &header).1 != "c6i.xlarge" {
        assert!(std::time::Instant::now() < deadline, "reloaded within 5 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The file's new value, the control plane's tags (whole) and options.
    let name = get(&served, "/latest/meta-data/tags/instance/Name", &header);
    assert_eq!(name.1, "from-control");
    let listing = get(&served, "/latest/meta-data/tags/instance", &header).1;
    assert_eq!(listing, "Name\nTeam");
    assert_eq!(get(&served, "/latest/meta-data/instance-id", "").0, 401);

    // And after a restart with the same file.
    let (status, stderr) = served.stop("TERM");
    assert!(status.success(), "{stderr}");
    let served = serve(&state, &["--config", file.to_str().unwrap()]);
    assert_eq!(get(&served, "/latest/meta-data/instance-id", "").0, 401);
    let (status, stderr) = served.stop("TERM");
    assert!(status.success());
    assert!(
        stderr.contains("control-plane changes from the state directory"),
        "{stderr}"
    );
}

#[test]
fn account_defaults_and_role_associations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let served = serve(&state, &[]);
    let form = "Action=ModifyInstanceMetadataDefaults&Version=2016-11-15&HttpTokens=required&HttpTokensEnforced=enabled";
    assert_eq!(control(&served, form).unwrap().0, 200);
    let (_, listed) = control(
        &served,
        "Action=DescribeIamInstanceProfileAssociations&Version=2016-11-15",
    )
    .unwrap();
    let association = elements(&listed, "associationId")[0].to_owned();
    let form = format!(
        "Action=ReplaceIamInstanceProfileAssociation&Version=2016-11-15&AssociationId={association}&IamInstanceProfile.Name=reporting"
    );
    let (status, replaced) = control(&served, &form).unwrap();
    assert_eq!(status, 200, "{replaced}");
    let association = elements(&replaced, "associationId")[0].to_owned();
    served.stop("TERM");

    let served = serve(&state, &[]);
    let (_, defaults) = control(
        &served,
        "Action=GetInstanceMetadataDefaults&Version=2016-11-15",
    )
    .unwrap();
    assert_eq!(elements(&defaults, "httpTokensEnforced"), ["enabled"]);
    assert_eq!(elements(&defaults, "httpTokens"), ["required"]);
    let form = format!(
        "Action=ModifyInstanceMetadataOptions&Version=2016-11-15&InstanceId={INSTANCE}&HttpTokens=optional"
    );
    let (status, refused) = control(&served, &form).unwrap();
    assert_eq!(status, 400);
    assert!(refused.contains("UnsupportedOperation"), "{refused}");
    let role = get(&served, "/latest/meta-data/iam/security-credentials/", "");
    assert_eq!(role, (200, "reporting".to_owned()));
    let (_, listed) = control(
        &served,
        "Action=DescribeIamInstanceProfileAssociations&Version=2016-11-15",
    )
    .unwrap();
    assert_eq!(elements(&listed, "associationId"), [association.as_str()]);
}

#[test]
fn a_state_dir_that_is_not_a_directory_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let output = Command::new(IMDS)
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("plain-file"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_changes_to_the_account_defaults_both_survive() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let location = imds::store::Location::StateDir(dir.path().to_owned());
    let store = Arc::new(imds::store::Store::open(&location).await.unwrap());
    let loaded = imds::Config::load(None)
        .unwrap()
        .resolve(&Default::default(), None)
        .unwrap();
    let everything = store.load_since(-1).await.unwrap();
    let persisted = imds::control::Persisted::from_store(Some(store.clone()), everything).unwrap();
    let keys = crate::harness::keys_with(imds::fleet::secret::ServerSecret::random());
    let clock = Arc::new(imds::clock::SystemClock);
    let app = imds::App::new(loaded, &keys, clock, persisted, None)
        .expect("the test fleet has one owner per address");
    let modify = |fields: &str| {
        let body = format!("Action=ModifyInstanceMetadataDefaults&Version=2016-11-15&{fields}");
        let request = http::Request::post("/")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let control = app.control.clone();
        async move { control.handle(request).await.status() }
    };
    for round in 0..20 {
        let hops = 2 + round % 10;
        let (tokens, hop_limit) = tokio::join!(
            modify("HttpTokens=required"),
            modify(&format!("HttpPutResponseHopLimit={hops}"))
        );
        assert_eq!((tokens.as_u16(), hop_limit.as_u16()), (200, 200));
        let request = http::Request::post("/")
            .body(Full::new(Bytes::from_static(
                b"Action=GetInstanceMetadataDefaults&Version=2016-11-15",
            )))
            .unwrap();
        let answer = app
            .control
            .handle(request)
            .await
            .into_body()
            .collect()
            .await;
        let xml = String::from_utf8(answer.unwrap().to_bytes().to_vec()).unwrap();
        assert!(
            xml.contains("<httpTokens>required</httpTokens>"),
            "round {round}: {xml}"
        );
        assert!(
            xml.contains(&format!(
                "<httpPutResponseHopLimit>{hops}</httpPutResponseHopLimit>"
            )),
            "round {round}: {xml}"
        );
        // Reset for the next round, so each round can lose either change.
        assert_eq!(modify("HttpTokens=no-preference").await.as_u16(), 200);
    }
}

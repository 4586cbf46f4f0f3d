//! A change whose store connection is lost around its COMMIT: a proxy between imds and
//! PostgreSQL cuts the connection right after forwarding the `COMMIT` (PostgreSQL commits, imds
//! never hears so) or right before it (nothing commits). The client is told the outcome is
//! unknown (503 `Unavailable`, which SDKs retry), never where the database is; imds learns a
//! committed change from the store without a restart and never shows one that did not commit;
//! a `RunInstances` retried with its `ClientToken` launches nothing new.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::control::aws;
use crate::fleet::{fleet_config, get, SUBNET};
use crate::many_hosts::{control, eventually, health, host, CONFIGURED, CONFIGURED_IP};
use crate::postgres::Postgres;
use crate::process::Served;

/// Where the proxy cuts the write transaction it is armed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// The `COMMIT` reaches PostgreSQL; its answer never reaches imds.
    AfterCommit,
    /// The `COMMIT` never reaches PostgreSQL.
    BeforeCommit,
}

/// A TCP proxy in front of PostgreSQL that passes everything, except that once armed it cuts
/// the next write transaction's connection (one that notifies, i.e. a store write) at its
/// `COMMIT`. Connections made after that pass again.
struct Proxy {
    port: u16,
    armed: Arc<Mutex<Option<Cut>>>,
    cuts: Arc<AtomicUsize>,
    /// While set, PostgreSQL's answers and notifications are held back.
    held: Arc<AtomicBool>,
}

/// One proxied connection.
struct Link {
    client: TcpStream,
    server: TcpStream,
    /// Set once a `COMMIT` is forwarded whose answer is to be swallowed.
    swallow: AtomicBool,
    cut: AtomicBool,
}

impl Link {
    /// Drops the connection on both sides.
    fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(Mutex::new(None));
        let cuts = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(AtomicBool::new(false));
        let (arming, counting, holding) = (armed.clone(), cuts.clone(), held.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                // When PostgreSQL is away, the client's connection just closes.
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let link = Arc::new(Link {
                    client,
                    server,
                    swallow: AtomicBool::new(false),
                    cut: AtomicBool::new(false),
                });
                let (arming, counting, up) = (arming.clone(), counting.clone(), link.clone());
                let holding = holding.clone();
                std::thread::spawn(move || client_to_server(&up, &arming, &counting));
                std::thread::spawn(move || server_to_client(&link, &holding));
            }
        });
        Proxy {
            port,
            armed,
            cuts,
            held,
        }
    }

    /// Holds back (`true`) or passes again what PostgreSQL sends.
    fn hold(&self, held: bool) {
        self.held.store(held, Ordering::Release);
    }

    fn arm(&self, cut: Cut) {
        *self.armed.lock().unwrap() = Some(cut);
    }

    /// How many connections it cut.
    fn cuts(&self) -> usize {
        self.cuts.load(Ordering::Acquire)
    }
}

/// The length of the first whole frontend message in `buf`, if there is one. Before the
/// StartupMessage (`startup`), messages have no type byte.
fn next_message(buf: &[u8], startup: bool) -> Option<usize> {
    let at = usize::from(!startup);
    let len = buf.get(at..at + 4)?;
    let total = at + u32::from_be_bytes(len.try_into().unwrap()) as usize;
    (buf.len() >= total).then_some(total)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Forwards imds's messages to PostgreSQL one by one, watching for the armed `COMMIT`.
fn client_to_server(link: &Link, armed: &Mutex<Option<Cut>>, cuts: &AtomicUsize) {
    let (mut buf, mut chunk) = (Vec::new(), [0u8; 16384]);
    // The SSLRequest (answered `N`: the test server has no TLS) and the StartupMessage.
    let mut startup = true;
    // Whether the transaction under way notifies (every store write does, with pg_notify).
    let mut writing = false;
    loop {
        let n = match (&link.client).read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(len) = next_message(&buf, startup) {
            let message: Vec<u8> = buf.drain(..len).collect();
            if startup {
                let code = u32::from_be_bytes(message[4..8].try_into().unwrap());
                // SSLRequest and GSSENCRequest come before the StartupMessage.
                startup = matches!(code, 80877103 | 80877104);
            } else if message[0] == b'P' && contains(&message, b"pg_notify") {
                writing = true;
            } else if message[0] == b'Q' {
                let commit = &message[5..] == b"COMMIT\0";
                let cut = match commit && writing {
                    true => armed.lock().unwrap().take(),
                    false => None,
                };
                writing = false;
                match cut {
                    Some(Cut::BeforeCommit) => {
                        cuts.fetch_add(1, Ordering::AcqRel);
                        link.cut();
                        return;
                    }
                    Some(Cut::AfterCommit) => {
                        cuts.fetch_add(1, Ordering::AcqRel);
                        link.swallow.store(true, Ordering::Release);
                        let _ = (&link.server).write_all(&message);
                        // The other direction cuts once PostgreSQL answers; a backstop.
                        let deadline = Instant::now() + Duration::from_secs(5);
                        while !link.cut.load(Ordering::Acquire) && Instant::now() < deadline {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        link.cut();
                        return;
                    }
                    None => {}
                }
            }
            if (&link.server).write_all(&message).is_err() {
                link.cut();
                return;
            }
        }
    }
    link.cut();
}

/// Forwards PostgreSQL's answers (once `held` is unset); after a swallowed `COMMIT`, drops
/// them until PostgreSQL says it committed, then cuts.
fn server_to_client(link: &Link, held: &AtomicBool) {
    let (mut swallowed, mut chunk) = (Vec::new(), [0u8; 16384]);
    loop {
        let n = match (&link.server).read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if link.swallow.load(Ordering::Acquire) {
            swallowed.extend_from_slice(&chunk[..n]);
            // CommandComplete "COMMIT": the transaction is durable.
            if contains(&swallowed, b"C\0\0\0\x0bCOMMIT\0") {
                break;
            }
            continue;
        }
        while held.load(Ordering::Acquire) && !link.cut.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if (&link.client).write_all(&chunk[..n]).is_err() {
            break;
        }
    }
    link.cut();
}

/// The `<Message>` of an error document.
fn message(xml: &str) -> &str {
    xml.split("<Message>")
        .nth(1)
        .and_then(|rest| rest.split("</Message>").next())
        .unwrap_or("")
}

/// Asserts `answer` is the 503 `Unavailable` SDKs retry, saying the outcome is unknown, and
/// naming nothing of the database.
fn assert_outcome_unknown(answer: &(u16, String), hidden: &[&str]) {
    let (status, xml) = answer;
    assert_eq!(*status, 503, "{xml}");
    assert!(xml.contains("<Code>Unavailable</Code>"), "{xml}");
    let said = message(xml);
    assert!(
        said.starts_with("The outcome of this request is unknown")
            && said.contains("may have been applied"),
        "{xml}"
    );
    for detail in hidden {
        assert!(!said.contains(detail), "the answer names {detail}: {xml}");
    }
}

fn options(tokens: &str) -> String {
    format!("Action=ModifyInstanceMetadataOptions&InstanceId={CONFIGURED}&HttpTokens={tokens}")
}

/// The instance's options as DescribeInstances shows them.
fn described_tokens(served: &crate::process::Served, instance: &str) -> String {
    let (status, xml) = control(
        served,
        &format!("Action=DescribeInstances&InstanceId.1={instance}"),
    );
    assert_eq!(status, 200, "{xml}");
    xml.split("<httpTokens>")
        .nth(1)
        .and_then(|rest| rest.split("</httpTokens>").next())
        .unwrap_or_default()
        .to_owned()
}

/// A PostgreSQL cluster with database `db`, a proxy in front of it, and one fleet host that
/// reaches the database through the proxy (dropped in reverse: the host stops first).
fn one_host_behind_a_proxy(db: &str) -> (Postgres, Proxy, tempfile::TempDir, Served) {
    let pg = Postgres::start();
    pg.database(db);
    let proxy = Proxy::start(pg.port);
    let url = format!("postgres://imds@127.0.0.1:{}/{db}", proxy.port);
    let dir = tempfile::tempdir().unwrap();
    let a = host(&fleet_config(dir.path(), ""), &url);
    (pg, proxy, dir, a)
}

#[test]
#[ignore = "needs the AWS CLI and PostgreSQL: run scripts/test"]
fn a_change_cut_at_its_commit_is_reported_unknown_and_imds_follows_what_the_store_holds() {
    let (pg, proxy, _dir, a) = one_host_behind_a_proxy("cutdb");
    let (pg_port, proxy_port) = (pg.port.to_string(), proxy.port.to_string());
    let hidden = [
        pg_port.as_str(),
        proxy_port.as_str(),
        "cutdb",
        "imds@",
        "127.0.0.1",
        "postgres",
    ];
    let stored = || {
        pg.psql(
            "cutdb",
            &format!("SELECT changes FROM instance_changes WHERE instance_id = '{CONFIGURED}'"),
        )
    };
    let instance_id = "/latest/meta-data/instance-id";
    assert_eq!(
        get(&a, CONFIGURED_IP, instance_id),
        (200, CONFIGURED.to_owned())
    );

    // 1. Cut after COMMIT: PostgreSQL committed, imds cannot know.
    proxy.arm(Cut::AfterCommit);
    let answer = control(&a, &options("required"));
    assert_eq!(proxy.cuts(), 1, "the write's COMMIT was cut: {answer:?}");
    assert_outcome_unknown(&answer, &hidden);
    // 2. It did commit.
    let committed = stored();
    assert!(
        committed.contains(r#""http_tokens":"required""#),
        "{committed}"
    );
    // 3. imds learns it from the store, without a restart.
    let learned = eventually(
        "the guest API enforces the committed HttpTokens=required",
        || get(&a, CONFIGURED_IP, instance_id).0 == 401,
    );
    println!("the committed change was served {learned:?} after the cut answer");
    assert_eq!(described_tokens(&a, CONFIGURED), "required");
    eventually("the store is up again", || health(&a) == "ok\n");

    // 4. Cut before COMMIT: nothing commits, and imds shows nothing of it.
    proxy.arm(Cut::BeforeCommit);
    let answer = control(&a, &options("optional"));
    assert_eq!(proxy.cuts(), 2, "the write's COMMIT was cut: {answer:?}");
    // COMMIT was being sent when the connection went: imds cannot tell it never left.
    assert_outcome_unknown(&answer, &hidden);
    assert_eq!(stored(), committed, "nothing was committed");
    eventually("the store is up again", || health(&a) == "ok\n");
    // A later change commits on the new connection, on top of what the store holds.
    let (status, xml) = control(
        &a,
        &format!("Action=CreateTags&ResourceId.1={CONFIGURED}&Tag.1.Key=after&Tag.1.Value=cut"),
    );
    assert_eq!(status, 200, "{xml}");
    let now = stored();
    assert!(
        now.contains(r#""http_tokens":"required""#) && now.contains(r#""after":"cut""#),
        "{now}"
    );
    assert_eq!(get(&a, CONFIGURED_IP, instance_id).0, 401);
    assert_eq!(described_tokens(&a, CONFIGURED), "required");

    // The AWS CLI retries the 503 on its own, and its retry is applied once.
    proxy.arm(Cut::BeforeCommit);
    let changed = aws(
        &a,
        &[
            "modify-instance-metadata-options",
            "--instance-id",
            CONFIGURED,
            "--http-tokens",
            "optional",
        ],
    );
    assert_eq!(proxy.cuts(), 3, "the CLI's first attempt was cut");
    let changed = changed.expect("the AWS CLI retried the 503 and succeeded");
    assert_eq!(changed["InstanceMetadataOptions"]["HttpTokens"], "optional");
    assert!(stored().contains(r#""http_tokens":"optional""#));
    assert_eq!(
        get(&a, CONFIGURED_IP, instance_id),
        (200, CONFIGURED.to_owned())
    );
}

#[test]
#[ignore = "needs PostgreSQL: run scripts/test"]
fn a_run_instances_cut_after_its_commit_and_retried_with_its_client_token_launches_once() {
    let (pg, proxy, _dir, a) = one_host_behind_a_proxy("launchdb");
    let launch = format!("Action=RunInstances&ImageId=ami-0abcdef1234567890&MinCount=1&MaxCount=1&SubnetId={SUBNET}&ClientToken=cut-once");
    let launched = || {
        pg.psql(
            "launchdb",
            "SELECT coalesce(string_agg(instance_id, ','), '') FROM launched_instances",
        )
    };

    proxy.arm(Cut::AfterCommit);
    let answer = control(&a, &launch);
    assert_eq!(proxy.cuts(), 1, "the launch's COMMIT was cut: {answer:?}");
    assert_outcome_unknown(&answer, &[&pg.port.to_string(), "launchdb"]);
    let id = launched();
    assert_eq!(id.len(), 19, "one instance was launched: {id}");

    // Retried at once, as SDKs do: refused while the store is away, then the same instance.
    let start = Instant::now();
    let again = loop {
        let answer = control(&a, &launch);
        if answer.0 != 503 || start.elapsed() > Duration::from_secs(10) {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(again.0, 200, "{}", again.1);
    let answered: Vec<&str> = again
        .1
        .split("<instanceId>")
        .skip(1)
        .map(|rest| &rest[..19])
        .collect();
    assert_eq!(answered, [id.as_str()], "{}", again.1);
    assert_eq!(launched(), id, "nothing new was launched");
    let (status, all) = control(&a, "Action=DescribeInstances");
    assert_eq!(status, 200, "{all}");
    assert_eq!(all.matches("<instanceId>").count(), 2, "{all}");
    assert_eq!(
        all.matches(&format!("<instanceId>{id}<")).count(),
        1,
        "{all}"
    );
}

#[test]
#[ignore = "needs PostgreSQL: run scripts/test"]
fn a_run_instances_retried_through_a_host_that_has_not_learned_the_launch_answers_its_instance() {
    let pg = Postgres::start();
    pg.database("retrydb");
    let (to_a, to_b) = (Proxy::start(pg.port), Proxy::start(pg.port));
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let a = host(
        &config,
        &format!("postgres://imds@127.0.0.1:{}/retrydb", to_a.port),
    );
    let b = host(
        &config,
        &format!("postgres://imds@127.0.0.1:{}/retrydb", to_b.port),
    );
    let launch = format!("Action=RunInstances&ImageId=ami-0abcdef1234567890&MinCount=1&MaxCount=1&SubnetId={SUBNET}&ClientToken=elsewhere");

    // Host B hears nothing of the launch (its notification is held) until it is asked again.
    to_b.hold(true);
    to_a.arm(Cut::AfterCommit);
    let answer = control(&a, &launch);
    assert_eq!(to_a.cuts(), 1, "the launch's COMMIT was cut: {answer:?}");
    assert_outcome_unknown(&answer, &[&pg.port.to_string(), "retrydb"]);
    let id = pg.psql(
        "retrydb",
        "SELECT coalesce(string_agg(instance_id, ','), '') FROM launched_instances",
    );
    assert_eq!(id.len(), 19, "one instance was launched: {id}");

    // The client retries through host B; B's store answers arrive after the notification.
    let again = std::thread::scope(|scope| {
        let retried = scope.spawn(|| control(&b, &launch));
        std::thread::sleep(Duration::from_millis(300));
        to_b.hold(false);
        retried.join().unwrap()
    });
    assert_eq!(again.0, 200, "{}", again.1);
    let answered: Vec<&str> = again
        .1
        .split("<instanceId>")
        .skip(1)
        .map(|rest| &rest[..19])
        .collect();
    assert_eq!(answered, [id.as_str()], "{}", again.1);
    assert_eq!(
        pg.psql("retrydb", "SELECT count(*) FROM launched_instances"),
        "1"
    );
}

//! Terminated instances leave the store an hour after they terminated, and every host follows:
//! the host that sweeps first deletes their rows (leaving tombstones), the others forget them
//! when they catch up, a restart reads only what is live, and a stored row that does not parse is
//! reported and skipped, at start and when learned, never a reason not to start. A `ClientToken`
//! retried after its instances were forgotten is answered as EC2 answers it (the first
//! request's reservation, its instances terminated) until a day later, when it is pruned.
//! In-process with an injected clock on SQLite (and on PostgreSQL, `#[ignore]`d), and through a
//! real server and the AWS CLI across restarts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use imds::app::config::{Config, Overrides};
use imds::clock::ManualClock;
use imds::control::Persisted;
use imds::fleet::secret::ServerSecret;
use imds::store::{Location, Store};
use imds::App;

use crate::control_router::{assert_error, assert_ok, element, elements, query, START};
use crate::fleet::{fleet_config, SUBNET};
use crate::harness::{keys_with, open_host};
use crate::many_hosts::CONFIGURED;
use crate::postgres::Postgres;

/// An hour and a minute: a terminated instance is gone from view (and forgotten) after it.
const AN_HOUR_LATER: Duration = Duration::from_secs(61 * 60);

/// Rows per table in the store at `location`.
async fn rows(location: &Location) -> BTreeMap<&'static str, i64> {
    let store = Store::open(location).await.unwrap();
    store.row_counts().await.unwrap().into_iter().collect()
}

async fn metrics(app: &App) -> String {
    let request = http::Request::get("/metrics")
        .body(http_body_util::Full::default())
        .unwrap();
    crate::control_router::control(app, request).await.1
}

/// The value of the counter `name` in `app`'s `/metrics`.
async fn counter(app: &App, name: &str) -> u64 {
    let text = metrics(app).await;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
        .parse()
        .unwrap()
}

fn launch(token: Option<&str>) -> String {
    let mut params = format!(
        "Action=RunInstances&ImageId=ami-0abcdef1234567890&MinCount=1&MaxCount=1&SubnetId={SUBNET}"
    );
    if let Some(token) = token {
        params.push_str(&format!("&ClientToken={token}"));
    }
    params
}

/// The id and address of the instance a RunInstances answer launched.
fn launched(answer: &(StatusCode, String)) -> (String, String) {
    let xml = assert_ok(answer, "RunInstancesResponse");
    (
        element(xml, "instanceId").unwrap().to_owned(),
        element(xml, "privateIpAddress").unwrap().to_owned(),
    )
}

async fn terminate(app: &App, id: &str) {
    let answer = query(app, &format!("Action=TerminateInstances&InstanceId.1={id}")).await;
    assert_ok(&answer, "TerminateInstancesResponse");
}

fn held(app: &App, id: &str) -> bool {
    app.state
        .instances()
        .iter()
        .any(|slot| slot.id().as_str() == id)
}

/// Two hosts on one store: an instance launched and terminated through A is forgotten by A's
/// sweep (rows deleted) and by B when it catches up; its address is free on both, and a new
/// process reads only the live rows.
async fn forgotten_on_every_host(location: Location, config: &Path) {
    let clock = Arc::new(ManualClock::at_millis(START));
    let a = open_host(config, &location, clock.clone()).await;
    let b = open_host(config, &location, clock.clone()).await;
    let before = rows(&location).await;
    let (id, address) = launched(&query(&a, &launch(None)).await);
    b.control.catch_up().await.unwrap();
    assert!(held(&b, &id), "B serves the instance launched through A");
    let grown = rows(&location).await;
    assert_eq!(grown["instance_changes"], before["instance_changes"] + 1);
    assert_eq!(grown["addresses"], before["addresses"] + 1);
    terminate(&a, &id).await;
    b.control.catch_up().await.unwrap();
    clock.advance(Duration::from_secs(59 * 60));
    assert_eq!(
        a.control.forget_gone().await,
        0,
        "still shown within the hour"
    );
    clock.advance(Duration::from_secs(2 * 60));
    assert_eq!(a.control.forget_gone().await, 1);
    assert!(!held(&a, &id));
    let after = rows(&location).await;
    for table in ["instance_changes", "launched_instances", "addresses"] {
        assert_eq!(after[table], before[table], "{table}: {after:?}");
    }
    assert_eq!(after["no_token_history"], 0);
    // B follows the store: it forgets the instance (slot and metrics series) too.
    assert!(held(&b, &id));
    b.control.catch_up().await.unwrap();
    assert!(!held(&b, &id), "B forgot the instance A's sweep deleted");
    assert!(!metrics(&b).await.contains(&id));
    assert_eq!(b.control.forget_gone().await, 0);
    // Its address is free for a launch through either host.
    let again = format!("{}&PrivateIpAddress={address}", launch(None));
    let (second, _) = launched(&query(&b, &again).await);
    a.control.catch_up().await.unwrap();
    assert!(held(&a, &second));
    // A new process holds only what is live.
    let c = open_host(config, &location, clock.clone()).await;
    assert!(!held(&c, &id) && held(&c, &second));
}

#[tokio::test]
async fn a_terminated_instance_is_forgotten_by_every_host_on_sqlite_and_its_rows_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    forgotten_on_every_host(Location::StateDir(dir.path().join("state")), &config).await;
}

#[test]
#[ignore = "needs PostgreSQL: run scripts/test"]
fn a_terminated_instance_is_forgotten_by_every_host_on_postgres_and_its_rows_deleted() {
    let pg = Postgres::start();
    let url = pg.database("forgetting");
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    runtime().block_on(forgotten_on_every_host(
        Location::parse(&url).unwrap(),
        &config,
    ));
}

/// Corrupt rows on the store at `location` (`sql` runs statements on it): reported and
/// skipped at start and at catch-up; a later change replaces an unreadable changes row.
async fn corrupt_rows_are_skipped(location: Location, config: &Path, sql: impl Fn(&str)) {
    let clock = Arc::new(ManualClock::at_millis(START));
    let a = open_host(config, &location, clock.clone()).await;
    let tag = |key: &str| {
        format!("Action=CreateTags&ResourceId.1={CONFIGURED}&Tag.1.Key={key}&Tag.1.Value=v")
    };
    assert_ok(&query(&a, &tag("first")).await, "CreateTagsResponse");
    let (broken, _) = launched(&query(&a, &launch(None)).await);
    let (fine, _) = launched(&query(&a, &launch(None)).await);
    drop(a);
    sql(&format!(
        "UPDATE instance_changes SET changes = '{{\"tags\": [' WHERE instance_id = '{CONFIGURED}'"
    ));
    sql(&format!(
        "UPDATE launched_instances SET config = 'not json' WHERE instance_id = '{broken}'"
    ));
    // It starts, says so, and serves the rest.
    let b = open_host(config, &location, clock.clone()).await;
    assert_eq!(counter(&b, "imds_store_corrupt_rows_total").await, 2);
    assert!(held(&b, CONFIGURED) && held(&b, &fine) && !held(&b, &broken));
    // A change of the instance whose changes were unreadable replaces them.
    assert_ok(&query(&b, &tag("second")).await, "CreateTagsResponse");
    let c = open_host(config, &location, clock.clone()).await;
    assert_eq!(counter(&c, "imds_store_corrupt_rows_total").await, 1);
    let tags = query(
        &c,
        &format!("Action=DescribeTags&Filter.1.Name=resource-id&Filter.1.Value.1={CONFIGURED}"),
    )
    .await;
    assert!(elements(&tags.1, "key").contains(&"second"), "{}", tags.1);
    // A row learned unreadable is skipped too, and catching up goes on.
    sql(&format!(
        "UPDATE instance_changes SET changes = 'nope', revision = (SELECT value + 1 FROM revision)
         WHERE instance_id = '{fine}'"
    ));
    sql("UPDATE revision SET value = value + 1");
    c.control.catch_up().await.unwrap();
    assert_eq!(counter(&c, "imds_store_corrupt_rows_total").await, 2);
    assert!(held(&c, &fine));
    assert_ok(&query(&c, &launch(None)).await, "RunInstancesResponse");
}

#[tokio::test]
async fn corrupt_rows_on_sqlite_are_reported_and_skipped_at_start_and_at_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let state = dir.path().join("state");
    let db = state.join("state.db");
    corrupt_rows_are_skipped(Location::StateDir(state), &config, |sql| {
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch(sql)
            .unwrap()
    })
    .await;
}

#[test]
#[ignore = "needs PostgreSQL: run scripts/test"]
fn corrupt_rows_on_postgres_are_reported_and_skipped_at_start_and_at_catch_up() {
    let pg = Postgres::start();
    let url = pg.database("corrupt");
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    runtime().block_on(corrupt_rows_are_skipped(
        Location::parse(&url).unwrap(),
        &config,
        |sql| {
            pg.psql("corrupt", sql);
        },
    ));
}

/// A `ClientToken` retried after its instance was forgotten: the first answer's reservation
/// with the instance terminated, nothing launched; another request with it is a mismatch; a
/// day later it is pruned and a retry launches anew.
async fn a_token_outlives_its_instance_by_a_day(app: &App, clock: &ManualClock) {
    let first = query(app, &launch(Some("retry-me"))).await;
    let (id, _) = launched(&first);
    let reservation = element(&first.1, "reservationId").unwrap().to_owned();
    terminate(app, &id).await;
    clock.advance(AN_HOUR_LATER);
    assert_eq!(app.control.forget_gone().await, 1);
    assert!(!held(app, &id));
    let retried = query(app, &launch(Some("retry-me"))).await;
    let xml = assert_ok(&retried, "RunInstancesResponse");
    assert_eq!(element(xml, "instanceId"), Some(id.as_str()), "{xml}");
    assert_eq!(element(xml, "reservationId"), Some(reservation.as_str()));
    assert_eq!(element(xml, "name"), Some("terminated"), "{xml}");
    assert_eq!(element(xml, "imageId"), Some("ami-0abcdef1234567890"));
    assert_eq!(app.state.instances().len(), 1, "nothing launched");
    let other = format!("{}&InstanceType=t3.large", launch(Some("retry-me")));
    assert_error(
        &query(app, &other).await,
        StatusCode::BAD_REQUEST,
        "IdempotentParameterMismatch",
    );
    // Still kept just under a day after it was forgotten ...
    clock.advance(Duration::from_secs(24 * 3600 - 120));
    app.control.forget_gone().await;
    let kept = query(app, &launch(Some("retry-me"))).await;
    assert_eq!(element(&kept.1, "instanceId"), Some(id.as_str()));
    // ... and pruned after: a retry launches a new instance.
    clock.advance(Duration::from_secs(180));
    app.control.forget_gone().await;
    let (new, _) = launched(&query(app, &launch(Some("retry-me"))).await);
    assert_ne!(new, id);
}

#[tokio::test]
async fn a_client_token_outlives_its_forgotten_instance_by_a_day_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let location = Location::StateDir(dir.path().join("state"));
    let clock = Arc::new(ManualClock::at_millis(START));
    let app = open_host(&config, &location, clock.clone()).await;
    a_token_outlives_its_instance_by_a_day(&app, &clock).await;
    assert_eq!(
        rows(&location).await["client_tokens"],
        1,
        "only the new launch's"
    );
}

#[tokio::test]
async fn a_client_token_outlives_its_forgotten_instance_by_a_day_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let clock = Arc::new(ManualClock::at_millis(START));
    let loaded = Config::load(Some(&config))
        .unwrap()
        .resolve(&Overrides::default(), Some(&config))
        .unwrap();
    let app = App::new(
        loaded,
        &keys_with(ServerSecret::random()),
        clock.clone(),
        Persisted::default(),
        None,
    )
    .unwrap();
    a_token_outlives_its_instance_by_a_day(&app, &clock).await;
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The rows of `table` in the state directory's database (read beside the running server).
fn count(state: &Path, table: &str) -> i64 {
    let db = rusqlite::Connection::open(state.join("state.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn sql(state: &Path, statement: &str) {
    let db = rusqlite::Connection::open(state.join("state.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute_batch(statement).unwrap();
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn the_aws_cli_retrying_with_its_client_token_after_restarts_launches_once_until_the_token_expires()
{
    use crate::control::aws;
    use crate::fleet::serve_fleet;

    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let state = dir.path().join("state");
    let launch = [
        "run-instances",
        "--image-id",
        "ami-0abcdef1234567890",
        "--count",
        "1",
        "--subnet-id",
        SUBNET,
        "--client-token",
        "cli-once",
    ];
    let served = serve_fleet(&config, &state);
    let first = aws(&served, &launch).unwrap();
    let id = first["Instances"][0]["InstanceId"]
        .as_str()
        .unwrap()
        .to_owned();
    let reservation = first["ReservationId"].as_str().unwrap().to_owned();
    aws(&served, &["terminate-instances", "--instance-ids", &id]).unwrap();
    served.signal("KILL");
    drop(served);

    // An hour passes while imds is stopped (its termination is made an hour and a minute old):
    // the sweep at start deletes the instance's rows.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let long_ago = now - AN_HOUR_LATER.as_millis() as u64;
    sql(
        &state,
        &format!(
            "UPDATE instance_changes SET changes = json_set(changes, '$.lifecycle.at_millis', {long_ago})
             WHERE instance_id = '{id}'"
        ),
    );
    let served = serve_fleet(&config, &state);
    crate::many_hosts::eventually(
        "the start's sweep deletes the forgotten instance's rows",
        || count(&state, "launched_instances") == 0,
    );
    assert_eq!(count(&state, "instance_changes"), 0);
    // The retry is answered as the first launch was, its instance terminated; nothing new.
    let again = aws(&served, &launch).unwrap();
    assert_eq!(again["ReservationId"], reservation.as_str(), "{again}");
    assert_eq!(again["Instances"][0]["InstanceId"], id.as_str(), "{again}");
    assert_eq!(
        again["Instances"][0]["State"]["Name"], "terminated",
        "{again}"
    );
    let all = aws(&served, &["describe-instances"]).unwrap();
    let shown: Vec<&str> = all["Reservations"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["Instances"].as_array().unwrap())
        .map(|i| i["InstanceId"].as_str().unwrap())
        .collect();
    assert_eq!(shown, vec![CONFIGURED], "{all}");
    let mut other = launch.to_vec();
    other.extend(["--instance-type", "t3.large"]);
    let (_, error) = aws(&served, &other).unwrap_err();
    assert!(error.contains("IdempotentParameterMismatch"), "{error}");
    served.signal("KILL");
    drop(served);

    // A day after its instance was forgotten the token is pruned: a retry launches anew.
    sql(
        &state,
        "UPDATE client_tokens SET expires_at_ms = 1 WHERE token = 'cli-once'",
    );
    let served = serve_fleet(&config, &state);
    crate::many_hosts::eventually("the start's sweep prunes the token", || {
        count(&state, "client_tokens") == 0
    });
    let third = aws(&served, &launch).unwrap();
    let new = third["Instances"][0]["InstanceId"].as_str().unwrap();
    assert_ne!(new, id);
    assert_eq!(count(&state, "client_tokens"), 1);
}

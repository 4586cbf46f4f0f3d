//! Control requests racing a SIGHUP reload that drops their instance from the config file.
//!
//! A request looks its instance up before it waits for the account's lock; a reload queued
//! ahead of it on that lock may drop the instance meanwhile. The request must then be refused
//! (`InvalidInstanceID.NotFound`), or its acknowledged change must be there when the file lists
//! the instance again: docs/security.md, "An acknowledged change is never lost".

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use http::StatusCode;
use imds::app::config::{Config, Overrides};
use imds::clock::ManualClock;
use imds::control::Persisted;
use imds::fleet::secret::ServerSecret;
use imds::store::Location;
use imds::App;

use crate::control_router::{element, query, START};
use crate::fleet::SUBNET;
use crate::harness::{keys_with, persisted_in};

const ANCHOR: &str = "i-0aaaaaaaaaaaaaaa1";
const ANCHOR_IP: Ipv4Addr = Ipv4Addr::new(127, 16, 0, 10);
const DROPPED: &str = "i-0aaaaaaaaaaaaaaa2";
const DROPPED_IP: Ipv4Addr = Ipv4Addr::new(127, 16, 0, 11);

fn file_text(with_dropped: bool) -> String {
    let mut text = format!(
        "[server]\nfleet = true\n{}",
        crate::addresses::file_instance(ANCHOR, &ANCHOR_IP.to_string())
    );
    if with_dropped {
        text.push_str(&crate::addresses::file_instance(
            DROPPED,
            &DROPPED_IP.to_string(),
        ));
    }
    text
}

fn load(path: &Path) -> imds::app::config::Loaded {
    Config::load(Some(path))
        .unwrap()
        .resolve(&Overrides::default(), Some(path))
        .unwrap()
}

/// The state DescribeInstances shows for `id`, or its error code.
async fn state_of(app: &App, id: &str) -> String {
    let (status, xml) = query(app, &format!("Action=DescribeInstances&InstanceId.1={id}")).await;
    match status {
        StatusCode::OK => {
            let rest = &xml[xml.find("<instanceState>").unwrap()..];
            element(rest, "name").unwrap().to_owned()
        }
        _ => element(&xml, "Code").unwrap().to_owned(),
    }
}

/// `imds serve --fleet` without `--state-dir`: changes kept in memory for the process's life.
#[tokio::test]
async fn a_stop_acknowledged_while_a_reload_drops_its_instance_is_there_when_the_file_lists_it_again(
) {
    stop_racing_a_reload_that_drops_its_instance(false).await;
}

/// The same with `--state-dir`.
#[tokio::test]
async fn with_a_state_dir_a_stop_acknowledged_while_a_reload_drops_its_instance_is_there_when_the_file_lists_it_again(
) {
    stop_racing_a_reload_that_drops_its_instance(true).await;
}

async fn stop_racing_a_reload_that_drops_its_instance(state_dir: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.toml");
    std::fs::write(&path, file_text(true)).unwrap();
    let persisted = match state_dir {
        false => Persisted::default(),
        true => persisted_in(&Location::StateDir(dir.path().join("state"))).await,
    };
    let app = Arc::new(
        App::new(
            load(&path),
            &keys_with(ServerSecret::random()),
            Arc::new(ManualClock::at_millis(START)),
            persisted,
            None,
        )
        .unwrap(),
    );
    assert_eq!(state_of(&app, DROPPED).await, "running");

    // A launch holds the account's lock while its instance is built on a blocking thread; the
    // reload and then the Stop queue behind it, in that order (current-thread runtime: tasks
    // are first polled in the order they are spawned).
    let launch = tokio::spawn({
        let app = app.clone();
        async move {
            query(
                &app,
                &format!("Action=RunInstances&ImageId=ami-0abcdef1234567890&MinCount=1&MaxCount=1&SubnetId={SUBNET}"),
            )
            .await
        }
    });
    tokio::task::yield_now().await;
    std::fs::write(&path, file_text(false)).unwrap();
    let reload = tokio::spawn({
        let app = app.clone();
        let instances = load(&path).instances;
        async move { app.control.reload_file(instances).await.map(|_| ()) }
    });
    let stop = tokio::spawn({
        let app = app.clone();
        async move {
            query(
                &app,
                &format!("Action=StopInstances&InstanceId.1={DROPPED}"),
            )
            .await
        }
    });
    let launched = launch.await.unwrap();
    assert_eq!(launched.0, StatusCode::OK, "{}", launched.1);
    reload.await.unwrap().expect("the reload applies");
    let (status, xml) = stop.await.unwrap();

    // The file lists the instance again.
    std::fs::write(&path, file_text(true)).unwrap();
    app.control
        .reload_file(load(&path).instances)
        .await
        .expect("the reload applies");
    let now = state_of(&app, DROPPED).await;
    if status == StatusCode::OK {
        assert!(
            now == "stopping" || now == "stopped",
            "StopInstances of {DROPPED} was acknowledged ({xml}) while a reload dropped it, \
             but once the file lists it again it is `{now}`: the acknowledged Stop was applied \
             to the dropped instance's old slot and lost"
        );
    } else {
        assert_eq!(
            element(&xml, "Code"),
            Some("InvalidInstanceID.NotFound"),
            "{xml}"
        );
    }
}

/// `lock_instances` is public and documented as taking several instances' locks in id order;
/// given one lock twice (a caller that forgot to deduplicate its ids), it waits for itself
/// forever, holding every lock before it (and, in every caller, the account's lock).
#[tokio::test]
async fn lock_instances_given_one_instance_twice_does_not_wait_for_itself() {
    use imds::fleet::lock_order::{lock_instances, InstanceLock, Unlocked};
    let lock = InstanceLock::default();
    let mut order = Unlocked::task();
    let taken = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        lock_instances([(1, &lock), (1, &lock)], &mut order),
    )
    .await;
    assert!(
        taken.is_ok(),
        "lock_instances with a duplicate id deadlocks on its own lock"
    );
}

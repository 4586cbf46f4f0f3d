//! Writers racing on one instance from several hosts are serialized, never refused: every
//! CreateTags is answered 200 and every acknowledged tag is what every host then shows, on
//! PostgreSQL (real processes) and on one SQLite store shared by two in-process hosts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use imds::clock::ManualClock;
use imds::store::Location;

use crate::control_router::{element, elements, query, START};
use crate::fleet::fleet_config;
use crate::harness::open_host;
use crate::many_hosts::{control, eventually, CONFIGURED};
use crate::postgres::Postgres;

/// Clients per host, and the writes each makes.
const CLIENTS: usize = 8;
const WRITES: usize = 40;

/// The tags DescribeTags lists for `instance`, from an XML answer.
fn tags_of(xml: &str) -> BTreeMap<String, String> {
    elements(xml, "key")
        .into_iter()
        .zip(elements(xml, "value"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn describe_tags(instance: &str) -> String {
    format!("Action=DescribeTags&Filter.1.Name=resource-id&Filter.1.Value.1={instance}")
}

#[test]
#[ignore = "needs PostgreSQL: run scripts/test"]
fn create_tags_racing_on_one_instance_from_three_hosts_all_succeed_and_all_land() {
    let pg = Postgres::start();
    let url = pg.database("racing");
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    // Warnings only: nobody reads the hosts' logs, whose pipes must not fill.
    let hosts: Vec<_> = (0..3)
        .map(|_| {
            let mut command = std::process::Command::new(crate::process::IMDS);
            command
                .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "warn"])
                .arg("--config")
                .arg(&config)
                .args(["--store", &url]);
            crate::process::Served::spawn(command)
        })
        .collect();
    let started = Instant::now();
    let refused: Vec<(u16, String)> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..hosts.len() * CLIENTS)
            .map(|client| {
                let served = &hosts[client % hosts.len()];
                scope.spawn(move || {
                    let mut refused = Vec::new();
                    for n in 0..WRITES {
                        let (status, body) = control(
                            served,
                            &format!("Action=CreateTags&ResourceId.1={CONFIGURED}&Tag.1.Key=c{client}&Tag.1.Value={n}"),
                        );
                        if status != 200 {
                            refused.push((status, body));
                        }
                    }
                    refused
                })
            })
            .collect();
        writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let took = started.elapsed();
    assert!(
        refused.is_empty(),
        "{} of {} racing writes refused in {took:?}, e.g. {:?}",
        refused.len(),
        hosts.len() * CLIENTS * WRITES,
        refused.first()
    );
    // Every client's last value is what every host shows.
    for served in &hosts {
        eventually("every host shows every client's last tag", || {
            let (status, xml) = control(served, &describe_tags(CONFIGURED));
            assert_eq!(status, 200, "{xml}");
            let tags = tags_of(&xml);
            (0..hosts.len() * CLIENTS)
                .all(|c| tags.get(&format!("c{c}")) == Some(&(WRITES - 1).to_string()))
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_tags_racing_on_one_instance_from_two_hosts_on_one_sqlite_store_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let state = dir.path().join("state");
    let clock = Arc::new(ManualClock::at_millis(START));
    let hosts = [
        Arc::new(open_host(&config, &Location::StateDir(state.clone()), clock.clone()).await),
        Arc::new(open_host(&config, &Location::StateDir(state.clone()), clock.clone()).await),
    ];
    let mut writers = Vec::new();
    for client in 0..2 * CLIENTS {
        let app = hosts[client % 2].clone();
        writers.push(tokio::spawn(async move {
            let mut refused = Vec::new();
            for n in 0..WRITES {
                let got = query(
                    &app,
                    &format!("Action=CreateTags&ResourceId.1={CONFIGURED}&Tag.1.Key=c{client}&Tag.1.Value={n}"),
                )
                .await;
                if got.0 != StatusCode::OK {
                    refused.push(got);
                }
            }
            refused
        }));
    }
    let mut refused = Vec::new();
    for writer in writers {
        refused.extend(writer.await.unwrap());
    }
    assert!(
        refused.is_empty(),
        "{} racing writes refused, e.g. {:?}",
        refused.len(),
        refused.first().map(|(_, xml)| element(xml, "Message"))
    );
    for app in &hosts {
        app.control.catch_up().await.unwrap();
        let (status, xml) = query(app, &describe_tags(CONFIGURED)).await;
        assert_eq!(status, StatusCode::OK, "{xml}");
        let tags = tags_of(&xml);
        for client in 0..2 * CLIENTS {
            assert_eq!(
                tags.get(&format!("c{client}")),
                Some(&(WRITES - 1).to_string()),
                "client {client}'s last tag"
            );
        }
    }
}

#[tokio::test]
async fn a_subnet_deleted_through_a_host_that_missed_a_launch_into_it_stays() {
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let state = dir.path().join("state");
    let clock = Arc::new(ManualClock::at_millis(START));
    let a = open_host(&config, &Location::StateDir(state.clone()), clock.clone()).await;
    let b = open_host(&config, &Location::StateDir(state.clone()), clock.clone()).await;
    let created = query(
        &a,
        "Action=CreateSubnet&VpcId=vpc-0c4f6a8e2b1d35792&CidrBlock=127.17.0.0/24",
    )
    .await;
    assert_eq!(created.0, StatusCode::OK, "{}", created.1);
    let subnet = element(&created.1, "subnetId").unwrap().to_owned();
    b.control.catch_up().await.unwrap();
    let launched = query(
        &a,
        &format!("Action=RunInstances&ImageId=ami-0abcdef1234567890&MinCount=1&MaxCount=1&SubnetId={subnet}"),
    )
    .await;
    assert_eq!(launched.0, StatusCode::OK, "{}", launched.1);
    // B has not learned the launch: its registry has the subnet empty, yet the store refuses
    // the deletion, and B answers as it would have once caught up.
    let deleted = query(&b, &format!("Action=DeleteSubnet&SubnetId={subnet}")).await;
    assert_eq!(
        element(&deleted.1, "Code"),
        Some("DependencyViolation"),
        "{}",
        deleted.1
    );
    a.control.catch_up().await.unwrap();
    let described = query(&a, &format!("Action=DescribeSubnets&SubnetId.1={subnet}")).await;
    assert_eq!(described.0, StatusCode::OK, "{}", described.1);
}

//! Churn over simulated days ([`imds::testing::soak`]): one host on its real store, its clock
//! injected, launching and terminating instances every hour with guests, events, faults and key
//! rotations. Once the fleet is in its steady state (two days in: the day-long windows of
//! tokens, tombstones and history are full, and PostgreSQL's indexes have their working size),
//! nothing that is kept may grow with the history: not the store's rows or size, not
//! `/metrics`, not the instances shown, not the open files. (`scripts/soak` runs the same for a
//! month, and also holds the process' RSS to the bound, which a shared test process cannot.)

use imds::store::Location;
use imds::testing::soak::{Sample, Settings, Soak};

use crate::postgres::Postgres;

/// Simulated days: the first two reach the steady state, the next two must change nothing.
const DAYS: u64 = 4;

/// Runs the soak on `store`: the samples at the end of each day.
async fn soak(store: Location) -> Vec<Sample> {
    let settings = Settings {
        live: 12,
        launches_per_hour: 12,
        guests_per_hour: 6,
        events_per_hour: 3,
        faults_per_hour: 2,
    };
    let mut soak = Soak::start(settings, store).await.unwrap();
    let mut samples = Vec::new();
    for hour in 1..=DAYS * 24 {
        soak.hour().await.unwrap();
        if hour % 24 == 0 {
            samples.push(soak.sample().await.unwrap());
        }
    }
    samples
}

/// Asserts that nothing kept grew from the second day's end to the last's.
fn assert_bounded(samples: &[Sample]) {
    let (steady, end) = (&samples[1], samples.last().unwrap());
    assert_eq!(end.launched, 12 * 24 * DAYS as usize);
    let growth = steady.growth_to(end);
    let report = format!("from {steady:?}\nto {end:?}\ngrowth {growth:?}");
    for (measure, limit) in [
        ("served", 0.0),
        ("open_files", 0.0),
        ("store_rows", 2.0),
        ("metrics_bytes", 2.0),
        ("store_bytes", 10.0),
    ] {
        assert!(
            growth[measure] <= limit,
            "{measure} grew {} % (at most {limit} %)\n{report}",
            growth[measure]
        );
    }
    // What is live is all that is kept: a row per live or recently terminated instance, not
    // one per instance ever launched.
    let instance_rows = end.store_rows.get("instance_changes").copied().unwrap_or(0);
    assert!(
        instance_rows <= end.served as i64,
        "{instance_rows} instance rows for {} instances shown\n{report}",
        end.served
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_of_churn_on_sqlite_leave_the_store_and_metrics_as_the_live_fleet_needs() {
    let dir = tempfile::tempdir().unwrap();
    let samples = soak(Location::StateDir(dir.path().join("state"))).await;
    assert_bounded(&samples);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run scripts/test"]
async fn days_of_churn_on_postgres_leave_the_store_and_metrics_as_the_live_fleet_needs() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.database("soak");
    let samples = soak(Location::parse(&url).unwrap()).await;
    assert_bounded(&samples);
}

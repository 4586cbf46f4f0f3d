//! The token-less request history is written in batched statements, its counts only rise and
//! its old minutes go; on PostgreSQL a flush runs on a connection of its own, so a flush stuck
//! behind a lock never keeps control writes waiting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use imds::store::{Commit, Location, MinuteCount, Store};

use crate::postgres::Postgres;

/// Instances whose counts one flush writes: two minutes each, more than one batch.
const INSTANCES: usize = 6_000;

fn ids() -> Vec<String> {
    (0..INSTANCES).map(|n| format!("i-{n:017x}")).collect()
}

fn counts(ids: &[String], minute: i64, count: i64) -> Vec<MinuteCount<'_>> {
    ids.iter()
        .flat_map(|id| {
            [minute, minute + 1].map(|minute| MinuteCount {
                instance_id: id,
                metric: "MetadataNoToken",
                minute,
                count,
            })
        })
        .collect()
}

async fn batches_rise_and_age(store: &Store) {
    let ids = ids();
    store.save_history(&counts(&ids, 100, 3), 0).await.unwrap();
    assert_eq!(store.history(0).await.unwrap().len(), 2 * INSTANCES);
    // A lower count is not written over a higher one; minute 100 is forgotten.
    let mut next = counts(&ids, 101, 1);
    next[0].count = 5;
    store.save_history(&next, 101).await.unwrap();
    let kept = store.history(0).await.unwrap();
    assert_eq!(kept.len(), 2 * INSTANCES);
    assert!(kept.iter().all(|row| row.minute >= 101));
    let first = kept
        .iter()
        .find(|row| row.instance_id == ids[0] && row.minute == 101)
        .unwrap();
    assert_eq!(first.count, 5);
    let raised = kept
        .iter()
        .filter(|row| row.minute == 101)
        .all(|row| row.count >= 3);
    assert!(raised, "a count went down");
}

#[tokio::test]
async fn the_history_is_written_in_batches_on_sqlite_and_only_rises() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Location::StateDir(dir.path().to_owned()))
        .await
        .unwrap();
    batches_rise_and_age(&store).await;
}

#[test]
#[ignore = "needs PostgreSQL: run scripts/test"]
fn the_history_is_written_in_batches_on_postgres_beside_control_writes() {
    let pg = Postgres::start();
    let url = pg.database("history");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Arc::new(Store::open(&Location::parse(&url).unwrap()).await.unwrap());
        batches_rise_and_age(&store).await;
        // A flush held up by a lock on the history's table ...
        let (locker, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        locker
            .batch_execute("BEGIN; LOCK TABLE no_token_history IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        let flushing = {
            let store = store.clone();
            tokio::spawn(async move {
                let ids = ids();
                store.save_history(&counts(&ids, 102, 4), 101).await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!flushing.is_finished(), "the flush waits for the lock");
        // ... keeps no control write waiting.
        for n in 0..5 {
            let started = Instant::now();
            store
                .commit(Commit::default().value(&format!("probe-{n}"), "1".into(), 0))
                .await
                .unwrap();
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "a control write waited {:?} behind the history",
                started.elapsed()
            );
        }
        locker.batch_execute("COMMIT").await.unwrap();
        flushing.await.unwrap().unwrap();
        assert!(store
            .history(0)
            .await
            .unwrap()
            .iter()
            .any(|row| row.minute == 103 && row.count == 4));
    });
}

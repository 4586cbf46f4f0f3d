//! A store written by the previous schema (migrations 1 to 4) opens with migration 5: the
//! registry's pools of addresses in use become one row per address, each launched instance is
//! linked to the `ClientToken` that launched it, and the tokens whose instances are all gone
//! start their retention. An unreadable registry or token does not stop the migration.

use imds::store::{Location, Store};

use crate::postgres::Postgres;

/// Migrations 1 to 4 of `backend` as the previous imds applied them.
fn previous(backend: &str) -> Vec<refinery::Migration> {
    [
        "V1__initial",
        "V2__revisions",
        "V3__history",
        "V4__client_tokens",
    ]
    .into_iter()
    .map(|name| {
        let path = format!(
            "{}/src/store/migrations/{backend}/{name}.sql",
            env!("CARGO_MANIFEST_DIR")
        );
        refinery::Migration::unapplied(name, &std::fs::read_to_string(path).unwrap()).unwrap()
    })
    .collect()
}

/// What the previous imds stored: a registry with addresses in use (`registry`: its JSON), an
/// instance launched with token `t-live`, and a token `t-gone` whose instance is gone.
fn rows(registry: &str) -> String {
    format!(
        "INSERT INTO account (name, value, revision) VALUES ('network', '{registry}', 3);
         INSERT INTO instance_changes (instance_id, changes, revision) VALUES ('i-1', '{{}}', 2);
         INSERT INTO launched_instances (instance_id, config, revision) VALUES ('i-1', '{{}}', 2);
         INSERT INTO client_tokens (token, request_sha256, instance_ids, created_at_ms, revision)
             VALUES ('t-live', 'x', '[\"i-1\"]', 5, 2), ('t-gone', 'x', '[\"i-9\"]', 5, 1),
                    ('t-broken', 'x', 'not json', 5, 1);
         UPDATE revision SET value = 3 WHERE id = 1;"
    )
}

const REGISTRY: &str = r#"{"subnets": {"subnet-a": {"id": "subnet-a", "ipv4": {"in_use": ["10.0.0.4", "10.0.0.5"], "next": null}, "ipv6": {"in_use": ["2600:1f18::4"], "next": null}}, "subnet-b": {"id": "subnet-b"}}}"#;

/// Checks the migrated store at `location`; `launched_with` reads i-1's token column.
async fn migrated(location: &Location, pools_kept: bool, launched_with: impl Fn() -> String) {
    let store = Store::open(location).await.unwrap();
    let all = store.load_since(-1).await.unwrap();
    let mut addresses: Vec<(String, String, String)> = all
        .addresses
        .into_iter()
        .map(|a| (a.subnet_id, a.address, a.holder))
        .collect();
    addresses.sort();
    let expected = match pools_kept {
        true => vec![
            ("subnet-a".into(), "10.0.0.4".into(), String::new()),
            ("subnet-a".into(), "10.0.0.5".into(), String::new()),
            ("subnet-a".into(), "2600:1f18::4".into(), String::new()),
        ],
        false => Vec::new(),
    };
    assert_eq!(addresses, expected);
    assert_eq!(launched_with(), "t-live");
    let live = store.client_token("t-live").await.unwrap().unwrap();
    assert_eq!(
        (live.instance_ids, live.expires_millis),
        (vec!["i-1".into()], None)
    );
    let gone = store.client_token("t-gone").await.unwrap().unwrap();
    assert!(gone.expires_millis.is_some(), "{gone:?}");
    // Its rows are all there, and the store takes writes.
    assert_eq!(all.instances.len(), 1);
    let counts: std::collections::BTreeMap<_, _> =
        store.row_counts().await.unwrap().into_iter().collect();
    assert_eq!(counts["client_tokens"], 3);
}

#[tokio::test]
async fn a_sqlite_store_of_the_previous_schema_moves_its_pools_to_rows_and_links_its_tokens() {
    for (registry, pools_kept) in [(REGISTRY, true), ("{oops", false)] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let mut c = rusqlite::Connection::open(&db).unwrap();
        refinery::Runner::new(&previous("sqlite"))
            .set_grouped(true)
            .run(&mut c)
            .unwrap();
        c.execute_batch(&rows(registry)).unwrap();
        drop(c);
        migrated(
            &Location::StateDir(dir.path().to_owned()),
            pools_kept,
            || {
                rusqlite::Connection::open(&db)
                    .unwrap()
                    .query_row(
                        "SELECT client_token FROM launched_instances WHERE instance_id = 'i-1'",
                        [],
                        |r| r.get(0),
                    )
                    .unwrap()
            },
        )
        .await;
    }
}

#[test]
#[ignore = "needs PostgreSQL: run scripts/test"]
fn a_postgres_store_of_the_previous_schema_moves_its_pools_to_rows_and_links_its_tokens() {
    let pg = Postgres::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (n, (registry, pools_kept)) in [(REGISTRY, true), ("{oops", false)].into_iter().enumerate()
    {
        let db = format!("previous{n}");
        let url = pg.database(&db);
        runtime.block_on(async {
            let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            let driven = tokio::spawn(connection);
            refinery::Runner::new(&previous("postgres"))
                .set_grouped(true)
                .run_async(&mut client)
                .await
                .unwrap();
            client.batch_execute(&rows(registry)).await.unwrap();
            drop(client);
            let _ = driven.await;
            migrated(&Location::parse(&url).unwrap(), pools_kept, || {
                pg.psql(
                    &db,
                    "SELECT client_token FROM launched_instances WHERE instance_id = 'i-1'",
                )
            })
            .await;
        });
    }
}

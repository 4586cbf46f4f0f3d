//! The store's bookkeeping over random sequences of launches (with a `ClientToken`, taking
//! addresses), terminations (giving them back), forgetting, pruning and time passing, on
//! SQLite and on PostgreSQL, against a small model:
//!
//! 1. the store has exactly the rows of the instances not forgotten (changes and launch
//!    configuration), one row per address in use, and no address ever has two holders (a launch
//!    wanting a held address is refused whole);
//! 2. a process that follows the store with `load_since` (applying tombstones, or reloading
//!    everything once they were pruned) holds exactly what a fresh complete load holds;
//! 3. a `ClientToken` is kept while an instance it launched is stored, and until a day after the
//!    last one is forgotten, then pruned.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use imds::store::{
    Changed, ClientToken, Commit, Deleted, ForgetInstance, InstanceWrite, Location, Store,
    StoreError, CLIENT_TOKEN_RETENTION,
};
use proptest::prelude::*;

use crate::postgres::Postgres;

const SUBNET: &str = "subnet-0a3e5c7b9d1f24681";
/// Addresses launches take from.
const POOL: u8 = 6;
const START: i64 = 1_793_607_269_000;

fn address(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 16, 4 + n))
}

/// One thing that happens to the store.
#[derive(Debug, Clone)]
pub enum Op {
    /// One instance launched with a token, at `POOL[wanted]` or the first free address.
    Launch { wanted: Option<u8> },
    /// The `target`th stored instance terminated (its address given back).
    Terminate { target: usize },
    /// The `target`th stored instance forgotten, as last seen (`stale`: as seen before its last
    /// write, which keeps it).
    Forget { target: usize, stale: bool },
    /// Time passes, then the store is pruned.
    Prune { minutes: u32 },
    /// The follower catches up.
    Follow,
}

#[derive(Debug, Clone)]
struct Row {
    revision: i64,
    terminated: bool,
    address: IpAddr,
    token: String,
}

/// What the store should have.
#[derive(Debug, Default)]
struct Model {
    instances: BTreeMap<String, Row>,
    /// Addresses in use, by holder.
    holders: BTreeMap<IpAddr, String>,
    /// Tokens, with the instances they launched still stored, and when they expire.
    tokens: BTreeMap<String, Option<i64>>,
    launches: u32,
    now: i64,
}

/// What a follower of the store holds: instance revisions and addresses in use.
#[derive(Debug, Default, PartialEq, Eq)]
struct View {
    instances: BTreeMap<String, i64>,
    addresses: BTreeSet<(String, String)>,
}

impl View {
    fn apply(&mut self, changed: Changed) {
        if changed.complete {
            *self = View::default();
        }
        for tombstone in changed.tombstones {
            match tombstone.deleted {
                Deleted::Instance(id) => {
                    self.instances.remove(&id);
                }
                Deleted::Address { subnet_id, address } => {
                    self.addresses.remove(&(subnet_id, address));
                }
            }
        }
        for row in changed.instances {
            self.instances.insert(row.instance_id, row.revision);
        }
        for row in changed.addresses {
            self.addresses.insert((row.subnet_id, row.address));
        }
    }
}

fn write(id: &str, changes: &str, expected: i64, config: bool) -> InstanceWrite {
    InstanceWrite {
        instance_id: id.to_owned(),
        config: config.then(|| "{}".to_owned()),
        changes: changes.to_owned(),
        expected,
    }
}

/// Runs `ops` against `store` and the model, checking every property after each.
pub async fn run(store: Arc<Store>, ops: &[Op]) {
    let mut model = Model {
        now: START,
        ..Model::default()
    };
    let mut follower = View::default();
    let mut seen = -1;
    for (n, op) in ops.iter().enumerate() {
        let what = format!("op {n} {op:?}");
        match op {
            Op::Launch { wanted } => {
                model.launches += 1;
                let id = format!("i-{:017x}", model.launches);
                let token = format!("t{}", model.launches);
                let ip = match wanted {
                    Some(w) => address(w % POOL),
                    None => match (0..POOL)
                        .map(address)
                        .find(|a| !model.holders.contains_key(a))
                    {
                        Some(free) => free,
                        None => continue,
                    },
                };
                let commit = Commit::default()
                    .instance(write(&id, "{\"life\":\"launch\"}", 0, true))
                    .take(SUBNET, ip, &id)
                    .client_token(ClientToken {
                        token: token.clone(),
                        request_sha256: "0".repeat(64),
                        instance_ids: vec![id.clone()],
                        created_millis: model.now,
                        reservation_id: "r-0123456789abcdef0".into(),
                        owner_id: "123456789012".into(),
                        expires_millis: None,
                    });
                let got = store
                    .commit(Commit {
                        at_millis: model.now,
                        ..commit
                    })
                    .await;
                match model.holders.get(&ip) {
                    Some(holder) => assert!(
                        matches!(got, Err(StoreError::Conflict { .. })),
                        "{what}: {ip} is held by {holder}, yet {got:?}"
                    ),
                    None => {
                        let revision = got.unwrap_or_else(|e| panic!("{what}: {e}"));
                        model.holders.insert(ip, id.clone());
                        model.tokens.insert(token.clone(), None);
                        model.instances.insert(
                            id,
                            Row {
                                revision,
                                terminated: false,
                                address: ip,
                                token,
                            },
                        );
                    }
                }
            }
            Op::Terminate { target } => {
                let Some((id, row)) = nth(&model, *target) else {
                    continue;
                };
                if row.terminated {
                    continue;
                }
                let commit = Commit::default()
                    .instance(write(&id, "{\"life\":\"terminate\"}", row.revision, false))
                    .release(SUBNET, row.address, &id);
                let revision = store
                    .commit(Commit {
                        at_millis: model.now,
                        ..commit
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                model.holders.remove(&row.address);
                let row = model.instances.get_mut(&id).unwrap();
                row.revision = revision;
                row.terminated = true;
            }
            Op::Forget { target, stale } => {
                let Some((id, row)) = nth(&model, *target) else {
                    continue;
                };
                // Only terminated instances are forgotten (their addresses were given back).
                if !row.terminated {
                    continue;
                }
                let expected = if *stale {
                    row.revision - 1
                } else {
                    row.revision
                };
                let done = store
                    .forget(
                        vec![ForgetInstance {
                            instance_id: id.clone(),
                            expected,
                            reservation_id: String::new(),
                            owner_id: String::new(),
                        }],
                        model.now,
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                match stale {
                    true => assert_eq!(done.kept, vec![id.clone()], "{what}"),
                    false => {
                        assert_eq!(done.gone, vec![id.clone()], "{what}");
                        model.instances.remove(&id);
                        let others = model.instances.values().any(|r| r.token == row.token);
                        if !others {
                            model.tokens.insert(
                                row.token.clone(),
                                Some(model.now + CLIENT_TOKEN_RETENTION.as_millis() as i64),
                            );
                        }
                    }
                }
            }
            Op::Prune { minutes } => {
                model.now += i64::from(*minutes) * 60_000;
                store
                    .prune(model.now)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                model
                    .tokens
                    .retain(|_, expires| expires.is_none_or(|at| at >= model.now));
            }
            Op::Follow => {
                let changed = store.load_since(seen).await.unwrap();
                seen = changed.revision;
                follower.apply(changed);
            }
        }
        check(&store, &model, &mut follower, &mut seen, &what).await;
    }
}

/// The `target`th stored instance (modulo how many there are).
fn nth(model: &Model, target: usize) -> Option<(String, Row)> {
    let count = model.instances.len();
    (count > 0).then(|| {
        let (id, row) = model.instances.iter().nth(target % count).unwrap();
        (id.clone(), row.clone())
    })
}

async fn check(store: &Store, model: &Model, follower: &mut View, seen: &mut i64, what: &str) {
    let counts: BTreeMap<&str, i64> = store.row_counts().await.unwrap().into_iter().collect();
    let live = model.instances.len() as i64;
    assert_eq!(counts["instance_changes"], live, "{what}: {counts:?}");
    assert_eq!(counts["launched_instances"], live, "{what}: {counts:?}");
    assert_eq!(counts["no_token_history"], 0, "{what}");
    assert_eq!(
        counts["addresses"],
        model.holders.len() as i64,
        "{what}: {counts:?}"
    );
    assert_eq!(
        counts["client_tokens"],
        model.tokens.len() as i64,
        "{what}: {counts:?}"
    );
    let all = store.load_since(-1).await.unwrap();
    assert!(all.complete && all.tombstones.is_empty(), "{what}");
    // One holder per address, the one the model has.
    let mut stored = BTreeMap::new();
    for row in &all.addresses {
        let ip: IpAddr = row.address.parse().unwrap();
        assert!(
            stored.insert(ip, row.holder.clone()).is_none(),
            "{what}: {ip} has two rows"
        );
    }
    assert_eq!(stored, model.holders, "{what}");
    for (token, expires) in &model.tokens {
        let kept = store.client_token(token).await.unwrap();
        assert_eq!(
            kept.map(|t| t.expires_millis),
            Some(*expires),
            "{what}: token {token}"
        );
    }
    // A follower that catches up now holds what a complete load holds.
    let mut complete = View::default();
    complete.apply(all);
    let changed = store.load_since(*seen).await.unwrap();
    *seen = changed.revision;
    follower.apply(changed);
    assert_eq!(*follower, complete, "{what}: the follower's view");
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::option::weighted(0.4, 0..POOL).prop_map(|wanted| Op::Launch { wanted }),
        3 => (0..8usize).prop_map(|target| Op::Terminate { target }),
        3 => (0..8usize, proptest::bool::weighted(0.2))
            .prop_map(|(target, stale)| Op::Forget { target, stale }),
        1 => prop_oneof![Just(1u32), Just(61), Just(24 * 60 + 1)]
            .prop_map(|minutes| Op::Prune { minutes }),
        2 => Just(Op::Follow),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct("proptest-regressions/it/store_properties.txt"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_sqlite_store_keeps_only_live_rows_and_followers_agree(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(async {
            let store = Store::open(&Location::StateDir(dir.path().to_owned())).await.unwrap();
            run(Arc::new(store), &ops).await
        });
    }
}

#[test]
#[ignore = "needs PostgreSQL: run scripts/test"]
fn the_postgres_store_keeps_only_live_rows_and_followers_agree() {
    let pg = Postgres::start();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 12,
        ..ProptestConfig::default()
    });
    let case = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&proptest::collection::vec(op(), 1..40), |ops| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let url = pg.database(&format!("props{n}"));
            runtime().block_on(async {
                let location = Location::parse(&url).unwrap();
                let store = Store::open(&location).await.unwrap();
                run(Arc::new(store), &ops).await
            });
            Ok(())
        })
        .unwrap();
}

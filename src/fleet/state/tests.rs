//! The fleet index as the owner of "one live instance per address": unit tests, and a property
//! over random sequences of file reloads, launches (with or without a requested address), stops,
//! starts and terminations against a reference model (address → instance).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;

use super::*;
use crate::fleet::identity::IdentitySigner;
use crate::fleet::instance::InstanceConfig;
use crate::fleet::lifecycle::{Lifecycle, Transition};
use crate::fleet::network::addresses::{Block, Pool};
use crate::fleet::secret::ServerSecret;

fn keys() -> Keys {
    static SIGNER: OnceLock<Arc<IdentitySigner>> = OnceLock::new();
    let signer = SIGNER.get_or_init(|| Arc::new(IdentitySigner::generate().unwrap()));
    Keys {
        secret: ServerSecret::random(),
        signer: signer.clone(),
        token_generations: Vec::new(),
    }
}

fn template() -> &'static InstanceConfig {
    static TEMPLATE: OnceLock<InstanceConfig> = OnceLock::new();
    TEMPLATE.get_or_init(|| crate::app::config::Config::load(None).unwrap().instance)
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 21, last))
}

fn instance(id: &str, last: u8) -> Instance {
    let mut config = template().clone();
    config.instance_id = id.to_owned();
    config.network_interfaces[0].private_ipv4s = vec![Ipv4Addr::new(10, 0, 21, last)];
    Instance::new(config).unwrap()
}

fn snapshot(id: &str, last: u8) -> Snapshot {
    Snapshot::new(instance(id, last), &keys(), 0)
}

fn slot(id: &str, last: u8, lifecycle: Option<Transition>) -> Arc<InstanceSlot> {
    let changes = InstanceChanges {
        lifecycle: lifecycle.map(|t| Lifecycle::new(t, 0)),
        ..InstanceChanges::default()
    };
    InstanceSlot::new(snapshot(id, last), changes)
}

fn id(text: &str) -> InstanceId {
    text.parse().unwrap()
}

fn set_lifecycle(state: &State, of: &str, transition: Transition) {
    let slot = state.instance(&id(of)).unwrap();
    let mut changes = slot.changes();
    changes.lifecycle = Some(Lifecycle::new(transition, 0));
    let mut order = crate::fleet::lock_order::Unlocked::task();
    let held = block_on(slot.lock(&mut order));
    slot.set_changes(changes, &held);
    drop(held);
    state.reindex().unwrap();
}

/// Runs `future` to completion on a one-off runtime (these tests are synchronous).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(future)
}

const A: &str = "i-0a0000000000000a1";
const B: &str = "i-0a0000000000000b2";

#[test]
fn a_fleet_whose_instances_share_an_address_is_refused_naming_both() {
    let refused = State::fleet(vec![slot(A, 5, None), slot(B, 5, None)]).unwrap_err();
    assert_eq!(
        refused,
        AddressInUse {
            address: ip(5),
            holder: id(A),
            claimant: id(B),
        }
    );
}

#[test]
fn an_instance_claiming_a_held_address_is_refused_and_nothing_changes() {
    let state = State::fleet(vec![slot(A, 5, None)]).unwrap();
    let refused = state.insert(vec![slot(B, 5, None)]).unwrap_err();
    assert_eq!(refused.claimant, id(B));
    assert!(state.instance(&id(B)).is_none());
    assert_eq!(state.for_peer(ip(5)).unwrap().id(), &id(A));
    assert_eq!(state.admits(&[&instance(B, 5)]).unwrap_err().holder, id(A));
    assert!(state.admits(&[&instance(B, 6)]).is_ok());
}

#[test]
fn a_replacement_taking_a_held_address_is_not_swapped_in() {
    let state = State::fleet(vec![slot(A, 5, None), slot(B, 6, None)]).unwrap();
    assert!(state.replace(snapshot(B, 5)).is_err());
    assert_eq!(state.for_peer(ip(6)).unwrap().id(), &id(B));
    assert_eq!(
        addresses_of(&state.instance(&id(B)).unwrap().current().instance),
        vec![ip(6)]
    );
}

#[test]
fn two_instances_may_swap_addresses_in_one_change() {
    let state = State::fleet(vec![slot(A, 5, None), slot(B, 6, None)]).unwrap();
    state
        .apply(vec![snapshot(A, 6), snapshot(B, 5)], Vec::new(), &[])
        .unwrap();
    assert_eq!(state.for_peer(ip(5)).unwrap().id(), &id(B));
    assert_eq!(state.for_peer(ip(6)).unwrap().id(), &id(A));
}

#[test]
fn a_stopped_instance_keeps_its_address_and_a_terminated_one_frees_it() {
    let state = State::fleet(vec![slot(A, 5, Some(Transition::Launch))]).unwrap();
    set_lifecycle(&state, A, Transition::Stop);
    assert!(
        state.for_peer(ip(5)).is_none(),
        "a stopped instance answers nobody"
    );
    assert_eq!(state.holder(ip(5)), Some(id(A)));
    assert!(state
        .insert(vec![slot(B, 5, Some(Transition::Launch))])
        .is_err());
    set_lifecycle(&state, A, Transition::Terminate);
    assert_eq!(state.holder(ip(5)), None);
    state
        .insert(vec![slot(B, 5, Some(Transition::Launch))])
        .unwrap();
    assert_eq!(state.for_peer(ip(5)).unwrap().id(), &id(B));
}

/// One step of the property.
#[derive(Debug, Clone)]
enum Step {
    /// The file now has these instances (entry number → last octet of its address).
    Reload(BTreeMap<u8, u8>),
    /// RunInstances, with `PrivateIpAddress` when given.
    Launch(Option<u8>),
    Stop(usize),
    Start(usize),
    Terminate(usize),
}

/// Usable addresses of the small subnet every step draws from: 10.0.21.4 to .14.
const FIRST: u8 = 4;
const LAST: u8 = 14;

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        proptest::collection::btree_map(0u8..4, FIRST..=LAST, 0..4).prop_map(Step::Reload),
        proptest::option::of(FIRST..=LAST).prop_map(Step::Launch),
        any::<usize>().prop_map(Step::Stop),
        any::<usize>().prop_map(Step::Start),
        any::<usize>().prop_map(Step::Terminate),
    ]
}

/// The reference model: each instance's address and whether it is stopped or terminated.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    instances: BTreeMap<String, (u8, Option<Transition>)>,
}

impl Model {
    fn live(&self, except: &[&String]) -> BTreeMap<u8, String> {
        self.instances
            .iter()
            .filter(|(id, (_, l))| *l != Some(Transition::Terminate) && !except.contains(id))
            .map(|(id, (address, _))| (*address, id.clone()))
            .collect()
    }

    fn nth(&self, n: usize) -> Option<String> {
        let count = self.instances.len();
        (count > 0).then(|| self.instances.keys().nth(n % count).cloned().unwrap())
    }
}

/// Runs `steps` against a fleet index and the model, checking after each step.
fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let state = State::fleet(Vec::new()).unwrap();
    let mut pool = Pool::<Ipv4Addr>::default();
    let block = Block::v4("10.0.21.0/28".parse().unwrap());
    let mut model = Model::default();
    let mut launched = 0u32;
    for step in steps {
        let before = model.clone();
        let accepted = match step.clone() {
            Step::Reload(file) => {
                let entries: Vec<(String, u8)> = file
                    .iter()
                    .map(|(n, address)| (format!("i-0f{n:015x}"), *address))
                    .collect();
                let ids: Vec<&String> = entries.iter().map(|(id, _)| id).collect();
                let mut owners = model.live(&ids);
                let expected = entries.iter().all(|(id, address)| {
                    let holds = model
                        .instances
                        .get(id)
                        .is_none_or(|(_, l)| *l != Some(Transition::Terminate));
                    !holds || owners.insert(*address, id.clone()).is_none()
                });
                let (mut replaced, mut added) = (Vec::new(), Vec::new());
                for (id, address) in &entries {
                    match model.instances.contains_key(id) {
                        true => replaced.push(snapshot(id, *address)),
                        false => added.push(slot(id, *address, None)),
                    }
                }
                let accepted = state.apply(replaced, added, &[]).is_ok();
                prop_assert_eq!(accepted, expected, "reload {:?}", file);
                if accepted {
                    for (id, address) in entries {
                        let lifecycle = model.instances.get(&id).and_then(|(_, l)| *l);
                        model.instances.insert(id, (address, lifecycle));
                    }
                }
                accepted
            }
            Step::Launch(wanted) => {
                let owners = model.live(&[]);
                let held = |ip: Ipv4Addr| state.holder(IpAddr::V4(ip)).is_some();
                let wanted_ip = wanted.map(|w| Ipv4Addr::new(10, 0, 21, w));
                match pool.allocate(block, wanted_ip, held) {
                    Ok(address) => {
                        let last = address.octets()[3];
                        prop_assert!(!owners.contains_key(&last), "{} handed out twice", address);
                        launched += 1;
                        let id = format!("i-0e{launched:015x}");
                        let new = instance(&id, last);
                        prop_assert!(state.admits(&[&new]).is_ok());
                        let slot = InstanceSlot::new(
                            Snapshot::new(new, &keys(), 0),
                            InstanceChanges {
                                lifecycle: Some(Lifecycle::new(Transition::Launch, 0)),
                                ..InstanceChanges::default()
                            },
                        );
                        prop_assert!(state.insert(vec![slot]).is_ok());
                        model.instances.insert(id, (last, Some(Transition::Launch)));
                        true
                    }
                    Err(_) => {
                        let free = (FIRST..=LAST).any(|a| !owners.contains_key(&a));
                        prop_assert!(wanted.is_some_and(|w| owners.contains_key(&w)) || !free);
                        false
                    }
                }
            }
            Step::Stop(n) | Step::Start(n) | Step::Terminate(n) => {
                let transition = match step {
                    Step::Stop(_) => Transition::Stop,
                    Step::Start(_) => Transition::Start,
                    _ => Transition::Terminate,
                };
                let Some(id) = model.nth(n) else { continue };
                let (address, lifecycle) = model.instances[&id];
                if lifecycle == Some(Transition::Terminate) {
                    continue;
                }
                set_lifecycle(&state, &id, transition);
                if transition == Transition::Terminate {
                    pool.release(Ipv4Addr::new(10, 0, 21, address));
                }
                model.instances.insert(id, (address, Some(transition)));
                true
            }
        };
        if !accepted {
            prop_assert_eq!(&model, &before);
        }
        let owners = model.live(&[]);
        for last in FIRST..=LAST {
            let owner = owners.get(&last);
            let holder = state.holder(ip(last)).map(|i| i.to_string());
            prop_assert_eq!(holder.as_ref(), owner);
            let serving = owner.filter(|id| {
                model.instances[*id]
                    .1
                    .is_none_or(|l| matches!(l, Transition::Launch | Transition::Start))
            });
            let answered = state.for_peer(ip(last)).map(|s| s.id().to_string());
            prop_assert_eq!(answered.as_ref(), serving, "{} after {:?}", ip(last), step);
        }
        for (id, (address, _)) in &model.instances {
            let slot = state.instance(&id.parse().unwrap()).unwrap();
            prop_assert_eq!(addresses_of(&slot.current().instance), vec![ip(*address)]);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn every_live_address_has_exactly_one_owner_whatever_reloads_launches_and_states_do(
        steps in proptest::collection::vec(step(), 1..24),
    ) {
        run(steps)?;
    }
}

//! The fleet index and the one owner of "one live instance per address".
//!
//! Every address of a *live* instance (any instance not terminated: a stopped instance keeps its
//! private addresses, as on EC2) has exactly one owner here. The index is rebuilt whole from the
//! instance slots; a rebuild that would give one address two owners fails with
//! [`AddressInUse`] instead of picking one, and the change that asked for it is refused with
//! nothing swapped. Guests are answered from `by_address`, the running subset of the owners.
//!
//! The network registry's address pools ([`crate::fleet::network`]) are a record for subnets
//! (`availableIpAddressCount`, `DeleteSubnet`) and for other hosts; allocation consults the
//! index ([`super::State::holder`]) and the index refuses duplicates, so the two cannot hand one
//! address to two instances even when the pools lag behind.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use super::InstanceSlot;
use crate::fleet::instance::Instance;
use crate::fleet::instance_id::InstanceId;

/// An instance claims an address another live instance holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address {address} is held by {holder}; {claimant} cannot have it too")]
pub struct AddressInUse {
    /// The address.
    pub address: IpAddr,
    /// The live instance holding it.
    pub holder: InstanceId,
    /// The instance that asked for it too.
    pub claimant: InstanceId,
}

/// Every private address (IPv4 and IPv6) of `instance`'s interfaces.
pub fn addresses_of(instance: &Instance) -> Vec<IpAddr> {
    let mut addresses = Vec::new();
    for interface in &instance.config.network_interfaces {
        addresses.extend(interface.private_ipv4s.iter().map(|ip| IpAddr::V4(*ip)));
        addresses.extend(interface.ipv6s.iter().map(|ip| IpAddr::V6(*ip)));
    }
    addresses
}

/// Which instance answers a caller, read lock-free: rebuilt whole when instances come, go or
/// change addresses or state.
#[derive(Debug, Default)]
pub(super) struct Index {
    /// The running instances, by each of their addresses (the guest hot path).
    pub(super) by_address: HashMap<IpAddr, Arc<InstanceSlot>>,
    /// Every live instance (running or stopped), by each of their addresses.
    pub(super) owners: HashMap<IpAddr, InstanceId>,
    /// Every instance, terminated ones too.
    pub(super) by_id: BTreeMap<InstanceId, Arc<InstanceSlot>>,
    /// Single-instance mode: the instance that answers every caller.
    pub(super) everyone: Option<Arc<InstanceSlot>>,
}

impl Index {
    /// The index of `by_id`. Each slot serves its current addresses, except those in
    /// `claiming`, which serve the addresses given there (what a change is about to give them)
    /// and are checked last, so that they are the claimants when an address is taken. Refused
    /// when two live instances share an address.
    pub(super) fn build(
        by_id: BTreeMap<InstanceId, Arc<InstanceSlot>>,
        single: bool,
        claiming: &BTreeMap<InstanceId, Vec<IpAddr>>,
    ) -> Result<Index, AddressInUse> {
        let mut by_address = HashMap::with_capacity(by_id.len() * 2);
        let mut owners = HashMap::with_capacity(by_id.len() * 2);
        let holding = by_id
            .values()
            .filter(|slot| !claiming.contains_key(slot.id()))
            .map(|slot| (slot, slot.addresses()))
            .chain(
                claiming
                    .iter()
                    .filter_map(|(id, addresses)| Some((by_id.get(id)?, addresses.clone()))),
            );
        for (slot, addresses) in holding {
            let lifecycle = slot.changes().lifecycle;
            if lifecycle.is_some_and(|l| !l.holds_addresses()) {
                continue;
            }
            let serves = lifecycle.is_none_or(|l| l.serves_guests());
            for address in addresses {
                let address = address.to_canonical();
                match owners.insert(address, slot.id().clone()) {
                    Some(holder) if holder != *slot.id() => {
                        return Err(AddressInUse {
                            address,
                            holder,
                            claimant: slot.id().clone(),
                        })
                    }
                    _ => {}
                }
                if serves {
                    by_address.insert(address, slot.clone());
                }
            }
        }
        let everyone = match single {
            true => by_id.values().next().cloned(),
            false => None,
        };
        Ok(Index {
            by_address,
            owners,
            by_id,
            everyone,
        })
    }
}

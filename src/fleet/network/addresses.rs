//! CIDR arithmetic and the address pool of one subnet: EC2 reserves the first four addresses of
//! every subnet (network, router, DNS, future use) and the last one (broadcast), for IPv4 and
//! IPv6 alike. A pool hands out the others with a cursor plus a set of the addresses in use, so
//! allocating one after another is O(log n) per address however full the subnet is.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// Addresses reserved at the start of every subnet.
const RESERVED_FIRST: u128 = 4;

/// An IPv4 or IPv6 address as a number, so one pool serves both.
pub trait Address: Copy + Ord + std::fmt::Display {
    /// The address as a number.
    fn to_number(self) -> u128;
    /// The address numbered `n` (truncated to the family's width).
    fn from_number(n: u128) -> Self;
}

impl Address for Ipv4Addr {
    fn to_number(self) -> u128 {
        u128::from(u32::from(self))
    }
    fn from_number(n: u128) -> Self {
        Ipv4Addr::from(n as u32)
    }
}

impl Address for Ipv6Addr {
    fn to_number(self) -> u128 {
        u128::from(self)
    }
    fn from_number(n: u128) -> Self {
        Ipv6Addr::from(n)
    }
}

/// A block of addresses: its first (network) and last (broadcast) address, as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// The network address.
    pub first: u128,
    /// The last address of the block.
    pub last: u128,
}

impl Block {
    /// The block of an IPv4 CIDR.
    pub fn v4(net: Ipv4Net) -> Block {
        Block {
            first: net.network().to_number(),
            last: net.broadcast().to_number(),
        }
    }

    /// The block of an IPv6 CIDR.
    pub fn v6(net: Ipv6Net) -> Block {
        Block {
            first: net.network().to_number(),
            last: net.broadcast().to_number(),
        }
    }

    /// The addresses EC2 lets instances use, `None` when the block is too small to have any.
    pub fn usable(self) -> Option<(u128, u128)> {
        let first = self.first.checked_add(RESERVED_FIRST)?;
        let last = self.last.checked_sub(1)?;
        (first <= last).then_some((first, last))
    }

    /// How many addresses instances may use.
    pub fn usable_count(self) -> u128 {
        self.usable()
            .map_or(0, |(first, last)| (last - first).saturating_add(1))
    }

    /// Whether `n` lies in the block.
    pub fn contains(self, n: u128) -> bool {
        (self.first..=self.last).contains(&n)
    }
}

/// Whether the two IPv4 blocks share an address.
pub fn overlaps_v4(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Whether the two IPv6 blocks share an address.
pub fn overlaps_v6(a: &Ipv6Net, b: &Ipv6Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Why a pool refused an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolError {
    /// The address is taken.
    InUse,
    /// The address is not in the subnet.
    Outside,
    /// The address is one of the five EC2 reserves.
    Reserved,
    /// No usable address is free.
    Full,
}

/// The addresses in use in one subnet, and where the next search starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(serialize = "A: Serialize", deserialize = "A: Deserialize<'de>"))]
pub struct Pool<A: Address> {
    in_use: BTreeSet<A>,
    next: Option<A>,
}

impl<A: Address> Default for Pool<A> {
    fn default() -> Self {
        Pool {
            in_use: BTreeSet::new(),
            next: None,
        }
    }
}

impl<A: Address> Pool<A> {
    /// Takes `wanted`, or the next free usable address of `block`; an address `held` says a
    /// live instance holds is in use whatever the pool recorded.
    pub fn allocate(
        &mut self,
        block: Block,
        wanted: Option<A>,
        held: impl Fn(A) -> bool,
    ) -> Result<A, PoolError> {
        let (first, last) = block.usable().ok_or(PoolError::Full)?;
        if let Some(address) = wanted {
            let n = address.to_number();
            if !block.contains(n) {
                return Err(PoolError::Outside);
            }
            if !(first..=last).contains(&n) {
                return Err(PoolError::Reserved);
            }
            if held(address) || !self.in_use.insert(address) {
                return Err(PoolError::InUse);
            }
            return Ok(address);
        }
        // Every usable address once: the held ones need not be in `in_use`.
        let tries = (last - first).saturating_add(1);
        let mut candidate = self
            .next
            .map(A::to_number)
            .filter(|n| (first..=last).contains(n))
            .unwrap_or(first);
        for _ in 0..tries {
            let address = A::from_number(candidate);
            candidate = if candidate == last {
                first
            } else {
                candidate + 1
            };
            if !held(address) && self.in_use.insert(address) {
                self.next = Some(A::from_number(candidate));
                return Ok(address);
            }
        }
        Err(PoolError::Full)
    }

    /// Makes the next search of a free address of `block` start at the `offset`th usable one
    /// (modulo how many there are), unless a search already took place.
    pub fn start_search_at(&mut self, block: Block, offset: u128) {
        if self.next.is_some() || offset == 0 {
            return;
        }
        if let Some((first, last)) = block.usable() {
            let count = (last - first).saturating_add(1);
            self.next = Some(A::from_number(first + offset % count));
        }
    }

    /// Records `address` as in use (an address given by configuration; reserved ones too).
    pub fn mark(&mut self, address: A) {
        self.in_use.insert(address);
    }

    /// Frees `address`; `false` when it was not in use.
    pub fn release(&mut self, address: A) -> bool {
        self.in_use.remove(&address)
    }

    /// Whether `address` is in use.
    pub fn is_in_use(&self, address: A) -> bool {
        self.in_use.contains(&address)
    }

    /// How many addresses are in use.
    pub fn len(&self) -> usize {
        self.in_use.len()
    }

    /// Whether no address is in use.
    pub fn is_empty(&self) -> bool {
        self.in_use.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    #[test]
    fn the_first_four_and_the_last_address_are_never_handed_out() {
        let block = Block::v4(net("10.0.0.0/28"));
        let mut pool = Pool::<Ipv4Addr>::default();
        let mut got = Vec::new();
        while let Ok(address) = pool.allocate(block, None, |_| false) {
            got.push(address.octets()[3]);
        }
        assert_eq!(got, (4..=14).collect::<Vec<u8>>());
        assert_eq!(block.usable_count(), 11);
        assert_eq!(pool.allocate(block, None, |_| false), Err(PoolError::Full));
    }

    #[test]
    fn a_search_starts_at_the_offset_given_modulo_the_usable_addresses() {
        let block = Block::v4(net("10.0.0.0/28"));
        let mut pool = Pool::<Ipv4Addr>::default();
        pool.start_search_at(block, 11 * 3 + 2);
        assert_eq!(
            pool.allocate(block, None, |_| false),
            Ok(Ipv4Addr::new(10, 0, 0, 6))
        );
        // Only before the first search.
        pool.start_search_at(block, 5);
        assert_eq!(
            pool.allocate(block, None, |_| false),
            Ok(Ipv4Addr::new(10, 0, 0, 7))
        );
        let mut every = vec![6, 7];
        while let Ok(address) = pool.allocate(block, None, |_| false) {
            every.push(address.octets()[3]);
        }
        every.sort();
        assert_eq!(
            every,
            (4..=14).collect::<Vec<u8>>(),
            "every usable address once"
        );
    }

    #[test]
    fn a_wanted_address_is_checked() {
        let block = Block::v4(net("10.0.1.0/24"));
        let mut pool = Pool::<Ipv4Addr>::default();
        let wanted = Ipv4Addr::new(10, 0, 1, 50);
        assert_eq!(pool.allocate(block, Some(wanted), |_| false), Ok(wanted));
        assert_eq!(
            pool.allocate(block, Some(wanted), |_| false),
            Err(PoolError::InUse)
        );
        let reserved = Ipv4Addr::new(10, 0, 1, 2);
        assert_eq!(
            pool.allocate(block, Some(reserved), |_| false),
            Err(PoolError::Reserved)
        );
        let broadcast = Ipv4Addr::new(10, 0, 1, 255);
        assert_eq!(
            pool.allocate(block, Some(broadcast), |_| false),
            Err(PoolError::Reserved)
        );
        let outside = Ipv4Addr::new(10, 0, 2, 5);
        assert_eq!(
            pool.allocate(block, Some(outside), |_| false),
            Err(PoolError::Outside)
        );
    }

    #[test]
    fn an_address_held_elsewhere_is_never_handed_out_even_when_the_pool_forgot_it() {
        let block = Block::v4(net("10.0.0.0/28"));
        let mut pool = Pool::<Ipv4Addr>::default();
        let held = |ip: Ipv4Addr| ip == Ipv4Addr::new(10, 0, 0, 4);
        assert_eq!(
            pool.allocate(block, Some(Ipv4Addr::new(10, 0, 0, 4)), held),
            Err(PoolError::InUse)
        );
        assert_eq!(
            pool.allocate(block, None, held),
            Ok(Ipv4Addr::new(10, 0, 0, 5))
        );
        let mut got = 1;
        while pool.allocate(block, None, held).is_ok() {
            got += 1;
        }
        assert_eq!(got, 10, "every usable address but the held one");
    }

    #[test]
    fn released_addresses_are_found_again_after_the_cursor_wraps() {
        let block = Block::v4(net("10.0.0.0/29"));
        let mut pool = Pool::<Ipv4Addr>::default();
        let only = pool.allocate(block, None, |_| false).unwrap();
        assert_eq!(only, Ipv4Addr::new(10, 0, 0, 4));
        assert_eq!(
            pool.allocate(block, None, |_| false).unwrap(),
            Ipv4Addr::new(10, 0, 0, 5)
        );
        assert_eq!(
            pool.allocate(block, None, |_| false).unwrap(),
            Ipv4Addr::new(10, 0, 0, 6)
        );
        assert_eq!(pool.allocate(block, None, |_| false), Err(PoolError::Full));
        assert!(pool.release(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(
            pool.allocate(block, None, |_| false).unwrap(),
            Ipv4Addr::new(10, 0, 0, 5)
        );
    }

    #[test]
    fn ten_thousand_addresses_allocate_quickly() {
        let block = Block::v4(net("10.0.0.0/16"));
        let mut pool = Pool::<Ipv4Addr>::default();
        let started = std::time::Instant::now();
        for _ in 0..10_000 {
            pool.allocate(block, None, |_| false).unwrap();
        }
        assert_eq!(pool.len(), 10_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn ipv6_pools_skip_the_reserved_addresses_too() {
        let block = Block::v6("2600:1f18::/64".parse().unwrap());
        let mut pool = Pool::<Ipv6Addr>::default();
        let first = pool.allocate(block, None, |_| false).unwrap();
        assert_eq!(first, "2600:1f18::4".parse::<Ipv6Addr>().unwrap());
    }

    fn any_v4_net() -> impl Strategy<Value = Ipv4Net> {
        (any::<u32>(), 8u8..=30)
            .prop_map(|(a, len)| Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc())
    }

    proptest! {
        #[test]
        fn overlap_is_symmetric_and_matches_shared_addresses(a in any_v4_net(), b in any_v4_net()) {
            let shared = Block::v4(a).first.max(Block::v4(b).first) <= Block::v4(a).last.min(Block::v4(b).last);
            prop_assert_eq!(overlaps_v4(&a, &b), shared);
            prop_assert_eq!(overlaps_v4(&a, &b), overlaps_v4(&b, &a));
        }

        #[test]
        fn containment_means_every_address_is_inside(a in any_v4_net(), b in any_v4_net()) {
            let (outer, inner) = (Block::v4(a), Block::v4(b));
            let inside = outer.first <= inner.first && inner.last <= outer.last;
            prop_assert_eq!(a.contains(&b), inside);
        }

        #[test]
        fn allocation_never_repeats_reserves_or_strays(
            len in 24u8..=28,
            steps in proptest::collection::vec((any::<bool>(), any::<u8>()), 1..300),
        ) {
            let subnet = Ipv4Net::new(Ipv4Addr::new(10, 0, 8, 0), len).unwrap().trunc();
            let block = Block::v4(subnet);
            let (first, last) = block.usable().unwrap();
            let mut pool = Pool::<Ipv4Addr>::default();
            let mut held: BTreeSet<Ipv4Addr> = BTreeSet::new();
            for (allocate, pick) in steps {
                if allocate || held.is_empty() {
                    match pool.allocate(block, None, |_| false) {
                        Ok(address) => {
                            let n = address.to_number();
                            prop_assert!((first..=last).contains(&n));
                            prop_assert!(held.insert(address), "handed out twice: {}", address);
                        }
                        Err(error) => {
                            prop_assert_eq!(error, PoolError::Full);
                            prop_assert_eq!(held.len() as u128, block.usable_count());
                        }
                    }
                } else {
                    let gone = *held.iter().nth(pick as usize % held.len()).unwrap();
                    held.remove(&gone);
                    prop_assert!(pool.release(gone));
                }
            }
        }
    }
}

//! Maps keyed by the ids imds hands out itself, one after another (a server's open connections,
//! an instance's): every connection is added and removed once, so the key is hashed by one
//! multiplication rather than by SipHash. Nobody else chooses these keys, so nobody can choose
//! keys that collide.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by ids handed out in sequence.
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing of a `u64` id: sequential ids spread over every bit, the top ones too
/// (which the map's probing looks at first).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed by these maps; any other key still hashes, byte by byte.
        for byte in bytes {
            self.write_u64(u64::from(*byte) ^ self.0.rotate_left(8));
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn sequential_ids_spread_over_the_top_bits() {
        let hasher = BuildHasherDefault::<IdHasher>::default();
        let tops: std::collections::HashSet<u64> =
            (0..128u64).map(|id| hasher.hash_one(id) >> 57).collect();
        assert!(tops.len() > 64, "{} distinct top-7-bit values", tops.len());
    }

    #[test]
    fn a_map_keyed_by_ids_keeps_them_apart() {
        let mut map = IdMap::default();
        for id in 0..10_000u64 {
            map.insert(id, id * 2);
        }
        assert_eq!(map.len(), 10_000);
        assert!((0..10_000u64).all(|id| map.get(&id) == Some(&(id * 2))));
        for id in (0..10_000u64).step_by(2) {
            map.remove(&id);
        }
        assert_eq!(map.len(), 5_000);
        assert_eq!(map.get(&1), Some(&2));
        assert_eq!(map.get(&2), None);
    }
}

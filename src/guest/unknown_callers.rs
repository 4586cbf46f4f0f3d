//! Callers whose address belongs to no instance (fleet mode) are logged at most once a minute
//! per network (an IPv4 address, an IPv6 /64: one host can use a whole /64), in bounded
//! memory: a small table consulted only on the refusal path. Past the table's size, networks
//! it cannot remember share one line a minute, so a flood from ever new addresses never means a
//! line per request.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::log_limit::LogLimit;

/// How long a network stays quiet in the log after being logged.
const QUIET: Duration = Duration::from_secs(60);
/// Most networks remembered.
const REMEMBERED: usize = 4096;

/// When each unknown caller's network was last logged.
#[derive(Debug)]
pub struct UnknownCallers {
    seen: Mutex<Seen>,
    /// For the networks the table has no room for.
    others: LogLimit,
}

/// The networks logged, and when the full table may next be swept of quiet ones (a sweep is a
/// scan of the whole table: at most once per [`QUIET`], however many callers come).
#[derive(Debug, Default)]
struct Seen {
    at: HashMap<IpAddr, Instant>,
    next_sweep: Option<Instant>,
}

impl Default for UnknownCallers {
    fn default() -> Self {
        UnknownCallers {
            seen: Mutex::new(Seen::default()),
            others: LogLimit::new(QUIET),
        }
    }
}

/// The network a caller is logged under: its IPv4 address, or its IPv6 /64.
fn network(caller: IpAddr) -> IpAddr {
    match caller.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

impl UnknownCallers {
    /// Whether `caller` should be logged now: its network was not logged within the last
    /// minute (or, when the table is full, no other unremembered caller was).
    pub fn first_in_a_while(&self, caller: IpAddr) -> bool {
        let now = Instant::now();
        let key = network(caller);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen
            .at
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < QUIET)
        {
            return false;
        }
        if seen.at.len() >= REMEMBERED && seen.next_sweep.is_none_or(|due| now >= due) {
            seen.at.retain(|_, at| now.duration_since(*at) < QUIET);
            seen.next_sweep = Some(now + QUIET);
        }
        if seen.at.len() >= REMEMBERED {
            return self.others.allow().is_some();
        }
        seen.at.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_is_logged_once_a_minute_and_memory_stays_bounded() {
        let callers = UnknownCallers::default();
        let a: IpAddr = "10.0.0.9".parse().unwrap();
        assert!(callers.first_in_a_while(a));
        assert!(!callers.first_in_a_while(a));
        let mut logged = 0;
        for i in 0..10_000u32 {
            logged += usize::from(callers.first_in_a_while(IpAddr::from(i.to_be_bytes())));
        }
        assert!(callers.seen.lock().unwrap().at.len() <= REMEMBERED);
        assert!(
            logged <= REMEMBERED,
            "{logged} lines for 10,000 new addresses"
        );
    }

    #[test]
    fn addresses_of_one_ipv6_64_share_one_line() {
        let callers = UnknownCallers::default();
        assert!(callers.first_in_a_while("2001:db8:1:2::1".parse().unwrap()));
        for i in 2..1000u16 {
            let address = Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, 0, 0, 1);
            assert!(!callers.first_in_a_while(IpAddr::V6(address)));
        }
        assert!(callers.first_in_a_while("2001:db8:1:3::1".parse().unwrap()));
    }
}

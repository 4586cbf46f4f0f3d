//! Callers whose address belongs to no instance (fleet mode) are logged at most once a minute
//! per address, in bounded memory: a small table consulted only on the refusal path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an address stays quiet in the log after being logged.
const QUIET: Duration = Duration::from_secs(60);
/// Most addresses remembered; past that the table starts anew (more lines, never more memory).
const REMEMBERED: usize = 4096;

/// When each unknown caller was last logged.
#[derive(Debug, Default)]
pub struct UnknownCallers(Mutex<HashMap<IpAddr, Instant>>);

impl UnknownCallers {
    /// Whether `caller` should be logged now (not logged within the last minute).
    pub fn first_in_a_while(&self, caller: IpAddr) -> bool {
        let now = Instant::now();
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen
            .get(&caller)
            .is_some_and(|at| now.duration_since(*at) < QUIET)
        {
            return false;
        }
        if seen.len() >= REMEMBERED {
            seen.retain(|_, at| now.duration_since(*at) < QUIET);
            if seen.len() >= REMEMBERED {
                seen.clear();
            }
        }
        seen.insert(caller, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_logged_once_a_minute_and_memory_stays_bounded() {
        let callers = UnknownCallers::default();
        let a: IpAddr = "10.0.0.9".parse().unwrap();
        assert!(callers.first_in_a_while(a));
        assert!(!callers.first_in_a_while(a));
        for i in 0..10_000u32 {
            callers.first_in_a_while(IpAddr::from(i.to_be_bytes()));
        }
        assert!(callers.0.lock().unwrap().len() <= REMEMBERED);
    }
}

//! Each instance's recent IMDSv1 callers: the local processes the access log found behind
//! token-less requests (see [`crate::guest::access_log`]), kept so the web console can show who
//! still has to move to IMDSv2.
//!
//! A small ring of at most [`KEPT`] distinct callers (process id and command line), each with how
//! many token-less requests it made and when it last made one; when full, the caller seen least
//! recently makes room. It is filled only after a caller lookup, which only token-less requests
//! from processes on this host pay for, so IMDSv2 requests never touch it.

use std::sync::Mutex;
use std::time::SystemTime;

/// Distinct callers kept per instance.
pub const KEPT: usize = 20;
/// Longest command line kept, in characters.
pub const MAX_COMMAND_LINE: usize = 256;

/// One process that made token-less requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentCaller {
    /// Its process id.
    pub pid: u32,
    /// The user it runs as.
    pub uid: u32,
    /// Its command line (at most [`MAX_COMMAND_LINE`] characters).
    pub command_line: String,
    /// Token-less requests it made while kept.
    pub requests: u64,
    /// When it last made one.
    pub last_seen: SystemTime,
}

/// The user imds runs as (`None` where `/proc` cannot tell).
pub fn own_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    static OWN: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| std::fs::metadata("/proc/self").ok().map(|m| m.uid()))
}

/// An instance's recent IMDSv1 callers, most recently seen first.
#[derive(Debug, Default)]
pub struct RecentCallers {
    callers: Mutex<Vec<RecentCaller>>,
}

impl RecentCallers {
    /// Counts one token-less request by process `pid` of user `uid` running `command_line`,
    /// made at `at`.
    pub fn record(&self, pid: u32, uid: u32, command_line: &str, at: SystemTime) {
        let command_line: String = command_line.chars().take(MAX_COMMAND_LINE).collect();
        let mut callers = self.callers.lock().unwrap_or_else(|e| e.into_inner());
        let seen = callers
            .iter()
            .position(|c| c.pid == pid && c.command_line == command_line);
        let mut caller = match seen {
            Some(index) => callers.remove(index),
            None => RecentCaller {
                pid,
                uid,
                command_line,
                requests: 0,
                last_seen: at,
            },
        };
        caller.requests += 1;
        caller.last_seen = caller.last_seen.max(at);
        callers.insert(0, caller);
        callers.truncate(KEPT);
    }

    /// The callers kept, most recently seen first.
    pub fn list(&self) -> Vec<RecentCaller> {
        self.callers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_946_400 + seconds)
    }

    #[test]
    fn a_caller_seen_again_is_counted_once_and_moves_to_the_front() {
        let callers = RecentCallers::default();
        callers.record(10, 0, "python3 poll.py", at(0));
        callers.record(11, 0, "curl http://169.254.169.254/", at(1));
        callers.record(10, 0, "python3 poll.py", at(2));
        let list = callers.list();
        assert_eq!(list.len(), 2);
        assert_eq!(
            (list[0].pid, list[0].requests, list[0].last_seen),
            (10, 2, at(2))
        );
        assert_eq!((list[1].pid, list[1].requests), (11, 1));
    }

    #[test]
    fn a_reused_pid_with_another_command_line_is_another_caller() {
        let callers = RecentCallers::default();
        callers.record(10, 0, "python3 poll.py", at(0));
        callers.record(10, 0, "bash", at(1));
        assert_eq!(callers.list().len(), 2);
    }

    #[test]
    fn when_full_the_caller_seen_least_recently_makes_room() {
        let callers = RecentCallers::default();
        for pid in 0..KEPT as u32 {
            callers.record(pid, 0, "poll", at(u64::from(pid)));
        }
        callers.record(0, 0, "poll", at(100));
        callers.record(1000, 0, "new", at(101));
        let list = callers.list();
        assert_eq!(list.len(), KEPT);
        assert_eq!(list[0].pid, 1000);
        assert_eq!(list[1].pid, 0);
        assert!(
            list.iter().all(|c| c.pid != 1),
            "pid 1 was seen least recently"
        );
    }

    #[test]
    fn long_command_lines_are_cut() {
        let callers = RecentCallers::default();
        callers.record(1, 0, &"x".repeat(5000), at(0));
        assert_eq!(callers.list()[0].command_line.len(), MAX_COMMAND_LINE);
    }
}

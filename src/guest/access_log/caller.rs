//! Which local process holds the client end of a TCP connection: the socket's inode and owner
//! from the kernel (netlink sock_diag, else `/proc/net/tcp`), then the process with a
//! `/proc/PID/fd/*` link to `socket:[INODE]`, then that process' `/proc/PID/cmdline`.
//!
//! Only sockets in imds' network namespace are found, only processes in its PID namespace, and
//! only those whose file descriptors imds may read (its own user's, or all as root): for any
//! other caller nothing is found.

use std::collections::VecDeque;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use super::{proc_net_tcp, sock_diag};

/// A process that called, as the access log shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Its process id.
    pub pid: u32,
    /// The user it runs as.
    pub uid: u32,
    /// Its arguments joined by spaces (at most [`MAX_CMDLINE`] bytes).
    pub cmdline: String,
}

/// Longest command line kept, in bytes.
pub const MAX_CMDLINE: usize = 1024;
/// How many recently found callers are remembered.
const RECENT: usize = 8;

/// The kernel's view of a client socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSocket {
    /// The user that created it.
    pub uid: u32,
    /// Its inode; 0 once no process holds it (closing, TIME_WAIT).
    pub inode: u64,
}

/// Finds callers. Reading a process' descriptors costs a few microseconds each, so it tries, in
/// order: the descriptor where each recent caller held its socket (a client polling IMDS one
/// connection at a time gets the same descriptor number each time); every descriptor of the
/// recent callers (clients with several connections); then every other process of the socket's
/// user, newest first (a short-lived client such as `curl` has one of the highest pids).
#[derive(Debug, Default)]
pub struct CallerFinder {
    /// `(pid, fd)` of recent callers' sockets, latest first.
    recent: Mutex<VecDeque<(u32, u32)>>,
}

impl CallerFinder {
    /// The process whose socket is connected from `client` to `server`, if it is visible here.
    /// Blocking: asks the kernel and reads `/proc`.
    pub fn find(&self, client: SocketAddr, server: SocketAddr) -> Option<Caller> {
        let socket = client_socket(client, server)?;
        if socket.inode == 0 {
            return None;
        }
        let pid = self.owner(socket.inode, socket.uid)?;
        Some(Caller {
            pid,
            uid: socket.uid,
            cmdline: cmdline(pid).unwrap_or_default(),
        })
    }

    /// The process with a descriptor of socket `inode`, created by user `uid`.
    fn owner(&self, inode: u64, uid: u32) -> Option<u32> {
        let link = format!("socket:[{inode}]");
        let recent: Vec<(u32, u32)> = self.lock().iter().copied().collect();
        let recent_pids: Vec<u32> = recent.iter().map(|(pid, _)| *pid).collect();
        let found = recent
            .iter()
            .copied()
            .find(|(pid, fd)| links_to(format!("/proc/{pid}/fd/{fd}"), &link))
            .or_else(|| first_holding(recent_pids.iter().copied(), &link))
            .or_else(|| {
                let others = newest_first(&recent_pids).into_iter();
                first_holding(others.filter(|pid| runs_as(*pid, uid)), &link)
            })?;
        let mut recent = self.lock();
        recent.retain(|(pid, _)| *pid != found.0);
        recent.push_front(found);
        recent.truncate(RECENT);
        Some(found.0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u32, u32)>> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The socket connected from `client` to `server`: asked of the kernel, or read from
/// `/proc/net/tcp` where netlink sock_diag is unavailable.
fn client_socket(client: SocketAddr, server: SocketAddr) -> Option<ClientSocket> {
    sock_diag::find(client, server).unwrap_or_else(|_| proc_net_tcp::find(client, server))
}

/// Every process but `except`, newest (highest pid) first.
fn newest_first(except: &[u32]) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|pid| !except.contains(pid))
        .collect();
    pids.sort_unstable_by(|a, b| b.cmp(a));
    pids
}

/// The first of `pids` with a descriptor whose link reads `link`, and that descriptor.
fn first_holding(mut pids: impl Iterator<Item = u32>, link: &str) -> Option<(u32, u32)> {
    pids.find_map(|pid| Some((pid, descriptor(pid, link)?)))
}

/// Whether process `pid` runs as user `uid` (owns `/proc/PID`).
fn runs_as(pid: u32, uid: u32) -> bool {
    fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid)
}

/// The descriptor of process `pid` whose link reads `link`.
fn descriptor(pid: u32, link: &str) -> Option<u32> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .find(|fd| links_to(fd.path(), link))?
        .file_name()
        .to_str()?
        .parse()
        .ok()
}

/// Whether the symbolic link `path` reads `link`.
fn links_to(path: impl AsRef<std::path::Path>, link: &str) -> bool {
    fs::read_link(path).is_ok_and(|target| target.as_os_str() == link)
}

/// `/proc/PID/cmdline`: the arguments, NUL-separated, joined by spaces.
fn cmdline(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let raw = raw.strip_suffix(b"\0").unwrap_or(&raw);
    let raw = raw.get(..MAX_CMDLINE).unwrap_or(raw);
    let text: Vec<u8> = raw
        .iter()
        .map(|b| if *b == 0 { b' ' } else { *b })
        .collect();
    Some(String::from_utf8_lossy(&text).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    /// A connection from this process to itself: the client end and the accepted end.
    fn connect(listen: &str) -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind(listen).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        (client, accepted)
    }

    fn ends(accepted: &TcpStream) -> (SocketAddr, SocketAddr) {
        (
            accepted.peer_addr().unwrap(),
            accepted.local_addr().unwrap(),
        )
    }

    #[test]
    fn this_process_is_found_at_the_client_end_of_its_own_connections() {
        let finder = CallerFinder::default();
        for listen in ["127.0.0.1:0", "[::1]:0"] {
            let (_client, accepted) = connect(listen);
            let (peer, server) = ends(&accepted);
            let caller = finder.find(peer, server).expect("found");
            assert_eq!(caller.pid, std::process::id());
            assert!(!caller.cmdline.is_empty());
        }
    }

    #[test]
    fn ipv4_clients_of_a_dual_stack_listener_are_found() {
        let listener = TcpListener::bind("[::]:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        assert!(peer.is_ipv6(), "seen as IPv4-mapped: {peer}");
        let found = CallerFinder::default().find(peer, accepted.local_addr().unwrap());
        assert_eq!(found.map(|c| c.pid), Some(std::process::id()));
    }

    #[test]
    fn the_kernel_and_proc_net_tcp_name_the_same_socket() {
        for listen in ["127.0.0.1:0", "[::1]:0"] {
            let (_client, accepted) = connect(listen);
            let (peer, server) = ends(&accepted);
            let asked = sock_diag::find(peer, server).unwrap();
            assert!(asked.is_some());
            assert_eq!(asked, proc_net_tcp::find(peer, server));
            // The other end is the server's socket, not a client's.
            assert_ne!(sock_diag::find(server, peer).unwrap(), asked);
        }
    }

    #[test]
    fn nobody_is_found_for_an_unknown_connection() {
        let (_client, accepted) = connect("127.0.0.1:0");
        let (_, server) = ends(&accepted);
        let stranger = SocketAddr::new(server.ip(), 1);
        assert_eq!(CallerFinder::default().find(stranger, server), None);
        assert_eq!(sock_diag::find(stranger, server).unwrap(), None);
    }

    /// `cargo test --release --lib caller_lookup_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn caller_lookup_cost() {
        let (_client, accepted) = connect("127.0.0.1:0");
        let (peer, server) = ends(&accepted);
        let time = |name: &str, rounds: u32, mut lookup: Box<dyn FnMut() -> bool + '_>| {
            let started = Instant::now();
            for _ in 0..rounds {
                assert!(lookup());
            }
            let each = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
            println!("{name:42} {each:8.1} us");
        };
        let processes = fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .count();
        println!("{processes} processes");
        let finder = CallerFinder::default();
        time(
            "socket by netlink sock_diag",
            1000,
            Box::new(|| sock_diag::find(peer, server).unwrap().is_some()),
        );
        time(
            "socket by /proc/net/tcp (fallback)",
            100,
            Box::new(|| proc_net_tcp::find(peer, server).is_some()),
        );
        time(
            "whole lookup, caller seen recently",
            1000,
            Box::new(|| finder.find(peer, server).is_some()),
        );
        time(
            "whole lookup, scanning every process",
            1000,
            Box::new(|| {
                finder.lock().clear();
                finder.find(peer, server).is_some()
            }),
        );
    }
}

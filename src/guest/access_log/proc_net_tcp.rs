//! One TCP socket by its addresses, read from `/proc/net/tcp` and `/proc/net/tcp6`: the fallback
//! where netlink sock_diag is unavailable (some sandboxes). Slow on big hosts: the kernel walks
//! its whole connection hash to print these files.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::caller::ClientSocket;

/// A row: one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TcpRow {
    local: SocketAddr,
    remote: SocketAddr,
    uid: u32,
    inode: u64,
}

/// The socket connected from `client` to `server`, in this network namespace. An IPv4 client
/// (also when the server saw it as IPv4-mapped IPv6) has its socket in `tcp`, or in `tcp6` when it
/// connected from an IPv6 socket to a mapped address; addresses are compared in canonical form.
pub(super) fn find(client: SocketAddr, server: SocketAddr) -> Option<ClientSocket> {
    let (client, server) = (canonical(client), canonical(server));
    let tables: &[&str] = match client {
        SocketAddr::V4(_) => &["/proc/net/tcp", "/proc/net/tcp6"],
        SocketAddr::V6(_) => &["/proc/net/tcp6"],
    };
    tables.iter().find_map(|table| {
        let text = fs::read_to_string(table).ok()?;
        let row = text
            .lines()
            .skip(1)
            .filter_map(parse_row)
            .find(|row| canonical(row.local) == client && canonical(row.remote) == server)?;
        Some(ClientSocket {
            uid: row.uid,
            inode: row.inode,
        })
    })
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Parses a row: `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`.
fn parse_row(line: &str) -> Option<TcpRow> {
    let mut fields = line.split_ascii_whitespace();
    fields.next()?.strip_suffix(':')?;
    let local = parse_endpoint(fields.next()?)?;
    let remote = parse_endpoint(fields.next()?)?;
    let mut rest = fields.skip(4);
    let uid = rest.next()?.parse().ok()?;
    let inode = rest.nth(1)?.parse().ok()?;
    Some(TcpRow {
        local,
        remote,
        uid,
        inode,
    })
}

/// Parses `ADDR:PORT` as the kernel prints it: the port in hex; the address as 32-bit words in
/// hex, each the word's value in host byte order (`%08X` of the network-order bytes), so
/// 127.0.0.1 reads `0100007F` on little-endian machines. IPv4 has one word, IPv6 four.
fn parse_endpoint(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = parse_hex(port, 4)? as u16;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(parse_hex(addr, 8)?.to_ne_bytes())),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                let word = parse_hex(addr.get(i * 8..i * 8 + 8)?, 8)?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// `digits` hex digits exactly (no sign, unlike `from_str_radix`).
fn parse_hex(text: &str, digits: usize) -> Option<u32> {
    if text.len() != digits || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{TcpListener, TcpStream};

    /// Formats an endpoint the way the kernel does (the inverse of `parse_endpoint`).
    fn kernel_format(addr: SocketAddr) -> String {
        let words: Vec<String> = match addr.ip() {
            IpAddr::V4(ip) => vec![format!("{:08X}", u32::from_ne_bytes(ip.octets()))],
            IpAddr::V6(ip) => ip
                .octets()
                .chunks_exact(4)
                .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        };
        format!("{}:{:04X}", words.concat(), addr.port())
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn rows_of_proc_net_tcp_and_tcp6_parse() {
        let v4 = "   3: 0100007F:C350 0100007F:0539 01 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(
            parse_row(v4),
            Some(TcpRow {
                local: "127.0.0.1:50000".parse().unwrap(),
                remote: "127.0.0.1:1337".parse().unwrap(),
                uid: 1000,
                inode: 123456,
            })
        );
        let v6 = "   0: 00000000000000000000000001000000:D431 00000000000000000000000001000000:0539 01 00000000:00000000 00:00000000 00000000     0        0 98765 1 0000000000000000 20 4 1 10 -1";
        let row = parse_row(v6).unwrap();
        assert_eq!(row.local, "[::1]:54321".parse().unwrap());
        assert_eq!(row.remote, "[::1]:1337".parse().unwrap());
        assert_eq!((row.uid, row.inode), (0, 98765));
        let mapped = "   1: 0000000000000000FFFF00000100007F:C350 0000000000000000FFFF00000100007F:0539 01 00000000:00000000 00:00000000 00000000     0        0 5 1";
        let row = parse_row(mapped).unwrap();
        assert_eq!(row.local, "[::ffff:127.0.0.1]:50000".parse().unwrap());
        assert_eq!(canonical(row.local), "127.0.0.1:50000".parse().unwrap());
        let global = "   2: B80D0120000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7 1";
        assert_eq!(
            parse_row(global).unwrap().local,
            "[2001:db8::1]:80".parse().unwrap()
        );
    }

    #[test]
    fn the_header_and_damaged_rows_are_skipped() {
        for line in [
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
            "",
            "   3: 0100007F:C350",
            "   3: 0100007F:C350 0100007F:0539 01 00000000:00000000 00:00000000 00000000  1000",
            "   3: +100007F:C350 0100007F:0539 01 00000000:00000000 00:00000000 00000000  1000 0 1",
            "   3: 0100007F0:C350 0100007F:0539 01 00000000:00000000 00:00000000 00000000  1000 0 1",
            "   3: 0100007F:C3500 0100007F:0539 01 00000000:00000000 00:00000000 00000000  1000 0 1",
        ] {
            assert_eq!(parse_row(line), None, "{line}");
        }
    }

    proptest! {
        #[test]
        fn endpoints_round_trip_through_the_kernel_format(ip in any::<IpAddr>(), port in any::<u16>()) {
            let addr = SocketAddr::new(ip, port);
            prop_assert_eq!(parse_endpoint(&kernel_format(addr)), Some(addr));
        }

        #[test]
        fn any_line_parses_without_panicking(line in "\\PC{0,200}") {
            let _ = parse_row(&line);
        }

        #[test]
        fn rows_with_any_fields_parse(
            local in any::<SocketAddr>(),
            remote in any::<SocketAddr>(),
            uid in any::<u32>(),
            inode in any::<u64>(),
        ) {
            let line = format!(
                "  12: {} {} 01 00000000:00000000 00:00000000 00000000 {uid:>5} 0 {inode} 1 0 20 4 30 10 -1",
                kernel_format(local),
                kernel_format(remote),
            );
            let row = parse_row(&line).unwrap();
            prop_assert_eq!((row.local.ip(), row.local.port()), (local.ip(), local.port()));
            prop_assert_eq!((row.remote.ip(), row.remote.port()), (remote.ip(), remote.port()));
            prop_assert_eq!((row.uid, row.inode), (uid, inode));
        }
    }

    #[test]
    fn this_processs_own_connections_are_in_the_tables() {
        for listen in ["127.0.0.1:0", "[::1]:0"] {
            let listener = TcpListener::bind(listen).unwrap();
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            let (peer, server) = (
                accepted.peer_addr().unwrap(),
                accepted.local_addr().unwrap(),
            );
            assert_eq!(peer, client.local_addr().unwrap());
            let found = find(peer, server).expect("found");
            assert_ne!(found.inode, 0);
        }
    }
}

//! One TCP socket by its addresses, asked of the kernel over netlink (`NETLINK_SOCK_DIAG`, as
//! `ss` does): an exact lookup in the kernel's connection hash, a few microseconds, where reading
//! `/proc/net/tcp` walks the whole hash (5 ms with 262144 buckets, however few sockets exist).

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::caller::ClientSocket;

const AF_NETLINK: i32 = 16;
const NETLINK_SOCK_DIAG: i32 = 4;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const ENOENT: i32 = 2;
/// `nlmsghdr` (16 bytes) and `inet_diag_req_v2` (56).
const REQUEST_LEN: usize = 72;
/// `nlmsghdr` and `inet_diag_msg` up to `idiag_inode`.
const REPLY_LEN: usize = 88;

/// The socket connected from `client` to `server` in this network namespace: `Ok(None)` when
/// there is none; an error when the kernel cannot be asked (no netlink sock_diag here).
pub(super) fn find(client: SocketAddr, server: SocketAddr) -> io::Result<Option<ClientSocket>> {
    let netlink = Socket::new(
        Domain::from(AF_NETLINK),
        Type::DGRAM,
        Some(Protocol::from(NETLINK_SOCK_DIAG)),
    )?;
    netlink.set_read_timeout(Some(Duration::from_secs(1)))?;
    // Unconnected and unbound: the message goes to the kernel.
    netlink.send(&request(client, server))?;
    let mut reply = [0u8; 4096];
    let len = (&netlink).read(&mut reply)?;
    parse_reply(reply.get(..len).unwrap_or_default(), server)
}

/// A `SOCK_DIAG_BY_FAMILY` request for exactly the socket whose local end is `client` and remote
/// end `server`. Header fields are in host byte order; ports and addresses in network order.
fn request(client: SocketAddr, server: SocketAddr) -> [u8; REQUEST_LEN] {
    let (client_ip, server_ip) = (client.ip().to_canonical(), server.ip().to_canonical());
    let mut message = [0u8; REQUEST_LEN];
    message[0..4].copy_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    message[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    message[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence number
    let family = match (client_ip, server_ip) {
        (IpAddr::V4(_), IpAddr::V4(_)) => AF_INET,
        _ => AF_INET6,
    };
    message[16] = family;
    message[17] = IPPROTO_TCP;
    message[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
    message[24..26].copy_from_slice(&client.port().to_be_bytes());
    message[26..28].copy_from_slice(&server.port().to_be_bytes());
    for (ip, at) in [(client_ip, 28), (server_ip, 44)] {
        match ip {
            IpAddr::V4(ip) if family == AF_INET => {
                message[at..at + 4].copy_from_slice(&ip.octets())
            }
            ip => message[at..at + 16].copy_from_slice(&to_v6(ip).octets()),
        }
    }
    // idiag_if 0 (any), idiag_cookie INET_DIAG_NOCOOKIE.
    message[64..72].fill(0xff);
    message
}

fn to_v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
        IpAddr::V6(ip) => ip,
    }
}

/// Reads the kernel's answer: an `inet_diag_msg`, or an `NLMSG_ERROR` (`ENOENT`: no such socket).
/// A socket whose remote end is not `server` (a listener on the client's port, found when the
/// connection is gone) is no answer.
fn parse_reply(reply: &[u8], server: SocketAddr) -> io::Result<Option<ClientSocket>> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed sock_diag reply");
    let u32_at = |at: usize| -> io::Result<u32> {
        let bytes = reply.get(at..at + 4).ok_or_else(malformed)?;
        Ok(u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    };
    let kind = reply.get(4..6).ok_or_else(malformed)?;
    match u16::from_ne_bytes([kind[0], kind[1]]) {
        NLMSG_ERROR => match -(u32_at(16)? as i32) {
            ENOENT => Ok(None),
            errno => Err(io::Error::from_raw_os_error(errno)),
        },
        SOCK_DIAG_BY_FAMILY if reply.len() >= REPLY_LEN => {
            let remote_port = u16::from_be_bytes([reply[22], reply[23]]);
            if remote_port != server.port() {
                return Ok(None);
            }
            Ok(Some(ClientSocket {
                uid: u32_at(80)?,
                inode: u64::from(u32_at(84)?),
            }))
        }
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CLIENT: &str = "127.0.0.1:50000";
    const SERVER: &str = "127.0.0.1:1338";

    /// What the kernel answers for a socket with `remote_port`, `uid` and `inode`.
    fn reply(remote_port: u16, uid: u32, inode: u32) -> Vec<u8> {
        let mut reply = vec![0u8; REPLY_LEN + 8];
        reply[0..4].copy_from_slice(&(REPLY_LEN as u32 + 8).to_ne_bytes());
        reply[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        reply[16] = AF_INET;
        reply[22..24].copy_from_slice(&remote_port.to_be_bytes());
        reply[80..84].copy_from_slice(&uid.to_ne_bytes());
        reply[84..88].copy_from_slice(&inode.to_ne_bytes());
        reply
    }

    fn error(errno: i32) -> Vec<u8> {
        let mut reply = vec![0u8; 36];
        reply[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        reply[16..20].copy_from_slice(&(-errno).to_ne_bytes());
        reply
    }

    #[test]
    fn requests_name_the_client_end_in_network_order() {
        let message = request(CLIENT.parse().unwrap(), SERVER.parse().unwrap());
        assert_eq!(message[16..18], [AF_INET, IPPROTO_TCP]);
        assert_eq!(message[24..28], [0xc3, 0x50, 0x05, 0x3a]);
        assert_eq!(message[28..32], [127, 0, 0, 1]);
        assert_eq!(message[44..48], [127, 0, 0, 1]);
        let mapped = request(
            "[::ffff:127.0.0.1]:50000".parse().unwrap(),
            "[::ffff:127.0.0.1]:1338".parse().unwrap(),
        );
        assert_eq!(mapped, message, "IPv4-mapped peers are asked as IPv4");
        let v6 = request(
            "[::1]:50000".parse().unwrap(),
            "[::1]:1338".parse().unwrap(),
        );
        assert_eq!(v6[16], AF_INET6);
        assert_eq!(v6[28..44], std::net::Ipv6Addr::LOCALHOST.octets());
    }

    #[test]
    fn replies_give_uid_and_inode_or_nothing() {
        let server = SERVER.parse().unwrap();
        let found = parse_reply(&reply(1338, 1000, 4242), server).unwrap();
        assert_eq!(
            found,
            Some(ClientSocket {
                uid: 1000,
                inode: 4242
            })
        );
        assert_eq!(
            parse_reply(&reply(0, 0, 77), server).unwrap(),
            None,
            "a listener"
        );
        assert_eq!(parse_reply(&error(ENOENT), server).unwrap(), None);
        assert!(parse_reply(&error(22), server).is_err());
        assert!(parse_reply(&reply(1338, 1, 1)[..40], server).is_err());
    }

    proptest! {
        #[test]
        fn any_reply_is_read_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_reply(&bytes, SERVER.parse().unwrap());
        }
    }
}

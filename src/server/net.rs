//! Socket-level behaviour: the IP TTL (IPv6: unicast hop limit) of token PUT answers.
//!
//! EC2 sends the answer to `PUT /latest/api/token` with `HttpPutResponseHopLimit` as its IP TTL,
//! so a caller more router hops away (a container behind a bridge, a proxy) never receives the
//! token. Every other answer leaves with the system default. [`HopLimitedStream`] applies the TTL
//! a response asks for just before hyper writes it: the guest API gives a token answer's
//! [`ResponseHopLimit`] to the connection, which stores it, and the next write sets the socket
//! option only when it changes. The same shared value can ask for the connection to end with a
//! reset (an injected fault, see [`crate::fleet::faults`]): the stream then closes with `SO_LINGER` 0.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// IMDS' IPv4 address.
pub const IMDS_IPV4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 169, 254);
/// IMDS' IPv6 address, answered only for instances with `HttpProtocolIpv6=enabled`.
pub const IMDS_IPV6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Send a response with this IP TTL / hop limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHopLimit(pub u8);

/// The TTL the next response of one connection should leave with (0: the system default), or
/// [`RESET`] when the connection is to end with a TCP reset.
#[derive(Debug, Clone, Default)]
pub struct WantedHopLimit(Arc<AtomicU8>);

/// Not a hop limit (those are 1..=64): end the connection with a reset.
const RESET: u8 = u8::MAX;

impl WantedHopLimit {
    /// Records what the response about to be written asks for.
    pub fn set(&self, hop_limit: Option<ResponseHopLimit>) {
        self.0
            .store(hop_limit.map_or(0, |h| h.0), Ordering::Relaxed);
    }

    /// Asks for the connection to end with a reset instead of an answer.
    pub fn reset(&self) {
        self.0.store(RESET, Ordering::Relaxed);
    }
}

/// A TCP stream whose writes carry the TTL its responses ask for.
#[derive(Debug)]
pub struct HopLimitedStream {
    inner: TcpStream,
    wanted: WantedHopLimit,
    applied: u8,
    /// The socket's own TTL, read before the first change (so a connection that never
    /// answers a token request costs no system call for it).
    system_default: Option<u32>,
    ipv6: bool,
}

impl HopLimitedStream {
    /// Wraps an accepted stream whose local address is `local`; `wanted` is shared with the
    /// connection's service.
    pub fn new(
        inner: TcpStream,
        local: Option<std::net::SocketAddr>,
        wanted: WantedHopLimit,
    ) -> HopLimitedStream {
        HopLimitedStream {
            inner,
            wanted,
            applied: 0,
            system_default: None,
            ipv6: local.is_some_and(|a| a.is_ipv6()),
        }
    }

    fn apply_wanted(&mut self) {
        let wanted = self.wanted.0.load(Ordering::Relaxed);
        if wanted == self.applied || wanted == RESET {
            return;
        }
        let socket = socket2::SockRef::from(&self.inner);
        let ipv6 = self.ipv6;
        let system_default = *self.system_default.get_or_insert_with(|| {
            match ipv6 {
                true => socket.unicast_hops_v6(),
                false => socket.ttl_v4(),
            }
            .unwrap_or(64)
        });
        let ttl = if wanted == 0 {
            system_default
        } else {
            u32::from(wanted)
        };
        let result = if self.ipv6 {
            socket.set_unicast_hops_v6(ttl)
        } else {
            socket.set_ttl_v4(ttl)
        };
        match result {
            Ok(()) => self.applied = wanted,
            Err(error) => tracing::warn!(%error, ttl, "cannot set the IP TTL of a response"),
        }
    }
}

impl Drop for HopLimitedStream {
    fn drop(&mut self) {
        if self.wanted.0.load(Ordering::Relaxed) == RESET {
            // Closing with a zero linger time sends RST instead of FIN.
            let _ = socket2::SockRef::from(&self.inner).set_linger(Some(std::time::Duration::ZERO));
        }
    }
}

impl AsyncRead for HopLimitedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for HopLimitedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.apply_wanted();
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.apply_wanted();
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair(bind: &str) -> (HopLimitedStream, WantedHopLimit, TcpStream) {
        let listener = TcpListener::bind(bind).await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let wanted = WantedHopLimit::default();
        let local = server.local_addr().ok();
        (
            HopLimitedStream::new(server, local, wanted.clone()),
            wanted,
            client,
        )
    }

    fn ttl(stream: &HopLimitedStream) -> u32 {
        let socket = socket2::SockRef::from(&stream.inner);
        if stream.ipv6 {
            socket.unicast_hops_v6()
        } else {
            socket.ttl_v4()
        }
        .unwrap()
    }

    #[tokio::test]
    async fn token_answers_leave_with_the_hop_limit_and_others_with_the_default() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let (mut server, wanted, _client) = pair(bind).await;
            let default = ttl(&server);
            wanted.set(Some(ResponseHopLimit(1)));
            server.write_all(b"token").await.unwrap();
            assert_eq!(ttl(&server), 1, "{bind}");
            wanted.set(None);
            server.write_all(b"data").await.unwrap();
            assert_eq!(ttl(&server), default, "{bind}");
            wanted.set(Some(ResponseHopLimit(64)));
            server.write_all(b"token").await.unwrap();
            assert_eq!(ttl(&server), 64, "{bind}");
        }
    }
}

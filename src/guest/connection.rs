//! The guest API as a [`Surface`] of the shared server: per connection it counts the
//! connection against its instance's cap (making room by evicting the instance's connections
//! that wait for their client) and keeps the access log's view of the connection; per request
//! it throttles, applies an injected fault, if one fires, marks the answer's hop limit, and
//! looks up an IMDSv1 caller before answering.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;

use super::{GuestApi, GuestError};
use crate::fleet::faults::Effect;
use crate::fleet::state::InstanceSlot;
use crate::fleet::throttle::ConnectionGuard;
use crate::guest::access_log::ConnectionLog;
use crate::metrics::{Metrics, SurfaceKind};
use crate::server::net::IMDS_IPV6;
use crate::server::{stopping, Answer, ClientWait, Connection, NoAnswer, Refusal, Surface};

/// What the guest API keeps per connection.
pub struct GuestConnection {
    /// Only with an access log: where the connection arrived, to find an IMDSv1 caller.
    log: Option<Arc<ConnectionLog>>,
    /// The connection as counted against its instance's cap, until it closes (or is evicted).
    /// Unset while its instance has as many connections open as it may: each request first
    /// tries again to count it, and is throttled if that fails.
    counted: OnceLock<ConnectionGuard>,
    /// Its wait for its client, by which its instance's cap may evict it.
    waiting: Arc<ClientWait>,
}

impl GuestConnection {
    /// Whether the connection counts against `slot`'s cap, counting it now if there is (or
    /// eviction makes) room. One atomic load once counted.
    fn counted(&self, api: &GuestApi, slot: &InstanceSlot) -> bool {
        if self.counted.get().is_some() {
            return true;
        }
        match api.count_connection(slot, &self.waiting) {
            Some(guard) => self.counted.set(guard).is_ok(),
            None => false,
        }
    }
}

impl std::fmt::Debug for GuestConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestConnection")
            .field("logged", &self.log.is_some())
            .field("counted", &self.counted.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Surface for GuestApi {
    type PerConnection = GuestConnection;

    const KIND: SurfaceKind = SurfaceKind::Guest;

    /// IMDS reads no request body.
    const MAX_BODY: usize = 0;

    /// Guests are programs, not browsers; a cross-site page can only reach the guest API by
    /// DNS rebinding, which the `Host` check stops.
    const REFUSES_CROSS_SITE: bool = false;

    fn connect(
        &self,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        waiting: &Arc<ClientWait>,
    ) -> Self::PerConnection {
        let counted = OnceLock::new();
        let guard = self.state.with_caller(peer.ip(), |slot| {
            slot.and_then(|slot| self.count_connection(slot, waiting))
        });
        if let Some(guard) = guard {
            let _ = counted.set(guard);
        }
        GuestConnection {
            log: self
                .access_log()
                .map(|log| Arc::new(log.connection(peer, local))),
            counted,
            waiting: waiting.clone(),
        }
    }

    fn respond(
        self: &Arc<Self>,
        connection: &Arc<Connection<Self::PerConnection>>,
        request: Request<Full<Bytes>>,
    ) -> Answer<'static> {
        let peer = connection.peer;
        // At [fd00:ec2::254] only instances with HttpProtocolIpv6 enabled get an answer. In a
        // fleet, a guest calling from its IPv6 address came by that endpoint too, even when
        // DNAT rewrote the address it reached.
        let at_ipv6 = connection
            .local
            .is_some_and(|local| local.ip() == IpAddr::V6(IMDS_IPV6))
            || (!self.state.is_single()
                && matches!(peer.ip(), IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none()));
        let logged = connection.surface.log.is_some();
        // The caller's instance is borrowed for the synchronous part of the answer; kept only
        // for an access log's IMDSv1 caller lookup.
        let (mut response, hops, fault, ipv6_refused, slot) =
            self.state.with_caller(peer.ip(), |slot| {
                let Some(slot) = slot else {
                    return (Some(self.unknown_caller(peer)), None, None, false, None);
                };
                let snapshot = slot.snapshot();
                let ipv6_refused = at_ipv6 && !snapshot.options.http_protocol_ipv6.is_enabled();
                let over_cap = !connection.surface.counted(self, slot);
                let throttled = self.throttle_with(slot, &snapshot, &request, peer, over_cap);
                // A throttled request meets no fault (and takes none of a fault's count).
                let fault = match throttled {
                    Some(_) => None,
                    None => self.fault(slot, &request, peer),
                };
                // No answer is built for a reset or silence.
                let (response, hops) = match fault.map(|f| f.effect) {
                    _ if ipv6_refused => (None, None),
                    _ if throttled.is_some() => (throttled, None),
                    None | Some(Effect::Answer) => {
                        let (response, hops) = self.answer_with(slot, &snapshot, &request, peer);
                        (Some(response), hops)
                    }
                    Some(Effect::Status(status)) => (Some(self.injected_status(status)), None),
                    Some(Effect::Reset | Effect::NoAnswer) => (None, None),
                };
                (
                    response,
                    hops,
                    fault,
                    ipv6_refused,
                    logged.then(|| slot.clone()),
                )
            });
        if response.is_some() {
            connection.hops.set(hops);
        }
        let v1_entry = connection
            .surface
            .log
            .as_ref()
            .zip(response.as_mut())
            .and_then(|(log, response)| Some((log.clone(), log.take_awaiting(response)?)))
            .map(|(log, entry)| (log, entry, slot));
        // Most answers are ready now; the rest wait for a fault's delay or an IMDSv1 caller.
        let response = match (response, &v1_entry, &fault, ipv6_refused) {
            (Some(response), None, None, false) => return Answer::now(Ok(response)),
            (response, ..) => response,
        };
        let faulty = fault.map(|fault| (fault, connection.clone()));
        let ipv6_refused = ipv6_refused.then(|| connection.clone());
        Answer::later(async move {
            // An IMDSv1 caller is looked up while it still holds its socket: before answering.
            if let Some((log, entry, slot)) = v1_entry {
                let caller = log.finish(entry).await;
                // Kept on the instance for the web console's list of IMDSv1 callers.
                if let Some((caller, slot)) = caller.zip(slot) {
                    let callers = &slot.counters().recent_callers;
                    let now = std::time::SystemTime::now();
                    callers.record(caller.pid, caller.uid, &caller.cmdline, now);
                }
            }
            if let Some((fault, connection)) = faulty {
                tokio::time::sleep(fault.delay).await;
                match fault.effect {
                    Effect::Reset => {
                        connection.hops.reset();
                        return Err(NoAnswer::Reset);
                    }
                    Effect::NoAnswer => {
                        // Until the client gives up (hyper then drops this future) or imds stops.
                        stopping(&mut connection.stop.clone()).await;
                        return Err(NoAnswer::Silence);
                    }
                    Effect::Answer | Effect::Status(_) => {}
                }
            }
            if let Some(connection) = ipv6_refused {
                connection.hops.reset();
                return Err(NoAnswer::Reset);
            }
            Ok(response.expect("every request but a reset or a silent one has an answer"))
        })
    }

    /// 403 with IMDS' headers and no body, whatever the reason.
    fn refused(&self, _why: Refusal) -> Response<Full<Bytes>> {
        GuestError::BrowserRequest.into_response(&self.responder, None)
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

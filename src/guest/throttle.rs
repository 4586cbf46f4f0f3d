//! Throttling guest requests per instance ([`crate::fleet::throttle`]): what a throttled caller
//! sees, and the count and log line it leaves.
//!
//! EC2 drops the packets beyond its allowance, so a throttled client there sees a timeout.
//! imds answers `429 Too Many Requests` instead, with IMDS' usual headers and no body, as the
//! spec's status table has it for throttling and as imds' own `rate_limit` fault does: a timeout
//! would cost every client its whole timeout (1 s for botocore, more for others) and hold a
//! connection slot meanwhile, while a 429 comes back at once and is counted. The clients treat
//! it as an unsuccessful answer: botocore retries a GET up to `metadata_service_num_attempts`
//! times (no delay), and on the token PUT goes on without a token (IMDSv1) as after a timeout;
//! `@smithy/credential-provider-imds` goes on without a token after the PUT's 429 and retries
//! a GET `maxRetries` times (default 0); `aws-config` (Rust) retries only server errors and
//! 401s, so a 429 fails its call (it caches credentials for hours, so it rarely asks). A connection beyond the instance's cap gets the same 429, with
//! `Connection: close`, on each request: an answer clients understand rather than a reset
//! that botocore would retry at once and `aws-config` would report as a dispatch failure.
//! Before refusing a connection or a request at the cap, the instance's connections that wait
//! for their client (idle keep-alive, or no complete request head) make room, longest waiting
//! first, so idle connections cannot lock their own instance out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::Full;

use super::{version_of, GuestApi, GuestError, CLOSE};
use crate::fleet::state::{InstanceSlot, Snapshot};
use crate::fleet::throttle::{ConnectionGuard, ThrottleLimits, ThrottleReason};
use crate::metrics::{RouteClass, SurfaceKind};
use crate::server::{ClientWait, Eviction, EVICTABLE_AFTER};

impl GuestApi {
    /// The throttle in force for `snapshot`'s instance.
    fn limits(&self, snapshot: &Snapshot) -> ThrottleLimits {
        ThrottleLimits::of(&snapshot.instance.config.throttle, self.throttle_defaults)
    }

    /// Counts a connection (its wait for its client: `waiting`) against `slot`'s cap, evicting
    /// the instance's connections that have waited longest for their client to make room;
    /// `None` when the instance has as many open as it may and too few of them are waiting.
    pub fn count_connection(
        &self,
        slot: &InstanceSlot,
        waiting: &Arc<ClientWait>,
    ) -> Option<ConnectionGuard> {
        let max = self.limits(&slot.snapshot()).max_connections;
        let admission = slot
            .throttle()
            .connect(max, waiting.clone(), EVICTABLE_AFTER);
        for _ in 0..admission.evicted {
            self.metrics
                .connection_evicted(SurfaceKind::Guest, Eviction::InstanceCap);
        }
        if admission.evicted > 0 {
            tracing::debug!(
                instance = %slot.id(),
                evicted = admission.evicted,
                "closed connections waiting for their client to make room under the instance's cap"
            );
        }
        admission.counted
    }

    /// The 429 for a request from `peer` to `slot`'s instance when it is throttled: on a
    /// connection `over_cap`, or beyond the instance's requests per second. `None`: answer it.
    pub fn throttle<B>(
        &self,
        slot: &InstanceSlot,
        request: &Request<B>,
        peer: SocketAddr,
        over_cap: bool,
    ) -> Option<Response<Full<Bytes>>> {
        self.throttle_with(slot, &slot.snapshot(), request, peer, over_cap)
    }

    /// [`GuestApi::throttle`] with the limits of `snapshot` (the slot's, loaded once for the
    /// request).
    pub(super) fn throttle_with<B>(
        &self,
        slot: &InstanceSlot,
        snapshot: &Snapshot,
        request: &Request<B>,
        peer: SocketAddr,
        over_cap: bool,
    ) -> Option<Response<Full<Bytes>>> {
        let why = match over_cap {
            true => ThrottleReason::Connections,
            false => {
                let per_second = self.limits(snapshot).requests_per_second;
                if per_second == 0 || slot.throttle().admit(self.clock.now_millis(), per_second) {
                    return None;
                }
                ThrottleReason::Requests
            }
        };
        let started = Instant::now();
        if let Some(held_back) = slot.throttle().throttled(why) {
            tracing::warn!(
                %peer,
                instance = %slot.id(),
                reason = why.label(),
                held_back,
                "throttled the instance's requests with 429 (logged at most once a minute)"
            );
        }
        let mut response = GuestError::Throttled(why).into_response(&self.responder, None);
        if why == ThrottleReason::Connections {
            response.headers_mut().insert(header::CONNECTION, CLOSE);
        }
        self.metrics.guest_request(
            version_of(request),
            RouteClass::of(request.uri().path()),
            response.status().as_u16(),
            started.elapsed(),
        );
        Some(response)
    }
}

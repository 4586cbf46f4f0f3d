//! The app's metrics, owned by it (no global registry), counted with relaxed atomics in fixed
//! arrays indexed by enums (no lock, no allocation on the guest hot path), and rendered as
//! Prometheus text for `GET /metrics` on the control listener.
//!
//! The counters every guest request or connection moves are kept in [`SHARDS`] copies, each on
//! cache lines of its own, and a thread adds to the copy it was given on its first count: two
//! cores answering at once never write the same cache line, where one shared counter would make
//! every request wait for the line to come back from the other core. A reading sums the copies
//! (a gauge's increments and decrements may land in different copies: wrapping sums come out
//! right).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::fleet::changes::{Part, Skipped};
use crate::fleet::state::InstanceSlot;
use crate::fleet::throttle::ThrottleReason;
use crate::server::Eviction;

/// How a guest request identified itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImdsVersion {
    /// No session token (and not a token PUT).
    V1,
    /// A token PUT, or a request carrying a token.
    V2,
}

impl ImdsVersion {
    /// `v1` or `v2`, as in the `version` label and the access log.
    pub fn label(self) -> &'static str {
        match self {
            ImdsVersion::V1 => "v1",
            ImdsVersion::V2 => "v2",
        }
    }
}

/// What a guest request asked for, from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// `/`: the version list.
    Versions,
    /// `/latest/api/token`.
    Token,
    /// Role or identity credentials.
    Credentials,
    /// Anything else under `meta-data/`.
    MetaData,
    /// `dynamic/`.
    Dynamic,
    /// `user-data`.
    UserData,
    /// Any other path.
    Other,
}

impl RouteClass {
    const ALL: [RouteClass; 7] = [
        RouteClass::Versions,
        RouteClass::Token,
        RouteClass::Credentials,
        RouteClass::MetaData,
        RouteClass::Dynamic,
        RouteClass::UserData,
        RouteClass::Other,
    ];

    /// The class of a request path, from the names it contains, in this order: `/` alone,
    /// `/api/token`, `security-credentials`, `/meta-data`, `/dynamic`, `/user-data`. One pass over
    /// the path, comparing only where a name can start (a `/` followed by its second letter, or
    /// an `s`).
    pub fn of(path: &str) -> RouteClass {
        if path == "/" {
            return RouteClass::Versions;
        }
        let bytes = path.as_bytes();
        let mut found = RouteClass::Other;
        let mut at = 0;
        while let Some(offset) = bytes[at..].iter().position(|b| *b == b'/' || *b == b's') {
            at += offset;
            let rest = &bytes[at..];
            at += 1;
            let class = match rest {
                [b'/', b'a', ..] if rest.starts_with(b"/api/token") => RouteClass::Token,
                [b'/', b'm', ..] if rest.starts_with(b"/meta-data") => RouteClass::MetaData,
                [b'/', b'd', ..] if rest.starts_with(b"/dynamic") => RouteClass::Dynamic,
                [b'/', b'u', ..] if rest.starts_with(b"/user-data") => RouteClass::UserData,
                [b's', b'e', ..] if rest.starts_with(b"security-credentials") => {
                    RouteClass::Credentials
                }
                _ => continue,
            };
            if class.precedes(found) {
                found = class;
            }
        }
        found
    }

    /// Whether a path containing both names is of this class rather than `other`.
    fn precedes(self, other: RouteClass) -> bool {
        let rank = |class: RouteClass| match class {
            RouteClass::Versions => 0,
            RouteClass::Token => 1,
            RouteClass::Credentials => 2,
            RouteClass::MetaData => 3,
            RouteClass::Dynamic => 4,
            RouteClass::UserData => 5,
            RouteClass::Other => 6,
        };
        rank(self) < rank(other)
    }

    fn label(self) -> &'static str {
        match self {
            RouteClass::Versions => "versions",
            RouteClass::Token => "token",
            RouteClass::Credentials => "credentials",
            RouteClass::MetaData => "meta_data",
            RouteClass::Dynamic => "dynamic",
            RouteClass::UserData => "user_data",
            RouteClass::Other => "other",
        }
    }
}

/// Which HTTP surface a connection or request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SurfaceKind {
    /// What instances see.
    Guest,
    /// What operators use.
    Control,
}

impl SurfaceKind {
    const ALL: [SurfaceKind; 2] = [SurfaceKind::Guest, SurfaceKind::Control];

    /// `guest` or `control`, as in the `surface` label.
    pub fn label(self) -> &'static str {
        match self {
            SurfaceKind::Guest => "guest",
            SurfaceKind::Control => "control",
        }
    }
}

/// Why a request was refused as a browser's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrowserRefusal {
    /// On a loopback connection, `Host` named neither an IP address, `localhost`, nor an allowed
    /// name: a DNS-rebinding page.
    ForeignHost,
    /// The browser marked the request as coming from another site.
    CrossSite,
}

impl BrowserRefusal {
    /// All reasons, in metric order.
    pub const ALL: [BrowserRefusal; 2] = [BrowserRefusal::ForeignHost, BrowserRefusal::CrossSite];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            BrowserRefusal::ForeignHost => "foreign_host",
            BrowserRefusal::CrossSite => "cross_site",
        }
    }
}

/// Why a session token (or a token request) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    /// The PUT carried `X-Forwarded-For`.
    Forwarded,
    /// The PUT's TTL header was missing, repeated or out of range.
    InvalidTtl,
    /// A GET had no token under `HttpTokens=required`.
    Missing,
    /// A GET carried more than one token header.
    Ambiguous,
    /// The token is not one imds issues (wrong length, encoding or version).
    Malformed,
    /// The token's seal does not match: forged, altered, or sealed with another key.
    BadSeal,
    /// The token was issued to another instance.
    WrongInstance,
    /// The token has expired.
    Expired,
}

impl TokenRejection {
    /// All reasons, in metric order.
    pub const ALL: [TokenRejection; 8] = [
        TokenRejection::Forwarded,
        TokenRejection::InvalidTtl,
        TokenRejection::Missing,
        TokenRejection::Ambiguous,
        TokenRejection::Malformed,
        TokenRejection::BadSeal,
        TokenRejection::WrongInstance,
        TokenRejection::Expired,
    ];

    /// The `reason` label and log field.
    pub fn label(self) -> &'static str {
        match self {
            TokenRejection::Forwarded => "forwarded",
            TokenRejection::InvalidTtl => "invalid_ttl",
            TokenRejection::Missing => "missing",
            TokenRejection::Ambiguous => "ambiguous",
            TokenRejection::Malformed => "malformed",
            TokenRejection::BadSeal => "bad_seal",
            TokenRejection::WrongInstance => "wrong_instance",
            TokenRejection::Expired => "expired",
        }
    }

    /// The IMDS version of the refused request, as the access log and `imds_requests_total`
    /// count it: `v1` for a token-less GET, `v2` for a token PUT or a request with a token.
    pub fn version(self) -> ImdsVersion {
        match self {
            TokenRejection::Missing => ImdsVersion::V1,
            TokenRejection::Forwarded
            | TokenRejection::InvalidTtl
            | TokenRejection::Ambiguous
            | TokenRejection::Malformed
            | TokenRejection::BadSeal
            | TokenRejection::WrongInstance
            | TokenRejection::Expired => ImdsVersion::V2,
        }
    }
}

/// Status codes counted one by one; others are counted as `other`.
const STATUSES: [u16; 8] = [200, 400, 401, 403, 404, 405, 429, 431];
/// Latency bucket bounds, in seconds.
const BUCKETS: [f64; 9] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.025,
];

/// Copies of the per-request counters: more than the threads that answer requests at once
/// (tokio's workers, one per core) on most machines; threads beyond share copies, still exactly.
pub const SHARDS: usize = 16;

/// The counters moved by every guest request or connection, one copy per [`SHARDS`]. Aligned
/// to 128 bytes (two cache lines, as adjacent-line prefetching pairs them), so that no two
/// copies share a line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    /// `[version][route][status]`; the last status slot is `other`.
    guest: [[[AtomicU64; STATUSES.len() + 1]; RouteClass::ALL.len()]; 2],
    /// Counts per bucket (last: +Inf), and the sum in nanoseconds.
    latency: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_nanos: AtomicU64,
    tokens_issued: AtomicU64,
    /// Open connections per surface: opened minus closed in this copy (wrapping).
    connections_open: [AtomicU64; 2],
}

/// The copy the next thread to count is given.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's copy, given on its first count.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// Counters of one app.
#[derive(Debug, Default)]
pub struct Metrics {
    /// What every guest request or connection counts, per thread.
    shards: [Shard; SHARDS],
    tokens_rejected: [AtomicU64; TokenRejection::ALL.len()],
    /// Fleet mode: requests from addresses that belong to no instance.
    unknown_callers: AtomicU64,
    /// Access-log entries dropped because the writer fell behind.
    access_log_dropped: AtomicU64,
    /// Per surface: connections the listener failed to accept (out of file descriptors).
    accept_failures: [AtomicU64; 2],
    /// `[surface][reason]`: connections waiting for their client, closed to make room.
    connections_evicted: [[AtomicU64; Eviction::ALL.len()]; 2],
    /// `[surface][reason]`: requests refused as a browser's.
    browser_refused: [[AtomicU64; 2]; 2],
    /// Acknowledged changes left out because they no longer fit a config file, per part.
    changes_skipped: [AtomicU64; Part::ALL.len()],
    /// `(action, outcome)` → count; the control path is not hot.
    control: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Metrics {
    /// This thread's copy of the per-request counters.
    fn shard(&self) -> &Shard {
        &self.shards[SHARD.with(|shard| *shard)]
    }

    /// The sum over the copies of the counter `pick` chooses.
    fn sum(&self, pick: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards.iter().fold(0u64, |sum, shard| {
            sum.wrapping_add(pick(shard).load(Ordering::Relaxed))
        })
    }

    /// Counts one guest request.
    pub fn guest_request(
        &self,
        version: ImdsVersion,
        route: RouteClass,
        status: u16,
        took: Duration,
    ) {
        let status_slot = STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(STATUSES.len());
        let route_slot = route as usize;
        let shard = self.shard();
        shard.guest[version as usize][route_slot][status_slot].fetch_add(1, Ordering::Relaxed);
        let seconds = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        shard.latency[bucket].fetch_add(1, Ordering::Relaxed);
        shard
            .latency_sum_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Counts an issued token.
    pub fn token_issued(&self) {
        self.shard().tokens_issued.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused token or token request.
    pub fn token_rejected(&self, why: TokenRejection) {
        self.tokens_rejected[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection `surface`'s listener failed to accept.
    pub fn accept_failed(&self, surface: SurfaceKind) {
        self.accept_failures[surface as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request from an address that belongs to no instance.
    pub fn unknown_caller(&self) {
        self.unknown_callers.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an access-log entry dropped (the writer fell behind); returns the count so far.
    pub fn access_log_dropped(&self) -> u64 {
        self.access_log_dropped.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Access-log entries dropped so far.
    pub fn access_log_drops(&self) -> u64 {
        self.access_log_dropped.load(Ordering::Relaxed)
    }

    /// Counts a connection opened on `surface`.
    pub fn connection_opened(&self, surface: SurfaceKind) {
        self.shard().connections_open[surface as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection closed on `surface`.
    pub fn connection_closed(&self, surface: SurfaceKind) {
        self.shard().connections_open[surface as usize].fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts a connection waiting for its client on `surface`, closed to make room.
    pub fn connection_evicted(&self, surface: SurfaceKind, why: Eviction) {
        self.connections_evicted[surface as usize][why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request refused on `surface` as a browser's.
    pub fn browser_refused(&self, surface: SurfaceKind, why: BrowserRefusal) {
        self.browser_refused[surface as usize][why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the parts of an instance's changes left out as they no longer fit its file.
    pub fn changes_skipped(&self, skipped: &[Skipped]) {
        for skipped in skipped {
            self.changes_skipped[skipped.part as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a control request.
    pub fn control_action(&self, action: &str, outcome: &'static str) {
        let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
        *control.entry((action.to_owned(), outcome)).or_default() += 1;
    }

    /// The Prometheus text exposition, with per-instance series for each of `instances`.
    pub fn render(&self, instances: &[Arc<InstanceSlot>]) -> String {
        let mut out = String::with_capacity(4096);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.push_str("# HELP imds_requests_total Guest requests by IMDS version, route class and status.\n# TYPE imds_requests_total counter\n");
        for version in [ImdsVersion::V1, ImdsVersion::V2] {
            for route in RouteClass::ALL {
                for s in 0..=STATUSES.len() {
                    let count = self.sum(|shard| &shard.guest[version as usize][route as usize][s]);
                    if count == 0 {
                        continue;
                    }
                    let status = STATUSES.get(s).map_or("other".to_owned(), u16::to_string);
                    let _ = writeln!(
                        out,
                        "imds_requests_total{{surface=\"guest\",version=\"{}\",route=\"{}\",status=\"{status}\"}} {count}",
                        version.label(),
                        route.label()
                    );
                }
            }
        }
        out.push_str("# HELP imds_metadata_no_token_total Requests without a session token (EC2's MetadataNoToken), by instance.\n# TYPE imds_metadata_no_token_total counter\n");
        for slot in instances {
            let count = load(&slot.counters().no_token);
            let _ = writeln!(
                out,
                "imds_metadata_no_token_total{{instance_id=\"{}\"}} {count}",
                slot.id()
            );
        }
        out.push_str("# HELP imds_throttled_total Guest requests answered 429 by the instance's throttle, by instance and reason (requests: beyond its requests per second; connections: beyond its simultaneous connections).\n# TYPE imds_throttled_total counter\n");
        for slot in instances {
            for why in ThrottleReason::ALL {
                let _ = writeln!(
                    out,
                    "imds_throttled_total{{instance_id=\"{}\",reason=\"{}\"}} {}",
                    slot.id(),
                    why.label(),
                    slot.throttle().throttled_total(why)
                );
            }
        }
        out.push_str("# HELP imds_instance_connections_open Guest connections open, by instance.\n# TYPE imds_instance_connections_open gauge\n");
        for slot in instances {
            let _ = writeln!(
                out,
                "imds_instance_connections_open{{instance_id=\"{}\"}} {}",
                slot.id(),
                slot.throttle().connections()
            );
        }
        let _ = write!(
            out,
            "# HELP imds_unknown_callers_total Guest requests refused because the caller's address belongs to no instance (fleet mode).\n# TYPE imds_unknown_callers_total counter\nimds_unknown_callers_total {}\n",
            load(&self.unknown_callers)
        );
        let _ = write!(
            out,
            "# HELP imds_tokens_issued_total Session tokens issued.\n# TYPE imds_tokens_issued_total counter\nimds_tokens_issued_total {}\n",
            self.sum(|shard| &shard.tokens_issued)
        );
        out.push_str("# HELP imds_tokens_rejected_total Session tokens and token requests refused, by IMDS version and reason.\n# TYPE imds_tokens_rejected_total counter\n");
        for why in TokenRejection::ALL {
            let _ = writeln!(
                out,
                "imds_tokens_rejected_total{{version=\"{}\",reason=\"{}\"}} {}",
                why.version().label(),
                why.label(),
                load(&self.tokens_rejected[why as usize])
            );
        }
        // Read one copy after another while connections open and close, the sum can catch a
        // close without its open (made in another copy): below zero for a moment, shown as 0.
        let open = SurfaceKind::ALL.map(|surface| {
            let sum = self.sum(|shard| &shard.connections_open[surface as usize]);
            u64::try_from(sum as i64).unwrap_or(0)
        });
        per_surface(
            &mut out,
            "imds_connections_open",
            "gauge",
            "Connections open, by surface.",
            open,
        );
        per_surface(
            &mut out,
            "imds_accept_failures_total",
            "counter",
            "Connections the listener failed to accept (out of file descriptors and the like), by surface.",
            SurfaceKind::ALL.map(|surface| load(&self.accept_failures[surface as usize])),
        );
        out.push_str("# HELP imds_connections_evicted_total Connections waiting for their client (idle keep-alive, no complete request head), closed to make room, by surface and reason (server_full: every slot of the server was taken; instance_cap: their instance had as many connections open as it may).\n# TYPE imds_connections_evicted_total counter\n");
        for surface in SurfaceKind::ALL {
            for why in Eviction::ALL {
                let _ = writeln!(
                    out,
                    "imds_connections_evicted_total{{surface=\"{}\",reason=\"{}\"}} {}",
                    surface.label(),
                    why.label(),
                    load(&self.connections_evicted[surface as usize][why as usize])
                );
            }
        }
        out.push_str("# HELP imds_browser_requests_refused_total Requests refused as a web browser's (DNS rebinding, cross-site), by surface and reason.\n# TYPE imds_browser_requests_refused_total counter\n");
        for surface in SurfaceKind::ALL {
            for why in BrowserRefusal::ALL {
                let _ = writeln!(
                    out,
                    "imds_browser_requests_refused_total{{surface=\"{}\",reason=\"{}\"}} {}",
                    surface.label(),
                    why.label(),
                    load(&self.browser_refused[surface as usize][why as usize])
                );
            }
        }
        out.push_str("# HELP imds_role_credentials_delivered_total Role credentials served, by ec2:RoleDelivery (1.0: IMDSv1 callers).\n# TYPE imds_role_credentials_delivered_total counter\n");
        for slot in instances {
            for (i, delivery) in ["1.0", "2.0"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "imds_role_credentials_delivered_total{{instance_id=\"{}\",role_delivery=\"{delivery}\"}} {}",
                    slot.id(),
                    load(&slot.counters().role_deliveries[i])
                );
            }
        }
        let _ = write!(
            out,
            "# HELP imds_access_log_dropped_total Access-log entries dropped because writing fell behind.\n# TYPE imds_access_log_dropped_total counter\nimds_access_log_dropped_total {}\n",
            self.access_log_drops()
        );
        out.push_str("# HELP imds_control_requests_total Control API requests by action and outcome.\n# TYPE imds_control_requests_total counter\n");
        for ((action, outcome), count) in self
            .control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "imds_control_requests_total{{action=\"{}\",outcome=\"{outcome}\"}} {count}",
                action.escape_default()
            );
        }
        out.push_str("# HELP imds_changes_skipped_total Acknowledged control-plane changes left out (logged as errors) because they no longer fit the config file, by part.\n# TYPE imds_changes_skipped_total counter\n");
        for part in Part::ALL {
            let _ = writeln!(
                out,
                "imds_changes_skipped_total{{part=\"{}\"}} {}",
                part.label(),
                load(&self.changes_skipped[part as usize])
            );
        }
        out.push_str("# HELP imds_request_duration_seconds Time to answer a guest request.\n# TYPE imds_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.sum(|shard| &shard.latency[i]);
            let _ = writeln!(
                out,
                "imds_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.sum(|shard| &shard.latency[BUCKETS.len()]);
        let _ = write!(
            out,
            "imds_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}\nimds_request_duration_seconds_sum {}\nimds_request_duration_seconds_count {cumulative}\n",
            self.sum(|shard| &shard.latency_sum_nanos) as f64 / 1e9
        );
        out
    }
}

/// One series per surface, with its help and type lines.
fn per_surface(out: &mut String, name: &str, kind: &str, help: &str, counts: [u64; 2]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for surface in SurfaceKind::ALL {
        let count = counts[surface as usize];
        let _ = writeln!(out, "{name}{{surface=\"{}\"}} {count}", surface.label());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What [`RouteClass::of`] must agree with: substring checks in order.
    fn class_by_substrings(path: &str) -> RouteClass {
        if path == "/" {
            RouteClass::Versions
        } else if path.contains("/api/token") {
            RouteClass::Token
        } else if path.contains("security-credentials") {
            RouteClass::Credentials
        } else if path.contains("/meta-data") {
            RouteClass::MetaData
        } else if path.contains("/dynamic") {
            RouteClass::Dynamic
        } else if path.contains("/user-data") {
            RouteClass::UserData
        } else {
            RouteClass::Other
        }
    }

    #[test]
    fn route_classes_of_real_paths() {
        for (path, class) in [
            ("/", RouteClass::Versions),
            ("/latest/api/token", RouteClass::Token),
            ("/latest/meta-data/instance-id", RouteClass::MetaData),
            (
                "/latest/meta-data/iam/security-credentials/role",
                RouteClass::Credentials,
            ),
            (
                "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
                RouteClass::Credentials,
            ),
            (
                "/latest/dynamic/instance-identity/document",
                RouteClass::Dynamic,
            ),
            ("/latest/user-data", RouteClass::UserData),
            ("/latest/user-data/meta-data", RouteClass::MetaData),
            ("/latest", RouteClass::Other),
            ("//", RouteClass::Other),
        ] {
            assert_eq!(RouteClass::of(path), class, "{path}");
            assert_eq!(class_by_substrings(path), class, "{path}");
        }
    }

    proptest! {
        #[test]
        fn route_class_is_decided_by_the_names_in_the_path(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("/api/token"), Just("/api/toke"), Just("security-credentials"),
                    Just("security-credential"), Just("/meta-data"), Just("/meta"),
                    Just("/dynamic"), Just("/user-data"), Just("/"), Just("s"), Just("a"),
                    Just("latest"), Just("-"), Just("é"),
                ],
                0..8,
            )
        ) {
            let path: String = parts.concat();
            prop_assert_eq!(RouteClass::of(&path), class_by_substrings(&path), "{}", path);
        }

        #[test]
        fn route_class_of_any_path_agrees(path in "[/a-z-]{0,40}") {
            prop_assert_eq!(RouteClass::of(&path), class_by_substrings(&path));
        }
    }

    #[test]
    fn counts_render_as_prometheus_text() {
        let metrics = Metrics::default();
        let fast = Duration::from_micros(20);
        metrics.guest_request(
            ImdsVersion::V1,
            RouteClass::of("/latest/meta-data/ami-id"),
            200,
            fast,
        );
        metrics.guest_request(
            ImdsVersion::V1,
            RouteClass::of("/latest/meta-data/ami-id"),
            200,
            fast,
        );
        metrics.guest_request(
            ImdsVersion::V2,
            RouteClass::of("/latest/api/token"),
            200,
            fast,
        );
        metrics.guest_request(
            ImdsVersion::V2,
            RouteClass::of("/x"),
            418,
            Duration::from_secs(1),
        );
        metrics.token_issued();
        metrics.token_rejected(TokenRejection::Forwarded);
        metrics.control_action("CreateTags", "ok");
        assert_eq!(metrics.access_log_dropped(), 1);
        metrics.accept_failed(SurfaceKind::Guest);
        // A close counted in one copy and its open not yet in another: 0, not 2^64 - 1.
        metrics.connection_closed(SurfaceKind::Control);
        let text = metrics.render(&[]);
        for line in [
            "imds_requests_total{surface=\"guest\",version=\"v1\",route=\"meta_data\",status=\"200\"} 2",
            "imds_requests_total{surface=\"guest\",version=\"v2\",route=\"token\",status=\"200\"} 1",
            "imds_requests_total{surface=\"guest\",version=\"v2\",route=\"other\",status=\"other\"} 1",
            "imds_tokens_issued_total 1",
            "imds_tokens_rejected_total{version=\"v2\",reason=\"forwarded\"} 1",
            "imds_tokens_rejected_total{version=\"v1\",reason=\"missing\"} 0",
            "imds_control_requests_total{action=\"CreateTags\",outcome=\"ok\"} 1",
            "imds_access_log_dropped_total 1",
            "imds_accept_failures_total{surface=\"guest\"} 1",
            "imds_accept_failures_total{surface=\"control\"} 0",
            "imds_connections_open{surface=\"control\"} 0",
            "imds_request_duration_seconds_bucket{le=\"0.000025\"} 3",
            "imds_request_duration_seconds_bucket{le=\"+Inf\"} 4",
            "imds_request_duration_seconds_count 4",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }
}

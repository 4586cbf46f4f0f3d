//! The guest surface: what instances see at 169.254.169.254. The hot path: pick the caller's
//! snapshot (lock-free), apply its options, check the token, look the path up in the prebuilt
//! tree and write precomputed bytes. It changes no state.

pub mod access_log;
mod connection;
mod error;
mod recent_paths;
mod throttle;
mod unknown_callers;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;

pub use self::connection::GuestConnection;
pub use self::error::{GuestError, NOT_FOUND_PAGE};
use self::unknown_callers::UnknownCallers;
use crate::clock::Clock;
use crate::fleet::credentials::Delivery;
use crate::fleet::faults::Decision;
use crate::fleet::history::NoTokenMetric;
use crate::fleet::metadata::path::{GuestPath, MetadataPath, PathError};
use crate::fleet::metadata::version::API_VERSIONS;
use crate::fleet::metadata::{render, CredentialsLeaf, Found, Leaf};
use crate::fleet::options::HttpTokens;
use crate::fleet::state::{InstanceSlot, Snapshot, State};
use crate::fleet::throttle::ThrottleLimits;
use crate::fleet::token::{TokenError, TokenSealer, TokenTtl, MAX_TTL_SECONDS};
use crate::guest::access_log::{AccessLog, Entry};
use crate::log_limit::LogLimit;
use crate::metrics::{ImdsVersion, Metrics, TokenRejection};
use crate::server::net::ResponseHopLimit;

/// `X-aws-ec2-metadata-token`: the session token on a GET.
pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-aws-ec2-metadata-token");
/// `X-aws-ec2-metadata-token-ttl-seconds`: requested TTL on the PUT; remaining TTL on answers.
pub const TOKEN_TTL_HEADER: HeaderName =
    HeaderName::from_static("x-aws-ec2-metadata-token-ttl-seconds");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const SERVER: HeaderValue = HeaderValue::from_static("EC2ws");
const CLOSE: HeaderValue = HeaderValue::from_static("close");
const NONE: HeaderValue = HeaderValue::from_static("none");
const TEXT_PLAIN: &str = "text/plain";
const OCTET_STREAM: &str = "application/octet-stream";
const ALLOW_METADATA: &str = "GET, HEAD";
const ALLOW_TOKEN: &str = "OPTIONS, PUT";

/// Builds responses from header templates made once, whole and in IMDS' order, with a slot for
/// the token TTL (and for `Last-Modified` in answers with data): an answer clones its template
/// and fills the slots in place, so no header name is hashed for it and its map never grows.
#[derive(Debug, Clone)]
struct Responder {
    /// `Server`, `Content-Type: text/plain`, `Connection: close` (unless keep-alive).
    plain: Template,
    /// The same with `Content-Type: text/html` (the 404 page).
    html: Template,
    /// `plain` plus `Accept-Ranges: none` and `Last-Modified`: 200s with data.
    data: Template,
    /// `data` with `Content-Type: application/octet-stream` (user data).
    octets: Template,
}

/// The headers of one kind of answer, without and with the token TTL.
#[derive(Debug, Clone)]
struct Template {
    without_ttl: HeaderMap,
    with_ttl: HeaderMap,
}

/// What a template's slots hold until an answer fills them (never sent).
const SLOT: HeaderValue = HeaderValue::from_static("");

impl Template {
    fn new(content_type: &'static str, data: bool, connection_close: bool) -> Template {
        let headers = |ttl: bool| {
            let mut headers = HeaderMap::with_capacity(8);
            headers.insert(header::SERVER, SERVER);
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            if connection_close {
                headers.insert(header::CONNECTION, CLOSE);
            }
            if data {
                headers.insert(header::ACCEPT_RANGES, NONE);
            }
            if ttl {
                headers.insert(TOKEN_TTL_HEADER, SLOT);
            }
            if data {
                headers.insert(header::LAST_MODIFIED, SLOT);
            }
            headers
        };
        Template {
            without_ttl: headers(false),
            with_ttl: headers(true),
        }
    }

    /// The headers of an answer with `token_ttl` and, in an answer with data, `last_modified`.
    fn headers(&self, token_ttl: Option<u32>, last_modified: Option<&HeaderValue>) -> HeaderMap {
        let mut headers = match token_ttl {
            Some(_) => self.with_ttl.clone(),
            None => self.without_ttl.clone(),
        };
        for (name, value) in headers.iter_mut() {
            if *name == header::LAST_MODIFIED {
                if let Some(last_modified) = last_modified {
                    *value = last_modified.clone();
                }
            } else if *name == TOKEN_TTL_HEADER {
                if let Some(ttl) = token_ttl {
                    *value = ttl_value(ttl);
                }
            }
        }
        headers
    }
}

impl Responder {
    fn new(connection_close: bool) -> Responder {
        Responder {
            plain: Template::new(TEXT_PLAIN, false, connection_close),
            html: Template::new("text/html", false, connection_close),
            data: Template::new(TEXT_PLAIN, true, connection_close),
            octets: Template::new(OCTET_STREAM, true, connection_close),
        }
    }

    fn response(
        &self,
        status: StatusCode,
        template: &Template,
        body: Bytes,
        token_ttl: Option<u32>,
    ) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        *response.headers_mut() = template.headers(token_ttl, None);
        response
    }

    /// A 200 with data: `Accept-Ranges: none` and `Last-Modified` besides the usual headers.
    fn data(
        &self,
        template: &Template,
        body: Bytes,
        last_modified: &HeaderValue,
        token_ttl: Option<u32>,
    ) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(body));
        *response.headers_mut() = template.headers(token_ttl, Some(last_modified));
        response
    }
}

/// Every TTL IMDS reports (0 to [`MAX_TTL_SECONDS`]) in decimal, each in 5 bytes with leading
/// zeros, built at compile time: the TTL header of an answer is a slice of it, where formatting
/// the number would allocate (and free) a buffer per answer.
static TTL_DIGITS: [u8; TTL_WIDTH * (MAX_TTL_SECONDS as usize + 1)] = ttl_digits();

/// Bytes per number in [`TTL_DIGITS`].
const TTL_WIDTH: usize = 5;

const fn ttl_digits() -> [u8; TTL_WIDTH * (MAX_TTL_SECONDS as usize + 1)] {
    let mut digits = [b'0'; TTL_WIDTH * (MAX_TTL_SECONDS as usize + 1)];
    let mut n = 0;
    while n <= MAX_TTL_SECONDS as usize {
        let mut rest = n;
        let mut i = TTL_WIDTH;
        while rest > 0 {
            i -= 1;
            digits[n * TTL_WIDTH + i] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        n += 1;
    }
    digits
}

/// `seconds` as the value of `X-aws-ec2-metadata-token-ttl-seconds`.
fn ttl_value(seconds: u32) -> HeaderValue {
    let n = seconds as usize;
    if n > MAX_TTL_SECONDS as usize {
        return HeaderValue::from(seconds);
    }
    let slot = &TTL_DIGITS[n * TTL_WIDTH..(n + 1) * TTL_WIDTH];
    let first = slot
        .iter()
        .position(|digit| *digit != b'0')
        .unwrap_or(TTL_WIDTH - 1);
    HeaderValue::from_maybe_shared(Bytes::from_static(&slot[first..]))
        .unwrap_or_else(|_| HeaderValue::from(seconds))
}

/// A request as the guest API reads it: its path parsed, and its token headers.
struct Asked<'r, B> {
    request: &'r Request<B>,
    path: Result<GuestPath<'r>, PathError>,
    tokens: TokenHeaders<'r>,
}

/// What an answer carries besides its response.
#[derive(Debug, Default)]
struct Carried {
    /// The remaining TTL of the valid token the request carried.
    token_ttl: Option<u32>,
    /// The IP TTL the answer leaves with (a token's: the instance's hop limit).
    hops: Option<ResponseHopLimit>,
}

/// Answers guest requests.
pub struct GuestApi {
    state: Arc<State>,
    tokens: Arc<TokenSealer>,
    clock: Arc<dyn Clock>,
    responder: Responder,
    versions: Bytes,
    metrics: Arc<Metrics>,
    access_log: Option<AccessLog>,
    /// One debug line per refusal reason at most every few seconds.
    token_logs: [LogLimit; TokenRejection::ALL.len()],
    /// When each unknown caller was last logged.
    unknown_callers: UnknownCallers,
    /// The throttle of instances that set none of their own.
    throttle_defaults: ThrottleLimits,
}

/// How often the debug log may say why a token was refused, per reason.
const TOKEN_LOG_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

/// Tells operators when IMDSv1 callers receive role credentials: spotting v1 credentials in
/// use is what `ec2:RoleDelivery` is for. At info the 1st, 10th, 100th, ... time: visible, yet
/// bounded however hard a client polls. Every delivery is at debug.
fn report_v1_delivery(slot: &InstanceSlot, peer: SocketAddr) {
    let deliveries = &slot.counters().role_deliveries;
    let count = deliveries[0].fetch_add(1, Ordering::Relaxed) + 1;
    if is_power_of_ten(count) {
        tracing::info!(
            %peer,
            instance = %slot.id(),
            role_delivery = Delivery::V1.role_delivery(),
            v1_deliveries = count,
            v2_deliveries = deliveries[1].load(Ordering::Relaxed),
            "role credentials delivered to an IMDSv1 (token-less) caller"
        );
    } else {
        tracing::debug!(%peer, v1_deliveries = count, "role credentials delivered over IMDSv1");
    }
}

/// How a request identifies itself: a token PUT or a request carrying a token is IMDSv2.
fn version_of<B>(request: &Request<B>) -> ImdsVersion {
    version_with(request, &TokenHeaders::find_in(request.headers()))
}

/// [`version_of`] for a request whose token headers are `tokens`.
fn version_with<B>(request: &Request<B>, tokens: &TokenHeaders<'_>) -> ImdsVersion {
    match *request.method() == Method::PUT || tokens.first.is_some() {
        true => ImdsVersion::V2,
        false => ImdsVersion::V1,
    }
}

/// The session token headers of a request: the first, and whether there is another.
#[derive(Debug, Clone, Copy)]
struct TokenHeaders<'a> {
    first: Option<&'a HeaderValue>,
    repeated: bool,
}

impl<'a> TokenHeaders<'a> {
    /// Found by comparing the names of the request's few headers, where looking the name up
    /// would hash its 24 bytes.
    fn find_in(headers: &'a HeaderMap) -> TokenHeaders<'a> {
        let mut tokens = TokenHeaders {
            first: None,
            repeated: false,
        };
        for (name, value) in headers {
            if *name == TOKEN_HEADER {
                match tokens.first {
                    Some(_) => {
                        tokens.repeated = true;
                        break;
                    }
                    None => tokens.first = Some(value),
                }
            }
        }
        tokens
    }
}

/// 1, 10, 100, ...
fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

impl std::fmt::Debug for GuestApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestApi")
            .field("responder", &self.responder)
            .finish_non_exhaustive()
    }
}

impl GuestApi {
    /// A guest API over `state`, counting into `metrics` and logging into `access_log`.
    /// `connection_close` adds `Connection: close` to every answer, as real IMDS does.
    pub fn new(
        state: Arc<State>,
        tokens: Arc<TokenSealer>,
        clock: Arc<dyn Clock>,
        connection_close: bool,
        metrics: Arc<Metrics>,
        access_log: Option<AccessLog>,
    ) -> GuestApi {
        GuestApi {
            state,
            tokens,
            clock,
            responder: Responder::new(connection_close),
            versions: render::lines(API_VERSIONS),
            metrics,
            access_log,
            token_logs: TokenRejection::ALL.map(|_| LogLimit::new(TOKEN_LOG_PERIOD)),
            unknown_callers: UnknownCallers::default(),
            throttle_defaults: ThrottleLimits::default(),
        }
    }

    /// The API throttling every instance that sets no throttle of its own by `defaults`
    /// (without this call: unlimited).
    pub fn with_throttle_defaults(mut self, defaults: ThrottleLimits) -> GuestApi {
        self.throttle_defaults = defaults;
        self
    }

    /// The instance that answers a caller at `peer`: in fleet mode, the one owning its address.
    pub fn instance_for(&self, peer: SocketAddr) -> Option<Arc<InstanceSlot>> {
        self.state.for_peer(peer.ip())
    }

    /// The injected fault of `slot`'s instance that decides this request from `peer`, if one
    /// fires (without faults: one check of an empty list).
    pub fn fault<B>(
        &self,
        slot: &InstanceSlot,
        request: &Request<B>,
        peer: SocketAddr,
    ) -> Option<Decision> {
        let faults = slot.faults();
        if faults.is_empty() {
            return None;
        }
        let decision = faults.decide(
            request.method().as_str(),
            request.uri().path(),
            self.clock.now_millis(),
        );
        if let Some(decision) = &decision {
            tracing::debug!(%peer, path = request.uri().path(), ?decision, "fault injected");
        }
        decision
    }

    /// Whether a caller at `peer` sees the instance's events when only the first few clients
    /// may (`client_limit`): once admitted, always; admitted when asking for an event path
    /// while there is room.
    fn sees_events(
        slot: &InstanceSlot,
        snapshot: &Snapshot,
        peer: IpAddr,
        path: &MetadataPath<'_>,
    ) -> bool {
        let limit = snapshot.schedule.client_limit.unwrap_or(usize::MAX);
        let mut segments = path.segments();
        let asks_for_events = segments.next() == Some("meta-data")
            && matches!(segments.next(), Some("spot" | "events" | "autoscaling"));
        slot.audience().sees(peer, limit, asks_for_events)
    }

    /// The answer of an injected status: no body, IMDS' usual headers.
    pub fn injected_status(&self, status: u16) -> Response<Full<Bytes>> {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.responder
            .response(status, &self.responder.plain, Bytes::new(), None)
    }

    /// The access log, when one is kept.
    pub fn access_log(&self) -> Option<&AccessLog> {
        self.access_log.as_ref()
    }

    /// Answers one request from `peer`. The request body is never read. With an access log, an
    /// IMDSv1 request's entry rides on the response for the connection to finish
    /// ([`crate::guest::access_log::ConnectionLog`]); others are logged here.
    pub fn handle<B>(&self, request: &Request<B>, peer: SocketAddr) -> Response<Full<Bytes>> {
        match self.instance_for(peer) {
            Some(slot) => self
                .throttle(&slot, request, peer, false)
                .unwrap_or_else(|| self.answer(&slot, request, peer)),
            None => self.unknown_caller(peer),
        }
    }

    /// Refuses a caller whose address belongs to no instance (fleet mode): 403 with no body,
    /// counted, and logged at most once a minute per address.
    pub fn unknown_caller(&self, peer: SocketAddr) -> Response<Full<Bytes>> {
        self.metrics.unknown_caller();
        if self.unknown_callers.first_in_a_while(peer.ip()) {
            tracing::warn!(
                %peer,
                "refused a caller whose address belongs to no instance (no data is answered to it)"
            );
        }
        GuestError::UnknownCaller.into_response(&self.responder, None)
    }

    /// Answers one request from `peer` as `slot`'s instance.
    pub fn answer<B>(
        &self,
        slot: &InstanceSlot,
        request: &Request<B>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        self.answer_with(slot, &slot.snapshot(), request, peer).0
    }

    /// [`GuestApi::answer`] from `snapshot` (the slot's, loaded once for the request), and the
    /// IP TTL the answer must leave with (a token's: the instance's hop limit).
    fn answer_with<B>(
        &self,
        slot: &InstanceSlot,
        snapshot: &Snapshot,
        request: &Request<B>,
        peer: SocketAddr,
    ) -> (Response<Full<Bytes>>, Option<ResponseHopLimit>) {
        let started = Instant::now();
        let mut carried = Carried::default();
        let (path, class) = recent_paths::parse(request.uri().path());
        let asked = Asked {
            request,
            path,
            // Looked up once, for the token check and the version.
            tokens: TokenHeaders::find_in(request.headers()),
        };
        let result = self.route(slot, snapshot, &asked, peer, &mut carried);
        if let Err(error) = &result {
            let rejection = match error {
                GuestError::ForwardedTokenRequest => Some(TokenRejection::Forwarded),
                GuestError::InvalidTokenTtl => Some(TokenRejection::InvalidTtl),
                GuestError::InvalidToken(why) => Some(*why),
                GuestError::MissingToken => Some(TokenRejection::Missing),
                GuestError::EndpointDisabled
                | GuestError::TokenPutOnWrongPath
                | GuestError::NotFound
                | GuestError::BrowserRequest
                | GuestError::UnknownCaller
                | GuestError::Throttled(_)
                | GuestError::MethodNotAllowed { .. } => None,
            };
            if let Some(rejection) = rejection {
                self.token_refused(rejection, snapshot, peer);
            }
        }
        let refused_without_token = matches!(result, Err(GuestError::MissingToken));
        let mut response =
            result.unwrap_or_else(|error| error.into_response(&self.responder, carried.token_ttl));
        let version = version_with(request, &asked.tokens);
        let took = started.elapsed();
        if version == ImdsVersion::V1 {
            slot.counters().no_token.fetch_add(1, Ordering::Relaxed);
            let metric = match refused_without_token {
                true => NoTokenMetric::Rejected,
                false => NoTokenMetric::Answered,
            };
            slot.counters()
                .no_token_history
                .count(metric, self.clock.now_millis());
        }
        self.metrics
            .guest_request(version, class, response.status().as_u16(), took);
        tracing::debug!(
            %peer,
            method = %request.method(),
            path = request.uri().path(),
            status = response.status().as_u16(),
            imds_version = if carried.token_ttl.is_some() { "v2" } else { "v1" },
            "guest request"
        );
        if let Some(log) = &self.access_log {
            let entry = Entry {
                time: SystemTime::now(),
                peer,
                instance: snapshot.instance.id().to_owned(),
                method: request.method().clone(),
                uri: request.uri().clone(),
                status: response.status().as_u16(),
                version,
                latency: took,
            };
            log.answered(entry, &mut response);
        }
        (response, carried.hops)
    }

    fn route<B>(
        &self,
        slot: &InstanceSlot,
        snapshot: &Snapshot,
        asked: &Asked<'_, B>,
        peer: SocketAddr,
        carried: &mut Carried,
    ) -> Result<Response<Full<Bytes>>, GuestError> {
        if !snapshot.options.http_endpoint.is_enabled() {
            return Err(GuestError::EndpointDisabled);
        }
        let request = asked.request;
        let parsed = asked.path;
        let method = request.method();
        if *method == Method::PUT {
            return match parsed {
                Ok(GuestPath::TokenEndpoint) => {
                    let response = self.issue_token(slot, request.headers())?;
                    // Only this answer leaves with the instance's hop limit as its IP TTL (see
                    // `net`).
                    let limit = snapshot.options.http_put_response_hop_limit.get();
                    carried.hops = Some(ResponseHopLimit(limit));
                    Ok(response)
                }
                _ => Err(GuestError::TokenPutOnWrongPath),
            };
        }
        let is_token_path = parsed == Ok(GuestPath::TokenEndpoint);
        let responder = &self.responder;
        if *method == Method::OPTIONS && is_token_path {
            let mut response =
                responder.response(StatusCode::OK, &responder.plain, Bytes::new(), None);
            let allow = HeaderValue::from_static(ALLOW_TOKEN);
            response.headers_mut().insert(header::ALLOW, allow);
            return Ok(response);
        }
        if *method != Method::GET && *method != Method::HEAD {
            let allow = if is_token_path {
                ALLOW_TOKEN
            } else {
                ALLOW_METADATA
            };
            return Err(GuestError::MethodNotAllowed { allow });
        }
        carried.token_ttl = self.check_token(slot, snapshot, &asked.tokens)?;
        let ttl = carried.token_ttl;
        let modified = &snapshot.last_modified;
        let found = match parsed {
            Ok(GuestPath::VersionList) => {
                return Ok(responder.data(&responder.data, self.versions.clone(), modified, ttl));
            }
            Ok(GuestPath::TokenEndpoint) => {
                return Err(GuestError::MethodNotAllowed { allow: ALLOW_TOKEN });
            }
            Ok(GuestPath::Metadata(path)) => {
                let timeline = match &snapshot.quiet {
                    Some(quiet) if !Self::sees_events(slot, snapshot, peer.ip(), &path) => quiet,
                    _ => &snapshot.timeline,
                };
                let tree = timeline.current(&*self.clock);
                recent_paths::find(tree, request.uri().path(), &path)
            }
            Err(_) => None,
        };
        match found.ok_or(GuestError::NotFound)? {
            Found::Listing(body) | Found::Leaf(Leaf::Text(body)) => {
                Ok(responder.data(&responder.data, body.clone(), modified, ttl))
            }
            Found::Leaf(Leaf::UserData(body)) => {
                Ok(responder.data(&responder.octets, body.clone(), modified, ttl))
            }
            Found::Leaf(Leaf::Credentials(which)) => {
                let now = self.clock.now_millis();
                let (issued, body) = match which {
                    CredentialsLeaf::Identity => {
                        let issued = snapshot.credentials.identity(now);
                        let body = issued.document.clone();
                        (issued, body)
                    }
                    CredentialsLeaf::Role | CredentialsLeaf::RoleExtended => {
                        let delivery = match ttl {
                            Some(_) => Delivery::V2,
                            None => Delivery::V1,
                        };
                        let issued = snapshot
                            .role_credentials(delivery, now)
                            .ok_or(GuestError::NotFound)?;
                        match delivery {
                            Delivery::V1 => report_v1_delivery(slot, peer),
                            Delivery::V2 => {
                                let deliveries = &slot.counters().role_deliveries;
                                deliveries[1].fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        let body = match which {
                            CredentialsLeaf::RoleExtended => issued.extended.clone(),
                            _ => Some(issued.document.clone()),
                        };
                        (issued, body.ok_or(GuestError::NotFound)?)
                    }
                };
                Ok(responder.data(&responder.data, body, &issued.last_modified, ttl))
            }
        }
    }

    /// Counts a refused token (or token request) and says why in the debug log, at most once
    /// per reason every few seconds (clients can send refused tokens as fast as they like).
    fn token_refused(&self, why: TokenRejection, snapshot: &Snapshot, peer: SocketAddr) {
        self.metrics.token_rejected(why);
        if let Some(held_back) = self.token_logs[why as usize].allow() {
            tracing::debug!(
                %peer,
                instance = snapshot.instance.id(),
                reason = why.label(),
                version = why.version().label(),
                held_back,
                "session token refused"
            );
        }
    }

    /// `None` for a token-less (IMDSv1) request allowed by the options; the remaining TTL of a
    /// valid token; an error otherwise. Two token headers are refused, whatever they hold: an
    /// ambiguous request is never resolved by order.
    fn check_token(
        &self,
        slot: &InstanceSlot,
        snapshot: &Snapshot,
        tokens: &TokenHeaders<'_>,
    ) -> Result<Option<u32>, GuestError> {
        match (tokens.first, tokens.repeated) {
            (Some(_), true) => Err(GuestError::InvalidToken(TokenRejection::Ambiguous)),
            (Some(token), false) => self
                .tokens
                .verify_bound(
                    slot.token_binding(|| self.tokens.binding(slot.id().as_str())),
                    token.as_bytes(),
                    self.clock.now_millis(),
                )
                .map(Some)
                .map_err(|error| {
                    GuestError::InvalidToken(match error {
                        TokenError::Malformed => TokenRejection::Malformed,
                        TokenError::BadSeal => TokenRejection::BadSeal,
                        TokenError::WrongInstance => TokenRejection::WrongInstance,
                        TokenError::Expired => TokenRejection::Expired,
                    })
                }),
            (None, _) if snapshot.options.http_tokens == HttpTokens::Required => {
                Err(GuestError::MissingToken)
            }
            (None, _) => Ok(None),
        }
    }

    fn issue_token(
        &self,
        slot: &InstanceSlot,
        headers: &HeaderMap,
    ) -> Result<Response<Full<Bytes>>, GuestError> {
        if headers.contains_key(X_FORWARDED_FOR) {
            return Err(GuestError::ForwardedTokenRequest);
        }
        let mut values = headers.get_all(TOKEN_TTL_HEADER).iter();
        let ttl = match (values.next(), values.next()) {
            (Some(value), None) => {
                TokenTtl::parse(value.as_bytes()).map_err(|_| GuestError::InvalidTokenTtl)?
            }
            _ => return Err(GuestError::InvalidTokenTtl),
        };
        let binding = slot.token_binding(|| self.tokens.binding(slot.id().as_str()));
        let token = self
            .tokens
            .issue_bound(binding, self.clock.now_millis(), ttl);
        self.metrics.token_issued();
        let plain = &self.responder.plain;
        Ok(self.responder.response(
            StatusCode::OK,
            plain,
            Bytes::from(token),
            Some(ttl.seconds()),
        ))
    }
}

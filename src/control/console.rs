//! The web console at `/console` on the control listener: one page (embedded in the binary, no
//! external resources, so it works offline) that shows the fleet, each instance's token-less
//! request history as a graph, its recent IMDSv1 callers, events and faults, and acts on
//! instances, updating live without reloads.
//!
//! Routes (all under `/console`, the only paths that accept a console session):
//! - `GET /console`, `GET /console/assets/NAME`: the page and its script and style ([`assets`]).
//! - `GET /console/api/session`: how the page authenticates and its CSRF token.
//! - `POST /console/api/login` (`{"accessKeyId","secretAccessKey"}`), `POST /console/api/logout`.
//! - `GET /console/api/fleet`, `GET /console/api/instances/ID`: JSON views ([`view`]).
//! - `GET /console/api/changes?since=VERSION`: a long poll that answers on the next change or
//!   after [`live::TICK`] ([`live`]).
//! - `POST /console/api/actions` (`{"action":"requireImdsv2","instanceId":...}`, ...): each
//!   action is built into the EC2 Query request it stands for and dispatched like one
//!   ([`actions`]), so guardrail policies and validation apply as they do to the AWS CLI.
//!
//! **Access.** Without `[control]` keys the console is open, as the API is (the listener is
//! loopback-only then). With keys, it asks for them once and keeps an HMAC-signed session cookie
//! (`HttpOnly; SameSite=Strict; Path=/console`, 12 hours; see [`session`]). Every POST needs the
//! CSRF token bound to the session (a per-process one without keys) in `X-Imds-Csrf`, and the
//! control surface refuses cross-site requests before they get here
//! ([`crate::server::browser`]). The page is never sent a secret: no credentials, tokens, keys
//! or user data are in any view.

mod actions;
mod assets;
mod error;
mod live;
mod session;
mod view;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{json, Value};

use self::error::ConsoleError;
use self::session::{Session, Sessions};
use super::ControlApi;

/// Where the console lives.
const ROOT: &str = "/console";
/// Largest console request body (a login or an action).
const MAX_BODY: usize = 16 * 1024;
/// The header a state-changing request carries its CSRF token in.
const CSRF_HEADER: &str = "x-imds-csrf";

/// The console's own state: its session key, the live streams open, and what the page is told
/// about the caller lookup.
#[derive(Debug)]
pub struct Console {
    sessions: Sessions,
    streams: Arc<tokio::sync::Semaphore>,
    /// Counts changes the control API's change counter does not see (faults).
    changed: tokio::sync::watch::Sender<u64>,
    /// Whether the access log looks up IMDSv1 callers (without it, the page says so).
    callers_looked_up: AtomicBool,
    /// Refused sign-ins are logged at most once a minute (anyone can send them).
    refused_logins: crate::log_limit::LogLimit,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            sessions: Sessions::random(),
            streams: Arc::new(tokio::sync::Semaphore::new(live::MAX_STREAMS)),
            changed: tokio::sync::watch::Sender::new(0),
            callers_looked_up: AtomicBool::new(false),
            refused_logins: crate::log_limit::LogLimit::new(std::time::Duration::from_secs(60)),
        }
    }
}

/// The server's stop signal, which the control surface puts on each request so that a long
/// poll ends when the server stops.
#[derive(Debug, Clone)]
pub struct ServerStop(pub tokio::sync::watch::Receiver<bool>);

/// Whether `path` is the console's (and so never an EC2 Query request).
pub fn is_console(path: &str) -> bool {
    path == ROOT
        || path
            .strip_prefix(ROOT)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl ControlApi {
    /// Tells the console whether the access log looks up IMDSv1 callers (set once, at start).
    pub fn set_caller_lookup(&self, on: bool) {
        self.console.callers_looked_up.store(on, Ordering::Relaxed);
    }

    /// Whether the access log looks up IMDSv1 callers.
    fn callers_looked_up(&self) -> bool {
        self.console.callers_looked_up.load(Ordering::Relaxed)
    }

    /// Answers one request for a path under `/console`.
    pub(super) async fn console<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return ConsoleError::BodyTooLarge.response(),
        };
        let stop = parts.extensions.get::<ServerStop>().cloned();
        let path = &parts.uri.path()[ROOT.len()..];
        let answer = self
            .console_route(&parts.method, path, &parts.uri, &parts.headers, &body, stop)
            .await;
        match answer {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(path = parts.uri.path(), %error, "console request refused");
                error.response()
            }
        }
    }

    async fn console_route(
        &self,
        method: &Method,
        path: &str,
        uri: &http::Uri,
        headers: &HeaderMap,
        body: &[u8],
        stop: Option<ServerStop>,
    ) -> Result<Response<Full<Bytes>>, ConsoleError> {
        if let Some(name) = path.strip_prefix("/assets/") {
            return match *method {
                Method::GET => assets::asset(name).ok_or(ConsoleError::NotFound),
                _ => Err(ConsoleError::MethodNotAllowed),
            };
        }
        if path.is_empty() || path == "/" {
            return match *method {
                Method::GET => Ok(assets::page()),
                _ => Err(ConsoleError::MethodNotAllowed),
            };
        }
        let Some(api) = path.strip_prefix("/api/") else {
            return Err(ConsoleError::NotFound);
        };
        if (method, api) == (&Method::POST, "login") {
            return self.console_login(headers, body);
        }
        let session = self.console_session(headers)?;
        match (method, api) {
            (&Method::GET, "session") => Ok(json_reply(
                StatusCode::OK,
                &self.session_view(&session),
                None,
            )),
            (&Method::GET, "fleet") => Ok(json_reply(StatusCode::OK, &self.fleet_view(), None)),
            (&Method::GET, "changes") => {
                let since = since(uri.query())?;
                let version = self.next_change(since, stop).await?;
                Ok(json_reply(
                    StatusCode::OK,
                    &json!({ "version": version }),
                    None,
                ))
            }
            (&Method::GET, _) if api.starts_with("instances/") => {
                let id = &api["instances/".len()..];
                let detail = self.instance_view(id).map_err(ConsoleError::Action)?;
                Ok(json_reply(StatusCode::OK, &detail, None))
            }
            (&Method::POST, "logout") => {
                self.console.sessions.check_csrf(&session, csrf(headers))?;
                let cookie = session::expired_cookie();
                Ok(json_reply(StatusCode::OK, &json!({}), Some(cookie)))
            }
            (&Method::POST, "actions") => {
                self.console.sessions.check_csrf(&session, csrf(headers))?;
                let action = actions::Action::parse(headers, body)?;
                let done = self.console_action(action).await?;
                Ok(json_reply(StatusCode::OK, &done, None))
            }
            (&Method::GET, "login" | "logout" | "actions")
            | (&Method::POST, "session" | "fleet" | "changes") => {
                Err(ConsoleError::MethodNotAllowed)
            }
            _ => Err(ConsoleError::NotFound),
        }
    }

    /// The session a request belongs to: the open one without keys, else its cookie's.
    fn console_session(&self, headers: &HeaderMap) -> Result<Session, ConsoleError> {
        if self.keys.is_none() {
            return Ok(Session::open());
        }
        let now = self.clock.now_millis() / 1000;
        let cookie = session::cookie(headers).ok_or(ConsoleError::NoSession)?;
        self.console.sessions.verify(cookie, now).map_err(|why| {
            tracing::debug!(%why, "console session refused");
            ConsoleError::NoSession
        })
    }

    /// `POST /console/api/login`: checks the keys and starts a session.
    fn console_login(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response<Full<Bytes>>, ConsoleError> {
        let Some(keys) = &self.keys else {
            return Ok(json_reply(
                StatusCode::OK,
                &self.session_view(&Session::open()),
                None,
            ));
        };
        let login = session::Login::parse(headers, body)?;
        if !login.matches(keys) {
            self.metrics
                .control_action("(console login)", "AuthFailure");
            if let Some(held_back) = self.console.refused_logins.allow() {
                tracing::warn!(held_back, "console login refused: wrong control keys");
            }
            return Err(ConsoleError::WrongKeys);
        }
        let session = self.console.sessions.issue(self.clock.now_millis() / 1000);
        let cookie = self.console.sessions.cookie_header(&session);
        tracing::info!("console session started");
        Ok(json_reply(
            StatusCode::OK,
            &self.session_view(&session),
            Some(cookie),
        ))
    }

    /// What the page needs to know about its session: never a key, only the CSRF token.
    fn session_view(&self, session: &Session) -> Value {
        json!({
            "auth": if self.keys.is_some() { "keys" } else { "open" },
            "csrf": self.console.sessions.csrf(session),
            "callersLookedUp": self.callers_looked_up(),
        })
    }
}

/// The CSRF token a request carries.
fn csrf(headers: &HeaderMap) -> Option<&str> {
    headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok())
}

/// `since=N` of a long poll, if given.
fn since(query: Option<&str>) -> Result<Option<u64>, ConsoleError> {
    let Some(query) = query else {
        return Ok(None);
    };
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "since")
        .map(|(_, value)| {
            value
                .parse()
                .map_err(|_| ConsoleError::BadRequest(format!("since ({value}) is not a version")))
        })
        .transpose()
}

/// A JSON answer that no cache keeps, setting `cookie` if given.
fn json_reply(
    status: StatusCode,
    value: &Value,
    cookie: Option<HeaderValue>,
) -> Response<Full<Bytes>> {
    let mut response = super::reply(status, "application/json", value.to_string().into());
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(cookie) = cookie {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_paths_are_the_consoles() {
        for path in ["/console", "/console/", "/console/api/fleet"] {
            assert!(is_console(path), "{path}");
        }
        for path in ["/", "/consoles", "/console.js", "/healthz", "/metrics"] {
            assert!(!is_console(path), "{path}");
        }
    }

    #[test]
    fn since_is_a_number_or_absent() {
        assert_eq!(since(None), Ok(None));
        assert_eq!(since(Some("since=7")), Ok(Some(7)));
        assert_eq!(since(Some("x=1")), Ok(None));
        assert!(since(Some("since=seven")).is_err());
    }
}

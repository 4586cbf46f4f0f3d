//! Browsers must not be able to drive imds. A web page can make the user's browser send
//! requests to loopback addresses in two ways, and both are refused here:
//!
//! - **DNS rebinding**: a page at `attacker.example` makes its own name resolve to 127.0.0.1,
//!   then reads answers as same-origin (DescribeInstances, or a token and role credentials from
//!   the guest API). Its requests carry `Host: attacker.example`; on a loopback connection
//!   [`HostGuard::check_host`] accepts only IP literals, `localhost` and the names configured
//!   (`[server] allowed_hosts`).
//! - **Cross-site requests**: a form POST (`Action=ModifyInstanceMetadataOptions&HttpTokens=optional`)
//!   needs no answer to do harm. Browsers mark such requests with `Origin` and
//!   `Sec-Fetch-Site`; [`HostGuard::check_site`] refuses any that comes from another site (the
//!   control API applies it to every request).
//!
//! The AWS CLI, the SDKs and curl send neither header and an IP or `localhost` `Host`, so they
//! are never affected. Each refusal is counted (`imds_browser_requests_refused_total`) and
//! logged at warn, at most once a minute per surface and reason.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use http::header::{HOST, ORIGIN};
use http::{HeaderMap, HeaderName};

use crate::log_limit::LogLimit;
pub use crate::metrics::BrowserRefusal;
use crate::metrics::{Metrics, SurfaceKind};

const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// The `Host` the last request of a connection passed with: a client sends the same one with
/// every request, and the same bytes pass again without being parsed (the guard's names never
/// change while it serves).
#[derive(Debug, Clone)]
pub struct PassedHost {
    len: usize,
    bytes: [u8; PassedHost::MAX],
}

impl Default for PassedHost {
    fn default() -> PassedHost {
        PassedHost {
            len: 0,
            bytes: [0; PassedHost::MAX],
        }
    }
}

impl PassedHost {
    /// Longest `Host` remembered.
    const MAX: usize = 64;

    fn is(&self, host: &[u8]) -> bool {
        self.bytes.get(..self.len) == Some(host) && self.len > 0
    }

    fn remember(&mut self, host: &[u8]) {
        if let Some(bytes) = self.bytes.get_mut(..host.len()) {
            bytes.copy_from_slice(host);
            self.len = host.len();
        }
    }
}

/// The names a loopback `Host` may carry besides IP literals and `localhost`, and the log limits.
#[derive(Debug)]
pub struct HostGuard {
    allowed: Vec<String>,
    /// `[surface][reason]`.
    logs: [[LogLimit; 2]; 2],
}

impl Default for HostGuard {
    fn default() -> Self {
        HostGuard::new(&[])
    }
}

impl HostGuard {
    /// A guard that also accepts `allowed` host names (case-insensitive, port ignored).
    pub fn new(allowed: &[String]) -> HostGuard {
        let minute = || LogLimit::new(Duration::from_secs(60));
        HostGuard {
            allowed: allowed.iter().map(|name| normalise(name)).collect(),
            logs: [[minute(), minute()], [minute(), minute()]],
        }
    }

    /// Refuses a request on a loopback connection whose `Host` names anything but an IP
    /// literal, `localhost` or an allowed name. A request without `Host` (HTTP/1.0) passes.
    pub fn check_host(
        &self,
        headers: &HeaderMap,
        surface: SurfaceKind,
        metrics: &Metrics,
    ) -> Result<(), BrowserRefusal> {
        for value in headers.get_all(HOST) {
            let host = value.to_str().unwrap_or("");
            if !self.host_allowed(host) {
                return Err(self.refuse(BrowserRefusal::ForeignHost, surface, metrics, host));
            }
        }
        Ok(())
    }

    /// [`HostGuard::check_host`] for the next request of a connection whose last request passed
    /// with `passed` (which this updates).
    pub fn check_host_again(
        &self,
        headers: &HeaderMap,
        surface: SurfaceKind,
        metrics: &Metrics,
        passed: &mut PassedHost,
    ) -> Result<(), BrowserRefusal> {
        let mut hosts = headers.get_all(HOST).iter();
        let single = match (hosts.next(), hosts.next()) {
            (Some(host), None) => Some(host.as_bytes()),
            _ => None,
        };
        if single.is_some_and(|host| passed.is(host)) {
            return Ok(());
        }
        self.check_host(headers, surface, metrics)?;
        if let Some(host) = single {
            passed.remember(host);
        }
        Ok(())
    }

    /// Refuses a request that a browser marked as cross-site: `Sec-Fetch-Site` other than
    /// `same-origin` or `none`, or an `Origin` other than the request's own `http(s)://Host`.
    pub fn check_site(
        &self,
        headers: &HeaderMap,
        surface: SurfaceKind,
        metrics: &Metrics,
    ) -> Result<(), BrowserRefusal> {
        if let Some(site) = headers.get(SEC_FETCH_SITE) {
            let site = site.as_bytes();
            if site != b"same-origin" && site != b"none" {
                let shown = String::from_utf8_lossy(site);
                return Err(self.refuse(BrowserRefusal::CrossSite, surface, metrics, &shown));
            }
        }
        if let Some(origin) = headers.get(ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let host = headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            let same = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|rest| !host.is_empty() && rest.eq_ignore_ascii_case(host));
            if !same {
                return Err(self.refuse(BrowserRefusal::CrossSite, surface, metrics, origin));
            }
        }
        Ok(())
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = strip_port(host);
        if let Some(literal) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            return literal.parse::<Ipv6Addr>().is_ok();
        }
        if name.parse::<Ipv4Addr>().is_ok() {
            return true;
        }
        let name = normalise(name);
        name == "localhost" || self.allowed.contains(&name)
    }

    fn refuse(
        &self,
        why: BrowserRefusal,
        surface: SurfaceKind,
        metrics: &Metrics,
        value: &str,
    ) -> BrowserRefusal {
        metrics.browser_refused(surface, why);
        if let Some(held_back) = self.logs[surface as usize][why as usize].allow() {
            let value: String = value.chars().take(100).collect();
            tracing::warn!(
                surface = surface.label(),
                reason = why.label(),
                value = ?value,
                held_back,
                "refused a request a web browser was made to send (DNS rebinding or cross-site); \
                 allow a host name with [server] allowed_hosts or --allowed-host"
            );
        }
        why
    }
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`.
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    }
}

/// Lower case, without a trailing dot.
fn normalise(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn ip_literals_and_localhost_pass_and_other_names_do_not() {
        let guard = HostGuard::new(&["IMDS.internal".to_owned()]);
        let metrics = Metrics::default();
        for host in [
            "127.0.0.1:1338",
            "127.0.0.1",
            "169.254.169.254",
            "[::1]:1339",
            "[fd00:ec2::254]",
            "localhost:1338",
            "LocalHost.",
            "imds.internal:80",
        ] {
            let h = headers(&[("host", host)]);
            assert_eq!(
                guard.check_host(&h, SurfaceKind::Guest, &metrics),
                Ok(()),
                "{host}"
            );
        }
        for host in [
            "attacker.example",
            "attacker.example:1338",
            "127.0.0.1.nip.io",
            "localhost.attacker.example",
            "[::1",
            "::1",
            "",
        ] {
            let h = headers(&[("host", host)]);
            assert_eq!(
                guard.check_host(&h, SurfaceKind::Control, &metrics),
                Err(BrowserRefusal::ForeignHost),
                "{host}"
            );
        }
        let twice = headers(&[("host", "127.0.0.1"), ("host", "attacker.example")]);
        assert!(guard
            .check_host(&twice, SurfaceKind::Guest, &metrics)
            .is_err());
        assert!(guard
            .check_host(&HeaderMap::new(), SurfaceKind::Guest, &metrics)
            .is_ok());
        let text = metrics.render(&[]);
        assert!(text.contains(
            "imds_browser_requests_refused_total{surface=\"control\",reason=\"foreign_host\"} 7"
        ), "{text}");
    }

    #[test]
    fn a_host_that_passed_passes_again_and_no_other_does() {
        let guard = HostGuard::default();
        let metrics = Metrics::default();
        let mut passed = PassedHost::default();
        let check = |pairs: &[(&'static str, &str)], passed: &mut PassedHost| {
            guard.check_host_again(&headers(pairs), SurfaceKind::Guest, &metrics, passed)
        };
        assert_eq!(check(&[("host", "127.0.0.1:1338")], &mut passed), Ok(()));
        assert!(passed.is(b"127.0.0.1:1338"));
        assert_eq!(check(&[("host", "127.0.0.1:1338")], &mut passed), Ok(()));
        for refused in [
            &[("host", "attacker.example")][..],
            &[("host", "127.0.0.1:1338"), ("host", "attacker.example")][..],
            &[("host", "127.0.0.1:1338.attacker.example")][..],
        ] {
            assert_eq!(
                check(refused, &mut passed),
                Err(BrowserRefusal::ForeignHost),
                "{refused:?}"
            );
            assert!(
                passed.is(b"127.0.0.1:1338"),
                "a refused host is not remembered"
            );
        }
        assert_eq!(check(&[("host", "[::1]:1339")], &mut passed), Ok(()));
        assert!(passed.is(b"[::1]:1339"));
        assert_eq!(check(&[], &mut passed), Ok(()), "no Host: HTTP/1.0");
        let long = format!("{}.internal", "a".repeat(70));
        let guard = HostGuard::new(std::slice::from_ref(&long));
        let mut fresh = PassedHost::default();
        let h = headers(&[("host", &long)]);
        for _ in 0..2 {
            assert_eq!(
                guard.check_host_again(&h, SurfaceKind::Guest, &metrics, &mut fresh),
                Ok(())
            );
            assert!(!fresh.is(long.as_bytes()), "too long to remember");
        }
    }

    #[test]
    fn cross_site_marks_are_refused_and_same_origin_passes() {
        let guard = HostGuard::default();
        let metrics = Metrics::default();
        let check = |pairs: &[(&'static str, &str)]| {
            guard.check_site(&headers(pairs), SurfaceKind::Control, &metrics)
        };
        assert_eq!(check(&[("host", "127.0.0.1:1339")]), Ok(()));
        assert_eq!(check(&[("sec-fetch-site", "none")]), Ok(()));
        assert_eq!(
            check(&[
                ("host", "127.0.0.1:1339"),
                ("origin", "http://127.0.0.1:1339"),
                ("sec-fetch-site", "same-origin")
            ]),
            Ok(())
        );
        for pairs in [
            &[("sec-fetch-site", "cross-site")][..],
            &[("sec-fetch-site", "same-site")][..],
            &[
                ("host", "127.0.0.1:1339"),
                ("origin", "http://attacker.example"),
            ][..],
            &[("host", "127.0.0.1:1339"), ("origin", "null")][..],
            &[
                ("host", "127.0.0.1:1339"),
                ("origin", "http://127.0.0.1:8080"),
            ][..],
            &[("origin", "http://127.0.0.1:1339")][..],
        ] {
            assert_eq!(check(pairs), Err(BrowserRefusal::CrossSite), "{pairs:?}");
        }
    }

    proptest! {
        #[test]
        fn any_name_with_a_letter_outside_the_allowed_set_is_refused(name in "[a-z][a-z0-9.-]{0,30}") {
            prop_assume!(normalise(&name) != "localhost");
            let guard = HostGuard::default();
            let h = headers(&[("host", &name)]);
            prop_assert!(guard.check_host(&h, SurfaceKind::Guest, &Metrics::default()).is_err());
        }

        #[test]
        fn every_ipv4_literal_passes(a: u8, b: u8, c: u8, d: u8, port: u16) {
            let guard = HostGuard::default();
            let h = headers(&[("host", &format!("{a}.{b}.{c}.{d}:{port}"))]);
            prop_assert!(guard.check_host(&h, SurfaceKind::Guest, &Metrics::default()).is_ok());
        }
    }
}

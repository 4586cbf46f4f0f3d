//! The page, its script and its style, embedded in the binary: nothing is fetched from anywhere
//! else, so the console works offline. A strict Content-Security-Policy allows only these.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// Only the console's own files, no inline script, no framing.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                      connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The page.
pub fn page() -> Response<Full<Bytes>> {
    response("text/html; charset=utf-8", PAGE)
}

/// The asset called `name`, if there is one.
pub fn asset(name: &str) -> Option<Response<Full<Bytes>>> {
    match name {
        "console.js" => Some(response("text/javascript; charset=utf-8", SCRIPT)),
        "console.css" => Some(response("text/css; charset=utf-8", STYLE)),
        _ => None,
    }
}

fn response(content_type: &'static str, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        // The assets change with the binary: revalidate rather than keep a stale script.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets() {
        for name in ["console.js", "console.css"] {
            assert!(PAGE.contains(&format!("/console/assets/{name}")), "{name}");
            assert!(asset(name).is_some());
        }
        assert!(asset("../index.html").is_none());
        for text in [PAGE, SCRIPT, STYLE] {
            // SVG's namespace is a name, not a resource.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        assert!(!PAGE.contains("<script>"), "no inline script");
    }
}

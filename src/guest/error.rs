//! Guest-facing errors and the one place that turns them into IMDS' exact responses.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::Responder;
use crate::fleet::throttle::ThrottleReason;
use crate::metrics::TokenRejection;

/// Why a guest request is not answered with data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    /// `HttpEndpoint=disabled`.
    #[error("metadata endpoint is disabled")]
    EndpointDisabled,
    /// A token PUT carrying `X-Forwarded-For`.
    #[error("token request came through a proxy (X-Forwarded-For)")]
    ForwardedTokenRequest,
    /// A PUT anywhere but `/latest/api/token`.
    #[error("PUT on a path other than /latest/api/token")]
    TokenPutOnWrongPath,
    /// A token PUT without a valid `X-aws-ec2-metadata-token-ttl-seconds`.
    #[error("token TTL header missing or invalid")]
    InvalidTokenTtl,
    /// No token under `HttpTokens=required`.
    #[error("session token required")]
    MissingToken,
    /// A token that is ambiguous, malformed, forged, another instance's, or expired.
    #[error("session token refused: {}", .0.label())]
    InvalidToken(TokenRejection),
    /// Fleet mode: the caller's address belongs to no instance.
    #[error("caller's address belongs to no instance")]
    UnknownCaller,
    /// A request a web browser was made to send (see [`crate::server::browser`]).
    #[error("request from a web browser refused")]
    BrowserRequest,
    /// Beyond the instance's requests per second, or on a connection beyond its cap.
    #[error("throttled: too many {}", .0.label())]
    Throttled(ThrottleReason),
    /// Nothing at that path (now).
    #[error("not found")]
    NotFound,
    /// A method the path does not allow.
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The methods the path allows, for `Allow`.
        allow: &'static str,
    },
}

/// The real 404 page (339 bytes), from recordings of IMDS.
pub const NOT_FOUND_PAGE: &str = "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n\t\t \"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n <head>\n  <title>404 - Not Found</title>\n </head>\n <body>\n  <h1>404 - Not Found</h1>\n </body>\n</html>\n";

impl GuestError {
    /// The status IMDS answers with.
    pub fn status(self) -> StatusCode {
        match self {
            GuestError::EndpointDisabled => StatusCode::FORBIDDEN,
            GuestError::ForwardedTokenRequest => StatusCode::FORBIDDEN,
            GuestError::TokenPutOnWrongPath => StatusCode::FORBIDDEN,
            GuestError::InvalidTokenTtl => StatusCode::BAD_REQUEST,
            GuestError::MissingToken => StatusCode::UNAUTHORIZED,
            GuestError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            GuestError::BrowserRequest => StatusCode::FORBIDDEN,
            GuestError::UnknownCaller => StatusCode::FORBIDDEN,
            GuestError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            GuestError::NotFound => StatusCode::NOT_FOUND,
            GuestError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The full response. `token_ttl` is the remaining TTL of a valid token the request carried.
    pub(super) fn into_response(
        self,
        responder: &Responder,
        token_ttl: Option<u32>,
    ) -> Response<Full<Bytes>> {
        let status = self.status();
        let (headers, body) = match self {
            GuestError::NotFound => (
                &responder.html,
                Bytes::from_static(NOT_FOUND_PAGE.as_bytes()),
            ),
            _ => (&responder.plain, Bytes::new()),
        };
        let mut response = responder.response(status, headers, body, token_ttl);
        if let GuestError::MethodNotAllowed { allow } = self {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_404_page_is_the_real_339_bytes() {
        assert_eq!(NOT_FOUND_PAGE.len(), 339);
    }
}

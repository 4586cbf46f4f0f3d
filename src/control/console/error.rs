//! Why the console refused a request: a JSON `{"code","message"}` the page shows as it is. An
//! action the EC2 API refused keeps EC2's code, message and status.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::control::ControlError;

/// Why a console request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsoleError {
    /// No such console path.
    #[error("There is nothing at this console path.")]
    NotFound,
    /// The path does not take this method.
    #[error("The requested method is not allowed for this console path.")]
    MethodNotAllowed,
    /// The body is larger than a console request needs.
    #[error("The request body is too large or broken.")]
    BodyTooLarge,
    /// Control keys are configured and the request has no valid session.
    #[error("Sign in with the control keys first.")]
    NoSession,
    /// The keys given at sign-in are not the control keys.
    #[error("The access key id or secret access key is wrong.")]
    WrongKeys,
    /// A state-changing request without the session's CSRF token.
    #[error("The request lacks the console's CSRF token; reload the console.")]
    CsrfMismatch,
    /// The request is not what the console understands.
    #[error("{0}")]
    BadRequest(String),
    /// As many live streams are open as the console allows.
    #[error("Too many console pages are open; close some and reload.")]
    TooManyStreams,
    /// The control API refused the action (or the instance does not exist).
    #[error(transparent)]
    Action(#[from] ControlError),
}

impl ConsoleError {
    /// Its status and code.
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ConsoleError::NotFound => (StatusCode::NOT_FOUND, "NotFound"),
            ConsoleError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            ConsoleError::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "BodyTooLarge"),
            ConsoleError::NoSession => (StatusCode::UNAUTHORIZED, "NoSession"),
            ConsoleError::WrongKeys => (StatusCode::UNAUTHORIZED, "AuthFailure"),
            ConsoleError::CsrfMismatch => (StatusCode::FORBIDDEN, "CsrfTokenMismatch"),
            ConsoleError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ConsoleError::TooManyStreams => (StatusCode::SERVICE_UNAVAILABLE, "TooManyStreams"),
            ConsoleError::Action(error) => (error.status(), error.code()),
        }
    }

    /// The JSON answer.
    pub fn response(&self) -> Response<Full<Bytes>> {
        let (status, code) = self.parts();
        // As the Query API answers: the store's location stays in the operator's log.
        let message = match self {
            ConsoleError::Action(error) => error.client_message(),
            other => other.to_string(),
        };
        let body = json!({ "code": code, "message": message });
        super::json_reply(status, &body, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn an_action_refused_by_ec2_keeps_its_code_message_and_status() {
        let error = ConsoleError::Action(ControlError::UnauthorizedOperation("denied".into()));
        let response = error.response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["code"], "UnauthorizedOperation");
        assert_eq!(value["message"], "denied");
    }

    #[test]
    fn without_a_session_or_token_the_answer_is_401_or_403() {
        assert_eq!(ConsoleError::NoSession.parts().0, StatusCode::UNAUTHORIZED);
        assert_eq!(ConsoleError::CsrfMismatch.parts().0, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn a_console_answer_names_no_database_host_user_or_database() {
        let error = ConsoleError::Action(ControlError::Unavailable(
            "postgres://imds_admin@db.internal.example:5432/imds_prod is unreachable (connection refused)"
                .into(),
        ));
        let body = error
            .response()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        for secret in ["db.internal.example", "imds_admin", "imds_prod"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}

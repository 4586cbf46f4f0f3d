//! Errors of the control surface, each answered as EC2 does: status 400 (or 412 for a dry run
//! that would succeed) and `<Response><Errors><Error><Code>` with EC2's code.

use super::xml::escape_into;

/// Why a control request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A required parameter is absent.
    #[error("The request must contain the parameter {0}")]
    MissingParameter(String),
    /// A parameter has a value EC2 would refuse.
    #[error("{0}")]
    InvalidParameterValue(String),
    /// A parameter combination EC2 would refuse.
    #[error("{0}")]
    InvalidParameterCombination(String),
    /// `InstanceId` names another instance.
    #[error("The instance ID '{0}' does not exist")]
    InstanceNotFound(String),
    /// `InstanceId` is not an instance id.
    #[error("Invalid id: \"{0}\"")]
    InstanceIdMalformed(String),
    /// `AssociationId` names no current association.
    #[error("An association ID '{0}' does not exist")]
    AssociationNotFound(String),
    /// The instance is not in a state that allows the request.
    #[error("{0}")]
    IncorrectState(String),
    /// More tags than a resource may have.
    #[error("{0}")]
    TagLimitExceeded(String),
    /// The instance's state does not allow the request (`StopInstances` on a terminated one).
    #[error("{0}")]
    IncorrectInstanceState(String),
    /// A `ClientToken` reused with other parameters.
    #[error("The client token '{0}' was used before with different parameters")]
    IdempotentParameterMismatch(String),
    /// More instances than one request launches.
    #[error("{0}")]
    InstanceLimitExceeded(String),
    /// The instance's attributes forbid the request (`DisableApiTermination`).
    #[error("{0}")]
    OperationNotPermitted(String),
    /// A guardrail policy refused the request.
    #[error("{0}")]
    UnauthorizedOperation(String),
    /// More filters or filter values than EC2 takes in one request, or a value too long.
    #[error("{0}")]
    FilterLimitExceeded(String),
    /// A request EC2 refuses whole, such as one naming more instances than it takes at once.
    #[error("{0}")]
    InvalidRequest(String),
    /// A filter name imds does not know.
    #[error("The filter '{0}' is invalid")]
    InvalidFilter(String),
    /// `DescribeInstanceTypes` of a type imds does not know.
    #[error("{0}")]
    InvalidInstanceType(String),
    /// `DescribeImages` of an image no instance uses.
    #[error("{0}")]
    ImageNotFound(String),
    /// A resource id of no kind imds knows.
    #[error("The ID '{0}' is not valid")]
    InvalidId(String),
    /// `Action` names nothing imds serves.
    #[error("The action {0} is not valid for this web service.")]
    InvalidAction(String),
    /// A request EC2 refuses in the current state (e.g. enabling IMDSv1 while enforced).
    #[error("{0}")]
    Unsupported(String),
    /// The request was signed for another region (its credential scope's), which this
    /// endpoint does not serve.
    #[error("Credential should be scoped to a valid region, not '{0}'. This endpoint serves {1}.")]
    RegionScope(String, String),
    /// The request is not signed with the configured keys.
    #[error("AWS was not able to validate the provided access credentials")]
    AuthFailure,
    /// `DryRun=true` on a request that would have succeeded.
    #[error("Request would have succeeded, but DryRun flag is set.")]
    DryRunOperation,
    /// The change could not be made durable (details are logged).
    #[error("An internal error has occurred")]
    InternalError,
    /// The store is unreachable: changes are refused until it is back.
    #[error("The service is unavailable: {0}. Please try again.")]
    Unavailable(String),
    /// The store stopped answering after the change was sent: it may have been applied, and
    /// is learned from the store if it was; retrying it is safe.
    #[error("The outcome of this request is unknown: {0}. The change may have been applied; retrying it is safe.")]
    OutcomeUnknown(String),
    /// The change raced another host's change of the same row (retried before it is answered).
    #[error("The service is unavailable: {0} while this request was applied. Please try again.")]
    Conflict(String),
    /// A request a web browser was made to send from another site (see
    /// [`crate::server::browser`]).
    #[error("You are not authorized to perform this operation. imds refuses requests that a web browser sends for another site (cross-site or DNS rebinding).")]
    BrowserRequest,
    /// Only POST (and GET with a query string) carries Query requests.
    #[error("The requested method is not allowed for this resource.")]
    MethodNotAllowed,
    /// A VPC, subnet, security group, key pair or address request EC2 would refuse.
    #[error(transparent)]
    Network(#[from] crate::fleet::network::NetworkError),
    /// A launch template request EC2 would refuse.
    #[error(transparent)]
    Template(crate::fleet::launch_templates::TemplateError),
}

impl From<crate::fleet::state::AddressInUse> for ControlError {
    /// EC2's `InvalidIPAddress.InUse`: the address has a live owner already.
    fn from(conflict: crate::fleet::state::AddressInUse) -> ControlError {
        tracing::info!(%conflict, "an address request is refused");
        ControlError::Network(crate::fleet::network::NetworkError::AddressInUse(
            conflict.address,
        ))
    }
}

impl ControlError {
    /// EC2's error code.
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::MissingParameter(_) => "MissingParameter",
            ControlError::InvalidParameterValue(_) => "InvalidParameterValue",
            ControlError::InvalidParameterCombination(_) => "InvalidParameterCombination",
            ControlError::InstanceNotFound(_) => "InvalidInstanceID.NotFound",
            ControlError::InstanceIdMalformed(_) => "InvalidInstanceID.Malformed",
            ControlError::AssociationNotFound(_) => "InvalidAssociationID.NotFound",
            ControlError::IncorrectState(_) => "IncorrectState",
            ControlError::TagLimitExceeded(_) => "TagLimitExceeded",
            ControlError::IncorrectInstanceState(_) => "IncorrectInstanceState",
            ControlError::IdempotentParameterMismatch(_) => "IdempotentParameterMismatch",
            ControlError::InstanceLimitExceeded(_) => "InstanceLimitExceeded",
            ControlError::UnauthorizedOperation(_) => "UnauthorizedOperation",
            ControlError::OperationNotPermitted(_) => "OperationNotPermitted",
            ControlError::FilterLimitExceeded(_) => "FilterLimitExceeded",
            ControlError::InvalidRequest(_) => "InvalidRequest",
            ControlError::InvalidFilter(_) => "InvalidParameterValue",
            ControlError::InvalidId(_) => "InvalidID",
            ControlError::InvalidInstanceType(_) => "InvalidInstanceType",
            ControlError::ImageNotFound(_) => "InvalidAMIID.NotFound",
            ControlError::InvalidAction(_) => "InvalidAction",
            ControlError::Unsupported(_) => "UnsupportedOperation",
            ControlError::AuthFailure => "AuthFailure",
            ControlError::RegionScope(..) => "SignatureDoesNotMatch",
            ControlError::DryRunOperation => "DryRunOperation",
            ControlError::MethodNotAllowed => "UnsupportedOperation",
            ControlError::BrowserRequest => "UnauthorizedOperation",
            ControlError::InternalError => "InternalError",
            ControlError::Unavailable(_)
            | ControlError::OutcomeUnknown(_)
            | ControlError::Conflict(_) => "Unavailable",
            ControlError::Network(error) => error.code(),
            ControlError::Template(error) => error.code(),
        }
    }

    /// The HTTP status EC2 answers it with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            ControlError::DryRunOperation => http::StatusCode::PRECONDITION_FAILED,
            ControlError::AuthFailure => http::StatusCode::UNAUTHORIZED,
            ControlError::RegionScope(..) => http::StatusCode::FORBIDDEN,
            ControlError::BrowserRequest => http::StatusCode::FORBIDDEN,
            ControlError::UnauthorizedOperation(_) => http::StatusCode::FORBIDDEN,
            ControlError::InternalError => http::StatusCode::INTERNAL_SERVER_ERROR,
            ControlError::Unavailable(_)
            | ControlError::OutcomeUnknown(_)
            | ControlError::Conflict(_) => http::StatusCode::SERVICE_UNAVAILABLE,
            ControlError::MissingParameter(_)
            | ControlError::InvalidParameterValue(_)
            | ControlError::InvalidParameterCombination(_)
            | ControlError::InstanceNotFound(_)
            | ControlError::InstanceIdMalformed(_)
            | ControlError::InvalidFilter(_)
            | ControlError::FilterLimitExceeded(_)
            | ControlError::InvalidRequest(_)
            | ControlError::IncorrectInstanceState(_)
            | ControlError::OperationNotPermitted(_)
            | ControlError::IdempotentParameterMismatch(_)
            | ControlError::InstanceLimitExceeded(_)
            | ControlError::TagLimitExceeded(_)
            | ControlError::AssociationNotFound(_)
            | ControlError::IncorrectState(_)
            | ControlError::InvalidAction(_)
            | ControlError::InvalidId(_)
            | ControlError::InvalidInstanceType(_)
            | ControlError::ImageNotFound(_)
            | ControlError::Unsupported(_)
            | ControlError::MethodNotAllowed
            | ControlError::Network(_)
            | ControlError::Template(_) => http::StatusCode::BAD_REQUEST,
        }
    }

    /// The message API clients read: the error as displayed, except that a store's location
    /// (its host, user and database) stays in the operator's log.
    pub fn client_message(&self) -> String {
        match self {
            ControlError::Unavailable(_) => {
                "The service is unavailable: its store cannot be reached. Please try again.".into()
            }
            ControlError::Conflict(_) => {
                "The service is unavailable: another change raced this one. Please try again."
                    .into()
            }
            ControlError::OutcomeUnknown(_) => {
                "The outcome of this request is unknown: the store stopped answering after the change was sent, so it may have been applied. Repeating it is safe (RunInstances with the same ClientToken)."
                    .into()
            }
            other => other.to_string(),
        }
    }

    /// The error document.
    pub fn xml(&self, request_id: &str) -> String {
        let mut out = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>",
        );
        out.push_str(self.code());
        out.push_str("</Code><Message>");
        escape_into(&mut out, &self.client_message());
        out.push_str("</Message></Error></Errors><RequestID>");
        out.push_str(request_id);
        out.push_str("</RequestID></Response>");
        out
    }
}

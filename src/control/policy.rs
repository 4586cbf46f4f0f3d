//! Guardrails: IAM JSON policies, with the semantics of AWS Organizations service control
//! policies (SCPs), decided on the control path for a request (`ec2:RunInstances`,
//! `ec2:ModifyInstanceMetadataOptions`, ...), never on the guest path.
//!
//! A [`PolicySet`] holds named [`Policy`] documents (loaded from files, each named by its file
//! name without extension). [`PolicySet::evaluate`] decides a [`Request`] into a [`Decision`]:
//! as IAM does, one API call is decided as one [`RequestContext`] per resource it touches (the
//! action, that resource's ARN, and the condition keys of that resource type), and it is
//! allowed only when every context is (a `RunInstances` touches the instance, the image, the
//! subnet, the network interface, each security group, the key pair and the volume).
//!
//! # How a set decides (SCP semantics)
//!
//! 1. **No policy, no restriction.** SCPs only restrict what other policies grant; imds has no
//!    identity policies, so an empty set allows everything.
//! 2. **An explicit Deny wins.** A Deny statement that applies to any one of the request's
//!    contexts (its action, that context's resource, and its condition on that context's keys
//!    all match) in any policy denies the request: [`Decision::ExplicitDeny`] names the policy,
//!    the statement, the action and the resource.
//! 3. **Allow statements make a policy an allow-list.** In AWS an action must be allowed at
//!    every level of the organisation, and each level carries the AWS-managed `FullAWSAccess`
//!    (`Allow * on *`) unless it is replaced. imds models each policy as one such level: a
//!    policy with only Deny statements is a deny-list on top of an implicit `FullAWSAccess`; a
//!    policy with at least one Allow statement must allow the request itself, or the request
//!    is denied implicitly ([`Decision::NotAllowed`] names that policy, the action and the
//!    resource). A request is allowed by a policy when each of its contexts is matched by one
//!    of its Allow statements (action, resource and condition).
//!
//! A context without a resource (an action without resource-level permissions) is decided
//! against the resource `*`, which only `"Resource": "*"` (or a `NotResource`) covers.
//!
//! # Matching, as the IAM User Guide defines it
//!
//! - `Action`/`NotAction`: `*` or `service:name`, compared ignoring case, with `*` and `?`
//!   wildcards. `Resource`/`NotResource` and the `Arn*` operators: ARNs compared
//!   case-sensitively one colon-separated component at a time, each with wildcards (the last,
//!   the resource, may itself contain colons); a pattern that is not a six-component ARN
//!   (`*`) is matched against the whole text.
//! - Condition key names ignore case ("IAM JSON policy elements: Condition": "Condition key
//!   names are not case-sensitive").
//! - Several operators in a `Condition` are ANDed; several keys in one operator are ANDed;
//!   several values for one key are ORed, and for a negated operator (`StringNotEquals`,
//!   `StringNotLike`, `NumericNotEquals`, `ArnNotEquals`, `ArnNotLike`, `NotIpAddress`, ...)
//!   NORed: the request value must match none of them ("Conditions with multiple context keys
//!   or values").
//! - A key absent from the request makes a condition false, except: a negated operator is
//!   **true** ("If the policy condition requires that the key is not matched, such as
//!   StringNotLike or ArnNotLike, and the right key is not present, the condition is true"),
//!   `...IfExists` is true, and `Null` tests presence itself (`"true"`: the key is absent,
//!   `"false"`: present) ("IAM JSON policy elements: Condition operators").
//! - `ForAllValues:` holds when every request value satisfies the operator, and also when the
//!   key is absent or empty; `ForAnyValue:` holds when at least one does, and is false when
//!   the key is absent ("Single-valued vs. multivalued context keys" and its examples, e.g.
//!   `ForAllValues:StringNotLike` on `aws:TagKeys`). `IfExists` changes nothing under a set
//!   qualifier: the qualifier decides for an absent key (AWS re:Post, "ForAnyValue:
//!   StringEqualsIfExists behaving unexpectedly": false without the key).
//! - Without a set qualifier, a key with several request values (a multivalued key used
//!   without `ForAllValues`/`ForAnyValue`, which IAM advises against) satisfies a positive
//!   operator when any value does and a negated operator when every value does, so a negated
//!   operator is always the opposite of its positive form.
//! - `String*` compare exactly (case-sensitively, or ignoring case for `...IgnoreCase`);
//!   `StringLike` and the `Arn*` operators take wildcards, `StringEquals` does not.
//!   `Numeric*` compare decimals exactly (`2` equals `2.0`); a request value that is not a
//!   number satisfies neither a numeric operator nor its negation. `Bool` reads `true`/`false`
//!   in any case. `IpAddress`/`NotIpAddress` take addresses and CIDR blocks.
//!
//! # What imds refuses rather than misreads
//!
//! Every parse error names the statement (`statement #2 (Sid "RequireImdsV2")`) and the
//! element or condition key ([`PolicyError`]). Refused: duplicate JSON keys (a second
//! `"Effect"` would silently replace the first), unknown elements, `Principal`/`NotPrincipal`
//! (SCPs apply to every caller), `Date*` and `Binary*` operators (not evaluated), policy
//! variables (`${aws:username}`, not substituted) in a version 2012-10-17 document, numbers,
//! booleans and addresses that do not parse, and a statement without `Effect`, action or
//! resource.

mod condition;
mod context;
mod document;
mod json;
mod pattern;

use std::fmt;
use std::path::{Path, PathBuf};

pub use context::{key, Request, RequestContext};
pub use document::Policy;

/// Why a policy document or file was refused. Every message names where: the file, the
/// statement (by number and `Sid`), the element or condition key.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The text is not JSON, or repeats a key in an object.
    #[error("not valid JSON: {0}")]
    NotJson(String),
    /// An element holds the wrong kind of JSON value.
    #[error("{place} must be {expected}, not {found}")]
    WrongType {
        /// Where the value is.
        place: String,
        /// What it must be.
        expected: &'static str,
        /// What it is.
        found: &'static str,
    },
    /// The document has no `Statement`.
    #[error("the policy document has no Statement")]
    MissingStatement,
    /// `Statement` is an empty array.
    #[error("the policy document has no statements")]
    NoStatements,
    /// `Version` is neither `2012-10-17` nor `2008-10-17`.
    #[error("unsupported policy Version {0:?}: IAM knows \"2012-10-17\" and \"2008-10-17\"")]
    UnsupportedVersion(String),
    /// An element IAM does not define (often a misspelling).
    #[error("{place} has an unknown element {element:?}")]
    UnknownElement {
        /// The document or statement.
        place: String,
        /// The element's name.
        element: String,
    },
    /// An element guardrail policies do not take (`Principal`, `NotPrincipal`).
    #[error("{statement} has {element}, which service control policies do not take: they apply to every caller")]
    UnsupportedElement {
        /// The statement.
        statement: String,
        /// The element's name.
        element: String,
    },
    /// A required element is absent.
    #[error("{statement} has no {element}")]
    MissingElement {
        /// The statement.
        statement: String,
        /// What is missing.
        element: &'static str,
    },
    /// Both forms of an element (`Action` and `NotAction`).
    #[error("{statement} has both {first} and {second}; use one")]
    ConflictingElements {
        /// The statement.
        statement: String,
        /// One element.
        first: &'static str,
        /// The other.
        second: &'static str,
    },
    /// `Effect` is neither `Allow` nor `Deny`.
    #[error("{statement} has Effect {value:?}; it must be \"Allow\" or \"Deny\"")]
    InvalidEffect {
        /// The statement.
        statement: String,
        /// The value given.
        value: String,
    },
    /// An empty `Action`, `Resource` (or `Not`) list: the statement could never apply.
    #[error("{statement} has an empty {element} list")]
    EmptyList {
        /// The statement.
        statement: String,
        /// The element.
        element: &'static str,
    },
    /// An action that is neither `*` nor `service:name`.
    #[error("{statement} has action {value:?}; an action is \"*\" or \"service:name\" (wildcards allowed), e.g. \"ec2:RunInstances\"")]
    InvalidAction {
        /// The statement.
        statement: String,
        /// The action given.
        value: String,
    },
    /// A condition operator IAM does not define.
    #[error("{statement} uses unknown condition operator {operator:?}")]
    UnknownOperator {
        /// The statement.
        statement: String,
        /// The operator given.
        operator: String,
    },
    /// A condition operator IAM defines but imds does not evaluate (`Date*`, `Binary*`).
    #[error("{statement} uses condition operator {operator:?}, which imds does not evaluate (no date or binary operators)")]
    UnsupportedOperator {
        /// The statement.
        statement: String,
        /// The operator given.
        operator: String,
    },
    /// A condition value its operator cannot read (a word for `NumericEquals`).
    #[error("{statement}: condition key {key} of {operator} has value {value:?}, which is not {expected}")]
    InvalidConditionValue {
        /// The statement.
        statement: String,
        /// The operator.
        operator: String,
        /// The condition key.
        key: String,
        /// The value given.
        value: String,
        /// What the operator reads.
        expected: &'static str,
    },
    /// A policy variable (`${aws:username}`), which imds does not substitute.
    #[error(
        "{statement}: {element} has {value:?}, a policy variable, which imds does not substitute"
    )]
    PolicyVariable {
        /// The statement.
        statement: String,
        /// The element or condition key.
        element: String,
        /// The value given.
        value: String,
    },
    /// A policy file cannot be read.
    #[error("cannot read policy {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: std::io::Error,
    },
    /// A policy file holds a refused document.
    #[error("policy {}: {reason}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// Why the document was refused.
        reason: Box<PolicyError>,
    },
    /// Two policy files have the same name (file name without extension).
    #[error("policies {} and {} have the same name {name:?}", first.display(), second.display())]
    DuplicateName {
        /// The shared name.
        name: String,
        /// The first file.
        first: PathBuf,
        /// The second file.
        second: PathBuf,
    },
}

/// What a [`PolicySet`] decided for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No policy denies any of the request's contexts, and every allow-list policy allows
    /// each of them.
    Allowed,
    /// A Deny statement applies to one of the request's contexts.
    ExplicitDeny {
        /// The policy's name.
        policy: String,
        /// The statement's `Sid`, if it has one.
        sid: Option<String>,
        /// The action denied.
        action: String,
        /// The resource it was denied on (`*` for an action without resources).
        resource: String,
    },
    /// A policy with Allow statements has none that allows one of the request's contexts (an
    /// implicit deny).
    NotAllowed {
        /// The policy's name.
        policy: String,
        /// The action not allowed.
        action: String,
        /// The resource it is not allowed on.
        resource: String,
    },
}

impl Decision {
    /// Whether the request may go ahead.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allowed => f.write_str("allowed"),
            Decision::ExplicitDeny {
                policy,
                sid,
                action,
                resource,
            } => {
                write!(f, "explicit deny in service control policy {policy}")?;
                if let Some(sid) = sid {
                    write!(f, " (statement {sid})")?;
                }
                write!(f, " for {action} on {resource}")
            }
            Decision::NotAllowed {
                policy,
                action,
                resource,
            } => write!(
                f,
                "no statement in service control policy {policy} allows {action} on {resource}"
            ),
        }
    }
}

/// Named guardrail policies, decided together with SCP semantics (see the module
/// documentation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySet {
    policies: Vec<(String, Policy)>,
}

impl PolicySet {
    /// Adds `policy` under `name` (evaluated after those already added).
    pub fn with(mut self, name: impl Into<String>, policy: Policy) -> PolicySet {
        self.policies.push((name.into(), policy));
        self
    }

    /// Loads one policy from each file, named by its file name without extension, in the
    /// order given. Errors name the file.
    pub fn load(paths: &[PathBuf]) -> Result<PolicySet, PolicyError> {
        let mut set = PolicySet::default();
        let mut names: Vec<(String, &Path)> = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(path).map_err(|reason| PolicyError::Read {
                path: path.clone(),
                reason,
            })?;
            let policy = Policy::parse(&text).map_err(|reason| PolicyError::InFile {
                path: path.clone(),
                reason: Box::new(reason),
            })?;
            let name = path.file_stem().map_or_else(
                || path.display().to_string(),
                |s| s.to_string_lossy().into_owned(),
            );
            if let Some((_, first)) = names.iter().find(|(n, _)| *n == name) {
                return Err(PolicyError::DuplicateName {
                    name,
                    first: first.to_path_buf(),
                    second: path.clone(),
                });
            }
            names.push((name.clone(), path));
            set = set.with(name, policy);
        }
        Ok(set)
    }

    /// Whether the set holds no policy (and so allows everything).
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The policies' names, in evaluation order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|(name, _)| name.as_str())
    }

    /// Decides `request`: an explicit Deny on any of its contexts first (the first context,
    /// then the first policy, in order), then every allow-list policy must allow each context.
    pub fn evaluate(&self, request: &Request) -> Decision {
        for context in request.contexts() {
            for (name, policy) in &self.policies {
                if let Some(statement) = policy.first_deny(context) {
                    return Decision::ExplicitDeny {
                        policy: name.clone(),
                        sid: statement.sid.clone(),
                        action: context.action().to_owned(),
                        resource: context.resource().to_owned(),
                    };
                }
            }
        }
        for context in request.contexts() {
            for (name, policy) in &self.policies {
                if policy.has_allow() && !policy.allows(context) {
                    return Decision::NotAllowed {
                        policy: name.clone(),
                        action: context.action().to_owned(),
                        resource: context.resource().to_owned(),
                    };
                }
            }
        }
        Decision::Allowed
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

//! A policy document: `Version`, `Id` and `Statement`s of `Sid`, `Effect`, `Action` or
//! `NotAction`, `Resource` or `NotResource`, and `Condition`.

use super::condition::Condition;
use super::context::RequestContext;
use super::json::Json;
use super::pattern::{arn_match, wildcard_match_ignore_case};
use super::PolicyError;

/// An IAM JSON policy document, checked and ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    statements: Vec<Statement>,
}

/// Whether a statement allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    Allow,
    Deny,
}

/// `Action` (the listed patterns) or `NotAction` (everything but them); the same for resources.
#[derive(Debug, Clone, PartialEq)]
enum Scope {
    Only(Vec<String>),
    AllBut(Vec<String>),
}

/// One statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Statement {
    pub(crate) sid: Option<String>,
    pub(crate) effect: Effect,
    actions: Scope,
    resources: Scope,
    condition: Condition,
}

const STATEMENT_ELEMENTS: &[&str] = &[
    "Sid",
    "Effect",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
];

impl Policy {
    /// Parses an IAM JSON policy document. `Statement` may be one object or an array; `Action`,
    /// `Resource` and their `Not` forms a string or an array of strings. Anything IAM would
    /// refuse, or that imds would not evaluate as IAM does, is an error naming the statement
    /// and the element.
    pub fn parse(json: &str) -> Result<Policy, PolicyError> {
        let document = Json::parse(json).map_err(PolicyError::NotJson)?;
        let Json::Object(elements) = document else {
            return Err(PolicyError::WrongType {
                place: "the policy document".to_owned(),
                expected: "an object",
                found: document.kind(),
            });
        };
        let mut version = None;
        let mut statements = None;
        for (name, value) in &elements {
            match name.as_str() {
                "Version" => version = Some(value),
                "Statement" => statements = Some(value),
                "Id" => string(value, || "Id".to_owned()).map(drop)?,
                _ => {
                    return Err(PolicyError::UnknownElement {
                        place: "the policy document".to_owned(),
                        element: name.clone(),
                    })
                }
            }
        }
        // IAM reads a document without a Version as 2008-10-17, which has no policy variables.
        let variables = match version {
            None => false,
            Some(value) => match string(value, || "Version".to_owned())? {
                "2012-10-17" => true,
                "2008-10-17" => false,
                other => return Err(PolicyError::UnsupportedVersion(other.to_owned())),
            },
        };
        let statements = match statements {
            None => return Err(PolicyError::MissingStatement),
            Some(Json::Array(items)) => items.iter().collect(),
            Some(one) => vec![one],
        };
        if statements.is_empty() {
            return Err(PolicyError::NoStatements);
        }
        let statements = statements
            .into_iter()
            .enumerate()
            .map(|(index, json)| Statement::parse(json, index, variables))
            .collect::<Result<_, _>>()?;
        Ok(Policy { statements })
    }

    /// Whether any statement allows: such a policy is an allow-list.
    pub(crate) fn has_allow(&self) -> bool {
        self.statements.iter().any(|s| s.effect == Effect::Allow)
    }

    /// The first Deny statement that applies to `context`.
    pub(crate) fn first_deny(&self, context: &RequestContext) -> Option<&Statement> {
        self.statements
            .iter()
            .find(|s| s.effect == Effect::Deny && s.applies(context))
    }

    /// Whether an Allow statement applies to `context`.
    pub(crate) fn allows(&self, context: &RequestContext) -> bool {
        self.statements
            .iter()
            .any(|s| s.effect == Effect::Allow && s.applies(context))
    }
}

impl Statement {
    fn parse(json: &Json, index: usize, variables: bool) -> Result<Statement, PolicyError> {
        let number = index + 1;
        let Json::Object(elements) = json else {
            return Err(PolicyError::WrongType {
                place: format!("statement #{number}"),
                expected: "an object",
                found: json.kind(),
            });
        };
        let get = |name: &str| elements.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let sid = get("Sid")
            .map(|v| string(v, || format!("Sid of statement #{number}")).map(str::to_owned))
            .transpose()?;
        let label = match &sid {
            Some(sid) => format!("statement #{number} (Sid {sid:?})"),
            None => format!("statement #{number}"),
        };
        for (name, _) in elements {
            if name == "Principal" || name == "NotPrincipal" {
                return Err(PolicyError::UnsupportedElement {
                    statement: label,
                    element: name.clone(),
                });
            }
            if !STATEMENT_ELEMENTS.contains(&name.as_str()) {
                return Err(PolicyError::UnknownElement {
                    place: label,
                    element: name.clone(),
                });
            }
        }
        let effect = match get("Effect") {
            None => {
                return Err(PolicyError::MissingElement {
                    statement: label,
                    element: "Effect",
                })
            }
            Some(value) => match string(value, || format!("Effect of {label}"))? {
                "Allow" => Effect::Allow,
                "Deny" => Effect::Deny,
                other => {
                    return Err(PolicyError::InvalidEffect {
                        statement: label,
                        value: other.to_owned(),
                    })
                }
            },
        };
        let actions = scope(
            get("Action"),
            get("NotAction"),
            "Action",
            "NotAction",
            &label,
        )?;
        let resources = scope(
            get("Resource"),
            get("NotResource"),
            "Resource",
            "NotResource",
            &label,
        )?;
        for pattern in actions.patterns() {
            if !valid_action(pattern) {
                return Err(PolicyError::InvalidAction {
                    statement: label,
                    value: pattern.clone(),
                });
            }
        }
        if variables {
            if let Some(pattern) = resources.patterns().iter().find(|p| p.contains("${")) {
                return Err(PolicyError::PolicyVariable {
                    statement: label,
                    element: resources.element("Resource", "NotResource").to_owned(),
                    value: pattern.clone(),
                });
            }
        }
        let condition = match get("Condition") {
            None => Condition::none(),
            Some(json) => Condition::parse(json, &label, variables)?,
        };
        Ok(Statement {
            sid,
            effect,
            actions,
            resources,
            condition,
        })
    }

    /// Whether its action, resource and condition all match `context`.
    fn applies(&self, context: &RequestContext) -> bool {
        self.covers_action(context.action())
            && self.covers_resource(context.resource())
            && self.condition.holds(context)
    }

    fn covers_action(&self, action: &str) -> bool {
        self.actions
            .covers(|pattern| wildcard_match_ignore_case(pattern, action))
    }

    fn covers_resource(&self, arn: &str) -> bool {
        self.resources.covers(|pattern| arn_match(pattern, arn))
    }
}

impl Scope {
    fn patterns(&self) -> &[String] {
        match self {
            Scope::Only(p) | Scope::AllBut(p) => p,
        }
    }

    fn element<'a>(&self, only: &'a str, all_but: &'a str) -> &'a str {
        match self {
            Scope::Only(_) => only,
            Scope::AllBut(_) => all_but,
        }
    }

    fn covers(&self, matches: impl Fn(&str) -> bool) -> bool {
        match self {
            Scope::Only(patterns) => patterns.iter().any(|p| matches(p)),
            Scope::AllBut(patterns) => !patterns.iter().any(|p| matches(p)),
        }
    }
}

/// `Action` or `NotAction` (exactly one), `Resource` or `NotResource` (exactly one).
fn scope(
    only: Option<&Json>,
    all_but: Option<&Json>,
    only_name: &'static str,
    all_but_name: &'static str,
    label: &str,
) -> Result<Scope, PolicyError> {
    let (json, name, make): (_, _, fn(Vec<String>) -> Scope) = match (only, all_but) {
        (Some(_), Some(_)) => {
            return Err(PolicyError::ConflictingElements {
                statement: label.to_owned(),
                first: only_name,
                second: all_but_name,
            })
        }
        (None, None) => {
            return Err(PolicyError::MissingElement {
                statement: label.to_owned(),
                element: if only_name == "Action" {
                    "Action or NotAction"
                } else {
                    "Resource or NotResource"
                },
            })
        }
        (Some(json), None) => (json, only_name, Scope::Only),
        (None, Some(json)) => (json, all_but_name, Scope::AllBut),
    };
    let place = || format!("{name} of {label}");
    let patterns = match json {
        Json::Array(items) => items
            .iter()
            .map(|item| string(item, place).map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()?,
        other => vec![string(other, place)?.to_owned()],
    };
    if patterns.is_empty() {
        return Err(PolicyError::EmptyList {
            statement: label.to_owned(),
            element: name,
        });
    }
    Ok(make(patterns))
}

/// `*`, or `service:pattern` with a service prefix of letters, digits and dashes.
fn valid_action(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.split_once(':') {
        Some((service, name)) => {
            !service.is_empty()
                && service
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !name.is_empty()
        }
        None => false,
    }
}

fn string(json: &Json, place: impl FnOnce() -> String) -> Result<&str, PolicyError> {
    match json {
        Json::String(s) => Ok(s),
        other => Err(PolicyError::WrongType {
            place: place(),
            expected: "a string",
            found: other.kind(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(json: &str) -> PolicyError {
        Policy::parse(json).unwrap_err()
    }

    fn statement(body: &str) -> String {
        format!(r#"{{"Version": "2012-10-17", "Statement": {body}}}"#)
    }

    #[test]
    fn statement_may_be_one_object_or_an_array() {
        let one = Policy::parse(&statement(
            r#"{"Effect": "Deny", "Action": "ec2:RunInstances", "Resource": "*"}"#,
        ))
        .unwrap();
        let many = Policy::parse(&statement(
            r#"[{"Effect": "Deny", "Action": ["ec2:RunInstances"], "Resource": ["*"]}]"#,
        ))
        .unwrap();
        assert_eq!(one, many);
    }

    #[test]
    fn actions_match_ignoring_case_and_with_wildcards() {
        let policy = Policy::parse(&statement(
            r#"{"Effect": "Deny", "Action": ["EC2:runinstances", "ec2:Modify*"], "Resource": "*"}"#,
        ))
        .unwrap();
        for action in ["ec2:RunInstances", "ec2:ModifyInstanceMetadataOptions"] {
            assert!(
                policy.first_deny(&RequestContext::new(action)).is_some(),
                "{action}"
            );
        }
        assert!(policy
            .first_deny(&RequestContext::new("ec2:DescribeInstances"))
            .is_none());
    }

    #[test]
    fn not_action_and_not_resource_cover_everything_else() {
        let policy = Policy::parse(&statement(
            r#"{"Effect": "Deny", "NotAction": "ec2:Describe*", "NotResource": "arn:aws:ec2:*:*:volume/*"}"#,
        ))
        .unwrap();
        let instance = "arn:aws:ec2:us-east-1:123456789012:instance/i-1";
        let volume = "arn:aws:ec2:us-east-1:123456789012:volume/vol-1";
        let run = |arn: &str| RequestContext::new("ec2:RunInstances").with_resource(arn);
        assert!(policy.first_deny(&run(instance)).is_some());
        assert!(policy.first_deny(&run(volume)).is_none());
        assert!(policy
            .first_deny(&RequestContext::new("ec2:DescribeInstances").with_resource(instance))
            .is_none());
    }

    #[test]
    fn a_statement_applies_to_a_context_only_when_it_covers_that_context_s_resource() {
        let instance = "arn:aws:ec2:us-east-1:123456789012:instance/i-1";
        let volume = "arn:aws:ec2:us-east-1:123456789012:volume/vol-1";
        let run = |arn: &str| RequestContext::new("ec2:RunInstances").with_resource(arn);
        let deny = Policy::parse(&statement(
            r#"{"Effect": "Deny", "Action": "ec2:RunInstances", "Resource": "arn:aws:ec2:us-east-1:*:instance/*"}"#,
        ))
        .unwrap();
        assert!(deny.first_deny(&run(instance)).is_some());
        assert!(deny.first_deny(&run(volume)).is_none());
        assert!(deny
            .first_deny(&run("arn:aws:ec2:eu-west-1:123456789012:instance/i-1"))
            .is_none());
        let allow = Policy::parse(&statement(
            r#"{"Effect": "Allow", "Action": "ec2:RunInstances", "Resource": "arn:aws:ec2:*:123456789012:instance/*"}"#,
        ))
        .unwrap();
        assert!(allow.allows(&run(instance)));
        assert!(!allow.allows(&run(volume)));
        assert!(!allow.allows(&run("arn:aws:ec2:us-east-1:111122223333:instance/i-1")));
    }

    #[test]
    fn a_request_without_resources_is_covered_only_by_a_star() {
        let specific = Policy::parse(&statement(
            r#"{"Effect": "Deny", "Action": "*", "Resource": "arn:aws:ec2:*:*:instance/*"}"#,
        ))
        .unwrap();
        let star = Policy::parse(&statement(
            r#"{"Effect": "Deny", "Action": "*", "Resource": "*"}"#,
        ))
        .unwrap();
        let describe = RequestContext::new("ec2:DescribeInstances");
        assert!(specific.first_deny(&describe).is_none());
        assert!(star.first_deny(&describe).is_some());
    }

    #[test]
    fn a_document_without_version_reads_policy_variables_as_text() {
        let policy = Policy::parse(
            r#"{"Statement": {"Effect": "Deny", "Action": "*", "Resource": "arn:aws:s3:::${x}"}}"#,
        );
        assert!(policy.is_ok());
        assert!(matches!(
            refusal(&statement(
                r#"{"Effect": "Deny", "Action": "*", "Resource": "arn:aws:s3:::${aws:username}"}"#
            )),
            PolicyError::PolicyVariable { element, .. } if element == "Resource"
        ));
    }

    #[test]
    fn malformed_documents_are_refused_naming_the_statement_and_the_element() {
        let cases: &[(&str, &str)] = &[
            ("not json", "not valid JSON"),
            ("[]", "the policy document must be an object"),
            (r#"{"Version": "2012-10-17"}"#, "no Statement"),
            (&statement("[]"), "no statements"),
            (r#"{"Version": "2019-01-01", "Statement": []}"#, "2019-01-01"),
            (r#"{"Version": 2012, "Statement": []}"#, "Version must be a string"),
            (r#"{"Versoin": "2012-10-17", "Statement": []}"#, "Versoin"),
            (&statement("[1]"), "statement #1 must be an object"),
            (
                &statement(r#"{"Sid": "S", "Action": "*", "Resource": "*"}"#),
                "statement #1 (Sid \"S\") has no Effect",
            ),
            (
                &statement(r#"{"Effect": "deny", "Action": "*", "Resource": "*"}"#),
                "\"deny\"",
            ),
            (
                &statement(r#"{"Effect": "Deny", "Resource": "*"}"#),
                "has no Action or NotAction",
            ),
            (
                &statement(r#"{"Effect": "Deny", "Action": "*"}"#),
                "has no Resource or NotResource",
            ),
            (
                &statement(r#"{"Effect": "Deny", "Action": "*", "NotAction": "*", "Resource": "*"}"#),
                "both Action and NotAction",
            ),
            (
                &statement(r#"{"Effect": "Deny", "Action": [], "Resource": "*"}"#),
                "empty Action",
            ),
            (
                &statement(r#"{"Effect": "Deny", "Action": "RunInstances", "Resource": "*"}"#),
                "\"RunInstances\"",
            ),
            (
                &statement(r#"{"Effect": "Deny", "Action": [1], "Resource": "*"}"#),
                "Action of statement #1 must be a string",
            ),
            (
                &statement(
                    r#"{"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*"}"#,
                ),
                "Principal",
            ),
            (
                &statement(r#"{"Effect": "Deny", "Action": "*", "Resource": "*", "Conditions": {}}"#),
                "Conditions",
            ),
            (
                &statement(
                    r#"[{"Effect": "Deny", "Action": "*", "Resource": "*"}, {"Sid": "Second", "Effect": "Deny", "Action": "*", "Resource": "*", "Condition": {"StringEquals": {"ec2:MetadataHttpTokens": ["required", {}]}}}]"#,
                ),
                "condition key ec2:MetadataHttpTokens of StringEquals in statement #2 (Sid \"Second\")",
            ),
        ];
        for (json, expected) in cases {
            let message = refusal(json).to_string();
            assert!(
                message.contains(expected),
                "{json}\n  gave {message:?}\n  expected it to mention {expected:?}"
            );
        }
    }
}

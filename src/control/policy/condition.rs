//! The `Condition` element: operators, their `...IfExists` and `ForAllValues:`/`ForAnyValue:`
//! forms, and how each decides against a request's condition keys (the rules are listed in
//! the module documentation of [`crate::control::policy`]).

use std::cmp::Ordering;
use std::net::IpAddr;

use ipnet::IpNet;

use super::context::RequestContext;
use super::json::Json;
use super::pattern::{arn_match, wildcard_match};
use super::PolicyError;

/// A statement's `Condition`: every test must hold.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Condition {
    tests: Vec<Test>,
}

/// One operator applied to one key, with the policy's values for it.
#[derive(Debug, Clone, PartialEq)]
enum Test {
    /// `Null`: whether the key is absent (`true`) or present (`false`); several values are ORed.
    Null { key: String, absent: Vec<bool> },
    /// Every other operator.
    Compare {
        key: String,
        matcher: Matcher,
        negated: bool,
        if_exists: bool,
        set: Option<SetQualifier>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetQualifier {
    ForAllValues,
    ForAnyValue,
}

/// The positive form of an operator with the policy's values, parsed for it.
#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    StringEquals(Vec<String>),
    /// Values lowercased.
    StringEqualsIgnoreCase(Vec<String>),
    StringLike(Vec<String>),
    Numeric(Comparison, Vec<Decimal>),
    Bool(Vec<bool>),
    Arn(Vec<String>),
    IpAddress(Vec<IpNet>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Equals,
    LessThan,
    LessThanEquals,
    GreaterThan,
    GreaterThanEquals,
}

/// The kind of operator a name names, before its values are parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    Numeric(Comparison),
    Bool,
    Arn,
    IpAddress,
}

/// Operator names without `IfExists`: (name, kind, negated).
const OPERATORS: &[(&str, Kind, bool)] = &[
    ("StringEquals", Kind::StringEquals, false),
    ("StringNotEquals", Kind::StringEquals, true),
    (
        "StringEqualsIgnoreCase",
        Kind::StringEqualsIgnoreCase,
        false,
    ),
    (
        "StringNotEqualsIgnoreCase",
        Kind::StringEqualsIgnoreCase,
        true,
    ),
    ("StringLike", Kind::StringLike, false),
    ("StringNotLike", Kind::StringLike, true),
    ("NumericEquals", Kind::Numeric(Comparison::Equals), false),
    ("NumericNotEquals", Kind::Numeric(Comparison::Equals), true),
    (
        "NumericLessThan",
        Kind::Numeric(Comparison::LessThan),
        false,
    ),
    (
        "NumericLessThanEquals",
        Kind::Numeric(Comparison::LessThanEquals),
        false,
    ),
    (
        "NumericGreaterThan",
        Kind::Numeric(Comparison::GreaterThan),
        false,
    ),
    (
        "NumericGreaterThanEquals",
        Kind::Numeric(Comparison::GreaterThanEquals),
        false,
    ),
    ("Bool", Kind::Bool, false),
    ("ArnEquals", Kind::Arn, false),
    ("ArnLike", Kind::Arn, false),
    ("ArnNotEquals", Kind::Arn, true),
    ("ArnNotLike", Kind::Arn, true),
    ("IpAddress", Kind::IpAddress, false),
    ("NotIpAddress", Kind::IpAddress, true),
];

/// IAM operators imds does not evaluate; a policy using one is refused rather than misread.
const UNSUPPORTED_PREFIXES: &[&str] = &["Date", "Binary"];

impl Condition {
    /// No condition: always holds.
    pub(crate) fn none() -> Condition {
        Condition { tests: Vec::new() }
    }

    /// Parses a `Condition` element of `statement` (a label for errors). With `variables`
    /// (policy version 2012-10-17) a value containing `${` would be a policy variable, which
    /// imds does not substitute, so it is refused.
    pub(crate) fn parse(
        json: &Json,
        statement: &str,
        variables: bool,
    ) -> Result<Condition, PolicyError> {
        let Json::Object(operators) = json else {
            return Err(PolicyError::WrongType {
                place: format!("Condition in {statement}"),
                expected: "an object of condition operators",
                found: json.kind(),
            });
        };
        let mut tests = Vec::new();
        for (operator, keys) in operators {
            let Json::Object(keys) = keys else {
                return Err(PolicyError::WrongType {
                    place: format!("condition operator {operator} in {statement}"),
                    expected: "an object of condition keys",
                    found: keys.kind(),
                });
            };
            let parsed = parse_operator(operator, statement)?;
            for (key, values) in keys {
                let values = condition_values(values, statement, operator, key, variables)?;
                tests.push(parsed.test(key, &values, statement, operator)?);
            }
        }
        Ok(Condition { tests })
    }

    /// Whether every test holds for `context`.
    pub(crate) fn holds(&self, context: &RequestContext) -> bool {
        self.tests.iter().all(|test| test.holds(context))
    }
}

/// An operator's name taken apart.
struct ParsedOperator {
    set: Option<SetQualifier>,
    /// `None` for `Null`.
    kind: Option<Kind>,
    negated: bool,
    if_exists: bool,
}

fn parse_operator(name: &str, statement: &str) -> Result<ParsedOperator, PolicyError> {
    let unknown = || PolicyError::UnknownOperator {
        statement: statement.to_owned(),
        operator: name.to_owned(),
    };
    let (set, rest) = if let Some(rest) = name.strip_prefix("ForAllValues:") {
        (Some(SetQualifier::ForAllValues), rest)
    } else if let Some(rest) = name.strip_prefix("ForAnyValue:") {
        (Some(SetQualifier::ForAnyValue), rest)
    } else {
        (None, name)
    };
    if rest == "Null" {
        if set.is_some() {
            return Err(unknown());
        }
        return Ok(ParsedOperator {
            set,
            kind: None,
            negated: false,
            if_exists: false,
        });
    }
    let (base, if_exists) = match rest.strip_suffix("IfExists") {
        Some(base) => (base, true),
        None => (rest, false),
    };
    if let Some(&(_, kind, negated)) = OPERATORS.iter().find(|(n, _, _)| *n == base) {
        return Ok(ParsedOperator {
            set,
            kind: Some(kind),
            negated,
            if_exists,
        });
    }
    if UNSUPPORTED_PREFIXES.iter().any(|p| base.starts_with(p)) {
        return Err(PolicyError::UnsupportedOperator {
            statement: statement.to_owned(),
            operator: name.to_owned(),
        });
    }
    Err(unknown())
}

impl ParsedOperator {
    fn test(
        &self,
        key: &str,
        values: &[String],
        statement: &str,
        operator: &str,
    ) -> Result<Test, PolicyError> {
        let invalid = |value: &str, expected: &'static str| PolicyError::InvalidConditionValue {
            statement: statement.to_owned(),
            operator: operator.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
            expected,
        };
        let each = |parse: &dyn Fn(&str) -> Option<()>, expected| {
            values
                .iter()
                .find(|v| parse(v).is_none())
                .map_or(Ok(()), |v| Err(invalid(v, expected)))
        };
        let key_lower = key.to_lowercase();
        let Some(kind) = self.kind else {
            each(&|v| parse_bool(v).map(drop), "true or false")?;
            return Ok(Test::Null {
                key: key_lower,
                absent: values.iter().filter_map(|v| parse_bool(v)).collect(),
            });
        };
        let matcher = match kind {
            Kind::StringEquals => Matcher::StringEquals(values.to_vec()),
            Kind::StringEqualsIgnoreCase => {
                Matcher::StringEqualsIgnoreCase(values.iter().map(|v| v.to_lowercase()).collect())
            }
            Kind::StringLike => Matcher::StringLike(values.to_vec()),
            Kind::Arn => Matcher::Arn(values.to_vec()),
            Kind::Numeric(comparison) => {
                each(&|v| Decimal::parse(v).map(drop), "a number")?;
                Matcher::Numeric(
                    comparison,
                    values.iter().filter_map(|v| Decimal::parse(v)).collect(),
                )
            }
            Kind::Bool => {
                each(&|v| parse_bool(v).map(drop), "true or false")?;
                Matcher::Bool(values.iter().filter_map(|v| parse_bool(v)).collect())
            }
            Kind::IpAddress => {
                each(&|v| parse_net(v).map(drop), "an IP address or CIDR block")?;
                Matcher::IpAddress(values.iter().filter_map(|v| parse_net(v)).collect())
            }
        };
        Ok(Test::Compare {
            key: key_lower,
            matcher,
            negated: self.negated,
            if_exists: self.if_exists,
            set: self.set,
        })
    }
}

/// A condition key's policy values as text: one scalar or an array of scalars.
fn condition_values(
    json: &Json,
    statement: &str,
    operator: &str,
    key: &str,
    variables: bool,
) -> Result<Vec<String>, PolicyError> {
    let scalar = |json: &Json| match json {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.clone()),
        Json::Bool(b) => Some(b.to_string()),
        Json::Null | Json::Array(_) | Json::Object(_) => None,
    };
    let wrong = |found: &Json| PolicyError::WrongType {
        place: format!("condition key {key} of {operator} in {statement}"),
        expected: "a string, number or boolean, or an array of them",
        found: found.kind(),
    };
    let values = match json {
        Json::Array(items) => items
            .iter()
            .map(|item| scalar(item).ok_or_else(|| wrong(item)))
            .collect::<Result<Vec<_>, _>>()?,
        other => vec![scalar(other).ok_or_else(|| wrong(other))?],
    };
    if variables {
        if let Some(value) = values.iter().find(|v| v.contains("${")) {
            return Err(PolicyError::PolicyVariable {
                statement: statement.to_owned(),
                element: format!("condition key {key} of {operator}"),
                value: value.clone(),
            });
        }
    }
    Ok(values)
}

impl Test {
    fn holds(&self, context: &RequestContext) -> bool {
        match self {
            Test::Null { key, absent } => {
                let is_absent = context.values(key).is_empty();
                absent.contains(&is_absent)
            }
            Test::Compare {
                key,
                matcher,
                negated,
                if_exists,
                set,
            } => {
                let values = context.values(key);
                // Whether one request value satisfies the operator: the positive form holds
                // when any policy value matches (OR); the negated form when none does (NOR).
                // A value the operator cannot read (a non-number for a numeric operator)
                // satisfies neither.
                let satisfied = |value: &String| {
                    matcher
                        .matches(value)
                        .is_some_and(|matched| matched != *negated)
                };
                match set {
                    Some(SetQualifier::ForAllValues) => values.iter().all(satisfied),
                    Some(SetQualifier::ForAnyValue) => values.iter().any(satisfied),
                    None if values.is_empty() => *if_exists || *negated,
                    None if *negated => values.iter().all(satisfied),
                    None => values.iter().any(satisfied),
                }
            }
        }
    }
}

impl Matcher {
    /// Whether any policy value matches `value`; `None` when the operator cannot read it.
    fn matches(&self, value: &str) -> Option<bool> {
        Some(match self {
            Matcher::StringEquals(policy) => policy.iter().any(|p| p == value),
            Matcher::StringEqualsIgnoreCase(policy) => {
                let value = value.to_lowercase();
                policy.contains(&value)
            }
            Matcher::StringLike(policy) => policy.iter().any(|p| wildcard_match(p, value)),
            Matcher::Arn(policy) => policy.iter().any(|p| arn_match(p, value)),
            Matcher::Numeric(comparison, policy) => {
                let value = Decimal::parse(value)?;
                policy.iter().any(|p| comparison.holds(value.cmp(p)))
            }
            Matcher::Bool(policy) => {
                let value = parse_bool(value)?;
                policy.contains(&value)
            }
            Matcher::IpAddress(policy) => {
                let address: IpAddr = value.parse().ok()?;
                policy.iter().any(|net| net.contains(&address))
            }
        })
    }
}

impl Comparison {
    /// Whether `request ⋚ policy` (given as their ordering) satisfies this comparison.
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Comparison::Equals => ordering.is_eq(),
            Comparison::LessThan => ordering.is_lt(),
            Comparison::LessThanEquals => ordering.is_le(),
            Comparison::GreaterThan => ordering.is_gt(),
            Comparison::GreaterThanEquals => ordering.is_ge(),
        }
    }
}

/// `true`/`false` in any case.
fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// An address (a network of one) or a CIDR block.
fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// A decimal number compared exactly: `[+-]digits[.digits]`, at least one digit. Neither
/// exponents nor `inf`/`NaN`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    /// Integer digits without leading zeros.
    integer: String,
    /// Fraction digits without trailing zeros.
    fraction: String,
}

impl Decimal {
    fn parse(text: &str) -> Option<Decimal> {
        let (negative, unsigned) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let (integer, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if integer.is_empty() && fraction.is_empty() || !digits(integer) || !digits(fraction) {
            return None;
        }
        let integer = integer.trim_start_matches('0').to_owned();
        let fraction = fraction.trim_end_matches('0').to_owned();
        let zero = integer.is_empty() && fraction.is_empty();
        Some(Decimal {
            negative: negative && !zero,
            integer,
            fraction,
        })
    }

    fn cmp_magnitude(&self, other: &Decimal) -> Ordering {
        self.integer
            .len()
            .cmp(&other.integer.len())
            .then_with(|| self.integer.cmp(&other.integer))
            .then_with(|| self.fraction.cmp(&other.fraction))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Decimal) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_magnitude(other),
            (true, true) => other.cmp_magnitude(self),
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn condition(json: &str) -> Condition {
        Condition::parse(&Json::parse(json).unwrap(), "statement #1", true).unwrap()
    }

    fn refusal(json: &str) -> PolicyError {
        Condition::parse(&Json::parse(json).unwrap(), "statement #1", true).unwrap_err()
    }

    fn request() -> RequestContext {
        RequestContext::new("ec2:RunInstances")
    }

    fn tokens(value: Option<&str>) -> RequestContext {
        match value {
            Some(v) => request().with_value("ec2:MetadataHttpTokens", v),
            None => request(),
        }
    }

    fn tags(keys: &[&str]) -> RequestContext {
        request().with_values("aws:TagKeys", keys.iter().copied())
    }

    #[test]
    fn a_missing_key_fails_a_positive_operator_and_passes_a_negated_one() {
        assert!(
            !condition(r#"{"StringEquals": {"ec2:MetadataHttpTokens": "required"}}"#)
                .holds(&tokens(None))
        );
        assert!(
            condition(r#"{"StringNotEquals": {"ec2:MetadataHttpTokens": "required"}}"#)
                .holds(&tokens(None))
        );
        assert!(condition(r#"{"StringNotLike": {"aws:PrincipalArn": "arn:*"}}"#).holds(&request()));
        assert!(
            condition(r#"{"NumericNotEquals": {"ec2:MetadataHttpPutResponseHopLimit": 1}}"#)
                .holds(&request())
        );
        assert!(!condition(
            r#"{"NumericGreaterThan": {"ec2:MetadataHttpPutResponseHopLimit": 1}}"#
        )
        .holds(&request()));
    }

    #[test]
    fn if_exists_passes_a_missing_key_and_checks_a_present_one() {
        let c = condition(r#"{"StringEqualsIfExists": {"ec2:MetadataHttpTokens": "required"}}"#);
        assert!(c.holds(&tokens(None)));
        assert!(c.holds(&tokens(Some("required"))));
        assert!(!c.holds(&tokens(Some("optional"))));
    }

    #[test]
    fn several_values_for_a_key_are_ored_and_negated_ones_are_nored() {
        let c = condition(r#"{"StringEquals": {"ec2:InstanceType": ["t3.micro", "t3.small"]}}"#);
        let with = |t: &str| request().with_value("ec2:InstanceType", t);
        assert!(c.holds(&with("t3.small")));
        assert!(!c.holds(&with("m5.large")));
        let c = condition(r#"{"StringNotEquals": {"ec2:InstanceType": ["t3.micro", "t3.small"]}}"#);
        assert!(!c.holds(&with("t3.small")));
        assert!(c.holds(&with("m5.large")));
    }

    #[test]
    fn several_keys_and_several_operators_are_anded() {
        let c = condition(
            r#"{"StringEquals": {"ec2:MetadataHttpTokens": "required", "ec2:MetadataHttpEndpoint": "enabled"},
                "NumericLessThanEquals": {"ec2:MetadataHttpPutResponseHopLimit": "2"}}"#,
        );
        let full = request()
            .with_value("ec2:MetadataHttpTokens", "required")
            .with_value("ec2:MetadataHttpEndpoint", "enabled")
            .with_value("ec2:MetadataHttpPutResponseHopLimit", "2");
        assert!(c.holds(&full));
        let hop_3 = request()
            .with_value("ec2:MetadataHttpTokens", "required")
            .with_value("ec2:MetadataHttpEndpoint", "enabled")
            .with_value("ec2:MetadataHttpPutResponseHopLimit", "3");
        assert!(!c.holds(&hop_3));
        let disabled = request()
            .with_value("ec2:MetadataHttpTokens", "required")
            .with_value("ec2:MetadataHttpEndpoint", "disabled")
            .with_value("ec2:MetadataHttpPutResponseHopLimit", "1");
        assert!(!c.holds(&disabled));
    }

    #[test]
    fn condition_keys_match_whatever_their_case() {
        let c = condition(r#"{"StringEquals": {"EC2:METADATAHTTPTOKENS": "required"}}"#);
        assert!(c.holds(&tokens(Some("required"))));
    }

    #[test]
    fn string_operators_compare_case_as_documented() {
        let name = |v: &str| request().with_value("aws:RequestTag/Name", v);
        assert!(
            !condition(r#"{"StringEquals": {"aws:RequestTag/Name": "Web"}}"#).holds(&name("web"))
        );
        assert!(
            condition(r#"{"StringEqualsIgnoreCase": {"aws:RequestTag/Name": "Web"}}"#)
                .holds(&name("wEB"))
        );
        assert!(
            !condition(r#"{"StringNotEqualsIgnoreCase": {"aws:RequestTag/Name": "Web"}}"#)
                .holds(&name("wEB"))
        );
        assert!(
            condition(r#"{"StringLike": {"aws:RequestTag/Name": "web-*"}}"#).holds(&name("web-1"))
        );
        assert!(
            !condition(r#"{"StringLike": {"aws:RequestTag/Name": "web-*"}}"#).holds(&name("Web-1"))
        );
        // StringEquals has no wildcards.
        assert!(
            !condition(r#"{"StringEquals": {"aws:RequestTag/Name": "web-*"}}"#)
                .holds(&name("web-1"))
        );
    }

    #[test]
    fn numeric_operators_compare_numbers_and_refuse_to_read_anything_else() {
        let hop = |v: &str| request().with_value("ec2:MetadataHttpPutResponseHopLimit", v);
        let gt =
            condition(r#"{"NumericGreaterThan": {"ec2:MetadataHttpPutResponseHopLimit": "2"}}"#);
        assert!(gt.holds(&hop("3")));
        assert!(gt.holds(&hop("10")));
        assert!(!gt.holds(&hop("2")));
        assert!(!gt.holds(&hop("02.0")));
        assert!(!gt.holds(&hop("-5")));
        assert!(!gt.holds(&hop("three")));
        let ne = condition(r#"{"NumericNotEquals": {"ec2:MetadataHttpPutResponseHopLimit": 2}}"#);
        assert!(ne.holds(&hop("1")));
        assert!(!ne.holds(&hop("2.00")));
        assert!(!ne.holds(&hop("three")));
        let lt = condition(r#"{"NumericLessThan": {"ec2:RoleDelivery": "2.0"}}"#);
        let delivery = |v: &str| request().with_value("ec2:RoleDelivery", v);
        assert!(lt.holds(&delivery("1.0")));
        assert!(!lt.holds(&delivery("2")));
    }

    #[test]
    fn bool_reads_true_and_false_in_any_case() {
        let c = condition(r#"{"Bool": {"aws:SecureTransport": false}}"#);
        let secure = |v: &str| request().with_value("aws:SecureTransport", v);
        assert!(c.holds(&secure("false")));
        assert!(c.holds(&secure("FALSE")));
        assert!(!c.holds(&secure("true")));
        assert!(!c.holds(&secure("maybe")));
        assert!(!c.holds(&request()));
    }

    #[test]
    fn null_tests_whether_a_key_is_present() {
        let absent = condition(r#"{"Null": {"aws:RequestTag/Name": "true"}}"#);
        let present = condition(r#"{"Null": {"aws:RequestTag/Name": false}}"#);
        let named = request().with_request_tag("Name", "web");
        assert!(absent.holds(&request()));
        assert!(!absent.holds(&named));
        assert!(!present.holds(&request()));
        assert!(present.holds(&named));
        // An empty tag value is still a value.
        assert!(present.holds(&request().with_value("aws:RequestTag/Name", "")));
    }

    #[test]
    fn arn_operators_match_component_by_component() {
        let c = condition(
            r#"{"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/ec2-imds-admins"}}"#,
        );
        let principal = |v: &str| request().with_value("aws:PrincipalArn", v);
        assert!(c.holds(&principal("arn:aws:iam::123456789012:role/ec2-imds-admins")));
        assert!(!c.holds(&principal("arn:aws:iam::123456789012:role/other")));
        let not = condition(
            r#"{"ArnNotEquals": {"aws:PrincipalArn": "arn:aws:iam::*:role/ec2-imds-admins"}}"#,
        );
        assert!(not.holds(&principal("arn:aws:iam::123456789012:role/other")));
        assert!(not.holds(&request()));
    }

    #[test]
    fn ip_address_operators_match_addresses_in_blocks() {
        let c = condition(
            r#"{"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]}}"#,
        );
        let from = |v: &str| request().with_value("aws:SourceIp", v);
        assert!(c.holds(&from("10.1.2.3")));
        assert!(c.holds(&from("2001:db8::1")));
        assert!(c.holds(&from("192.0.2.7")));
        assert!(!c.holds(&from("192.0.2.8")));
        assert!(!c.holds(&from("not an address")));
        let not = condition(r#"{"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}"#);
        assert!(not.holds(&from("192.0.2.8")));
        assert!(!not.holds(&from("10.0.0.1")));
    }

    #[test]
    fn for_all_values_holds_for_a_missing_key_and_for_any_value_does_not() {
        let all = condition(
            r#"{"ForAllValues:StringEquals": {"aws:TagKeys": ["environment", "cost-center"]}}"#,
        );
        let any = condition(
            r#"{"ForAnyValue:StringEquals": {"aws:TagKeys": ["environment", "webserver"]}}"#,
        );
        assert!(all.holds(&request()));
        assert!(!any.holds(&request()));
        assert!(all.holds(&tags(&["environment"])));
        assert!(!all.holds(&tags(&["environment", "owner"])));
        assert!(any.holds(&tags(&["environment", "owner"])));
        assert!(!any.holds(&tags(&["owner"])));
        // IfExists changes nothing for a set operator: the set qualifier decides for absence.
        let any_if_exists =
            condition(r#"{"ForAnyValue:StringEqualsIfExists": {"aws:TagKeys": "team"}}"#);
        assert!(!any_if_exists.holds(&request()));
    }

    #[test]
    fn for_all_values_with_a_negated_operator_follows_the_iam_example_table() {
        // IAM User Guide, "Multivalued context keys examples", ForAllValues:StringNotLike.
        let c = condition(r#"{"ForAllValues:StringNotLike": {"aws:TagKeys": "key1*"}}"#);
        assert!(!c.holds(&tags(&["key1:legal"])));
        assert!(!c.holds(&tags(&["key1:hr", "key1:personnel"])));
        assert!(c.holds(&tags(&["key2:audit"])));
        assert!(c.holds(&request()));
    }

    #[test]
    fn unknown_and_unsupported_operators_are_refused_by_name() {
        assert!(matches!(
            refusal(r#"{"StringEqual": {"a:b": "c"}}"#),
            PolicyError::UnknownOperator { operator, .. } if operator == "StringEqual"
        ));
        assert!(matches!(
            refusal(r#"{"ForAllValues:Null": {"a:b": "true"}}"#),
            PolicyError::UnknownOperator { .. }
        ));
        assert!(matches!(
            refusal(r#"{"NullIfExists": {"a:b": "true"}}"#),
            PolicyError::UnknownOperator { .. }
        ));
        assert!(matches!(
            refusal(r#"{"DateGreaterThan": {"aws:CurrentTime": "2026-01-01T00:00:00Z"}}"#),
            PolicyError::UnsupportedOperator { operator, .. } if operator == "DateGreaterThan"
        ));
    }

    #[test]
    fn values_an_operator_cannot_read_are_refused_with_the_key() {
        let error =
            refusal(r#"{"NumericGreaterThan": {"ec2:MetadataHttpPutResponseHopLimit": "two"}}"#);
        assert!(matches!(
            &error,
            PolicyError::InvalidConditionValue { key, value, .. }
                if key == "ec2:MetadataHttpPutResponseHopLimit" && value == "two"
        ));
        assert!(error.to_string().contains("statement #1"), "{error}");
        assert!(matches!(
            refusal(r#"{"Bool": {"aws:SecureTransport": "yes"}}"#),
            PolicyError::InvalidConditionValue { .. }
        ));
        assert!(matches!(
            refusal(r#"{"Null": {"aws:TagKeys": 1}}"#),
            PolicyError::InvalidConditionValue { .. }
        ));
        assert!(matches!(
            refusal(r#"{"IpAddress": {"aws:SourceIp": "10.0.0.0/33"}}"#),
            PolicyError::InvalidConditionValue { .. }
        ));
        assert!(matches!(
            refusal(r#"{"StringEquals": {"a:b": {"c": "d"}}}"#),
            PolicyError::WrongType { .. }
        ));
        assert!(matches!(
            refusal(r#"{"StringEquals": {"a:b": [null]}}"#),
            PolicyError::WrongType { .. }
        ));
        assert!(matches!(
            refusal(r#"["StringEquals"]"#),
            PolicyError::WrongType { .. }
        ));
        assert!(matches!(
            refusal(r#"{"StringEquals": "a:b"}"#),
            PolicyError::WrongType { .. }
        ));
    }

    #[test]
    fn policy_variables_are_refused_rather_than_matched_literally() {
        assert!(matches!(
            refusal(r#"{"StringEquals": {"aws:ResourceTag/owner": "${aws:username}"}}"#),
            PolicyError::PolicyVariable { .. }
        ));
        // Before version 2012-10-17 `${` is plain text.
        let old = Condition::parse(
            &Json::parse(r#"{"StringEquals": {"a:b": "${x}"}}"#).unwrap(),
            "statement #1",
            false,
        )
        .unwrap();
        assert!(old.holds(&request().with_value("a:b", "${x}")));
    }

    #[test]
    fn decimals_compare_exactly() {
        let d = |s: &str| Decimal::parse(s).unwrap();
        assert_eq!(d("2"), d("2.0"));
        assert_eq!(d("-0"), d("0.000"));
        assert_eq!(d("007"), d("+7"));
        assert!(d("2.05") < d("2.5"));
        assert!(d("-3") < d("-2.5"));
        assert!(d("10") > d("9.999"));
        assert!(d("123456789012345678901234567890") > d("123456789012345678901234567889"));
        for bad in [
            "", "-", ".", "1e3", "inf", "NaN", "1.2.3", " 1", "0x10", "--1",
        ] {
            assert_eq!(Decimal::parse(bad), None, "{bad:?}");
        }
        assert_eq!(d(".5"), d("0.5"));
        assert_eq!(d("5."), d("5"));
    }

    proptest! {
        #[test]
        fn a_negated_string_operator_holds_exactly_when_the_value_is_not_listed_or_is_missing(
            value in proptest::option::of(prop_oneof![
                Just("required".to_owned()),
                Just("optional".to_owned()),
                "[a-zA-Z]{0,9}",
            ]),
        ) {
            let c = condition(r#"{"StringNotEquals": {"ec2:MetadataHttpTokens": "required"}}"#);
            let expected = value.as_deref() != Some("required");
            prop_assert_eq!(c.holds(&tokens(value.as_deref())), expected);
        }

        #[test]
        fn if_exists_is_the_base_operator_when_present_and_true_when_absent(
            operator in prop::sample::select(vec![
                "StringEquals", "StringNotEquals", "StringLike", "StringNotLike",
                "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase",
                "NumericEquals", "NumericNotEquals", "NumericLessThan", "NumericGreaterThanEquals",
                "ArnLike", "ArnNotEquals", "Bool",
            ]),
            policy_value in prop_oneof![Just("1".to_owned()), Just("true".to_owned()), Just("a*".to_owned()), "[a-c0-9]{1,3}"],
            request_value in proptest::option::of(prop_oneof![Just("1".to_owned()), Just("TRUE".to_owned()), "[a-c0-9.]{0,3}"]),
        ) {
            let parse = |op: &str| Condition::parse(
                &Json::Object(vec![(op.to_owned(), Json::Object(vec![("k:k".to_owned(), Json::String(policy_value.clone()))]))]),
                "statement #1",
                true,
            );
            let with_suffix = format!("{operator}IfExists");
            let (Ok(base), Ok(if_exists)) = (parse(operator), parse(&with_suffix)) else {
                // Only a value the operator cannot read (e.g. a word for Numeric) fails, both ways.
                let both_refused = parse(operator).is_err() && parse(&with_suffix).is_err();
                prop_assert!(both_refused);
                return Ok(());
            };
            let context = match &request_value {
                Some(v) => request().with_value("k:k", v.clone()),
                None => request(),
            };
            match request_value {
                Some(_) => prop_assert_eq!(if_exists.holds(&context), base.holds(&context)),
                None => prop_assert!(if_exists.holds(&context)),
            }
        }

        #[test]
        fn for_all_values_string_equals_holds_iff_every_tag_key_is_in_the_set(
            keys in proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c"), Just("A")], 0..5),
        ) {
            let c = condition(r#"{"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}}"#);
            let expected = keys.iter().all(|k| *k == "a" || *k == "b");
            prop_assert_eq!(c.holds(&tags(&keys)), expected);
        }

        #[test]
        fn for_any_value_string_equals_holds_iff_some_tag_key_is_in_the_set(
            keys in proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 0..5),
        ) {
            let c = condition(r#"{"ForAnyValue:StringEquals": {"aws:TagKeys": ["a", "b"]}}"#);
            let expected = keys.iter().any(|k| *k == "a" || *k == "b");
            prop_assert_eq!(c.holds(&tags(&keys)), expected);
        }

        #[test]
        fn a_present_single_value_satisfies_exactly_one_of_an_operator_and_its_negation(
            pair in prop::sample::select(vec![
                ("StringEquals", "StringNotEquals"),
                ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"),
                ("StringLike", "StringNotLike"),
                ("NumericEquals", "NumericNotEquals"),
                ("ArnLike", "ArnNotLike"),
                ("ArnEquals", "ArnNotEquals"),
            ]),
            policy_values in proptest::collection::vec("[0-2]{1,2}|[ab*?]{1,3}", 0..3),
            value in "[0-2]{1,2}|[abAB]{0,3}",
        ) {
            let build = |op: &str| Condition::parse(
                &Json::Object(vec![(op.to_owned(), Json::Object(vec![(
                    "k:k".to_owned(),
                    Json::Array(policy_values.iter().cloned().map(Json::String).collect()),
                )]))]),
                "statement #1",
                true,
            );
            let (Ok(positive), Ok(negative)) = (build(pair.0), build(pair.1)) else {
                return Ok(());
            };
            let context = request().with_value("k:k", value.clone());
            let readable = !pair.0.starts_with("Numeric") || Decimal::parse(&value).is_some();
            if readable {
                prop_assert_ne!(positive.holds(&context), negative.holds(&context));
            } else {
                prop_assert!(!positive.holds(&context) && !negative.holds(&context));
            }
        }

        #[test]
        fn numeric_comparisons_agree_with_integer_comparisons(a in -1000i64..1000, b in -1000i64..1000) {
            let (da, db) = (Decimal::parse(&a.to_string()).unwrap(), Decimal::parse(&b.to_string()).unwrap());
            prop_assert_eq!(da.cmp(&db), a.cmp(&b));
            let with_fraction = Decimal::parse(&format!("{a}.50")).unwrap();
            let expected = if a < 0 { Ordering::Less } else { Ordering::Greater };
            prop_assert_eq!(with_fraction.cmp(&Decimal::parse(&a.to_string()).unwrap()), expected);
        }
    }
}

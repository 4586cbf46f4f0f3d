//! The evaluator against a reference model of IAM's documented semantics, over random policy
//! sets and random requests: an explicit Deny on any context wins; otherwise every policy with
//! Allow statements must allow every context; otherwise allowed. Actions match ignoring case
//! and resources one ARN component at a time, both with `*` and `?`; `NotAction` and
//! `NotResource` cover what their patterns do not. The model is written from the IAM User
//! Guide, sharing no code with the evaluator (its wildcards are regular expressions).

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{key, Decision, Policy, PolicySet, Request, RequestContext};

/// A generated statement, kept beside its JSON so the model can read it.
#[derive(Debug, Clone)]
struct Statement {
    deny: bool,
    not_action: bool,
    actions: Vec<&'static str>,
    not_resource: bool,
    resources: Vec<String>,
    condition: Option<Test>,
}

/// The conditions generated: one operator on one key.
#[derive(Debug, Clone)]
enum Test {
    TokensEqual(&'static str),
    TokensNotEqual(&'static str),
    TagAbsent(bool),
    AnyTagKey(Vec<&'static str>),
    AllTagKeys(Vec<&'static str>),
    RegionLike(&'static str),
}

/// A generated request context, kept beside the evaluator's.
#[derive(Debug, Clone)]
struct Context {
    action: &'static str,
    /// The ARN, `None` for an action without resources.
    resource: Option<String>,
    tokens: Option<&'static str>,
    tags: Vec<&'static str>,
    region: Option<&'static str>,
}

const TAG: &str = "env";

fn glob(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let mut re = String::from(if ignore_case { "(?is)^" } else { "(?s)^" });
    for c in pattern.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex_lite::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex_lite::Regex::new(&re)
        .expect("an escaped pattern is a valid expression")
        .is_match(text)
}

/// IAM: `*` is every resource; otherwise each of an ARN's six components matches its own.
fn resource_matches(pattern: &str, resource: Option<&str>) -> bool {
    if pattern == "*" {
        return true;
    }
    let Some(arn) = resource else {
        return false;
    };
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    p.len() == 6 && a.len() == 6 && p.iter().zip(&a).all(|(p, a)| glob(p, a, false))
}

impl Test {
    fn holds(&self, c: &Context) -> bool {
        match self {
            Test::TokensEqual(v) => c.tokens == Some(*v),
            Test::TokensNotEqual(v) => c.tokens != Some(*v),
            Test::TagAbsent(absent) => c.tags.contains(&TAG) != *absent,
            Test::AnyTagKey(keys) => c.tags.iter().any(|t| keys.contains(t)),
            Test::AllTagKeys(keys) => c.tags.iter().all(|t| keys.contains(t)),
            Test::RegionLike(p) => c.region.is_some_and(|r| glob(p, r, false)),
        }
    }

    fn json(&self) -> Value {
        match self {
            Test::TokensEqual(v) => json!({"StringEquals": {"ec2:MetadataHttpTokens": v}}),
            Test::TokensNotEqual(v) => json!({"StringNotEquals": {"ec2:MetadataHttpTokens": v}}),
            Test::TagAbsent(a) => json!({"Null": {"aws:RequestTag/env": a.to_string()}}),
            Test::AnyTagKey(k) => json!({"ForAnyValue:StringEquals": {"aws:TagKeys": k}}),
            Test::AllTagKeys(k) => json!({"ForAllValues:StringEquals": {"aws:TagKeys": k}}),
            Test::RegionLike(p) => json!({"StringLike": {"ec2:Region": p}}),
        }
    }
}

impl Statement {
    fn applies(&self, c: &Context) -> bool {
        let action = self.actions.iter().any(|p| glob(p, c.action, true)) != self.not_action;
        let resource = self
            .resources
            .iter()
            .any(|p| resource_matches(p, c.resource.as_deref()))
            != self.not_resource;
        action && resource && self.condition.as_ref().is_none_or(|t| t.holds(c))
    }

    fn json(&self) -> Value {
        let mut s = json!({"Effect": if self.deny { "Deny" } else { "Allow" }});
        let name = |not: bool, element: &str| format!("{}{element}", if not { "Not" } else { "" });
        s[name(self.not_action, "Action")] = json!(self.actions);
        s[name(self.not_resource, "Resource")] = json!(self.resources);
        if let Some(test) = &self.condition {
            s["Condition"] = test.json();
        }
        s
    }
}

impl Context {
    fn evaluator(&self) -> RequestContext {
        let mut context = RequestContext::new(self.action);
        if let Some(arn) = &self.resource {
            context = context.with_resource(arn.clone());
        }
        if let Some(tokens) = self.tokens {
            context = context.with_value(key::METADATA_HTTP_TOKENS, tokens);
        }
        if let Some(region) = self.region {
            context = context.with_value(key::REGION, region);
        }
        for tag in &self.tags {
            context = context.with_request_tag(tag, "x");
        }
        context
    }
}

/// What the model decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Allowed,
    ExplicitDeny,
    NotAllowed,
}

fn model(policies: &[Vec<Statement>], contexts: &[Context]) -> Outcome {
    let any_deny = contexts
        .iter()
        .any(|c| policies.iter().flatten().any(|s| s.deny && s.applies(c)));
    if any_deny {
        return Outcome::ExplicitDeny;
    }
    let all_allowed = contexts.iter().all(|c| {
        policies.iter().all(|policy| {
            let allow_list = policy.iter().any(|s| !s.deny);
            !allow_list || policy.iter().any(|s| !s.deny && s.applies(c))
        })
    });
    if all_allowed {
        Outcome::Allowed
    } else {
        Outcome::NotAllowed
    }
}

fn statement() -> impl Strategy<Value = Statement> {
    let action = prop::sample::select(vec![
        "*",
        "ec2:*",
        "ec2:RunInstances",
        "EC2:runinstances",
        "ec2:Run*",
        "ec2:?unInstances",
        "ec2:CreateTags",
        "ec2:Modify*",
        "s3:*",
    ]);
    let region = prop::sample::select(vec!["us-east-1", "eu-west-1", "*", "us-*", "us-east-?", ""]);
    let account = prop::sample::select(vec!["111122223333", "444455556666", "*", "", "1111*"]);
    let kind = prop::sample::select(vec![
        "instance/*",
        "instance/i-1",
        "volume/*",
        "image/*",
        "*",
        "*/*",
        "subnet/subnet-1",
        "security-group/sg-?",
    ]);
    let resource = prop_oneof![
        1 => Just("*".to_owned()),
        6 => (prop::sample::select(vec!["aws", "*"]), region, account, kind)
            .prop_map(|(partition, region, account, kind)| {
                format!("arn:{partition}:ec2:{region}:{account}:{kind}")
            }),
    ];
    let keys = prop::sample::subsequence(vec!["env", "team", "owner"], 1..=2);
    let test = prop_oneof![
        prop::sample::select(vec!["required", "optional"]).prop_map(Test::TokensEqual),
        prop::sample::select(vec!["required", "optional"]).prop_map(Test::TokensNotEqual),
        any::<bool>().prop_map(Test::TagAbsent),
        keys.clone().prop_map(Test::AnyTagKey),
        keys.prop_map(Test::AllTagKeys),
        prop::sample::select(vec!["us-east-1", "us-*", "eu-*"]).prop_map(Test::RegionLike),
    ];
    (
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::collection::vec(action, 1..3),
        prop::bool::weighted(0.2),
        prop::collection::vec(resource, 1..3),
        prop::option::weighted(0.5, test),
    )
        .prop_map(
            |(deny, not_action, actions, not_resource, resources, condition)| Statement {
                deny,
                not_action,
                actions,
                not_resource,
                resources,
                condition,
            },
        )
}

fn context() -> impl Strategy<Value = Context> {
    let action = prop::sample::select(vec![
        "ec2:RunInstances",
        "ec2:CreateTags",
        "ec2:ModifyInstanceMetadataOptions",
        "s3:GetObject",
    ]);
    let region = prop::sample::select(vec!["us-east-1", "eu-west-1", "us-east-2"]);
    let account = prop::sample::select(vec!["111122223333", "444455556666"]);
    let kind = prop::sample::select(vec![
        "instance/*",
        "instance/i-1",
        "volume/*",
        "image/ami-1",
        "subnet/subnet-1",
        "security-group/sg-1",
        "key-pair/ops",
    ]);
    (
        action,
        prop::option::weighted(0.9, (region, account, kind)),
        prop::option::of(prop::sample::select(vec!["required", "optional"])),
        prop::sample::subsequence(vec!["env", "team", "owner"], 0..=3),
        any::<bool>(),
    )
        .prop_map(|(action, resource, tokens, tags, with_region)| {
            let region = resource.map(|(r, _, _)| r).filter(|_| with_region);
            let resource = resource.map(|(region, account, kind)| {
                // Images name no account, as in EC2.
                let account = if kind.starts_with("image/") {
                    ""
                } else {
                    account
                };
                format!("arn:aws:ec2:{region}:{account}:{kind}")
            });
            Context {
                action,
                resource,
                tokens,
                tags,
                region,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_evaluator_decides_as_the_reference_model_of_iam(
        policies in prop::collection::vec(prop::collection::vec(statement(), 1..4), 1..4),
        contexts in prop::collection::vec(context(), 1..6),
    ) {
        let mut set = PolicySet::default();
        for (n, statements) in policies.iter().enumerate() {
            let document = json!({
                "Version": "2012-10-17",
                "Statement": statements.iter().map(Statement::json).collect::<Vec<_>>(),
            });
            let policy = Policy::parse(&document.to_string());
            prop_assert!(policy.is_ok(), "{document}: {policy:?}");
            if let Ok(policy) = policy {
                set = set.with(format!("p{n}"), policy);
            }
        }
        let mut request = Request::new(contexts[0].evaluator());
        for c in &contexts[1..] {
            request = request.and(c.evaluator());
        }
        let decision = set.evaluate(&request);
        let expected = model(&policies, &contexts);
        match &decision {
            Decision::Allowed => prop_assert_eq!(expected, Outcome::Allowed),
            Decision::ExplicitDeny { policy, action, resource, .. } => {
                prop_assert_eq!(expected, Outcome::ExplicitDeny);
                // The deny named is one the model finds: that policy, on that context.
                let index: usize = policy[1..].parse().expect("generated names are pN");
                prop_assert!(contexts.iter().any(|c| {
                    c.action == action
                        && c.resource.as_deref().unwrap_or("*") == resource
                        && policies[index].iter().any(|s| s.deny && s.applies(c))
                }), "{decision}");
            }
            Decision::NotAllowed { policy, action, resource } => {
                prop_assert_eq!(expected, Outcome::NotAllowed);
                let index: usize = policy[1..].parse().expect("generated names are pN");
                prop_assert!(contexts.iter().any(|c| {
                    c.action == action
                        && c.resource.as_deref().unwrap_or("*") == resource
                        && !policies[index].iter().any(|s| !s.deny && s.applies(c))
                }), "{decision}");
            }
        }
    }
}

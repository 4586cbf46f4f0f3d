//! Wildcard matching as IAM does it: `*` matches any run of characters (also none), `?` exactly
//! one, everything else itself. Actions match ignoring case; ARNs match case-sensitively, one
//! colon-separated component at a time.

/// Whether `text` matches `pattern` (`*` and `?` wildcards, case-sensitive).
///
/// Greedy with one backtrack point, so it runs in O(pattern × text) whatever the input: no
/// pattern can make it explode.
pub(crate) fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // The last `*` seen and the text position it currently stands for up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    star = Some((star_p, star_t + 1));
                    p = star_p + 1;
                    t = star_t + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Whether `text` matches `pattern` ignoring case (actions: `ec2:runinstances` is
/// `ec2:RunInstances`).
pub(crate) fn wildcard_match_ignore_case(pattern: &str, text: &str) -> bool {
    wildcard_match(&pattern.to_lowercase(), &text.to_lowercase())
}

/// Whether `arn` matches the ARN `pattern`: when both have the six components of an ARN
/// (`arn:partition:service:region:account:resource`), each component is matched on its own, so
/// a wildcard never reaches across a colon (the last component, the resource, may itself
/// contain colons). Otherwise (`*`, or a pattern that is not a full ARN) the whole text is
/// matched.
pub(crate) fn arn_match(pattern: &str, arn: &str) -> bool {
    let pattern_parts: Vec<&str> = pattern.splitn(6, ':').collect();
    let arn_parts: Vec<&str> = arn.splitn(6, ':').collect();
    if pattern_parts.len() == 6 && arn_parts.len() == 6 {
        pattern_parts
            .iter()
            .zip(&arn_parts)
            .all(|(p, a)| wildcard_match(p, a))
    } else {
        wildcard_match(pattern, arn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference: the pattern turned into an anchored regular expression.
    fn regex_match(pattern: &str, text: &str) -> bool {
        let mut re = String::from("(?s)^");
        for c in pattern.chars() {
            match c {
                '*' => re.push_str(".*"),
                '?' => re.push('.'),
                c => re.push_str(&regex_lite::escape(&c.to_string())),
            }
        }
        re.push('$');
        regex_lite::Regex::new(&re).unwrap().is_match(text)
    }

    #[test]
    fn stars_and_question_marks_match_as_iam_documents() {
        assert!(wildcard_match("ec2:*", "ec2:RunInstances"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("ec2:Describe*", "ec2:Describe"));
        assert!(wildcard_match("i-????", "i-12ab"));
        assert!(!wildcard_match("i-????", "i-12a"));
        assert!(!wildcard_match("ec2:Run*", "ec2:runInstances"));
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(!wildcard_match("a*b*c", "axxbyy"));
    }

    #[test]
    fn actions_match_whatever_their_case() {
        assert!(wildcard_match_ignore_case(
            "EC2:runinstances",
            "ec2:RunInstances"
        ));
        assert!(wildcard_match_ignore_case(
            "ec2:modify*",
            "ec2:ModifyInstanceMetadataOptions"
        ));
        assert!(!wildcard_match_ignore_case(
            "ec2:Modify",
            "ec2:ModifyInstanceMetadataOptions"
        ));
    }

    #[test]
    fn arn_wildcards_stay_inside_their_component() {
        let arn = "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc";
        assert!(arn_match("arn:aws:ec2:*:*:instance/*", arn));
        assert!(arn_match("*", arn));
        assert!(arn_match("arn:aws:ec2:*", arn));
        assert!(!arn_match("arn:aws:ec2:*:*:volume/*", arn));
        // A `*` in the region may not swallow the account.
        assert!(!arn_match("arn:aws:ec2:*:instance/*:*:*", arn));
        assert!(!arn_match(
            "arn:aws:ec2:*:*:instance/*",
            "arn:aws:ec2:us-east-1:1:volume/instance/x"
        ));
        assert!(arn_match(
            "arn:aws:logs:*:*:log-group:*",
            "arn:aws:logs:eu-west-1:1:log-group:a:log-stream:b"
        ));
        // ARNs are case-sensitive.
        assert!(!arn_match("arn:aws:ec2:*:*:Instance/*", arn));
        // No resource (an action without resource-level permissions) is `*`.
        assert!(!arn_match("arn:aws:ec2:*:*:instance/*", "*"));
    }

    proptest! {
        #[test]
        fn wildcard_matching_agrees_with_a_regular_expression(
            pattern in "[ab*?]{0,8}",
            text in "[ab]{0,10}",
        ) {
            prop_assert_eq!(wildcard_match(&pattern, &text), regex_match(&pattern, &text));
        }

        #[test]
        fn wildcard_matching_agrees_with_a_regular_expression_on_any_text(
            pattern in "\\PC{0,6}",
            text in "\\PC{0,12}",
        ) {
            prop_assert_eq!(wildcard_match(&pattern, &text), regex_match(&pattern, &text));
        }

        #[test]
        fn a_pattern_without_wildcards_matches_only_itself(text in "[a-z:/-]{0,12}", other in "[a-z:/-]{0,12}") {
            prop_assert!(wildcard_match(&text, &text));
            prop_assert_eq!(wildcard_match(&text, &other), text == other);
        }
    }
}

//! `MaxResults` and `NextToken` of the Describe actions that page: items in a fixed order of
//! their keys, a page of at most `MaxResults` of them, and a token naming the last key shown.

use base64::Engine;

use super::error::ControlError;
use super::query::QueryRequest;

/// The page a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Page {
    /// How many items at most (all without `MaxResults`).
    size: usize,
    /// Show only items whose key comes after this one.
    after: Option<String>,
}

impl Page {
    /// The page `MaxResults` (within `min..=max`, the action's bounds) and `NextToken` ask for.
    pub(super) fn of(query: &QueryRequest, min: usize, max: usize) -> Result<Page, ControlError> {
        let size = match query.get("MaxResults") {
            None => usize::MAX,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    ControlError::InvalidParameterValue(format!(
                        "Value ({text}) for parameter maxResults is invalid. Expecting a value between {min} and {max}."
                    ))
                })?,
        };
        let after = query
            .get("NextToken")
            .map(|token| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(token)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| {
                        ControlError::InvalidParameterValue(format!("Invalid NextToken: {token}"))
                    })
            })
            .transpose()?;
        Ok(Page { size, after })
    }

    /// The items of this page (`items` by key, in any order) and the token of the next page
    /// when more follow.
    pub(super) fn cut<T>(&self, mut items: Vec<(String, T)>) -> (Vec<T>, Option<String>) {
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let mut items: Vec<(String, T)> = items
            .into_iter()
            .filter(|(key, _)| self.after.as_ref().is_none_or(|after| key > after))
            .collect();
        let next = match items.len() > self.size {
            true => {
                items.truncate(self.size);
                items
                    .last()
                    .map(|(key, _)| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key))
            }
            false => None,
        };
        (items.into_iter().map(|(_, item)| item).collect(), next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_each_other_until_the_last() {
        let items = || (0..7).map(|n| (format!("k{n}"), n)).collect::<Vec<_>>();
        let first = Page::of(&QueryRequest::parse(b"MaxResults=5"), 5, 1000).unwrap();
        let (shown, next) = first.cut(items());
        assert_eq!(shown, [0, 1, 2, 3, 4]);
        let body = format!("MaxResults=5&NextToken={}", next.unwrap());
        let second = Page::of(&QueryRequest::parse(body.as_bytes()), 5, 1000).unwrap();
        assert_eq!(second.cut(items()), (vec![5, 6], None));
        let refused = Page::of(&QueryRequest::parse(b"MaxResults=4"), 5, 1000).unwrap_err();
        assert_eq!(refused.code(), "InvalidParameterValue");
        assert!(Page::of(&QueryRequest::parse(b"NextToken=%25%25"), 5, 1000).is_err());
    }
}

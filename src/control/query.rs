//! EC2 Query requests: a form-encoded body (or query string) of `Action`, `Version` and
//! parameters, with lists spelled `Name.1`, `Name.2`, ... and structures `Tag.1.Key`.

use super::error::ControlError;

/// One parsed Query request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryRequest {
    params: Vec<(String, String)>,
}

impl QueryRequest {
    /// Parses a form-encoded body (`Action=DescribeInstances&Version=2016-11-15&...`).
    pub fn parse(body: &[u8]) -> QueryRequest {
        QueryRequest {
            params: form_urlencoded::parse(body).into_owned().collect(),
        }
    }

    /// The single value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The value of `name`, or `MissingParameter`.
    pub fn require(&self, name: &str) -> Result<&str, ControlError> {
        self.get(name)
            .ok_or_else(|| ControlError::MissingParameter(name.to_owned()))
    }

    /// `Action`.
    pub fn action(&self) -> Result<&str, ControlError> {
        self.require("Action")
    }

    /// Refuses a parameter given twice: which value would count depends on an order a SigV4
    /// signature does not cover (it signs the parameters sorted).
    pub fn each_once(&self) -> Result<(), ControlError> {
        let mut seen = std::collections::HashSet::with_capacity(self.params.len());
        match self.params.iter().find(|(name, _)| !seen.insert(name)) {
            Some((name, _)) => Err(ControlError::InvalidParameterCombination(format!(
                "The parameter {name} is given more than once"
            ))),
            None => Ok(()),
        }
    }

    /// A list parameter: the values of `prefix.1`, `prefix.2`, ... in index order.
    pub fn list(&self, prefix: &str) -> Vec<&str> {
        let mut items: Vec<(u32, &str)> = self
            .params
            .iter()
            .filter_map(|(key, value)| {
                let index = key.strip_prefix(prefix)?.strip_prefix('.')?;
                Some((index.parse().ok()?, value.as_str()))
            })
            .collect();
        items.sort_by_key(|(index, _)| *index);
        items.into_iter().map(|(_, value)| value).collect()
    }

    /// The indexes `N` present as `prefix.N.<anything>`, ascending.
    pub fn members(&self, prefix: &str) -> Vec<u32> {
        let mut indexes: Vec<u32> = self
            .params
            .iter()
            .filter_map(|(key, _)| {
                let rest = key.strip_prefix(prefix)?.strip_prefix('.')?;
                rest.split_once('.')?.0.parse().ok()
            })
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        indexes
    }

    /// `Filter.N.Name` with its `Filter.N.Value.M` values.
    pub fn filters(&self) -> Result<Vec<(String, Vec<String>)>, ControlError> {
        self.members("Filter")
            .into_iter()
            .map(|n| {
                let name = self.require(&format!("Filter.{n}.Name"))?.to_owned();
                let values = self
                    .list(&format!("Filter.{n}.Value"))
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                Ok((name, values))
            })
            .collect()
    }

    /// Every parameter but `name`, in order.
    pub fn without(&self, name: &str) -> Vec<(String, String)> {
        self.params
            .iter()
            .filter(|(key, _)| key != name)
            .cloned()
            .collect()
    }

    /// `true` when `DryRun=true`.
    pub fn dry_run(&self) -> bool {
        self.get("DryRun")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_filters_come_out_in_index_order() {
        let request = QueryRequest::parse(
            b"Action=DescribeInstances&InstanceId.2=i-b&InstanceId.1=i-a\
              &Filter.2.Name=tag%3AName&Filter.2.Value.1=web&Filter.1.Name=instance-id\
              &Filter.1.Value.2=i-2&Filter.1.Value.1=i-1",
        );
        assert_eq!(request.action().unwrap(), "DescribeInstances");
        assert_eq!(request.list("InstanceId"), ["i-a", "i-b"]);
        assert_eq!(
            request.filters().unwrap(),
            [
                (
                    "instance-id".to_owned(),
                    vec!["i-1".to_owned(), "i-2".to_owned()]
                ),
                ("tag:Name".to_owned(), vec!["web".to_owned()]),
            ]
        );
        assert!(!request.dry_run());
    }

    #[test]
    fn a_parameter_given_twice_is_refused_whatever_its_values() {
        for body in [
            &b"Action=ModifyInstanceMetadataOptions&HttpTokens=required&HttpTokens=optional"[..],
            b"Action=TerminateInstances&InstanceId.1=i-a&InstanceId.1=i-a",
            b"Action=DescribeInstances&Action=TerminateInstances",
        ] {
            let refused = QueryRequest::parse(body).each_once().unwrap_err();
            assert_eq!(refused.code(), "InvalidParameterCombination", "{refused}");
        }
        let once = QueryRequest::parse(b"Action=TerminateInstances&InstanceId.1=a&InstanceId.2=b");
        assert_eq!(once.each_once(), Ok(()));
    }

    #[test]
    fn a_missing_parameter_is_named() {
        let request = QueryRequest::parse(b"Version=2016-11-15");
        assert_eq!(
            request.action().unwrap_err(),
            ControlError::MissingParameter("Action".into())
        );
    }
}

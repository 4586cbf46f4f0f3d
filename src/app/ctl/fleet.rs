//! `imds ctl run|list|terminate|stop|start` and `--instance-id`: the fleet's instances, as
//! RunInstances, DescribeInstances and the lifecycle actions show them.

use std::fmt::Write as _;

use base64::Engine;

use super::{element, unescape, Client, CtlError};

/// The launch parameters of `imds ctl run`.
pub(super) struct Launch<'a> {
    /// MinCount and MaxCount.
    pub count: u32,
    /// `ImageId`.
    pub image_id: Option<&'a str>,
    /// `InstanceType`.
    pub instance_type: Option<&'a str>,
    /// `SubnetId`.
    pub subnet_id: Option<&'a str>,
    /// `PrivateIpAddress`.
    pub private_ip: Option<&'a str>,
    /// `KEY=VALUE` tags.
    pub tags: &'a [String],
    /// `MetadataOptions.HttpTokens`.
    pub http_tokens: Option<&'a str>,
    /// `MetadataOptions.HttpPutResponseHopLimit`.
    pub hop_limit: Option<u8>,
    /// `IamInstanceProfile.Name`.
    pub role: Option<&'a str>,
    /// The text, or `@FILE`.
    pub user_data: Option<&'a str>,
    /// `KeyName`.
    pub key_name: Option<&'a str>,
}

/// `imds ctl run`: RunInstances, one line per new instance.
pub(super) async fn run(client: &Client, launch: &Launch<'_>) -> Result<String, CtlError> {
    let count = launch.count.to_string();
    let mut params: Vec<(String, String)> = vec![
        ("Action".into(), "RunInstances".into()),
        ("MinCount".into(), count.clone()),
        ("MaxCount".into(), count),
    ];
    let optional = [
        ("ImageId", launch.image_id),
        ("InstanceType", launch.instance_type),
        ("SubnetId", launch.subnet_id),
        ("PrivateIpAddress", launch.private_ip),
        ("MetadataOptions.HttpTokens", launch.http_tokens),
        ("IamInstanceProfile.Name", launch.role),
        ("KeyName", launch.key_name),
    ];
    params.extend(
        optional
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
    );
    if let Some(hops) = launch.hop_limit {
        params.push((
            "MetadataOptions.HttpPutResponseHopLimit".into(),
            hops.to_string(),
        ));
    }
    if !launch.tags.is_empty() {
        params.push(("TagSpecification.1.ResourceType".into(), "instance".into()));
        for (n, (key, value)) in key_values(launch.tags)?.into_iter().enumerate() {
            params.push((format!("TagSpecification.1.Tag.{}.Key", n + 1), key));
            params.push((format!("TagSpecification.1.Tag.{}.Value", n + 1), value));
        }
    }
    if let Some(user_data) = launch.user_data {
        let bytes = match user_data.strip_prefix('@') {
            Some(file) => std::fs::read(file)
                .map_err(|e| CtlError::Usage(format!("--user-data @{file}: {e}")))?,
            None => user_data.as_bytes().to_vec(),
        };
        params.push((
            "UserData".into(),
            base64::engine::general_purpose::STANDARD.encode(bytes),
        ));
    }
    let xml = client.call(&params).await?;
    Ok(instances(&xml).iter().map(Instance::line).collect())
}

/// `imds ctl list`: DescribeInstances (every page), one line per instance.
pub(super) async fn list(client: &Client) -> Result<String, CtlError> {
    let mut out = String::new();
    let mut next: Option<String> = None;
    loop {
        let mut params = vec![("Action", "DescribeInstances".to_owned())];
        params.extend(next.take().map(|token| ("NextToken", token)));
        let xml = client.call(&params).await?;
        out.extend(instances(&xml).iter().map(Instance::line));
        match element(&xml, "nextToken").filter(|t| !t.is_empty()) {
            Some(token) => next = Some(unescape(token)),
            None => break,
        }
    }
    if out.is_empty() {
        out.push_str("no instances\n");
    }
    Ok(out)
}

/// `imds ctl terminate|stop|start`: `action` on `ids`, one `ID PREVIOUS -> CURRENT` line each.
pub(super) async fn lifecycle(
    client: &Client,
    action: &str,
    ids: &[String],
) -> Result<String, CtlError> {
    let mut params = vec![("Action".to_owned(), action.to_owned())];
    for (n, id) in ids.iter().enumerate() {
        params.push((format!("InstanceId.{}", n + 1), id.clone()));
    }
    let xml = client.call(&params).await?;
    let mut out = String::new();
    for item in xml.split("<item>").skip(1) {
        let state = |set: &str| {
            item.split_once(&format!("<{set}>"))
                .and_then(|(_, rest)| element(rest, "name"))
                .unwrap_or("-")
                .to_owned()
        };
        let _ = writeln!(
            out,
            "{} {} -> {}",
            element(item, "instanceId").unwrap_or("-"),
            state("previousState"),
            state("currentState")
        );
    }
    Ok(out)
}

/// The instance per-instance commands are about: `chosen` (--instance-id), else the only
/// instance the control API describes.
pub(super) async fn target(client: &Client, chosen: Option<&str>) -> Result<String, CtlError> {
    if let Some(id) = chosen {
        return Ok(id.to_owned());
    }
    let xml = client.call(&[("Action", "DescribeInstances")]).await?;
    let found = instances(&xml);
    match found.as_slice() {
        [] => Err(CtlError::Usage("the control API describes no instance".into())),
        [one] => Ok(one.id.clone()),
        many => Err(CtlError::Usage(format!(
            "imds serves {} instances: say which with --instance-id ID (or IMDS_INSTANCE_ID); `imds ctl list` shows them",
            many.len()
        ))),
    }
}

/// What `list` shows of one instance.
#[derive(Debug, PartialEq)]
struct Instance {
    id: String,
    state: String,
    private_ip: String,
    name: Option<String>,
    http_tokens: String,
}

impl Instance {
    /// `ID STATE PRIVATE_IP NAME HTTP_TOKENS`; a Name with spaces is quoted, none is `-`.
    fn line(&self) -> String {
        let name = match &self.name {
            None => "-".to_owned(),
            Some(name) if name.is_empty() || name.contains(char::is_whitespace) => {
                format!("{name:?}")
            }
            Some(name) => name.clone(),
        };
        format!(
            "{} {} {} {} {}\n",
            self.id, self.state, self.private_ip, name, self.http_tokens
        )
    }
}

/// The instances of a DescribeInstances or RunInstances answer, in order. Each instance's
/// elements lie between its `<instanceId>` (its first) and the next instance's.
fn instances(xml: &str) -> Vec<Instance> {
    xml.split("<instanceId>")
        .skip(1)
        .map(|part| {
            let id = part.split_once("</").map_or(part, |(id, _)| id).to_owned();
            let after = |open: &str, name: &str| {
                part.split_once(open)
                    .and_then(|(_, rest)| element(rest, name))
                    .map(unescape)
            };
            let tags = part
                .split_once("<tagSet>")
                .and_then(|(_, rest)| rest.split_once("</tagSet>"))
                .map_or("", |(set, _)| set);
            let name = tags
                .split("<item>")
                .skip(1)
                .find(|item| element(item, "key") == Some("Name"))
                .map(|item| element(item, "value").map(unescape).unwrap_or_default());
            Instance {
                id: unescape(&id),
                state: after("<instanceState>", "name").unwrap_or_else(|| "-".into()),
                private_ip: element(part, "privateIpAddress").map_or_else(|| "-".into(), unescape),
                name,
                http_tokens: after("<metadataOptions>", "httpTokens").unwrap_or_else(|| "-".into()),
            }
        })
        .collect()
}

/// `KEY=VALUE` pairs split.
pub(super) fn key_values(pairs: &[String]) -> Result<Vec<(String, String)>, CtlError> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| CtlError::Usage(format!("`{pair}` is not KEY=VALUE")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_instance_of_an_answer_is_one_line_with_its_name_and_tokens() {
        let xml = "<DescribeInstancesResponse><reservationSet><item><instancesSet><item>\
            <instanceId>i-1</instanceId><instanceState><code>16</code><name>running</name></instanceState>\
            <privateIpAddress>127.16.0.10</privateIpAddress><groupSet><item><groupId>sg-1</groupId></item></groupSet>\
            <tagSet><item><key>Team</key><value>blue</value></item><item><key>Name</key><value>web &amp; db</value></item></tagSet>\
            <metadataOptions><state>applied</state><httpTokens>required</httpTokens></metadataOptions>\
            </item></instancesSet></item><item><instancesSet><item>\
            <instanceId>i-2</instanceId><instanceState><code>80</code><name>stopped</name></instanceState>\
            <privateIpAddress>127.16.0.11</privateIpAddress><tagSet></tagSet>\
            <metadataOptions><state>applied</state><httpTokens>optional</httpTokens></metadataOptions>\
            </item></instancesSet></item></reservationSet></DescribeInstancesResponse>";
        let lines: String = instances(xml).iter().map(Instance::line).collect();
        assert_eq!(
            lines,
            "i-1 running 127.16.0.10 \"web & db\" required\ni-2 stopped 127.16.0.11 - optional\n"
        );
    }

    #[test]
    fn a_pair_without_an_equals_sign_is_refused() {
        assert!(key_values(&["Name".into()]).is_err());
        assert_eq!(
            key_values(&["Name=a=b".into()]).unwrap(),
            vec![("Name".into(), "a=b".into())]
        );
    }
}

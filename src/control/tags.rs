//! `CreateTags`, `DeleteTags` and `DescribeTags` on instances, VPCs, subnets, security
//! groups, key pairs and launch templates. An instance's tags show under
//! `meta-data/tags/instance/` at once when `InstanceMetadataTags` is enabled; then keys IMDS
//! cannot show are refused, as EC2 does. EC2's own tags (`aws:ec2launchtemplate:id`, ...) are
//! listed with the others but never shown in IMDS; users can neither create nor delete them
//! (`DeleteTags` without keys deletes only the user's), and they do not count toward the limit
//! of 50.

use super::error::ControlError;
use super::query::{QueryRequest, MAX_IDS};
use super::xml::Xml;
use super::{Change, ControlApi};

use super::paging::Page;
use super::vpc::{canonical_filter, glob};
use crate::fleet::instance::is_system_tag as is_system;
use crate::fleet::launch_templates::TemplateError;
use crate::fleet::lock_order::Unlocked;
use crate::fleet::network::Tags;

/// Longest tag key and value EC2 accepts.
const MAX_KEY: usize = 128;
const MAX_VALUE: usize = 256;
/// Most tags EC2 lets a resource have.
const MAX_TAGS: usize = 50;

/// The kinds of resource that carry tags, by their ids' prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Instance,
    /// A VPC, subnet, security group or key pair: kept in the network registry.
    Network(&'static str),
    LaunchTemplate,
}

/// The kind of resource `id` names, or EC2's `InvalidID`.
fn kind(id: &str) -> Result<Kind, ControlError> {
    match id.split_once('-').map(|(prefix, _)| prefix) {
        Some("i") => Ok(Kind::Instance),
        Some("vpc") => Ok(Kind::Network("vpc")),
        Some("subnet") => Ok(Kind::Network("subnet")),
        Some("sg") => Ok(Kind::Network("security-group")),
        Some("key") => Ok(Kind::Network("key-pair")),
        Some("lt") => Ok(Kind::LaunchTemplate),
        _ => Err(ControlError::InvalidId(id.to_owned())),
    }
}

/// The not-found error of a `kind` resource `id`.
fn not_found(kind: &str, id: &str) -> ControlError {
    use crate::fleet::network::NetworkError;
    ControlError::Network(match kind {
        "vpc" => NetworkError::VpcNotFound(id.to_owned()),
        "subnet" => NetworkError::SubnetNotFound(id.to_owned()),
        "security-group" => NetworkError::GroupNotFound(id.to_owned()),
        _ => NetworkError::KeyPairNotFound(id.to_owned()),
    })
}

/// `tags` after `CreateTags` (`create`) or `DeleteTags` of `given` on a resource `id`.
fn edited(
    id: &str,
    tags: &Tags,
    given: &[(String, Option<String>)],
    create: bool,
) -> Result<Tags, ControlError> {
    let mut after = tags.clone();
    // EC2's own tags (`aws:...`) do not count toward the limit, and only EC2 changes them.
    let users = |tags: &Tags| tags.keys().filter(|key| !is_system(key)).count();
    match create {
        true => {
            for (key, value) in given {
                check_tag(key, value.as_deref().unwrap_or(""))?;
                after.insert(key.clone(), value.clone().unwrap_or_default());
            }
            if users(&after) > MAX_TAGS && users(&after) > users(tags) {
                return Err(ControlError::TagLimitExceeded(format!(
                    "The maximum number of tags per resource is {MAX_TAGS}; {id} would have {}",
                    users(&after)
                )));
            }
        }
        false if given.is_empty() => after.retain(|key, _| is_system(key)),
        false => {
            for (key, value) in given {
                if is_system(key) {
                    return Err(reserved(key));
                }
                if value.as_ref().is_none_or(|v| after.get(key) == Some(v)) {
                    after.remove(key);
                }
            }
        }
    }
    Ok(after)
}

impl ControlApi {
    /// `CreateTags`: adds or overwrites tags.
    pub(super) async fn create_tags(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let tags = tag_params(query, true)?;
        self.change_tags(query, &tags, true, order).await?;
        Ok(done("CreateTagsResponse", request_id))
    }

    /// `DeleteTags`: removes tags; a tag given with a value goes only when the value matches.
    pub(super) async fn delete_tags(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let tags = tag_params(query, false)?;
        self.change_tags(query, &tags, false, order).await?;
        Ok(done("DeleteTagsResponse", request_id))
    }

    /// Applies a `CreateTags` or `DeleteTags` of `given` to every resource `ResourceId.N`
    /// names: each is checked to exist before any changes; instances one by one, the network
    /// objects in one stored change, the launch templates in another.
    async fn change_tags(
        &self,
        query: &QueryRequest,
        given: &[(String, Option<String>)],
        create: bool,
        order: &mut Unlocked,
    ) -> Result<(), ControlError> {
        let ids = query.list_at_most("ResourceId", MAX_IDS, "resource IDs")?;
        if ids.is_empty() {
            return Err(ControlError::MissingParameter("ResourceId".into()));
        }
        let mut instances = Vec::new();
        let mut network_ids = Vec::new();
        let mut template_ids = Vec::new();
        let network = self.inventory.network();
        let templates = self.account.templates();
        for id in ids {
            match kind(id)? {
                Kind::Instance => instances.push(self.slot(id)?),
                Kind::Network(kind) => {
                    let found = match kind {
                        "vpc" => network.vpc(id).is_ok(),
                        "subnet" => network.subnet(id).is_ok(),
                        "security-group" => network.security_group(id).is_ok(),
                        _ => network.key_pair_by_id(id).is_ok(),
                    };
                    if !found {
                        return Err(not_found(kind, id));
                    }
                    network_ids.push(id);
                }
                Kind::LaunchTemplate => {
                    templates.by_id(id)?;
                    template_ids.push(id);
                }
            }
        }
        for slot in instances {
            self.change(order, &slot, Change::Tags, |_, config| {
                config.tags = edited(slot.id().as_str(), &config.tags, given, create)?;
                dry_run(query)
            })
            .await?;
        }
        if !network_ids.is_empty() {
            self.change_network(order, |network| {
                for id in &network_ids {
                    let tags = network.tags_mut(id).ok_or_else(|| not_found("vpc", id))?;
                    *tags = edited(id, tags, given, create)?;
                }
                dry_run(query)
            })
            .await?;
        }
        if !template_ids.is_empty() {
            self.change_templates(order, |templates| {
                for id in &template_ids {
                    let tags = templates.tags_mut(id).ok_or_else(|| {
                        ControlError::from(TemplateError::IdNotFound((*id).to_owned()))
                    })?;
                    *tags = edited(id, tags, given, create)?;
                }
                dry_run(query)
            })
            .await?;
        }
        Ok(())
    }

    /// `DescribeTags` of every resource kind imds models, with filters `resource-id`,
    /// `resource-type`, `key`, `value` and `tag:KEY` (values may use `*` and `?`), and
    /// `MaxResults` (5 to 1000) and `NextToken`.
    pub(super) fn describe_tags(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let filters: Vec<(String, Vec<String>)> = query
            .filters()?
            .into_iter()
            .map(|(name, values)| {
                let name =
                    canonical_filter(&name, &["resource-id", "resource-type", "key", "value"])?;
                match name.as_str() {
                    "tag-key" => Ok(("key".to_owned(), values)),
                    "tag-value" => Ok(("value".to_owned(), values)),
                    _ => Ok((name, values)),
                }
            })
            .collect::<Result<_, ControlError>>()?;
        let page = Page::of(query, 5, 1000)?;
        let now = self.clock.now_millis();
        let mut resources: Vec<(String, &'static str, Tags)> = Vec::new();
        for slot in self.inventory.state.instances() {
            if slot.changes().lifecycle.is_some_and(|l| l.is_gone(now)) {
                continue;
            }
            let snapshot = slot.current();
            let tags = snapshot.instance.config.tags.clone();
            resources.push((slot.id().to_string(), "instance", tags));
        }
        let network = self.inventory.network();
        for vpc in network.vpcs() {
            resources.push((vpc.id.clone(), "vpc", vpc.tags.clone()));
        }
        for subnet in network.subnets() {
            resources.push((subnet.id.clone(), "subnet", subnet.tags.clone()));
        }
        for group in network.security_groups() {
            resources.push((group.id.clone(), "security-group", group.tags.clone()));
        }
        for pair in network.key_pairs() {
            resources.push((pair.id.clone(), "key-pair", pair.tags.clone()));
        }
        for template in self.account.templates().iter() {
            resources.push((
                template.id.clone(),
                "launch-template",
                template.tags.clone(),
            ));
        }
        let mut shown = Vec::new();
        for (id, kind, tags) in &resources {
            for (key, value) in tags {
                let matches = filters.iter().all(|(name, wanted)| {
                    let actual = match name.as_str() {
                        "resource-id" => Some(id.as_str()),
                        "resource-type" => Some(*kind),
                        "key" => Some(key.as_str()),
                        "value" => Some(value.as_str()),
                        tag => tag
                            .strip_prefix("tag:")
                            .filter(|k| k == key)
                            .map(|_| value.as_str()),
                    };
                    actual.is_some_and(|actual| wanted.iter().any(|w| glob(w, actual)))
                });
                if matches {
                    shown.push((format!("{id}\t{key}"), (id, *kind, key, value)));
                }
            }
        }
        let (shown, next) = page.cut(shown);
        let mut xml = Xml::response("DescribeTagsResponse", request_id);
        xml.open("tagSet");
        for (id, kind, key, value) in shown {
            xml.open("item")
                .leaf("resourceId", id)
                .leaf("resourceType", kind)
                .leaf("key", key)
                .leaf("value", value)
                .close();
        }
        xml.close();
        if let Some(token) = next {
            xml.leaf("nextToken", token);
        }
        Ok(xml.finish())
    }
}

/// `Tag.N.Key` with its optional `Tag.N.Value`; at least one when `required`.
fn tag_params(
    query: &QueryRequest,
    required: bool,
) -> Result<Vec<(String, Option<String>)>, ControlError> {
    let tags: Vec<(String, Option<String>)> = query
        .members("Tag")
        .into_iter()
        .map(|n| {
            let key = query.require(&format!("Tag.{n}.Key"))?.to_owned();
            Ok((key, query.get(&format!("Tag.{n}.Value")).map(str::to_owned)))
        })
        .collect::<Result<_, ControlError>>()?;
    if required && tags.is_empty() {
        return Err(ControlError::MissingParameter("Tag".into()));
    }
    Ok(tags)
}

/// EC2's limits on any tag (those IMDS adds are checked with the instance).
pub(super) fn check_tag(key: &str, value: &str) -> Result<(), ControlError> {
    if key.is_empty() || key.chars().count() > MAX_KEY {
        return Err(ControlError::InvalidParameterValue(format!(
            "Tag key must be 1 to {MAX_KEY} characters long: '{key}'"
        )));
    }
    if value.chars().count() > MAX_VALUE {
        return Err(ControlError::InvalidParameterValue(format!(
            "Tag value exceeds the maximum length of {MAX_VALUE} characters"
        )));
    }
    if is_system(key) {
        return Err(reserved(key));
    }
    Ok(())
}

/// EC2's answer to a tag `key` of its own in a user's request.
fn reserved(key: &str) -> ControlError {
    ControlError::InvalidParameterValue(format!(
        "Value ( {key} ) for parameter key is invalid. Tag keys starting with 'aws:' are reserved for internal use"
    ))
}

fn dry_run(query: &QueryRequest) -> Result<(), ControlError> {
    match query.dry_run() {
        true => Err(ControlError::DryRunOperation),
        false => Ok(()),
    }
}

/// The answer of an action that returns only success.
fn done(root: &'static str, request_id: &str) -> String {
    let mut xml = Xml::response(root, request_id);
    xml.leaf("return", true);
    xml.finish()
}

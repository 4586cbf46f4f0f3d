//! `CreateTags`, `DeleteTags` and `DescribeTags` on the instance. Tags show under
//! `meta-data/tags/instance/` at once when `InstanceMetadataTags` is enabled; then keys IMDS
//! cannot show are refused, as EC2 does.

use super::error::ControlError;
use super::query::{QueryRequest, MAX_IDS};
use super::xml::Xml;
use super::{Change, ControlApi};
use std::sync::Arc;

use crate::fleet::lock_order::Unlocked;
use crate::fleet::state::InstanceSlot;

/// Longest tag key and value EC2 accepts.
const MAX_KEY: usize = 128;
const MAX_VALUE: usize = 256;
/// Most tags EC2 lets a resource have.
const MAX_TAGS: usize = 50;

impl ControlApi {
    /// `CreateTags`: adds or overwrites tags.
    pub(super) async fn create_tags(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let tags = tag_params(query, true)?;
        for slot in self.resources(query)? {
            let tags = tags.clone();
            self.change(order, &slot, Change::Tags, |current, config| {
                for (key, value) in tags {
                    check_tag(&key, value.as_deref().unwrap_or(""))?;
                    config.tags.insert(key, value.unwrap_or_default());
                }
                // Tags from the config file may already be more; they can still be overwritten.
                if config.tags.len() > MAX_TAGS && config.tags.len() > current.config.tags.len() {
                    return Err(ControlError::TagLimitExceeded(format!(
                        "The maximum number of tags per resource is {MAX_TAGS}; {} would have {}",
                        current.id(),
                        config.tags.len()
                    )));
                }
                dry_run(query)
            })
            .await?;
        }
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
        for slot in self.resources(query)? {
            let tags = tags.clone();
            self.change(order, &slot, Change::Tags, |_, config| {
                if tags.is_empty() {
                    config.tags.clear();
                }
                for (key, value) in tags {
                    let matches = value
                        .as_ref()
                        .is_none_or(|v| config.tags.get(&key) == Some(v));
                    if matches {
                        config.tags.remove(&key);
                    }
                }
                dry_run(query)
            })
            .await?;
        }
        Ok(done("DeleteTagsResponse", request_id))
    }

    /// `DescribeTags` with filters `resource-id`, `resource-type`, `key` and `value`.
    pub(super) fn describe_tags(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let filters = query.filters()?;
        let mut xml = Xml::response("DescribeTagsResponse", request_id);
        xml.open("tagSet");
        for slot in self.inventory.state.instances() {
            let snapshot = slot.current();
            let id = snapshot.instance.id();
            for (key, value) in &snapshot.instance.config.tags {
                let mut shown = true;
                for (name, values) in &filters {
                    let actual = match name.as_str() {
                        "resource-id" => id,
                        "resource-type" => "instance",
                        "key" => key.as_str(),
                        "value" => value.as_str(),
                        other => return Err(ControlError::InvalidFilter(other.to_owned())),
                    };
                    shown &= values.iter().any(|v| v == actual);
                }
                if shown {
                    xml.open("item")
                        .leaf("resourceId", id)
                        .leaf("resourceType", "instance")
                        .leaf("key", key)
                        .leaf("value", value)
                        .close();
                }
            }
        }
        Ok(xml.finish())
    }
}

impl ControlApi {
    /// The instances `ResourceId.N` names (at least one), each checked before any changes.
    fn resources(&self, query: &QueryRequest) -> Result<Vec<Arc<InstanceSlot>>, ControlError> {
        let ids = query.list_at_most("ResourceId", MAX_IDS, "resource IDs")?;
        if ids.is_empty() {
            return Err(ControlError::MissingParameter("ResourceId".into()));
        }
        ids.into_iter().map(|id| self.slot(id)).collect()
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
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(ControlError::InvalidParameterValue(
            "Tag keys starting with 'aws:' are reserved for internal use".into(),
        ));
    }
    Ok(())
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

//! What the control plane changed on an instance, layered over its configuration file: its
//! metadata options, its tags, its role association and its events. Each part, once changed, replaces the
//! file's value whole (like an EC2 instance, whose tags and options belong to the instance once
//! set), while everything the control plane never touched follows the file, at restart and at
//! SIGHUP alike. With `--state-dir` the changes are kept in the [`crate::store::Store`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fleet::events::EventsConfig;
use crate::fleet::instance::{CredentialSource, IamConfig, Instance, InstanceConfig};
use crate::fleet::options::MetadataOptions;

/// The control plane's changes to one instance; `None` parts were never changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceChanges {
    /// Set by `ModifyInstanceMetadataOptions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_options: Option<MetadataOptions>,
    /// Set by `CreateTags` and `DeleteTags`: the whole tag set after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Set by the IAM instance profile association actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<RoleAssociation>,
    /// Set by the event actions: every event, with fixed times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventsConfig>,
    /// Set by `RunInstances`, `StopInstances`, `StartInstances` and `TerminateInstances`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<crate::fleet::lifecycle::Lifecycle>,
}

/// The instance profile association the control plane left an instance with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleAssociation {
    /// The associated role (and profile) name; `None` after a disassociation.
    pub role: Option<String>,
    /// The association's id (`iip-assoc-...`), while associated.
    pub association_id: Option<String>,
    /// When the association was made (its `Timestamp`), while associated.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub associated_at: Option<time::OffsetDateTime>,
}

impl InstanceChanges {
    /// Whether the control plane changed nothing.
    pub fn is_empty(&self) -> bool {
        *self == InstanceChanges::default()
    }

    /// `config` with these changes over it. A role association is not applied to an instance
    /// whose role credentials come from STS: its config file decides its role.
    pub fn apply_to(&self, config: &mut InstanceConfig) {
        if let Some(options) = self.metadata_options {
            config.metadata_options = options;
        }
        if let Some(tags) = &self.tags {
            config.tags = tags.clone();
        }
        if let Some(events) = &self.events {
            config.events = events.clone();
        }
        if let Some(association) = &self.role {
            if config.iam.credentials == CredentialSource::Sts {
                tracing::warn!(
                    instance = config.instance_id,
                    "the role association made through the control API is not applied: the config file takes the role from STS"
                );
            } else {
                config.iam = IamConfig {
                    role: association.role.clone(),
                    credential_lifetime_seconds: config.iam.credential_lifetime_seconds,
                    ..IamConfig::default()
                };
            }
        }
    }

    /// `instance` with these changes over it; the instance as it is, with a warning, when they
    /// no longer fit it (its config file changed so that they cannot be applied).
    pub fn layered(&self, instance: Instance) -> Instance {
        if self.is_empty() {
            return instance;
        }
        let mut config = instance.config.clone();
        self.apply_to(&mut config);
        match Instance::new(config) {
            Ok(changed) => changed,
            Err(error) => {
                tracing::warn!(
                    instance = instance.id(),
                    %error,
                    "the control API's changes no longer fit the config file; serving the file's instance"
                );
                instance
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::config::Config;
    use crate::fleet::options::HttpTokens;

    fn instance() -> Instance {
        Config::load(None)
            .and_then(|c| c.resolve(&Default::default(), None))
            .unwrap()
            .instance
    }

    #[test]
    fn only_changed_parts_replace_the_files_values() {
        let file = instance();
        let mut options = file.config.metadata_options;
        options.http_tokens = HttpTokens::Required;
        let changes = InstanceChanges {
            metadata_options: Some(options),
            ..InstanceChanges::default()
        };
        let changed = changes.layered(file.clone());
        assert_eq!(
            changed.config.metadata_options.http_tokens,
            HttpTokens::Required
        );
        assert_eq!(changed.config.tags, file.config.tags);
        assert_eq!(changed.config.iam, file.config.iam);
    }

    #[test]
    fn a_disassociation_removes_the_role_and_tags_replace_whole() {
        let changes = InstanceChanges {
            tags: Some(BTreeMap::from([("Name".into(), "web".into())])),
            role: Some(RoleAssociation {
                role: None,
                association_id: None,
                associated_at: None,
            }),
            ..InstanceChanges::default()
        };
        let changed = changes.layered(instance());
        assert!(changed.iam.is_none());
        assert_eq!(changed.config.tags.len(), 1);
    }

    #[test]
    fn changes_round_trip_through_json() {
        let changes = InstanceChanges {
            role: Some(RoleAssociation {
                role: Some("web".into()),
                association_id: Some("iip-assoc-0123456789abcdef0".into()),
                associated_at: Some(time::macros::datetime!(2026-11-02 09:00:00 UTC)),
            }),
            ..InstanceChanges::default()
        };
        let json = serde_json::to_string(&changes).unwrap();
        assert_eq!(
            serde_json::from_str::<InstanceChanges>(&json).unwrap(),
            changes
        );
        assert_eq!(
            serde_json::to_string(&InstanceChanges::default()).unwrap(),
            "{}"
        );
    }
}

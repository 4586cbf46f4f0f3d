//! What the control plane changed on an instance, layered over its configuration file: its
//! metadata options, its tags, its role association and its events. Each part, once changed, replaces the
//! file's value whole (like an EC2 instance, whose tags and options belong to the instance once
//! set), while everything the control plane never touched follows the file, at restart and at
//! SIGHUP alike. With `--state-dir` the changes are kept in the [`crate::store::Store`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fleet::events::EventsConfig;
use crate::fleet::instance::{
    check_imds_tag, CredentialSource, IamConfig, Instance, InstanceConfig,
};
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
    /// Set by `RunInstances` and `ModifyInstanceAttribute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<InstanceAttributes>,
}

/// What EC2 keeps of an instance beside its metadata, set at launch or with
/// `ModifyInstanceAttribute`; the instance type and user data, once changed, replace the config
/// file's (and so what the guest API serves).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceAttributes {
    /// The `ClientToken` the instance was launched with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    /// `DisableApiTermination`: `TerminateInstances` is refused while it is set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_api_termination: bool,
    /// `InstanceInitiatedShutdownBehavior`: `terminate` (else `stop`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminate_on_shutdown: bool,
    /// The instance type, when changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// The user data (text), when changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
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

/// A part of [`InstanceChanges`] that is layered (or skipped) on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `metadata_options`.
    MetadataOptions,
    /// `role`.
    Role,
    /// `events`.
    Events,
    /// `attributes` (the instance type and user data).
    Attributes,
    /// `tags` (or, when no tags were changed, the config file's tags).
    Tags,
}

impl Part {
    /// Every part, in the order they are layered: security-relevant parts first, so a part
    /// that conflicts with them is the one skipped.
    pub const ALL: [Part; 5] = [
        Part::MetadataOptions,
        Part::Role,
        Part::Events,
        Part::Attributes,
        Part::Tags,
    ];

    /// Its name in logs and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Part::MetadataOptions => "metadata_options",
            Part::Role => "role",
            Part::Events => "events",
            Part::Attributes => "attributes",
            Part::Tags => "tags",
        }
    }
}

/// A part of an instance's changes that does not fit its config file any more, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The part left out.
    pub part: Part,
    /// Why it does not fit.
    pub reason: String,
}

/// An instance with the changes that fit layered over it, and what was left out.
#[derive(Debug, Clone)]
pub struct Layered {
    /// The instance to serve.
    pub instance: Instance,
    /// The parts left out (or, for [`Part::Tags`], the file's tags cut down), with why.
    pub skipped: Vec<Skipped>,
}

impl Layered {
    /// Logs each skipped part as an error naming the instance, the part and why, and hands
    /// the instance on.
    pub fn logged(self) -> Layered {
        for skipped in &self.skipped {
            tracing::error!(
                instance = self.instance.id(),
                part = skipped.part.label(),
                reason = skipped.reason,
                "an acknowledged control-plane change no longer fits the config file and is not applied; the other changes are"
            );
        }
        self
    }
}

impl InstanceChanges {
    /// Whether the control plane changed nothing.
    pub fn is_empty(&self) -> bool {
        *self == InstanceChanges::default()
    }

    /// `instance` (as its config file says) with these changes over it, part by part: a part
    /// that no longer fits the file (its file changed so that the part cannot be applied) is
    /// left out and reported in [`Layered::skipped`], and every other part is still applied.
    /// Parts are layered in [`Part::ALL`]'s order, so a security-relevant one (`HttpTokens`, the
    /// endpoint, a removed role) is never the one given up for a part that conflicts with it:
    /// tags that cannot be served as instance metadata tags are left out instead.
    pub fn layered(&self, instance: Instance) -> Layered {
        if self.is_empty() {
            return Layered {
                instance,
                skipped: Vec::new(),
            };
        }
        let file = instance.config;
        let mut skipped = Vec::new();
        // Tags are decided last, against the options in force; until then none stand in the way
        // (the file's instance is valid, and tags only ever make an instance invalid).
        let mut config = InstanceConfig {
            tags: BTreeMap::new(),
            ..file.clone()
        };
        for part in [
            Part::MetadataOptions,
            Part::Role,
            Part::Events,
            Part::Attributes,
        ] {
            let mut candidate = config.clone();
            self.apply_part(part, &mut candidate);
            match Instance::new(candidate.clone()) {
                Ok(_) => config = candidate,
                Err(error) => {
                    skipped.push(Skipped {
                        part,
                        reason: error.to_string(),
                    });
                    if part == Part::MetadataOptions {
                        let mut rule = config.clone();
                        self.apply_token_rule(&mut rule);
                        if Instance::new(rule.clone()).is_ok() {
                            config = rule;
                        }
                    }
                }
            }
        }
        let tags = self.fitting_tags(&config, &file.tags, &mut skipped);
        config.tags = tags;
        let instance = Instance::new(config)
            .expect("every step was validated, and the tags chosen fit (or are none)");
        Layered { instance, skipped }
    }

    /// Applies one part of these changes (if changed) to `config`. A role association is not
    /// applied to an instance whose role credentials come from STS: its config file decides
    /// its role.
    fn apply_part(&self, part: Part, config: &mut InstanceConfig) {
        match part {
            Part::MetadataOptions => {
                if let Some(options) = self.metadata_options {
                    config.metadata_options = options;
                }
            }
            Part::Role => match &self.role {
                Some(_) if config.iam.credentials == CredentialSource::Sts => {
                    tracing::warn!(
                        instance = config.instance_id,
                        "the role association made through the control API is not applied: the config file takes the role from STS"
                    );
                }
                Some(association) => {
                    config.iam = IamConfig {
                        role: association.role.clone(),
                        credential_lifetime_seconds: config.iam.credential_lifetime_seconds,
                        ..IamConfig::default()
                    };
                }
                None => {}
            },
            Part::Events => {
                if let Some(events) = &self.events {
                    config.events = events.clone();
                }
            }
            Part::Attributes => {
                let attributes = self.attributes.as_ref();
                if let Some(instance_type) = attributes.and_then(|a| a.instance_type.as_ref()) {
                    config.instance_type = instance_type.clone();
                }
                if let Some(user_data) = attributes.and_then(|a| a.user_data.as_ref()) {
                    config.user_data = user_data.clone();
                }
            }
            Part::Tags => {
                if let Some(tags) = &self.tags {
                    config.tags = tags.clone();
                }
            }
        }
    }

    /// When the metadata options as a whole do not fit: at least the token rule and the
    /// endpoint switch they set, which never make an instance invalid.
    fn apply_token_rule(&self, config: &mut InstanceConfig) {
        if let Some(options) = self.metadata_options {
            config.metadata_options.http_tokens = options.http_tokens;
            config.metadata_options.http_endpoint = options.http_endpoint;
        }
    }

    /// The tags to serve with `config`: the changed ones if they fit it, else the file's if
    /// they fit, else the file's without those that cannot be served.
    fn fitting_tags(
        &self,
        config: &InstanceConfig,
        file_tags: &BTreeMap<String, String>,
        skipped: &mut Vec<Skipped>,
    ) -> BTreeMap<String, String> {
        let fits = |tags: &BTreeMap<String, String>| {
            Instance::new(InstanceConfig {
                tags: tags.clone(),
                ..config.clone()
            })
            .map(drop)
        };
        if let Some(tags) = &self.tags {
            match fits(tags) {
                Ok(()) => return tags.clone(),
                Err(error) => skipped.push(Skipped {
                    part: Part::Tags,
                    reason: error.to_string(),
                }),
            }
        }
        let Err(error) = fits(file_tags) else {
            return file_tags.clone();
        };
        let served = config.metadata_options.instance_metadata_tags.is_enabled();
        let kept: BTreeMap<String, String> = file_tags
            .iter()
            .filter(|(key, value)| !served || check_imds_tag(key, value).is_ok())
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let left_out: Vec<&str> = file_tags
            .keys()
            .filter(|key| !kept.contains_key(*key))
            .map(String::as_str)
            .collect();
        skipped.push(Skipped {
            part: Part::Tags,
            reason: format!("the config file's tags {left_out:?} are left out: {error}"),
        });
        match fits(&kept) {
            Ok(()) => kept,
            Err(_) => BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::config::Config;
    use crate::fleet::options::{HopLimit, HttpTokens, Switch};
    use proptest::prelude::*;

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
        let changed = changes.layered(file.clone()).instance;
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
        let changed = changes.layered(instance()).instance;
        assert!(changed.iam.is_none());
        assert_eq!(changed.config.tags.len(), 1);
    }

    #[test]
    fn tags_that_metadata_tags_cannot_serve_are_skipped_and_options_and_role_still_apply() {
        let mut file = instance().config;
        file.tags = BTreeMap::from([("Cost Center".into(), "42".into())]);
        let file = Instance::new(file).unwrap();
        let mut options = file.config.metadata_options;
        options.http_tokens = HttpTokens::Required;
        options.instance_metadata_tags = Switch::Enabled;
        let changes = InstanceChanges {
            metadata_options: Some(options),
            tags: Some(BTreeMap::from([("team name".into(), "web".into())])),
            role: Some(RoleAssociation {
                role: None,
                association_id: None,
                associated_at: None,
            }),
            ..InstanceChanges::default()
        };
        let layered = changes.layered(file);
        assert_eq!(layered.instance.config.metadata_options, options);
        assert!(
            layered.instance.iam.is_none(),
            "the removed role stays removed"
        );
        assert!(layered.instance.config.tags.is_empty());
        let parts: Vec<Part> = layered.skipped.iter().map(|s| s.part).collect();
        assert_eq!(parts, [Part::Tags, Part::Tags], "{:?}", layered.skipped);
    }

    fn tag_key() -> impl Strategy<Value = String> {
        prop_oneof![Just("Name"), Just("team"), Just("Cost Center"), Just("a/b")]
            .prop_map(str::to_owned)
    }

    fn tags() -> impl Strategy<Value = BTreeMap<String, String>> {
        proptest::collection::btree_map(tag_key(), "[a-z]{0,3}", 0..3)
    }

    fn switch() -> impl Strategy<Value = Switch> {
        prop_oneof![Just(Switch::Enabled), Just(Switch::Disabled)]
    }

    fn options() -> impl Strategy<Value = MetadataOptions> {
        let tokens = prop_oneof![Just(HttpTokens::Optional), Just(HttpTokens::Required)];
        (tokens, switch(), switch(), 1u8..=64).prop_map(|(tokens, endpoint, tags, hops)| {
            MetadataOptions {
                http_tokens: tokens,
                http_endpoint: endpoint,
                http_put_response_hop_limit: HopLimit::try_from(hops).unwrap(),
                instance_metadata_tags: tags,
                ..MetadataOptions::default()
            }
        })
    }

    fn role() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(prop_oneof![Just("web"), Just("not a role")].prop_map(str::to_owned))
    }

    /// A valid file instance: random tags and options (tags only when they can be served).
    fn file_instance() -> impl Strategy<Value = Instance> {
        (tags(), options(), role()).prop_filter_map("a valid file", |(tags, options, role)| {
            let mut config = instance().config;
            config.tags = tags;
            config.metadata_options = options;
            config.iam.role = role;
            Instance::new(config).ok()
        })
    }

    fn changes() -> impl Strategy<Value = InstanceChanges> {
        let association = role().prop_map(|role| RoleAssociation {
            role,
            association_id: None,
            associated_at: None,
        });
        (
            proptest::option::of(options()),
            proptest::option::of(tags()),
            proptest::option::of(association),
        )
            .prop_map(|(metadata_options, tags, role)| InstanceChanges {
                metadata_options,
                tags,
                role,
                ..InstanceChanges::default()
            })
    }

    proptest! {
        #[test]
        fn every_part_that_fits_is_layered_and_acknowledged_options_always_win(
            file in file_instance(),
            changes in changes(),
        ) {
            let layered = changes.layered(file.clone());
            let served = &layered.instance.config;
            let skipped = |part| layered.skipped.iter().any(|s| s.part == part);
            // The acknowledged options, HttpTokens first, are what is served.
            if let Some(options) = changes.metadata_options {
                prop_assert_eq!(served.metadata_options, options);
                prop_assert!(!skipped(Part::MetadataOptions));
            } else {
                prop_assert_eq!(served.metadata_options, file.config.metadata_options);
            }
            // A role change that fits the file on its own is applied; one that does not is
            // reported.
            if let Some(association) = &changes.role {
                let mut alone = file.config.clone();
                alone.iam.role = association.role.clone();
                let fits = Instance::new(alone).is_ok();
                prop_assert_eq!(fits, !skipped(Part::Role));
                if fits {
                    prop_assert_eq!(&served.iam.role, &association.role);
                }
            }
            // Tags that fit the options in force are applied; others are reported, and what is
            // served always fits.
            if let Some(tags) = &changes.tags {
                let fits = Instance::new(InstanceConfig {
                    tags: tags.clone(),
                    ..served.clone()
                })
                .is_ok();
                prop_assert_eq!(fits, served.tags == *tags);
                prop_assert_eq!(fits, !skipped(Part::Tags));
            }
            prop_assert!(Instance::new(served.clone()).is_ok());
        }
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

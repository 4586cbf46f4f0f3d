//! What the control plane changed on an instance, layered over its configuration file: its
//! metadata options, its tags, its role association and its events. Each part, once changed, replaces the
//! file's value whole (like an EC2 instance, whose tags belong to the instance once set), but
//! metadata options field by field: the options a `ModifyInstanceMetadataOptions` named stay
//! as it set them, and the others follow the file. Everything the control plane never touched
//! follows the file, at restart and at SIGHUP alike; a file value a control change shadows is
//! named in the log ([`InstanceChanges::shadowed`]). With `--state-dir` the changes are kept in
//! the [`crate::store::Store`].

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
    /// Set by `ModifyInstanceMetadataOptions`: the options in force after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_options: Option<MetadataOptions>,
    /// The options `ModifyInstanceMetadataOptions` named, over every change so far: those
    /// shadow the file's, the others follow it. `None` (changes stored before imds recorded
    /// them): every option.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_options_set: Option<OptionFields>,
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

/// Which metadata options control changes named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptionFields {
    /// `HttpTokens`.
    pub http_tokens: bool,
    /// `HttpEndpoint`.
    pub http_endpoint: bool,
    /// `HttpPutResponseHopLimit`.
    pub http_put_response_hop_limit: bool,
    /// `HttpProtocolIpv6`.
    pub http_protocol_ipv6: bool,
    /// `InstanceMetadataTags`.
    pub instance_metadata_tags: bool,
}

impl OptionFields {
    /// Every option.
    pub const ALL: OptionFields = OptionFields {
        http_tokens: true,
        http_endpoint: true,
        http_put_response_hop_limit: true,
        http_protocol_ipv6: true,
        instance_metadata_tags: true,
    };

    /// The options a `ModifyInstanceMetadataOptions` request names, by whether `given` finds
    /// each parameter.
    pub fn named(given: impl Fn(&str) -> bool) -> OptionFields {
        OptionFields {
            http_tokens: given("HttpTokens"),
            http_endpoint: given("HttpEndpoint"),
            http_put_response_hop_limit: given("HttpPutResponseHopLimit"),
            http_protocol_ipv6: given("HttpProtocolIpv6"),
            instance_metadata_tags: given("InstanceMetadataTags"),
        }
    }

    /// The options named by either.
    pub fn union(self, other: OptionFields) -> OptionFields {
        OptionFields {
            http_tokens: self.http_tokens || other.http_tokens,
            http_endpoint: self.http_endpoint || other.http_endpoint,
            http_put_response_hop_limit: self.http_put_response_hop_limit
                || other.http_put_response_hop_limit,
            http_protocol_ipv6: self.http_protocol_ipv6 || other.http_protocol_ipv6,
            instance_metadata_tags: self.instance_metadata_tags || other.instance_metadata_tags,
        }
    }

    /// `file` with the options named here taken from `changed`.
    pub fn over(self, changed: MetadataOptions, file: MetadataOptions) -> MetadataOptions {
        MetadataOptions {
            http_tokens: pick(self.http_tokens, changed.http_tokens, file.http_tokens),
            http_endpoint: pick(
                self.http_endpoint,
                changed.http_endpoint,
                file.http_endpoint,
            ),
            http_put_response_hop_limit: pick(
                self.http_put_response_hop_limit,
                changed.http_put_response_hop_limit,
                file.http_put_response_hop_limit,
            ),
            http_protocol_ipv6: pick(
                self.http_protocol_ipv6,
                changed.http_protocol_ipv6,
                file.http_protocol_ipv6,
            ),
            instance_metadata_tags: pick(
                self.instance_metadata_tags,
                changed.instance_metadata_tags,
                file.instance_metadata_tags,
            ),
        }
    }
}

fn pick<T>(changed: bool, if_changed: T, otherwise: T) -> T {
    match changed {
        true => if_changed,
        false => otherwise,
    }
}

/// A config file value a control change shadows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    /// The key under `metadata_options`.
    pub key: &'static str,
    /// What the file says.
    pub file: String,
    /// What the control change set, and is served.
    pub changed: String,
    /// The `imds ctl options` flag that sets it.
    pub flag: &'static str,
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
                    config.metadata_options =
                        self.option_fields().over(options, config.metadata_options);
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
            let fields = self.option_fields();
            let rule = OptionFields {
                http_tokens: fields.http_tokens,
                http_endpoint: fields.http_endpoint,
                ..OptionFields::default()
            };
            config.metadata_options = rule.over(options, config.metadata_options);
        }
    }

    /// The metadata options control changes named (every one for changes stored before imds
    /// recorded which).
    pub fn option_fields(&self) -> OptionFields {
        self.metadata_options_set.unwrap_or(OptionFields::ALL)
    }

    /// The metadata options of `file` that these changes shadow: named by a control change,
    /// which set another value.
    pub fn shadowed(&self, file: &Instance) -> Vec<Shadowed> {
        let Some(changed) = self.metadata_options else {
            return Vec::new();
        };
        let fields = self.option_fields();
        let ours = file.config.metadata_options;
        let mut shadowed = Vec::new();
        let mut check = |named: bool, key, flag, file: String, changed: String| {
            if named && file != changed {
                shadowed.push(Shadowed {
                    key,
                    file,
                    changed,
                    flag,
                });
            }
        };
        check(
            fields.http_tokens,
            "http_tokens",
            "--http-tokens",
            ours.http_tokens.to_string(),
            changed.http_tokens.to_string(),
        );
        check(
            fields.http_endpoint,
            "http_endpoint",
            "--http-endpoint",
            ours.http_endpoint.to_string(),
            changed.http_endpoint.to_string(),
        );
        check(
            fields.http_put_response_hop_limit,
            "http_put_response_hop_limit",
            "--hop-limit",
            ours.http_put_response_hop_limit.to_string(),
            changed.http_put_response_hop_limit.to_string(),
        );
        check(
            fields.http_protocol_ipv6,
            "http_protocol_ipv6",
            "--http-protocol-ipv6",
            ours.http_protocol_ipv6.to_string(),
            changed.http_protocol_ipv6.to_string(),
        );
        check(
            fields.instance_metadata_tags,
            "instance_metadata_tags",
            "--instance-metadata-tags",
            ours.instance_metadata_tags.to_string(),
            changed.instance_metadata_tags.to_string(),
        );
        shadowed
    }

    /// Logs, once, the metadata options of `file` these changes shadow: which keys, what the
    /// file says, what is served and why, and how to follow the file instead.
    pub fn log_shadowed(&self, file: &Instance) {
        let shadowed = self.shadowed(file);
        if shadowed.is_empty() {
            return;
        }
        let keys: Vec<String> = shadowed
            .iter()
            .map(|s| format!("{} (file: {}, served: {})", s.key, s.file, s.changed))
            .collect();
        let follow: Vec<String> = shadowed
            .iter()
            .map(|s| format!("{} {}", s.flag, s.file))
            .collect();
        tracing::warn!(
            instance = file.id(),
            keys = keys.join(", "),
            "the config file's metadata_options {} not applied: a control change (ModifyInstanceMetadataOptions, acknowledged) set them and stays; to follow the file, set them through the control API (imds ctl options {}), or stop imds and remove state.db to drop every control change",
            match shadowed.len() {
                1 => "is",
                _ => "are",
            },
            follow.join(" ")
        );
    }

    /// The parts changed, for the log: `metadata_options (http_tokens=required), tags (2)`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(options) = self.metadata_options {
            let fields = self.option_fields();
            let mut set = Vec::new();
            for (named, key, value) in [
                (
                    fields.http_tokens,
                    "http_tokens",
                    options.http_tokens.to_string(),
                ),
                (
                    fields.http_endpoint,
                    "http_endpoint",
                    options.http_endpoint.to_string(),
                ),
                (
                    fields.http_put_response_hop_limit,
                    "http_put_response_hop_limit",
                    options.http_put_response_hop_limit.to_string(),
                ),
                (
                    fields.http_protocol_ipv6,
                    "http_protocol_ipv6",
                    options.http_protocol_ipv6.to_string(),
                ),
                (
                    fields.instance_metadata_tags,
                    "instance_metadata_tags",
                    options.instance_metadata_tags.to_string(),
                ),
            ] {
                if named {
                    set.push(format!("{key}={value}"));
                }
            }
            parts.push(format!("metadata_options ({})", set.join(", ")));
        }
        if let Some(tags) = &self.tags {
            parts.push(format!("tags ({})", tags.len()));
        }
        if let Some(role) = &self.role {
            parts.push(match &role.role {
                Some(name) => format!("role ({name})"),
                None => "role (none)".to_owned(),
            });
        }
        if let Some(events) = &self.events {
            parts.push(format!(
                "events ({} maintenance{})",
                events.maintenance.len(),
                match events.spot {
                    Some(_) => ", a spot interruption",
                    None => "",
                }
            ));
        }
        if self.lifecycle.is_some() {
            parts.push("lifecycle".to_owned());
        }
        parts.join(", ")
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
    fn options_a_control_change_did_not_name_follow_the_file_and_shadowed_ones_are_named() {
        let file = instance();
        let mut options = file.config.metadata_options;
        options.http_tokens = HttpTokens::Required;
        let changes = InstanceChanges {
            metadata_options: Some(options),
            metadata_options_set: Some(OptionFields {
                http_tokens: true,
                ..OptionFields::default()
            }),
            ..InstanceChanges::default()
        };
        // The file's hop limit is edited: it applies, the control change's HttpTokens stays.
        let mut edited = file.config.clone();
        edited.metadata_options.http_put_response_hop_limit = HopLimit::try_from(3).unwrap();
        let edited = Instance::new(edited).unwrap();
        let served = changes
            .layered(edited.clone())
            .instance
            .config
            .metadata_options;
        assert_eq!(served.http_put_response_hop_limit.get(), 3);
        assert_eq!(served.http_tokens, HttpTokens::Required);
        let shadowed = changes.shadowed(&edited);
        assert_eq!(
            shadowed,
            [Shadowed {
                key: "http_tokens",
                file: "optional".into(),
                changed: "required".into(),
                flag: "--http-tokens",
            }]
        );
        assert_eq!(changes.summary(), "metadata_options (http_tokens=required)");
        // Changes stored before the options were recorded shadow every option, as before.
        let legacy = InstanceChanges {
            metadata_options_set: None,
            ..changes
        };
        let served = legacy.layered(edited).instance.config.metadata_options;
        assert_eq!(served.http_put_response_hop_limit.get(), 1);
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
        let fields = proptest::array::uniform5(any::<bool>()).prop_map(|f| OptionFields {
            http_tokens: f[0],
            http_endpoint: f[1],
            http_put_response_hop_limit: f[2],
            http_protocol_ipv6: f[3],
            instance_metadata_tags: f[4],
        });
        (
            proptest::option::of(options()),
            proptest::option::of(fields),
            proptest::option::of(tags()),
            proptest::option::of(association),
        )
            .prop_map(|(metadata_options, metadata_options_set, tags, role)| {
                InstanceChanges {
                    metadata_options,
                    metadata_options_set,
                    tags,
                    role,
                    ..InstanceChanges::default()
                }
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
            // The acknowledged options, HttpTokens first, are what is served; the options no
            // change named follow the file.
            if let Some(options) = changes.metadata_options {
                let expected = changes.option_fields().over(options, file.config.metadata_options);
                prop_assert_eq!(served.metadata_options, expected);
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

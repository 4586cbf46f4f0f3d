//! Launch templates: named, versioned sets of `RunInstances` parameters, one registry per
//! region and account. Each version keeps its data as the `RunInstances` parameters it stands
//! for (`ImageId`, `SecurityGroupId.1`, `MetadataOptions.HttpTokens`, ...: the names
//! `LaunchTemplateData.*` and `RunInstances` share), so a launch from a template is the same
//! request as a direct launch with those parameters, decided by the same code and guardrails.
//! The registry is plain serde data: the control API keeps it as one JSON value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::fleet::network::Tags;

/// Longest launch template name EC2 accepts.
const MAX_NAME: usize = 128;
/// Longest version description EC2 accepts.
const MAX_DESCRIPTION: usize = 255;
/// Most versions one template keeps (EC2's quota).
pub const MAX_VERSIONS: u64 = 10_000;

/// Why a launch template request failed; each is one of EC2's error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A template of this name exists.
    #[error("Launch template name already in use.")]
    NameInUse(String),
    /// No template has this id.
    #[error("The specified launch template, with template ID {0}, does not exist.")]
    IdNotFound(String),
    /// No template has this name.
    #[error("The specified launch template, with template name {0}, does not exist.")]
    NameNotFound(String),
    /// The template has no such version.
    #[error("Could not find launch template version {1} for launch template ID {0}")]
    VersionNotFound(String, String),
    /// A name EC2 does not take (3 to 128 of `[a-zA-Z0-9()./_-]`).
    #[error("A launch template name must be between 3 and 128 characters, and may contain only letters, numbers, and the following characters: - ( ) . / _.")]
    NameMalformed(String),
    /// An id that is not `lt-` and 17 hex digits.
    #[error("The launch template ID '{0}' is malformed.")]
    IdMalformed(String),
    /// A version that is not `$Latest`, `$Default` or a number.
    #[error("The version '{0}' is malformed: give $Latest, $Default or a version number.")]
    VersionMalformed(String),
    /// The default version cannot be deleted, nor more versions made than EC2 keeps.
    #[error("{0}")]
    InvalidParameterValue(String),
}

impl TemplateError {
    /// EC2's error code.
    pub fn code(&self) -> &'static str {
        match self {
            TemplateError::NameInUse(_) => "InvalidLaunchTemplateName.AlreadyExistsException",
            TemplateError::IdNotFound(_) => "InvalidLaunchTemplateId.NotFound",
            TemplateError::NameNotFound(_) => "InvalidLaunchTemplateName.NotFoundException",
            TemplateError::VersionNotFound(..) => "InvalidLaunchTemplateId.VersionNotFound",
            TemplateError::NameMalformed(_) => "InvalidLaunchTemplateName.MalformedException",
            TemplateError::IdMalformed(_) => "InvalidLaunchTemplateId.Malformed",
            TemplateError::VersionMalformed(_) => "InvalidLaunchTemplateId.VersionNotFound",
            TemplateError::InvalidParameterValue(_) => "InvalidParameterValue",
        }
    }
}

/// One version of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateVersion {
    /// 1, 2, ...
    pub number: u64,
    /// `VersionDescription`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Its data as `RunInstances` parameters, in order.
    pub data: Vec<(String, String)>,
}

/// A launch template and its versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchTemplate {
    /// `lt-...`.
    pub id: String,
    /// Its name, unique in the region.
    pub name: String,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// `arn:aws:iam::ACCOUNT:root`.
    pub created_by: String,
    /// The version `$Default` names.
    pub default_version: u64,
    /// The version `$Latest` names: the highest there is.
    pub latest_version: u64,
    /// The highest version number ever made (0: `latest_version`): numbers of deleted
    /// versions are never given again, as on EC2.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub highest_made: u64,
    /// Its tags.
    #[serde(default)]
    pub tags: Tags,
    /// Its versions, by number.
    pub versions: BTreeMap<u64, TemplateVersion>,
}

impl LaunchTemplate {
    /// The number the next version gets.
    fn next_number(&self) -> u64 {
        self.latest_version.max(self.highest_made) + 1
    }

    /// The version `version` names: `$Latest`, `$Default`, a number, or (`None`) the default.
    pub fn version(&self, version: Option<&str>) -> Result<&TemplateVersion, TemplateError> {
        let number = match version {
            None | Some("$Default") => self.default_version,
            Some("$Latest") => self.latest_version,
            Some(text) => text
                .parse::<u64>()
                .map_err(|_| TemplateError::VersionMalformed(text.to_owned()))?,
        };
        self.versions.get(&number).ok_or_else(|| {
            TemplateError::VersionNotFound(
                self.id.clone(),
                version.unwrap_or("$Default").to_owned(),
            )
        })
    }
}

/// What a new template or version is made of.
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    /// `VersionDescription`.
    pub description: Option<&'a str>,
    /// When it is made.
    pub created: OffsetDateTime,
    /// Its data as `RunInstances` parameters.
    pub data: Vec<(String, String)>,
}

/// Every launch template of the region and account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchTemplates {
    /// By id.
    templates: BTreeMap<String, LaunchTemplate>,
}

impl LaunchTemplates {
    /// Every template, by id.
    pub fn iter(&self) -> impl Iterator<Item = &LaunchTemplate> {
        self.templates.values()
    }

    /// The template with id `id`.
    pub fn by_id(&self, id: &str) -> Result<&LaunchTemplate, TemplateError> {
        check_id(id)?;
        self.templates
            .get(id)
            .ok_or_else(|| TemplateError::IdNotFound(id.to_owned()))
    }

    /// The template called `name`.
    pub fn by_name(&self, name: &str) -> Result<&LaunchTemplate, TemplateError> {
        self.templates
            .values()
            .find(|t| t.name == name)
            .ok_or_else(|| TemplateError::NameNotFound(name.to_owned()))
    }

    /// The template `id` or `name` names (the id wins when both are given).
    pub fn find(
        &self,
        id: Option<&str>,
        name: Option<&str>,
    ) -> Result<&LaunchTemplate, TemplateError> {
        match (id, name) {
            (Some(id), _) => self.by_id(id),
            (None, Some(name)) => self.by_name(name),
            (None, None) => Err(TemplateError::InvalidParameterValue(
                "A launch template ID or name must be specified.".into(),
            )),
        }
    }

    /// The tags of template `id`, to change them.
    pub fn tags_mut(&mut self, id: &str) -> Option<&mut Tags> {
        self.templates.get_mut(id).map(|t| &mut t.tags)
    }

    /// `CreateLaunchTemplate`: a new template called `name` whose version 1 is `first`.
    pub fn create(
        &mut self,
        name: &str,
        created_by: String,
        first: NewVersion<'_>,
        tags: Tags,
    ) -> Result<&LaunchTemplate, TemplateError> {
        check_name(name)?;
        check_description(first.description)?;
        if self.by_name(name).is_ok() {
            return Err(TemplateError::NameInUse(name.to_owned()));
        }
        let id = random_id();
        let version = TemplateVersion {
            number: 1,
            description: first.description.map(str::to_owned),
            created: first.created,
            data: first.data,
        };
        let template = LaunchTemplate {
            id: id.clone(),
            name: name.to_owned(),
            created: first.created,
            created_by,
            default_version: 1,
            latest_version: 1,
            highest_made: 1,
            tags,
            versions: BTreeMap::from([(1, version)]),
        };
        Ok(self.templates.entry(id).or_insert(template))
    }

    /// `CreateLaunchTemplateVersion`: version `latest + 1` of the template `id`.
    pub fn add_version(
        &mut self,
        id: &str,
        new: NewVersion<'_>,
    ) -> Result<&TemplateVersion, TemplateError> {
        check_description(new.description)?;
        let template = self
            .templates
            .get_mut(id)
            .ok_or_else(|| TemplateError::IdNotFound(id.to_owned()))?;
        if template.versions.len() as u64 >= MAX_VERSIONS {
            return Err(TemplateError::InvalidParameterValue(format!(
                "The launch template {id} has reached the maximum of {MAX_VERSIONS} versions."
            )));
        }
        let number = template.next_number();
        template.latest_version = number;
        template.highest_made = number;
        let version = TemplateVersion {
            number,
            description: new.description.map(str::to_owned),
            created: new.created,
            data: new.data,
        };
        Ok(template.versions.entry(number).or_insert(version))
    }

    /// `ModifyLaunchTemplate`: makes `version` (which must exist) the default of template `id`.
    pub fn set_default(
        &mut self,
        id: &str,
        version: &str,
    ) -> Result<&LaunchTemplate, TemplateError> {
        let number = self.by_id(id)?.version(Some(version))?.number;
        let template = self
            .templates
            .get_mut(id)
            .ok_or_else(|| TemplateError::IdNotFound(id.to_owned()))?;
        template.default_version = number;
        Ok(template)
    }

    /// One version of a `DeleteLaunchTemplateVersions` on template `id`: removed, unless it is
    /// the default version or does not exist (EC2's per-version error, see [`VersionRefused`]).
    /// `$Latest` then names the highest version left; numbers are never given again.
    pub fn delete_version(&mut self, id: &str, number: u64) -> Result<(), VersionRefused> {
        let template = self.templates.get_mut(id).ok_or_else(|| VersionRefused {
            code: "launchTemplateIdDoesNotExist",
            message: format!(
                "The specified launch template, with template ID {id}, does not exist."
            ),
        })?;
        if !template.versions.contains_key(&number) {
            return Err(VersionRefused {
                code: "launchTemplateVersionDoesNotExist",
                message: format!(
                    "Could not find launch template version {number} for launch template ID {id}"
                ),
            });
        }
        if number == template.default_version {
            return Err(VersionRefused {
                code: "unexpectedError",
                message: format!(
                    "Version {number} is the default version of launch template {id} and cannot be deleted: make another version the default first, or delete the whole template with DeleteLaunchTemplate."
                ),
            });
        }
        template.versions.remove(&number);
        template.highest_made = template.highest_made.max(template.latest_version);
        template.latest_version = template
            .versions
            .keys()
            .next_back()
            .copied()
            .unwrap_or(template.default_version);
        Ok(())
    }

    /// `DeleteLaunchTemplate`: the template removed.
    pub fn delete(&mut self, id: &str) -> Result<LaunchTemplate, TemplateError> {
        self.templates
            .remove(id)
            .ok_or_else(|| TemplateError::IdNotFound(id.to_owned()))
    }
}

/// Why one version of a `DeleteLaunchTemplateVersions` was not deleted: a code of botocore's
/// `LaunchTemplateErrorCode` (`launchTemplateVersionDoesNotExist`, ...; the default version is
/// `unexpectedError`, the model having no code of its own for it) and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRefused {
    /// The `ResponseError` code.
    pub code: &'static str,
    /// The `ResponseError` message.
    pub message: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn check_name(name: &str) -> Result<(), TemplateError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "()./_-".contains(c);
    if !(3..=MAX_NAME).contains(&name.len()) || !name.chars().all(allowed) {
        return Err(TemplateError::NameMalformed(name.to_owned()));
    }
    Ok(())
}

fn check_id(id: &str) -> Result<(), TemplateError> {
    let hex = id.strip_prefix("lt-").unwrap_or("");
    if hex.len() != 17 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TemplateError::IdMalformed(id.to_owned()));
    }
    Ok(())
}

fn check_description(description: Option<&str>) -> Result<(), TemplateError> {
    match description {
        Some(text) if text.chars().count() > MAX_DESCRIPTION => {
            Err(TemplateError::InvalidParameterValue(format!(
                "The version description must be at most {MAX_DESCRIPTION} characters long."
            )))
        }
        _ => Ok(()),
    }
}

/// `lt-` and 17 random hex digits, as EC2's template ids look.
fn random_id() -> String {
    let hex: String = rand::random::<[u8; 9]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("lt-{}", &hex[..17])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(data: &[(&str, &str)]) -> NewVersion<'static> {
        NewVersion {
            description: None,
            created: OffsetDateTime::UNIX_EPOCH,
            data: data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// Templates holding `web`, whose version 1 has ImageId `ami-1`, and its id.
    fn web_template() -> (LaunchTemplates, String) {
        let mut templates = LaunchTemplates::default();
        let id = templates
            .create(
                "web",
                "arn".into(),
                new(&[("ImageId", "ami-1")]),
                Tags::new(),
            )
            .unwrap()
            .id
            .clone();
        (templates, id)
    }

    #[test]
    fn versions_are_numbered_and_named_as_on_ec2() {
        let (mut templates, id) = web_template();
        templates
            .add_version(&id, new(&[("ImageId", "ami-2")]))
            .unwrap();
        let template = templates.by_name("web").unwrap();
        assert_eq!(template.version(None).unwrap().number, 1);
        assert_eq!(template.version(Some("$Latest")).unwrap().number, 2);
        assert_eq!(template.version(Some("2")).unwrap().data[0].1, "ami-2");
        let missing = template.version(Some("3")).unwrap_err();
        assert_eq!(missing.code(), "InvalidLaunchTemplateId.VersionNotFound");
        templates.set_default(&id, "$Latest").unwrap();
        assert_eq!(
            templates
                .by_id(&id)
                .unwrap()
                .version(Some("$Default"))
                .unwrap()
                .number,
            2
        );
        assert_eq!(
            templates
                .create("web", "arn".into(), new(&[]), Tags::new())
                .unwrap_err(),
            TemplateError::NameInUse("web".into())
        );
        assert_eq!(
            templates.by_id("lt-0123").unwrap_err().code(),
            "InvalidLaunchTemplateId.Malformed"
        );
        assert_eq!(
            templates.by_id("lt-0123456789abcdef0").unwrap_err().code(),
            "InvalidLaunchTemplateId.NotFound"
        );
        assert!(templates
            .create("a b", "arn".into(), new(&[]), Tags::new())
            .is_err());
        templates.delete(&id).unwrap();
        assert!(templates.by_name("web").is_err());
    }

    #[test]
    fn deleting_versions_keeps_the_default_and_never_reuses_a_number() {
        let (mut templates, id) = web_template();
        for image in ["ami-2", "ami-3"] {
            templates
                .add_version(&id, new(&[("ImageId", image)]))
                .unwrap();
        }
        let refused = templates.delete_version(&id, 1).unwrap_err();
        assert_eq!(refused.code, "unexpectedError");
        assert!(refused.message.contains("default version"), "{refused:?}");
        assert_eq!(
            templates.delete_version(&id, 9).unwrap_err().code,
            "launchTemplateVersionDoesNotExist"
        );
        templates.delete_version(&id, 3).unwrap();
        let template = templates.by_id(&id).unwrap();
        assert_eq!(template.latest_version, 2, "$Latest is the highest left");
        assert_eq!(
            template.version(Some("3")).unwrap_err().code(),
            "InvalidLaunchTemplateId.VersionNotFound"
        );
        let added = templates
            .add_version(&id, new(&[("ImageId", "ami-4")]))
            .unwrap();
        assert_eq!(added.number, 4, "3 is never given again");
        assert_eq!(
            templates.delete_version(&id, 3).unwrap_err().code,
            "launchTemplateVersionDoesNotExist"
        );
        // A template stored before the highest number was kept reads as before.
        let mut stored = serde_json::to_value(templates.by_id(&id).unwrap()).unwrap();
        stored.as_object_mut().unwrap().remove("highest_made");
        let old: LaunchTemplate = serde_json::from_value(stored).unwrap();
        assert_eq!(old.next_number(), 5);
    }
}

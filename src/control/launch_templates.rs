//! `CreateLaunchTemplate`, `CreateLaunchTemplateVersion`, `DescribeLaunchTemplates`,
//! `DescribeLaunchTemplateVersions`, `ModifyLaunchTemplate` (the default version),
//! `DeleteLaunchTemplateVersions` and `DeleteLaunchTemplate`, over the account's
//! [`LaunchTemplates`], changed on a copy under the account lock, stored whole (the account
//! value `launch-templates`) before the answer, then swapped in; and `RunInstances` with
//! `LaunchTemplate`: the template version's parameters under the request's own (a parameter the
//! request gives replaces the template's whole, e.g. all of `MetadataOptions`), decided and
//! guarded as a direct launch with those parameters, plus the template's own guardrail context
//! ([`TemplateLaunch`]); the instances carry EC2's system tags `aws:ec2launchtemplate:id` and
//! `aws:ec2launchtemplate:version`.

use std::collections::BTreeSet;

use base64::Engine;

use super::error::ControlError;
use super::key_pairs::iso_millis;
use super::query::QueryRequest;
use super::vpc::{dry_run, tag_set, tag_specifications, Filters};
use super::xml::Xml;
use super::ControlApi;
use crate::fleet::launch_templates::{
    LaunchTemplate, LaunchTemplates, NewVersion, TemplateError, TemplateVersion, VersionRefused,
};
use crate::fleet::lock_order::Unlocked;
use crate::fleet::network::Tags;

/// The registry's name in the store's account values.
pub(super) const TEMPLATES: &str = "launch-templates";

/// The system tag EC2 puts on an instance launched from a template: the template's id.
pub(super) const SYSTEM_TAG_ID: &str = "aws:ec2launchtemplate:id";
/// The system tag EC2 puts on an instance launched from a template: the version's number.
pub(super) const SYSTEM_TAG_VERSION: &str = "aws:ec2launchtemplate:version";
/// Most versions one `DeleteLaunchTemplateVersions` deletes, as on EC2.
const MAX_DELETED_VERSIONS: usize = 200;

/// A `RunInstances` from a launch template, as the guardrails and the new instances see it.
#[derive(Debug, Clone)]
pub(super) struct TemplateLaunch {
    /// The template's id (`lt-...`).
    pub(super) id: String,
    /// The version launched from.
    pub(super) version: u64,
    /// The template's tags (its `aws:ResourceTag/*` in the guardrails).
    pub(super) tags: Tags,
    /// The top-level parameters the request itself gives (`ImageId`, `SubnetId`, ...): what
    /// they decide is not the template's (`ec2:IsLaunchTemplateResource` is `false` there).
    pub(super) given: BTreeSet<String>,
}

impl TemplateLaunch {
    /// The system tags of an instance launched this way.
    pub(super) fn system_tags(&self) -> [(String, String); 2] {
        [
            (SYSTEM_TAG_ID.to_owned(), self.id.clone()),
            (SYSTEM_TAG_VERSION.to_owned(), self.version.to_string()),
        ]
    }
}

/// The `LaunchTemplateData` parameters imds keeps and launches with: the names `RunInstances`
/// shares. Others (accelerators, licenses, market options, ...) are refused by name rather
/// than kept and ignored at launch.
const TEMPLATE_PARAMETERS: &[&str] = &[
    "ImageId",
    "InstanceType",
    "KeyName",
    "SecurityGroupId",
    "SecurityGroup",
    "UserData",
    "MetadataOptions",
    "IamInstanceProfile",
    "TagSpecification",
    "Placement",
    "DisableApiTermination",
    "InstanceInitiatedShutdownBehavior",
    "NetworkInterface",
    "Monitoring",
    "EbsOptimized",
];

/// The members of `MetadataOptions` a template keeps.
const OPTIONS: &[&str] = &[
    "HttpTokens",
    "HttpPutResponseHopLimit",
    "HttpEndpoint",
    "HttpProtocolIpv6",
    "InstanceMetadataTags",
];

/// The members of a `NetworkInterface.N` a template keeps (and `SecurityGroupId.M`).
const INTERFACE: &[&str] = &[
    "AssociatePublicIpAddress",
    "DeleteOnTermination",
    "Description",
    "DeviceIndex",
    "Ipv6AddressCount",
    "PrivateIpAddress",
    "SecondaryPrivateIpAddressCount",
    "SubnetId",
];

/// Whether `name` (a `LaunchTemplateData.` parameter, that prefix cut off) is one a template
/// keeps and `DescribeLaunchTemplateVersions` shows: a member of a structure imds does not
/// model (`Placement.HostId`, `NetworkInterface.1.InterfaceType`) is refused like a
/// parameter imds does not model, never kept and ignored.
fn modelled(name: &str) -> bool {
    let index = |s: &str| s.parse::<u32>().is_ok();
    match name.split('.').collect::<Vec<_>>().as_slice() {
        [scalar] => TEMPLATE_PARAMETERS.contains(scalar),
        ["SecurityGroupId" | "SecurityGroup", n] => index(n),
        ["MetadataOptions", member] => OPTIONS.contains(member),
        ["IamInstanceProfile", "Arn" | "Name"] => true,
        ["Placement", "AvailabilityZone" | "GroupName" | "Tenancy"] => true,
        ["Monitoring", "Enabled"] => true,
        ["NetworkInterface", n, "SecurityGroupId", m] => index(n) && index(m),
        ["NetworkInterface", n, member] => index(n) && INTERFACE.contains(member),
        ["TagSpecification", n, "ResourceType"] => index(n),
        ["TagSpecification", n, "Tag", m, "Key" | "Value"] => index(n) && index(m),
        _ => false,
    }
}

/// The top-level parameter a parameter name belongs to (`MetadataOptions.HttpTokens`:
/// `MetadataOptions`).
fn top_level(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// `LaunchTemplateData.*` as `RunInstances` parameters, checked as a launch would check them.
fn template_data(query: &QueryRequest) -> Result<Vec<(String, String)>, ControlError> {
    let data = query.under("LaunchTemplateData");
    for (name, value) in &data {
        let top = top_level(name);
        if !TEMPLATE_PARAMETERS.contains(&top) {
            return Err(ControlError::Unsupported(format!(
                "LaunchTemplateData.{top} is not modelled by imds; a launch template may hold {}",
                TEMPLATE_PARAMETERS.join(", ")
            )));
        }
        if !modelled(name) {
            return Err(ControlError::Unsupported(format!(
                "LaunchTemplateData.{name} is not modelled by imds; of {top} a launch template keeps {}",
                match top {
                    "MetadataOptions" => OPTIONS.join(", "),
                    "NetworkInterface" => format!("{}, SecurityGroupId", INTERFACE.join(", ")),
                    "IamInstanceProfile" => "Arn, Name".to_owned(),
                    "Placement" => "AvailabilityZone, GroupName, Tenancy".to_owned(),
                    "Monitoring" => "Enabled".to_owned(),
                    "TagSpecification" => "ResourceType, Tag".to_owned(),
                    _ => "the value".to_owned(),
                }
            )));
        }
        match name.as_str() {
            "MetadataOptions.HttpTokens" => {
                super::instances::parse_tokens(value)?;
            }
            "MetadataOptions.HttpPutResponseHopLimit" => {
                value
                    .parse::<crate::fleet::options::HopLimit>()
                    .map_err(|_| {
                        ControlError::InvalidParameterValue(format!(
                            "The HttpPutResponseHopLimit value ({value}) is invalid. Specify an integer from 1 to 64."
                        ))
                    })?;
            }
            "MetadataOptions.HttpEndpoint"
            | "MetadataOptions.HttpProtocolIpv6"
            | "MetadataOptions.InstanceMetadataTags" => {
                super::instances::parse_switch(&name["MetadataOptions.".len()..], value)?;
            }
            "UserData" => {
                base64::engine::general_purpose::STANDARD
                    .decode(value.trim())
                    .map_err(|_| {
                        ControlError::InvalidParameterValue("Invalid user data: not base64".into())
                    })?;
            }
            tag if tag.starts_with("TagSpecification.") && tag.ends_with(".Key") => {
                super::tags::check_tag(value, "")?;
            }
            "InstanceInitiatedShutdownBehavior" if value != "stop" && value != "terminate" => {
                return Err(ControlError::InvalidParameterValue(format!(
                    "Value ({value}) for parameter instanceInitiatedShutdownBehavior is invalid. Valid values: stop, terminate"
                )));
            }
            _ => {}
        }
    }
    Ok(data)
}

/// `base` with `over` laid on top: each top-level parameter `over` gives replaces `base`'s.
fn overlay(base: &[(String, String)], over: &[(String, String)]) -> Vec<(String, String)> {
    let given: std::collections::BTreeSet<&str> =
        over.iter().map(|(name, _)| top_level(name)).collect();
    base.iter()
        .filter(|(name, _)| !given.contains(top_level(name)))
        .chain(over)
        .cloned()
        .collect()
}

impl ControlApi {
    /// Applies `edit` to a copy of the launch templates under the account lock, stores the
    /// result and swaps it in; on any error nothing changes.
    pub(super) async fn change_templates<T>(
        &self,
        order: &mut Unlocked,
        edit: impl FnOnce(&mut LaunchTemplates) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        let account = self.account.lock(order).await;
        let mut templates = (*self.account.templates()).clone();
        let out = edit(&mut templates)?;
        let commit = self.account_write(
            crate::store::Commit::default(),
            TEMPLATES,
            super::sync::to_json(&templates),
        );
        let revision = self.persist(commit).await?;
        self.account.set_templates(templates, &account);
        self.account.set_revision(TEMPLATES, revision, &account);
        Ok(out)
    }

    /// `RunInstances`' parameters with the template version `LaunchTemplate.*` names under
    /// them, and what the launch takes from the template; `None` for a launch without a
    /// template. An unknown template or version is EC2's error, never a launch without it.
    pub(super) fn with_launch_template(
        &self,
        query: &QueryRequest,
    ) -> Result<Option<(QueryRequest, TemplateLaunch)>, ControlError> {
        let id = query.get("LaunchTemplate.LaunchTemplateId");
        let name = query.get("LaunchTemplate.LaunchTemplateName");
        if id.is_none() && name.is_none() {
            if query.get("LaunchTemplate.Version").is_some() {
                return Err(ControlError::MissingParameter(
                    "LaunchTemplate.LaunchTemplateId".into(),
                ));
            }
            return Ok(None);
        }
        if id.is_some() && name.is_some() {
            return Err(ControlError::InvalidParameterCombination(
                "Specify either the launch template ID or the launch template name, not both."
                    .into(),
            ));
        }
        let templates = self.account.templates();
        let template = templates.find(id, name)?;
        let version = template.version(query.get("LaunchTemplate.Version"))?;
        let params = overlay(&version.data, query.params());
        let launch = TemplateLaunch {
            id: template.id.clone(),
            version: version.number,
            tags: template.tags.clone(),
            given: query
                .params()
                .iter()
                .map(|(name, _)| top_level(name).to_owned())
                .collect(),
        };
        Ok(Some((QueryRequest::from_params(params), launch)))
    }

    /// `CreateLaunchTemplate` (`LaunchTemplateName`, `VersionDescription`,
    /// `LaunchTemplateData.*`, `TagSpecification.N` of `launch-template`, `DryRun`).
    pub(super) async fn create_launch_template(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let name = query.require("LaunchTemplateName")?;
        let data = template_data(query)?;
        let tags = tag_specifications(query, "launch-template")?;
        let first = NewVersion {
            description: query.get("VersionDescription"),
            created: self.clock_time(),
            data,
        };
        let created_by = self.created_by();
        let template = self
            .change_templates(order, |templates| {
                let template = templates.create(name, created_by, first, tags)?.clone();
                dry_run(query)?;
                Ok(template)
            })
            .await?;
        tracing::info!(template = template.id, name, "launch template created");
        let mut xml = Xml::response("CreateLaunchTemplateResponse", request_id);
        template_xml(&mut xml, "launchTemplate", &template);
        Ok(xml.finish())
    }

    /// `CreateLaunchTemplateVersion` (`LaunchTemplateId` or `LaunchTemplateName`,
    /// `SourceVersion` whose data the new version starts from, `VersionDescription`,
    /// `LaunchTemplateData.*`, `DryRun`).
    pub(super) async fn create_launch_template_version(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let data = template_data(query)?;
        let created = self.clock_time();
        let (template, version) = self
            .change_templates(order, |templates| {
                let template = templates.find(
                    query.get("LaunchTemplateId"),
                    query.get("LaunchTemplateName"),
                )?;
                let id = template.id.clone();
                let data = match query.get("SourceVersion") {
                    Some(source) => overlay(&template.version(Some(source))?.data, &data),
                    None => data,
                };
                let new = NewVersion {
                    description: query.get("VersionDescription"),
                    created,
                    data,
                };
                let version = templates.add_version(&id, new)?.clone();
                dry_run(query)?;
                Ok((templates.by_id(&id)?.clone(), version))
            })
            .await?;
        tracing::info!(
            template = template.id,
            version = version.number,
            "launch template version created"
        );
        let mut xml = Xml::response("CreateLaunchTemplateVersionResponse", request_id);
        version_xml(&mut xml, "launchTemplateVersion", &template, &version);
        Ok(xml.finish())
    }

    /// `ModifyLaunchTemplate` (`LaunchTemplateId` or `LaunchTemplateName`,
    /// `SetDefaultVersion`, `DryRun`).
    pub(super) async fn modify_launch_template(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let template = self
            .change_templates(order, |templates| {
                let id = templates
                    .find(
                        query.get("LaunchTemplateId"),
                        query.get("LaunchTemplateName"),
                    )?
                    .id
                    .clone();
                let template = match query.get("SetDefaultVersion") {
                    Some(version) => templates.set_default(&id, version)?.clone(),
                    None => templates.by_id(&id)?.clone(),
                };
                dry_run(query)?;
                Ok(template)
            })
            .await?;
        tracing::info!(
            template = template.id,
            default = template.default_version,
            "launch template modified"
        );
        let mut xml = Xml::response("ModifyLaunchTemplateResponse", request_id);
        template_xml(&mut xml, "launchTemplate", &template);
        Ok(xml.finish())
    }

    /// `DeleteLaunchTemplate` (`LaunchTemplateId` or `LaunchTemplateName`, `DryRun`).
    pub(super) async fn delete_launch_template(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let template = self
            .change_templates(order, |templates| {
                let id = templates
                    .find(
                        query.get("LaunchTemplateId"),
                        query.get("LaunchTemplateName"),
                    )?
                    .id
                    .clone();
                dry_run(query)?;
                Ok(templates.delete(&id)?)
            })
            .await?;
        tracing::info!(template = template.id, "launch template deleted");
        let mut xml = Xml::response("DeleteLaunchTemplateResponse", request_id);
        template_xml(&mut xml, "launchTemplate", &template);
        Ok(xml.finish())
    }

    /// `DeleteLaunchTemplateVersions` (`LaunchTemplateId` or `LaunchTemplateName`,
    /// `LaunchTemplateVersion.N` of at most 200 version numbers, `DryRun`): each version
    /// deleted or answered with its own error, as EC2 answers (the default version cannot be
    /// deleted; an unknown template fails every version).
    pub(super) async fn delete_launch_template_versions(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let (id, name) = (
            query.get("LaunchTemplateId"),
            query.get("LaunchTemplateName"),
        );
        if id.is_some() && name.is_some() {
            return Err(ControlError::InvalidParameterCombination(
                "Specify either the launch template ID or the launch template name, not both."
                    .into(),
            ));
        }
        let versions = query.list_at_most(
            "LaunchTemplateVersion",
            MAX_DELETED_VERSIONS,
            "launch template versions",
        )?;
        if versions.is_empty() {
            return Err(ControlError::MissingParameter(
                "LaunchTemplateVersion".into(),
            ));
        }
        let numbers = versions
            .iter()
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| TemplateError::VersionMalformed((*v).to_owned()).into())
            })
            .collect::<Result<Vec<u64>, ControlError>>()?;
        let outcomes = self
            .change_templates(order, |templates| {
                let found = match templates.find(id, name) {
                    Ok(template) => Ok((template.id.clone(), template.name.clone())),
                    Err(error @ TemplateError::InvalidParameterValue(_)) => {
                        return Err(error.into())
                    }
                    Err(error) => Err(error),
                };
                dry_run(query)?;
                Ok(numbers
                    .iter()
                    .map(|&number| match &found {
                        Ok((id, name)) => Deleted {
                            id: Some(id.clone()),
                            name: Some(name.clone()),
                            number,
                            refused: templates.delete_version(id, number).err(),
                        },
                        Err(error) => Deleted {
                            id: id.map(str::to_owned),
                            name: name.map(str::to_owned),
                            number,
                            refused: Some(template_refused(error)),
                        },
                    })
                    .collect::<Vec<Deleted>>())
            })
            .await?;
        tracing::info!(
            template = id.or(name),
            deleted = outcomes.iter().filter(|o| o.refused.is_none()).count(),
            refused = outcomes.iter().filter(|o| o.refused.is_some()).count(),
            "launch template versions deleted"
        );
        let mut xml = Xml::response("DeleteLaunchTemplateVersionsResponse", request_id);
        for (set, deleted) in [
            ("successfullyDeletedLaunchTemplateVersionSet", true),
            ("unsuccessfullyDeletedLaunchTemplateVersionSet", false),
        ] {
            xml.open(set);
            for outcome in outcomes.iter().filter(|o| o.refused.is_none() == deleted) {
                xml.open("item");
                if let Some(id) = &outcome.id {
                    xml.leaf("launchTemplateId", id);
                }
                if let Some(name) = &outcome.name {
                    xml.leaf("launchTemplateName", name);
                }
                xml.leaf("versionNumber", outcome.number);
                if let Some(refused) = &outcome.refused {
                    xml.open("responseError")
                        .leaf("code", refused.code)
                        .leaf("message", &refused.message)
                        .close();
                }
                xml.close();
            }
            xml.close();
        }
        Ok(xml.finish())
    }

    /// `DescribeLaunchTemplates` (`LaunchTemplateId.N`, `LaunchTemplateName.N`; filters
    /// `launch-template-name`, `create-time`, `tag:KEY`, `tag-key`; `MaxResults`, `NextToken`).
    pub(super) fn describe_launch_templates(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let templates = self.account.templates();
        let mut named = Vec::new();
        for id in query.list("LaunchTemplateId") {
            named.push(templates.by_id(id)?.id.clone());
        }
        for name in query.list("LaunchTemplateName") {
            named.push(templates.by_name(name)?.id.clone());
        }
        let filters = Filters::new(query, &["launch-template-name", "create-time"])?;
        let page = super::paging::Page::of(query, 1, 200)?;
        let mut shown = Vec::new();
        for template in templates.iter() {
            if !named.is_empty() && !named.contains(&template.id) {
                continue;
            }
            let matches = filters.matches(&template.tags, |name| match name {
                "launch-template-name" => vec![template.name.clone()],
                "create-time" => vec![iso_millis(template.created)],
                _ => Vec::new(),
            });
            if matches {
                shown.push((template.id.clone(), template));
            }
        }
        let (shown, next) = page.cut(shown);
        let mut xml = Xml::response("DescribeLaunchTemplatesResponse", request_id);
        xml.open("launchTemplates");
        for template in shown {
            template_xml(&mut xml, "item", template);
        }
        xml.close();
        if let Some(token) = next {
            xml.leaf("nextToken", token);
        }
        Ok(xml.finish())
    }

    /// `DescribeLaunchTemplateVersions` (`LaunchTemplateId` or `LaunchTemplateName`,
    /// `LaunchTemplateVersion.N` of numbers, `$Latest` and `$Default`, `MinVersion`,
    /// `MaxVersion`; filters `is-default-version`, `image-id`, `instance-type`,
    /// `create-time`; `MaxResults`, `NextToken`). Without a template: the `$Latest` or
    /// `$Default` versions named of every template.
    pub(super) fn describe_launch_template_versions(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let all = self.account.templates();
        let (id, name) = (
            query.get("LaunchTemplateId"),
            query.get("LaunchTemplateName"),
        );
        let templates: Vec<&LaunchTemplate> = match (id, name) {
            (None, None) => all.iter().collect(),
            _ => vec![all.find(id, name)?],
        };
        let wanted = query.list("LaunchTemplateVersion");
        let bound = |name: &str| -> Result<Option<u64>, ControlError> {
            query
                .get(name)
                .map(|v| {
                    v.parse::<u64>().map_err(|_| {
                        ControlError::InvalidParameterValue(format!(
                            "Value ({v}) for parameter {name} is invalid"
                        ))
                    })
                })
                .transpose()
        };
        let (min, max) = (bound("MinVersion")?, bound("MaxVersion")?);
        let filters = Filters::new(
            query,
            &[
                "is-default-version",
                "image-id",
                "instance-type",
                "create-time",
                "ram-disk-id",
                "kernel-id",
            ],
        )?;
        let page = super::paging::Page::of(query, 1, 200)?;
        let mut shown = Vec::new();
        for template in templates {
            let mut versions: Vec<&TemplateVersion> = match wanted.is_empty() {
                true if id.is_none() && name.is_none() => {
                    vec![template.version(Some("$Default"))?]
                }
                true => template.versions.values().collect(),
                false => wanted
                    .iter()
                    .map(|v| template.version(Some(v)))
                    .collect::<Result<_, _>>()?,
            };
            versions.dedup_by_key(|v| v.number);
            for version in versions {
                if min.is_some_and(|m| version.number < m)
                    || max.is_some_and(|m| version.number > m)
                {
                    continue;
                }
                let data = QueryRequest::from_params(version.data.clone());
                let matches = filters.matches(&Default::default(), |name| match name {
                    "is-default-version" => {
                        vec![(version.number == template.default_version).to_string()]
                    }
                    "image-id" => data.get("ImageId").map(str::to_owned).into_iter().collect(),
                    "instance-type" => data
                        .get("InstanceType")
                        .map(str::to_owned)
                        .into_iter()
                        .collect(),
                    "create-time" => vec![iso_millis(version.created)],
                    _ => Vec::new(),
                });
                if matches {
                    let key = format!("{}/{:020}", template.id, version.number);
                    shown.push((key, (template, version)));
                }
            }
        }
        let (shown, next) = page.cut(shown);
        let mut xml = Xml::response("DescribeLaunchTemplateVersionsResponse", request_id);
        xml.open("launchTemplateVersionSet");
        for (template, version) in shown {
            version_xml(&mut xml, "item", template, version);
        }
        xml.close();
        if let Some(token) = next {
            xml.leaf("nextToken", token);
        }
        Ok(xml.finish())
    }

    /// The clock's time now.
    pub(super) fn clock_time(&self) -> time::OffsetDateTime {
        let millis = self.clock.now_millis() as i128;
        time::OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }

    /// `arn:aws:iam::ACCOUNT:root`: who creates what the control API makes.
    fn created_by(&self) -> String {
        let network = self.inventory.network();
        format!("arn:{}:iam::{}:root", network.partition, network.owner_id)
    }
}

/// One version a `DeleteLaunchTemplateVersions` names, and why it was not deleted.
struct Deleted {
    id: Option<String>,
    name: Option<String>,
    number: u64,
    refused: Option<VersionRefused>,
}

/// A template lookup's error as the per-version error of `DeleteLaunchTemplateVersions`.
fn template_refused(error: &TemplateError) -> VersionRefused {
    let code = match error {
        TemplateError::IdMalformed(_) => "launchTemplateIdMalformed",
        TemplateError::NameNotFound(_) => "launchTemplateNameDoesNotExist",
        TemplateError::NameMalformed(_) => "launchTemplateNameMalformed",
        TemplateError::IdNotFound(_) => "launchTemplateIdDoesNotExist",
        _ => "unexpectedError",
    };
    VersionRefused {
        code,
        message: error.to_string(),
    }
}

impl From<TemplateError> for ControlError {
    fn from(error: TemplateError) -> ControlError {
        ControlError::Template(error)
    }
}

/// `<{element}>` of a `LaunchTemplate`.
fn template_xml(xml: &mut Xml, element: &'static str, template: &LaunchTemplate) {
    xml.open(element)
        .leaf("launchTemplateId", &template.id)
        .leaf("launchTemplateName", &template.name)
        .leaf("createTime", iso_millis(template.created))
        .leaf("createdBy", &template.created_by)
        .leaf("defaultVersionNumber", template.default_version)
        .leaf("latestVersionNumber", template.latest_version);
    tag_set(xml, &template.tags);
    operator(xml);
    xml.close();
}

/// `<{element}>` of a `LaunchTemplateVersion`, its data as `ResponseLaunchTemplateData`.
fn version_xml(
    xml: &mut Xml,
    element: &'static str,
    template: &LaunchTemplate,
    version: &TemplateVersion,
) {
    xml.open(element)
        .leaf("launchTemplateId", &template.id)
        .leaf("launchTemplateName", &template.name)
        .leaf("versionNumber", version.number);
    if let Some(description) = &version.description {
        xml.leaf("versionDescription", description);
    }
    xml.leaf("createTime", iso_millis(version.created))
        .leaf("createdBy", &template.created_by)
        .leaf("defaultVersion", version.number == template.default_version);
    data_xml(xml, &QueryRequest::from_params(version.data.clone()));
    operator(xml);
    xml.close();
}

/// `<operator>`: no service provider manages the templates imds keeps.
fn operator(xml: &mut Xml) {
    xml.open("operator").leaf("managed", false).close();
}

/// `<launchTemplateData>` of the parameters in `data`.
fn data_xml(xml: &mut Xml, data: &QueryRequest) {
    xml.open("launchTemplateData");
    for (parameter, element) in [
        ("ImageId", "imageId"),
        ("InstanceType", "instanceType"),
        ("KeyName", "keyName"),
        ("UserData", "userData"),
        ("DisableApiTermination", "disableApiTermination"),
        (
            "InstanceInitiatedShutdownBehavior",
            "instanceInitiatedShutdownBehavior",
        ),
        ("EbsOptimized", "ebsOptimized"),
    ] {
        if let Some(value) = data.get(parameter) {
            xml.leaf(element, value);
        }
    }
    structure(
        xml,
        data,
        "IamInstanceProfile",
        "iamInstanceProfile",
        &[("Arn", "arn"), ("Name", "name")],
    );
    structure(
        xml,
        data,
        "Placement",
        "placement",
        &[
            ("AvailabilityZone", "availabilityZone"),
            ("GroupName", "groupName"),
            ("Tenancy", "tenancy"),
        ],
    );
    structure(
        xml,
        data,
        "Monitoring",
        "monitoring",
        &[("Enabled", "enabled")],
    );
    let options = [
        ("HttpTokens", "httpTokens"),
        ("HttpPutResponseHopLimit", "httpPutResponseHopLimit"),
        ("HttpEndpoint", "httpEndpoint"),
        ("HttpProtocolIpv6", "httpProtocolIpv6"),
        ("InstanceMetadataTags", "instanceMetadataTags"),
    ];
    if options
        .iter()
        .any(|(name, _)| data.get(&format!("MetadataOptions.{name}")).is_some())
    {
        // The options apply to the instances launched from it (EC2 answers `pending` only
        // while a template's options are being applied to running instances: never).
        xml.open("metadataOptions").leaf("state", "applied");
        for (name, element) in options {
            if let Some(value) = data.get(&format!("MetadataOptions.{name}")) {
                xml.leaf(element, value);
            }
        }
        xml.close();
    }
    string_set(xml, data, "SecurityGroupId", "securityGroupIdSet");
    string_set(xml, data, "SecurityGroup", "securityGroupSet");
    let interfaces = data.members("NetworkInterface");
    if !interfaces.is_empty() {
        xml.open("networkInterfaceSet");
        for n in interfaces {
            let get = |name: &str| data.get(&format!("NetworkInterface.{n}.{name}"));
            xml.open("item");
            for (name, element) in [
                ("AssociatePublicIpAddress", "associatePublicIpAddress"),
                ("DeleteOnTermination", "deleteOnTermination"),
                ("Description", "description"),
                ("DeviceIndex", "deviceIndex"),
                ("Ipv6AddressCount", "ipv6AddressCount"),
                ("PrivateIpAddress", "privateIpAddress"),
                (
                    "SecondaryPrivateIpAddressCount",
                    "secondaryPrivateIpAddressCount",
                ),
                ("SubnetId", "subnetId"),
            ] {
                if let Some(value) = get(name) {
                    xml.leaf(element, value);
                }
            }
            let groups = data.list(&format!("NetworkInterface.{n}.SecurityGroupId"));
            if !groups.is_empty() {
                xml.open("groupSet");
                for group in groups {
                    xml.leaf("groupId", group);
                }
                xml.close();
            }
            xml.close();
        }
        xml.close();
    }
    let specifications = data.members("TagSpecification");
    if !specifications.is_empty() {
        xml.open("tagSpecificationSet");
        for n in specifications {
            xml.open("item");
            if let Some(kind) = data.get(&format!("TagSpecification.{n}.ResourceType")) {
                xml.leaf("resourceType", kind);
            }
            xml.open("tagSet");
            for m in data.members(&format!("TagSpecification.{n}.Tag")) {
                let key = data.get(&format!("TagSpecification.{n}.Tag.{m}.Key"));
                let value = data.get(&format!("TagSpecification.{n}.Tag.{m}.Value"));
                xml.open("item")
                    .leaf("key", key.unwrap_or(""))
                    .leaf("value", value.unwrap_or(""))
                    .close();
            }
            xml.close().close();
        }
        xml.close();
    }
    operator(xml);
    xml.close();
}

/// `<{element}>` with the `prefix.NAME` members present.
fn structure(
    xml: &mut Xml,
    data: &QueryRequest,
    prefix: &str,
    element: &'static str,
    members: &[(&str, &str)],
) {
    let present: Vec<(&str, &str)> = members
        .iter()
        .filter_map(|(name, member)| Some((*member, data.get(&format!("{prefix}.{name}"))?)))
        .collect();
    if present.is_empty() {
        return;
    }
    xml.open(element);
    for (member, value) in present {
        xml.leaf(member, value);
    }
    xml.close();
}

/// `<{element}>` with one `<item>` per value of the list `prefix.N`.
fn string_set(xml: &mut Xml, data: &QueryRequest, prefix: &str, element: &'static str) {
    let values = data.list(prefix);
    if values.is_empty() {
        return;
    }
    xml.open(element);
    for value in values {
        xml.leaf("item", value);
    }
    xml.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_parameter_the_request_gives_replaces_the_templates_whole() {
        let template = params(&[
            ("ImageId", "ami-1"),
            ("MetadataOptions.HttpTokens", "required"),
            ("MetadataOptions.HttpPutResponseHopLimit", "2"),
            ("SecurityGroupId.1", "sg-a"),
            ("SecurityGroupId.2", "sg-b"),
        ]);
        let request = params(&[
            ("InstanceType", "t3.micro"),
            ("MetadataOptions.HttpEndpoint", "enabled"),
            ("SecurityGroupId.1", "sg-c"),
        ]);
        let merged = QueryRequest::from_params(overlay(&template, &request));
        assert_eq!(merged.get("ImageId"), Some("ami-1"));
        assert_eq!(merged.get("InstanceType"), Some("t3.micro"));
        assert_eq!(merged.get("MetadataOptions.HttpTokens"), None);
        assert_eq!(merged.get("MetadataOptions.HttpEndpoint"), Some("enabled"));
        assert_eq!(merged.list("SecurityGroupId"), ["sg-c"]);
        merged.each_once().unwrap();
    }

    #[test]
    fn template_data_is_checked_and_unmodelled_parameters_are_refused_by_name() {
        let ok = QueryRequest::parse(
            b"LaunchTemplateData.ImageId=ami-1&LaunchTemplateData.MetadataOptions.HttpTokens=required",
        );
        assert_eq!(template_data(&ok).unwrap().len(), 2);
        let bad = QueryRequest::parse(b"LaunchTemplateData.MetadataOptions.HttpTokens=maybe");
        assert_eq!(
            template_data(&bad).unwrap_err().code(),
            "InvalidParameterValue"
        );
        let unmodelled =
            QueryRequest::parse(b"LaunchTemplateData.ElasticGpuSpecification.1.Type=eg1");
        let refused = template_data(&unmodelled).unwrap_err();
        assert_eq!(refused.code(), "UnsupportedOperation");
        assert!(refused.to_string().contains("ElasticGpuSpecification"));
        for member in [
            "Placement.HostId=h-1",
            "NetworkInterface.1.InterfaceType=efa",
            "MetadataOptions.HttpTokenz=required",
            "ImageId.1=ami-1",
            "SecurityGroupId.x=sg-1",
        ] {
            let body = format!("LaunchTemplateData.{member}");
            let refused = template_data(&QueryRequest::parse(body.as_bytes())).unwrap_err();
            assert_eq!(refused.code(), "UnsupportedOperation", "{member}");
            let name = member.split('=').next().unwrap();
            assert!(refused.to_string().contains(name), "{refused}");
        }
        let kept = QueryRequest::parse(
            b"LaunchTemplateData.NetworkInterface.1.SecurityGroupId.1=sg-1\
              &LaunchTemplateData.NetworkInterface.1.DeviceIndex=0\
              &LaunchTemplateData.Placement.Tenancy=default\
              &LaunchTemplateData.TagSpecification.1.Tag.1.Value=web\
              &LaunchTemplateData.SecurityGroup.1=default",
        );
        assert_eq!(template_data(&kept).unwrap().len(), 5);
    }
}

//! IAM instance profile associations: `AssociateIamInstanceProfile`,
//! `DisassociateIamInstanceProfile`, `ReplaceIamInstanceProfileAssociation` and
//! `DescribeIamInstanceProfileAssociations`. The role under `meta-data/iam/` changes or goes
//! with the association, and its credentials with it. As imds names an instance profile after
//! its role, the profile's name is the role's. An association's `Timestamp` is when it was made,
//! on the service's clock (the launch, for the config file's role), and is kept with it.

use time::OffsetDateTime;

use super::error::ControlError;
use super::query::QueryRequest;
use super::xml::Xml;
use super::{hex, Change, ControlApi};
use std::sync::Arc;

use crate::fleet::instance::{CredentialSource, IamConfig, Instance};
use crate::fleet::lock_order::Unlocked;
use crate::fleet::metadata::render;
use crate::fleet::state::InstanceSlot;

impl ControlApi {
    /// `AssociateIamInstanceProfile`: only for an instance without one.
    pub(super) async fn associate_iam_instance_profile(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let id = query.require("InstanceId")?.to_owned();
        let slot = self.slot(&id)?;
        let root = "AssociateIamInstanceProfileResponse";
        self.associate(
            order,
            &slot,
            query,
            request_id,
            root,
            |current| match current.iam.is_some() {
                true => Err(ControlError::IncorrectState(format!(
                    "There is an existing association for instance {id}"
                ))),
                false => Ok(()),
            },
        )
        .await
    }

    /// `ReplaceIamInstanceProfileAssociation`: another role for the associated instance.
    pub(super) async fn replace_iam_instance_profile_association(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let replaced = query.require("AssociationId")?.to_owned();
        let slot = self.association_owner(&replaced)?;
        let root = "ReplaceIamInstanceProfileAssociationResponse";
        self.associate(order, &slot, query, request_id, root, |current| {
            Self::check_association(&slot, current, &replaced).map(drop)
        })
        .await
    }

    /// A new association of the request's instance profile with `slot`'s instance, once
    /// `allowed` accepts the instance as it is; answered as `root`.
    async fn associate(
        &self,
        order: &mut Unlocked,
        slot: &InstanceSlot,
        query: &QueryRequest,
        request_id: &str,
        root: &'static str,
        allowed: impl FnOnce(&Instance) -> Result<(), ControlError>,
    ) -> Result<String, ControlError> {
        let name = profile_name(query)?;
        let association = (new_association_id(), self.now());
        let change = Change::Role(Some(association.clone()));
        let instance = self
            .change(order, slot, change, |current, config| {
                allowed(current)?;
                set_role(config, Some(name))
            })
            .await?;
        Ok(association_answer(
            root,
            request_id,
            &instance,
            &association,
            "associating",
        ))
    }

    /// `DisassociateIamInstanceProfile`: the instance loses its role.
    pub(super) async fn disassociate_iam_instance_profile(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let id = query.require("AssociationId")?.to_owned();
        let slot = self.association_owner(&id)?;
        let mut before = None;
        self.change(order, &slot, Change::Role(None), |current, config| {
            let associated_at = Self::check_association(&slot, current, &id)?;
            before = Some((current.clone(), associated_at));
            set_role(config, None)
        })
        .await?;
        let (before, associated_at) = before.expect("set by the change");
        Ok(association_answer(
            "DisassociateIamInstanceProfileResponse",
            request_id,
            &before,
            &(id, associated_at),
            "disassociating",
        ))
    }

    /// `DescribeIamInstanceProfileAssociations` with ids and filters `instance-id`, `state`.
    pub(super) fn describe_iam_instance_profile_associations(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let filters = query.filters()?;
        for (name, _) in &filters {
            if !matches!(name.as_str(), "instance-id" | "state") {
                return Err(ControlError::InvalidFilter(name.to_owned()));
            }
        }
        let wanted = query.list("AssociationId");
        let mut found = Vec::new();
        for slot in self.inventory.state.instances() {
            let snapshot = slot.current();
            let instance = &snapshot.instance;
            let Some(association) = Self::association(&slot, instance) else {
                continue;
            };
            let named = wanted.is_empty() || wanted.contains(&association.0.as_str());
            let filtered = filters.iter().all(|(name, values)| {
                let actual = match name.as_str() {
                    "instance-id" => instance.id(),
                    _ => "associated",
                };
                values.iter().any(|v| v == actual)
            });
            if named && filtered {
                found.push((snapshot.clone(), association));
            }
        }
        for id in &wanted {
            if !found.iter().any(|(_, (current, _))| current == id) {
                return Err(ControlError::AssociationNotFound((*id).to_owned()));
            }
        }
        let mut xml = Xml::response("DescribeIamInstanceProfileAssociationsResponse", request_id);
        xml.open("iamInstanceProfileAssociationSet");
        for (snapshot, association) in &found {
            let instance = &snapshot.instance;
            let profile = instance
                .iam
                .as_ref()
                .expect("only instances with a profile");
            xml.open("item");
            association_xml(&mut xml, instance, profile, association, "associated");
            xml.close();
        }
        Ok(xml.finish())
    }

    /// When `association` was made; `InvalidAssociationID.NotFound` unless it is the instance's
    /// current one.
    fn check_association(
        slot: &InstanceSlot,
        current: &Instance,
        association: &str,
    ) -> Result<OffsetDateTime, ControlError> {
        match Self::association(slot, current) {
            Some((id, at)) if id == association => Ok(at),
            _ => Err(ControlError::AssociationNotFound(association.to_owned())),
        }
    }

    /// The instance's association, its id and when it was made: the last one made through the
    /// control API, else (for a role from the config file) one with an id derived from the
    /// instance and role, made at launch.
    fn association(slot: &InstanceSlot, instance: &Instance) -> Option<Association> {
        let profile = instance.iam.as_ref()?;
        let made = slot.changes().role;
        let id = made
            .as_ref()
            .and_then(|r| r.association_id.clone())
            .unwrap_or_else(|| {
                use sha2::{Digest, Sha256};
                let digest = Sha256::digest(format!("{}/{}", instance.id(), profile.role));
                format!("iip-assoc-{}", &hex(&digest)[..17])
            });
        let at = made.and_then(|r| r.associated_at);
        Some((id, at.unwrap_or(instance.config.pending_time)))
    }

    /// The instance whose current association is `association`.
    fn association_owner(&self, association: &str) -> Result<Arc<InstanceSlot>, ControlError> {
        self.inventory
            .state
            .instances()
            .into_iter()
            .find(|slot| {
                Self::association(slot, &slot.current().instance)
                    .is_some_and(|(id, _)| id == association)
            })
            .ok_or_else(|| ControlError::AssociationNotFound(association.to_owned()))
    }

    /// The clock's time, to the second (as EC2 shows it).
    fn now(&self) -> OffsetDateTime {
        let seconds = (self.clock.now_millis() / 1000) as i64;
        OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// A new association id, shaped like EC2's.
fn new_association_id() -> String {
    format!("iip-assoc-{}", &hex(&rand::random::<[u8; 9]>())[..17])
}

/// The profile named by `IamInstanceProfile.Name` or `.Arn` (`...:instance-profile/NAME`).
fn profile_name(query: &QueryRequest) -> Result<String, ControlError> {
    match (
        query.get("IamInstanceProfile.Name"),
        query.get("IamInstanceProfile.Arn"),
    ) {
        (Some(name), _) => Ok(name.to_owned()),
        (None, Some(arn)) => arn
            .split_once(":instance-profile/")
            .map(|(_, path)| path.rsplit('/').next().unwrap_or(path).to_owned())
            .filter(|name| !name.is_empty())
            .ok_or_else(|| {
                ControlError::InvalidParameterValue(format!(
                    "Value ({arn}) for parameter iamInstanceProfile.arn is invalid. Invalid ARN"
                ))
            }),
        (None, None) => Err(ControlError::MissingParameter("IamInstanceProfile".into())),
    }
}

/// Gives the instance the role `name` (generated credentials), or none.
fn set_role(
    config: &mut crate::fleet::instance::InstanceConfig,
    name: Option<String>,
) -> Result<(), ControlError> {
    if config.iam.credentials == CredentialSource::Sts {
        return Err(ControlError::InvalidParameterCombination(
            "this instance's role credentials come from STS (credentials = \"sts\" in its config file); change role_arn there".into(),
        ));
    }
    config.iam = IamConfig {
        role: name,
        credential_lifetime_seconds: config.iam.credential_lifetime_seconds,
        ..IamConfig::default()
    };
    Ok(())
}

/// An association's id and when it was made.
type Association = (String, OffsetDateTime);

fn association_xml(
    xml: &mut Xml,
    instance: &Instance,
    profile: &crate::fleet::instance::IamProfile,
    (id, at): &Association,
    state: &str,
) {
    xml.leaf("associationId", id)
        .leaf("instanceId", instance.id())
        .open("iamInstanceProfile")
        .leaf("arn", &profile.instance_profile_arn)
        .leaf("id", &profile.instance_profile_id)
        .close()
        .leaf("state", state)
        .leaf("timestamp", render::iso_seconds(*at));
}

fn association_answer(
    root: &'static str,
    request_id: &str,
    instance: &Instance,
    association: &Association,
    state: &str,
) -> String {
    let mut xml = Xml::response(root, request_id);
    xml.open("iamInstanceProfileAssociation");
    if let Some(profile) = &instance.iam {
        association_xml(&mut xml, instance, profile, association, state);
    }
    xml.finish()
}

//! `CreateKeyPair`, `ImportKeyPair`, `DescribeKeyPairs` and `DeleteKeyPair`: OpenSSH public
//! keys (RSA or ED25519) that instances launched with `KeyName` serve at
//! `public-keys/0/openssh-key`; a created key's private half is returned once and never kept.

use base64::Engine;
use time::OffsetDateTime;

use super::error::ControlError;
use super::query::QueryRequest;
use super::vpc::{dry_run, tag_set, tag_specifications, Filters};
use super::xml::Xml;
use super::ControlApi;
use crate::fleet::key_material::{self, KeyFormat};
use crate::fleet::lock_order::Unlocked;
use crate::fleet::network::{KeyPair, KeyType, NetworkError};

impl ControlApi {
    /// `ImportKeyPair` (`KeyName`, `PublicKeyMaterial`: base64 of the OpenSSH public key, as the
    /// CLI sends `fileb://key.pub`; `TagSpecification.N` of `key-pair`; `DryRun`).
    pub(super) async fn import_key_pair(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let name = query.require("KeyName")?;
        let material = public_key_text(query.require("PublicKeyMaterial")?)?;
        let tags = tag_specifications(query, "key-pair")?;
        let millis = self.clock.now_millis() as i128;
        let created = OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let pair = self
            .change_network(order, |network| {
                let pair = network
                    .import_key_pair(name, &material, created, tags)?
                    .clone();
                dry_run(query)?;
                Ok(pair)
            })
            .await?;
        tracing::info!(key = pair.name, id = pair.id, "key pair imported");
        let mut xml = Xml::response("ImportKeyPairResponse", request_id);
        xml.leaf("keyFingerprint", &pair.fingerprint)
            .leaf("keyName", &pair.name)
            .leaf("keyPairId", &pair.id);
        tag_set(&mut xml, &pair.tags);
        Ok(xml.finish())
    }

    /// `CreateKeyPair` (`KeyName`, `KeyType` `rsa` (default) or `ed25519`, `KeyFormat` `pem`
    /// (default) or `ppk`, `TagSpecification.N` of `key-pair`, `DryRun`): the private key is in
    /// this answer only; the public half is stored before it is sent.
    pub(super) async fn create_key_pair(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let name = query.require("KeyName")?;
        let key_type = match query.get("KeyType").unwrap_or("rsa") {
            "rsa" => KeyType::Rsa,
            "ed25519" => KeyType::Ed25519,
            other => {
                return Err(ControlError::InvalidParameterValue(format!(
                    "Value ({other}) for parameter keyType is invalid. Valid values: rsa, ed25519"
                )))
            }
        };
        let format = match query.get("KeyFormat").unwrap_or("pem") {
            "pem" => KeyFormat::Pem,
            "ppk" => KeyFormat::Ppk,
            other => {
                return Err(ControlError::InvalidParameterValue(format!(
                    "Value ({other}) for parameter keyFormat is invalid. Valid values: pem, ppk"
                )))
            }
        };
        let tags = tag_specifications(query, "key-pair")?;
        if self.inventory.network().key_pair(name).is_ok() {
            return Err(NetworkError::KeyPairDuplicate(name.to_owned()).into());
        }
        // RSA generation takes a while: beside the runtime's threads, before any lock.
        let owned = name.to_owned();
        let key =
            tokio::task::spawn_blocking(move || key_material::create(key_type, format, &owned))
                .await
                .map_err(|error| {
                    tracing::error!(%error, "generating a key pair failed");
                    ControlError::InternalError
                })?
                .map_err(|error| {
                    tracing::error!(%error, "generating a key pair failed");
                    ControlError::InternalError
                })?;
        let created = self.clock_time();
        let pair = self
            .change_network(order, |network| {
                let pair = network
                    .add_created_key_pair(
                        name,
                        &key.openssh,
                        key.fingerprint.clone(),
                        created,
                        tags,
                    )?
                    .clone();
                dry_run(query)?;
                Ok(pair)
            })
            .await?;
        tracing::info!(key = pair.name, id = pair.id, "key pair created");
        let mut xml = Xml::response("CreateKeyPairResponse", request_id);
        xml.leaf("keyFingerprint", &pair.fingerprint)
            .leaf("keyMaterial", &key.private)
            .leaf("keyName", &pair.name)
            .leaf("keyPairId", &pair.id);
        tag_set(&mut xml, &pair.tags);
        Ok(xml.finish())
    }

    /// `DescribeKeyPairs` (`KeyName.N`, `KeyPairId.N`, `IncludePublicKey`; filters `key-name`,
    /// `key-pair-id`, `fingerprint`, `key-type`, `tag:KEY`, `tag-key`).
    pub(super) fn describe_key_pairs(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let network = self.inventory.network();
        let names = query.list("KeyName");
        for name in &names {
            network.key_pair(name)?;
        }
        let ids = query.list("KeyPairId");
        for id in &ids {
            network.key_pair_by_id(id)?;
        }
        let filters = Filters::new(
            query,
            &["key-name", "key-pair-id", "fingerprint", "key-type"],
        )?;
        let include_public_key = query
            .get("IncludePublicKey")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let mut xml = Xml::response("DescribeKeyPairsResponse", request_id);
        xml.open("keySet");
        for pair in network.key_pairs() {
            if !names.is_empty() && !names.contains(&pair.name.as_str()) {
                continue;
            }
            if !ids.is_empty() && !ids.contains(&pair.id.as_str()) {
                continue;
            }
            let shown = filters.matches(&pair.tags, |name| match name {
                "key-name" => vec![pair.name.clone()],
                "key-pair-id" => vec![pair.id.clone()],
                "fingerprint" => vec![pair.fingerprint.clone()],
                _ => vec![pair.key_type.as_str().to_owned()],
            });
            if shown {
                xml.open("item");
                key_pair_xml(&mut xml, pair, include_public_key);
                xml.close();
            }
        }
        Ok(xml.finish())
    }

    /// `DeleteKeyPair` (`KeyName` or `KeyPairId`; `DryRun`): succeeds for a key that does not
    /// exist, as EC2 does.
    pub(super) async fn delete_key_pair(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let (name, id) = (query.get("KeyName"), query.get("KeyPairId"));
        if name.is_none() && id.is_none() {
            return Err(ControlError::MissingParameter("KeyName".into()));
        }
        let removed = self
            .change_network(order, |network| {
                dry_run(query)?;
                Ok(network.delete_key_pair(name, id))
            })
            .await?;
        let mut xml = Xml::response("DeleteKeyPairResponse", request_id);
        xml.leaf("return", true);
        if let Some(pair) = removed {
            tracing::info!(key = pair.name, "key pair deleted");
            xml.leaf("keyPairId", &pair.id);
        }
        Ok(xml.finish())
    }
}

/// The OpenSSH key line in `PublicKeyMaterial`: base64 (what SDKs send for a blob), or the
/// line itself from clients that send it as text.
fn public_key_text(material: &str) -> Result<String, ControlError> {
    let bad = || NetworkError::KeyFormat("Key is not in valid OpenSSH public key format".into());
    if material.trim_start().starts_with("ssh-") {
        return Ok(material.to_owned());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(material.trim())
        .map_err(|_| bad())?;
    Ok(String::from_utf8(bytes).map_err(|_| bad())?)
}

fn key_pair_xml(xml: &mut Xml, pair: &KeyPair, include_public_key: bool) {
    xml.leaf("keyPairId", &pair.id)
        .leaf("keyType", pair.key_type.as_str());
    tag_set(xml, &pair.tags);
    if include_public_key {
        xml.leaf("publicKey", &pair.public_key);
    }
    xml.leaf("createTime", iso_millis(pair.created))
        .leaf("keyName", &pair.name)
        .leaf("keyFingerprint", &pair.fingerprint);
}

/// `2026-11-02T08:14:29.000Z`, as EC2 writes `createTime`.
pub(super) fn iso_millis(at: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::FormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_default()
}

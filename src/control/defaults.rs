//! `GetInstanceMetadataDefaults` and `ModifyInstanceMetadataDefaults`: the account-level IMDS
//! defaults of the Region, including `HttpTokensEnforced`, the guardrail that refuses to turn
//! IMDSv1 back on (`ModifyInstanceMetadataOptions` with `HttpTokens=optional`).

use super::error::ControlError;
use super::query::QueryRequest;
use super::xml::Xml;
use super::ControlApi;
use crate::fleet::lock_order::Unlocked;
use crate::fleet::options::{HopLimit, HttpTokens, Switch};

/// The account's defaults; `None` is `no-preference`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MetadataDefaults {
    /// `HttpTokens`.
    pub http_tokens: Option<HttpTokens>,
    /// `HttpPutResponseHopLimit` (`-1` clears it).
    pub hop_limit: Option<HopLimit>,
    /// `HttpEndpoint`.
    pub http_endpoint: Option<Switch>,
    /// `InstanceMetadataTags`.
    pub instance_metadata_tags: Option<Switch>,
    /// `HttpTokensEnforced`: when enabled, IMDSv1 cannot be turned on.
    pub http_tokens_enforced: Option<bool>,
}

impl ControlApi {
    /// `GetInstanceMetadataDefaults`: the values set, `no-preference` ones left out.
    pub(super) fn get_instance_metadata_defaults(&self, request_id: &str) -> String {
        let d = self.account.defaults();
        let mut xml = Xml::response("GetInstanceMetadataDefaultsResponse", request_id);
        xml.open("accountLevel");
        if let Some(tokens) = d.http_tokens {
            xml.leaf("httpTokens", super::instances::tokens(tokens));
        }
        if let Some(hops) = d.hop_limit {
            xml.leaf("httpPutResponseHopLimit", hops);
        }
        if let Some(endpoint) = d.http_endpoint {
            xml.leaf("httpEndpoint", super::instances::switch(endpoint));
        }
        if let Some(tags) = d.instance_metadata_tags {
            xml.leaf("instanceMetadataTags", super::instances::switch(tags));
        }
        xml.leaf("managedBy", "account");
        if let Some(enforced) = d.http_tokens_enforced {
            xml.leaf(
                "httpTokensEnforced",
                if enforced { "enabled" } else { "disabled" },
            );
        }
        xml.finish()
    }

    /// `ModifyInstanceMetadataDefaults`: omitted values unchanged, `no-preference` (or `-1`)
    /// clears one.
    pub(super) async fn modify_instance_metadata_defaults(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        // Read, change and write under the change lock, or two calls lose one's update.
        let account = self.account.lock(order).await;
        let mut d = self.account.defaults();
        if let Some(value) = query.get("HttpTokens") {
            d.http_tokens = match value {
                "no-preference" => None,
                other => Some(super::instances::parse_tokens(other)?),
            };
        }
        if let Some(value) = query.get("HttpPutResponseHopLimit") {
            d.hop_limit = match value {
                "-1" => None,
                other => Some(other.parse::<HopLimit>().map_err(|_| {
                    ControlError::InvalidParameterValue(format!(
                        "The HttpPutResponseHopLimit value ({other}) is invalid. Specify an integer from 1 to 64, or -1 for no preference."
                    ))
                })?),
            };
        }
        for (name, slot) in [
            ("HttpEndpoint", &mut d.http_endpoint),
            ("InstanceMetadataTags", &mut d.instance_metadata_tags),
        ] {
            if let Some(value) = query.get(name) {
                *slot = match value {
                    "no-preference" => None,
                    other => Some(super::instances::parse_switch(name, other)?),
                };
            }
        }
        if let Some(value) = query.get("HttpTokensEnforced") {
            d.http_tokens_enforced = match value {
                "no-preference" => None,
                "enabled" => Some(true),
                "disabled" => Some(false),
                other => {
                    return Err(ControlError::InvalidParameterValue(format!(
                        "Value ({other}) for parameter HttpTokensEnforced is invalid. Valid values: enabled, disabled, no-preference"
                    )))
                }
            };
        }
        if query.dry_run() {
            return Err(ControlError::DryRunOperation);
        }
        let shown = super::sync::to_json(&d);
        let commit = self.account_write(
            crate::store::Commit::default(),
            super::DEFAULTS,
            shown.clone(),
        );
        let revision = self.persist(commit).await?;
        self.account.set_defaults(d, &account);
        self.account
            .set_revision(super::DEFAULTS, revision, &account);
        tracing::info!(defaults = shown, "instance metadata defaults changed");
        let mut xml = Xml::response("ModifyInstanceMetadataDefaultsResponse", request_id);
        xml.leaf("return", true);
        Ok(xml.finish())
    }

    /// `commit`, valid only while the defaults are still the ones read (their revision as
    /// last stored or learned): a change decided on them conflicts with another host's
    /// change of them, and is retried on the newer ones.
    pub(super) fn decided_on_defaults(&self, commit: crate::store::Commit) -> crate::store::Commit {
        commit.unchanged(super::DEFAULTS, self.account.revision(super::DEFAULTS))
    }
}

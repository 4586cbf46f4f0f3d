//! Faults through the control plane (imds' actions, in the Query style): `InjectFault`
//! (`Path`, `Method`, `Latency` such as `500ms`, `Status`, `RateLimit`, `Reset=true`,
//! `NoAnswer=true`, `Count`, `Probability`, optionally `FaultId`), `DescribeFaults` (each with how
//! often it fired) and `ClearFaults` (`FaultId.N`, or all). Faults live in memory: the config
//! file's are set again at each start.

use super::error::ControlError;
use super::query::QueryRequest;
use super::xml::Xml;
use super::ControlApi;
use crate::fleet::faults::FaultConfig;
use crate::fleet::lock_order::Unlocked;

impl ControlApi {
    /// `InjectFault`.
    pub(super) async fn inject_fault(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let number = |name: &str| {
            query
                .get(name)
                .map(|text| {
                    text.parse::<u64>().map_err(|_| {
                        ControlError::InvalidParameterValue(format!(
                            "Value ({text}) for parameter {name} is invalid: expected a whole number"
                        ))
                    })
                })
                .transpose()
        };
        let flag = |name: &str| match query.get(name) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ControlError::InvalidParameterValue(format!(
                "Value ({other}) for parameter {name} must be true or false"
            ))),
        };
        let latency_ms = query
            .get("Latency")
            .map(|text| {
                humantime::parse_duration(text)
                    .map(|d| d.as_millis() as u64)
                    .map_err(|e| {
                        ControlError::InvalidParameterValue(format!(
                            "Value ({text}) for parameter Latency: {e} (e.g. 500ms, 2s)"
                        ))
                    })
            })
            .transpose()?;
        let probability = query
            .get("Probability")
            .map(|text| {
                text.parse::<f64>().map_err(|_| {
                    ControlError::InvalidParameterValue(format!(
                        "Value ({text}) for parameter Probability must be a number from 0 to 1"
                    ))
                })
            })
            .transpose()?;
        let config = FaultConfig {
            id: query.get("FaultId").map(str::to_owned),
            path: query.get("Path").unwrap_or("*").to_owned(),
            method: query.get("Method").map(str::to_ascii_uppercase),
            latency_ms,
            status: number("Status")?.map(|s| s.min(u64::from(u16::MAX)) as u16),
            rate_limit: number("RateLimit")?.map(|r| r.min(u64::from(u32::MAX)) as u32),
            reset: flag("Reset")?,
            no_answer: flag("NoAnswer")?,
            count: number("Count")?,
            probability,
        };
        let slot = self.target(query)?;
        let held = slot.lock(order).await;
        self.still_served(&slot)?;
        let faults = slot
            .faults()
            .with(config)
            .map_err(|e| ControlError::InvalidParameterValue(e.to_string()))?;
        let listed = faults.list();
        let added = listed.last().expect("just added");
        tracing::info!(
            instance = %slot.id(),
            fault = super::sync::to_json(&added.config),
            "fault injected"
        );
        let mut xml = Xml::response("InjectFaultResponse", request_id);
        xml.open("fault");
        fault_xml(&mut xml, &added.config, added.fired);
        xml.close();
        slot.set_faults(faults, &held);
        Ok(xml.finish())
    }

    /// `DescribeFaults`.
    pub(super) fn describe_faults(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let slot = self.target(query)?;
        let mut xml = Xml::response("DescribeFaultsResponse", request_id);
        xml.open("faultSet");
        for listed in slot.faults().list() {
            xml.open("item");
            fault_xml(&mut xml, &listed.config, listed.fired);
            xml.close();
        }
        xml.close();
        Ok(xml.finish())
    }

    /// `ClearFaults`.
    pub(super) async fn clear_faults(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let ids = query.list("FaultId");
        let slot = self.target(query)?;
        let held = slot.lock(order).await;
        self.still_served(&slot)?;
        let (faults, unknown) = slot.faults().without(&ids);
        if let Some(id) = unknown.first() {
            return Err(ControlError::InvalidParameterValue(format!(
                "The fault ID '{id}' does not exist"
            )));
        }
        slot.set_faults(faults, &held);
        tracing::info!(instance = %slot.id(), ?ids, "faults cleared");
        let mut xml = Xml::response("ClearFaultsResponse", request_id);
        xml.leaf("return", true);
        Ok(xml.finish())
    }
}

fn fault_xml(xml: &mut Xml, config: &FaultConfig, fired: u64) {
    xml.leaf("faultId", config.id.as_deref().unwrap_or(""))
        .leaf("path", &config.path);
    let optional = [
        ("method", config.method.clone()),
        ("latencyMs", config.latency_ms.map(|v| v.to_string())),
        ("status", config.status.map(|v| v.to_string())),
        ("rateLimit", config.rate_limit.map(|v| v.to_string())),
        ("reset", config.reset.then(|| "true".to_owned())),
        ("noAnswer", config.no_answer.then(|| "true".to_owned())),
        ("count", config.count.map(|v| v.to_string())),
        ("probability", config.probability.map(|v| v.to_string())),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            xml.leaf(name, value);
        }
    }
    xml.leaf("fired", fired);
}

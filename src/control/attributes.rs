//! `DescribeInstanceAttribute`, `ModifyInstanceAttribute` and `GetConsoleOutput`, with EC2's
//! state rules: the instance type and user data change only while the instance is stopped,
//! `DisableApiTermination` and `InstanceInitiatedShutdownBehavior` in any state but terminated
//! (and `TerminateInstances` is refused while termination is disabled). A changed type or user
//! data is what the guest API serves once the instance starts again.

use base64::Engine;

use super::error::ControlError;
use super::query::QueryRequest;
use super::xml::Xml;
use super::{Change, ControlApi};
use crate::fleet::changes::InstanceAttributes;
use crate::fleet::lifecycle::Transition;
use crate::fleet::lock_order::Unlocked;

/// The attributes `RunInstances` sets: its `ClientToken`, `DisableApiTermination` and
/// `InstanceInitiatedShutdownBehavior`.
pub(super) fn at_launch(
    query: &QueryRequest,
    client_token: Option<&str>,
) -> Result<InstanceAttributes, ControlError> {
    Ok(InstanceAttributes {
        client_token: client_token.map(str::to_owned),
        disable_api_termination: match query.get("DisableApiTermination") {
            Some(value) => boolean("DisableApiTermination", value)?,
            None => false,
        },
        terminate_on_shutdown: match query.get("InstanceInitiatedShutdownBehavior") {
            Some(value) => shutdown_behavior(value)?,
            None => false,
        },
        ..InstanceAttributes::default()
    })
}

fn boolean(name: &str, value: &str) -> Result<bool, ControlError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ControlError::InvalidParameterValue(format!(
            "Value ({value}) for parameter {name} is invalid. Expected: 'true' or 'false'."
        ))),
    }
}

/// `true` for `terminate`, `false` for `stop`.
fn shutdown_behavior(value: &str) -> Result<bool, ControlError> {
    match value {
        "terminate" => Ok(true),
        "stop" => Ok(false),
        _ => Err(ControlError::InvalidParameterValue(format!(
            "Value ({value}) for parameter instanceInitiatedShutdownBehavior is invalid. Valid values: stop, terminate"
        ))),
    }
}

/// One attribute change `ModifyInstanceAttribute` asks for.
enum Modification {
    InstanceType(String),
    UserData(String),
    DisableApiTermination(bool),
    ShutdownBehavior(bool),
}

/// The change a `ModifyInstanceAttribute` asks for: `Attribute` and `Value`, or one of the
/// structured `NAME.Value` parameters.
fn modification(query: &QueryRequest) -> Result<Modification, ControlError> {
    let given = |name: &str| query.get(&format!("{name}.Value"));
    let (name, value) = match query.get("Attribute") {
        Some(attribute) => (attribute.to_owned(), query.require("Value")?.to_owned()),
        None => {
            let found = [
                ("InstanceType", "instanceType"),
                ("UserData", "userData"),
                ("DisableApiTermination", "disableApiTermination"),
                (
                    "InstanceInitiatedShutdownBehavior",
                    "instanceInitiatedShutdownBehavior",
                ),
            ]
            .into_iter()
            .find_map(|(parameter, attribute)| Some((attribute.to_owned(), given(parameter)?)));
            match found {
                Some((name, value)) => (name, value.to_owned()),
                None => {
                    return Err(ControlError::Unsupported(
                        "ModifyInstanceAttribute in imds changes instanceType, userData, disableApiTermination or instanceInitiatedShutdownBehavior".into(),
                    ))
                }
            }
        }
    };
    match name.as_str() {
        "instanceType" => Ok(Modification::InstanceType(value)),
        "userData" => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .map_err(|_| {
                    ControlError::InvalidParameterValue("Invalid user data: not base64".into())
                })?;
            let text = String::from_utf8(bytes).map_err(|_| {
                ControlError::InvalidParameterValue(
                    "Invalid user data: imds serves user data that is UTF-8 text".into(),
                )
            })?;
            Ok(Modification::UserData(text))
        }
        "disableApiTermination" => Ok(Modification::DisableApiTermination(boolean(
            "DisableApiTermination",
            &value,
        )?)),
        "instanceInitiatedShutdownBehavior" => {
            Ok(Modification::ShutdownBehavior(shutdown_behavior(&value)?))
        }
        other => Err(ControlError::Unsupported(format!(
            "ModifyInstanceAttribute of {other} is not modelled by imds"
        ))),
    }
}

impl ControlApi {
    /// `DescribeInstanceAttribute` (`InstanceId`, `Attribute`).
    pub(super) fn describe_instance_attribute(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let slot = self.slot(query.require("InstanceId")?)?;
        let attribute = query.require("Attribute")?;
        let snapshot = slot.current();
        let instance = &snapshot.instance;
        let c = &instance.config;
        let attributes = slot.changes().attributes.unwrap_or_default();
        let kind = crate::fleet::instance_types::find(&c.instance_type);
        let nitro = kind.map_or(c.system.as_deref() == Some("nitro"), |k| k.ena_supported());
        let mut xml = Xml::response("DescribeInstanceAttributeResponse", request_id);
        xml.leaf("instanceId", instance.id());
        let value = |xml: &mut Xml, element: &'static str, value: &dyn std::fmt::Display| {
            xml.open(element).leaf("value", value).close();
        };
        match attribute {
            "instanceType" => value(&mut xml, "instanceType", &c.instance_type),
            "userData" => {
                xml.open("userData");
                if !c.user_data.is_empty() {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(&c.user_data);
                    xml.leaf("value", encoded);
                }
                xml.close();
            }
            "disableApiTermination" => value(
                &mut xml,
                "disableApiTermination",
                &attributes.disable_api_termination,
            ),
            "instanceInitiatedShutdownBehavior" => value(
                &mut xml,
                "instanceInitiatedShutdownBehavior",
                &match attributes.terminate_on_shutdown {
                    true => "terminate",
                    false => "stop",
                },
            ),
            "rootDeviceName" => {
                let root = c
                    .block_device_mapping
                    .get("root")
                    .cloned()
                    .unwrap_or_default();
                value(&mut xml, "rootDeviceName", &root)
            }
            "blockDeviceMapping" => {
                xml.open("blockDeviceMapping");
                let launched = crate::fleet::metadata::render::iso_seconds(c.pending_time);
                for (device, volume) in super::instance_xml::ebs_devices(instance) {
                    xml.open("item")
                        .leaf("deviceName", device)
                        .open("ebs")
                        .leaf("volumeId", volume)
                        .leaf("status", "attached")
                        .leaf("attachTime", &launched)
                        .leaf("deleteOnTermination", true)
                        .close()
                        .close();
                }
                xml.close();
            }
            "groupSet" => {
                xml.open("groupSet");
                for group in &instance.primary_interface().config.security_groups {
                    xml.open("item")
                        .leaf("groupId", &group.id)
                        .leaf("groupName", &group.name)
                        .close();
                }
                xml.close();
            }
            "sourceDestCheck" => value(&mut xml, "sourceDestCheck", &true),
            "ebsOptimized" => value(&mut xml, "ebsOptimized", &nitro),
            "enaSupport" => value(&mut xml, "enaSupport", &nitro),
            "disableApiStop" => value(&mut xml, "disableApiStop", &false),
            "productCodes" => {
                xml.open("productCodes");
                for code in &c.product_codes {
                    xml.open("item")
                        .leaf("productCode", code)
                        .leaf("type", "marketplace")
                        .close();
                }
                xml.close();
            }
            "kernel" => {
                xml.open("kernel");
                if let Some(kernel) = &c.kernel_id {
                    xml.leaf("value", kernel);
                }
                xml.close();
            }
            "ramdisk" => {
                xml.open("ramdisk");
                if let Some(ramdisk) = &c.ramdisk_id {
                    xml.leaf("value", ramdisk);
                }
                xml.close();
            }
            other => {
                return Err(ControlError::InvalidParameterValue(format!(
                    "Value ({other}) for parameter attribute is invalid. Unknown attribute."
                )))
            }
        }
        Ok(xml.finish())
    }

    /// `ModifyInstanceAttribute` (`InstanceId`; `Attribute` and `Value`, or `NAME.Value`;
    /// `DryRun`).
    pub(super) async fn modify_instance_attribute(
        &self,
        query: &QueryRequest,
        request_id: &str,
        order: &mut Unlocked,
    ) -> Result<String, ControlError> {
        let slot = self.slot(query.require("InstanceId")?)?;
        let modification = modification(query)?;
        let mut attributes = slot.changes().attributes.unwrap_or_default();
        let stopped_only = matches!(
            modification,
            Modification::InstanceType(_) | Modification::UserData(_)
        );
        let now = self.clock.now_millis();
        let lifecycle = slot.changes().lifecycle;
        let stopped = lifecycle.is_some_and(|l| {
            l.last == Transition::Stop
                && l.state(now) == crate::fleet::lifecycle::InstanceState::Stopped
        });
        if stopped_only && !stopped && lifecycle.is_none_or(|l| l.last != Transition::Terminate) {
            return Err(ControlError::IncorrectInstanceState(format!(
                "The instance '{}' is not in the 'stopped' state.",
                slot.id()
            )));
        }
        match &modification {
            Modification::InstanceType(kind) => attributes.instance_type = Some(kind.clone()),
            Modification::UserData(text) => attributes.user_data = Some(text.clone()),
            Modification::DisableApiTermination(on) => attributes.disable_api_termination = *on,
            Modification::ShutdownBehavior(terminate) => {
                attributes.terminate_on_shutdown = *terminate
            }
        }
        self.change(order, &slot, Change::Attributes(attributes), |_, config| {
            match &modification {
                Modification::InstanceType(kind) => config.instance_type = kind.clone(),
                Modification::UserData(text) => config.user_data = text.clone(),
                _ => {}
            }
            super::vpc::dry_run(query)
        })
        .await?;
        tracing::info!(instance = %slot.id(), "instance attribute modified");
        Ok(super::vpc::done(
            "ModifyInstanceAttributeResponse",
            request_id,
        ))
    }

    /// `GetConsoleOutput` (`InstanceId`): imds runs no guest, so the output is empty.
    pub(super) fn get_console_output(
        &self,
        query: &QueryRequest,
        request_id: &str,
    ) -> Result<String, ControlError> {
        let slot = self.slot(query.require("InstanceId")?)?;
        let mut xml = Xml::response("GetConsoleOutputResponse", request_id);
        xml.leaf("instanceId", slot.id().as_str())
            .leaf(
                "timestamp",
                crate::fleet::metadata::render::iso_seconds(self.clock_time()),
            )
            .leaf("output", "");
        Ok(xml.finish())
    }
}

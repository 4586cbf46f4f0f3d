//! The console's actions, each the EC2 Query request it stands for: built as the AWS CLI would
//! send it and dispatched through the control API, so the same validation, guardrail policies
//! and change path apply, and a refusal carries EC2's code and message.

use http::{header, HeaderMap};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ConsoleError;
use crate::control::query::QueryRequest;
use crate::control::{request_id, ControlApi};

/// One thing the console asks of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    tag = "action",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Action {
    /// `ModifyInstanceMetadataOptions HttpTokens=required`.
    RequireImdsv2 {
        /// The instance.
        instance_id: String,
    },
    /// `ModifyInstanceMetadataOptions HttpPutResponseHopLimit=N`.
    SetHopLimit {
        /// The instance.
        instance_id: String,
        /// The new hop limit (EC2 takes 1 to 64).
        hop_limit: u32,
    },
    /// `ModifyInstanceMetadataOptions HttpEndpoint=enabled|disabled`.
    SetEndpoint {
        /// The instance.
        instance_id: String,
        /// Whether the endpoint answers.
        enabled: bool,
    },
    /// `SendSpotInstanceInterruptions` with EC2's two-minute notice.
    SendSpotInterruption {
        /// The instance.
        instance_id: String,
    },
    /// `InjectFault`.
    InjectFault {
        /// The instance.
        instance_id: String,
        /// The paths it applies to (`*` when empty).
        #[serde(default)]
        path: String,
        /// Answer this status instead.
        status: Option<u16>,
        /// Delay answers by this long (`500ms`, `2s`).
        latency: Option<String>,
        /// Fire this many times, then stop.
        count: Option<u64>,
        /// Reset the connection instead of answering.
        #[serde(default)]
        reset: bool,
    },
    /// `ClearFaults`: one fault, or all of them.
    ClearFaults {
        /// The instance.
        instance_id: String,
        /// The fault, or every fault when absent.
        fault_id: Option<String>,
    },
    /// `TerminateInstances`.
    Terminate {
        /// The instance.
        instance_id: String,
    },
}

/// `BadRequest` unless the request says it is JSON, which a cross-site HTML form cannot.
pub fn require_json(headers: &HeaderMap) -> Result<(), ConsoleError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    match json {
        true => Ok(()),
        false => Err(ConsoleError::BadRequest(
            "Send console requests as application/json.".into(),
        )),
    }
}

impl Action {
    /// The action a JSON body asks for.
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Action, ConsoleError> {
        require_json(headers)?;
        serde_json::from_slice(body)
            .map_err(|e| ConsoleError::BadRequest(format!("Not a console action: {e}")))
    }

    /// Its EC2 Query parameters, `Action` first.
    pub fn query(&self) -> Vec<(&'static str, String)> {
        let modify = |id: &str, name: &'static str, value: String| {
            vec![
                ("Action", "ModifyInstanceMetadataOptions".to_owned()),
                ("InstanceId", id.to_owned()),
                (name, value),
            ]
        };
        let mut params = match self {
            Action::RequireImdsv2 { instance_id } => {
                modify(instance_id, "HttpTokens", "required".into())
            }
            Action::SetHopLimit {
                instance_id,
                hop_limit,
            } => modify(
                instance_id,
                "HttpPutResponseHopLimit",
                hop_limit.to_string(),
            ),
            Action::SetEndpoint {
                instance_id,
                enabled,
            } => {
                let value = if *enabled { "enabled" } else { "disabled" };
                modify(instance_id, "HttpEndpoint", value.into())
            }
            Action::SendSpotInterruption { instance_id } => vec![
                ("Action", "SendSpotInstanceInterruptions".to_owned()),
                ("InstanceId", instance_id.clone()),
            ],
            Action::InjectFault {
                instance_id,
                path,
                status,
                latency,
                count,
                reset,
            } => {
                let mut params = vec![
                    ("Action", "InjectFault".to_owned()),
                    ("InstanceId", instance_id.clone()),
                ];
                if !path.is_empty() {
                    params.push(("Path", path.clone()));
                }
                let optional = [
                    ("Status", status.map(|s| s.to_string())),
                    ("Latency", latency.clone().filter(|l| !l.is_empty())),
                    ("Count", count.map(|c| c.to_string())),
                    ("Reset", reset.then(|| "true".to_owned())),
                ];
                params.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
                params
            }
            Action::ClearFaults {
                instance_id,
                fault_id,
            } => {
                let mut params = vec![
                    ("Action", "ClearFaults".to_owned()),
                    ("InstanceId", instance_id.clone()),
                ];
                if let Some(id) = fault_id {
                    params.push(("FaultId.1", id.clone()));
                }
                params
            }
            Action::Terminate { instance_id } => vec![
                ("Action", "TerminateInstances".to_owned()),
                ("InstanceId.1", instance_id.clone()),
            ],
        };
        params.push(("Version", "2016-11-15".to_owned()));
        params
    }

    /// Whether the control API's change counter misses it (faults live beside the snapshot).
    fn bypasses_change_counter(&self) -> bool {
        matches!(
            self,
            Action::InjectFault { .. } | Action::ClearFaults { .. }
        )
    }
}

impl ControlApi {
    /// Dispatches `action` as its EC2 Query request, counted in the control metrics like one.
    pub(super) async fn console_action(&self, action: Action) -> Result<Value, ConsoleError> {
        let request_id = request_id();
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(action.query())
            .finish();
        let query = QueryRequest::parse(body.as_bytes());
        let name = query.get("Action").unwrap_or("(none)").to_owned();
        let result = self.dispatch_retrying(&query, &request_id).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.code(),
        };
        self.metrics.control_action(&name, outcome);
        result?;
        if action.bypasses_change_counter() {
            self.console.changed.send_modify(|count| *count += 1);
        }
        tracing::info!(action = name, "console action applied");
        Ok(json!({ "action": name, "requestId": request_id }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn json_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        headers
    }

    fn parse(body: &str) -> Result<Action, ConsoleError> {
        Action::parse(&json_headers(), body.as_bytes())
    }

    #[test]
    fn require_imdsv2_is_modify_instance_metadata_options() {
        let action = parse(r#"{"action":"requireImdsv2","instanceId":"i-0aaaaaaaaaaaaaaa1"}"#);
        assert_eq!(
            action.unwrap().query(),
            [
                ("Action", "ModifyInstanceMetadataOptions".to_owned()),
                ("InstanceId", "i-0aaaaaaaaaaaaaaa1".to_owned()),
                ("HttpTokens", "required".to_owned()),
                ("Version", "2016-11-15".to_owned()),
            ]
        );
    }

    #[test]
    fn every_action_names_its_ec2_action_and_instance() {
        let id = "i-0aaaaaaaaaaaaaaa1";
        for (body, ec2) in [
            (
                r#"{"action":"setHopLimit","instanceId":"ID","hopLimit":3}"#,
                "ModifyInstanceMetadataOptions",
            ),
            (
                r#"{"action":"setEndpoint","instanceId":"ID","enabled":false}"#,
                "ModifyInstanceMetadataOptions",
            ),
            (
                r#"{"action":"sendSpotInterruption","instanceId":"ID"}"#,
                "SendSpotInstanceInterruptions",
            ),
            (
                r#"{"action":"injectFault","instanceId":"ID","path":"/latest/*","status":503}"#,
                "InjectFault",
            ),
            (
                r#"{"action":"clearFaults","instanceId":"ID","faultId":"fault-0123abcd"}"#,
                "ClearFaults",
            ),
            (
                r#"{"action":"terminate","instanceId":"ID"}"#,
                "TerminateInstances",
            ),
        ] {
            let query = parse(&body.replace("ID", id)).unwrap().query();
            assert_eq!(query[0], ("Action", ec2.to_owned()), "{body}");
            assert!(query.iter().any(|(_, v)| v == id), "{body}");
        }
        let fault =
            parse(r#"{"action":"injectFault","instanceId":"ID","latency":"","status":503}"#)
                .unwrap()
                .query();
        assert!(fault.contains(&("Status", "503".to_owned())));
        assert!(!fault.iter().any(|(k, _)| *k == "Latency" || *k == "Path"));
    }

    #[test]
    fn bad_actions_are_refused_with_a_reason() {
        for body in [
            "",
            "{}",
            r#"{"action":"rebootEverything","instanceId":"i-1"}"#,
            r#"{"action":"setHopLimit","instanceId":"i-1","hopLimit":"many"}"#,
            r#"{"action":"requireImdsv2"}"#,
        ] {
            assert!(
                matches!(parse(body), Err(ConsoleError::BadRequest(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn an_action_must_say_it_is_json() {
        let body = br#"{"action":"terminate","instanceId":"i-0aaaaaaaaaaaaaaa1"}"#;
        let mut form = HeaderMap::new();
        form.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        assert!(Action::parse(&form, body).is_err());
        assert!(Action::parse(&HeaderMap::new(), body).is_err());
    }
}

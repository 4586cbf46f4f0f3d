//! `imds ctl fault add|list|clear`: the control API's fault actions.

use super::{element, Client, CtlError};
use crate::app::cli::FaultCommand;

/// `imds ctl fault ...`.
pub(super) async fn fault(
    client: &Client,
    instance: String,
    command: &FaultCommand,
) -> Result<String, CtlError> {
    match command {
        FaultCommand::Add {
            path,
            method,
            latency,
            status,
            rate_limit,
            reset,
            no_answer,
            count,
            probability,
        } => {
            let mut params = vec![
                ("Action", "InjectFault".to_owned()),
                ("InstanceId", instance),
                ("Path", path.clone()),
            ];
            let optional = [
                ("Method", method.clone()),
                ("Latency", latency.clone()),
                ("Status", status.map(|v| v.to_string())),
                ("RateLimit", rate_limit.map(|v| v.to_string())),
                ("Reset", reset.then(|| "true".to_owned())),
                ("NoAnswer", no_answer.then(|| "true".to_owned())),
                ("Count", count.map(|v| v.to_string())),
                ("Probability", probability.map(|v| v.to_string())),
            ];
            params.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
            let xml = client.call(&params).await?;
            Ok(format!("injected {}\n", line(&xml)))
        }
        FaultCommand::List => {
            let xml = client
                .call(&[
                    ("Action", "DescribeFaults"),
                    ("InstanceId", instance.as_str()),
                ])
                .await?;
            let lines: String = xml
                .split("<item>")
                .skip(1)
                .map(|item| format!("{}\n", line(item)))
                .collect();
            Ok(match lines.is_empty() {
                true => "no faults\n".to_owned(),
                false => lines,
            })
        }
        FaultCommand::Clear { ids } => {
            let mut params = vec![
                ("Action".to_owned(), "ClearFaults".to_owned()),
                ("InstanceId".to_owned(), instance),
            ];
            for (n, id) in ids.iter().enumerate() {
                params.push((format!("FaultId.{}", n + 1), id.clone()));
            }
            client.call(&params).await?;
            Ok(match ids.is_empty() {
                true => "no faults now\n".to_owned(),
                false => format!("cleared {}\n", ids.join(" ")),
            })
        }
    }
}

/// `ID PATH [METHOD] EFFECT ... fired N` of the first fault in `xml`.
fn line(xml: &str) -> String {
    let mut out = format!(
        "{} {}",
        element(xml, "faultId").unwrap_or_default(),
        element(xml, "path").unwrap_or_default()
    );
    for (name, label) in [
        ("method", ""),
        ("latencyMs", "latency_ms="),
        ("status", "status="),
        ("rateLimit", "rate_limit="),
        ("reset", "reset="),
        ("noAnswer", "no_answer="),
        ("count", "count="),
        ("probability", "probability="),
    ] {
        if let Some(value) = element(xml, name) {
            out.push_str(&format!(" {label}{value}"));
        }
    }
    out.push_str(&format!(
        " fired={}",
        element(xml, "fired").unwrap_or_default()
    ));
    out
}

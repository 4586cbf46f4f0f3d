//! `imds ctl spot-interrupt`, `imds ctl event ...` and `imds ctl asg`: the control API's event
//! actions.

use std::time::Duration;

use super::{element, Client, CtlError};
use crate::app::cli::EventCommand;
use crate::fleet::events::When;

/// The longest `--in`: FIS interrupts at most 15 minutes ahead, the notice two minutes before.
const LONGEST_NOTICE_DELAY: Duration = Duration::from_secs(13 * 60);

/// `imds ctl spot-interrupt`.
pub(super) async fn spot_interrupt(
    client: &Client,
    instance: String,
    action: &str,
    notice_in: &str,
    no_rebalance: bool,
) -> Result<String, CtlError> {
    let delay = match notice_in.parse::<When>() {
        Ok(When::After(delay)) => delay,
        _ => {
            return Err(CtlError::Usage(format!(
                "--in {notice_in}: expected a delay such as 30s or 2m"
            )))
        }
    };
    if delay > LONGEST_NOTICE_DELAY {
        return Err(CtlError::Usage(format!(
            "--in {notice_in}: at most 13m (EC2 interrupts at most 15 minutes ahead, the notice two minutes before)"
        )));
    }
    let duration = format!("PT{}S", delay.as_secs() + 120);
    let xml = client
        .call(&[
            ("Action", "SendSpotInstanceInterruptions".to_owned()),
            ("InstanceId", instance),
            ("DurationBeforeInterruption", duration),
            ("InstanceInterruptionBehavior", action.to_owned()),
            ("RebalanceRecommendation", (!no_rebalance).to_string()),
        ])
        .await?;
    let mut out = String::new();
    if let Some(at) = element(&xml, "rebalanceRecommendationTime") {
        out.push_str(&format!("rebalance recommendation at {at}\n"));
    }
    out.push_str(&format!(
        "spot interruption notice at {}: {} at {}\n",
        element(&xml, "noticeTime").unwrap_or_default(),
        element(&xml, "instanceInterruptionBehavior").unwrap_or_default(),
        element(&xml, "interruptionTime").unwrap_or_default()
    ));
    Ok(out)
}

/// `imds ctl event ...`.
pub(super) async fn event(
    client: &Client,
    instance: String,
    command: &EventCommand,
) -> Result<String, CtlError> {
    let mut params = vec![("InstanceId", instance)];
    let action = match command {
        EventCommand::List => {
            params.push(("Action", "DescribeInstanceStatus".into()));
            params.push(("IncludeAllInstances", "true".into()));
            let xml = client.call(&params).await?;
            return Ok(list(&xml));
        }
        EventCommand::Add {
            code,
            not_before,
            not_after,
            deadline,
            description,
        } => {
            params.push(("Code", code.clone()));
            let optional = [
                ("NotBefore", not_before),
                ("NotAfter", not_after),
                ("NotBeforeDeadline", deadline),
                ("Description", description),
            ];
            params.extend(
                optional
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, v.clone()?))),
            );
            "ScheduleInstanceEvent"
        }
        EventCommand::Cancel { id } => {
            params.push(("InstanceEventId", id.clone()));
            "CancelInstanceEvent"
        }
        EventCommand::Complete { id } => {
            params.push(("InstanceEventId", id.clone()));
            "CompleteInstanceEvent"
        }
        EventCommand::Reschedule { id, not_before } => {
            params.push(("InstanceEventId", id.clone()));
            params.push(("NotBefore", absolute(not_before)?));
            "ModifyInstanceEventStartTime"
        }
        EventCommand::Clear => {
            params.push(("Action", "ClearInstanceEvents".into()));
            client.call(&params).await?;
            return Ok("no events now\n".into());
        }
    };
    params.push(("Action", action.into()));
    let xml = client.call(&params).await?;
    let verb = match command {
        EventCommand::Cancel { .. } => "canceled",
        EventCommand::Complete { .. } => "completed",
        EventCommand::Reschedule { .. } => "rescheduled",
        _ => "scheduled",
    };
    Ok(format!("{verb} {}\n", event_line(&xml)))
}

/// `when` as the RFC 3339 time `ModifyInstanceEventStartTime` takes, as EC2 does: a delay
/// (`+2h`, `30m`) counts from now, as it does for `imds ctl event add`.
fn absolute(when: &str) -> Result<String, CtlError> {
    match when.parse::<When>() {
        Ok(When::After(delay)) => Ok(When::At(time::OffsetDateTime::now_utc() + delay).to_string()),
        Ok(When::At(_)) => Ok(when.trim().to_owned()),
        Err(e) => Err(CtlError::Usage(format!("--not-before: {e}"))),
    }
}

/// `imds ctl asg`.
pub(super) async fn lifecycle(
    client: &Client,
    instance: String,
    state: &str,
    at: Option<&str>,
) -> Result<String, CtlError> {
    let mut params = vec![
        ("Action", "SetTargetLifecycleState".to_owned()),
        ("InstanceId", instance),
        ("State", state.to_owned()),
    ];
    params.extend(at.map(|at| ("At", at.to_owned())));
    let xml = client.call(&params).await?;
    Ok(format!(
        "target lifecycle state {} at {}\n",
        element(&xml, "targetLifecycleState").unwrap_or_default(),
        element(&xml, "at").unwrap_or_default()
    ))
}

/// `ID CODE NOT_BEFORE..NOT_AFTER` of the first event in `xml`.
fn event_line(xml: &str) -> String {
    format!(
        "{} {} {}..{}",
        element(xml, "instanceEventId").unwrap_or_default(),
        element(xml, "code").unwrap_or_default(),
        element(xml, "notBefore").unwrap_or_default(),
        element(xml, "notAfter").unwrap_or_default()
    )
}

/// One line per event of a `DescribeInstanceStatus` answer, then the instance's state.
fn list(xml: &str) -> String {
    let events = xml
        .split_once("<eventsSet>")
        .and_then(|(_, rest)| rest.split_once("</eventsSet>"))
        .map_or("", |(events, _)| events);
    let mut out: String = events
        .split("<item>")
        .skip(1)
        .map(|item| format!("{}\n", event_line(item)))
        .collect();
    if out.is_empty() {
        out.push_str("no scheduled events\n");
    }
    let state = xml
        .split_once("<instanceState>")
        .and_then(|(_, rest)| element(rest, "name"))
        .unwrap_or("unknown");
    out.push_str(&format!("instance {state}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_start_may_be_a_delay_from_now_like_an_added_events() {
        let at = absolute("+2h").unwrap();
        let at = time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
            .unwrap();
        let ahead = at - time::OffsetDateTime::now_utc();
        assert!(
            ahead > time::Duration::minutes(119) && ahead <= time::Duration::hours(2),
            "{ahead}"
        );
        assert_eq!(
            absolute("2026-11-24T03:00:00Z").unwrap(),
            "2026-11-24T03:00:00Z"
        );
        let err = absolute("soon").unwrap_err().to_string();
        assert!(
            err.contains("--not-before") && err.contains("+30s"),
            "{err}"
        );
    }
}

//! `DescribeInstanceStatus` as EC2 answers it: pages of 5 to 1000 instances in id order (never
//! with instance ids), every filter EC2 documents for the action and no other, and the shape
//! botocore reads (operator, events, the three status checks).

use std::time::Duration;

use http::StatusCode;

use super::{assert_error, assert_ok, element, elements, text, Fixture};

const FLEET: &str = "[server]\nfleet = true\n";

/// A fleet of six launched instances, all running: their ids, sorted.
async fn seven_running() -> (Fixture, Vec<String>) {
    let f = Fixture::new(FLEET);
    let answer = f
        .query("Action=RunInstances&ImageId=ami-0abcdef1234567890&MinCount=6&MaxCount=6")
        .await;
    let mut ids: Vec<String> = elements(assert_ok(&answer, "RunInstancesResponse"), "instanceId")
        .into_iter()
        .map(str::to_owned)
        .collect();
    ids.sort();
    f.advance(Duration::from_secs(1));
    (f, ids)
}

/// The instance ids `DescribeInstanceStatus` with `params` lists, and its `nextToken`.
async fn listed(f: &Fixture, params: &str) -> (Vec<String>, Option<String>) {
    let answer = f
        .query(&format!("Action=DescribeInstanceStatus{params}"))
        .await;
    let xml = assert_ok(&answer, "DescribeInstanceStatusResponse");
    let ids = elements(text(xml, "instanceStatusSet"), "instanceId")
        .into_iter()
        .map(str::to_owned)
        .collect();
    (ids, element(xml, "nextToken").map(str::to_owned))
}

/// The ids listed with the filter `name` = each of `values`.
async fn filtered(f: &Fixture, name: &str, values: &[&str]) -> Vec<String> {
    let mut params = format!("&IncludeAllInstances=true&Filter.1.Name={name}");
    for (n, value) in values.iter().enumerate() {
        params.push_str(&format!("&Filter.1.Value.{}={value}", n + 1));
    }
    listed(f, &params).await.0
}

#[tokio::test]
async fn pages_of_max_results_follow_each_other_in_instance_id_order() {
    let (f, ids) = seven_running().await;
    assert_eq!(ids.len(), 6);
    let (first, token) = listed(&f, "&MaxResults=5").await;
    assert_eq!(first, ids[..5]);
    let token = token.expect("more follow");
    let (second, last) = listed(&f, &format!("&MaxResults=5&NextToken={token}")).await;
    assert_eq!(second, ids[5..]);
    assert_eq!(last, None);
    let (all, none) = listed(&f, "&MaxResults=1000").await;
    assert_eq!((all, none), (ids.clone(), None));
    let (all, none) = listed(&f, "").await;
    assert_eq!((all, none), (ids.clone(), None));

    for (params, code) in [
        ("&MaxResults=4", "InvalidParameterValue"),
        ("&MaxResults=1001", "InvalidParameterValue"),
        ("&MaxResults=five", "InvalidParameterValue"),
        ("&NextToken=%25%25", "InvalidParameterValue"),
    ] {
        let message = assert_error(
            &f.query(&format!("Action=DescribeInstanceStatus{params}"))
                .await,
            StatusCode::BAD_REQUEST,
            code,
        );
        assert!(!message.is_empty(), "{params}");
    }
    let message = assert_error(
        &f.query(&format!(
            "Action=DescribeInstanceStatus&MaxResults=5&InstanceId.1={}",
            ids[0]
        ))
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterCombination",
    );
    assert!(message.contains("maxResults"), "{message}");
    let many: String = (0..101)
        .map(|n| format!("&InstanceId.{}=i-{n:017x}", n + 1))
        .collect();
    assert_error(
        &f.query(&format!("Action=DescribeInstanceStatus{many}"))
            .await,
        StatusCode::BAD_REQUEST,
        "InvalidRequest",
    );
    // Named instances are listed without paging.
    let (named, none) = listed(
        &f,
        &format!("&InstanceId.1={}&InstanceId.2={}", ids[5], ids[0]),
    )
    .await;
    assert_eq!((named, none), (vec![ids[0].clone(), ids[5].clone()], None));
}

#[tokio::test]
async fn every_documented_filter_selects_as_on_ec2_and_others_are_refused() {
    let (f, ids) = seven_running().await;
    let stopped = ids[1].clone();
    assert_ok(
        &f.query(&format!("Action=StopInstances&InstanceId.1={stopped}"))
            .await,
        "StopInstancesResponse",
    );
    let evented = ids[2].clone();
    assert_ok(
        &f.query(&format!(
            "Action=ScheduleInstanceEvent&InstanceId={evented}&Code=system-reboot\
             &NotBefore=2026-11-10T10:00:00Z&NotAfter=2026-11-10T12:00:00Z\
             &NotBeforeDeadline=2026-11-20T10:00:00Z&Description=Scheduled%20reboot%20for%20hardware"
        ))
        .await,
        "ScheduleInstanceEventResponse",
    );
    f.advance(Duration::from_secs(60));
    let running: Vec<String> = ids.iter().filter(|id| **id != stopped).cloned().collect();
    let event_id = {
        let answer = f
            .query(&format!(
                "Action=DescribeInstanceStatus&InstanceId.1={evented}"
            ))
            .await;
        text(&answer.1, "instanceEventId").to_owned()
    };

    // Without IncludeAllInstances, only running instances.
    assert_eq!(listed(&f, "").await.0, running);
    for (name, values, expected) in [
        ("availability-zone", vec!["us-east-1a"], ids.clone()),
        ("availability-zone", vec!["us-east-1b"], vec![]),
        ("availabilityZone", vec!["us-east-1?"], ids.clone()),
        ("availability-zone-id", vec!["use1-az4"], ids.clone()),
        (
            "instance-state-name",
            vec!["stopped"],
            vec![stopped.clone()],
        ),
        ("instance-state-code", vec!["80"], vec![stopped.clone()]),
        ("instance-state-code", vec!["16"], running.clone()),
        ("system-status.status", vec!["ok"], running.clone()),
        (
            "system-status.status",
            vec!["not-applicable"],
            vec![stopped.clone()],
        ),
        ("instance-status.status", vec!["ok"], running.clone()),
        (
            "instance-status.reachability",
            vec!["passed"],
            running.clone(),
        ),
        ("system-status.reachability", vec!["failed"], vec![]),
        ("attached-ebs-status.status", vec!["ok"], running.clone()),
        ("application-status.status", vec!["ok"], vec![]),
        ("operator.managed", vec!["false"], ids.clone()),
        ("operator.principal", vec!["*"], vec![]),
        ("event.code", vec!["system-reboot"], vec![evented.clone()]),
        (
            "event.code",
            vec!["instance-stop", "system-reboot"],
            vec![evented.clone()],
        ),
        ("event.code", vec!["instance-stop"], vec![]),
        (
            "event.description",
            vec!["*hardware"],
            vec![evented.clone()],
        ),
        (
            "event.instance-event-id",
            vec![&event_id],
            vec![evented.clone()],
        ),
        (
            "event.not-before",
            vec!["2026-11-10T10:00:00.000Z"],
            vec![evented.clone()],
        ),
        (
            "event.not-before",
            vec!["2026-11-10T10:00:00Z"],
            vec![evented.clone()],
        ),
        ("event.not-before", vec!["2026-11-11T*"], vec![]),
        (
            "event.not-after",
            vec!["2026-11-10T12:*"],
            vec![evented.clone()],
        ),
        (
            "event.not-before-deadline",
            vec!["2026-11-20T10:00:00.000Z"],
            vec![evented.clone()],
        ),
    ] {
        assert_eq!(
            filtered(&f, name, &values).await,
            expected,
            "{name} = {values:?}"
        );
    }
    // Two filters: both hold.
    let (both, _) = listed(
        &f,
        "&Filter.1.Name=event.code&Filter.1.Value.1=system-reboot\
         &Filter.2.Name=system-status.status&Filter.2.Value.1=ok",
    )
    .await;
    assert_eq!(both, [evented.as_str()]);

    for name in [
        "instance-id",
        "tag:Name",
        "tag-key",
        "instance-type",
        "event.kind",
    ] {
        let message = assert_error(
            &f.query(&format!(
                "Action=DescribeInstanceStatus&Filter.1.Name={name}&Filter.1.Value.1=x"
            ))
            .await,
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        );
        assert_eq!(message, format!("The filter &apos;{name}&apos; is invalid"));
    }
}

#[tokio::test]
async fn each_status_has_the_operator_events_and_three_checks_botocore_reads() {
    let (f, ids) = seven_running().await;
    let answer = f
        .query(&format!(
            "Action=DescribeInstanceStatus&InstanceId.1={}",
            ids[0]
        ))
        .await;
    let item = text(
        assert_ok(&answer, "DescribeInstanceStatusResponse"),
        "instanceStatusSet",
    );
    assert_eq!(text(item, "operator"), "<managed>false</managed>");
    for check in ["systemStatus", "instanceStatus", "attachedEbsStatus"] {
        assert_eq!(
            text(item, check),
            "<status>ok</status><details><item><name>reachability</name><status>passed</status></item></details>",
            "{check}"
        );
    }
    assert_ok(
        &f.query(&format!("Action=StopInstances&InstanceId.1={}", ids[0]))
            .await,
        "StopInstancesResponse",
    );
    f.advance(Duration::from_secs(60));
    let answer = f
        .query(&format!(
            "Action=DescribeInstanceStatus&IncludeAllInstances=true&InstanceId.1={}",
            ids[0]
        ))
        .await;
    let item = text(&answer.1, "instanceStatusSet");
    assert_eq!(text(text(item, "instanceState"), "name"), "stopped");
    for check in ["systemStatus", "instanceStatus", "attachedEbsStatus"] {
        assert_eq!(
            text(item, check),
            "<status>not-applicable</status><details></details>",
            "{check}"
        );
    }
}

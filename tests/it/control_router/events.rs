//! Spot interruptions, instance status and Auto Scaling lifecycle states on the clock:
//! `SendSpotInstanceInterruptions`, `DescribeInstanceStatus`, `SetTargetLifecycleState` and
//! `ClearInstanceEvents`.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, StatusCode};

use super::{assert_error, assert_ok, element, elements, iso, text, Fixture, INSTANCE};

const SPOT: &str = "/latest/meta-data/spot/instance-action";
const TERMINATION: &str = "/latest/meta-data/spot/termination-time";
const REBALANCE: &str = "/latest/meta-data/events/recommendations/rebalance";
const LIFECYCLE: &str = "/latest/meta-data/autoscaling/target-lifecycle-state";
const SCHEDULED: &str = "/latest/meta-data/events/maintenance/scheduled";
const LIFE_CYCLE: &str = "/latest/meta-data/instance-life-cycle";
const MINUTE: Duration = Duration::from_secs(60);

fn interrupt(params: &str) -> String {
    format!("Action=SendSpotInstanceInterruptions&InstanceId={INSTANCE}{params}")
}

/// `DescribeInstanceStatus` with `params`: the `<item>` of the instance, if listed.
async fn status(f: &Fixture, params: &str) -> Option<String> {
    let answer = f
        .query(&format!("Action=DescribeInstanceStatus{params}"))
        .await;
    let xml = assert_ok(&answer, "DescribeInstanceStatusResponse");
    let set = text(xml, "instanceStatusSet");
    (!set.is_empty()).then(|| set.to_owned())
}

/// The instance state's name as `DescribeInstances` shows it.
async fn described_state(f: &Fixture) -> String {
    let answer = f.query("Action=DescribeInstances").await;
    let xml = assert_ok(&answer, "DescribeInstancesResponse");
    text(text(xml, "instanceState"), "name").to_owned()
}

/// `instanceLifecycle` as `DescribeInstances` shows it.
async fn described_lifecycle(f: &Fixture) -> Option<String> {
    let answer = f.query("Action=DescribeInstances").await;
    let xml = assert_ok(&answer, "DescribeInstancesResponse");
    element(xml, "instanceLifecycle").map(str::to_owned)
}

#[tokio::test]
async fn a_spot_interruption_shows_the_rebalance_first_the_notice_later_then_the_instance_terminated(
) {
    let f = Fixture::new("");
    let t0 = f.now();
    let answer = f
        .query(&interrupt("&DurationBeforeInterruption=PT5M"))
        .await;
    let xml = assert_ok(&answer, "SendSpotInstanceInterruptionsResponse");
    let interruption = text(xml, "spotInstanceInterruption");
    assert_eq!(text(interruption, "instanceId"), INSTANCE);
    assert_eq!(
        text(interruption, "instanceInterruptionBehavior"),
        "terminate"
    );
    assert_eq!(text(interruption, "rebalanceRecommendationTime"), iso(t0));
    assert_eq!(text(interruption, "noticeTime"), iso(t0 + 3 * 60_000));
    assert_eq!(text(interruption, "interruptionTime"), iso(t0 + 5 * 60_000));

    // The rebalance recommendation at once; no notice yet.
    assert_eq!(
        f.guest(REBALANCE).await,
        (
            StatusCode::OK,
            format!("{{\"noticeTime\": \"{}\"}}", iso(t0))
        )
    );
    assert_eq!(f.guest(SPOT).await.0, StatusCode::NOT_FOUND);
    assert_eq!(f.guest(LIFE_CYCLE).await.1, "spot");
    f.advance(3 * MINUTE - Duration::from_millis(1));
    assert_eq!(f.guest(SPOT).await.0, StatusCode::NOT_FOUND);
    f.advance(Duration::from_millis(1));
    let action = format!(
        "{{\"action\": \"terminate\", \"time\": \"{}\"}}",
        iso(t0 + 5 * 60_000)
    );
    assert_eq!(f.guest(SPOT).await, (StatusCode::OK, action.clone()));
    assert_eq!(f.guest(TERMINATION).await.1, iso(t0 + 5 * 60_000));
    let running = status(&f, "").await.unwrap();
    assert_eq!(text(&running, "name"), "running");
    assert_eq!(described_state(&f).await, "running");

    // After the interruption time: terminated, the guest API still shows the notice.
    f.advance(2 * MINUTE);
    assert_eq!(status(&f, "").await, None, "not running: not listed");
    let item = status(&f, "&IncludeAllInstances=true").await.unwrap();
    let state = text(&item, "instanceState");
    assert_eq!(
        (text(state, "code"), text(state, "name")),
        ("48", "terminated")
    );
    assert_eq!(
        text(text(&item, "systemStatus"), "status"),
        "not-applicable"
    );
    assert_eq!(
        text(text(&item, "instanceStatus"), "status"),
        "not-applicable"
    );
    assert_eq!(described_state(&f).await, "terminated");
    let answer = f
        .query("Action=DescribeInstances&Filter.1.Name=instance-state-name&Filter.1.Value.1=terminated")
        .await;
    assert_eq!(
        elements(
            assert_ok(&answer, "DescribeInstancesResponse"),
            "instanceId"
        ),
        [INSTANCE]
    );
    assert_eq!(f.guest(SPOT).await, (StatusCode::OK, action));
}

#[tokio::test]
async fn a_spot_interruption_can_stop_without_a_rebalance_recommendation() {
    let f = Fixture::new("");
    let t0 = f.now();
    let answer = f
        .query(&interrupt(
            "&InstanceInterruptionBehavior=stop&RebalanceRecommendation=false",
        ))
        .await;
    let xml = assert_ok(&answer, "SendSpotInstanceInterruptionsResponse");
    assert_eq!(text(xml, "instanceInterruptionBehavior"), "stop");
    assert_eq!(element(xml, "rebalanceRecommendationTime"), None);
    // The default is two minutes: the notice at once.
    assert_eq!(text(xml, "noticeTime"), iso(t0));
    assert_eq!(text(xml, "interruptionTime"), iso(t0 + 2 * 60_000));
    assert_eq!(f.guest(REBALANCE).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        f.guest(SPOT).await.1,
        format!(
            "{{\"action\": \"stop\", \"time\": \"{}\"}}",
            iso(t0 + 2 * 60_000)
        )
    );
    // Only a termination has a termination time.
    assert_eq!(f.guest(TERMINATION).await.0, StatusCode::NOT_FOUND);
    f.advance(2 * MINUTE);
    let item = status(&f, "&IncludeAllInstances=true").await.unwrap();
    let state = text(&item, "instanceState");
    assert_eq!(
        (text(state, "code"), text(state, "name")),
        ("80", "stopped")
    );
    assert_eq!(described_state(&f).await, "stopped");
}

#[tokio::test]
async fn send_spot_instance_interruptions_refuses_what_fis_refuses() {
    let f = Fixture::new("");
    for params in [
        "&DurationBeforeInterruption=PT1M59S",
        "&DurationBeforeInterruption=PT15M1S",
        "&DurationBeforeInterruption=5m",
        "&DurationBeforeInterruption=PT",
        "&InstanceInterruptionBehavior=reboot",
        "&RebalanceRecommendation=maybe",
    ] {
        assert_error(
            &f.query(&interrupt(params)).await,
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        );
    }
    assert_error(
        &f.query("Action=SendSpotInstanceInterruptions").await,
        StatusCode::BAD_REQUEST,
        "MissingParameter",
    );
    assert_error(
        &f.query(&interrupt("&DryRun=true")).await,
        StatusCode::PRECONDITION_FAILED,
        "DryRunOperation",
    );
    assert!(f.app.state.current().schedule.spot.is_none());
    assert_eq!(f.guest(REBALANCE).await.0, StatusCode::NOT_FOUND);
    // The bounds themselves are fine.
    for duration in ["PT2M", "PT15M", "PT900S"] {
        assert_ok(
            &f.query(&interrupt(&format!(
                "&DurationBeforeInterruption={duration}"
            )))
            .await,
            "SendSpotInstanceInterruptionsResponse",
        );
    }
}

#[tokio::test]
async fn describe_instance_status_shows_a_running_instance_and_its_filters() {
    let f = Fixture::new("");
    let item = status(&f, "").await.unwrap();
    assert_eq!(text(&item, "instanceId"), INSTANCE);
    assert_eq!(text(&item, "availabilityZone"), "us-east-1a");
    assert_eq!(text(&item, "availabilityZoneId"), "use1-az4");
    assert_eq!(text(&item, "eventsSet"), "");
    let state = text(&item, "instanceState");
    assert_eq!(
        (text(state, "code"), text(state, "name")),
        ("16", "running")
    );
    for part in ["systemStatus", "instanceStatus"] {
        assert_eq!(
            text(&item, part),
            "<status>ok</status><details><item><name>reachability</name><status>passed</status></item></details>"
        );
    }
    for (params, listed) in [
        (format!("&InstanceId.1={INSTANCE}"), true),
        (
            "&Filter.1.Name=availability-zone&Filter.1.Value.1=us-east-1a".into(),
            true,
        ),
        (
            "&Filter.1.Name=availability-zone&Filter.1.Value.1=us-east-1b".into(),
            false,
        ),
        (
            "&Filter.1.Name=instance-state-name&Filter.1.Value.1=running".into(),
            true,
        ),
        (
            "&Filter.1.Name=instance-state-name&Filter.1.Value.1=stopped".into(),
            false,
        ),
        (
            "&Filter.1.Name=system-status.status&Filter.1.Value.1=ok".into(),
            true,
        ),
        (
            "&Filter.1.Name=event.code&Filter.1.Value.1=system-reboot".into(),
            false,
        ),
    ] {
        assert_eq!(status(&f, &params).await.is_some(), listed, "{params}");
    }
    assert_error(
        &f.query("Action=DescribeInstanceStatus&InstanceId.1=i-0123456789abcdef0")
            .await,
        StatusCode::BAD_REQUEST,
        "InvalidInstanceID.NotFound",
    );
    assert_error(
        &f.query("Action=DescribeInstanceStatus&InstanceId.1=instance")
            .await,
        StatusCode::BAD_REQUEST,
        "InvalidInstanceID.Malformed",
    );
    // Not a filter EC2 documents for DescribeInstanceStatus (see `instance_status`).
    assert_error(
        &f.query(&format!(
            "Action=DescribeInstanceStatus&Filter.1.Name=instance-id&Filter.1.Value.1={INSTANCE}"
        ))
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterValue",
    );
}

#[tokio::test]
async fn set_target_lifecycle_state_shows_each_state_from_its_time() {
    let f = Fixture::new("");
    let t0 = f.now();
    assert_eq!(f.guest(LIFECYCLE).await.0, StatusCode::NOT_FOUND);
    let answer = f
        .query(&format!(
            "Action=SetTargetLifecycleState&InstanceId={INSTANCE}&State=InService"
        ))
        .await;
    let xml = assert_ok(&answer, "SetTargetLifecycleStateResponse");
    assert_eq!(text(xml, "instanceId"), INSTANCE);
    assert_eq!(text(xml, "targetLifecycleState"), "InService");
    assert_eq!(text(xml, "at"), iso(t0));
    assert_eq!(
        f.guest(LIFECYCLE).await,
        (StatusCode::OK, "InService".to_owned())
    );

    let answer = f
        .query(&format!(
            "Action=SetTargetLifecycleState&InstanceId={INSTANCE}&State=Warmed:Stopped&At=10m"
        ))
        .await;
    let xml = assert_ok(&answer, "SetTargetLifecycleStateResponse");
    assert_eq!(text(xml, "targetLifecycleState"), "Warmed:Stopped");
    assert_eq!(text(xml, "at"), iso(t0 + 10 * 60_000));
    f.advance(10 * MINUTE - Duration::from_millis(1));
    assert_eq!(f.guest(LIFECYCLE).await.1, "InService");
    f.advance(Duration::from_millis(1));
    assert_eq!(f.guest(LIFECYCLE).await.1, "Warmed:Stopped");

    // A time, too.
    let at = iso(f.now() + 60 * 60_000);
    assert_ok(
        &f.query(&format!(
            "Action=SetTargetLifecycleState&InstanceId={INSTANCE}&State=Terminated&At={at}"
        ))
        .await,
        "SetTargetLifecycleStateResponse",
    );
    f.advance(60 * MINUTE);
    assert_eq!(f.guest(LIFECYCLE).await.1, "Terminated");

    for params in ["&State=Running", "&State=InService&At=tomorrow"] {
        assert_error(
            &f.query(&format!(
                "Action=SetTargetLifecycleState&InstanceId={INSTANCE}{params}"
            ))
            .await,
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        );
    }
    assert_error(
        &f.query(&format!(
            "Action=SetTargetLifecycleState&InstanceId={INSTANCE}"
        ))
        .await,
        StatusCode::BAD_REQUEST,
        "MissingParameter",
    );
    assert_eq!(f.guest(LIFECYCLE).await.1, "Terminated");
}

#[tokio::test]
async fn clear_instance_events_leaves_nothing_announced() {
    let f = Fixture::new("");
    assert_ok(
        &f.query(&interrupt("")).await,
        "SendSpotInstanceInterruptionsResponse",
    );
    assert_ok(
        &f.query(&format!(
            "Action=ScheduleInstanceEvent&InstanceId={INSTANCE}&Code=system-reboot&NotBefore=1h"
        ))
        .await,
        "ScheduleInstanceEventResponse",
    );
    assert_ok(
        &f.query(&format!(
            "Action=SetTargetLifecycleState&InstanceId={INSTANCE}&State=InService"
        ))
        .await,
        "SetTargetLifecycleStateResponse",
    );
    f.advance(3 * MINUTE);
    assert_eq!(described_state(&f).await, "terminated");
    assert_eq!(f.guest(SPOT).await.0, StatusCode::OK);

    assert_error(
        &f.query(&format!(
            "Action=ClearInstanceEvents&InstanceId={INSTANCE}&DryRun=true"
        ))
        .await,
        StatusCode::PRECONDITION_FAILED,
        "DryRunOperation",
    );
    assert_eq!(f.guest(SPOT).await.0, StatusCode::OK);
    let answer = f
        .query(&format!("Action=ClearInstanceEvents&InstanceId={INSTANCE}"))
        .await;
    assert_eq!(
        text(assert_ok(&answer, "ClearInstanceEventsResponse"), "return"),
        "true"
    );
    for path in [SPOT, TERMINATION, REBALANCE, LIFECYCLE] {
        assert_eq!(f.guest(path).await.0, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(f.guest(SCHEDULED).await, (StatusCode::OK, "[]".to_owned()));
    let item = status(&f, "").await.unwrap();
    assert_eq!(text(&item, "name"), "running");
    assert_eq!(text(&item, "eventsSet"), "");
    assert_eq!(described_state(&f).await, "running");
    assert_error(
        &f.query("Action=ClearInstanceEvents").await,
        StatusCode::BAD_REQUEST,
        "MissingParameter",
    );
}

#[tokio::test]
async fn an_interrupted_instance_is_a_spot_instance_on_both_surfaces() {
    let f = Fixture::new("");
    assert_eq!(described_lifecycle(&f).await, None, "on-demand");
    assert_eq!(f.guest(LIFE_CYCLE).await.1, "on-demand");
    assert_ok(
        &f.query(&interrupt("")).await,
        "SendSpotInstanceInterruptionsResponse",
    );
    assert_eq!(f.guest(LIFE_CYCLE).await.1, "spot");
    assert_eq!(described_lifecycle(&f).await.as_deref(), Some("spot"));
    assert_ok(
        &f.query(&format!("Action=ClearInstanceEvents&InstanceId={INSTANCE}"))
            .await,
        "ClearInstanceEventsResponse",
    );
    assert_eq!(f.guest(LIFE_CYCLE).await.1, "on-demand");
    assert_eq!(described_lifecycle(&f).await, None);
}

#[tokio::test]
async fn clear_instance_events_keeps_the_limit_on_the_clients_that_see_events() {
    let f = Fixture::new("[instance.events]\nclient_limit = 1\n");
    let other: SocketAddr = "10.0.21.75:40000".parse().unwrap();
    let from_other = |path: &str| {
        let request = Request::get(path).body(()).unwrap();
        f.app.api.handle(&request, other).status()
    };
    assert_ok(
        &f.query(&interrupt("")).await,
        "SendSpotInstanceInterruptionsResponse",
    );
    // The first client to ask sees the events; the next one does not.
    assert_eq!(f.guest(REBALANCE).await.0, StatusCode::OK);
    assert_eq!(from_other(REBALANCE), StatusCode::NOT_FOUND);
    assert_ok(
        &f.query(&format!("Action=ClearInstanceEvents&InstanceId={INSTANCE}"))
            .await,
        "ClearInstanceEventsResponse",
    );
    assert_eq!(f.guest(REBALANCE).await.0, StatusCode::NOT_FOUND);
    assert_ok(
        &f.query(&interrupt("")).await,
        "SendSpotInstanceInterruptionsResponse",
    );
    assert_eq!(f.guest(REBALANCE).await.0, StatusCode::OK);
    assert_eq!(from_other(REBALANCE), StatusCode::NOT_FOUND);
    assert_eq!(from_other(SPOT), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_instance_keeps_fifty_scheduled_events_and_the_latest_twenty_ended() {
    let f = Fixture::new("");
    let mut ids = Vec::new();
    for _ in 0..50 {
        let answer = f
            .query(&format!(
                "Action=ScheduleInstanceEvent&InstanceId={INSTANCE}&Code=system-reboot&NotBefore=1h"
            ))
            .await;
        let xml = assert_ok(&answer, "ScheduleInstanceEventResponse");
        ids.push(text(xml, "instanceEventId").to_owned());
    }
    let message = assert_error(
        &f.query(&format!(
            "Action=ScheduleInstanceEvent&InstanceId={INSTANCE}&Code=system-reboot&NotBefore=1h"
        ))
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterValue",
    );
    assert!(message.contains("at most 50"), "{message}");
    for id in &ids[..30] {
        f.advance(Duration::from_secs(1));
        assert_ok(
            &f.query(&format!(
                "Action=CancelInstanceEvent&InstanceId={INSTANCE}&InstanceEventId={id}"
            ))
            .await,
            "CancelInstanceEventResponse",
        );
    }
    let (status, history) = f
        .guest("/latest/meta-data/events/maintenance/history")
        .await;
    assert_eq!(status, StatusCode::OK);
    let shown: Vec<serde_json::Value> = serde_json::from_str(&history).unwrap();
    assert_eq!(shown.len(), 20, "{history}");
    let (_, scheduled) = f.guest(SCHEDULED).await;
    let scheduled: Vec<serde_json::Value> = serde_json::from_str(&scheduled).unwrap();
    assert_eq!(scheduled.len(), 20);
    // Room again: 20 in force, so more can be scheduled.
    assert_ok(
        &f.query(&format!(
            "Action=ScheduleInstanceEvent&InstanceId={INSTANCE}&Code=system-reboot&NotBefore=1h"
        ))
        .await,
        "ScheduleInstanceEventResponse",
    );
}

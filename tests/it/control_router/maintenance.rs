//! Scheduled maintenance events on the clock: `ScheduleInstanceEvent`, `CompleteInstanceEvent`,
//! `CancelInstanceEvent` and `ModifyInstanceEventStartTime`, seen through
//! `DescribeInstanceStatus` and the guest's `events/maintenance/`.

use std::time::Duration;

use http::StatusCode;

use super::{assert_error, assert_ok, elements, iso, text, Fixture, INSTANCE};

const SCHEDULED: &str = "/latest/meta-data/events/maintenance/scheduled";
const HISTORY: &str = "/latest/meta-data/events/maintenance/history";
const HOUR: u64 = 3_600_000;

/// Schedules an event with `params`; its `<event>`.
async fn schedule(f: &Fixture, params: &str) -> String {
    let answer = f
        .query(&format!(
            "Action=ScheduleInstanceEvent&InstanceId={INSTANCE}{params}"
        ))
        .await;
    text(assert_ok(&answer, "ScheduleInstanceEventResponse"), "event").to_owned()
}

/// `Action={action}&InstanceId=...&InstanceEventId={id}{rest}`.
async fn on_event(f: &Fixture, action: &str, id: &str, rest: &str) -> (StatusCode, String) {
    f.query(&format!(
        "Action={action}&InstanceId={INSTANCE}&InstanceEventId={id}{rest}"
    ))
    .await
}

/// The event ids `DescribeInstanceStatus` lists.
async fn status_events(f: &Fixture) -> Vec<String> {
    let answer = f.query("Action=DescribeInstanceStatus").await;
    let xml = assert_ok(&answer, "DescribeInstanceStatusResponse");
    elements(text(xml, "eventsSet"), "instanceEventId")
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_scheduled_event_is_announced_at_once_and_completes_when_its_window_closes() {
    let f = Fixture::new("");
    let t0 = f.now();
    let event = schedule(
        &f,
        "&Code=system-reboot&NotBefore=1h&NotAfter=3h&NotBeforeDeadline=1d\
         &Description=host%20maintenance",
    )
    .await;
    let id = text(&event, "instanceEventId").to_owned();
    assert!(id.starts_with("instance-event-"), "{id}");
    assert_eq!(text(&event, "code"), "system-reboot");
    assert_eq!(text(&event, "description"), "host maintenance");
    assert_eq!(text(&event, "notBefore"), iso(t0 + HOUR));
    assert_eq!(text(&event, "notAfter"), iso(t0 + 3 * HOUR));
    assert_eq!(text(&event, "notBeforeDeadline"), iso(t0 + 24 * HOUR));

    assert_eq!(status_events(&f).await, [id.as_str()]);
    let answer = f.query("Action=DescribeInstanceStatus").await;
    let listed = text(
        text(
            assert_ok(&answer, "DescribeInstanceStatusResponse"),
            "eventsSet",
        ),
        "item",
    )
    .to_owned();
    assert_eq!(listed, event, "the same event in both answers");
    let (status, scheduled) = f.guest(SCHEDULED).await;
    assert_eq!(status, StatusCode::OK);
    for field in [
        format!("\"EventId\" : \"{id}\""),
        "\"Code\" : \"system-reboot\"".to_owned(),
        "\"Description\" : \"host maintenance\"".to_owned(),
        "\"NotBefore\" : \"02 Nov 2026 09:14:29 GMT\"".to_owned(),
        "\"NotAfter\" : \"02 Nov 2026 11:14:29 GMT\"".to_owned(),
        "\"NotBeforeDeadline\" : \"03 Nov 2026 08:14:29 GMT\"".to_owned(),
        "\"State\" : \"active\"".to_owned(),
    ] {
        assert!(scheduled.contains(&field), "{field} in {scheduled}");
    }
    assert_eq!(f.guest(HISTORY).await.1, "[]");

    f.advance(Duration::from_millis(3 * HOUR - 1));
    assert_eq!(status_events(&f).await, [id.as_str()]);
    f.advance(Duration::from_millis(1));
    assert!(status_events(&f).await.is_empty());
    assert_eq!(f.guest(SCHEDULED).await.1, "[]");
    let history = f.guest(HISTORY).await.1;
    assert!(
        history.contains("\"Description\" : \"[Completed] host maintenance\""),
        "{history}"
    );
    assert!(history.contains("\"State\" : \"completed\""), "{history}");
    // An ended event cannot be changed any more.
    assert_error(
        &on_event(&f, "CancelInstanceEvent", &id, "").await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterValue",
    );
}

#[tokio::test]
async fn complete_instance_event_moves_it_to_the_history_with_a_completed_prefix() {
    let f = Fixture::new("");
    let event = schedule(&f, "&Code=instance-reboot&NotBefore=2h").await;
    let id = text(&event, "instanceEventId").to_owned();
    // EC2's description and a two-hour window by default.
    assert_eq!(text(&event, "description"), "scheduled reboot");
    let t0 = f.now();
    assert_eq!(text(&event, "notAfter"), iso(t0 + 4 * HOUR));
    f.advance(Duration::from_secs(60));
    let answer = on_event(&f, "CompleteInstanceEvent", &id, "").await;
    let ended = text(assert_ok(&answer, "CompleteInstanceEventResponse"), "event");
    assert_eq!(text(ended, "instanceEventId"), id);
    assert_eq!(text(ended, "code"), "instance-reboot");
    assert!(status_events(&f).await.is_empty());
    assert_eq!(f.guest(SCHEDULED).await.1, "[]");
    let history = f.guest(HISTORY).await.1;
    assert!(
        history.contains(&format!("\"EventId\" : \"{id}\"")),
        "{history}"
    );
    assert!(
        history.contains("\"Description\" : \"[Completed] scheduled reboot\""),
        "{history}"
    );
    assert!(history.contains("\"State\" : \"completed\""), "{history}");
    assert_error(
        &on_event(&f, "CompleteInstanceEvent", &id, "").await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterValue",
    );
}

#[tokio::test]
async fn cancel_instance_event_moves_it_to_the_history_with_a_canceled_prefix() {
    let f = Fixture::new("");
    let kept = schedule(&f, "&Code=system-maintenance&NotBefore=5h").await;
    let kept = text(&kept, "instanceEventId").to_owned();
    let event = schedule(&f, "&Code=instance-stop&NotBefore=2h").await;
    let id = text(&event, "instanceEventId").to_owned();
    assert_eq!(status_events(&f).await, [kept.clone(), id.clone()]);
    assert_error(
        &on_event(&f, "CancelInstanceEvent", &id, "&DryRun=true").await,
        StatusCode::PRECONDITION_FAILED,
        "DryRunOperation",
    );
    assert_eq!(status_events(&f).await.len(), 2);
    let answer = on_event(&f, "CancelInstanceEvent", &id, "").await;
    let ended = text(assert_ok(&answer, "CancelInstanceEventResponse"), "event");
    assert_eq!(text(ended, "instanceEventId"), id);
    assert_eq!(status_events(&f).await, [kept.as_str()]);
    let scheduled = f.guest(SCHEDULED).await.1;
    assert!(
        scheduled.contains(&kept) && !scheduled.contains(&id),
        "{scheduled}"
    );
    let history = f.guest(HISTORY).await.1;
    assert!(
        history.contains(
            "\"Description\" : \"[Canceled] The instance is running on degraded hardware\""
        ),
        "{history}"
    );
    assert!(history.contains("\"State\" : \"canceled\""), "{history}");
    // Filters on the events left.
    let listed = |filter: String| {
        let f = &f;
        async move {
            let answer = f
                .query(&format!("Action=DescribeInstanceStatus{filter}"))
                .await;
            let xml = assert_ok(&answer, "DescribeInstanceStatusResponse");
            !text(xml, "instanceStatusSet").is_empty()
        }
    };
    assert!(listed("&Filter.1.Name=event.code&Filter.1.Value.1=system-maintenance".into()).await);
    assert!(!listed("&Filter.1.Name=event.code&Filter.1.Value.1=instance-stop".into()).await);
    assert!(
        listed(format!(
            "&Filter.1.Name=event.instance-event-id&Filter.1.Value.1={kept}"
        ))
        .await
    );
    assert!(
        !listed(format!(
            "&Filter.1.Name=event.instance-event-id&Filter.1.Value.1={id}"
        ))
        .await
    );
}

#[tokio::test]
async fn schedule_instance_event_refuses_bad_input() {
    let f = Fixture::new("");
    let refuse = |params: &'static str, code: &'static str| {
        let f = &f;
        async move {
            let answer = f
                .query(&format!(
                    "Action=ScheduleInstanceEvent&InstanceId={INSTANCE}{params}"
                ))
                .await;
            assert_error(&answer, StatusCode::BAD_REQUEST, code);
        }
    };
    refuse("", "MissingParameter").await;
    refuse("&Code=reboot", "InvalidParameterValue").await;
    refuse(
        "&Code=system-reboot&NotBefore=soon",
        "InvalidParameterValue",
    )
    .await;
    refuse(
        "&Code=system-reboot&NotBefore=2h&NotAfter=1h",
        "InvalidParameterValue",
    )
    .await;
    refuse(
        "&Code=system-reboot&NotBefore=2h&NotAfter=2h",
        "InvalidParameterValue",
    )
    .await;
    refuse(
        "&Code=system-reboot&NotBefore=2h&NotBeforeDeadline=1h",
        "InvalidParameterValue",
    )
    .await;
    assert_error(
        &f.query("Action=ScheduleInstanceEvent&Code=system-reboot")
            .await,
        StatusCode::BAD_REQUEST,
        "MissingParameter",
    );
    assert_error(
        &f.query(&format!(
            "Action=ScheduleInstanceEvent&InstanceId={INSTANCE}&Code=system-reboot&DryRun=true"
        ))
        .await,
        StatusCode::PRECONDITION_FAILED,
        "DryRunOperation",
    );
    assert!(status_events(&f).await.is_empty());
    assert_error(
        &on_event(
            &f,
            "CompleteInstanceEvent",
            "instance-event-0123456789abcdef0",
            "",
        )
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterValue",
    );
    assert_error(
        &f.query(&format!("Action=CancelInstanceEvent&InstanceId={INSTANCE}"))
            .await,
        StatusCode::BAD_REQUEST,
        "MissingParameter",
    );
}

#[tokio::test]
async fn modify_instance_event_start_time_moves_the_window_at_least_an_hour_ahead_and_before_the_deadline(
) {
    let f = Fixture::new("");
    let t0 = f.now();
    let event = schedule(
        &f,
        "&Code=system-reboot&NotBefore=3h&NotAfter=4h&NotBeforeDeadline=1d",
    )
    .await;
    let id = text(&event, "instanceEventId").to_owned();
    let move_to = |at: u64| {
        let (f, id) = (&f, &id);
        async move {
            on_event(
                f,
                "ModifyInstanceEventStartTime",
                id,
                &format!("&NotBefore={}", iso(at)),
            )
            .await
        }
    };
    for too_soon in [t0, t0 + 30 * 60_000, t0 + HOUR - 1000] {
        let message = assert_error(
            &move_to(too_soon).await,
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        );
        assert!(message.contains("60 minutes"), "{message}");
    }
    let message = assert_error(
        &move_to(t0 + 24 * HOUR + 1000).await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterValue",
    );
    assert!(message.contains(&iso(t0 + 24 * HOUR)), "{message}");

    // An hour ahead: moved, the window keeps its length of one hour.
    let answer = move_to(t0 + HOUR).await;
    let moved = text(
        assert_ok(&answer, "ModifyInstanceEventStartTimeResponse"),
        "event",
    );
    assert_eq!(text(moved, "instanceEventId"), id);
    assert_eq!(text(moved, "notBefore"), iso(t0 + HOUR));
    assert_eq!(text(moved, "notAfter"), iso(t0 + 2 * HOUR));
    assert_eq!(text(moved, "notBeforeDeadline"), iso(t0 + 24 * HOUR));
    let scheduled = f.guest(SCHEDULED).await.1;
    assert!(
        scheduled.contains("\"NotBefore\" : \"02 Nov 2026 09:14:29 GMT\""),
        "{scheduled}"
    );
    assert!(
        scheduled.contains("\"NotAfter\" : \"02 Nov 2026 10:14:29 GMT\""),
        "{scheduled}"
    );
    // Up to the deadline itself.
    assert_ok(
        &move_to(t0 + 24 * HOUR).await,
        "ModifyInstanceEventStartTimeResponse",
    );
    assert_ok(
        &move_to(t0 + 2 * HOUR).await,
        "ModifyInstanceEventStartTimeResponse",
    );

    // Starting within five minutes: too late to move.
    f.advance(Duration::from_millis(2 * HOUR - 5 * 60_000));
    let message = assert_error(
        &move_to(f.now() + 2 * HOUR).await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterValue",
    );
    assert!(message.contains("5 minutes"), "{message}");
    assert_error(
        &on_event(&f, "ModifyInstanceEventStartTime", &id, "&NotBefore=3h").await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterValue",
    );
}

#[tokio::test]
async fn modify_instance_event_start_time_refuses_events_without_a_deadline() {
    let f = Fixture::new("");
    let event = schedule(&f, "&Code=system-reboot&NotBefore=3h").await;
    let id = text(&event, "instanceEventId").to_owned();
    let later = iso(f.now() + 5 * HOUR);
    let message = assert_error(
        &on_event(
            &f,
            "ModifyInstanceEventStartTime",
            &id,
            &format!("&NotBefore={later}"),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterValue",
    );
    assert!(message.contains("NotBeforeDeadline"), "{message}");
    assert_error(
        &on_event(&f, "ModifyInstanceEventStartTime", &id, "").await,
        StatusCode::BAD_REQUEST,
        "MissingParameter",
    );
    assert_error(
        &f.query(&format!(
            "Action=ModifyInstanceEventStartTime&InstanceId={INSTANCE}&NotBefore={later}"
        ))
        .await,
        StatusCode::BAD_REQUEST,
        "MissingParameter",
    );
    let scheduled = f.guest(SCHEDULED).await.1;
    assert!(
        scheduled.contains("\"NotBefore\" : \"02 Nov 2026 11:14:29 GMT\""),
        "{scheduled}"
    );
}

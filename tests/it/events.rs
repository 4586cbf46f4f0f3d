//! Events: what the guest API and the control plane show is decided by the schedule and the
//! clock at request time. Every timing is checked on a real server in this process with an
//! injected clock that the test moves (schedules from its config file, and made through its
//! control API); each event kind is also driven end to end on `imds serve` through `imds ctl`,
//! the control API and the AWS CLI, with times that need no waiting (now, or asserted as
//! scheduled).

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use imds::clock::ManualClock;

use crate::harness::TestImds;
use crate::process::{ctl_ok, serve, Served, IMDS};

/// 2026-11-02T08:14:29Z, the default instance's launch.
const START: u64 = 1_793_607_269_000;
const M: &str = "/latest/meta-data";
const INSTANCE: &str = "i-0b4f7d2c9a1e83f56";

const SCHEDULE: &str = r#"
[instance.events]
rebalance = "+1m"
spot = { action = "terminate", notice = "+5m" }
target_lifecycle = [ { state = "InService", at = "0" }, { state = "Terminated", at = "+6m" } ]

[[instance.events.maintenance]]
id = "instance-event-0d59937288b749b32"
code = "system-reboot"
not_before = "2026-11-02T09:00:00Z"
not_after = "2026-11-02T09:30:00Z"

[[instance.events.maintenance]]
id = "instance-event-0aaaaaaaaaaaaaaaa"
code = "instance-stop"
not_before = "2026-11-03T00:00:00Z"
announced = "+2m"
canceled = "+3m"
"#;

#[tokio::test]
async fn events_appear_and_end_as_the_clock_passes_their_times() {
    let clock = Arc::new(ManualClock::at_millis(START));
    let imds = TestImds::setup()
        .toml(SCHEDULE)
        .clock(clock.clone())
        .start()
        .await;
    let get = |path: &'static str| {
        let imds = &imds;
        async move { imds.get(&format!("{M}/{path}")).await }
    };
    // At the start: nothing but the lifecycle state and the first maintenance event.
    assert_eq!(
        get("spot/instance-action").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get("spot/").await.status, StatusCode::NOT_FOUND);
    assert!(!get("").await.text().contains("spot/"));
    assert_eq!(get("instance-life-cycle").await.text(), "spot");
    assert_eq!(
        get("events/recommendations/rebalance").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("autoscaling/target-lifecycle-state").await.text(),
        "InService"
    );
    let scheduled = get("events/maintenance/scheduled").await;
    assert!(scheduled
        .text()
        .contains("\"NotBefore\" : \"02 Nov 2026 09:00:00 GMT\""));
    assert!(!scheduled.text().contains("instance-stop"));

    clock.advance(Duration::from_secs(60));
    assert_eq!(
        get("events/recommendations/rebalance").await.text(),
        "{\"noticeTime\": \"2026-11-02T08:15:29Z\"}"
    );
    assert_eq!(
        get("events/").await.text(),
        "maintenance/\nrecommendations/"
    );

    clock.advance(Duration::from_secs(60));
    assert!(get("events/maintenance/scheduled")
        .await
        .text()
        .contains("instance-stop"));
    clock.advance(Duration::from_secs(60));
    let history = get("events/maintenance/history").await;
    assert!(history.text().contains("\"Description\" : \"[Canceled] "));
    assert!(!get("events/maintenance/scheduled")
        .await
        .text()
        .contains("instance-stop"));

    // The notice at +5m names +7m, and the time does not move while clients poll.
    clock.advance(Duration::from_secs(120));
    let notice = "{\"action\": \"terminate\", \"time\": \"2026-11-02T08:21:29Z\"}";
    assert_eq!(get("spot/instance-action").await.text(), notice);
    assert_eq!(
        get("spot/termination-time").await.text(),
        "2026-11-02T08:21:29Z"
    );
    assert_eq!(
        get("spot").await.text(),
        "instance-action\ntermination-time"
    );
    assert!(get("").await.text().contains("spot/"));
    clock.advance(Duration::from_secs(60));
    assert_eq!(get("spot/instance-action").await.text(), notice);
    assert_eq!(
        get("autoscaling/target-lifecycle-state").await.text(),
        "Terminated"
    );
    // Past its window (09:30) the reboot is completed.
    clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(get("events/maintenance/scheduled").await.text(), "[]");
    let history = get("events/maintenance/history").await;
    assert!(history
        .text()
        .contains("\"Description\" : \"[Completed] scheduled reboot\""));
    assert!(history.text().contains("\"State\" : \"completed\""));
    // Older API versions do not know the newer categories.
    let old = imds
        .get("/2016-09-02/meta-data/events/maintenance/scheduled")
        .await;
    assert_eq!(old.status, StatusCode::NOT_FOUND);
}

/// The `name` element's text in a control answer.
fn element<'x>(xml: &'x str, name: &str) -> &'x str {
    let open = format!("<{name}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{name}> in {xml}"))
        + open.len();
    &xml[start..start + xml[start..].find('<').unwrap()]
}

/// The instance's state name as the control plane's `action` (`DescribeInstances`, or
/// `DescribeInstanceStatus` of all instances) reports it.
async fn control_state(imds: &TestImds, action: &str) -> String {
    let mut params = vec![("Action", action), ("InstanceId", INSTANCE)];
    if action == "DescribeInstanceStatus" {
        params.push(("IncludeAllInstances", "true"));
    }
    let (status, xml) = imds.control(&params).await;
    assert_eq!(status, StatusCode::OK, "{xml}");
    let state = xml.split_once("<instanceState>").expect(&xml).1;
    element(state, "name").to_owned()
}

/// Whether `DescribeInstanceStatus` without `IncludeAllInstances` lists the instance.
async fn listed_as_running(imds: &TestImds) -> bool {
    let (status, xml) = imds.control(&[("Action", "DescribeInstanceStatus")]).await;
    assert_eq!(status, StatusCode::OK, "{xml}");
    xml.contains(&format!("<instanceId>{INSTANCE}</instanceId>"))
}

#[tokio::test]
async fn a_spot_interruption_recommends_rebalancing_at_once_and_gives_notice_at_its_time() {
    let clock = Arc::new(ManualClock::at_millis(START));
    let imds = TestImds::setup().clock(clock.clone()).start().await;
    let get = |path: &'static str| {
        let imds = &imds;
        async move { imds.get(&format!("{M}/{path}")).await }
    };
    assert_eq!(get("instance-life-cycle").await.text(), "on-demand");
    // What `imds ctl spot-interrupt --action stop --in 3s` sends.
    let (status, xml) = imds
        .control(&[
            ("Action", "SendSpotInstanceInterruptions"),
            ("InstanceId", INSTANCE),
            ("DurationBeforeInterruption", "PT123S"),
            ("InstanceInterruptionBehavior", "stop"),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{xml}");
    assert_eq!(
        element(&xml, "rebalanceRecommendationTime"),
        "2026-11-02T08:14:29Z"
    );
    assert_eq!(element(&xml, "noticeTime"), "2026-11-02T08:14:32Z");
    assert_eq!(element(&xml, "interruptionTime"), "2026-11-02T08:16:32Z");

    // The rebalance recommendation at once, the notice three seconds later.
    assert_eq!(
        get("events/recommendations/rebalance").await.text(),
        "{\"noticeTime\": \"2026-11-02T08:14:29Z\"}"
    );
    assert_eq!(get("instance-life-cycle").await.text(), "spot");
    clock.advance(Duration::from_millis(2_999));
    assert_eq!(
        get("spot/instance-action").await.status,
        StatusCode::NOT_FOUND
    );
    clock.advance(Duration::from_millis(1));
    let notice = "{\"action\": \"stop\", \"time\": \"2026-11-02T08:16:32Z\"}";
    assert_eq!(get("spot/instance-action").await.text(), notice);
    assert_eq!(
        get("spot/termination-time").await.status,
        StatusCode::NOT_FOUND,
        "only for terminate"
    );
    assert_eq!(
        control_state(&imds, "DescribeInstanceStatus").await,
        "running"
    );
    assert!(listed_as_running(&imds).await);

    // The notice's time does not move while clients poll; at that time the instance stops.
    clock.advance(Duration::from_millis(119_999));
    assert_eq!(get("spot/instance-action").await.text(), notice);
    assert_eq!(control_state(&imds, "DescribeInstances").await, "running");
    clock.advance(Duration::from_millis(1));
    assert_eq!(get("spot/instance-action").await.text(), notice);
    assert_eq!(control_state(&imds, "DescribeInstances").await, "stopped");
    assert_eq!(
        control_state(&imds, "DescribeInstanceStatus").await,
        "stopped"
    );
    assert!(
        !listed_as_running(&imds).await,
        "only running ones by default"
    );
}

#[tokio::test]
async fn a_spot_interruption_from_the_config_file_counts_from_the_start_of_the_injected_clock() {
    let clock = Arc::new(ManualClock::at_millis(START));
    let imds = TestImds::setup()
        .toml("[instance.events]\nspot = { action = \"terminate\", notice = \"+3s\", warning_seconds = 1 }\n")
        .clock(clock.clone())
        .start()
        .await;
    let get = |path: &'static str| {
        let imds = &imds;
        async move { imds.get(&format!("{M}/{path}")).await }
    };
    clock.advance(Duration::from_millis(2_999));
    assert_eq!(
        get("spot/termination-time").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("spot/instance-action").await.status,
        StatusCode::NOT_FOUND
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        get("spot/termination-time").await.text(),
        "2026-11-02T08:14:33Z"
    );
    assert_eq!(
        get("spot/instance-action").await.text(),
        "{\"action\": \"terminate\", \"time\": \"2026-11-02T08:14:33Z\"}"
    );
    assert_eq!(
        control_state(&imds, "DescribeInstanceStatus").await,
        "running"
    );
    // After the action time the instance is terminated in the control plane's view.
    clock.advance(Duration::from_millis(999));
    assert_eq!(
        control_state(&imds, "DescribeInstanceStatus").await,
        "running"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        control_state(&imds, "DescribeInstanceStatus").await,
        "terminated"
    );
    assert_eq!(
        control_state(&imds, "DescribeInstances").await,
        "terminated"
    );
}

#[tokio::test]
async fn a_lifecycle_state_set_for_later_appears_at_its_time_on_the_injected_clock() {
    let clock = Arc::new(ManualClock::at_millis(START));
    let imds = TestImds::setup().clock(clock.clone()).start().await;
    let state = || imds.get("/latest/meta-data/autoscaling/target-lifecycle-state");
    let set = |state: &'static str, at: Option<&'static str>| {
        let imds = &imds;
        async move {
            let mut params = vec![
                ("Action", "SetTargetLifecycleState"),
                ("InstanceId", INSTANCE),
                ("State", state),
            ];
            params.extend(at.map(|at| ("At", at)));
            let (status, xml) = imds.control(&params).await;
            assert_eq!(status, StatusCode::OK, "{xml}");
            element(&xml, "at").to_owned()
        }
    };
    assert_eq!(set("InService", None).await, "2026-11-02T08:14:29Z");
    assert_eq!(state().await.text(), "InService");
    // What `imds ctl asg Terminated --at +3s` sends.
    assert_eq!(set("Terminated", Some("+3s")).await, "2026-11-02T08:14:32Z");
    clock.advance(Duration::from_millis(2_999));
    assert_eq!(state().await.text(), "InService");
    clock.advance(Duration::from_millis(1));
    assert_eq!(state().await.text(), "Terminated");
}

/// A GET of `meta-data/PATH`.
fn get(served: &Served, path: &str) -> (u16, String) {
    crate::process::get(served, &format!("{M}/{path}"))
}

/// The word after `label` in `imds ctl` output (`... at 2026-11-02T08:14:29Z ...`).
fn word_after<'o>(out: &'o str, label: &str) -> &'o str {
    let rest = out
        .split_once(label)
        .unwrap_or_else(|| panic!("no `{label}` in {out}"))
        .1;
    rest.split([' ', '\n'])
        .next()
        .unwrap()
        .trim_end_matches(':')
}

/// The time after `label` in `imds ctl` output, in seconds.
fn time_after(out: &str, label: &str) -> i64 {
    let text = word_after(out, label);
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .unix_timestamp()
}

/// The system clock, in seconds.
fn now_seconds() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[test]
fn a_spot_interruption_from_imds_ctl_is_scheduled_and_announced_on_imds_serve() {
    let served = serve(&[]);
    assert_eq!(get(&served, "spot/instance-action").0, 404);
    let before = now_seconds();
    let out = ctl_ok(
        &served,
        &["spot-interrupt", "--action", "stop", "--in", "10m"],
    );
    let after = now_seconds();
    // The rebalance recommendation now, the notice ten minutes later, the stop two after that.
    let rebalance = time_after(&out, "rebalance recommendation at ");
    assert!((before..=after).contains(&rebalance), "{out}");
    let notice = time_after(&out, "spot interruption notice at ");
    assert_eq!(notice - rebalance, 600, "{out}");
    assert_eq!(time_after(&out, ": stop at ") - notice, 120, "{out}");
    assert_eq!(
        get(&served, "events/recommendations/rebalance").1,
        format!(
            "{{\"noticeTime\": \"{}\"}}",
            word_after(&out, "rebalance recommendation at ")
        )
    );
    assert_eq!(get(&served, "spot/instance-action").0, 404);

    // `--in 0s`: the notice now, naming the stop two minutes ahead.
    let out = ctl_ok(
        &served,
        &["spot-interrupt", "--action", "stop", "--in", "0s"],
    );
    let at = word_after(&out, ": stop at ");
    let (status, notice) = get(&served, "spot/instance-action");
    assert_eq!(status, 200);
    assert_eq!(
        notice,
        format!("{{\"action\": \"stop\", \"time\": \"{at}\"}}")
    );
    assert_eq!(
        get(&served, "spot/termination-time").0,
        404,
        "only for terminate"
    );
    assert_eq!(get(&served, "instance-life-cycle").1, "spot");
    let status = ctl_ok(&served, &["event", "list"]);
    assert!(status.contains("instance running"), "{status}");
}

#[test]
fn a_spot_interruption_in_the_config_file_reaches_imds_serve_and_its_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spot.toml");
    std::fs::write(
        &file,
        "[instance.events]\nspot = { action = \"terminate\", notice = \"0\", warning_seconds = 0 }\n",
    )
    .unwrap();
    let served = serve(&["--config", file.to_str().unwrap()]);
    let (status, time) = get(&served, "spot/termination-time");
    assert_eq!(status, 200);
    assert!(time.ends_with('Z'), "{time}");
    // The action time has passed: the instance is terminated in the control plane's view.
    let status = ctl_ok(&served, &["event", "list"]);
    assert!(status.contains("instance terminated"), "{status}");
}

#[test]
fn maintenance_events_are_added_completed_and_canceled_with_imds_ctl() {
    let served = serve(&[]);
    let added = ctl_ok(
        &served,
        &[
            "event",
            "add",
            "--code",
            "system-reboot",
            "--not-before",
            "+1h",
        ],
    );
    let id = added.split_whitespace().nth(1).unwrap().to_owned();
    assert!(
        id.starts_with("instance-event-") && id.len() == 32,
        "{added}"
    );
    let other = ctl_ok(
        &served,
        &[
            "event",
            "add",
            "--code",
            "instance-stop",
            "--not-before",
            "+2h",
            "--description",
            "The instance is running on degraded hardware",
        ],
    );
    let other_id = other.split_whitespace().nth(1).unwrap().to_owned();
    let (status, scheduled) = get(&served, "events/maintenance/scheduled");
    assert_eq!(status, 200);
    assert!(
        scheduled.contains(&id) && scheduled.contains(&other_id),
        "{scheduled}"
    );
    assert!(scheduled.contains("\"Code\" : \"system-reboot\""));
    assert!(scheduled.contains(" GMT\""));

    let listed = ctl_ok(&served, &["event", "list"]);
    assert!(
        listed.contains(&id) && listed.contains("system-reboot"),
        "{listed}"
    );
    ctl_ok(&served, &["event", "complete", &id]);
    ctl_ok(&served, &["event", "cancel", &other_id]);
    assert_eq!(get(&served, "events/maintenance/scheduled").1, "[]");
    let history = get(&served, "events/maintenance/history").1;
    assert!(
        history.contains("\"Description\" : \"[Completed] scheduled reboot\""),
        "{history}"
    );
    assert!(history
        .contains("\"Description\" : \"[Canceled] The instance is running on degraded hardware\""));
    // An ended event cannot end again.
    let output = Command::new(IMDS)
        .args([
            "ctl",
            "--endpoint",
            &served.control[0],
            "event",
            "cancel",
            &id,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("InvalidParameterValue"), "{stderr}");
}

#[test]
fn the_asg_lifecycle_state_follows_imds_ctl() {
    let served = serve(&[]);
    assert_eq!(get(&served, "autoscaling/target-lifecycle-state").0, 404);
    ctl_ok(&served, &["asg", "InService"]);
    assert_eq!(
        get(&served, "autoscaling/target-lifecycle-state").1,
        "InService"
    );
    ctl_ok(&served, &["asg", "Warmed:Hibernated"]);
    assert_eq!(
        get(&served, "autoscaling/target-lifecycle-state").1,
        "Warmed:Hibernated"
    );
    // The change is scheduled an hour ahead (`a_lifecycle_state_set_for_later_...` watches it
    // happen on an injected clock).
    let before = now_seconds();
    let out = ctl_ok(&served, &["asg", "Terminated", "--at", "+1h"]);
    let after = now_seconds();
    assert!(
        out.starts_with("target lifecycle state Terminated at "),
        "{out}"
    );
    let at = time_after(&out, "Terminated at ");
    assert!((before + 3600..=after + 3600).contains(&at), "{out}");
    assert_eq!(
        get(&served, "autoscaling/target-lifecycle-state").1,
        "Warmed:Hibernated"
    );
    let output = Command::new(IMDS)
        .args(["ctl", "--endpoint", &served.control[0], "asg", "Pending"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a target lifecycle state"), "{stderr}");
}

#[test]
fn events_made_through_the_control_plane_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let served = serve(&["--state-dir", state.to_str().unwrap()]);
    let added = ctl_ok(
        &served,
        &[
            "event",
            "add",
            "--code",
            "system-maintenance",
            "--not-before",
            "+1h",
        ],
    );
    ctl_ok(&served, &["spot-interrupt", "--in", "10m"]);
    let before = get(&served, "events/maintenance/scheduled").1;
    let rebalance = get(&served, "events/recommendations/rebalance").1;
    served.stop("TERM");
    let served = serve(&["--state-dir", state.to_str().unwrap()]);
    assert_eq!(
        get(&served, "events/maintenance/scheduled").1,
        before,
        "{added}"
    );
    assert_eq!(
        get(&served, "events/recommendations/rebalance").1,
        rebalance
    );
    assert_eq!(
        get(&served, "spot/instance-action").0,
        404,
        "the notice is 10 minutes away"
    );
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn the_aws_cli_sees_scheduled_events_and_reschedules_them() {
    use crate::control::aws;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spot.toml");
    std::fs::write(
        &file,
        "[instance.events]\nspot = { action = \"stop\", notice = \"0\", warning_seconds = 0 }\n",
    )
    .unwrap();
    let served = serve(&["--config", file.to_str().unwrap()]);
    let added = ctl_ok(
        &served,
        &[
            "event",
            "add",
            "--code",
            "system-reboot",
            "--not-before",
            "+2h",
            "--not-after",
            "+4h",
            "--deadline",
            "+7d",
        ],
    );
    let id = added.split_whitespace().nth(1).unwrap().to_owned();
    let status = aws(
        &served,
        &["describe-instance-status", "--include-all-instances"],
    )
    .unwrap();
    let event = &status["InstanceStatuses"][0]["Events"][0];
    assert_eq!(event["InstanceEventId"], id.as_str());
    assert_eq!(event["Code"], "system-reboot");
    assert!(event["NotBeforeDeadline"].is_string(), "{status}");

    let new_start = time::OffsetDateTime::now_utc() + time::Duration::hours(3);
    let new_start = new_start
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let moved = aws(
        &served,
        &[
            "modify-instance-event-start-time",
            "--instance-id",
            "i-0b4f7d2c9a1e83f56",
            "--instance-event-id",
            &id,
            "--not-before",
            &new_start,
        ],
    )
    .unwrap();
    assert_eq!(moved["Event"]["InstanceEventId"], id.as_str());
    let shown = time::OffsetDateTime::parse(
        moved["Event"]["NotBefore"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(
        shown.unix_timestamp(),
        time::OffsetDateTime::parse(&new_start, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    );
    let scheduled = get(&served, "events/maintenance/scheduled").1;
    let gmt = shown
        .format(time::macros::format_description!(
            "[day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .unwrap();
    assert!(scheduled.contains(&gmt), "{scheduled} lacks {gmt}");
    // EC2's rule: at least an hour ahead.
    let soon = time::OffsetDateTime::now_utc() + time::Duration::minutes(10);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (code, stderr) = aws(
        &served,
        &[
            "modify-instance-event-start-time",
            "--instance-id",
            "i-0b4f7d2c9a1e83f56",
            "--instance-event-id",
            &id,
            "--not-before",
            &soon,
        ],
    )
    .unwrap_err();
    assert_eq!(code, 255);
    assert!(stderr.contains("InvalidParameterValue"), "{stderr}");

    // The spot interruption's action time has passed (at the start): the instance is stopped.
    let described = aws(&served, &["describe-instances"]).unwrap();
    let state = &described["Reservations"][0]["Instances"][0]["State"];
    assert_eq!(state["Name"], "stopped", "{described}");
    assert_eq!(state["Code"], 80);
    let status = aws(&served, &["describe-instance-status"]).unwrap();
    assert_eq!(
        status["InstanceStatuses"],
        serde_json::json!([]),
        "only running ones by default"
    );
}

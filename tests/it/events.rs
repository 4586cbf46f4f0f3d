//! Events: what the guest API shows is decided by the schedule and the clock at request time
//! (an injected clock moves a real server through a schedule from its config file), and each
//! event kind driven end to end on `imds serve` through `imds ctl`, the control API and the AWS
//! CLI.

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

/// A GET of `meta-data/PATH`.
fn get(served: &Served, path: &str) -> (u16, String) {
    crate::process::get(served, &format!("{M}/{path}"))
}

/// Polls `path` until it answers 200 (at most `within`); its body.
fn eventually(served: &Served, path: &str, within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (status, body) = get(served, path);
        if status == 200 {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} still {status} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_spot_interruption_from_imds_ctl_appears_after_its_delay() {
    let served = serve(&[]);
    assert_eq!(get(&served, "spot/instance-action").0, 404);
    let out = ctl_ok(
        &served,
        &["spot-interrupt", "--action", "stop", "--in", "3s"],
    );
    assert!(out.contains("rebalance recommendation at"), "{out}");
    assert!(out.contains(": stop at "), "{out}");
    // The rebalance recommendation at once, the notice three seconds later.
    let rebalance = eventually(&served, "events/recommendations/rebalance", Duration::ZERO);
    assert!(rebalance.starts_with("{\"noticeTime\": \""), "{rebalance}");
    assert_eq!(get(&served, "spot/instance-action").0, 404);
    let notice = eventually(&served, "spot/instance-action", Duration::from_secs(6));
    assert!(
        notice.starts_with("{\"action\": \"stop\", \"time\": \""),
        "{notice}"
    );
    assert_eq!(
        get(&served, "spot/termination-time").0,
        404,
        "only for terminate"
    );
    assert_eq!(get(&served, "instance-life-cycle").1, "spot");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        get(&served, "spot/instance-action").1,
        notice,
        "the time stays"
    );
    let status = ctl_ok(&served, &["event", "list"]);
    assert!(status.contains("instance running"), "{status}");
}

#[test]
fn a_spot_interruption_from_the_config_file_counts_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spot.toml");
    std::fs::write(
        &file,
        "[instance.events]\nspot = { action = \"terminate\", notice = \"+3s\", warning_seconds = 1 }\n",
    )
    .unwrap();
    let served = serve(&["--config", file.to_str().unwrap()]);
    assert_eq!(get(&served, "spot/instance-action").0, 404);
    let time = eventually(&served, "spot/termination-time", Duration::from_secs(6));
    assert!(time.ends_with('Z'), "{time}");
    // After the action time the instance is terminated in the control plane's view.
    std::thread::sleep(Duration::from_millis(1100));
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
    let out = ctl_ok(&served, &["asg", "Terminated", "--at", "+3s"]);
    assert!(
        out.starts_with("target lifecycle state Terminated at "),
        "{out}"
    );
    assert_eq!(
        get(&served, "autoscaling/target-lifecycle-state").1,
        "Warmed:Hibernated"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while get(&served, "autoscaling/target-lifecycle-state").1 != "Terminated" {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
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
        "[instance.events]\nspot = { action = \"stop\", notice = \"0\", warning_seconds = 1 }\n",
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

    // The spot interruption's action time has passed: the instance is stopped.
    std::thread::sleep(Duration::from_millis(1100));
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

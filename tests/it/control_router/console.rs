//! The web console's JSON views and actions, in-process: what the page is shown (and never
//! shown), the history it graphs, guardrail policies applying to its actions as to the EC2 API,
//! and the long poll waking on a change.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::Full;
use imds::control::policy::{Policy, PolicySet};
use serde_json::Value;

use super::{control, token, Fixture, INSTANCE};

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header(header::HOST, "127.0.0.1:8770")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn view(f: &Fixture, path: &str) -> Value {
    let (status, body) = control(&f.app, get(path)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// `POST /console/api/actions` of `action` with the open session's CSRF token.
async fn act(f: &Fixture, action: &str) -> (StatusCode, Value) {
    let csrf = view(f, "/console/api/session").await["csrf"]
        .as_str()
        .unwrap()
        .to_owned();
    let request = Request::post("/console/api/actions")
        .header(header::HOST, "127.0.0.1:8770")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-imds-csrf", csrf)
        .body(Full::new(Bytes::from(action.to_owned())))
        .unwrap();
    let (status, body) = control(&f.app, request).await;
    (status, serde_json::from_str(&body).unwrap())
}

#[tokio::test]
async fn the_views_show_the_instance_and_its_history_but_no_secret() {
    let f = Fixture::new("");
    let token = token(&f.app).await;
    f.guest("/latest/meta-data/ami-id").await;
    f.guest("/latest/meta-data/ami-id").await;
    f.advance(Duration::from_secs(60));
    f.guest("/latest/meta-data/iam/security-credentials/imds-default-role")
        .await;
    let fleet = view(&f, "/console/api/fleet").await;
    let row = &fleet["instances"][0];
    assert_eq!(row["instanceId"], INSTANCE);
    assert_eq!(row["name"], "imds-default");
    assert_eq!(row["state"], "running");
    assert_eq!(row["httpTokens"], "optional");
    assert_eq!(row["hopLimit"], 1);
    assert_eq!(row["endpoint"], "enabled");
    assert_eq!(row["noTokenLastHour"]["answered"], 3);
    assert_eq!(row["noTokenLastHour"]["rejected"], 0);

    let detail = view(&f, &format!("/console/api/instances/{INSTANCE}")).await;
    let answered: Vec<u64> = detail["history"]["answered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(answered.len(), 60);
    assert_eq!(answered[58..], [2, 1], "two a minute ago, one now");
    assert_eq!(detail["callers"]["lookedUp"], false, "no access log here");
    assert_eq!(detail["faults"], serde_json::json!([]));

    let credentials = f
        .guest("/latest/meta-data/iam/security-credentials/imds-default-role")
        .await
        .1;
    let credentials: Value = serde_json::from_str(&credentials).unwrap();
    let shown = format!("{fleet}{detail}");
    for secret in [
        credentials["SecretAccessKey"].as_str().unwrap(),
        credentials["Token"].as_str().unwrap(),
        credentials["AccessKeyId"].as_str().unwrap(),
        "hello from imds user-data",
        &token,
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

#[tokio::test]
async fn a_policy_that_denies_the_action_denies_it_in_the_console_with_ec2s_code() {
    let f = Fixture::new("");
    let deny = Policy::parse(
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny",
            "Action":"ec2:ModifyInstanceMetadataOptions","Resource":"*"}]}"#,
    )
    .unwrap();
    f.app
        .control
        .set_policies(PolicySet::default().with("deny-modify", deny));
    let (status, error) = act(
        &f,
        &format!(r#"{{"action":"requireImdsv2","instanceId":"{INSTANCE}"}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert_eq!(error["code"], "UnauthorizedOperation");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("not authorized"));
    let fleet = view(&f, "/console/api/fleet").await;
    assert_eq!(fleet["instances"][0]["httpTokens"], "optional");
}

#[tokio::test]
async fn the_long_poll_answers_at_once_when_behind_and_wakes_on_a_change() {
    let f = std::sync::Arc::new(Fixture::new(""));
    let version = view(&f, "/console/api/fleet").await["version"]
        .as_u64()
        .unwrap();
    let behind = view(&f, &format!("/console/api/changes?since={}", version + 7)).await;
    assert_eq!(behind["version"], version);

    let waiting = {
        let f = f.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let answer = view(&f, &format!("/console/api/changes?since={version}")).await;
            (answer, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _) = act(
        &f,
        &format!(r#"{{"action":"setHopLimit","instanceId":"{INSTANCE}","hopLimit":2}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (answer, waited) = waiting.await.unwrap();
    assert_eq!(answer["version"], version + 1);
    assert!(
        waited < Duration::from_secs(4),
        "woken by the change, not the tick: {waited:?}"
    );
    let fleet = view(&f, "/console/api/fleet").await;
    assert_eq!(fleet["instances"][0]["hopLimit"], 2);
}

#[tokio::test]
async fn at_most_32_long_polls_wait_at_once() {
    let f = std::sync::Arc::new(Fixture::new(""));
    let version = view(&f, "/console/api/fleet").await["version"]
        .as_u64()
        .unwrap();
    let path = format!("/console/api/changes?since={version}");
    let waiting: Vec<_> = (0..32)
        .map(|_| {
            let (f, path) = (f.clone(), path.clone());
            tokio::spawn(async move { control(&f.app, get(&path)).await.0 })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = control(&f.app, get(&path)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("TooManyStreams"), "{body}");
    // A change answers them all, and their slots are free again.
    let (status, _) = act(
        &f,
        &format!(r#"{{"action":"sendSpotInterruption","instanceId":"{INSTANCE}"}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for poll in waiting {
        assert_eq!(poll.await.unwrap(), StatusCode::OK);
    }
    let behind = format!("/console/api/changes?since={version}");
    assert_eq!(control(&f.app, get(&behind)).await.0, StatusCode::OK);
    let detail = view(&f, &format!("/console/api/instances/{INSTANCE}")).await;
    assert_eq!(detail["events"]["spot"]["action"], "terminate", "{detail}");
}

#[tokio::test]
async fn without_control_keys_the_console_hides_other_users_command_lines() {
    let f = Fixture::new("");
    let own = imds::fleet::callers::own_uid().unwrap();
    let slot = f.app.state.first().unwrap();
    let callers = &slot.counters().recent_callers;
    let now = std::time::SystemTime::now();
    callers.record(101, own, "python3 poll.py", now);
    callers.record(
        202,
        own + 1,
        "deploy --password hunter2-of-another-user",
        now,
    );
    let detail = view(&f, &format!("/console/api/instances/{INSTANCE}")).await;
    let recent = detail["callers"]["recent"].as_array().unwrap();
    let by_pid = |pid: u64| recent.iter().find(|c| c["pid"] == pid).unwrap();
    assert_eq!(by_pid(101)["commandLine"], "python3 poll.py");
    assert_eq!(by_pid(202)["commandLine"], Value::Null);
    assert_eq!(by_pid(202)["uid"], own + 1);
    assert!(!detail.to_string().contains("hunter2"), "{detail}");
}

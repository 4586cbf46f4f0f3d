//! `InjectFault`, `DescribeFaults` and `ClearFaults`, with the guest requests they change.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use imds::fleet::faults::Effect;

use super::{assert_error, assert_ok, element, elements, guest, text, Fixture, INSTANCE, PEER};

const ID_PATH: &str = "/latest/meta-data/instance-id";
const TOKEN: &str = "/latest/api/token";

async fn inject(f: &Fixture, params: &str) -> (StatusCode, String) {
    f.query(&format!("Action=InjectFault{params}")).await
}

/// The `<item>`s of `DescribeFaults`.
async fn described(f: &Fixture) -> Vec<String> {
    let answer = f.query("Action=DescribeFaults").await;
    let xml = assert_ok(&answer, "DescribeFaultsResponse");
    elements(text(xml, "faultSet"), "item")
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// What the fault set decides for a guest `method` request for `path`.
fn decision(f: &Fixture, method: Method, path: &str) -> Option<imds::fleet::faults::Decision> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .unwrap();
    let peer = PEER.parse::<SocketAddr>().unwrap();
    let slot = f
        .app
        .api
        .instance_for(peer)
        .expect("one instance answers everyone");
    f.app.api.fault(&slot, &request, peer)
}

#[tokio::test]
async fn a_counted_status_fault_answers_that_many_requests_then_describe_faults_counts_them() {
    let f = Fixture::new("");
    let answer = inject(&f, "&Path=/latest/meta-data/*&Status=503&Count=2").await;
    let fault = text(assert_ok(&answer, "InjectFaultResponse"), "fault").to_owned();
    let id = text(&fault, "faultId").to_owned();
    assert!(id.starts_with("fault-"), "{id}");
    assert_eq!(element(&fault, "path"), Some("/latest/meta-data/*"));
    assert_eq!(element(&fault, "status"), Some("503"));
    assert_eq!(element(&fault, "count"), Some("2"));
    assert_eq!(element(&fault, "fired"), Some("0"));
    assert_eq!(described(&f).await, [fault.as_str()]);

    assert_eq!(
        f.guest(ID_PATH).await,
        (StatusCode::SERVICE_UNAVAILABLE, String::new())
    );
    assert_eq!(
        f.guest("/latest/user-data").await.0,
        StatusCode::OK,
        "not matched"
    );
    assert_eq!(f.guest(ID_PATH).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        f.guest(ID_PATH).await,
        (StatusCode::OK, INSTANCE.to_owned())
    );
    let listed = described(&f).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(element(&listed[0], "faultId"), Some(id.as_str()));
    assert_eq!(element(&listed[0], "fired"), Some("2"));
}

#[tokio::test]
async fn a_rate_limit_fault_answers_429_beyond_its_rate_within_a_second_of_the_clock() {
    let f = Fixture::new("");
    let answer = inject(&f, "&FaultId=fault-throttle&RateLimit=2").await;
    let fault = text(assert_ok(&answer, "InjectFaultResponse"), "fault");
    assert_eq!(element(fault, "faultId"), Some("fault-throttle"));
    assert_eq!(element(fault, "path"), Some("*"));
    assert_eq!(element(fault, "rateLimit"), Some("2"));
    let statuses = |n| {
        let f = &f;
        async move {
            let mut statuses = Vec::new();
            for _ in 0..n {
                statuses.push(f.guest(ID_PATH).await.0.as_u16());
            }
            statuses
        }
    };
    assert_eq!(statuses(4).await, [200, 200, 429, 429]);
    f.advance(Duration::from_millis(999 - f.now() % 1000));
    assert_eq!(statuses(1).await, [429], "the same second");
    f.advance(Duration::from_millis(1));
    assert_eq!(statuses(3).await, [200, 200, 429], "a new second");
    assert_eq!(
        element(&described(&f).await[0], "fired"),
        Some("4"),
        "every 429"
    );
}

#[tokio::test]
async fn a_fault_applies_to_its_path_and_method_only() {
    let f = Fixture::new("");
    assert_ok(
        &inject(&f, &format!("&Path={TOKEN}&Method=put&Status=500")).await,
        "InjectFaultResponse",
    );
    assert_eq!(element(&described(&f).await[0], "method"), Some("PUT"));
    let (status, _) = guest(
        &f.app,
        Method::PUT,
        TOKEN,
        &[("x-aws-ec2-metadata-token-ttl-seconds", "60")],
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(f.guest(ID_PATH).await.0, StatusCode::OK);
    assert!(decision(&f, Method::GET, TOKEN).is_none());
    assert_eq!(
        decision(&f, Method::PUT, TOKEN).map(|d| d.effect),
        Some(Effect::Status(500))
    );
}

#[tokio::test]
async fn latency_reset_and_silence_faults_decide_the_guest_connection() {
    let f = Fixture::new("");
    assert_ok(
        &inject(&f, "&Path=/latest/meta-data/iam/*&Reset=true&Count=1").await,
        "InjectFaultResponse",
    );
    assert_ok(
        &inject(&f, "&Path=/latest/user-data&NoAnswer=true").await,
        "InjectFaultResponse",
    );
    let answer = inject(&f, "&Latency=1500ms").await;
    let fault = text(assert_ok(&answer, "InjectFaultResponse"), "fault");
    assert_eq!(element(fault, "latencyMs"), Some("1500"));
    let iam = "/latest/meta-data/iam/info";
    assert_eq!(
        decision(&f, Method::GET, iam).map(|d| d.effect),
        Some(Effect::Reset)
    );
    // Counted out: the next matching fault (the latency) decides.
    let delayed = decision(&f, Method::GET, iam).unwrap();
    assert_eq!(
        (delayed.effect, delayed.delay),
        (Effect::Answer, Duration::from_millis(1500))
    );
    assert_eq!(
        decision(&f, Method::GET, "/latest/user-data").map(|d| d.effect),
        Some(Effect::NoAnswer)
    );
    // A delayed answer is the normal one.
    assert_eq!(
        f.guest(ID_PATH).await,
        (StatusCode::OK, INSTANCE.to_owned())
    );
    let listed = described(&f).await;
    assert_eq!(element(&listed[0], "reset"), Some("true"));
    assert_eq!(element(&listed[0], "fired"), Some("1"));
    assert_eq!(element(&listed[1], "noAnswer"), Some("true"));
    assert_eq!(element(&listed[2], "fired"), Some("2"));
}

#[tokio::test]
async fn inject_fault_refuses_faults_that_make_no_sense() {
    let f = Fixture::new("");
    for params in [
        "",
        "&Path=/latest/meta-data/",
        "&Status=200",
        "&Status=600",
        "&Status=503&Reset=true",
        "&RateLimit=0",
        "&RateLimit=5&Count=3",
        "&Status=500&Probability=1.5",
        "&Status=500&Probability=likely",
        "&Status=500&Path=latest",
        "&Status=500&Method=PATCH",
        "&Status=500&Count=-1",
        "&Latency=soon",
        "&Status=500&Reset=yes",
    ] {
        assert_error(
            &inject(&f, params).await,
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        );
    }
    assert!(described(&f).await.is_empty());
    assert_ok(
        &inject(&f, "&FaultId=fault-one&Status=500&Probability=0").await,
        "InjectFaultResponse",
    );
    let message = assert_error(
        &inject(&f, "&FaultId=fault-one&Status=503").await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterValue",
    );
    assert!(message.contains("fault-one"), "{message}");
    // Probability 0 never fires.
    for _ in 0..20 {
        assert_eq!(f.guest(ID_PATH).await.0, StatusCode::OK);
    }
    assert_eq!(element(&described(&f).await[0], "probability"), Some("0"));
    assert_eq!(element(&described(&f).await[0], "fired"), Some("0"));
}

#[tokio::test]
async fn clear_faults_removes_the_ones_named_or_all() {
    let f = Fixture::new("");
    for id in ["fault-a", "fault-b", "fault-c"] {
        assert_ok(
            &inject(&f, &format!("&FaultId={id}&Path=/latest/{id}&Status=500")).await,
            "InjectFaultResponse",
        );
    }
    let message = assert_error(
        &f.query("Action=ClearFaults&FaultId.1=fault-a&FaultId.2=fault-z")
            .await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterValue",
    );
    assert!(message.contains("fault-z"), "{message}");
    assert_eq!(described(&f).await.len(), 3, "nothing cleared");
    let answer = f
        .query("Action=ClearFaults&FaultId.1=fault-a&FaultId.2=fault-c")
        .await;
    assert_eq!(
        text(assert_ok(&answer, "ClearFaultsResponse"), "return"),
        "true"
    );
    let left: Vec<String> = described(&f)
        .await
        .iter()
        .map(|item| text(item, "faultId").to_owned())
        .collect();
    assert_eq!(left, ["fault-b"]);
    assert_eq!(f.guest("/latest/fault-a").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        f.guest("/latest/fault-b").await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_ok(&f.query("Action=ClearFaults").await, "ClearFaultsResponse");
    assert!(described(&f).await.is_empty());
    assert_eq!(f.guest("/latest/fault-b").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_instance_holds_at_most_fifty_faults_and_clearing_one_makes_room() {
    let f = Fixture::new("");
    for n in 0..50 {
        let answer = inject(&f, &format!("&Path=/latest/meta-data/{n}&Status=503")).await;
        assert_ok(&answer, "InjectFaultResponse");
    }
    let refused = inject(&f, "&Path=/latest/meta-data/50&Status=503").await;
    let message = assert_error(&refused, StatusCode::BAD_REQUEST, "InvalidParameterValue");
    assert!(message.contains("at most 50 faults"), "{message}");
    assert_eq!(described(&f).await.len(), 50);
    let first = text(&described(&f).await[0], "faultId").to_owned();
    assert_ok(
        &f.query(&format!("Action=ClearFaults&FaultId.1={first}"))
            .await,
        "ClearFaultsResponse",
    );
    let answer = inject(&f, "&Path=/latest/meta-data/50&Status=503").await;
    assert_ok(&answer, "InjectFaultResponse");
    let long = format!("&Path=/{}&Status=503", "a".repeat(1024));
    let message = assert_error(
        &inject(&f, &long).await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterValue",
    );
    assert!(message.contains("1024 bytes"), "{message}");
}

//! `DescribeInstances` and `ModifyInstanceMetadataOptions`.

use std::time::Duration;

use http::{Method, StatusCode};

use super::{
    assert_error, assert_ok, element, elements, guest, text, token, Fixture, INSTANCE,
    OTHER_INSTANCE,
};

const ID_PATH: &str = "/latest/meta-data/instance-id";

fn modify(params: &str) -> String {
    format!("Action=ModifyInstanceMetadataOptions&InstanceId={INSTANCE}&{params}")
}

/// The `<metadataOptions>` of the instance, as `DescribeInstances` shows them.
async fn described_options(f: &Fixture) -> String {
    let answer = f.query("Action=DescribeInstances").await;
    let xml = assert_ok(&answer, "DescribeInstancesResponse");
    text(xml, "metadataOptions").to_owned()
}

#[tokio::test]
async fn describe_instances_shows_the_instance_with_ec2_element_names() {
    let f = Fixture::new("");
    let answer = f.query("Action=DescribeInstances").await;
    let xml = assert_ok(&answer, "DescribeInstancesResponse");
    for (tag, value) in [
        ("reservationId", "r-07c1e5a9d3b2f4e68"),
        ("ownerId", "123456789012"),
        ("instanceId", INSTANCE),
        ("imageId", "ami-0f3c9c466bb525749"),
        ("instanceType", "t3.medium"),
        ("launchTime", "2026-11-02T08:14:29Z"),
        ("availabilityZone", "us-east-1a"),
        ("architecture", "x86_64"),
        ("rootDeviceName", "/dev/xvda"),
    ] {
        assert_eq!(element(xml, tag), Some(value), "<{tag}> in {xml}");
    }
    let state = text(xml, "instanceState");
    assert_eq!(
        (text(state, "code"), text(state, "name")),
        ("16", "running")
    );
    assert!(text(xml, "iamInstanceProfile")
        .contains("<arn>arn:aws:iam::123456789012:instance-profile/imds-default-role</arn>"));
    let tags = text(xml, "tagSet");
    assert!(tags.contains("<item><key>Environment</key><value>dev</value></item>"));
    assert!(tags.contains("<item><key>Name</key><value>imds-default</value></item>"));
    let options = text(xml, "metadataOptions");
    for (tag, value) in [
        ("state", "applied"),
        ("httpTokens", "optional"),
        ("httpPutResponseHopLimit", "1"),
        ("httpEndpoint", "enabled"),
        ("httpProtocolIpv6", "disabled"),
        ("instanceMetadataTags", "disabled"),
    ] {
        assert_eq!(element(options, tag), Some(value), "<{tag}> in {options}");
    }
    // An on-demand instance has no `instanceLifecycle`.
    assert_eq!(element(xml, "instanceLifecycle"), None);
}

#[tokio::test]
async fn describe_instances_filters_leave_the_instance_out_unless_every_one_matches() {
    let f = Fixture::new("");
    let shown = |xml: &str| elements(xml, "instanceId") == [INSTANCE];
    for (filter, matching, other) in [
        ("instance-id", INSTANCE, OTHER_INSTANCE),
        ("metadata-options.http-tokens", "optional", "required"),
        ("metadata-options.http-endpoint", "enabled", "disabled"),
        ("instance-state-name", "running", "terminated"),
        ("availability-zone", "us-east-1a", "us-east-1b"),
        ("tag:Name", "imds-default", "web"),
        ("tag-key", "Environment", "Owner"),
    ] {
        let query = |value: &str| {
            format!("Action=DescribeInstances&Filter.1.Name={filter}&Filter.1.Value.1={value}")
        };
        let answer = f.query(&query(matching)).await;
        assert!(
            shown(assert_ok(&answer, "DescribeInstancesResponse")),
            "{filter}"
        );
        let answer = f.query(&query(other)).await;
        let xml = assert_ok(&answer, "DescribeInstancesResponse");
        assert_eq!(element(xml, "reservationSet"), Some(""), "{filter}: {xml}");
    }
    // Values of one filter are alternatives; filters all apply.
    let answer = f
        .query(
            "Action=DescribeInstances&Filter.1.Name=tag:Name&Filter.1.Value.1=web\
             &Filter.1.Value.2=imds-default&Filter.2.Name=instance-state-name\
             &Filter.2.Value.1=running",
        )
        .await;
    assert!(shown(assert_ok(&answer, "DescribeInstancesResponse")));
    let answer = f
        .query(
            "Action=DescribeInstances&Filter.1.Name=tag:Name&Filter.1.Value.1=imds-default\
             &Filter.2.Name=instance-state-name&Filter.2.Value.1=stopped",
        )
        .await;
    assert!(!shown(assert_ok(&answer, "DescribeInstancesResponse")));
    let message = assert_error(
        &f.query("Action=DescribeInstances&Filter.1.Name=vpc-idd&Filter.1.Value.1=x")
            .await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterValue",
    );
    assert!(message.contains("vpc-idd"), "{message}");
}

#[tokio::test]
async fn describe_instances_refuses_malformed_and_unknown_instance_ids() {
    let f = Fixture::new("");
    let answer = f
        .query(&format!("Action=DescribeInstances&InstanceId.1={INSTANCE}"))
        .await;
    assert_eq!(
        elements(
            assert_ok(&answer, "DescribeInstancesResponse"),
            "instanceId"
        ),
        [INSTANCE]
    );
    let message = assert_error(
        &f.query(&format!(
            "Action=DescribeInstances&InstanceId.1={INSTANCE}&InstanceId.2={OTHER_INSTANCE}"
        ))
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidInstanceID.NotFound",
    );
    assert!(message.contains(OTHER_INSTANCE), "{message}");
    for malformed in ["web-1", "i-xyz", "i-0b4f7d2c9a1e83f5"] {
        assert_error(
            &f.query(&format!(
                "Action=DescribeInstances&InstanceId.1={malformed}"
            ))
            .await,
            StatusCode::BAD_REQUEST,
            "InvalidInstanceID.Malformed",
        );
    }
}

#[tokio::test]
async fn modify_instance_metadata_options_reads_pending_then_applied_on_the_clock() {
    let f = Fixture::new("");
    let answer = f
        .query(&modify("HttpTokens=required&HttpPutResponseHopLimit=2"))
        .await;
    let xml = assert_ok(&answer, "ModifyInstanceMetadataOptionsResponse");
    assert_eq!(text(xml, "instanceId"), INSTANCE);
    let options = text(xml, "instanceMetadataOptions");
    for (tag, value) in [
        ("state", "pending"),
        ("httpTokens", "required"),
        ("httpPutResponseHopLimit", "2"),
        ("httpEndpoint", "enabled"),
        ("httpProtocolIpv6", "disabled"),
        ("instanceMetadataTags", "disabled"),
    ] {
        assert_eq!(element(options, tag), Some(value), "<{tag}> in {options}");
    }
    assert_eq!(
        element(&described_options(&f).await, "state"),
        Some("pending")
    );
    f.advance(Duration::from_millis(499));
    assert_eq!(
        element(&described_options(&f).await, "state"),
        Some("pending")
    );
    f.advance(Duration::from_millis(1));
    let options = described_options(&f).await;
    assert_eq!(element(&options, "state"), Some("applied"));
    assert_eq!(element(&options, "httpTokens"), Some("required"));
}

#[tokio::test]
async fn the_guest_api_follows_a_metadata_options_change_at_once() {
    let f = Fixture::new("");
    assert_eq!(
        f.guest(ID_PATH).await,
        (StatusCode::OK, INSTANCE.to_owned())
    );
    assert_ok(
        &f.query(&modify("HttpTokens=required")).await,
        "ModifyInstanceMetadataOptionsResponse",
    );
    // Still `pending` on the control side, already enforced on the guest side.
    assert_eq!(f.guest(ID_PATH).await.0, StatusCode::UNAUTHORIZED);
    let token = token(&f.app).await;
    let with_token = [("x-aws-ec2-metadata-token", token.as_str())];
    assert_eq!(
        guest(&f.app, Method::GET, ID_PATH, &with_token).await,
        (StatusCode::OK, INSTANCE.to_owned())
    );
    assert_eq!(
        f.app.state.current().options.http_tokens,
        imds::fleet::options::HttpTokens::Required
    );

    assert_ok(
        &f.query(&modify("HttpEndpoint=disabled")).await,
        "ModifyInstanceMetadataOptionsResponse",
    );
    assert_eq!(
        guest(&f.app, Method::GET, ID_PATH, &with_token).await.0,
        StatusCode::FORBIDDEN
    );
    assert_ok(
        &f.query(&modify("HttpEndpoint=enabled&HttpTokens=optional"))
            .await,
        "ModifyInstanceMetadataOptionsResponse",
    );
    assert_eq!(f.guest(ID_PATH).await.0, StatusCode::OK);
}

#[tokio::test]
async fn omitted_metadata_options_keep_their_values() {
    let f = Fixture::new("");
    assert_ok(
        &f.query(&modify("HttpTokens=required&InstanceMetadataTags=enabled"))
            .await,
        "ModifyInstanceMetadataOptionsResponse",
    );
    let answer = f
        .query(&modify(
            "HttpPutResponseHopLimit=3&HttpProtocolIpv6=enabled",
        ))
        .await;
    let options = text(
        assert_ok(&answer, "ModifyInstanceMetadataOptionsResponse"),
        "instanceMetadataOptions",
    );
    for (tag, value) in [
        ("httpTokens", "required"),
        ("httpPutResponseHopLimit", "3"),
        ("httpEndpoint", "enabled"),
        ("httpProtocolIpv6", "enabled"),
        ("instanceMetadataTags", "enabled"),
    ] {
        assert_eq!(element(options, tag), Some(value), "<{tag}> in {options}");
    }
    // Tags in the metadata are on: the guest sees them.
    let token = token(&f.app).await;
    let with_token = [("x-aws-ec2-metadata-token", token.as_str())];
    assert_eq!(
        guest(
            &f.app,
            Method::GET,
            "/latest/meta-data/tags/instance/Name",
            &with_token
        )
        .await,
        (StatusCode::OK, "imds-default".to_owned())
    );
}

#[tokio::test]
async fn modify_instance_metadata_options_refuses_bad_input_and_changes_nothing() {
    let f = Fixture::new("");
    let before = f.app.state.current().options;
    for (params, code) in [
        ("HttpTokens=sometimes", "InvalidParameterValue"),
        ("HttpPutResponseHopLimit=65", "InvalidParameterValue"),
        ("HttpPutResponseHopLimit=0", "InvalidParameterValue"),
        ("HttpPutResponseHopLimit=two", "InvalidParameterValue"),
        ("HttpEndpoint=on", "InvalidParameterValue"),
        ("HttpProtocolIpv6=yes", "InvalidParameterValue"),
        ("InstanceMetadataTags=true", "InvalidParameterValue"),
        // One bad value refuses the whole change.
        (
            "HttpTokens=required&HttpEndpoint=off",
            "InvalidParameterValue",
        ),
    ] {
        assert_error(
            &f.query(&modify(params)).await,
            StatusCode::BAD_REQUEST,
            code,
        );
    }
    let message = assert_error(
        &f.query("Action=ModifyInstanceMetadataOptions&HttpTokens=required")
            .await,
        StatusCode::BAD_REQUEST,
        "MissingParameter",
    );
    assert!(message.contains("InstanceId"), "{message}");
    assert_error(
        &f.query(&format!(
            "Action=ModifyInstanceMetadataOptions&InstanceId={OTHER_INSTANCE}&HttpTokens=required"
        ))
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidInstanceID.NotFound",
    );
    assert_error(
        &f.query("Action=ModifyInstanceMetadataOptions&InstanceId=i-nothex&HttpTokens=required")
            .await,
        StatusCode::BAD_REQUEST,
        "InvalidInstanceID.Malformed",
    );
    assert_eq!(f.app.state.current().options, before);
    assert_eq!(f.guest(ID_PATH).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_dry_run_of_modify_instance_metadata_options_answers_412_and_changes_nothing() {
    let f = Fixture::new("");
    assert_error(
        &f.query(&modify("HttpTokens=required&DryRun=true")).await,
        StatusCode::PRECONDITION_FAILED,
        "DryRunOperation",
    );
    assert_eq!(f.guest(ID_PATH).await.0, StatusCode::OK);
    let options = described_options(&f).await;
    assert_eq!(element(&options, "httpTokens"), Some("optional"));
    assert_eq!(element(&options, "state"), Some("applied"));
    // A dry run that would fail fails as the real request would.
    assert_error(
        &f.query(&modify("HttpTokens=never&DryRun=true")).await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterValue",
    );
}

#[tokio::test]
async fn a_client_token_is_at_most_64_ascii_characters() {
    let f = Fixture::new("[server]\nfleet = true\n");
    let launch = |token: &str| {
        format!("Action=RunInstances&ImageId=ami-0abcdef1234567890&MinCount=1&MaxCount=1&ClientToken={token}")
    };
    assert_ok(
        &f.query(&launch(&"t".repeat(64))).await,
        "RunInstancesResponse",
    );
    for token in ["t".repeat(65), "caf%C3%A9".to_owned(), "x".repeat(100_000)] {
        let message = assert_error(
            &f.query(&launch(&token)).await,
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        );
        assert!(message.contains("at most 64 ASCII"), "{message}");
    }
}

#[tokio::test]
async fn a_terminated_instance_is_forgotten_an_hour_later_slot_metrics_and_all() {
    let f = Fixture::new("[server]\nfleet = true\n");
    let launched = f
        .query("Action=RunInstances&ImageId=ami-0abcdef1234567890&MinCount=2&MaxCount=2")
        .await;
    let ids: Vec<String> = elements(assert_ok(&launched, "RunInstancesResponse"), "instanceId")
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 2);
    let served = |f: &Fixture| f.app.state.instances().len();
    let before = served(&f);
    let terminate = format!(
        "Action=TerminateInstances&InstanceId.1={}&InstanceId.2={}",
        ids[0], ids[1]
    );
    assert_ok(&f.query(&terminate).await, "TerminateInstancesResponse");
    // Still shown (terminated) within the hour, and kept.
    f.advance(Duration::from_secs(59 * 60));
    assert_eq!(f.app.control.forget_gone().await, 0);
    assert_eq!(served(&f), before);
    // Then forgotten by the minute's sweep: no slot, no series, no answer.
    f.advance(Duration::from_secs(2 * 60));
    let sweep = tokio::spawn(f.app.control.clone().forget_gone_on_schedule());
    tokio::task::yield_now().await;
    f.advance(Duration::from_secs(61));
    for _ in 0..100 {
        if served(&f) == before - 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sweep.abort();
    assert_eq!(served(&f), before - 2);
    let (_, metrics) = super::control(
        &f.app,
        http::Request::get("/metrics")
            .body(http_body_util::Full::default())
            .unwrap(),
    )
    .await;
    for id in &ids {
        assert!(!metrics.contains(id.as_str()), "{id} in /metrics");
        assert_error(
            &f.query(&format!("Action=DescribeInstances&InstanceId.1={id}"))
                .await,
            StatusCode::BAD_REQUEST,
            "InvalidInstanceID.NotFound",
        );
    }
}

/// `Action=DescribeInstances` POSTed with a SigV4 `Authorization` scoped to `region` (the
/// control API has no keys: only the scope is read).
async fn described_in(f: &Fixture, region: &str) -> (StatusCode, String) {
    let request = http::Request::post("/")
        .header(http::header::HOST, "127.0.0.1:8770")
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .header(
            http::header::AUTHORIZATION,
            format!("AWS4-HMAC-SHA256 Credential=AKIAANYKEY0000000000/20261102/{region}/ec2/aws4_request, SignedHeaders=host, Signature=00"),
        )
        .body(http_body_util::Full::new(bytes::Bytes::from(
            "Action=DescribeInstances&Version=2016-11-15",
        )))
        .unwrap();
    super::control(&f.app, request).await
}

#[tokio::test]
async fn a_request_signed_for_another_region_is_refused_with_the_region_it_should_name() {
    let f = Fixture::new("");
    let (status, xml) = described_in(&f, "eu-west-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{xml}");
    assert_eq!(text(&xml, "Code"), "SignatureDoesNotMatch");
    assert_eq!(
        text(&xml, "Message").replace("&apos;", "'"),
        "Credential should be scoped to a valid region, not 'eu-west-1'. This endpoint serves us-east-1."
    );
    assert!(!xml.contains(INSTANCE), "no instance of this region: {xml}");
    let (status, xml) = described_in(&f, "us-east-1").await;
    assert_eq!(status, StatusCode::OK, "{xml}");
    assert!(xml.contains(INSTANCE));
}

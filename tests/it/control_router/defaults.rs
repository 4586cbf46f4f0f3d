//! `GetInstanceMetadataDefaults` and `ModifyInstanceMetadataDefaults`, and the guardrail
//! `HttpTokensEnforced` puts on `ModifyInstanceMetadataOptions`.

use http::StatusCode;

use super::{assert_error, assert_ok, element, text, Fixture, INSTANCE};

/// The `<accountLevel>` of `GetInstanceMetadataDefaults`.
async fn account_level(f: &Fixture) -> String {
    let answer = f.query("Action=GetInstanceMetadataDefaults").await;
    text(
        assert_ok(&answer, "GetInstanceMetadataDefaultsResponse"),
        "accountLevel",
    )
    .to_owned()
}

async fn modify_defaults(f: &Fixture, params: &str) -> (StatusCode, String) {
    f.query(&format!("Action=ModifyInstanceMetadataDefaults&{params}"))
        .await
}

#[tokio::test]
async fn get_instance_metadata_defaults_shows_only_what_is_set() {
    let f = Fixture::new("");
    assert_eq!(account_level(&f).await, "<managedBy>account</managedBy>");
    let answer = modify_defaults(
        &f,
        "HttpTokens=required&HttpPutResponseHopLimit=2&HttpEndpoint=enabled\
         &InstanceMetadataTags=disabled&HttpTokensEnforced=disabled",
    )
    .await;
    assert_eq!(
        text(
            assert_ok(&answer, "ModifyInstanceMetadataDefaultsResponse"),
            "return"
        ),
        "true"
    );
    let level = account_level(&f).await;
    for (tag, value) in [
        ("httpTokens", "required"),
        ("httpPutResponseHopLimit", "2"),
        ("httpEndpoint", "enabled"),
        ("instanceMetadataTags", "disabled"),
        ("managedBy", "account"),
        ("httpTokensEnforced", "disabled"),
    ] {
        assert_eq!(element(&level, tag), Some(value), "<{tag}> in {level}");
    }
    // Defaults are for instances launched later: the running one keeps its options.
    assert_eq!(
        f.guest("/latest/meta-data/instance-id").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn omitted_defaults_stay_and_no_preference_clears_one() {
    let f = Fixture::new("");
    assert_ok(
        &modify_defaults(&f, "HttpTokens=required&HttpPutResponseHopLimit=2").await,
        "ModifyInstanceMetadataDefaultsResponse",
    );
    assert_ok(
        &modify_defaults(&f, "HttpEndpoint=disabled").await,
        "ModifyInstanceMetadataDefaultsResponse",
    );
    let level = account_level(&f).await;
    assert_eq!(element(&level, "httpTokens"), Some("required"));
    assert_eq!(element(&level, "httpPutResponseHopLimit"), Some("2"));
    assert_eq!(element(&level, "httpEndpoint"), Some("disabled"));
    assert_ok(
        &modify_defaults(
            &f,
            "HttpTokens=no-preference&HttpPutResponseHopLimit=-1&HttpEndpoint=no-preference",
        )
        .await,
        "ModifyInstanceMetadataDefaultsResponse",
    );
    assert_eq!(account_level(&f).await, "<managedBy>account</managedBy>");
}

#[tokio::test]
async fn modify_instance_metadata_defaults_refuses_bad_values_and_dry_runs_change_nothing() {
    let f = Fixture::new("");
    for params in [
        "HttpTokens=sometimes",
        "HttpPutResponseHopLimit=65",
        "HttpPutResponseHopLimit=-2",
        "HttpEndpoint=off",
        "InstanceMetadataTags=no",
        "HttpTokensEnforced=true",
        // One bad value refuses the whole change.
        "HttpTokens=required&HttpEndpoint=off",
    ] {
        assert_error(
            &modify_defaults(&f, params).await,
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        );
    }
    assert_error(
        &modify_defaults(&f, "HttpTokens=required&DryRun=true").await,
        StatusCode::PRECONDITION_FAILED,
        "DryRunOperation",
    );
    assert_eq!(account_level(&f).await, "<managedBy>account</managedBy>");
}

#[tokio::test]
async fn http_tokens_enforced_makes_modify_instance_metadata_options_refuse_imdsv1() {
    let f = Fixture::new("");
    let options = |tokens: &str| {
        format!("Action=ModifyInstanceMetadataOptions&InstanceId={INSTANCE}&HttpTokens={tokens}")
    };
    assert_ok(
        &modify_defaults(&f, "HttpTokensEnforced=enabled").await,
        "ModifyInstanceMetadataDefaultsResponse",
    );
    assert_eq!(
        element(&account_level(&f).await, "httpTokensEnforced"),
        Some("enabled")
    );
    assert_ok(
        &f.query(&options("required")).await,
        "ModifyInstanceMetadataOptionsResponse",
    );
    let message = assert_error(
        &f.query(&options("optional")).await,
        StatusCode::BAD_REQUEST,
        "UnsupportedOperation",
    );
    assert!(message.contains("HttpTokensEnforced"), "{message}");
    // Refused, not dry-run: the guardrail is checked before the dry run succeeds.
    assert_error(
        &f.query(&format!("{}&DryRun=true", options("optional")))
            .await,
        StatusCode::BAD_REQUEST,
        "UnsupportedOperation",
    );
    assert_eq!(
        f.guest("/latest/meta-data/instance-id").await.0,
        StatusCode::UNAUTHORIZED,
        "IMDSv1 stays off"
    );
    // Other options can still change.
    assert_ok(
        &f.query(&format!(
            "Action=ModifyInstanceMetadataOptions&InstanceId={INSTANCE}&HttpPutResponseHopLimit=2"
        ))
        .await,
        "ModifyInstanceMetadataOptionsResponse",
    );
    for lifted in ["disabled", "no-preference"] {
        assert_ok(
            &modify_defaults(&f, "HttpTokensEnforced=enabled").await,
            "ModifyInstanceMetadataDefaultsResponse",
        );
        assert_ok(
            &modify_defaults(&f, &format!("HttpTokensEnforced={lifted}")).await,
            "ModifyInstanceMetadataDefaultsResponse",
        );
        assert_ok(
            &f.query(&options("optional")).await,
            "ModifyInstanceMetadataOptionsResponse",
        );
        assert_eq!(
            f.guest("/latest/meta-data/instance-id").await.0,
            StatusCode::OK
        );
        assert_ok(
            &f.query(&options("required")).await,
            "ModifyInstanceMetadataOptionsResponse",
        );
    }
}

//! IAM instance profile associations: `AssociateIamInstanceProfile`,
//! `ReplaceIamInstanceProfileAssociation`, `DisassociateIamInstanceProfile` and
//! `DescribeIamInstanceProfileAssociations`.

use std::time::Duration;

use http::StatusCode;

use super::{
    assert_error, assert_ok, element, elements, iso, text, Fixture, INSTANCE, OTHER_INSTANCE,
};

const CREDENTIALS: &str = "/latest/meta-data/iam/security-credentials/";
const NO_ROLE: &str = "[instance]\niam = {}\n";

fn profile_arn(name: &str) -> String {
    format!("arn:aws:iam::123456789012:instance-profile/{name}")
}

/// The instance's current association id, from `DescribeIamInstanceProfileAssociations`.
async fn current_association(f: &Fixture) -> Option<String> {
    let answer = f
        .query("Action=DescribeIamInstanceProfileAssociations")
        .await;
    let xml = assert_ok(&answer, "DescribeIamInstanceProfileAssociationsResponse");
    element(xml, "associationId").map(str::to_owned)
}

/// The role the guest API serves credentials for, if any.
async fn guest_role(f: &Fixture) -> Option<String> {
    match f.guest(CREDENTIALS).await {
        (StatusCode::OK, role) => Some(role),
        (StatusCode::NOT_FOUND, _) => None,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn describe_iam_instance_profile_associations_shows_the_config_file_role() {
    let f = Fixture::new("");
    let answer = f
        .query("Action=DescribeIamInstanceProfileAssociations")
        .await;
    let xml = assert_ok(&answer, "DescribeIamInstanceProfileAssociationsResponse");
    let set = text(xml, "iamInstanceProfileAssociationSet");
    assert_eq!(elements(set, "associationId").len(), 1, "{xml}");
    let id = text(set, "associationId");
    assert!(
        id.starts_with("iip-assoc-") && id.len() == "iip-assoc-".len() + 17,
        "{id}"
    );
    assert_eq!(text(set, "instanceId"), INSTANCE);
    assert_eq!(text(set, "state"), "associated");
    let profile = text(set, "iamInstanceProfile");
    assert_eq!(text(profile, "arn"), profile_arn("imds-default-role"));
    assert!(text(profile, "id").starts_with("AIPA"), "{profile}");
    // The same id every time.
    assert_eq!(current_association(&f).await.as_deref(), Some(id));
}

#[tokio::test]
async fn describe_iam_instance_profile_associations_filters_and_ids() {
    let f = Fixture::new("");
    let id = current_association(&f).await.unwrap();
    let listed = |query: String| {
        let f = &f;
        async move {
            let answer = f
                .query(&format!(
                    "Action=DescribeIamInstanceProfileAssociations{query}"
                ))
                .await;
            let xml = assert_ok(&answer, "DescribeIamInstanceProfileAssociationsResponse");
            elements(xml, "associationId").len()
        }
    };
    assert_eq!(listed(format!("&AssociationId.1={id}")).await, 1);
    assert_eq!(
        listed(format!(
            "&Filter.1.Name=instance-id&Filter.1.Value.1={INSTANCE}"
        ))
        .await,
        1
    );
    assert_eq!(
        listed(format!(
            "&Filter.1.Name=instance-id&Filter.1.Value.1={OTHER_INSTANCE}"
        ))
        .await,
        0
    );
    assert_eq!(
        listed("&Filter.1.Name=state&Filter.1.Value.1=associated".into()).await,
        1
    );
    assert_eq!(
        listed("&Filter.1.Name=state&Filter.1.Value.1=disassociating".into()).await,
        0
    );
    assert_error(
        &f.query("Action=DescribeIamInstanceProfileAssociations&AssociationId.1=iip-assoc-00000000000000000")
            .await,
        StatusCode::BAD_REQUEST,
        "InvalidAssociationID.NotFound",
    );
    assert_error(
        &f.query(
            "Action=DescribeIamInstanceProfileAssociations&Filter.1.Name=role&Filter.1.Value.1=x",
        )
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterValue",
    );
}

#[tokio::test]
async fn disassociate_iam_instance_profile_takes_the_role_from_the_guest() {
    let f = Fixture::new("");
    assert_eq!(guest_role(&f).await.as_deref(), Some("imds-default-role"));
    let id = current_association(&f).await.unwrap();
    let answer = f
        .query(&format!(
            "Action=DisassociateIamInstanceProfile&AssociationId={id}"
        ))
        .await;
    let xml = assert_ok(&answer, "DisassociateIamInstanceProfileResponse");
    let association = text(xml, "iamInstanceProfileAssociation");
    assert_eq!(text(association, "associationId"), id);
    assert_eq!(text(association, "instanceId"), INSTANCE);
    assert_eq!(text(association, "state"), "disassociating");
    assert_eq!(text(association, "arn"), profile_arn("imds-default-role"));

    assert_eq!(guest_role(&f).await, None);
    assert_eq!(
        f.guest("/latest/meta-data/iam/info").await.0,
        StatusCode::NOT_FOUND
    );
    assert!(f.app.state.current().instance.iam.is_none());
    assert_eq!(current_association(&f).await, None);
    // The association is gone: disassociating it again is refused.
    assert_error(
        &f.query(&format!(
            "Action=DisassociateIamInstanceProfile&AssociationId={id}"
        ))
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidAssociationID.NotFound",
    );
    let answer = f.query("Action=DescribeInstances").await;
    assert_eq!(
        element(
            assert_ok(&answer, "DescribeInstancesResponse"),
            "iamInstanceProfile"
        ),
        None
    );
}

#[tokio::test]
async fn associate_iam_instance_profile_gives_a_role_to_an_instance_without_one() {
    let f = Fixture::new(NO_ROLE);
    assert_eq!(guest_role(&f).await, None);
    let answer = f
        .query(&format!(
            "Action=AssociateIamInstanceProfile&InstanceId={INSTANCE}&IamInstanceProfile.Name=web-role"
        ))
        .await;
    let xml = assert_ok(&answer, "AssociateIamInstanceProfileResponse");
    let association = text(xml, "iamInstanceProfileAssociation");
    let id = text(association, "associationId");
    assert!(id.starts_with("iip-assoc-"), "{id}");
    assert_eq!(text(association, "instanceId"), INSTANCE);
    assert_eq!(text(association, "state"), "associating");
    assert_eq!(text(association, "arn"), profile_arn("web-role"));

    assert_eq!(guest_role(&f).await.as_deref(), Some("web-role"));
    let (status, credentials) = f.guest(&format!("{CREDENTIALS}web-role")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(credentials.contains("\"AccessKeyId\""), "{credentials}");
    let (_, info) = f.guest("/latest/meta-data/iam/info").await;
    assert!(info.contains(&profile_arn("web-role")), "{info}");
    assert_eq!(current_association(&f).await.as_deref(), Some(id));

    // One association per instance.
    let message = assert_error(
        &f.query(&format!(
            "Action=AssociateIamInstanceProfile&InstanceId={INSTANCE}&IamInstanceProfile.Name=other"
        ))
        .await,
        StatusCode::BAD_REQUEST,
        "IncorrectState",
    );
    assert!(message.contains("existing association"), "{message}");
    assert_eq!(guest_role(&f).await.as_deref(), Some("web-role"));
}

#[tokio::test]
async fn associate_iam_instance_profile_refuses_bad_input() {
    let f = Fixture::new(NO_ROLE);
    let associate = |rest: &str| format!("Action=AssociateIamInstanceProfile{rest}");
    let message = assert_error(
        &f.query(&associate(&format!("&InstanceId={INSTANCE}")))
            .await,
        StatusCode::BAD_REQUEST,
        "MissingParameter",
    );
    assert!(message.contains("IamInstanceProfile"), "{message}");
    assert_error(
        &f.query(&associate("&IamInstanceProfile.Name=web-role"))
            .await,
        StatusCode::BAD_REQUEST,
        "MissingParameter",
    );
    assert_error(
        &f.query(&associate(&format!(
            "&InstanceId={INSTANCE}&IamInstanceProfile.Arn=arn:aws:iam::123456789012:role/web-role"
        )))
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterValue",
    );
    assert_error(
        &f.query(&associate(&format!(
            "&InstanceId={OTHER_INSTANCE}&IamInstanceProfile.Name=web-role"
        )))
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidInstanceID.NotFound",
    );
    assert_eq!(guest_role(&f).await, None);
    assert_eq!(current_association(&f).await, None);
}

#[tokio::test]
async fn replace_iam_instance_profile_association_swaps_the_role_under_a_new_id() {
    let f = Fixture::new("");
    let old = current_association(&f).await.unwrap();
    let answer = f
        .query(&format!(
            "Action=ReplaceIamInstanceProfileAssociation&AssociationId={old}\
             &IamInstanceProfile.Arn={}",
            profile_arn("team/batch-role")
        ))
        .await;
    let xml = assert_ok(&answer, "ReplaceIamInstanceProfileAssociationResponse");
    let association = text(xml, "iamInstanceProfileAssociation");
    let new = text(association, "associationId");
    assert_ne!(new, old);
    assert_eq!(text(association, "state"), "associating");
    // The profile's name is the ARN's last path segment.
    assert_eq!(text(association, "arn"), profile_arn("batch-role"));
    assert_eq!(guest_role(&f).await.as_deref(), Some("batch-role"));
    assert_eq!(
        f.guest(&format!("{CREDENTIALS}imds-default-role")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(current_association(&f).await.as_deref(), Some(new));

    // The replaced association is gone.
    for action in [
        "ReplaceIamInstanceProfileAssociation&IamInstanceProfile.Name=x",
        "DisassociateIamInstanceProfile",
    ] {
        assert_error(
            &f.query(&format!("Action={action}&AssociationId={old}"))
                .await,
            StatusCode::BAD_REQUEST,
            "InvalidAssociationID.NotFound",
        );
    }
    assert_error(
        &f.query("Action=ReplaceIamInstanceProfileAssociation&IamInstanceProfile.Name=x")
            .await,
        StatusCode::BAD_REQUEST,
        "MissingParameter",
    );
    assert_eq!(guest_role(&f).await.as_deref(), Some("batch-role"));
    // The current one can be disassociated.
    assert_ok(
        &f.query(&format!(
            "Action=DisassociateIamInstanceProfile&AssociationId={new}"
        ))
        .await,
        "DisassociateIamInstanceProfileResponse",
    );
    assert_eq!(guest_role(&f).await, None);
}

#[tokio::test]
async fn association_timestamps_are_the_clock_time_the_association_was_made() {
    let f = Fixture::new("");
    let timestamp = |answer: &(StatusCode, String)| text(&answer.1, "timestamp").to_owned();
    // The config file's association is the launch's.
    f.advance(Duration::from_secs(3600));
    let described = f
        .query("Action=DescribeIamInstanceProfileAssociations")
        .await;
    assert_eq!(timestamp(&described), "2026-11-02T08:14:29Z");
    let old = text(&described.1, "associationId").to_owned();

    let replaced_at = f.now();
    let replaced = f
        .query(&format!(
            "Action=ReplaceIamInstanceProfileAssociation&AssociationId={old}&IamInstanceProfile.Name=web-role"
        ))
        .await;
    assert_eq!(timestamp(&replaced), iso(replaced_at));
    let new = text(&replaced.1, "associationId").to_owned();
    f.advance(Duration::from_secs(3600));
    let described = f
        .query("Action=DescribeIamInstanceProfileAssociations")
        .await;
    assert_eq!(timestamp(&described), iso(replaced_at));
    let gone = f
        .query(&format!(
            "Action=DisassociateIamInstanceProfile&AssociationId={new}"
        ))
        .await;
    assert_eq!(timestamp(&gone), iso(replaced_at));

    let associated_at = f.now();
    let associated = f
        .query(&format!(
            "Action=AssociateIamInstanceProfile&InstanceId={INSTANCE}&IamInstanceProfile.Name=web-role"
        ))
        .await;
    assert_eq!(timestamp(&associated), iso(associated_at));
}

#[tokio::test]
async fn describing_an_association_of_an_instance_without_one_is_refused() {
    let f = Fixture::new("");
    let id = current_association(&f).await.unwrap();
    assert_ok(
        &f.query(&format!(
            "Action=DisassociateIamInstanceProfile&AssociationId={id}"
        ))
        .await,
        "DisassociateIamInstanceProfileResponse",
    );
    let message = assert_error(
        &f.query(&format!(
            "Action=DescribeIamInstanceProfileAssociations&AssociationId.1={id}"
        ))
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidAssociationID.NotFound",
    );
    assert!(message.contains(&id), "{message}");
    // Filters are checked whether or not there is an association.
    assert_error(
        &f.query(
            "Action=DescribeIamInstanceProfileAssociations&Filter.1.Name=role&Filter.1.Value.1=x",
        )
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterValue",
    );
    let answer = f
        .query("Action=DescribeIamInstanceProfileAssociations&Filter.1.Name=state&Filter.1.Value.1=associated")
        .await;
    let xml = assert_ok(&answer, "DescribeIamInstanceProfileAssociationsResponse");
    assert_eq!(text(xml, "iamInstanceProfileAssociationSet"), "");
}

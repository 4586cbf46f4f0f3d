//! `CreateTags`, `DeleteTags` and `DescribeTags`.

use std::collections::BTreeMap;

use http::StatusCode;

use super::{assert_error, assert_ok, elements, Fixture, INSTANCE, OTHER_INSTANCE};

/// Tags in the metadata on, so the guest sees them under `tags/instance/`.
const TAGS_SHOWN: &str = "[instance.metadata_options]\ninstance_metadata_tags = \"enabled\"\n";
const TAGS: &str = "/latest/meta-data/tags/instance";

/// The tags of the instance the guest API serves.
fn tags(f: &Fixture) -> BTreeMap<String, String> {
    f.app.state.current().instance.config.tags.clone()
}

fn pairs(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn create_tags_adds_and_overwrites_tags_and_the_guest_sees_them() {
    let f = Fixture::new(TAGS_SHOWN);
    assert_eq!(f.guest(TAGS).await.1, "Environment\nName");
    let answer = f
        .query(&format!(
            "Action=CreateTags&ResourceId.1={INSTANCE}&Tag.1.Key=Team&Tag.1.Value=payments\
             &Tag.2.Key=Environment&Tag.2.Value=prod&Tag.3.Key=Empty"
        ))
        .await;
    let xml = assert_ok(&answer, "CreateTagsResponse");
    assert_eq!(elements(xml, "return"), ["true"]);
    assert_eq!(
        tags(&f),
        pairs(&[
            ("Empty", ""),
            ("Environment", "prod"),
            ("Name", "imds-default"),
            ("Team", "payments"),
        ])
    );
    assert_eq!(f.guest(TAGS).await.1, "Empty\nEnvironment\nName\nTeam");
    assert_eq!(
        f.guest(&format!("{TAGS}/Team")).await,
        (StatusCode::OK, "payments".to_owned())
    );
    assert_eq!(f.guest(&format!("{TAGS}/Environment")).await.1, "prod");
}

#[tokio::test]
async fn delete_tags_removes_by_key_and_a_given_value_only_when_it_matches() {
    let f = Fixture::new(TAGS_SHOWN);
    let delete = |tags: &str| format!("Action=DeleteTags&ResourceId.1={INSTANCE}{tags}");
    // A value that does not match keeps the tag.
    let answer = f
        .query(&delete("&Tag.1.Key=Environment&Tag.1.Value=prod"))
        .await;
    assert_eq!(
        elements(assert_ok(&answer, "DeleteTagsResponse"), "return"),
        ["true"]
    );
    assert_eq!(
        tags(&f),
        pairs(&[("Environment", "dev"), ("Name", "imds-default")])
    );
    assert_ok(
        &f.query(&delete(
            "&Tag.1.Key=Environment&Tag.1.Value=dev&Tag.2.Key=Absent",
        ))
        .await,
        "DeleteTagsResponse",
    );
    assert_eq!(tags(&f), pairs(&[("Name", "imds-default")]));
    assert_eq!(
        f.guest(&format!("{TAGS}/Environment")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_ok(
        &f.query(&delete("&Tag.1.Key=Name")).await,
        "DeleteTagsResponse",
    );
    assert!(tags(&f).is_empty());
}

#[tokio::test]
async fn delete_tags_without_tags_removes_every_tag() {
    let f = Fixture::new(TAGS_SHOWN);
    assert_ok(
        &f.query(&format!("Action=DeleteTags&ResourceId.1={INSTANCE}"))
            .await,
        "DeleteTagsResponse",
    );
    assert!(tags(&f).is_empty());
    let answer = f.query("Action=DescribeTags").await;
    assert_eq!(
        elements(assert_ok(&answer, "DescribeTagsResponse"), "tagSet"),
        [""]
    );
}

#[tokio::test]
async fn describe_tags_lists_the_instance_tags_through_its_filters() {
    let f = Fixture::new("");
    let answer = f.query("Action=DescribeTags").await;
    let xml = assert_ok(&answer, "DescribeTagsResponse");
    assert_eq!(
        elements(xml, "item"),
        [
            format!("<resourceId>{INSTANCE}</resourceId><resourceType>instance</resourceType><key>Environment</key><value>dev</value>"),
            format!("<resourceId>{INSTANCE}</resourceId><resourceType>instance</resourceType><key>Name</key><value>imds-default</value>"),
        ]
    );
    let keys = |filters: &'static str| {
        let f = &f;
        async move {
            let answer = f.query(&format!("Action=DescribeTags{filters}")).await;
            elements(assert_ok(&answer, "DescribeTagsResponse"), "key")
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        keys("&Filter.1.Name=key&Filter.1.Value.1=Name").await,
        ["Name"]
    );
    assert_eq!(
        keys("&Filter.1.Name=value&Filter.1.Value.1=dev&Filter.1.Value.2=imds-default").await,
        ["Environment", "Name"]
    );
    assert_eq!(
        keys("&Filter.1.Name=resource-id&Filter.1.Value.1=i-0b4f7d2c9a1e83f56").await,
        ["Environment", "Name"]
    );
    assert_eq!(
        keys("&Filter.1.Name=resource-id&Filter.1.Value.1=i-0123456789abcdef0").await,
        Vec::<String>::new()
    );
    assert_eq!(
        keys("&Filter.1.Name=resource-type&Filter.1.Value.1=volume").await,
        Vec::<String>::new()
    );
    assert_eq!(
        keys("&Filter.1.Name=resource-type&Filter.1.Value.1=instance&Filter.2.Name=key&Filter.2.Value.1=Environment").await,
        ["Environment"]
    );
    assert_error(
        &f.query("Action=DescribeTags&Filter.1.Name=owner&Filter.1.Value.1=x")
            .await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterValue",
    );
}

#[tokio::test]
async fn create_tags_refuses_tags_ec2_refuses_and_changes_nothing() {
    let f = Fixture::new("");
    let before = tags(&f);
    let create = |tag: String| format!("Action=CreateTags&ResourceId.1={INSTANCE}&{tag}");
    for tag in [
        "Tag.1.Key=aws:owner&Tag.1.Value=x".to_owned(),
        "Tag.1.Key=AWS:owner&Tag.1.Value=x".to_owned(),
        "Tag.1.Key=&Tag.1.Value=x".to_owned(),
        format!("Tag.1.Key={}&Tag.1.Value=x", "k".repeat(129)),
        format!("Tag.1.Key=long&Tag.1.Value={}", "v".repeat(257)),
        // One bad tag refuses them all.
        "Tag.1.Key=Good&Tag.1.Value=x&Tag.2.Key=aws:bad".to_owned(),
    ] {
        assert_error(
            &f.query(&create(tag)).await,
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        );
    }
    assert_ok(
        &f.query(&create(format!(
            "Tag.1.Key={}&Tag.1.Value={}",
            "k".repeat(128),
            "v".repeat(256)
        )))
        .await,
        "CreateTagsResponse",
    );
    let message = assert_error(
        &f.query(&format!("Action=CreateTags&ResourceId.1={INSTANCE}"))
            .await,
        StatusCode::BAD_REQUEST,
        "MissingParameter",
    );
    assert!(message.contains("Tag"), "{message}");
    let message = assert_error(
        &f.query("Action=CreateTags&Tag.1.Key=Team&Tag.1.Value=x")
            .await,
        StatusCode::BAD_REQUEST,
        "MissingParameter",
    );
    assert!(message.contains("ResourceId"), "{message}");
    assert_error(
        &f.query(&format!(
            "Action=CreateTags&ResourceId.1={OTHER_INSTANCE}&Tag.1.Key=Team&Tag.1.Value=x"
        ))
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidInstanceID.NotFound",
    );
    assert_error(
        &f.query("Action=DeleteTags&ResourceId.1=vol-0123456789abcdef0")
            .await,
        StatusCode::BAD_REQUEST,
        "InvalidID",
    );
    let mut expected = before;
    expected.insert("k".repeat(128), "v".repeat(256));
    assert_eq!(tags(&f), expected);
}

#[tokio::test]
async fn with_tags_in_the_metadata_keys_imds_cannot_show_are_refused() {
    let f = Fixture::new(TAGS_SHOWN);
    for key in ["has%20space", "a/b", "_index", ".."] {
        assert_error(
            &f.query(&format!(
                "Action=CreateTags&ResourceId.1={INSTANCE}&Tag.1.Key={key}&Tag.1.Value=x"
            ))
            .await,
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        );
    }
    assert!(!tags(&f).keys().any(|k| k.contains(' ') || k.contains('/')));
    // Without tags in the metadata, EC2 takes them.
    let f = Fixture::new("");
    assert_ok(
        &f.query(&format!(
            "Action=CreateTags&ResourceId.1={INSTANCE}&Tag.1.Key=has%20space&Tag.1.Value=x"
        ))
        .await,
        "CreateTagsResponse",
    );
    assert_eq!(tags(&f).get("has space").map(String::as_str), Some("x"));
    // ...and then tags in the metadata cannot be turned on.
    assert_error(
        &f.query(&format!(
            "Action=ModifyInstanceMetadataOptions&InstanceId={INSTANCE}&InstanceMetadataTags=enabled"
        ))
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidParameterValue",
    );
}

#[tokio::test]
async fn a_dry_run_of_create_or_delete_tags_answers_412_and_changes_nothing() {
    let f = Fixture::new("");
    let before = tags(&f);
    assert_error(
        &f.query(&format!(
            "Action=CreateTags&ResourceId.1={INSTANCE}&Tag.1.Key=Team&Tag.1.Value=x&DryRun=true"
        ))
        .await,
        StatusCode::PRECONDITION_FAILED,
        "DryRunOperation",
    );
    assert_error(
        &f.query(&format!(
            "Action=DeleteTags&ResourceId.1={INSTANCE}&DryRun=true"
        ))
        .await,
        StatusCode::PRECONDITION_FAILED,
        "DryRunOperation",
    );
    assert_eq!(tags(&f), before);
}

#[tokio::test]
async fn create_tags_with_more_than_fifty_tags_is_refused_before_any_work() {
    let f = Fixture::new("");
    let mut params = format!("Action=CreateTags&ResourceId.1={INSTANCE}");
    for n in 1..=51 {
        params.push_str(&format!("&Tag.{n}.Key=k{n}&Tag.{n}.Value=v"));
    }
    assert_error(
        &f.query(&params).await,
        StatusCode::BAD_REQUEST,
        "TagLimitExceeded",
    );
    // A hostile one: a thousand resources and ten thousand tags, refused before a guardrail
    // context is built for each resource.
    let mut hostile = String::from("Action=CreateTags");
    for n in 1..=1000 {
        hostile.push_str(&format!("&ResourceId.{n}=i-{n:017x}"));
    }
    for n in 1..=10_000 {
        hostile.push_str(&format!("&Tag.{n}.Key=k{n}"));
    }
    assert_error(
        &f.query(&hostile).await,
        StatusCode::BAD_REQUEST,
        "TagLimitExceeded",
    );
}

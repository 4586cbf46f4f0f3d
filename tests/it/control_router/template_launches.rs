//! Launch template versions deleted as EC2 answers (each version deleted or refused with its
//! own code), and the system tags EC2 puts on instances launched from a template
//! (`aws:ec2launchtemplate:id` and `:version`): listed and filtered like any tag, never shown
//! in IMDS, never created nor deleted by users.

use std::net::SocketAddr;

use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;

use super::{assert_error, assert_ok, element, elements, text, Fixture};

const FLEET: &str = "[server]\nfleet = true\n";
const LAUNCH: &str = "Action=RunInstances&MinCount=1&MaxCount=1";

/// Creates the template `name` with `data` (`&LaunchTemplateData...`): its id.
async fn template(f: &Fixture, name: &str, data: &str) -> String {
    let answer = f
        .query(&format!(
            "Action=CreateLaunchTemplate&LaunchTemplateName={name}\
             &LaunchTemplateData.ImageId=ami-0aaaaaaaaaaaaaaa1{data}"
        ))
        .await;
    text(
        assert_ok(&answer, "CreateLaunchTemplateResponse"),
        "launchTemplateId",
    )
    .to_owned()
}

/// `DeleteLaunchTemplateVersions` with `params`: the (version, code) pairs of its unsuccessful
/// set and the versions of its successful one.
async fn delete_versions(f: &Fixture, params: &str) -> (Vec<String>, Vec<(String, String)>) {
    let answer = f
        .query(&format!("Action=DeleteLaunchTemplateVersions{params}"))
        .await;
    let xml = assert_ok(&answer, "DeleteLaunchTemplateVersionsResponse");
    let deleted = elements(
        text(xml, "successfullyDeletedLaunchTemplateVersionSet"),
        "versionNumber",
    )
    .into_iter()
    .map(str::to_owned)
    .collect();
    let refused_set = text(xml, "unsuccessfullyDeletedLaunchTemplateVersionSet");
    let refused = elements(refused_set, "versionNumber")
        .into_iter()
        .zip(elements(refused_set, "code"))
        .map(|(v, c)| (v.to_owned(), c.to_owned()))
        .collect();
    (deleted, refused)
}

/// The version numbers `DescribeLaunchTemplateVersions` lists for template `id`.
async fn versions(f: &Fixture, id: &str) -> Vec<String> {
    let answer = f
        .query(&format!(
            "Action=DescribeLaunchTemplateVersions&LaunchTemplateId={id}"
        ))
        .await;
    elements(
        assert_ok(&answer, "DescribeLaunchTemplateVersionsResponse"),
        "versionNumber",
    )
    .into_iter()
    .map(str::to_owned)
    .collect()
}

#[tokio::test]
async fn delete_launch_template_versions_answers_each_version_as_ec2_does() {
    let f = Fixture::new(FLEET);
    let id = template(&f, "web", "").await;
    for instance_type in ["t3.small", "t3.large"] {
        assert_ok(
            &f.query(&format!(
                "Action=CreateLaunchTemplateVersion&LaunchTemplateId={id}\
                 &LaunchTemplateData.InstanceType={instance_type}"
            ))
            .await,
            "CreateLaunchTemplateVersionResponse",
        );
    }
    // A dry run deletes nothing.
    assert_error(
        &f.query(&format!(
            "Action=DeleteLaunchTemplateVersions&LaunchTemplateId={id}&LaunchTemplateVersion.1=2&DryRun=true"
        ))
        .await,
        StatusCode::PRECONDITION_FAILED,
        "DryRunOperation",
    );
    assert_eq!(versions(&f, &id).await, ["1", "2", "3"]);

    let (deleted, refused) = delete_versions(
        &f,
        &format!(
            "&LaunchTemplateId={id}&LaunchTemplateVersion.1=1&LaunchTemplateVersion.2=2&LaunchTemplateVersion.3=9"
        ),
    )
    .await;
    assert_eq!(deleted, ["2"]);
    assert_eq!(
        refused,
        [
            ("1".to_owned(), "unexpectedError".to_owned()),
            (
                "9".to_owned(),
                "launchTemplateVersionDoesNotExist".to_owned()
            ),
        ]
    );
    assert_eq!(versions(&f, &id).await, ["1", "3"]);

    // Deleting the latest: $Latest is the highest left, and 3 is never given again.
    let (deleted, refused) =
        delete_versions(&f, "&LaunchTemplateName=web&LaunchTemplateVersion.1=3").await;
    assert_eq!((deleted, refused), (vec!["3".to_owned()], vec![]));
    let described = f
        .query(&format!(
            "Action=DescribeLaunchTemplates&LaunchTemplateId.1={id}"
        ))
        .await;
    assert_eq!(element(&described.1, "latestVersionNumber"), Some("1"));
    let created = f
        .query(&format!(
            "Action=CreateLaunchTemplateVersion&LaunchTemplateId={id}&LaunchTemplateData.InstanceType=t3.nano"
        ))
        .await;
    assert_eq!(element(&created.1, "versionNumber"), Some("4"));
    assert_error(
        &f.query(&format!(
            "{LAUNCH}&LaunchTemplate.LaunchTemplateId={id}&LaunchTemplate.Version=3"
        ))
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidLaunchTemplateId.VersionNotFound",
    );

    // An unknown or malformed template fails every version it names.
    let (deleted, refused) = delete_versions(
        &f,
        "&LaunchTemplateName=nope&LaunchTemplateVersion.1=1&LaunchTemplateVersion.2=2",
    )
    .await;
    assert!(deleted.is_empty());
    assert_eq!(
        refused,
        [
            ("1".to_owned(), "launchTemplateNameDoesNotExist".to_owned()),
            ("2".to_owned(), "launchTemplateNameDoesNotExist".to_owned()),
        ]
    );
    for (template, code) in [
        ("lt-0123456789abcdef0", "launchTemplateIdDoesNotExist"),
        ("lt-12", "launchTemplateIdMalformed"),
    ] {
        let (_, refused) = delete_versions(
            &f,
            &format!("&LaunchTemplateId={template}&LaunchTemplateVersion.1=1"),
        )
        .await;
        assert_eq!(refused, [("1".to_owned(), code.to_owned())]);
    }

    // Requests EC2 refuses whole.
    let many: String = (1..=201)
        .map(|n| format!("&LaunchTemplateVersion.{n}={n}"))
        .collect();
    for (params, code) in [
        (format!("&LaunchTemplateId={id}"), "MissingParameter"),
        (
            format!("&LaunchTemplateId={id}&LaunchTemplateName=web&LaunchTemplateVersion.1=4"),
            "InvalidParameterCombination",
        ),
        (
            format!("&LaunchTemplateId={id}&LaunchTemplateVersion.1=$Latest"),
            "InvalidLaunchTemplateId.VersionNotFound",
        ),
        (format!("&LaunchTemplateId={id}{many}"), "InvalidRequest"),
    ] {
        assert_error(
            &f.query(&format!("Action=DeleteLaunchTemplateVersions{params}"))
                .await,
            StatusCode::BAD_REQUEST,
            code,
        );
    }
    assert_eq!(versions(&f, &id).await, ["1", "4"]);
}

/// A `GET` of `path` from the guest at `address`, as the guest listener answers it.
async fn guest_at(f: &Fixture, address: &str, path: &str) -> (StatusCode, String) {
    let peer: SocketAddr = format!("{address}:40000").parse().unwrap();
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .body(())
        .unwrap();
    let response = f.app.api.handle(&request, peer);
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// The `<item>` of instance `id` in `DescribeInstances`.
async fn described(f: &Fixture, id: &str) -> String {
    let answer = f
        .query(&format!("Action=DescribeInstances&InstanceId.1={id}"))
        .await;
    assert_ok(&answer, "DescribeInstancesResponse").to_owned()
}

#[tokio::test]
async fn instances_from_a_template_carry_ec2s_system_tags_which_imds_hides_and_users_cannot_change()
{
    let f = Fixture::new(FLEET);
    let id = template(
        &f,
        "tagged",
        "&LaunchTemplateData.MetadataOptions.InstanceMetadataTags=enabled\
         &LaunchTemplateData.TagSpecification.1.ResourceType=instance\
         &LaunchTemplateData.TagSpecification.1.Tag.1.Key=Role\
         &LaunchTemplateData.TagSpecification.1.Tag.1.Value=web",
    )
    .await;
    assert_ok(
        &f.query(&format!(
            "Action=CreateLaunchTemplateVersion&LaunchTemplateId={id}&SourceVersion=1&VersionDescription=second"
        ))
        .await,
        "CreateLaunchTemplateVersionResponse",
    );
    let answer = f
        .query(&format!(
            "{LAUNCH}&LaunchTemplate.LaunchTemplateName=tagged&LaunchTemplate.Version=$Latest"
        ))
        .await;
    let launched = text(assert_ok(&answer, "RunInstancesResponse"), "instanceId").to_owned();
    let direct = f
        .query(&format!("{LAUNCH}&ImageId=ami-0abcdef1234567890"))
        .await;
    let direct = text(assert_ok(&direct, "RunInstancesResponse"), "instanceId").to_owned();

    // Listed with the instance's tags, in DescribeInstances and DescribeTags, and filtered on.
    let item = described(&f, &launched).await;
    for tag in [
        format!("<key>aws:ec2launchtemplate:id</key><value>{id}</value>"),
        "<key>aws:ec2launchtemplate:version</key><value>2</value>".to_owned(),
        "<key>Role</key><value>web</value>".to_owned(),
    ] {
        assert!(item.contains(&tag), "{tag}: {item}");
    }
    assert!(
        !described(&f, &direct)
            .await
            .contains("aws:ec2launchtemplate"),
        "a direct launch has no template tags"
    );
    let answer = f
        .query(&format!(
            "Action=DescribeInstances&Filter.1.Name=tag:aws:ec2launchtemplate:id&Filter.1.Value.1={id}"
        ))
        .await;
    assert_eq!(elements(&answer.1, "instanceId"), [launched.as_str()]);
    let answer = f
        .query(&format!(
            "Action=DescribeTags&Filter.1.Name=resource-id&Filter.1.Value.1={launched}"
        ))
        .await;
    assert_eq!(
        elements(&answer.1, "key"),
        [
            "Role",
            "aws:ec2launchtemplate:id",
            "aws:ec2launchtemplate:version"
        ]
    );

    // IMDS shows the user's tags only.
    let address = element(&item, "privateIpAddress").unwrap().to_owned();
    let listing = "/latest/meta-data/tags/instance";
    assert_eq!(
        guest_at(&f, &address, listing).await,
        (StatusCode::OK, "Role".to_owned())
    );
    assert_eq!(
        guest_at(
            &f,
            &address,
            "/latest/meta-data/tags/instance/aws:ec2launchtemplate:id"
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );

    // Users neither create nor delete them, in any case.
    for params in [
        format!("Action=CreateTags&ResourceId.1={launched}&Tag.1.Key=aws:owner&Tag.1.Value=me"),
        format!("Action=CreateTags&ResourceId.1={launched}&Tag.1.Key=AWS:owner&Tag.1.Value=me"),
        format!(
            "Action=DeleteTags&ResourceId.1={launched}&Tag.1.Key=aws:ec2launchtemplate:id"
        ),
        format!("{LAUNCH}&ImageId=ami-0abcdef1234567890&TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=aws:x&TagSpecification.1.Tag.1.Value=y"),
        "Action=CreateLaunchTemplate&LaunchTemplateName=reserved&LaunchTemplateData.TagSpecification.1.ResourceType=instance&LaunchTemplateData.TagSpecification.1.Tag.1.Key=aws:x".to_owned(),
    ] {
        let message = assert_error(
            &f.query(&params).await,
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        );
        assert!(
            message.contains("are reserved for internal use"),
            "{params}: {message}"
        );
    }
    // Deleting every tag deletes the user's; EC2's stay.
    assert_ok(
        &f.query(&format!("Action=DeleteTags&ResourceId.1={launched}"))
            .await,
        "DeleteTagsResponse",
    );
    let item = described(&f, &launched).await;
    assert!(!item.contains("<key>Role</key>"), "{item}");
    assert!(item.contains("aws:ec2launchtemplate:version"), "{item}");
    // They do not count toward the 50 tags a resource may have.
    let fifty: String = (1..=50)
        .map(|n| format!("&Tag.{n}.Key=k{n}&Tag.{n}.Value=v"))
        .collect();
    assert_ok(
        &f.query(&format!("Action=CreateTags&ResourceId.1={launched}{fifty}"))
            .await,
        "CreateTagsResponse",
    );
    assert_error(
        &f.query(&format!(
            "Action=CreateTags&ResourceId.1={launched}&Tag.1.Key=k51&Tag.1.Value=v"
        ))
        .await,
        StatusCode::BAD_REQUEST,
        "TagLimitExceeded",
    );
}

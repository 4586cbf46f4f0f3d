//! The metadata tree as clients walk it: listings, versions, path handling, headers.

use http::{Method, StatusCode};
use imds::guest::NOT_FOUND_PAGE;

use crate::harness::TestImds;

#[tokio::test]
async fn root_lists_every_api_version_without_trailing_newline() {
    let imds = TestImds::start().await;
    let answer = imds.get("/").await;
    assert_eq!(answer.status, StatusCode::OK);
    let versions: Vec<&str> = answer.text().split('\n').collect();
    assert_eq!(versions.first(), Some(&"1.0"));
    assert_eq!(versions.last(), Some(&"latest"));
    assert_eq!(versions.len(), 29);
    assert!(versions.contains(&"2021-03-23") && versions.contains(&"2009-04-04"));
}

#[tokio::test]
async fn latest_lists_dynamic_meta_data_and_user_data() {
    let imds = TestImds::start().await;
    assert_eq!(
        imds.get("/latest/").await.text(),
        "dynamic\nmeta-data\nuser-data"
    );
    assert_eq!(
        imds.get("/latest").await.text(),
        "dynamic\nmeta-data\nuser-data"
    );
}

/// Walks a listing tree like cloud-init's crawler: every listed entry must answer 200.
async fn crawl(imds: &TestImds, root: &str, token: Option<&str>) -> usize {
    let mut pending = vec![root.to_owned()];
    let mut leaves = 0;
    while let Some(dir) = pending.pop() {
        let answer = match token {
            Some(token) => imds.get_with_token(&dir, token).await,
            None => imds.get(&dir).await,
        };
        assert_eq!(answer.status, StatusCode::OK, "{dir}");
        assert!(!answer.text().ends_with('\n'), "{dir} ends with a newline");
        for entry in answer.text().split('\n') {
            assert!(!entry.is_empty(), "{dir} lists an empty entry");
            if let Some(sub) = entry.strip_suffix('/') {
                pending.push(format!("{dir}{sub}/"));
            } else if let Some((index, _name)) = entry.split_once('=') {
                pending.push(format!("{dir}{index}/"));
            } else {
                let leaf = format!("{dir}{entry}");
                let answer = match token {
                    Some(token) => imds.get_with_token(&leaf, token).await,
                    None => imds.get(&leaf).await,
                };
                assert_eq!(
                    answer.status,
                    StatusCode::OK,
                    "{leaf} is listed but answers {}",
                    answer.status
                );
                leaves += 1;
            }
        }
    }
    leaves
}

#[tokio::test]
async fn every_listed_entry_answers_200_in_every_version() {
    // Thousands of requests in a moment: beyond the per-instance budget, which is not tested here.
    let imds = TestImds::setup()
        .toml("[server]\ninstance_requests_per_second = 0\n\n[instance.metadata_options]\ninstance_metadata_tags = \"enabled\"\n")
        .start()
        .await;
    let token = imds.token(300).await;
    let latest = crawl(&imds, "/latest/meta-data/", Some(&token)).await;
    assert!(latest > 45, "only {latest} leaves under latest");
    crawl(&imds, "/latest/dynamic/", None).await;
    let mut previous = 0;
    for version in imds.get("/").await.text().split('\n') {
        let leaves = crawl(&imds, &format!("/{version}/meta-data/"), None).await;
        assert!(
            leaves >= previous,
            "{version} shows fewer leaves ({leaves}) than the version before ({previous})"
        );
        previous = leaves;
    }
    assert_eq!(previous, latest);
}

#[tokio::test]
async fn dated_versions_hide_newer_categories() {
    let imds = TestImds::start().await;
    assert_eq!(
        imds.get("/2019-10-01/meta-data/placement/region")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        imds.get("/2020-10-27/meta-data/placement/region")
            .await
            .text(),
        "us-east-1"
    );
    assert_eq!(
        imds.get("/2019-10-01/meta-data/placement/").await.text(),
        "availability-zone\navailability-zone-id"
    );
    let oldest = imds.get("/1.0/meta-data/").await;
    assert!(
        !oldest.text().contains("instance-type"),
        "{}",
        oldest.text()
    );
    assert!(oldest.text().contains("instance-id"));
    assert_eq!(imds.get("/1.0/").await.text(), "meta-data\nuser-data");
    assert_eq!(
        imds.get("/2009-04-04/").await.text(),
        "dynamic\nmeta-data\nuser-data"
    );
    assert_eq!(
        imds.get("/2021-03-23/meta-data/iam/security-credentials/")
            .await
            .text(),
        "imds-default-role"
    );
    assert_eq!(
        imds.get("/2030-01-01/meta-data/").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn slashes_are_forgiven_as_clients_rely_on() {
    let imds = TestImds::start().await;
    // botocore reads the zone with a trailing slash.
    assert_eq!(
        imds.get("/latest/meta-data/placement/availability-zone/")
            .await
            .text(),
        "us-east-1a"
    );
    // cloud-init reads a directory without its slash.
    assert_eq!(
        imds.get("/latest/dynamic/instance-identity").await.text(),
        "rsa2048\npkcs7\ndocument\nsignature\ndsa2048"
    );
    // ec2-metadata and the JS SDK send doubled slashes.
    assert_eq!(
        imds.get("/latest//meta-data/reservation-id").await.text(),
        "r-07c1e5a9d3b2f4e68"
    );
    assert_eq!(
        imds.get("//latest/meta-data/instance-id").await.text(),
        "i-0b4f7d2c9a1e83f56"
    );
}

#[tokio::test]
async fn nothing_escapes_the_tree() {
    let imds = TestImds::start().await;
    for path in [
        "/latest/meta-data/../user-data",
        "/latest/meta-data/%2e%2e/user-data",
        "/latest/meta-data/instance-id%2f",
        "/../../etc/passwd",
        "/latest/meta-data/./instance-id",
        "/latest/meta-data/instance-id/extra",
        "/nonsense",
        "/latest/api/token/",
    ] {
        let answer = imds.get(path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(answer.text(), NOT_FOUND_PAGE, "{path}");
        assert_eq!(answer.header("content-type"), Some("text/html"));
    }
}

#[tokio::test]
async fn answers_carry_the_headers_of_real_imds() {
    let imds = TestImds::start().await;
    let answer = imds.get("/latest/meta-data/instance-id").await;
    assert_eq!(
        answer.header_names(),
        [
            "accept-ranges",
            "connection",
            "content-length",
            "content-type",
            "date",
            "last-modified",
            "server"
        ]
    );
    assert_eq!(answer.header("server"), Some("EC2ws"));
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(answer.header("accept-ranges"), Some("none"));
    assert_eq!(answer.header("content-type"), Some("text/plain"));
    assert!(httpdate::parse_http_date(answer.header("last-modified").unwrap()).is_ok());
    assert!(httpdate::parse_http_date(answer.header("date").unwrap()).is_ok());

    let missing = imds.get("/latest/meta-data/nothing").await;
    assert_eq!(
        missing.header_names(),
        [
            "connection",
            "content-length",
            "content-type",
            "date",
            "server"
        ]
    );
    assert_eq!(missing.header("content-length"), Some("339"));
}

#[tokio::test]
async fn user_data_is_raw_octets() {
    let imds = TestImds::start().await;
    let answer = imds.get("/latest/user-data").await;
    assert_eq!(
        answer.header("content-type"),
        Some("application/octet-stream")
    );
    assert!(answer.text().starts_with("#!/bin/bash\n"));
}

#[tokio::test]
async fn head_answers_headers_only() {
    let imds = TestImds::start().await;
    let answer = imds
        .send(Method::HEAD, "/latest/meta-data/instance-id", &[])
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-length"), Some("19"));
    assert!(answer.body.is_empty());
}

#[tokio::test]
async fn other_methods_are_not_allowed() {
    let imds = TestImds::start().await;
    for method in [Method::POST, Method::DELETE, Method::PATCH] {
        let answer = imds.send(method.clone(), "/latest/meta-data/", &[]).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(answer.header("allow"), Some("GET, HEAD"));
        assert!(answer.body.is_empty());
    }
    let get_token = imds.get("/latest/api/token").await;
    assert_eq!(get_token.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get_token.header("allow"), Some("OPTIONS, PUT"));
    let options = imds.send(Method::OPTIONS, "/latest/api/token", &[]).await;
    assert_eq!(options.status, StatusCode::OK);
    assert_eq!(options.header("allow"), Some("OPTIONS, PUT"));
}

#[tokio::test]
async fn documents_are_mutually_consistent() {
    let imds = TestImds::start().await;
    let document: serde_json::Value = serde_json::from_slice(
        &imds
            .get("/latest/dynamic/instance-identity/document")
            .await
            .body,
    )
    .unwrap();
    let get = |path: &'static str| {
        let imds = &imds;
        async move {
            imds.get(&format!("/latest/meta-data/{path}"))
                .await
                .text()
                .to_owned()
        }
    };
    assert_eq!(document["instanceId"], get("instance-id").await);
    assert_eq!(document["region"], get("placement/region").await);
    assert_eq!(
        document["availabilityZone"],
        get("placement/availability-zone").await
    );
    assert_eq!(document["privateIp"], get("local-ipv4").await);
    assert_eq!(document["imageId"], get("ami-id").await);
    assert_eq!(document["instanceType"], get("instance-type").await);
    assert_eq!(document["version"], "2017-09-30");
    assert!(document["billingProducts"].is_null());
    let mac = get("mac").await;
    let nic = |leaf: &str| format!("network/interfaces/macs/{mac}/{leaf}");
    assert_eq!(
        imds.get(&format!("/latest/meta-data/{}", nic("owner-id")))
            .await
            .text(),
        document["accountId"]
    );
    assert_eq!(
        imds.get(&format!("/latest/meta-data/{}", nic("mac")))
            .await
            .text(),
        mac
    );
    assert_eq!(
        imds.get(&format!("/latest/meta-data/{}", nic("local-hostname")))
            .await
            .text(),
        get("local-hostname").await
    );
    assert_eq!(get("hostname").await, "ip-10-0-21-74.ec2.internal");
    assert_eq!(
        get("public-hostname").await,
        "ec2-3-91-204-17.compute-1.amazonaws.com"
    );
    let info: serde_json::Value =
        serde_json::from_slice(&imds.get("/latest/meta-data/iam/info").await.body).unwrap();
    assert_eq!(
        info["InstanceProfileArn"],
        "arn:aws:iam::123456789012:instance-profile/imds-default-role"
    );
    let identity: serde_json::Value = serde_json::from_slice(
        &imds
            .get("/latest/meta-data/identity-credentials/ec2/info")
            .await
            .body,
    )
    .unwrap();
    assert_eq!(identity["AccountId"], document["accountId"]);
    assert_eq!(get("public-keys/").await, "0=imds-dev");
    assert!(get("public-keys/0/openssh-key")
        .await
        .starts_with("ssh-ed25519 "));
    assert_eq!(get("security-groups").await, "default\nimds-web");
    assert_eq!(get("services/partition").await, "aws");
}

#[tokio::test]
async fn role_credentials_are_served_in_imds_format() {
    let imds = TestImds::start().await;
    let listing = imds
        .get("/latest/meta-data/iam/security-credentials/")
        .await;
    assert_eq!(listing.text(), "imds-default-role");
    let answer = imds
        .get("/latest/meta-data/iam/security-credentials/imds-default-role")
        .await;
    let text = answer.text();
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"')?.split('"').next())
        .collect();
    assert_eq!(
        keys,
        [
            "Code",
            "LastUpdated",
            "Type",
            "AccessKeyId",
            "SecretAccessKey",
            "Token",
            "Expiration"
        ]
    );
    assert!(
        text.starts_with("{\n  \"Code\" : \"Success\",\n") && text.ends_with("\"\n}"),
        "{text}"
    );
    let document: serde_json::Value = serde_json::from_str(text).unwrap();
    let expiration = time::OffsetDateTime::parse(
        document["Expiration"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = expiration - time::OffsetDateTime::now_utc();
    assert!(left >= time::Duration::hours(1), "only {left} left");
    let extended: serde_json::Value = serde_json::from_slice(
        &imds
            .get("/latest/meta-data/iam/security-credentials-extended/imds-default-role")
            .await
            .body,
    )
    .unwrap();
    assert_eq!(extended["AccessKeyId"], document["AccessKeyId"]);
    assert_eq!(extended["AccountId"], "123456789012");
}

#[tokio::test]
async fn a_crawl_like_cloud_init_finds_secrets_only_under_security_credentials() {
    let imds = TestImds::start().await;
    let role = imds
        .get("/latest/meta-data/iam/security-credentials/imds-default-role")
        .await;
    let role: serde_json::Value = serde_json::from_slice(&role.body).unwrap();
    let secrets = [
        role["SecretAccessKey"].as_str().unwrap().to_owned(),
        role["Token"].as_str().unwrap().to_owned(),
    ];
    assert_eq!(
        imds.get("/latest/meta-data/iam/").await.text(),
        "info\nsecurity-credentials/"
    );
    // Every listed entry, as cloud-init crawls it (it redacts keys named security-credentials).
    let mut pending = vec![
        "/latest/meta-data/".to_owned(),
        "/latest/dynamic/".to_owned(),
    ];
    let mut crawled = 0;
    while let Some(path) = pending.pop() {
        let answer = imds.get(&path).await;
        assert_eq!(answer.status, 200, "{path} is listed");
        crawled += 1;
        if path.ends_with('/') {
            for entry in answer.text().lines() {
                let name = entry.split('=').next().unwrap();
                let child = match entry.contains('=') {
                    true => format!("{path}{name}/"),
                    false => format!("{path}{name}"),
                };
                pending.push(child);
            }
        } else if !path.contains("/security-credentials/") {
            for secret in &secrets {
                assert!(
                    !answer.text().contains(secret.as_str()),
                    "{path} leaks a secret"
                );
            }
        }
    }
    assert!(crawled > 60, "crawled {crawled} paths");
    // The SDKs that ask for the extended document by name still get it.
    let extended = imds
        .get("/latest/meta-data/iam/security-credentials-extended/imds-default-role")
        .await;
    assert_eq!(extended.status, 200);
    assert!(extended.text().contains("\"AccountId\" : \"123456789012\""));
}

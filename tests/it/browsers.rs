//! Web pages cannot drive imds through the user's browser: a DNS-rebinding page (its own host
//! name resolving to 127.0.0.1) is refused on both listeners, and a cross-site form POST to the
//! control API changes nothing. Requests are shaped as a browser sends them; the same requests
//! without the browser's headers, as curl and the SDKs send them, still work.

use crate::process::{exchange, serve, Served};

const INSTANCE: &str = "i-0b4f7d2c9a1e83f56";
const ROLE_LIST: &str = "/latest/meta-data/iam/security-credentials/";

/// A GET of `path` on `addr` naming `host` in `Host`.
fn get_as(addr: &str, host: &str, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    exchange(addr, &request).unwrap()
}

/// A form POST of `body` to the control API with `headers` (each ending in CRLF).
fn post_form(served: &Served, headers: &str, body: &str) -> (u16, String) {
    let request = format!(
        "POST / HTTP/1.1\r\n{headers}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(&served.control[0], &request).unwrap()
}

fn metric(served: &Served, name: &str) -> u64 {
    let (_, text) = exchange(
        &served.control[0],
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn a_dns_rebinding_page_reads_nothing_from_either_listener() {
    let served = serve(&["--allowed-host", "imds.test"]);
    let guest = served.endpoints[0].trim_start_matches("http://").to_owned();
    let port = guest.rsplit(':').next().unwrap();
    let attacker = format!("attacker.example:{port}");

    // The page's own origin, resolved to 127.0.0.1: every answer is 403 with no data.
    let (status, body) = get_as(&guest, &attacker, ROLE_LIST);
    assert_eq!((status, body.as_str()), (403, ""));
    let put = format!(
        "PUT /latest/api/token HTTP/1.1\r\nHost: {attacker}\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(exchange(&guest, &put).unwrap(), (403, String::new()));
    let (status, body) = post_form(
        &served,
        &format!("Host: {attacker}\r\n"),
        "Action=DescribeInstances&Version=2016-11-15",
    );
    assert_eq!(status, 403);
    assert!(
        body.contains("<Code>UnauthorizedOperation</Code>"),
        "{body}"
    );
    assert!(!body.contains(INSTANCE), "{body}");

    // IP literals, localhost and the allowed name are what clients send: answered.
    for host in [
        guest.clone(),
        format!("localhost:{port}"),
        format!("imds.test:{port}"),
    ] {
        let (status, body) = get_as(&guest, &host, ROLE_LIST);
        assert_eq!(
            (status, body.as_str()),
            (200, "imds-default-role"),
            "{host}"
        );
    }
    assert_eq!(
        metric(
            &served,
            "imds_browser_requests_refused_total{surface=\"guest\",reason=\"foreign_host\"}"
        ),
        2
    );
    assert_eq!(
        metric(
            &served,
            "imds_browser_requests_refused_total{surface=\"control\",reason=\"foreign_host\"}"
        ),
        1
    );
    let (_, stderr) = served.stop("TERM");
    assert!(
        stderr.contains("refused a request a web browser was made to send"),
        "{stderr}"
    );
}

#[test]
fn a_cross_site_form_post_changes_nothing() {
    let served = serve(&["--http-tokens", "required"]);
    let control = served.control[0].trim_start_matches("http://").to_owned();
    let guest = served.endpoints[0].trim_start_matches("http://").to_owned();
    let enable_v1 = format!(
        "Action=ModifyInstanceMetadataOptions&Version=2016-11-15&InstanceId={INSTANCE}&HttpTokens=optional"
    );
    let tag = format!(
        "Action=CreateTags&Version=2016-11-15&ResourceId.1={INSTANCE}&Tag.1.Key=owned&Tag.1.Value=yes"
    );
    // What Chromium sends when a page on another site submits a form, or fetch()es with no-cors.
    let form_submit = format!(
        "Host: {control}\r\nOrigin: http://attacker.example\r\nSec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-Dest: document\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0.0.0 Safari/537.36\r\n"
    );
    let no_cors_fetch = format!(
        "Host: {control}\r\nOrigin: http://attacker.example\r\nSec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: empty\r\n"
    );
    let old_browser = format!("Host: {control}\r\nOrigin: null\r\n");
    for headers in [&form_submit, &no_cors_fetch, &old_browser] {
        for body in [&enable_v1, &tag] {
            let (status, answer) = post_form(&served, headers, body);
            assert_eq!(status, 403, "{answer}");
            assert!(
                answer.contains("<Code>UnauthorizedOperation</Code>"),
                "{answer}"
            );
        }
    }
    assert_eq!(
        get_as(&guest, &guest, "/latest/meta-data/instance-id").0,
        401
    );
    let describe = "Action=DescribeInstances&Version=2016-11-15";
    let plain = format!("Host: {control}\r\n");
    let (_, described) = post_form(&served, &plain, describe);
    assert!(
        described.contains("<httpTokens>required</httpTokens>"),
        "{described}"
    );
    assert!(!described.contains("owned"), "{described}");
    assert_eq!(
        metric(
            &served,
            "imds_browser_requests_refused_total{surface=\"control\",reason=\"cross_site\"}"
        ),
        6
    );

    // The same requests as curl sends them (no Origin, no Sec-Fetch-*): applied.
    assert_eq!(post_form(&served, &plain, &tag).0, 200);
    assert_eq!(post_form(&served, &plain, &enable_v1).0, 200);
    let (_, described) = post_form(&served, &plain, describe);
    assert!(described.contains("<key>owned</key>"), "{described}");
    let (status, id) = get_as(&guest, &guest, "/latest/meta-data/instance-id");
    assert_eq!((status, id.as_str()), (200, INSTANCE));
    // A page of the control API's own origin (the same host and port) is not cross-site.
    let same_origin =
        format!("Host: {control}\r\nOrigin: http://{control}\r\nSec-Fetch-Site: same-origin\r\n");
    assert_eq!(post_form(&served, &same_origin, describe).0, 200);
}

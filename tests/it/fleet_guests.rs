//! Fleet mode with real guests: each guest is a network namespace with its own address, routed
//! to a host namespace where `imds serve --fleet --link-local` answers at 169.254.169.254:80, as
//! on a hypervisor. Every guest sees its own instance and nothing of the other's; a caller whose
//! address belongs to no instance is refused.
//!
//! ```text
//!  guest a 10.0.16.11 ─┐
//!  guest b 10.0.16.12 ─┼─ bridge 10.0.16.1/20 ── host (imds on 169.254.169.254:80)
//!  stray   10.0.16.99 ─┘
//! ```
//! Needs root, iproute2 and curl; `scripts/test` runs it where namespaces can be created and
//! says so where they cannot.

use crate::netns::{ip, Namespaces};

const BASE: &str = "http://169.254.169.254/latest";

/// One `[[instances]]` entry: a guest of the default instance's subnet with its own identity,
/// role, tags and user data.
fn instance(id: &str, address: &str, role: &str, name: &str) -> String {
    // Every other id of the instance repeats the hex digit its instance id is made of.
    let digits = id[3..].to_owned();
    let mac = &digits[..2];
    format!(
        r#"
[[instances]]
instance_id = "{id}"
reservation_id = "r-0{digits}"
user_data = "user data of {name}"
tags = {{ Name = "{name}" }}
metadata_options = {{ instance_metadata_tags = "enabled" }}
iam = {{ role = "{role}" }}

[[instances.network_interfaces]]
mac = "0e:00:00:00:00:{mac}"
interface_id = "eni-0{digits}"
subnet_id = "subnet-0a3e5c7b9d1f24681"
subnet_ipv4_cidr_block = "10.0.16.0/20"
vpc_id = "vpc-0c4f6a8e2b1d35792"
vpc_ipv4_cidr_blocks = ["10.0.0.0/16"]
private_ipv4s = ["{address}"]
security_groups = [{{ name = "default", id = "sg-0e1f2a3b4c5d6e7f8" }}]
"#
    )
}

/// The two guests: (namespace role, instance id, address, role name, Name tag).
const GUESTS: [(&str, &str, &str, &str, &str); 2] = [
    (
        "a",
        "i-0aaaaaaaaaaaaaaaa",
        "10.0.16.11",
        "role-of-a",
        "guest-a",
    ),
    (
        "b",
        "i-0bbbbbbbbbbbbbbbb",
        "10.0.16.12",
        "role-of-b",
        "guest-b",
    ),
];

/// The host and three guests on one bridge, each guest routing 169.254.169.254 to the host.
fn lab(test: &str) -> Namespaces {
    let lab = Namespaces::new(test, &["host", "a", "b", "stray"]);
    let host = lab.name("host");
    ip(&["-n", &host, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &host, "addr", "add", "10.0.16.1/20", "dev", "br0"]);
    ip(&["-n", &host, "link", "set", "br0", "up"]);
    for (role, address) in [
        ("a", "10.0.16.11"),
        ("b", "10.0.16.12"),
        ("stray", "10.0.16.99"),
    ] {
        let guest = lab.name(role);
        let tap = format!("tap-{role}");
        ip(&[
            "link", "add", "eth0", "netns", &guest, "type", "veth", "peer", "name", &tap, "netns",
            &host,
        ]);
        ip(&["-n", &host, "link", "set", &tap, "master", "br0"]);
        ip(&["-n", &host, "link", "set", &tap, "up"]);
        ip(&[
            "-n",
            &guest,
            "addr",
            "add",
            &format!("{address}/20"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &guest, "link", "set", "eth0", "up"]);
        ip(&[
            "-n",
            &guest,
            "route",
            "add",
            "169.254.169.254/32",
            "via",
            "10.0.16.1",
        ]);
    }
    lab
}

fn fleet_config(dir: &tempfile::TempDir) -> String {
    let mut text = String::from("[server]\nfleet = true\n");
    for (_, id, address, role, name) in GUESTS {
        text.push_str(&instance(id, address, role, name));
    }
    let path = dir.path().join("fleet.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it where it can"]
fn each_guest_sees_only_its_own_instance_and_strangers_are_refused() {
    let lab = lab("f");
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(&dir);
    let imds = lab.serve(
        "host",
        &[
            "--link-local",
            "--config",
            &config,
            "--listen",
            "127.0.0.1:0",
        ],
    );
    assert!(
        imds.endpoints
            .contains(&"http://169.254.169.254:80".to_owned()),
        "{:?}",
        imds.endpoints
    );
    let get = |role: &str, path: &str, token: &str| {
        let header = format!("X-aws-ec2-metadata-token: {token}");
        lab.curl_with(role, "GET", &format!("{BASE}/{path}"), &[&header])
            .unwrap_or_else(|| panic!("GET {path} from {role} timed out"))
    };
    let token_of = |role: &str| {
        let (status, token) = lab
            .curl(role, "PUT", &format!("{BASE}/api/token"))
            .unwrap_or_else(|| panic!("token PUT from {role} timed out"));
        assert_eq!(status, 200, "token PUT from {role}: {token}");
        token
    };

    let tokens = [token_of("a"), token_of("b")];
    for (i, (role, id, address, iam_role, name)) in GUESTS.into_iter().enumerate() {
        let token = &tokens[i];
        let (_, other_id, _, other_role, other_name) = GUESTS[1 - i];
        let ok = |path: &str| {
            let (status, body) = get(role, path, token);
            assert_eq!(status, 200, "{role} GET {path}: {body}");
            body
        };
        assert_eq!(ok("meta-data/instance-id"), id);
        assert_eq!(ok("meta-data/local-ipv4"), address);
        assert_eq!(
            ok("meta-data/local-hostname"),
            format!("ip-{}.ec2.internal", address.replace('.', "-"))
        );
        assert_eq!(ok("meta-data/tags/instance/Name"), name);
        assert_eq!(ok("meta-data/iam/security-credentials/"), iam_role);
        let credentials = ok(&format!("meta-data/iam/security-credentials/{iam_role}"));
        assert!(
            credentials.contains("\"Code\" : \"Success\""),
            "{credentials}"
        );
        assert!(ok("meta-data/iam/info").contains(&format!("instance-profile/{iam_role}")));
        assert_eq!(ok("user-data"), format!("user data of {name}"));
        let identity = ok("dynamic/instance-identity/document");
        assert!(
            identity.contains(id) && !identity.contains(other_id),
            "{identity}"
        );

        let (status, _) = get(
            role,
            &format!("meta-data/iam/security-credentials/{other_role}"),
            token,
        );
        assert_eq!(status, 404, "{role} gets no credentials of {other_role}");
        for path in [
            "meta-data/instance-id",
            "meta-data/tags/instance/Name",
            "user-data",
        ] {
            let body = ok(path);
            assert!(
                !body.contains(other_id) && !body.contains(other_name),
                "{role} GET {path} shows the other guest: {body}"
            );
        }
    }

    let (status, _) = get("b", "meta-data/instance-id", &tokens[0]);
    assert_eq!(status, 401, "a's token is refused when b presents it");
    let (status, _) = get("a", "meta-data/instance-id", &tokens[1]);
    assert_eq!(status, 401, "b's token is refused when a presents it");

    // IMDSv1 requests, counted per instance: two from a, one from b.
    for role in ["a", "a", "b"] {
        let answer = lab.curl(role, "GET", &format!("{BASE}/meta-data/instance-id"));
        assert_eq!(answer.map(|(status, _)| status), Some(200));
    }

    for (method, path) in [("GET", "meta-data/instance-id"), ("PUT", "api/token")] {
        let answer = lab.curl("stray", method, &format!("{BASE}/{path}"));
        assert_eq!(
            answer,
            Some((403, String::new())),
            "a caller that is no instance gets 403 for {method} {path}"
        );
    }

    let (status, metrics) = lab
        .curl("host", "GET", &format!("{}/metrics", imds.control[0]))
        .expect("the control API answers");
    assert_eq!(status, 200);
    for line in [
        "imds_unknown_callers_total 2",
        "imds_metadata_no_token_total{instance_id=\"i-0aaaaaaaaaaaaaaaa\"} 2",
        "imds_metadata_no_token_total{instance_id=\"i-0bbbbbbbbbbbbbbbb\"} 1",
        "imds_tokens_rejected_total{version=\"v2\",reason=\"wrong_instance\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "/metrics has `{line}`:\n{metrics}"
        );
    }
    let (status, stderr) = imds.stop("TERM");
    assert!(status.success(), "{stderr}");
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("belongs to no instance"))
        .collect::<Vec<_>>();
    assert_eq!(
        warnings.len(),
        1,
        "the stray caller is logged once, not per request:\n{stderr}"
    );
    assert!(warnings[0].contains("10.0.16.99"), "{}", warnings[0]);
}

/// Guests a and b of [`lab`] with IPv6 addresses too, routing IMDS' IPv6 address to the host.
fn ipv6_lab() -> Namespaces {
    let lab = lab("f6");
    let host = lab.name("host");
    ip(&[
        "-n",
        &host,
        "addr",
        "add",
        "fd00:16::1/64",
        "dev",
        "br0",
        "nodad",
    ]);
    for (role, address) in [("a", "fd00:16::11"), ("b", "fd00:16::12")] {
        let guest = lab.name(role);
        let cidr = format!("{address}/64");
        ip(&["-n", &guest, "addr", "add", &cidr, "dev", "eth0", "nodad"]);
        ip(&[
            "-n",
            &guest,
            "route",
            "add",
            "fd00:ec2::254/128",
            "via",
            "fd00:16::1",
        ]);
    }
    lab
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it where it can"]
fn only_instances_with_http_protocol_ipv6_are_answered_at_the_ipv6_address() {
    let lab = ipv6_lab();
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("[server]\nfleet = true\n");
    for ((_, id, address, role, name), (ipv6, enabled)) in GUESTS
        .iter()
        .zip([("fd00:16::11", "enabled"), ("fd00:16::12", "disabled")])
    {
        let entry = instance(id, address, role, name)
            .replace(
                "metadata_options = { instance_metadata_tags = \"enabled\" }",
                &format!("metadata_options = {{ http_protocol_ipv6 = \"{enabled}\" }}"),
            )
            .replace(
                "subnet_ipv4_cidr_block = \"10.0.16.0/20\"",
                "subnet_ipv4_cidr_block = \"10.0.16.0/20\"\nsubnet_ipv6_cidr_blocks = [\"fd00:16::/64\"]\nvpc_ipv6_cidr_blocks = [\"fd00:16::/56\"]",
            )
            .replace(
                &format!("private_ipv4s = [\"{address}\"]"),
                &format!("private_ipv4s = [\"{address}\"]\nipv6s = [\"{ipv6}\"]"),
            );
        text.push_str(&entry);
    }
    let config = dir.path().join("fleet.toml");
    std::fs::write(&config, text).unwrap();
    let _imds = lab.serve(
        "host",
        &[
            "--link-local",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            // The host's own IPv6 address, as a DNAT rule for [fd00:ec2::254] would reach it.
            "--listen",
            "[fd00:16::1]:8338",
        ],
    );
    let url = "http://[fd00:ec2::254]/latest/meta-data/instance-id";
    assert_eq!(
        lab.curl("a", "GET", url),
        Some((200, GUESTS[0].1.to_owned())),
        "IPv6 enabled: answered as itself"
    );
    // IPv6 disabled: the connection ends without an answer, as on EC2 (curl: 56, reset).
    let refused = lab.try_curl("b", "GET", url);
    assert!(
        matches!(refused, Err(52 | 56) | Ok(None)),
        "IPv6 disabled: no answer, got {refused:?}"
    );
    // The same through DNAT (another local address): still by IPv6, so the same answers.
    let nat = "http://[fd00:16::1]:8338/latest/meta-data/instance-id";
    assert_eq!(
        lab.curl("a", "GET", nat),
        Some((200, GUESTS[0].1.to_owned()))
    );
    let refused = lab.try_curl("b", "GET", nat);
    assert!(
        matches!(refused, Err(52 | 56) | Ok(None)),
        "IPv6 disabled, through DNAT: no answer, got {refused:?}"
    );
    // Its IPv4 endpoint still answers it.
    assert_eq!(
        lab.curl("b", "GET", &format!("{BASE}/meta-data/instance-id")),
        Some((200, GUESTS[1].1.to_owned()))
    );
}

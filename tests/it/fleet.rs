//! Fleet mode driven the way EC2 users drive EC2: the unmodified AWS CLI and boto3 launch
//! instances (run-instances with tags, metadata options, user data), find them by tag, change,
//! stop, start and terminate them, and guardrail policies refuse what they deny; the guest API
//! follows each change for callers at the instances' own addresses (loopback addresses of a
//! 127.16.0.0/16 subnet). The store keeps the fleet across a `kill -9`.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::control::aws;
use crate::process::{Served, IMDS};

pub(crate) const SUBNET: &str = "subnet-0a3e5c7b9d1f24681";

/// A fleet whose one configured instance lives in a loopback subnet, so that launched
/// instances get addresses this host can send from; `extra` is added to the file.
pub(crate) fn fleet_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let file = dir.join("fleet.toml");
    std::fs::write(
        &file,
        format!(
            r#"[server]
fleet = true

[[instances]]
instance_id = "i-0aaaaaaaaaaaaaaa1"
[[instances.network_interfaces]]
mac = "0e:8c:1f:6b:2d:35"
interface_id = "eni-0d9a1b7c3e5f24680"
subnet_id = "{SUBNET}"
subnet_ipv4_cidr_block = "127.16.0.0/16"
vpc_id = "vpc-0c4f6a8e2b1d35792"
vpc_ipv4_cidr_blocks = ["127.0.0.0/8"]
private_ipv4s = ["127.16.0.10"]
security_groups = [{{ name = "default", id = "sg-0e1f2a3b4c5d6e7f8" }}]
{extra}"#
        ),
    )
    .unwrap();
    file
}

pub(crate) fn serve_fleet(config: &Path, state: &Path) -> Served {
    let mut command = std::process::Command::new(IMDS);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--state-dir")
        .arg(state);
    Served::spawn(command)
}

/// A guest request from `source` (an instance's address): status and body.
pub(crate) fn guest(served: &Served, source: &str, request: &str) -> (u16, String) {
    let port: u16 = served.endpoints[0]
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let source: IpAddr = source.parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(source, 0).into()).unwrap();
    socket
        .connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(request.replace("{addr}", "169.254.169.254").as_bytes())
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

pub(crate) fn get(served: &Served, source: &str, path: &str) -> (u16, String) {
    guest(
        served,
        source,
        &format!("GET {path} HTTP/1.1\r\nHost: {{addr}}\r\n\r\n"),
    )
}

/// An IMDSv2 GET from `source`: a token PUT, then the GET with it.
pub(crate) fn get_v2(served: &Served, source: &str, path: &str) -> (u16, String) {
    let (status, token) = guest(
        served,
        source,
        "PUT /latest/api/token HTTP/1.1\r\nHost: {addr}\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n",
    );
    assert_eq!(status, 200, "token PUT from {source}");
    guest(
        served,
        source,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {{addr}}\r\nX-aws-ec2-metadata-token: {token}\r\n\r\n"
        ),
    )
}

/// `aws ec2 run-instances` of one instance in the loopback subnet, with `extra` arguments.
pub(crate) fn run_one(served: &Served, extra: &[&str]) -> Result<Value, (i32, String)> {
    let mut args = vec![
        "run-instances",
        "--image-id",
        "ami-0abcdef1234567890",
        "--count",
        "1",
        "--subnet-id",
        SUBNET,
    ];
    args.extend_from_slice(extra);
    aws(served, &args)
}

fn instances(described: &Value) -> Vec<Value> {
    described["Reservations"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["Instances"].as_array().unwrap().clone())
        .collect()
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn the_aws_cli_launches_finds_changes_and_terminates_instances_that_guests_see() {
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let state = dir.path().join("state");
    let served = serve_fleet(&config, &state);

    let launch_web = [
        "run-instances",
        "--image-id",
        "ami-0abcdef1234567890",
        "--instance-type",
        "t3.micro",
        "--count",
        "2",
        "--subnet-id",
        SUBNET,
        "--tag-specifications",
        "ResourceType=instance,Tags=[{Key=Name,Value=web}]",
        "--metadata-options",
        "HttpTokens=required,HttpPutResponseHopLimit=2,InstanceMetadataTags=enabled",
        "--user-data",
        "#!/bin/sh\necho hello",
        "--client-token",
        "launch-web-1",
    ];
    let launched = aws(&served, &launch_web).unwrap();
    let new: Vec<Value> = launched["Instances"].as_array().unwrap().clone();
    assert_eq!(new.len(), 2, "{launched}");
    for instance in &new {
        assert_eq!(instance["State"]["Name"], "pending");
        assert_eq!(instance["InstanceType"], "t3.micro");
        assert_eq!(instance["MetadataOptions"]["HttpTokens"], "required");
        assert_eq!(instance["MetadataOptions"]["HttpPutResponseHopLimit"], 2);
        assert!(instance["PrivateIpAddress"]
            .as_str()
            .unwrap()
            .starts_with("127.16."));
    }
    let ids: Vec<&str> = new
        .iter()
        .map(|i| i["InstanceId"].as_str().unwrap())
        .collect();
    let ips: Vec<&str> = new
        .iter()
        .map(|i| i["PrivateIpAddress"].as_str().unwrap())
        .collect();
    assert_ne!(ips[0], ips[1]);
    // A retry with the same client token launches nothing more.
    let again = aws(&served, &launch_web).unwrap();
    assert_eq!(again["Instances"][0]["InstanceId"], ids[0]);

    // Pending settles into running within half a second.
    std::thread::sleep(Duration::from_millis(600));
    let found = aws(
        &served,
        &[
            "describe-instances",
            "--filters",
            "Name=tag:Name,Values=web",
        ],
    )
    .unwrap();
    let found = instances(&found);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|i| i["State"]["Name"] == "running"));
    assert_eq!(
        instances(&aws(&served, &["describe-instances"]).unwrap()).len(),
        3
    );
    // EC2's filters, wildcards included, and paging that the CLI follows on its own.
    let by_ip = aws(
        &served,
        &[
            "describe-instances",
            "--filters",
            &format!("Name=private-ip-address,Values={}", ips[1]),
        ],
    )
    .unwrap();
    assert_eq!(instances(&by_ip)[0]["InstanceId"], ids[1]);
    let by_type = aws(
        &served,
        &[
            "describe-instances",
            "--filters",
            "Name=instance-type,Values=t3.*",
            "Name=metadata-options.http-tokens,Values=required",
            &format!("Name=subnet-id,Values={SUBNET}"),
        ],
    )
    .unwrap();
    assert_eq!(instances(&by_type).len(), 2);
    // A later --count replaces run_one's: six more instances.
    let launched_more = run_one(&served, &["--count", "6"]).unwrap();
    assert_eq!(launched_more["Instances"].as_array().unwrap().len(), 6);
    let paged = aws(&served, &["describe-instances", "--page-size", "5"]).unwrap();
    assert_eq!(instances(&paged).len(), 9, "every page followed");
    let (_, stderr) = aws(
        &served,
        &["describe-instances", "--filters", "Name=flavour,Values=x"],
    )
    .unwrap_err();
    assert!(stderr.contains("InvalidParameterValue"), "{stderr}");

    // Each guest sees its own instance; IMDSv1 is refused as asked.
    for (id, ip) in ids.iter().zip(&ips) {
        assert_eq!(
            get_v2(&served, ip, "/latest/meta-data/instance-id"),
            (200, id.to_string())
        );
        assert_eq!(
            get_v2(&served, ip, "/latest/meta-data/tags/instance/Name"),
            (200, "web".into())
        );
        assert_eq!(
            get_v2(&served, ip, "/latest/meta-data/local-ipv4"),
            (200, ip.to_string())
        );
        assert_eq!(
            get_v2(&served, ip, "/latest/user-data").1,
            "#!/bin/sh\necho hello"
        );
        assert_eq!(get(&served, ip, "/latest/meta-data/instance-id").0, 401);
    }
    assert_eq!(
        get(&served, "127.16.0.10", "/latest/meta-data/instance-id"),
        (200, "i-0aaaaaaaaaaaaaaa1".into())
    );
    assert_eq!(
        get(&served, "127.16.9.9", "/latest/meta-data/instance-id").0,
        403
    );

    // IMDSv1 back on for one instance only.
    aws(
        &served,
        &[
            "modify-instance-metadata-options",
            "--instance-id",
            ids[0],
            "--http-tokens",
            "optional",
        ],
    )
    .unwrap();
    assert_eq!(
        get(&served, ips[0], "/latest/meta-data/instance-id"),
        (200, ids[0].to_string())
    );
    assert_eq!(get(&served, ips[1], "/latest/meta-data/instance-id").0, 401);

    // Stopped and terminated instances answer no guest; a terminated one frees its address.
    let stopped = aws(&served, &["stop-instances", "--instance-ids", ids[1]]).unwrap();
    assert_eq!(
        stopped["StoppingInstances"][0]["CurrentState"]["Name"],
        "stopping"
    );
    assert_eq!(get(&served, ips[1], "/latest/meta-data/instance-id").0, 403);
    let terminated = aws(&served, &["terminate-instances", "--instance-ids", ids[0]]).unwrap();
    let change = &terminated["TerminatingInstances"][0];
    assert_eq!(change["PreviousState"]["Name"], "running");
    assert_eq!(change["CurrentState"]["Name"], "shutting-down");
    assert_eq!(get(&served, ips[0], "/latest/meta-data/instance-id").0, 403);
    std::thread::sleep(Duration::from_millis(600));
    let (code, stderr) = aws(&served, &["start-instances", "--instance-ids", ids[0]]).unwrap_err();
    assert_eq!(code, 255);
    assert!(stderr.contains("IncorrectInstanceState"), "{stderr}");
    let gone = aws(
        &served,
        &[
            "describe-instances",
            "--filters",
            "Name=instance-state-name,Values=terminated",
        ],
    )
    .unwrap();
    assert_eq!(instances(&gone)[0]["InstanceId"], ids[0]);
    let (code, stderr) = aws(
        &served,
        &[
            "terminate-instances",
            "--instance-ids",
            "i-0123456789abcdef0",
        ],
    )
    .unwrap_err();
    assert_eq!(code, 255);
    assert!(stderr.contains("InvalidInstanceID.NotFound"), "{stderr}");

    // kill -9: the launched fleet, its states and addresses come back.
    served.signal("KILL");
    drop(served);
    let served = serve_fleet(&config, &state);
    let all = instances(&aws(&served, &["describe-instances"]).unwrap());
    let state_of = |id: &str| {
        all.iter()
            .find(|i| i["InstanceId"] == id)
            .map(|i| i["State"]["Name"].as_str().unwrap().to_owned())
    };
    assert_eq!(state_of(ids[0]).as_deref(), Some("terminated"));
    assert_eq!(state_of(ids[1]).as_deref(), Some("stopped"));
    aws(&served, &["start-instances", "--instance-ids", ids[1]]).unwrap();
    assert_eq!(
        get_v2(&served, ips[1], "/latest/meta-data/instance-id"),
        (200, ids[1].to_string())
    );
    // The terminated instance's address is free again: a new instance may take it.
    let reused = run_one(&served, &["--private-ip-address", ips[0]]).unwrap();
    assert_eq!(reused["Instances"][0]["PrivateIpAddress"], ips[0]);
    let (code, stderr) = run_one(&served, &["--private-ip-address", ips[1]]).unwrap_err();
    assert_eq!(code, 255);
    assert!(stderr.contains("InvalidIPAddress.InUse"), "{stderr}");
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn guardrail_policies_published_by_aws_refuse_what_they_deny() {
    let dir = tempfile::tempdir().unwrap();
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/policies");
    for name in [
        "require-imdsv2.json",
        "max-hop-limit.json",
        "deny-modify-metadata-options.json",
    ] {
        std::fs::copy(policies.join(name), dir.path().join(name)).unwrap();
    }
    let config = fleet_config(
        dir.path(),
        "\n[control]\nservice_control_policies = [\"require-imdsv2.json\", \"max-hop-limit.json\", \"deny-modify-metadata-options.json\"]\n",
    );
    let served = serve_fleet(&config, &dir.path().join("state"));
    let run = |options: &str| run_one(&served, &["--metadata-options", options]);
    // Require IMDSv2: a launch that does not ask for HttpTokens=required is denied.
    let (code, stderr) = run("HttpEndpoint=enabled").unwrap_err();
    assert_eq!(code, 255);
    assert!(stderr.contains("UnauthorizedOperation"), "{stderr}");
    let (_, stderr) = run("HttpTokens=optional").unwrap_err();
    assert!(stderr.contains("UnauthorizedOperation"), "{stderr}");
    // The hop limit policy: more than 3 is denied.
    let (_, stderr) = run("HttpTokens=required,HttpPutResponseHopLimit=4").unwrap_err();
    assert!(stderr.contains("UnauthorizedOperation"), "{stderr}");
    let launched = run("HttpTokens=required,HttpPutResponseHopLimit=2").unwrap();
    let id = launched["Instances"][0]["InstanceId"]
        .as_str()
        .unwrap()
        .to_owned();
    // No one may change metadata options at all.
    let (code, stderr) = aws(
        &served,
        &[
            "modify-instance-metadata-options",
            "--instance-id",
            &id,
            "--http-tokens",
            "required",
        ],
    )
    .unwrap_err();
    assert_eq!(code, 255);
    assert!(stderr.contains("UnauthorizedOperation"), "{stderr}");
    let described = aws(&served, &["describe-instances", "--instance-ids", &id]).unwrap();
    assert_eq!(instances(&described).len(), 1);
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn guardrails_scoped_to_a_region_or_an_account_decide_aws_cli_launches_as_on_aws() {
    let dir = tempfile::tempdir().unwrap();
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/policies");
    // AWS's example, verbatim but for the account id: this fleet's is 123456789012.
    let tag_on_create = std::fs::read_to_string(policies.join("tag-on-create-at-least-one.json"))
        .unwrap()
        .replace("111122223333", "123456789012");
    std::fs::write(dir.path().join("tag-on-create.json"), tag_on_create).unwrap();
    let scoped = |region: &str, account: &str| {
        format!(
            r#"{{"Version": "2012-10-17", "Statement": [{{"Sid": "RequireImdsV2", "Effect": "Deny",
            "Action": "ec2:RunInstances", "Resource": "arn:aws:ec2:{region}:{account}:instance/*",
            "Condition": {{"StringNotEquals": {{"ec2:MetadataHttpTokens": "required"}}}}}}]}}"#
        )
    };
    for (name, region, account) in [
        ("imdsv2-in-us-east-1", "us-east-1", "*"),
        ("imdsv2-in-eu-west-1", "eu-west-1", "*"),
        ("imdsv2-in-another-account", "*", "444455556666"),
    ] {
        std::fs::write(
            dir.path().join(format!("{name}.json")),
            scoped(region, account),
        )
        .unwrap();
    }
    let config = fleet_config(
        dir.path(),
        "\n[control]\nservice_control_policies = [\"imdsv2-in-eu-west-1.json\", \"imdsv2-in-another-account.json\", \"imdsv2-in-us-east-1.json\", \"tag-on-create.json\"]\n",
    );
    let served = serve_fleet(&config, &dir.path().join("state"));
    let tagged = [
        "--tag-specifications",
        "ResourceType=instance,Tags=[{Key=environment,Value=prod}]",
        "ResourceType=volume,Tags=[{Key=environment,Value=prod}]",
    ];
    let run = |options: &str, tags: &[&str]| {
        let mut args = vec!["--metadata-options", options];
        args.extend_from_slice(tags);
        run_one(&served, &args)
    };
    // The us-east-1 statement applies in us-east-1; the eu-west-1 and other-account ones do not.
    let (code, stderr) = run("HttpTokens=optional", &tagged).unwrap_err();
    assert_eq!(code, 255);
    assert!(
        stderr.contains("UnauthorizedOperation")
            && stderr.contains("imdsv2-in-us-east-1 (statement RequireImdsV2)")
            && stderr.contains("arn:aws:ec2:us-east-1:123456789012:instance/*"),
        "{stderr}"
    );
    // tag-on-create-at-least-one: an untagged launch is refused, a tagged one allowed.
    let (_, stderr) = run("HttpTokens=required", &[]).unwrap_err();
    assert!(
        stderr.contains("no statement in service control policy tag-on-create allows"),
        "{stderr}"
    );
    let launched = run("HttpTokens=required", &tagged).unwrap();
    assert_eq!(
        launched["Instances"][0]["Tags"],
        serde_json::json!([{"Key": "environment", "Value": "prod"}])
    );
    assert_eq!(launched["OwnerId"], "123456789012");
}

#[test]
#[ignore = "needs boto3: run scripts/test"]
fn boto3_launches_finds_changes_stops_and_terminates_a_fleet_that_guests_follow() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve_fleet(&fleet_config(dir.path(), ""), &dir.path().join("state"));
    let script = crate::conformance::repo().join("tests/conformance/python/boto3_fleet.py");
    let output = std::process::Command::new(crate::conformance::python())
        .arg(script)
        .args([&served.control[0], &served.endpoints[0], SUBNET])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "boto3_fleet.py: {stderr}");
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    let ids: Vec<&str> = seen["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let ips: Vec<&str> = seen["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{seen}");
    let mut distinct = ips.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{seen}");

    // RunInstances: pending, with the request's type, subnet, tags and metadata options.
    for launched in seen["launched"].as_array().unwrap() {
        assert_eq!(launched["state"], "pending");
        assert_eq!(launched["type"], "t3.micro");
        assert_eq!(launched["subnet"], SUBNET);
        assert_eq!(launched["options"]["HttpTokens"], "required");
        assert_eq!(launched["options"]["HttpPutResponseHopLimit"], 2);
        assert_eq!(launched["options"]["InstanceMetadataTags"], "enabled");
        assert_eq!(
            launched["tags"],
            serde_json::json!({"Name": "boto3-web", "Team": "blue"})
        );
    }
    for ip in &ips {
        assert!(ip.starts_with("127.16."), "{seen}");
    }

    // Found by tag, running; each guest sees its own instance, IMDSv2 only.
    let by_name = &seen["found_by_name"];
    assert_eq!(by_name.as_object().unwrap().len(), 3, "{seen}");
    for id in &ids {
        assert_eq!(by_name[id], "running", "{seen}");
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(seen["found_running_by_name"], serde_json::json!(sorted));
    for ((guest, id), ip) in seen["guests"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&ids)
        .zip(&ips)
    {
        assert_eq!(guest["instance_id"], serde_json::json!([200, id]));
        assert_eq!(guest["local_ipv4"], serde_json::json!([200, ip]));
        assert_eq!(guest["name_tag"], serde_json::json!([200, "boto3-web"]));
        assert_eq!(
            guest["user_data"],
            serde_json::json!([200, "#!/bin/sh\necho launched by boto3\n"])
        );
        assert_eq!(guest["v1"], 401);
    }

    // ModifyInstanceMetadataOptions on one instance: only its guest takes IMDSv1 again.
    assert_eq!(seen["modify_answer"]["HttpTokens"], "optional");
    assert_eq!(seen["modify_answer"]["State"], "pending");
    assert_eq!(
        seen["v1_after_modify"],
        serde_json::json!([[200, ids[0]], [401, ""], [401, ""]])
    );
    assert_eq!(
        seen["tokens_after_modify"],
        serde_json::json!({ids[0]: "optional", ids[1]: "required", ids[2]: "required"})
    );

    // Stop, then start: no guest while stopped, the same instance after.
    assert_eq!(
        seen["stop"],
        serde_json::json!({ids[1]: ["running", "stopping"]})
    );
    assert_eq!(seen["guest_while_stopping"], 403);
    assert_eq!(seen["state_stopped"], "stopped");
    assert_eq!(
        seen["start"],
        serde_json::json!({ids[1]: ["stopped", "pending"]})
    );
    assert_eq!(seen["guest_after_start"], serde_json::json!([200, ids[1]]));

    // Terminate: no guest, no start, still described as terminated.
    assert_eq!(
        seen["terminate"],
        serde_json::json!({ids[2]: ["running", "shutting-down"]})
    );
    assert_eq!(seen["guest_after_terminate"], 403);
    assert_eq!(seen["start_terminated"], "IncorrectInstanceState");
    let after = &seen["after"];
    assert_eq!(
        after.as_object().unwrap().len(),
        4,
        "with the configured one: {seen}"
    );
    assert_eq!(after["i-0aaaaaaaaaaaaaaa1"]["state"], "running");
    assert_eq!(after[ids[0]]["state"], "running");
    assert_eq!(after[ids[0]]["http_tokens"], "optional");
    assert_eq!(after[ids[1]]["state"], "running");
    assert_eq!(after[ids[1]]["http_tokens"], "required");
    assert_eq!(after[ids[2]]["state"], "terminated");
    let mut running = vec![ids[0], ids[1]];
    running.sort();
    assert_eq!(seen["after_running_by_name"], serde_json::json!(running));

    // And the guest API agrees, from each instance's address, after boto3 is done.
    assert_eq!(
        get(&served, ips[0], "/latest/meta-data/instance-id"),
        (200, ids[0].to_owned())
    );
    assert_eq!(get(&served, ips[1], "/latest/meta-data/instance-id").0, 401);
    assert_eq!(
        get_v2(&served, ips[1], "/latest/meta-data/tags/instance/Team"),
        (200, "blue".to_owned())
    );
    assert_eq!(get(&served, ips[2], "/latest/meta-data/instance-id").0, 403);
    assert_eq!(
        get(&served, "127.16.0.10", "/latest/meta-data/instance-id"),
        (200, "i-0aaaaaaaaaaaaaaa1".to_owned())
    );
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn a_security_group_in_use_is_kept_until_its_instances_are_terminated() {
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let served = serve_fleet(&config, &dir.path().join("state"));
    let created = aws(
        &served,
        &[
            "create-security-group",
            "--group-name",
            "web",
            "--description",
            "web servers",
            "--vpc-id",
            "vpc-0c4f6a8e2b1d35792",
        ],
    )
    .unwrap();
    let group = created["GroupId"].as_str().unwrap().to_owned();
    let launched = run_one(&served, &["--security-group-ids", &group]).unwrap();
    let instance = &launched["Instances"][0];
    assert_eq!(instance["SecurityGroups"][0]["GroupId"], group.as_str());
    let ip = instance["PrivateIpAddress"].as_str().unwrap();
    assert_eq!(
        get(&served, ip, "/latest/meta-data/security-groups"),
        (200, "web".to_owned())
    );
    let id = instance["InstanceId"].as_str().unwrap();
    let delete = ["delete-security-group", "--group-id", &group];
    let (code, stderr) = aws(&served, &delete).unwrap_err();
    assert_eq!(code, 255);
    assert!(stderr.contains("DependencyViolation"), "{stderr}");
    aws(&served, &["terminate-instances", "--instance-ids", id]).unwrap();
    aws(&served, &delete).unwrap();
    let (_, stderr) = aws(&served, &delete).unwrap_err();
    assert!(stderr.contains("InvalidGroup.NotFound"), "{stderr}");
}

//! The EC2 API as automation drives it, with the real tools against a running fleet: the AWS
//! CLI (launch templates and their versions, created key pairs, one reservation per launch, a
//! restart keeping both, instance status pages and filters, EC2's system tags, a guardrail
//! that allows only launches from templates), Debian's Ansible (`amazon.aws`) and Debian's
//! Prometheus (`ec2_sd_configs`); botocore's output shapes are walked in `botocore_shapes`.
//! Ignored by a plain `cargo test`; `scripts/test` runs them (`scripts/install-test-deps`
//! installs the tools).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::conformance::python;
use crate::control::aws;
use crate::fleet::{fleet_config, get_v2, serve_fleet, SUBNET};

/// Denies any `RunInstances` that is not from a launch template (`ec2:LaunchTemplate` is
/// absent from a direct launch).
const FROM_TEMPLATES_ONLY: &str = r#"{"Version": "2012-10-17", "Statement": [{
    "Sid": "DenyWithoutLaunchTemplate", "Effect": "Deny", "Action": "ec2:RunInstances",
    "Resource": "arn:aws:ec2:*:*:instance/*",
    "Condition": {"Null": {"ec2:LaunchTemplate": "true"}}}]}"#;

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn the_aws_cli_pages_instance_status_deletes_template_versions_and_sees_ec2s_system_tags() {
    let dir = tempfile::tempdir().unwrap();
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/policies");
    std::fs::copy(
        policies.join("full-aws-access.json"),
        dir.path().join("full-aws-access.json"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("from-templates-only.json"),
        FROM_TEMPLATES_ONLY,
    )
    .unwrap();
    let config = fleet_config(
        dir.path(),
        "\n[control]\nservice_control_policies = [\"full-aws-access.json\", \"from-templates-only.json\"]\n",
    );
    let served = serve_fleet(&config, &dir.path().join("state"));

    // The guardrail: a direct launch is denied, a launch from a template is not.
    let (code, stderr) = aws(
        &served,
        &[
            "run-instances",
            "--image-id",
            "ami-0abcdef1234567890",
            "--subnet-id",
            SUBNET,
        ],
    )
    .unwrap_err();
    assert_eq!(code, 255);
    assert!(
        stderr.contains("UnauthorizedOperation")
            && stderr.contains("from-templates-only (statement DenyWithoutLaunchTemplate)"),
        "{stderr}"
    );
    let template = aws(
        &served,
        &[
            "create-launch-template",
            "--launch-template-name",
            "web",
            "--launch-template-data",
            r#"{"ImageId": "ami-0abcdef1234567890", "InstanceType": "t3.micro",
                "MetadataOptions": {"HttpTokens": "required", "InstanceMetadataTags": "enabled"},
                "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "Role", "Value": "web"}]}]}"#,
        ],
    )
    .unwrap();
    let template_id = template["LaunchTemplate"]["LaunchTemplateId"]
        .as_str()
        .unwrap()
        .to_owned();
    for instance_type in ["t3.small", "t3.large"] {
        aws(
            &served,
            &[
                "create-launch-template-version",
                "--launch-template-id",
                &template_id,
                "--source-version",
                "1",
                "--launch-template-data",
                &format!(r#"{{"InstanceType": "{instance_type}"}}"#),
            ],
        )
        .unwrap();
    }
    let launched = aws(
        &served,
        &[
            "run-instances",
            "--launch-template",
            "LaunchTemplateName=web,Version=2",
            "--count",
            "6",
            "--subnet-id",
            SUBNET,
        ],
    )
    .unwrap();
    let mut ids: Vec<String> = launched["Instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["InstanceId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 6);
    std::thread::sleep(Duration::from_millis(600));

    // EC2's system tags: listed and filtered on, never in IMDS, never the user's to change.
    let tagged = aws(
        &served,
        &[
            "describe-instances",
            "--filters",
            &format!("Name=tag:aws:ec2launchtemplate:id,Values={template_id}"),
            "Name=tag:aws:ec2launchtemplate:version,Values=2",
        ],
    )
    .unwrap();
    let instances = tagged["Reservations"][0]["Instances"].as_array().unwrap();
    assert_eq!(instances.len(), 6, "{tagged}");
    let address = instances[0]["PrivateIpAddress"].as_str().unwrap();
    let (status, keys) = get_v2(&served, address, "/latest/meta-data/tags/instance");
    assert_eq!((status, keys.as_str()), (200, "Role"));
    for args in [
        vec![
            "create-tags",
            "--resources",
            &ids[0],
            "--tags",
            "Key=aws:owner,Value=me",
        ],
        vec![
            "delete-tags",
            "--resources",
            &ids[0],
            "--tags",
            "Key=aws:ec2launchtemplate:id",
        ],
    ] {
        let (_, stderr) = aws(&served, &args).unwrap_err();
        assert!(
            stderr.contains("InvalidParameterValue")
                && stderr.contains("Tag keys starting with 'aws:' are reserved for internal use"),
            "{stderr}"
        );
    }

    // DescribeInstanceStatus: the CLI follows NextToken pages of 5 (6 launched and the one the
    // file configures, all running).
    ids.push("i-0aaaaaaaaaaaaaaa1".to_owned());
    ids.sort();
    let listed = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["describe-instance-status"];
        all.extend_from_slice(args);
        let answer = aws(&served, &all).unwrap();
        answer["InstanceStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["InstanceId"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed(&["--page-size", "5"]), ids);
    let first = aws(&served, &["describe-instance-status", "--max-items", "3"]).unwrap();
    assert_eq!(first["InstanceStatuses"].as_array().unwrap().len(), 3);
    let token = first["NextToken"].as_str().unwrap();
    let rest = listed(&["--starting-token", token]);
    assert_eq!(rest, ids[3..]);
    assert_eq!(
        listed(&[
            "--filters",
            "Name=system-status.status,Values=ok",
            "Name=instance-status.reachability,Values=passed"
        ]),
        ids
    );
    assert_eq!(
        listed(&["--filters", "Name=event.code,Values=system-reboot"]),
        Vec::<String>::new()
    );
    let (_, stderr) = aws(
        &served,
        &[
            "describe-instance-status",
            "--filters",
            &format!("Name=instance-id,Values={}", ids[0]),
        ],
    )
    .unwrap_err();
    assert!(
        stderr.contains("InvalidParameterValue")
            && stderr.contains("The filter 'instance-id' is invalid"),
        "{stderr}"
    );

    // DeleteLaunchTemplateVersions: each version deleted or refused with its own code.
    let deleted = aws(
        &served,
        &[
            "delete-launch-template-versions",
            "--launch-template-id",
            &template_id,
            "--versions",
            "1",
            "3",
            "9",
        ],
    )
    .unwrap();
    let done = deleted["SuccessfullyDeletedLaunchTemplateVersions"]
        .as_array()
        .unwrap();
    assert_eq!(done.len(), 1, "{deleted}");
    assert_eq!(done[0]["VersionNumber"], 3);
    assert_eq!(done[0]["LaunchTemplateName"], "web");
    let refused = deleted["UnsuccessfullyDeletedLaunchTemplateVersions"]
        .as_array()
        .unwrap();
    let codes: Vec<(u64, &str)> = refused
        .iter()
        .map(|r| {
            (
                r["VersionNumber"].as_u64().unwrap(),
                r["ResponseError"]["Code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            (1, "unexpectedError"),
            (9, "launchTemplateVersionDoesNotExist")
        ],
        "{deleted}"
    );
    let versions = aws(
        &served,
        &[
            "describe-launch-template-versions",
            "--launch-template-id",
            &template_id,
        ],
    )
    .unwrap();
    let numbers: Vec<u64> = versions["LaunchTemplateVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["VersionNumber"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2]);
    served.stop("TERM");
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn the_aws_cli_launches_from_a_template_with_a_created_key_and_both_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let state = dir.path().join("state");
    let served = serve_fleet(&config, &state);

    let template = aws(
        &served,
        &[
            "create-launch-template",
            "--launch-template-name",
            "web",
            "--launch-template-data",
            r#"{"ImageId":"ami-0abcdef1234567890","InstanceType":"t3.micro","MetadataOptions":{"HttpTokens":"required","HttpPutResponseHopLimit":2}}"#,
        ],
    )
    .unwrap();
    let template_id = template["LaunchTemplate"]["LaunchTemplateId"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = aws(
        &served,
        &[
            "create-key-pair",
            "--key-name",
            "deploy",
            "--key-type",
            "ed25519",
        ],
    )
    .unwrap();
    assert!(key["KeyMaterial"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    let fingerprint = key["KeyFingerprint"].as_str().unwrap().to_owned();

    let launched = aws(
        &served,
        &[
            "run-instances",
            "--launch-template",
            "LaunchTemplateName=web,Version=$Latest",
            "--count",
            "2",
            "--key-name",
            "deploy",
            "--subnet-id",
            SUBNET,
        ],
    )
    .unwrap();
    let reservation = launched["ReservationId"].as_str().unwrap().to_owned();
    let described = aws(
        &served,
        &[
            "describe-instances",
            "--filters",
            &format!("Name=reservation-id,Values={reservation}"),
        ],
    )
    .unwrap();
    let reservations = described["Reservations"].as_array().unwrap();
    assert_eq!(reservations.len(), 1, "{described}");
    let instances = reservations[0]["Instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    let first = &instances[0];
    assert_eq!(first["InstanceType"], "t3.micro");
    assert_eq!(first["MetadataOptions"]["HttpTokens"], "required");
    assert_eq!(first["KeyName"], "deploy");
    assert_eq!(first["NetworkInterfaces"][0]["SubnetId"], SUBNET);
    assert_eq!(first["CpuOptions"]["ThreadsPerCore"], 2);

    // The guest at the instance's address serves the key pair's public half.
    let address = first["PrivateIpAddress"].as_str().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let pairs = aws(
        &served,
        &[
            "describe-key-pairs",
            "--key-names",
            "deploy",
            "--include-public-key",
        ],
    )
    .unwrap();
    assert_eq!(pairs["KeyPairs"][0]["KeyFingerprint"], fingerprint.as_str());
    let public = pairs["KeyPairs"][0]["PublicKey"].as_str().unwrap();
    let (status, served_key) = get_v2(
        &served,
        address,
        "/latest/meta-data/public-keys/0/openssh-key",
    );
    assert_eq!(status, 200);
    assert_eq!(served_key.trim(), public.trim());

    // Templates and keys are stored: a restart keeps them.
    served.stop("TERM");
    let served = serve_fleet(&config, &state);
    let templates = aws(&served, &["describe-launch-templates"]).unwrap();
    assert_eq!(
        templates["LaunchTemplates"][0]["LaunchTemplateId"],
        template_id.as_str()
    );
    let versions = aws(
        &served,
        &[
            "describe-launch-template-versions",
            "--launch-template-id",
            &template_id,
        ],
    )
    .unwrap();
    assert_eq!(
        versions["LaunchTemplateVersions"][0]["LaunchTemplateData"]["MetadataOptions"]
            ["HttpTokens"],
        "required"
    );
    let (code, stderr) = aws(
        &served,
        &[
            "run-instances",
            "--launch-template",
            "LaunchTemplateName=web,Version=7",
            "--count",
            "1",
        ],
    )
    .unwrap_err();
    assert_eq!(code, 255);
    assert!(
        stderr.contains("InvalidLaunchTemplateId.VersionNotFound"),
        "{stderr}"
    );
    let pairs = aws(&served, &["describe-key-pairs"]).unwrap();
    assert!(pairs["KeyPairs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["KeyName"] == "deploy"));
    served.stop("TERM");
}

/// The path of a Debian tool, or a failure naming the install step.
fn debian_tool(name: &str) -> &'static str {
    let path: &'static str = Box::leak(format!("/usr/bin/{name}").into_boxed_str());
    assert!(
        std::path::Path::new(path).exists(),
        "{path} is missing: run scripts/install-test-deps (it installs Debian's {name})"
    );
    path
}

#[test]
#[ignore = "needs Debian's ansible and the AWS SDK venv: run scripts/test"]
fn ansible_launches_finds_reruns_idempotently_and_terminates_with_amazon_aws() {
    let playbook_runner = debian_tool("ansible-playbook");
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let served = serve_fleet(&config, &dir.path().join("state"));
    let endpoint = &served.control[0];
    let playbook = dir.path().join("fleet.yml");
    std::fs::write(
        &playbook,
        format!(
            r#"- hosts: localhost
  gather_facts: false
  module_defaults:
    group/amazon.aws.aws:
      endpoint_url: "{endpoint}"
      region: us-east-1
      access_key: AKIAIMDSCONTROLTEST1
      secret_key: imds-control-test-secret-key-0123456789ab
  tasks:
    - name: the default VPC's subnets
      amazon.aws.ec2_vpc_subnet_info:
        filters: {{ "vpc-id": "vpc-0c4f6a8e2b1d35792" }}
      register: subnets
    - name: a key pair
      amazon.aws.ec2_key:
        name: ansible-key
        key_type: ed25519
      register: key
    - name: launch
      amazon.aws.ec2_instance:
        name: ansible-web
        image_id: ami-0abcdef1234567890
        instance_type: t3.micro
        key_name: ansible-key
        vpc_subnet_id: {SUBNET}
        wait: false
        metadata_options:
          http_tokens: required
          http_put_response_hop_limit: 2
      register: launched
    - name: launch again (idempotent)
      amazon.aws.ec2_instance:
        name: ansible-web
        image_id: ami-0abcdef1234567890
        instance_type: t3.micro
        key_name: ansible-key
        vpc_subnet_id: {SUBNET}
        wait: false
        metadata_options:
          http_tokens: required
          http_put_response_hop_limit: 2
      register: again
    - name: find it
      amazon.aws.ec2_instance_info:
        filters: {{ "tag:Name": ansible-web, "instance-state-name": [pending, running] }}
      register: found
    - name: terminate
      amazon.aws.ec2_instance:
        state: absent
        filters: {{ "tag:Name": ansible-web }}
        wait: false
      register: terminated
    - name: report
      ansible.builtin.copy:
        dest: "{report}"
        content: "{{{{ {{'subnets': subnets.subnets | length, 'key': key.changed, 'launched': launched.changed, 'again': again.changed, 'found': found.instances | map(attribute='instance_id') | list, 'tokens': found.instances | map(attribute='metadata_options.http_tokens') | list, 'terminated': terminated.changed}} | to_json }}}}"
"#,
            report = dir.path().join("report.json").display(),
        ),
    )
    .unwrap();
    let venv_python = python();
    let output = Command::new(playbook_runner)
        .arg(&playbook)
        .arg("-e")
        .arg(format!(
            "ansible_python_interpreter={}",
            venv_python.display()
        ))
        .env("HOME", dir.path())
        .env("ANSIBLE_LOCALHOST_WARNING", "false")
        .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "false")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert!(report["subnets"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["key"], true, "{report}");
    assert_eq!(report["launched"], true, "{report}");
    assert_eq!(report["again"], false, "a rerun changes nothing: {report}");
    assert_eq!(report["found"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["tokens"][0], "required", "{report}");
    assert_eq!(report["terminated"], true, "{report}");
    served.stop("TERM");
}

#[test]
#[ignore = "needs Debian's prometheus: run scripts/test"]
fn prometheus_discovers_the_fleet_with_subnet_vpc_and_tags() {
    let prometheus = debian_tool("prometheus");
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), "");
    let served = serve_fleet(&config, &dir.path().join("state"));
    let launched = aws(
        &served,
        &[
            "run-instances",
            "--image-id",
            "ami-0abcdef1234567890",
            "--count",
            "2",
            "--subnet-id",
            SUBNET,
            "--tag-specifications",
            "ResourceType=instance,Tags=[{Key=Role,Value=web}]",
        ],
    )
    .unwrap();
    assert_eq!(launched["Instances"].as_array().unwrap().len(), 2);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let web = listener.local_addr().unwrap();
    drop(listener);
    let file = dir.path().join("prometheus.yml");
    std::fs::write(
        &file,
        format!(
            r#"global:
  scrape_interval: 1h
scrape_configs:
  - job_name: fleet
    ec2_sd_configs:
      - endpoint: "{endpoint}"
        region: us-east-1
        access_key: AKIAIMDSCONTROLTEST1
        secret_key: imds-control-test-secret-key-0123456789ab
        refresh_interval: 5s
        port: 9100
"#,
            endpoint = served.control[0]
        ),
    )
    .unwrap();
    let mut child = Command::new(prometheus)
        .arg(format!("--config.file={}", file.display()))
        .arg(format!("--web.listen-address={web}"))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Discovery runs at start, then every 5 seconds; a minute at most.
    let deadline = Instant::now() + Duration::from_secs(60);
    let targets = loop {
        let answer = Command::new("curl")
            .args(["-sf", &format!("http://{web}/api/v1/targets?state=any")])
            .output()
            .unwrap();
        if let Ok(json) = serde_json::from_slice::<Value>(&answer.stdout) {
            let active = json["data"]["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let web: Vec<Value> = active
                .into_iter()
                .filter(|t| t["discoveredLabels"]["__meta_ec2_tag_Role"] == "web")
                .collect();
            if web.len() == 2 {
                break web;
            }
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never discovered the fleet"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = child.kill();
    let _ = child.wait();
    for target in &targets {
        let labels = &target["discoveredLabels"];
        assert_eq!(
            labels["__meta_ec2_subnet_id"],
            format!(",{SUBNET},"),
            "{labels}"
        );
        assert_eq!(
            labels["__meta_ec2_vpc_id"], "vpc-0c4f6a8e2b1d35792",
            "{labels}"
        );
        assert_eq!(
            labels["__meta_ec2_availability_zone"], "us-east-1a",
            "{labels}"
        );
        assert!(
            labels["__meta_ec2_primary_subnet_id"] == SUBNET
                || labels["__meta_ec2_primary_subnet_id"].is_null()
        );
        assert!(
            labels["__address__"]
                .as_str()
                .unwrap()
                .starts_with("127.16."),
            "{labels}"
        );
    }
    served.stop("TERM");
}

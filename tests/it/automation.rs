//! The EC2 API as automation drives it, with the real tools against a running fleet: the AWS
//! CLI (launch templates, created key pairs, one reservation per launch, a restart keeping
//! both), every `DescribeInstances` answer walked against botocore's model, Debian's Ansible
//! (`amazon.aws`) and Debian's Prometheus (`ec2_sd_configs`). Ignored by a plain `cargo test`;
//! `scripts/test` runs them (`scripts/install-test-deps` installs the tools).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::conformance::python;
use crate::control::aws;
use crate::fleet::{fleet_config, get_v2, serve_fleet, SUBNET};

/// What of botocore's `Instance` shape imds leaves out, and why: features imds does not
/// model (Elastic GPUs and inference accelerators, Outposts, licenses, capacity blocks and
/// reservations, spot requests, placement details of dedicated hosts, secondary interfaces,
/// SR-IOV, kernels and ramdisks of paravirtual images, Windows), or values EC2 leaves out for
/// an instance like imds' (no public address, no IPv6, not stopped, no instance profile given).
const NEVER_FILLED: &[&str] = &[
    "ElasticGpuAssociations",
    "ElasticInferenceAcceleratorAssociations",
    "OutpostArn",
    "Licenses",
    "CapacityBlockId",
    "CapacityReservationId",
    "SpotInstanceRequestId",
    "SriovNetSupport",
    "KernelId",
    "RamdiskId",
    "Platform",
    "TpmSupport",
    "SecondaryInterfaces",
    "InstanceLifecycle",
    "PublicIpAddress",
    "Ipv6Address",
    "StateReason",
    "IamInstanceProfile",
];

/// The members of botocore's `Instance` shape that `instance` (as the AWS CLI printed it)
/// lacks, besides [`NEVER_FILLED`].
fn unfilled(instance: &Value) -> Vec<String> {
    let script = r#"
import json, sys
import botocore.session
model = botocore.session.get_session().get_service_model("ec2")
shape = model.shape_for("Instance")
instance = json.load(sys.stdin)
print(json.dumps([name for name in shape.members if name not in instance]))
"#;
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(instance.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let missing: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
    missing
        .into_iter()
        .filter(|name| !NEVER_FILLED.contains(&name.as_str()))
        .collect()
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
    assert_eq!(unfilled(first), Vec::<String>::new(), "{first}");

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

//! CloudWatch's view of IMDSv1 callers: after token-less requests from instances' own
//! addresses, the unmodified AWS CLI (`aws cloudwatch ...`) and boto3's cloudwatch client read
//! `MetadataNoToken` and `MetadataNoTokenRejected` from the control listener, per instance and
//! per minute, signed with the control keys.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::conformance::python;
use crate::fleet::{fleet_config, get, get_v2, SUBNET};
use crate::process::{Served, IMDS};

const FIRST: &str = "i-0aaaaaaaaaaaaaaa1";
const SECOND: &str = "i-0aaaaaaaaaaaaaaa2";
const KEY_ID: &str = "AKIAIMDSCONTROLTEST1";
const SECRET: &str = "imds-control-test-secret-key-0123456789ab";

/// A second configured instance at 127.16.0.11, and control keys; with `tokens`, both
/// instances' `http_tokens`.
fn extra(tokens: &str) -> String {
    let options = format!("[instances.metadata_options]\nhttp_tokens = \"{tokens}\"\n");
    format!(
        r#"{options}
[[instances]]
instance_id = "{SECOND}"
[[instances.network_interfaces]]
mac = "0e:8c:1f:6b:2d:36"
interface_id = "eni-0d9a1b7c3e5f24682"
subnet_id = "{SUBNET}"
subnet_ipv4_cidr_block = "127.16.0.0/16"
vpc_id = "vpc-0c4f6a8e2b1d35792"
vpc_ipv4_cidr_blocks = ["127.0.0.0/8"]
private_ipv4s = ["127.16.0.11"]
security_groups = [{{ name = "default", id = "sg-0e1f2a3b4c5d6e7f8" }}]
{options}
[control]
access_key_id = "{KEY_ID}"
secret_access_key = "{SECRET}"
"#
    )
}

/// A fleet of the two instances, with `http_tokens` set to `tokens`.
fn serve(dir: &std::path::Path, tokens: &str) -> Served {
    let config = fleet_config(dir, &extra(tokens));
    let mut command = Command::new(IMDS);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config);
    Served::spawn(command)
}

/// `aws SERVICE ARGS` against the control API signed with `secret`: its JSON, or its stderr.
fn aws_with(served: &Served, secret: &str, service: &str, args: &[&str]) -> Result<Value, String> {
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(python().with_file_name("aws"))
        .arg(service)
        .args(args)
        .args(["--endpoint-url", &served.control[0]])
        .args(["--region", "us-east-1", "--output", "json"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap();
    match output.status.success() {
        true if output.stdout.is_empty() => Ok(Value::Null),
        true => Ok(serde_json::from_slice(&output.stdout).unwrap()),
        false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
    }
}

fn cloudwatch(served: &Served, args: &[&str]) -> Value {
    aws_with(served, SECRET, "cloudwatch", args).unwrap()
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Waits out the last two seconds of a minute, so a request is counted in the minute it is
/// sent (a real-time wait: the counts are imds' own wall clock, as CloudWatch's are; two seconds
/// at most, and only when a request would straddle a minute).
fn clear_of_minute_end() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into_minute = (now.as_millis() % 60_000) as u64;
    if into_minute >= 58_000 {
        std::thread::sleep(Duration::from_millis(60_000 - into_minute + 100));
    }
}

/// Token-less requests sent, by instance, then minute start (epoch seconds).
#[derive(Default)]
struct Sent(BTreeMap<&'static str, BTreeMap<u64, f64>>);

impl Sent {
    /// A token-less GET from `source` as `instance`, expecting `status`, counted in the
    /// minute it is sent (never in the last two seconds of one, so that imds counts it there
    /// too).
    fn v1(&mut self, served: &Served, instance: &'static str, source: &str, status: u16) {
        clear_of_minute_end();
        let minute = now_seconds() / 60 * 60;
        let (got, _) = get(served, source, "/latest/meta-data/instance-id");
        assert_eq!(got, status, "a token-less GET from {source}");
        *self
            .0
            .entry(instance)
            .or_default()
            .entry(minute)
            .or_default() += 1.0;
    }

    fn of(&self, instance: &str) -> BTreeMap<u64, f64> {
        self.0.get(instance).cloned().unwrap_or_default()
    }
}

/// `get-metric-statistics` of `metric` for `instance` over the last 30 minutes in periods of
/// `period` seconds: each datapoint's `statistic` by timestamp.
fn statistics(
    served: &Served,
    metric: &str,
    instance: &str,
    statistic: &str,
    period: u64,
) -> BTreeMap<u64, f64> {
    let end = now_seconds() + 60;
    let start = end - 30 * 60;
    let answer = cloudwatch(
        served,
        &[
            "get-metric-statistics",
            "--namespace",
            "AWS/EC2",
            "--metric-name",
            metric,
            "--dimensions",
            &format!("Name=InstanceId,Value={instance}"),
            "--statistics",
            statistic,
            "--period",
            &period.to_string(),
            "--start-time",
            &start.to_string(),
            "--end-time",
            &end.to_string(),
        ],
    );
    assert_eq!(answer["Label"], metric, "{answer}");
    answer["Datapoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|point| {
            assert_eq!(point["Unit"], "Count", "{point}");
            (
                point["Timestamp"].as_u64().unwrap(),
                point[statistic].as_f64().unwrap(),
            )
        })
        .collect()
}

/// boto3's `get_metric_data` one-minute sums of `metric` for `instances`, as
/// `(default order, ascending order)` by instance, each a list of `(timestamp, sum)`.
fn boto3_sums(served: &Served, metric: &str, instances: &[&str]) -> Value {
    let end = now_seconds() + 60;
    let script = crate::conformance::repo().join("tests/conformance/python/boto3_cloudwatch.py");
    let output = Command::new(python())
        .arg(script)
        .args([
            &served.control[0],
            &(end - 30 * 60).to_string(),
            &end.to_string(),
            metric,
        ])
        .args(instances)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "boto3_cloudwatch.py: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap()
}

fn series(points: &Value) -> Vec<(u64, f64)> {
    points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
        .collect()
}

/// Checks that boto3 reads `sent` for each instance, newest first by default.
fn boto3_reads(served: &Served, metric: &str, sent: &Sent, instances: &[&str]) {
    let seen = boto3_sums(served, metric, instances);
    for instance in instances {
        let expected: Vec<(u64, f64)> = sent.of(instance).into_iter().collect();
        let mut descending = expected.clone();
        descending.reverse();
        assert_eq!(series(&seen["ascending"][instance]), expected, "{seen}");
        assert_eq!(series(&seen["default"][instance]), descending, "{seen}");
        assert_eq!(seen["status"][instance], "Complete");
    }
}

/// The (metric, instance) pairs `list-metrics` lists for `args`.
fn listed(served: &Served, args: &[&str]) -> Vec<(String, String)> {
    let mut args = args.to_vec();
    args.insert(0, "list-metrics");
    let answer = cloudwatch(served, &args);
    answer["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["Namespace"], "AWS/EC2");
            let dimensions = m["Dimensions"].as_array().unwrap();
            assert_eq!(dimensions.len(), 1, "{m}");
            assert_eq!(dimensions[0]["Name"], "InstanceId");
            (
                m["MetricName"].as_str().unwrap().to_owned(),
                dimensions[0]["Value"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pair(metric: &str, instance: &str) -> (String, String) {
    (metric.to_owned(), instance.to_owned())
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn the_aws_cli_and_boto3_read_each_instances_imdsv1_requests_minute_by_minute() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), "optional");
    let mut sent = Sent::default();
    for _ in 0..3 {
        sent.v1(&served, FIRST, "127.16.0.10", 200);
    }
    for _ in 0..5 {
        sent.v1(&served, SECOND, "127.16.0.11", 200);
    }
    // IMDSv2 requests are not counted.
    assert_eq!(
        get_v2(&served, "127.16.0.10", "/latest/meta-data/instance-id").0,
        200
    );
    // Minutes rolling over are the history's unit tests' business (on an injected clock): here
    // every request is matched to the minute it was sent in, whichever those are.
    for _ in 0..2 {
        sent.v1(&served, FIRST, "127.16.0.10", 200);
    }

    for instance in [FIRST, SECOND] {
        assert_eq!(
            statistics(&served, "MetadataNoToken", instance, "Sum", 60),
            sent.of(instance),
            "{instance}"
        );
        let ones: BTreeMap<u64, f64> = sent.of(instance).keys().map(|m| (*m, 1.0)).collect();
        assert_eq!(
            statistics(&served, "MetadataNoToken", instance, "SampleCount", 60),
            ones
        );
        assert!(statistics(&served, "MetadataNoTokenRejected", instance, "Sum", 60).is_empty());
    }
    // Over a 30-minute period: one datapoint, its Maximum the busiest minute's count.
    let maximum = statistics(&served, "MetadataNoToken", FIRST, "Maximum", 1800);
    let busiest = sent.of(FIRST).values().cloned().fold(0.0, f64::max);
    assert_eq!(maximum.values().cloned().collect::<Vec<_>>(), vec![busiest]);
    let total = statistics(&served, "MetadataNoToken", FIRST, "Sum", 1800);
    assert_eq!(total.values().sum::<f64>(), 5.0);

    boto3_reads(&served, "MetadataNoToken", &sent, &[FIRST, SECOND]);

    assert_eq!(
        listed(&served, &["--namespace", "AWS/EC2"]),
        vec![
            pair("MetadataNoToken", FIRST),
            pair("MetadataNoToken", SECOND)
        ]
    );
    assert_eq!(
        listed(
            &served,
            &["--dimensions", &format!("Name=InstanceId,Value={SECOND}")]
        ),
        vec![pair("MetadataNoToken", SECOND)]
    );
    assert!(listed(&served, &["--namespace", "AWS/Lambda"]).is_empty());

    // Errors come back as CloudWatch's, with their codes.
    let refused = aws_with(
        &served,
        SECRET,
        "cloudwatch",
        &[
            "get-metric-statistics",
            "--namespace",
            "AWS/EC2",
            "--metric-name",
            "MetadataNoToken",
            "--statistics",
            "Sum",
            "--period",
            "90",
            "--start-time",
            "2026-01-01T00:00:00Z",
            "--end-time",
            "2026-01-01T01:00:00Z",
        ],
    )
    .unwrap_err();
    assert!(refused.contains("(InvalidParameterValue)"), "{refused}");
    let unsigned =
        aws_with(&served, "not-the-secret", "cloudwatch", &["list-metrics"]).unwrap_err();
    assert!(unsigned.contains("(SignatureDoesNotMatch)"), "{unsigned}");
    // EC2's Query API on the same listener still answers.
    let described = aws_with(&served, SECRET, "ec2", &["describe-instances"]).unwrap();
    let instances: usize = described["Reservations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Instances"].as_array().unwrap().len())
        .sum();
    assert_eq!(instances, 2, "{described}");
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn token_less_requests_refused_under_http_tokens_required_are_read_as_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), "required");
    let mut rejected = Sent::default();
    for _ in 0..4 {
        rejected.v1(&served, FIRST, "127.16.0.10", 401);
    }
    rejected.v1(&served, SECOND, "127.16.0.11", 401);
    assert_eq!(
        get_v2(&served, "127.16.0.10", "/latest/meta-data/instance-id").0,
        200
    );

    for instance in [FIRST, SECOND] {
        assert_eq!(
            statistics(&served, "MetadataNoTokenRejected", instance, "Sum", 60),
            rejected.of(instance)
        );
        assert!(statistics(&served, "MetadataNoToken", instance, "Sum", 60).is_empty());
    }
    boto3_reads(
        &served,
        "MetadataNoTokenRejected",
        &rejected,
        &[FIRST, SECOND],
    );

    // Once the first instance answers IMDSv1 again, its callers count as answered.
    aws_with(
        &served,
        SECRET,
        "ec2",
        &[
            "modify-instance-metadata-options",
            "--instance-id",
            FIRST,
            "--http-tokens",
            "optional",
        ],
    )
    .unwrap();
    let mut answered = Sent::default();
    answered.v1(&served, FIRST, "127.16.0.10", 200);
    assert_eq!(
        statistics(&served, "MetadataNoToken", FIRST, "Sum", 60),
        answered.of(FIRST)
    );
    assert_eq!(
        listed(&served, &["--namespace", "AWS/EC2"]),
        vec![
            pair("MetadataNoToken", FIRST),
            pair("MetadataNoTokenRejected", FIRST),
            pair("MetadataNoTokenRejected", SECOND),
        ]
    );
    assert_eq!(
        listed(&served, &["--metric-name", "MetadataNoTokenRejected"]).len(),
        2
    );
}

#[test]
#[ignore = "needs the AWS CLI: run scripts/test"]
fn the_history_survives_a_restart_with_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), &extra("optional"));
    let state = dir.path().join("state");
    let start = || {
        let mut command = Command::new(IMDS);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--state-dir")
            .arg(&state);
        Served::spawn(command)
    };
    let served = start();
    let mut sent = Sent::default();
    for _ in 0..3 {
        sent.v1(&served, FIRST, "127.16.0.10", 200);
    }
    sent.v1(&served, SECOND, "127.16.0.11", 200);
    // SIGTERM writes the last minutes' counts before the process ends.
    let (status, _) = served.stop("TERM");
    assert!(status.success());
    let restarted = start();
    for instance in [FIRST, SECOND] {
        assert_eq!(
            statistics(&restarted, "MetadataNoToken", instance, "Sum", 60),
            sent.of(instance),
            "{instance} after a restart"
        );
    }
}

//! The signed seeds of the control request corpus are generated here, and checked to be
//! what the files hold and to pass verification. After changing one, write the files anew
//! with `IMDS_WRITE_CONTROL_SEEDS=1 cargo test --lib fuzzing`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

const INSTANCE: &str = INSTANCE_ID;
const EVENT: &str = "instance-event-0123456789abcdef0";
const FAULT: &str = "fault-0000c0de";
const USER_AGENT: &str = "aws-cli/2.22.0 Python/3.12.6 Linux/6.1.0 exe/x86_64 prompt/off";

/// How a seed request is signed.
#[derive(Clone, Copy)]
enum Signing {
    /// With the control keys, at the clock's time, as the AWS CLI does.
    Cli,
    /// The same, also signing `X-Amz-Content-SHA256`.
    ContentSha256,
    /// With another secret.
    WrongSecret,
    /// An hour before the clock's time.
    Skewed,
    /// Signed, then another body sent.
    Tampered,
    /// Not at all.
    Unsigned,
}

/// A seed request: method, target, form parameters (body for POST, query for GET).
struct Call {
    method: &'static str,
    path: &'static str,
    params: Vec<(String, String)>,
    signing: Signing,
}

fn post(params: &[(&str, &str)]) -> Call {
    Call {
        method: "POST",
        path: "/",
        params: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        signing: Signing::Cli,
    }
}

fn get(params: &[(&str, &str)]) -> Call {
    Call {
        method: "GET",
        ..post(params)
    }
}

impl Call {
    fn to(mut self, method: &'static str, path: &'static str) -> Call {
        self.method = method;
        self.path = path;
        self
    }

    fn signed(mut self, signing: Signing) -> Call {
        self.signing = signing;
        self
    }

    fn param(mut self, name: &str, value: String) -> Call {
        self.params.push((name.to_owned(), value));
        self
    }

    fn form(&self) -> String {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (name, value) in &self.params {
            form.append_pair(name, value);
            if name == "Action" {
                form.append_pair("Version", "2016-11-15");
            }
        }
        form.finish()
    }

    /// The request in the fuzz target's text form.
    fn render(&self) -> Vec<u8> {
        let form = self.form();
        let path = self.path;
        let (target, body) = match self.method {
            "GET" if form.is_empty() => (path.to_owned(), String::new()),
            "GET" => (format!("{path}?{form}"), String::new()),
            _ => (path.to_owned(), form),
        };
        let mut request = Request::builder()
            .method(self.method)
            .uri(&target)
            .header("host", "127.0.0.1:1339");
        if self.method != "GET" {
            request = request.header(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            );
        }
        let mut request = request.header("user-agent", USER_AGENT).body(()).unwrap();
        let now = UNIX_EPOCH + Duration::from_millis(CONTROL_NOW_MILLIS);
        let keys = &ControlFixture::get().keys;
        let (secret, time) = match self.signing {
            Signing::WrongSecret => ("not-the-control-secret", now),
            Signing::Skewed => (&*keys.secret_access_key, now - Duration::from_secs(3600)),
            _ => (&*keys.secret_access_key, now),
        };
        if !matches!(self.signing, Signing::Unsigned) {
            sign(&mut request, body.as_bytes(), secret, time, self.signing);
        }
        let body = match self.signing {
            Signing::Tampered => body.replace("Version=2016-11-15", "Version=2016-11-16"),
            _ => body,
        };
        let mut out = format!("{} {target} HTTP/1.1\n", self.method);
        for (name, value) in request.headers() {
            out.push_str(&format!("{name}: {}\n", value.to_str().unwrap()));
        }
        if self.method != "GET" {
            out.push_str(&format!("content-length: {}\n", body.len()));
        }
        out.push('\n');
        out.push_str(&body);
        out.into_bytes()
    }
}

fn sign(request: &mut Request<()>, body: &[u8], secret: &str, time: SystemTime, signing: Signing) {
    let key_id = &ControlFixture::get().keys.access_key_id;
    let claim_hash = matches!(signing, Signing::ContentSha256);
    sign_ec2(request, body, (key_id, secret), time, claim_hash);
}

/// Signs `request` with `body` for EC2 in us-east-1 as botocore does, with `(key id, secret)`
/// at `time`; with `claim_hash`, also sending and signing `X-Amz-Content-SHA256`.
pub(crate) fn sign_ec2(
    request: &mut Request<()>,
    body: &[u8],
    (key_id, secret): (&str, &str),
    time: SystemTime,
    claim_hash: bool,
) {
    use aws_sigv4::http_request::{
        PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
    };
    let identity =
        aws_credential_types::Credentials::new(key_id, secret, None, None, "imds").into();
    let mut settings = SigningSettings::default();
    if claim_hash {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("ec2")
        .time(time)
        .settings(settings)
        .build()
        .expect("complete signing parameters")
        .into();
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str(), value.to_str().unwrap_or_default()));
    let signable = SignableRequest::new(
        request.method().as_str(),
        request.uri().to_string(),
        headers,
        SignableBody::Bytes(body),
    )
    .expect("a signable request");
    let (instructions, _) = aws_sigv4::http_request::sign(signable, &params)
        .expect("signing succeeds")
        .into_parts();
    instructions.apply_to_request_http1x(request);
}

/// The association id imds derives for the configured role.
fn association() -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{INSTANCE}/imds-default-role"));
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("iip-assoc-{}", &hex[..17])
}

/// Each generated seed: its file name, its requests, and what the API with keys answers each.
fn seeds() -> Vec<(&'static str, Vec<Call>, Vec<u16>)> {
    let i = INSTANCE;
    let a = association();
    let a = a.as_str();
    let unsigned = Signing::Unsigned;
    vec![
        (
            "describe-instances",
            vec![post(&[("Action", "DescribeInstances")])],
            vec![200],
        ),
        (
            "describe-instances-filters",
            vec![post(&[
                ("Action", "DescribeInstances"),
                ("InstanceId.1", i),
                ("Filter.1.Name", "instance-state-name"),
                ("Filter.1.Value.1", "running"),
                ("Filter.2.Name", "tag:Name"),
                ("Filter.2.Value.1", "imds-default"),
                ("Filter.3.Name", "metadata-options.http-tokens"),
                ("Filter.3.Value.1", "optional"),
                ("Filter.3.Value.2", "required"),
                ("Filter.4.Name", "availability-zone"),
                ("Filter.4.Value.1", "us-east-1a"),
                ("Filter.5.Name", "tag-key"),
                ("Filter.5.Value.1", "Environment"),
                ("Filter.6.Name", "metadata-options.http-endpoint"),
                ("Filter.6.Value.1", "enabled"),
                ("Filter.7.Name", "instance-id"),
                ("Filter.7.Value.1", i),
            ])],
            vec![200],
        ),
        (
            "describe-instances-get",
            vec![get(&[("Action", "DescribeInstances"), ("InstanceId.1", i)])],
            vec![200],
        ),
        (
            "describe-instances-content-sha256",
            vec![post(&[("Action", "DescribeInstances")]).signed(Signing::ContentSha256)],
            vec![200],
        ),
        (
            "modify-instance-metadata-options",
            vec![post(&[
                ("Action", "ModifyInstanceMetadataOptions"),
                ("InstanceId", i),
                ("HttpTokens", "required"),
                ("HttpPutResponseHopLimit", "2"),
                ("HttpEndpoint", "enabled"),
                ("HttpProtocolIpv6", "enabled"),
                ("InstanceMetadataTags", "enabled"),
            ])],
            vec![200],
        ),
        (
            "modify-instance-metadata-options-dry-run",
            vec![post(&[
                ("Action", "ModifyInstanceMetadataOptions"),
                ("InstanceId", i),
                ("HttpTokens", "required"),
                ("DryRun", "true"),
            ])],
            vec![412],
        ),
        (
            "create-tags",
            vec![post(&[
                ("Action", "CreateTags"),
                ("ResourceId.1", i),
                ("Tag.1.Key", "Name"),
                ("Tag.1.Value", "web-1"),
                ("Tag.2.Key", "Team"),
                ("Tag.2.Value", ""),
            ])],
            vec![200],
        ),
        (
            "create-tags-then-describe",
            vec![
                post(&[
                    ("Action", "CreateTags"),
                    ("ResourceId.1", i),
                    ("Tag.1.Key", "Team"),
                    ("Tag.1.Value", "platform"),
                ]),
                post(&[
                    ("Action", "DescribeInstances"),
                    ("Filter.1.Name", "tag:Team"),
                    ("Filter.1.Value.1", "platform"),
                ]),
                post(&[
                    ("Action", "ModifyInstanceMetadataOptions"),
                    ("InstanceId", i),
                    ("InstanceMetadataTags", "enabled"),
                ]),
            ],
            vec![200, 200, 200],
        ),
        (
            "create-tags-limit",
            vec![
                (1..=48).fold(
                    post(&[("Action", "CreateTags"), ("ResourceId.1", i)]),
                    |call, n| call.param(&format!("Tag.{n}.Key"), format!("k{n}")),
                ),
                post(&[
                    ("Action", "CreateTags"),
                    ("ResourceId.1", i),
                    ("Tag.1.Key", "k1"),
                ]),
                post(&[
                    ("Action", "CreateTags"),
                    ("ResourceId.1", i),
                    ("Tag.1.Key", "k49"),
                ]),
            ],
            vec![200, 200, 400],
        ),
        (
            "delete-tags",
            vec![post(&[
                ("Action", "DeleteTags"),
                ("ResourceId.1", i),
                ("Tag.1.Key", "Environment"),
                ("Tag.2.Key", "Name"),
                ("Tag.2.Value", "imds-default"),
            ])],
            vec![200],
        ),
        (
            "describe-tags",
            vec![post(&[
                ("Action", "DescribeTags"),
                ("Filter.1.Name", "resource-id"),
                ("Filter.1.Value.1", i),
                ("Filter.2.Name", "key"),
                ("Filter.2.Value.1", "Name"),
                ("Filter.3.Name", "resource-type"),
                ("Filter.3.Value.1", "instance"),
                ("Filter.4.Name", "value"),
                ("Filter.4.Value.1", "imds-default"),
            ])],
            vec![200],
        ),
        (
            "associate-iam-instance-profile",
            vec![
                post(&[
                    ("Action", "DisassociateIamInstanceProfile"),
                    ("AssociationId", a),
                ]),
                post(&[
                    ("Action", "AssociateIamInstanceProfile"),
                    ("InstanceId", i),
                    ("IamInstanceProfile.Name", "web-role"),
                ]),
                post(&[("Action", "DescribeIamInstanceProfileAssociations")]),
            ],
            vec![200, 200, 200],
        ),
        (
            "replace-iam-instance-profile-association",
            vec![post(&[
                ("Action", "ReplaceIamInstanceProfileAssociation"),
                ("AssociationId", a),
                (
                    "IamInstanceProfile.Arn",
                    "arn:aws:iam::123456789012:instance-profile/team/web-role",
                ),
            ])],
            vec![200],
        ),
        (
            "disassociate-iam-instance-profile",
            vec![post(&[
                ("Action", "DisassociateIamInstanceProfile"),
                ("AssociationId", a),
            ])],
            vec![200],
        ),
        (
            "describe-iam-instance-profile-associations",
            vec![post(&[
                ("Action", "DescribeIamInstanceProfileAssociations"),
                ("AssociationId.1", a),
                ("Filter.1.Name", "instance-id"),
                ("Filter.1.Value.1", i),
                ("Filter.2.Name", "state"),
                ("Filter.2.Value.1", "associated"),
            ])],
            vec![200],
        ),
        (
            "get-instance-metadata-defaults",
            vec![post(&[("Action", "GetInstanceMetadataDefaults")])],
            vec![200],
        ),
        (
            "modify-instance-metadata-defaults",
            vec![
                post(&[
                    ("Action", "ModifyInstanceMetadataDefaults"),
                    ("HttpTokens", "required"),
                    ("HttpPutResponseHopLimit", "2"),
                    ("HttpEndpoint", "enabled"),
                    ("InstanceMetadataTags", "no-preference"),
                    ("HttpTokensEnforced", "enabled"),
                ]),
                post(&[
                    ("Action", "ModifyInstanceMetadataOptions"),
                    ("InstanceId", i),
                    ("HttpTokens", "optional"),
                ]),
                post(&[("Action", "GetInstanceMetadataDefaults")]),
            ],
            vec![200, 400, 200],
        ),
        (
            "describe-instance-status",
            vec![post(&[
                ("Action", "DescribeInstanceStatus"),
                ("InstanceId.1", i),
                ("IncludeAllInstances", "true"),
                ("Filter.1.Name", "event.code"),
                ("Filter.1.Value.1", "system-reboot"),
                ("Filter.2.Name", "event.instance-event-id"),
                ("Filter.2.Value.1", EVENT),
                ("Filter.3.Name", "instance-state-name"),
                ("Filter.3.Value.1", "running"),
                ("Filter.4.Name", "availability-zone"),
                ("Filter.4.Value.1", "us-east-1a"),
                ("Filter.5.Name", "system-status.status"),
                ("Filter.5.Value.1", "ok"),
            ])],
            vec![200],
        ),
        (
            "describe-instance-status-paged",
            vec![
                post(&[
                    ("Action", "DescribeInstanceStatus"),
                    ("MaxResults", "5"),
                    ("Filter.1.Name", "instance-status.reachability"),
                    ("Filter.1.Value.1", "passed"),
                ]),
                post(&[
                    ("Action", "DescribeInstanceStatus"),
                    ("MaxResults", "5"),
                    ("InstanceId.1", i),
                ]),
            ],
            vec![200, 400],
        ),
        (
            "launch-template-versions",
            vec![
                post(&[
                    ("Action", "CreateLaunchTemplate"),
                    ("LaunchTemplateName", "web"),
                    ("LaunchTemplateData.ImageId", "ami-0abcdef1234567890"),
                    ("LaunchTemplateData.MetadataOptions.HttpTokens", "required"),
                ]),
                post(&[
                    ("Action", "CreateLaunchTemplateVersion"),
                    ("LaunchTemplateName", "web"),
                    ("SourceVersion", "1"),
                    ("LaunchTemplateData.InstanceType", "t3.micro"),
                ]),
                post(&[
                    ("Action", "DeleteLaunchTemplateVersions"),
                    ("LaunchTemplateName", "web"),
                    ("LaunchTemplateVersion.1", "1"),
                    ("LaunchTemplateVersion.2", "2"),
                    ("LaunchTemplateVersion.3", "9"),
                ]),
                post(&[
                    ("Action", "DescribeLaunchTemplateVersions"),
                    ("LaunchTemplateName", "web"),
                ]),
            ],
            vec![200, 200, 200, 200],
        ),
        (
            "modify-instance-event-start-time",
            vec![post(&[
                ("Action", "ModifyInstanceEventStartTime"),
                ("InstanceId", i),
                ("InstanceEventId", EVENT),
                ("NotBefore", "2027-01-15T12:00:00Z"),
            ])],
            vec![200],
        ),
        (
            "send-spot-instance-interruptions",
            vec![
                post(&[
                    ("Action", "SendSpotInstanceInterruptions"),
                    ("InstanceId", i),
                    ("DurationBeforeInterruption", "PT5M"),
                    ("InstanceInterruptionBehavior", "stop"),
                    ("RebalanceRecommendation", "true"),
                ]),
                post(&[
                    ("Action", "DescribeInstanceStatus"),
                    ("IncludeAllInstances", "true"),
                ]),
            ],
            vec![200, 200],
        ),
        (
            "schedule-instance-event",
            vec![post(&[
                ("Action", "ScheduleInstanceEvent"),
                ("InstanceId", i),
                ("Code", "instance-reboot"),
                ("NotBefore", "+1h"),
                ("NotAfter", "2027-01-15T11:00:00Z"),
                ("NotBeforeDeadline", "+2d"),
                ("Description", "kernel <update> & reboot"),
            ])],
            vec![200],
        ),
        (
            "complete-instance-event",
            vec![post(&[
                ("Action", "CompleteInstanceEvent"),
                ("InstanceId", i),
                ("InstanceEventId", EVENT),
            ])],
            vec![200],
        ),
        (
            "cancel-instance-event",
            vec![post(&[
                ("Action", "CancelInstanceEvent"),
                ("InstanceId", i),
                ("InstanceEventId", EVENT),
            ])],
            vec![200],
        ),
        (
            "set-target-lifecycle-state",
            vec![post(&[
                ("Action", "SetTargetLifecycleState"),
                ("InstanceId", i),
                ("State", "Warmed:Stopped"),
                ("At", "+10m"),
            ])],
            vec![200],
        ),
        (
            "clear-instance-events",
            vec![post(&[
                ("Action", "ClearInstanceEvents"),
                ("InstanceId", i),
            ])],
            vec![200],
        ),
        (
            "inject-fault",
            vec![post(&[
                ("Action", "InjectFault"),
                ("FaultId", "fault-0000beef"),
                ("Path", "/latest/meta-data/iam/*"),
                ("Method", "get"),
                ("Latency", "250ms"),
                ("Status", "503"),
                ("Count", "3"),
                ("Probability", "0.5"),
            ])],
            vec![200],
        ),
        (
            "inject-faults-then-describe",
            vec![
                post(&[("Action", "InjectFault"), ("RateLimit", "10")]),
                post(&[
                    ("Action", "InjectFault"),
                    ("Path", "/latest/api/token"),
                    ("Method", "PUT"),
                    ("Reset", "true"),
                ]),
                post(&[
                    ("Action", "InjectFault"),
                    ("NoAnswer", "true"),
                    ("Reset", "false"),
                ]),
                post(&[("Action", "DescribeFaults")]),
            ],
            vec![200, 200, 200, 200],
        ),
        (
            "describe-faults",
            vec![post(&[("Action", "DescribeFaults")])],
            vec![200],
        ),
        (
            "clear-faults",
            vec![post(&[("Action", "ClearFaults"), ("FaultId.1", FAULT)])],
            vec![200],
        ),
        (
            "health-and-metrics",
            vec![
                get(&[]).to("GET", "/healthz"),
                get(&[]).to("GET", "/metrics"),
                post(&[("Action", "DescribeInstances")]),
                get(&[]).to("GET", "/metrics"),
            ],
            vec![200, 200, 200, 200],
        ),
        (
            "put-method",
            vec![post(&[("Action", "DescribeInstances")]).to("PUT", "/")],
            vec![400],
        ),
        (
            "unknown-action",
            vec![post(&[("Action", "RunInstances")])],
            vec![400],
        ),
        ("no-action", vec![post(&[("InstanceId", i)])], vec![400]),
        (
            "unsigned",
            vec![post(&[("Action", "DescribeInstances")]).signed(unsigned)],
            vec![401],
        ),
        (
            "wrong-secret",
            vec![post(&[("Action", "DescribeInstances")]).signed(Signing::WrongSecret)],
            vec![401],
        ),
        (
            "skewed",
            vec![post(&[("Action", "DescribeInstances")]).signed(Signing::Skewed)],
            vec![401],
        ),
        (
            "tampered-body",
            vec![post(&[
                ("Action", "CreateTags"),
                ("ResourceId.1", i),
                ("Tag.1.Key", "A"),
            ])
            .signed(Signing::Tampered)],
            vec![401],
        ),
        (
            "huge-tag-value",
            vec![post(&[
                ("Action", "CreateTags"),
                ("ResourceId.1", i),
                ("Tag.1.Key", "Big"),
            ])
            .param("Tag.1.Value", "v".repeat(4000))],
            vec![400],
        ),
        (
            "huge-tag-key",
            vec![post(&[("Action", "CreateTags"), ("ResourceId.1", i)])
                .param("Tag.1.Key", "\u{00e9}".repeat(129))],
            vec![400],
        ),
        (
            "huge-numbers",
            vec![
                post(&[
                    ("Action", "ModifyInstanceMetadataOptions"),
                    ("InstanceId", i),
                    ("HttpPutResponseHopLimit", "184467440737095516160"),
                ]),
                post(&[
                    ("Action", "InjectFault"),
                    ("Latency", "18446744073709551615s"),
                    ("Status", "70000"),
                    ("Count", "99999999999999999999"),
                ]),
                post(&[
                    ("Action", "SendSpotInstanceInterruptions"),
                    ("InstanceId", i),
                    ("DurationBeforeInterruption", "PT18446744073709551615H"),
                ]),
                post(&[
                    ("Action", "ScheduleInstanceEvent"),
                    ("InstanceId", i),
                    ("Code", "system-maintenance"),
                    ("NotBefore", "+18446744073709551615s"),
                    ("NotAfter", "+500000000years"),
                ]),
                post(&[
                    ("Action", "InjectFault"),
                    ("Status", "500"),
                    ("Probability", "1e400"),
                ]),
                post(&[
                    ("Action", "SetTargetLifecycleState"),
                    ("InstanceId", i),
                    ("State", "InService"),
                    ("At", "9999-12-31T23:59:59Z"),
                ]),
            ],
            vec![400, 400, 400, 400, 400, 200],
        ),
        (
            "many-ids",
            vec![
                (1..=300).fold(post(&[("Action", "DescribeInstances")]), |call, n| {
                    call.param(&format!("InstanceId.{n}"), INSTANCE.to_owned())
                }),
            ],
            vec![200],
        ),
    ]
}

fn seed_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus/control_request")
        .join(name)
}

fn seed_bytes(calls: &[Call]) -> Vec<u8> {
    calls
        .iter()
        .map(Call::render)
        .collect::<Vec<_>>()
        .join(&b'\0')
}

#[test]
fn control_seeds_are_current_signed_and_served() {
    let write = std::env::var_os("IMDS_WRITE_CONTROL_SEEDS").is_some();
    for (name, calls, expected) in seeds() {
        let bytes = seed_bytes(&calls);
        let path = seed_path(name);
        if write {
            std::fs::write(&path, &bytes).unwrap();
        }
        let kept = std::fs::read(&path).unwrap_or_default();
        assert!(
            kept == bytes,
            "{name} differs: IMDS_WRITE_CONTROL_SEEDS=1 cargo test --lib fuzzing"
        );
        let exchanges = control_exchanges(&bytes);
        let signed: Vec<u16> = exchanges.iter().map(|e| e.signed.0.as_u16()).collect();
        assert_eq!(signed, expected, "{name}: {exchanges:?}");
        for exchange in &exchanges {
            assert_ne!(exchange.open.0, StatusCode::UNAUTHORIZED, "{name}");
        }
        control_request(&bytes);
    }
}

#[test]
fn a_signed_describe_instances_is_verified_and_answered() {
    let bytes = std::fs::read(seed_path("describe-instances")).unwrap();
    let exchanges = control_exchanges(&bytes);
    assert_eq!(exchanges.len(), 1);
    let (status, body) = &exchanges[0].signed;
    assert_eq!(*status, StatusCode::OK);
    let text = std::str::from_utf8(body).unwrap();
    assert!(
        text.contains(&format!("<instanceId>{INSTANCE}</instanceId>")),
        "{text}"
    );
}

#[test]
fn the_text_form_carries_method_target_headers_and_body() {
    let request = control_request_from(
        b"GET /?Action=X HTTP/1.1\r\nHost: a\r\nX-Amz-Date:  1 \nX-Amz-Date: 2\nbad line\n\x01: no\n\nbody\n\nmore",
    )
    .unwrap();
    assert_eq!(request.method(), Method::GET);
    assert_eq!(request.uri().query(), Some("Action=X"));
    assert_eq!(request.headers()["host"], "a");
    let dates: Vec<_> = request.headers().get_all("x-amz-date").iter().collect();
    assert_eq!(dates, ["1", "2"]);
    assert_eq!(request.headers().len(), 3);
    let runtime = &ControlFixture::get().runtime;
    let body = runtime.block_on(request.into_body().collect()).unwrap();
    assert_eq!(body.to_bytes(), "body\n\nmore");
    assert!(control_request_from(b"G\x01T /").is_none());
    assert!(control_request_from(b"GET /a b/").is_some());
    assert!(control_request_from(b"GET \x7f").is_none());
    let bare = control_request_from(b"POST").unwrap();
    assert_eq!(bare.uri(), "/");
}

#[test]
fn each_input_starts_from_the_configured_instance() {
    let tag = seed_bytes(&[post(&[
        ("Action", "CreateTags"),
        ("ResourceId.1", INSTANCE),
        ("Tag.1.Key", "Left"),
    ])]);
    let describe = seed_bytes(&[post(&[
        ("Action", "DescribeTags"),
        ("Filter.1.Name", "key"),
        ("Filter.1.Value.1", "Left"),
    ])]);
    assert_eq!(control_exchanges(&tag)[0].signed.0, StatusCode::OK);
    let after = &control_exchanges(&describe)[0].open.1;
    assert!(!std::str::from_utf8(after).unwrap().contains("Left"));
}

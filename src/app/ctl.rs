//! `imds ctl`: a small client of the control API for users without the AWS CLI. Each command is
//! one or two EC2 Query requests (the same the AWS CLI sends), SigV4-signed when keys are given,
//! and prints a short summary; EC2 errors are printed as `CODE: message`. Per-instance commands
//! name their instance with `--instance-id` (a fleet), or change the one instance imds serves.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::app::cli::{CtlArgs, CtlCommand};

mod events;
mod faults;
mod fleet;

/// Why a `imds ctl` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The control API could not be reached.
    #[error("cannot reach the control API at {endpoint}: {reason} (is `imds serve` running? see --endpoint)")]
    Unreachable {
        /// Where it was looked for.
        endpoint: String,
        /// Why not.
        reason: String,
    },
    /// The control API refused the request.
    #[error("{code}: {message}")]
    Refused {
        /// EC2's error code.
        code: String,
        /// Its message.
        message: String,
    },
    /// An argument is malformed.
    #[error("{0}")]
    Usage(String),
}

/// Runs one `imds ctl` command and prints its result.
pub fn run(args: &CtlArgs) -> Result<(), CtlError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::Unreachable {
            endpoint: args.endpoint.clone(),
            reason: e.to_string(),
        })?;
    let output = runtime.block_on(command(args))?;
    print!("{output}");
    Ok(())
}

async fn command(args: &CtlArgs) -> Result<String, CtlError> {
    let client = Client {
        endpoint: args.endpoint.clone(),
        keys: args
            .access_key_id
            .clone()
            .zip(args.secret_access_key.clone()),
        region: std::sync::Mutex::new(signing_region()),
    };
    let instance = || fleet::target(&client, args.instance_id.as_deref());
    match &args.command {
        CtlCommand::Describe => {
            let id = instance().await?;
            Ok(summary(
                &client
                    .call(&[
                        ("Action", "DescribeInstances"),
                        ("InstanceId.1", id.as_str()),
                    ])
                    .await?,
            ))
        }
        CtlCommand::Options {
            http_tokens,
            http_endpoint,
            hop_limit,
            http_protocol_ipv6,
            instance_metadata_tags,
        } => {
            let id = instance().await?;
            let mut params = vec![
                ("Action", "ModifyInstanceMetadataOptions".to_owned()),
                ("InstanceId", id),
            ];
            let optional = [
                ("HttpTokens", http_tokens.clone()),
                ("HttpEndpoint", http_endpoint.clone()),
                ("HttpPutResponseHopLimit", hop_limit.map(|h| h.to_string())),
                ("HttpProtocolIpv6", http_protocol_ipv6.clone()),
                ("InstanceMetadataTags", instance_metadata_tags.clone()),
            ];
            params.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
            let xml = client.call(&params).await?;
            Ok(options_line(&xml))
        }
        CtlCommand::Tag { tags } => {
            let pairs = fleet::key_values(tags)?;
            let id = instance().await?;
            let mut params = vec![
                ("Action".to_owned(), "CreateTags".to_owned()),
                ("ResourceId.1".to_owned(), id),
            ];
            for (n, (key, value)) in pairs.into_iter().enumerate() {
                params.push((format!("Tag.{}.Key", n + 1), key));
                params.push((format!("Tag.{}.Value", n + 1), value));
            }
            client.call(&params).await?;
            Ok(format!("tagged {}\n", tags.join(" ")))
        }
        CtlCommand::Untag { keys } => {
            let id = instance().await?;
            let mut params = vec![
                ("Action".to_owned(), "DeleteTags".to_owned()),
                ("ResourceId.1".to_owned(), id),
            ];
            for (n, key) in keys.iter().enumerate() {
                params.push((format!("Tag.{}.Key", n + 1), key.clone()));
            }
            client.call(&params).await?;
            Ok(format!("removed {}\n", keys.join(" ")))
        }
        CtlCommand::Role { name, none } => {
            let id = instance().await?;
            let listed = client
                .call(&[
                    ("Action", "DescribeIamInstanceProfileAssociations"),
                    ("Filter.1.Name", "instance-id"),
                    ("Filter.1.Value.1", id.as_str()),
                ])
                .await?;
            let association = element(&listed, "associationId").map(str::to_owned);
            let xml = match (name, association, none) {
                (_, Some(association), true) => {
                    client
                        .call(&[
                            ("Action", "DisassociateIamInstanceProfile".to_owned()),
                            ("AssociationId", association),
                        ])
                        .await?;
                    return Ok("the instance has no role now\n".into());
                }
                (_, None, true) => return Ok("the instance has no role\n".into()),
                (Some(name), Some(association), false) => {
                    client
                        .call(&[
                            ("Action", "ReplaceIamInstanceProfileAssociation".to_owned()),
                            ("AssociationId", association),
                            ("IamInstanceProfile.Name", name.clone()),
                        ])
                        .await?
                }
                (Some(name), None, false) => {
                    client
                        .call(&[
                            ("Action", "AssociateIamInstanceProfile".to_owned()),
                            ("InstanceId", id),
                            ("IamInstanceProfile.Name", name.clone()),
                        ])
                        .await?
                }
                (None, _, false) => {
                    return Err(CtlError::Usage("give a role name, or --none".into()))
                }
            };
            Ok(format!(
                "role {} ({})\n",
                name.as_deref().unwrap_or_default(),
                element(&xml, "associationId").unwrap_or_default()
            ))
        }
        CtlCommand::SpotInterrupt {
            action,
            notice_in,
            no_rebalance,
        } => {
            events::spot_interrupt(&client, instance().await?, action, notice_in, *no_rebalance)
                .await
        }
        CtlCommand::Event { command } => events::event(&client, instance().await?, command).await,
        CtlCommand::Asg { state, at } => {
            events::lifecycle(&client, instance().await?, state, at.as_deref()).await
        }
        CtlCommand::Fault { command } => faults::fault(&client, instance().await?, command).await,
        CtlCommand::Run {
            count,
            image_id,
            instance_type,
            subnet_id,
            private_ip,
            tags,
            http_tokens,
            hop_limit,
            role,
            user_data,
            key_name,
        } => {
            let launch = fleet::Launch {
                count: *count,
                image_id: image_id.as_deref(),
                instance_type: instance_type.as_deref(),
                subnet_id: subnet_id.as_deref(),
                private_ip: private_ip.as_deref(),
                tags,
                http_tokens: http_tokens.as_deref(),
                hop_limit: *hop_limit,
                role: role.as_deref(),
                user_data: user_data.as_deref(),
                key_name: key_name.as_deref(),
            };
            fleet::run(&client, &launch).await
        }
        CtlCommand::List => fleet::list(&client).await,
        CtlCommand::RotateKeys { signing_key } => {
            let mut params = vec![("Action", "RotateKeys")];
            if *signing_key {
                params.push(("SigningKey", "true"));
            }
            let xml = client.call(&params).await?;
            let generation = element(&xml, "tokenKeyGeneration").unwrap_or("?");
            let accepted = xml
                .split_once("<acceptedTokenKeyGenerationSet>")
                .and_then(|(_, rest)| rest.split_once("</acceptedTokenKeyGenerationSet>"))
                .map_or("", |(set, _)| set);
            let accepted: Vec<&str> = accepted
                .split("<item>")
                .filter_map(|item| item.split_once("</item>").map(|(n, _)| n))
                .collect();
            let mut said = format!(
                "token key generation {generation} seals new tokens; accepted: {}\n",
                accepted.join(", ")
            );
            if let Some(signing) = element(&xml, "signingKeyGeneration") {
                said.push_str(&format!(
                    "signing key generation {signing} signs identity documents (imds cert --all prints every certificate)\n"
                ));
            }
            Ok(said)
        }
        CtlCommand::Terminate { ids } => fleet::lifecycle(&client, "TerminateInstances", ids).await,
        CtlCommand::Stop { ids } => fleet::lifecycle(&client, "StopInstances", ids).await,
        CtlCommand::Start { ids } => fleet::lifecycle(&client, "StartInstances", ids).await,
        CtlCommand::Defaults {
            http_tokens,
            http_tokens_enforced,
        } => {
            let mut params = vec![("Action", "ModifyInstanceMetadataDefaults".to_owned())];
            params.extend(http_tokens.clone().map(|v| ("HttpTokens", v)));
            params.extend(
                http_tokens_enforced
                    .clone()
                    .map(|v| ("HttpTokensEnforced", v)),
            );
            if params.len() > 1 {
                client.call(&params).await?;
            }
            let xml = client
                .call(&[("Action", "GetInstanceMetadataDefaults")])
                .await?;
            Ok(format!(
                "defaults: HttpTokens={} HttpTokensEnforced={}\n",
                element(&xml, "httpTokens").unwrap_or("no-preference"),
                element(&xml, "httpTokensEnforced").unwrap_or("no-preference")
            ))
        }
    }
}

/// A client of one control endpoint.
struct Client {
    endpoint: String,
    /// Access key id and secret to sign with, when the control API requires signatures.
    keys: Option<(String, String)>,
    /// The region signatures are scoped to: AWS_REGION or AWS_DEFAULT_REGION, else
    /// us-east-1, until the server names the one it serves.
    region: std::sync::Mutex<String>,
}

/// The region a client signs for before it knows the server's.
fn signing_region() -> String {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "us-east-1".into())
}

impl Client {
    /// POSTs `params` (plus `Version`) and returns the XML of a success, or the EC2 error. A
    /// signature scoped to a region the server does not serve is made again for the region it
    /// names, once.
    async fn call(
        &self,
        params: &[(impl AsRef<str>, impl AsRef<str>)],
    ) -> Result<String, CtlError> {
        match self.call_once(params).await {
            Err(CtlError::Refused { code, message })
                if code == "SignatureDoesNotMatch" && self.keys.is_some() =>
            {
                let served = message
                    .split_once("This endpoint serves ")
                    .and_then(|(_, rest)| rest.strip_suffix('.'))
                    .map(str::to_owned);
                match served {
                    Some(region) => {
                        *self.region.lock().unwrap_or_else(|e| e.into_inner()) = region;
                        self.call_once(params).await
                    }
                    None => Err(CtlError::Refused { code, message }),
                }
            }
            other => other,
        }
    }

    async fn call_once(
        &self,
        params: &[(impl AsRef<str>, impl AsRef<str>)],
    ) -> Result<String, CtlError> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.extend_pairs(params.iter().map(|(k, v)| (k.as_ref(), v.as_ref())));
        form.append_pair("Version", "2016-11-15");
        let body = Bytes::from(form.finish());
        let unreachable = |reason: String| CtlError::Unreachable {
            endpoint: self.endpoint.clone(),
            reason,
        };
        let authority = self
            .endpoint
            .strip_prefix("http://")
            .ok_or_else(|| {
                CtlError::Usage(format!(
                    "--endpoint {} must start with http://",
                    self.endpoint
                ))
            })?
            .trim_end_matches('/')
            .to_owned();
        let exchange = async {
            let stream = TcpStream::connect(&authority)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
            tokio::spawn(connection);
            let mut request = Request::post("/")
                .header(header::HOST, &authority)
                .header(
                    header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded; charset=utf-8",
                )
                .body(Full::new(body.clone()))
                .map_err(|e| CtlError::Usage(e.to_string()))?;
            if let Some((key_id, secret)) = &self.keys {
                let region = self
                    .region
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                sign(&mut request, &body, key_id, secret, &region)?;
            }
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, CtlError>((status, String::from_utf8_lossy(&bytes).into_owned()))
        };
        let (status, xml) = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| unreachable("no answer within 10 s".into()))??;
        if status.is_success() {
            return Ok(xml);
        }
        Err(CtlError::Refused {
            code: element(&xml, "Code").unwrap_or("HTTP error").to_owned(),
            message: element(&xml, "Message").map_or_else(|| status.to_string(), unescape),
        })
    }
}

/// Signs `request` with SigV4 for EC2 in `region`, as the AWS CLI does.
fn sign(
    request: &mut Request<Full<Bytes>>,
    body: &[u8],
    key_id: &str,
    secret: &str,
    region: &str,
) -> Result<(), CtlError> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
    let failed = |e: &dyn std::fmt::Display| CtlError::Usage(format!("cannot sign: {e}"));
    let identity =
        aws_credential_types::Credentials::new(key_id, secret, None, None, "imds-ctl").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("ec2")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| failed(&e))?
        .into();
    let headers = request
        .headers()
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
    let signable = SignableRequest::new(
        request.method().as_str(),
        request.uri().to_string(),
        headers,
        SignableBody::Bytes(body),
    )
    .map_err(|e| failed(&e))?;
    let (instructions, _) = aws_sigv4::http_request::sign(signable, &params)
        .map_err(|e| failed(&e))?
        .into_parts();
    instructions.apply_to_request_http1x(request);
    Ok(())
}

/// The text of the first `<name>` element (the answers are imds' own, flat and known).
fn element<'x>(xml: &'x str, name: &str) -> Option<&'x str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find("</")? + start;
    Some(&xml[start..end])
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// `DescribeInstances` in a few lines.
fn summary(xml: &str) -> String {
    let field = |name| element(xml, name).map_or_else(|| "-".to_owned(), unescape);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "instance {} ({}, {}) {}",
        field("instanceId"),
        field("instanceType"),
        field("availabilityZone"),
        field("privateIpAddress")
    );
    let _ = writeln!(out, "role profile {}", field("arn"));
    let tags: Vec<String> = xml
        .split("<tagSet>")
        .nth(1)
        .and_then(|rest| rest.split("</tagSet>").next())
        .map(|set| {
            set.split("<item>")
                .skip(1)
                .map(|item| {
                    format!(
                        "{}={}",
                        element(item, "key").map(unescape).unwrap_or_default(),
                        element(item, "value").map(unescape).unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(out, "tags {}", tags.join(" "));
    out.push_str(&options_line(xml));
    out
}

/// The metadata options of an answer, on one line.
fn options_line(xml: &str) -> String {
    // The `<metadataOptions>` or `<instanceMetadataOptions>` element (other `<state>`s precede it).
    let xml = xml
        .split_once("etadataOptions>")
        .map_or(xml, |(_, rest)| rest);
    let field = |name| element(xml, name).unwrap_or("-");
    format!(
        "metadata options ({}): HttpTokens={} HttpEndpoint={} HttpPutResponseHopLimit={} HttpProtocolIpv6={} InstanceMetadataTags={}\n",
        field("state"),
        field("httpTokens"),
        field("httpEndpoint"),
        field("httpPutResponseHopLimit"),
        field("httpProtocolIpv6"),
        field("instanceMetadataTags")
    )
}

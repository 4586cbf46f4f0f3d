//! An IMDS for a Rust test in one line (cargo feature `testing`): the real guest and control
//! servers of this crate, in this process, on ephemeral ports of 127.0.0.1, stopped when the
//! handle is dropped.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::io::{Read, Write};
//!
//! let imds = imds::testing::Imds::start().await;
//! // What the AWS SDKs read from AWS_EC2_METADATA_SERVICE_ENDPOINT.
//! let endpoint = imds.endpoint();
//! assert!(endpoint.starts_with("http://127.0.0.1:"));
//!
//! let addr = endpoint.trim_start_matches("http://").to_owned();
//! let answer = tokio::task::spawn_blocking(move || {
//!     let mut stream = std::net::TcpStream::connect(&addr).unwrap();
//!     write!(stream, "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
//!     let mut answer = String::new();
//!     stream.read_to_string(&mut answer).unwrap(); // IMDS closes every connection
//!     answer
//! })
//! .await
//! .unwrap();
//! assert!(answer.starts_with("HTTP/1.1 200 OK"));
//! assert!(answer.ends_with(imds.instance_id()));
//! # }
//! ```
//!
//! Each server is started from the built-in default instance (`imds print-config`) with what
//! the [`Builder`] says laid over it; changes while it runs go through its control API
//! ([`Imds::set_options`], [`Imds::spot_interrupt`], [`Imds::add_fault`], ...), exactly as
//! `aws ec2 ... --endpoint-url` would make them.

pub mod soak;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;

use crate::clock::{Clock, SystemClock};
use crate::control::ControlApi;
use crate::fleet::identity::IdentitySigner;
use crate::fleet::keys::Keys;
use crate::fleet::secret::ServerSecret;
use crate::server::{Accepting, Server};
use crate::{App, Config, Overrides};

pub use crate::fleet::events::SpotAction;
pub use crate::fleet::options::{HopLimit, HttpTokens, Switch};

/// What went wrong starting an [`Imds`] or changing it through its control API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The control API refused the change, with EC2's error code (`InvalidParameterValue`, ...)
    /// and message.
    #[error("{code}: {message}")]
    Ec2 {
        /// EC2's error code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The configuration given to the [`Builder`] is not valid.
    #[error(transparent)]
    Config(#[from] crate::app::config::ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(#[from] std::io::Error),
}

/// The handle on a running IMDS; dropping it stops both servers and frees their ports (the
/// listeners close as soon as the runtime next runs their tasks).
#[derive(Debug)]
pub struct Imds {
    endpoint: SocketAddr,
    control_endpoint: SocketAddr,
    instance_id: String,
    control: Arc<ControlApi>,
    // Dropping these closes the listeners; dropping the servers tells their connections to stop.
    _accepting: [Accepting; 2],
    _guest: Server<crate::GuestApi>,
    _control: Server<ControlApi>,
}

/// How to start an [`Imds`]: [`Imds::builder`], then [`Builder::start`].
#[derive(Debug, Default)]
#[must_use]
pub struct Builder {
    toml: String,
    http_tokens: Option<HttpTokens>,
    user_data: Option<String>,
    tags: Vec<(String, String)>,
    role: Option<Option<String>>,
    fleet: bool,
    clock: Option<Arc<dyn Clock>>,
}

/// The one instance `fleet(true)` starts with: the built-in instance, on 127.0.0.1 so that
/// local callers are answered as it, in a loopback subnet `RunInstances` takes addresses from.
pub(crate) const FLEET_TOML: &str = r#"
[server]
fleet = true

[[instances]]
[[instances.network_interfaces]]
mac = "0e:8c:1f:6b:2d:35"
interface_id = "eni-0d9a1b7c3e5f24680"
subnet_id = "subnet-0a3e5c7b9d1f24681"
subnet_ipv4_cidr_block = "127.0.0.0/8"
vpc_id = "vpc-0c4f6a8e2b1d35792"
vpc_ipv4_cidr_blocks = ["127.0.0.0/8"]
private_ipv4s = ["127.0.0.1"]
security_groups = [{ name = "default", id = "sg-0e1f2a3b4c5d6e7f8" }]
"#;

impl Builder {
    /// `HttpTokens`: [`HttpTokens::Required`] answers IMDSv2 (token) requests only.
    pub fn http_tokens(mut self, tokens: HttpTokens) -> Self {
        self.http_tokens = Some(tokens);
        self
    }

    /// IMDSv2 only: `http_tokens(HttpTokens::Required)`.
    pub fn required(self) -> Self {
        self.http_tokens(HttpTokens::Required)
    }

    /// The instance's user data (`""`: none, 404).
    pub fn user_data(mut self, text: &str) -> Self {
        self.user_data = Some(text.to_owned());
        self
    }

    /// Adds a tag to the instance (served under `tags/instance/` when
    /// `instance_metadata_tags` is enabled).
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.tags.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The instance profile's role (and profile) name.
    pub fn role(mut self, name: &str) -> Self {
        self.role = Some(Some(name.to_owned()));
        self
    }

    /// An instance without an instance profile (no `iam/` and no credentials).
    pub fn no_role(mut self) -> Self {
        self.role = Some(None);
        self
    }

    /// Fleet mode: callers are answered as the instance that owns their address (127.0.0.1 is
    /// the first instance's), and [`Imds::run_instance`] launches more.
    pub fn fleet(mut self, fleet: bool) -> Self {
        self.fleet = fleet;
        self
    }

    /// Configuration text (TOML, as `imds serve --config` reads) laid over the built-in default
    /// before the other settings of this builder; listen addresses in it are ignored.
    pub fn config_toml(mut self, toml: &str) -> Self {
        self.toml = toml.to_owned();
        self
    }

    /// Reads time from `clock` instead of the system's (e.g. a
    /// [`ManualClock`](crate::clock::ManualClock) to move events and credentials forward).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Starts the guest and control servers on ephemeral ports of 127.0.0.1.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), imds::testing::Error> {
    /// let imds = imds::testing::Imds::builder()
    ///     .required()
    ///     .user_data("#cloud-config\n")
    ///     .tag("Name", "web")
    ///     .role("web-role")
    ///     .start()
    ///     .await?;
    /// assert_ne!(imds.endpoint(), imds.control_endpoint());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(self) -> Result<Imds, Error> {
        let source = Path::new("imds-testing.toml");
        let mut config = match self.fleet {
            true => Config::from_text(source, &format!("{FLEET_TOML}\n{}", self.toml))?,
            false => Config::from_text(source, &self.toml)?,
        };
        for instance in std::iter::once(&mut config.instance).chain(&mut config.instances) {
            if let Some(tokens) = self.http_tokens {
                instance.metadata_options.http_tokens = tokens;
            }
            if let Some(text) = &self.user_data {
                instance.user_data = text.clone();
            }
            for (key, value) in &self.tags {
                instance.tags.insert(key.clone(), value.clone());
            }
            if let Some(role) = &self.role {
                instance.iam.role = role.clone();
                instance.iam.instance_profile_id = None;
            }
        }
        let overrides = Overrides {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            control_listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            ..Overrides::default()
        };
        let loaded = config.resolve(&overrides, Some(source))?;
        let instance_id = match loaded.server.fleet {
            true => loaded.instances.first().map(|i| i.id().to_owned()),
            false => Some(loaded.instance.id().to_owned()),
        }
        .unwrap_or_default();
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let app = App::new(loaded, &keys(), clock, Default::default(), None)
            .expect("a configuration without launched instances has one owner per address");
        // As `imds serve` does: role credentials from STS are fetched before serving.
        app.snapshots.first_sts_fetch(Duration::from_secs(15)).await;
        let guest_listener = TcpListener::bind("127.0.0.1:0").await?;
        let control_listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = guest_listener.local_addr()?;
        let control_endpoint = control_listener.local_addr()?;
        let guest = Server::new(app.api.clone(), app.settings, app.hosts.clone());
        let control = Server::new(app.control.clone(), app.control_settings, app.hosts);
        Ok(Imds {
            endpoint,
            control_endpoint,
            instance_id,
            control: app.control,
            _accepting: [
                guest.accept_on(guest_listener),
                control.accept_on(control_listener),
            ],
            _guest: guest,
            _control: control,
        })
    }
}

/// Fresh keys sharing one identity signer per process (an RSA key takes a while to generate).
fn keys() -> Keys {
    static SIGNER: OnceLock<Arc<IdentitySigner>> = OnceLock::new();
    let signer = SIGNER
        .get_or_init(|| Arc::new(IdentitySigner::generate().expect("an RSA key can be generated")));
    Keys {
        secret: ServerSecret::random(),
        signer: signer.clone(),
        token_generations: Vec::new(),
    }
}

/// Metadata options to change with [`Imds::set_options`]; `None` leaves one as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// `HttpTokens`.
    pub http_tokens: Option<HttpTokens>,
    /// `HttpEndpoint`: whether the guest API answers at all.
    pub http_endpoint: Option<Switch>,
    /// `HttpPutResponseHopLimit` (1 to 64).
    pub hop_limit: Option<HopLimit>,
    /// `InstanceMetadataTags`: whether `tags/instance/` is served.
    pub instance_metadata_tags: Option<Switch>,
}

/// A fault for [`Imds::add_fault`]: which guest requests it matches and what they get instead.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fault {
    /// The path pattern (`*` matches any run of characters); default `*`.
    pub path: Option<String>,
    /// Only requests with this method (`GET`, `PUT`).
    pub method: Option<String>,
    /// Answer with this status (and no body) instead.
    pub status: Option<u16>,
    /// Wait this long before answering.
    pub latency: Option<Duration>,
    /// Answer 429 beyond this many requests a second.
    pub rate_limit: Option<u32>,
    /// Reset the connection instead of answering.
    pub reset: bool,
    /// Never answer.
    pub no_answer: bool,
    /// Fire this many times, then never again.
    pub count: Option<u64>,
    /// Fire with this probability (0 to 1).
    pub probability: Option<f64>,
}

impl Fault {
    /// `status` instead of the answer for requests whose path matches `path`.
    pub fn status(path: &str, status: u16) -> Fault {
        Fault {
            path: Some(path.to_owned()),
            status: Some(status),
            ..Fault::default()
        }
    }

    /// Fires `count` times only.
    pub fn times(mut self, count: u64) -> Fault {
        self.count = Some(count);
        self
    }
}

impl Imds {
    /// Serves the built-in default instance (IMDSv1 and v2, a role with generated credentials,
    /// region us-east-1); see [`Builder::start`].
    ///
    /// # Panics
    ///
    /// If 127.0.0.1 has no free port; [`Builder::start`] returns that as an error.
    pub async fn start() -> Imds {
        Imds::builder()
            .start()
            .await
            .expect("the built-in configuration serves on 127.0.0.1")
    }

    /// A [`Builder`] to start an instance that differs from the built-in default.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The guest API, `http://127.0.0.1:PORT`: what `AWS_EC2_METADATA_SERVICE_ENDPOINT` takes.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.endpoint)
    }

    /// The guest API's address.
    pub fn addr(&self) -> SocketAddr {
        self.endpoint
    }

    /// The control API, `http://127.0.0.1:PORT`: what `aws ec2 --endpoint-url` takes.
    pub fn control_endpoint(&self) -> String {
        format!("http://{}", self.control_endpoint)
    }

    /// The instance served (in fleet mode, the first one, which 127.0.0.1 is answered as).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Sends the EC2 Query action `action` with `params` to the control API in-process, on the
    /// instance served unless `params` names another: the XML answer, or EC2's error.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let imds = imds::testing::Imds::start().await;
    /// let xml = imds.control("DescribeInstances", &[]).await.unwrap();
    /// assert!(xml.contains(imds.instance_id()));
    /// let error = imds.control("NoSuchAction", &[]).await.unwrap_err();
    /// assert!(matches!(error, imds::testing::Error::Ec2 { code, .. } if code == "InvalidAction"));
    /// # }
    /// ```
    pub async fn control(&self, action: &str, params: &[(&str, &str)]) -> Result<String, Error> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", action)
            .extend_pairs(params)
            .append_pair("Version", "2016-11-15")
            .finish();
        let request = Request::builder()
            .method(Method::POST)
            .uri("/")
            .header(header::HOST, self.control_endpoint.to_string())
            .header(
                header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        let response = self.control.handle(request).await;
        let status = response.status();
        let body = match response.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(never) => match never {},
        };
        let xml = String::from_utf8_lossy(&body).into_owned();
        match status.is_success() {
            true => Ok(xml),
            false => Err(Error::Ec2 {
                code: element(&xml, "Code").unwrap_or(status.as_str()).to_owned(),
                message: unescape(element(&xml, "Message").unwrap_or_default()),
            }),
        }
    }

    /// Changes the instance's metadata options (`ModifyInstanceMetadataOptions`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use imds::testing::{HttpTokens, Imds, Options};
    ///
    /// let imds = Imds::start().await;
    /// imds.set_options(Options { http_tokens: Some(HttpTokens::Required), ..Options::default() })
    ///     .await
    ///     .unwrap();
    /// let status = get_status(imds.addr()).await;
    /// assert_eq!(status, 401, "a token-less GET once tokens are required");
    /// # }
    /// # async fn get_status(addr: std::net::SocketAddr) -> u16 {
    /// #     use http_body_util::Empty;
    /// #     let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    /// #     let (mut sender, connection) =
    /// #         hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    /// #     tokio::spawn(connection);
    /// #     let request = http::Request::get("/latest/meta-data/")
    /// #         .header("host", addr.to_string())
    /// #         .body(Empty::<bytes::Bytes>::new())
    /// #         .unwrap();
    /// #     sender.send_request(request).await.unwrap().status().as_u16()
    /// # }
    /// ```
    pub async fn set_options(&self, options: Options) -> Result<(), Error> {
        let switch = |s: Switch| match s {
            Switch::Enabled => "enabled",
            Switch::Disabled => "disabled",
        };
        let tokens = options.http_tokens.map(|t| match t {
            HttpTokens::Optional => "optional",
            HttpTokens::Required => "required",
        });
        let hops = options.hop_limit.map(|h| h.get().to_string());
        let mut params = vec![("InstanceId", self.instance_id.as_str())];
        params.extend(tokens.map(|t| ("HttpTokens", t)));
        params.extend(options.http_endpoint.map(|s| ("HttpEndpoint", switch(s))));
        params.extend(hops.as_deref().map(|h| ("HttpPutResponseHopLimit", h)));
        params.extend(
            options
                .instance_metadata_tags
                .map(|s| ("InstanceMetadataTags", switch(s))),
        );
        self.control("ModifyInstanceMetadataOptions", &params)
            .await
            .map(drop)
    }

    /// Announces a spot interruption (`SendSpotInstanceInterruptions`): the rebalance
    /// recommendation now, `spot/instance-action` (with `action`) two minutes before the
    /// interruption, which comes `within` from now (2 to 15 minutes, as FIS allows).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use imds::testing::{Imds, SpotAction};
    ///
    /// let imds = Imds::start().await;
    /// imds.spot_interrupt(SpotAction::Stop, Duration::from_secs(120)).await.unwrap();
    /// // Too soon for FIS: EC2's error comes back.
    /// let error = imds.spot_interrupt(SpotAction::Stop, Duration::from_secs(10)).await.unwrap_err();
    /// assert!(error.to_string().starts_with("InvalidParameterValue"));
    /// # }
    /// ```
    pub async fn spot_interrupt(&self, action: SpotAction, within: Duration) -> Result<(), Error> {
        let duration = format!("PT{}S", within.as_secs());
        self.control(
            "SendSpotInstanceInterruptions",
            &[
                ("InstanceId", self.instance_id.as_str()),
                ("InstanceInterruptionBehavior", action.as_str()),
                ("DurationBeforeInterruption", &duration),
            ],
        )
        .await
        .map(drop)
    }

    /// Injects `fault` into the guest API (`InjectFault`): its id.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use imds::testing::{Fault, Imds};
    ///
    /// let imds = Imds::start().await;
    /// let id = imds.add_fault(Fault::status("/latest/meta-data/*", 503).times(1)).await.unwrap();
    /// assert!(id.starts_with("fault-"));
    /// imds.clear_faults().await.unwrap();
    /// # }
    /// ```
    pub async fn add_fault(&self, fault: Fault) -> Result<String, Error> {
        let owned = [
            ("Path", fault.path),
            ("Method", fault.method),
            ("Status", fault.status.map(|s| s.to_string())),
            (
                "Latency",
                fault.latency.map(|l| format!("{}ms", l.as_millis())),
            ),
            ("RateLimit", fault.rate_limit.map(|r| r.to_string())),
            ("Reset", fault.reset.then(|| "true".to_owned())),
            ("NoAnswer", fault.no_answer.then(|| "true".to_owned())),
            ("Count", fault.count.map(|c| c.to_string())),
            ("Probability", fault.probability.map(|p| p.to_string())),
        ];
        let mut params = vec![("InstanceId", self.instance_id.clone())];
        params.extend(owned.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let xml = self.control("InjectFault", &params).await?;
        Ok(element(&xml, "faultId").unwrap_or_default().to_owned())
    }

    /// Removes every fault (`ClearFaults`).
    pub async fn clear_faults(&self) -> Result<(), Error> {
        self.control("ClearFaults", &[("InstanceId", self.instance_id.as_str())])
            .await
            .map(drop)
    }

    /// Sets a tag of the instance (`CreateTags`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let imds = imds::testing::Imds::start().await;
    /// imds.tag("Name", "web").await.unwrap();
    /// # }
    /// ```
    pub async fn tag(&self, key: &str, value: &str) -> Result<(), Error> {
        self.control(
            "CreateTags",
            &[
                ("ResourceId.1", self.instance_id.as_str()),
                ("Tag.1.Key", key),
                ("Tag.1.Value", value),
            ],
        )
        .await
        .map(drop)
    }

    /// Launches one instance (`RunInstances` with `ImageId` and `params`, e.g.
    /// `("InstanceType", "m5.large")`; fleet mode only): its id.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let imds = imds::testing::Imds::builder().fleet(true).start().await.unwrap();
    /// let id = imds.run_instance(&[("InstanceType", "m5.large")]).await.unwrap();
    /// assert!(id.starts_with("i-") && id != imds.instance_id());
    /// # }
    /// ```
    pub async fn run_instance(&self, params: &[(&str, &str)]) -> Result<String, Error> {
        let mut all = vec![
            ("ImageId", "ami-0f3c9c466bb525749"),
            ("MinCount", "1"),
            ("MaxCount", "1"),
        ];
        all.retain(|(name, _)| !params.iter().any(|(given, _)| given == name));
        all.extend_from_slice(params);
        let xml = self.control("RunInstances", &all).await?;
        let set = element(&xml, "instancesSet").unwrap_or_default();
        Ok(element(set, "instanceId").unwrap_or_default().to_owned())
    }
}

/// The text of the first `<name>` element of `xml`.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))?;
    Some(&xml[start..start + end])
}

/// XML text with its five entities decoded.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

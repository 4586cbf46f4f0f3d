//! `TestImds`: a real imds on 127.0.0.1:0 (or [::1]:0) in this process, and a plain HTTP/1.1
//! client that sends paths exactly as given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use imds::app::config::{Config, Loaded, Overrides};
use imds::clock::{Clock, ManualClock, SystemClock};
use imds::control::{ControlApi, Persisted};
use imds::fleet::identity::IdentitySigner;
use imds::fleet::keys::Keys;
use imds::fleet::secret::ServerSecret;
use imds::store::{Location, Store};
use imds::App;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A response as a client sees it.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    /// Header names, sorted.
    pub fn header_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.headers.keys().map(|k| k.as_str().to_owned()).collect();
        names.sort();
        names
    }
}

/// What a process starting on the store at `location` finds there.
pub async fn persisted_in(location: &Location) -> Persisted {
    let store = Arc::new(Store::open(location).await.unwrap());
    let everything = store.load_since(-1).await.unwrap();
    Persisted::from_store(Some(store), everything).unwrap()
}

/// A new in-process host on the fleet file `config` and the store at `location`.
pub async fn open_host(config: &Path, location: &Location, clock: Arc<ManualClock>) -> App {
    let loaded = Config::load(Some(config))
        .unwrap()
        .resolve(&Overrides::default(), Some(config))
        .unwrap();
    let persisted = persisted_in(location).await;
    App::new(
        loaded,
        &keys_with(ServerSecret::random()),
        clock,
        persisted,
        None,
    )
    .unwrap()
}

/// Keys with `secret` and a signing key shared by the whole test run (RSA key generation is
/// the slowest part of starting a server).
pub fn keys_with(secret: ServerSecret) -> Keys {
    static SIGNER: OnceLock<Arc<IdentitySigner>> = OnceLock::new();
    let signer = SIGNER.get_or_init(|| Arc::new(IdentitySigner::generate().unwrap()));
    Keys {
        secret,
        signer: signer.clone(),
        token_generations: Vec::new(),
    }
}

/// A running server.
pub struct TestImds {
    pub addr: SocketAddr,
    /// The certificate verifying its identity document's signatures.
    pub certificate_pem: String,
    /// Its keys, to build snapshots with.
    pub keys: Keys,
    /// Its instances, to swap changes in.
    pub state: Arc<imds::fleet::state::State>,
    /// Its guest API (for its metrics).
    pub api: Arc<imds::GuestApi>,
    /// Its control API, to call in-process ([`TestImds::control`]).
    pub control_api: Arc<ControlApi>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// How to start a [`TestImds`].
#[derive(Default)]
pub struct Setup {
    toml: String,
    overrides: Overrides,
    secret: Option<ServerSecret>,
    ipv6: bool,
    clock: Option<Arc<dyn Clock>>,
    loaded: Option<Loaded>,
}

impl Setup {
    /// Config text laid over the built-in default.
    pub fn toml(mut self, toml: &str) -> Self {
        self.toml = toml.to_owned();
        self
    }

    pub fn required(mut self) -> Self {
        self.overrides.http_tokens = Some(imds::fleet::options::HttpTokens::Required);
        self
    }

    pub fn keep_alive(mut self) -> Self {
        self.overrides.keep_alive = Some(true);
        self
    }

    pub fn secret(mut self, secret: ServerSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Reads time from `clock` instead of the system's.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Serves `loaded` (a configuration built elsewhere, such as from AEMM's settings) instead
    /// of `toml` and the overrides.
    pub fn loaded(mut self, loaded: Loaded) -> Self {
        self.loaded = Some(loaded);
        self
    }

    /// Calls STS at `url` for `credentials = "sts"`.
    pub fn sts_endpoint(mut self, url: &str) -> Self {
        self.overrides.sts_endpoint = Some(url.to_owned());
        self
    }

    pub fn ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }

    pub async fn start(self) -> TestImds {
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().join("instance.toml");
        std::fs::write(&path, &self.toml).unwrap();
        let loaded = self.loaded.unwrap_or_else(|| {
            Config::load(Some(&path))
                .unwrap()
                .resolve(&self.overrides, Some(&path))
                .unwrap()
        });
        let keys = keys_with(self.secret.unwrap_or_else(ServerSecret::random));
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let app = App::new(loaded, &keys, clock, Default::default(), None)
            .expect("the test fleet has one owner per address");
        // As `imds serve` does: role credentials from STS are fetched before serving.
        app.snapshots.first_sts_fetch(Duration::from_secs(15)).await;
        let bind = if self.ipv6 { "[::1]:0" } else { "127.0.0.1:0" };
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(imds::server::run(
            vec![listener],
            app.api.clone(),
            app.settings,
            app.hosts,
            async {
                let _ = stopped.await;
            },
        ));
        TestImds {
            addr,
            certificate_pem: keys.signer.certificate_pem().to_owned(),
            keys,
            state: app.state,
            api: app.api,
            control_api: app.control,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }
}

impl TestImds {
    pub fn setup() -> Setup {
        Setup::default()
    }

    /// The built-in default instance, v1 and v2 allowed.
    pub async fn start() -> TestImds {
        Setup::default().start().await
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends one request on a new connection.
    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Answer {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        send_on(&mut sender, self.addr, method, path, headers).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, &[]).await
    }

    pub async fn get_with_token(&self, path: &str, token: &str) -> Answer {
        self.send(Method::GET, path, &[("x-aws-ec2-metadata-token", token)])
            .await
    }

    /// A fresh token (asserting the PUT succeeds).
    pub async fn token(&self, ttl: u32) -> String {
        let answer = self.put_token(&ttl.to_string()).await;
        assert_eq!(answer.status, StatusCode::OK, "token PUT");
        answer.text().to_owned()
    }

    pub async fn put_token(&self, ttl: &str) -> Answer {
        self.send(
            Method::PUT,
            "/latest/api/token",
            &[("x-aws-ec2-metadata-token-ttl-seconds", ttl)],
        )
        .await
    }

    /// An EC2 Query request (`Action` and the other `params`, `Version=2016-11-15` added) sent
    /// to the control API in-process, as a form-encoded POST: the status and the XML answer.
    pub async fn control(&self, params: &[(&str, &str)]) -> (StatusCode, String) {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .append_pair("Version", "2016-11-15")
            .finish();
        let request = Request::builder()
            .method(Method::POST)
            .uri("/")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self.control_api.handle(request).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        self.stop.take().map(|s| s.send(()));
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for TestImds {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Sends a request on an open client connection.
pub async fn send_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

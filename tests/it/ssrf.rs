//! The SSRF lab: IMDSv2's defences shown end to end, as docs/security.md describes them.
//!
//! - A reverse proxy (Debian's nginx) that adds `X-Forwarded-For`, as proxies do: a token PUT
//!   through it is refused, a direct one works.
//! - A "vulnerable web app" that fetches any URL a caller names (GET only, no custom headers, the
//!   shape of the Capital One breach): with `HttpTokens=optional` it leaks the role credentials,
//!   with `required` it gets 401 and leaks nothing.
//! - With `HttpEndpoint=disabled` every request gets 403.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{send_on, TestImds};

/// nginx proxying 127.0.0.1:PORT to imds, the way reverse proxies are configured; one process
/// (`master_process off`), so killing it leaves no workers behind.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn in_front_of(upstream: SocketAddr) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let d = dir.path().display();
        let config = format!(
            "daemon off;\nmaster_process off;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{\n    listen {addr};\n    location / {{\n      proxy_pass http://{upstream};\n\
                   proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    }}\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("nginx")
            .args([
                "-c",
                path.to_str().unwrap(),
                "-p",
                dir.path().to_str().unwrap(),
                "-e",
                &format!("{d}/error.log"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed (scripts/install-test-deps installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn put_token_via(addr: SocketAddr) -> StatusCode {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let headers = [("x-aws-ec2-metadata-token-ttl-seconds", "21600")];
    send_on(
        &mut sender,
        addr,
        Method::PUT,
        "/latest/api/token",
        &headers,
    )
    .await
    .status
}

#[tokio::test]
#[ignore = "needs Debian's nginx: run scripts/test"]
async fn a_token_put_through_a_reverse_proxy_is_refused() {
    let imds = TestImds::start().await;
    let proxy = Nginx::in_front_of(imds.addr);
    assert_eq!(
        put_token_via(proxy.addr).await,
        StatusCode::FORBIDDEN,
        "the proxy added X-Forwarded-For"
    );
    assert_eq!(
        put_token_via(imds.addr).await,
        StatusCode::OK,
        "a direct PUT gets a token"
    );
}

/// A web app with an SSRF hole: `GET /fetch?url=U` fetches U (plain GET) and returns what came back.
async fn vulnerable_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(
                http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(fetch_for_anyone)),
            );
        }
    });
    addr
}

async fn fetch_for_anyone(
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let target = request
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("url="))
        .unwrap_or_default()
        .to_owned();
    let uri: http::Uri = target.parse().unwrap();
    let authority = uri.authority().unwrap().to_string();
    let stream = TcpStream::connect(&authority).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let upstream = Request::get(uri.path())
        .header("host", authority)
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(upstream).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let mut answer = Response::new(Full::new(body));
    *answer.status_mut() = status;
    Ok(answer)
}

/// What an attacker gets by asking the app for `path` on imds: status and body.
async fn steal(app: SocketAddr, imds: &TestImds, path: &str) -> (StatusCode, String) {
    let stream = TcpStream::connect(app).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let url = format!("/fetch?url=http://{}{path}", imds.addr);
    let answer = send_on(&mut sender, app, Method::GET, &url, &[]).await;
    (answer.status, answer.text().to_owned())
}

#[tokio::test]
async fn an_ssrf_hole_leaks_role_credentials_while_tokens_are_optional() {
    let imds = TestImds::start().await;
    let app = vulnerable_app().await;
    let (status, role) = steal(app, &imds, "/latest/meta-data/iam/security-credentials/").await;
    assert_eq!(
        (status, role.as_str()),
        (StatusCode::OK, "imds-default-role")
    );
    let (status, leaked) = steal(
        app,
        &imds,
        &format!("/latest/meta-data/iam/security-credentials/{role}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let leaked: serde_json::Value = serde_json::from_str(&leaked).unwrap();
    let served: serde_json::Value = serde_json::from_slice(
        &imds
            .get(&format!(
                "/latest/meta-data/iam/security-credentials/{role}"
            ))
            .await
            .body,
    )
    .unwrap();
    assert_eq!(
        leaked["SecretAccessKey"], served["SecretAccessKey"],
        "the attacker holds the role's keys"
    );
}

#[tokio::test]
async fn with_required_tokens_the_same_hole_leaks_nothing() {
    let imds = TestImds::setup().required().start().await;
    let app = vulnerable_app().await;
    for path in [
        "/latest/meta-data/iam/security-credentials/",
        "/latest/meta-data/iam/security-credentials/imds-default-role",
        "/latest/user-data",
    ] {
        let (status, body) = steal(app, &imds, path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(body.is_empty(), "{path} leaked {body:?}");
    }
}

#[tokio::test]
async fn a_disabled_endpoint_answers_403_to_everyone() {
    let imds = TestImds::setup()
        .toml("[instance.metadata_options]\nhttp_endpoint = \"disabled\"\n")
        .start()
        .await;
    let app = vulnerable_app().await;
    let (status, body) = steal(app, &imds, "/latest/meta-data/iam/security-credentials/").await;
    assert_eq!((status, body.as_str()), (StatusCode::FORBIDDEN, ""));
    assert_eq!(put_token_via(imds.addr).await, StatusCode::FORBIDDEN);
    assert_eq!(imds.get("/").await.status, StatusCode::FORBIDDEN);
}

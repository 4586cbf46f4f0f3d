//! The benchmark baseline: a bare hyper 1.x HTTP/1.1 server that answers every request with a
//! fixed 19-byte body, on the same runtime and socket settings as imds.
//!
//! `cargo run --release --example baseline -- 127.0.0.1:0 [--close] [--imds-headers]` prints
//! `listening on http://ADDR` and serves until killed. `--close` answers with
//! `Connection: close`, like imds' default mode; `--imds-headers` adds the headers a real IMDS
//! answer carries (`Server`, `Content-Type`, `Accept-Ranges`, `Last-Modified`, the token TTL),
//! to tell the cost of those bytes from the cost of imds' own work.

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8; 19] = b"i-0b4f7d2c9a1e83f56";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let flags: Vec<String> = args.collect();
    let close = flags.iter().any(|a| a == "--close");
    let imds_headers = flags.iter().any(|a| a == "--imds-headers");
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let mut builder = http1::Builder::new();
    builder.keep_alive(!close);
    // Accepting in a task of the runtime, as imds does: on the thread that blocks on `main`,
    // every connection would be handed over to a worker thread, waking it.
    tokio::spawn(serve(listener, builder, close, imds_headers))
        .await
        .map_err(std::io::Error::other)?
}

async fn serve(
    listener: TcpListener,
    builder: http1::Builder,
    close: bool,
    imds_headers: bool,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_request| async move {
                let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
                if imds_headers {
                    let headers = response.headers_mut();
                    headers.insert(header::SERVER, HeaderValue::from_static("EC2ws"));
                    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
                    headers.insert(
                        header::LAST_MODIFIED,
                        HeaderValue::from_static("Mon, 23 Nov 2026 02:28:46 GMT"),
                    );
                    headers.insert(
                        "x-aws-ec2-metadata-token-ttl-seconds",
                        HeaderValue::from_static("21591"),
                    );
                }
                if close {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response)
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

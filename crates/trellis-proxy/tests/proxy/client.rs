//! Clients: HTTP/1.1 and h2c connections over plain TCP, and raw byte exchanges.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::step;

pub(crate) type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A response read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) trailers: Option<HeaderMap>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

/// An HTTP/1.1 connection to `addr`.
pub(crate) async fn h1(addr: SocketAddr) -> http1::SendRequest<Body> {
    let stream = step("connect", TcpStream::connect(addr)).await.unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// An h2c (prior knowledge) connection to `addr`.
pub(crate) async fn h2(addr: SocketAddr) -> http2::SendRequest<Body> {
    let stream = step("connect", TcpStream::connect(addr)).await.unwrap();
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Reads a response whole, trailers included.
pub(crate) async fn read(resp: http::Response<hyper::body::Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let collected = step("read body", body.collect()).await.unwrap();
    let trailers = collected.trailers().cloned();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

/// Sends `req` on a new HTTP/1.1 connection and reads the reply.
pub(crate) async fn send(addr: SocketAddr, req: Request<Body>) -> Reply {
    let mut sender = h1(addr).await;
    let resp = step("response", sender.send_request(req)).await.unwrap();
    read(resp).await
}

/// `GET path` with `Host: host` on a new HTTP/1.1 connection.
pub(crate) async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    let req = Request::get(path)
        .header("host", host)
        .body(empty())
        .unwrap();
    send(addr, req).await
}

/// Writes `request` verbatim and reads one response (head plus `Content-Length` body).
pub(crate) async fn raw_http(addr: SocketAddr, request: &str) -> String {
    let mut stream = step("connect", TcpStream::connect(addr)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    step("raw response", async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "connection closed early: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    return;
                }
            }
        }
    })
    .await;
    String::from_utf8(buf).unwrap()
}

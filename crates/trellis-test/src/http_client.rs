//! HTTP client helpers, one fresh connection per call: HTTP/1.1, h2c with prior knowledge,
//! streamed uploads and downloads that never hold a large body, and raw HTTP/1.1 exchanges.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::CLIENT_TIMEOUT;
use crate::http_echo::{EchoReply, generated_chunks};

type RequestBody = BoxBody<Bytes, Infallible>;

/// A complete response.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// The response status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl HttpReply {
    /// The body as text, decoded lossily.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response body is not the expected JSON: {}", self.text()))
    }

    /// The body parsed as an [`EchoReply`] from [`spawn_http_echo`](crate::spawn_http_echo).
    pub fn echo(&self) -> anyhow::Result<EchoReply> {
        self.json()
    }

    /// The first value of header `name` as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

/// `GET path` over HTTP/1.1 to `addr` with extra `headers`; `Host` defaults to `addr`.
pub async fn http1_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<HttpReply> {
    let request = request(Method::GET, path.to_owned(), addr, headers, empty())?;
    with_timeout(async { collect(send_http1(addr, request).await?).await }).await
}

/// `method path` over HTTP/1.1 to `addr` with extra `headers` and a `body` of known length.
pub async fn http1_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> anyhow::Result<HttpReply> {
    let method = Method::from_bytes(method.as_bytes())?;
    let body = BodyExt::boxed(Full::new(Bytes::from_static(body)));
    let request = request(method, path.to_owned(), addr, headers, body)?;
    with_timeout(async { collect(send_http1(addr, request).await?).await }).await
}

/// `GET path` over h2c (HTTP/2 with prior knowledge) to `addr` with extra `headers`. A `host`
/// entry becomes the `:authority` (default `addr`) instead of a header.
pub async fn http2_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<HttpReply> {
    let authority = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("host"))
        .map_or_else(|| addr.to_string(), |(_, value)| (*value).to_owned());
    let others: Vec<_> = headers
        .iter()
        .copied()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
        .collect();
    let uri = format!("http://{authority}{path}");
    let mut request = request(Method::GET, uri, addr, &others, empty())?;
    request.headers_mut().remove(HOST);
    with_timeout(async {
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(drive(conn));
        collect(sender.send_request(request).await?).await
    })
    .await
}

/// `GET path` over HTTP/1.1, counting the body as it streams; returns the status and length.
/// Use it for large downloads such as the echo server's `/bytes/N`.
pub async fn http1_download(addr: SocketAddr, path: &str) -> anyhow::Result<(StatusCode, u64)> {
    let request = request(Method::GET, path.to_owned(), addr, &[], empty())?;
    with_timeout(async {
        let response = send_http1(addr, request).await?;
        let status = response.status();
        let mut body = response.into_body();
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                len += data.len() as u64;
            }
        }
        Ok((status, len))
    })
    .await
}

/// `POST path` over HTTP/1.1 with a generated body of `total_bytes`, sent with chunked
/// transfer-encoding in 64 KiB chunks (nothing large is allocated). Against the echo server the
/// reply's [`EchoReply::body_len`] tells how many bytes arrived.
pub async fn post_streamed(
    addr: SocketAddr,
    path: &str,
    total_bytes: u64,
) -> anyhow::Result<HttpReply> {
    let chunks = generated_chunks(total_bytes).map(|chunk| Ok(Frame::data(chunk)));
    let body = BodyExt::boxed(StreamBody::new(chunks));
    let request = request(Method::POST, path.to_owned(), addr, &[], body)?;
    with_timeout(async { collect(send_http1(addr, request).await?).await }).await
}

/// Writes `request` to `addr` byte for byte and returns everything read until the server closes,
/// so header-name case and order survive. Send `Connection: close` so the server does close.
pub async fn raw_http1(addr: SocketAddr, request: &str) -> anyhow::Result<String> {
    with_timeout(async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await?;
        Ok(String::from_utf8_lossy(&received).into_owned())
    })
    .await
}

fn empty() -> RequestBody {
    BodyExt::boxed(Empty::new())
}

fn request(
    method: Method,
    uri: String,
    addr: SocketAddr,
    headers: &[(&str, &str)],
    body: RequestBody,
) -> anyhow::Result<Request<RequestBody>> {
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri.parse().with_context(|| format!("invalid URI {uri}"))?;
    let map = request.headers_mut();
    map.insert(HOST, HeaderValue::from_str(&addr.to_string())?);
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())?;
        let value = HeaderValue::from_str(value)?;
        if name == HOST {
            map.insert(name, value);
        } else {
            map.append(name, value);
        }
    }
    Ok(request)
}

async fn send_http1(
    addr: SocketAddr,
    request: Request<RequestBody>,
) -> anyhow::Result<Response<Incoming>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(drive(conn));
    Ok(sender.send_request(request).await?)
}

/// Runs a client connection until it ends; its errors surface through the request instead.
async fn drive(conn: impl Future<Output = hyper::Result<()>>) {
    if let Err(error) = conn.await {
        tracing::debug!(%error, "client connection ended with an error");
    }
}

async fn collect(response: Response<Incoming>) -> anyhow::Result<HttpReply> {
    let (parts, body) = response.into_parts();
    Ok(HttpReply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}

async fn with_timeout<T>(call: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(CLIENT_TIMEOUT, call)
        .await
        .context("http request timed out")?
}

//! The HTTP echo backend (HTTP/1.1 and h2c on one port): it describes each request back as JSON,
//! and has endpoints for large bodies, chosen statuses and delays.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};

use crate::server::{Server, spawn_server};

/// `/bytes/N` bodies are sent in chunks of this size, all slices of one static buffer.
pub(crate) const CHUNK_SIZE: usize = 64 * 1024;

/// The bytes every generated body (download or upload) is made of.
pub(crate) static CHUNK: [u8; CHUNK_SIZE] = [b'x'; CHUNK_SIZE];

type EchoBody = BoxBody<Bytes, Infallible>;

/// What the echo server saw, as sent back in its JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoReply {
    /// The `name` the server was spawned with (also in the `x-served-by` response header).
    pub server: String,
    /// The request method, for example `GET`.
    pub method: String,
    /// The request path, without the query.
    pub path: String,
    /// The query string without `?`, empty when absent.
    pub query: String,
    /// The HTTP version the request arrived with: `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// The URI authority (HTTP/2 `:authority`) or else the `Host` header; empty when neither.
    pub authority: String,
    /// Request headers in arrival order, names lower-cased, values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
    /// How many body bytes arrived; counted while streaming, never buffered.
    pub body_len: u64,
}

impl EchoReply {
    /// The first value of the request header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Spawns the echo server. Every response carries `x-served-by: {name}`. Routes:
/// - `/bytes/N`: N bytes of `x`, streamed in 64 KiB chunks without allocating N;
/// - `/status/CODE`: status CODE with the echo JSON (no body for 204 and 304);
/// - `/delay/MS`: the echo JSON after MS milliseconds;
/// - `/fail/PCT`: the echo JSON with 503 for a random PCT% of requests, else 200;
/// - anything else: 200 with the [`EchoReply`] JSON.
///
/// The request body is always read to the end and counted.
pub async fn spawn_http_echo(name: &str) -> anyhow::Result<Server> {
    spawn_echo(name, None, Quirks::default()).await
}

/// How a misbehaving echo server answers every request: after `delay`, and with `status`
/// instead of its usual one when set.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quirks {
    /// Wait this long before answering.
    pub delay: Duration,
    /// Answer with this status.
    pub status: Option<StatusCode>,
}

/// [`spawn_http_echo`] with [`Quirks`], for a slow or failing endpoint among healthy ones.
pub async fn spawn_quirky_http_echo(
    name: &str,
    quirks: Quirks,
) -> anyhow::Result<(Server, EchoLog)> {
    let log = EchoLog::default();
    let server = spawn_echo(name, Some(log.clone()), quirks).await?;
    Ok((server, log))
}

/// What a recording echo server saw: how many requests arrived (any path), and a description
/// of each plain echo request, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct EchoLog(Arc<LogState>);

#[derive(Debug, Default)]
struct LogState {
    hits: AtomicU64,
    echoed: Mutex<Vec<EchoReply>>,
}

impl EchoLog {
    /// The echo requests seen so far.
    pub fn requests(&self) -> Vec<EchoReply> {
        self.0
            .echoed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many requests arrived, whatever their path.
    pub fn hits(&self) -> u64 {
        self.0.hits.load(Ordering::Relaxed)
    }
}

/// [`spawn_http_echo`], also keeping each request's description in a log; for requests whose
/// responses the test never sees (mirrors).
pub async fn spawn_recording_http_echo(name: &str) -> anyhow::Result<(Server, EchoLog)> {
    let log = EchoLog::default();
    let server = spawn_echo(name, Some(log.clone()), Quirks::default()).await?;
    Ok((server, log))
}

async fn spawn_echo(name: &str, log: Option<EchoLog>, quirks: Quirks) -> anyhow::Result<Server> {
    let name: Arc<str> = Arc::from(name);
    spawn_server(move |stream| {
        let name = Arc::clone(&name);
        let log = log.clone();
        async move {
            let service = service_fn(move |req| {
                let name = Arc::clone(&name);
                let log = log.clone();
                async move {
                    if !quirks.delay.is_zero() {
                        tokio::time::sleep(quirks.delay).await;
                    }
                    let mut response = respond(&name, log.as_ref(), req).await;
                    if let Some(status) = quirks.status {
                        *response.status_mut() = status;
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "echo connection ended with an error");
            }
        }
    })
    .await
}

async fn respond(name: &str, log: Option<&EchoLog>, req: Request<Incoming>) -> Response<EchoBody> {
    if let Some(log) = log {
        log.0.hits.fetch_add(1, Ordering::Relaxed);
    }
    let path = req.uri().path().to_owned();
    let mut response = match route(&path) {
        Route::Bytes(Some(len)) => {
            drain(req.into_body()).await;
            download(len)
        }
        Route::Status(Some(status)) => {
            let echo = describe(name, req).await;
            if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
                plain(status, Bytes::new())
            } else {
                json(status, &echo)
            }
        }
        Route::Fail(Some(percent)) => {
            let echo = describe(name, req).await;
            let status = if rand::random_range(0..100) < percent {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            json(status, &echo)
        }
        Route::Delay(Some(delay)) => {
            let echo = describe(name, req).await;
            tokio::time::sleep(delay).await;
            json(StatusCode::OK, &echo)
        }
        Route::Echo => {
            let echo = describe(name, req).await;
            if let Some(log) = log {
                let mut echoed = log.0.echoed.lock().unwrap_or_else(|e| e.into_inner());
                echoed.push(echo.clone());
            }
            json(StatusCode::OK, &echo)
        }
        Route::Bytes(None) | Route::Status(None) | Route::Delay(None) | Route::Fail(None) => {
            drain(req.into_body()).await;
            plain(
                StatusCode::BAD_REQUEST,
                Bytes::from(format!("bad path {path}\n")),
            )
        }
    };
    if let Ok(value) = HeaderValue::from_str(name) {
        response.headers_mut().insert("x-served-by", value);
    }
    response
}

enum Route {
    Bytes(Option<u64>),
    Status(Option<StatusCode>),
    Delay(Option<Duration>),
    Fail(Option<u32>),
    Echo,
}

fn route(path: &str) -> Route {
    if let Some(len) = path.strip_prefix("/bytes/") {
        Route::Bytes(len.parse().ok())
    } else if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse()
            .ok()
            .and_then(|code| StatusCode::from_u16(code).ok())
            .filter(|status| !status.is_informational());
        Route::Status(status)
    } else if let Some(percent) = path.strip_prefix("/fail/") {
        Route::Fail(percent.parse().ok().filter(|p| *p <= 100))
    } else if let Some(ms) = path.strip_prefix("/delay/") {
        Route::Delay(ms.parse().ok().map(Duration::from_millis))
    } else {
        Route::Echo
    }
}

async fn describe(name: &str, req: Request<Incoming>) -> EchoReply {
    let (parts, body) = req.into_parts();
    let authority = parts
        .uri
        .authority()
        .map(|authority| authority.to_string())
        .or_else(|| {
            let host = parts.headers.get(http::header::HOST)?;
            Some(String::from_utf8_lossy(host.as_bytes()).into_owned())
        })
        .unwrap_or_default();
    EchoReply {
        server: name.to_owned(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        version: format!("{:?}", parts.version),
        authority,
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect(),
        body_len: drain(body).await,
    }
}

/// Reads a body to its end and returns its length; a broken body counts what arrived.
async fn drain(mut body: Incoming) -> u64 {
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    len += data.len() as u64;
                }
            }
            Err(error) => {
                tracing::debug!(%error, "echo request body broke");
                break;
            }
        }
    }
    len
}

fn download(len: u64) -> Response<EchoBody> {
    let body = StreamBody::new(generated_chunks(len).map(|chunk| Ok(Frame::data(chunk))));
    let mut response = Response::new(BodyExt::boxed(body));
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// `len` bytes of `x` as 64 KiB chunks that share one static buffer.
pub(crate) fn generated_chunks(len: u64) -> impl futures_util::Stream<Item = Bytes> + Send {
    futures_util::stream::unfold(len, |remaining| async move {
        if remaining == 0 {
            return None;
        }
        let size = usize::try_from(remaining).map_or(CHUNK_SIZE, |left| left.min(CHUNK_SIZE));
        Some((Bytes::from_static(&CHUNK[..size]), remaining - size as u64))
    })
}

fn json(status: StatusCode, echo: &EchoReply) -> Response<EchoBody> {
    match serde_json::to_vec(echo) {
        Ok(body) => {
            let mut response = plain(status, Bytes::from(body));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from(error.to_string()),
        ),
    }
}

fn plain(status: StatusCode, body: Bytes) -> Response<EchoBody> {
    let mut response = Response::new(BodyExt::boxed(Full::new(body)));
    *response.status_mut() = status;
    response
}

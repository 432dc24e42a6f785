//! Tiny backends on 127.0.0.1:0: an HTTP/1.1+h2c echo server with a few special paths, a raw
//! HTTP/1.1 recorder, TCP echo and greeter servers, and a WebSocket echo server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

type Body = BoxBody<Bytes, hyper::Error>;

/// An HTTP echo backend. Paths:
/// - `/count`: reads the whole body and answers with its length;
/// - `/slow`: signals `arrived`, then waits for `release` before answering;
/// - `/trailers`: answers `hello` with a `grpc-status: 0` trailer;
/// - `/healthy/NAME`: 200 when NAME is this backend's name, else 503;
/// - anything else: streams the request body back.
///
/// Every answer carries `x-backend` (its name), `x-version` and `x-host` (what it received).
pub(crate) struct HttpBackend {
    pub(crate) addr: SocketAddr,
    pub(crate) requests: Arc<AtomicUsize>,
    pub(crate) arrived: Arc<Notify>,
    pub(crate) release: Arc<Notify>,
}

pub(crate) async fn http_backend(name: &'static str) -> HttpBackend {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = HttpBackend {
        addr: socket.local_addr().unwrap(),
        requests: Arc::default(),
        arrived: Arc::default(),
        release: Arc::default(),
    };
    let (requests, arrived, release) = (
        backend.requests.clone(),
        backend.arrived.clone(),
        backend.release.clone(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = socket.accept().await else {
                return;
            };
            let (requests, arrived, release) = (requests.clone(), arrived.clone(), release.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    requests.fetch_add(1, Ordering::SeqCst);
                    let (arrived, release) = (arrived.clone(), release.clone());
                    async move { Ok::<_, Infallible>(serve(name, req, &arrived, &release).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    backend
}

async fn serve(
    name: &'static str,
    req: Request<Incoming>,
    arrived: &Notify,
    release: &Notify,
) -> Response<Body> {
    let version = format!("{:?}", req.version());
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    if let Some(healthy) = req.uri().path().strip_prefix("/healthy/") {
        let status = if healthy == name { 200 } else { 503 };
        return Response::builder()
            .status(status)
            .header("x-backend", name)
            .header("x-host", host)
            .body(full(""))
            .unwrap();
    }
    let body: Body = match req.uri().path() {
        "/count" => {
            let mut body = req.into_body();
            let mut n = 0usize;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    n += data.len();
                }
            }
            full(n.to_string())
        }
        "/slow" => {
            arrived.notify_one();
            release.notified().await;
            full("slow done")
        }
        "/trailers" => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let frames = vec![
                Ok(Frame::data(Bytes::from_static(b"hello"))),
                Ok(Frame::trailers(trailers)),
            ];
            BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)))
        }
        _ => req.into_body().boxed(),
    };
    Response::builder()
        .header("x-backend", name)
        .header("x-version", version)
        .header("x-host", host)
        .body(body)
        .unwrap()
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

/// A raw HTTP/1.1 server that records each request head verbatim and answers with a
/// mixed-case header, then closes.
pub(crate) struct RawRecorder {
    pub(crate) addr: SocketAddr,
    pub(crate) heads: Arc<Mutex<Vec<String>>>,
}

pub(crate) async fn raw_recorder() -> RawRecorder {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let recorder = RawRecorder {
        addr: socket.local_addr().unwrap(),
        heads: Arc::default(),
    };
    let heads = recorder.heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                heads
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf).into_owned());
                let reply = b"HTTP/1.1 200 OK\r\nX-Reply-Case: Mixed\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
                let _ = stream.write_all(reply).await;
            });
        }
    });
    recorder
}

/// A TCP server that echoes every byte and closes its side when the client does.
pub(crate) async fn tcp_echo() -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A server-speaks-first TCP server: writes `greeting` as soon as a client connects.
pub(crate) async fn tcp_greeter(greeting: &'static [u8]) -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let _ = stream.write_all(greeting).await;
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink).await;
            });
        }
    });
    addr
}

/// A WebSocket server that echoes every message.
pub(crate) async fn ws_echo() -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() {
                        break;
                    }
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    }
                }
            });
        }
    });
    addr
}

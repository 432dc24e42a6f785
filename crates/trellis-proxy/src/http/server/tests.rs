use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::{
    CodecType, RouteSpecifier,
};
use h2::client::SendRequest;
use http::{StatusCode, Version};
use http_body_util::{Empty, Full};
use hyper::client::conn;
use hyper_util::rt::TokioExecutor;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::*;
use crate::config::http::HttpConfig;
use crate::drain::Drain;
use crate::table::Shared;
use crate::telemetry::{Direction, LocalWorkload, Metrics};

/// A connection's shared state for a listener with `codec` and no routes (every request the
/// real request path takes is answered 404).
fn connection(codec: CodecType, peer: SocketAddr, drain: DrainWatch) -> HttpConnection {
    let metrics = Metrics::new(LocalWorkload::default(), None, None);
    let hcm = HttpConnectionManager {
        codec_type: codec as i32,
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration::default())),
        ..Default::default()
    };
    let config = Arc::new(HttpConfig::compile(&hcm, &metrics).unwrap());
    HttpConnection {
        shared: Arc::new(Shared::new(metrics)),
        config,
        direction: Direction::Inbound,
        peer,
        peer_identity: None,
        drain,
    }
}

/// A listener on 127.0.0.1 serving HTTP with `codec`, as [`connection`], on connections whose
/// negotiated `protocol` is the one given; the drain stays open while the returned handle lives.
async fn listener(codec: CodecType, protocol: Option<&'static str>) -> (SocketAddr, Drain) {
    let (drain, watch) = Drain::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            tokio::spawn(serve(
                stream,
                connection(codec, peer, watch.clone()),
                protocol,
            ));
        }
    });
    (addr, drain)
}

/// The response head of one `GET /` to `addr` over HTTP/1.1 or HTTP/2 (prior knowledge);
/// `None` when the exchange fails.
async fn head(addr: SocketAddr, version: Version) -> Option<http::response::Parts> {
    let exchange = async {
        let io = TokioIo::new(TcpStream::connect(addr).await.ok()?);
        let req = Request::get("http://catalog/")
            .body(Empty::<Bytes>::new())
            .ok()?;
        let response = if version == Version::HTTP_2 {
            let (mut sender, connection) = conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .ok()?;
            tokio::spawn(connection);
            sender.send_request(req).await.ok()?
        } else {
            let (mut sender, connection) = conn::http1::handshake(io).await.ok()?;
            tokio::spawn(connection);
            sender.send_request(req).await.ok()?
        };
        Some(response.into_parts().0)
    };
    within("the exchange", exchange).await
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: timed out"))
}

/// As Envoy's `codec_type`: AUTO serves both versions on one port (the one detection or ALPN
/// `http/1.1` settled, else the one the first bytes show: ALPN `h2` is no proof), HTTP1 and
/// HTTP2 only their own and fail a client speaking the other.
#[tokio::test]
async fn a_listener_serves_the_http_versions_its_codec_allows() {
    for (codec, protocol, http1, http2) in [
        (CodecType::Auto, None, Some(404), Some(404)),
        (CodecType::Auto, Some(detect::HTTP1), Some(404), None),
        (CodecType::Auto, Some(detect::H2C), None, Some(404)),
        (CodecType::Auto, Some(detect::H2), Some(404), Some(404)),
        (CodecType::Http1, None, Some(404), None),
        (CodecType::Http1, Some(detect::H2), Some(404), None),
        (CodecType::Http2, None, None, Some(404)),
    ] {
        let (addr, _drain) = listener(codec, protocol).await;
        let status = |head: Option<http::response::Parts>| head.map(|h| h.status.as_u16());
        assert_eq!(
            status(head(addr, Version::HTTP_11).await),
            http1,
            "{codec:?} on {protocol:?}, HTTP/1.1"
        );
        assert_eq!(
            status(head(addr, Version::HTTP_2).await),
            http2,
            "{codec:?} on {protocol:?}, HTTP/2"
        );
    }
}

/// As hyper's server, which served HTTP/2 before: a reply carries `date`.
#[tokio::test]
async fn an_http2_reply_carries_a_date() {
    let (addr, _drain) = listener(CodecType::Auto, None).await;
    let head = head(addr, Version::HTTP_2).await.expect("an answer");
    assert_eq!(head.status, StatusCode::NOT_FOUND);
    assert_eq!(head.version, Version::HTTP_2);
    let date = head.headers[header::DATE].to_str().unwrap();
    assert!(httpdate::parse_http_date(date).is_ok(), "date: {date}");
}

/// An HTTP/2 connection served with `start` standing in for the request path: the client's
/// handle, the serving task, the client connection's task and the drain that shuts it down.
struct Pair {
    client: SendRequest<Bytes>,
    served: JoinHandle<()>,
    client_conn: JoinHandle<()>,
    drain: Drain,
}

async fn pair<F>(start: fn(Arc<HttpConnection>, Request<FromClient>) -> F) -> Pair
where
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let (drain, watch) = Drain::new();
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let conn = Arc::new(connection(CodecType::Http2, peer, watch.clone()));
    let served = Served::new(HTTP2.handshake(server_io), conn, start);
    let served = tokio::spawn(drive(Box::pin(served), Served::graceful_shutdown, watch));
    let (client, connection) = h2::client::handshake(client_io).await.unwrap();
    let client_conn = tokio::spawn(async move {
        let _ = connection.await;
    });
    Pair {
        client,
        served,
        client_conn,
        drain,
    }
}

fn get(path: &str) -> Request<()> {
    Request::get(format!("http://catalog{path}"))
        .body(())
        .unwrap()
}

fn reply(body: &'static str) -> Response<ResponseBody> {
    Response::new(Either::Right(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))))
}

/// A whole response body read from the client's side.
async fn text(response: Response<h2::RecvStream>) -> String {
    let mut body = response.into_body();
    let mut read = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        read.extend_from_slice(&chunk);
    }
    String::from_utf8(read).unwrap()
}

/// Waits until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    within(what, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_client_reset_drops_the_request_it_gave_up() {
    static STARTED: AtomicBool = AtomicBool::new(false);
    static DROPPED: AtomicBool = AtomicBool::new(false);
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            DROPPED.store(true, Ordering::SeqCst);
        }
    }
    fn never(
        _: Arc<HttpConnection>,
        _: Request<FromClient>,
    ) -> impl Future<Output = Response<ResponseBody>> {
        let guard = Guard;
        STARTED.store(true, Ordering::SeqCst);
        async move {
            std::future::pending::<()>().await;
            drop(guard);
            reply("unreachable")
        }
    }
    let pair = pair(never).await;
    let mut client = within("ready", pair.client.ready()).await.unwrap();
    let (_response, mut stream) = client.send_request(get("/"), false).unwrap();
    until("the request handled", || STARTED.load(Ordering::SeqCst)).await;
    assert!(!DROPPED.load(Ordering::SeqCst), "handled until the reset");
    stream.send_reset(Reason::CANCEL);
    until("the request dropped", || DROPPED.load(Ordering::SeqCst)).await;
}

#[tokio::test]
async fn a_panic_resets_only_its_own_stream() {
    async fn panics_on_boom(
        _: Arc<HttpConnection>,
        req: Request<FromClient>,
    ) -> Response<ResponseBody> {
        assert_ne!(req.uri().path(), "/boom", "the handling panics");
        reply("fine")
    }
    let pair = pair(panics_on_boom).await;
    let mut client = within("ready", pair.client.clone().ready()).await.unwrap();
    let (boom, _) = client.send_request(get("/boom"), true).unwrap();
    let (fine, _) = client.send_request(get("/fine"), true).unwrap();
    let failed = within("the panicking stream", boom).await.unwrap_err();
    assert_eq!(failed.reason(), Some(Reason::INTERNAL_ERROR));
    let fine = within("the other stream", fine).await.unwrap();
    // As hyper's server: a body of known size gets its `content-length`.
    assert_eq!(fine.headers()[header::CONTENT_LENGTH], "4");
    assert_eq!(within("its body", text(fine)).await, "fine");
    // The connection still serves.
    let mut client = within("ready", client.ready()).await.unwrap();
    let (again, _) = client.send_request(get("/again"), true).unwrap();
    let again = within("a later stream", again).await.unwrap();
    assert_eq!(within("its body", text(again)).await, "fine");
}

#[tokio::test]
async fn draining_finishes_open_streams_then_closes_the_connection() {
    static STARTED: AtomicBool = AtomicBool::new(false);
    static RELEASE: tokio::sync::Notify = tokio::sync::Notify::const_new();
    async fn held(_: Arc<HttpConnection>, _: Request<FromClient>) -> Response<ResponseBody> {
        STARTED.store(true, Ordering::SeqCst);
        RELEASE.notified().await;
        reply("finished")
    }
    let pair = pair(held).await;
    let mut client = within("ready", pair.client.ready()).await.unwrap();
    let (response, _) = client.send_request(get("/slow"), true).unwrap();
    until("the request handled", || STARTED.load(Ordering::SeqCst)).await;
    let shutdown = tokio::spawn(pair.drain.shutdown(Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !pair.served.is_finished(),
        "open streams keep the connection"
    );
    RELEASE.notify_one();
    let response = within("the open stream", response).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(within("its body", text(response)).await, "finished");
    within("the connection served", pair.served).await.unwrap();
    within("the client's connection closed", pair.client_conn)
        .await
        .unwrap();
    within("shutdown", shutdown).await.unwrap();
}

/// An HTTP/2 frame read off the wire: its type, flags, stream and payload.
type RawFrame = (u8, u8, u32, Vec<u8>);

async fn read_frame(io: &mut tokio::io::DuplexStream) -> Option<RawFrame> {
    use tokio::io::AsyncReadExt as _;
    let mut head = [0u8; 9];
    io.read_exact(&mut head).await.ok()?;
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0; len];
    io.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], stream, payload))
}

// Paused time: the sleep below ends only once every task is idle, so the drain has reached
// the connection before the client's first bytes do.
#[tokio::test(start_paused = true)]
async fn draining_during_the_handshake_still_answers_the_first_requests() {
    use tokio::io::AsyncWriteExt as _;
    async fn answer(_: Arc<HttpConnection>, _: Request<FromClient>) -> Response<ResponseBody> {
        reply("answered")
    }
    let (drain, watch) = Drain::new();
    let (mut client_io, server_io) = tokio::io::duplex(64 * 1024);
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let conn = Arc::new(connection(CodecType::Http2, peer, watch.clone()));
    let served = Served::new(HTTP2.handshake(server_io), conn, answer);
    let served = tokio::spawn(drive(Box::pin(served), Served::graceful_shutdown, watch));
    let shutdown = tokio::spawn(drain.shutdown(Duration::from_secs(5)));
    // The drain reaches the connection while it waits for the client's preface.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !served.is_finished(),
        "a handshaking connection is not dropped"
    );
    // The client's first packet: preface, empty SETTINGS and `GET http://catalog/` on stream 1
    // (HPACK: :method GET, :scheme http, :path /, :authority catalog).
    let mut first = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    first.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let block = [&[0x82, 0x86, 0x84, 0x41, 7][..], b"catalog"].concat();
    first.extend_from_slice(&[0, 0, block.len() as u8, 1, 0x5, 0, 0, 0, 1]);
    first.extend_from_slice(&block);
    client_io.write_all(&first).await.unwrap();
    let (mut answered, mut goaway) = (Vec::new(), false);
    within("the answer", async {
        while let Some((kind, flags, stream, payload)) = read_frame(&mut client_io).await {
            goaway |= kind == 7;
            if kind == 0 && stream == 1 {
                answered.extend_from_slice(&payload);
                if flags & 1 == 1 {
                    break;
                }
            }
        }
    })
    .await;
    assert!(goaway, "GOAWAY sent once the handshake was done");
    assert_eq!(answered, b"answered");
    drop(client_io);
    within("the connection served", served).await.unwrap();
    within("shutdown", shutdown).await.unwrap();
}

#[tokio::test]
async fn a_reply_goes_out_without_connection_specific_headers() {
    async fn with_hop_by_hop(
        _: Arc<HttpConnection>,
        _: Request<FromClient>,
    ) -> Response<ResponseBody> {
        let mut response = reply("ok");
        let headers = response.headers_mut();
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        response
    }
    let pair = pair(with_hop_by_hop).await;
    let mut client = within("ready", pair.client.ready()).await.unwrap();
    let (response, _) = client.send_request(get("/"), true).unwrap();
    // h2 refuses to send most of these at all: the stream would fail instead.
    let response = within("the reply", response).await.unwrap();
    let names: Vec<&str> = response.headers().keys().map(|k| k.as_str()).collect();
    for gone in ["te", "connection", "x-hop", "keep-alive"] {
        assert!(!names.contains(&gone), "{gone} in {names:?}");
    }
    assert!(names.contains(&"x-kept"), "{names:?}");
}

/// A waker that counts its wakes.
#[derive(Default)]
struct Counted(std::sync::atomic::AtomicUsize);

impl Wake for Counted {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_wake_during_the_connections_poll_is_noted_and_one_after_it_schedules_the_task() {
    let task = Arc::new(Counted::default());
    let wake = Arc::new(ConnectionWake::default());
    wake.task.register(&Waker::from(task.clone()));
    let waker = Waker::from(wake.clone());
    wake.polling.store(true, Ordering::SeqCst);
    waker.wake_by_ref();
    assert_eq!(task.0.load(Ordering::SeqCst), 0, "no second poll scheduled");
    assert!(wake.woken.load(Ordering::SeqCst), "but noted");
    wake.polling.store(false, Ordering::SeqCst);
    waker.wake_by_ref();
    assert_eq!(task.0.load(Ordering::SeqCst), 1);
}

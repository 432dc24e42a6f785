//! Upstream HTTP/2 straight over the `h2` crate. A request's own task opens its stream and
//! waits for the response: no channel to the connection's task, no task per request and no
//! reply channel (hyper's client has all three). Only a request body still streaming when the
//! response head arrives moves to a task of its own.
//!
//! Requests open streams one at a time, in order, and one waits for the server's stream limit
//! only after the previous one got its stream, as in hyper: a request given up while it waits
//! for its turn never reaches the server (h2 would send any stream it has queued).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use http::{Method, Request, Response, header};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::UpstreamError;
use crate::http::body::BodyError;
pub(super) use crate::http::streams::H2Body;
use crate::http::streams::{Pipe, PipeError};

/// Streams a connection may open before the server's SETTINGS say how many it takes.
const INITIAL_MAX_SEND_STREAMS: usize = 100;
/// Receive window of each stream.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// Receive window of the whole connection.
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
/// Largest frame taken from the server.
const MAX_FRAME_SIZE: u32 = 16 * 1024;
/// Largest header list taken from the server.
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// Bytes of request body a stream may buffer beyond what the server's window lets go.
const MAX_SEND_BUFFER_SIZE: usize = 1024 * 1024;
/// Streams the server may make us reset for its errors before the connection is closed.
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// An open HTTP/2 connection to an endpoint, driven by a task of its own. The connection
/// closes once this handle and every stream on it are gone.
pub(super) struct H2Conn {
    /// Taken by one request at a time, to open its stream.
    tx: Arc<Mutex<SendRequest<Bytes>>>,
    /// Set when the connection has ended or takes no more streams: requests then go to a new
    /// one.
    closed: Arc<AtomicBool>,
}

impl H2Conn {
    /// Speaks HTTP/2 (prior knowledge) over `io`, with hyper's client settings.
    pub(super) async fn handshake<T>(io: T) -> Result<H2Conn, h2::Error>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, connection) = h2::client::Builder::new()
            .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME_SIZE)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .max_send_buffer_size(MAX_SEND_BUFFER_SIZE)
            .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await?;
        let closed = Arc::new(AtomicBool::new(false));
        let ended = closed.clone();
        super::spawn_connection(
            async move {
                let result = connection.await;
                ended.store(true, Ordering::Release);
                result
            },
            "HTTP/2",
        );
        Ok(H2Conn {
            tx: Arc::new(Mutex::new(tx)),
            closed,
        })
    }

    /// Whether the connection has ended, or failed in a way that ends it.
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A handle to send one request with.
    pub(super) fn sender(&self) -> H2Sender {
        H2Sender {
            tx: self.tx.clone(),
            closed: self.closed.clone(),
        }
    }
}

/// Sends one request on an [`H2Conn`].
pub(super) struct H2Sender {
    tx: Arc<Mutex<SendRequest<Bytes>>>,
    closed: Arc<AtomicBool>,
}

impl H2Sender {
    /// Waits for this request's turn to open a stream, and for the previous request's stream
    /// to be open (the server's limit). An error means the connection takes no more streams
    /// (gone away, failed, out of stream IDs); it is then marked closed.
    pub(super) async fn ready(self) -> Result<H2Ready, UpstreamError> {
        let mut tx = self.tx.lock_owned().await;
        match std::future::poll_fn(|cx| tx.poll_ready(cx)).await {
            Ok(()) => Ok(H2Ready {
                tx,
                closed: self.closed,
            }),
            Err(e) => {
                self.closed.store(true, Ordering::Release);
                Err(UpstreamError::H2(e))
            }
        }
    }
}

/// A connection ready to open a stream, held by one request.
pub(super) struct H2Ready {
    tx: OwnedMutexGuard<SendRequest<Bytes>>,
    closed: Arc<AtomicBool>,
}

impl H2Ready {
    /// Sends `req`'s head: the exchange then sends its body as the server's flow control lets
    /// it and resolves to the response head, its body streaming. hyper's rule for
    /// `content-length` applies: set from an exact body size when missing, unless the body is
    /// empty and the method defines none.
    ///
    /// Not `async`: opening the stream does not wait, and the caller's future then holds only
    /// the exchange, not the request as well.
    pub(super) fn send<B>(self, req: Request<B>) -> Result<Exchange<B>, UpstreamError>
    where
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BodyError>,
    {
        let (parts, body) = req.into_parts();
        let mut head = Request::from_parts(parts, ());
        if let Some(len) = body.size_hint().exact()
            && (len != 0 || has_payload_semantics(head.method()))
        {
            head.headers_mut()
                .entry(header::CONTENT_LENGTH)
                .or_insert_with(|| len.into());
        }
        let eos = body.is_end_stream();
        let H2Ready { mut tx, closed } = self;
        let sent = tx.send_request(head, eos);
        // The next request may open its stream (or wait for this one's to open) now.
        drop(tx);
        let (response, stream) = sent.map_err(|e| failed(&closed, e))?;
        Ok(Exchange {
            response,
            pipe: (!eos).then(|| Pipe::new(body, stream)),
            closed,
        })
    }
}

/// A stream's failure `e`; the connection is marked `closed` when `e` ended it.
fn failed(closed: &AtomicBool, e: h2::Error) -> UpstreamError {
    if e.is_go_away() || e.is_io() {
        closed.store(true, Ordering::Release);
    }
    UpstreamError::H2(e)
}

/// Whether `method` gives a request body meaning (RFC 9110 §9.3): for the others an empty
/// body needs no `content-length: 0`.
fn has_payload_semantics(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT
    )
}

/// One request in flight: its body piped while the response head is awaited.
pub(super) struct Exchange<B> {
    response: ResponseFuture,
    pipe: Option<Pipe<B>>,
    /// The connection's flag, set when the stream's failure ended the connection.
    closed: Arc<AtomicBool>,
}

impl<B> Future for Exchange<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BodyError>,
{
    type Output = Result<Response<H2Body>, UpstreamError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(pipe) = &mut this.pipe {
            match pipe.poll(cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => this.pipe = None,
                // The pipe reset the stream: the request cannot complete.
                Poll::Ready(Err(PipeError::Body(e))) => {
                    return Poll::Ready(Err(UpstreamError::RequestBody(e)));
                }
                // The stream failed: the response says how (a server may answer and then
                // reset the rest of the request).
                Poll::Ready(Err(PipeError::H2(e))) => {
                    tracing::debug!(error = %e, "upstream request body cut short");
                    this.pipe = None;
                }
                Poll::Ready(Err(PipeError::Closed)) => {
                    tracing::debug!("upstream stream stopped taking the request body");
                    this.pipe = None;
                }
            }
        }
        let response =
            ready!(Pin::new(&mut this.response).poll(cx)).map_err(|e| failed(&this.closed, e))?;
        let cancel = this.pipe.take().map(Pipe::spawn);
        let (parts, recv) = response.into_parts();
        let body = H2Body::new(recv, &parts.headers, cancel);
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use futures_util::{StreamExt, stream};
    use h2::server::SendResponse;
    use h2::{Reason, RecvStream};
    use http::{HeaderMap, HeaderValue, StatusCode};
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    use super::*;
    use crate::http::UpstreamBody;
    use crate::http::client::{FromUpstream, UpstreamClients, lock};
    use crate::http::streams::reason;

    type Frames =
        StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, BodyError>>>;

    /// A request body of `frames`, ending after the last.
    fn frames(frames: Vec<Frame<Bytes>>) -> Frames {
        StreamBody::new(stream::iter(frames.into_iter().map(Ok)).boxed())
    }

    /// A request body fed through the returned sender; it ends when the sender is dropped.
    fn fed() -> (mpsc::Sender<Bytes>, Frames) {
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        let chunks = stream::unfold(rx, |mut rx| async move {
            let chunk = rx.recv().await?;
            Some((Ok(Frame::data(chunk)), rx))
        });
        (tx, StreamBody::new(chunks.boxed()))
    }

    /// An HTTP/2 server on loopback, the h2 crate's so that each test controls frames and
    /// resets. It allows `max_streams` at once, runs `handle` for each stream and, when
    /// `goaway_after` is not 0, closes a connection gracefully after that many streams.
    struct Server {
        addr: std::net::SocketAddr,
        /// Connections accepted.
        accepted: Arc<AtomicUsize>,
        /// Connections that have ended since.
        ended: Arc<AtomicUsize>,
    }

    impl Server {
        async fn start<F, Fut>(max_streams: u32, handle: F) -> Server
        where
            F: Fn(Request<RecvStream>, SendResponse<Bytes>) -> Fut + Clone + Send + 'static,
            Fut: Future<Output = ()> + Send + 'static,
        {
            Server::start_with(max_streams, 0, handle).await
        }

        async fn start_with<F, Fut>(max_streams: u32, goaway_after: usize, handle: F) -> Server
        where
            F: Fn(Request<RecvStream>, SendResponse<Bytes>) -> Fut + Clone + Send + 'static,
            Fut: Future<Output = ()> + Send + 'static,
        {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let accepted = Arc::new(AtomicUsize::new(0));
            let ended = Arc::new(AtomicUsize::new(0));
            let (count, done) = (accepted.clone(), ended.clone());
            tokio::spawn(async move {
                loop {
                    let (io, _) = listener.accept().await.unwrap();
                    count.fetch_add(1, Ordering::SeqCst);
                    let (handle, done) = (handle.clone(), done.clone());
                    tokio::spawn(async move {
                        let mut conn = h2::server::Builder::new()
                            .max_concurrent_streams(max_streams)
                            .handshake::<_, Bytes>(io)
                            .await
                            .unwrap();
                        let mut streams = 0;
                        while let Some(Ok((req, respond))) = conn.accept().await {
                            tokio::spawn(handle(req, respond));
                            streams += 1;
                            if streams == goaway_after {
                                conn.graceful_shutdown();
                            }
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                    });
                }
            });
            Server {
                addr,
                accepted,
                ended,
            }
        }

        async fn connect(&self) -> H2Conn {
            let io = TcpStream::connect(self.addr).await.unwrap();
            H2Conn::handshake(io).await.unwrap()
        }
    }

    /// Sends `req` on `conn` as the pool does, once its turn comes.
    async fn send<B>(conn: &H2Conn, req: Request<B>) -> Result<Response<H2Body>, UpstreamError>
    where
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BodyError>,
    {
        conn.sender().ready().await?.send(req)?.await
    }

    fn request<B>(method: Method, body: B) -> Request<B> {
        Request::builder()
            .method(method)
            .uri("http://catalog/items")
            .body(body)
            .unwrap()
    }

    fn empty() -> Frames {
        frames(Vec::new())
    }

    /// Answers 200 with `body` and no trailers.
    fn answer(mut respond: SendResponse<Bytes>, body: &'static str) {
        let mut stream = respond.send_response(Response::new(()), false).unwrap();
        stream
            .send_data(Bytes::from_static(body.as_bytes()), true)
            .unwrap();
    }

    /// Reads a request body to its end: its bytes and its trailers.
    async fn read(mut body: RecvStream) -> (Vec<u8>, Option<HeaderMap>) {
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            body.flow_control().release_capacity(chunk.len()).unwrap();
            data.extend_from_slice(&chunk);
        }
        (data, body.trailers().await.unwrap())
    }

    async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), future)
            .await
            .unwrap_or_else(|_| panic!("{what}: timed out"))
    }

    async fn text(response: Response<H2Body>) -> String {
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn requests_beyond_the_servers_stream_limit_wait_for_a_stream() {
        let open = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (o, m) = (open.clone(), most.clone());
        let server = Server::start(1, move |_, respond| {
            let (open, most) = (o.clone(), m.clone());
            async move {
                most.fetch_max(open.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                open.fetch_sub(1, Ordering::SeqCst);
                answer(respond, "ok");
            }
        })
        .await;
        let conn = server.connect().await;
        // Once one answer is in, the server's SETTINGS (its limit) are known.
        let first = within("first", send(&conn, request(Method::GET, empty()))).await;
        assert_eq!(text(first.unwrap()).await, "ok");
        let sends = (0..4).map(|_| send(&conn, request(Method::GET, empty())));
        let responses = within("4 requests", futures_util::future::join_all(sends)).await;
        for response in responses {
            assert_eq!(text(response.unwrap()).await, "ok");
        }
        assert_eq!(most.load(Ordering::SeqCst), 1, "one stream at a time");
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_ends_with_the_frame_that_carried_the_end() {
        let server = Server::start(10, |req: Request<RecvStream>, mut respond| async move {
            if req.uri().path() == "/bodiless" {
                respond.send_response(Response::new(()), true).unwrap();
            } else {
                answer(respond, "ok");
            }
        })
        .await;
        let conn = server.connect().await;
        let bodiless = Request::builder()
            .uri("http://catalog/bodiless")
            .body(empty())
            .unwrap();
        let response = within("bodiless", send(&conn, bodiless)).await.unwrap();
        assert!(response.body().is_end_stream(), "ended with the head");
        assert_eq!(response.body().size_hint().exact(), Some(0));
        let mut body = within("answer", send(&conn, request(Method::GET, empty())))
            .await
            .unwrap()
            .into_body();
        assert!(!body.is_end_stream(), "the body is still to come");
        let chunk = within("chunk", body.frame()).await.unwrap().unwrap();
        assert_eq!(chunk.into_data().unwrap(), "ok");
        // The chunk's DATA frame carried END_STREAM: a pipe passing it on sets the flag on it.
        assert!(body.is_end_stream(), "ended with its last chunk");
        assert!(within("end", body.frame()).await.is_none());
    }

    /// HPACK (patched in vendor/h2: encoding by reference, decoded values sharing their bytes,
    /// one split per header block) carries headers whole over one connection while both
    /// dynamic tables fill, evict and change: a value new with every request (inserted anew, so
    /// older entries are evicted), values that alternate (found among the newest entries or
    /// down their name's chain), a name with two values, names never indexed (`cookie`,
    /// `content-length`), a sensitive value, and a value too large to index. The server
    /// answers with the headers it received, so both directions are checked.
    #[tokio::test]
    async fn headers_cross_whole_while_the_hpack_tables_change() {
        let server = Server::start(10, |req: Request<RecvStream>, mut respond| async move {
            let mut response = Response::new(());
            *response.headers_mut() = req.headers().clone();
            respond.send_response(response, true).unwrap();
        })
        .await;
        let conn = server.connect().await;
        let large = HeaderValue::from_str(&"x".repeat(3500)).unwrap();
        for i in 0..300 {
            let mut req = Request::builder()
                .uri(format!("http://catalog/items/{}", i % 7))
                .body(empty())
                .unwrap();
            let headers = req.headers_mut();
            headers.insert("x-request-id", HeaderValue::from(i));
            let tenant = ["blue", "green", "red"][i % 3];
            headers.insert("x-tenant", HeaderValue::from_static(tenant));
            headers.append(header::ACCEPT, HeaderValue::from_static("text/plain"));
            headers.append(header::ACCEPT, HeaderValue::from_static("application/json"));
            headers.insert(header::COOKIE, HeaderValue::from(i % 5));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            let mut secret = HeaderValue::from_static("Bearer t0ken");
            secret.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, secret);
            if i % 50 == 0 {
                headers.insert("x-large", large.clone());
            }
            let sent = headers.clone();
            let response = within("echo", send(&conn, req)).await.unwrap();
            assert_eq!(response.headers(), &sent, "request {i}");
        }
    }

    #[tokio::test]
    async fn a_refused_stream_fails_with_its_reason() {
        let server = Server::start(10, |_, mut respond: SendResponse<Bytes>| async move {
            respond.send_reset(Reason::REFUSED_STREAM);
        })
        .await;
        let conn = server.connect().await;
        let failed = within("refused", send(&conn, request(Method::GET, empty()))).await;
        match failed {
            Err(UpstreamError::H2(e)) => assert_eq!(e.reason(), Some(Reason::REFUSED_STREAM)),
            other => panic!("expected a refused stream, got {other:?}"),
        }
        assert!(
            !conn.is_closed(),
            "a refused stream leaves the connection open"
        );
    }

    #[tokio::test]
    async fn a_reset_mid_body_fails_the_body_with_its_code_and_no_error_ends_it() {
        // The server resets once the client has read the first chunk (h2 drops what a reset
        // overtakes).
        let read_part = Arc::new(tokio::sync::Notify::new());
        let part_read = read_part.clone();
        let server = Server::start(10, move |req: Request<RecvStream>, mut respond| {
            let part_read = part_read.clone();
            async move {
                let code = match req.uri().path() {
                    "/internal" => Reason::INTERNAL_ERROR,
                    "/cancel" => Reason::CANCEL,
                    _ => Reason::NO_ERROR,
                };
                let mut stream = respond.send_response(Response::new(()), false).unwrap();
                stream
                    .send_data(Bytes::from_static(b"part"), false)
                    .unwrap();
                part_read.notified().await;
                stream.send_reset(code);
            }
        })
        .await;
        let conn = server.connect().await;
        for (path, failure) in [
            ("/internal", Some(Reason::INTERNAL_ERROR)),
            ("/cancel", Some(Reason::CANCEL)),
            ("/no-error", None),
        ] {
            let mut req = request(Method::GET, empty());
            *req.uri_mut() = format!("http://catalog{path}").parse().unwrap();
            let response = within("head", send(&conn, req)).await.unwrap();
            // As the proxy passes it on: the code is found in the error's chain of causes.
            let mut body = FromUpstream::Right(response.into_body());
            let part = within("part", body.frame()).await.unwrap().unwrap();
            assert_eq!(part.into_data().unwrap(), "part");
            read_part.notify_one();
            match (within("reset", body.frame()).await, failure) {
                (Some(Err(e)), Some(code)) => assert_eq!(reason(&*e), code, "{path}"),
                (None, None) => {}
                (other, _) => panic!("{path}: expected {failure:?}, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn requests_given_up_while_waiting_for_a_stream_are_not_sent() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let release = Arc::new(tokio::sync::Notify::new());
        let (saw, held) = (seen.clone(), release.clone());
        let server = Server::start(1, move |req: Request<RecvStream>, respond| {
            saw.lock().unwrap().push(req.uri().path().to_owned());
            let held = held.clone();
            async move {
                if req.uri().path() == "/hold" {
                    held.notified().await;
                }
                answer(respond, "ok");
            }
        })
        .await;
        let conn = server.connect().await;
        // Once one answer is in, the server's SETTINGS (its limit of one stream) are known.
        let first = within("first", send(&conn, request(Method::GET, empty()))).await;
        assert_eq!(text(first.unwrap()).await, "ok");
        let mut hold = request(Method::GET, empty());
        *hold.uri_mut() = "http://catalog/hold".parse().unwrap();
        let ready = conn.sender();
        let holding = tokio::spawn(async move { ready.ready().await?.send(hold)?.await });
        within("the held stream opens", async {
            while !seen.lock().unwrap().iter().any(|p| p == "/hold") {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        for _ in 0..3 {
            let mut late = request(Method::GET, empty());
            *late.uri_mut() = "http://catalog/late".parse().unwrap();
            let gave_up = tokio::time::timeout(Duration::from_millis(20), send(&conn, late)).await;
            assert!(gave_up.is_err(), "no stream is free");
        }
        release.notify_one();
        assert_eq!(text(holding.await.unwrap().unwrap()).await, "ok");
        let after = within("after", send(&conn, request(Method::GET, empty()))).await;
        assert_eq!(text(after.unwrap()).await, "ok");
        // The server takes streams in order: any late one came before the last.
        let late = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == "/late")
            .count();
        assert!(
            late <= 1,
            "{late} given-up requests reached the server: at most the one h2 had queued"
        );
    }

    #[tokio::test]
    async fn bodies_and_trailers_pass_both_ways_with_content_length_as_hyper_sets_it() {
        let server = Server::start(10, |req: Request<RecvStream>, mut respond| async move {
            let length = req.headers().get(header::CONTENT_LENGTH).cloned();
            let (data, trailers) = read(req.into_body()).await;
            let mut head = Response::new(());
            if let Some(length) = length {
                head.headers_mut().insert("x-request-length", length);
            }
            let mut stream = respond.send_response(head, false).unwrap();
            stream.send_data(Bytes::from(data), false).unwrap();
            let mut echoed = HeaderMap::new();
            echoed.insert("grpc-status", "0".parse().unwrap());
            if let Some(timeout) = trailers.and_then(|t| t.get("grpc-timeout").cloned()) {
                echoed.insert("x-grpc-timeout", timeout);
            }
            stream.send_trailers(echoed).unwrap();
        })
        .await;
        let conn = server.connect().await;
        let mut sent_trailers = HeaderMap::new();
        sent_trailers.insert("grpc-timeout", "1S".parse().unwrap());
        let body = frames(vec![
            Frame::data(Bytes::from_static(b"ping ")),
            Frame::data(Bytes::from_static(b"pong")),
            Frame::trailers(sent_trailers),
        ]);
        let response = within("grpc", send(&conn, request(Method::POST, body)))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            !response.headers().contains_key("x-request-length"),
            "a streamed body has no length"
        );
        let received = within("body", response.into_body().collect())
            .await
            .unwrap();
        let trailers = received.trailers().cloned().expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["x-grpc-timeout"], "1S", "request trailers arrived");
        assert_eq!(received.to_bytes(), "ping pong");

        let fixed = http_body_util::Full::new(Bytes::from_static(b"abc"));
        let response = within("post", send(&conn, request(Method::POST, fixed)))
            .await
            .unwrap();
        assert_eq!(response.headers()["x-request-length"], "3");
        let bodiless = within(
            "get",
            send(&conn, request(Method::GET, UpstreamBody::Empty)),
        )
        .await
        .unwrap();
        assert!(!bodiless.headers().contains_key("x-request-length"));
        let posted = within(
            "post",
            send(&conn, request(Method::POST, UpstreamBody::Empty)),
        )
        .await
        .unwrap();
        assert_eq!(
            posted.headers()["x-request-length"],
            "0",
            "POST defines a payload"
        );
    }

    /// Answers at once, then reports how the stream ended: the reset code, if reset.
    async fn answer_then_watch(
        mut respond: SendResponse<Bytes>,
        resets: mpsc::Sender<Option<Reason>>,
    ) {
        let mut stream = respond.send_response(Response::new(()), false).unwrap();
        let reset = std::future::poll_fn(|cx| stream.poll_reset(cx)).await.ok();
        let _ = resets.send(reset).await;
    }

    #[tokio::test]
    async fn a_request_dropped_before_its_answer_is_cancelled() {
        let (resets, mut reset) = mpsc::channel(1);
        let server = Server::start(10, move |_, mut respond: SendResponse<Bytes>| {
            let resets = resets.clone();
            async move {
                let reset = std::future::poll_fn(|cx| respond.poll_reset(cx)).await.ok();
                let _ = resets.send(reset).await;
            }
        })
        .await;
        let conn = server.connect().await;
        let (feed, body) = fed();
        let sent = send(&conn, request(Method::POST, body));
        let gave_up = tokio::time::timeout(Duration::from_millis(50), sent).await;
        assert!(gave_up.is_err(), "the server never answers");
        assert_eq!(
            within("reset", reset.recv()).await,
            Some(Some(Reason::CANCEL))
        );
        drop(feed);
    }

    #[tokio::test]
    async fn a_response_dropped_while_its_request_streams_cancels_both() {
        let (resets, mut reset) = mpsc::channel(1);
        let server = Server::start(10, move |_, respond| {
            answer_then_watch(respond, resets.clone())
        })
        .await;
        let conn = server.connect().await;
        let (feed, body) = fed();
        feed.send(Bytes::from_static(b"first")).await.unwrap();
        let response = within("head", send(&conn, request(Method::POST, body)))
            .await
            .unwrap();
        drop(response);
        assert_eq!(
            within("reset", reset.recv()).await,
            Some(Some(Reason::CANCEL))
        );
        within("the pipe stops reading the body", feed.closed()).await;
    }

    #[tokio::test]
    async fn a_request_body_is_read_only_as_fast_as_the_server_takes_it() {
        const CHUNK: usize = 16 * 1024;
        const TOTAL: usize = 4 * 1024 * 1024;
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let wait = Arc::new(std::sync::Mutex::new(Some(wait)));
        let server = Server::start(10, move |req: Request<RecvStream>, mut respond| {
            let wait = wait.lock().unwrap().take();
            async move {
                let stream = respond.send_response(Response::new(()), false);
                if let Some(wait) = wait {
                    let _ = wait.await;
                }
                let (data, _) = read(req.into_body()).await;
                let mut stream = stream.unwrap();
                stream
                    .send_data(Bytes::from(data.len().to_string()), true)
                    .unwrap();
            }
        })
        .await;
        let conn = server.connect().await;
        let produced = Arc::new(AtomicUsize::new(0));
        let counted = produced.clone();
        let chunks = stream::iter(0..TOTAL / CHUNK).map(move |_| {
            counted.fetch_add(CHUNK, Ordering::SeqCst);
            Ok::<_, BodyError>(Frame::data(Bytes::from(vec![7u8; CHUNK])))
        });
        let body: Frames = StreamBody::new(chunks.boxed());
        let response = within("head", send(&conn, request(Method::POST, body)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before_reading = produced.load(Ordering::SeqCst);
        // The server's window (64 KiB by default) and a chunk or two polled ahead.
        assert!(
            before_reading <= 64 * 1024 + 2 * CHUNK,
            "{before_reading} bytes read while the server read none"
        );
        go.send(()).unwrap();
        assert_eq!(within("echo", text(response)).await, TOTAL.to_string());
    }

    #[tokio::test]
    async fn the_connection_closes_when_its_handle_and_streams_are_gone() {
        let server = Server::start(10, |_, respond| async move { answer(respond, "ok") }).await;
        let conn = server.connect().await;
        let response = within("get", send(&conn, request(Method::GET, empty())))
            .await
            .unwrap();
        drop(conn);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(server.ended.load(Ordering::SeqCst), 0, "a stream is open");
        assert_eq!(within("body", text(response)).await, "ok");
        within("close", async {
            while server.ended.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    #[tokio::test]
    async fn a_connection_the_server_closes_is_replaced() {
        let server =
            Server::start_with(10, 1, |_, respond| async move { answer(respond, "ok") }).await;
        let endpoint = http::uri::Authority::try_from(server.addr.to_string()).unwrap();
        let clients = UpstreamClients::new(Duration::from_secs(1));
        let get = || async {
            let req = request(Method::GET, UpstreamBody::Empty);
            let response = clients.send(http::Version::HTTP_2, &endpoint, req).await;
            let body = response.unwrap().into_body().collect().await.unwrap();
            String::from_utf8(body.to_bytes().to_vec()).unwrap()
        };
        assert_eq!(within("first", get()).await, "ok");
        within("the close reaches the pool", async {
            while !lock(&clients.h2.connections)
                .values()
                .all(H2Conn::is_closed)
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert_eq!(within("second", get()).await, "ok");
        assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
    }
}

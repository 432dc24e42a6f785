//! Serving a downstream connection: HTTP/1.1 through hyper, HTTP/2 straight over the `h2` crate
//! with every stream of a connection polled from the connection's own task (no task, channel or
//! boxed future per stream, as hyper's HTTP/2 server has).

use std::cell::RefCell;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, Wake, Waker, ready};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::task::AtomicWaker;
use futures_util::{FutureExt, StreamExt, future};
use h2::Reason;
use h2::server::{Connection, Handshake, SendResponse};
use http::{HeaderValue, Request, Response, header};
use http_body_util::Either;
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::body::FromClient;
use super::streams::{H2Body, Pipe};
use super::{HttpConnection, client, handle};
use crate::config::http::Codec;
use crate::detect::{self, Detected};
use crate::drain::DrainWatch;
use crate::error::ResponseBody;
use crate::io::Rewind;

/// hyper's HTTP/2 server settings, kept when the server moved off hyper: each stream's and the
/// connection's receive window.
const WINDOW: u32 = 1024 * 1024;
/// Largest frame taken from a client.
const MAX_FRAME_SIZE: u32 = 16 * 1024;
/// Largest header list taken from a client.
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// Bytes of response body a stream may buffer beyond what the client's window lets go.
const MAX_SEND_BUFFER_SIZE: usize = 400 * 1024;
/// Streams a client may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 200;
/// Streams a client may make us reset for its errors before the connection is closed.
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// The connection builders: their settings never change. HTTP/1.1 keeps header case and takes
/// upgrades (WebSocket); HTTP/2 takes no extended CONNECT and sends no pings.
static HTTP1: LazyLock<http1::Builder> = LazyLock::new(|| {
    let mut builder = http1::Builder::new();
    builder.preserve_header_case(true);
    builder
});
static HTTP2: LazyLock<h2::server::Builder> = LazyLock::new(|| {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER_SIZE)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS));
    builder
});

/// Serves HTTP on `io` until the client closes or shutdown ends the connection; in-flight
/// requests finish when draining starts. As Envoy's `codec_type`, HTTP1 or HTTP2 fail a client
/// speaking the other, and AUTO serves the version `protocol` settles (`http/1.1` by ALPN or
/// detection, `h2c` by detection); otherwise it reads the first bytes for HTTP/2's preface.
///
/// The connection's state is most of an idle connection's memory: it is boxed once, and the
/// returned future holds only that box and the drain signal (no copy of `io`).
pub(crate) fn serve<I>(
    io: I,
    conn: HttpConnection,
    protocol: Option<&str>,
) -> impl Future<Output = ()> + Send + 'static
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let drain = conn.drain.clone();
    let conn = Arc::new(conn);
    match (conn.config.codec, protocol) {
        (Codec::Http1, _) | (Codec::Auto, Some(detect::HTTP1)) => {
            future::Either::Left(http1(io, conn, drain))
        }
        (Codec::Http2, _) | (Codec::Auto, Some(detect::H2C)) => {
            future::Either::Right(future::Either::Left(http2(io, conn, drain)))
        }
        // ALPN `h2` is no proof: an Envoy cluster that offers `h2` and `http/1.1` (as the mesh
        // configures them) speaks its own codec, HTTP/1.1 unless told otherwise. Boxed: it
        // holds `io` while it reads.
        (Codec::Auto, _) => {
            future::Either::Right(future::Either::Right(Box::pin(auto(io, conn, drain))))
        }
    }
}

/// Reads the first bytes, as the listener's detect stage does, and serves the version they
/// show (HTTP/1.1 unless HTTP/2's preface); they are replayed to the codec. A connection that
/// sends nothing closes when draining starts.
async fn auto<I>(mut io: I, conn: Arc<HttpConnection>, mut drain: DrainWatch)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let detected = tokio::select! {
        detected = detect::detect(&mut io, None) => detected,
        () = drain.draining() => return,
    };
    match detected {
        Ok((detected, read)) => {
            let io = Rewind::new(read.freeze(), io);
            if detected == Detected::Protocol(detect::H2C) {
                http2(io, conn, drain).await;
            } else {
                http1(io, conn, drain).await;
            }
        }
        Err(e) => tracing::debug!(error = %e, "http connection failed before its first request"),
    }
}

/// Serves HTTP/1.1 (with upgrades) through hyper.
fn http1<I>(io: I, conn: Arc<HttpConnection>, drain: DrainWatch) -> impl Future<Output = ()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Each request's future is boxed: it is over a kilobyte, and hyper would otherwise copy it
    // whole into its per-request slot (allocated per connection), and again on each change of
    // state.
    let service = service_fn(move |req: Request<Incoming>| {
        Box::pin(handle(conn.clone(), req.map(Either::Left)).map(Ok::<_, Infallible>))
    });
    let served = HTTP1
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    drive(Box::pin(served), |served| served.graceful_shutdown(), drain)
}

/// Serves HTTP/2 over the `h2` crate.
fn http2<I>(io: I, conn: Arc<HttpConnection>, drain: DrainWatch) -> impl Future<Output = ()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let served = Served::new(HTTP2.handshake(io), conn, handle);
    drive(Box::pin(served), Served::graceful_shutdown, drain)
}

/// Runs `served` to its end; once draining starts, `shutdown` lets its in-flight requests
/// finish, until the drain closes it.
async fn drive<C, E>(mut served: Pin<Box<C>>, shutdown: fn(Pin<&mut C>), mut drain: DrainWatch)
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let result = tokio::select! {
        // In order: the connection is polled far more often than the drain changes.
        biased;
        result = served.as_mut() => result,
        () = drain.draining() => {
            shutdown(served.as_mut());
            tokio::select! {
                result = served.as_mut() => result,
                () = drain.closed() => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "http connection ended with an error");
    }
}

/// An HTTP/2 connection and its streams, all polled from this one future: accepting a stream
/// starts its request, and a stream's frames go out in the same poll that made them.
struct Served<I, F> {
    state: State<I>,
    conn: Arc<HttpConnection>,
    /// Starts a request's handling (the request path; in tests, a stand-in).
    start: fn(Arc<HttpConnection>, Request<FromClient>) -> F,
    /// Made with the first stream: an empty set allocates room for one whole stream.
    streams: Option<FuturesUnordered<Stream<F>>>,
    /// The waker the connection is polled with, and its state.
    wake: Arc<ConnectionWake>,
    waker: Waker,
}

/// The waker `h2` keeps for the connection, which it wakes whenever a stream has something to
/// send. Most such wakes come from the connection's own streams while this task polls them,
/// and the poll then goes on to write what they sent: such a wake is only noted, rather than
/// scheduling the task once more for nothing.
#[derive(Default)]
struct ConnectionWake {
    task: AtomicWaker,
    /// The task is polling the connection and its streams.
    polling: AtomicBool,
    /// Woken since the connection's last poll began.
    woken: AtomicBool,
}

impl Wake for ConnectionWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Noted first: a task that stops polling checks the note after clearing `polling`,
        // so of this wake and that check, one sees the other.
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }
}

/// Where an HTTP/2 connection is. Its handshake is a state of the same box as its serving, so
/// the connection's I/O is held in one place for its whole life.
enum State<I> {
    /// Reading the client's preface and settings; whether shutdown has already begun (the
    /// connection then sends GOAWAY once it can, as hyper's does).
    Handshaking(Handshake<I, Bytes>, bool),
    Serving(Connection<I, Bytes>),
}

impl<I, F> Served<I, F>
where
    I: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = Response<ResponseBody>>,
{
    fn new(
        handshake: Handshake<I, Bytes>,
        conn: Arc<HttpConnection>,
        start: fn(Arc<HttpConnection>, Request<FromClient>) -> F,
    ) -> Self {
        let wake = Arc::new(ConnectionWake::default());
        Served {
            state: State::Handshaking(handshake, false),
            conn,
            start,
            streams: None,
            waker: Waker::from(wake.clone()),
            wake,
        }
    }

    /// Sends GOAWAY: streams already open finish, and the connection closes once they have.
    fn graceful_shutdown(self: Pin<&mut Self>) {
        match &mut self.get_mut().state {
            State::Handshaking(_, shutdown) => *shutdown = true,
            State::Serving(connection) => connection.graceful_shutdown(),
        }
    }
}

impl<I, F> Future for Served<I, F>
where
    I: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = Response<ResponseBody>>,
{
    type Output = Result<(), h2::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let State::Handshaking(handshake, shutdown) = &mut this.state {
            let mut connection = ready!(Pin::new(handshake).poll(cx))?;
            if *shutdown {
                connection.graceful_shutdown();
            }
            this.state = State::Serving(connection);
        }
        this.wake.task.register(cx.waker());
        this.wake.polling.store(true, Ordering::SeqCst);
        let polled = this.serve(cx);
        this.wake.polling.store(false, Ordering::SeqCst);
        // Woken while the connection was being polled, or since: it has more to do.
        if polled.is_pending() && this.wake.woken.swap(false, Ordering::SeqCst) {
            cx.waker().wake_by_ref();
        }
        polled
    }
}

impl<I, F> Served<I, F>
where
    I: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = Response<ResponseBody>>,
{
    /// Polls the streams, then the connection (which writes what they sent and reads what
    /// came), until neither has more to do.
    fn serve(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>> {
        // Called once the handshake is done.
        let State::Serving(connection) = &mut self.state else {
            return Poll::Ready(Ok(()));
        };
        loop {
            if let Some(streams) = &mut self.streams {
                while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
            }
            // The poll below answers every wake so far.
            self.wake.woken.store(false, Ordering::SeqCst);
            let mut connection_cx = Context::from_waker(&self.waker);
            // Ends (`None`) once the client has gone, or once every stream has ended after a
            // GOAWAY; the streams still here are then dropped, as their requests are moot.
            let accepted = ready!(connection.poll_accept(&mut connection_cx)).transpose()?;
            let Some((req, respond)) = accepted else {
                return Poll::Ready(Ok(()));
            };
            let (parts, recv) = req.into_parts();
            let body = H2Body::new(recv, &parts.headers, None);
            let req = Request::from_parts(parts, Either::Right(body));
            let streams = self.streams.get_or_insert_with(FuturesUnordered::new);
            streams.push(Stream {
                stage: Stage::Handling {
                    handling: (self.start)(self.conn.clone(), req),
                },
                respond,
            });
        }
    }
}

pin_project_lite::pin_project! {
    /// One request's stream: its handling, then its response's body.
    struct Stream<F> {
        #[pin]
        stage: Stage<F>,
        respond: SendResponse<Bytes>,
    }
}

pin_project_lite::pin_project! {
    #[project = StageProj]
    enum Stage<F> {
        Handling { #[pin] handling: F },
        Sending { pipe: Pipe<ResponseBody> },
    }
}

impl<F: Future<Output = Response<ResponseBody>>> Future for Stream<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A panic ends only its own stream: the connection's other streams share this task.
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.as_mut().poll_stage(cx))) {
            Ok(polled) => polled,
            Err(_) => {
                tracing::error!("a request's handling panicked; its stream is reset");
                // Itself guarded: a panic inside `h2` leaves its state poisoned.
                let respond = self.project().respond;
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    respond.send_reset(Reason::INTERNAL_ERROR);
                }));
                Poll::Ready(())
            }
        }
    }
}

impl<F: Future<Output = Response<ResponseBody>>> Stream<F> {
    fn poll_stage(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            match this.stage.as_mut().project() {
                StageProj::Handling { handling } => {
                    let Poll::Ready(response) = handling.poll(cx) else {
                        // A client that resets the stream gives up the request: its handling
                        // (an upstream request, say) is dropped with it.
                        if let Poll::Ready(reset) = this.respond.poll_reset(cx) {
                            tracing::debug!(?reset, "request cancelled by the client");
                            return Poll::Ready(());
                        }
                        return Poll::Pending;
                    };
                    match send_head(this.respond, response) {
                        Some(pipe) => this.stage.set(Stage::Sending { pipe }),
                        None => return Poll::Ready(()),
                    }
                }
                StageProj::Sending { pipe } => {
                    if let Err(e) = ready!(pipe.poll(cx)) {
                        tracing::debug!(error = %e, "response body stopped early");
                    }
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// Sends `response`'s head as hyper's server did: without connection-specific headers (HTTP/2
/// has none; `te` belongs to requests only), with `date` and, for a body of known size,
/// `content-length` when missing. The pipe for its body, if it has one.
fn send_head(
    respond: &mut SendResponse<Bytes>,
    response: Response<ResponseBody>,
) -> Option<Pipe<ResponseBody>> {
    let (parts, body) = response.into_parts();
    let mut head = Response::from_parts(parts, ());
    let headers = head.headers_mut();
    if client::strip_hop_by_hop(headers, false) {
        headers.remove(header::TE);
    }
    headers.entry(header::DATE).or_insert_with(date);
    let eos = body.is_end_stream();
    if !eos && let Some(len) = body.size_hint().exact() {
        headers
            .entry(header::CONTENT_LENGTH)
            .or_insert_with(|| len.into());
    }
    match respond.send_response(head, eos) {
        Ok(stream) => (!eos).then(|| Pipe::new(body, stream)),
        Err(e) => {
            tracing::debug!(error = %e, "response head refused");
            respond.send_reset(Reason::INTERNAL_ERROR);
            None
        }
    }
}

/// The `date` header's value: rendered at most once a second on each thread, as hyper does.
fn date() -> HeaderValue {
    thread_local! {
        static DATE: RefCell<(u64, HeaderValue)> =
            const { RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(rendered, value)| {
        if *rendered != second
            && let Ok(rendered_now) = HeaderValue::try_from(httpdate::fmt_http_date(now))
        {
            *rendered = second;
            *value = rendered_now;
        }
        value.clone()
    })
}

#[cfg(test)]
mod tests;

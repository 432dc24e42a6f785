//! HTTP forwarding: serves HTTP/1.1 and h2c on a connection and takes each request through the
//! route → cluster → endpoint stages to an upstream, streaming bodies both ways.

mod body;
pub(crate) mod client;
mod faults;
mod forward;
mod local;
mod metered;
mod mirror;
mod replay;
mod retry;
mod upgrade;

pub(crate) use body::UpstreamBody;
pub(crate) use metered::Metered;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::authz::{Decision, Subject, authorize};
use crate::config::http::{Codec, HttpConfig, RouteSource};
use crate::config::matcher::RequestView;
use crate::config::route::{Action, RedirectFrom, Route};
use crate::drain::DrainWatch;
use crate::error::{ForwardError, ResponseBody};
use crate::table::{Shared, Table};
use crate::telemetry::{Direction, PendingEvent, RouteClusterStats};
use futures_util::{FutureExt, future};
use http_body_util::Either;
use metered::{Recorder, Upstream, WantUpstream};

/// What every request on one downstream connection shares.
#[derive(Debug)]
pub(crate) struct HttpConnection {
    /// Proxy state (table, metrics).
    pub(crate) shared: Arc<Shared>,
    /// The HTTP connection manager of the selected filter chain.
    pub(crate) config: Arc<HttpConfig>,
    /// The listener's direction, for metrics.
    pub(crate) direction: Direction,
    /// The client address, for logs.
    pub(crate) peer: SocketAddr,
    /// The client's verified SPIFFE ID (mTLS); `None` for plaintext.
    pub(crate) peer_identity: Option<Arc<str>>,
    /// Shutdown signal, handed to upgraded connections.
    pub(crate) drain: DrainWatch,
}

/// The connection builders: their settings never change, and a connection borrows its builder
/// for its whole life. `auto` reads the first bytes to tell HTTP/1.1 from HTTP/2; it ignores
/// `http1_only` and `http2_only` once upgrades are on, so a single-codec listener uses the
/// version's own builder, which fails a client speaking the other one.
static AUTO: LazyLock<auto::Builder<TokioExecutor>> = LazyLock::new(|| {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().preserve_header_case(true);
    builder
});
static HTTP1: LazyLock<http1::Builder> = LazyLock::new(|| {
    let mut builder = http1::Builder::new();
    builder.preserve_header_case(true);
    builder
});
static HTTP2: LazyLock<http2::Builder<TokioExecutor>> =
    LazyLock::new(|| http2::Builder::new(TokioExecutor::new()));

/// Serves HTTP on `io` until the client closes or shutdown ends the connection; in-flight
/// requests finish when draining starts.
///
/// The connection's state is most of an idle connection's memory: it is boxed once here, and
/// the returned future holds only that box and the drain signal (no copy of `io`).
pub(crate) fn serve<I>(io: I, conn: HttpConnection) -> impl Future<Output = ()> + Send + 'static
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let drain = conn.drain.clone();
    let codec = conn.config.codec;
    let conn = Arc::new(conn);
    // Each request's future is boxed: it is over a kilobyte, and hyper would otherwise copy it
    // whole into its per-request slot (HTTP/1.1, allocated per connection) or task (HTTP/2),
    // and again on each change of state.
    let service =
        service_fn(move |req| Box::pin(handle(conn.clone(), req).map(Ok::<_, Infallible>)));
    let io = TokioIo::new(io);
    match codec {
        Codec::Auto => future::Either::Left(drive(
            Box::pin(AUTO.serve_connection_with_upgrades(io, service)),
            |served| served.graceful_shutdown(),
            drain,
        )),
        Codec::Http1 => future::Either::Right(future::Either::Left(drive(
            Box::pin(HTTP1.serve_connection(io, service).with_upgrades()),
            |served| served.graceful_shutdown(),
            drain,
        ))),
        Codec::Http2 => future::Either::Right(future::Either::Right(drive(
            Box::pin(HTTP2.serve_connection(io, service)),
            |served| served.graceful_shutdown(),
            drain,
        ))),
    }
}

/// Runs `served` to its end; once draining starts, `shutdown` lets its in-flight requests
/// finish, until the drain closes it.
async fn drive<C, E>(mut served: Pin<Box<C>>, shutdown: fn(Pin<&mut C>), mut drain: DrainWatch)
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let result = tokio::select! {
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

/// The comma-separated tokens of every `name` header, trimmed (`Connection`, `TE`).
fn tokens(headers: &http::HeaderMap, name: http::header::HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// What a request's metrics and its event (access log, taps) need when its response is known.
struct Accounting<'c> {
    conn: &'c HttpConnection,
    started: Instant,
    grpc: bool,
    /// The request's event, when a log or a tap wants it.
    event: Option<Box<PendingEvent>>,
}

impl Accounting<'_> {
    /// Counts `response` in `stats`, now for the latency and when its body ends for the rest;
    /// the event records `route`, `cluster` and `flags`.
    fn respond(
        self,
        stats: &RouteClusterStats,
        route: &str,
        cluster: &str,
        flags: &'static str,
        mut response: Response<ResponseBody>,
    ) -> Response<ResponseBody> {
        let counters = stats.for_peer(self.conn.peer_identity.as_ref());
        counters.latency(self.started.elapsed());
        let event = self.event.map(|mut event| {
            let upstream = response.extensions().get::<Upstream>().map(|u| u.0);
            event.respond(route, cluster, response.status().as_u16(), flags, upstream);
            (event, self.conn.shared.metrics.events.clone())
        });
        let recorder = Recorder::new(
            counters,
            response.status(),
            response.headers(),
            self.grpc,
            event,
        );
        match response.body_mut() {
            Either::Left(body) => body.record(recorder),
            Either::Right(body) => {
                recorder.finish_local(hyper::body::Body::size_hint(body).exact().unwrap_or(0));
            }
        }
        response
    }
}

/// One request, start to response headers; counted in the metrics when its response ends.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` holds its arguments twice, in a future written whole per request"
)]
fn handle(
    conn: Arc<HttpConnection>,
    mut req: Request<Incoming>,
) -> impl Future<Output = Response<ResponseBody>> {
    async move {
        let conn = &*conn;
        let started = Instant::now();
        let table = conn.shared.table.load_full();
        let metrics = &conn.shared.metrics;
        let span = metrics
            .events
            .tracer()
            .and_then(|tracer| tracer.start(req.headers_mut()));
        let event = (span.is_some() || metrics.events.wanted()).then(|| {
            // Marks the request so the exchange notes the endpoint that answers.
            req.extensions_mut().insert(WantUpstream);
            let local = metrics.local_identity().to_owned();
            let peer = conn.peer_identity.as_deref().unwrap_or_default().to_owned();
            let identities = match conn.direction {
                Direction::Inbound => (peer, local),
                Direction::Outbound => (local, String::new()),
            };
            PendingEvent::start(
                conn.direction,
                req.method(),
                req.uri(),
                req.version(),
                req.headers(),
                conn.peer,
                identities,
                span,
            )
        });
        // After the event: logs and taps show the protocol the request arrived in, as Envoy's do.
        if conn.direction == Direction::Inbound {
            client::restore_orig_proto(&mut req, conn.peer_identity.is_some());
        }
        let grpc = RequestView::new(&req).is_grpc();
        let accounting = Accounting {
            conn,
            started,
            grpc,
            event,
        };
        let unrouted = metrics.unrouted(conn.direction);
        if !conn.config.authz.is_empty() {
            let view = RequestView::new(&req);
            let subject = Subject {
                peer: conn.peer_identity.as_deref(),
                request: Some(&view),
            };
            if let Decision::Deny(policy) = authorize(&conn.config.authz, subject) {
                metrics.authz_denied(conn.direction, if grpc { "grpc" } else { "http" });
                tracing::info!(
                    method = %req.method(),
                    path = req.uri().path(),
                    peer_identity = ?conn.peer_identity,
                    ?policy,
                    "request denied by authorization policy"
                );
                return accounting.respond(unrouted, "", "", "RBAC", local::denied(grpc));
            }
        }
        let route = match route(conn, &table, &req) {
            Ok(route) => route,
            Err(e) => {
                tracing::trace!(
                    path = req.uri().path(),
                    status = e.status().as_u16(),
                    flag = e.flag(),
                    error = %e,
                    "request"
                );
                return accounting.respond(unrouted, "", "", e.flag(), e.response());
            }
        };
        let local_stats = route.local_stats(conn.direction);
        if let Some(mut reply) = faults::check(conn, route, &req).await {
            // As Envoy, the route's response header changes apply to its local replies too.
            route.response_headers.apply(reply.headers_mut());
            tracing::trace!(
                path = req.uri().path(),
                route = %route.name,
                status = reply.status().as_u16(),
                "request answered by a fault or rate limit"
            );
            let flags = if reply.status() == http::StatusCode::TOO_MANY_REQUESTS {
                "RL"
            } else {
                "FI"
            };
            return accounting.respond(local_stats, &route.name, "", flags, reply);
        }
        match &route.action {
            Action::Forward(action) => {
                let target = action.clusters.pick();
                let result = forward::forward(conn, &table, route, action, target, req).await;
                let (response, flag) = match result {
                    Ok(response) => (response, "-"),
                    Err(e) => {
                        tracing::debug!(
                            error = %e,
                            side = ?e.side(),
                            retryable = e.retryable(),
                            "upstream request failed"
                        );
                        (e.response(), e.flag())
                    }
                };
                let stats = target.stats(conn.direction);
                accounting.respond(stats, &route.name, &target.cluster, flag, response)
            }
            Action::Redirect(redirect) => {
                let uri = req.uri();
                let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
                let view = RequestView::new(&req);
                let from = RedirectFrom {
                    scheme: uri.scheme_str().unwrap_or("http"),
                    authority: view.authority,
                    path_and_query,
                    matched: route.matcher.matched_len(path_and_query),
                };
                let mut response = local::redirect(redirect, from);
                route.response_headers.apply(response.headers_mut());
                accounting.respond(local_stats, &route.name, "", "-", response)
            }
            Action::Direct(direct) => {
                let mut response = local::direct(direct);
                route.response_headers.apply(response.headers_mut());
                accounting.respond(local_stats, &route.name, "", "-", response)
            }
        }
    }
}

/// The route stage: the listener's route config, then its first matching route.
fn route<'t>(
    conn: &'t HttpConnection,
    table: &'t Table,
    req: &Request<Incoming>,
) -> Result<&'t Route, ForwardError> {
    let config = match &conn.config.routes {
        RouteSource::Rds(name) => table.routes.get(name).ok_or(ForwardError::NoRoute)?,
        RouteSource::Inline(config) => config,
    };
    config
        .route(&RequestView::new(req))
        .ok_or(ForwardError::NoRoute)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::{
        CodecType, RouteSpecifier,
    };
    use http::Version;
    use http_body_util::Empty;
    use hyper::client::conn;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::drain::Drain;
    use crate::telemetry::{LocalWorkload, Metrics};

    /// A listener on 127.0.0.1 serving HTTP with `codec` and no routes (every request it takes
    /// is answered 404); the drain stays open while the returned handle lives.
    async fn listener(codec: CodecType) -> (SocketAddr, Drain) {
        let metrics = Metrics::new(LocalWorkload::default(), None, None);
        let hcm = HttpConnectionManager {
            codec_type: codec as i32,
            route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration::default())),
            ..Default::default()
        };
        let config = Arc::new(HttpConfig::compile(&hcm, &metrics).unwrap());
        let shared = Arc::new(Shared::new(metrics));
        let (drain, watch) = Drain::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let conn = HttpConnection {
                    shared: shared.clone(),
                    config: config.clone(),
                    direction: Direction::Inbound,
                    peer,
                    peer_identity: None,
                    drain: watch.clone(),
                };
                tokio::spawn(serve(stream, conn));
            }
        });
        (addr, drain)
    }

    /// The status of one `GET /` to `addr` over HTTP/1.1 or HTTP/2 (prior knowledge); `None`
    /// when the exchange fails.
    async fn status(addr: SocketAddr, version: Version) -> Option<u16> {
        let exchange = async {
            let io = TokioIo::new(TcpStream::connect(addr).await.ok()?);
            let req = Request::get("http://catalog/")
                .body(Empty::<bytes::Bytes>::new())
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
            Some(response.status().as_u16())
        };
        tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .expect("the exchange ends")
    }

    /// As Envoy's `codec_type`: AUTO serves both versions on one port, HTTP1 and HTTP2 only
    /// their own and fail a client speaking the other.
    #[tokio::test]
    async fn a_listener_serves_the_http_versions_its_codec_allows() {
        for (codec, http1, http2) in [
            (CodecType::Auto, Some(404), Some(404)),
            (CodecType::Http1, Some(404), None),
            (CodecType::Http2, None, Some(404)),
        ] {
            let (addr, _drain) = listener(codec).await;
            assert_eq!(
                status(addr, Version::HTTP_11).await,
                http1,
                "{codec:?}, HTTP/1.1"
            );
            assert_eq!(
                status(addr, Version::HTTP_2).await,
                http2,
                "{codec:?}, HTTP/2"
            );
        }
    }

    /// The future of a request, boxed and written whole for each one, stays small: a stage on
    /// the request path written as an `async fn` holds the request twice, and each stage's
    /// future holds the next one's.
    #[test]
    fn a_request_future_is_small() {
        fn size_of_future<F>(_: fn(Arc<HttpConnection>, Request<Incoming>) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = size_of_future(handle);
        assert!(size <= 2048, "a request's future takes {size} bytes");
    }
}

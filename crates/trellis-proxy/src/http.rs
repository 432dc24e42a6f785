//! HTTP forwarding: serves HTTP/1.1 and HTTP/2 on a connection and takes each request through
//! the route → cluster → endpoint stages to an upstream, streaming bodies both ways.

mod body;
pub(crate) mod client;
mod faults;
mod forward;
mod local;
mod metered;
mod mirror;
mod replay;
mod retry;
mod server;
mod streams;
mod upgrade;

pub(crate) use body::UpstreamBody;
pub(crate) use metered::Metered;
pub(crate) use server::serve;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use tokio::time::Instant;

use crate::authz::{Decision, Subject, authorize};
use crate::config::http::{HttpConfig, RouteSource};
use crate::config::matcher::RequestView;
use crate::config::route::{Action, RedirectFrom, Route};
use crate::drain::DrainWatch;
use crate::error::{ForwardError, ResponseBody};
use crate::table::{Shared, Table};
use crate::telemetry::{Direction, PendingEvent, RouteClusterStats};
use body::FromClient;
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
    mut req: Request<FromClient>,
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
        // A tunnel (HTTP/1.1's or HTTP/2's CONNECT) is refused, as by Envoy without CONNECT
        // among its upgrades: no route carries one.
        if req.method() == http::Method::CONNECT {
            let refused = ForwardError::UpgradeRejected(http::Method::CONNECT.to_string());
            return accounting.respond(unrouted, "", "", refused.flag(), refused.response());
        }
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
    req: &Request<FromClient>,
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
    use super::*;

    /// The future of a request, boxed and written whole for each one, stays small: a stage on
    /// the request path written as an `async fn` holds the request twice, and each stage's
    /// future holds the next one's.
    #[test]
    fn a_request_future_is_small() {
        fn size_of_future<F>(_: fn(Arc<HttpConnection>, Request<FromClient>) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = size_of_future(handle);
        assert!(size <= 2048, "a request's future takes {size} bytes");
    }
}

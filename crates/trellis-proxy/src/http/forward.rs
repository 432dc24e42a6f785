//! The cluster and endpoint stages of a forwarded request: the route's changes to the request,
//! mirrors, one exchange with one endpoint, and the route's changes to the response.

use std::time::Duration;

use futures_util::{FutureExt, future};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version, header};
use http_body_util::Either;

use super::body::{FromClient, UpstreamBody};
use super::client::FromUpstream;
use super::metered::{Metered, Upstream, WantUpstream};
use super::{HttpConnection, client, mirror, retry, upgrade};
use crate::balance::{InFlight, Outcome};
use crate::config::route::{
    HashInput, PathRewrite, Retry, Route, RouteAction, RouteTarget, request_key,
};
use crate::error::{ForwardError, ResponseBody, Side};
use crate::table::{Cluster, Table};

/// HTTP/1.1 requests to a peer proxy that takes them over HTTP/2 go that way only while more
/// than this many requests (this one included) are in flight to the endpoint. Below it each
/// has a pooled HTTP/1.1 connection of its own, which answers sooner than a shared HTTP/2
/// connection's task; above it, one multiplexed connection costs less CPU per request than
/// many HTTP/1.1 ones.
const CARRY_ABOVE_IN_FLIGHT: u64 = 4;

/// Forwards `req` along `route` to `target`, one of the action's clusters.
///
/// The request's changes, the mirrors and (without retries) the endpoint's pick happen here,
/// before the returned future is first polled. Each stage's future holds the next one's, and
/// the request itself moves into the exchange's: the future of a request is written whole for
/// each request, and a stage that kept the request too would enlarge it (as would an
/// `async fn`, which holds its arguments twice).
pub(super) fn forward<'a>(
    conn: &'a HttpConnection,
    table: &'a Table,
    route: &'a Route,
    action: &'a RouteAction,
    target: &'a RouteTarget,
    req: Request<FromClient>,
) -> impl Future<Output = Result<Response<ResponseBody>, ForwardError>> + 'a {
    match prepare(conn, table, route, action, target, req) {
        Ok(forwarded) => future::Either::Left(forwarded),
        Err(e) => future::Either::Right(future::ready(Err(e))),
    }
}

/// [`forward`]'s work up to the exchange, and the future of the rest.
fn prepare<'a>(
    conn: &'a HttpConnection,
    table: &'a Table,
    route: &'a Route,
    action: &'a RouteAction,
    target: &'a RouteTarget,
    mut req: Request<FromClient>,
) -> Result<impl Future<Output = Result<Response<ResponseBody>, ForwardError>> + 'a, ForwardError> {
    let cluster =
        table
            .clusters
            .get(&target.cluster)
            .ok_or_else(|| ForwardError::ClusterNotFound {
                cluster: target.cluster.clone(),
                status: action.cluster_not_found,
            })?;
    let upgrade = match upgrade::requested(req.headers()) {
        None => None,
        Some(p) if p.eq_ignore_ascii_case("websocket") => {
            if !action.websocket.unwrap_or(conn.config.websocket) {
                return Err(ForwardError::UpgradeRejected(p.to_owned()));
            }
            Some(hyper::upgrade::on(&mut req))
        }
        // Like Envoy, an HTTP/1.1 → h2c upgrade offer is dropped and the request proxied as is.
        Some(p) if p.eq_ignore_ascii_case("h2c") => None,
        Some(p) => return Err(ForwardError::UpgradeRejected(p.to_owned())),
    };
    // Envoy's order: the cluster's header changes, then the route's (so the route's win).
    target.request_headers.apply(req.headers_mut());
    route.request_headers.apply(req.headers_mut());
    if let Some(rewrite) = &action.rewrite {
        rewrite_path(&mut req, rewrite, route);
    }
    if let Some(host) = &action.host_rewrite {
        req.headers_mut().insert(header::HOST, host.clone());
    }
    let key = (!action.hash.is_empty()).then(|| {
        let input = HashInput {
            headers: req.headers(),
            query: req.uri().query(),
            peer: conn.peer.ip(),
        };
        request_key(&action.hash, &input)
    });
    let key = key.flatten();
    let mut req = req.map(UpstreamBody::client);
    mirror::spawn(table, action, &mut req);
    let exchanged = match &action.retry {
        // Boxed: only retrying routes pay for the larger future.
        Some(policy) if upgrade.is_none() => {
            future::Either::Left(Box::pin(retried(cluster, req, policy, action, key)))
        }
        _ => future::Either::Right(exchange(
            cluster,
            req,
            upgrade.is_some(),
            action.try_timeout(),
            key,
        )?),
    };
    // A combinator, not an async block: that would hold `exchanged` twice, as it awaits it.
    Ok(exchanged.map(move |exchanged| {
        let mut response = exchanged?;
        match upgrade {
            Some(downstream) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                let upstream = hyper::upgrade::on(&mut response);
                upgrade::splice(downstream, upstream, conn.drain.clone());
            }
            _ => {
                client::strip_hop_by_hop(response.headers_mut(), false);
            }
        }
        target.response_headers.apply(response.headers_mut());
        route.response_headers.apply(response.headers_mut());
        Ok(response.map(|body| Either::Left(Metered::new(body))))
    }))
}

/// The route's tries of `req` as `policy` says, within the route's timeout.
fn retried<'a>(
    cluster: &'a Cluster,
    req: Request<UpstreamBody>,
    policy: &'a Retry,
    action: &RouteAction,
    key: Option<u64>,
) -> impl Future<Output = Result<Response<FromUpstream>, ForwardError>> + 'a {
    let tries = retry::exchange(cluster, req, policy, action.per_try_timeout, key);
    match action.timeout {
        Some(limit) => {
            future::Either::Left(tokio::time::timeout(limit, tries).map(move |outcome| {
                outcome.unwrap_or_else(|_| {
                    cluster.endpoints.load().events.timed_out();
                    Err(ForwardError::UpstreamTimeout(limit))
                })
            }))
        }
        None => future::Either::Right(tries),
    }
}

/// The endpoint stage: picks an endpoint of `cluster` for one exchange with it, which waits up
/// to `limit` for the response headers.
pub(super) fn exchange(
    cluster: &Cluster,
    req: Request<UpstreamBody>,
    upgrade: bool,
    limit: Option<Duration>,
    key: Option<u64>,
) -> Result<impl Future<Output = Result<Response<FromUpstream>, ForwardError>>, ForwardError> {
    let in_flight = cluster
        .endpoints
        .pick(key)
        .ok_or_else(|| ForwardError::NoHealthyUpstream(cluster.config.name.clone()))?;
    Ok(exchange_on(cluster, in_flight, req, upgrade, limit))
}

/// One exchange with the endpoint `in_flight` was picked for, within the cluster's circuit
/// breakers; its outcome feeds outlier detection.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` holds its arguments twice, in a future written whole per request"
)]
pub(super) fn exchange_on(
    cluster: &Cluster,
    in_flight: InFlight,
    mut req: Request<UpstreamBody>,
    upgrade: bool,
    limit: Option<Duration>,
) -> impl Future<Output = Result<Response<FromUpstream>, ForwardError>> {
    async move {
        let load = cluster.endpoints.load();
        let limits = &cluster.config.limits;
        let overflow = || {
            load.events.overflowed();
            ForwardError::Overflow(cluster.config.name.clone())
        };
        let _active = match limits.max_requests {
            Some(max) => load.request_within(max).ok_or_else(overflow)?,
            None => load.request(),
        };
        // A cluster has mTLS clients exactly when it has TLS settings, which is also when its
        // endpoints can be marked for TLS.
        let mesh = cluster
            .tls_clients
            .as_ref()
            .filter(|_| in_flight.tls().is_some());
        let mut version = client::upstream_version(cluster.config.protocol, req.version(), upgrade);
        // HTTP/1.1 to a peer proxy that takes it over HTTP/2 (as Linkerd's proxies do) while
        // the endpoint is busy: its requests then share one multiplexed connection instead of
        // one connection each.
        // Not where `max_connections` bounds the HTTP/1.1 requests in flight: carried requests
        // would pass the circuit breaker's queue.
        let carried = mesh.is_some()
            && in_flight.h2_upgrade()
            && version == Version::HTTP_11
            && !upgrade
            && limits.max_connections.is_none()
            && in_flight.endpoint().in_flight() > CARRY_ABOVE_IN_FLIGHT;
        if carried {
            version = Version::HTTP_2;
        }
        // An HTTP/1.1 request holds a connection while in flight; past the cap it waits
        // (pending).
        let _connection = match limits.max_connections {
            Some(max) if version != Version::HTTP_2 => Some(
                Box::pin(load.connection(max, limits.max_pending))
                    .await
                    .ok_or_else(overflow)?,
            ),
            _ => None,
        };
        let endpoint = &in_flight.endpoint().authority;
        let want_upstream = req.extensions().get::<WantUpstream>().is_some();
        client::to_upstream(&mut req, endpoint, version, upgrade);
        client::mark_orig_proto(req.headers_mut(), carried);
        let sent = match mesh {
            Some(mesh) => future::Either::Left(mesh.send(version, endpoint, req)),
            None => future::Either::Right(cluster.clients.send(version, endpoint, req)),
        };
        let result = match limit {
            Some(limit) => match tokio::time::timeout(limit, sent).await {
                Ok(result) => result,
                Err(_) => {
                    in_flight.failed();
                    load.events.timed_out();
                    cluster
                        .endpoints
                        .record(&in_flight, Outcome::GatewayFailure);
                    return Err(ForwardError::UpstreamTimeout(limit));
                }
            },
            None => sent.await,
        };
        match result {
            Ok(mut response) => {
                if want_upstream {
                    response
                        .extensions_mut()
                        .insert(Upstream(in_flight.endpoint().addr));
                }
                in_flight.succeeded();
                cluster
                    .endpoints
                    .record(&in_flight, Outcome::of(response.status()));
                Ok(response)
            }
            Err(e) => {
                in_flight.failed();
                let e = ForwardError::from_client(&e);
                if e.side() == Side::Upstream {
                    cluster
                        .endpoints
                        .record(&in_flight, Outcome::GatewayFailure);
                }
                Err(e)
            }
        }
    }
}

/// Rewrites the request's path (query kept) as the route says; a rewrite that does not make a
/// valid path leaves the path alone.
fn rewrite_path<B>(req: &mut Request<B>, rewrite: &PathRewrite, route: &Route) {
    let current = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let rewritten = rewrite.apply(current, route.matcher.matched_len(current));
    let rewritten = if rewritten.is_empty() || rewritten.starts_with('?') {
        format!("/{rewritten}")
    } else {
        rewritten
    };
    let Ok(path) = PathAndQuery::try_from(rewritten) else {
        tracing::debug!(route = %route.name, "path rewrite made an invalid path; not applied");
        return;
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(path);
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

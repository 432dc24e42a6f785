//! The cluster and endpoint stages of a forwarded request: the route's changes to the request,
//! mirrors, one exchange with one endpoint, and the route's changes to the response.

use std::time::Duration;

use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, header};
use http_body_util::Either;
use hyper::body::Incoming;

use super::body::UpstreamBody;
use super::{HttpConnection, client, mirror, retry, upgrade};
use crate::balance::InFlight;
use crate::config::route::{PathRewrite, Route, RouteAction, RouteTarget};
use crate::error::{ForwardError, ResponseBody};
use crate::table::{Cluster, Table};

/// Forwards `req` along `route` to `target`, one of the action's clusters.
pub(super) async fn forward(
    conn: &HttpConnection,
    table: &Table,
    route: &Route,
    action: &RouteAction,
    target: &RouteTarget,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ForwardError> {
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
    let mut req = req.map(UpstreamBody::client);
    mirror::spawn(table, action, &mut req);
    let mut response = match &action.retry {
        // Boxed: only retrying routes pay for the larger future.
        Some(policy) if upgrade.is_none() => {
            let tries = Box::pin(retry::exchange(
                cluster,
                req,
                policy,
                action.per_try_timeout,
            ));
            match action.timeout {
                Some(limit) => tokio::time::timeout(limit, tries)
                    .await
                    .map_err(|_| ForwardError::UpstreamTimeout(limit))??,
                None => tries.await?,
            }
        }
        _ => exchange(cluster, req, upgrade.is_some(), action.try_timeout()).await?,
    };
    match upgrade {
        Some(downstream) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let upstream = hyper::upgrade::on(&mut response);
            upgrade::splice(downstream, upstream, conn.drain.clone());
        }
        _ => client::strip_hop_by_hop(response.headers_mut(), false),
    }
    target.response_headers.apply(response.headers_mut());
    route.response_headers.apply(response.headers_mut());
    Ok(response.map(Either::Left))
}

/// The endpoint stage and one exchange: picks an endpoint of `cluster`, sends `req` and waits
/// up to `limit` for the response headers.
pub(super) async fn exchange(
    cluster: &Cluster,
    req: Request<UpstreamBody>,
    upgrade: bool,
    limit: Option<Duration>,
) -> Result<Response<Incoming>, ForwardError> {
    let in_flight = cluster
        .endpoints
        .pick()
        .ok_or_else(|| ForwardError::NoHealthyUpstream(cluster.config.name.clone()))?;
    exchange_on(cluster, in_flight, req, upgrade, limit).await
}

/// One exchange with the endpoint `in_flight` was picked for.
pub(super) async fn exchange_on(
    cluster: &Cluster,
    in_flight: InFlight,
    mut req: Request<UpstreamBody>,
    upgrade: bool,
    limit: Option<Duration>,
) -> Result<Response<Incoming>, ForwardError> {
    let _active = cluster.endpoints.load().request();
    let version = client::upstream_version(cluster.config.protocol, req.version(), upgrade);
    let endpoint = &in_flight.endpoint().authority;
    client::to_upstream(&mut req, endpoint, version, upgrade);
    // A cluster has mTLS clients exactly when it has TLS settings, which is also when its
    // endpoints can be marked for TLS.
    let mesh = cluster
        .tls_clients
        .as_ref()
        .filter(|_| in_flight.tls().is_some());
    let sent = async {
        match mesh {
            Some(mesh) => mesh.send(version, endpoint, req).await,
            None => cluster.clients.send(version, endpoint, req).await,
        }
    };
    let result = match limit {
        Some(limit) => match tokio::time::timeout(limit, sent).await {
            Ok(result) => result,
            Err(_) => {
                in_flight.failed();
                return Err(ForwardError::UpstreamTimeout(limit));
            }
        },
        None => sent.await,
    };
    match result {
        Ok(response) => {
            in_flight.succeeded();
            Ok(response)
        }
        Err(e) => {
            in_flight.failed();
            Err(ForwardError::from_client(&e))
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

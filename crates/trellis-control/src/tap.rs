//! `GET /api/tap?service=NAME[&namespace=NS][&path=P&method=M&authority=A][&direction=D]
//! [&limit=N]`: the live requests of a service's proxies, each proxy's admin `/tap` merged into
//! one stream of JSON lines, for `trellis tap` and `trellis top`.
//!
//! Every line is one JSON object naming the proxy it came from by node id:
//! `{"proxy":ID,"event":EVENT}` (EVENT is the proxy's `RequestEvent` as is),
//! `{"proxy":ID,"missed":N}` (the proxy skipped N events this reader was too slow for) or
//! `{"proxy":ID,"error":MESSAGE}` (that proxy could not be tapped, or its tap ended).
//! The proxies are the ones connected when the request arrives; proxies that connect later are
//! not added.

mod merge;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::control::ControlPlane;
use crate::proxy_admin::percent_encode;
use crate::stats::Target;
use merge::MergedTap;

/// The tap route over the control plane's registry.
pub(crate) fn router(control: Arc<ControlPlane>) -> Router {
    Router::new()
        .route("/api/tap", get(tap))
        .with_state(control)
}

/// Which of a proxy's requests a tap shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Requests the service's proxies received and sent.
    Both,
    /// Requests the proxies received for their workload.
    Inbound,
    /// Requests the proxies' workloads sent.
    Outbound,
}

/// The query string as it arrives.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    service: Option<String>,
    namespace: Option<String>,
    path: Option<String>,
    method: Option<String>,
    authority: Option<String>,
    direction: Option<String>,
    limit: Option<String>,
}

/// A validated tap request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TapQuery {
    service: String,
    namespace: String,
    /// Path prefix.
    path: Option<String>,
    method: Option<String>,
    authority: Option<String>,
    direction: Direction,
    /// At most this many events, then the stream ends.
    limit: Option<usize>,
}

impl Params {
    fn parse(self) -> Result<TapQuery, String> {
        let given = |v: Option<String>| v.filter(|v| !v.is_empty());
        let service = given(self.service)
            .ok_or("service: required, the name of the service whose proxies to tap")?;
        let direction = match self.direction.as_deref() {
            None | Some("" | "both") => Direction::Both,
            Some("inbound") => Direction::Inbound,
            Some("outbound") => Direction::Outbound,
            Some(other) => {
                return Err(format!(
                    "direction: expected inbound, outbound or both, found {other:?}"
                ));
            }
        };
        let limit = match given(self.limit) {
            None => None,
            Some(n) => match n.parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(format!("limit: expected a count of 1 or more, found {n:?}")),
            },
        };
        Ok(TapQuery {
            service,
            namespace: given(self.namespace).unwrap_or_else(|| "default".to_owned()),
            path: given(self.path),
            method: given(self.method),
            authority: given(self.authority),
            direction,
            limit,
        })
    }
}

impl TapQuery {
    /// The proxies' admin `/tap` request for this query. Each proxy gets the limit too: none
    /// has to send more than the whole stream shows.
    fn proxy_path(&self) -> String {
        let direction = match self.direction {
            Direction::Both => None,
            Direction::Inbound => Some("inbound"),
            Direction::Outbound => Some("outbound"),
        };
        let limit = self.limit.map(|n| n.to_string());
        let filters = [
            ("direction", direction),
            ("path", self.path.as_deref()),
            ("method", self.method.as_deref()),
            ("authority", self.authority.as_deref()),
            ("limit", limit.as_deref()),
        ];
        let pairs: Vec<String> = filters
            .iter()
            .filter_map(|(key, value)| Some(format!("{key}={}", percent_encode(value.as_ref()?))))
            .collect();
        if pairs.is_empty() {
            return "/tap".to_owned();
        }
        format!("/tap?{}", pairs.join("&"))
    }

    /// The connected proxies of the service (each once: see `ControlPlane::stats_targets`).
    fn proxies(&self, targets: Vec<Target>) -> Vec<Target> {
        targets
            .into_iter()
            .filter(|t| t.service == self.service && t.namespace == self.namespace)
            .collect()
    }
}

/// Opens every proxy's tap, then streams the merged lines. The answer starts once each
/// proxy's tap is open (or failed to open within the per-proxy timeout), so a request the
/// proxies finish after the response head arrives is in the stream.
async fn tap(
    State(control): State<Arc<ControlPlane>>,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    let query = match params.map_err(|e| e.body_text()).and_then(|q| q.0.parse()) {
        Ok(query) => query,
        Err(message) => return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    };
    let proxies = query.proxies(control.stats_targets());
    if proxies.is_empty() {
        let message = format!(
            "no connected proxy of service {:?} in namespace {:?}: GET /api/workloads lists \
             the connected ones\n",
            query.service, query.namespace
        );
        return (StatusCode::NOT_FOUND, message).into_response();
    }
    let path = query.proxy_path();
    match MergedTap::open(proxies, &path, query.limit, control.proxy_taps()).await {
        Ok(merged) => (
            [
                (header::CONTENT_TYPE, "application/x-ndjson"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(merged.into_stream()),
        )
            .into_response(),
        Err(failed) => {
            let mut message = format!(
                "no proxy of service {:?} in namespace {:?} could be tapped:\n",
                query.service, query.namespace
            );
            for (node_id, error) in failed {
                message.push_str(&format!("  {node_id}: {error}\n"));
            }
            (StatusCode::BAD_GATEWAY, message).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `query` as the handler reads it: extracted by axum, then validated.
    fn parse(query: &str) -> Result<TapQuery, String> {
        let uri: axum::http::Uri = format!("/api/tap?{query}").parse().unwrap();
        let params = Query::<Params>::try_from_uri(&uri).map_err(|e| e.body_text())?;
        params.0.parse()
    }

    #[test]
    fn queries_become_proxy_tap_requests() {
        let query = parse("service=api").unwrap();
        assert_eq!(
            (query.namespace.as_str(), query.direction),
            ("default", Direction::Both)
        );
        assert_eq!(query.proxy_path(), "/tap");
        let query = parse(
            "service=api&namespace=shop&direction=inbound&path=/a%20b&method=POST&authority=api:80&limit=5",
        )
        .unwrap();
        assert_eq!(
            query.proxy_path(),
            "/tap?direction=inbound&path=%2Fa%20b&method=POST&authority=api%3A80&limit=5"
        );
        let outbound = parse("service=web&direction=outbound&path=&limit=").unwrap();
        assert_eq!(outbound.proxy_path(), "/tap?direction=outbound");
    }

    #[test]
    fn bad_queries_name_the_parameter() {
        assert!(parse("").unwrap_err().starts_with("service: required"));
        let e = parse("service=api&direction=sideways").unwrap_err();
        assert_eq!(
            e,
            "direction: expected inbound, outbound or both, found \"sideways\""
        );
        assert!(
            parse("service=api&limit=0")
                .unwrap_err()
                .starts_with("limit:")
        );
        assert!(
            parse("service=api&limit=x")
                .unwrap_err()
                .starts_with("limit:")
        );
        let e = parse("service=api&colour=red").unwrap_err();
        assert!(e.contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn only_proxies_of_the_service_are_tapped() {
        let target = |node: &str, service: &str, namespace: &str| Target {
            node_id: node.into(),
            service: service.into(),
            namespace: namespace.into(),
            admin: Some(format!("127.0.0.1:1{}", node.len())),
        };
        let targets = vec![
            target("api-2", "api", "default"),
            target("api-1", "api", "default"),
            target("api-x", "api", "shop"),
            target("web-1", "web", "default"),
        ];
        let query = parse("service=api").unwrap();
        let nodes: Vec<String> = query
            .proxies(targets)
            .into_iter()
            .map(|t| t.node_id)
            .collect();
        assert_eq!(nodes, ["api-2", "api-1"]);
    }
}

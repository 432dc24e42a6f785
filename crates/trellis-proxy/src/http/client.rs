//! Upstream HTTP: pooled keep-alive clients (HTTP/1.1 with header case preserved, and h2c), and
//! the rewrite of a downstream request into the request sent to one endpoint.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use std::sync::Arc;

use crate::config::cluster::UpstreamProtocol;
use crate::config::tls::UpstreamTls;
use crate::tls::connect::MeshConnector;
use crate::tls::{Alpn, IdentityState};

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// Connection pools towards endpoints, one per HTTP version, sharing a connect timeout.
pub(crate) struct UpstreamClients<C = HttpConnector> {
    h1: Client<C, Incoming>,
    h2: Client<C, Incoming>,
}

impl<C> std::fmt::Debug for UpstreamClients<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamClients")
    }
}

/// A plain TCP connector with the cluster's connect timeout.
fn tcp_connector(connect_timeout: Duration) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector
}

impl UpstreamClients {
    /// Plaintext clients whose TCP connects give up after `connect_timeout`.
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        let connector = tcp_connector(connect_timeout);
        Self::with(connector.clone(), connector)
    }
}

impl UpstreamClients<MeshConnector> {
    /// mTLS clients towards endpoints verified by `tls`, with our current identity.
    pub(crate) fn mesh(
        connect_timeout: Duration,
        tls: Arc<UpstreamTls>,
        identity: Arc<IdentityState>,
    ) -> Self {
        let connector = |alpn| MeshConnector {
            http: tcp_connector(connect_timeout),
            tls: tls.clone(),
            identity: identity.clone(),
            alpn,
        };
        Self::with(connector(Alpn::Http1), connector(Alpn::H2))
    }
}

impl<C> UpstreamClients<C>
where
    C: tower_service::Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Connection + Unpin + Send + 'static,
    C::Future: Send + Unpin + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn with(h1_connector: C, h2_connector: C) -> Self {
        let h1 = Client::builder(TokioExecutor::new())
            .http1_preserve_header_case(true)
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(h1_connector);
        let h2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(h2_connector);
        Self { h1, h2 }
    }

    /// The client for `version` (as chosen by [`upstream_version`]).
    pub(crate) fn for_version(&self, version: Version) -> &Client<C, Incoming> {
        if version == Version::HTTP_2 {
            &self.h2
        } else {
            &self.h1
        }
    }
}

/// The HTTP version to use upstream for a request that arrived with `downstream`.
/// Upgrades always use HTTP/1.1.
pub(crate) fn upstream_version(
    protocol: UpstreamProtocol,
    downstream: Version,
    upgrade: bool,
) -> Version {
    match protocol {
        _ if upgrade => Version::HTTP_11,
        UpstreamProtocol::Http2 => Version::HTTP_2,
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::Downstream if downstream == Version::HTTP_2 => Version::HTTP_2,
        UpstreamProtocol::Downstream => Version::HTTP_11,
    }
}

/// Points `req` at `endpoint`: the URI becomes `http://endpoint/path?query`, the original
/// authority stays in `Host`, hop-by-hop headers go (except the upgrade pair when `upgrade`).
pub(crate) fn to_upstream(
    req: &mut Request<Incoming>,
    endpoint: &Authority,
    version: Version,
    upgrade: bool,
) {
    if !req.headers().contains_key(header::HOST)
        && let Some(authority) = req.uri().authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        req.headers_mut().insert(header::HOST, host);
    }
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(endpoint.clone());
    parts.path_and_query = Some(path);
    // Scheme, authority and path are all set, which is all `from_parts` checks.
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = version;
    strip_hop_by_hop(req.headers_mut(), upgrade);
}

/// Removes connection-specific headers (RFC 9110 §7.6.1), keeping `te: trailers` for gRPC and,
/// for upgrades, `Connection: upgrade` with `Upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !(upgrade && name == header::UPGRADE))
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    if !upgrade {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h["x-app"], "kept");
    }

    #[test]
    fn upgrade_headers_survive_for_upgrades() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "Upgrade");
    }

    #[test]
    fn version_choice() {
        use UpstreamProtocol::*;
        assert_eq!(
            upstream_version(Downstream, Version::HTTP_2, false),
            Version::HTTP_2
        );
        assert_eq!(
            upstream_version(Downstream, Version::HTTP_10, false),
            Version::HTTP_11
        );
        assert_eq!(
            upstream_version(Http2, Version::HTTP_11, false),
            Version::HTTP_2
        );
        assert_eq!(
            upstream_version(Http2, Version::HTTP_11, true),
            Version::HTTP_11
        );
    }
}

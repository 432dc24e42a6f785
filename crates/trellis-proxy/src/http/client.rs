//! Upstream HTTP: pooled keep-alive HTTP/1.1 (header case preserved) and one multiplexed HTTP/2
//! connection per endpoint, and the rewrite of a downstream request into the request sent to
//! one endpoint.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;

use super::body::UpstreamBody;
use hyper::client::conn::http2;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use std::sync::Arc;

use crate::config::cluster::UpstreamProtocol;
use crate::config::tls::UpstreamTls;
use crate::tls::connect::MeshConnector;
use crate::tls::{Alpn, IdentityState};

/// Marks an HTTP/1.1 request carried over HTTP/2 between two Trellis proxies. Reserved: the
/// proxies set and remove it, so neither app sees it.
const ORIG_PROTO: HeaderName = HeaderName::from_static("trellis-orig-proto");
/// [`ORIG_PROTO`]'s one value.
const HTTP_11: HeaderValue = HeaderValue::from_static("HTTP/1.1");

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// Connections towards endpoints, sharing a connect timeout: a keep-alive pool for HTTP/1.1
/// and one multiplexed connection per endpoint for HTTP/2.
pub(crate) struct UpstreamClients<C = HttpConnector> {
    h1: Client<C, UpstreamBody>,
    h2: H2Connections<C>,
}

impl<C> std::fmt::Debug for UpstreamClients<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamClients")
    }
}

/// Why an upstream exchange failed.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// The HTTP/1.1 pool's error (connecting or the exchange).
    Pool(hyper_util::client::legacy::Error),
    /// Connecting for HTTP/2 failed.
    Connect(String),
    /// The HTTP/2 exchange failed.
    Http(hyper::Error),
}

/// One HTTP/2 connection per endpoint, opened on first use and again once closed.
struct H2Connections<C> {
    connector: C,
    connections: Mutex<HashMap<Authority, http2::SendRequest<UpstreamBody>>>,
}

impl<C> H2Connections<C>
where
    C: tower_service::Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Connection + Unpin + Send + 'static,
    C::Future: Send + Unpin + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// The endpoint's open connection, if any.
    fn open(&self, endpoint: &Authority) -> Option<http2::SendRequest<UpstreamBody>> {
        let connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections
            .get(endpoint)
            .filter(|sender| !sender.is_closed())
            .cloned()
    }

    async fn connect(
        &self,
        endpoint: &Authority,
    ) -> Result<http2::SendRequest<UpstreamBody>, UpstreamError> {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(endpoint.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| UpstreamError::Connect(e.into().to_string()))?;
        let io = connector
            .call(uri)
            .await
            .map_err(|e| UpstreamError::Connect(e.into().to_string()))?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream h2 connection ended");
            }
        });
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.retain(|_, sender| !sender.is_closed());
        connections.insert(endpoint.clone(), sender.clone());
        Ok(sender)
    }

    async fn send(
        &self,
        endpoint: &Authority,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = match self.open(endpoint) {
            Some(sender) => sender,
            // Boxed: connecting is rare, and its future would otherwise enlarge every
            // request's future, which hyper allocates for each idle downstream connection.
            None => Box::pin(self.connect(endpoint)).await?,
        };
        sender.ready().await.map_err(UpstreamError::Http)?;
        sender.send_request(req).await.map_err(UpstreamError::Http)
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
        let h2 = H2Connections {
            connector: h2_connector,
            connections: Mutex::new(HashMap::new()),
        };
        Self { h1, h2 }
    }

    /// Sends `req`, prepared by [`to_upstream`] for `version` and `endpoint`.
    pub(crate) async fn send(
        &self,
        version: Version,
        endpoint: &Authority,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        if version == Version::HTTP_2 {
            self.h2.send(endpoint, req).await
        } else {
            self.h1.request(req).await.map_err(UpstreamError::Pool)
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

/// Points `req` at `endpoint`, hop-by-hop headers removed (except the upgrade pair when
/// `upgrade`). HTTP/1.1: the URI becomes `http://endpoint/path?query` (the pool's key) and the
/// original authority stays in `Host`. HTTP/2: the original authority becomes `:authority` and
/// `Host` goes, as RFC 9113 §8.3.1 asks of intermediaries (servers such as nginx refuse a
/// `Host` that differs from `:authority`); the connection is picked by endpoint.
pub(crate) fn to_upstream<B>(
    req: &mut Request<B>,
    endpoint: &Authority,
    version: Version,
    upgrade: bool,
) {
    let authority = if version == Version::HTTP_2 {
        req.headers_mut()
            .remove(header::HOST)
            .and_then(|host| Authority::try_from(host.as_bytes()).ok())
            .or_else(|| req.uri().authority().cloned())
            .unwrap_or_else(|| endpoint.clone())
    } else {
        if !req.headers().contains_key(header::HOST)
            && let Some(authority) = req.uri().authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            req.headers_mut().insert(header::HOST, host);
        }
        endpoint.clone()
    };
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path);
    // Scheme, authority and path are all set, which is all `from_parts` checks.
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = version;
    strip_hop_by_hop(req.headers_mut(), upgrade);
}

/// Marks a request `carried` over HTTP/2 for the peer proxy to restore; any other request
/// loses a mark its app may have set.
pub(crate) fn mark_orig_proto(headers: &mut HeaderMap, carried: bool) {
    if carried {
        headers.insert(ORIG_PROTO, HTTP_11);
    } else {
        headers.remove(ORIG_PROTO);
    }
}

/// On the inbound side: a request a peer proxy carried over HTTP/2 goes on as the HTTP/1.1
/// request it was (to the app, in routing and retries). Only a `mesh_peer` (one that proved a
/// mesh identity over mutual TLS) is believed; the mark is removed either way.
pub(crate) fn restore_orig_proto<B>(req: &mut Request<B>, mesh_peer: bool) {
    let marked = req.headers_mut().remove(ORIG_PROTO);
    if mesh_peer && marked.is_some_and(|v| v == HTTP_11) && req.version() == Version::HTTP_2 {
        *req.version_mut() = Version::HTTP_11;
    }
}

/// Connection-specific headers removed from every message, listed in `Connection` or not.
const HOP_BY_HOP: [HeaderName; 3] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
];

/// Removes connection-specific headers (RFC 9110 §7.6.1), keeping `te: trailers` for gRPC and,
/// for upgrades, `Connection: upgrade` with `Upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // The usual `Connection: keep-alive` lists only headers removed below anyway: then nothing
    // is copied.
    let removed_below = |name: &str| {
        HOP_BY_HOP
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n.as_str()))
            || name.eq_ignore_ascii_case("upgrade")
            || (!upgrade && name.eq_ignore_ascii_case("connection"))
    };
    if connection_options(headers).any(|name| !removed_below(name)) {
        let listed: Vec<HeaderName> = connection_options(headers)
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .filter(|name| !(upgrade && name == header::UPGRADE))
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
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

/// The header names a `Connection` header lists.
fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
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

        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert!(!h.contains_key("x-private"), "{h:?}");
    }

    #[test]
    fn standard_connection_options_are_removed() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
        h.append(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-app"], "kept");
    }

    #[test]
    fn http1_keeps_the_host_and_targets_the_endpoint() {
        let endpoint = Authority::from_static("10.0.0.7:8080");
        let mut req = Request::get("/items?id=1")
            .header(header::HOST, "catalog")
            .header(header::CONNECTION, "keep-alive")
            .body(())
            .unwrap();
        to_upstream(&mut req, &endpoint, Version::HTTP_11, false);
        assert_eq!(req.uri(), "http://10.0.0.7:8080/items?id=1");
        assert_eq!(req.headers()[header::HOST], "catalog");
        assert!(!req.headers().contains_key(header::CONNECTION));
    }

    #[test]
    fn http2_carries_the_original_authority_and_no_host() {
        let endpoint = Authority::from_static("10.0.0.7:8080");
        let mut from_h1 = Request::get("/items")
            .header(header::HOST, "catalog:80")
            .body(())
            .unwrap();
        to_upstream(&mut from_h1, &endpoint, Version::HTTP_2, false);
        assert_eq!(from_h1.uri(), "http://catalog:80/items");
        assert!(!from_h1.headers().contains_key(header::HOST));
        let mut from_h2 = Request::get("http://ratings/rate").body(()).unwrap();
        to_upstream(&mut from_h2, &endpoint, Version::HTTP_2, false);
        assert_eq!(from_h2.uri(), "http://ratings/rate");
        let mut bare = Request::get("/").body(()).unwrap();
        to_upstream(&mut bare, &endpoint, Version::HTTP_2, false);
        assert_eq!(
            bare.uri(),
            "http://10.0.0.7:8080/",
            "no authority: the endpoint's"
        );
    }

    #[test]
    fn http1_carried_over_http2_is_marked_and_restored() {
        let endpoint = Authority::from_static("10.0.0.7:8080");
        let mut req = Request::post("/items")
            .header(header::HOST, "catalog")
            .body(())
            .unwrap();
        to_upstream(&mut req, &endpoint, Version::HTTP_2, false);
        mark_orig_proto(req.headers_mut(), true);
        assert_eq!(req.headers()["trellis-orig-proto"], "HTTP/1.1");

        // The peer proxy receives it as HTTP/2 and hands it on as HTTP/1.1 with its Host.
        *req.version_mut() = Version::HTTP_2;
        restore_orig_proto(&mut req, true);
        assert_eq!(req.version(), Version::HTTP_11);
        assert!(!req.headers().contains_key("trellis-orig-proto"));
        to_upstream(&mut req, &endpoint, Version::HTTP_11, false);
        assert_eq!(req.uri(), "http://10.0.0.7:8080/items");
        assert_eq!(req.headers()[header::HOST], "catalog");
    }

    #[test]
    fn a_mark_from_an_app_never_passes() {
        let mut sent = Request::get("/")
            .header("trellis-orig-proto", "HTTP/1.1")
            .body(())
            .unwrap();
        mark_orig_proto(sent.headers_mut(), false);
        assert!(!sent.headers().contains_key("trellis-orig-proto"));

        // An HTTP/2 request with a mark it should not carry stays HTTP/2 (gRPC to an h2 app).
        let mut h2 = Request::get("/")
            .version(Version::HTTP_2)
            .header("trellis-orig-proto", "HTTP/3")
            .body(())
            .unwrap();
        restore_orig_proto(&mut h2, true);
        assert_eq!(h2.version(), Version::HTTP_2);
        assert!(!h2.headers().contains_key("trellis-orig-proto"));

        // A peer without a mesh identity (plaintext, PERMISSIVE) is not believed.
        let mut spoofed = Request::get("/")
            .version(Version::HTTP_2)
            .header("trellis-orig-proto", "HTTP/1.1")
            .body(())
            .unwrap();
        restore_orig_proto(&mut spoofed, false);
        assert_eq!(spoofed.version(), Version::HTTP_2);
        assert!(!spoofed.headers().contains_key("trellis-orig-proto"));
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

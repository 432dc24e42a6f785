//! Upstream HTTP: pooled keep-alive HTTP/1.1 (header case preserved) and one multiplexed HTTP/2
//! connection per endpoint, and the rewrite of a downstream request into the request sent to
//! one endpoint.

mod h2conn;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use futures_util::future;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;

use super::body::{BodyError, UpstreamBody};
use crate::config::cluster::UpstreamProtocol;
use crate::config::tls::UpstreamTls;
use crate::tls::connect::MeshConnector;
use crate::tls::{Alpn, IdentityState};
use h2conn::{H2Body, H2Conn, H2Ready, H2Sender};

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
    h1: H1Connections<C>,
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
    /// Connecting failed.
    Connect(String),
    /// The HTTP/1.1 exchange failed.
    Http(hyper::Error),
    /// The HTTP/2 stream failed.
    H2(h2::Error),
    /// The request's body failed while it was sent (the client went away).
    RequestBody(BodyError),
}

/// A response body from an endpoint: HTTP/1.1 (`Left`) or HTTP/2 (`Right`). Its error is the
/// body's own, boxed: the server side finds an h2 reset code in it and passes it on downstream.
pub(crate) type FromUpstream = Either<Incoming, H2Body>;

/// FNV-1a. Endpoint addresses are short and come from the control plane, never from a request,
/// so an unkeyed hash is safe, and it costs a fraction of the default SipHash.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Something per endpoint, looked up by the authority's text (`map.get(endpoint.as_str())`).
type ByEndpoint<V> = HashMap<EndpointKey, V, BuildHasherDefault<Fnv>>;

/// An endpoint's authority as a key: hashed and compared as its text, whole. `Authority`'s own
/// `Hash` feeds the hasher a lowercased byte at a time, which cost more than the rest of a
/// lookup; endpoint addresses come from the control plane in one spelling.
struct EndpointKey(Authority);

impl PartialEq for EndpointKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for EndpointKey {}

impl Hash for EndpointKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state);
    }
}

impl Borrow<str> for EndpointKey {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens a connection to `endpoint` with `connector`.
async fn connect<C>(connector: &C, endpoint: &Authority) -> Result<C::Response, UpstreamError>
where
    C: tower_service::Service<Uri> + Clone,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(endpoint.clone())
        .path_and_query("/")
        .build()
        .map_err(|e| UpstreamError::Connect(e.to_string()))?;
    let mut connector = connector.clone();
    std::future::poll_fn(|cx| connector.poll_ready(cx))
        .await
        .map_err(|e| UpstreamError::Connect(e.into().to_string()))?;
    connector
        .call(uri)
        .await
        .map_err(|e| UpstreamError::Connect(e.into().to_string()))
}

/// Spawns a task that runs an upstream `connection` of `protocol` until it ends.
fn spawn_connection<F, E>(connection: F, protocol: &'static str)
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, protocol, "upstream connection ended");
        }
    });
}

/// Keep-alive HTTP/1.1 connections per endpoint. A connection goes back to its endpoint's
/// list as soon as the response's head arrives, and is taken again once hyper says it is
/// ready for the next request (its response body read), so no task waits for it in between.
struct H1Connections<C> {
    connector: C,
    connections: Arc<Mutex<ByEndpoint<Vec<Pooled>>>>,
    /// Whether the task that closes idle connections runs (started with the first connection).
    sweeping: std::sync::Once,
}

/// An open HTTP/1.1 connection.
struct Pooled {
    sender: http1::SendRequest<UpstreamBody>,
    /// When its last response's head arrived: it has been idle since about then, or since
    /// that response's body ended.
    used: Instant,
}

impl Pooled {
    /// Worth keeping at `now`: open, and busy or idle for at most [`POOL_IDLE`].
    fn kept(&self, now: Instant) -> bool {
        let idle_too_long =
            self.sender.is_ready() && now.saturating_duration_since(self.used) > POOL_IDLE;
        !self.sender.is_closed() && !idle_too_long
    }
}

/// Drops the connections no longer [`Pooled::kept`] at `now`, and endpoints left with none.
fn prune(connections: &mut ByEndpoint<Vec<Pooled>>, now: Instant) {
    connections.retain(|_, pooled| {
        pooled.retain(|p| p.kept(now));
        !pooled.is_empty()
    });
}

/// Closes idle connections every half [`POOL_IDLE`] until the pool is gone.
async fn sweep(connections: Weak<Mutex<ByEndpoint<Vec<Pooled>>>>) {
    let mut every = tokio::time::interval(POOL_IDLE / 2);
    loop {
        every.tick().await;
        let Some(connections) = connections.upgrade() else {
            return;
        };
        prune(&mut lock(&connections), Instant::now());
    }
}

impl<C> H1Connections<C>
where
    C: tower_service::Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    C::Future: Send + Unpin + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn new(connector: C) -> Self {
        Self {
            connector,
            connections: Arc::default(),
            sweeping: std::sync::Once::new(),
        }
    }

    /// An idle connection to `endpoint`, taken out of the pool; those found on the way that
    /// are no longer [`Pooled::kept`] are dropped, so none idle for longer than [`POOL_IDLE`]
    /// is used again.
    fn checkout(&self, endpoint: &Authority) -> Option<http1::SendRequest<UpstreamBody>> {
        let now = Instant::now();
        let mut connections = lock(&self.connections);
        let pooled = connections.get_mut(endpoint.as_str())?;
        let mut at = pooled.len();
        while at > 0 {
            at -= 1;
            if !pooled[at].kept(now) {
                pooled.swap_remove(at);
            } else if pooled[at].sender.is_ready() {
                return Some(pooled.swap_remove(at).sender);
            }
        }
        None
    }

    /// Returns `sender`, whose response's head has arrived, to the pool.
    fn put(&self, endpoint: &Authority, sender: http1::SendRequest<UpstreamBody>) {
        let pooled = Pooled {
            sender,
            used: Instant::now(),
        };
        let mut connections = lock(&self.connections);
        match connections.get_mut(endpoint.as_str()) {
            Some(list) => list.push(pooled),
            None => {
                connections.insert(EndpointKey(endpoint.clone()), vec![pooled]);
            }
        }
    }

    async fn connect(
        &self,
        endpoint: &Authority,
    ) -> Result<http1::SendRequest<UpstreamBody>, UpstreamError> {
        let io = connect(&self.connector, endpoint).await?;
        let (sender, connection) = http1::Builder::new()
            .preserve_header_case(true)
            .handshake(io)
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        spawn_connection(connection.with_upgrades(), "HTTP/1.1");
        self.sweeping.call_once(|| {
            tokio::spawn(sweep(Arc::downgrade(&self.connections)));
        });
        Ok(sender)
    }

    /// Sends `req` on an idle connection to `endpoint`, or a new one. A request that a pooled
    /// connection closed before taking is sent again on a new connection: it never left.
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` holds its arguments twice, in a future written whole per request"
    )]
    fn send<'a>(
        &'a self,
        endpoint: &'a Authority,
        req: Request<UpstreamBody>,
    ) -> impl Future<Output = Result<Response<FromUpstream>, UpstreamError>> + 'a {
        async move {
            // Boxed: a new connection is rare, and its future would otherwise enlarge every
            // request's.
            let Some(mut sender) = self.checkout(endpoint) else {
                return Box::pin(self.send_new(endpoint, req)).await;
            };
            let req = match sender.try_send_request(req).await {
                Ok(response) => {
                    self.put(endpoint, sender);
                    return Ok(response.map(Either::Left));
                }
                Err(mut e) => match e.take_message() {
                    Some(req) => req,
                    None => return Err(UpstreamError::Http(e.into_error())),
                },
            };
            // Not pooled again: it closes before the new connection opens.
            drop(sender);
            Box::pin(self.send_new(endpoint, req)).await
        }
    }

    /// Sends `req` on a new connection to `endpoint`, pooled once its response's head arrives.
    async fn send_new(
        &self,
        endpoint: &Authority,
        req: Request<UpstreamBody>,
    ) -> Result<Response<FromUpstream>, UpstreamError> {
        let mut sender = self.connect(endpoint).await?;
        let response = sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Http)?;
        self.put(endpoint, sender);
        Ok(response.map(Either::Left))
    }
}

/// One HTTP/2 connection per endpoint, opened on first use and again once closed.
struct H2Connections<C> {
    connector: C,
    connections: Mutex<ByEndpoint<H2Conn>>,
}

impl<C> H2Connections<C>
where
    C: tower_service::Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    C::Future: Send + Unpin + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A sender on the endpoint's open connection, if any.
    fn open(&self, endpoint: &Authority) -> Option<H2Sender> {
        lock(&self.connections)
            .get(endpoint.as_str())
            .filter(|conn| !conn.is_closed())
            .map(H2Conn::sender)
    }

    async fn connect(&self, endpoint: &Authority) -> Result<H2Sender, UpstreamError> {
        let io = TokioIo::new(connect(&self.connector, endpoint).await?);
        let conn = H2Conn::handshake(io)
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let sender = conn.sender();
        let mut connections = lock(&self.connections);
        connections.retain(|_, conn| !conn.is_closed());
        connections.insert(EndpointKey(endpoint.clone()), conn);
        Ok(sender)
    }

    /// Sends `req` on the endpoint's connection, or a new one.
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` holds its arguments twice, in a future written whole per request"
    )]
    fn send<'a>(
        &'a self,
        endpoint: &'a Authority,
        req: Request<UpstreamBody>,
    ) -> impl Future<Output = Result<Response<FromUpstream>, UpstreamError>> + 'a {
        async move {
            let ready = match self.open(endpoint) {
                // One that takes no more streams is marked closed: the request, still unsent,
                // goes on a new connection.
                Some(sender) => sender.ready().await.ok(),
                None => None,
            };
            let ready = match ready {
                Some(ready) => ready,
                // Boxed: connecting is rare, and its future would otherwise enlarge every
                // request's future, which is allocated and written for each request.
                None => Box::pin(self.connect_ready(endpoint)).await?,
            };
            // Bound first: a `?` on the awaited expression would hold the exchange twice.
            let exchange = ready.send(req)?;
            Ok(exchange.await?.map(Either::Right))
        }
    }

    /// A new connection to `endpoint`, ready for a request.
    async fn connect_ready(&self, endpoint: &Authority) -> Result<H2Ready, UpstreamError> {
        self.connect(endpoint).await?.ready().await
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
    C::Response: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    C::Future: Send + Unpin + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn with(h1_connector: C, h2_connector: C) -> Self {
        let h2 = H2Connections {
            connector: h2_connector,
            connections: Mutex::default(),
        };
        Self {
            h1: H1Connections::new(h1_connector),
            h2,
        }
    }

    /// Sends `req`, prepared by [`to_upstream`] for `version` and `endpoint`. Not an
    /// `async fn`: the request moves straight into the future of its version's exchange, and
    /// no future of this stage holds it too.
    pub(crate) fn send<'a>(
        &'a self,
        version: Version,
        endpoint: &'a Authority,
        req: Request<UpstreamBody>,
    ) -> impl Future<Output = Result<Response<FromUpstream>, UpstreamError>> + 'a {
        if version == Version::HTTP_2 {
            future::Either::Left(self.h2.send(endpoint, req))
        } else {
            future::Either::Right(self.h1.send(endpoint, req))
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
/// `upgrade`). HTTP/1.1: the URI becomes origin-form, `/path?query`, and the original
/// authority stays in `Host` (the endpoint's when there was none). HTTP/2: the original authority becomes `:authority` and `Host` goes, as
/// RFC 9113 §8.3.1 asks of intermediaries (servers such as nginx refuse a `Host` that differs
/// from `:authority`). The connection is picked by endpoint.
pub(crate) fn to_upstream<B>(
    req: &mut Request<B>,
    endpoint: &Authority,
    version: Version,
    upgrade: bool,
) {
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let uri = if version == Version::HTTP_2 {
        let authority = req
            .headers_mut()
            .remove(header::HOST)
            .and_then(|host| Authority::try_from(host.as_bytes()).ok())
            .or_else(|| req.uri().authority().cloned())
            .unwrap_or_else(|| endpoint.clone());
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority);
        parts.path_and_query = Some(path);
        // Scheme, authority and path are all set, which is all `from_parts` checks.
        Uri::from_parts(parts).ok()
    } else {
        if !req.headers().contains_key(header::HOST) {
            let host = req.uri().authority().unwrap_or(endpoint);
            if let Ok(host) = HeaderValue::from_str(host.as_str()) {
                req.headers_mut().insert(header::HOST, host);
            }
        }
        Some(Uri::from(path))
    };
    if let Some(uri) = uri {
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
    } else if carries(headers, &ORIG_PROTO) {
        headers.remove(ORIG_PROTO);
    }
}

/// On the inbound side: a request a peer proxy carried over HTTP/2 goes on as the HTTP/1.1
/// request it was (to the app, in routing and retries). Only a `mesh_peer` (one that proved a
/// mesh identity over mutual TLS) is believed; the mark is removed either way.
pub(crate) fn restore_orig_proto<B>(req: &mut Request<B>, mesh_peer: bool) {
    if !carries(req.headers(), &ORIG_PROTO) {
        return;
    }
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
/// for upgrades, `Connection: upgrade` with `Upgrade`. Returns whether `headers` had any.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) -> bool {
    // Most messages have none: one pass over the few names present settles it.
    if !headers.keys().any(is_connection_specific) {
        return false;
    }
    if carries(headers, &header::CONNECTION) {
        // The usual `Connection: keep-alive` lists only headers removed below anyway: then
        // nothing is copied.
        let removed_below = |name: &str| {
            HOP_BY_HOP
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n.as_str()))
                || name.eq_ignore_ascii_case("upgrade")
                || (!upgrade && name.eq_ignore_ascii_case("connection"))
        };
        if super::tokens(headers, header::CONNECTION).any(|name| !removed_below(name)) {
            let listed: Vec<HeaderName> = super::tokens(headers, header::CONNECTION)
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .filter(|name| !(upgrade && name == header::UPGRADE))
                .collect();
            for name in listed {
                headers.remove(name);
            }
        }
    }
    for name in HOP_BY_HOP {
        if carries(headers, &name) {
            headers.remove(name);
        }
    }
    if !upgrade {
        for name in [header::CONNECTION, header::UPGRADE] {
            if carries(headers, &name) {
                headers.remove(name);
            }
        }
    }
    if carries(headers, &header::TE) {
        let te_trailers =
            super::tokens(headers, header::TE).any(|t| t.eq_ignore_ascii_case("trailers"));
        headers.remove(header::TE);
        if te_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
    true
}

/// Whether `name` is one [`strip_hop_by_hop`] may remove.
fn is_connection_specific(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::UPGRADE
        || HOP_BY_HOP.contains(name)
}

/// Whether `headers` has `name`, by comparing the few names present rather than hashing: the
/// names asked about (hop-by-hop headers, the orig-proto mark) are mostly absent, and a hashed
/// lookup of each would cost more than the scan.
fn carries(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.keys().any(|present| present == name)
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
    fn te_keeps_trailers_from_any_of_its_lines() {
        let mut h = HeaderMap::new();
        h.append(header::TE, HeaderValue::from_static("gzip"));
        h.append(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(
            h.get_all(header::TE).iter().collect::<Vec<_>>(),
            ["trailers"]
        );

        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn http1_goes_origin_form_and_keeps_the_host() {
        let endpoint = Authority::from_static("10.0.0.7:8080");
        let mut req = Request::get("/items?id=1")
            .header(header::HOST, "catalog")
            .header(header::CONNECTION, "keep-alive")
            .body(())
            .unwrap();
        to_upstream(&mut req, &endpoint, Version::HTTP_11, false);
        assert_eq!(req.uri(), "/items?id=1");
        assert_eq!(req.headers()[header::HOST], "catalog");
        assert!(!req.headers().contains_key(header::CONNECTION));

        // Absolute-form, as HTTP proxy clients send: the authority becomes the Host.
        let mut absolute = Request::get("http://catalog:8080/items").body(()).unwrap();
        to_upstream(&mut absolute, &endpoint, Version::HTTP_11, false);
        assert_eq!(absolute.uri(), "/items");
        assert_eq!(absolute.headers()[header::HOST], "catalog:8080");

        let mut bare = Request::get("/").body(()).unwrap();
        to_upstream(&mut bare, &endpoint, Version::HTTP_11, false);
        assert_eq!(
            bare.headers()[header::HOST],
            "10.0.0.7:8080",
            "none: the endpoint"
        );
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
        assert_eq!(req.uri(), "/items");
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

    /// An HTTP/1.1 server on loopback that answers `ok`: for `/stream` the head at once and
    /// the body 200 ms later, for `/hold` the body once [`Server::release`] lets it go, and
    /// closing the connection for `/close`.
    struct Server {
        endpoint: Authority,
        /// Connections accepted.
        accepted: Arc<std::sync::atomic::AtomicUsize>,
        /// Connections that have ended since.
        ended: Arc<std::sync::atomic::AtomicUsize>,
        /// Lets a `/hold` response's body go.
        release: Arc<tokio::sync::Notify>,
    }

    /// A body of `ok` that comes once `wait` is done.
    fn ok_after(
        wait: impl Future<Output = ()> + Send + 'static,
    ) -> http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::convert::Infallible> {
        use http_body_util::BodyExt;

        let ok = futures_util::stream::once(async move {
            wait.await;
            Ok(hyper::body::Frame::data(bytes::Bytes::from_static(b"ok")))
        });
        http_body_util::StreamBody::new(ok).boxed_unsync()
    }

    impl Server {
        async fn start() -> Server {
            use std::sync::atomic::{AtomicUsize, Ordering};

            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let endpoint = Authority::try_from(listener.local_addr().unwrap().to_string()).unwrap();
            let accepted = Arc::new(AtomicUsize::new(0));
            let ended = Arc::new(AtomicUsize::new(0));
            let release = Arc::new(tokio::sync::Notify::new());
            let (count, done, held) = (accepted.clone(), ended.clone(), release.clone());
            tokio::spawn(async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    count.fetch_add(1, Ordering::SeqCst);
                    let (done, held) = (done.clone(), held.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(|req: Request<Incoming>| {
                            let held = held.clone();
                            let mut response = Response::new(match req.uri().path() {
                                "/stream" => {
                                    ok_after(tokio::time::sleep(Duration::from_millis(200)))
                                }
                                "/hold" => ok_after(async move { held.notified().await }),
                                _ => ok_after(std::future::ready(())),
                            });
                            if req.uri().path() == "/close" {
                                response
                                    .headers_mut()
                                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                            }
                            std::future::ready(Ok::<_, std::convert::Infallible>(response))
                        });
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await;
                        done.fetch_add(1, Ordering::SeqCst);
                    });
                }
            });
            Server {
                endpoint,
                accepted,
                ended,
                release,
            }
        }

        fn accepted(&self) -> usize {
            self.accepted.load(std::sync::atomic::Ordering::SeqCst)
        }

        fn ended(&self) -> usize {
            self.ended.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// GETs `path` from `endpoint` over HTTP/1.1, as the proxy forwards a request: its body.
    async fn get(clients: &UpstreamClients, endpoint: &Authority, path: &str) -> String {
        use http_body_util::BodyExt;

        let mut req = Request::get(path)
            .header(header::HOST, "catalog")
            .body(UpstreamBody::Empty)
            .unwrap();
        to_upstream(&mut req, endpoint, Version::HTTP_11, false);
        let response = clients.send(Version::HTTP_11, endpoint, req).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    fn pooled(clients: &UpstreamClients, endpoint: &Authority) -> usize {
        lock(&clients.h1.connections)
            .get(endpoint.as_str())
            .map_or(0, Vec::len)
    }

    #[tokio::test]
    async fn sequential_http1_requests_share_one_connection() {
        let server = Server::start().await;
        let clients = UpstreamClients::new(Duration::from_secs(1));
        for _ in 0..5 {
            assert_eq!(get(&clients, &server.endpoint, "/").await, "ok");
        }
        assert_eq!(server.accepted(), 1);
        assert_eq!(pooled(&clients, &server.endpoint), 1);
    }

    #[tokio::test]
    async fn concurrent_http1_requests_take_a_connection_each_and_then_reuse_them() {
        let server = Server::start().await;
        let clients = UpstreamClients::new(Duration::from_secs(1));
        let (a, b) = tokio::join!(
            get(&clients, &server.endpoint, "/stream"),
            get(&clients, &server.endpoint, "/stream")
        );
        assert_eq!((a.as_str(), b.as_str()), ("ok", "ok"));
        assert_eq!(
            server.accepted(),
            2,
            "one busy connection per request in flight"
        );
        for _ in 0..3 {
            assert_eq!(get(&clients, &server.endpoint, "/").await, "ok");
        }
        assert_eq!(server.accepted(), 2, "idle connections are reused");
    }

    #[tokio::test]
    async fn connections_the_server_closes_leave_the_pool() {
        let server = Server::start().await;
        let clients = UpstreamClients::new(Duration::from_secs(1));
        for _ in 0..3 {
            assert_eq!(get(&clients, &server.endpoint, "/close").await, "ok");
        }
        assert_eq!(server.accepted(), 3);
        assert!(
            pooled(&clients, &server.endpoint) <= 1,
            "closed ones are dropped"
        );
    }

    #[tokio::test]
    async fn a_connection_idle_too_long_is_not_used_again() {
        let server = Server::start().await;
        let clients = UpstreamClients::new(Duration::from_secs(1));
        assert_eq!(get(&clients, &server.endpoint, "/").await, "ok");
        for p in lock(&clients.h1.connections).values_mut().flatten() {
            p.used = p
                .used
                .checked_sub(POOL_IDLE + Duration::from_secs(1))
                .unwrap();
        }
        assert_eq!(get(&clients, &server.endpoint, "/").await, "ok");
        assert_eq!(server.accepted(), 2);
        assert_eq!(pooled(&clients, &server.endpoint), 1);
    }

    #[tokio::test]
    async fn idle_connections_close_after_the_idle_timeout_and_busy_ones_stay() {
        let server = Server::start().await;
        let clients = UpstreamClients::new(Duration::from_secs(1));
        let later = || Instant::now() + POOL_IDLE + Duration::from_secs(1);
        assert_eq!(get(&clients, &server.endpoint, "/").await, "ok");
        prune(&mut lock(&clients.h1.connections), Instant::now());
        assert_eq!(
            pooled(&clients, &server.endpoint),
            1,
            "idle, not yet for long"
        );

        // The body waits for the release: meanwhile the connection is pooled but busy.
        let (held, ()) = tokio::join!(get(&clients, &server.endpoint, "/hold"), async {
            let deadline = Instant::now() + Duration::from_secs(5);
            let busy_in_pool = || {
                lock(&clients.h1.connections)
                    .values()
                    .flatten()
                    .any(|p| !p.sender.is_ready())
            };
            while !busy_in_pool() {
                assert!(Instant::now() < deadline, "the head never arrived");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            prune(&mut lock(&clients.h1.connections), later());
            assert_eq!(pooled(&clients, &server.endpoint), 1, "busy: kept");
            server.release.notify_one();
        });
        assert_eq!(held, "ok");

        prune(&mut lock(&clients.h1.connections), later());
        assert_eq!(
            pooled(&clients, &server.endpoint),
            0,
            "idle too long: dropped"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.ended() < 1 {
            assert!(Instant::now() < deadline, "the server never saw the close");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(server.accepted(), 1);
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_not_used_again() {
        use std::io::{Read, Write};

        // Answers one request per connection as if keeping it alive, then closes the connection
        // unannounced, as servers do when their idle timeout runs out.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = Authority::try_from(listener.local_addr().unwrap().to_string()).unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().unwrap();
                let mut head = Vec::new();
                let mut buf = [0; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).unwrap();
                    assert!(n > 0, "the request ended early");
                    head.extend_from_slice(&buf[..n]);
                }
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .unwrap();
            }
        });
        let clients = UpstreamClients::new(Duration::from_secs(1));
        assert_eq!(get(&clients, &endpoint, "/").await, "ok");
        let closed = || {
            lock(&clients.h1.connections)
                .values()
                .flatten()
                .all(|p| p.sender.is_closed())
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !closed() {
            assert!(
                Instant::now() < deadline,
                "the close never reached the pool"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(get(&clients, &endpoint, "/").await, "ok");
        server.join().unwrap();
    }
}

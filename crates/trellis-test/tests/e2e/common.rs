//! Shared pieces: service YAML, a keep-alive HTTP client, admin API reads.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use trellis_proxy::ProxyHandle;
use trellis_test::{Server, Sidecar, TestMesh, spawn_http_echo};

/// A mesh with one HTTP echo app, `name`, behind its sidecar (keep the handles alive).
pub(crate) struct EchoMesh {
    pub(crate) mesh: TestMesh,
    pub(crate) _echo: Server,
    pub(crate) _sidecar: ProxyHandle,
}

/// Starts an [`EchoMesh`] whose config declares `name` as an HTTP service.
pub(crate) async fn echo_mesh(name: &str) -> EchoMesh {
    let mesh = TestMesh::start(&[("services.yaml", &service(name, "HTTP"))])
        .await
        .unwrap();
    let echo = spawn_http_echo(name).await.unwrap();
    let sidecar = mesh
        .sidecar(Sidecar::new(name, echo.addr().port()))
        .await
        .unwrap();
    EchoMesh {
        mesh,
        _echo: echo,
        _sidecar: sidecar,
    }
}

/// A `kind: Service` document.
pub(crate) fn service(name: &str, protocol: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  ports: [{{port: 80, protocol: {protocol}}}]\n---\n"
    )
}

/// A Service selecting workloads of `app` with `version`.
pub(crate) fn versioned(name: &str, app: &str, version: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {app}, version: {version}}}\n---\n"
    )
}

/// An HTTPRoute on `parent` splitting between two backends.
pub(crate) fn split(parent: &str, a: (&str, u32), b: (&str, u32)) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {parent}-split}}\nspec:\n  parentRefs: [{{kind: Service, name: {parent}}}]\n  rules:\n  - backendRefs:\n    - {{name: {}, weight: {}}}\n    - {{name: {}, weight: {}}}\n",
        a.0, a.1, b.0, b.1
    )
}

/// An HTTP/1.1 client that keeps connections alive, like a real app's.
pub(crate) struct KeepAlive {
    client: Client<HttpConnector, Empty<Bytes>>,
    base: String,
}

impl KeepAlive {
    pub(crate) fn new(addr: SocketAddr) -> KeepAlive {
        KeepAlive {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
        }
    }

    /// GET `path`; returns the status and the `x-served-by` header.
    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let uri: http::Uri = format!("{}{path}", self.base).parse()?;
        let response =
            tokio::time::timeout(trellis_test::CLIENT_TIMEOUT, self.client.get(uri)).await??;
        status_and_server(response).await
    }
}

/// The status and `x-served-by` header of a response, once its body has been read.
async fn status_and_server(
    response: http::Response<hyper::body::Incoming>,
) -> anyhow::Result<(u16, String)> {
    let status = response.status().as_u16();
    let served_by = response
        .headers()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    response.into_body().collect().await?;
    Ok((status, served_by))
}

/// The servers that answered `n` sequential `GET /` sent over one HTTP/1.1 connection to
/// `addr` that stayed silent for twice the detection timeout after connecting, as connections
/// a client pool opens ahead of its requests do. Routed per request, a split shows every
/// version; a connection the proxy took for opaque TCP would show one.
pub(crate) async fn servers_on_an_early_connection(addr: SocketAddr, n: usize) -> BTreeSet<String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    tokio::time::sleep(trellis_control::translate::DETECTION_TIMEOUT * 2).await;
    let mut servers = BTreeSet::new();
    for _ in 0..n {
        send.ready().await.unwrap();
        let request = http::Request::get("/")
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response =
            tokio::time::timeout(trellis_test::CLIENT_TIMEOUT, send.send_request(request))
                .await
                .unwrap()
                .unwrap();
        let (status, served_by) = status_and_server(response).await.unwrap();
        assert_eq!(status, 200);
        servers.insert(served_by);
    }
    servers
}

/// Asserts that `share`, the fraction of `n` independent requests that took a branch chosen with
/// probability `expected`, lies within five standard deviations of `expected`. A correct proxy
/// misses that band about once in 1.7 million checks; a fixed ±0.03 over 2000 requests of a 50/50
/// split is under three deviations and failed about once in 140 runs.
#[track_caller]
pub(crate) fn assert_share(what: &str, share: f64, expected: f64, n: usize) {
    let band = 5.0 * (expected * (1.0 - expected) / n as f64).sqrt();
    assert!(
        (share - expected).abs() <= band,
        "{what} gave {share:.3}, expected {expected} ± {band:.3} (five deviations over {n})"
    );
}

/// The share of `n` sequential `GET /` through `client` that `server` answered (all must be 200).
pub(crate) async fn share_served_by(client: &KeepAlive, server: &str, n: usize) -> f64 {
    let mut hits = 0;
    for _ in 0..n {
        let (status, served_by) = client.get("/").await.unwrap();
        assert_eq!(status, 200);
        if served_by == server {
            hits += 1;
        }
    }
    hits as f64 / n as f64
}

/// GET a JSON document from the control plane's admin API.
pub(crate) async fn admin_json(admin: SocketAddr, path: &str) -> serde_json::Value {
    let reply = trellis_test::http1_get(admin, path, &[])
        .await
        .expect("admin API answers");
    assert_eq!(reply.status, 200, "{path}");
    reply.json().expect("admin API returns JSON")
}

/// A sidecar's applied config, as its admin `/config_dump` shows it.
pub(crate) async fn config_dump(admin: SocketAddr) -> serde_json::Value {
    let reply = trellis_test::http1_get(admin, "/config_dump", &[])
        .await
        .expect("admin answers");
    reply.json().expect("config_dump is JSON")
}

/// Whether the sidecar with admin address `admin` has endpoints for each of `clusters`.
pub(crate) async fn has_endpoints(admin: SocketAddr, clusters: &[&str]) -> bool {
    let dump = config_dump(admin).await;
    let clusters_of = || dump["clusters"].as_array().into_iter().flatten();
    clusters.iter().all(|name| {
        clusters_of()
            .any(|c| c["name"] == *name && c["endpoints"].as_array().is_some_and(|e| !e.is_empty()))
    })
}

/// Endpoint addresses the control plane lists for `service`.
pub(crate) async fn endpoints_of(admin: SocketAddr, service: &str) -> Vec<String> {
    let services = admin_json(admin, "/api/services").await;
    services
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == service)
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| e["address"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The value of one series, written `name{labels}` exactly as a sidecar's (or the control
/// plane's) `/metrics` exposes it; `None` when the page does not carry it.
pub(crate) async fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let reply = trellis_test::http1_get(admin, "/metrics", &[])
        .await
        .expect("admin answers");
    let text = reply.text();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

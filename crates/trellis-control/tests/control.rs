//! The control plane as a whole: files in, ADS and admin API out, with a scripted xDS client
//! standing in for a proxy.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_control::{ControlHandle, ControlOptions};
use trellis_xds::TypeUrl;
use trellis_xds::client::{self, ClientOptions, Handler};
use trellis_xds::node::NodeMeta;

const SERVICES: &str = "\
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: legacy}
spec:
  endpoints:
  - {address: \"127.0.0.1:7001\"}
  - {address: \"127.0.0.1:7002\"}
";

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GETs `path` from the admin API; asserts 200 and returns the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    body.to_owned()
}

/// GETs `path` from the admin API; returns the status code and the body.
async fn get_any(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

async fn get_json(addr: std::net::SocketAddr, path: &str) -> Value {
    let body = get(addr, path).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn options(dir: &std::path::Path) -> ControlOptions {
    ControlOptions {
        config_dir: Some(dir.to_owned()),
        data_dir: None,
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        warmup: Duration::ZERO,
        svid_ttl: None,
        user_ca: None,
        stats_interval: trellis_control::DEFAULT_STATS_INTERVAL,
    }
}

async fn start(dir: &std::path::Path) -> ControlHandle {
    trellis_control::start(options(dir)).await.unwrap()
}

/// A sidecar reads the join token when it starts, which may be as soon as the xDS port accepts:
/// the token is settled before that port is bound. Here both fail (the data dir lies under a
/// file, the port is taken), and the token's failure is the one reported.
#[tokio::test]
async fn the_join_token_is_settled_before_the_xds_port_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let failed = trellis_control::start(ControlOptions {
        data_dir: Some(file.join("state")),
        xds_addr: taken.local_addr().unwrap(),
        ..options(dir.path())
    })
    .await;
    let Err(trellis_control::StartError::Ca(trellis_control::ca::CaStartError::Io {
        path, ..
    })) = failed
    else {
        panic!("expected the join token's error first");
    };
    assert_eq!(path, file.join("state").join("join-token"));
}

/// Records EDS endpoints per cluster; NACKs clusters named in `reject`.
#[derive(Clone, Default)]
struct Recorder {
    clusters: Arc<Mutex<Vec<String>>>,
    endpoints: Arc<Mutex<Vec<(String, usize)>>>,
    reject: Option<&'static str>,
}

impl Handler for Recorder {
    fn apply(&mut self, t: TypeUrl, _: &str, resources: &[Any]) -> Result<(), String> {
        match t {
            TypeUrl::Cluster => {
                let names: Vec<String> = resources
                    .iter()
                    .map(|a| Cluster::decode(a.value.as_slice()).unwrap().name)
                    .collect();
                if let Some(bad) = self.reject.filter(|r| names.iter().any(|n| n.contains(r))) {
                    return Err(format!("cluster {bad:?}: unsupported by this test client"));
                }
                *self.clusters.lock().unwrap() = names;
            }
            TypeUrl::ClusterLoadAssignment => {
                *self.endpoints.lock().unwrap() = resources
                    .iter()
                    .map(|a| {
                        let cla = ClusterLoadAssignment::decode(a.value.as_slice()).unwrap();
                        let n = cla.endpoints.iter().map(|l| l.lb_endpoints.len()).sum();
                        (cla.cluster_name, n)
                    })
                    .collect();
            }
            _ => {}
        }
        Ok(())
    }
    fn wanted(&self, t: TypeUrl) -> Vec<String> {
        match t {
            TypeUrl::ClusterLoadAssignment => self
                .clusters
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c.starts_with("outbound|"))
                .cloned()
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn client_for(
    control: &ControlHandle,
    service: &str,
    handler: Recorder,
) -> tokio::task::JoinHandle<()> {
    let meta = NodeMeta {
        service: service.into(),
        namespace: "default".into(),
        app_port: 9000,
        inbound_port: 9001,
        ip: "127.0.0.1".into(),
        ..NodeMeta::default()
    };
    spawn_client(control, &format!("{service}-1"), &meta, handler)
}

fn spawn_client(
    control: &ControlHandle,
    node_id: &str,
    meta: &NodeMeta,
    handler: Recorder,
) -> tokio::task::JoinHandle<()> {
    let opts = ClientOptions {
        endpoint: format!("http://{}", control.xds_addr()),
        node: meta.to_node(node_id),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
    };
    tokio::spawn(client::run(opts, handler, std::future::pending()))
}

fn legacy_endpoints(r: &Recorder) -> Option<usize> {
    r.endpoints
        .lock()
        .unwrap()
        .iter()
        .find(|(c, _)| c == "outbound|legacy.default")
        .map(|(_, n)| *n)
}

#[tokio::test]
async fn invalid_change_is_rejected_with_location_and_old_config_serves() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    let control = start(dir.path()).await;
    let admin = control.admin_addr();
    let recorder = Recorder::default();
    let client = client_for(&control, "web", recorder.clone());
    eventually("static endpoints in EDS", async || {
        legacy_endpoints(&recorder) == Some(2)
    })
    .await;

    // A bad field in a second file: rejected as a whole, with file:line.
    std::fs::write(
        dir.path().join("routes.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{kind: Service, name: legacy}]\n  rules:\n  - backendRefs: [{name: legacy, weigth: 5}]\n",
    )
    .unwrap();
    eventually("error on the admin API", async || {
        let config = get_json(admin, "/api/config").await;
        config["errors"].as_array().is_some_and(|e| {
            e.iter()
                .any(|e| e.as_str().unwrap().contains("routes.yaml:7:"))
        })
    })
    .await;
    assert_eq!(
        legacy_endpoints(&recorder),
        Some(2),
        "old config still served"
    );

    // Removing one static endpoint and fixing the route applies both.
    std::fs::remove_file(dir.path().join("routes.yaml")).unwrap();
    std::fs::write(
        dir.path().join("services.yaml"),
        SERVICES.replace("  - {address: \"127.0.0.1:7002\"}\n", ""),
    )
    .unwrap();
    eventually("endpoint removed from EDS", async || {
        legacy_endpoints(&recorder) == Some(1)
    })
    .await;
    let config = get_json(admin, "/api/config").await;
    assert_eq!(config["errors"], Value::Array(Vec::new()));
    eventually("the proxy reports in sync", async || {
        get_json(admin, "/api/proxies").await[0]["synced"] == Value::Bool(true)
    })
    .await;
    client.abort();
}

#[tokio::test]
async fn registry_follows_streams_and_shows_nacks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    let control = start(dir.path()).await;
    let admin = control.admin_addr();

    let picky = Recorder {
        reject: Some("legacy"),
        ..Recorder::default()
    };
    let client = client_for(&control, "web", picky);
    eventually("nack shown per proxy", async || {
        let proxies = get_json(admin, "/api/proxies").await;
        proxies[0]["last_nack"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("unsupported by this test client"))
    })
    .await;
    let workloads = get_json(admin, "/api/workloads").await;
    assert_eq!(workloads[0]["service"], "web");
    assert_eq!(
        workloads[0]["identity"],
        "spiffe://cluster.local/ns/default/sa/web"
    );
    let services = get_json(admin, "/api/services").await;
    let names: Vec<&str> = services
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["legacy", "web"]);

    client.abort();
    eventually("workload removed when its stream ends", async || {
        get_json(admin, "/api/workloads").await == Value::Array(Vec::new())
    })
    .await;
    let metrics = get(admin, "/metrics").await;
    assert!(
        metrics.contains("trellis_control_xds_nacks_total{type=\"cds\"} 1"),
        "{metrics}"
    );
}

/// The value of the sample `series` (name and labels), 0 when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    let value = metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '));
    value.map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn pushes_are_counted_and_timed_to_the_ack() {
    const PUSHED_EDS: &str = "trellis_control_xds_pushes_total{type=\"eds\"}";
    const TIMED: &str = "trellis_control_xds_push_duration_seconds_count";
    const WITHIN_10S: &str = "trellis_control_xds_push_duration_seconds_bucket{le=\"10.0\"}";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    let control = start(dir.path()).await;
    let admin = control.admin_addr();
    let recorder = Recorder::default();
    let client = client_for(&control, "web", recorder.clone());
    // `synced` alone holds before the first ACK: wait for the EDS one too.
    eventually("endpoints ACKed", async || {
        let proxy = &get_json(admin, "/api/proxies").await[0];
        proxy["acked"]["eds"].is_string() && proxy["synced"] == Value::Bool(true)
    })
    .await;
    let before = get(admin, "/metrics").await;
    assert!(sample(&before, "trellis_control_xds_pushes_total{type=\"cds\"}") >= 1.0);
    assert!(sample(&before, PUSHED_EDS) >= 1.0, "{before}");
    assert!(
        sample(&before, TIMED) >= 2.0,
        "cds and eds at least: {before}"
    );
    assert_eq!(sample(&before, WITHIN_10S), sample(&before, TIMED));
    assert!(
        before.contains("\nprocess_resident_memory_bytes "),
        "{before}"
    );

    // An endpoint change is one more EDS push, timed once ACKed.
    std::fs::write(
        dir.path().join("services.yaml"),
        SERVICES.replace("  - {address: \"127.0.0.1:7002\"}\n", ""),
    )
    .unwrap();
    eventually("the change timed", async || {
        let after = get(admin, "/metrics").await;
        sample(&after, TIMED) > sample(&before, TIMED)
    })
    .await;
    let after = get(admin, "/metrics").await;
    assert_eq!(legacy_endpoints(&recorder), Some(1));
    assert!(sample(&after, PUSHED_EDS) > sample(&before, PUSHED_EDS));
    assert_eq!(sample(&after, WITHIN_10S), sample(&after, TIMED));
    client.abort();
}

#[tokio::test]
async fn route_status_names_a_missing_backend() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(
        dir.path().join("routes.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{kind: Service, name: legacy}]\n  rules:\n  - backendRefs: [{name: legacy}, {name: missing}]\n",
    )
    .unwrap();
    let control = start(dir.path()).await;
    let admin = control.admin_addr();
    eventually("the route's status", async || {
        get_json(admin, "/api/routes").await[0]["name"] == "r"
    })
    .await;
    let routes = get_json(admin, "/api/routes").await;
    let parent = &routes[0]["parents"][0];
    assert_eq!(routes[0]["kind"], "HTTPRoute");
    assert_eq!(parent["parentRef"]["name"], "legacy");
    let conditions = &parent["conditions"];
    assert_eq!(
        (&conditions[0]["type"], &conditions[0]["status"]),
        (&Value::from("Accepted"), &Value::from("True"))
    );
    let resolved = &conditions[1];
    assert_eq!(
        (&resolved["type"], &resolved["status"], &resolved["reason"]),
        (
            &Value::from("ResolvedRefs"),
            &Value::from("False"),
            &Value::from("BackendNotFound")
        )
    );
    let message = resolved["message"].as_str().unwrap();
    assert!(message.contains("missing.default"), "{message}");
    assert!(!message.contains("legacy"), "{message}");
}

/// A stand-in proxy admin server: answers `/config_dump` with `dump`, or never answers when
/// `dump` is `None`. Returns its address.
async fn admin_server(dump: Option<&'static str>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut request = [0; 1024];
                let n = stream.read(&mut request).await.unwrap();
                assert!(request[..n].starts_with(b"GET /config_dump HTTP/1.1\r\n"));
                let Some(dump) = dump else {
                    return std::future::pending().await;
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    dump.len()
                );
                stream.write_all(head.as_bytes()).await.unwrap();
                stream.write_all(dump.as_bytes()).await.unwrap();
            });
        }
    });
    addr
}

#[tokio::test]
async fn proxy_config_is_read_from_the_proxy_or_says_why_not() {
    const DUMP: &str = r#"{"versions": {"cds": "7"}, "listeners": [], "clusters": []}"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    let control = start(dir.path()).await;
    let admin = control.admin_addr();
    let config = async |id: &str| get_any(admin, &format!("/api/proxies/{id}/config")).await;

    let (status, body) = config("nobody").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.starts_with("no connected proxy has node id \"nobody\""),
        "{body}"
    );

    // Nothing listens on port 1 (a port freed by a dropped listener could be taken again).
    let gone = "127.0.0.1:1".to_owned();
    let proxies = [
        ("serving", Some(admin_server(Some(DUMP)).await)),
        ("silent", Some(admin_server(None).await)),
        ("gone", Some(gone.clone())),
        ("unadvertised", None),
    ];
    let clients: Vec<_> = proxies
        .iter()
        .map(|(id, addr)| {
            let meta = NodeMeta {
                service: "web".into(),
                app_port: 9000,
                inbound_port: 9001,
                admin: addr.clone(),
                ..NodeMeta::default()
            };
            spawn_client(&control, id, &meta, Recorder::default())
        })
        .collect();
    eventually("every proxy registered", async || {
        get_json(admin, "/api/proxies")
            .await
            .as_array()
            .map(Vec::len)
            == Some(4)
    })
    .await;

    let (status, body) = config("serving").await;
    assert_eq!((status, body.as_str()), (200, DUMP));

    let started = Instant::now();
    let (status, body) = config("silent").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("did not answer within 1s"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(3), "bounded wait");

    let (status, body) = config("gone").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.starts_with(&format!(
            "proxy \"gone\": connecting to its admin server at {gone}:"
        )),
        "{body}"
    );

    let (status, body) = config("unadvertised").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("advertised no admin address"), "{body}");

    for client in clients {
        client.abort();
    }
}

/// GETs `path`; returns the response head (lower-cased) and the body.
async fn get_with_head(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test]
async fn the_dashboard_and_its_series_are_served_on_the_admin_address() {
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path()).await;
    let admin = control.admin_addr();
    for page in ["/", "/dashboard"] {
        let (head, body) = get_with_head(admin, page).await;
        assert!(head.starts_with("http/1.1 200"), "{page}: {head}");
        assert!(head.contains("content-type: text/html"), "{head}");
        assert!(
            head.contains("content-security-policy: default-src 'none'"),
            "{head}"
        );
        assert!(body.contains("<svg id=\"graph\""), "{body}");
    }
    let (head, script) = get_with_head(admin, "/dashboard/app.js").await;
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(script.contains("/api/stats/series"));
    let (head, _) = get_with_head(admin, "/dashboard/style.css").await;
    assert!(head.contains("content-type: text/css"), "{head}");

    let series = get_json(admin, "/api/stats/series?by=edge&window=10s&step=5s").await;
    assert_eq!(series["by"], "edge");
    assert_eq!(series["step_seconds"], 5.0);
    assert_eq!(
        series["points"],
        Value::Array(vec![]),
        "no proxy, no points"
    );
    let (status, message) = get_any(admin, "/api/stats/series?step=10ms").await;
    assert_eq!(status, 400);
    assert!(message.starts_with("step:"), "{message}");
}

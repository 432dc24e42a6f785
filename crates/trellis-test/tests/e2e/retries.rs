//! Retries through two sidecars against misbehaving backends: a flaky backend made reliable, a
//! dead one whose retry traffic the budget bounds, and a hanging endpoint left behind by the
//! per-try timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use trellis_test::{
    EchoLog, Sidecar, TestMesh, assert_eventually, http1_get, http1_request, spawn_http_echo,
    spawn_recording_http_echo,
};

use crate::common::{metric, service};

const ROUTES: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: flaky}
spec:
  parentRefs: [{kind: Service, name: flaky}]
  rules:
  - retry: {codes: [503], attempts: 5, backoff: 5ms}
    backendRefs: [{name: flaky}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: down}
spec:
  parentRefs: [{kind: Service, name: down}]
  rules:
  - retry: {codes: [503], attempts: 3, backoff: 5ms}
    backendRefs: [{name: down}]
---
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {name: down-budget}
spec:
  targetRefs: [{kind: Service, name: down}]
  retryBudget: {budgetPercent: 20, minRetryConcurrency: 2}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: slow}
spec:
  parentRefs: [{kind: Service, name: slow}]
  rules:
  - timeouts: {request: 3s, backendRequest: 200ms}
    retry: {attempts: 2}
    backendRefs: [{name: slow}]
"#;

/// An HTTP endpoint that accepts connections and reads requests but never answers.
struct Hanging {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hanging {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn spawn_hanging() -> Hanging {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicU64::new(0));
    let counted = connections.clone();
    let task = tokio::spawn(async move {
        let mut open = tokio::task::JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::Relaxed);
            open.spawn(async move {
                let mut buf = [0u8; 1024];
                while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            });
        }
    });
    Hanging {
        addr,
        connections,
        task,
    }
}

/// The client's outbound addresses for `flaky`, `down` and `slow`, and what their backends saw.
struct Resilience {
    _mesh: TestMesh,
    _servers: Vec<trellis_test::Server>,
    _sidecars: Vec<trellis_proxy::ProxyHandle>,
    hanging: Hanging,
    /// The client sidecar's admin address, for its metrics.
    client_admin: SocketAddr,
    flaky: (SocketAddr, EchoLog),
    down: (SocketAddr, EchoLog),
    slow: SocketAddr,
}

async fn resilience() -> Resilience {
    let services = ["flaky", "down", "slow"]
        .map(|s| service(s, "HTTP"))
        .concat();
    let mesh = TestMesh::start(&[("services.yaml", &services), ("routes.yaml", ROUTES)])
        .await
        .unwrap();
    let (flaky, flaky_log) = spawn_recording_http_echo("flaky").await.unwrap();
    let (down, down_log) = spawn_recording_http_echo("down").await.unwrap();
    let slow = spawn_http_echo("slow").await.unwrap();
    let hanging = spawn_hanging().await;
    let mut sidecars = Vec::new();
    for (name, port) in [
        ("flaky", flaky.addr().port()),
        ("down", down.addr().port()),
        ("slow", slow.addr().port()),
        ("slow", hanging.addr.port()),
    ] {
        sidecars.push(mesh.sidecar(Sidecar::new(name, port)).await.unwrap());
    }
    let client = mesh
        .sidecar(
            Sidecar::new("client", 0)
                .upstream("flaky")
                .upstream("down")
                .upstream("slow"),
        )
        .await
        .unwrap();
    let addr = |s: &str| client.upstream_addr(s).unwrap();
    let (flaky_addr, down_addr, slow_addr) = (addr("flaky"), addr("down"), addr("slow"));
    let client_admin = client.admin_addr();
    sidecars.push(client);
    Resilience {
        _mesh: mesh,
        _servers: vec![flaky, down, slow],
        _sidecars: sidecars,
        hanging,
        client_admin,
        flaky: (flaky_addr, flaky_log),
        down: (down_addr, down_log),
        slow: slow_addr,
    }
}

/// Sends `per_client` requests from each of `clients` concurrent clients; returns how many
/// got a 200.
async fn load(addr: SocketAddr, path: &'static str, clients: usize, per_client: usize) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        tasks.spawn(async move {
            let mut ok = 0;
            for i in 0..per_client {
                // Half the requests carry a body, which retries must send again whole.
                let (method, body): (&str, &'static [u8]) = if (c + i) % 2 == 0 {
                    ("POST", b"retried body")
                } else {
                    ("GET", b"")
                };
                let reply = http1_request(addr, method, path, &[], body).await.unwrap();
                if reply.status == 200 {
                    assert_eq!(reply.echo().unwrap().body_len, body.len() as u64);
                    ok += 1;
                }
            }
            ok
        });
    }
    let mut ok = 0;
    while let Some(done) = tasks.join_next().await {
        ok += done.unwrap();
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_make_a_flaky_backend_reliable_and_the_budget_bounds_a_dead_one() {
    let r = resilience().await;
    let (flaky, flaky_log) = &r.flaky;
    assert_eventually!(
        Duration::from_secs(5),
        http1_get(*flaky, "/fail/0", &[])
            .await
            .is_ok_and(|r| r.status == 200)
    );

    // 30% of tries fail; up to 5 retries make the client see ≥ 99.5% success. Two clients never
    // have more than two retries in flight, within the default budget's floor of three.
    let retries = async |cluster: &str| {
        let series =
            format!(r#"trellis_cluster_retries_total{{cluster="outbound|{cluster}.default"}}"#);
        metric(r.client_admin, &series)
            .await
            .expect("every cluster's retries are exposed")
    };
    let before = (flaky_log.hits(), retries("flaky").await);
    let requests = 1000;
    let ok = load(*flaky, "/fail/30", 2, requests / 2).await;
    let hits = flaky_log.hits() - before.0;
    // Every try reaches the backend: the hits past one per request are the retries counted.
    assert_eq!(
        retries("flaky").await - before.1,
        (hits - requests as u64) as f64,
        "retries in the metrics"
    );
    let success = ok as f64 / requests as f64;
    eprintln!("flaky: {ok}/{requests} succeeded with {hits} backend hits");
    assert!(success >= 0.995, "success {success:.4}");
    assert!(
        (1.2..1.7).contains(&(hits as f64 / requests as f64)),
        "~0.43 retries per request expected, got {hits} hits for {requests} requests"
    );

    // Every try fails: 3 retries would make 4 tries per request, but the budget (20% of active
    // requests, at least 2) keeps retries a small share of the traffic.
    let (down, down_log) = &r.down;
    assert_eventually!(
        Duration::from_secs(5),
        http1_get(*down, "/fail/100", &[])
            .await
            .is_ok_and(|r| r.status == 503)
    );
    let denied_series = r#"trellis_cluster_retries_denied_total{cluster="outbound|down.default"}"#;
    let denied = async || metric(r.client_admin, denied_series).await.unwrap();
    let before = (down_log.hits(), denied().await, retries("down").await);
    let requests = 800;
    let ok = load(*down, "/fail/100", 16, requests / 16).await;
    let hits = down_log.hits() - before.0;
    // Every try reaches the backend; a request whose retry the budget refused stops there.
    assert_eq!(
        retries("down").await - before.2,
        (hits - requests as u64) as f64,
        "retries in the metrics"
    );
    let refused = denied().await - before.1;
    assert!(
        refused > 0.0 && refused <= requests as f64,
        "retries the budget refused are counted, at most one per request: {refused}"
    );
    eprintln!("down: {hits} backend hits for {requests} requests");
    assert_eq!(ok, 0);
    assert!(hits > requests as u64, "some retries were allowed");
    assert!(
        hits <= (requests as f64 * 1.3) as u64,
        "retry traffic beyond the budget: {hits} hits for {requests} requests (unbounded: {})",
        requests * 4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_try_timeout_moves_a_request_from_a_hanging_endpoint_to_a_healthy_one() {
    let r = resilience().await;
    // The healthy endpoint answers after 50 ms, so once its latency is known the balancer
    // prefers the endpoint it knows nothing of (assumed 30 ms): the hanging one.
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let reply = http1_get(r.slow, "/delay/50", &[]).await.unwrap();
        slowest = slowest.max(started.elapsed());
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-served-by"), Some("slow"));
        if r.hanging.connections.load(Ordering::Relaxed) > 0 {
            break;
        }
    }
    assert!(
        r.hanging.connections.load(Ordering::Relaxed) > 0,
        "the hanging endpoint was never tried"
    );
    assert!(
        slowest >= Duration::from_millis(200) && slowest < Duration::from_secs(1),
        "the request that met the hanging endpoint took {slowest:?} (per-try timeout 200 ms)"
    );
    // Only the request that met the hanging endpoint timed out, once.
    let timeouts = metric(
        r.client_admin,
        r#"trellis_cluster_timeouts_total{cluster="outbound|slow.default"}"#,
    )
    .await;
    assert_eq!(timeouts, Some(1.0), "the per-try timeout is counted");
}

//! Fault injection and local rate limits through two sidecars: injected shares measured over
//! 2000 requests, header-matched delays, per-route and per-service token buckets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use trellis_test::{HttpReply, Sidecar, TestMesh, assert_eventually, http1_get, spawn_http_echo};

use crate::common::{assert_share, service};

/// The `chaos-delay` fault's `fixedDelay` in [`CONFIG`]: long enough that a request it did not
/// delay never takes as long, even on a loaded machine, so latency tells the two apart.
const INJECTED_DELAY: Duration = Duration::from_millis(300);

const CONFIG: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: FaultInjection
metadata: {name: abort-20}
spec:
  abort: {httpStatus: 503, percent: 20}
---
apiVersion: trellis.dev/v1alpha1
kind: FaultInjection
metadata: {name: chaos-delay}
spec:
  delay: {fixedDelay: 300ms, percent: 10}
  headers: [{name: x-chaos, value: "on"}]
---
apiVersion: trellis.dev/v1alpha1
kind: RateLimit
metadata: {name: burst-of-five}
spec: {requests: 1, per: 1s, burst: 5}
---
apiVersion: trellis.dev/v1alpha1
kind: RateLimit
metadata: {name: guarded-inbound}
spec:
  requests: 1
  per: 1s
  burst: 10
  targetRefs: [{kind: Service, name: guarded}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{kind: Service, name: web}]
  rules:
  - backendRefs: [{name: web}]
  - matches: [{path: {value: /abort}}]
    filters:
    - {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: FaultInjection, name: abort-20}}
    backendRefs: [{name: web}]
  - matches: [{path: {value: /delay}}]
    filters:
    - {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: FaultInjection, name: chaos-delay}}
    backendRefs: [{name: web}]
  - matches: [{path: {value: /limited}}]
    filters:
    - {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: RateLimit, name: burst-of-five}}
    backendRefs: [{name: web}]
  - matches: [{path: {value: /missing}}]
    filters:
    - {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: FaultInjection, name: nowhere}}
    backendRefs: [{name: web}]
"#;

struct Faults {
    _mesh: TestMesh,
    _servers: Vec<trellis_test::Server>,
    _sidecars: Vec<trellis_proxy::ProxyHandle>,
    web: SocketAddr,
    guarded: SocketAddr,
}

async fn faults() -> Faults {
    let services = [service("web", "HTTP"), service("guarded", "HTTP")].concat();
    let mesh = TestMesh::start(&[("services.yaml", &services), ("faults.yaml", CONFIG)])
        .await
        .unwrap();
    let web = spawn_http_echo("web").await.unwrap();
    let guarded = spawn_http_echo("guarded").await.unwrap();
    let mut sidecars = vec![
        mesh.sidecar(Sidecar::new("web", web.addr().port()))
            .await
            .unwrap(),
        mesh.sidecar(Sidecar::new("guarded", guarded.addr().port()))
            .await
            .unwrap(),
    ];
    let client = mesh
        .sidecar(
            Sidecar::new("client", 0)
                .upstream("web")
                .upstream("guarded"),
        )
        .await
        .unwrap();
    let (web_addr, guarded_addr) = (
        client.upstream_addr("web").unwrap(),
        client.upstream_addr("guarded").unwrap(),
    );
    sidecars.push(client);
    assert_eventually!(
        Duration::from_secs(5),
        http1_get(web_addr, "/", &[])
            .await
            .is_ok_and(|r| r.status == 200)
    );
    Faults {
        _mesh: mesh,
        _servers: vec![web, guarded],
        _sidecars: sidecars,
        web: web_addr,
        guarded: guarded_addr,
    }
}

/// Sends `total` GETs from `clients` concurrent clients; returns each reply with its latency.
async fn load(
    addr: SocketAddr,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    clients: usize,
    total: usize,
) -> Vec<(HttpReply, Duration)> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        tasks.spawn(async move {
            let mut replies = Vec::new();
            for _ in 0..total / clients {
                let started = Instant::now();
                let reply = http1_get(addr, path, headers).await.unwrap();
                replies.push((reply, started.elapsed()));
            }
            replies
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.unwrap());
    }
    all
}

fn share(
    replies: &[(HttpReply, Duration)],
    selected: impl Fn(&(HttpReply, Duration)) -> bool,
) -> f64 {
    replies.iter().filter(|r| selected(r)).count() as f64 / replies.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_aborts_and_delays_hit_their_share_of_requests() {
    let f = faults().await;

    let aborts = load(f.web, "/abort", &[], 8, 2000).await;
    let aborted = share(&aborts, |(r, _)| r.status == 503);
    assert!(
        aborts
            .iter()
            .all(|(r, _)| r.status == 200 || r.status == 503),
        "only the injected status"
    );
    assert_share("20% abort", aborted, 0.2, aborts.len());
    let abort = aborts.iter().find(|(r, _)| r.status == 503).unwrap();
    assert_eq!(abort.0.text(), "fault filter abort");
    assert_eq!(abort.0.header("x-served-by"), None, "answered by the proxy");

    let delays = load(f.web, "/delay", &[("x-chaos", "on")], 16, 2000).await;
    let delayed = share(&delays, |(_, took)| *took >= INJECTED_DELAY);
    assert_share("10% delay", delayed, 0.1, delays.len());
    assert!(delays.iter().all(|(r, _)| r.status == 200));

    let unmatched = load(f.web, "/delay", &[], 4, 200).await;
    assert!(
        unmatched.iter().all(|(_, took)| *took < INJECTED_DELAY),
        "no delay without the header"
    );

    let missing = http1_get(f.web, "/missing", &[]).await.unwrap();
    assert_eq!(
        missing.status, 500,
        "a filter that cannot be found answers 500"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_past_the_rate_per_route_and_per_service() {
    let f = faults().await;

    // Buckets of 5 and 10 refilled with one token a second: a burst that straddles a refill
    // gets one more through, never a whole bucket more.
    let burst = load(f.web, "/limited", &[], 1, 12).await;
    let statuses: Vec<u16> = burst.iter().map(|(r, _)| r.status.as_u16()).collect();
    let passed = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        (5..=6).contains(&passed),
        "a bucket of 5 passed {passed}: {statuses:?}"
    );
    let refused = burst.iter().find(|(r, _)| r.status == 429).unwrap();
    assert_eq!(refused.0.header("retry-after"), Some("1"));
    assert_eq!(refused.0.text(), "local_rate_limited");
    // Other routes of the same listener are not limited.
    assert_eq!(http1_get(f.web, "/", &[]).await.unwrap().status, 200);
    // The bucket refills.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(http1_get(f.web, "/limited", &[]).await.unwrap().status, 200);

    // The guarded service's own sidecar admits a burst of 10 from everyone.
    let burst = load(f.guarded, "/", &[], 1, 25).await;
    let passed = burst.iter().filter(|(r, _)| r.status == 200).count();
    assert!(
        (10..=12).contains(&passed),
        "a bucket of 10 passed {passed}"
    );
    assert!(
        burst
            .iter()
            .all(|(r, _)| r.status == 200 || r.status == 429)
    );
}

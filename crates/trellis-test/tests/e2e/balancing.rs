//! BackendPolicy through sidecars: P2C peak-EWMA against round robin with a slow endpoint, ring
//! hash affinity and its stability when an endpoint leaves, outlier ejection and return, the
//! request circuit breaker, gRPC health checks, and locality failover.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use trellis_proxy::ProxyHandle;
use trellis_test::{
    EchoLog, Quirks, Server, ServingStatus, Sidecar, TestMesh, assert_eventually, grpc_check,
    http1_get, spawn_grpc_health, spawn_quirky_http_echo,
};

use crate::common::{config_dump, endpoints_of, metric, service};

fn policy(name: &str, service: &str, spec: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: BackendPolicy\nmetadata: {{name: {name}}}\nspec:\n  targetRefs: [{{kind: Service, name: {service}}}]\n{spec}---\n"
    )
}

/// A workload: its app (an echo server with quirks) and its sidecar.
struct Workload {
    _app: Server,
    log: EchoLog,
    sidecar: ProxyHandle,
}

async fn workload(
    mesh: &TestMesh,
    service: &str,
    name: &str,
    quirks: Quirks,
    locality: Option<&str>,
) -> Workload {
    let (app, log) = spawn_quirky_http_echo(name, quirks).await.unwrap();
    let mut spec = Sidecar::new(service, app.addr().port());
    if let Some(l) = locality {
        spec = spec.locality(l);
    }
    let sidecar = mesh.sidecar(spec).await.unwrap();
    Workload {
        _app: app,
        log,
        sidecar,
    }
}

/// Slower than any hiccup of the fast path on a loaded machine, so one slow round trip of the
/// fast endpoint never makes it look like the slow one to peak-EWMA.
const SLOW: Quirks = Quirks {
    delay: Duration::from_millis(50),
    status: None,
};

async fn served_by(addr: SocketAddr, headers: &[(&str, &str)]) -> Option<String> {
    let reply = http1_get(addr, "/", headers).await.ok()?;
    reply.header("x-served-by").map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_sends_less_to_a_slow_endpoint_than_round_robin() {
    let files = [
        service("ewma", "HTTP"),
        service("rr", "HTTP"),
        policy("rr", "rr", "  loadBalancer: {type: RoundRobin}\n"),
    ]
    .concat();
    let mesh = TestMesh::start(&[("mesh.yaml", &files)]).await.unwrap();
    let mut workloads = Vec::new();
    for svc in ["ewma", "rr"] {
        workloads.push(workload(&mesh, svc, "fast", Quirks::default(), None).await);
        workloads.push(workload(&mesh, svc, "slow", SLOW, None).await);
    }
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("ewma").upstream("rr"))
        .await
        .unwrap();
    let mut share = HashMap::new();
    // Round robin alternates, so fewer requests measure its share.
    for (svc, requests) in [("ewma", 300), ("rr", 100)] {
        let addr = client.upstream_addr(svc).unwrap();
        assert_eventually!(
            Duration::from_secs(5),
            endpoints_of(mesh.admin_addr(), svc).await.len() == 2
        );
        let mut slow = 0;
        for _ in 0..requests {
            if served_by(addr, &[]).await.as_deref() == Some("slow") {
                slow += 1;
            }
        }
        share.insert(svc, f64::from(slow) / f64::from(requests));
    }
    eprintln!("slow endpoint's share: {share:?}");
    assert!((0.4..0.6).contains(&share["rr"]), "round robin: {share:?}");
    assert!(share["ewma"] < share["rr"] / 3.0, "peak-EWMA: {share:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_keeps_keys_on_endpoints_and_moves_few_when_one_leaves() {
    let files = [
        service("sticky", "HTTP"),
        policy(
            "sticky",
            "sticky",
            "  loadBalancer: {type: RingHash, consistentHash: {header: x-user}}\n",
        ),
    ]
    .concat();
    let mesh = TestMesh::start(&[("mesh.yaml", &files)]).await.unwrap();
    let mut workloads = Vec::new();
    for i in 0..4 {
        workloads.push(
            workload(
                &mesh,
                "sticky",
                &format!("sticky-{i}"),
                Quirks::default(),
                None,
            )
            .await,
        );
    }
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("sticky"))
        .await
        .unwrap();
    let addr = client.upstream_addr("sticky").unwrap();
    assert_eventually!(
        Duration::from_secs(5),
        endpoints_of(mesh.admin_addr(), "sticky").await.len() == 4
    );
    let users: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let owners = async |tries: usize| -> (HashMap<String, String>, usize) {
        let mut owner = HashMap::new();
        let mut stuck = 0;
        for user in &users {
            let seen: Vec<Option<String>> = {
                let mut seen = Vec::new();
                for _ in 0..tries {
                    seen.push(served_by(addr, &[("x-user", user)]).await);
                }
                seen
            };
            if seen.iter().all(|s| s == &seen[0]) {
                stuck += 1;
            }
            owner.insert(user.clone(), seen[0].clone().unwrap_or_default());
        }
        (owner, stuck)
    };
    let (before, stuck) = owners(5).await;
    assert!(
        stuck as f64 >= 0.95 * users.len() as f64,
        "{stuck} of 200 keys kept one endpoint"
    );
    let spread: std::collections::BTreeSet<&String> = before.values().collect();
    assert_eq!(spread.len(), 4, "keys spread over every endpoint");

    let leaving = workloads.pop().unwrap();
    drop(leaving);
    assert_eventually!(
        Duration::from_secs(5),
        endpoints_of(mesh.admin_addr(), "sticky").await.len() == 3
    );
    assert_eventually!(
        Duration::from_secs(5),
        {
            let (after, _) = owners(1).await;
            after.values().all(|o| o != "sticky-3")
        },
        "the client still sends to the removed endpoint"
    );
    let (after, _) = owners(1).await;
    let moved = users.iter().filter(|u| before[*u] != after[*u]).count();
    let orphaned = users.iter().filter(|u| before[*u] == "sticky-3").count();
    eprintln!("{moved} of 200 keys moved; {orphaned} were on the removed endpoint");
    assert!(
        moved <= orphaned + 10,
        "keys of the remaining endpoints moved: {moved} moved, {orphaned} orphaned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_endpoint_and_brings_it_back() {
    let files = [
        service("flaky", "HTTP"),
        policy(
            "flaky",
            "flaky",
            "  loadBalancer: {type: RoundRobin}\n  outlierDetection: {consecutive5xx: 3, baseEjectionTime: 5s, interval: 1s, maxEjectionPercent: 50}\n",
        ),
    ]
    .concat();
    let mesh = TestMesh::start(&[("mesh.yaml", &files)]).await.unwrap();
    let _ok = workload(&mesh, "flaky", "ok", Quirks::default(), None).await;
    let broken = workload(
        &mesh,
        "flaky",
        "broken",
        Quirks {
            delay: Duration::ZERO,
            status: Some(StatusCode::SERVICE_UNAVAILABLE),
        },
        None,
    )
    .await;
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("flaky"))
        .await
        .unwrap();
    let addr = client.upstream_addr("flaky").unwrap();
    assert_eventually!(
        Duration::from_secs(5),
        endpoints_of(mesh.admin_addr(), "flaky").await.len() == 2
    );
    // Round robin alternates: the broken endpoint's third 503 in a row ejects it. The ejection
    // comes after this instant, so its end cannot come sooner than the ejection time after it.
    let before_ejection = Instant::now();
    let mut failures = 0;
    for _ in 0..6 {
        if http1_get(addr, "/", &[]).await.unwrap().status != 200 {
            failures += 1;
        }
    }
    assert_eq!(failures, 3, "ejected after 3 consecutive 5xx");
    assert_eq!(
        metric(
            client.admin_addr(),
            r#"trellis_cluster_ejections_total{cluster="outbound|flaky.default"}"#
        )
        .await,
        Some(1.0),
        "the ejection is counted"
    );
    let dump = config_dump(client.admin_addr()).await;
    let ejected: Vec<&str> = dump["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == "outbound|flaky.default")
        .flat_map(|c| c["endpoints"].as_array().into_iter().flatten())
        .filter(|e| e["ejected"] == true)
        .filter_map(|e| e["address"].as_str())
        .collect();
    assert_eq!(
        ejected,
        [broken.sidecar.inbound_addr().to_string()],
        "config_dump shows the ejected endpoint"
    );
    let hits = broken.log.hits();
    for _ in 0..20 {
        assert_eq!(
            http1_get(addr, "/", &[]).await.unwrap().status,
            200,
            "ejected"
        );
    }
    assert_eq!(
        broken.log.hits(),
        hits,
        "no request reached the ejected endpoint"
    );
    assert_eventually!(
        Duration::from_secs(10),
        http1_get(addr, "/", &[]).await.unwrap().status != 200,
        "the endpoint never came back"
    );
    let back_after = before_ejection.elapsed();
    assert!(
        back_after >= Duration::from_secs(5),
        "back after {back_after:?}"
    );
    drop(broken.sidecar);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_circuit_breaker_answers_503_at_once_past_its_limit() {
    let files = [
        service("narrow", "HTTP"),
        policy("narrow", "narrow", "  connectionPool: {maxRequests: 2}\n"),
    ]
    .concat();
    let mesh = TestMesh::start(&[("mesh.yaml", &files)]).await.unwrap();
    // Slow enough that all ten requests are in flight before the first two are answered, even
    // on a loaded machine.
    let slow = Quirks {
        delay: Duration::from_secs(2),
        status: None,
    };
    let _backend = workload(&mesh, "narrow", "narrow", slow, None).await;
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("narrow"))
        .await
        .unwrap();
    let addr = client.upstream_addr("narrow").unwrap();
    assert_eventually!(
        Duration::from_secs(5),
        http1_get(addr, "/", &[])
            .await
            .is_ok_and(|r| r.status == 200)
    );
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        tasks.spawn(async move {
            let started = Instant::now();
            let reply = http1_get(addr, "/", &[]).await.unwrap();
            (reply, started.elapsed())
        });
    }
    let mut passed = 0;
    let mut refused = 0;
    while let Some(done) = tasks.join_next().await {
        let (reply, took) = done.unwrap();
        match reply.status.as_u16() {
            200 => passed += 1,
            503 => {
                refused += 1;
                assert!(took < Duration::from_secs(1), "refused after {took:?}");
                assert_eq!(reply.header("x-served-by"), None);
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((passed, refused), (2, 8));
    assert_eq!(
        metric(
            client.admin_addr(),
            r#"trellis_cluster_overflows_total{cluster="outbound|narrow.default"}"#
        )
        .await,
        Some(8.0),
        "the refusals are counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_failover_moves_traffic_away_and_back() {
    let files = [
        service("geo", "HTTP"),
        policy(
            "geo",
            "geo",
            "  localityFailover: {enabled: true}\n  outlierDetection: {consecutive5xx: 3}\n",
        ),
    ]
    .concat();
    let mesh = TestMesh::start(&[("mesh.yaml", &files)]).await.unwrap();
    let local = workload(&mesh, "geo", "geo-local", Quirks::default(), Some("r1/z1")).await;
    let _remote = workload(&mesh, "geo", "geo-remote", Quirks::default(), Some("r2/z2")).await;
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("geo").locality("r1/z1"))
        .await
        .unwrap();
    let addr = client.upstream_addr("geo").unwrap();
    let all_from = async |name: &str| {
        for _ in 0..20 {
            if served_by(addr, &[]).await.as_deref() != Some(name) {
                return false;
            }
        }
        true
    };
    assert_eventually!(
        Duration::from_secs(5),
        all_from("geo-local").await,
        "local first"
    );

    drop(local);
    assert_eventually!(
        Duration::from_secs(5),
        all_from("geo-remote").await,
        "failover to the other locality"
    );

    let _back = workload(&mesh, "geo", "geo-local", Quirks::default(), Some("r1/z1")).await;
    assert_eventually!(
        Duration::from_secs(5),
        all_from("geo-local").await,
        "back to the local endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_health_check_takes_a_not_serving_endpoint_out_and_back() {
    let files = [
        service("inventory", "GRPC"),
        policy(
            "inventory",
            "inventory",
            "  loadBalancer: {type: RoundRobin}\n  healthCheck: {interval: 100ms, unhealthyThreshold: 1, healthyThreshold: 1, grpc: {service: inventory}}\n",
        ),
    ]
    .concat();
    let mesh = TestMesh::start(&[("mesh.yaml", &files)]).await.unwrap();
    // Each server answers `Check` for its own name, so the caller sees which one it reached.
    let a = spawn_grpc_health().await.unwrap();
    let b = spawn_grpc_health().await.unwrap();
    a.set_serving("a", true).await;
    b.set_serving("b", true).await;
    a.set_serving("inventory", true).await;
    b.set_serving("inventory", false).await;
    let _sidecars = [
        mesh.sidecar(Sidecar::new("inventory", a.addr().port()))
            .await
            .unwrap(),
        mesh.sidecar(Sidecar::new("inventory", b.addr().port()))
            .await
            .unwrap(),
    ];
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("inventory"))
        .await
        .unwrap();
    let addr = client.upstream_addr("inventory").unwrap();
    let all_reach = async |name: &str| {
        for _ in 0..10 {
            if !matches!(grpc_check(addr, name).await, Ok(ServingStatus::Serving)) {
                return false;
            }
        }
        true
    };
    assert_eventually!(
        Duration::from_secs(5),
        all_reach("a").await,
        "b reports NOT_SERVING for inventory and should get no calls"
    );
    a.set_serving("inventory", false).await;
    b.set_serving("inventory", true).await;
    assert_eventually!(
        Duration::from_secs(5),
        all_reach("b").await,
        "the checks follow the servers' reports"
    );
}

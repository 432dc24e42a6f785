//! `trellis stat`'s figures through the real control plane: the sidecars serve their `/stats`,
//! the control plane's collector reads them, and `/api/stats` agrees with a known traffic mix.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use trellis_control::{StatsReport, StatsRow};
use trellis_test::{Deadline, Sidecar, TestMesh, eventually, http1_get, spawn_http_echo};

use crate::common::{KeepAlive, has_endpoints, service};

/// `GET /api/stats?QUERY` from the control plane.
async fn stats(admin: SocketAddr, query: &str) -> StatsReport {
    let reply = http1_get(admin, &format!("/api/stats?{query}"), &[])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text());
    reply.json().unwrap()
}

/// The row of `service` (by edge: called by `source`).
fn row<'a>(report: &'a StatsReport, source: Option<&str>, service: &str) -> Option<&'a StatsRow> {
    report
        .rows
        .iter()
        .find(|r| r.service == service && r.source_service.as_deref() == source)
}

fn requests(report: &StatsReport, source: Option<&str>, service: &str) -> u64 {
    row(report, source, service).map_or(0, |r| r.requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_agree_with_a_known_traffic_mix() {
    let services = [service("api", "HTTP"), service("slow", "HTTP")].concat();
    let mesh = TestMesh::start(&[("services.yaml", &services)])
        .await
        .unwrap();
    let api = spawn_http_echo("api").await.unwrap();
    let slow = spawn_http_echo("slow").await.unwrap();
    let _api_sidecar = mesh
        .sidecar(Sidecar::new("api", api.addr().port()))
        .await
        .unwrap();
    let _slow_sidecar = mesh
        .sidecar(Sidecar::new("slow", slow.addr().port()))
        .await
        .unwrap();
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("api").upstream("slow"))
        .await
        .unwrap();
    let (to_api, to_slow) = (
        client.upstream_addr("api").unwrap(),
        client.upstream_addr("slow").unwrap(),
    );
    let admin = mesh.admin_addr();
    // No request may fall before the collector's first snapshot of each sidecar, or it would
    // be in the base the window subtracts: wait for the client's endpoints and for two reads
    // of every sidecar.
    assert!(
        eventually(Duration::from_secs(10), || async {
            let clusters = ["outbound|api.default", "outbound|slow.default"];
            let ready = has_endpoints(client.admin_addr(), &clusters).await;
            ready && stats(admin, "").await.proxies == 3
        })
        .await,
        "the client has endpoints and the collector has read every sidecar twice: {:?}",
        stats(admin, "").await
    );

    // The mix: api answers 30 × 200 and 10 × 503, slow 20 × 200 after 100 ms. Each goes one
    // request after another over kept-alive connections, so a burst of handshakes on a busy
    // machine does not push latencies out of their buckets (api's under 100 ms, slow's in
    // 100-250 ms).
    let api_calls = async {
        let http = KeepAlive::new(to_api);
        let mut statuses = Vec::new();
        for (path, count) in [("/status/200", 30), ("/status/503", 10)] {
            for _ in 0..count {
                statuses.push(http.get(path).await.unwrap().0);
            }
        }
        statuses
    };
    let slow_calls = async {
        for _ in 0..20 {
            let reply = http1_get(to_slow, "/delay/100", &[]).await.unwrap();
            assert_eq!(reply.status, StatusCode::OK);
        }
    };
    let (statuses, ()) = tokio::join!(api_calls, slow_calls);
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 10);
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 30);

    // The proxies count a request when its response ends; the collector reads them every
    // 100 ms.
    let deadline = Deadline::after(Duration::from_secs(10));
    let (services, edges) = loop {
        let services = stats(admin, "by=service").await;
        let edges = stats(admin, "window=1m&by=edge").await;
        let seen = (
            requests(&services, None, "api"),
            requests(&services, None, "slow"),
        ) == (40, 20)
            && (
                requests(&edges, Some("client"), "api"),
                requests(&edges, Some("client"), "slow"),
            ) == (40, 20);
        if seen || deadline.passed() {
            break (services, edges);
        }
        deadline.pause().await;
    };

    let names: Vec<_> = services.rows.iter().map(|r| r.service.as_str()).collect();
    assert_eq!(names, ["api", "client", "slow"], "{services:?}");
    let api = row(&services, None, "api").unwrap();
    assert_eq!(
        (api.meshed, api.requests, api.failures, api.success_rate),
        (1, 40, 10, Some(0.75)),
        "{api:?}"
    );
    // Each proxy's span is at most the window: the rate is at least the requests over it.
    assert!(api.rps >= 40.0 / services.window_seconds, "{api:?}");
    let p99 = api.latency_p99_seconds.unwrap();
    assert!(p99 < 0.1, "api's p99 {p99}");
    let slow = row(&services, None, "slow").unwrap();
    assert_eq!(
        (slow.meshed, slow.requests, slow.success_rate),
        (1, 20, Some(1.0)),
        "{slow:?}"
    );
    let p50 = slow.latency_p50_seconds.unwrap();
    assert!((0.1..=0.25).contains(&p50), "slow's p50 {p50}");
    // Meshed, sending only: a row without requests.
    let idle = row(&services, None, "client").unwrap();
    assert_eq!(
        (idle.meshed, idle.requests, idle.success_rate),
        (1, 0, None)
    );
    assert_eq!(idle.latency_p50_seconds, None);

    let edge = row(&edges, Some("client"), "api").unwrap();
    assert_eq!(edge.success_rate, Some(0.75), "{edges:?}");
    let edge = row(&edges, Some("client"), "slow").unwrap();
    assert_eq!(edge.success_rate, Some(1.0), "{edges:?}");
    // Seen from the caller's side: the delay and the hop between the sidecars.
    let p50 = edge.latency_p50_seconds.unwrap();
    assert!((0.1..=0.5).contains(&p50), "client → slow p50 {p50}");

    let routes = stats(admin, "by=route&service=api").await;
    assert!(routes.rows.iter().all(|r| r.service == "api"), "{routes:?}");
    assert_eq!(routes.rows.iter().map(|r| r.requests).sum::<u64>(), 40);

    let bad = http1_get(admin, "/api/stats?window=10m", &[])
        .await
        .unwrap();
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.text()
            .contains("window: between 1ms and 2m (what the control plane keeps), found `10m`"),
        "{}",
        bad.text()
    );
}

//! Metrics through a real Prometheus: it scrapes three sidecars and the control plane while a
//! known traffic mix flows, and PromQL over the proxies' labels gives the expected success rate
//! per service and the source → destination edges.

use std::collections::BTreeMap;
use std::time::Duration;

use trellis_test::{Deadline, Prometheus, Sample, Sidecar, TestMesh, http1_get, spawn_http_echo};

use crate::common::{has_endpoints, metric, service};

/// Values of `samples` by the value of `label`.
fn by(samples: &[Sample], label: &str) -> BTreeMap<String, f64> {
    samples
        .iter()
        .map(|s| (s.labels.get(label).cloned().unwrap_or_default(), s.value))
        .collect()
}

#[tokio::test]
async fn prometheus_reads_success_rate_per_service_from_the_proxies() {
    let services = [service("api", "HTTP"), service("web", "HTTP")].concat();
    let mesh = TestMesh::start(&[("services.yaml", &services)])
        .await
        .unwrap();
    let api = spawn_http_echo("api").await.unwrap();
    let web = spawn_http_echo("web").await.unwrap();
    let api_sidecar = mesh
        .sidecar(Sidecar::new("api", api.addr().port()))
        .await
        .unwrap();
    let web_sidecar = mesh
        .sidecar(Sidecar::new("web", web.addr().port()))
        .await
        .unwrap();
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("api").upstream("web"))
        .await
        .unwrap();
    let (to_api, to_web) = (
        client.upstream_addr("api").unwrap(),
        client.upstream_addr("web").unwrap(),
    );
    // Ready when the client's sidecar has endpoints for both: no warm-up request skews the mix.
    assert!(
        trellis_test::eventually(Duration::from_secs(5), async || {
            let clusters = ["outbound|api.default", "outbound|web.default"];
            has_endpoints(client.admin_addr(), &clusters).await
        })
        .await,
        "the client's sidecar has endpoints for both services"
    );
    let prometheus = Prometheus::start(&[
        ("api", api_sidecar.admin_addr()),
        ("web", web_sidecar.admin_addr()),
        ("client", client.admin_addr()),
        ("control", mesh.admin_addr()),
    ])
    .await
    .unwrap();

    // The known mix: api answers 30 × 200 and 10 × 503; web 20 × 200.
    for (addr, path, count, status) in [
        (to_api, "/status/200", 30, 200),
        (to_api, "/status/503", 10, 503),
        (to_web, "/status/200", 20, 200),
    ] {
        for _ in 0..count {
            assert_eq!(http1_get(addr, path, &[]).await.unwrap().status, status);
        }
    }

    let success = r#"sum by (destination_service) (trellis_requests_total{direction="inbound",route!="",classification="success",source_service="client"}) / sum by (destination_service) (trellis_requests_total{direction="inbound",route!="",source_service="client"})"#;
    let edges = r#"sum by (source_service, destination_service) (trellis_requests_total{direction="outbound",source_service="client"})"#;
    // Targets are scraped at different moments: poll until every one has been scraped after
    // the traffic, then check.
    let deadline = Deadline::after(Duration::from_secs(20));
    let (rates, counts, connected, up) = loop {
        let rates = by(
            &prometheus.query(success).await.unwrap(),
            "destination_service",
        );
        let counts = by(
            &prometheus.query(edges).await.unwrap(),
            "destination_service",
        );
        let connected = prometheus
            .query("trellis_control_proxies_connected")
            .await
            .unwrap();
        let up = by(&prometheus.query("up").await.unwrap(), "job");
        let scraped = counts.get("api") == Some(&40.0)
            && counts.get("web") == Some(&20.0)
            && rates.len() == 2
            && !connected.is_empty()
            && up.len() == 4;
        if scraped || deadline.passed() {
            break (rates, counts, connected, up);
        }
        deadline.pause().await;
    };
    let targets = prometheus.targets().await;
    assert_eq!(
        counts,
        BTreeMap::from([("api".to_owned(), 40.0), ("web".to_owned(), 20.0)]),
        "requests on the client → service edges; targets: {targets}"
    );
    assert_eq!(
        rates,
        BTreeMap::from([("api".to_owned(), 0.75), ("web".to_owned(), 1.0)]),
        "success rate per service"
    );
    assert_eq!(
        up,
        BTreeMap::from(["api", "client", "control", "web"].map(|job| (job.to_owned(), 1.0))),
        "every target scraped: {targets}"
    );
    assert_eq!(
        connected.first().map(|s| s.value),
        Some(3.0),
        "proxies connected to the control plane"
    );
    let memory = prometheus
        .query(r#"process_resident_memory_bytes{job="client"}"#)
        .await
        .unwrap();
    assert!(
        memory.first().is_some_and(|s| s.value > 1e6),
        "process metrics {memory:?}"
    );
}

#[tokio::test]
async fn a_tap_streams_the_requests_it_selects_as_they_happen() {
    let mesh = TestMesh::start(&[("services.yaml", &service("api", "HTTP"))])
        .await
        .unwrap();
    let api = spawn_http_echo("api").await.unwrap();
    let api_sidecar = mesh
        .sidecar(Sidecar::new("api", api.addr().port()))
        .await
        .unwrap();
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("api"))
        .await
        .unwrap();
    let to_api = client.upstream_addr("api").unwrap();
    // The tap ends after two matching requests, so the whole stream is one response body.
    let admin = api_sidecar.admin_addr();
    let watchers = async || metric(admin, "trellis_tap_watchers").await;
    assert_eq!(watchers().await, Some(0.0));
    let tap = tokio::spawn(async move {
        http1_get(admin, "/tap?path=/tapped&direction=inbound&limit=2", &[]).await
    });
    assert!(
        trellis_test::eventually(Duration::from_secs(5), async || watchers().await
            == Some(1.0))
        .await,
        "the tap is watching"
    );
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for path in ["/other", "/tapped/1?q=x", "/other", "/tapped/1?q=x"] {
        let reply = http1_get(to_api, path, &[("traceparent", traceparent)])
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
    }
    let reply = tap.await.unwrap().unwrap();
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    let events: Vec<serde_json::Value> = reply
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        assert_eq!(e["path"], "/tapped/1?q=x", "only the selected path: {e}");
        assert_eq!(e["direction"], "inbound");
        assert_eq!(e["status"], 200);
        assert_eq!(e["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            e["source_identity"],
            "spiffe://cluster.local/ns/default/sa/client"
        );
        assert!(e["bytes_sent"].as_u64().is_some_and(|b| b > 0), "{e}");
    }
    assert!(
        trellis_test::eventually(Duration::from_secs(5), async || watchers().await
            == Some(0.0))
        .await,
        "the finished tap stops watching"
    );
}

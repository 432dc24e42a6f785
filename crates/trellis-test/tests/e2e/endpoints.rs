//! Endpoints coming and going: workloads that die, and static endpoints edited in a file.

use std::collections::BTreeSet;
use std::time::Duration;

use trellis_test::{Sidecar, TestMesh, assert_eventually, spawn_http_echo};

use crate::common::{KeepAlive, config_dump, endpoints_of, service};

/// How many endpoints a sidecar's applied config has for `cluster`.
async fn proxy_endpoints(admin: std::net::SocketAddr, cluster: &str) -> usize {
    config_dump(admin).await["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == cluster)
        .and_then(|c| c["endpoints"].as_array())
        .map_or(0, Vec::len)
}

async fn served_by(client: &KeepAlive, n: usize) -> (BTreeSet<String>, usize) {
    let mut seen = BTreeSet::new();
    let mut failures = 0;
    for _ in 0..n {
        match client.get("/").await {
            Ok((200, by)) => {
                seen.insert(by);
            }
            _ => failures += 1,
        }
    }
    (seen, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_endpoint_leaves_eds_and_traffic_continues() {
    let mesh = TestMesh::start(&[("services.yaml", &service("web", "HTTP"))])
        .await
        .unwrap();
    let a = spawn_http_echo("a").await.unwrap();
    let b = spawn_http_echo("b").await.unwrap();
    let sidecar_a = mesh
        .sidecar(Sidecar::new("web", a.addr().port()))
        .await
        .unwrap();
    let _sidecar_b = mesh
        .sidecar(Sidecar::new("web", b.addr().port()))
        .await
        .unwrap();
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("web"))
        .await
        .unwrap();
    let http = KeepAlive::new(client.upstream_addr("web").unwrap());
    let admin = mesh.admin_addr();
    assert_eventually!(
        Duration::from_secs(5),
        served_by(&http, 20).await.0.len() == 2
    );

    // Kill workload a: its app and its sidecar go away at once.
    drop(a);
    drop(sidecar_a);
    assert_eventually!(
        Duration::from_secs(5),
        endpoints_of(admin, "web").await.len() == 1,
        "the dead workload is still in EDS"
    );
    // Requests sent before the client's sidecar applied that EDS update were in flight to the
    // dead endpoint; from the update on, none may fail.
    assert_eventually!(
        Duration::from_secs(5),
        proxy_endpoints(client.admin_addr(), "outbound|web.default").await == 1,
        "the client's sidecar still routes to the dead workload"
    );
    let (seen, failures) = served_by(&http, 200).await;
    assert_eq!(seen, BTreeSet::from(["b".to_owned()]));
    assert_eq!(failures, 0, "requests failed after the endpoint left EDS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_endpoints_are_balanced_and_follow_the_file() {
    let a = spawn_http_echo("a").await.unwrap();
    let b = spawn_http_echo("b").await.unwrap();
    let yaml = |addrs: &[std::net::SocketAddr]| {
        let endpoints: String = addrs
            .iter()
            .map(|addr| format!("  - {{address: \"{addr}\"}}\n"))
            .collect();
        format!(
            "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {{name: legacy}}\nspec:\n  endpoints:\n{endpoints}"
        )
    };
    let mesh = TestMesh::start(&[("legacy.yaml", &yaml(&[a.addr(), b.addr()]))])
        .await
        .unwrap();
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("legacy"))
        .await
        .unwrap();
    let http = KeepAlive::new(client.upstream_addr("legacy").unwrap());
    let (seen, failures) = served_by(&http, 100).await;
    assert_eq!(seen.len(), 2, "both static endpoints get traffic");
    assert_eq!(failures, 0);

    mesh.config
        .write("legacy.yaml", &yaml(&[b.addr()]))
        .unwrap();
    assert_eventually!(
        Duration::from_secs(1),
        endpoints_of(mesh.admin_addr(), "legacy").await == [b.addr().to_string()],
        "the removed endpoint is still in EDS after 1 s"
    );
    assert_eventually!(
        Duration::from_secs(1),
        served_by(&http, 20).await == (BTreeSet::from(["b".to_owned()]), 0),
        "traffic still reaches the removed endpoint after 1 s"
    );
}

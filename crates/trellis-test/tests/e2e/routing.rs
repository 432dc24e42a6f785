//! Weighted routing, live edits under load, and HTTP-proxy mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use trellis_test::{Sidecar, TestMesh, assert_eventually, http1_get, spawn_http_echo};

use crate::common::{
    EchoMesh, KeepAlive, assert_share, config_dump, echo_mesh, servers_on_an_early_connection,
    service, share_served_by, split, versioned,
};

/// Requests per measurement.
const SAMPLES: usize = 2000;

/// The weights of the client's route to `web`, as its sidecar applied them.
async fn route_weights(admin: std::net::SocketAddr) -> Vec<u64> {
    config_dump(admin).await["route_configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rc| rc["name"] == "outbound|web.default")
        .flat_map(|rc| {
            rc["virtual_hosts"][0]["routes"][0]["clusters"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|c| c["weight"].as_u64().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_holds_and_edits_apply_live_without_errors() {
    let services = [
        service("web", "HTTP"),
        versioned("web-v1", "web", "v1"),
        versioned("web-v2", "web", "v2"),
    ]
    .concat();
    let mut mesh = TestMesh::start(&[
        ("services.yaml", &services),
        ("route.yaml", &split("web", ("web-v1", 90), ("web-v2", 10))),
    ])
    .await
    .unwrap();
    let v1 = spawn_http_echo("web-v1").await.unwrap();
    let v2 = spawn_http_echo("web-v2").await.unwrap();
    let _s1 = mesh
        .sidecar(Sidecar::new("web", v1.addr().port()).label("version", "v1"))
        .await
        .unwrap();
    let _s2 = mesh
        .sidecar(Sidecar::new("web", v2.addr().port()).label("version", "v2"))
        .await
        .unwrap();
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("web"))
        .await
        .unwrap();
    let addr = client.upstream_addr("web").unwrap();
    let http = KeepAlive::new(addr);
    assert_eventually!(
        Duration::from_secs(5),
        http.get("/").await.is_ok_and(|r| r.0 == 200)
    );

    let share = share_served_by(&http, "web-v1", SAMPLES).await;
    assert_share("90/10 split to v1", share, 0.9, SAMPLES);
    // A connection opened ahead of use, silent past the detection timeout, is still HTTP:
    // its requests are split too (web declares its protocol).
    let servers = servers_on_an_early_connection(addr, 100).await;
    assert_eq!(
        servers.len(),
        2,
        "one idle connection pinned to {servers:?}"
    );

    // Load runs while the file changes to 50/50: no request may fail.
    let failures = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let load = {
        let (failures, sent, running) = (failures.clone(), sent.clone(), running.clone());
        let http = KeepAlive::new(addr);
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                if !http.get("/").await.is_ok_and(|r| r.0 == 200) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let edited = Instant::now();
    mesh.config
        .write("route.yaml", &split("web", ("web-v1", 50), ("web-v2", 50)))
        .unwrap();
    // Within 1 s the client's sidecar routes 50/50 (its applied config says so; measuring
    // the share itself takes longer than that on a loaded machine).
    let admin = client.admin_addr();
    assert_eventually!(
        Duration::from_secs(1),
        route_weights(admin).await == [50, 50],
        "the 50/50 edit did not apply within 1 s"
    );
    let applied_after = edited.elapsed();
    let share = share_served_by(&http, "web-v1", SAMPLES).await;
    running.store(false, Ordering::Relaxed);
    load.await.unwrap();
    assert_share("50/50 split to v1", share, 0.5, SAMPLES);
    assert!(
        sent.load(Ordering::Relaxed) > 100,
        "load ran during the edit"
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during the edit"
    );
    eprintln!("50/50 applied after {applied_after:?}");

    // The control plane stopped: the proxies keep the last config and keep serving.
    let control_admin = mesh.admin_addr();
    mesh.stop_control();
    assert_eventually!(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(control_admin).await.is_err(),
        "the control plane is still up"
    );
    assert_eq!(
        http.get("/").await.unwrap().0,
        200,
        "serving without a control plane"
    );

    // Restarted, with a change made while it was down: the proxies reconnect and converge.
    mesh.config
        .write("route.yaml", &split("web", ("web-v1", 0), ("web-v2", 1)))
        .unwrap();
    mesh.restart_control().await.unwrap();
    assert_eventually!(
        Duration::from_secs(10),
        share_served_by(&http, "web-v1", 20).await == 0.0,
        "proxies did not converge after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_proxy_mode_routes_by_host() {
    let EchoMesh { mesh, .. } = &echo_mesh("echo").await;
    let mut spec = Sidecar::new("client", 0);
    spec.http_proxy = true;
    let client = mesh.sidecar(spec).await.unwrap();
    let proxy = client.http_proxy_addr().expect("http proxy listener");
    let reply = http1_get(proxy, "http://echo/via-proxy", &[("host", "echo")])
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.echo().unwrap().path, "/via-proxy");
    let unknown = http1_get(proxy, "http://nowhere/", &[("host", "nowhere")])
        .await
        .unwrap();
    assert_eq!(unknown.status, 404, "unknown host has no route");
}

//! A stock Envoy as a workload's sidecar, bootstrapped by Trellis and configured over ADS by
//! the control plane, beside Trellis proxies.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use trellis_test::{
    Deadline, EchoReply, Envoy, Sidecar, TestMesh, free_loopback_addr, http1_get, spawn_http_echo,
};
use trellis_xds::node::{NodeMeta, UpstreamPort};

use crate::common::service;

/// What the echo saw of `GET /through` sent to `addr` with `Host: host`, once that answers 200
/// (within 10 s; `log` explains a failure).
async fn echoed(addr: SocketAddr, host: &str, log: impl Fn() -> String) -> EchoReply {
    let deadline = Deadline::after(Duration::from_secs(10));
    loop {
        if let Ok(reply) = http1_get(addr, "/through", &[("host", host)]).await
            && reply.status == 200
        {
            return reply.json().unwrap();
        }
        assert!(
            !deadline.passed(),
            "no 200 for {host} through {addr}:\n{}",
            log()
        );
        deadline.pause().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_acks_the_control_planes_config_and_talks_to_trellis_proxies_both_ways() {
    trellis_test::init_tracing();
    let config = [service("api", "HTTP"), service("web", "HTTP")].concat();
    let mesh = TestMesh::start(&[("mesh.yaml", &config)]).await.unwrap();
    let api_app = spawn_http_echo("api").await.unwrap();
    let web_app = spawn_http_echo("web").await.unwrap();
    let _api = mesh
        .sidecar(Sidecar::new("api", api_app.addr().port()))
        .await
        .unwrap();

    // web's sidecar is Envoy, with an outbound listener for api.
    let [inbound, outbound, admin] = [(); 3].map(|()| free_loopback_addr().unwrap());
    let meta = NodeMeta {
        service: "web".into(),
        namespace: "default".into(),
        app_port: web_app.addr().port(),
        inbound_port: inbound.port(),
        ip: "127.0.0.1".into(),
        upstreams: vec![UpstreamPort {
            service: "api".into(),
            port: outbound.port(),
        }],
        admin: Some(admin.to_string()),
        ..NodeMeta::default()
    };
    let bootstrap = trellis_xds::bootstrap::envoy(&meta, "web-envoy", mesh.xds_addr(), admin);
    let envoy = Envoy::start(&bootstrap, admin).await.unwrap();

    // Envoy → Trellis proxy: web's app calls api through Envoy.
    let seen = echoed(outbound, "api", || envoy.log()).await;
    assert_eq!(seen.server, "api");
    assert_eq!(seen.path, "/through");

    // Trellis proxy → Envoy: a client's sidecar reaches web's app through Envoy's inbound.
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("web"))
        .await
        .unwrap();
    let to_web = client.upstream_addr("web").unwrap();
    let seen = echoed(to_web, "web", || envoy.log()).await;
    assert_eq!(seen.server, "web");

    // Envoy ACKed every type the control plane sent it, and rejected nothing.
    let proxies: Value = http1_get(mesh.admin_addr(), "/api/proxies", &[])
        .await
        .unwrap()
        .json()
        .unwrap();
    let envoy_row = proxies
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node_id"] == "web-envoy")
        .unwrap_or_else(|| panic!("Envoy not among the proxies: {proxies}"));
    assert_eq!(envoy_row["synced"], true, "{envoy_row}");
    assert_eq!(envoy_row["nacks"], 0, "{envoy_row}");
    for kind in ["cds", "lds", "eds", "rds"] {
        assert!(
            envoy_row["acked"][kind].is_string(),
            "{kind} not ACKed: {envoy_row}"
        );
    }
    for stat in [
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
    ] {
        assert_eq!(envoy.stat(stat).await.unwrap(), Some(0), "{stat}");
    }
    assert_eq!(
        envoy
            .stat("listener_manager.total_listeners_active")
            .await
            .unwrap(),
        Some(2),
        "inbound and the outbound listener for api"
    );
}

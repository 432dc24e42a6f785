//! AuthorizationPolicy end to end: two callers with different identities through their
//! sidecars to HTTP, gRPC and TCP services behind STRICT mTLS.

use std::time::Duration;

use trellis_test::{
    ServingStatus, Sidecar, TestMesh, assert_eventually, grpc_check, http1_get, spawn_grpc_health,
    spawn_http_echo, spawn_tcp_echo, tcp_roundtrip,
};

use crate::common::service;

const POLICIES: &str = "\
apiVersion: trellis.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  mtls: {mode: STRICT}
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-readers}
spec:
  targetRefs: [{kind: Service, name: web}]
  rules:
  - from: [{identities: [\"spiffe://cluster.local/ns/default/sa/frontend\"]}]
    to: [{paths: [\"/items*\"], methods: [GET]}]
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-admin}
spec:
  targetRefs: [{kind: Service, name: web}]
  action: DENY
  rules:
  - to: [{paths: [\"/items/admin\"]}]
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend-only}
spec:
  targetRefs: [{kind: Service, name: grpc}, {kind: Service, name: db}]
  rules:
  - from: [{namespaces: [default], identities: [\"spiffe://cluster.local/ns/default/sa/front*\"]}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_allow_and_deny_http_grpc_and_tcp_by_identity() {
    let config = [
        POLICIES,
        "---\n",
        &service("web", "HTTP"),
        &service("grpc", "GRPC"),
        &service("db", "TCP"),
    ]
    .concat();
    let mesh = TestMesh::start(&[("mesh.yaml", &config)]).await.unwrap();
    let web = spawn_http_echo("web").await.unwrap();
    let grpc = spawn_grpc_health().await.unwrap();
    let db = spawn_tcp_echo().await.unwrap();
    let web_sidecar = mesh
        .sidecar(Sidecar::new("web", web.addr().port()))
        .await
        .unwrap();
    let _grpc = mesh
        .sidecar(Sidecar::new("grpc", grpc.addr().port()))
        .await
        .unwrap();
    let _db = mesh
        .sidecar(Sidecar::new("db", db.addr().port()))
        .await
        .unwrap();
    let callers = |name: &str| {
        Sidecar::new(name, 0)
            .upstream("web")
            .upstream("grpc")
            .upstream("db")
    };
    let frontend = mesh.sidecar(callers("frontend")).await.unwrap();
    let intruder = mesh.sidecar(callers("intruder")).await.unwrap();
    let status = |proxy: &trellis_proxy::ProxyHandle, path: &'static str| {
        let addr = proxy.upstream_addr("web").unwrap();
        async move { http1_get(addr, path, &[]).await.unwrap().status.as_u16() }
    };

    assert_eq!(
        status(&frontend, "/items/1").await,
        200,
        "allowed identity, path, method"
    );
    assert_eq!(
        status(&frontend, "/other").await,
        403,
        "an ALLOW policy makes the rest deny"
    );
    assert_eq!(
        status(&frontend, "/items/admin").await,
        403,
        "DENY comes first"
    );
    assert_eq!(status(&intruder, "/items/1").await, 403, "wrong identity");
    let reply = http1_get(intruder.upstream_addr("web").unwrap(), "/items/1", &[])
        .await
        .unwrap();
    assert_eq!(reply.text(), "RBAC: access denied");

    assert_eq!(
        grpc_check(frontend.upstream_addr("grpc").unwrap(), "")
            .await
            .unwrap(),
        ServingStatus::Serving
    );
    let refused = grpc_check(intruder.upstream_addr("grpc").unwrap(), "")
        .await
        .unwrap_err();
    assert!(
        format!("{refused:#}").contains("PermissionDenied")
            || format!("{refused:#}").contains("ermission"),
        "{refused:#}"
    );

    let echoed = tcp_roundtrip(frontend.upstream_addr("db").unwrap(), b"hello")
        .await
        .unwrap();
    assert_eq!(echoed, b"hello");
    let refused = tcp_roundtrip(intruder.upstream_addr("db").unwrap(), b"hello").await;
    assert!(
        refused.map_or(true, |b| b.is_empty()),
        "TCP from an unauthorized peer got through"
    );

    let metrics = web_sidecar.admin_addr();
    assert_eventually!(
        Duration::from_secs(2),
        http1_get(metrics, "/metrics", &[])
            .await
            .unwrap()
            .text()
            .contains("trellis_authz_denials_total{direction=\"inbound\",protocol=\"http\"} 4"),
        "denials are counted"
    );
}

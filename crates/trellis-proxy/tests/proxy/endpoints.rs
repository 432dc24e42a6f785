//! Clusters and endpoints: a slow in-flight request survives its endpoint being removed while
//! new requests go to the new set; a STATIC round-robin cluster behind an inline route config.

use std::sync::atomic::Ordering;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbPolicy,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use http::Request;
use trellis_proxy::TypeUrl;
use trellis_xds::client::Handler;

use crate::backend::http_backend;
use crate::client::{empty, get, send};
use crate::xds::{Config, any, cla, eds_cluster, http_listener, route, route_config};
use crate::{eventually, start_proxy, step};

#[tokio::test]
async fn endpoint_change_during_a_slow_request_does_not_fail_it() {
    let old = http_backend("old").await;
    let new = http_backend("new").await;
    let proxy = start_proxy(&["svc"]).await;
    let listen = proxy.upstream_addr("svc").unwrap();
    let mut handler = proxy.config_handler();
    Config {
        listeners: vec![http_listener("out", listen, "routes", false, None)],
        routes: vec![route_config(
            "routes",
            &["*"],
            vec![route("all", "/", "svc")],
        )],
        clusters: vec![eds_cluster("svc")],
        endpoints: vec![cla("svc", &[old.addr])],
    }
    .apply(&mut handler, "1");

    let slow = tokio::spawn(async move {
        let req = Request::get("/slow")
            .header("host", "svc")
            .body(empty())
            .unwrap();
        send(listen, req).await
    });
    step(
        "slow request reaches the old endpoint",
        old.arrived.notified(),
    )
    .await;

    handler
        .apply(
            TypeUrl::ClusterLoadAssignment,
            "2",
            &[any(&cla("svc", &[new.addr]))],
        )
        .unwrap();
    let fresh = get(listen, "svc", "/after").await;
    assert_eq!(fresh.header("x-backend"), "new");

    old.release.notify_one();
    let reply = step("slow request", slow).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "slow done");
    assert_eq!(reply.header("x-backend"), "old");
    assert_eq!(old.requests.load(Ordering::SeqCst), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn static_round_robin_cluster_behind_an_inline_route_config() {
    let a = http_backend("a").await;
    let b = http_backend("b").await;
    let proxy = start_proxy(&["svc"]).await;
    let listen = proxy.upstream_addr("svc").unwrap();
    let mut hcm = crate::xds::hcm("unused", false);
    hcm.route_specifier = Some(RouteSpecifier::RouteConfig(route_config(
        "inline",
        &["*"],
        vec![route("inline-all", "/", "static")],
    )));
    let listener = crate::xds::listener(
        "inline",
        listen,
        None,
        vec![crate::xds::chain(
            &[],
            crate::xds::network_filter("envoy.filters.network.http_connection_manager", &hcm),
        )],
        None,
    );
    let cluster = envoy_types::pb::envoy::config::cluster::v3::Cluster {
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        eds_cluster_config: None,
        lb_policy: LbPolicy::RoundRobin as i32,
        load_assignment: Some(cla("static", &[a.addr, b.addr])),
        ..eds_cluster("static")
    };
    let mut handler = proxy.config_handler();
    handler
        .apply(TypeUrl::Cluster, "1", &[any(&cluster)])
        .unwrap();
    handler
        .apply(TypeUrl::Listener, "1", &[any(&listener)])
        .unwrap();
    assert!(handler.wanted(TypeUrl::RouteConfiguration).is_empty());
    assert!(handler.wanted(TypeUrl::ClusterLoadAssignment).is_empty());
    step("ready without RDS or EDS", proxy.ready()).await;

    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(
            get(listen, "anything", "/")
                .await
                .header("x-backend")
                .to_owned(),
        );
    }
    assert_eq!(seen.iter().filter(|b| *b == "a").count(), 2, "{seen:?}");
    assert_ne!(seen[0], seen[1], "round robin alternates: {seen:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_endpoint_failing_its_health_check_gets_no_traffic_until_it_passes() {
    use envoy_types::pb::envoy::config::core::v3::HealthCheck;
    use envoy_types::pb::envoy::config::core::v3::health_check::{HealthChecker, HttpHealthCheck};
    use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

    let a = http_backend("a").await;
    let b = http_backend("b").await;
    let proxy = start_proxy(&["svc"]).await;
    let listen = proxy.upstream_addr("svc").unwrap();
    let ms = |n: i32| PbDuration {
        seconds: 0,
        nanos: n * 1_000_000,
    };
    let checked = |path: &str| envoy_types::pb::envoy::config::cluster::v3::Cluster {
        lb_policy: LbPolicy::RoundRobin as i32,
        health_checks: vec![HealthCheck {
            timeout: Some(ms(500)),
            interval: Some(ms(50)),
            unhealthy_threshold: Some(UInt32Value { value: 2 }),
            healthy_threshold: Some(UInt32Value { value: 1 }),
            health_checker: Some(HealthChecker::HttpHealthCheck(HttpHealthCheck {
                path: path.into(),
                ..HttpHealthCheck::default()
            })),
            ..HealthCheck::default()
        }],
        ..eds_cluster("svc")
    };
    let mut handler = proxy.config_handler();
    Config {
        listeners: vec![http_listener("out", listen, "routes", false, None)],
        routes: vec![route_config(
            "routes",
            &["*"],
            vec![route("all", "/", "svc")],
        )],
        clusters: vec![checked("/healthy/a")],
        endpoints: vec![cla("svc", &[a.addr, b.addr])],
    }
    .apply(&mut handler, "1");
    let backends = async || {
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(get(listen, "svc", "/").await.header("x-backend").to_owned());
        }
        seen
    };
    eventually("b fails its health check", async || {
        backends().await.iter().all(|b| b == "a")
    })
    .await;
    handler
        .apply(TypeUrl::Cluster, "2", &[any(&checked("/healthy/b"))])
        .unwrap();
    eventually("a new check: b passes, a fails", async || {
        backends().await.iter().all(|b| b == "b")
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_tcp_health_check_skips_an_endpoint_nobody_listens_on() {
    use envoy_types::pb::envoy::config::core::v3::HealthCheck;
    use envoy_types::pb::envoy::config::core::v3::health_check::{HealthChecker, TcpHealthCheck};
    use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

    let alive = http_backend("alive").await;
    let dead: std::net::SocketAddr = crate::NOBODY.parse().unwrap();
    let proxy = start_proxy(&["svc"]).await;
    let listen = proxy.upstream_addr("svc").unwrap();
    let cluster = envoy_types::pb::envoy::config::cluster::v3::Cluster {
        lb_policy: LbPolicy::RoundRobin as i32,
        health_checks: vec![HealthCheck {
            timeout: Some(PbDuration {
                seconds: 1,
                nanos: 0,
            }),
            interval: Some(PbDuration {
                seconds: 0,
                nanos: 50_000_000,
            }),
            unhealthy_threshold: Some(UInt32Value { value: 1 }),
            healthy_threshold: Some(UInt32Value { value: 1 }),
            health_checker: Some(HealthChecker::TcpHealthCheck(TcpHealthCheck::default())),
            ..HealthCheck::default()
        }],
        ..eds_cluster("svc")
    };
    let mut handler = proxy.config_handler();
    Config {
        listeners: vec![http_listener("out", listen, "routes", false, None)],
        routes: vec![route_config(
            "routes",
            &["*"],
            vec![route("all", "/", "svc")],
        )],
        clusters: vec![cluster],
        endpoints: vec![cla("svc", &[alive.addr, dead])],
    }
    .apply(&mut handler, "1");
    eventually("the dead endpoint fails its check", async || {
        let mut ok = true;
        for _ in 0..6 {
            ok &= get(listen, "svc", "/").await.status == 200;
        }
        ok
    })
    .await;
    proxy.shutdown().await;
}

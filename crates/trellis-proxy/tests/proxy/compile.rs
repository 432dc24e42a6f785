//! NACKs: unsupported resources are rejected with precise messages and leave the old table;
//! readiness and the named subscriptions follow what was applied.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbPolicy,
};
use envoy_types::pb::envoy::config::core::v3::TransportSocket;
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChainMatch, ListenerFilter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::google::protobuf::Any;
use trellis_proxy::TypeUrl;
use trellis_xds::client::Handler;

use crate::backend::http_backend;
use crate::client::get;
use crate::xds::{self, Config, any, chain, cla, eds_cluster, http_listener, route, route_config};
use crate::{start_proxy, step};

fn addr() -> std::net::SocketAddr {
    "127.0.0.1:41001".parse().unwrap()
}

#[tokio::test]
async fn unsupported_resources_are_nacked_precisely() {
    let proxy = start_proxy(&[]).await;
    let mut handler = proxy.config_handler();
    let nack = |h: &mut trellis_proxy::ConfigHandler, t: TypeUrl, r: Vec<Any>| {
        h.apply(t, "v1", &r).unwrap_err()
    };

    let redis = xds::listener(
        "outbound|catalog|41001",
        addr(),
        None,
        vec![chain(
            &[],
            Filter {
                name: "envoy.filters.network.redis_proxy".into(),
                config_type: None,
            },
        )],
        None,
    );
    assert_eq!(
        nack(&mut handler, TypeUrl::Listener, vec![any(&redis)]),
        "listener \"outbound|catalog|41001\": filter_chains[0].filters[0]: unsupported filter type \"envoy.filters.network.redis_proxy\""
    );

    let provided = envoy_types::pb::envoy::config::cluster::v3::Cluster {
        lb_policy: LbPolicy::ClusterProvided as i32,
        ..eds_cluster("x")
    };
    assert_eq!(
        nack(&mut handler, TypeUrl::Cluster, vec![any(&provided)]),
        "cluster \"x\": lb_policy: CLUSTER_PROVIDED is not supported (supported: ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV)"
    );

    let dns = envoy_types::pb::envoy::config::cluster::v3::Cluster {
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32)),
        ..eds_cluster("dns")
    };
    assert_eq!(
        nack(&mut handler, TypeUrl::Cluster, vec![any(&dns)]),
        "cluster \"dns\": type STRICT_DNS is not supported (supported: STATIC, EDS)"
    );

    let mut tls = http_listener("tls", addr(), "r", false, None);
    tls.filter_chains[0].transport_socket = Some(TransportSocket::default());
    assert_eq!(
        nack(&mut handler, TypeUrl::Listener, vec![any(&tls)]),
        "listener \"tls\": filter_chains[0].filter_chain_match.transport_protocol: must be \"tls\" on a chain with a TLS transport_socket"
    );
    tls.filter_chains[0].filter_chain_match = Some(FilterChainMatch {
        transport_protocol: "tls".into(),
        ..Default::default()
    });
    assert_eq!(
        nack(&mut handler, TypeUrl::Listener, vec![any(&tls)]),
        "listener \"tls\": filter_chains[0].transport_socket: unsupported transport socket \"\" (supported: envoy.transport_sockets.tls with envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext)"
    );

    let mut inspector = http_listener("proxy-protocol", addr(), "r", false, None);
    inspector.listener_filters.push(ListenerFilter {
        name: "envoy.filters.listener.proxy_protocol".into(),
        ..Default::default()
    });
    assert_eq!(
        nack(&mut handler, TypeUrl::Listener, vec![any(&inspector)]),
        "listener \"proxy-protocol\": listener_filters[1]: unsupported listener filter \"envoy.filters.listener.proxy_protocol\" (supported: envoy.filters.listener.http_inspector, envoy.filters.listener.tls_inspector)"
    );

    let mut hcm = xds::hcm("r", false);
    hcm.http_filters.insert(
        0,
        HttpFilter {
            name: "envoy.filters.http.rbac".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(Any {
                type_url: "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC".into(),
                value: prost::Message::encode_to_vec(
                    &envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac {
                        rules: Some(envoy_types::pb::envoy::config::rbac::v3::Rbac {
                            action: 2,
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ),
            })),
            ..Default::default()
        },
    );
    let rbac = xds::listener(
        "rbac",
        addr(),
        None,
        vec![chain(
            &[],
            xds::network_filter("envoy.filters.network.http_connection_manager", &hcm),
        )],
        None,
    );
    assert_eq!(
        nack(&mut handler, TypeUrl::Listener, vec![any(&rbac)]),
        "listener \"rbac\": filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.rules.action: only ALLOW and DENY are supported"
    );

    let wrong_type = Any {
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        value: Vec::new(),
    };
    assert_eq!(
        nack(&mut handler, TypeUrl::Listener, vec![wrong_type]),
        "listener resource [0]: expected type.googleapis.com/envoy.config.listener.v3.Listener, got \"type.googleapis.com/envoy.config.cluster.v3.Cluster\""
    );

    let twice = any(&eds_cluster("dup"));
    assert_eq!(
        nack(&mut handler, TypeUrl::Cluster, vec![twice.clone(), twice]),
        "cluster \"dup\": appears more than once"
    );

    let a = http_listener("a", addr(), "r", false, None);
    let b = http_listener("b", addr(), "r", false, None);
    assert_eq!(
        nack(&mut handler, TypeUrl::Listener, vec![any(&a), any(&b)]),
        "listener \"b\": address port 41001 is already used by listener \"a\""
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_nack_keeps_the_previous_table_and_is_counted() {
    let backend = http_backend("one").await;
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
        endpoints: vec![cla("svc", &[backend.addr])],
    }
    .apply(&mut handler, "1");
    assert_eq!(get(listen, "svc", "/").await.status, 200);

    let bad = envoy_types::pb::envoy::config::cluster::v3::Cluster {
        lb_policy: LbPolicy::ClusterProvided as i32,
        ..eds_cluster("other")
    };
    let update = vec![any(&eds_cluster("svc")), any(&bad)];
    assert!(handler.apply(TypeUrl::Cluster, "2", &update).is_err());
    assert_eq!(
        get(listen, "svc", "/").await.status,
        200,
        "old table still serves"
    );

    let admin = proxy.admin_addr();
    let dump = get(admin, "admin", "/config_dump").await;
    let json: serde_json::Value = serde_json::from_slice(&dump.body).unwrap();
    assert_eq!(json["versions"]["cds"], "1", "{json}");
    assert_eq!(json["clusters"][0]["name"], "svc");
    assert_eq!(
        json["clusters"][0]["endpoints"][0]["address"],
        backend.addr.to_string()
    );
    assert_eq!(
        json["listeners"][0]["filter_chains"][0]["filter"]["rds"],
        "routes"
    );

    let metrics = get(admin, "admin", "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"trellis_xds_updates_total{type="cds",result="nack"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"trellis_xds_updates_total{type="lds",result="ack"} 1"#),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with(
            r#"trellis_requests_total{direction="outbound",route="all",cluster="svc","#
        ) && l
            .ends_with(r#",status_class="2xx",grpc_status="",classification="success"} 2"#)),
        "{text}"
    );
    let stats = get(admin, "admin", "/stats").await;
    let stats: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
    let entry = &stats["entries"][0];
    assert_eq!(
        (
            &entry["route"],
            &entry["cluster"],
            &entry["requests"],
            &entry["failures"]
        ),
        (&"all".into(), &"svc".into(), &2.into(), &0.into()),
        "{stats}"
    );
    assert_eq!(entry["latency"].as_array().map(Vec::len), Some(15));
    proxy.shutdown().await;
}

#[tokio::test]
async fn readiness_follows_the_named_subscriptions() {
    let proxy = start_proxy(&["svc"]).await;
    let listen = proxy.upstream_addr("svc").unwrap();
    let admin = proxy.admin_addr();
    let mut handler = proxy.config_handler();
    assert_eq!(get(admin, "admin", "/ready").await.status, 503);

    let listener = http_listener("out", listen, "routes", false, None);
    handler
        .apply(TypeUrl::Cluster, "1", &[any(&eds_cluster("svc"))])
        .unwrap();
    handler
        .apply(TypeUrl::Listener, "1", &[any(&listener)])
        .unwrap();
    assert_eq!(
        handler.wanted(TypeUrl::RouteConfiguration),
        vec!["routes".to_owned()]
    );
    assert_eq!(
        handler.wanted(TypeUrl::ClusterLoadAssignment),
        vec!["svc".to_owned()]
    );
    assert_eq!(
        get(admin, "admin", "/ready").await.status,
        503,
        "RDS and EDS still missing"
    );

    let rc = route_config("routes", &["*"], vec![route("all", "/", "svc")]);
    handler
        .apply(TypeUrl::RouteConfiguration, "1", &[any(&rc)])
        .unwrap();
    handler
        .apply(
            TypeUrl::ClusterLoadAssignment,
            "1",
            &[any(&cla("svc", &[]))],
        )
        .unwrap();
    step("ready", proxy.ready()).await;
    let ready = get(admin, "admin", "/ready").await;
    assert_eq!(
        (ready.status.as_u16(), &ready.body[..]),
        (200, &b"ready\n"[..])
    );

    // Known cluster without endpoints: 503 UH.
    let reply = get(listen, "svc", "/").await;
    assert_eq!(reply.status, 503);
    assert_eq!(&reply.body[..], b"no healthy upstream");
    tokio::time::timeout(Duration::from_secs(10), proxy.shutdown())
        .await
        .unwrap();
}

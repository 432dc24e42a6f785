use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use prost::Message;
use trellis_xds::node::{NodeMeta, UpstreamPort};
use trellis_xds::{Snapshot, TypeUrl};

use super::translate;
use crate::model::MeshModel;

const CONFIG: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: catalog-v1}
spec:
  selector: {app: catalog, version: v1}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: catalog-v2}
spec:
  selector: {app: catalog, version: v2}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: legacy-db}
spec:
  ports: [{port: 5432, protocol: TCP}]
  endpoints:
  - {address: "127.0.0.1:7001", weight: 3, locality: "eu/a"}
  - {address: "127.0.0.1:7002"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: catalog-canary}
spec:
  parentRefs: [{kind: Service, name: catalog}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /items}}]
    backendRefs:
    - {name: catalog-v1, weight: 90}
    - {name: catalog-v2, weight: 10}
  - matches: [{path: {type: Exact, value: /items/special}}]
    backendRefs: [{name: catalog-v2}]
"#;

fn node(service: &str, version: &str, inbound: u16) -> NodeMeta {
    NodeMeta {
        service: service.into(),
        namespace: "default".into(),
        labels: [("version".to_owned(), version.to_owned())].into(),
        app_port: inbound - 1000,
        inbound_port: inbound,
        ip: "127.0.0.1".into(),
        advertise: None,
        upstreams: vec![
            UpstreamPort {
                service: "catalog".into(),
                port: 15101,
            },
            UpstreamPort {
                service: "legacy-db".into(),
                port: 15102,
            },
        ],
        http_proxy_port: Some(15103),
        locality: None,
    }
}

fn model(nodes: &[NodeMeta]) -> MeshModel {
    let config = trellis_api::load_str("test.yaml", CONFIG).expect("valid config");
    let ids: Vec<String> = (0..nodes.len()).map(|i| format!("n{i}")).collect();
    MeshModel::build(
        Arc::new(config),
        ids.iter().map(String::as_str).zip(nodes.iter()),
    )
}

fn decode<M: Message + Default>(snapshot: &Snapshot, t: TypeUrl, name: &str) -> M {
    let any = &snapshot.resources(t).expect("type present").items[name];
    M::decode(any.value.as_slice()).expect("decodes")
}

fn endpoints(snapshot: &Snapshot, cluster: &str) -> Vec<(String, u32)> {
    let cla: ClusterLoadAssignment = decode(snapshot, TypeUrl::ClusterLoadAssignment, cluster);
    cla.endpoints
        .iter()
        .flat_map(|l| l.lb_endpoints.iter())
        .map(|e| {
            let Some(
                envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(
                    ep,
                ),
            ) = &e.host_identifier
            else {
                panic!("endpoint without address")
            };
            let Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(sa)) =
                ep.address.as_ref().and_then(|a| a.address.as_ref())
            else {
                panic!("not a socket address")
            };
            let Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(port)) =
                sa.port_specifier
            else {
                panic!("no port")
            };
            (
                format!("{}:{port}", sa.address),
                e.load_balancing_weight.as_ref().map_or(1, |w| w.value),
            )
        })
        .collect()
}

#[test]
fn selectors_and_static_endpoints_fill_eds() {
    let nodes = [
        node("catalog", "v1", 41001),
        node("catalog", "v2", 41002),
        node("web", "v1", 41003),
    ];
    let snapshot = translate(&model(&nodes), &nodes[2]);
    assert_eq!(
        endpoints(&snapshot, "outbound|catalog-v1.default"),
        [("127.0.0.1:41001".to_owned(), 1)]
    );
    assert_eq!(
        endpoints(&snapshot, "outbound|catalog-v2.default"),
        [("127.0.0.1:41002".to_owned(), 1)]
    );
    assert_eq!(
        endpoints(&snapshot, "outbound|catalog.default").len(),
        2,
        "the implied service has both workloads"
    );
    assert_eq!(
        endpoints(&snapshot, "outbound|legacy-db.default"),
        [
            ("127.0.0.1:7001".to_owned(), 3),
            ("127.0.0.1:7002".to_owned(), 1)
        ]
    );
    let inbound: Cluster = decode(&snapshot, TypeUrl::Cluster, "inbound|40003");
    assert!(
        inbound.load_assignment.is_some(),
        "local app cluster is static"
    );
}

#[test]
fn canary_route_is_weighted_and_ordered_by_precedence() {
    let nodes = [node("web", "v1", 41003)];
    let snapshot = translate(&model(&nodes), &nodes[0]);
    let rc: RouteConfiguration = decode(
        &snapshot,
        TypeUrl::RouteConfiguration,
        "outbound|catalog.default",
    );
    let routes = &rc.virtual_hosts[0].routes;
    assert_eq!(routes.len(), 2);
    let path = |i: usize| routes[i].r#match.as_ref().unwrap().path_specifier.clone();
    assert_eq!(path(0), Some(PathSpecifier::Path("/items/special".into())));
    assert_eq!(
        path(1),
        Some(PathSpecifier::PathSeparatedPrefix("/items".into()))
    );
    let Some(Action::Route(action)) = &routes[1].action else {
        panic!("route action")
    };
    let Some(ClusterSpecifier::WeightedClusters(wc)) = &action.cluster_specifier else {
        panic!("weighted clusters")
    };
    let weights: Vec<(String, u32)> = wc
        .clusters
        .iter()
        .map(|c| (c.name.clone(), c.weight.as_ref().unwrap().value))
        .collect();
    assert_eq!(
        weights,
        [
            ("outbound|catalog-v1.default".to_owned(), 90),
            ("outbound|catalog-v2.default".to_owned(), 10)
        ]
    );
}

#[test]
fn listeners_detect_http_except_on_opaque_services() {
    let nodes = [node("web", "v1", 41003)];
    let snapshot = translate(&model(&nodes), &nodes[0]);
    let names: Vec<&String> = snapshot
        .resources(TypeUrl::Listener)
        .unwrap()
        .items
        .keys()
        .collect();
    assert_eq!(
        names,
        [
            "http_proxy",
            "inbound",
            "outbound|catalog|15101",
            "outbound|legacy-db|15102"
        ]
    );
    let http: Listener = decode(&snapshot, TypeUrl::Listener, "outbound|catalog|15101");
    assert_eq!(http.listener_filters.len(), 1, "http_inspector");
    assert!(http.continue_on_listener_filters_timeout);
    assert!(http.default_filter_chain.is_some(), "falls back to TCP");
    let tcp: Listener = decode(&snapshot, TypeUrl::Listener, "outbound|legacy-db|15102");
    assert!(tcp.listener_filters.is_empty(), "opaque: no detection");
    assert_eq!(
        tcp.filter_chains[0].filters[0].name,
        "envoy.filters.network.tcp_proxy"
    );
}

#[test]
fn versions_move_only_for_what_changed() {
    let web = node("web", "v1", 41003);
    let one = translate(&model(std::slice::from_ref(&web)), &web);
    let again = translate(&model(std::slice::from_ref(&web)), &web);
    for t in TypeUrl::ALL {
        assert_eq!(one.version(t), again.version(t), "{t} is deterministic");
    }
    let catalog = node("catalog", "v1", 41001);
    let two = translate(&model(&[web.clone(), catalog]), &web);
    assert_ne!(
        one.version(TypeUrl::ClusterLoadAssignment),
        two.version(TypeUrl::ClusterLoadAssignment)
    );
    assert_eq!(
        one.version(TypeUrl::Listener),
        two.version(TypeUrl::Listener)
    );
}

#[test]
fn demo_config_translates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo");
    let config = trellis_api::load_dir(&dir).expect("the demo config is valid");
    let frontend = node("frontend", "v1", 41005);
    let model = MeshModel::build(Arc::new(config), [("f", &frontend)].into_iter());
    let snapshot = translate(&model, &frontend);
    let rc: RouteConfiguration = decode(
        &snapshot,
        TypeUrl::RouteConfiguration,
        "outbound|ratings.default",
    );
    assert_eq!(
        rc.virtual_hosts[0].routes[0]
            .r#match
            .as_ref()
            .unwrap()
            .path_specifier,
        Some(PathSpecifier::Prefix("/trellis.demo.Ratings/".into()))
    );
}

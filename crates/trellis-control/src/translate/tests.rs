use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster::LbPolicy};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LbEndpoint};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::google::protobuf::value::Kind;
use prost::Message;
use trellis_xds::node::{ClientKind, NodeMeta, UpstreamPort};
use trellis_xds::snapshot::Resources;
use trellis_xds::{Snapshot, TypeUrl};

use super::{SharedResources, translate, translate_shared};
use crate::model::MeshModel;

mod backend_policy;
mod failover;
mod faults;
mod filters;
mod grpc;
mod retries;

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
        mtls: true,
        admin: None,
        client: ClientKind::TrellisProxy,
        h2_upgrade: true,
    }
}

fn model(nodes: &[NodeMeta]) -> MeshModel {
    model_with(CONFIG, nodes)
}

fn model_with(config: &str, nodes: &[NodeMeta]) -> MeshModel {
    let config = trellis_api::load_str("test.yaml", config).expect("valid config");
    let ids: Vec<String> = (0..nodes.len()).map(|i| format!("n{i}")).collect();
    MeshModel::build(
        Arc::new(config),
        ids.iter().map(String::as_str).zip(nodes.iter()),
    )
}

fn decode<M: Message + Default>(snapshot: &Snapshot, t: TypeUrl, name: &str) -> M {
    let resource = snapshot.get(t, name).expect("resource present");
    M::decode(resource.any.value.as_slice()).expect("decodes")
}

fn endpoints(snapshot: &Snapshot, cluster: &str) -> Vec<(String, u32)> {
    let cla: ClusterLoadAssignment = decode(snapshot, TypeUrl::ClusterLoadAssignment, cluster);
    cla.endpoints
        .iter()
        .flat_map(|l| l.lb_endpoints.iter())
        .map(|e| {
            let weight = e.load_balancing_weight.as_ref().map_or(1, |w| w.value);
            (address(e), weight)
        })
        .collect()
}

/// `ip:port` of an endpoint.
fn address(e: &LbEndpoint) -> String {
    let Some(HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
        panic!("endpoint without address")
    };
    let Some(AddressKind::SocketAddress(sa)) = ep.address.as_ref().and_then(|a| a.address.as_ref())
    else {
        panic!("not a socket address")
    };
    let Some(PortSpecifier::PortValue(port)) = sa.port_specifier else {
        panic!("no port")
    };
    format!("{}:{port}", sa.address)
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
    let names: Vec<&str> = snapshot
        .iter(TypeUrl::Listener)
        .map(|(name, _)| name)
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
fn declared_http_waits_long_for_the_client_and_undeclared_falls_back_to_tcp_soon() {
    let timeout = |l: &Listener| {
        let d = l.listener_filters_timeout.unwrap_or_default();
        (d.seconds, d.nanos, l.continue_on_listener_filters_timeout)
    };
    // catalog is only a route's parent in CONFIG: its protocol is assumed, not declared.
    let nodes = [node("web", "v1", 41003)];
    let snapshot = translate(&model(&nodes), &nodes[0]);
    let undeclared: Listener = decode(&snapshot, TypeUrl::Listener, "outbound|catalog|15101");
    assert_eq!(timeout(&undeclared), (0, 200_000_000, true));

    // A port without a written protocol is HTTP by default, but not declared.
    let port_only = "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {name: catalog}\nspec: {ports: [{port: 80}]}\n---\n";
    let config = trellis_api::load_str("t.yaml", &format!("{port_only}{CONFIG}")).unwrap();
    let snapshot = translate(
        &MeshModel::build(Arc::new(config), std::iter::empty()),
        &nodes[0],
    );
    let assumed: Listener = decode(&snapshot, TypeUrl::Listener, "outbound|catalog|15101");
    assert_eq!(timeout(&assumed), (0, 200_000_000, true));

    // Declared: a minute of silence (an idle pooled connection stays HTTP), then the
    // connection is closed, not turned into TCP; non-HTTP bytes still go to the TCP chain.
    // Inbound too, TLS inspection included.
    let declared = "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {name: catalog}\nspec: {ports: [{port: 80, protocol: HTTP}]}\n---\n";
    let config = trellis_api::load_str("t.yaml", &format!("{declared}{CONFIG}")).unwrap();
    let node = node("catalog", "v1", 41003);
    let mut model = MeshModel::build(Arc::new(config), [("n", &node)].into_iter());
    model.trust_bundle = Some("bundle".into());
    let snapshot = translate(&model, &node);
    let outbound: Listener = decode(&snapshot, TypeUrl::Listener, "outbound|catalog|15101");
    assert_eq!(timeout(&outbound), (60, 0, false));
    assert!(
        outbound.default_filter_chain.is_some(),
        "non-HTTP bytes: TCP"
    );
    let inbound: Listener = decode(&snapshot, TypeUrl::Listener, "inbound");
    assert_eq!(
        inbound.listener_filters.len(),
        2,
        "tls_inspector, http_inspector"
    );
    assert_eq!(timeout(&inbound), (60, 0, false));
}

#[test]
fn a_proxyless_grpc_client_gets_api_listeners_named_by_target_and_round_robin_clusters() {
    let grpc = NodeMeta {
        client: ClientKind::Grpc,
        inbound_port: 0,
        app_port: 0,
        upstreams: Vec::new(),
        http_proxy_port: None,
        mtls: false,
        ..node("shop", "v1", 41003)
    };
    let model = model(std::slice::from_ref(&grpc));
    let cat = |k: &str| model.services.get(k).map(|s| s.endpoints.len());
    assert_eq!(
        cat("shop.default"),
        None,
        "a gRPC client is nobody's endpoint"
    );
    let snapshot = translate(&model, &grpc);
    let names: Vec<&str> = snapshot.iter(TypeUrl::Listener).map(|(n, _)| n).collect();
    assert!(
        names.contains(&"catalog") && names.contains(&"catalog.default"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("legacy-db")),
        "TCP: {names:?}"
    );
    let l: Listener = decode(&snapshot, TypeUrl::Listener, "catalog.default");
    assert!(l.address.is_none() && l.api_listener.is_some());
    let c: Cluster = decode(&snapshot, TypeUrl::Cluster, "outbound|catalog.default");
    let sidecar = node("web", "v1", 41003);
    let proxy_cluster: Cluster = decode(
        &translate(&model, &sidecar),
        TypeUrl::Cluster,
        "outbound|catalog.default",
    );
    // gRPC's own round robin, where a sidecar's cluster asks for least request (P2C).
    assert_eq!(c.lb_policy, LbPolicy::RoundRobin as i32);
    assert_ne!(proxy_cluster.lb_policy, c.lb_policy);
    assert!(c.typed_extension_protocol_options.is_empty());
    assert!(c.transport_socket_matches.is_empty() && c.transport_socket.is_none());
    assert_eq!(snapshot.iter(TypeUrl::Secret).count(), 0);
    let cla: ClusterLoadAssignment = decode(
        &snapshot,
        TypeUrl::ClusterLoadAssignment,
        "outbound|legacy-db.default",
    );
    let weights: Vec<u32> = cla
        .endpoints
        .iter()
        .map(|l| l.load_balancing_weight.as_ref().map_or(0, |w| w.value))
        .collect();
    assert_eq!(
        weights,
        [3, 1],
        "locality weights are the sums of endpoint weights"
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

fn inbound_with(yaml: &str, service: &str) -> Listener {
    inbound_of(yaml, node(service, "v1", 41003))
}

fn inbound_of(yaml: &str, node: NodeMeta) -> Listener {
    let config = trellis_api::load_str("t.yaml", yaml).expect("valid config");
    let mut model = MeshModel::build(Arc::new(config), [("n", &node)].into_iter());
    model.trust_bundle = Some("bundle".into());
    let snapshot = translate(&model, &node);
    decode(&snapshot, TypeUrl::Listener, "inbound")
}

fn transports(l: &Listener) -> Vec<String> {
    l.filter_chains
        .iter()
        .map(|c| {
            c.filter_chain_match
                .as_ref()
                .map(|m| m.transport_protocol.clone())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn mtls_mode_per_mesh_and_per_service() {
    let strict_mesh = "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: m}\nspec: {mtls: {mode: STRICT}}\n---\n";
    let legacy = "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {name: legacy}\nspec: {mtls: {mode: PERMISSIVE}}\n";
    let strict = inbound_with(&format!("{strict_mesh}{legacy}"), "web");
    assert!(
        transports(&strict).iter().all(|t| t == "tls"),
        "{:?}",
        transports(&strict)
    );
    assert!(
        strict.default_filter_chain.is_none(),
        "STRICT keeps no plaintext fallback"
    );
    let permissive = inbound_with(&format!("{strict_mesh}{legacy}"), "legacy");
    assert!(transports(&permissive).iter().any(|t| t == "raw_buffer"));
    assert!(permissive.default_filter_chain.is_some());
}

#[test]
fn a_workload_without_a_certificate_serves_plaintext_only_where_permissive() {
    let strict_mesh = "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: m}\nspec: {mtls: {mode: STRICT}}\n---\n";
    let legacy = "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {name: legacy}\nspec: {mtls: {mode: PERMISSIVE}}\n";
    let plain = |service| NodeMeta {
        mtls: false,
        ..node(service, "v1", 41003)
    };
    let permissive = inbound_of(&format!("{strict_mesh}{legacy}"), plain("legacy"));
    assert!(
        transports(&permissive).iter().all(|t| t.is_empty()),
        "no TLS chain waits for a certificate that never comes: {:?}",
        transports(&permissive)
    );
    assert!(
        permissive
            .listener_filters
            .iter()
            .all(|f| f.name != "envoy.filters.listener.tls_inspector"),
        "no TLS inspector"
    );
    let strict = inbound_of(&format!("{strict_mesh}{legacy}"), plain("web"));
    assert!(
        transports(&strict).iter().all(|t| t == "tls"),
        "STRICT still refuses plaintext: {:?}",
        transports(&strict)
    );
}

#[test]
fn mesh_default_deny_adds_an_empty_allow_filter() {
    let yaml = "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: m}\nspec: {defaultDeny: true}\n";
    let inbound = inbound_with(yaml, "web");
    let chain = inbound
        .filter_chains
        .iter()
        .find(|c| {
            c.filter_chain_match
                .as_ref()
                .is_some_and(|m| !m.application_protocols.is_empty())
        })
        .expect("an HTTP chain");
    let envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any) =
        chain.filters[0].config_type.as_ref().unwrap()
    else {
        panic!("typed hcm")
    };
    let hcm = envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["envoy.filters.http.rbac", "envoy.filters.http.router"]
    );
    let tcp = inbound
        .filter_chains
        .iter()
        .find(|c| c.filters.len() == 2)
        .expect("a TCP chain with RBAC");
    assert_eq!(tcp.filters[0].name, "envoy.filters.network.rbac");
}

#[test]
fn policies_reach_selected_workloads_and_encode_stably() {
    let yaml = "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {name: catalog-v1}\nspec:\n  selector: {app: catalog, version: v1}\n---\napiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n  targetRefs: [{kind: Service, name: catalog-v1}]\n  rules:\n  - from: [{namespaces: [a]}]\n  - from: [{namespaces: [b]}]\n  - from: [{namespaces: [c]}]\n";
    let config = Arc::new(trellis_api::load_str("t.yaml", yaml).expect("valid config"));
    let v1 = node("catalog", "v1", 41001);
    let build = || MeshModel::build(config.clone(), [("n", &v1)].into_iter());
    let first = translate(&build(), &v1);
    let inbound: Listener = decode(&first, TypeUrl::Listener, "inbound");
    let names: Vec<String> = inbound
        .filter_chains
        .iter()
        .chain(&inbound.default_filter_chain)
        .flat_map(|c| c.filters.iter().map(|f| f.name.clone()))
        .collect();
    assert!(
        names.contains(&"envoy.filters.network.rbac".to_owned()),
        "{names:?}"
    );
    for _ in 0..20 {
        let again = translate(&build(), &v1);
        assert_eq!(
            first.version(TypeUrl::Listener),
            again.version(TypeUrl::Listener)
        );
    }
}

#[test]
fn workloads_without_a_certificate_get_and_are_reached_in_plaintext() {
    let secure = node("catalog", "v1", 41001);
    let plain = NodeMeta {
        mtls: false,
        ..node("catalog", "v2", 41002)
    };
    let mut model = model(&[secure.clone(), plain.clone()]);
    model.trust_bundle = Some("bundle".into());
    let model = Arc::new(model);
    let shared = SharedResources::build(&model, None);
    let matches = |snapshot: &Snapshot| {
        let c: Cluster = decode(snapshot, TypeUrl::Cluster, "outbound|catalog.default");
        c.transport_socket_matches.len()
    };
    assert!(matches(&translate_shared(&shared, &model, &secure)) > 0);
    assert_eq!(
        matches(&translate_shared(&shared, &model, &plain)),
        0,
        "a proxy without a certificate cannot originate mTLS"
    );
    let snapshot = translate_shared(&shared, &model, &secure);
    let cla: ClusterLoadAssignment = decode(
        &snapshot,
        TypeUrl::ClusterLoadAssignment,
        "outbound|catalog.default",
    );
    let tls_marked: Vec<bool> = cla
        .endpoints
        .iter()
        .flat_map(|l| l.lb_endpoints.iter())
        .map(|e| e.metadata.is_some())
        .collect();
    assert_eq!(
        tls_marked,
        [true, false],
        "only the certified endpoint is marked for mTLS"
    );
}

#[test]
fn endpoints_whose_proxy_takes_http1_over_http2_with_mtls_are_marked() {
    let plain = NodeMeta {
        mtls: false,
        ..node("catalog", "v2", 41002)
    };
    let other_proxy = NodeMeta {
        h2_upgrade: false,
        ..node("catalog", "v3", 41003)
    };
    let client = node("catalog", "v1", 41001);
    let mut model = model(&[client.clone(), plain, other_proxy]);
    model.trust_bundle = Some("bundle".into());
    let model = Arc::new(model);
    let snapshot = translate_shared(&SharedResources::build(&model, None), &model, &client);
    let cla: ClusterLoadAssignment = decode(
        &snapshot,
        TypeUrl::ClusterLoadAssignment,
        "outbound|catalog.default",
    );
    let expected = [(41001, true), (41002, false), (41003, false)]
        .map(|(port, mark)| (format!("127.0.0.1:{port}"), mark));
    assert_eq!(
        h2_marks(&cla),
        expected,
        "only mTLS endpoints of proxies that say they take it"
    );
}

/// Each endpoint's address and whether it carries the `trellis.dev/h2Upgrade` mark.
fn h2_marks(cla: &ClusterLoadAssignment) -> Vec<(String, bool)> {
    cla.endpoints
        .iter()
        .flat_map(|l| l.lb_endpoints.iter())
        .map(|e| {
            let mark = e
                .metadata
                .as_ref()
                .and_then(|m| m.filter_metadata.get("trellis.dev"))
                .and_then(|s| s.fields.get("h2Upgrade"))
                .and_then(|v| v.kind.clone());
            (address(e), mark == Some(Kind::BoolValue(true)))
        })
        .collect()
}

#[test]
fn envoy_and_workloads_of_opaque_services_are_never_marked_for_http2() {
    let client = node("catalog", "v1", 41001);
    let envoy = NodeMeta {
        client: ClientKind::Envoy,
        ..node("catalog", "v2", 41002)
    };
    let db = node("legacy-db", "v1", 41005);
    let mut model = model(&[client.clone(), envoy, db]);
    model.trust_bundle = Some("bundle".into());
    let model = Arc::new(model);
    let snapshot = translate_shared(&SharedResources::build(&model, None), &model, &client);
    let catalog: ClusterLoadAssignment = decode(
        &snapshot,
        TypeUrl::ClusterLoadAssignment,
        "outbound|catalog.default",
    );
    let expected =
        [(41001, true), (41002, false)].map(|(port, mark)| (format!("127.0.0.1:{port}"), mark));
    assert_eq!(
        h2_marks(&catalog),
        expected,
        "Envoy does not restore HTTP/1.1"
    );
    let db: ClusterLoadAssignment = decode(
        &snapshot,
        TypeUrl::ClusterLoadAssignment,
        "outbound|legacy-db.default",
    );
    let marks = h2_marks(&db);
    assert!(
        marks.contains(&("127.0.0.1:41005".to_owned(), false)),
        "a TCP Service's workload has a TCP inbound listener: {marks:?}"
    );
}

#[test]
fn shared_resources_list_what_changed_since_the_previous_ones() {
    let first = [node("catalog", "v1", 41001)];
    let before = SharedResources::build(&Arc::new(model(&first)), None);
    let both = [node("catalog", "v1", 41001), node("catalog", "v2", 41002)];
    let model = Arc::new(model(&both));
    let after = SharedResources::build(&model, Some(&before));
    let snapshot = translate_shared(&after, &model, &both[0]);
    let previous = translate_shared(&before, &model, &both[0]);
    let endpoints = snapshot
        .changes(TypeUrl::ClusterLoadAssignment)
        .expect("endpoint changes are listed");
    assert_eq!(
        endpoints.since,
        previous.version(TypeUrl::ClusterLoadAssignment)
    );
    assert_eq!(
        endpoints.names.iter().collect::<Vec<_>>(),
        ["outbound|catalog-v2.default", "outbound|catalog.default"],
        "the service and the new version's subset"
    );
    assert_eq!(
        snapshot.version(TypeUrl::RouteConfiguration),
        previous.version(TypeUrl::RouteConfiguration),
        "a new endpoint changes no route"
    );
    assert_eq!(
        snapshot.changes(TypeUrl::Listener),
        None,
        "listeners are the proxy's own and always sent whole"
    );
}

#[test]
fn shared_resources_built_on_the_previous_ones_equal_those_built_afresh() {
    let one = [node("catalog", "v1", 41001)];
    let two = [node("catalog", "v1", 41001), node("catalog", "v2", 41002)];
    let budget = format!(
        "{CONFIG}---
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {{name: catalog-budget}}
spec:
  targetRefs: [{{kind: Service, name: catalog}}]
  retryBudget: {{budgetPercent: 50}}
"
    );
    let secured = |mut model: MeshModel| {
        model.trust_bundle = Some("bundle".into());
        model
    };
    let reweighted = CONFIG.replace("weight: 90", "weight: 80");
    // Each step changes what some resources are built from: endpoints joining, the mesh CA
    // (mutual TLS to sidecars), a BackendPolicy, endpoints leaving, an HTTPRoute.
    let steps = [
        model(&one),
        model(&two),
        secured(model(&two)),
        secured(model_with(&budget, &two)),
        secured(model_with(&budget, &one)),
        model(&one),
        model_with(&reweighted, &one),
    ];
    let mut previous: Option<SharedResources> = None;
    for (i, model) in steps.into_iter().enumerate() {
        let model = Arc::new(model);
        if let Some(p) = previous.as_mut() {
            p.clusters = p.clusters.each_ref().map(|c| marked(c));
            p.endpoints = marked(&p.endpoints);
        }
        let built = SharedResources::build(&model, previous.as_ref());
        let fresh = SharedResources::build(&model, None);
        for (set, (built, fresh)) in built.clusters.iter().zip(&fresh.clusters).enumerate() {
            let before = previous.as_ref().map(|p| &*p.clusters[set]);
            assert_rebuilt(
                &format!("step {i}: clusters, set {set}"),
                before,
                built,
                fresh,
            );
        }
        let before = previous.as_ref().map(|p| &*p.endpoints);
        let what = format!("step {i}: endpoints");
        assert_rebuilt(&what, before, &built.endpoints, &fresh.endpoints);
        assert_eq!(built.routes.items, fresh.routes.items, "step {i}: routes");
        if i == 1 {
            let before = previous.as_ref().map(|p| &p.routes);
            assert!(
                before.is_some_and(|b| Arc::ptr_eq(b, &built.routes)),
                "endpoints alone changed: the route configs are kept whole"
            );
        }
        // The items as built (equal, as asserted) with their hashes unmarked, so that an item
        // kept twice in a row is not marked twice.
        previous = Some(SharedResources {
            clusters: fresh.clusters,
            endpoints: fresh.endpoints,
            ..built
        });
    }
}

/// `resources` with every hash inverted: an item of the next build that still carries an
/// inverted hash was kept from these, not encoded again.
fn marked(resources: &Resources) -> Arc<Resources> {
    let mut marked = resources.clone();
    for item in marked.items.values_mut() {
        item.hash = !item.hash;
    }
    Arc::new(marked)
}

/// `built` (on `before`, [`marked`]) holds what `fresh` holds, and kept from `before` exactly
/// the items whose content did not change.
fn assert_rebuilt(what: &str, before: Option<&Resources>, built: &Resources, fresh: &Resources) {
    let names = |r: &Resources| r.items.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(built), names(fresh), "{what}");
    for (name, fresh) in &fresh.items {
        let built = &built.items[name];
        assert_eq!(built.any, fresh.any, "{what}: {name}");
        let unchanged = before
            .and_then(|b| b.items.get(name))
            .is_some_and(|b| b.any == fresh.any);
        let (hash, how) = if unchanged {
            (!fresh.hash, "kept")
        } else {
            (fresh.hash, "encoded again")
        };
        assert_eq!(built.hash, hash, "{what}: {name} should be {how}");
    }
}

//! What proxyless gRPC clients are sent of the routes: what gRPC implements, restated in its
//! terms, while sidecars get the whole route.

use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, route::Action, route_action::ClusterSpecifier,
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use prost::Message;
use trellis_xds::TypeUrl;
use trellis_xds::node::{ClientKind, NodeMeta};

use super::filters::SERVICES;
use super::{decode, node};
use crate::model::MeshModel;
use crate::translate::{SharedResources, translate, translate_shared};

/// The resources besides the Services (`shop`, `shop-v1`, `shop-v2`, see [`SERVICES`]).
const CONFIG: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: FaultInjection
metadata: {name: abort}
spec:
  abort: {grpcStatus: ABORTED, percent: 100}
---
apiVersion: trellis.dev/v1alpha1
kind: FaultInjection
metadata: {name: abort-beta}
spec:
  abort: {grpcStatus: ABORTED, percent: 100}
  headers: [{name: X-Beta, value: "1"}]
---
apiVersion: trellis.dev/v1alpha1
kind: RateLimit
metadata: {name: limit}
spec: {requests: 5, per: 1s}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop}
spec:
  parentRefs: [{kind: Service, name: shop}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api.v1}}]
    filters:
    - {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: FaultInjection, name: abort}}
    - {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: RateLimit, name: limit}}
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-a, value: b}]}}
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}
    timeouts: {request: 2s, backendRequest: 500ms}
    retry: {attempts: 2, codes: [503]}
    backendRefs:
    - name: shop-v1
      filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-b, value: c}]}}]
    - {name: shop}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: shop-v1}
spec:
  parentRefs: [{kind: Service, name: shop-v1}]
  rules:
  - filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: shop}}
    backendRefs: [{name: shop-v1}]
    retry: {codes: [UNAVAILABLE], attempts: 3}
  - matches: [{method: {service: a.Many}}]
    backendRefs: [{name: shop-v1}]
    retry: {codes: [UNAVAILABLE], attempts: 7}
  - matches: [{method: {service: a.None}}]
    backendRefs: [{name: shop-v1}]
    retry: {codes: [UNAVAILABLE], attempts: 0}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop-v2}
spec:
  parentRefs: [{kind: Service, name: shop-v2}]
  rules:
  - matches: [{method: GET, path: {type: Exact, value: /x}}]
    backendRefs: [{name: shop-v2}]
  - matches: [{method: POST, headers: [{name: X-Tenant, value: a}]}]
    filters:
    - {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: FaultInjection, name: abort-beta}}
    backendRefs: [{name: shop-v2}]
"#;

/// The routes of `service`'s route config as `client` gets it.
fn routes(model: &MeshModel, client: &NodeMeta, service: &str) -> Vec<Route> {
    let config: RouteConfiguration = decode(
        &translate(model, client),
        TypeUrl::RouteConfiguration,
        &format!("outbound|{service}.default"),
    );
    config.virtual_hosts[0].routes.clone()
}

/// The `i`th route of `service`'s route config as `client` gets it, and its action.
fn nth_route(
    model: &MeshModel,
    client: &NodeMeta,
    service: &str,
    i: usize,
) -> (Route, RouteAction) {
    let route = routes(model, client, service)[i].clone();
    let Some(Action::Route(action)) = route.action.clone() else {
        panic!("a forwarding route: {route:?}");
    };
    (route, action)
}

/// The names of a route's header matchers.
fn header_names(route: &Route) -> Vec<&str> {
    let headers = route.r#match.iter().flat_map(|m| &m.headers);
    headers.map(|h| h.name.as_str()).collect()
}

fn seconds(s: i64) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: s,
        nanos: 0,
    })
}

fn grpc_client() -> NodeMeta {
    NodeMeta {
        client: ClientKind::Grpc,
        inbound_port: 0,
        app_port: 0,
        upstreams: Vec::new(),
        http_proxy_port: None,
        mtls: false,
        ..node("client", "v1", 41003)
    }
}

fn model_of(yaml: &str, nodes: &[(&str, &NodeMeta)]) -> MeshModel {
    let config = trellis_api::load_str("t.yaml", &format!("{SERVICES}{yaml}"))
        .unwrap_or_else(|e| panic!("{e}"));
    MeshModel::build(Arc::new(config), nodes.iter().copied())
}

#[test]
fn grpc_clients_get_routes_with_only_what_grpc_implements() {
    let grpc = grpc_client();
    let sidecar = node("web", "v1", 41004);
    let model = model_of(CONFIG, &[("g", &grpc), ("s", &sidecar)]);

    // The sidecar gets the whole rule.
    let (route, action) = nth_route(&model, &sidecar, "shop", 0);
    let Some(ClusterSpecifier::WeightedClusters(split)) = &action.cluster_specifier else {
        panic!("a weighted split");
    };
    assert!(!split.clusters[0].response_headers_to_add.is_empty());
    let mut filters: Vec<&str> = route
        .typed_per_filter_config
        .keys()
        .map(String::as_str)
        .collect();
    filters.sort_unstable();
    assert_eq!(
        filters,
        [
            "envoy.filters.http.fault",
            "envoy.filters.http.local_ratelimit"
        ]
    );
    assert!(!route.request_headers_to_add.is_empty());
    assert!(!action.prefix_rewrite.is_empty() || action.regex_rewrite.is_some());
    assert_eq!(action.timeout, seconds(2));
    assert!(action.retry_policy.is_some());

    // gRPC gets the fault, the timeout as the stream's bound, the prefix as a regular
    // expression, and none of what it would ignore or reject.
    let (route, action) = nth_route(&model, &grpc, "shop", 0);
    let filters: Vec<&str> = route
        .typed_per_filter_config
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        filters,
        ["envoy.filters.http.fault"],
        "a rate limit would be NACKed"
    );
    let path = route
        .r#match
        .as_ref()
        .and_then(|m| m.path_specifier.clone());
    let Some(PathSpecifier::SafeRegex(regex)) = path else {
        panic!("{path:?}");
    };
    assert_eq!(regex.regex, "/api\\.v1(/.*)?");
    let re = regex::Regex::new(&format!("^(?:{})$", regex.regex)).unwrap();
    assert!(re.is_match("/api.v1") && re.is_match("/api.v1/x"));
    assert!(!re.is_match("/api.v1x") && !re.is_match("/api-v1"));
    assert!(route.request_headers_to_add.is_empty() && route.response_headers_to_add.is_empty());
    assert!(action.prefix_rewrite.is_empty() && action.regex_rewrite.is_none());
    assert_eq!(action.timeout, None);
    let bound = action
        .max_stream_duration
        .and_then(|d| d.max_stream_duration);
    assert_eq!(bound, seconds(2));
    assert_eq!(
        action.retry_policy, None,
        "HTTP status retries: gRPC has none"
    );
    let Some(ClusterSpecifier::WeightedClusters(split)) = action.cluster_specifier else {
        panic!("a weighted split");
    };
    let names: Vec<&str> = split.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["outbound|shop-v1.default", "outbound|shop.default"]);
    assert!(
        split
            .clusters
            .iter()
            .all(|c| c.response_headers_to_add.is_empty())
    );

    // A GRPCRoute's retry on gRPC statuses is kept, without what gRPC lacks; mirrors go. The
    // rules come in the same order as the sidecar's: `a.Many`, `a.None`, then the catch-all.
    let prefix = |route: &Route| route.r#match.clone().and_then(|m| m.path_specifier);
    for (i, want) in ["/a.Many/", "/a.None/", "/"].into_iter().enumerate() {
        let want = Some(PathSpecifier::Prefix(want.to_owned()));
        assert_eq!(prefix(&nth_route(&model, &sidecar, "shop-v1", i).0), want);
        assert_eq!(prefix(&nth_route(&model, &grpc, "shop-v1", i).0), want);
    }
    let (_, sidecar_action) = nth_route(&model, &sidecar, "shop-v1", 2);
    assert!(!sidecar_action.request_mirror_policies.is_empty());
    let (_, action) = nth_route(&model, &grpc, "shop-v1", 2);
    assert!(action.request_mirror_policies.is_empty());
    let retry = action.retry_policy.expect("the gRPC retry");
    assert_eq!(retry.retry_on, "unavailable");
    assert_eq!(retry.num_retries.map(|n| n.value), Some(3));
    assert!(retry.retry_back_off.is_some() && retry.retry_host_predicate.is_empty());
    // gRPC makes at most 4 retries, and refuses a policy of none.
    let retries = |i| {
        let (_, action) = nth_route(&model, &grpc, "shop-v1", i);
        action.retry_policy.map(|p| p.num_retries.map(|n| n.value))
    };
    assert_eq!(retries(0), Some(Some(4)));
    assert_eq!(retries(1), None);

    // Every gRPC call is a POST, which gRPC does not see when it routes: a GET rule can never
    // match and goes, a POST rule loses its `:method`. Header names are lower case (gRPC
    // compares them exactly). A fault for certain headers, which gRPC's fault filter ignores,
    // becomes a route that also matches them, before the same route without the fault.
    let sidecar_routes = routes(&model, &sidecar, "shop-v2");
    assert_eq!(sidecar_routes.len(), 2);
    assert_eq!(header_names(&sidecar_routes[0]), [":method"]);
    assert_eq!(header_names(&sidecar_routes[1]), ["X-Tenant", ":method"]);
    let grpc_routes = routes(&model, &grpc, "shop-v2");
    assert_eq!(grpc_routes.len(), 2, "{grpc_routes:?}");
    assert_eq!(header_names(&grpc_routes[0]), ["x-tenant", "x-beta"]);
    assert_eq!(header_names(&grpc_routes[1]), ["x-tenant"]);
    let fault = &grpc_routes[0].typed_per_filter_config["envoy.filters.http.fault"];
    let fault = HttpFault::decode(fault.value.as_slice()).unwrap();
    assert!(fault.headers.is_empty() && fault.abort.is_some());
    assert!(grpc_routes[1].typed_per_filter_config.is_empty());

    // The fault filter is in the client's connection manager, so the route's config applies.
    let listener: Listener = decode(&translate(&model, &grpc), TypeUrl::Listener, "shop");
    let hcm = listener.api_listener.and_then(|a| a.api_listener).unwrap();
    let hcm = HttpConnectionManager::decode(hcm.value.as_slice()).unwrap();
    let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["envoy.filters.http.fault", "envoy.filters.http.router"]
    );
}

#[test]
fn grpc_route_configs_list_what_changed_since_the_previous_ones() {
    let grpc = grpc_client();
    let nodes = [("g", &grpc)];
    let before_model = Arc::new(model_of(CONFIG, &nodes));
    let before = SharedResources::build(&before_model, None);
    let previous = translate_shared(&before, &before_model, &grpc);
    let model = Arc::new(model_of(&CONFIG.replace("value: a}", "value: b}"), &nodes));
    let after = SharedResources::build(&model, Some(&before));
    let snapshot = translate_shared(&after, &model, &grpc);
    let changes = snapshot
        .changes(TypeUrl::RouteConfiguration)
        .expect("route changes are listed");
    assert_eq!(changes.since, previous.version(TypeUrl::RouteConfiguration));
    assert_eq!(
        changes.names.iter().collect::<Vec<_>>(),
        ["outbound|shop-v2.default"]
    );
    assert_ne!(
        snapshot.version(TypeUrl::RouteConfiguration),
        previous.version(TypeUrl::RouteConfiguration)
    );

    // Resources whose predecessors never served a gRPC client have nothing to list against.
    let unserved = SharedResources::build(&before_model, None);
    let after = SharedResources::build(&model, Some(&unserved));
    assert_eq!(
        translate_shared(&after, &model, &grpc).changes(TypeUrl::RouteConfiguration),
        None
    );
}

//! What proxyless gRPC clients are sent of the routes: what gRPC implements, restated in its
//! terms, while sidecars get the whole route.

use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, route::Action, route_action::ClusterSpecifier,
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use prost::Message;
use trellis_xds::TypeUrl;
use trellis_xds::node::{ClientKind, NodeMeta};

use super::{decode, node};
use crate::model::MeshModel;
use crate::translate::translate;

const CONFIG: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: shop}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: shop-v1}
---
apiVersion: trellis.dev/v1alpha1
kind: FaultInjection
metadata: {name: abort}
spec:
  abort: {grpcStatus: ABORTED, percent: 100}
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
  - matches: [{path: {type: PathPrefix, value: /api}}]
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
"#;

/// The first route of `service`'s route config as `client` gets it.
fn first_route(model: &MeshModel, client: &NodeMeta, service: &str) -> (Route, RouteAction) {
    let config: RouteConfiguration = decode(
        &translate(model, client),
        TypeUrl::RouteConfiguration,
        &format!("outbound|{service}.default"),
    );
    let route = config.virtual_hosts[0].routes[0].clone();
    let Some(Action::Route(action)) = route.action.clone() else {
        panic!("a forwarding route: {route:?}");
    };
    (route, action)
}

fn seconds(s: i64) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: s,
        nanos: 0,
    })
}

#[test]
fn grpc_clients_get_routes_with_only_what_grpc_implements() {
    let grpc = NodeMeta {
        client: ClientKind::Grpc,
        inbound_port: 0,
        app_port: 0,
        upstreams: Vec::new(),
        http_proxy_port: None,
        mtls: false,
        ..node("client", "v1", 41003)
    };
    let sidecar = node("web", "v1", 41004);
    let config = trellis_api::load_str("t.yaml", CONFIG).unwrap_or_else(|e| panic!("{e}"));
    let nodes = [("g", &grpc), ("s", &sidecar)];
    let model = MeshModel::build(Arc::new(config), nodes.into_iter());

    // The sidecar gets the whole rule.
    let (route, action) = first_route(&model, &sidecar, "shop");
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
    let (route, action) = first_route(&model, &grpc, "shop");
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
    assert_eq!(regex.regex, "/api(/.*)?");
    let re = regex::Regex::new(&format!("^(?:{})$", regex.regex)).unwrap();
    assert!(re.is_match("/api") && re.is_match("/api/x") && !re.is_match("/apix"));
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

    // A GRPCRoute's retry on gRPC statuses is kept, without what gRPC lacks; mirrors go.
    let (_, sidecar_action) = first_route(&model, &sidecar, "shop-v1");
    assert!(!sidecar_action.request_mirror_policies.is_empty());
    let (_, action) = first_route(&model, &grpc, "shop-v1");
    assert!(action.request_mirror_policies.is_empty());
    let retry = action.retry_policy.expect("the gRPC retry");
    assert_eq!(retry.retry_on, "unavailable");
    assert_eq!(retry.num_retries.map(|n| n.value), Some(3));
    assert!(retry.retry_back_off.is_some() && retry.retry_host_predicate.is_empty());

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

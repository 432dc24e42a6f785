//! What a proxyless gRPC client gets instead of a sidecar's listeners: for each HTTP service an
//! API listener named as the client's `xds:///` target (`name.namespace`, and `name` for
//! services in the client's own namespace) whose connection manager (fault filter, router)
//! reads the service's route config over RDS; an EDS cluster per service with only what gRPC
//! implements (round robin over the shared load assignment); the shared endpoints. No secrets:
//! gRPC's TLS needs certificate providers, so proxyless clients are plaintext and reach
//! PERMISSIVE ports only.
//!
//! The route configs are the sidecars' restated for gRPC ([`route_configs`]): gRPC rejects a
//! whole route config for one per-route config of a filter it does not know (a rate limit) or
//! a retry policy of no retries, and silently ignores header changes, rewrites, mirrors, hash
//! policies, per-try timeouts and a fault's `headers`. What it honours is kept or restated in
//! its terms: faults (for certain headers, as a route matching them too), retries on gRPC
//! statuses, the request timeout as the route's maximum stream duration, segment prefixes as
//! regular expressions, method matches (every gRPC call is a POST). What is left out is
//! reported (`capability.rs`).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
    route::Action,
    route_action::{ClusterSpecifier, MaxStreamDuration},
    route_match::PathSpecifier,
    weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier,
    http_filter::ConfigType,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use prost::Message;
use trellis_xds::node::NodeMeta;
use trellis_xds::snapshot::{Resource, Resources};

use super::route::{self, regex, regex_escape};
use super::traffic::{FAULT, fault_filter};
use super::{HTTP_PROXY, ads, any, duration, outbound_cluster, outbound_route_config};
use crate::model::{MeshModel, ServiceModel};

/// How long gRPC waits for a connection to an endpoint.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The services a gRPC client can call: HTTP-family ones (gRPC is HTTP/2).
fn callable(model: &MeshModel) -> impl Iterator<Item = &ServiceModel> {
    model.services.values().filter(|s| s.protocol.is_http())
}

/// An API listener per callable service and name the client may use for it.
pub(super) fn listeners(model: &MeshModel, node: &NodeMeta) -> Vec<Listener> {
    callable(model)
        .flat_map(|svc| {
            let key = svc.key();
            let short = (svc.namespace == node.namespace).then(|| svc.name.clone());
            std::iter::once(key.clone())
                .chain(short)
                .map(move |target| api_listener(target, &key))
        })
        .collect()
}

fn api_listener(target: String, service_key: &str) -> Listener {
    let router = HttpFilter {
        name: "envoy.filters.http.router".to_owned(),
        config_type: Some(ConfigType::TypedConfig(any(&Router::default()))),
        ..HttpFilter::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: target.clone(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: outbound_route_config(service_key),
        })),
        http_filters: vec![fault_filter(), router],
        ..HttpConnectionManager::default()
    };
    Listener {
        name: target,
        api_listener: Some(ApiListener {
            api_listener: Some(any(&hcm)),
        }),
        ..Listener::default()
    }
}

/// An EDS cluster per callable service, balanced round robin (gRPC's own policy).
pub(super) fn clusters(model: &MeshModel) -> Vec<Cluster> {
    callable(model)
        .map(|svc| Cluster {
            name: outbound_cluster(&svc.key()),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: String::new(),
            }),
            lb_policy: LbPolicy::RoundRobin as i32,
            connect_timeout: Some(duration(CONNECT_TIMEOUT)),
            ..Cluster::default()
        })
        .collect()
}

/// The retry conditions gRPC implements: the gRPC statuses it can retry.
const GRPC_RETRY_ON: [&str; 5] = [
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// The most retries gRPC makes of a call (it caps attempts at 5).
pub(crate) const GRPC_MAX_RETRIES: u32 = 4;

/// The sidecars' route configs, as encoded for them, restated for gRPC; the HTTP-proxy config,
/// which no gRPC client asks for, is left out.
pub(super) fn route_configs(shared: &Resources) -> BTreeMap<String, Resource> {
    shared
        .items
        .iter()
        .filter(|(name, _)| *name != HTTP_PROXY)
        .filter_map(|(name, r)| {
            let config = RouteConfiguration::decode(r.any.value.as_slice()).ok()?;
            Some((name.clone(), Resource::encode(&route_config(&config))))
        })
        .collect()
}

/// `config` as a gRPC client can take it: only what gRPC implements (see the module docs).
fn route_config(config: &RouteConfiguration) -> RouteConfiguration {
    RouteConfiguration {
        name: config.name.clone(),
        virtual_hosts: config
            .virtual_hosts
            .iter()
            .map(|vh| VirtualHost {
                name: vh.name.clone(),
                domains: vh.domains.clone(),
                routes: vh.routes.iter().flat_map(routes).collect(),
                ..VirtualHost::default()
            })
            .collect(),
        ..RouteConfiguration::default()
    }
}

/// A route as gRPC takes it: none when it can never match a gRPC call, and two when its fault
/// applies only to calls with certain headers, which gRPC's fault filter does not read: the
/// first matches those headers too and carries the fault, the second is the route without it.
fn routes(r: &Route) -> Vec<Route> {
    let matcher = match r.r#match.as_ref().map(route_match) {
        Some(None) => return Vec::new(),
        m => m.flatten(),
    };
    let base = Route {
        name: r.name.clone(),
        r#match: matcher,
        action: r.action.as_ref().map(|action| match action {
            Action::Route(ra) => Action::Route(route_action(ra)),
            other => other.clone(),
        }),
        ..Route::default()
    };
    let Some(fault) = r.typed_per_filter_config.get(FAULT) else {
        return vec![base];
    };
    match HttpFault::decode(fault.value.as_slice()) {
        Ok(mut config) if !config.headers.is_empty() => {
            let mut faulted = base.clone();
            let headers = std::mem::take(&mut config.headers);
            let m = faulted.r#match.get_or_insert_default();
            m.headers.extend(headers.into_iter().map(header));
            faulted.typed_per_filter_config = [(FAULT.to_owned(), any(&config))].into();
            vec![faulted, base]
        }
        _ => vec![Route {
            typed_per_filter_config: [(FAULT.to_owned(), fault.clone())].into(),
            ..base
        }],
    }
}

/// A route's match in gRPC's terms; `None` when no gRPC call can match it (a method other
/// than POST).
fn route_match(m: &RouteMatch) -> Option<RouteMatch> {
    let mut m = m.clone();
    if let Some(PathSpecifier::PathSeparatedPrefix(prefix)) = &m.path_specifier {
        // gRPC has no segment-wise prefix: the same paths as a regular expression.
        let pattern = format!("{}(/.*)?", regex_escape(prefix));
        m.path_specifier = Some(PathSpecifier::SafeRegex(regex(&pattern)));
    }
    // gRPC routes a call before it has a `:method`; every gRPC call is a POST.
    if let Some(method) = m.headers.iter().find(|h| h.name == ":method") {
        if *method != route::method_matcher("POST") {
            return None;
        }
        m.headers.retain(|h| h.name != ":method");
    }
    m.headers = m.headers.into_iter().map(header).collect();
    Some(m)
}

/// A header matcher with its name in lower case: gRPC compares names exactly, and metadata
/// keys are lower case.
fn header(h: HeaderMatcher) -> HeaderMatcher {
    HeaderMatcher {
        name: h.name.to_ascii_lowercase(),
        ..h
    }
}

fn route_action(ra: &RouteAction) -> RouteAction {
    let cluster_specifier = ra.cluster_specifier.clone().map(|target| match target {
        ClusterSpecifier::WeightedClusters(mut split) => {
            for c in &mut split.clusters {
                *c = ClusterWeight {
                    name: std::mem::take(&mut c.name),
                    weight: c.weight,
                    ..ClusterWeight::default()
                };
            }
            ClusterSpecifier::WeightedClusters(split)
        }
        other => other,
    });
    // gRPC bounds a call by the route's maximum stream duration, not by `timeout`; a zero
    // timeout means none.
    let max_stream_duration = ra
        .timeout
        .filter(|t| t.seconds != 0 || t.nanos != 0)
        .map(|t| MaxStreamDuration {
            max_stream_duration: Some(t),
            ..MaxStreamDuration::default()
        });
    RouteAction {
        cluster_specifier,
        max_stream_duration,
        retry_policy: ra.retry_policy.as_ref().and_then(retry_policy),
        ..RouteAction::default()
    }
}

/// A retry policy as gRPC takes it: its gRPC status conditions, at most [`GRPC_MAX_RETRIES`]
/// retries (gRPC rejects a policy without any), and the back-off; `None` when nothing is left.
fn retry_policy(p: &RetryPolicy) -> Option<RetryPolicy> {
    let retry_on: Vec<&str> = p
        .retry_on
        .split(',')
        .filter(|c| GRPC_RETRY_ON.contains(c))
        .collect();
    let retries = p.num_retries.map_or(1, |n| n.value).min(GRPC_MAX_RETRIES);
    (!retry_on.is_empty() && retries > 0).then(|| RetryPolicy {
        retry_on: retry_on.join(","),
        num_retries: Some(UInt32Value { value: retries }),
        retry_back_off: p.retry_back_off,
        ..RetryPolicy::default()
    })
}

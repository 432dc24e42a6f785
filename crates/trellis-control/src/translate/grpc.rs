//! What a proxyless gRPC client gets instead of a sidecar's listeners: for each HTTP service an
//! API listener named as the client's `xds:///` target (`name.namespace`, and `name` for
//! services in the client's own namespace) whose connection manager (fault filter, router)
//! reads the service's route config over RDS; an EDS cluster per service with only what gRPC
//! implements (round robin over the shared load assignment); the shared endpoints. No secrets:
//! gRPC's TLS needs certificate providers, so proxyless clients are plaintext and reach
//! PERMISSIVE ports only.
//!
//! The route configs are the sidecars' with what gRPC lacks taken out ([`route_config`]): gRPC
//! rejects a whole route config for one per-route config of a filter it does not know (a rate
//! limit), and silently ignores header changes, rewrites, mirrors, hash policies and
//! per-try timeouts. What it honours is kept or restated in its terms: faults, retries on gRPC
//! statuses, and a request timeout as the route's maximum stream duration. What is left out is
//! reported (`capability.rs`).

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    RetryPolicy, Route, RouteAction, RouteConfiguration, VirtualHost,
    route::Action,
    route_action::{ClusterSpecifier, MaxStreamDuration},
    route_match::PathSpecifier,
    weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier,
    http_filter::ConfigType,
};
use trellis_xds::node::NodeMeta;

use super::route::{regex, regex_escape};
use super::traffic::{FAULT, fault_filter};
use super::{ads, any, duration, outbound_cluster, outbound_route_config};
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

/// `config` as a gRPC client can take it: only what gRPC implements (see the module docs).
pub(super) fn route_config(config: &RouteConfiguration) -> RouteConfiguration {
    RouteConfiguration {
        name: config.name.clone(),
        virtual_hosts: config
            .virtual_hosts
            .iter()
            .map(|vh| VirtualHost {
                name: vh.name.clone(),
                domains: vh.domains.clone(),
                routes: vh.routes.iter().map(route).collect(),
                ..VirtualHost::default()
            })
            .collect(),
        ..RouteConfiguration::default()
    }
}

fn route(r: &Route) -> Route {
    let mut matcher = r.r#match.clone();
    if let Some(m) = &mut matcher
        && let Some(PathSpecifier::PathSeparatedPrefix(prefix)) = &m.path_specifier
    {
        // gRPC has no segment-wise prefix: the same paths as a regular expression.
        let pattern = format!("{}(/.*)?", regex_escape(prefix));
        m.path_specifier = Some(PathSpecifier::SafeRegex(regex(&pattern)));
    }
    Route {
        name: r.name.clone(),
        r#match: matcher,
        action: r.action.as_ref().map(|action| match action {
            Action::Route(ra) => Action::Route(route_action(ra)),
            other => other.clone(),
        }),
        typed_per_filter_config: r
            .typed_per_filter_config
            .iter()
            .filter(|(name, _)| *name == FAULT)
            .map(|(name, config)| (name.clone(), config.clone()))
            .collect(),
        ..Route::default()
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
    let retry_policy = ra.retry_policy.as_ref().and_then(|p| {
        let retry_on: Vec<&str> = p
            .retry_on
            .split(',')
            .filter(|c| GRPC_RETRY_ON.contains(c))
            .collect();
        (!retry_on.is_empty()).then(|| RetryPolicy {
            retry_on: retry_on.join(","),
            num_retries: p.num_retries,
            retry_back_off: p.retry_back_off,
            ..RetryPolicy::default()
        })
    });
    RouteAction {
        cluster_specifier,
        max_stream_duration,
        retry_policy,
        ..RouteAction::default()
    }
}

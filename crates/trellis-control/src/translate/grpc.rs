//! What a proxyless gRPC client gets instead of a sidecar's listeners: for each HTTP service an
//! API listener named as the client's `xds:///` target (`name.namespace`, and `name` for
//! services in the client's own namespace) whose connection manager reads the service's shared
//! route config over RDS; an EDS cluster per service with only what gRPC implements (round
//! robin over the shared load assignment); the shared endpoints. No secrets: gRPC's TLS needs
//! certificate providers, so proxyless clients are plaintext and reach PERMISSIVE ports only.

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier,
    http_filter::ConfigType,
};
use trellis_xds::node::NodeMeta;

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
        http_filters: vec![router],
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

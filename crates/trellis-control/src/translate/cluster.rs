//! Clusters and endpoints: an EDS cluster per service (P2C peak-EWMA, expressed as Envoy's
//! LEAST_REQUEST, with the service's retry budget) whose ClusterLoadAssignment lists the
//! service's endpoints, and a static cluster for the local app behind the proxy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster,
    circuit_breakers::{Thresholds, thresholds::RetryBudget as EnvoyRetryBudget},
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, Http2ProtocolOptions, Locality, Metadata, RoutingPriority, SocketAddress,
    address::Address as AddressKind, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options::UpstreamProtocolOptions,
    http_protocol_options::UseDownstreamHttpConfig,
};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::UInt32Value;
use trellis_api::RetryBudget;
use trellis_xds::node::{NodeMeta, parse_locality};

use super::listener::http1_preserving_case;
use super::{ads, any, duration, inbound_cluster, outbound_cluster, tls};
use crate::model::{EndpointModel, MeshModel};

/// How long a proxy waits for a TCP connection to an endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Key Envoy reads upstream HTTP options from.
const HTTP_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// An EDS cluster per service, with mutual TLS to sidecar endpoints when the proxy has a
/// workload certificate (`mtls`) and the mesh a CA, and the service's retry budget: its
/// BackendPolicy's, or the mesh default ([`RetryBudget::default`]), so that retries are always
/// bounded.
pub(super) fn outbound_clusters(model: &MeshModel, mtls: bool) -> Vec<Cluster> {
    model
        .services
        .values()
        .map(|svc| {
            let mut c = base(&outbound_cluster(&svc.key()), svc.protocol.is_http());
            c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
            c.eds_cluster_config = Some(EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: String::new(),
            });
            let budget = model.config.retry_budget(&svc.namespace, &svc.name);
            c.circuit_breakers = Some(retry_budget(budget.copied().unwrap_or_default()));
            // A proxy without a workload certificate cannot originate mutual TLS.
            if model.trust_bundle.is_some() && mtls {
                tls::secure_cluster(&mut c, svc, &MeshModel::identities(svc));
            }
            c
        })
        .collect()
}

/// Circuit breakers that only bound retries: at most `max(min_retry_concurrency,
/// budget_percent% × active requests)` retries to the cluster at once.
fn retry_budget(budget: RetryBudget) -> CircuitBreakers {
    CircuitBreakers {
        thresholds: vec![Thresholds {
            priority: RoutingPriority::Default as i32,
            retry_budget: Some(EnvoyRetryBudget {
                budget_percent: Some(Percent {
                    value: budget.budget_percent,
                }),
                min_retry_concurrency: Some(UInt32Value {
                    value: budget.min_retry_concurrency,
                }),
                ..EnvoyRetryBudget::default()
            }),
            ..Thresholds::default()
        }],
        ..CircuitBreakers::default()
    }
}

/// The static cluster for the application behind the proxy.
pub(super) fn local_cluster(node: &NodeMeta) -> Cluster {
    let app = SocketAddr::from(([127, 0, 0, 1], node.app_port));
    let name = inbound_cluster(node.app_port);
    let mut local = base(&name, true);
    local.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
    local.load_assignment = Some(load_assignment(
        &name,
        &[EndpointModel {
            address: app,
            weight: 1,
            locality: None,
            node_id: None,
            identity: None,
        }],
    ));
    local
}

pub(super) fn load_assignments(model: &MeshModel) -> Vec<ClusterLoadAssignment> {
    model
        .services
        .values()
        .map(|svc| load_assignment(&outbound_cluster(&svc.key()), &svc.endpoints))
        .collect()
}

fn base(name: &str, http: bool) -> Cluster {
    let mut options = HashMap::new();
    if http {
        let http_options = HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                UseDownstreamHttpConfig {
                    http_protocol_options: Some(http1_preserving_case()),
                    http2_protocol_options: Some(Http2ProtocolOptions::default()),
                    ..UseDownstreamHttpConfig::default()
                },
            )),
            ..HttpProtocolOptions::default()
        };
        options.insert(HTTP_OPTIONS_KEY.to_owned(), any(&http_options));
    }
    Cluster {
        name: name.to_owned(),
        lb_policy: LbPolicy::LeastRequest as i32,
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        typed_extension_protocol_options: options,
        ..Cluster::default()
    }
}

fn load_assignment(cluster: &str, endpoints: &[EndpointModel]) -> ClusterLoadAssignment {
    // Group by locality, keeping first-seen order so the output is deterministic.
    let mut groups: Vec<(Option<&str>, Vec<LbEndpoint>)> = Vec::new();
    for e in endpoints {
        let lb = LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(AddressKind::SocketAddress(SocketAddress {
                        address: e.address.ip().to_string(),
                        port_specifier: Some(PortSpecifier::PortValue(u32::from(e.address.port()))),
                        ..SocketAddress::default()
                    })),
                }),
                ..Endpoint::default()
            })),
            load_balancing_weight: Some(UInt32Value { value: e.weight }),
            metadata: e.identity.is_some().then(|| Metadata {
                filter_metadata: [(
                    "envoy.transport_socket_match".to_owned(),
                    tls::tls_match_struct(),
                )]
                .into(),
                ..Metadata::default()
            }),
            ..LbEndpoint::default()
        };
        let locality = e.locality.as_deref();
        match groups.iter_mut().find(|(l, _)| *l == locality) {
            Some((_, list)) => list.push(lb),
            None => groups.push((locality, vec![lb])),
        }
    }
    ClusterLoadAssignment {
        cluster_name: cluster.to_owned(),
        endpoints: groups
            .into_iter()
            .map(|(locality, lb_endpoints)| LocalityLbEndpoints {
                locality: Some(
                    locality
                        .map(parse_locality)
                        .unwrap_or_else(Locality::default),
                ),
                lb_endpoints,
                ..LocalityLbEndpoints::default()
            })
            .collect(),
        ..ClusterLoadAssignment::default()
    }
}

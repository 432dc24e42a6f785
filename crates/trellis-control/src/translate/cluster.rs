//! Clusters: an EDS cluster per service, shaped by the service's BackendPolicy (load
//! balancing, circuit breakers with the retry budget, outlier detection, health check), and a
//! static cluster for the local app behind the proxy.

mod policy;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
};
use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options::UpstreamProtocolOptions,
    http_protocol_options::UseDownstreamHttpConfig,
};
use trellis_api::BackendSettings;
use trellis_xds::node::NodeMeta;
use trellis_xds::snapshot::{Resource, Resources};

use super::endpoint::load_assignment;
use super::listener::http1_preserving_case;
use super::{ads, any, duration, inbound_cluster, outbound_cluster, tls};
use crate::model::{EndpointModel, MeshModel, ServiceModel};

/// How long a proxy waits for a TCP connection to an endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Key Envoy reads upstream HTTP options from.
const HTTP_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Every service's outbound cluster (see [`service_cluster`]), encoded. A cluster whose
/// [`ClusterInputs`] are the same in `previous` (the model and the clusters encoded for it) is
/// not built again: its encoded form is kept.
pub(super) fn outbound_clusters(
    model: &MeshModel,
    mtls: bool,
    previous: Option<(&MeshModel, &Resources)>,
) -> BTreeMap<String, Resource> {
    model
        .services
        .iter()
        .map(|(key, svc)| {
            let name = outbound_cluster(key);
            let inputs = ClusterInputs::of(model, svc, mtls);
            let kept = previous.and_then(|(before, encoded)| {
                let was = ClusterInputs::of(before, before.services.get(key)?, mtls);
                if was == inputs {
                    encoded.items.get(&name).cloned()
                } else {
                    None
                }
            });
            let resource = kept.unwrap_or_else(|| Resource::encode(&inputs.cluster()));
            (name, resource)
        })
        .collect()
}

/// The EDS cluster of `svc`, reading the service's shared load assignment, with mutual TLS to
/// sidecar endpoints when the proxy has a workload certificate (`mtls`) and the mesh a CA, and
/// the settings of the service's BackendPolicies (see [`policy::apply`]).
pub(super) fn service_cluster(model: &MeshModel, svc: &ServiceModel, mtls: bool) -> Cluster {
    ClusterInputs::of(model, svc, mtls).cluster()
}

/// Everything a service's outbound cluster is built from: equal inputs build equal clusters,
/// which is what lets [`outbound_clusters`] keep one.
#[derive(PartialEq)]
struct ClusterInputs<'a> {
    /// The service's `name.namespace`.
    key: String,
    http: bool,
    settings: BackendSettings<'a>,
    /// The identities the endpoints must present, when the cluster originates mutual TLS.
    identities: Option<Vec<String>>,
}

impl<'a> ClusterInputs<'a> {
    fn of(model: &'a MeshModel, svc: &ServiceModel, mtls: bool) -> ClusterInputs<'a> {
        let key = svc.key();
        // A proxy without a workload certificate cannot originate mutual TLS, and static
        // endpoints (no sidecar) are called in plaintext.
        let identities = (model.trust_bundle.is_some()
            && mtls
            && svc.endpoints.iter().any(|e| e.node_id.is_some()))
        .then(|| MeshModel::identities(svc))
        .filter(|ids| !ids.is_empty());
        ClusterInputs {
            key,
            http: svc.protocol.is_http(),
            settings: model.config.backend_settings(&svc.namespace, &svc.name),
            identities,
        }
    }

    fn cluster(&self) -> Cluster {
        let mut c = base(&outbound_cluster(&self.key), self.http);
        c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
        c.eds_cluster_config = Some(EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        });
        policy::apply(&mut c, &self.settings);
        if let Some(identities) = &self.identities {
            tls::secure_cluster(&mut c, &self.key, identities);
        }
        c
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
            h2_upgrade: false,
        }],
        None,
    ));
    local
}

/// `cluster` reading the load assignment `name` instead of its shared one.
pub(super) fn with_assignment(cluster: &Cluster, name: String) -> Cluster {
    let mut c = cluster.clone();
    if let Some(eds) = &mut c.eds_cluster_config {
        eds.service_name = name;
    }
    c
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

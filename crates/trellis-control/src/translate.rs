//! The translator: a pure function from the mesh model and one proxy's metadata to that
//! proxy's xDS snapshot, expressed the way Envoy would need it (so Envoy can consume it too).
//!
//! Naming: listeners `inbound`, `outbound|<service>|<port>`, `http_proxy`; clusters
//! `inbound|<app port>` and `outbound|<name.namespace>`; route configs `outbound|<name.namespace>`
//! and `http_proxy`; load assignments `outbound|<name.namespace>`, and for services with
//! locality failover `outbound|<name.namespace>|<region>/<zone>` per client zone. Every cluster
//! and route config of the mesh is offered; a proxy asks by name for the route configs and
//! endpoints it needs. Proxyless gRPC clients get API listeners named by their `xds:///`
//! targets instead of port listeners (`translate/grpc.rs`).

mod authz;
mod cluster;
mod endpoint;
mod grpc;
mod listener;
mod route;
mod tls;
mod traffic;

pub(crate) use grpc::GRPC_MAX_RETRIES;
pub use tls::{BUNDLE_SECRET, TLS_MATCH_KEY, WORKLOAD_SECRET};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::RandomState;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, config_source::ConfigSourceSpecifier,
};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use prost::{Message, Name};
use trellis_xds::node::{ClientKind, NodeMeta};
use trellis_xds::snapshot::{Resource, Resources};
use trellis_xds::{Snapshot, TypeUrl};

use crate::model::{MeshModel, ServiceModel};
use endpoint::ClientZone;

/// Name of the HTTP-proxy-mode listener and its route config.
pub const HTTP_PROXY: &str = "http_proxy";

/// How long listeners of services that do not declare their protocol wait for the first bytes
/// to detect HTTP before falling back to TCP (so server-speaks-first protocols are not stalled
/// for long).
pub const DETECTION_TIMEOUT: Duration = Duration::from_millis(200);

/// How long listeners for a declared HTTP protocol wait for a client's first bytes before
/// closing the connection, as an HTTP server closes an idle one: long enough for connections a
/// client pool opens ahead of use, bounded so silent peers cannot hold connections forever.
pub const DECLARED_DETECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// The parts of the snapshots that depend on the model only: built once per change and
/// shared by every proxy's snapshot instead of being encoded per proxy.
#[derive(Debug)]
pub struct SharedResources {
    /// The model these were built from: the next model's build keeps the encoded route
    /// configs, clusters and load assignments whose inputs did not change.
    model: Arc<MeshModel>,
    routes: Arc<Resources>,
    /// The route configs in the form proxyless gRPC clients take, built for the first one.
    grpc_routes: OnceLock<Arc<Resources>>,
    /// Those of the previous model, which `grpc_routes` lists its changes against.
    previous_grpc_routes: Option<Arc<Resources>>,
    /// Every service's load assignment, and the per-zone ones of services with locality
    /// failover.
    endpoints: Arc<Resources>,
    secrets: Arc<Resources>,
    clusters: ClusterSets,
    /// The clusters of the proxies of each client zone, where those of services with locality
    /// failover read that zone's load assignments. Empty when no service has failover.
    zonal_clusters: BTreeMap<ClientZone, ClusterSets>,
}

/// Outbound clusters for proxies with a workload certificate, then without.
type ClusterSets = [Arc<Resources>; 2];

impl SharedResources {
    /// Encodes the model-wide resources. With the resources built for the previous model, the
    /// named types (routes, endpoints, secrets) also list what changed, so streams that hold
    /// the previous ones are updated by looking at those only, and the clusters and load
    /// assignments of services whose inputs did not change are kept as encoded.
    pub fn build(model: &Arc<MeshModel>, previous: Option<&SharedResources>) -> SharedResources {
        let named = |items, previous: Option<&Arc<Resources>>| {
            Arc::new(match previous {
                Some(previous) => Resources::following(items, previous),
                None => Resources::new(items),
            })
        };
        // Kept whole when only endpoints changed: same bytes, same version.
        let kept_routes = previous
            .filter(|p| route::same_routes(&p.model, model))
            .map(|p| p.routes.clone());
        let routes = match kept_routes {
            Some(routes) => routes,
            None => {
                let items = route::route_configs(model)
                    .iter()
                    .map(|r| (r.name.clone(), Resource::encode(r)))
                    .collect();
                named(items, previous.map(|p| &p.routes))
            }
        };
        let failover = endpoint::failover_services(model);
        let zones = if failover.is_empty() {
            BTreeSet::new()
        } else {
            endpoint::client_zones(model)
        };
        let endpoints = endpoint::load_assignments(
            model,
            &failover,
            &zones,
            previous.map(|p| (&*p.model, &*p.endpoints)),
        );
        let secrets = model
            .trust_bundle
            .iter()
            .map(|bundle| {
                let secret = Resource::encode(&tls::bundle_secret(bundle));
                (BUNDLE_SECRET.to_owned(), secret)
            })
            .collect();
        let (clusters, zonal_clusters) = cluster_sets(model, &failover, &zones, previous);
        SharedResources {
            model: model.clone(),
            routes,
            grpc_routes: OnceLock::new(),
            previous_grpc_routes: previous.and_then(|p| p.grpc_routes.get().cloned()),
            endpoints: named(endpoints, previous.map(|p| &p.endpoints)),
            secrets: named(secrets, previous.map(|p| &p.secrets)),
            clusters,
            zonal_clusters,
        }
    }
}

/// The shared cluster sets, and for each client zone in `zones` a copy whose `failover`
/// services' clusters read the zone's load assignments (copied whole, so that a proxy's
/// clusters stay one shared layer).
fn cluster_sets(
    model: &MeshModel,
    failover: &[&ServiceModel],
    zones: &BTreeSet<ClientZone>,
    previous: Option<&SharedResources>,
) -> (ClusterSets, BTreeMap<ClientZone, ClusterSets>) {
    let mtls = [true, false];
    let shared = mtls.map(|mtls| {
        let before = previous.map(|p| (&*p.model, &*p.clusters[usize::from(!mtls)]));
        Arc::new(Resources::new(cluster::outbound_clusters(
            model, mtls, before,
        )))
    });
    let zonal = zones
        .iter()
        .map(|zone| {
            let sets = mtls.map(|mtls| {
                let mut items = shared[usize::from(!mtls)].items.clone();
                for svc in failover {
                    let c = cluster::service_cluster(model, svc, mtls);
                    let c = cluster::with_assignment(&c, zone.assignment(&svc.key()));
                    items.insert(c.name.clone(), Resource::encode(&c));
                }
                Arc::new(Resources::new(items))
            });
            (zone.clone(), sets)
        })
        .collect();
    (shared, zonal)
}

/// Builds the snapshot for the proxy that presented `node`.
pub fn translate(model: &MeshModel, node: &NodeMeta) -> Snapshot {
    let shared = SharedResources::build(&Arc::new(model.clone()), None);
    translate_shared(&shared, model, node)
}

/// Builds the snapshot for `node` around resources already built for `model`.
pub fn translate_shared(shared: &SharedResources, model: &MeshModel, node: &NodeMeta) -> Snapshot {
    if node.client == ClientKind::Grpc {
        return grpc_snapshot(shared, model, node);
    }
    let mut snapshot = Snapshot::builder();
    for l in listener::listeners(model, node) {
        snapshot.insert(TypeUrl::Listener, &l.name.clone(), &l);
    }
    snapshot.share(TypeUrl::RouteConfiguration, shared.routes.clone());
    // A proxy whose zone the model does not know (it is not connected) gets the clusters of
    // proxies without a zone: every endpoint at one priority.
    let sets = ClientZone::of(node.locality.as_deref())
        .and_then(|zone| shared.zonal_clusters.get(&zone))
        .unwrap_or(&shared.clusters);
    snapshot.share(TypeUrl::Cluster, sets[usize::from(!node.mtls)].clone());
    let local = cluster::local_cluster(node);
    snapshot.insert(TypeUrl::Cluster, &local.name.clone(), &local);
    snapshot.share(TypeUrl::ClusterLoadAssignment, shared.endpoints.clone());
    snapshot.share(TypeUrl::Secret, shared.secrets.clone());
    snapshot.seal()
}

/// A proxyless gRPC client's snapshot (see [`grpc`]): its API listeners and clusters, the route
/// configs in gRPC's form and the shared endpoints.
fn grpc_snapshot(shared: &SharedResources, model: &MeshModel, node: &NodeMeta) -> Snapshot {
    let mut snapshot = Snapshot::builder();
    for l in grpc::listeners(model, node) {
        snapshot.insert(TypeUrl::Listener, &l.name.clone(), &l);
    }
    for c in grpc::clusters(model) {
        snapshot.insert(TypeUrl::Cluster, &c.name.clone(), &c);
    }
    let routes = shared.grpc_routes.get_or_init(|| {
        let items = grpc::route_configs(&shared.routes);
        Arc::new(match &shared.previous_grpc_routes {
            Some(previous) => Resources::following(items, previous),
            None => Resources::new(items),
        })
    });
    snapshot.share(TypeUrl::RouteConfiguration, routes.clone());
    snapshot.share(TypeUrl::ClusterLoadAssignment, shared.endpoints.clone());
    snapshot.seal()
}

/// Cluster name for traffic to a service (`name.namespace`).
pub fn outbound_cluster(service_key: &str) -> String {
    format!("outbound|{service_key}")
}

/// The name of a service's (`name.namespace`) load assignment for clients in `region/zone`,
/// with priorities for locality failover.
pub fn outbound_zone_assignment(service_key: &str, region: &str, zone: &str) -> String {
    format!("outbound|{service_key}|{region}/{zone}")
}

/// Route config name for traffic to a service (`name.namespace`).
pub fn outbound_route_config(service_key: &str) -> String {
    format!("outbound|{service_key}")
}

/// Cluster name for the local application behind a proxy.
pub fn inbound_cluster(app_port: u16) -> String {
    format!("inbound|{app_port}")
}

/// One hasher state for every protobuf map the translator fills (`Rbac.policies`, a route's
/// `typed_per_filter_config`): a map encodes in its iteration order, so with one shared state
/// the same entries always encode the same bytes and versions do not change from one
/// translation to the next.
static MAP_STATE: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// An empty protobuf map that encodes its entries in a stable order (see [`MAP_STATE`]).
fn stable_map<V>() -> HashMap<String, V> {
    HashMap::with_hasher(MAP_STATE.clone())
}

fn any<M: Message + Name>(msg: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: msg.encode_to_vec(),
    }
}

fn duration(d: Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or_default(),
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..ConfigSource::default()
    }
}

#[cfg(test)]
mod tests;

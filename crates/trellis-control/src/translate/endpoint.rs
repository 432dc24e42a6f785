//! Endpoints: a ClusterLoadAssignment per service with every endpoint at priority 0, grouped by
//! locality, and for services with locality failover one more per client zone among the
//! connected proxies, whose priorities say how far each endpoint is from that zone.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::{
    Address, Locality, Metadata, SocketAddress, address::Address as AddressKind,
    socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use trellis_xds::node::parse_locality;
use trellis_xds::snapshot::{Resource, Resources};

use super::{outbound_cluster, outbound_zone_assignment, stable_map, tls};
use crate::model::{EndpointModel, MeshModel, ServiceModel};

/// Endpoint metadata namespace of Trellis's own endpoint settings.
const ENDPOINT_METADATA: &str = "trellis.dev";
/// Key (under [`ENDPOINT_METADATA`]) marking an endpoint whose proxy takes HTTP/1.1 carried
/// over HTTP/2 (see [`EndpointModel::h2_upgrade`]). Envoy ignores it.
const H2_UPGRADE_KEY: &str = "h2Upgrade";

/// Priorities relative to a client: its own zone, the rest of its region, everywhere else.
const SAME_ZONE: u32 = 0;
const SAME_REGION: u32 = 1;
const ELSEWHERE: u32 = 2;

/// The region and zone of a client proxy: what its endpoint priorities depend on (sub-zones
/// are not told apart).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct ClientZone {
    region: String,
    zone: String,
}

impl ClientZone {
    /// The zone of a proxy reporting `locality`; `None` without one (neither region nor zone),
    /// for a client that prefers no endpoint.
    pub(super) fn of(locality: Option<&str>) -> Option<ClientZone> {
        let l = parse_locality(locality?);
        (!l.region.is_empty() || !l.zone.is_empty()).then_some(ClientZone {
            region: l.region,
            zone: l.zone,
        })
    }

    /// The priority of an endpoint at `locality` for this client.
    fn priority(&self, locality: &Locality) -> u32 {
        match (locality.region == self.region, locality.zone == self.zone) {
            (true, true) => SAME_ZONE,
            (true, false) => SAME_REGION,
            (false, _) => ELSEWHERE,
        }
    }

    /// The name of a service's load assignment for this client zone.
    pub(super) fn assignment(&self, service_key: &str) -> String {
        outbound_zone_assignment(service_key, &self.region, &self.zone)
    }
}

/// The services whose BackendPolicy turns locality failover on.
pub(super) fn failover_services(model: &MeshModel) -> Vec<&ServiceModel> {
    let config = &model.config;
    model
        .services
        .values()
        .filter(|s| {
            config
                .backend_settings(&s.namespace, &s.name)
                .locality_failover_enabled()
        })
        .collect()
}

/// The zones of the connected proxies that have one.
pub(super) fn client_zones(model: &MeshModel) -> BTreeSet<ClientZone> {
    let localities = model.client_localities.iter();
    localities.filter_map(|l| ClientZone::of(Some(l))).collect()
}

/// Every service's load assignment, and one per zone in `zones` for each `failover` service,
/// encoded. A service whose endpoints are the same in `previous` (the model and the
/// assignments encoded for it) keeps its encoded shared assignment.
pub(super) fn load_assignments(
    model: &MeshModel,
    failover: &[&ServiceModel],
    zones: &BTreeSet<ClientZone>,
    previous: Option<(&MeshModel, &Resources)>,
) -> BTreeMap<String, Resource> {
    let mut items = BTreeMap::new();
    for (key, svc) in &model.services {
        let name = outbound_cluster(key);
        // The shared assignment is built from the endpoints alone: equal ones, equal bytes.
        let kept = previous.and_then(|(before, encoded)| {
            if before.services.get(key)?.endpoints == svc.endpoints {
                encoded.items.get(&name).cloned()
            } else {
                None
            }
        });
        let resource =
            kept.unwrap_or_else(|| Resource::encode(&load_assignment(&name, &svc.endpoints, None)));
        items.insert(name, resource);
    }
    for svc in failover {
        for zone in zones {
            let name = zone.assignment(&svc.key());
            let cla = load_assignment(&name, &svc.endpoints, Some(zone));
            items.insert(name, Resource::encode(&cla));
        }
    }
    items
}

/// The assignment `name` of `endpoints`, grouped by locality: every group at priority 0, or
/// for a `client` zone at its distance from that zone (groups in priority order).
pub(super) fn load_assignment(
    name: &str,
    endpoints: &[EndpointModel],
    client: Option<&ClientZone>,
) -> ClusterLoadAssignment {
    // Group by locality, keeping first-seen order so the output is deterministic.
    let mut groups: Vec<(Option<&str>, Vec<LbEndpoint>)> = Vec::new();
    for e in endpoints {
        let lb = lb_endpoint(e);
        let locality = e.locality.as_deref();
        match groups.iter_mut().find(|(l, _)| *l == locality) {
            Some((_, list)) => list.push(lb),
            None => groups.push((locality, vec![lb])),
        }
    }
    let mut endpoints: Vec<LocalityLbEndpoints> = groups
        .into_iter()
        .map(|(locality, lb_endpoints)| {
            let locality = locality.map(parse_locality).unwrap_or_default();
            // Proxyless gRPC drops localities without a weight; Envoy and our proxy weigh
            // endpoints only (no locality-weighted balancing), so the sum changes nothing there.
            let weight = lb_endpoints
                .iter()
                .map(|e| e.load_balancing_weight.as_ref().map_or(1, |w| w.value))
                .fold(0u32, u32::saturating_add);
            LocalityLbEndpoints {
                priority: client.map_or(SAME_ZONE, |c| c.priority(&locality)),
                locality: Some(locality),
                lb_endpoints,
                load_balancing_weight: Some(UInt32Value { value: weight }),
                ..LocalityLbEndpoints::default()
            }
        })
        .collect();
    endpoints.sort_by_key(|group| group.priority);
    ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        endpoints,
        ..ClusterLoadAssignment::default()
    }
}

fn lb_endpoint(e: &EndpointModel) -> LbEndpoint {
    LbEndpoint {
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
        metadata: e.identity.is_some().then(|| {
            // Two entries: encoded in a stable order, so that versions follow content.
            let mut filter_metadata = stable_map();
            filter_metadata.insert(
                "envoy.transport_socket_match".to_owned(),
                tls::tls_match_struct(),
            );
            if e.h2_upgrade {
                filter_metadata.insert(
                    ENDPOINT_METADATA.to_owned(),
                    tls::true_struct(H2_UPGRADE_KEY),
                );
            }
            Metadata {
                filter_metadata,
                ..Metadata::default()
            }
        }),
        ..LbEndpoint::default()
    }
}

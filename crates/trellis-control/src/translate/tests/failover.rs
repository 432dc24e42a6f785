//! Locality failover: per-client-zone load assignments with priorities by distance, the
//! clusters that read them, and the change lists that carry them.

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    address::Address as AddressKind, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, lb_endpoint::HostIdentifier,
};
use trellis_xds::node::NodeMeta;
use trellis_xds::{Snapshot, TypeUrl};

use super::{decode, node};
use crate::model::MeshModel;
use crate::translate::{SharedResources, translate_shared};

const CONFIG: &str = "\
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: geo}
spec:
  endpoints:
  - {address: \"127.0.0.1:7001\", locality: r1/z1}
  - {address: \"127.0.0.1:7002\", locality: r1/z1/rack2}
  - {address: \"127.0.0.1:7003\", locality: r1/z2}
  - {address: \"127.0.0.1:7004\", locality: r2/z1}
  - {address: \"127.0.0.1:7005\"}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: near}
spec:
  endpoints:
  - {address: \"127.0.0.1:7101\", locality: r1/z1}
  - {address: \"127.0.0.1:7102\", locality: r2/z1}
---
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {name: geo}
spec:
  targetRefs: [{kind: Service, name: geo}]
  localityFailover: {enabled: true}
---
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {name: near}
spec:
  targetRefs: [{kind: Service, name: near}]
  localityFailover: {enabled: false}
";

/// A `web` client proxy in `locality`.
fn client(inbound: u16, locality: Option<&str>) -> NodeMeta {
    NodeMeta {
        locality: locality.map(str::to_owned),
        ..node("web", "v1", inbound)
    }
}

fn model(clients: &[NodeMeta]) -> MeshModel {
    model_of(CONFIG, clients)
}

fn model_of(yaml: &str, clients: &[NodeMeta]) -> MeshModel {
    let config = trellis_api::load_str("t.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<String> = (0..clients.len()).map(|i| format!("n{i}")).collect();
    let workloads = ids.iter().map(String::as_str).zip(clients.iter());
    MeshModel::build(Arc::new(config), workloads)
}

/// The load assignment a proxy's cluster for `service` reads: its name and each endpoint's
/// port and priority, in order.
fn assignment(snapshot: &Snapshot, service: &str) -> (String, Vec<(u32, u32)>) {
    let cluster: Cluster = decode(
        snapshot,
        TypeUrl::Cluster,
        &format!("outbound|{service}.default"),
    );
    let eds = cluster.eds_cluster_config.expect("an EDS cluster");
    let name = if eds.service_name.is_empty() {
        cluster.name
    } else {
        eds.service_name
    };
    (name.clone(), priorities(snapshot, &name))
}

fn priorities(snapshot: &Snapshot, name: &str) -> Vec<(u32, u32)> {
    let cla: ClusterLoadAssignment = decode(snapshot, TypeUrl::ClusterLoadAssignment, name);
    assert_eq!(cla.cluster_name, name);
    let port = |e: &envoy_types::pb::envoy::config::endpoint::v3::LbEndpoint| {
        let Some(HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
            panic!("endpoint without address")
        };
        let Some(AddressKind::SocketAddress(sa)) =
            ep.address.as_ref().and_then(|a| a.address.as_ref())
        else {
            panic!("not a socket address")
        };
        let Some(PortSpecifier::PortValue(port)) = sa.port_specifier else {
            panic!("no port")
        };
        port
    };
    cla.endpoints
        .iter()
        .flat_map(|group| group.lb_endpoints.iter().map(|e| (port(e), group.priority)))
        .collect()
}

#[test]
fn failover_services_give_each_client_zone_priorities_by_distance() {
    let zone_a = client(41001, Some("r1/z1/rack1"));
    let zone_b = client(41002, Some("r2/z1"));
    let nowhere = client(41003, None);
    let model = Arc::new(model(&[zone_a.clone(), zone_b.clone(), nowhere.clone()]));
    let shared = SharedResources::build(&model, None);
    let a = translate_shared(&shared, &model, &zone_a);
    let b = translate_shared(&shared, &model, &zone_b);
    let c = translate_shared(&shared, &model, &nowhere);

    assert_eq!(
        assignment(&a, "geo"),
        (
            "outbound|geo.default|r1/z1".to_owned(),
            vec![(7001, 0), (7002, 0), (7003, 1), (7004, 2), (7005, 2)]
        ),
        "own zone (any sub-zone), own region, the rest"
    );
    assert_eq!(
        assignment(&b, "geo"),
        (
            "outbound|geo.default|r2/z1".to_owned(),
            vec![(7004, 0), (7001, 2), (7002, 2), (7003, 2), (7005, 2)]
        )
    );
    let everything = vec![(7001, 0), (7002, 0), (7003, 0), (7004, 0), (7005, 0)];
    assert_eq!(
        assignment(&c, "geo"),
        ("outbound|geo.default".to_owned(), everything.clone()),
        "a client without a locality: one priority"
    );

    // Without failover, every client reads the shared assignment, and no variant is made.
    let near = vec![(7101, 0), (7102, 0)];
    for snapshot in [&a, &b, &c] {
        assert_eq!(
            assignment(snapshot, "near"),
            ("outbound|near.default".to_owned(), near.clone())
        );
        assert_eq!(
            priorities(snapshot, "outbound|geo.default"),
            everything,
            "the shared assignment is still offered"
        );
    }
    let variants: Vec<&str> = a
        .iter(TypeUrl::ClusterLoadAssignment)
        .map(|(name, _)| name)
        .filter(|name| name.matches('|').count() == 2)
        .collect();
    assert_eq!(
        variants,
        ["outbound|geo.default|r1/z1", "outbound|geo.default|r2/z1"]
    );

    // Only the failover cluster differs between zones.
    for name in ["outbound|near.default", "outbound|web.default"] {
        assert_eq!(a.get(TypeUrl::Cluster, name), c.get(TypeUrl::Cluster, name));
    }
    let mut geo: Cluster = decode(&a, TypeUrl::Cluster, "outbound|geo.default");
    if let Some(eds) = &mut geo.eds_cluster_config {
        eds.service_name.clear();
    }
    assert_eq!(geo, decode(&c, TypeUrl::Cluster, "outbound|geo.default"));

    // A proxy the model does not know yet reads the shared assignment, which always exists.
    let stranger = client(41004, Some("r9/z9"));
    let unknown = translate_shared(&shared, &model, &stranger);
    assert_eq!(
        assignment(&unknown, "geo"),
        ("outbound|geo.default".to_owned(), everything)
    );
}

#[test]
fn a_new_client_zone_adds_its_variants_to_the_endpoint_changes() {
    let zone_a = client(41001, Some("r1/z1"));
    let zone_b = client(41002, Some("r2/z1"));
    let one_zone = Arc::new(model(std::slice::from_ref(&zone_a)));
    let before = SharedResources::build(&one_zone, None);
    let two_zones = Arc::new(model(&[zone_a.clone(), zone_b]));
    let after = SharedResources::build(&two_zones, Some(&before));

    let old = translate_shared(&before, &one_zone, &zone_a);
    let new = translate_shared(&after, &two_zones, &zone_a);
    let changes = new
        .changes(TypeUrl::ClusterLoadAssignment)
        .expect("endpoint changes are listed");
    assert_eq!(changes.since, old.version(TypeUrl::ClusterLoadAssignment));
    assert_eq!(
        changes.names.iter().collect::<Vec<_>>(),
        ["outbound|geo.default|r2/z1", "outbound|web.default"],
        "the new zone's variant and the service the new proxy joined"
    );
    assert_eq!(
        old.version(TypeUrl::Cluster),
        new.version(TypeUrl::Cluster),
        "a zone appearing elsewhere changes no cluster of this one"
    );

    // The zone's last proxy leaving removes its variants.
    let again = SharedResources::build(&one_zone, Some(&after));
    let gone = translate_shared(&again, &one_zone, &zone_a);
    let changes = gone
        .changes(TypeUrl::ClusterLoadAssignment)
        .expect("listed");
    assert_eq!(
        changes.names.iter().collect::<Vec<_>>(),
        ["outbound|geo.default|r2/z1", "outbound|web.default"]
    );
    assert!(
        gone.get(TypeUrl::ClusterLoadAssignment, "outbound|geo.default|r2/z1")
            .is_none()
    );
}

#[test]
fn failover_resources_built_on_the_previous_ones_equal_those_built_afresh() {
    let zone_a = client(41001, Some("r1/z1/rack1"));
    let zone_b = client(41002, Some("r2/z1"));
    let moved = CONFIG.replace("7003\", locality: r1/z2", "7003\", locality: r2/z1");
    let off = moved.replace(
        "localityFailover: {enabled: true}",
        "localityFailover: {enabled: false}",
    );
    let both = [zone_a.clone(), zone_b];
    // A client zone joins, an endpoint moves to it, failover is turned off, then on again.
    // (Content only: per-zone assignments are encoded again on every change.)
    let steps = [
        model_of(CONFIG, &[zone_a]),
        model_of(CONFIG, &both),
        model_of(&moved, &both),
        model_of(&off, &both),
        model_of(&moved, &both),
    ];
    let mut previous: Option<SharedResources> = None;
    for (i, model) in steps.into_iter().enumerate() {
        let model = Arc::new(model);
        let built = SharedResources::build(&model, previous.as_ref());
        let fresh = SharedResources::build(&model, None);
        assert_eq!(
            built.endpoints.items, fresh.endpoints.items,
            "step {i}: endpoints"
        );
        for (set, (built, fresh)) in built.clusters.iter().zip(&fresh.clusters).enumerate() {
            assert_eq!(built.items, fresh.items, "step {i}: clusters, set {set}");
        }
        let zonal = |r: &SharedResources| {
            r.zonal_clusters
                .iter()
                .map(|(zone, sets)| (zone.clone(), sets.each_ref().map(|s| s.items.clone())))
                .collect::<Vec<_>>()
        };
        assert_eq!(zonal(&built), zonal(&fresh), "step {i}: zonal clusters");
        if let Some(p) = &previous {
            assert_ne!(
                (&p.endpoints.items, zonal(p)),
                (&built.endpoints.items, zonal(&built)),
                "step {i} changes what failover builds"
            );
        }
        previous = Some(built);
    }
}

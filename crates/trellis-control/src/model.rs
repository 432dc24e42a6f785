//! The mesh model: the accepted config joined with the registry into services and their
//! endpoints. It is rebuilt whole on every change and shared by every proxy's translation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;
use trellis_api::{ConfigSet, Protocol};
use trellis_xds::node::{ClientKind, NodeMeta};

use crate::registry::{workload_identity, workload_labels};

/// Services by `name.namespace`, with the config they came from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MeshModel {
    /// Every service: declared in config or implied by a registered workload. Not to be
    /// changed after [`MeshModel::build`], which indexes it.
    pub services: BTreeMap<String, ServiceModel>,
    /// The accepted config.
    #[serde(skip)]
    pub config: Arc<ConfigSet>,
    /// The CA's trust bundle (PEM) when mTLS is on.
    #[serde(skip)]
    pub trust_bundle: Option<Arc<str>>,
    /// The localities (`region/zone/subzone`) the connected proxies report: the clients that
    /// locality failover orders endpoints for.
    #[serde(skip)]
    pub client_localities: BTreeSet<String>,
    /// The keys of the services with a sidecar endpoint at each address, in key order: the
    /// services a workload's proxy serves, looked up once per proxy per change.
    #[serde(skip)]
    pub(crate) sidecars: BTreeMap<SocketAddr, Vec<String>>,
}

/// One logical service.
///
/// Declared by a `Service` resource, or implied by a registered workload or a route's parentRef.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceModel {
    /// Service name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Protocol of its (first) port: `TCP` is opaque, the rest are HTTP flavours.
    pub protocol: Protocol,
    /// Declared by a `Service` resource (false when implied).
    pub declared: bool,
    /// Whether `protocol` is declared (the Service resource writes its port's protocol) rather
    /// than assumed.
    /// Listeners for a declared HTTP protocol wait for the client's first bytes however long
    /// it stays silent; undeclared ones fall back to TCP after a bounded wait.
    pub protocol_declared: bool,
    /// Endpoints: proxies of selected workloads, then static endpoints.
    pub endpoints: Vec<EndpointModel>,
    /// Names of routes (`kind/namespace/name`) attached to it as their parent.
    pub routes: Vec<String>,
}

/// One address traffic for a service can go to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointModel {
    /// Address: a sidecar's inbound listener or a static endpoint.
    pub address: SocketAddr,
    /// Relative load-balancing weight.
    pub weight: u32,
    /// `region/zone/subzone`, if known.
    pub locality: Option<String>,
    /// The node id of the workload's proxy; `None` for static endpoints.
    pub node_id: Option<String>,
    /// The SPIFFE ID the endpoint's sidecar proves over mutual TLS; `None` for static
    /// endpoints and sidecars without a workload certificate (plaintext).
    pub identity: Option<String>,
    /// Peers may carry HTTP/1.1 to it over HTTP/2: its proxy says it takes that
    /// ([`NodeMeta::h2_upgrade`]) and speaks mutual TLS, whose ALPN negotiates HTTP/2.
    pub h2_upgrade: bool,
}

impl ServiceModel {
    /// `name.namespace`.
    pub fn key(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

impl MeshModel {
    /// Joins config and workloads (`(node id, metadata)` of every connected proxy).
    pub fn build<'a>(
        config: Arc<ConfigSet>,
        workloads: impl Iterator<Item = (&'a str, &'a NodeMeta)> + Clone,
    ) -> MeshModel {
        let client_localities = workloads
            .clone()
            .filter_map(|(_, meta)| meta.locality.clone())
            .collect();
        // Proxyless gRPC clients only call: they are nobody's endpoint.
        let workloads = workloads.filter(|(_, meta)| meta.client != ClientKind::Grpc);
        // Each workload's labels once, not once per Service.
        let labelled: Vec<(&str, &NodeMeta, BTreeMap<String, String>)> = workloads
            .clone()
            .map(|(id, meta)| (id, meta, workload_labels(meta)))
            .collect();
        let mut services = BTreeMap::new();
        for svc in &config.services {
            let ns = svc.metadata.namespace.as_str();
            let mut endpoints: Vec<EndpointModel> = labelled
                .iter()
                .filter(|(_, meta, labels)| {
                    meta.namespace == ns && svc.selects(&meta.service, labels)
                })
                .filter_map(|(id, meta, _)| workload_endpoint(id, meta))
                .collect();
            endpoints.extend(svc.spec.endpoints.iter().map(|e| EndpointModel {
                address: e.address,
                weight: e.weight,
                locality: e.locality.as_ref().map(ToString::to_string),
                node_id: None,
                identity: None,
                h2_upgrade: false,
            }));
            let model = ServiceModel {
                name: svc.metadata.name.clone(),
                namespace: ns.to_owned(),
                protocol: svc
                    .spec
                    .ports
                    .first()
                    .map(trellis_api::ServicePort::protocol)
                    .unwrap_or_default(),
                declared: true,
                protocol_declared: svc.spec.ports.first().is_some_and(|p| p.protocol.is_some()),
                endpoints,
                routes: Vec::new(),
            };
            services.insert(model.key(), model);
        }
        for (id, meta) in workloads.clone() {
            let key = format!("{}.{}", meta.service, meta.namespace);
            if services.get(&key).is_some_and(|s| s.declared) {
                continue;
            }
            let implied = services.entry(key).or_insert_with(|| ServiceModel {
                name: meta.service.clone(),
                namespace: meta.namespace.clone(),
                protocol: Protocol::Http,
                declared: false,
                protocol_declared: false,
                endpoints: Vec::new(),
                routes: Vec::new(),
            });
            implied.endpoints.extend(workload_endpoint(id, meta));
        }
        // A workload whose own Service is opaque TCP has a TCP inbound listener: HTTP/2 carrying
        // HTTP/1.1 would reach its app as it is.
        let opaque: BTreeSet<&str> = workloads
            .filter(|(_, meta)| {
                let own = format!("{}.{}", meta.service, meta.namespace);
                services.get(&own).is_some_and(|s| !s.protocol.is_http())
            })
            .map(|(id, _)| id)
            .collect();
        for svc in services.values_mut() {
            svc.endpoints.sort_by_key(|e| e.address);
            for e in &mut svc.endpoints {
                if e.node_id.as_deref().is_some_and(|id| opaque.contains(id)) {
                    e.h2_upgrade = false;
                }
            }
        }
        attach_routes(&config, &mut services);
        let mut sidecars: BTreeMap<SocketAddr, Vec<String>> = BTreeMap::new();
        for (key, svc) in &services {
            let addresses: BTreeSet<SocketAddr> = svc
                .endpoints
                .iter()
                .filter(|e| e.node_id.is_some())
                .map(|e| e.address)
                .collect();
            for address in addresses {
                sidecars.entry(address).or_default().push(key.clone());
            }
        }
        MeshModel {
            services,
            config,
            trust_bundle: None,
            client_localities,
            sidecars,
        }
    }

    /// The services a workload belongs to: those with a sidecar endpoint at its address, in
    /// key order.
    pub(crate) fn workload_services(&self, meta: &NodeMeta) -> Vec<&ServiceModel> {
        workload_address(meta)
            .and_then(|address| self.sidecars.get(&address))
            .into_iter()
            .flatten()
            .filter_map(|key| self.services.get(key))
            .collect()
    }

    /// The distinct identities of a service's sidecar endpoints, sorted.
    pub fn identities(svc: &ServiceModel) -> Vec<String> {
        let mut ids: Vec<String> = svc
            .endpoints
            .iter()
            .filter_map(|e| e.identity.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Resolves `name` or `name.namespace` as seen from `namespace`.
    pub fn resolve(&self, name: &str, namespace: &str) -> Option<&ServiceModel> {
        self.services
            .get(name)
            .or_else(|| self.services.get(&format!("{name}.{namespace}")))
    }
}

/// The address a workload's sidecar takes inbound traffic on.
fn workload_address(meta: &NodeMeta) -> Option<SocketAddr> {
    match &meta.advertise {
        Some(addr) => addr.parse().ok(),
        None => Some(SocketAddr::new(
            meta.ip.parse::<IpAddr>().ok()?,
            meta.inbound_port,
        )),
    }
}

fn workload_endpoint(node_id: &str, meta: &NodeMeta) -> Option<EndpointModel> {
    Some(EndpointModel {
        address: workload_address(meta)?,
        weight: 1,
        locality: meta.locality.clone(),
        node_id: Some(node_id.to_owned()),
        identity: meta.mtls.then(|| workload_identity(meta)),
        h2_upgrade: meta.mtls && meta.h2_upgrade && meta.client == ClientKind::TrellisProxy,
    })
}

fn attach_routes(config: &ConfigSet, services: &mut BTreeMap<String, ServiceModel>) {
    let http = config.http_routes.iter().map(|r| {
        let refs = r.spec.parent_refs.iter();
        (format!("HTTPRoute/{}", r.metadata.key()), &r.metadata, refs)
    });
    let grpc = config.grpc_routes.iter().map(|r| {
        let refs = r.spec.parent_refs.iter();
        (format!("GRPCRoute/{}", r.metadata.key()), &r.metadata, refs)
    });
    for (name, meta, refs) in http.chain(grpc) {
        for parent in refs {
            let namespace = parent.namespace_or(&meta.namespace);
            let key = format!("{}.{namespace}", parent.name);
            // A route's parent exists for routing even before any of its workloads registers.
            let svc = services.entry(key).or_insert_with(|| ServiceModel {
                name: parent.name.clone(),
                namespace: namespace.to_owned(),
                protocol: Protocol::Http,
                declared: false,
                protocol_declared: false,
                endpoints: Vec::new(),
                routes: Vec::new(),
            });
            svc.routes.push(name.clone());
        }
    }
}

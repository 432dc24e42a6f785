//! The simulated proxies: each holds an ADS stream, subscribes as the real proxy would, and
//! reports what it applied to a shared [`Tracker`] that the measurement waits on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, UpstreamTlsContext,
    common_tls_context::ValidationContextType,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use tokio::sync::Notify;
use tokio::time::Instant;
use trellis_xds::TypeUrl;
use trellis_xds::client::Handler;

/// What every simulated proxy has applied, shared by their handlers and the measuring task.
pub(super) struct Tracker {
    proxies: Mutex<Vec<ProxyState>>,
    applied: Notify,
}

/// One simulated proxy's view.
#[derive(Debug, Clone, Default)]
pub(super) struct ProxyState {
    /// What it last applied, by type.
    pub(super) types: BTreeMap<TypeUrl, TypeState>,
    /// Its listeners or clusters name an SDS secret, so sync waits for SDS too.
    wants_secrets: bool,
    /// The EDS resources it holds (proxy 0 only, for [`super::mesh::check_endpoints`]).
    pub(super) eds: Vec<Any>,
}

/// One xDS type as one simulated proxy last applied it.
#[derive(Debug, Clone)]
pub(super) struct TypeState {
    /// Version of the last response.
    pub(super) version: String,
    /// When it was applied (its ACK queued).
    pub(super) at: Instant,
    /// Encoded size and count of the resources it holds of the type.
    pub(super) bytes: u64,
    pub(super) resources: usize,
    /// Responses and resource bytes received since the stream opened.
    pushes: u64,
    bytes_total: u64,
}

impl ProxyState {
    /// The version it last applied of `type_url`.
    pub(super) fn version(&self, type_url: TypeUrl) -> Option<String> {
        self.types.get(&type_url).map(|s| s.version.clone())
    }
}

impl Tracker {
    /// Tracks `proxies` proxies, none of which has applied anything.
    pub(super) fn new(proxies: usize) -> Tracker {
        Tracker {
            proxies: Mutex::new(vec![ProxyState::default(); proxies]),
            applied: Notify::new(),
        }
    }

    /// Every proxy's state, indexed as the proxies are.
    pub(super) fn lock(&self) -> MutexGuard<'_, Vec<ProxyState>> {
        // Updates are single assignments, so a poisoned lock still holds consistent data.
        self.proxies.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, index: usize, applied: Applied<'_>) {
        let at = Instant::now();
        {
            let mut proxies = self.lock();
            let proxy = &mut proxies[index];
            proxy.wants_secrets = applied.wants_secrets;
            if let Some(eds) = applied.eds {
                proxy.eds = eds;
            }
            let (pushes, bytes_total) = proxy
                .types
                .get(&applied.type_url)
                .map_or((0, 0), |s| (s.pushes, s.bytes_total));
            proxy.types.insert(
                applied.type_url,
                TypeState {
                    version: applied.version.to_owned(),
                    at,
                    bytes: applied.held_bytes,
                    resources: applied.held,
                    pushes: pushes + 1,
                    bytes_total: bytes_total + applied.received_bytes,
                },
            );
        }
        self.applied.notify_one();
    }

    /// Responses and bytes received by all proxies so far, by type.
    pub(super) fn totals(&self) -> BTreeMap<TypeUrl, (u64, u64)> {
        let mut out = BTreeMap::<TypeUrl, (u64, u64)>::new();
        for (type_url, s) in self.lock().iter().flat_map(|p| &p.types) {
            let entry = out.entry(*type_url).or_default();
            entry.0 += s.pushes;
            entry.1 += s.bytes_total;
        }
        out
    }

    /// Re-checks after every apply until `check` succeeds or `deadline` passes; the error is
    /// the last progress count `check` reported.
    pub(super) async fn wait<T>(
        &self,
        deadline: Instant,
        mut check: impl FnMut(&[ProxyState]) -> Result<T, usize>,
    ) -> Result<T, usize> {
        loop {
            let progress = {
                let proxies = self.lock();
                match check(&proxies) {
                    Ok(done) => return Ok(done),
                    Err(progress) => progress,
                }
            };
            // notify_one keeps a permit when nobody waits, so an apply between the check and
            // this wait is not lost.
            if tokio::time::timeout_at(deadline, self.applied.notified())
                .await
                .is_err()
            {
                return Err(progress);
            }
        }
    }
}

/// Every proxy holds every type it subscribes to, and all hold the same endpoints. The proxy
/// that registered last got only snapshots made after everyone registered, so equal EDS
/// versions mean the final one. Returns the last apply's instant, or how many proxies are done.
pub(super) fn synced(proxies: &[ProxyState]) -> Result<Instant, usize> {
    let required = [
        TypeUrl::Listener,
        TypeUrl::RouteConfiguration,
        TypeUrl::Cluster,
        TypeUrl::ClusterLoadAssignment,
    ];
    let complete = |p: &ProxyState| {
        required.iter().all(|t| p.types.contains_key(t))
            && (!p.wants_secrets || p.types.contains_key(&TypeUrl::Secret))
    };
    let done = proxies.iter().filter(|p| complete(p)).count();
    if done < proxies.len() {
        return Err(done);
    }
    let eds = proxies[0].version(TypeUrl::ClusterLoadAssignment);
    let converged = proxies
        .iter()
        .filter(|p| p.version(TypeUrl::ClusterLoadAssignment) == eds)
        .count();
    if converged < proxies.len() {
        return Err(converged);
    }
    let last = proxies
        .iter()
        .flat_map(|p| p.types.values().map(|s| s.at))
        .max();
    Ok(last.unwrap_or_else(Instant::now))
}

/// Every proxy applied an EDS version other than `before`: the first and last such apply.
pub(super) fn acked(
    proxies: &[ProxyState],
    before: &[Option<String>],
) -> Result<(Instant, Instant), usize> {
    let applied: Vec<Instant> = proxies
        .iter()
        .zip(before)
        .filter_map(|(p, before)| {
            let eds = p.types.get(&TypeUrl::ClusterLoadAssignment)?;
            (Some(&eds.version) != before.as_ref()).then_some(eds.at)
        })
        .collect();
    match (applied.iter().min(), applied.iter().max()) {
        (Some(first), Some(last)) if applied.len() == proxies.len() => Ok((*first, *last)),
        _ => Err(applied.len()),
    }
}

/// One response as a simulated proxy applied it.
struct Applied<'a> {
    type_url: TypeUrl,
    version: &'a str,
    received_bytes: u64,
    /// Resources of the type held after applying, and their encoded size.
    held: usize,
    held_bytes: u64,
    wants_secrets: bool,
    /// Proxy 0's endpoints after an EDS response.
    eds: Option<Vec<Any>>,
}

/// The name of a route config, load assignment or secret (field 1 of each), decoded without
/// the rest of the resource.
#[derive(Clone, PartialEq, Message)]
struct Named {
    #[prost(string, tag = "1")]
    name: String,
}

/// A simulated proxy: accepts everything, subscribes to the route configs, endpoints and
/// secrets its listeners and clusters name (as the real proxy does), keeps the named resources
/// it was sent by name, and reports to the tracker. Its instant of apply is when the ACK is
/// queued.
pub(super) struct SimProxy {
    index: usize,
    tracker: Arc<Tracker>,
    /// Named resources held, by type and name (full resources for proxy 0's EDS only).
    named: BTreeMap<TypeUrl, BTreeMap<String, Held>>,
    routes: BTreeSet<String>,
    endpoints: BTreeSet<String>,
    listener_secrets: BTreeSet<String>,
    cluster_secrets: BTreeSet<String>,
    /// Named types whose wanted names may have changed since held ones were last pruned.
    unpruned: BTreeSet<TypeUrl>,
}

impl SimProxy {
    /// Proxy `index`, reporting to `tracker`.
    pub(super) fn new(index: usize, tracker: Arc<Tracker>) -> SimProxy {
        SimProxy {
            index,
            tracker,
            named: BTreeMap::new(),
            routes: BTreeSet::new(),
            endpoints: BTreeSet::new(),
            listener_secrets: BTreeSet::new(),
            cluster_secrets: BTreeSet::new(),
            unpruned: BTreeSet::new(),
        }
    }

    fn on_listeners(&mut self, resources: &[Any]) -> Result<(), String> {
        self.unpruned
            .extend([TypeUrl::RouteConfiguration, TypeUrl::Secret]);
        self.routes.clear();
        self.listener_secrets.clear();
        for listener in decode_all::<Listener>(resources)? {
            for chain in listener
                .filter_chains
                .iter()
                .chain(&listener.default_filter_chain)
            {
                for f in &chain.filters {
                    if let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type
                        && any.type_url == HttpConnectionManager::type_url()
                    {
                        let hcm = HttpConnectionManager::decode(&*any.value)
                            .map_err(|e| format!("listener {:?}: {e}", listener.name))?;
                        if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                            self.routes.insert(rds.route_config_name);
                        }
                    }
                }
                if let Some(socket) = &chain.transport_socket {
                    ads_secrets(socket, &mut self.listener_secrets);
                }
            }
        }
        Ok(())
    }

    fn on_clusters(&mut self, resources: &[Any]) -> Result<(), String> {
        self.unpruned
            .extend([TypeUrl::ClusterLoadAssignment, TypeUrl::Secret]);
        self.endpoints.clear();
        self.cluster_secrets.clear();
        for cluster in decode_all::<Cluster>(resources)? {
            let eds = ClusterDiscoveryType::Type(DiscoveryType::Eds as i32);
            if cluster.cluster_discovery_type == Some(eds) {
                let service = cluster.eds_cluster_config.map(|c| c.service_name);
                let name = service.filter(|s| !s.is_empty()).unwrap_or(cluster.name);
                self.endpoints.insert(name);
            }
            let sockets = cluster
                .transport_socket_matches
                .iter()
                .filter_map(|m| m.transport_socket.as_ref());
            for socket in sockets.chain(&cluster.transport_socket) {
                ads_secrets(socket, &mut self.cluster_secrets);
            }
        }
        Ok(())
    }

    fn secrets(&self) -> BTreeSet<String> {
        self.listener_secrets
            .union(&self.cluster_secrets)
            .cloned()
            .collect()
    }
}

/// A named resource a simulated proxy holds.
struct Held {
    bytes: u64,
    any: Option<Any>,
}

impl SimProxy {
    /// Merges a response of a named type by name, keeping only wanted names; drops held ones
    /// no longer wanted when the wanted names changed. (A real proxy has a CPU of its own; 200
    /// simulated ones share one, so a look over every held name on each response would show
    /// up as push latency.)
    fn merge(&mut self, type_url: TypeUrl, resources: &[Any]) -> Result<(), String> {
        let keep_full = self.index == 0 && type_url == TypeUrl::ClusterLoadAssignment;
        let secrets;
        let wanted = match type_url {
            TypeUrl::RouteConfiguration => &self.routes,
            TypeUrl::ClusterLoadAssignment => &self.endpoints,
            _ => {
                secrets = self.secrets();
                &secrets
            }
        };
        let held = self.named.entry(type_url).or_default();
        for any in resources {
            let name = Named::decode(&*any.value)
                .map_err(|e| format!("{}: {e}", any.type_url))?
                .name;
            if !wanted.contains(&name) {
                continue;
            }
            let bytes = any.encoded_len() as u64;
            held.insert(
                name,
                Held {
                    bytes,
                    any: keep_full.then(|| any.clone()),
                },
            );
        }
        if self.unpruned.remove(&type_url) {
            held.retain(|name, _| wanted.contains(name));
        }
        Ok(())
    }
}

impl Handler for SimProxy {
    fn apply(&mut self, type_url: TypeUrl, version: &str, resources: &[Any]) -> Result<(), String> {
        let received_bytes = resources.iter().map(|r| r.encoded_len() as u64).sum();
        let (held, held_bytes) = match type_url {
            TypeUrl::Listener => {
                self.on_listeners(resources)?;
                (resources.len(), received_bytes)
            }
            TypeUrl::Cluster => {
                self.on_clusters(resources)?;
                (resources.len(), received_bytes)
            }
            // Endpoints, routes and secrets are only named and counted: decoding them would
            // spend the CPU the control plane is measured on.
            TypeUrl::RouteConfiguration | TypeUrl::ClusterLoadAssignment | TypeUrl::Secret => {
                self.merge(type_url, resources)?;
                let held = &self.named[&type_url];
                (held.len(), held.values().map(|h| h.bytes).sum())
            }
        };
        let eds = (self.index == 0 && type_url == TypeUrl::ClusterLoadAssignment).then(|| {
            self.named[&type_url]
                .values()
                .filter_map(|h| h.any.clone())
                .collect()
        });
        self.tracker.record(
            self.index,
            Applied {
                type_url,
                version,
                received_bytes,
                held,
                held_bytes,
                wants_secrets: !self.secrets().is_empty(),
                eds,
            },
        );
        Ok(())
    }

    fn wanted(&self, type_url: TypeUrl) -> Vec<String> {
        match type_url {
            TypeUrl::RouteConfiguration => self.routes.iter().cloned().collect(),
            TypeUrl::ClusterLoadAssignment => self.endpoints.iter().cloned().collect(),
            TypeUrl::Secret => self.secrets().into_iter().collect(),
            TypeUrl::Listener | TypeUrl::Cluster => Vec::new(),
        }
    }
}

fn decode_all<M: Message + Default>(resources: &[Any]) -> Result<Vec<M>, String> {
    resources
        .iter()
        .map(|any| M::decode(&*any.value).map_err(|e| format!("{}: {e}", any.type_url)))
        .collect()
}

/// Names of the SDS secrets over ADS (the trust bundle) a TLS transport socket validates with;
/// certificates come from the proxy's own agent and are not subscribed.
fn ads_secrets(socket: &TransportSocket, out: &mut BTreeSet<String>) {
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
        return;
    };
    let common: Option<CommonTlsContext> = if any.type_url == DownstreamTlsContext::type_url() {
        DownstreamTlsContext::decode(&*any.value)
            .ok()
            .and_then(|c| c.common_tls_context)
    } else if any.type_url == UpstreamTlsContext::type_url() {
        UpstreamTlsContext::decode(&*any.value)
            .ok()
            .and_then(|c| c.common_tls_context)
    } else {
        None
    };
    let sds: Option<SdsSecretConfig> = match common.and_then(|c| c.validation_context_type) {
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => Some(s),
        Some(ValidationContextType::CombinedValidationContext(c)) => {
            c.validation_context_sds_secret_config
        }
        _ => None,
    };
    if let Some(s) = sds
        && matches!(
            s.sds_config.and_then(|c| c.config_source_specifier),
            Some(ConfigSourceSpecifier::Ads(_))
        )
    {
        out.insert(s.name);
    }
}

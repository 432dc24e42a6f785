//! The xDS handler: validates each state-of-the-world update, keeps the last accepted resources
//! of every type (listeners and clusters replaced whole, the named types merged by name and
//! pruned to what listeners and clusters name), rebuilds and publishes the table, and tracks
//! readiness. A rejected update leaves everything as it was.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster as PbCluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::Any;
use trellis_xds::TypeUrl;
use trellis_xds::client::Handler;

use crate::balance::{Balancing, ClusterLbState, EndpointSet};
use crate::config::cluster::{ClusterConfig, Discovery};
use crate::config::endpoint::Assignment;
use crate::config::listener::{ListenerConfig, ListenerContext};
use crate::config::route::RouteConfig;
use crate::config::tls::UpstreamTls;
use crate::config::{ConfigError, decode_all};
use crate::health::HealthChecks;
use crate::http::client::UpstreamClients;
use crate::table::{Cluster, Shared, Table};
use crate::tls::connect::MeshConnector;

/// Applies xDS updates to a running proxy. The ADS client drives it; tests and fake control
/// planes may drive a clone directly ([`ProxyHandle::config_handler`](crate::ProxyHandle::config_handler)).
/// Clones share one state.
#[derive(Debug, Clone)]
pub struct ConfigHandler {
    state: Arc<Mutex<ConfigState>>,
}

#[derive(Debug)]
struct ConfigState {
    shared: Arc<Shared>,
    inbound_port: u16,
    listeners: BTreeMap<String, Arc<ListenerConfig>>,
    routes: BTreeMap<String, Arc<RouteConfig>>,
    clusters: BTreeMap<String, Arc<ClusterConfig>>,
    assignments: BTreeMap<String, Arc<Assignment>>,
    versions: BTreeMap<TypeUrl, String>,
    applied: BTreeSet<TypeUrl>,
    lb: HashMap<String, ClusterLbState>,
    /// Active health checkers of the accepted clusters.
    health: HealthChecks,
    clients: HashMap<Duration, Arc<UpstreamClients>>,
    /// mTLS pools per cluster, kept while the cluster's TLS settings stay the same.
    tls_clients: HashMap<String, (Arc<UpstreamTls>, Arc<UpstreamClients<MeshConnector>>)>,
    /// Trust bundles (PEM) from SDS, by secret name.
    secrets: BTreeMap<String, String>,
}

impl ConfigHandler {
    pub(crate) fn new(shared: Arc<Shared>, inbound_port: u16) -> Self {
        Self {
            state: Arc::new(Mutex::new(ConfigState {
                shared,
                inbound_port,
                listeners: BTreeMap::new(),
                routes: BTreeMap::new(),
                clusters: BTreeMap::new(),
                assignments: BTreeMap::new(),
                versions: BTreeMap::new(),
                applied: BTreeSet::new(),
                lb: HashMap::new(),
                health: HealthChecks::default(),
                tls_clients: HashMap::new(),
                secrets: BTreeMap::new(),
                clients: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConfigState> {
        // A panic while applying leaves the previous maps intact (they are replaced whole), so
        // a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Handler for ConfigHandler {
    fn apply(&mut self, type_url: TypeUrl, version: &str, resources: &[Any]) -> Result<(), String> {
        let mut state = self.lock();
        let result = state.apply(type_url, version, resources);
        state
            .shared
            .metrics
            .xds_update(type_url.short(), result.is_ok());
        match &result {
            Ok(()) => tracing::info!(%type_url, version, count = resources.len(), "config applied"),
            Err(e) => tracing::warn!(%type_url, version, error = %e, "config rejected"),
        }
        result.map_err(|e| e.to_string())
    }

    fn wanted(&self, type_url: TypeUrl) -> Vec<String> {
        self.lock().wanted(type_url)
    }
}

impl ConfigState {
    fn apply(
        &mut self,
        type_url: TypeUrl,
        version: &str,
        resources: &[Any],
    ) -> Result<(), ConfigError> {
        match type_url {
            TypeUrl::Listener => {
                let ctx = ListenerContext {
                    inbound_port: self.inbound_port,
                    metrics: &self.shared.metrics,
                };
                let compiled = decode_all::<Listener>("listener", resources)?
                    .iter()
                    .map(|l| ListenerConfig::compile(l, ctx))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut ports = HashMap::new();
                for l in &compiled {
                    if let Some(other) = ports.insert(l.address.port(), l.name.clone()) {
                        return Err(ConfigError::Conflict {
                            kind: "listener",
                            name: l.name.clone(),
                            problem: format!(
                                "address port {} is already used by listener {other:?}",
                                l.address.port()
                            ),
                        });
                    }
                }
                self.listeners = by_name("listener", compiled, |l| &l.name)?;
            }
            TypeUrl::RouteConfiguration => {
                let metrics = &self.shared.metrics;
                let compiled = decode_all::<RouteConfiguration>("route configuration", resources)?
                    .iter()
                    .map(|r| RouteConfig::compile(r, metrics))
                    .collect::<Result<Vec<_>, _>>()?;
                let compiled = by_name("route configuration", compiled, |r| &r.name)?;
                self.routes.extend(compiled);
            }
            TypeUrl::Cluster => {
                let compiled = decode_all::<PbCluster>("cluster", resources)?
                    .iter()
                    .map(ClusterConfig::compile)
                    .collect::<Result<Vec<_>, _>>()?;
                self.clusters = by_name("cluster", compiled, |c| &c.name)?;
            }
            TypeUrl::ClusterLoadAssignment => {
                let compiled =
                    decode_all::<ClusterLoadAssignment>("cluster load assignment", resources)?
                        .iter()
                        .map(Assignment::compile)
                        .collect::<Result<Vec<_>, _>>()?;
                let compiled = by_name("cluster load assignment", compiled, |a| &a.cluster_name)?;
                self.assignments.extend(compiled);
            }
            TypeUrl::Secret => {
                let compiled = decode_all::<Secret>("secret", resources)?
                    .iter()
                    .map(|s| Ok((s.name.clone(), crate::config::tls::bundle(s)?)))
                    .collect::<Result<BTreeMap<_, _>, ConfigError>>()?;
                self.secrets.extend(compiled);
            }
        }
        self.prune();
        self.versions.insert(type_url, version.to_owned());
        self.applied.insert(type_url);
        self.publish();
        if self.complete() {
            self.shared.set_ready();
        }
        Ok(())
    }

    fn wanted(&self, type_url: TypeUrl) -> Vec<String> {
        self.wanted_set(type_url)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    fn wanted_set(&self, type_url: TypeUrl) -> BTreeSet<&str> {
        named(&self.listeners, &self.clusters, type_url)
    }

    /// Drops the named resources that no listener or cluster names any more (the client
    /// unsubscribes from them in the same step).
    fn prune(&mut self) {
        let (listeners, clusters) = (&self.listeners, &self.clusters);
        let routes = named(listeners, clusters, TypeUrl::RouteConfiguration);
        self.routes.retain(|name, _| routes.contains(name.as_str()));
        let assignments = named(listeners, clusters, TypeUrl::ClusterLoadAssignment);
        self.assignments
            .retain(|name, _| assignments.contains(name.as_str()));
        let secrets = named(listeners, clusters, TypeUrl::Secret);
        self.secrets
            .retain(|name, _| secrets.contains(name.as_str()));
    }

    /// LDS and CDS applied, and RDS/EDS/SDS too if they name anything.
    fn complete(&self) -> bool {
        [TypeUrl::Listener, TypeUrl::Cluster]
            .iter()
            .all(|t| self.applied.contains(t))
            && [
                TypeUrl::RouteConfiguration,
                TypeUrl::ClusterLoadAssignment,
                TypeUrl::Secret,
            ]
            .into_iter()
            .all(|t| self.applied.contains(&t) || self.wanted(t).is_empty())
    }

    /// Rebuilds the table from the accepted resources and publishes it.
    fn publish(&mut self) {
        let bundle =
            bundle_names(&self.listeners, &self.clusters).find_map(|n| self.secrets.get(n));
        if let Some(pem) = bundle {
            self.shared.identity.set_bundle(pem.clone());
        }
        let mut tls_clients = HashMap::new();
        let mut lb = HashMap::with_capacity(self.clusters.len());
        let mut clusters = BTreeMap::new();
        for (name, config) in &self.clusters {
            let assignment = match &config.discovery {
                Discovery::Eds(service) => self.assignments.get(service).map(AsRef::as_ref),
                Discovery::Static(a) => Some(a),
            };
            let mut state = self.lb.remove(name).unwrap_or_default();
            let balancing = Balancing {
                policy: config.lb_policy,
                outlier: config.outlier.as_ref(),
                health_checked: config.health_check.is_some(),
                tls: &config.tls,
            };
            let endpoints = EndpointSet::build(balancing, assignment, &mut state);
            lb.insert(name.clone(), state);
            let clients = self
                .clients
                .entry(config.connect_timeout)
                .or_insert_with(|| Arc::new(UpstreamClients::new(config.connect_timeout)))
                .clone();
            let mesh = config.tls.settings().map(|tls| {
                let reuse = self.tls_clients.remove(name).filter(|(t, _)| t == tls);
                let entry = reuse.unwrap_or_else(|| {
                    let pools = UpstreamClients::mesh(
                        config.connect_timeout,
                        tls.clone(),
                        self.shared.identity.clone(),
                    );
                    (tls.clone(), Arc::new(pools))
                });
                tls_clients.insert(name.clone(), entry.clone());
                entry.1
            });
            clusters.insert(
                name.clone(),
                Arc::new(Cluster {
                    config: config.clone(),
                    endpoints,
                    clients,
                    tls_clients: mesh,
                }),
            );
        }
        self.lb = lb;
        self.tls_clients = tls_clients;
        self.shared.publish(Table::new(
            self.listeners.clone(),
            self.routes.clone(),
            clusters,
            self.versions.clone(),
        ));
        self.health.reconcile(&self.clusters, &self.shared);
    }
}

/// The names of `type_url` that the accepted listeners and clusters refer to.
fn named<'a>(
    listeners: &'a BTreeMap<String, Arc<ListenerConfig>>,
    clusters: &'a BTreeMap<String, Arc<ClusterConfig>>,
    type_url: TypeUrl,
) -> BTreeSet<&'a str> {
    match type_url {
        TypeUrl::RouteConfiguration => listeners.values().flat_map(|l| l.rds_names()).collect(),
        TypeUrl::ClusterLoadAssignment => clusters
            .values()
            .filter_map(|c| match &c.discovery {
                Discovery::Eds(service) => Some(service.as_str()),
                Discovery::Static(_) => None,
            })
            .collect(),
        TypeUrl::Secret => bundle_names(listeners, clusters).collect(),
        TypeUrl::Listener | TypeUrl::Cluster => BTreeSet::new(),
    }
}

/// Trust bundle secrets the listeners' and clusters' TLS settings name.
fn bundle_names<'a>(
    listeners: &'a BTreeMap<String, Arc<ListenerConfig>>,
    clusters: &'a BTreeMap<String, Arc<ClusterConfig>>,
) -> impl Iterator<Item = &'a str> {
    listeners
        .values()
        .filter_map(|l| l.tls().map(|t| t.bundle.as_str()))
        .chain(clusters.values().flat_map(|c| c.tls.bundles()))
}

/// Indexes resources by name, rejecting duplicates.
fn by_name<T>(
    kind: &'static str,
    items: Vec<T>,
    name: impl Fn(&T) -> &String,
) -> Result<BTreeMap<String, Arc<T>>, ConfigError> {
    let mut out = BTreeMap::new();
    for item in items {
        let key = name(&item).clone();
        if out.insert(key.clone(), Arc::new(item)).is_some() {
            return Err(ConfigError::Conflict {
                kind,
                name: key,
                problem: "appears more than once".to_owned(),
            });
        }
    }
    Ok(out)
}

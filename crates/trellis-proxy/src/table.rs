//! The runtime table: the accepted config compiled into one immutable value, published with
//! `ArcSwap` so requests read it without a lock, plus a change signal for waiters.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use trellis_xds::TypeUrl;

use crate::balance::EndpointSet;
use crate::config::cluster::ClusterConfig;
use crate::config::listener::ListenerConfig;
use crate::config::route::RouteConfig;
use crate::http::client::UpstreamClients;
use crate::telemetry::Metrics;
use crate::tls::IdentityState;
use crate::tls::connect::MeshConnector;

/// One immutable snapshot of everything the data path needs.
#[derive(Debug, Default)]
pub(crate) struct Table {
    /// Listeners by name.
    pub(crate) listeners: BTreeMap<String, Arc<ListenerConfig>>,
    by_port: HashMap<u16, Arc<ListenerConfig>>,
    /// RDS route configurations by name.
    pub(crate) routes: BTreeMap<String, Arc<RouteConfig>>,
    /// Clusters by name, with their current endpoints.
    pub(crate) clusters: BTreeMap<String, Arc<Cluster>>,
    /// Last applied version per resource type.
    pub(crate) versions: BTreeMap<TypeUrl, String>,
}

/// A cluster as the data path sees it: config, serving endpoints and connection pools.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// The compiled CDS resource.
    pub(crate) config: Arc<ClusterConfig>,
    /// Endpoints that take new requests, and the balancer over them.
    pub(crate) endpoints: EndpointSet,
    /// Upstream HTTP clients (shared by clusters with the same connect timeout).
    pub(crate) clients: Arc<UpstreamClients>,
    /// mTLS clients towards its sidecar endpoints, when it has any.
    pub(crate) tls_clients: Option<Arc<UpstreamClients<MeshConnector>>>,
}

impl Table {
    /// Assembles a table; listener ports are unique (the LDS compiler checks).
    pub(crate) fn new(
        listeners: BTreeMap<String, Arc<ListenerConfig>>,
        routes: BTreeMap<String, Arc<RouteConfig>>,
        clusters: BTreeMap<String, Arc<Cluster>>,
        versions: BTreeMap<TypeUrl, String>,
    ) -> Self {
        let by_port = listeners
            .values()
            .map(|l| (l.address.port(), l.clone()))
            .collect();
        Self {
            listeners,
            by_port,
            routes,
            clusters,
            versions,
        }
    }

    /// The listener configured for `port`.
    pub(crate) fn listener_for_port(&self, port: u16) -> Option<&Arc<ListenerConfig>> {
        self.by_port.get(&port)
    }
}

/// State shared by the config path and the data path.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The current table.
    pub(crate) table: ArcSwap<Table>,
    /// Bumped after every publication.
    changes: watch::Sender<u64>,
    /// True once the first complete config was applied.
    ready: watch::Sender<bool>,
    /// Every metric.
    pub(crate) metrics: Metrics,
    /// The workload identity (SVID, trust bundle, TLS configs).
    pub(crate) identity: Arc<IdentityState>,
}

impl Shared {
    /// An empty table, not ready.
    pub(crate) fn new(metrics: Metrics) -> Self {
        Self {
            table: ArcSwap::from_pointee(Table::default()),
            changes: watch::Sender::new(0),
            ready: watch::Sender::new(false),
            identity: Arc::new(IdentityState::new(metrics.identity.clone())),
            metrics,
        }
    }

    /// Swaps in a new table and wakes waiters.
    pub(crate) fn publish(&self, table: Table) {
        self.table.store(Arc::new(table));
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// A receiver that changes after each publication.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Marks the proxy ready (idempotent).
    pub(crate) fn set_ready(&self) {
        self.ready
            .send_if_modified(|ready| !std::mem::replace(ready, true));
    }

    /// Whether the first complete config was applied and the workload certificate (if any)
    /// has not expired.
    pub(crate) fn is_ready(&self) -> bool {
        *self.ready.borrow() && !self.identity.expired()
    }

    /// Resolves once ready.
    pub(crate) async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot fail while we borrow it.
        let _ = rx.wait_for(|ready| *ready).await;
    }
}

//! The workload registry: every proxy with an open ADS stream is a workload of its service,
//! plus what it last ACKed and NACKed and when each version it has yet to ACK was published. A
//! workload leaves when its stream ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use trellis_identity::SpiffeId;
use trellis_xds::node::{ClientKind, NodeMeta};
use trellis_xds::server::StreamId;
use trellis_xds::{Snapshot, TypeUrl};

use crate::stats::Target;

/// Trust domain of workload identities until MeshConfig makes it configurable.
pub(crate) const TRUST_DOMAIN: &str = "cluster.local";

/// One connected proxy and the workload behind it.
#[derive(Debug)]
pub(crate) struct Proxy {
    pub(crate) node_id: String,
    pub(crate) meta: NodeMeta,
    pub(crate) connected_at: SystemTime,
    pub(crate) snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    pub(crate) acked: BTreeMap<TypeUrl, String>,
    pub(crate) last_nack: Option<Nack>,
    pub(crate) nacks: u64,
    /// Per type, the version last published to this proxy until the proxy holds it.
    pub(crate) unacked: BTreeMap<TypeUrl, Unacked>,
    /// The user policies this kind of client cannot honour (see `capability`).
    pub(crate) gaps: Vec<String>,
}

/// A version of one type published to a proxy that has not ACKed it yet.
#[derive(Debug)]
pub(crate) struct Unacked {
    version: String,
    published_at: Instant,
    /// A response carrying it went out (a change with nothing for the proxy sends nothing).
    sent: bool,
}

/// A rejected push, as the proxy reported it.
#[derive(Debug, Clone, Serialize)]
pub struct Nack {
    /// Resource type (`lds`, `rds`, `cds`, `eds`).
    #[serde(rename = "type")]
    pub type_url: String,
    /// Version the proxy rejected.
    pub version: String,
    /// The proxy's `error_detail` message.
    pub error: String,
    /// When it arrived (seconds since the Unix epoch).
    pub at_unix: u64,
}

/// A workload as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadView {
    /// xDS node id of its proxy.
    pub node_id: String,
    /// Service it belongs to.
    pub service: String,
    /// Namespace.
    pub namespace: String,
    /// Labels (including the implicit `app`).
    pub labels: BTreeMap<String, String>,
    /// Endpoint address peers reach it at (its proxy's inbound listener).
    pub address: String,
    /// Local application port behind the proxy.
    pub app_port: u16,
    /// Locality, if reported.
    pub locality: Option<String>,
    /// The SPIFFE identity the workload runs as.
    pub identity: String,
    /// Connection time (seconds since the Unix epoch).
    pub connected_at_unix: u64,
}

/// A proxy's xDS state as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyView {
    /// xDS node id.
    pub node_id: String,
    /// Service it fronts.
    pub service: String,
    /// Last ACKed version per type.
    pub acked: BTreeMap<String, String>,
    /// Version per type the proxy should be at now.
    pub current: BTreeMap<String, String>,
    /// True when a snapshot was published and every subscribed type ACKed its current version.
    pub synced: bool,
    /// The latest NACK, if any.
    pub last_nack: Option<Nack>,
    /// NACKs on this stream.
    pub nacks: u64,
    /// What kind of client it is (`trellis_proxy`, `envoy`, `grpc`).
    pub client: ClientKind,
    /// The user policies it cannot honour, one line each (resource, rule, effect).
    pub unsupported: Vec<String>,
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Proxy {
    /// Labels used by Service selectors: the reported ones plus `app: <service>`.
    pub(crate) fn labels(&self) -> BTreeMap<String, String> {
        workload_labels(&self.meta)
    }

    pub(crate) fn identity(&self) -> String {
        workload_identity(&self.meta)
    }

    pub(crate) fn workload_view(&self) -> WorkloadView {
        WorkloadView {
            node_id: self.node_id.clone(),
            service: self.meta.service.clone(),
            namespace: self.meta.namespace.clone(),
            labels: self.labels(),
            address: format!("{}:{}", self.meta.ip, self.meta.inbound_port),
            app_port: self.meta.app_port,
            locality: self.meta.locality.clone(),
            identity: self.identity(),
            connected_at_unix: unix(self.connected_at),
        }
    }

    /// What the stats collector reads this proxy by.
    pub(crate) fn stats_target(&self) -> Target {
        Target {
            node_id: self.node_id.clone(),
            service: self.meta.service.clone(),
            namespace: self.meta.namespace.clone(),
            admin: self.meta.admin.clone(),
        }
    }

    /// Publishes `snapshot` unless every type's version equals the published one, and notes
    /// when each type's new version was published. True when published.
    pub(crate) fn publish(&mut self, snapshot: &Arc<Snapshot>, now: Instant) -> bool {
        let previous = self.snapshots.borrow().clone();
        let mut changed = false;
        for t in TypeUrl::ALL {
            let version = snapshot.version(t);
            if previous.as_ref().is_some_and(|p| p.version(t) == version) {
                continue;
            }
            changed = true;
            let unacked = Unacked {
                version: version.to_owned(),
                published_at: now,
                sent: false,
            };
            self.unacked.insert(t, unacked);
        }
        if changed {
            self.snapshots.send_replace(Some(snapshot.clone()));
        }
        changed
    }

    /// A response carrying `version` of `t` went out.
    pub(crate) fn sent(&mut self, t: TypeUrl, version: &str) {
        if let Some(u) = self.unacked.get_mut(&t).filter(|u| u.version == version) {
            u.sent = true;
        }
    }

    /// The proxy holds `version` of `t`. Returns the time since that version was published when
    /// this is the first ACK of a response that carried it; a resend of a held version, or a
    /// change that sent nothing, is not a config push to time.
    pub(crate) fn acked(&mut self, t: TypeUrl, version: &str, now: Instant) -> Option<Duration> {
        self.acked.insert(t, version.to_owned());
        if self.unacked.get(&t).is_none_or(|u| u.version != version) {
            return None;
        }
        let u = self.unacked.remove(&t)?;
        u.sent
            .then(|| now.saturating_duration_since(u.published_at))
    }

    pub(crate) fn proxy_view(&self) -> ProxyView {
        let published = self.snapshots.borrow();
        let empty = Snapshot::default();
        let snapshot = published.as_deref().unwrap_or(&empty);
        let current: BTreeMap<String, String> = TypeUrl::ALL
            .iter()
            .map(|t| (t.short().to_owned(), snapshot.version(*t).to_owned()))
            .collect();
        let acked: BTreeMap<String, String> = self
            .acked
            .iter()
            .map(|(t, v)| (t.short().to_owned(), v.clone()))
            .collect();
        // Types the proxy never subscribed to (e.g. RDS without outbound HTTP listeners) have
        // no ACK and do not count.
        let synced = published.is_some()
            && self
                .acked
                .iter()
                .all(|(t, version)| version == snapshot.version(*t));
        ProxyView {
            node_id: self.node_id.clone(),
            service: self.meta.service.clone(),
            acked,
            current,
            synced,
            last_nack: self.last_nack.clone(),
            nacks: self.nacks,
            client: self.meta.client,
            unsupported: self.gaps.clone(),
        }
    }
}

/// The SPIFFE ID a workload runs as: its service is its service account.
pub(crate) fn workload_identity(meta: &NodeMeta) -> String {
    SpiffeId::new(TRUST_DOMAIN, &meta.namespace, &meta.service)
        .map(|id| id.to_string())
        .unwrap_or_else(|e| format!("invalid: {e}"))
}

/// The labels a workload is selected by: its own plus `app: <service>` unless it set `app`.
pub(crate) fn workload_labels(meta: &NodeMeta) -> BTreeMap<String, String> {
    let mut labels = meta.labels.clone();
    labels
        .entry("app".to_owned())
        .or_insert_with(|| meta.service.clone());
    labels
}

/// Registered proxies by stream.
pub(crate) type Registry = BTreeMap<StreamId, Proxy>;

//! Request statistics: lock-free counters per (direction, route, cluster) and per peer identity,
//! which compiled routes hold, and their Prometheus encoding with the source and destination
//! labels Istio and Linkerd users know.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use trellis_metrics::stats::{ProxyStats, StatsEntry, quantile};

use super::{Direction, LocalWorkload, StatusClass};

/// Upper bounds (seconds) of the latency histogram buckets; a last `+Inf` bucket follows.
use trellis_metrics::stats::LATENCY_BOUNDS as LATENCY_BUCKETS;

/// gRPC status codes 0 (`OK`) to 16 (`UNAUTHENTICATED`), and one more slot for plain HTTP.
const GRPC_SLOTS: usize = 18;
/// The slot of a response that is not gRPC.
pub(crate) const NOT_GRPC: u8 = 17;

/// Distinct peer identities counted per route×cluster; later ones share one `other` entry, so
/// a client minting identities cannot grow the proxy's memory or the scrape without bound.
const MAX_PEERS: usize = 64;
/// The peer label of identities past [`MAX_PEERS`].
const OTHER_PEER: &str = "other";

/// Counters of the requests from one peer (inbound) or to one cluster (outbound) on one route.
#[derive(Debug)]
pub(crate) struct RequestCounters {
    /// The client's verified SPIFFE ID (inbound mTLS); `None` when unknown.
    peer: Option<Arc<str>>,
    /// Finished responses by status class × gRPC status slot.
    responses: [[AtomicU64; GRPC_SLOTS]; 5],
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl RequestCounters {
    fn new(peer: Option<Arc<str>>) -> Self {
        Self {
            peer,
            responses: Default::default(),
            buckets: Default::default(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records the time from request to response headers.
    pub(crate) fn latency(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS.partition_point(|b| *b < secs);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Counts a finished response; `grpc` is its gRPC status, or [`NOT_GRPC`].
    pub(crate) fn response(&self, class: StatusClass, grpc: u8) {
        let slot = usize::from(grpc).min(GRPC_SLOTS - 1);
        self.responses[class.index()][slot].fetch_add(1, Ordering::Relaxed);
    }

    fn responses(&self) -> [[u64; GRPC_SLOTS]; 5] {
        std::array::from_fn(|c| {
            std::array::from_fn(|g| self.responses[c][g].load(Ordering::Relaxed))
        })
    }

    fn buckets(&self) -> [u64; LATENCY_BUCKETS.len() + 1] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }
}

/// The counters of one (direction, route, cluster), one entry per peer identity. Reading is
/// lock-free (an atomic load and a scan of a short list); a new peer copies the list.
#[derive(Debug)]
pub(crate) struct RouteClusterStats {
    peers: ArcSwap<Vec<Arc<RequestCounters>>>,
    /// Serialises the rare additions, so none is lost to a concurrent one.
    adding: Mutex<()>,
}

impl Default for RouteClusterStats {
    fn default() -> Self {
        Self {
            peers: ArcSwap::from_pointee(vec![Arc::new(RequestCounters::new(None))]),
            adding: Mutex::new(()),
        }
    }
}

impl RouteClusterStats {
    /// The counters for requests from `peer` (`None`: no verified identity).
    pub(crate) fn for_peer(&self, peer: Option<&Arc<str>>) -> Arc<RequestCounters> {
        let same = |c: &&Arc<RequestCounters>| c.peer.as_deref() == peer.map(|p| &**p);
        if let Some(found) = self.peers.load().iter().find(same) {
            return found.clone();
        }
        let _adding = self.adding.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.peers.load_full();
        if let Some(found) = current.iter().find(same) {
            return found.clone();
        }
        let peer = if current.len() < MAX_PEERS {
            peer.cloned()
        } else if let Some(other) = current
            .iter()
            .find(|c| c.peer.as_deref() == Some(OTHER_PEER))
        {
            return other.clone();
        } else {
            Some(Arc::from(OTHER_PEER))
        };
        let added = Arc::new(RequestCounters::new(peer));
        let mut next = Vec::with_capacity(current.len() + 1);
        next.extend(current.iter().cloned());
        next.push(added.clone());
        self.peers.store(Arc::new(next));
        added
    }
}

/// A snapshot of one (direction, route, cluster)'s request statistics since the proxy started,
/// over all peers.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteStats {
    /// Traffic direction.
    pub direction: Direction,
    /// Route name.
    pub route: String,
    /// Cluster name.
    pub cluster: String,
    /// Completed requests by status class, indexed like [`StatusClass::ALL`].
    pub requests: [u64; 5],
    /// Latency histogram as (upper bound in seconds, cumulative count); the last bound is
    /// `f64::INFINITY`.
    pub latency_buckets: Vec<(f64, u64)>,
    /// Sum of all latencies, in seconds.
    pub latency_sum_seconds: f64,
}

impl RouteStats {
    /// Requests of one status class.
    pub fn count(&self, class: StatusClass) -> u64 {
        self.requests[class.index()]
    }

    /// All requests.
    pub fn total(&self) -> u64 {
        self.requests.iter().sum()
    }

    /// Share of requests that did not end in 5xx; `None` before the first request.
    pub fn success_rate(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| 1.0 - self.count(StatusClass::ServerError) as f64 / total as f64)
    }

    /// Latency quantile `q` (0..=1) in seconds, interpolated within its bucket like Prometheus'
    /// `histogram_quantile`; `None` before the first request.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        let mut below = 0;
        let counts: Vec<u64> = self
            .latency_buckets
            .iter()
            .map(|&(_, cumulative)| {
                let count = cumulative - below;
                below = cumulative;
                count
            })
            .collect();
        quantile(&counts, q)
    }
}

type RouteKey = (Direction, String, String);

/// Every route×cluster stats handle ever created; locked only when compiling config and when
/// scraping, never per request.
#[derive(Debug)]
pub(crate) struct RouteStatsSet {
    local: LocalWorkload,
    handles: Mutex<BTreeMap<RouteKey, Arc<RouteClusterStats>>>,
}

/// One peer's counters, read at one moment.
struct PeerSnapshot {
    direction: Direction,
    route: String,
    cluster: String,
    peer: Option<Arc<str>>,
    responses: [[u64; GRPC_SLOTS]; 5],
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    sum_micros: u64,
}

impl PeerSnapshot {
    fn total(&self) -> u64 {
        self.responses.iter().flatten().sum()
    }
}

impl RouteStatsSet {
    pub(crate) fn new(local: LocalWorkload) -> Self {
        Self {
            local,
            handles: Mutex::default(),
        }
    }

    /// Who the local proxy fronts.
    pub(crate) fn local(&self) -> &LocalWorkload {
        &self.local
    }

    pub(crate) fn handle(
        &self,
        direction: Direction,
        route: &str,
        cluster: &str,
    ) -> Arc<RouteClusterStats> {
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        handles
            .entry((direction, route.to_owned(), cluster.to_owned()))
            .or_default()
            .clone()
    }

    /// Every peer entry that has seen a request or a response.
    fn peers(&self) -> Vec<PeerSnapshot> {
        let handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for ((direction, route, cluster), handle) in handles.iter() {
            for counters in handle.peers.load().iter() {
                let snapshot = PeerSnapshot {
                    direction: *direction,
                    route: route.clone(),
                    cluster: cluster.clone(),
                    peer: counters.peer.clone(),
                    responses: counters.responses(),
                    buckets: counters.buckets(),
                    sum_micros: counters.sum_micros.load(Ordering::Relaxed),
                };
                if snapshot.total() > 0 || snapshot.buckets.iter().any(|&n| n > 0) {
                    out.push(snapshot);
                }
            }
        }
        out
    }

    /// Per route×cluster totals over all peers, for those that have finished a request.
    pub(crate) fn snapshot(&self) -> Vec<RouteStats> {
        let mut merged: BTreeMap<RouteKey, RouteStats> = BTreeMap::new();
        for p in self.peers() {
            let key = (p.direction, p.route.clone(), p.cluster.clone());
            let entry = merged.entry(key).or_insert_with(|| RouteStats {
                direction: p.direction,
                route: p.route.clone(),
                cluster: p.cluster.clone(),
                requests: [0; 5],
                latency_buckets: LATENCY_BUCKETS
                    .iter()
                    .copied()
                    .chain([f64::INFINITY])
                    .map(|b| (b, 0))
                    .collect(),
                latency_sum_seconds: 0.0,
            });
            for (class, by_grpc) in p.responses.iter().enumerate() {
                entry.requests[class] += by_grpc.iter().sum::<u64>();
            }
            let mut cumulative = 0;
            for ((_, total), n) in entry.latency_buckets.iter_mut().zip(p.buckets) {
                cumulative += n;
                *total += cumulative;
            }
            entry.latency_sum_seconds += p.sum_micros as f64 / 1e6;
        }
        merged.into_values().filter(|s| s.total() > 0).collect()
    }

    /// Every peer entry, for the control plane to collect (admin `/stats`).
    pub(crate) fn stats(&self) -> ProxyStats {
        let entries = self
            .peers()
            .into_iter()
            .map(|p| {
                let (source, destination) = self.sides(&p);
                let status_classes = std::array::from_fn(|c| p.responses[c].iter().sum());
                let failures = StatusClass::ALL
                    .iter()
                    .flat_map(|&class| {
                        let by_grpc = p.responses[class.index()].iter().enumerate();
                        by_grpc.filter_map(move |(slot, n)| failed(class, slot).then_some(*n))
                    })
                    .sum();
                StatsEntry {
                    direction: p.direction.as_str().to_owned(),
                    route: p.route.clone(),
                    cluster: p.cluster.clone(),
                    source_service: source.service.to_owned(),
                    source_namespace: source.namespace.to_owned(),
                    destination_service: destination.service.to_owned(),
                    destination_namespace: destination.namespace.to_owned(),
                    requests: p.total(),
                    failures,
                    status_classes,
                    latency: p.buckets.to_vec(),
                    latency_sum: p.sum_micros as f64 / 1e6,
                }
            })
            .collect();
        ProxyStats { entries }
    }

    /// The two sides of a peer entry: the local workload on its own side, the cluster's
    /// service or the peer's SPIFFE ID on the other.
    fn sides<'a>(&'a self, p: &'a PeerSnapshot) -> (Side<'a>, Side<'a>) {
        let local = Side {
            service: &self.local.service,
            namespace: &self.local.namespace,
            workload: &self.local.workload,
            identity: &self.local.identity,
        };
        match p.direction {
            Direction::Outbound => {
                let (service, namespace) = cluster_service(&p.cluster);
                let remote = Side {
                    service,
                    namespace,
                    ..Side::default()
                };
                (local, remote)
            }
            Direction::Inbound => {
                let identity = p.peer.as_deref().unwrap_or("");
                let (service, namespace) = identity_service(identity);
                let remote = Side {
                    service,
                    namespace,
                    workload: "",
                    identity,
                };
                (remote, local)
            }
        }
    }

    /// The `source_*` and `destination_*` labels of a peer entry.
    fn workload_labels<'a>(&'a self, p: &'a PeerSnapshot) -> [(&'static str, &'a str); 8] {
        let (source, destination) = self.sides(p);
        [
            ("source_service", source.service),
            ("source_namespace", source.namespace),
            ("source_workload", source.workload),
            ("source_identity", source.identity),
            ("destination_service", destination.service),
            ("destination_namespace", destination.namespace),
            ("destination_workload", destination.workload),
            ("destination_identity", destination.identity),
        ]
    }
}

/// One side of a request: a workload, as far as it is known (empty where not).
#[derive(Debug, Default, Clone, Copy)]
struct Side<'a> {
    service: &'a str,
    namespace: &'a str,
    workload: &'a str,
    identity: &'a str,
}

/// The service and namespace a cluster of the Trellis control plane sends to: its names are
/// `outbound|SERVICE.NAMESPACE` with an optional `|REGION/ZONE`; others have none.
fn cluster_service(cluster: &str) -> (&str, &str) {
    cluster
        .strip_prefix("outbound|")
        .map(|rest| rest.split('|').next().unwrap_or(rest))
        .and_then(|key| key.split_once('.'))
        .unwrap_or(("", ""))
}

/// The service account and namespace of `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT`, which
/// in Trellis is the service's name; ("", "") for other forms.
fn identity_service(identity: &str) -> (&str, &str) {
    let path = identity
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.split_once('/'))
        .map_or("", |(_, path)| path);
    match path.split('/').collect::<Vec<_>>()[..] {
        ["ns", namespace, "sa", account] => (account, namespace),
        _ => ("", ""),
    }
}

/// Label value of a gRPC status slot: the code, or empty for plain HTTP.
fn grpc_label(slot: usize) -> String {
    if slot == usize::from(NOT_GRPC) {
        String::new()
    } else {
        slot.to_string()
    }
}

/// Whether a response failed: 5xx, or a gRPC status other than `OK`, as Linkerd classifies.
fn failed(class: StatusClass, grpc_slot: usize) -> bool {
    let grpc_failed = grpc_slot != 0 && grpc_slot != usize::from(NOT_GRPC);
    class == StatusClass::ServerError || grpc_failed
}

/// The `classification` label: `failure` or `success`.
fn classification(class: StatusClass, grpc_slot: usize) -> &'static str {
    if failed(class, grpc_slot) {
        "failure"
    } else {
        "success"
    }
}

impl Collector for RouteStatsSet {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let peers = self.peers();
        let mut counter = encoder.encode_descriptor(
            "trellis_requests",
            "HTTP requests completed (response body finished or abandoned), by status class, \
             gRPC status and classification",
            None,
            MetricType::Counter,
        )?;
        for p in &peers {
            let workload = self.workload_labels(p);
            for class in StatusClass::ALL {
                for (slot, &n) in p.responses[class.index()].iter().enumerate() {
                    if n == 0 {
                        continue;
                    }
                    let grpc = grpc_label(slot);
                    let mut labels = vec![
                        ("direction", p.direction.as_str()),
                        ("route", p.route.as_str()),
                        ("cluster", p.cluster.as_str()),
                    ];
                    labels.extend(workload);
                    labels.extend([
                        ("status_class", class.as_str()),
                        ("grpc_status", grpc.as_str()),
                        ("classification", classification(class, slot)),
                    ]);
                    counter
                        .encode_family(&labels)?
                        .encode_counter::<[(&str, &str); 0], _, f64>(&n, None)?;
                }
            }
        }
        let mut histogram = encoder.encode_descriptor(
            "trellis_request_duration_seconds",
            "Time from request headers to response headers",
            None,
            MetricType::Histogram,
        )?;
        for p in &peers {
            let mut labels = vec![
                ("direction", p.direction.as_str()),
                ("route", p.route.as_str()),
                ("cluster", p.cluster.as_str()),
            ];
            labels.extend(self.workload_labels(p));
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(p.buckets)
                .collect();
            histogram
                .encode_family(&labels)?
                .encode_histogram::<[(&str, &str); 0]>(
                    p.sum_micros as f64 / 1e6,
                    p.buckets.iter().sum(),
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_identities_give_services() {
        assert_eq!(
            cluster_service("outbound|catalog.shop"),
            ("catalog", "shop")
        );
        assert_eq!(
            cluster_service("outbound|catalog.shop|eu/eu-1"),
            ("catalog", "shop")
        );
        assert_eq!(cluster_service("inbound|8080"), ("", ""));
        assert_eq!(
            identity_service("spiffe://cluster.local/ns/shop/sa/frontend"),
            ("frontend", "shop")
        );
        assert_eq!(identity_service("spiffe://td/other"), ("", ""));
    }

    #[test]
    fn peers_get_their_own_counters_up_to_a_cap() {
        let stats = RouteClusterStats::default();
        let a: Arc<str> = Arc::from("spiffe://td/ns/n/sa/a");
        let first = stats.for_peer(Some(&a));
        assert!(Arc::ptr_eq(&first, &stats.for_peer(Some(&a))));
        assert!(!Arc::ptr_eq(&first, &stats.for_peer(None)));
        for i in 0..MAX_PEERS * 2 {
            let peer: Arc<str> = Arc::from(format!("spiffe://td/ns/n/sa/{i}"));
            stats.for_peer(Some(&peer));
        }
        let peers = stats.peers.load();
        assert_eq!(peers.len(), MAX_PEERS + 1, "capped, plus one shared entry");
        assert_eq!(
            peers
                .iter()
                .filter(|c| c.peer.as_deref() == Some(OTHER_PEER))
                .count(),
            1
        );
    }

    #[test]
    fn grpc_statuses_other_than_ok_are_failures() {
        assert_eq!(classification(StatusClass::Success, 0), "success");
        assert_eq!(classification(StatusClass::Success, 14), "failure");
        assert_eq!(
            classification(StatusClass::Success, usize::from(NOT_GRPC)),
            "success"
        );
        assert_eq!(
            classification(StatusClass::ServerError, usize::from(NOT_GRPC)),
            "failure"
        );
        assert_eq!(
            classification(StatusClass::ClientError, usize::from(NOT_GRPC)),
            "success"
        );
    }
}

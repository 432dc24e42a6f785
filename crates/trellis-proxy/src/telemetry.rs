//! Proxy metrics: per (direction, route, cluster) request counters and latency histograms kept in
//! lock-free handles that compiled routes hold, TCP connection and xDS update counters, and the
//! Prometheus text encoding of all of them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::tls::agent::AgentMetrics;

/// Which side of the workload traffic is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// From peers to the local app.
    Inbound,
    /// From the local app to other services.
    Outbound,
}

impl Direction {
    /// Label value: `inbound` or `outbound`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    /// Index into per-direction arrays.
    pub(crate) const fn index(self) -> usize {
        match self {
            Direction::Inbound => 0,
            Direction::Outbound => 1,
        }
    }
}

/// The class of an HTTP status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// 1xx (including 101 for upgrades).
    Informational,
    /// 2xx.
    Success,
    /// 3xx.
    Redirection,
    /// 4xx.
    ClientError,
    /// 5xx.
    ServerError,
}

impl StatusClass {
    /// Every class, in the order of [`RouteStats::requests`].
    pub const ALL: [StatusClass; 5] = [
        StatusClass::Informational,
        StatusClass::Success,
        StatusClass::Redirection,
        StatusClass::ClientError,
        StatusClass::ServerError,
    ];

    /// Class of `status`.
    pub fn of(status: StatusCode) -> StatusClass {
        match status.as_u16() {
            0..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }

    /// Label value: `1xx` … `5xx`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        }
    }

    const fn index(self) -> usize {
        match self {
            StatusClass::Informational => 0,
            StatusClass::Success => 1,
            StatusClass::Redirection => 2,
            StatusClass::ClientError => 3,
            StatusClass::ServerError => 4,
        }
    }
}

/// Upper bounds (seconds) of the latency histogram buckets; a last `+Inf` bucket follows.
pub(crate) const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A snapshot of one (direction, route, cluster)'s request statistics since the proxy started.
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
        let total = self.latency_buckets.last()?.1;
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut prev = (0.0, 0u64);
        for &(bound, cumulative) in &self.latency_buckets {
            if cumulative as f64 >= rank {
                if bound.is_infinite() {
                    return Some(prev.0);
                }
                let in_bucket = (cumulative - prev.1) as f64;
                let frac = if in_bucket > 0.0 {
                    (rank - prev.1 as f64) / in_bucket
                } else {
                    1.0
                };
                return Some(prev.0 + (bound - prev.0) * frac);
            }
            prev = (bound, cumulative);
        }
        Some(prev.0)
    }
}

/// Lock-free counters for one (direction, route, cluster); compiled routes hold an `Arc` of it.
#[derive(Debug, Default)]
pub(crate) struct RouteClusterStats {
    requests: [AtomicU64; 5],
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl RouteClusterStats {
    /// Records one finished request.
    pub(crate) fn record(&self, status: StatusCode, elapsed: Duration) {
        self.requests[StatusClass::of(status).index()].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS.partition_point(|b| *b < secs);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn snapshot(&self, direction: Direction, route: &str, cluster: &str) -> RouteStats {
        let mut cumulative = 0;
        let latency_buckets = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(bound, n)| {
                cumulative += n.load(Ordering::Relaxed);
                (bound, cumulative)
            })
            .collect();
        RouteStats {
            direction,
            route: route.to_owned(),
            cluster: cluster.to_owned(),
            requests: std::array::from_fn(|i| self.requests[i].load(Ordering::Relaxed)),
            latency_buckets,
            latency_sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

type RouteKey = (Direction, String, String);

/// Every route×cluster stats handle ever created; locked only when compiling config and when
/// scraping, never per request.
#[derive(Debug, Default)]
struct RouteStatsSet {
    handles: Mutex<BTreeMap<RouteKey, Arc<RouteClusterStats>>>,
}

impl RouteStatsSet {
    fn handle(&self, direction: Direction, route: &str, cluster: &str) -> Arc<RouteClusterStats> {
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        handles
            .entry((direction, route.to_owned(), cluster.to_owned()))
            .or_default()
            .clone()
    }

    /// Snapshots of the entries that have seen traffic.
    fn snapshot(&self) -> Vec<RouteStats> {
        let handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        handles
            .iter()
            .map(|((d, r, c), h)| h.snapshot(*d, r, c))
            .filter(|s| s.total() > 0)
            .collect()
    }
}

impl Collector for RouteStatsSet {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.snapshot();
        let mut counter = encoder.encode_descriptor(
            "trellis_requests",
            "HTTP requests completed, by status class",
            None,
            MetricType::Counter,
        )?;
        for s in &stats {
            for class in StatusClass::ALL {
                let n = s.count(class);
                if n == 0 {
                    continue;
                }
                let labels = [
                    ("direction", s.direction.as_str()),
                    ("route", s.route.as_str()),
                    ("cluster", s.cluster.as_str()),
                    ("status_class", class.as_str()),
                ];
                counter
                    .encode_family(&labels)?
                    .encode_counter::<[(&str, &str); 0], _, f64>(&n, None)?;
            }
        }
        let mut histogram = encoder.encode_descriptor(
            "trellis_request_duration_seconds",
            "Time from request headers to response headers",
            None,
            MetricType::Histogram,
        )?;
        for s in &stats {
            let labels = [
                ("direction", s.direction.as_str()),
                ("route", s.route.as_str()),
                ("cluster", s.cluster.as_str()),
            ];
            // The encoder accumulates per-bucket counts itself.
            let mut prev = 0;
            let buckets: Vec<(f64, u64)> = s
                .latency_buckets
                .iter()
                .map(|&(b, c)| {
                    let n = c - prev;
                    prev = c;
                    (b, n)
                })
                .collect();
            histogram
                .encode_family(&labels)?
                .encode_histogram::<[(&str, &str); 0]>(
                    s.latency_sum_seconds,
                    s.total(),
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

type XdsLabels = [(&'static str, &'static str); 2];
type TcpLabels = [(&'static str, String); 2];

/// The proxy's metrics registry and the handles the data path and config path use.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    routes: Arc<RouteStatsSet>,
    xds_updates: Family<XdsLabels, Counter>,
    tcp_connections: Family<TcpLabels, Counter>,
    /// The certificate agent's gauges.
    pub(crate) identity: AgentMetrics,
    authz_denials: Family<XdsLabels, Counter>,
}

impl Metrics {
    /// Creates and registers every metric.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let routes = Arc::new(RouteStatsSet::default());
        let xds_updates = Family::<XdsLabels, Counter>::default();
        let tcp_connections = Family::<TcpLabels, Counter>::default();
        registry.register(
            "trellis_xds_updates",
            "xDS responses applied (ack) or rejected (nack), by type",
            xds_updates.clone(),
        );
        registry.register(
            "trellis_tcp_connections",
            "TCP connections proxied, by direction and cluster",
            tcp_connections.clone(),
        );
        registry.register_collector(Box::new(routes.clone()));
        let authz_denials = Family::<XdsLabels, Counter>::default();
        registry.register(
            "trellis_authz_denials",
            "Requests and connections refused by authorization policy, by direction and protocol",
            authz_denials.clone(),
        );
        let identity = AgentMetrics::default();
        registry.register(
            "trellis_identity_cert_expiration_timestamp_seconds",
            "Unix time the workload certificate expires",
            identity.expiry.clone(),
        );
        registry.register(
            "trellis_identity_cert_expired",
            "1 while the workload certificate is expired and could not be renewed",
            identity.expired.clone(),
        );
        registry.register(
            "trellis_tls_handshake_failures",
            "mTLS handshakes refused or failed, by side (server, client) and reason",
            identity.handshake_failures.clone(),
        );
        registry.register(
            "trellis_identity_certs_issued",
            "Workload certificates obtained from the CA since start",
            identity.issued.clone(),
        );
        Self {
            registry,
            routes,
            xds_updates,
            tcp_connections,
            identity,
            authz_denials,
        }
    }

    /// Counts a request or connection refused by authorization (`protocol`: http, grpc, tcp).
    pub(crate) fn authz_denied(&self, direction: Direction, protocol: &'static str) {
        self.authz_denials
            .get_or_create(&[("direction", direction.as_str()), ("protocol", protocol)])
            .inc();
    }

    /// The stats handle for a route×cluster in one direction (created on first use).
    pub(crate) fn route_stats(
        &self,
        direction: Direction,
        route: &str,
        cluster: &str,
    ) -> Arc<RouteClusterStats> {
        self.routes.handle(direction, route, cluster)
    }

    /// The connection counter for a TCP proxy's cluster.
    pub(crate) fn tcp_counter(&self, direction: Direction, cluster: &str) -> Counter {
        self.tcp_connections.get_or_create_owned(&[
            ("direction", direction.as_str().to_owned()),
            ("cluster", cluster.to_owned()),
        ])
    }

    /// Counts one xDS response of `type_short` (`lds`, …) as acked or nacked.
    pub(crate) fn xds_update(&self, type_short: &'static str, acked: bool) {
        let result = if acked { "ack" } else { "nack" };
        self.xds_updates
            .get_or_create(&[("type", type_short), ("result", result)])
            .inc();
    }

    /// Snapshots of every route×cluster that has served a request.
    pub(crate) fn route_snapshot(&self) -> Vec<RouteStats> {
        self.routes.snapshot()
    }

    /// Prometheus/OpenMetrics text of every metric.
    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_record_and_encode() {
        let m = Metrics::new();
        let h = m.route_stats(Direction::Outbound, "r1", "c1");
        h.record(StatusCode::OK, Duration::from_millis(3));
        h.record(StatusCode::BAD_GATEWAY, Duration::from_millis(30));
        m.xds_update("lds", true);
        let snap = m.route_snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].total(), 2);
        assert_eq!(snap[0].success_rate(), Some(0.5));
        let p50 = snap[0].latency_quantile(0.5).unwrap();
        assert!(p50 > 0.0025 && p50 <= 0.005, "p50 {p50}");
        let text = m.encode().unwrap();
        assert!(text.contains(
            r#"trellis_requests_total{direction="outbound",route="r1",cluster="c1",status_class="2xx"} 1"#
        ));
        assert!(text.contains("trellis_request_duration_seconds_bucket"));
        assert!(text.contains(r#"trellis_xds_updates_total{type="lds",result="ack"} 1"#));
    }
}

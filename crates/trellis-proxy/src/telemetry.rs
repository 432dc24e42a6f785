//! Proxy metrics: per (direction, route, cluster, peer) request counters and latency histograms
//! kept in lock-free handles that compiled routes hold, per-cluster resilience counters, TCP
//! connections and bytes, xDS updates, the process, and the Prometheus text encoding of all of
//! them.

mod clusters;
mod events;
mod requests;
mod tcp;
mod trace;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use trellis_metrics::ProcessCollector;

pub(crate) use clusters::ClusterEvents;
pub use events::{AccessLogFormat, RequestEvent};
pub(crate) use events::{Events, PendingEvent};
pub use requests::RouteStats;
pub(crate) use requests::{NOT_GRPC, RequestCounters, RouteClusterStats};
pub(crate) use tcp::TcpStats;
pub(crate) use trace::Tracer;
pub use trace::TracingOptions;

use crate::table::Table;
use crate::tls::agent::AgentMetrics;
use requests::RouteStatsSet;
use tcp::TcpStatsSet;

/// Who the local proxy fronts: the source of its outbound traffic and the destination of its
/// inbound traffic, in the metrics' labels.
#[derive(Debug, Clone, Default)]
pub(crate) struct LocalWorkload {
    /// Service name.
    pub(crate) service: String,
    /// Namespace.
    pub(crate) namespace: String,
    /// This proxy's node id.
    pub(crate) workload: String,
    /// The workload's SPIFFE ID (empty without mTLS).
    pub(crate) identity: String,
}

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

    pub(crate) const fn index(self) -> usize {
        match self {
            StatusClass::Informational => 0,
            StatusClass::Success => 1,
            StatusClass::Redirection => 2,
            StatusClass::ClientError => 3,
            StatusClass::ServerError => 4,
        }
    }
}

type XdsLabels = [(&'static str, &'static str); 2];

/// The proxy's metrics registry and the handles the data path and config path use.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    routes: Arc<RouteStatsSet>,
    /// Requests answered before any route (no route matched, authorization denied), per
    /// direction.
    unrouted: [Arc<RouteClusterStats>; 2],
    xds_updates: Family<XdsLabels, Counter>,
    tcp: Arc<TcpStatsSet>,
    /// The certificate agent's gauges.
    pub(crate) identity: AgentMetrics,
    authz_denials: Family<XdsLabels, Counter>,
    /// Access log and taps.
    pub(crate) events: Arc<Events>,
}

impl Metrics {
    /// Creates and registers every metric; `local` labels the local side of requests, requests
    /// are logged in `access_log` format (a Tokio runtime must be running then) and traced by
    /// `tracer`.
    pub(crate) fn new(
        local: LocalWorkload,
        access_log: Option<AccessLogFormat>,
        tracer: Option<Tracer>,
    ) -> Self {
        let mut registry = Registry::default();
        if let Some(tracer) = &tracer {
            let (exported, dropped) = tracer.counters();
            registry.register(
                "trellis_trace_spans_exported",
                "Spans the collector accepted",
                ReadAtScrape::counter(exported),
            );
            registry.register(
                "trellis_trace_spans_dropped",
                "Spans dropped: the export queue was full or the collector failed",
                ReadAtScrape::counter(dropped),
            );
        }
        let events = Arc::new(Events::new(access_log, tracer));
        registry.register(
            "trellis_access_log_dropped",
            "Access log lines dropped because stdout could not keep up",
            ReadAtScrape::counter(events.dropped()),
        );
        let watched = events.clone();
        registry.register(
            "trellis_tap_watchers",
            "Live taps open on the admin server",
            ReadAtScrape {
                kind: MetricType::Gauge,
                read: Box::new(move || watched.watchers() as u64),
            },
        );
        let routes = Arc::new(RouteStatsSet::new(local));
        let unrouted = [Direction::Inbound, Direction::Outbound].map(|d| routes.handle(d, "", ""));
        let xds_updates = Family::<XdsLabels, Counter>::default();
        let tcp = Arc::new(TcpStatsSet::default());
        registry.register(
            "trellis_xds_updates",
            "xDS responses applied (ack) or rejected (nack), by type",
            xds_updates.clone(),
        );
        registry.register_collector(Box::new(routes.clone()));
        registry.register_collector(Box::new(tcp.clone()));
        registry.register_collector(Box::new(ProcessCollector::new()));
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
            unrouted,
            xds_updates,
            tcp,
            identity,
            authz_denials,
            events,
        }
    }

    /// Counts a request or connection refused by authorization (`protocol`: http, grpc, tcp).
    pub(crate) fn authz_denied(&self, direction: Direction, protocol: &'static str) {
        self.authz_denials
            .get_or_create(&[("direction", direction.as_str()), ("protocol", protocol)])
            .inc();
    }

    /// The stats handle for a route×cluster in one direction (created on first use); a route's
    /// own replies (redirects, faults) use an empty cluster.
    pub(crate) fn route_stats(
        &self,
        direction: Direction,
        route: &str,
        cluster: &str,
    ) -> Arc<RouteClusterStats> {
        self.routes.handle(direction, route, cluster)
    }

    /// The local workload's SPIFFE ID (empty without mTLS).
    pub(crate) fn local_identity(&self) -> &str {
        &self.routes.local().identity
    }

    /// The stats of requests answered before a route was chosen.
    pub(crate) fn unrouted(&self, direction: Direction) -> &RouteClusterStats {
        &self.unrouted[direction.index()]
    }

    /// The connection and byte counters of a TCP proxy's cluster.
    pub(crate) fn tcp_stats(&self, direction: Direction, cluster: &str) -> Arc<TcpStats> {
        self.tcp.handle(direction, cluster)
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

    /// Request statistics per route, cluster and peer, as the admin `/stats` serves them.
    pub(crate) fn proxy_stats(&self) -> trellis_metrics::stats::ProxyStats {
        self.routes.stats()
    }

    /// Prometheus/OpenMetrics text of every metric, with the clusters of `table`.
    pub(crate) fn encode(&self, table: &Arc<Table>) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)?;
        let mut clusters = Registry::default();
        clusters.register_collector(Box::new(clusters::ClusterCollector(table.clone())));
        prometheus_client::encoding::text::encode_registry(&mut out, &clusters)?;
        prometheus_client::encoding::text::encode_eof(&mut out)?;
        Ok(out)
    }
}

/// A counter or gauge read at scrape time.
struct ReadAtScrape {
    kind: MetricType,
    read: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl ReadAtScrape {
    /// A counter kept in a shared atomic.
    fn counter(n: Arc<AtomicU64>) -> Self {
        Self {
            kind: MetricType::Counter,
            read: Box::new(move || n.load(Ordering::Relaxed)),
        }
    }
}

impl std::fmt::Debug for ReadAtScrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadAtScrape({:?}, {})", self.kind, (self.read)())
    }
}

impl EncodeMetric for ReadAtScrape {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let n = (self.read)();
        match self.kind {
            MetricType::Counter => encoder.encode_counter::<NoLabelSet, _, f64>(&n, None),
            _ => encoder.encode_gauge(&i64::try_from(n).unwrap_or(i64::MAX)),
        }
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }
}

/// `grpc-status`, parsed once: a lookup by `&str` parses the name on every call.
const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The `grpc-status` in `headers` (a trailers-only answer, or trailers), if any.
pub(crate) fn grpc_status(headers: &http::HeaderMap) -> Option<u8> {
    headers
        .get(GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u8>().ok())
}

/// The gRPC status a client reads from an HTTP status that came without `grpc-status`
/// (gRPC's "HTTP to gRPC status code mapping").
pub(crate) fn grpc_from_http(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn stats_record_and_encode() {
        let local = LocalWorkload {
            service: "web".into(),
            namespace: "shop".into(),
            workload: "web-1".into(),
            identity: "spiffe://td/ns/shop/sa/web".into(),
        };
        let m = Metrics::new(local, None, None);
        let h = m.route_stats(Direction::Outbound, "r1", "outbound|api.shop");
        let counters = h.for_peer(None);
        counters.latency(Duration::from_millis(3));
        counters.response(StatusClass::Success, NOT_GRPC);
        counters.latency(Duration::from_millis(30));
        counters.response(StatusClass::ServerError, NOT_GRPC);
        let inbound = m.route_stats(Direction::Inbound, "in", "inbound|80");
        let peer: Arc<str> = Arc::from("spiffe://td/ns/shop/sa/api");
        let counters = inbound.for_peer(Some(&peer));
        counters.latency(Duration::from_millis(1));
        counters.response(StatusClass::Success, 14);
        m.xds_update("lds", true);
        let snap = m.route_snapshot();
        assert_eq!(snap.len(), 2);
        let out = snap.iter().find(|s| s.route == "r1").unwrap();
        assert_eq!(out.total(), 2);
        assert_eq!(out.success_rate(), Some(0.5));
        let p50 = out.latency_quantile(0.5).unwrap();
        assert!(p50 > 0.0025 && p50 <= 0.005, "p50 {p50}");
        let text = m.encode(&Arc::new(Table::default())).unwrap();
        assert!(
            text.contains(
                r#"trellis_requests_total{direction="outbound",route="r1",cluster="outbound|api.shop",source_service="web",source_namespace="shop",source_workload="web-1",source_identity="spiffe://td/ns/shop/sa/web",destination_service="api",destination_namespace="shop",destination_workload="",destination_identity="",status_class="5xx",grpc_status="",classification="failure"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"trellis_requests_total{direction="inbound",route="in",cluster="inbound|80",source_service="api",source_namespace="shop",source_workload="",source_identity="spiffe://td/ns/shop/sa/api",destination_service="web",destination_namespace="shop",destination_workload="web-1",destination_identity="spiffe://td/ns/shop/sa/web",status_class="2xx",grpc_status="14",classification="failure"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("trellis_request_duration_seconds_bucket"));
        assert!(text.contains(r#"trellis_xds_updates_total{type="lds",result="ack"} 1"#));
        assert!(text.contains("process_resident_memory_bytes"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn http_statuses_map_to_grpc_codes_as_grpc_clients_read_them() {
        assert_eq!(grpc_from_http(StatusCode::SERVICE_UNAVAILABLE), 14);
        assert_eq!(grpc_from_http(StatusCode::NOT_FOUND), 12);
        assert_eq!(grpc_from_http(StatusCode::INTERNAL_SERVER_ERROR), 2);
    }
}

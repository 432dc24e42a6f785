//! Control-plane metrics in Prometheus text format.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use trellis_metrics::ProcessCollector;

/// Buckets of the config-to-ACK latency, 1 ms to 10 s.
const PUSH_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// xDS resource type label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum XdsType {
    lds,
    rds,
    cds,
    eds,
    sds,
}

impl From<trellis_xds::TypeUrl> for XdsType {
    fn from(t: trellis_xds::TypeUrl) -> XdsType {
        match t {
            trellis_xds::TypeUrl::Listener => XdsType::lds,
            trellis_xds::TypeUrl::RouteConfiguration => XdsType::rds,
            trellis_xds::TypeUrl::Cluster => XdsType::cds,
            trellis_xds::TypeUrl::ClusterLoadAssignment => XdsType::eds,
            trellis_xds::TypeUrl::Secret => XdsType::sds,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TypeLabels {
    pub(crate) r#type: XdsType,
}

/// Outcome of a config reload.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum ReloadResult {
    accepted,
    rejected,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReloadLabels {
    pub(crate) result: ReloadResult,
}

/// Every metric the control plane exports.
pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) proxies_connected: Gauge,
    pub(crate) snapshot_updates: Counter,
    pub(crate) acks: Family<TypeLabels, Counter>,
    pub(crate) nacks: Family<TypeLabels, Counter>,
    pub(crate) pushes: Family<TypeLabels, Counter>,
    pub(crate) push_duration: Histogram,
    pub(crate) config_reloads: Family<ReloadLabels, Counter>,
    pub(crate) config_errors: Gauge,
    pub(crate) proxy_taps: Gauge,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut root = Registry::default();
        // Unprefixed: the process metrics keep the names every Prometheus client uses.
        root.register_collector(Box::new(ProcessCollector::new()));
        let registry = root.sub_registry_with_prefix("trellis_control");
        let proxies_connected = Gauge::default();
        let snapshot_updates = Counter::default();
        let acks = Family::<TypeLabels, Counter>::default();
        let nacks = Family::<TypeLabels, Counter>::default();
        let pushes = Family::<TypeLabels, Counter>::default();
        let push_duration = Histogram::new(PUSH_BUCKETS);
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        let config_errors = Gauge::default();
        let proxy_taps = Gauge::default();
        registry.register(
            "proxies_connected",
            "Proxies with an open ADS stream",
            proxies_connected.clone(),
        );
        registry.register(
            "snapshot_updates",
            "Per-proxy snapshots that changed and were published",
            snapshot_updates.clone(),
        );
        registry.register("xds_acks", "ACKs received, by type", acks.clone());
        registry.register("xds_nacks", "NACKs received, by type", nacks.clone());
        registry.register(
            "xds_pushes",
            "xDS responses sent to proxies, by type",
            pushes.clone(),
        );
        registry.register(
            "xds_push_duration_seconds",
            "Time from publishing a proxy's new version of a type to that proxy's ACK of it",
            push_duration.clone(),
        );
        registry.register(
            "config_reloads",
            "Config directory reloads, by result",
            config_reloads.clone(),
        );
        registry.register(
            "config_errors",
            "Errors in the last rejected config load (0 when the files are valid)",
            config_errors.clone(),
        );
        registry.register(
            "proxy_taps",
            "Proxy admin /tap streams open for /api/tap clients",
            proxy_taps.clone(),
        );
        Metrics {
            registry: root,
            proxies_connected,
            snapshot_updates,
            acks,
            nacks,
            pushes,
            push_duration,
            config_reloads,
            config_errors,
            proxy_taps,
        }
    }

    /// Renders the Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

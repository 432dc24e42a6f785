//! Per-cluster resilience counters (retries, timeouts, circuit-breaker overflows, outlier
//! ejections) and requests in flight, read from the current table when scraped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::table::Table;

/// What happened to one cluster's requests, counted since the proxy started (a cluster keeps
/// its counters across config updates).
#[derive(Debug, Default)]
pub(crate) struct ClusterEvents {
    retries: AtomicU64,
    retries_denied: AtomicU64,
    timeouts: AtomicU64,
    overflows: AtomicU64,
    ejections: AtomicU64,
}

impl ClusterEvents {
    /// A retry was sent.
    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// A retry was due but the retry budget had no room.
    pub(crate) fn retry_denied(&self) {
        self.retries_denied.fetch_add(1, Ordering::Relaxed);
    }

    /// A try or a request ran out of time waiting for response headers.
    pub(crate) fn timed_out(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// A circuit breaker refused a request (503, flag UO).
    pub(crate) fn overflowed(&self) {
        self.overflows.fetch_add(1, Ordering::Relaxed);
    }

    /// Outlier detection ejected an endpoint.
    pub(crate) fn ejected(&self) {
        self.ejections.fetch_add(1, Ordering::Relaxed);
    }

    fn values(&self) -> [u64; 5] {
        [
            &self.retries,
            &self.retries_denied,
            &self.timeouts,
            &self.overflows,
            &self.ejections,
        ]
        .map(|n| n.load(Ordering::Relaxed))
    }
}

/// The counters' metric names and help, in the order of [`ClusterEvents::values`].
const COUNTERS: [(&str, &str); 5] = [
    ("trellis_cluster_retries", "Retries sent, by cluster"),
    (
        "trellis_cluster_retries_denied",
        "Retries not sent because the retry budget was used up",
    ),
    (
        "trellis_cluster_timeouts",
        "Tries and requests that timed out waiting for response headers",
    ),
    (
        "trellis_cluster_overflows",
        "Requests refused by a circuit breaker (503, flag UO)",
    ),
    (
        "trellis_cluster_ejections",
        "Endpoints ejected by outlier detection",
    ),
];

/// The clusters of one table, encoded at scrape time.
#[derive(Debug)]
pub(crate) struct ClusterCollector(pub(crate) Arc<Table>);

impl Collector for ClusterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows: Vec<(&str, [u64; 5], u64)> = self
            .0
            .clusters
            .iter()
            .map(|(name, cluster)| {
                let load = cluster.endpoints.load();
                (name.as_str(), load.events.values(), load.active() as u64)
            })
            .collect();
        for (i, (name, help)) in COUNTERS.into_iter().enumerate() {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (cluster, values, _) in &rows {
                family
                    .encode_family(&[("cluster", *cluster)])?
                    .encode_counter::<[(&str, &str); 0], _, f64>(&values[i], None)?;
            }
        }
        let mut active = encoder.encode_descriptor(
            "trellis_cluster_active_requests",
            "Requests (tries) in flight to the cluster",
            None,
            MetricType::Gauge,
        )?;
        for (cluster, _, in_flight) in &rows {
            active
                .encode_family(&[("cluster", *cluster)])?
                .encode_gauge(in_flight)?;
        }
        Ok(())
    }
}

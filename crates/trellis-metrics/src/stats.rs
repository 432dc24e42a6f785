//! The request statistics a proxy serves on its admin `/stats` (JSON), which the control plane
//! collects for `trellis stat`, the dashboard and the service graph: cumulative counters per
//! (direction, route, cluster, peer) with the source and destination the Prometheus labels
//! carry, so that two snapshots subtract into a window.

use serde::{Deserialize, Serialize};

/// Upper bounds (seconds) of the latency histogram buckets; a last `+Inf` bucket follows.
pub const LATENCY_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A proxy's statistics since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyStats {
    /// One entry per (direction, route, cluster, peer) that has seen traffic.
    pub entries: Vec<StatsEntry>,
}

/// Cumulative counters of one (direction, route, cluster, peer).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsEntry {
    /// `inbound` or `outbound`.
    pub direction: String,
    /// Route name (empty for requests answered before routing).
    pub route: String,
    /// Cluster name (empty for replies the proxy made itself).
    pub cluster: String,
    /// Calling service (empty when unknown: a plaintext inbound client).
    pub source_service: String,
    /// Its namespace.
    pub source_namespace: String,
    /// Called service (empty when the cluster is not a mesh service).
    pub destination_service: String,
    /// Its namespace.
    pub destination_namespace: String,
    /// Finished requests.
    pub requests: u64,
    /// Of which failed: 5xx, or a gRPC status other than `OK`.
    pub failures: u64,
    /// Finished requests by status class, `1xx` to `5xx`.
    pub status_classes: [u64; 5],
    /// Latency counts per bucket of [`LATENCY_BOUNDS`] and a last `+Inf` bucket (not
    /// cumulative).
    pub latency: Vec<u64>,
    /// Sum of latencies, in seconds.
    pub latency_sum: f64,
}

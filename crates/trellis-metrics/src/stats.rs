//! The request statistics a proxy serves on its admin `/stats` (JSON), which the control plane
//! collects for `trellis stat`, the dashboard and the service graph: cumulative counters per
//! (direction, route, cluster, peer) with the source and destination the Prometheus labels
//! carry, so that two snapshots subtract into a window.

use serde::{Deserialize, Serialize};

/// Upper bounds (seconds) of the latency histogram buckets; a last `+Inf` bucket follows.
pub const LATENCY_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Quantile `q` (0..=1) of a histogram of per-bucket counts over [`LATENCY_BOUNDS`] and `+Inf`,
/// as Prometheus' `histogram_quantile` computes it: linear within the bucket the rank falls in
/// (from 0 for the first), and the highest finite bound when it falls in `+Inf`. `None` when
/// empty.
pub fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    let mut lower = 0.0;
    for (i, &count) in buckets.iter().enumerate() {
        let Some(&upper) = LATENCY_BOUNDS.get(i) else {
            break;
        };
        if count > 0 && (below + count) as f64 >= rank {
            let within = (rank - below as f64) / count as f64;
            return Some(lower + (upper - lower) * within);
        }
        below += count;
        lower = upper;
    }
    Some(lower)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets_like_prometheus() {
        let mut buckets = [0; LATENCY_BOUNDS.len() + 1];
        assert_eq!(quantile(&buckets, 0.5), None);

        // 20 requests in (0.1, 0.25]: the median is halfway through the bucket.
        buckets[8] = 20;
        let p50 = quantile(&buckets, 0.5).unwrap();
        assert!((p50 - 0.175).abs() < 1e-12, "{p50}");
        let p99 = quantile(&buckets, 0.99).unwrap();
        assert!((p99 - (0.1 + 0.15 * 0.99)).abs() < 1e-12, "{p99}");

        // The first bucket starts at 0; empty buckets in between are skipped.
        let mut buckets = [0; LATENCY_BOUNDS.len() + 1];
        buckets[0] = 50;
        buckets[10] = 50;
        assert_eq!(quantile(&buckets, 0.25), Some(0.00025));
        assert_eq!(quantile(&buckets, 0.5), Some(0.0005));
        assert_eq!(quantile(&buckets, 0.75), Some(0.5 + 0.5 * 0.5));

        // Past the last bound: the last bound, as Prometheus answers.
        let mut buckets = [0; LATENCY_BOUNDS.len() + 1];
        buckets[LATENCY_BOUNDS.len()] = 3;
        assert_eq!(quantile(&buckets, 0.5), Some(10.0));
    }
}

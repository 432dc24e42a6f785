//! Compiles the `envoy.filters.network.tcp_proxy` network filter: its cluster or weighted
//! clusters, each with a pre-created connection counter.

use std::sync::Arc;

use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier;

use super::weighted::Weighted;
use super::{FieldError, reject_set};
use crate::telemetry::{Direction, Metrics, TcpStats};

/// A compiled TCP proxy filter.
#[derive(Debug)]
pub(crate) struct TcpConfig {
    /// `stat_prefix`.
    pub(crate) stat_prefix: String,
    /// Where connections go.
    pub(crate) clusters: Weighted<TcpTarget>,
}

/// One cluster a TCP proxy sends to.
#[derive(Debug)]
pub(crate) struct TcpTarget {
    /// Cluster name.
    pub(crate) cluster: String,
    /// Connection and byte counters for this listener direction and cluster.
    pub(crate) stats: Arc<TcpStats>,
}

impl TcpConfig {
    /// Compiles `t` for a listener of `direction`.
    #[allow(deprecated)]
    pub(crate) fn compile(
        t: &TcpProxy,
        direction: Direction,
        metrics: &Metrics,
    ) -> Result<Self, FieldError> {
        reject_set(&[
            ("on_demand", t.on_demand.is_some()),
            ("metadata_match", t.metadata_match.is_some()),
            ("idle_timeout", t.idle_timeout.is_some()),
            (
                "downstream_idle_timeout",
                t.downstream_idle_timeout.is_some(),
            ),
            ("upstream_idle_timeout", t.upstream_idle_timeout.is_some()),
            ("max_connect_attempts", t.max_connect_attempts.is_some()),
            ("hash_policy", !t.hash_policy.is_empty()),
            ("tunneling_config", t.tunneling_config.is_some()),
            (
                "max_downstream_connection_duration",
                t.max_downstream_connection_duration.is_some(),
            ),
        ])?;
        let target = |cluster: &str| TcpTarget {
            cluster: cluster.to_owned(),
            stats: metrics.tcp_stats(direction, cluster),
        };
        let clusters = match &t.cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => Weighted::single(target(c)),
            Some(ClusterSpecifier::WeightedClusters(wc)) => {
                let mut items = Vec::with_capacity(wc.clusters.len());
                for (i, c) in wc.clusters.iter().enumerate() {
                    let field = format!("weighted_clusters.clusters[{i}]");
                    reject_set(&[("metadata_match", c.metadata_match.is_some())])
                        .map_err(|e| e.at(&field))?;
                    if c.name.is_empty() {
                        return Err(FieldError::new(
                            format!("{field}.name"),
                            "must not be empty",
                        ));
                    }
                    items.push((c.weight, target(&c.name)));
                }
                Weighted::new(items).map_err(|e| e.at("weighted_clusters"))?
            }
            _ => {
                return Err(FieldError::new(
                    "cluster_specifier",
                    "cluster or weighted_clusters is required",
                ));
            }
        };
        Ok(Self {
            stat_prefix: t.stat_prefix.clone(),
            clusters,
        })
    }
}

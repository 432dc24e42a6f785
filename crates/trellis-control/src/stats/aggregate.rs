//! The figures `/api/stats` serves: the proxies' windowed counts grouped by service, by route
//! or by edge (caller → callee), with success rate, request rate and latency quantiles. A pure
//! function of the deltas and the registry's proxy counts.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use trellis_metrics::stats::quantile;

use super::history::{Counters, Delta, Direction, SeriesKey};

/// What the rows of a [`StatsReport`] are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatsBy {
    /// One row per service, from the requests its own proxies received (inbound).
    Service,
    /// One row per (service, route), from the requests its proxies received.
    Route,
    /// One row per (caller, callee) pair, from the requests callers' proxies sent (outbound):
    /// the edges of the service graph.
    Edge,
}

impl FromStr for StatsBy {
    type Err = String;

    fn from_str(s: &str) -> Result<StatsBy, String> {
        match s {
            "service" => Ok(StatsBy::Service),
            "route" => Ok(StatsBy::Route),
            "edge" => Ok(StatsBy::Edge),
            _ => Err(format!("`by` is one of service, route, edge; found `{s}`")),
        }
    }
}

impl fmt::Display for StatsBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StatsBy::Service => "service",
            StatsBy::Route => "route",
            StatsBy::Edge => "edge",
        })
    }
}

/// The answer of `GET /api/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// What the rows are.
    pub by: StatsBy,
    /// The window asked for, in seconds; each proxy's figures span the part of it between its
    /// oldest and newest snapshots in it.
    pub window_seconds: f64,
    /// Proxies whose counts are in the report (those with two snapshots in the window).
    pub proxies: usize,
    /// Sorted by namespace, service, then route or caller.
    pub rows: Vec<StatsRow>,
}

/// The answer of `GET /api/stats/series`: the report of each step back over what the control
/// plane keeps, for charts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsSeries {
    /// What the rows are.
    pub by: StatsBy,
    /// The window of each point, in seconds.
    pub window_seconds: f64,
    /// The time between points, in seconds.
    pub step_seconds: f64,
    /// Oldest first; a time at which no proxy had two snapshots in the window has no point.
    pub points: Vec<SeriesPoint>,
}

/// The report over the window that ended `age_seconds` before the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// How long before the answer the window ended, in seconds.
    pub age_seconds: f64,
    /// Proxies whose counts are in the point.
    pub proxies: usize,
    /// As in [`StatsReport::rows`].
    pub rows: Vec<StatsRow>,
}

/// Golden signals of one service, route or edge over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsRow {
    /// The service that answered the requests (by edge: the callee; empty when the caller's
    /// proxy sent them to a cluster that is no mesh service).
    pub service: String,
    /// Its namespace.
    pub namespace: String,
    /// By route: the route's name (empty for requests answered before routing, such as
    /// authorization denials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// By edge: the calling service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_service: Option<String>,
    /// By edge: its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    /// Connected proxies of the service (by edge: of the calling service).
    pub meshed: usize,
    /// Requests finished in the window.
    pub requests: u64,
    /// Of which failed: 5xx, or a gRPC status other than `OK`.
    pub failures: u64,
    /// `1 - failures / requests`; `null` without requests.
    pub success_rate: Option<f64>,
    /// Requests per second (each proxy's count over its own span, summed).
    pub rps: f64,
    /// Median time to response headers, in seconds, interpolated within its histogram bucket;
    /// `null` without requests.
    pub latency_p50_seconds: Option<f64>,
    /// 95th percentile, in seconds.
    pub latency_p95_seconds: Option<f64>,
    /// 99th percentile, in seconds.
    pub latency_p99_seconds: Option<f64>,
}

/// A service by (name, namespace).
pub(crate) type ServiceKey = (String, String);

/// What a row groups: its service, and its route or its caller.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RowKey {
    namespace: String,
    service: String,
    route: Option<String>,
    source: Option<ServiceKey>,
}

impl RowKey {
    fn of(by: StatsBy, key: &SeriesKey) -> Option<RowKey> {
        let inbound = key.direction == Direction::Inbound;
        let (route, source) = match by {
            StatsBy::Service if inbound => (None, None),
            StatsBy::Route if inbound => (Some(key.route.clone()), None),
            StatsBy::Edge if !inbound => {
                let source = (key.source_service.clone(), key.source_namespace.clone());
                (None, Some(source))
            }
            _ => return None,
        };
        Some(RowKey {
            namespace: key.destination_namespace.clone(),
            service: key.destination_service.clone(),
            route,
            source,
        })
    }

    /// Whether `filter` (`NAME` or `NAME.NAMESPACE`) names the row's service or caller.
    fn matches(&self, filter: &str) -> bool {
        let names = |name: &str, namespace: &str| {
            filter == name || filter.split_once('.') == Some((name, namespace))
        };
        names(&self.service, &self.namespace)
            || self.source.as_ref().is_some_and(|(s, ns)| names(s, ns))
    }
}

#[derive(Default)]
struct Sum {
    counters: Counters,
    rps: f64,
}

/// Groups the proxies' deltas into rows. `meshed` counts the connected proxies per service; by
/// service, each of them has a row even without requests. `filter` keeps the rows of one
/// service (`NAME` or `NAME.NAMESPACE`; by edge, as caller or callee).
pub(crate) fn report(
    by: StatsBy,
    window_seconds: f64,
    deltas: &[Delta],
    meshed: &BTreeMap<ServiceKey, usize>,
    filter: Option<&str>,
) -> StatsReport {
    let mut sums: BTreeMap<RowKey, Sum> = BTreeMap::new();
    for delta in deltas {
        for (key, counters) in &delta.series {
            let Some(row) = RowKey::of(by, key) else {
                continue;
            };
            let sum = sums.entry(row).or_default();
            sum.counters.add(counters);
            sum.rps += counters.requests as f64 / delta.seconds;
        }
    }
    if by == StatsBy::Service {
        for (service, namespace) in meshed.keys() {
            let row = RowKey {
                namespace: namespace.clone(),
                service: service.clone(),
                route: None,
                source: None,
            };
            sums.entry(row).or_default();
        }
    }
    let rows = sums
        .into_iter()
        .filter(|(key, _)| filter.is_none_or(|f| key.matches(f)))
        .map(|(key, sum)| {
            let of = key
                .source
                .clone()
                .unwrap_or_else(|| (key.service.clone(), key.namespace.clone()));
            let c = &sum.counters;
            StatsRow {
                meshed: meshed.get(&of).copied().unwrap_or_default(),
                requests: c.requests,
                failures: c.failures,
                success_rate: (c.requests > 0)
                    .then(|| 1.0 - c.failures.min(c.requests) as f64 / c.requests as f64),
                rps: sum.rps,
                latency_p50_seconds: quantile(&c.latency[..], 0.50),
                latency_p95_seconds: quantile(&c.latency[..], 0.95),
                latency_p99_seconds: quantile(&c.latency[..], 0.99),
                source_namespace: key.source.as_ref().map(|(_, ns)| ns.clone()),
                source_service: key.source.map(|(s, _)| s),
                route: key.route,
                service: key.service,
                namespace: key.namespace,
            }
        })
        .collect();
    StatsReport {
        by,
        window_seconds,
        proxies: deltas.len(),
        rows,
    }
}

#[cfg(test)]
mod tests;

//! Request statistics collected from the proxies: a task that reads every connected proxy's
//! admin `GET /stats` each interval and keeps about two minutes of snapshots per proxy, from
//! which `/api/stats` computes windowed golden signals by service, route or edge, and
//! `/api/stats/series` the same every step back over those two minutes.
//!
//! Memory is bounded per connected proxy: at most `RETENTION / interval + 2` snapshots (62 at
//! the default 2 s) of at most [`MAX_SERIES`](history::MAX_SERIES) series each, a series being
//! 144 bytes of counters plus a key shared by every snapshot that has it. A proxy with 20
//! series (routes × callers) costs ~175 KiB, the worst case ~9 MiB; a proxy's history is
//! dropped when it disconnects.

mod aggregate;
mod api;
mod history;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use trellis_metrics::stats::ProxyStats;

use crate::control::ControlPlane;
use crate::proxy_admin;
use aggregate::ServiceKey;
use history::History;

pub use aggregate::{SeriesPoint, StatsBy, StatsReport, StatsRow, StatsSeries};
pub(crate) use api::router;

/// How often the proxies are read unless [`ControlOptions`](crate::ControlOptions) says
/// otherwise.
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(2);

/// How far back snapshots are kept: the longest window `/api/stats` answers for.
pub const STATS_RETENTION: Duration = Duration::from_secs(120);

/// Proxies read at the same time; a round over many silent proxies takes
/// `proxies / CONCURRENCY` × [`proxy_admin::TIMEOUT`] (1 s).
const CONCURRENCY: usize = 32;

/// A connected proxy as the collector sees it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) node_id: String,
    pub(crate) service: String,
    pub(crate) namespace: String,
    /// The admin address the proxy advertised, if any.
    pub(crate) admin: Option<String>,
}

/// A proxy's history is kept under its node id and admin address: a proxy reconnecting over a
/// new ADS stream keeps it, a restarted one on a new port starts afresh.
type ProxyKey = (String, String);

/// The proxies' snapshots, and the task that takes them.
pub(crate) struct Collector {
    control: Arc<ControlPlane>,
    interval: Duration,
    histories: Mutex<BTreeMap<ProxyKey, History>>,
}

impl Collector {
    /// A collector of the proxies registered in `control`, reading them every `interval`.
    pub(crate) fn new(control: Arc<ControlPlane>, interval: Duration) -> Collector {
        Collector {
            control,
            interval,
            histories: Mutex::default(),
        }
    }

    fn histories(&self) -> MutexGuard<'_, BTreeMap<ProxyKey, History>> {
        // Every update under the lock is whole: a panic elsewhere leaves consistent data.
        self.histories.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the proxies every interval until aborted; a zero interval reads nothing.
    pub(crate) fn spawn(self: &Arc<Self>) -> Option<JoinHandle<()>> {
        if self.interval.is_zero() {
            return None;
        }
        let collector = self.clone();
        Some(tokio::spawn(async move {
            let mut every = tokio::time::interval(collector.interval);
            // A slow round (proxies timing out) delays the next rather than bunching them.
            every.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                collector.round().await;
            }
        }))
    }

    /// Connected proxies that advertised an admin address.
    fn targets(&self) -> Vec<ProxyKey> {
        let targets = self.control.stats_targets().into_iter();
        targets
            .filter_map(|t| Some((t.node_id, t.admin?)))
            .collect()
    }

    /// Reads every connected proxy once, [`CONCURRENCY`] at a time; one that does not answer
    /// is skipped this round.
    async fn round(&self) {
        let targets = self.targets();
        let connected: BTreeSet<&ProxyKey> = targets.iter().collect();
        self.histories().retain(|key, _| connected.contains(key));
        futures_util::stream::iter(targets)
            .map(|key| async move {
                let answer = read(&key.1).await;
                (key, answer)
            })
            .buffer_unordered(CONCURRENCY)
            .for_each(|(key, answer)| async move {
                match answer {
                    Ok(stats) => {
                        let at = Instant::now();
                        self.histories()
                            .entry(key)
                            .or_insert_with(|| History::new(STATS_RETENTION, self.interval))
                            .push(stats, at);
                    }
                    Err(e) => {
                        tracing::debug!(node = %key.0, admin = %key.1, error = %e, "proxy stats not read");
                    }
                }
            })
            .await;
    }

    /// The connected proxies' figures over the last `window`, grouped `by`; `filter` keeps one
    /// service's rows.
    pub(crate) fn report(
        &self,
        by: StatsBy,
        window: Duration,
        filter: Option<&str>,
    ) -> StatsReport {
        let (meshed, connected) = self.connected();
        let now = Instant::now();
        let deltas: Vec<_> = self
            .histories()
            .iter()
            .filter(|(key, _)| connected.contains(*key))
            .filter_map(|(_, history)| history.delta(window, now))
            .collect();
        aggregate::report(by, window.as_secs_f64(), &deltas, &meshed, filter)
    }

    /// The report over `window` every `step` back over the retention, oldest first (at most
    /// `STATS_RETENTION / step + 1` points); the services' proxy counts are today's.
    pub(crate) fn series(
        &self,
        by: StatsBy,
        window: Duration,
        step: Duration,
        filter: Option<&str>,
    ) -> StatsSeries {
        let (meshed, connected) = self.connected();
        let now = Instant::now();
        let steps = STATS_RETENTION.saturating_sub(window).as_secs_f64() / step.as_secs_f64();
        let ages = (0..=steps as u32).rev().map(|k| step * k);
        // Copies of the rings (a reference count per snapshot) are taken under the lock; the
        // deltas, many per proxy, are computed without holding it.
        let histories: Vec<History> = self
            .histories()
            .iter()
            .filter(|(key, _)| connected.contains(*key))
            .map(|(_, history)| history.clone())
            .collect();
        let deltas: Vec<(Duration, Vec<_>)> = ages
            .filter_map(|age| Some((age, now.checked_sub(age)?)))
            .map(|(age, end)| {
                let of_proxies = histories.iter().filter_map(|h| h.delta(window, end));
                (age, of_proxies.collect())
            })
            .collect();
        let points = deltas
            .into_iter()
            .filter(|(_, deltas)| !deltas.is_empty())
            .map(|(age, deltas)| {
                let report = aggregate::report(by, window.as_secs_f64(), &deltas, &meshed, filter);
                SeriesPoint {
                    age_seconds: age.as_secs_f64(),
                    proxies: report.proxies,
                    rows: report.rows,
                }
            })
            .collect();
        StatsSeries {
            by,
            window_seconds: window.as_secs_f64(),
            step_seconds: step.as_secs_f64(),
            points,
        }
    }

    /// Connected proxies per service, and the keys of those the collector reads.
    fn connected(&self) -> (BTreeMap<ServiceKey, usize>, BTreeSet<ProxyKey>) {
        let targets = self.control.stats_targets();
        let mut meshed = BTreeMap::new();
        for t in &targets {
            *meshed
                .entry((t.service.clone(), t.namespace.clone()))
                .or_default() += 1;
        }
        let connected = targets
            .into_iter()
            .filter_map(|t| Some((t.node_id, t.admin?)))
            .collect();
        (meshed, connected)
    }
}

/// Why a proxy's stats were not read this round.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    /// Its admin server did not answer, or not with 2xx.
    #[error(transparent)]
    Admin(#[from] proxy_admin::ProxyAdminError),
    /// The answer is not the stats JSON (a proxy of another version).
    #[error("its /stats is not the stats JSON: {0}")]
    Decode(#[from] serde_json::Error),
}

/// A proxy's `/stats`, within [`proxy_admin::TIMEOUT`].
async fn read(admin: &str) -> Result<ProxyStats, ReadError> {
    let body = proxy_admin::get(Some(admin), "/stats").await?;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests;

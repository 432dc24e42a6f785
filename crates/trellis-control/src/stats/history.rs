//! One proxy's recent `/stats` snapshots in a bounded ring, and the difference between two of
//! them: what the proxy counted within a window.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use trellis_metrics::stats::{LATENCY_BOUNDS, ProxyStats, StatsEntry};

/// Latency buckets per series: one per bound of [`LATENCY_BOUNDS`], then `+Inf`.
pub(crate) const BUCKETS: usize = LATENCY_BOUNDS.len() + 1;

/// Series kept per snapshot; a proxy reporting more (thousands of routes × peers) has the rest
/// left out, so one proxy cannot grow the control plane's memory without bound.
pub(crate) const MAX_SERIES: usize = 1024;

/// Which side of the proxy a request crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Direction {
    /// Into the proxy's own workload.
    Inbound,
    /// From its workload to another service.
    Outbound,
}

/// What the aggregations group by; the proxy's clusters and peer identities are summed away.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SeriesKey {
    pub(crate) direction: Direction,
    pub(crate) route: String,
    pub(crate) source_service: String,
    pub(crate) source_namespace: String,
    pub(crate) destination_service: String,
    pub(crate) destination_namespace: String,
}

/// Cumulative counters of one series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    /// Requests per latency bucket (not cumulative).
    pub(crate) latency: [u64; BUCKETS],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            requests: 0,
            failures: 0,
            latency: [0; BUCKETS],
        }
    }
}

impl Counters {
    fn of(entry: &StatsEntry) -> Counters {
        let mut latency = [0u64; BUCKETS];
        for (i, n) in entry.latency.iter().enumerate() {
            // A proxy with more buckets than this control plane knows: the extra ones are
            // above the last bound this side knows, so they count as +Inf.
            let slot = &mut latency[i.min(BUCKETS - 1)];
            *slot = slot.saturating_add(*n);
        }
        Counters {
            requests: entry.requests,
            failures: entry.failures,
            latency,
        }
    }

    pub(crate) fn add(&mut self, other: &Counters) {
        self.requests = self.requests.saturating_add(other.requests);
        self.failures = self.failures.saturating_add(other.failures);
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            *a = a.saturating_add(b);
        }
    }

    /// `self - earlier`, or `None` when any counter went down (the proxy restarted).
    fn since(&self, earlier: &Counters) -> Option<Counters> {
        let mut latency = [0; BUCKETS];
        for (i, slot) in latency.iter_mut().enumerate() {
            *slot = self.latency[i].checked_sub(earlier.latency[i])?;
        }
        Some(Counters {
            requests: self.requests.checked_sub(earlier.requests)?,
            failures: self.failures.checked_sub(earlier.failures)?,
            latency,
        })
    }

    fn is_zero(&self) -> bool {
        self.requests == 0 && self.latency.iter().all(|n| *n == 0)
    }
}

/// A series as stored: keys are shared with the previous snapshot's, so a ring of snapshots
/// of an unchanged proxy holds each key once.
pub(crate) type Series = (Arc<SeriesKey>, Counters);

/// One `/stats` answer.
#[derive(Debug)]
struct Snapshot {
    at: Instant,
    /// Sorted by key.
    series: Vec<Series>,
}

impl Snapshot {
    fn get(&self, key: &SeriesKey) -> Option<&Series> {
        let found = self.series.binary_search_by(|(k, _)| k.as_ref().cmp(key));
        found.ok().map(|i| &self.series[i])
    }
}

/// What a proxy counted between two of its snapshots.
#[derive(Debug, Clone)]
pub(crate) struct Delta {
    /// Seconds between the two snapshots.
    pub(crate) seconds: f64,
    /// Series that saw requests, with what they counted.
    pub(crate) series: Vec<Series>,
}

/// A proxy's snapshots, oldest first, at most `capacity` and none older than the retention.
/// Snapshots never change once taken, so a copy of the ring (to read it without holding the
/// collector's lock) costs a reference count per snapshot.
#[derive(Debug, Clone)]
pub(crate) struct History {
    snapshots: VecDeque<Arc<Snapshot>>,
    capacity: usize,
    retention: Duration,
}

impl History {
    /// A ring keeping `retention` of snapshots taken every `interval` (and never more than
    /// that many, however often `push` is called).
    pub(crate) fn new(retention: Duration, interval: Duration) -> History {
        let every = interval.max(Duration::from_millis(1)).as_secs_f64();
        // One more than the retention needs, so a full-retention window still has its base.
        let capacity = (retention.as_secs_f64() / every).ceil() as usize + 2;
        History {
            snapshots: VecDeque::new(),
            capacity,
            retention,
        }
    }

    /// Adds the proxy's answer read at `at`, dropping what is past the retention.
    pub(crate) fn push(&mut self, stats: ProxyStats, at: Instant) {
        let mut merged: BTreeMap<SeriesKey, Counters> = BTreeMap::new();
        for entry in stats.entries {
            let direction = match entry.direction.as_str() {
                "inbound" => Direction::Inbound,
                "outbound" => Direction::Outbound,
                _ => continue,
            };
            let counters = Counters::of(&entry);
            let key = SeriesKey {
                direction,
                route: entry.route,
                source_service: entry.source_service,
                source_namespace: entry.source_namespace,
                destination_service: entry.destination_service,
                destination_namespace: entry.destination_namespace,
            };
            if merged.len() >= MAX_SERIES && !merged.contains_key(&key) {
                continue;
            }
            merged.entry(key).or_default().add(&counters);
        }
        let previous = self.snapshots.back();
        let series = merged
            .into_iter()
            .map(|(key, counters)| {
                let shared = previous.and_then(|p| p.get(&key)).map(|(k, _)| k.clone());
                (shared.unwrap_or_else(|| Arc::new(key)), counters)
            })
            .collect();
        self.snapshots.push_back(Arc::new(Snapshot { at, series }));
        while self.snapshots.len() > self.capacity
            || self
                .snapshots
                .front()
                .is_some_and(|s| at.saturating_duration_since(s.at) > self.retention)
        {
            self.snapshots.pop_front();
        }
    }

    /// What the proxy counted within the `window` that ends at `now`: from its oldest snapshot
    /// taken in it to its newest taken by `now` (later ones are left out, so a past `now` gives
    /// a past window); `None` without two snapshots in the window. When a counter went down
    /// between them the proxy restarted, and the newest alone is what it counted (within the
    /// same span).
    pub(crate) fn delta(&self, window: Duration, now: Instant) -> Option<Delta> {
        let newest = self.snapshots.iter().rev().find(|s| s.at <= now)?;
        let in_window = |s: &&Arc<Snapshot>| now.saturating_duration_since(s.at) <= window;
        let oldest = self.snapshots.iter().find(in_window)?;
        if oldest.at >= newest.at {
            return None;
        }
        let seconds = newest.at.duration_since(oldest.at).as_secs_f64();
        let restarted = oldest.series.iter().any(|(key, before)| {
            newest
                .get(key)
                .is_none_or(|(_, now)| now.since(before).is_none())
        });
        let series = newest
            .series
            .iter()
            .filter_map(|(key, now)| {
                let before = oldest.get(key).filter(|_| !restarted);
                let counted = before.map_or(Some(*now), |(_, before)| now.since(before))?;
                (!counted.is_zero()).then(|| (key.clone(), counted))
            })
            .collect();
        Some(Delta { seconds, series })
    }
}

#[cfg(test)]
mod tests;

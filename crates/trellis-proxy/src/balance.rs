//! The endpoint stage: load balancing over a cluster's serving endpoints. Endpoints are grouped
//! by priority (locality failover): requests go to the first priority with an available
//! endpoint — not ejected by outlier detection, not failing its health check — and, when none
//! is anywhere, to the first priority regardless (Envoy's panic routing). Within a priority:
//! weighted round robin, random, Envoy's least request, Linkerd's P2C over peak-EWMA latency ×
//! (in-flight + 1), a hash ring or a Maglev table. Per-endpoint state outlives config updates.

mod endpoint;
mod hash;
mod outlier;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;
use tokio::time::Instant;

pub(crate) use endpoint::EndpointState;
pub(crate) use hash::{combine as combine_hashes, hash as hash_bytes};
pub(crate) use outlier::Outcome;

use crate::config::cluster::{OutlierConfig, RetryLimit};
use crate::config::endpoint::Assignment;
use crate::config::tls::{ClusterTls, UpstreamTls};
use crate::telemetry::ClusterEvents;

/// Latency charged for a failed request, so a fast-failing endpoint does not attract traffic.
const FAILURE_PENALTY: Duration = Duration::from_secs(1);
/// Extra Maglev lookups for a key whose endpoint is unavailable, before any available one.
const REHASHES: u64 = 8;

/// A cluster's load-balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LbPolicy {
    /// Weighted round robin.
    RoundRobin,
    /// Power of two choices over peak-EWMA cost (Linkerd's balancer; Trellis's default).
    PeakEwma,
    /// Envoy's `LEAST_REQUEST`: the fewest requests in flight (per weight) of `choices` random
    /// endpoints.
    LeastRequest {
        /// Endpoints compared per pick.
        choices: u32,
    },
    /// Uniformly random (weights ignored, as in Envoy).
    Random,
    /// A hash ring over the request's hash key.
    RingHash {
        /// Points for the lightest endpoint's share.
        min_size: u64,
        /// At most this many points.
        max_size: u64,
    },
    /// A Maglev table over the request's hash key.
    Maglev {
        /// Slots (a prime).
        size: u64,
    },
}

impl LbPolicy {
    /// The name, for the config dump.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LbPolicy::RoundRobin => "ROUND_ROBIN",
            LbPolicy::PeakEwma => "PEAK_EWMA",
            LbPolicy::LeastRequest { .. } => "LEAST_REQUEST",
            LbPolicy::Random => "RANDOM",
            LbPolicy::RingHash { .. } => "RING_HASH",
            LbPolicy::Maglev { .. } => "MAGLEV",
        }
    }
}

/// What the balancer needs of a cluster's config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Balancing<'a> {
    /// The algorithm.
    pub(crate) policy: LbPolicy,
    /// Outlier detection, if any.
    pub(crate) outlier: Option<&'a OutlierConfig>,
    /// Whether endpoints are health checked (their availability can change).
    pub(crate) health_checked: bool,
    /// TLS settings per endpoint.
    pub(crate) tls: &'a ClusterTls,
}

/// Balancer state that survives config updates, for one cluster.
#[derive(Debug, Default)]
pub(crate) struct ClusterLbState {
    cursor: Arc<AtomicUsize>,
    load: Arc<ClusterLoad>,
    endpoints: HashMap<SocketAddr, Arc<EndpointState>>,
}

/// Requests, retries and HTTP/1.1 connections in flight to one cluster, across config
/// updates: what the circuit breakers and the retry budget are measured against.
#[derive(Debug, Default)]
pub(crate) struct ClusterLoad {
    /// Retries, timeouts, overflows and ejections, for metrics.
    pub(crate) events: ClusterEvents,
    active: AtomicUsize,
    retries: AtomicUsize,
    connections: AtomicUsize,
    pending: AtomicUsize,
    /// Wakes requests waiting for a connection when one is released.
    released: Notify,
}

impl ClusterLoad {
    /// Requests (tries) in flight.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a request (first try or retry) as active until the guard drops.
    pub(crate) fn request(&self) -> Counted<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        Counted(&self.active)
    }

    /// Counts a request as active if fewer than `max` are; `None` when the cluster is full.
    pub(crate) fn request_within(&self, max: usize) -> Option<Counted<'_>> {
        let before = self.active.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(&self.active);
        (before < max).then_some(counted)
    }

    /// Counts a retry until the guard drops, if `limit` allows one more now.
    pub(crate) fn retry(&self, limit: RetryLimit) -> Option<Counted<'_>> {
        let retries = self.retries.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(&self.retries);
        limit
            .allows(retries, self.active.load(Ordering::Relaxed))
            .then_some(counted)
    }
}

impl ClusterLoad {
    /// Waits for one of `max` connection slots (an HTTP/1.1 request holds one while in
    /// flight); `None` when more than `max_pending` requests would be waiting.
    pub(crate) async fn connection(
        &self,
        max: usize,
        max_pending: Option<usize>,
    ) -> Option<ConnectionSlot<'_>> {
        loop {
            // Registered before checking, so a release in between is not missed.
            let released = self.released.notified();
            if self.connections.fetch_add(1, Ordering::Relaxed) < max {
                return Some(ConnectionSlot(self));
            }
            self.connections.fetch_sub(1, Ordering::Relaxed);
            let before = self.pending.fetch_add(1, Ordering::Relaxed);
            let waiting = Counted(&self.pending);
            if max_pending.is_some_and(|m| before >= m) {
                return None;
            }
            released.await;
            drop(waiting);
        }
    }
}

/// A connection slot of a [`ClusterLoad`]; releasing it wakes a waiting request.
#[derive(Debug)]
pub(crate) struct ConnectionSlot<'a>(&'a ClusterLoad);

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
        self.0.released.notify_one();
    }
}

/// One unit of a [`ClusterLoad`] counter, released on drop.
#[derive(Debug)]
pub(crate) struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoints of one priority and its lookup structures.
#[derive(Debug)]
struct Level {
    range: Range<usize>,
    /// Round-robin order: endpoint indices, each repeated by its weight divided by the weights'
    /// GCD (capped at 100 slots per endpoint to bound the schedule).
    schedule: Vec<usize>,
    ring: Option<hash::Ring>,
    maglev: Option<hash::Maglev>,
}

/// How the proxy speaks to one endpoint.
#[derive(Debug, Clone, Default)]
struct Transport {
    /// mTLS settings; `None` for plaintext.
    tls: Option<Arc<UpstreamTls>>,
    /// Its proxy takes HTTP/1.1 requests carried over HTTP/2.
    h2_upgrade: bool,
}

/// The serving endpoints of a cluster and how to choose among them. Immutable; a config update
/// builds a new one that shares per-endpoint state with the old.
#[derive(Debug)]
pub(crate) struct EndpointSet {
    policy: LbPolicy,
    /// Serving endpoints with weights, by priority (highest first).
    endpoints: Vec<(Arc<EndpointState>, u32)>,
    /// How to speak to each endpoint, parallel to `endpoints`.
    transports: Vec<Transport>,
    levels: Vec<Level>,
    /// Whether availability can vary (outlier detection or health checks).
    checked: bool,
    outlier: Option<OutlierConfig>,
    cursor: Arc<AtomicUsize>,
    load: Arc<ClusterLoad>,
}

impl EndpointSet {
    /// Builds the set for `assignment`'s serving endpoints, reusing (and pruning) `state`.
    pub(crate) fn build(
        balancing: Balancing<'_>,
        assignment: Option<&Assignment>,
        state: &mut ClusterLbState,
    ) -> Self {
        let now = Instant::now();
        let mut serving: Vec<_> = assignment
            .into_iter()
            .flat_map(|a| a.endpoints.iter())
            .filter(|e| e.healthy)
            .collect();
        serving.sort_by_key(|e| e.priority);
        let mut kept = HashMap::new();
        let mut endpoints = Vec::with_capacity(serving.len());
        let mut transports = Vec::with_capacity(serving.len());
        let mut levels = Vec::new();
        for (i, e) in serving.iter().enumerate() {
            let s = state
                .endpoints
                .get(&e.addr)
                .cloned()
                .unwrap_or_else(|| Arc::new(EndpointState::new(e.addr, now, true)));
            kept.insert(e.addr, s.clone());
            endpoints.push((s, e.weight));
            transports.push(Transport {
                tls: balancing.tls.for_endpoint(&e.tls_match),
                h2_upgrade: e.h2_upgrade,
            });
            if i == 0 || serving[i - 1].priority != e.priority {
                levels.push(i..i + 1);
            } else if let Some(last) = levels.last_mut() {
                last.end = i + 1;
            }
        }
        state.endpoints = kept;
        let levels = levels
            .into_iter()
            .map(|range| Level::build(balancing.policy, &endpoints, range))
            .collect();
        Self {
            policy: balancing.policy,
            endpoints,
            transports,
            levels,
            checked: balancing.outlier.is_some() || balancing.health_checked,
            outlier: balancing.outlier.copied(),
            cursor: state.cursor.clone(),
            load: state.load.clone(),
        }
    }

    /// The serving endpoints with their weights.
    pub(crate) fn endpoints(&self) -> impl Iterator<Item = (&EndpointState, u32)> {
        self.endpoints.iter().map(|(e, w)| (e.as_ref(), *w))
    }

    /// Every serving endpoint with its mTLS settings (`None`: plaintext), for health checks.
    pub(crate) fn members(
        &self,
    ) -> impl Iterator<Item = (&Arc<EndpointState>, Option<&Arc<UpstreamTls>>)> {
        self.endpoints
            .iter()
            .zip(&self.transports)
            .map(|((e, _), t)| (e, t.tls.as_ref()))
    }

    /// The cluster's requests and retries in flight.
    pub(crate) fn load(&self) -> &ClusterLoad {
        &self.load
    }

    /// Chooses an endpoint for one request; `None` when there is none. `key` is the request's
    /// hash (hash policies); without one, hashing balancers pick at random.
    pub(crate) fn pick(&self, key: Option<u64>) -> Option<InFlight> {
        self.pick_at(Instant::now(), key, 0)
    }

    /// Chooses an endpoint that `avoid` does not refuse, if one comes up within `picks` picks;
    /// else the last one picked. Hashing balancers move along the ring (or rehash) per pick.
    pub(crate) fn pick_avoiding(
        &self,
        avoid: impl Fn(SocketAddr) -> bool,
        picks: u32,
        key: Option<u64>,
    ) -> Option<InFlight> {
        let now = Instant::now();
        let mut picked = self.pick_at(now, key, 0)?;
        for attempt in 1..picks {
            if !avoid(picked.endpoint().addr) {
                break;
            }
            picked = self.pick_at(now, key, attempt)?;
        }
        Some(picked)
    }

    /// Records how an exchange with `in_flight`'s endpoint ended, for outlier detection.
    pub(crate) fn record(&self, in_flight: &InFlight, outcome: Outcome) {
        if let Some(config) = &self.outlier {
            let ejected = outlier::record(
                config,
                &self.endpoints,
                &in_flight.endpoint,
                outcome,
                Instant::now(),
            );
            if ejected {
                self.load.events.ejected();
            }
        }
    }

    fn available(&self, i: usize, now: Instant) -> bool {
        !self.checked || self.endpoints[i].0.available(now)
    }

    fn pick_at(&self, now: Instant, key: Option<u64>, attempt: u32) -> Option<InFlight> {
        // With nothing available anywhere, every endpoint of the first level is used (panic).
        let (level, panic) = if self.checked {
            let serving = self
                .levels
                .iter()
                .find(|l| l.range.clone().any(|i| self.endpoints[i].0.available(now)));
            match serving {
                Some(level) => (level, false),
                None => (self.levels.first()?, true),
            }
        } else {
            (self.levels.first()?, false)
        };
        let usable = |i: usize| panic || self.available(i, now);
        let index = match (self.policy, level.range.len()) {
            (_, 0) => return None,
            (_, 1) => level.range.start,
            (LbPolicy::RoundRobin, _) => self.round_robin(level, &usable),
            (LbPolicy::Random, _) => random_usable(&level.range, &usable),
            (LbPolicy::PeakEwma, _) => self.two_choices(&level.range, &usable, |i| {
                self.endpoints[i].0.cost(self.endpoints[i].1, now)
            }),
            (LbPolicy::LeastRequest { choices }, _) => {
                let load = |i: usize| {
                    let (e, w) = &self.endpoints[i];
                    e.in_flight() as f64 / f64::from((*w).max(1))
                };
                (1..choices.max(2)).fold(random_usable(&level.range, &usable), |best, _| {
                    let other = random_usable(&level.range, &usable);
                    if load(other) < load(best) {
                        other
                    } else {
                        best
                    }
                })
            }
            (LbPolicy::RingHash { .. }, _) => {
                let key = key.unwrap_or_else(rand::random);
                let ring = level.ring.as_ref()?;
                let mut owners = ring
                    .walk(key)
                    .map(|i| level.range.start + i)
                    .filter(|i| usable(*i));
                if attempt == 0 {
                    owners.next().unwrap_or(level.range.start)
                } else {
                    // Retries move on to the next distinct endpoints along the ring.
                    let mut seen = Vec::new();
                    owners
                        .filter(|i| {
                            let fresh = !seen.contains(i);
                            if fresh {
                                seen.push(*i);
                            }
                            fresh
                        })
                        .nth(attempt as usize % level.range.len())
                        .unwrap_or(level.range.start)
                }
            }
            (LbPolicy::Maglev { .. }, _) => {
                let key = key.unwrap_or_else(rand::random);
                let table = level.maglev.as_ref()?;
                (u64::from(attempt)..u64::from(attempt) + REHASHES)
                    .filter_map(|n| {
                        let k = if n == 0 {
                            key
                        } else {
                            hash::combine(key, hash::mix(n))
                        };
                        table.lookup(k).map(|i| level.range.start + i)
                    })
                    .find(|i| usable(*i))
                    .unwrap_or_else(|| random_usable(&level.range, &usable))
            }
        };
        let endpoint = self.endpoints[index].0.clone();
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight {
            endpoint,
            transport: self.transports.get(index).cloned().unwrap_or_default(),
            started: now,
        })
    }

    fn round_robin(&self, level: &Level, usable: &impl Fn(usize) -> bool) -> usize {
        let len = level.schedule.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|k| level.schedule[(start + k) % len])
            .find(|i| usable(*i))
            .unwrap_or(level.schedule[start % len])
    }

    fn two_choices(
        &self,
        range: &Range<usize>,
        usable: &impl Fn(usize) -> bool,
        cost: impl Fn(usize) -> f64,
    ) -> usize {
        let a = random_usable(range, usable);
        let mut rng = rand::rng();
        let offset = rng.random_range(1..range.len());
        let b = range.start + (a - range.start + offset) % range.len();
        let b = if usable(b) { b } else { a };
        if cost(b) < cost(a) { b } else { a }
    }
}

impl Level {
    fn build(
        policy: LbPolicy,
        endpoints: &[(Arc<EndpointState>, u32)],
        range: Range<usize>,
    ) -> Level {
        let members = &endpoints[range.clone()];
        let gcd = members.iter().fold(0, |g, (_, w)| gcd(g, *w)).max(1);
        let schedule = members
            .iter()
            .enumerate()
            .flat_map(|(i, (_, w))| {
                std::iter::repeat_n(range.start + i, (*w / gcd).min(100) as usize)
            })
            .collect();
        let names: Vec<String> = members.iter().map(|(e, _)| e.addr.to_string()).collect();
        let weights: Vec<u32> = members.iter().map(|(_, w)| *w).collect();
        let (ring, maglev) = match policy {
            LbPolicy::RingHash { min_size, max_size } => (
                Some(hash::Ring::build(&names, &weights, min_size, max_size)),
                None,
            ),
            LbPolicy::Maglev { size } => (None, Some(hash::Maglev::build(&names, &weights, size))),
            _ => (None, None),
        };
        Level {
            range,
            schedule,
            ring,
            maglev,
        }
    }
}

/// A random usable index of `range` (the next usable one after a random start).
fn random_usable(range: &Range<usize>, usable: &impl Fn(usize) -> bool) -> usize {
    let len = range.len();
    let start = rand::rng().random_range(0..len);
    (0..len)
        .map(|k| range.start + (start + k) % len)
        .find(|i| usable(*i))
        .unwrap_or(range.start + start)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A request assigned to an endpoint: counts as in flight until dropped, and feeds the latency
/// estimate when it completes.
#[derive(Debug)]
pub(crate) struct InFlight {
    endpoint: Arc<EndpointState>,
    transport: Transport,
    started: Instant,
}

impl InFlight {
    /// The chosen endpoint.
    pub(crate) fn endpoint(&self) -> &EndpointState {
        &self.endpoint
    }

    /// The mTLS settings towards it; `None` for plaintext.
    pub(crate) fn tls(&self) -> Option<&Arc<UpstreamTls>> {
        self.transport.tls.as_ref()
    }

    /// Whether its proxy takes HTTP/1.1 requests carried over HTTP/2.
    pub(crate) fn h2_upgrade(&self) -> bool {
        self.transport.h2_upgrade
    }

    /// Records the response latency (time to response headers, or to connect for TCP).
    pub(crate) fn succeeded(&self) {
        self.complete_at(Instant::now(), true);
    }

    /// Records a failure (connect error, reset, timeout) with a latency penalty.
    pub(crate) fn failed(&self) {
        self.complete_at(Instant::now(), false);
    }

    fn complete_at(&self, now: Instant, ok: bool) {
        let rtt = now.saturating_duration_since(self.started);
        let rtt = if ok { rtt } else { rtt.max(FAILURE_PENALTY) };
        self.endpoint.observe(rtt, now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;

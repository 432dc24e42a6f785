//! The endpoint stage: load balancing over a cluster's serving endpoints. ROUND_ROBIN is
//! weighted round robin; LEAST_REQUEST is Linkerd's balancer, power of two choices over
//! peak-EWMA latency × (in-flight + 1). Per-endpoint state outlives config updates.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::uri::Authority;
use rand::Rng;
use tokio::time::Instant;

use crate::config::cluster::RetryLimit;
use crate::config::endpoint::Assignment;
use crate::config::tls::{ClusterTls, UpstreamTls};

/// Decay time of the latency estimate (Linkerd's default).
const DECAY: Duration = Duration::from_secs(10);
/// Estimate for endpoints that have not answered yet (Linkerd's default).
const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Latency charged for a failed request, so a fast-failing endpoint does not attract traffic.
const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// A cluster's load-balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LbPolicy {
    /// Weighted round robin.
    RoundRobin,
    /// Power of two choices over peak-EWMA cost (`LEAST_REQUEST`).
    PeakEwma,
}

impl LbPolicy {
    /// The Envoy name, for the config dump.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LbPolicy::RoundRobin => "ROUND_ROBIN",
            LbPolicy::PeakEwma => "LEAST_REQUEST",
        }
    }
}

/// Load-balancing state of one endpoint address, shared by every table that lists it.
#[derive(Debug)]
pub(crate) struct EndpointState {
    /// Where to connect.
    pub(crate) addr: SocketAddr,
    /// `ip:port`, ready for upstream URIs.
    pub(crate) authority: Authority,
    in_flight: AtomicU64,
    rtt: Mutex<PeakEwma>,
}

impl EndpointState {
    fn new(addr: SocketAddr, now: Instant) -> Self {
        // A socket address always renders as a valid authority; fall back to the IP alone rather
        // than panic if that ever changed.
        let authority = Authority::try_from(addr.to_string())
            .unwrap_or_else(|_| Authority::from_static("0.0.0.0"));
        Self {
            addr,
            authority,
            in_flight: AtomicU64::new(0),
            rtt: Mutex::new(PeakEwma::new(now)),
        }
    }

    fn cost(&self, weight: u32, now: Instant) -> f64 {
        // The lock is held for a few float operations; it is per endpoint, not per cluster.
        let estimate = self
            .rtt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cost(now);
        let pending = self.in_flight.load(Ordering::Relaxed) as f64;
        estimate * (pending + 1.0) / f64::from(weight.max(1))
    }

    fn observe(&self, rtt: Duration, now: Instant) {
        self.rtt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(rtt, now);
    }

    /// Requests currently in flight to this endpoint.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Peak-EWMA latency estimate: jumps up to a slower observation at once, decays towards faster
/// ones (and, between observations, towards zero so idle endpoints get probed again).
#[derive(Debug)]
struct PeakEwma {
    estimate_ns: f64,
    updated: Instant,
}

impl PeakEwma {
    fn new(now: Instant) -> Self {
        Self {
            estimate_ns: DEFAULT_RTT.as_nanos() as f64,
            updated: now,
        }
    }

    fn decay(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_nanos() as f64;
        (-elapsed / DECAY.as_nanos() as f64).exp()
    }

    fn cost(&self, now: Instant) -> f64 {
        self.estimate_ns * self.decay(now)
    }

    fn observe(&mut self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        if rtt > self.estimate_ns {
            self.estimate_ns = rtt;
        } else {
            let decay = self.decay(now);
            self.estimate_ns = self.estimate_ns * decay + rtt * (1.0 - decay);
        }
        self.updated = now;
    }
}

/// Balancer state that survives config updates, for one cluster.
#[derive(Debug, Default)]
pub(crate) struct ClusterLbState {
    cursor: Arc<AtomicUsize>,
    load: Arc<ClusterLoad>,
    endpoints: HashMap<SocketAddr, Arc<EndpointState>>,
}

/// Requests and retries in flight to one cluster, across config updates: what the retry
/// budget is measured against.
#[derive(Debug, Default)]
pub(crate) struct ClusterLoad {
    active: AtomicUsize,
    retries: AtomicUsize,
}

impl ClusterLoad {
    /// Counts a request (first try or retry) as active until the guard drops.
    pub(crate) fn request(&self) -> Counted<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        Counted(&self.active)
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

/// One unit of a [`ClusterLoad`] counter, released on drop.
#[derive(Debug)]
pub(crate) struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The serving endpoints of a cluster and how to choose among them. Immutable; a config update
/// builds a new one that shares per-endpoint state with the old.
#[derive(Debug)]
pub(crate) struct EndpointSet {
    policy: LbPolicy,
    endpoints: Vec<(Arc<EndpointState>, u32)>,
    /// mTLS settings per endpoint, parallel to `endpoints` (`None`: plaintext).
    tls: Vec<Option<Arc<UpstreamTls>>>,
    /// Round-robin order: endpoint indices, each repeated by its weight divided by the weights'
    /// GCD (capped at 100 slots per endpoint to bound the schedule).
    schedule: Vec<usize>,
    cursor: Arc<AtomicUsize>,
    load: Arc<ClusterLoad>,
}

impl EndpointSet {
    /// Builds the set for `assignment`'s serving endpoints, reusing (and pruning) `state`.
    pub(crate) fn build(
        policy: LbPolicy,
        assignment: Option<&Assignment>,
        cluster_tls: &ClusterTls,
        state: &mut ClusterLbState,
    ) -> Self {
        let now = Instant::now();
        let mut kept = HashMap::new();
        let tls = assignment
            .into_iter()
            .flat_map(Assignment::serving)
            .map(|e| cluster_tls.for_endpoint(&e.tls_match))
            .collect();
        let endpoints: Vec<(Arc<EndpointState>, u32)> = assignment
            .into_iter()
            .flat_map(Assignment::serving)
            .map(|e| {
                let s = state
                    .endpoints
                    .get(&e.addr)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(EndpointState::new(e.addr, now)));
                kept.insert(e.addr, s.clone());
                (s, e.weight)
            })
            .collect();
        state.endpoints = kept;
        let mut set = Self::from_parts(policy, endpoints, tls, state.cursor.clone());
        set.load = state.load.clone();
        set
    }

    fn from_parts(
        policy: LbPolicy,
        endpoints: Vec<(Arc<EndpointState>, u32)>,
        tls: Vec<Option<Arc<UpstreamTls>>>,
        cursor: Arc<AtomicUsize>,
    ) -> Self {
        let gcd = endpoints.iter().fold(0, |g, (_, w)| gcd(g, *w)).max(1);
        let schedule = endpoints
            .iter()
            .enumerate()
            .flat_map(|(i, (_, w))| std::iter::repeat_n(i, (*w / gcd).min(100) as usize))
            .collect();
        Self {
            policy,
            endpoints,
            tls,
            schedule,
            cursor,
            load: Arc::default(),
        }
    }

    /// The cluster's requests and retries in flight.
    pub(crate) fn load(&self) -> &ClusterLoad {
        &self.load
    }

    /// Chooses an endpoint that `avoid` does not refuse, if one comes up within `picks` picks;
    /// else the last one picked.
    pub(crate) fn pick_avoiding(
        &self,
        avoid: impl Fn(SocketAddr) -> bool,
        picks: u32,
    ) -> Option<InFlight> {
        let mut picked = self.pick()?;
        for _ in 1..picks {
            if !avoid(picked.endpoint().addr) {
                break;
            }
            picked = self.pick()?;
        }
        Some(picked)
    }

    /// The serving endpoints with their weights.
    pub(crate) fn endpoints(&self) -> impl Iterator<Item = (&EndpointState, u32)> {
        self.endpoints.iter().map(|(e, w)| (e.as_ref(), *w))
    }

    /// Chooses an endpoint for one request; `None` when there is none.
    pub(crate) fn pick(&self) -> Option<InFlight> {
        self.pick_at(Instant::now())
    }

    fn pick_at(&self, now: Instant) -> Option<InFlight> {
        let index = match (self.policy, self.endpoints.len()) {
            (_, 0) => return None,
            (_, 1) => 0,
            (LbPolicy::RoundRobin, _) => {
                let n = self.cursor.fetch_add(1, Ordering::Relaxed);
                self.schedule[n % self.schedule.len()]
            }
            (LbPolicy::PeakEwma, len) => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..len);
                let b = (a + rng.random_range(1..len)) % len;
                let cost = |i: usize| self.endpoints[i].0.cost(self.endpoints[i].1, now);
                if cost(b) < cost(a) { b } else { a }
            }
        };
        let endpoint = self.endpoints[index].0.clone();
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight {
            endpoint,
            tls: self.tls.get(index).cloned().flatten(),
            started: now,
        })
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A request assigned to an endpoint: counts as in flight until dropped, and feeds the latency
/// estimate when it completes.
#[derive(Debug)]
pub(crate) struct InFlight {
    endpoint: Arc<EndpointState>,
    tls: Option<Arc<UpstreamTls>>,
    started: Instant,
}

impl InFlight {
    /// The chosen endpoint.
    pub(crate) fn endpoint(&self) -> &EndpointState {
        &self.endpoint
    }

    /// The mTLS settings towards it; `None` for plaintext.
    pub(crate) fn tls(&self) -> Option<&Arc<UpstreamTls>> {
        self.tls.as_ref()
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

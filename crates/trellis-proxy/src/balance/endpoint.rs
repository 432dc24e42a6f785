//! One endpoint's balancing state, shared by every table that lists it: requests in flight,
//! the peak-EWMA latency estimate, outlier-detection counters and ejection, and the active
//! health-check verdict.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use http::uri::Authority;
use tokio::time::Instant;

/// Decay time of the latency estimate (Linkerd's default).
const DECAY: Duration = Duration::from_secs(10);
/// Estimate for endpoints that have not answered yet (Linkerd's default).
const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// The instant ejection deadlines count from (kept as nanoseconds in an atomic).
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn nanos_since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*EPOCH).as_nanos()).unwrap_or(u64::MAX)
}

/// Load-balancing state of one endpoint address.
#[derive(Debug)]
pub(crate) struct EndpointState {
    /// Where to connect.
    pub(crate) addr: SocketAddr,
    /// `ip:port`, ready for upstream URIs.
    pub(crate) authority: Authority,
    pub(super) in_flight: AtomicU64,
    rtt: Mutex<PeakEwma>,
    /// Consecutive 5xx (and local failures) / consecutive gateway failures.
    pub(super) consecutive_5xx: AtomicU32,
    pub(super) consecutive_gateway: AtomicU32,
    /// Ejected until this many nanoseconds after [`EPOCH`]; 0 when never ejected.
    ejected_until: AtomicU64,
    /// How many times it was ejected (multiplies the ejection time).
    pub(super) ejections: AtomicU32,
    /// The active health check's verdict (true when the cluster has no health check).
    healthy: AtomicBool,
}

impl EndpointState {
    pub(super) fn new(addr: SocketAddr, now: Instant, healthy: bool) -> Self {
        // A socket address always renders as a valid authority; fall back to the IP alone rather
        // than panic if that ever changed.
        let authority = Authority::try_from(addr.to_string())
            .unwrap_or_else(|_| Authority::from_static("0.0.0.0"));
        Self {
            addr,
            authority,
            in_flight: AtomicU64::new(0),
            rtt: Mutex::new(PeakEwma::new(now)),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            healthy: AtomicBool::new(healthy),
        }
    }

    pub(super) fn cost(&self, weight: u32, now: Instant) -> f64 {
        // The lock is held for a few float operations; it is per endpoint, not per cluster.
        let estimate = self
            .rtt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cost(now);
        let pending = self.in_flight.load(Ordering::Relaxed) as f64;
        estimate * (pending + 1.0) / f64::from(weight.max(1))
    }

    pub(super) fn observe(&self, rtt: Duration, now: Instant) {
        self.rtt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(rtt, now);
    }

    /// Requests currently in flight to this endpoint.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether it takes new requests: not ejected and not failing its health check.
    pub(crate) fn available(&self, now: Instant) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.ejected(now)
    }

    /// Whether outlier detection has it ejected at `now`.
    pub(crate) fn ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && nanos_since_epoch(now) < until
    }

    /// How long ago its last ejection ended; `None` if it was never ejected.
    pub(super) fn since_ejection(&self, now: Instant) -> Option<Duration> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        (until != 0).then(|| Duration::from_nanos(nanos_since_epoch(now).saturating_sub(until)))
    }

    /// Whether the active health check passes (always, without one).
    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records the active health check's verdict.
    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    pub(super) fn eject_until(&self, until: Instant) {
        self.ejected_until
            .store(nanos_since_epoch(until).max(1), Ordering::Relaxed);
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

//! Outlier detection (Envoy's consecutive-5xx and consecutive-gateway-failure detectors): an
//! endpoint that fails too many times in a row is ejected for the base ejection time × the
//! number of times it was ejected (capped), unless that would eject more than the allowed
//! share of the cluster. Ejections end on their own when their time is up; the multiplier
//! drops by one per interval spent back in service.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::endpoint::EndpointState;
use crate::config::cluster::OutlierConfig;

/// How an exchange with an endpoint ended, as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A response that is not a 5xx.
    Success,
    /// A 5xx other than 502, 503 and 504.
    ServerError,
    /// 502, 503, 504, or no response at all (connect failure, reset, timeout), which Envoy
    /// counts as gateway failures and as 5xx.
    GatewayFailure,
}

impl Outcome {
    /// The outcome of a response with `status`.
    pub(crate) fn of(status: http::StatusCode) -> Outcome {
        match status.as_u16() {
            502..=504 => Outcome::GatewayFailure,
            500..=599 => Outcome::ServerError,
            _ => Outcome::Success,
        }
    }
}

/// Counts `outcome` for `endpoint` (one of `all`) and ejects it if a detector trips; true when
/// it ejected.
pub(super) fn record(
    config: &OutlierConfig,
    all: &[(Arc<EndpointState>, u32)],
    endpoint: &EndpointState,
    outcome: Outcome,
    now: Instant,
) -> bool {
    let (fives, gateways) = match outcome {
        Outcome::Success => {
            endpoint.consecutive_5xx.store(0, Ordering::Relaxed);
            endpoint.consecutive_gateway.store(0, Ordering::Relaxed);
            return false;
        }
        Outcome::ServerError => {
            endpoint.consecutive_gateway.store(0, Ordering::Relaxed);
            (
                endpoint.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1,
                0,
            )
        }
        Outcome::GatewayFailure => (
            endpoint.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1,
            endpoint.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1,
        ),
    };
    let tripped = config
        .consecutive_5xx
        .is_some_and(|(limit, enforcing)| fives >= limit && enforcing.sampled())
        || config
            .consecutive_gateway
            .is_some_and(|(limit, enforcing)| gateways >= limit && enforcing.sampled());
    if !tripped || endpoint.ejected(now) {
        return false;
    }
    let ejected = all.iter().filter(|(e, _)| e.ejected(now)).count();
    // Envoy ejects at least one endpoint whatever the percentage.
    let allowed = (all.len() * config.max_ejection_percent as usize / 100).max(1);
    if ejected >= allowed {
        return false;
    }
    // The multiplier drops by one for every interval spent back in service (Envoy's back-off).
    let healthy_intervals = endpoint.since_ejection(now).map_or(0, |d| {
        u32::try_from(d.as_nanos() / config.interval.as_nanos().max(1)).unwrap_or(u32::MAX)
    });
    let previous = endpoint.ejections.load(Ordering::Relaxed);
    let times = previous.saturating_sub(healthy_intervals) + 1;
    endpoint.ejections.store(times, Ordering::Relaxed);
    let time = config
        .base_ejection_time
        .saturating_mul(times)
        .min(config.max_ejection_time.max(config.base_ejection_time));
    endpoint.eject_until(now + time);
    endpoint.consecutive_5xx.store(0, Ordering::Relaxed);
    endpoint.consecutive_gateway.store(0, Ordering::Relaxed);
    tracing::info!(endpoint = %endpoint.addr, ?time, times, "endpoint ejected by outlier detection");
    true
}

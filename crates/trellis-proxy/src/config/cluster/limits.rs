//! A cluster's `circuit_breakers`: limits on requests in flight, on HTTP/1.1 connections and the
//! requests waiting for one, and on concurrent retries (a budget relative to the cluster's
//! active requests, or Envoy's fixed `max_retries`). Only limits that are set are enforced
//! (Envoy's implicit 1024 defaults are not).

use envoy_types::pb::envoy::config::cluster::v3::CircuitBreakers;
use envoy_types::pb::envoy::config::core::v3::RoutingPriority;

use crate::config::{FieldError, reject_set};

/// Envoy's `max_retries` when no threshold sets it.
const DEFAULT_MAX_RETRIES: u32 = 3;
/// Envoy's `budget_percent` when a budget leaves it out.
const DEFAULT_BUDGET_PERCENT: f64 = 20.0;
/// Envoy's `min_retry_concurrency` when a budget leaves it out.
const DEFAULT_MIN_RETRY_CONCURRENCY: u32 = 3;

/// How many retries may be in flight at once to one cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RetryLimit {
    /// At most `max(min, percent% × active requests)`.
    Budget {
        /// Share of the active requests.
        percent: f64,
        /// The floor.
        min: u32,
    },
    /// At most this many.
    Max(u32),
}

impl Default for RetryLimit {
    fn default() -> Self {
        RetryLimit::Max(DEFAULT_MAX_RETRIES)
    }
}

impl RetryLimit {
    /// Whether one more retry may start while `retries` are in flight among `active` requests.
    pub(crate) fn allows(self, retries: usize, active: usize) -> bool {
        let limit = match self {
            RetryLimit::Max(max) => max as usize,
            RetryLimit::Budget { percent, min } => {
                // Truncating: the budget is a whole number of requests.
                let share = (percent / 100.0 * active as f64) as usize;
                share.max(min as usize)
            }
        };
        retries < limit
    }
}

/// The circuit-breaker limits of a cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Limits {
    /// Requests in flight (`max_requests`).
    pub(crate) max_requests: Option<usize>,
    /// HTTP/1.1 connections, each carrying one request at a time (`max_connections`).
    pub(crate) max_connections: Option<usize>,
    /// Requests waiting for a connection (`max_pending_requests`); unlimited when not set.
    pub(crate) max_pending: Option<usize>,
    /// Concurrent retries.
    pub(crate) retries: RetryLimit,
}

/// Compiles the DEFAULT-priority thresholds of `cb` (other priorities are refused: the proxy
/// routes at one priority).
pub(crate) fn compile(cb: &CircuitBreakers) -> Result<Limits, FieldError> {
    let mut limits = Limits::default();
    let mut limit = RetryLimit::default();
    for (i, t) in cb.thresholds.iter().enumerate() {
        let field = format!("thresholds[{i}]");
        if t.priority != RoutingPriority::Default as i32 {
            return Err(FieldError::new(
                format!("{field}.priority"),
                "only DEFAULT is supported",
            ));
        }
        reject_set(&[("max_connection_pools", t.max_connection_pools.is_some())])
            .map_err(|e| e.at(&field))?;
        let count = |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>| {
            v.as_ref().map(|v| v.value as usize)
        };
        limits.max_requests = count(&t.max_requests).or(limits.max_requests);
        limits.max_connections = count(&t.max_connections).or(limits.max_connections);
        limits.max_pending = count(&t.max_pending_requests).or(limits.max_pending);
        if let Some(max) = &t.max_retries {
            limit = RetryLimit::Max(max.value);
        }
        if let Some(budget) = &t.retry_budget {
            let interval = budget.budget_interval.as_ref();
            if interval.is_some_and(|d| d.seconds != 0 || d.nanos != 0) {
                return Err(FieldError::new(
                    format!("{field}.retry_budget.budget_interval"),
                    "only 0 (the budget counts active requests) is supported",
                ));
            }
            let percent = budget
                .budget_percent
                .as_ref()
                .map_or(DEFAULT_BUDGET_PERCENT, |p| p.value);
            if !(0.0..=100.0).contains(&percent) {
                return Err(FieldError::new(
                    format!("{field}.retry_budget.budget_percent"),
                    format!("{percent} is not in [0, 100]"),
                ));
            }
            let min = budget
                .min_retry_concurrency
                .as_ref()
                .map_or(DEFAULT_MIN_RETRY_CONCURRENCY, |m| m.value);
            // Envoy: a budget overrides max_retries.
            limit = RetryLimit::Budget { percent, min };
        }
    }
    limits.retries = limit;
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;
    use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::thresholds::RetryBudget;
    use envoy_types::pb::envoy::r#type::v3::Percent;
    use envoy_types::pb::google::protobuf::UInt32Value;

    use super::*;

    #[test]
    fn a_budget_is_a_share_of_active_requests_with_a_floor() {
        let cb = CircuitBreakers {
            thresholds: vec![Thresholds {
                retry_budget: Some(RetryBudget {
                    budget_percent: Some(Percent { value: 20.0 }),
                    min_retry_concurrency: Some(UInt32Value { value: 2 }),
                    ..RetryBudget::default()
                }),
                ..Thresholds::default()
            }],
            ..CircuitBreakers::default()
        };
        let limit = compile(&cb).unwrap().retries;
        assert!(limit.allows(1, 1), "the floor");
        assert!(!limit.allows(2, 5), "20% of 5 is 1, the floor 2");
        assert!(limit.allows(9, 50), "20% of 50 is 10");
        assert!(!limit.allows(10, 50));
        assert_eq!(
            compile(&CircuitBreakers::default()).unwrap().retries,
            RetryLimit::Max(3)
        );
    }

    #[test]
    fn request_and_connection_limits_compile_and_other_priorities_are_refused() {
        let cb = CircuitBreakers {
            thresholds: vec![Thresholds {
                max_requests: Some(UInt32Value { value: 10 }),
                max_connections: Some(UInt32Value { value: 4 }),
                ..Thresholds::default()
            }],
            ..CircuitBreakers::default()
        };
        let limits = compile(&cb).unwrap();
        assert_eq!(
            (
                limits.max_requests,
                limits.max_connections,
                limits.max_pending
            ),
            (Some(10), Some(4), None)
        );
        let high = CircuitBreakers {
            thresholds: vec![Thresholds {
                priority: RoutingPriority::High as i32,
                ..Thresholds::default()
            }],
            ..CircuitBreakers::default()
        };
        let e = compile(&high).unwrap_err();
        assert_eq!(
            e.to_string(),
            "thresholds[0].priority: only DEFAULT is supported"
        );
    }
}

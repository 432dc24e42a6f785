//! A route's `retry_policy`: which outcomes are retried, how often, after what back-off, and on
//! which endpoints (Envoy's semantics and defaults).

use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::RetryPolicy;
use envoy_types::pb::envoy::config::route::v3::retry_policy::retry_host_predicate::ConfigType;
use http::StatusCode;

use crate::config::{FieldError, duration, reject_set};

/// Envoy's back-off base when `retry_back_off` is not set.
const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);
/// The predicate that steers retries away from endpoints already tried.
const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";

/// The `retry_on` conditions, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RetryOn(u16);

impl RetryOn {
    /// Any 5xx, a reset, a connect failure or a timeout.
    pub(crate) const FIVE_XX: RetryOn = RetryOn(1);
    /// 502, 503, 504, and failures without a response.
    pub(crate) const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    /// No response at all: reset, disconnect, per-try timeout.
    pub(crate) const RESET: RetryOn = RetryOn(1 << 2);
    /// The connection could not be made.
    pub(crate) const CONNECT_FAILURE: RetryOn = RetryOn(1 << 3);
    /// 409.
    pub(crate) const RETRIABLE_4XX: RetryOn = RetryOn(1 << 4);
    /// The endpoint refused the stream (treated as a reset: the request was not answered).
    pub(crate) const REFUSED_STREAM: RetryOn = RetryOn(1 << 5);
    /// A status listed in `retriable_status_codes`.
    pub(crate) const STATUS_CODES: RetryOn = RetryOn(1 << 6);
    /// gRPC CANCELLED (1).
    pub(crate) const GRPC_CANCELLED: RetryOn = RetryOn(1 << 7);
    /// gRPC DEADLINE_EXCEEDED (4).
    pub(crate) const GRPC_DEADLINE_EXCEEDED: RetryOn = RetryOn(1 << 8);
    /// gRPC RESOURCE_EXHAUSTED (8).
    pub(crate) const GRPC_RESOURCE_EXHAUSTED: RetryOn = RetryOn(1 << 9);
    /// gRPC INTERNAL (13).
    pub(crate) const GRPC_INTERNAL: RetryOn = RetryOn(1 << 10);
    /// gRPC UNAVAILABLE (14).
    pub(crate) const GRPC_UNAVAILABLE: RetryOn = RetryOn(1 << 11);

    const NAMES: [(&'static str, RetryOn); 12] = [
        ("5xx", Self::FIVE_XX),
        ("gateway-error", Self::GATEWAY_ERROR),
        ("reset", Self::RESET),
        ("connect-failure", Self::CONNECT_FAILURE),
        ("retriable-4xx", Self::RETRIABLE_4XX),
        ("refused-stream", Self::REFUSED_STREAM),
        ("retriable-status-codes", Self::STATUS_CODES),
        ("cancelled", Self::GRPC_CANCELLED),
        ("deadline-exceeded", Self::GRPC_DEADLINE_EXCEEDED),
        ("resource-exhausted", Self::GRPC_RESOURCE_EXHAUSTED),
        ("internal", Self::GRPC_INTERNAL),
        ("unavailable", Self::GRPC_UNAVAILABLE),
    ];

    /// Both sets of conditions.
    pub(crate) const fn or(self, other: RetryOn) -> RetryOn {
        RetryOn(self.0 | other.0)
    }

    /// Whether any of `other`'s conditions is set.
    pub(crate) fn any(self, other: RetryOn) -> bool {
        self.0 & other.0 != 0
    }

    fn parse(list: &str) -> Result<RetryOn, FieldError> {
        let mut on = RetryOn::default();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let (_, bit) = Self::NAMES
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = Self::NAMES.iter().map(|(n, _)| *n).collect();
                    FieldError::message(format!(
                        "{name:?} is not supported (supported: {})",
                        known.join(", ")
                    ))
                })?;
            on.0 |= bit.0;
        }
        Ok(on)
    }

    /// The condition names, comma-separated, for the config dump.
    pub(crate) fn describe(self) -> String {
        let names: Vec<&str> = Self::NAMES
            .iter()
            .filter(|(_, bit)| self.any(*bit))
            .map(|(n, _)| *n)
            .collect();
        names.join(",")
    }
}

/// A compiled retry policy that retries (`num_retries` > 0 and some condition).
#[derive(Debug)]
pub(crate) struct Retry {
    /// What is retried.
    pub(crate) on: RetryOn,
    /// Statuses retried under `retriable-status-codes`.
    pub(crate) codes: Vec<StatusCode>,
    /// Retries after the first try.
    pub(crate) attempts: u32,
    /// Back-off base; the n-th retry waits a random time below `base × (2ⁿ − 1)`.
    pub(crate) backoff_base: Duration,
    /// Back-off cap.
    pub(crate) backoff_max: Duration,
    /// Picks allowed to find an endpoint not tried yet (1: no steering; Envoy's
    /// `host_selection_retry_max_attempts` + 1 with the previous-hosts predicate).
    pub(crate) host_picks: u32,
}

impl Retry {
    /// The wait before retry number `n` (1-based): random in `[0, base × (2ⁿ − 1))`, capped.
    pub(crate) fn backoff(&self, n: u32) -> Duration {
        let factor = (1u64 << n.min(32)).saturating_sub(1).max(1);
        let window = self
            .backoff_base
            .saturating_mul(u32::try_from(factor).unwrap_or(u32::MAX))
            .min(self.backoff_max);
        let nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(rand::random_range(0..nanos))
    }
}

/// Compiles `p` into the per-try timeout and, when it retries at all, the retry policy.
pub(crate) fn compile(p: &RetryPolicy) -> Result<(Option<Duration>, Option<Retry>), FieldError> {
    reject_set(&[
        ("per_try_idle_timeout", p.per_try_idle_timeout.is_some()),
        ("retry_priority", p.retry_priority.is_some()),
        (
            "retry_options_predicates",
            !p.retry_options_predicates.is_empty(),
        ),
        (
            "rate_limited_retry_back_off",
            p.rate_limited_retry_back_off.is_some(),
        ),
        ("retriable_headers", !p.retriable_headers.is_empty()),
        (
            "retriable_request_headers",
            !p.retriable_request_headers.is_empty(),
        ),
    ])?;
    let per_try = p
        .per_try_timeout
        .as_ref()
        .map(|t| duration(t, "per_try_timeout"))
        .transpose()?
        .filter(|d| !d.is_zero());
    let on = RetryOn::parse(&p.retry_on).map_err(|e| e.at("retry_on"))?;
    let attempts = p.num_retries.as_ref().map_or(1, |n| n.value);
    let codes = p
        .retriable_status_codes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            u16::try_from(*c)
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| {
                    FieldError::new(
                        format!("retriable_status_codes[{i}]"),
                        format!("{c} is not a status"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (backoff_base, backoff_max) = match &p.retry_back_off {
        None => (DEFAULT_BACKOFF, DEFAULT_BACKOFF * 10),
        Some(b) => {
            let base = b
                .base_interval
                .as_ref()
                .map(|d| duration(d, "retry_back_off.base_interval"))
                .transpose()?
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    FieldError::new(
                        "retry_back_off.base_interval",
                        "a positive duration is required",
                    )
                })?;
            let max = b
                .max_interval
                .as_ref()
                .map(|d| duration(d, "retry_back_off.max_interval"))
                .transpose()?
                .unwrap_or(base * 10);
            if max < base {
                return Err(FieldError::new(
                    "retry_back_off.max_interval",
                    "must be at least base_interval",
                ));
            }
            (base, max)
        }
    };
    let mut host_picks = 1;
    for (i, predicate) in p.retry_host_predicate.iter().enumerate() {
        let typed = matches!(
            predicate.config_type,
            Some(ConfigType::TypedConfig(_)) | None
        );
        if predicate.name != PREVIOUS_HOSTS || !typed {
            return Err(FieldError::new(
                format!("retry_host_predicate[{i}].name"),
                format!(
                    "{:?} is not supported (supported: {PREVIOUS_HOSTS})",
                    predicate.name
                ),
            ));
        }
        // Envoy re-picks once when the field is unset (0).
        let repicks = u32::try_from(p.host_selection_retry_max_attempts)
            .unwrap_or(1)
            .max(1);
        host_picks = repicks.saturating_add(1);
    }
    let retry = (attempts > 0 && on != RetryOn::default()).then_some(Retry {
        on,
        codes,
        attempts,
        backoff_base,
        backoff_max,
        host_picks,
    });
    Ok((per_try, retry))
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::route::v3::retry_policy::{
        RetryBackOff, RetryHostPredicate,
    };
    use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

    use super::*;

    fn ms(n: i32) -> PbDuration {
        PbDuration {
            seconds: 0,
            nanos: n * 1_000_000,
        }
    }

    #[test]
    fn envoy_defaults_and_fields_compile() {
        let (per_try, retry) = compile(&RetryPolicy {
            retry_on: "5xx, retriable-status-codes,unavailable".into(),
            retriable_status_codes: vec![409],
            per_try_timeout: Some(ms(200)),
            ..RetryPolicy::default()
        })
        .unwrap();
        let retry = retry.unwrap();
        assert_eq!(per_try, Some(Duration::from_millis(200)));
        assert_eq!(retry.attempts, 1, "Envoy's default num_retries");
        assert!(retry.on.any(RetryOn::FIVE_XX) && retry.on.any(RetryOn::GRPC_UNAVAILABLE));
        assert!(!retry.on.any(RetryOn::RESET));
        assert_eq!(
            retry.on.describe(),
            "5xx,retriable-status-codes,unavailable"
        );
        assert_eq!(retry.codes, [StatusCode::CONFLICT]);
        assert_eq!(
            (retry.backoff_base, retry.backoff_max),
            (DEFAULT_BACKOFF, DEFAULT_BACKOFF * 10)
        );
        assert_eq!(retry.host_picks, 1);

        let (_, steered) = compile(&RetryPolicy {
            retry_on: "reset".into(),
            num_retries: Some(UInt32Value { value: 3 }),
            retry_back_off: Some(RetryBackOff {
                base_interval: Some(ms(10)),
                max_interval: None,
            }),
            retry_host_predicate: vec![RetryHostPredicate {
                name: PREVIOUS_HOSTS.into(),
                config_type: None,
            }],
            host_selection_retry_max_attempts: 5,
            ..RetryPolicy::default()
        })
        .unwrap();
        let steered = steered.unwrap();
        assert_eq!(steered.host_picks, 6);
        assert_eq!(steered.backoff_max, Duration::from_millis(100));
        for n in 1..8 {
            let cap = Duration::from_millis(10 * ((1 << n) - 1)).min(steered.backoff_max);
            for _ in 0..50 {
                assert!(steered.backoff(n) < cap, "retry {n}");
            }
        }
    }

    #[test]
    fn policies_that_never_retry_or_that_the_proxy_lacks() {
        let (_, none) = compile(&RetryPolicy {
            num_retries: Some(UInt32Value { value: 0 }),
            per_try_timeout: Some(ms(5)),
            retry_on: "5xx".into(),
            ..RetryPolicy::default()
        })
        .unwrap();
        assert!(none.is_none(), "zero retries");
        let (_, none) = compile(&RetryPolicy::default()).unwrap();
        assert!(none.is_none(), "no conditions");
        let e = compile(&RetryPolicy {
            retry_on: "5xx".into(),
            retry_host_predicate: vec![RetryHostPredicate {
                name: "envoy.retry_host_predicates.omit_canary_hosts".into(),
                config_type: None,
            }],
            ..RetryPolicy::default()
        })
        .unwrap_err();
        assert!(
            e.to_string().starts_with("retry_host_predicate[0].name: "),
            "{e}"
        );
    }
}

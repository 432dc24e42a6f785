//! `envoy.filters.http.local_ratelimit`: a token bucket shared by the requests of a listener
//! (listener config) or of a route (per-route config), answering 429 once it is empty.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use http::StatusCode;
use tokio::time::Instant;

use super::fraction::Fraction;
use super::route::HeaderMutations;
use super::{FieldError, duration, reject_set};

/// Envoy's smallest `fill_interval`.
const MIN_FILL_INTERVAL: Duration = Duration::from_millis(50);

/// A compiled `LocalRateLimit` with a token bucket, and the bucket's state.
#[derive(Debug)]
pub(crate) struct RateLimit {
    bucket: Bucket,
    /// Share of requests the limit is checked for.
    enabled: Fraction,
    /// Share of limited requests that are refused (the others pass).
    enforced: Fraction,
    /// The refusal's status (429 unless set).
    pub(crate) status: StatusCode,
    /// Headers added to refusals.
    pub(crate) response_headers: HeaderMutations,
    /// Whether refusals carry `retry-after` (seconds until the next refill).
    retry_after: bool,
    /// gRPC refusals say RESOURCE_EXHAUSTED instead of UNAVAILABLE.
    pub(crate) grpc_resource_exhausted: bool,
}

/// Why a request was refused: the bucket refills in this long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limited {
    /// Until the next refill.
    pub(crate) refill_in: Duration,
    /// Whether to say so in `retry-after`.
    pub(crate) retry_after: bool,
}

#[derive(Debug)]
struct Bucket {
    max_tokens: u64,
    per_fill: u64,
    interval: Duration,
    /// Tokens left, and when the next refill is due.
    state: Mutex<(u64, Instant)>,
}

impl Bucket {
    fn take(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, next_fill) = &mut *state;
        if now >= *next_fill {
            let late = now.duration_since(*next_fill).as_nanos() / self.interval.as_nanos().max(1);
            let fills = u64::try_from(late).unwrap_or(u64::MAX).saturating_add(1);
            *tokens = tokens
                .saturating_add(fills.saturating_mul(self.per_fill))
                .min(self.max_tokens);
            *next_fill += self.interval * u32::try_from(fills).unwrap_or(u32::MAX);
        }
        if *tokens > 0 {
            *tokens -= 1;
            Ok(())
        } else {
            Err(next_fill.saturating_duration_since(now))
        }
    }
}

impl RateLimit {
    /// Compiles `l`; `None` when it has no token bucket (Envoy then limits nothing).
    pub(crate) fn compile(l: &LocalRateLimit) -> Result<Option<RateLimit>, FieldError> {
        reject_set(&[
            ("descriptors", !l.descriptors.is_empty()),
            ("rate_limits", !l.rate_limits.is_empty()),
            (
                "local_rate_limit_per_downstream_connection",
                l.local_rate_limit_per_downstream_connection,
            ),
            (
                "local_cluster_rate_limit",
                l.local_cluster_rate_limit.is_some(),
            ),
            (
                "enable_x_ratelimit_headers",
                l.enable_x_ratelimit_headers != 0,
            ),
            (
                "request_headers_to_add_when_not_enforced",
                !l.request_headers_to_add_when_not_enforced.is_empty(),
            ),
        ])?;
        let Some(b) = &l.token_bucket else {
            return Ok(None);
        };
        let interval = b
            .fill_interval
            .as_ref()
            .map(|d| duration(d, "token_bucket.fill_interval"))
            .transpose()?
            .filter(|d| *d >= MIN_FILL_INTERVAL)
            .ok_or_else(|| {
                FieldError::new("token_bucket.fill_interval", "at least 50ms is required")
            })?;
        if b.max_tokens == 0 {
            return Err(FieldError::new(
                "token_bucket.max_tokens",
                "must be positive",
            ));
        }
        let per_fill = b.tokens_per_fill.as_ref().map_or(1, |t| t.value);
        let status = match &l.status {
            None => StatusCode::TOO_MANY_REQUESTS,
            Some(s) => u16::try_from(s.code)
                .ok()
                .filter(|c| (400..600).contains(c))
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| {
                    FieldError::new("status", format!("{} is not in [400, 600)", s.code))
                })?,
        };
        Ok(Some(RateLimit {
            bucket: Bucket {
                max_tokens: u64::from(b.max_tokens),
                per_fill: u64::from(per_fill),
                interval,
                state: Mutex::new((u64::from(b.max_tokens), Instant::now() + interval)),
            },
            enabled: runtime_share(l.filter_enabled.as_ref(), "filter_enabled")?,
            enforced: runtime_share(l.filter_enforced.as_ref(), "filter_enforced")?,
            status,
            response_headers: HeaderMutations::compile(
                &l.response_headers_to_add,
                &[],
                "response",
            )?,
            retry_after: l.enable_retry_after_header,
            grpc_resource_exhausted: l.rate_limited_as_resource_exhausted,
        }))
    }

    /// Takes a token for a request; `Err` when the request is to be refused.
    pub(crate) fn admit(&self) -> Result<(), Limited> {
        if !self.enabled.sampled() {
            return Ok(());
        }
        match self.bucket.take(Instant::now()) {
            Ok(()) => Ok(()),
            Err(_) if !self.enforced.sampled() => Ok(()),
            Err(refill_in) => Err(Limited {
                refill_in,
                retry_after: self.retry_after,
            }),
        }
    }

    /// The limit as text, for the config dump.
    pub(crate) fn describe(&self) -> String {
        format!(
            "local_ratelimit: {} tokens, {} per {:?}, enabled {}, enforced {}",
            self.bucket.max_tokens,
            self.bucket.per_fill,
            self.bucket.interval,
            self.enabled,
            self.enforced
        )
    }
}

/// Envoy's `filter_enabled` / `filter_enforced`: none when not set.
fn runtime_share(
    p: Option<&RuntimeFractionalPercent>,
    field: &str,
) -> Result<Fraction, FieldError> {
    match p.and_then(|p| p.default_value.as_ref()) {
        None => Ok(Fraction::NONE),
        Some(share) => Fraction::compile(share).map_err(|e| e.at(format!("{field}.default_value"))),
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, TokenBucket};
    use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

    use super::*;

    fn all() -> Option<RuntimeFractionalPercent> {
        Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator: 100,
                denominator: 0,
            }),
            runtime_key: String::new(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_refills_per_interval_up_to_its_size() {
        let limit = RateLimit::compile(&LocalRateLimit {
            token_bucket: Some(TokenBucket {
                max_tokens: 3,
                tokens_per_fill: Some(UInt32Value { value: 2 }),
                fill_interval: Some(PbDuration {
                    seconds: 1,
                    nanos: 0,
                }),
            }),
            filter_enabled: all(),
            filter_enforced: all(),
            enable_retry_after_header: true,
            ..LocalRateLimit::default()
        })
        .unwrap()
        .unwrap();
        assert_eq!(limit.status, StatusCode::TOO_MANY_REQUESTS);
        for _ in 0..3 {
            assert!(limit.admit().is_ok());
        }
        let refused = limit.admit().unwrap_err();
        assert!(refused.retry_after && refused.refill_in <= Duration::from_secs(1));
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(
            limit.admit().is_ok() && limit.admit().is_ok(),
            "two tokens per fill"
        );
        assert!(limit.admit().is_err());
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..3 {
            assert!(
                limit.admit().is_ok(),
                "refilled to the bucket size, no more"
            );
        }
        assert!(limit.admit().is_err());
    }

    #[test]
    fn without_a_bucket_nothing_is_limited_and_bad_buckets_are_refused() {
        assert!(
            RateLimit::compile(&LocalRateLimit::default())
                .unwrap()
                .is_none()
        );
        let e = RateLimit::compile(&LocalRateLimit {
            token_bucket: Some(TokenBucket {
                max_tokens: 1,
                tokens_per_fill: None,
                fill_interval: Some(PbDuration {
                    seconds: 0,
                    nanos: 1_000_000,
                }),
            }),
            ..LocalRateLimit::default()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "token_bucket.fill_interval: at least 50ms is required"
        );
    }
}

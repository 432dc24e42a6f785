//! A rule's `retry` and `timeouts.backendRequest` as Envoy's route `RetryPolicy`: what is
//! retried, how often, after what back-off, and on endpoints not tried yet.

use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::RetryPolicy;
use envoy_types::pb::envoy::config::route::v3::retry_policy::{
    RetryBackOff, RetryHostPredicate, retry_host_predicate::ConfigType,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::google::protobuf::UInt32Value;
use trellis_api::{GrpcRetryCode, GrpcRouteRetry, HttpRouteRetry};

use crate::translate::{any, duration};

/// What a rule with a `retry` stanza always retries: requests that got no response.
const NO_RESPONSE: &str = "connect-failure,refused-stream,reset";
/// The predicate that steers a retry to an endpoint not tried yet.
const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";
/// How many endpoints a retry may pick to find one not tried yet (Istio's value).
const HOST_SELECTION_ATTEMPTS: i64 = 5;
/// The back-off cap, as a multiple of its base (Envoy's default ratio).
const MAX_BACKOFF_FACTOR: u32 = 10;

/// The policy of an HTTPRoute rule: its retries with `per_try` as each try's timeout; without
/// retries, a policy that only bounds the one try, when there is a `per_try`.
pub(super) fn http(
    retry: Option<&HttpRouteRetry>,
    per_try: Option<Duration>,
) -> Option<RetryPolicy> {
    let Some(retry) = retry else {
        return per_try.map(|d| RetryPolicy {
            // Gateway API's backendRequest is a per-try timeout without retries; an unset
            // num_retries would mean Envoy's default of one retry.
            num_retries: Some(UInt32Value { value: 0 }),
            per_try_timeout: Some(duration(d)),
            ..RetryPolicy::default()
        });
    };
    let mut retry_on = NO_RESPONSE.to_owned();
    if !retry.codes.is_empty() {
        retry_on.push_str(",retriable-status-codes");
    }
    Some(RetryPolicy {
        retry_on,
        retriable_status_codes: retry.codes.iter().copied().map(u32::from).collect(),
        per_try_timeout: per_try.map(duration),
        ..retrying(retry.attempts, retry.backoff)
    })
}

/// The policy of a GRPCRoute rule with `retry`; gRPC statuses are retried by Envoy's names
/// for them, which it reads from `grpc-status`.
pub(super) fn grpc(retry: &GrpcRouteRetry) -> RetryPolicy {
    let codes = retry.codes.iter().map(|c| envoy_grpc_condition(*c));
    let retry_on: Vec<&str> = [NO_RESPONSE].into_iter().chain(codes).collect();
    RetryPolicy {
        retry_on: retry_on.join(","),
        ..retrying(retry.attempts, retry.backoff)
    }
}

fn envoy_grpc_condition(code: GrpcRetryCode) -> &'static str {
    match code {
        GrpcRetryCode::Cancelled => "cancelled",
        GrpcRetryCode::DeadlineExceeded => "deadline-exceeded",
        GrpcRetryCode::Internal => "internal",
        GrpcRetryCode::ResourceExhausted => "resource-exhausted",
        GrpcRetryCode::Unavailable => "unavailable",
    }
}

/// The fields HTTP and gRPC retries share: count, back-off and endpoint steering.
fn retrying(attempts: u32, backoff: Duration) -> RetryPolicy {
    RetryPolicy {
        num_retries: Some(UInt32Value { value: attempts }),
        retry_back_off: Some(RetryBackOff {
            base_interval: Some(duration(backoff)),
            max_interval: Some(duration(backoff.saturating_mul(MAX_BACKOFF_FACTOR))),
        }),
        retry_host_predicate: vec![RetryHostPredicate {
            name: PREVIOUS_HOSTS.to_owned(),
            config_type: Some(ConfigType::TypedConfig(any(&PreviousHostsPredicate {}))),
        }],
        host_selection_retry_max_attempts: HOST_SELECTION_ATTEMPTS,
        ..RetryPolicy::default()
    }
}

//! Retries of a route rule: Gateway API's experimental `HTTPRouteRetry` (GEP-1731) on HTTPRoute,
//! and the same stanza with gRPC status names on GRPCRoute, a Trellis extension.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bounded;
use crate::duration::format_duration;
use crate::validate::Validator;
use crate::yaml::FieldPath;

/// Retries of an HTTPRoute rule (Gateway API `HTTPRouteRetry`, GEP-1731, experimental).
///
/// A rule with a `retry` stanza always retries requests that got no response: the connection
/// failed, was reset or refused the stream, or the try timed out (`timeouts.backendRequest`).
/// Each retry prefers an endpoint not tried yet. Retries of a Service are bounded by its retry
/// budget (see `BackendPolicy`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRetry {
    /// Response statuses (400 to 599) that are retried too; none when not given, so only
    /// requests without a response are retried.
    #[serde(
        default,
        deserialize_with = "bounded::retry_statuses",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub codes: Vec<u16>,
    /// The most retries of one request (after its first try), 0 to 10; 2 when not given
    /// (Gateway API leaves the default to the implementation).
    #[serde(
        default = "default_attempts",
        deserialize_with = "bounded::retry_attempts"
    )]
    pub attempts: u32,
    /// The base back-off between tries; 25ms when not given. The n-th retry waits a random
    /// time below `backoff × (2ⁿ − 1)`, capped at 10 × `backoff`.
    #[serde(default = "default_backoff", with = "crate::duration::required")]
    pub backoff: Duration,
}

impl Default for HttpRouteRetry {
    fn default() -> Self {
        Self {
            codes: Vec::new(),
            attempts: default_attempts(),
            backoff: default_backoff(),
        }
    }
}

/// Retries of a GRPCRoute rule: a Trellis extension (Gateway API has none for gRPC; Linkerd
/// has `retry.linkerd.io/grpc`), with the semantics of [`HttpRouteRetry`] but gRPC status
/// names as `codes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteRetry {
    /// gRPC statuses that are retried too; `[UNAVAILABLE]` when not given. `[]` retries only
    /// calls without a response.
    #[serde(default = "default_grpc_codes")]
    pub codes: Vec<GrpcRetryCode>,
    /// The most retries of one call (after its first try), 0 to 10; 2 when not given.
    #[serde(
        default = "default_attempts",
        deserialize_with = "bounded::retry_attempts"
    )]
    pub attempts: u32,
    /// The base back-off between tries; 25ms when not given (see [`HttpRouteRetry::backoff`]).
    #[serde(default = "default_backoff", with = "crate::duration::required")]
    pub backoff: Duration,
}

impl Default for GrpcRouteRetry {
    fn default() -> Self {
        Self {
            codes: default_grpc_codes(),
            attempts: default_attempts(),
            backoff: default_backoff(),
        }
    }
}

/// A gRPC status a GRPCRoute may retry: the ones that usually mean "try again".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GrpcRetryCode {
    /// 1: the call was cancelled, typically by the server.
    Cancelled,
    /// 4: the deadline expired before the call completed.
    DeadlineExceeded,
    /// 13: an internal error.
    Internal,
    /// 8: a resource, such as a quota, is exhausted.
    ResourceExhausted,
    /// 14: the service is unavailable for now.
    Unavailable,
}

impl GrpcRetryCode {
    /// The name as written in YAML, e.g. `DEADLINE_EXCEEDED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cancelled => "CANCELLED",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::Internal => "INTERNAL",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::Unavailable => "UNAVAILABLE",
        }
    }
}

impl fmt::Display for GrpcRetryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_attempts() -> u32 {
    2
}

fn default_backoff() -> Duration {
    Duration::from_millis(25)
}

fn default_grpc_codes() -> Vec<GrpcRetryCode> {
    vec![GrpcRetryCode::Unavailable]
}

/// Checks a retry's back-off: the proxy needs a positive base to grow it from.
pub(crate) fn validate_backoff(backoff: Duration, retry: &FieldPath, v: &mut Validator<'_>) {
    if backoff.is_zero() {
        v.error(
            &retry.key("backoff"),
            format!(
                "expected a positive duration such as `25ms`, found `{}`",
                format_duration(backoff)
            ),
        );
    }
}

#[cfg(test)]
mod tests;

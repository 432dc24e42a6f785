//! `kind: FaultInjection` (`trellis.dev/v1alpha1`): delays and aborts injected into a share of
//! the requests of the route rules that reference it with an `ExtensionRef` filter, as Istio's
//! VirtualService `fault`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bounded;
use crate::duration::format_duration;
use crate::meta::{self, Meta};
use crate::route::{HeaderMatch, validate_headers};
use crate::validate::Validator;
use crate::yaml::FieldPath;

/// Faults for the requests of the rules that reference it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultInjection {
    /// Name and namespace; rules reference it by name from their own namespace.
    pub metadata: Meta,
    /// The faults.
    pub spec: FaultInjectionSpec,
}

/// The `spec` of a [`FaultInjection`]: at least one of `delay` and `abort`. A request gets the
/// delay, then the abort, each drawn on its own share.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultInjectionSpec {
    /// Holds a share of the requests before they are forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    /// Answers a share of the requests with an error instead of forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
    /// Only requests with all these headers get faults (as a route match's `headers`); every
    /// request when empty. At most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

/// A fixed delay for a share of the requests.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    /// How long a delayed request waits; above zero.
    #[serde(with = "crate::duration::required")]
    pub fixed_delay: Duration,
    /// The share of requests delayed, 0 to 100 (fractions allowed); 100 when not given.
    #[serde(
        default = "bounded::hundred_percent",
        deserialize_with = "bounded::share_percent"
    )]
    pub percent: f64,
}

/// An error answer for a share of the requests: exactly one of `http_status` and
/// `grpc_status`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    /// The HTTP status answered, 200 to 599.
    #[serde(
        default,
        deserialize_with = "bounded::option_abort_status",
        skip_serializing_if = "Option::is_none"
    )]
    pub http_status: Option<u16>,
    /// The gRPC status answered (HTTP 200 with `grpc-status` in trailers-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<GrpcStatusCode>,
    /// The share of requests aborted, 0 to 100 (fractions allowed); 100 when not given.
    #[serde(
        default = "bounded::hundred_percent",
        deserialize_with = "bounded::share_percent"
    )]
    pub percent: f64,
}

/// A gRPC status an abort may answer with: every code but `OK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)] // The variants are the gRPC codes of the same names.
pub enum GrpcStatusCode {
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl GrpcStatusCode {
    /// The code's number on the wire (`grpc-status`), e.g. 14 for `UNAVAILABLE`.
    pub fn code(self) -> u32 {
        match self {
            Self::Cancelled => 1,
            Self::Unknown => 2,
            Self::InvalidArgument => 3,
            Self::DeadlineExceeded => 4,
            Self::NotFound => 5,
            Self::AlreadyExists => 6,
            Self::PermissionDenied => 7,
            Self::ResourceExhausted => 8,
            Self::FailedPrecondition => 9,
            Self::Aborted => 10,
            Self::OutOfRange => 11,
            Self::Unimplemented => 12,
            Self::Internal => 13,
            Self::Unavailable => 14,
            Self::DataLoss => 15,
            Self::Unauthenticated => 16,
        }
    }

    /// The name as written in YAML, e.g. `UNAVAILABLE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cancelled => "CANCELLED",
            Self::Unknown => "UNKNOWN",
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::Aborted => "ABORTED",
            Self::OutOfRange => "OUT_OF_RANGE",
            Self::Unimplemented => "UNIMPLEMENTED",
            Self::Internal => "INTERNAL",
            Self::Unavailable => "UNAVAILABLE",
            Self::DataLoss => "DATA_LOSS",
            Self::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for GrpcStatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a FaultInjection beyond its types.
pub(crate) fn validate(fault: &FaultInjection, v: &mut Validator<'_>) {
    meta::validate(&fault.metadata, false, v);
    let spec_path = FieldPath::root().key("spec");
    let spec = &fault.spec;
    if spec.delay.is_none() && spec.abort.is_none() {
        v.error(&spec_path, "expected at least one of `delay` and `abort`");
    }
    if let Some(delay) = &spec.delay
        && delay.fixed_delay.is_zero()
    {
        v.error(
            &spec_path.key("delay").key("fixedDelay"),
            format!(
                "expected a positive duration such as `100ms`, found `{}`",
                format_duration(delay.fixed_delay)
            ),
        );
    }
    if let Some(abort) = &spec.abort {
        let path = spec_path.key("abort");
        match (abort.http_status, abort.grpc_status) {
            (Some(_), Some(_)) => v.error(
                &path.key("grpcStatus"),
                "give `httpStatus` or `grpcStatus`, not both",
            ),
            (None, None) => v.error(
                &path,
                "expected `httpStatus` (200 to 599) or `grpcStatus` (a gRPC code name such as UNAVAILABLE)",
            ),
            _ => {}
        }
    }
    validate_headers(&spec.headers, &spec_path.key("headers"), v);
}

#[cfg(test)]
mod tests;

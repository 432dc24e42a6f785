//! A BackendPolicy's `healthCheck`: active probes of every endpoint by each caller's proxy (an
//! HTTP request, the gRPC health protocol or a TCP connect), so failing endpoints get no traffic.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bounded;
use crate::duration::format_duration;
use crate::validate::Validator;
use crate::yaml::FieldPath;

/// How and how often each endpoint is probed: exactly one of `http`, `grpc` and `tcp`. An
/// endpoint is unhealthy after `unhealthyThreshold` failed probes in a row, and healthy again
/// after `healthyThreshold` passed ones; endpoints start healthy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// Time between probes of an endpoint; 10s when not given.
    #[serde(default = "default_interval", with = "crate::duration::required")]
    pub interval: Duration,
    /// Time a probe may take before it counts as failed; 1s when not given.
    #[serde(default = "default_timeout", with = "crate::duration::required")]
    pub timeout: Duration,
    /// Failed probes in a row that make an endpoint unhealthy, at least 1; 3 when not given.
    #[serde(
        default = "default_unhealthy_threshold",
        deserialize_with = "bounded::positive_count"
    )]
    pub unhealthy_threshold: u32,
    /// Passed probes in a row that make it healthy again, at least 1; 1 when not given.
    #[serde(default = "bounded::one", deserialize_with = "bounded::positive_count")]
    pub healthy_threshold: u32,
    /// Probe with an HTTP/1.1 `GET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpHealthCheck>,
    /// Probe with `grpc.health.v1.Health/Check`, passing on `SERVING`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheck>,
    /// Probe by opening a TCP connection (`tcp: {}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpHealthCheck>,
}

/// An HTTP probe: `GET path`, passing on an expected status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHealthCheck {
    /// The request path, starting with `/`.
    pub path: String,
    /// The `Host` header; the caller's cluster name when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Statuses that pass: codes (`204`) or inclusive ranges (`"200-299"`), each 100 to 599;
    /// only 200 when not given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_statuses: Vec<StatusRange>,
}

/// A gRPC health probe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcHealthCheck {
    /// The service asked about; the server as a whole when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// A TCP connect probe; it has no settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpHealthCheck {}

/// HTTP statuses from `first` to `last`, both included, written `204` or `"200-299"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRange {
    /// The lowest status of the range.
    pub first: u16,
    /// The highest status of the range, at least `first`.
    pub last: u16,
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_unhealthy_threshold() -> u32 {
    3
}

const STATUS_RANGE: &str = "a status from 100 to 599 such as 200, or a range such as \"200-299\"";

impl StatusRange {
    fn parse(text: &str) -> Option<StatusRange> {
        let status = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|s| (100..=599).contains(s))
        };
        let (first, last) = match text.split_once('-') {
            Some((first, last)) => (status(first)?, status(last)?),
            None => (status(text)?, status(text)?),
        };
        (first <= last).then_some(StatusRange { first, last })
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl Serialize for StatusRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.first == self.last {
            s.serialize_u16(self.first)
        } else {
            s.collect_str(self)
        }
    }
}

struct StatusRangeVisitor;

impl Visitor<'_> for StatusRangeVisitor {
    type Value = StatusRange;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(STATUS_RANGE)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusRange, E> {
        StatusRange::parse(v)
            .ok_or_else(|| E::custom(format!("expected {STATUS_RANGE}, found \"{v}\"")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusRange, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusRange, E> {
        self.visit_str(&v.to_string())
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StatusRangeVisitor)
    }
}

/// Checks a `healthCheck` at `path`: one probe, positive durations, a path that is a path.
pub(super) fn validate(h: &HealthCheck, path: &FieldPath, v: &mut Validator<'_>) {
    for (field, d) in [("interval", h.interval), ("timeout", h.timeout)] {
        if d.is_zero() {
            v.error(
                &path.key(field),
                format!(
                    "expected a positive duration such as `1s`, found `{}`",
                    format_duration(d)
                ),
            );
        }
    }
    super::exactly_one(
        &[
            ("http", h.http.is_some()),
            ("grpc", h.grpc.is_some()),
            ("tcp", h.tcp.is_some()),
        ],
        "expected one of `http` (with a `path`), `grpc` or `tcp: {}`",
        path,
        v,
    );
    if let Some(http) = &h.http
        && !http.path.starts_with('/')
    {
        v.error(
            &path.key("http").key("path"),
            format!("expected a path starting with `/`, found `{}`", http.path),
        );
    }
}

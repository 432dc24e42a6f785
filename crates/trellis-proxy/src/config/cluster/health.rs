//! A cluster's `health_checks`: how each endpoint is probed (HTTP path, gRPC health protocol or
//! TCP connect), how often, and how many results in a row flip its health.

use std::ops::Range;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::HealthCheck;
use envoy_types::pb::envoy::config::core::v3::health_check::HealthChecker;
use envoy_types::pb::envoy::r#type::v3::CodecClientType;

use crate::config::{FieldError, duration, reject_set};

/// How an endpoint is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// `GET path` answered with one of the expected statuses.
    Http {
        /// Request path.
        path: String,
        /// `Host` sent (the cluster name when empty, as Envoy does).
        host: String,
        /// Accepted statuses (default 200 only).
        expected: Vec<Range<u16>>,
        /// HTTP/2 (prior knowledge) instead of HTTP/1.1.
        http2: bool,
    },
    /// `grpc.health.v1.Health/Check` answering SERVING.
    Grpc {
        /// The service asked about (empty: the server as a whole).
        service: String,
        /// `:authority` sent (the cluster name when empty).
        authority: String,
    },
    /// A TCP connection that opens.
    Tcp,
}

/// A compiled `HealthCheck`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthCheckConfig {
    /// Time allowed per probe.
    pub(crate) timeout: Duration,
    /// Time between probes of an endpoint.
    pub(crate) interval: Duration,
    /// Failures in a row that mark an endpoint unhealthy.
    pub(crate) unhealthy_threshold: u32,
    /// Successes in a row that mark it healthy again.
    pub(crate) healthy_threshold: u32,
    /// The probe.
    pub(crate) probe: Probe,
}

fn required_duration(
    d: Option<&envoy_types::pb::google::protobuf::Duration>,
    field: &str,
) -> Result<Duration, FieldError> {
    let d = d.ok_or_else(|| FieldError::new(field, "is required"))?;
    Some(duration(d, field)?)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| FieldError::new(field, "must be positive"))
}

/// Compiles the cluster's health checks (at most one is supported).
pub(crate) fn compile(checks: &[HealthCheck]) -> Result<Option<HealthCheckConfig>, FieldError> {
    let [check] = checks else {
        return match checks {
            [] => Ok(None),
            _ => Err(FieldError::message("at most one health check is supported")),
        };
    };
    compile_one(check).map(Some).map_err(|e| e.at("[0]"))
}

fn compile_one(h: &HealthCheck) -> Result<HealthCheckConfig, FieldError> {
    reject_set(&[
        ("alt_port", h.alt_port.is_some()),
        ("tls_options", h.tls_options.is_some()),
        (
            "transport_socket_match_criteria",
            h.transport_socket_match_criteria.is_some(),
        ),
    ])?;
    let threshold = |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>, field: &str| {
        v.as_ref()
            .map(|v| v.value.max(1))
            .ok_or_else(|| FieldError::new(field, "is required"))
    };
    let probe = match &h.health_checker {
        Some(HealthChecker::HttpHealthCheck(http)) => {
            reject_set(&[
                ("http_health_check.send", http.send.is_some()),
                ("http_health_check.receive", !http.receive.is_empty()),
                (
                    "http_health_check.request_headers_to_add",
                    !http.request_headers_to_add.is_empty(),
                ),
                (
                    "http_health_check.retriable_statuses",
                    !http.retriable_statuses.is_empty(),
                ),
                (
                    "http_health_check.service_name_matcher",
                    http.service_name_matcher.is_some(),
                ),
            ])?;
            if !http.path.starts_with('/') {
                return Err(FieldError::new(
                    "http_health_check.path",
                    "a path starting with / is required",
                ));
            }
            let expected = http
                .expected_statuses
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let ok = (100..=600).contains(&r.start) && r.start < r.end && r.end <= 600;
                    ok.then_some(r.start as u16..r.end as u16).ok_or_else(|| {
                        FieldError::new(
                            format!("http_health_check.expected_statuses[{i}]"),
                            format!("[{}, {}) is not a status range", r.start, r.end),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let http2 = match CodecClientType::try_from(http.codec_client_type) {
                Ok(CodecClientType::Http1) => false,
                Ok(CodecClientType::Http2) => true,
                _ => {
                    return Err(FieldError::new(
                        "http_health_check.codec_client_type",
                        "only HTTP1 and HTTP2 are supported",
                    ));
                }
            };
            Probe::Http {
                path: http.path.clone(),
                host: http.host.clone(),
                expected: if expected.is_empty() {
                    std::iter::once(200..201).collect()
                } else {
                    expected
                },
                http2,
            }
        }
        Some(HealthChecker::GrpcHealthCheck(grpc)) => {
            reject_set(&[(
                "grpc_health_check.initial_metadata",
                !grpc.initial_metadata.is_empty(),
            )])?;
            Probe::Grpc {
                service: grpc.service_name.clone(),
                authority: grpc.authority.clone(),
            }
        }
        Some(HealthChecker::TcpHealthCheck(tcp)) => {
            reject_set(&[
                ("tcp_health_check.send", tcp.send.is_some()),
                ("tcp_health_check.receive", !tcp.receive.is_empty()),
            ])?;
            Probe::Tcp
        }
        Some(HealthChecker::CustomHealthCheck(_)) => {
            return Err(FieldError::unsupported("custom_health_check"));
        }
        None => return Err(FieldError::message("a health checker is required")),
    };
    Ok(HealthCheckConfig {
        timeout: required_duration(h.timeout.as_ref(), "timeout")?,
        interval: required_duration(h.interval.as_ref(), "interval")?,
        unhealthy_threshold: threshold(&h.unhealthy_threshold, "unhealthy_threshold")?,
        healthy_threshold: threshold(&h.healthy_threshold, "healthy_threshold")?,
        probe,
    })
}

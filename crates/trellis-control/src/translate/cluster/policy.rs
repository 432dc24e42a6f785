//! A service's BackendPolicy settings as the Envoy fields of its outbound cluster: the
//! load-balancing policy, circuit breakers (the retry budget and the connection pool), outlier
//! detection and the active health check.

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlierDetection,
    circuit_breakers::{Thresholds, thresholds::RetryBudget as EnvoyRetryBudget},
    cluster::{LbConfig, LbPolicy, MaglevLbConfig, RingHashLbConfig},
};
use envoy_types::pb::envoy::config::core::v3::{
    HealthCheck as EnvoyHealthCheck, Metadata, RoutingPriority,
    health_check::{self, HealthChecker},
};
use envoy_types::pb::envoy::r#type::v3::{CodecClientType, Int64Range, Percent};
use envoy_types::pb::google::protobuf::{Struct, UInt32Value, UInt64Value, Value, value::Kind};
use trellis_api::{
    BackendSettings, ConnectionPool, HealthCheck, LoadBalancer, LoadBalancerType, OutlierDetection,
    RetryBudget,
};

use crate::translate::duration;

/// The cluster metadata namespace and key that turn Envoy's `LEAST_REQUEST` into Trellis's
/// P2C over peak-EWMA latency; Envoy, which has no peak-EWMA, ignores them.
const LB_METADATA: &str = "trellis.dev";
const LB_METADATA_KEY: &str = "lb_policy";
const PEAK_EWMA: &str = "PEAK_EWMA";

/// Envoy's share (in %) of the times a tripped detector ejects: always, or never.
const ENFORCED: u32 = 100;
const NOT_ENFORCED: u32 = 0;

/// Sets what `settings` say on the outbound cluster `c`; a service without a policy gets
/// P2C peak-EWMA and the mesh's default retry budget ([`RetryBudget::default`]), so that
/// retries are always bounded.
pub(super) fn apply(c: &mut Cluster, settings: &BackendSettings<'_>) {
    load_balancer(c, settings.load_balancer.cloned().unwrap_or_default());
    c.circuit_breakers = Some(circuit_breakers(
        settings.retry_budget.copied().unwrap_or_default(),
        settings.connection_pool.copied().unwrap_or_default(),
    ));
    c.outlier_detection = settings.outlier_detection.map(outlier_detection);
    c.health_checks = settings
        .health_check
        .map(health_check)
        .into_iter()
        .collect();
}

/// `lb_policy` and `lb_config`: P2C peak-EWMA is `LEAST_REQUEST` marked in the cluster's
/// `trellis.dev` metadata.
fn load_balancer(c: &mut Cluster, lb: LoadBalancer) {
    let policy = match lb.lb_type {
        LoadBalancerType::P2cPeakEwma => {
            let mark = Struct {
                fields: [(
                    LB_METADATA_KEY.to_owned(),
                    Value {
                        kind: Some(Kind::StringValue(PEAK_EWMA.to_owned())),
                    },
                )]
                .into(),
            };
            c.metadata = Some(Metadata {
                filter_metadata: [(LB_METADATA.to_owned(), mark)].into(),
                ..Metadata::default()
            });
            LbPolicy::LeastRequest
        }
        LoadBalancerType::RoundRobin => LbPolicy::RoundRobin,
        LoadBalancerType::LeastRequest => LbPolicy::LeastRequest,
        LoadBalancerType::Random => LbPolicy::Random,
        LoadBalancerType::RingHash => LbPolicy::RingHash,
        LoadBalancerType::Maglev => LbPolicy::Maglev,
    };
    c.lb_policy = policy as i32;
    let size = |value: u64| UInt64Value { value };
    c.lb_config = match (lb.lb_type, lb.ring_hash, lb.maglev) {
        (LoadBalancerType::RingHash, Some(ring), _) => {
            Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
                minimum_ring_size: ring.minimum_ring_size.map(size),
                maximum_ring_size: ring.maximum_ring_size.map(size),
                ..RingHashLbConfig::default()
            }))
        }
        (LoadBalancerType::Maglev, _, Some(maglev)) => {
            Some(LbConfig::MaglevLbConfig(MaglevLbConfig {
                table_size: maglev.table_size.map(size),
            }))
        }
        _ => None,
    };
}

/// The DEFAULT-priority thresholds: the retry budget, at most `max(min_retry_concurrency,
/// budget_percent% × active requests)` retries at once, and the connection pool's limits that
/// are set.
fn circuit_breakers(budget: RetryBudget, pool: ConnectionPool) -> CircuitBreakers {
    let limit = |value: Option<u32>| value.map(|value| UInt32Value { value });
    CircuitBreakers {
        thresholds: vec![Thresholds {
            priority: RoutingPriority::Default as i32,
            max_connections: limit(pool.max_connections),
            max_pending_requests: limit(pool.max_pending_requests),
            max_requests: limit(pool.max_requests),
            retry_budget: Some(EnvoyRetryBudget {
                budget_percent: Some(Percent {
                    value: budget.budget_percent,
                }),
                min_retry_concurrency: Some(UInt32Value {
                    value: budget.min_retry_concurrency,
                }),
                ..EnvoyRetryBudget::default()
            }),
            ..Thresholds::default()
        }],
        ..CircuitBreakers::default()
    }
}

/// The consecutive-5xx detector, and the gateway-failure one when set. Success-rate ejection,
/// on by default in Envoy, is turned off explicitly: Trellis's proxy refuses it.
fn outlier_detection(o: &OutlierDetection) -> EnvoyOutlierDetection {
    let value = |value: u32| Some(UInt32Value { value });
    let gateway = o.consecutive_gateway_errors;
    EnvoyOutlierDetection {
        consecutive_5xx: value(o.consecutive_5xx),
        enforcing_consecutive_5xx: value(ENFORCED),
        consecutive_gateway_failure: gateway.and_then(value),
        enforcing_consecutive_gateway_failure: value(if gateway.is_some() {
            ENFORCED
        } else {
            NOT_ENFORCED
        }),
        enforcing_success_rate: value(NOT_ENFORCED),
        interval: Some(duration(o.interval)),
        base_ejection_time: Some(duration(o.base_ejection_time)),
        max_ejection_time: Some(duration(o.max_ejection_time)),
        max_ejection_percent: value(o.max_ejection_percent),
        ..EnvoyOutlierDetection::default()
    }
}

/// One health check: an HTTP/1.1 request, a gRPC health call or a TCP connect.
fn health_check(h: &HealthCheck) -> EnvoyHealthCheck {
    let checker = if let Some(http) = &h.http {
        HealthChecker::HttpHealthCheck(health_check::HttpHealthCheck {
            path: http.path.clone(),
            host: http.host.clone().unwrap_or_default(),
            // Envoy's ranges end after their last status.
            expected_statuses: http
                .expected_statuses
                .iter()
                .map(|r| Int64Range {
                    start: i64::from(r.first),
                    end: i64::from(r.last) + 1,
                })
                .collect(),
            codec_client_type: CodecClientType::Http1 as i32,
            ..health_check::HttpHealthCheck::default()
        })
    } else if let Some(grpc) = &h.grpc {
        HealthChecker::GrpcHealthCheck(health_check::GrpcHealthCheck {
            service_name: grpc.service.clone().unwrap_or_default(),
            ..health_check::GrpcHealthCheck::default()
        })
    } else {
        // Validation leaves `tcp` as the only other probe.
        HealthChecker::TcpHealthCheck(health_check::TcpHealthCheck::default())
    };
    EnvoyHealthCheck {
        timeout: Some(duration(h.timeout)),
        interval: Some(duration(h.interval)),
        unhealthy_threshold: Some(UInt32Value {
            value: h.unhealthy_threshold,
        }),
        healthy_threshold: Some(UInt32Value {
            value: h.healthy_threshold,
        }),
        health_checker: Some(checker),
        ..EnvoyHealthCheck::default()
    }
}

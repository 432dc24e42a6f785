//! FaultInjection and RateLimit as Envoy's `fault` and `local_ratelimit` HTTP filters: the
//! filters of outbound and inbound connection managers, and the per-route configs that a
//! rule's `ExtensionRef` filters give its routes.

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, RuntimeFractionalPercent,
    header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{
    FaultDelay, fault_delay::FaultDelaySecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort::ErrorType,
};
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter::ConfigType,
};
use envoy_types::pb::envoy::r#type::v3::{
    FractionalPercent, TokenBucket, fractional_percent::DenominatorType,
};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use prost::{Message, Name};
use trellis_api::{ConfigSet, ExtensionKind, FaultInjectionSpec, HttpRouteFilter, RateLimitSpec};
use trellis_xds::node::NodeMeta;

use super::{any, duration, route, stable_map};
use crate::model::MeshModel;

/// The name of Envoy's fault injection filter, also the key of its per-route configs.
pub(super) const FAULT: &str = "envoy.filters.http.fault";
/// The name of Envoy's local rate limit filter, also the key of its per-route configs.
pub(super) const LOCAL_RATELIMIT: &str = "envoy.filters.http.local_ratelimit";
/// The stat prefix of every local rate limit (Envoy's documented example).
const STAT_PREFIX: &str = "http_local_rate_limiter";

/// The filters every outbound connection manager has before its router: `fault`, then
/// `local_ratelimit`. Neither has a config of its own (no fault, no token bucket), so only the
/// routes that carry a per-route config get faults or limits.
pub(super) fn outbound_filters() -> Vec<HttpFilter> {
    let limit = LocalRateLimit {
        stat_prefix: STAT_PREFIX.to_owned(),
        ..LocalRateLimit::default()
    };
    vec![fault_filter(), http_filter(LOCAL_RATELIMIT, &limit)]
}

/// The `fault` filter with no fault of its own: routes that carry a per-route config get theirs.
pub(super) fn fault_filter() -> HttpFilter {
    http_filter(FAULT, &HttpFault::default())
}

/// The `local_ratelimit` filter of the inbound connection manager of `node`'s workload,
/// limiting every request it receives; `None` when no RateLimit targets its Services.
///
/// A workload that belongs to several targeted Services (its own and a selector-based one
/// such as `catalog-v1`) takes the first such RateLimit in load order: a connection manager
/// has one listener-wide bucket.
pub(super) fn inbound_filter(model: &MeshModel, node: &NodeMeta) -> Option<HttpFilter> {
    let services = model.workload_services(node);
    let limit = model
        .config
        .rate_limits
        .iter()
        .find(|r| services.iter().any(|s| r.targets(&s.namespace, &s.name)))?;
    Some(http_filter(LOCAL_RATELIMIT, &local_rate_limit(&limit.spec)))
}

/// The per-route configs the `ExtensionRef` filters of a rule in `namespace` ask for, keyed by
/// filter name; `None` when one names a resource that does not exist, whose routes must then
/// answer with an error (Gateway API: an unresolved filter is never skipped).
pub(super) fn per_route_configs(
    filters: &[HttpRouteFilter],
    namespace: &str,
    config: &ConfigSet,
) -> Option<HashMap<String, Any>> {
    let mut configs = stable_map();
    for e in filters.iter().filter_map(|f| f.extension_ref.as_ref()) {
        let (name, typed) = match e.kind {
            ExtensionKind::FaultInjection => {
                let fault = config.fault_injection(namespace, &e.name)?;
                (FAULT, any(&http_fault(&fault.spec)))
            }
            ExtensionKind::RateLimit => {
                let limit = config.rate_limit(namespace, &e.name)?;
                (LOCAL_RATELIMIT, any(&local_rate_limit(&limit.spec)))
            }
        };
        configs.insert(name.to_owned(), typed);
    }
    Some(configs)
}

fn http_filter<M: Message + Name>(name: &str, config: &M) -> HttpFilter {
    HttpFilter {
        name: name.to_owned(),
        config_type: Some(ConfigType::TypedConfig(any(config))),
        ..HttpFilter::default()
    }
}

/// A FaultInjection as Envoy's `HTTPFault`: a fixed delay and an HTTP or gRPC abort, each on
/// its share of the requests that match `headers`.
fn http_fault(spec: &FaultInjectionSpec) -> HttpFault {
    let delay = spec.delay.map(|d| FaultDelay {
        fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(duration(d.fixed_delay))),
        percentage: Some(percentage(d.percent)),
    });
    // Validation gives every abort exactly one of the two statuses.
    let abort = spec.abort.map(|a| FaultAbort {
        error_type: a
            .http_status
            .map(|s| ErrorType::HttpStatus(u32::from(s)))
            .or_else(|| a.grpc_status.map(|g| ErrorType::GrpcStatus(g.code()))),
        percentage: Some(percentage(a.percent)),
        ..FaultAbort::default()
    });
    HttpFault {
        delay,
        abort,
        headers: spec.headers.iter().map(route::header_matcher).collect(),
        ..HttpFault::default()
    }
}

/// A share of requests in Envoy's units: whole percentages in hundredths, others in millionths
/// (to four decimals, the finest a `FractionalPercent` holds).
fn percentage(percent: f64) -> FractionalPercent {
    // Validation keeps `percent` within 0 to 100, so both casts are in range (at most a
    // million), and the first one is exact.
    if percent.fract() == 0.0 {
        FractionalPercent {
            numerator: percent as u32,
            denominator: DenominatorType::Hundred as i32,
        }
    } else {
        FractionalPercent {
            numerator: (percent * 10_000.0).round() as u32,
            denominator: DenominatorType::Million as i32,
        }
    }
}

/// A RateLimit as Envoy's `LocalRateLimit`: its token bucket, enabled and enforced for every
/// request, and a `retry-after` on refusals.
fn local_rate_limit(spec: &RateLimitSpec) -> LocalRateLimit {
    let always = |runtime_key: &str| RuntimeFractionalPercent {
        default_value: Some(FractionalPercent {
            numerator: 100,
            denominator: DenominatorType::Hundred as i32,
        }),
        runtime_key: runtime_key.to_owned(),
    };
    LocalRateLimit {
        stat_prefix: STAT_PREFIX.to_owned(),
        token_bucket: Some(TokenBucket {
            max_tokens: spec.burst(),
            tokens_per_fill: Some(UInt32Value {
                value: spec.requests,
            }),
            fill_interval: Some(duration(spec.per)),
        }),
        filter_enabled: Some(always("local_rate_limit_enabled")),
        filter_enforced: Some(always("local_rate_limit_enforced")),
        response_headers_to_add: vec![HeaderValueOption {
            header: Some(HeaderValue {
                key: "retry-after".to_owned(),
                value: retry_after(spec.per),
                ..HeaderValue::default()
            }),
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..HeaderValueOption::default()
        }],
        ..LocalRateLimit::default()
    }
}

/// `retry-after` for a bucket refilled every `per`: whole seconds, rounded up, at least 1.
fn retry_after(per: Duration) -> String {
    per.as_nanos().div_ceil(1_000_000_000).max(1).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_are_hundredths_when_whole_and_millionths_otherwise() {
        let cases = [
            (0.0, 0, DenominatorType::Hundred),
            (20.0, 20, DenominatorType::Hundred),
            (100.0, 100, DenominatorType::Hundred),
            (0.5, 5_000, DenominatorType::Million),
            (12.3456, 123_456, DenominatorType::Million),
            (0.00004, 0, DenominatorType::Million),
        ];
        for (percent, numerator, denominator) in cases {
            let want = FractionalPercent {
                numerator,
                denominator: denominator as i32,
            };
            assert_eq!(percentage(percent), want, "{percent}");
        }
    }

    #[test]
    fn retry_after_rounds_the_refill_interval_up_to_whole_seconds() {
        let cases = [
            (50, "1"),
            (1000, "1"),
            (1001, "2"),
            (2500, "3"),
            (60_000, "60"),
        ];
        for (ms, want) in cases {
            assert_eq!(retry_after(Duration::from_millis(ms)), want, "{ms}ms");
        }
    }
}

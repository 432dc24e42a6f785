//! A cluster's `outlier_detection`: the consecutive-5xx and consecutive-gateway-failure
//! detectors and the ejection limits (Envoy's defaults). Success-rate and failure-percentage
//! detection are not implemented: a config that enables them is refused.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::OutlierDetection;

use crate::config::fraction::Fraction;
use crate::config::{FieldError, duration, reject_set};

/// A compiled `OutlierDetection`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct OutlierConfig {
    /// Consecutive 5xx that eject, with the share of trips enforced; `None` when not enforced.
    pub(crate) consecutive_5xx: Option<(u32, Fraction)>,
    /// Consecutive gateway failures that eject, with the share enforced.
    pub(crate) consecutive_gateway: Option<(u32, Fraction)>,
    /// How often the ejection multiplier decays.
    pub(crate) interval: Duration,
    /// Ejection time for a first ejection.
    pub(crate) base_ejection_time: Duration,
    /// Longest ejection.
    pub(crate) max_ejection_time: Duration,
    /// Share of the cluster that may be ejected at once (at least one endpoint).
    pub(crate) max_ejection_percent: u32,
}

fn percent(value: Option<u32>, default: u32) -> Fraction {
    Fraction {
        numerator: value.unwrap_or(default).min(100),
        denominator: 100,
    }
}

fn or_default(
    d: Option<&envoy_types::pb::google::protobuf::Duration>,
    field: &str,
    default: Duration,
) -> Result<Duration, FieldError> {
    d.map_or(Ok(default), |d| duration(d, field))
}

/// Compiles `o` with Envoy's defaults.
pub(crate) fn compile(o: &OutlierDetection) -> Result<OutlierConfig, FieldError> {
    let value =
        |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>| v.as_ref().map(|v| v.value);
    if percent(value(&o.enforcing_success_rate), 100).numerator > 0 {
        return Err(FieldError::new(
            "enforcing_success_rate",
            "success-rate ejection is not supported (set it to 0; the default is 100)",
        ));
    }
    reject_set(&[
        (
            "enforcing_failure_percentage",
            value(&o.enforcing_failure_percentage).is_some_and(|v| v > 0),
        ),
        (
            "enforcing_failure_percentage_local_origin",
            value(&o.enforcing_failure_percentage_local_origin).is_some_and(|v| v > 0),
        ),
        (
            "split_external_local_origin_errors",
            o.split_external_local_origin_errors,
        ),
        (
            "max_ejection_time_jitter",
            o.max_ejection_time_jitter.is_some(),
        ),
        ("monitors", !o.monitors.is_empty()),
    ])?;
    let detector = |threshold: Option<u32>, enforcing: Fraction| {
        (enforcing.numerator > 0).then_some((threshold.unwrap_or(5).max(1), enforcing))
    };
    Ok(OutlierConfig {
        consecutive_5xx: detector(
            value(&o.consecutive_5xx),
            percent(value(&o.enforcing_consecutive_5xx), 100),
        ),
        consecutive_gateway: detector(
            value(&o.consecutive_gateway_failure),
            percent(value(&o.enforcing_consecutive_gateway_failure), 0),
        ),
        interval: or_default(o.interval.as_ref(), "interval", Duration::from_secs(10))?,
        base_ejection_time: or_default(
            o.base_ejection_time.as_ref(),
            "base_ejection_time",
            Duration::from_secs(30),
        )?,
        max_ejection_time: or_default(
            o.max_ejection_time.as_ref(),
            "max_ejection_time",
            Duration::from_secs(300),
        )?,
        max_ejection_percent: value(&o.max_ejection_percent).unwrap_or(10).min(100),
    })
}

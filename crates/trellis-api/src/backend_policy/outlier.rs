//! A BackendPolicy's `outlierDetection`: passive health from the answers callers get, which
//! ejects an endpoint for a while after consecutive errors (Envoy's consecutive-5xx and
//! consecutive-gateway-failure detectors).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bounded;
use crate::duration::format_duration;
use crate::validate::Validator;
use crate::yaml::FieldPath;

/// When a caller stops sending to an endpoint that keeps failing. Each caller's proxy judges on
/// its own. An ejected endpoint returns after `baseEjectionTime` × the number of times it was
/// ejected (at most `maxEjectionTime`); the count decays every `interval` it stays healthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Consecutive 5xx answers (and connection failures) that eject an endpoint, at least 1;
    /// 5 when not given.
    #[serde(
        rename = "consecutive5xx",
        default = "default_consecutive_5xx",
        deserialize_with = "bounded::positive_count"
    )]
    pub consecutive_5xx: u32,
    /// Consecutive gateway errors (502, 503, 504 and connection failures) that eject an
    /// endpoint, at least 1; that detector is off when not given.
    #[serde(
        default,
        deserialize_with = "bounded::option_positive_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub consecutive_gateway_errors: Option<u32>,
    /// How often ejections are reviewed; 10s when not given.
    #[serde(default = "default_interval", with = "crate::duration::required")]
    pub interval: Duration,
    /// How long a first ejection lasts; 30s when not given.
    #[serde(default = "default_base_ejection", with = "crate::duration::required")]
    pub base_ejection_time: Duration,
    /// The longest ejection, at least `baseEjectionTime`; 300s when not given.
    #[serde(default = "default_max_ejection", with = "crate::duration::required")]
    pub max_ejection_time: Duration,
    /// The share of the Service's endpoints that may be ejected at once, 0 to 100 (at least one
    /// endpoint is always allowed); 10 when not given.
    #[serde(
        default = "default_max_ejection_percent",
        deserialize_with = "bounded::percent"
    )]
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_5xx: default_consecutive_5xx(),
            consecutive_gateway_errors: None,
            interval: default_interval(),
            base_ejection_time: default_base_ejection(),
            max_ejection_time: default_max_ejection(),
            max_ejection_percent: default_max_ejection_percent(),
        }
    }
}

fn default_consecutive_5xx() -> u32 {
    5
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_base_ejection() -> Duration {
    Duration::from_secs(30)
}

fn default_max_ejection() -> Duration {
    Duration::from_secs(300)
}

fn default_max_ejection_percent() -> u32 {
    10
}

/// Checks an `outlierDetection` at `path`: positive durations, the longest ejection no shorter
/// than the first.
pub(super) fn validate(o: &OutlierDetection, path: &FieldPath, v: &mut Validator<'_>) {
    for (field, d) in [
        ("interval", o.interval),
        ("baseEjectionTime", o.base_ejection_time),
    ] {
        if d.is_zero() {
            v.error(
                &path.key(field),
                format!(
                    "expected a positive duration such as `10s`, found `{}`",
                    format_duration(d)
                ),
            );
        }
    }
    if o.max_ejection_time < o.base_ejection_time {
        v.error(
            &path.key("maxEjectionTime"),
            format!(
                "expected at least baseEjectionTime (`{}`), found `{}`{}",
                format_duration(o.base_ejection_time),
                format_duration(o.max_ejection_time),
                if o.max_ejection_time == default_max_ejection() {
                    " (the default): set maxEjectionTime too"
                } else {
                    ""
                }
            ),
        );
    }
}

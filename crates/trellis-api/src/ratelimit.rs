//! `kind: RateLimit` (`trellis.dev/v1alpha1`): a local token bucket, counted by each proxy on
//! its own. Referenced by a route rule's `ExtensionRef` filter it limits that rule's requests
//! at the caller's proxy; with `targetRefs` it limits every request each sidecar of those
//! Services receives, as Istio's local rate limit on a workload.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bounded;
use crate::claim::Setting;
use crate::duration::format_duration;
use crate::meta::{self, Meta};
use crate::policy::TargetRef;
use crate::route::service_ref;
use crate::validate::Validator;
use crate::yaml::FieldPath;

/// The shortest `per` a bucket refills over: Envoy's minimum `fill_interval`.
const MIN_REFILL_INTERVAL: Duration = Duration::from_millis(50);

/// A token bucket: requests past it are answered 429.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Name and namespace; rules reference it by name from their own namespace.
    pub metadata: Meta,
    /// The bucket and the Services it guards.
    pub spec: RateLimitSpec,
}

/// The `spec` of a [`RateLimit`]: a bucket of `burst` tokens, refilled with `requests` tokens
/// every `per`; each request takes one token, and a request that finds none is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitSpec {
    /// The tokens added every `per`: the sustained rate; at least 1.
    #[serde(deserialize_with = "bounded::positive_count")]
    pub requests: u32,
    /// The refill interval; 1s when not given, at least 50ms.
    #[serde(default = "one_second", with = "crate::duration::required")]
    pub per: Duration,
    /// The bucket's size: how many requests may pass at once after a quiet spell; `requests`
    /// when not given, at least 1. See [`RateLimitSpec::burst`].
    #[serde(
        default,
        deserialize_with = "bounded::option_positive_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub burst: Option<u32>,
    /// Services (in the limit's namespace) whose sidecars limit every request they receive,
    /// each instance on its own; at most one RateLimit per Service. Without any, the limit
    /// applies only where a route rule references it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<TargetRef>,
}

/// A spec without `requests`, which validation rejects; `spec` itself is required in effect.
impl Default for RateLimitSpec {
    fn default() -> Self {
        Self {
            requests: 0,
            per: one_second(),
            burst: None,
            target_refs: Vec::new(),
        }
    }
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

impl RateLimitSpec {
    /// The bucket's size: `burst`, or `requests` when not given.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.requests)
    }
}

impl RateLimit {
    /// Whether its `targetRefs` name the Service `name` in `namespace`.
    pub fn targets(&self, namespace: &str, name: &str) -> bool {
        self.metadata.namespace == namespace && self.spec.target_refs.iter().any(|t| t.name == name)
    }
}

/// What a RateLimit's `targetRefs` set, at most once per Service.
pub(crate) const SERVICE_LIMIT: Setting = Setting {
    kind: "RateLimit",
    what: "a rate limit",
    rule: "one RateLimit with targetRefs per Service",
};

/// Checks a RateLimit on its own; the loader checks its [`SERVICE_LIMIT`] against the others.
pub(crate) fn validate(limit: &RateLimit, v: &mut Validator<'_>) {
    meta::validate(&limit.metadata, false, v);
    let spec = FieldPath::root().key("spec");
    if limit.spec.requests == 0 {
        // Only a missing `spec` gets here: a given `requests` is read as at least 1.
        v.error(
            &spec.key("requests"),
            "missing required field `requests` (tokens added every `per`, at least 1)",
        );
    }
    if limit.spec.per < MIN_REFILL_INTERVAL {
        v.error(
            &spec.key("per"),
            format!(
                "expected a duration of at least `{}` (the shortest refill interval), found `{}`",
                format_duration(MIN_REFILL_INTERVAL),
                format_duration(limit.spec.per)
            ),
        );
    }
    for (i, t) in limit.spec.target_refs.iter().enumerate() {
        service_ref(&t.group, &t.kind, &spec.key("targetRefs").index(i), v);
    }
}

#[cfg(test)]
mod tests;

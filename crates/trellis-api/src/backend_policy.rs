//! `kind: BackendPolicy` (`trellis.dev/v1alpha1`): how callers treat a Service as a backend,
//! attached to it Gateway API style (`targetRefs`): retry budget, load balancing, connection
//! limits, outlier detection, active health checks and locality failover.

mod balance;
mod health;
mod outlier;

pub use balance::{ConsistentHash, LoadBalancer, LoadBalancerType, Maglev, RingHash};
pub use health::{GrpcHealthCheck, HealthCheck, HttpHealthCheck, StatusRange, TcpHealthCheck};
pub use outlier::OutlierDetection;

use serde::{Deserialize, Serialize};

use crate::bounded;
use crate::claim::Setting;
use crate::meta::{self, Meta};
use crate::policy::TargetRef;
use crate::route::service_ref;
use crate::validate::Validator;
use crate::yaml::FieldPath;

/// A backend policy: settings for the Services it targets.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendPolicy {
    /// Name and namespace.
    pub metadata: Meta,
    /// Targets and settings.
    pub spec: BackendPolicySpec,
}

/// The `spec` of a [`BackendPolicy`]. Each setting is optional, and at most one policy gives
/// it to a Service (several policies may target one Service with different settings).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendPolicySpec {
    /// The Services (in the policy's namespace) it applies to; at least one.
    #[serde(default)]
    pub target_refs: Vec<TargetRef>,
    /// The bound on concurrent retries to the targets; the mesh default
    /// ([`RetryBudget::default`]) when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
    /// How callers pick an endpoint; P2C over peak-EWMA latency when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// Limits on each caller's connections and requests to the targets; none when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    /// Ejection of endpoints that keep failing; off when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Active probes of the endpoints; off when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Preference for endpoints near the caller; off when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_failover: Option<LocalityFailover>,
}

/// Limits on what each caller's proxy sends to the Service at once (Envoy's circuit
/// breakers): requests over a limit fail at once with 503 instead of queueing. Each limit is
/// at least 1; a limit not given is not enforced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPool {
    /// Connections to all the endpoints together (HTTP/1.1 carries one request at a time on
    /// each).
    #[serde(
        default,
        deserialize_with = "bounded::option_positive_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_connections: Option<u32>,
    /// Requests waiting for a connection when `maxConnections` are busy.
    #[serde(
        default,
        deserialize_with = "bounded::option_positive_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_pending_requests: Option<u32>,
    /// Requests in flight.
    #[serde(
        default,
        deserialize_with = "bounded::option_positive_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_requests: Option<u32>,
}

/// Locality-aware routing: with `enabled`, a caller sends to the endpoints in its own region
/// and zone while any of them is available (not gone, ejected or failing its health check),
/// then to the rest of its region, then anywhere. Callers and endpoints without a locality
/// are not preferred by anyone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityFailover {
    /// Whether callers prefer nearby endpoints.
    pub enabled: bool,
}

/// How many retries to a Service may be in flight at once, from every route of a proxy:
/// at most `max(minRetryConcurrency, budgetPercent% × active requests to the Service)`, as
/// Envoy's `retry_budget`. A retry over budget is not made; the last answer stands.
///
/// The default, 20% and 3, is also what a Service without a budget gets: retries are always
/// bounded.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Retries allowed as a percentage of active requests, above 0 and at most 100; 20 when
    /// not given.
    #[serde(
        default = "default_budget_percent",
        deserialize_with = "bounded::budget_percent"
    )]
    pub budget_percent: f64,
    /// Retries always allowed, however few requests are active; 3 when not given.
    #[serde(
        default = "default_min_retry_concurrency",
        deserialize_with = "bounded::count"
    )]
    pub min_retry_concurrency: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            budget_percent: default_budget_percent(),
            min_retry_concurrency: default_min_retry_concurrency(),
        }
    }
}

fn default_budget_percent() -> f64 {
    20.0
}

fn default_min_retry_concurrency() -> u32 {
    3
}

impl BackendPolicy {
    /// Whether it applies to the Service `name` in `namespace`.
    pub fn targets(&self, namespace: &str, name: &str) -> bool {
        self.metadata.namespace == namespace && self.spec.target_refs.iter().any(|t| t.name == name)
    }
}

/// The settings of a BackendPolicy for one Service, each from the policy that sets it (if
/// any), as [`crate::ConfigSet::backend_settings`] gathers them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BackendSettings<'a> {
    /// `retryBudget`.
    pub retry_budget: Option<&'a RetryBudget>,
    /// `loadBalancer`.
    pub load_balancer: Option<&'a LoadBalancer>,
    /// `connectionPool`.
    pub connection_pool: Option<&'a ConnectionPool>,
    /// `outlierDetection`.
    pub outlier_detection: Option<&'a OutlierDetection>,
    /// `healthCheck`.
    pub health_check: Option<&'a HealthCheck>,
    /// `localityFailover`.
    pub locality_failover: Option<&'a LocalityFailover>,
}

impl<'a> BackendSettings<'a> {
    /// Takes each setting `spec` has and this does not have yet.
    pub(crate) fn add(&mut self, spec: &'a BackendPolicySpec) {
        self.retry_budget = self.retry_budget.or(spec.retry_budget.as_ref());
        self.load_balancer = self.load_balancer.or(spec.load_balancer.as_ref());
        self.connection_pool = self.connection_pool.or(spec.connection_pool.as_ref());
        self.outlier_detection = self.outlier_detection.or(spec.outlier_detection.as_ref());
        self.health_check = self.health_check.or(spec.health_check.as_ref());
        self.locality_failover = self.locality_failover.or(spec.locality_failover.as_ref());
    }

    /// Whether callers prefer endpoints near them.
    pub fn locality_failover_enabled(&self) -> bool {
        self.locality_failover.is_some_and(|l| l.enabled)
    }
}

/// A setting of a BackendPolicy that at most one policy gives a Service, as the loader claims
/// it, with whether a spec sets it.
pub(crate) type Claimed = (Setting, fn(&BackendPolicySpec) -> bool);

/// Every [`Claimed`] setting; the loader checks each against the other policies.
pub(crate) const SETTINGS: [Claimed; 6] = [
    (
        setting("a retry budget", "one retryBudget per Service"),
        |s| s.retry_budget.is_some(),
    ),
    (
        setting("a load balancer", "one loadBalancer per Service"),
        |s| s.load_balancer.is_some(),
    ),
    (
        setting("a connection pool", "one connectionPool per Service"),
        |s| s.connection_pool.is_some(),
    ),
    (
        setting("outlier detection", "one outlierDetection per Service"),
        |s| s.outlier_detection.is_some(),
    ),
    (
        setting("a health check", "one healthCheck per Service"),
        |s| s.health_check.is_some(),
    ),
    (
        setting("locality failover", "one localityFailover per Service"),
        |s| s.locality_failover.is_some(),
    ),
];

const fn setting(what: &'static str, rule: &'static str) -> Setting {
    Setting {
        kind: "BackendPolicy",
        what,
        rule,
    }
}

/// Checks a BackendPolicy on its own; the loader checks its [`SETTINGS`] against the others.
pub(crate) fn validate(policy: &BackendPolicy, v: &mut Validator<'_>) {
    meta::validate(&policy.metadata, false, v);
    let spec = FieldPath::root().key("spec");
    if policy.spec.target_refs.is_empty() {
        v.error(
            &spec.key("targetRefs"),
            "expected at least one targetRef naming a Service (kind: Service)",
        );
    }
    for (i, t) in policy.spec.target_refs.iter().enumerate() {
        service_ref(&t.group, &t.kind, &spec.key("targetRefs").index(i), v);
    }
    if let Some(lb) = &policy.spec.load_balancer {
        balance::validate(lb, &spec.key("loadBalancer"), v);
    }
    if let Some(o) = &policy.spec.outlier_detection {
        outlier::validate(o, &spec.key("outlierDetection"), v);
    }
    if let Some(h) = &policy.spec.health_check {
        health::validate(h, &spec.key("healthCheck"), v);
    }
}

/// Checks that exactly one of `options` (name, whether given) is given; `missing` is the error
/// when none is.
fn exactly_one(options: &[(&str, bool)], missing: &str, path: &FieldPath, v: &mut Validator<'_>) {
    let given: Vec<&str> = options
        .iter()
        .filter_map(|(name, set)| set.then_some(*name))
        .collect();
    match given.as_slice() {
        [] => v.error(path, missing),
        [_] => {}
        [first, second, ..] => {
            let names: Vec<String> = options.iter().map(|(n, _)| format!("`{n}`")).collect();
            let (last, rest) = names
                .split_last()
                .map_or(("", &[][..]), |(l, r)| (l.as_str(), r));
            v.error(
                &path.key(second),
                format!(
                    "give one of {} and {last}, not both `{first}` and `{second}`",
                    rest.join(", ")
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests;

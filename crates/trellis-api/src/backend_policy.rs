//! `kind: BackendPolicy` (`trellis.dev/v1alpha1`): how callers treat a Service as a backend,
//! attached to it Gateway API style (`targetRefs`). For now only its retry budget.

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

/// The `spec` of a [`BackendPolicy`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendPolicySpec {
    /// The Services (in the policy's namespace) it applies to; at least one.
    #[serde(default)]
    pub target_refs: Vec<TargetRef>,
    /// The bound on concurrent retries to the targets; the mesh default
    /// ([`RetryBudget::default`]) when not given. At most one policy sets it per Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
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

/// What a BackendPolicy's `retryBudget` sets, at most once per Service.
pub(crate) const RETRY_BUDGET: Setting = Setting {
    kind: "BackendPolicy",
    what: "a retry budget",
    rule: "one retryBudget per Service",
};

/// Checks a BackendPolicy on its own; the loader checks its [`RETRY_BUDGET`] against the
/// others.
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
}

#[cfg(test)]
mod tests;

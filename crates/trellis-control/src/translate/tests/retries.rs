//! Route retries and cluster retry budgets, checked field by field against what Envoy expects.

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers,
    circuit_breakers::{Thresholds, thresholds::RetryBudget},
    cluster::LbPolicy,
};
use envoy_types::pb::envoy::config::core::v3::RoutingPriority;
use envoy_types::pb::envoy::config::route::v3::{
    RetryPolicy, Route,
    retry_policy::{RetryBackOff, RetryHostPredicate, retry_host_predicate::ConfigType},
    route::Action,
};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, UInt32Value};

use crate::model::MeshModel;
use crate::translate::cluster::service_cluster;
use crate::translate::route::route_configs;

const SERVICES: &str = "\
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: shop}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: shop-v1}
---
";

fn model(yaml: &str) -> MeshModel {
    let config = trellis_api::load_str("t.yaml", &format!("{SERVICES}{yaml}"))
        .unwrap_or_else(|e| panic!("{e}"));
    MeshModel::build(Arc::new(config), std::iter::empty())
}

/// The retry policy of each Envoy route of Service `shop` when `kind` `r` has `rules` (YAML at
/// the indentation of `rules:`'s items), by route name.
fn policies(kind: &str, rules: &str) -> Vec<(String, Option<RetryPolicy>)> {
    let model = model(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\nmetadata: {{name: r}}\nspec:\n  parentRefs: [{{kind: Service, name: shop}}]\n  rules:\n{rules}"
    ));
    let shop = route_configs(&model)
        .into_iter()
        .find(|c| c.name == "outbound|shop.default")
        .expect("shop's route config");
    let policy = |r: &Route| match &r.action {
        Some(Action::Route(a)) => a.retry_policy.clone(),
        other => panic!("expected a route action, found {other:?}"),
    };
    shop.virtual_hosts[0]
        .routes
        .iter()
        .map(|r| (r.name.clone(), policy(r)))
        .collect()
}

fn ms(millis: i32) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: 0,
        nanos: millis * 1_000_000,
    })
}

/// What every retrying policy has: attempts, back-off and the previous-hosts predicate.
fn retrying(attempts: u32, backoff_ms: i32) -> RetryPolicy {
    RetryPolicy {
        num_retries: Some(UInt32Value { value: attempts }),
        retry_back_off: Some(RetryBackOff {
            base_interval: ms(backoff_ms),
            max_interval: ms(10 * backoff_ms),
        }),
        retry_host_predicate: vec![RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".to_owned(),
            config_type: Some(ConfigType::TypedConfig(Any {
                type_url: "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate".to_owned(),
                value: Vec::new(),
            })),
        }],
        host_selection_retry_max_attempts: 5,
        ..RetryPolicy::default()
    }
}

#[test]
fn http_retries_become_envoy_retry_policies() {
    let got = policies(
        "HTTPRoute",
        "  - matches: [{path: {value: /codes}}]
    backendRefs: [{name: shop-v1}]
    retry: {codes: [503, 429], attempts: 3, backoff: 50ms}
  - matches: [{path: {value: /resets}}]
    backendRefs: [{name: shop-v1}]
    retry: {}
  - matches: [{path: {value: /timed}}]
    backendRefs: [{name: shop-v1}]
    timeouts: {request: 2s, backendRequest: 300ms}
    retry: {attempts: 0, backoff: 1s}
  - matches: [{path: {value: /plain}}]
    backendRefs: [{name: shop-v1}]
",
    );
    let want = vec![
        (
            "r.default:0".to_owned(),
            Some(RetryPolicy {
                retry_on: "connect-failure,refused-stream,reset,retriable-status-codes".to_owned(),
                retriable_status_codes: vec![503, 429],
                ..retrying(3, 50)
            }),
        ),
        (
            "r.default:1".to_owned(),
            Some(RetryPolicy {
                retry_on: "connect-failure,refused-stream,reset".to_owned(),
                ..retrying(2, 25)
            }),
        ),
        (
            "r.default:2".to_owned(),
            Some(RetryPolicy {
                retry_on: "connect-failure,refused-stream,reset".to_owned(),
                per_try_timeout: ms(300),
                num_retries: Some(UInt32Value { value: 0 }),
                retry_back_off: Some(RetryBackOff {
                    base_interval: Some(PbDuration {
                        seconds: 1,
                        nanos: 0,
                    }),
                    max_interval: Some(PbDuration {
                        seconds: 10,
                        nanos: 0,
                    }),
                }),
                ..retrying(0, 0)
            }),
        ),
        // Without `retry`: no policy (with only backendRequest, the one in filters.rs).
        ("r.default:3".to_owned(), None),
    ];
    let mut got = got;
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want);
}

#[test]
fn grpc_retries_name_grpc_statuses_in_retry_on() {
    let got = policies(
        "GRPCRoute",
        "  - matches: [{method: {service: shop.v1.Shop, method: Default}}]
    backendRefs: [{name: shop-v1}]
    retry: {}
  - matches: [{method: {service: shop.v1.Shop, method: Every}}]
    backendRefs: [{name: shop-v1}]
    retry:
      codes: [CANCELLED, DEADLINE_EXCEEDED, INTERNAL, RESOURCE_EXHAUSTED, UNAVAILABLE]
      attempts: 4
      backoff: 10ms
  - matches: [{method: {service: shop.v1.Shop, method: Resets}}]
    backendRefs: [{name: shop-v1}]
    retry: {codes: []}
  - matches: [{method: {service: shop.v1.Shop, method: None}}]
    backendRefs: [{name: shop-v1}]
",
    );
    let mut got = got;
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let want = vec![
        (
            "r.default:0".to_owned(),
            Some(RetryPolicy {
                retry_on: "connect-failure,refused-stream,reset,unavailable".to_owned(),
                ..retrying(2, 25)
            }),
        ),
        (
            "r.default:1".to_owned(),
            Some(RetryPolicy {
                retry_on: "connect-failure,refused-stream,reset,cancelled,deadline-exceeded,internal,resource-exhausted,unavailable".to_owned(),
                ..retrying(4, 10)
            }),
        ),
        (
            "r.default:2".to_owned(),
            Some(RetryPolicy {
                retry_on: "connect-failure,refused-stream,reset".to_owned(),
                ..retrying(2, 25)
            }),
        ),
        ("r.default:3".to_owned(), None),
    ];
    assert_eq!(got, want);
    assert!(
        got.iter()
            .flat_map(|(_, p)| p)
            .all(|p| p.retriable_status_codes.is_empty() && p.per_try_timeout.is_none())
    );
}

fn budget(percent: f64, min: u32) -> Option<CircuitBreakers> {
    Some(CircuitBreakers {
        thresholds: vec![Thresholds {
            priority: RoutingPriority::Default as i32,
            retry_budget: Some(RetryBudget {
                budget_percent: Some(Percent { value: percent }),
                min_retry_concurrency: Some(UInt32Value { value: min }),
                ..RetryBudget::default()
            }),
            ..Thresholds::default()
        }],
        ..CircuitBreakers::default()
    })
}

/// The circuit breakers of the outbound cluster of the service `key` (`name.namespace`).
fn breakers(model: &MeshModel, key: &str, mtls: bool) -> Option<CircuitBreakers> {
    let svc = model.services.get(key).expect(key);
    service_cluster(model, svc, mtls).circuit_breakers
}

#[test]
fn every_outbound_cluster_has_a_retry_budget_from_its_policy_or_the_default() {
    let model = model(
        "apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {name: shop}
spec:
  targetRefs: [{kind: Service, name: shop}]
  retryBudget: {budgetPercent: 12.5, minRetryConcurrency: 7}
---
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {name: elsewhere, namespace: other}
spec:
  targetRefs: [{kind: Service, name: shop-v1}]
  retryBudget: {budgetPercent: 50}
",
    );
    for mtls in [true, false] {
        assert_eq!(breakers(&model, "shop.default", mtls), budget(12.5, 7));
        // A policy in another namespace targets that namespace's shop-v1, not this one.
        assert_eq!(breakers(&model, "shop-v1.default", mtls), budget(20.0, 3));
    }
}

#[test]
fn the_resilience_example_translates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/resilience");
    let config = trellis_api::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let model = MeshModel::build(Arc::new(config), std::iter::empty());
    let mut pooled = budget(10.0, 5);
    if let Some(t) = pooled.as_mut().map(|b| &mut b.thresholds[0]) {
        t.max_connections = Some(UInt32Value { value: 50 });
        t.max_pending_requests = Some(UInt32Value { value: 20 });
        t.max_requests = Some(UInt32Value { value: 100 });
    }
    assert_eq!(breakers(&model, "catalog.default", true), pooled);
    assert_eq!(breakers(&model, "ratings.default", true), budget(20.0, 3));
    let catalog = service_cluster(&model, &model.services["catalog.default"], true);
    assert!(catalog.outlier_detection.is_some() && catalog.health_checks.len() == 1);
    let ratings = service_cluster(&model, &model.services["ratings.default"], true);
    assert_eq!(ratings.lb_policy, LbPolicy::RingHash as i32);
    let configs = route_configs(&model);
    let hashed = configs
        .iter()
        .find(|c| c.name == "outbound|ratings.default")
        .map(|c| &c.virtual_hosts[0].routes[0]);
    assert!(
        matches!(hashed.and_then(|r| r.action.as_ref()), Some(Action::Route(a)) if a.hash_policy.len() == 1),
        "{hashed:?}"
    );
    let retry_on = |service: &str| -> Vec<String> {
        let config = configs
            .iter()
            .find(|c| c.name == format!("outbound|{service}.default"))
            .expect(service);
        config.virtual_hosts[0]
            .routes
            .iter()
            .map(|r| match &r.action {
                Some(Action::Route(a)) => a.retry_policy.clone().unwrap_or_default().retry_on,
                _ => String::new(),
            })
            .collect()
    };
    assert_eq!(
        retry_on("catalog"),
        [
            "connect-failure,refused-stream,reset,retriable-status-codes",
            "connect-failure,refused-stream,reset"
        ]
    );
    assert_eq!(
        retry_on("ratings"),
        ["connect-failure,refused-stream,reset,unavailable,resource-exhausted"]
    );
}

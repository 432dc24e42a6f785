use std::sync::Arc;

use serde_json::json;
use trellis_xds::node::NodeMeta;

use super::*;

const CONFIG: &str = "\
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: shop}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: shop-v1}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: good}
spec:
  parentRefs: [{kind: Service, name: shop, port: 8080}]
  rules:
  - backendRefs: [{name: shop-v1}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shop}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken}
spec:
  parentRefs: [{kind: Service, name: shop}, {kind: Service, name: nowhere, namespace: ops}]
  rules:
  - backendRefs: [{name: shop-v1}, {name: missing}]
  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, namespace: ops}}}]
    backendRefs: [{name: nowhere, namespace: ops}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: rpc}
spec:
  parentRefs: [{kind: Service, name: ratings}]
  rules:
  - backendRefs: [{name: ratings}]
";

fn statuses(workloads: &[NodeMeta]) -> Vec<RouteStatus> {
    let config = trellis_api::load_str("t.yaml", CONFIG).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<String> = (0..workloads.len()).map(|i| format!("n{i}")).collect();
    let workloads = ids.iter().map(String::as_str).zip(workloads.iter());
    route_statuses(&MeshModel::build(Arc::new(config), workloads))
}

/// `(type, status, reason)` of each parent's conditions.
fn conditions(route: &RouteStatus) -> Vec<Vec<(&str, &str, &str)>> {
    route
        .parents
        .iter()
        .map(|p| {
            p.conditions
                .iter()
                .map(|c| (c.condition_type, c.status, c.reason))
                .collect()
        })
        .collect()
}

#[test]
fn a_route_whose_services_exist_is_accepted_with_resolved_refs() {
    let all = statuses(&[]);
    let good = &all[0];
    assert_eq!(
        conditions(good),
        [[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "True", "ResolvedRefs")
        ]]
    );
    assert_eq!(
        serde_json::to_value(good).unwrap(),
        json!({
            "kind": "HTTPRoute",
            "name": "good",
            "namespace": "default",
            "parents": [{
                "parentRef": {"name": "shop", "namespace": "default", "port": 8080},
                "conditions": [
                    {"type": "Accepted", "status": "True", "reason": "Accepted",
                     "message": "attached to Service shop.default"},
                    {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs",
                     "message": "every backend and mirror Service and every filter reference exists"},
                ],
            }],
            "rules": [{"backendRefs": [{"name": "shop-v1", "namespace": "default", "weight": 1}]}],
        })
    );
}

#[test]
fn missing_parents_and_backends_are_reported_by_name() {
    let all = statuses(&[]);
    let broken = &all[1];
    assert_eq!(
        conditions(broken),
        [
            [
                ("Accepted", "True", "Accepted"),
                ("ResolvedRefs", "False", "BackendNotFound")
            ],
            [
                ("Accepted", "False", "NoMatchingParent"),
                ("ResolvedRefs", "False", "BackendNotFound")
            ],
        ]
    );
    assert_eq!(broken.parents[1].parent_ref.namespace, "ops");
    assert!(
        broken.parents[1].conditions[0]
            .message
            .starts_with("parent Service nowhere.ops does not exist"),
        "{:?}",
        broken.parents[1].conditions[0]
    );
    let backends: Vec<Vec<(&str, &str, u32)>> = broken
        .rules
        .iter()
        .map(|r| {
            let refs = r.backend_refs.iter();
            refs.map(|b| (b.name.as_str(), b.namespace.as_str(), b.weight))
                .collect()
        })
        .collect();
    assert_eq!(
        backends,
        [
            vec![("shop-v1", "default", 1), ("missing", "default", 1)],
            vec![("nowhere", "ops", 1)]
        ]
    );
    assert_eq!(
        broken.parents[0].conditions[1].message,
        "Services not found: missing.default (spec.rules[0].backendRefs[1]), nowhere.ops (spec.rules[1].backendRefs[0]), shadow.ops (spec.rules[1].filters[0].requestMirror.backendRef)"
    );
}

#[test]
fn a_service_implied_by_a_workload_exists_but_not_one_implied_by_a_route() {
    let without = statuses(&[]);
    let rpc = &without[2];
    assert_eq!(rpc.kind, "GRPCRoute");
    assert_eq!(
        conditions(rpc),
        [[
            ("Accepted", "False", "NoMatchingParent"),
            ("ResolvedRefs", "False", "BackendNotFound")
        ]]
    );
    let ratings = NodeMeta {
        service: "ratings".into(),
        namespace: "default".into(),
        ip: "127.0.0.1".into(),
        inbound_port: 41001,
        ..NodeMeta::default()
    };
    let with = statuses(&[ratings]);
    assert_eq!(
        conditions(&with[2]),
        [[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "True", "ResolvedRefs")
        ]]
    );
}

#[test]
fn filter_references_that_name_nothing_are_reported_with_missing_backends() {
    let config = "\
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: shop}
---
apiVersion: trellis.dev/v1alpha1
kind: FaultInjection
metadata: {name: chaos}
spec: {delay: {fixedDelay: 1s}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: faulty}
spec:
  parentRefs: [{kind: Service, name: shop}]
  rules:
  - filters:
    - {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: FaultInjection, name: chaos}}
    - {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: RateLimit, name: gone}}
    backendRefs: [{name: shop}]
  - filters:
    - {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: FaultInjection, name: nowhere}}
    backendRefs: [{name: missing}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: resolved}
spec:
  parentRefs: [{kind: Service, name: shop}]
  rules:
  - filters:
    - {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: FaultInjection, name: chaos}}
    backendRefs: [{name: shop}]
";
    let config = trellis_api::load_str("t.yaml", config).unwrap_or_else(|e| panic!("{e}"));
    let all = route_statuses(&MeshModel::build(Arc::new(config), std::iter::empty()));
    assert_eq!(
        conditions(&all[0]),
        [[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "False", "BackendNotFound")
        ]]
    );
    assert_eq!(
        all[0].parents[0].conditions[1].message,
        "Services not found: missing.default (spec.rules[1].backendRefs[0]); RateLimit gone.default not found (spec.rules[0].filters[1].extensionRef); FaultInjection nowhere.default not found (spec.rules[1].filters[0].extensionRef)"
    );
    assert_eq!(
        conditions(&all[1]),
        [[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "True", "ResolvedRefs")
        ]]
    );
}

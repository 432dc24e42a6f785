//! What a client cannot honour of the policies that reach it. Envoy lacks peak-EWMA balancing;
//! proxyless gRPC implements only part of Envoy's API: the control plane sends it only what it can use (`translate/grpc.rs`),
//! and lists every user policy it cannot honour, by resource and rule, on the admin API
//! (`/api/proxies`) and in `trellis check`, instead of letting it be silently dropped.

use trellis_api::{
    BackendRef, ExtensionKind, HttpRouteFilter, HttpRouteFilterType, LoadBalancerType,
};
use trellis_xds::node::ClientKind;

use crate::model::MeshModel;
use crate::translate::GRPC_MAX_RETRIES;

/// The policies of `model` a `client` cannot honour, one line each.
pub(crate) fn gaps(model: &MeshModel, client: ClientKind) -> Vec<String> {
    match client {
        ClientKind::TrellisProxy => Vec::new(),
        ClientKind::Envoy => envoy_gaps(model),
        ClientKind::Grpc => grpc_gaps(model),
    }
}

/// Envoy implements everything the translator sends but the peak-EWMA mark on clusters: it
/// balances them by its least request, which follows requests in flight, not latency.
fn envoy_gaps(model: &MeshModel) -> Vec<String> {
    model
        .config
        .backend_policies
        .iter()
        .filter(|p| {
            p.spec
                .load_balancer
                .as_ref()
                .is_some_and(|lb| lb.lb_type == LoadBalancerType::P2cPeakEwma)
        })
        .map(|p| {
            format!(
                "BackendPolicy/{}: loadBalancer P2CPeakEWMA runs as Envoy's LeastRequest (requests in flight, not latency)",
                p.metadata.key()
            )
        })
        .collect()
}

fn grpc_gaps(model: &MeshModel) -> Vec<String> {
    let config = &model.config;
    let mut out = Vec::new();
    for route in &config.http_routes {
        let name = format!("HTTPRoute/{}", route.metadata.key());
        for (i, rule) in route.spec.rules.iter().enumerate() {
            let at = format!("{name} rule {}", i + 1);
            filter_gaps(&at, &rule.filters, &rule.backend_refs, &mut out);
            if rule.matches.iter().any(|m| !m.query_params.is_empty()) {
                out.push(format!(
                    "{at}: query parameter matches are not supported, so gRPC skips the rule"
                ));
            }
            if rule.timeouts.backend_request.is_some() {
                out.push(format!(
                    "{at}: timeouts.backendRequest (each try's timeout) is not applied"
                ));
            }
            if rule.retry.is_some() {
                out.push(format!(
                    "{at}: retry is not applied (gRPC retries on gRPC statuses, as a GRPCRoute's retry sets)"
                ));
            }
        }
    }
    for route in &config.grpc_routes {
        let name = format!("GRPCRoute/{}", route.metadata.key());
        for (i, rule) in route.spec.rules.iter().enumerate() {
            let at = format!("{name} rule {}", i + 1);
            filter_gaps(&at, &rule.filters, &rule.backend_refs, &mut out);
            match &rule.retry {
                Some(retry) if retry.codes.is_empty() => out.push(format!(
                    "{at}: retry without codes is not applied (gRPC retries on gRPC statuses only)"
                )),
                Some(retry) if retry.attempts > GRPC_MAX_RETRIES => out.push(format!(
                    "{at}: retry attempts are capped at {GRPC_MAX_RETRIES}, gRPC's limit"
                )),
                _ => {}
            }
        }
    }
    for policy in &config.backend_policies {
        let spec = &policy.spec;
        let unhonoured = [
            (
                "loadBalancer (gRPC balances round robin)",
                spec.load_balancer
                    .as_ref()
                    .is_some_and(|lb| lb.lb_type != LoadBalancerType::RoundRobin),
            ),
            ("connectionPool", spec.connection_pool.is_some()),
            ("outlierDetection", spec.outlier_detection.is_some()),
            ("healthCheck", spec.health_check.is_some()),
            ("localityFailover", spec.locality_failover.is_some()),
            ("retryBudget", spec.retry_budget.is_some()),
        ];
        for (field, set) in unhonoured {
            if set {
                out.push(format!(
                    "BackendPolicy/{}: {field} is not applied",
                    policy.metadata.key()
                ));
            }
        }
    }
    out
}

/// One line for each of a rule's and its backends' filters gRPC lacks.
fn filter_gaps(
    at: &str,
    filters: &[HttpRouteFilter],
    backends: &[BackendRef],
    out: &mut Vec<String>,
) {
    let backend_filters = backends.iter().flat_map(|b| &b.filters);
    for filter in filters.iter().chain(backend_filters) {
        if let Some(effect) = grpc_filter_gap(filter) {
            out.push(format!("{at}: {effect}"));
        }
    }
}

/// What proxyless gRPC does with a route filter it lacks; `None` for those it applies.
fn grpc_filter_gap(filter: &HttpRouteFilter) -> Option<String> {
    let effect = match filter.filter_type {
        HttpRouteFilterType::RequestRedirect => {
            "RequestRedirect: gRPC does not follow redirects, so matching calls fail"
        }
        HttpRouteFilterType::UrlRewrite => "URLRewrite is not applied",
        HttpRouteFilterType::RequestHeaderModifier => "RequestHeaderModifier is not applied",
        HttpRouteFilterType::ResponseHeaderModifier => "ResponseHeaderModifier is not applied",
        HttpRouteFilterType::RequestMirror => "RequestMirror is not applied",
        HttpRouteFilterType::Cors => "CORS is not applied",
        HttpRouteFilterType::ExtensionRef => match filter.extension_ref.as_ref().map(|e| e.kind) {
            Some(ExtensionKind::RateLimit) => "RateLimit is not enforced",
            _ => return None,
        },
    };
    Some(effect.to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn grpc_clients_are_told_what_they_cannot_honour_and_sidecars_nothing() {
        let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{kind: Service, name: web}]
  rules:
  - matches: [{path: {value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
  - matches: [{queryParams: [{name: debug, value: "1"}]}]
    backendRefs:
    - name: web
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-a, value: b}]}
  - timeouts: {request: 1s}
    backendRefs: [{name: web}]
  - timeouts: {backendRequest: 1s}
    retry: {attempts: 2}
    backendRefs: [{name: web}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: greeter}
spec:
  parentRefs: [{kind: Service, name: greeter}]
  rules:
  - filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: greeter-shadow}}
    backendRefs: [{name: greeter}]
    retry: {codes: [UNAVAILABLE]}
  - matches: [{method: {service: a.B}}]
    backendRefs: [{name: greeter}]
    retry: {codes: []}
  - matches: [{method: {service: a.C}}]
    backendRefs: [{name: greeter}]
    retry: {codes: [UNAVAILABLE], attempts: 7}
---
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {name: web}
spec:
  targetRefs: [{kind: Service, name: web}]
  outlierDetection: {consecutive5xx: 3}
---
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {name: greeter}
spec:
  targetRefs: [{kind: Service, name: greeter}]
  loadBalancer: {type: RoundRobin}
"#;
        let config = trellis_api::load_str("t.yaml", yaml).unwrap();
        let model = MeshModel::build(Arc::new(config), std::iter::empty());
        assert_eq!(
            gaps(&model, ClientKind::Grpc),
            [
                "HTTPRoute/web.default rule 1: RequestRedirect: gRPC does not follow redirects, so matching calls fail",
                "HTTPRoute/web.default rule 2: RequestHeaderModifier is not applied",
                "HTTPRoute/web.default rule 2: query parameter matches are not supported, so gRPC skips the rule",
                "HTTPRoute/web.default rule 4: timeouts.backendRequest (each try's timeout) is not applied",
                "HTTPRoute/web.default rule 4: retry is not applied (gRPC retries on gRPC statuses, as a GRPCRoute's retry sets)",
                "GRPCRoute/greeter.default rule 1: RequestMirror is not applied",
                "GRPCRoute/greeter.default rule 2: retry without codes is not applied (gRPC retries on gRPC statuses only)",
                "GRPCRoute/greeter.default rule 3: retry attempts are capped at 4, gRPC's limit",
                "BackendPolicy/web.default: outlierDetection is not applied",
            ]
        );
        assert!(gaps(&model, ClientKind::TrellisProxy).is_empty());
        assert!(gaps(&model, ClientKind::Envoy).is_empty());
    }

    #[test]
    fn envoy_is_told_it_balances_peak_ewma_policies_by_least_request() {
        let policy = |name: &str, lb: &str| {
            format!(
                "apiVersion: trellis.dev/v1alpha1\nkind: BackendPolicy\nmetadata: {{name: {name}}}\nspec:\n  targetRefs: [{{kind: Service, name: {name}}}]\n{lb}---\n"
            )
        };
        let yaml = [
            policy("ewma", "  loadBalancer: {type: P2CPeakEWMA}\n"),
            policy("rr", "  loadBalancer: {type: RoundRobin}\n"),
            policy("plain", "  outlierDetection: {consecutive5xx: 3}\n"),
        ]
        .concat();
        let config = trellis_api::load_str("t.yaml", &yaml).unwrap();
        let model = MeshModel::build(Arc::new(config), std::iter::empty());
        assert_eq!(
            gaps(&model, ClientKind::Envoy),
            [
                "BackendPolicy/ewma.default: loadBalancer P2CPeakEWMA runs as Envoy's LeastRequest (requests in flight, not latency)"
            ]
        );
        assert!(gaps(&model, ClientKind::TrellisProxy).is_empty());
    }
}

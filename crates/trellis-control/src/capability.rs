//! What a client cannot honour of the policies that reach it. Proxyless gRPC implements only
//! part of Envoy's API: the control plane still sends it what it can use, and lists every
//! user policy it cannot honour, by resource and rule, on the admin API (`/api/proxies`) and in
//! `trellis check`, instead of letting it be silently ignored.

use trellis_api::{ExtensionKind, HttpRouteFilter, HttpRouteFilterType};
use trellis_xds::node::ClientKind;

use crate::model::MeshModel;

/// The policies of `model` a `client` cannot honour, one line each.
pub(crate) fn gaps(model: &MeshModel, client: ClientKind) -> Vec<String> {
    if client != ClientKind::Grpc {
        return Vec::new();
    }
    let config = &model.config;
    let mut out = Vec::new();
    for route in &config.http_routes {
        let name = format!("HTTPRoute/{}", route.metadata.key());
        for (i, rule) in route.spec.rules.iter().enumerate() {
            let at = format!("{name} rule {}", i + 1);
            let backend_filters = rule.backend_refs.iter().flat_map(|b| &b.filters);
            for filter in rule.filters.iter().chain(backend_filters) {
                if let Some(effect) = grpc_filter_gap(filter) {
                    out.push(format!("{at}: {effect}"));
                }
            }
            if rule.matches.iter().any(|m| !m.query_params.is_empty()) {
                out.push(format!(
                    "{at}: query parameter matches are not supported, so gRPC skips the rule"
                ));
            }
            if rule.timeouts.request.is_some() || rule.timeouts.backend_request.is_some() {
                out.push(format!("{at}: timeouts are not applied"));
            }
        }
    }
    for policy in &config.backend_policies {
        let spec = &policy.spec;
        let unhonoured = [
            (
                "loadBalancer (gRPC balances round robin)",
                spec.load_balancer.is_some(),
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
---
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {name: web}
spec:
  targetRefs: [{kind: Service, name: web}]
  outlierDetection: {consecutive5xx: 3}
"#;
        let config = trellis_api::load_str("t.yaml", yaml).unwrap();
        let model = MeshModel::build(Arc::new(config), std::iter::empty());
        assert_eq!(
            gaps(&model, ClientKind::Grpc),
            [
                "HTTPRoute/web.default rule 1: RequestRedirect: gRPC does not follow redirects, so matching calls fail",
                "HTTPRoute/web.default rule 2: RequestHeaderModifier is not applied",
                "HTTPRoute/web.default rule 2: query parameter matches are not supported, so gRPC skips the rule",
                "HTTPRoute/web.default rule 3: timeouts are not applied",
                "BackendPolicy/web.default: outlierDetection is not applied",
            ]
        );
        assert!(gaps(&model, ClientKind::TrellisProxy).is_empty());
        assert!(gaps(&model, ClientKind::Envoy).is_empty());
    }
}

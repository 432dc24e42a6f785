//! `kind: GRPCRoute` (`gateway.networking.k8s.io/v1`): gRPC routing rules for traffic to a
//! Service, matching on service/method names and metadata, with header and mirror filters and
//! retries (a Trellis extension).

use serde::{Deserialize, Serialize};

use super::{
    BackendRef, FilterScope, GrpcRouteRetry, HeaderMatch, HttpRouteFilter, MAX_MATCHES, MAX_RULES,
    ParentRef, StringMatchType, validate_backend_refs, validate_backoff, validate_filters,
    validate_headers, validate_parent_refs,
};
use crate::meta::{self, Meta};
use crate::validate::Validator;
use crate::yaml::FieldPath;

/// A gRPC route attached to one or more Services.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRoute {
    /// Name and namespace.
    pub metadata: Meta,
    /// Parents and rules.
    pub spec: GrpcRouteSpec,
}

/// The `spec` of a [`GrpcRoute`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteSpec {
    /// The Services whose traffic this route handles; at least one.
    #[serde(default)]
    pub parent_refs: Vec<ParentRef>,
    /// Rules, at most 16; when not given, one rule matching every call with no backends (so
    /// answering 500).
    #[serde(default = "default_rules")]
    pub rules: Vec<GrpcRouteRule>,
}

impl Default for GrpcRouteSpec {
    fn default() -> Self {
        Self {
            parent_refs: Vec::new(),
            rules: default_rules(),
        }
    }
}

fn default_rules() -> Vec<GrpcRouteRule> {
    vec![GrpcRouteRule::default()]
}

/// One rule: calls matching any of `matches` (or every call when there are none) go to
/// `backend_refs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteRule {
    /// An optional name, for status and telemetry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions, any of which selects this rule; empty matches every call. At most 16.
    #[serde(default)]
    pub matches: Vec<GrpcRouteMatch>,
    /// Header changes and mirrors for matching calls: `RequestHeaderModifier`,
    /// `ResponseHeaderModifier` and `RequestMirror` only (GRPCRoute has no redirects or
    /// rewrites); at most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    /// Where matching calls go, split by weight; at most 16. Without any (or with all weights
    /// 0) matching calls get HTTP 500.
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    /// Retries of matching calls; none when not given. A Trellis extension: Gateway API's
    /// GRPCRoute has no retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<GrpcRouteRetry>,
}

/// A call matches when every given condition holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteMatch {
    /// The service/method condition; any method when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GrpcMethodMatch>,
    /// Metadata (header) conditions, all of which must hold; at most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

/// A condition on the called `/service/method`; at least one of the two is given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcMethodMatch {
    /// How `service` and `method` are compared; `Exact` when not given.
    #[serde(rename = "type", default)]
    pub match_type: StringMatchType,
    /// The fully qualified service, e.g. `shop.v1.Catalog`; any service when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The method, e.g. `GetItem`; any method when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// Whether `s` is a (possibly dotted) protobuf identifier such as `shop.v1.Catalog`.
fn is_proto_name(s: &str, dotted: bool) -> bool {
    let ident = |p: &str| {
        p.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if dotted {
        s.split('.').all(ident)
    } else {
        ident(s)
    }
}

/// Checks a GRPCRoute beyond its types.
pub(crate) fn validate(route: &GrpcRoute, v: &mut Validator<'_>) {
    meta::validate(&route.metadata, false, v);
    let spec = FieldPath::root().key("spec");
    validate_parent_refs(&route.spec.parent_refs, &spec, v);
    let rules = spec.key("rules");
    v.max_items(&rules, &route.spec.rules, MAX_RULES);
    for (i, rule) in route.spec.rules.iter().enumerate() {
        let path = rules.index(i);
        let matches = path.key("matches");
        v.max_items(&matches, &rule.matches, MAX_MATCHES);
        for (j, m) in rule.matches.iter().enumerate() {
            let path = matches.index(j);
            if let Some(method) = &m.method {
                validate_method(method, &path.key("method"), v);
            }
            validate_headers(&m.headers, &path.key("headers"), v);
        }
        validate_filters(
            &rule.filters,
            FilterScope::GrpcRule,
            &path.key("filters"),
            v,
        );
        validate_backend_refs(&rule.backend_refs, &path, v);
        if let Some(retry) = &rule.retry {
            validate_backoff(retry.backoff, &path.key("retry"), v);
        }
    }
}

fn validate_method(m: &GrpcMethodMatch, path: &FieldPath, v: &mut Validator<'_>) {
    if m.service.is_none() && m.method.is_none() {
        v.error(path, "expected at least one of `service` and `method`");
    }
    let parts = [("service", &m.service, true), ("method", &m.method, false)];
    for (field, value, dotted) in parts {
        let Some(value) = value else { continue };
        let path = path.key(field);
        match m.match_type {
            StringMatchType::RegularExpression => v.regex(&path, value),
            StringMatchType::Exact if !is_proto_name(value, dotted) => {
                let what = if dotted {
                    "a service name such as `shop.v1.Catalog`"
                } else {
                    "a method name such as `GetItem`"
                };
                v.error(&path, format!("expected {what}, found `{value}`"));
            }
            StringMatchType::Exact => {}
        }
    }
}

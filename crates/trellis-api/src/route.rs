//! Gateway API mesh routes (GAMMA): the parts HTTPRoute and GRPCRoute share — parent and
//! backend references, header matches, filters, retries — and their checks.

mod filter;
mod grpc;
mod http;
mod retry;

pub use filter::{
    BackendObjectRef, ExtensionKind, ExtensionRef, Fraction, HttpHeader, HttpHeaderFilter,
    HttpPathModifier, HttpPathModifierType, HttpRequestMirrorFilter, HttpRequestRedirectFilter,
    HttpRouteFilter, HttpRouteFilterType, HttpUrlRewriteFilter, RedirectScheme,
    UnsupportedFilterConfig,
};
pub(crate) use filter::{FilterScope, validate_filters};

pub(crate) use grpc::validate as validate_grpc;
pub use grpc::{GrpcMethodMatch, GrpcRoute, GrpcRouteMatch, GrpcRouteRule, GrpcRouteSpec};
pub(crate) use http::validate as validate_http;
pub use http::{
    HttpMethod, HttpPathMatch, HttpRoute, HttpRouteMatch, HttpRouteRule, HttpRouteSpec,
    HttpRouteTimeouts, PathMatchType, QueryParamMatch,
};
pub(crate) use retry::validate_backoff;
pub use retry::{GrpcRetryCode, GrpcRouteRetry, HttpRouteRetry};

use serde::{Deserialize, Serialize};

use crate::bounded;
use crate::validate::Validator;
use crate::yaml::FieldPath;

/// Gateway API limits on list lengths.
pub(crate) const MAX_RULES: usize = 16;
pub(crate) const MAX_MATCHES: usize = 16;
pub(crate) const MAX_BACKEND_REFS: usize = 16;
pub(crate) const MAX_PARENT_REFS: usize = 32;
pub(crate) const MAX_HEADERS: usize = 16;

fn default_service_kind() -> String {
    "Service".to_owned()
}

/// The Service a mesh route attaches to: the route applies to traffic addressed to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentRef {
    /// API group: empty (or `core`) for a Service.
    #[serde(default)]
    pub group: String,
    /// Always `Service` once validated (GAMMA routes attach to Services).
    #[serde(default)]
    pub kind: String,
    /// The Service's name.
    pub name: String,
    /// The Service's namespace; the route's namespace when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Gateway API `sectionName`; accepted for compatibility, unused by the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Restricts the route to this port of the Service; all ports when `None`.
    #[serde(
        default,
        deserialize_with = "bounded::option_port",
        skip_serializing_if = "Option::is_none"
    )]
    pub port: Option<u16>,
}

impl ParentRef {
    /// The Service's namespace, given the route's.
    pub fn namespace_or<'a>(&'a self, route_namespace: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(route_namespace)
    }
}

/// A Service that receives a share of a rule's traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    /// API group: empty (or `core`) for a Service.
    #[serde(default)]
    pub group: String,
    /// Always `Service` once validated; `Service` when not given.
    #[serde(default = "default_service_kind")]
    pub kind: String,
    /// The Service's name.
    pub name: String,
    /// The Service's namespace; the route's namespace when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Service port to send to; the port the request arrived on when `None`.
    #[serde(
        default,
        deserialize_with = "bounded::option_port",
        skip_serializing_if = "Option::is_none"
    )]
    pub port: Option<u16>,
    /// Relative share of the rule's traffic, 0 to 1,000,000; 1 when not given. A rule whose
    /// backends all have weight 0 (or that has none) answers every request with 500, unless it
    /// redirects.
    #[serde(default = "bounded::one", deserialize_with = "bounded::backend_weight")]
    pub weight: u32,
    /// Header changes for the requests sent to this backend and its responses only; at most
    /// 16, `RequestHeaderModifier` and `ResponseHeaderModifier` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
}

impl BackendRef {
    /// A reference to Service `name` with weight 1.
    pub fn service(name: impl Into<String>) -> Self {
        Self {
            group: String::new(),
            kind: default_service_kind(),
            name: name.into(),
            namespace: None,
            port: None,
            weight: 1,
            filters: Vec::new(),
        }
    }

    /// The Service's namespace, given the route's.
    pub fn namespace_or<'a>(&'a self, route_namespace: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(route_namespace)
    }
}

/// How a header, query parameter or gRPC method value is compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StringMatchType {
    /// Equal to the value.
    #[default]
    Exact,
    /// Matches the value as a regular expression (Rust `regex` syntax), anchored at both ends.
    RegularExpression,
}

/// A condition on one request header (HTTP) or metadata entry (gRPC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    /// How `value` is compared; `Exact` when not given.
    #[serde(rename = "type", default)]
    pub match_type: StringMatchType,
    /// The header name, compared case-insensitively.
    pub name: String,
    /// The value or pattern.
    pub value: String,
}

/// Whether `name` is an HTTP token (RFC 7230), the syntax of header names.
pub(crate) fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks `parentRefs`: at least one, each a Service.
pub(crate) fn validate_parent_refs(refs: &[ParentRef], spec: &FieldPath, v: &mut Validator<'_>) {
    let path = spec.key("parentRefs");
    if refs.is_empty() {
        v.error(
            &path,
            "expected at least one parentRef: a mesh route attaches to a Service (kind: Service)",
        );
    }
    v.max_items(&path, refs, MAX_PARENT_REFS);
    for (i, r) in refs.iter().enumerate() {
        service_ref(&r.group, &r.kind, &path.index(i), v);
    }
}

/// Checks `backendRefs`: each a Service with header filters only; at most 16.
pub(crate) fn validate_backend_refs(refs: &[BackendRef], rule: &FieldPath, v: &mut Validator<'_>) {
    let path = rule.key("backendRefs");
    v.max_items(&path, refs, MAX_BACKEND_REFS);
    for (i, r) in refs.iter().enumerate() {
        let path = path.index(i);
        service_ref(&r.group, &r.kind, &path, v);
        validate_filters(&r.filters, FilterScope::Backend, &path.key("filters"), v);
    }
}

pub(crate) fn service_ref(group: &str, kind: &str, path: &FieldPath, v: &mut Validator<'_>) {
    if !matches!(group, "" | "core") {
        v.error(
            &path.key("group"),
            format!("expected group \"\" or `core` (a Service), found `{group}`"),
        );
    }
    match kind {
        "Service" => {}
        "" => v.error(
            &path.key("kind"),
            "missing required field `kind`; expected `Service` (mesh routes reference Services)",
        ),
        other => v.error(
            &path.key("kind"),
            format!("expected `Service` (mesh routes reference Services), found `{other}`"),
        ),
    }
}

/// Checks header matches: valid names, compiling regexes, at most 16.
pub(crate) fn validate_headers(headers: &[HeaderMatch], path: &FieldPath, v: &mut Validator<'_>) {
    v.max_items(path, headers, MAX_HEADERS);
    for (i, h) in headers.iter().enumerate() {
        let path = path.index(i);
        check_header_name(&h.name, &path.key("name"), v);
        if h.match_type == StringMatchType::RegularExpression {
            v.regex(&path.key("value"), &h.value);
        }
    }
}

/// Checks that `name` is a header name, recording an error at `path` when not; returns whether
/// it is.
pub(crate) fn check_header_name(name: &str, path: &FieldPath, v: &mut Validator<'_>) -> bool {
    let ok = is_token(name);
    if !ok {
        v.error(
            path,
            format!("expected a header name (letters, digits and !#$%&'*+-.^_`|~), found `{name}`"),
        );
    }
    ok
}

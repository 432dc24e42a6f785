//! `kind: HTTPRoute` (`gateway.networking.k8s.io/v1`, also `v1beta1`): HTTP routing rules for
//! traffic to a Service, with path, header, query and method matches, filters, weighted
//! backends, timeouts and retries.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    BackendRef, FilterScope, HeaderMatch, HttpRouteFilter, HttpRouteFilterType, HttpRouteRetry,
    MAX_HEADERS, MAX_MATCHES, MAX_RULES, ParentRef, StringMatchType, is_token,
    validate_backend_refs, validate_backoff, validate_filters, validate_headers,
    validate_parent_refs,
};
use crate::meta::{self, Meta};
use crate::validate::Validator;
use crate::yaml::FieldPath;

/// An HTTP route attached to one or more Services.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    /// Name and namespace.
    pub metadata: Meta,
    /// Parents and rules.
    pub spec: HttpRouteSpec,
}

/// The `spec` of an [`HttpRoute`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteSpec {
    /// The Services whose traffic this route handles; at least one.
    #[serde(default)]
    pub parent_refs: Vec<ParentRef>,
    /// Rules, at most 16; when not given, one rule matching every request with no backends (so
    /// answering 500).
    #[serde(default = "default_rules")]
    pub rules: Vec<HttpRouteRule>,
}

impl Default for HttpRouteSpec {
    fn default() -> Self {
        Self {
            parent_refs: Vec::new(),
            rules: default_rules(),
        }
    }
}

fn default_rules() -> Vec<HttpRouteRule> {
    vec![HttpRouteRule::default()]
}

/// One rule: requests matching any of `matches` go to `backend_refs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    /// An optional name, for status and telemetry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions, any of which selects this rule; at most 16. When not given: one match on
    /// path prefix `/`.
    #[serde(default = "default_matches")]
    pub matches: Vec<HttpRouteMatch>,
    /// What happens to matching requests besides forwarding: header changes, a redirect, a
    /// rewrite, mirrors; at most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    /// Where matching requests go, split by weight; at most 16. Without any (or with all
    /// weights 0) matching requests get 500, unless a `RequestRedirect` answers them.
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    /// Request and per-try timeouts; none when not given.
    #[serde(default)]
    pub timeouts: HttpRouteTimeouts,
    /// Retries of matching requests (Gateway API experimental); none when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<HttpRouteRetry>,
}

impl Default for HttpRouteRule {
    fn default() -> Self {
        Self {
            name: None,
            matches: default_matches(),
            filters: Vec::new(),
            backend_refs: Vec::new(),
            timeouts: HttpRouteTimeouts::default(),
            retry: None,
        }
    }
}

fn default_matches() -> Vec<HttpRouteMatch> {
    vec![HttpRouteMatch::default()]
}

/// A request matches when every given condition holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    /// The path condition; path prefix `/` (everything) when not given.
    #[serde(default)]
    pub path: HttpPathMatch,
    /// Header conditions, all of which must hold; at most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Query parameter conditions, all of which must hold; at most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryParamMatch>,
    /// The method; any method when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
}

/// A condition on the request path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPathMatch {
    /// How `value` is compared; `PathPrefix` when not given.
    #[serde(rename = "type", default)]
    pub match_type: PathMatchType,
    /// The path or pattern; `/` when not given. `Exact` and `PathPrefix` values start with `/`.
    #[serde(default = "slash")]
    pub value: String,
}

fn slash() -> String {
    "/".to_owned()
}

impl Default for HttpPathMatch {
    fn default() -> Self {
        Self {
            match_type: PathMatchType::PathPrefix,
            value: slash(),
        }
    }
}

/// How a path is compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathMatchType {
    /// The whole path equals the value.
    Exact,
    /// The path starts with the value, on `/` boundaries (`/api` matches `/api/x`, not `/apix`).
    #[default]
    PathPrefix,
    /// The whole path matches the value as a regular expression (Rust `regex` syntax).
    RegularExpression,
}

/// A condition on one query parameter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryParamMatch {
    /// How `value` is compared; `Exact` when not given.
    #[serde(rename = "type", default)]
    pub match_type: StringMatchType,
    /// The parameter name, compared case-sensitively.
    pub name: String,
    /// The value or pattern.
    pub value: String,
}

/// An HTTP method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)] // The variants are the methods of the same names.
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
}

impl HttpMethod {
    /// The method as sent on the wire, e.g. `GET`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
            Self::Options => "OPTIONS",
            Self::Trace => "TRACE",
            Self::Patch => "PATCH",
        }
    }
}

impl fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Timeouts of a rule, written as Gateway API durations (`10s`, `500ms`, `1h30m`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteTimeouts {
    /// Limit for the whole request, retries included; `0s` disables it.
    #[serde(
        default,
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub request: Option<Duration>,
    /// Limit for each try to a backend; at most `request`.
    #[serde(
        default,
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_request: Option<Duration>,
}

/// Checks an HTTPRoute beyond its types.
pub(crate) fn validate(route: &HttpRoute, v: &mut Validator<'_>) {
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
            validate_match(m, &matches.index(j), v);
        }
        let scope = FilterScope::HttpRule(&rule.matches);
        validate_filters(&rule.filters, scope, &path.key("filters"), v);
        let redirects = rule
            .filters
            .iter()
            .any(|f| f.filter_type == HttpRouteFilterType::RequestRedirect);
        if redirects && !rule.backend_refs.is_empty() {
            v.error(
                &path.key("backendRefs"),
                "a rule with a RequestRedirect filter answers with the redirect; remove its backendRefs",
            );
        }
        validate_backend_refs(&rule.backend_refs, &path, v);
        validate_timeouts(&rule.timeouts, &path.key("timeouts"), v);
        if let Some(retry) = &rule.retry {
            validate_backoff(retry.backoff, &path.key("retry"), v);
        }
    }
}

fn validate_match(m: &HttpRouteMatch, path: &FieldPath, v: &mut Validator<'_>) {
    let value = path.key("path").key("value");
    let p = &m.path.value;
    match m.path.match_type {
        PathMatchType::RegularExpression => v.regex(&value, p),
        PathMatchType::Exact | PathMatchType::PathPrefix => {
            if !p.starts_with('/') {
                v.error(
                    &value,
                    format!("expected a path starting with '/', found `{p}`"),
                );
            } else if let Some(bad) = ["//", "/./", "/../", "%2f", "%2F", "#"]
                .into_iter()
                .find(|s| p.contains(s))
                .or_else(|| ["/..", "/."].into_iter().find(|s| p.ends_with(s)))
            {
                v.error(
                    &value,
                    format!("expected a normalized path, found `{p}` (contains `{bad}`)"),
                );
            }
        }
    }
    validate_headers(&m.headers, &path.key("headers"), v);
    let params = path.key("queryParams");
    v.max_items(&params, &m.query_params, MAX_HEADERS);
    for (i, q) in m.query_params.iter().enumerate() {
        let path = params.index(i);
        if !is_token(&q.name) {
            v.error(
                &path.key("name"),
                format!("expected a query parameter name (letters, digits and !#$%&'*+-.^_`|~), found `{}`", q.name),
            );
        }
        if q.match_type == StringMatchType::RegularExpression {
            v.regex(&path.key("value"), &q.value);
        }
    }
}

fn validate_timeouts(t: &HttpRouteTimeouts, path: &FieldPath, v: &mut Validator<'_>) {
    if let (Some(request), Some(backend)) = (t.request, t.backend_request)
        && !request.is_zero()
        && backend > request
    {
        v.error(
            &path.key("backendRequest"),
            format!(
                "expected at most the request timeout ({}), found {}",
                crate::duration::format_duration(request),
                crate::duration::format_duration(backend)
            ),
        );
    }
}

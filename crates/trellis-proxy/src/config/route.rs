//! RDS: compiles a `RouteConfiguration` into virtual hosts and routes, and selects the route
//! for a request (the route stage) as a pure function of the config and the request.

mod action;
mod hash;
mod headers;
mod retry;

pub(crate) use action::{
    Action, DirectResponse, PathRewrite, Redirect, RedirectFrom, RouteAction, RouteTarget,
};
pub(crate) use hash::{HashInput, request_key};
pub(crate) use headers::HeaderMutations;
pub(crate) use retry::{Retry, RetryOn};

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::route::Action as PbAction;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    Route as PbRoute, RouteConfiguration, RouteMatch as PbRouteMatch, VirtualHost as PbVirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use regex::Regex;

use super::fault::Fault;
use super::http::{FAULT, LOCAL_RATELIMIT};
use super::matcher::{HeaderMatch, QueryMatch, RequestView, full_regex};
use super::ratelimit::RateLimit;
use super::{ConfigError, FieldError, decode_any, reject_set};
use crate::telemetry::{Direction, Metrics, RouteClusterStats};

/// A compiled `RouteConfiguration`.
#[derive(Debug)]
pub(crate) struct RouteConfig {
    /// Resource name.
    pub(crate) name: String,
    /// Virtual hosts in config order.
    pub(crate) virtual_hosts: Vec<VirtualHost>,
    /// Lower-case exact domains (as written, port included if any) → virtual host index.
    exact: HashMap<String, usize>,
    /// `*.example.com` as `.example.com`, longest first.
    suffixes: Vec<(String, usize)>,
    /// `example.*` as `example.`, longest first.
    prefixes: Vec<(String, usize)>,
    /// The `*` virtual host.
    any: Option<usize>,
}

/// A compiled virtual host.
#[derive(Debug)]
pub(crate) struct VirtualHost {
    /// Virtual host name.
    pub(crate) name: String,
    /// Its domains, as configured.
    pub(crate) domains: Vec<String>,
    /// Routes in match order (first match wins).
    pub(crate) routes: Vec<Route>,
}

/// A compiled route.
#[derive(Debug)]
pub(crate) struct Route {
    /// Route name (or `<virtual host>/<index>` when unnamed), the `route` metrics label.
    pub(crate) name: String,
    /// What the request must look like.
    pub(crate) matcher: RouteMatch,
    /// What it does.
    pub(crate) action: Action,
    /// Changes to requests (applied after the chosen cluster's).
    pub(crate) request_headers: HeaderMutations,
    /// Changes to responses, local replies included (applied after the cluster's).
    pub(crate) response_headers: HeaderMutations,
    /// This route's fault filter config (overrides the listener's).
    pub(crate) fault: Option<Fault>,
    /// This route's own rate limit (its own bucket; overrides the listener's).
    pub(crate) rate_limit: Option<RateLimit>,
    /// Stats of the route's own replies (redirects, direct responses, faults), per direction.
    local_stats: [Arc<RouteClusterStats>; 2],
}

impl Route {
    /// The stats handle for replies the route makes itself, for traffic in `direction`.
    pub(crate) fn local_stats(&self, direction: Direction) -> &RouteClusterStats {
        &self.local_stats[direction.index()]
    }
}

/// A compiled `RouteMatch`.
#[derive(Debug)]
pub(crate) struct RouteMatch {
    path: PathMatch,
    case_sensitive: bool,
    headers: Vec<HeaderMatch>,
    query: Vec<QueryMatch>,
    grpc: bool,
}

#[derive(Debug)]
enum PathMatch {
    Prefix(String),
    Exact(String),
    SeparatedPrefix(String),
    Regex(Regex),
}

impl RouteConfig {
    /// Compiles `rc`; stats handles come from `metrics`.
    pub(crate) fn compile(rc: &RouteConfiguration, metrics: &Metrics) -> Result<Self, ConfigError> {
        compile_config(rc, metrics).map_err(|source| ConfigError::Invalid {
            kind: "route configuration",
            name: rc.name.clone(),
            source,
        })
    }

    /// The virtual host serving `authority`: exact domain (with port, then without), then the
    /// longest suffix wildcard, then the longest prefix wildcard, then `*`.
    pub(crate) fn virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        let authority = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(authority.to_ascii_lowercase())
        } else {
            Cow::Borrowed(authority)
        };
        let host = strip_port(&authority);
        let index = self
            .exact
            .get(authority.as_ref())
            .or_else(|| self.exact.get(host))
            .copied()
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
                    .map(|(_, i)| *i)
            })
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str()))
                    .map(|(_, i)| *i)
            })
            .or(self.any)?;
        self.virtual_hosts.get(index)
    }

    /// The first route of the request's virtual host that matches it.
    pub(crate) fn route(&self, req: &RequestView<'_>) -> Option<&Route> {
        self.virtual_host(req.authority)?
            .routes
            .iter()
            .find(|r| r.matcher.matches(req))
    }
}

/// `host:port` → `host`; leaves `[v6]` and port-less names alone.
fn strip_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

impl RouteMatch {
    /// Whether `req` satisfies every condition.
    pub(crate) fn matches(&self, req: &RequestView<'_>) -> bool {
        let eq = |a: &str, b: &str| {
            if self.case_sensitive {
                a == b
            } else {
                a.eq_ignore_ascii_case(b)
            }
        };
        let path_ok = match &self.path {
            PathMatch::Prefix(p) => req
                .path_and_query
                .get(..p.len())
                .is_some_and(|head| eq(head, p)),
            PathMatch::Exact(p) => eq(req.path, p),
            PathMatch::SeparatedPrefix(p) => {
                req.path.get(..p.len()).is_some_and(|head| eq(head, p))
                    && matches!(req.path.as_bytes().get(p.len()), None | Some(b'/'))
            }
            PathMatch::Regex(r) => r.is_match(req.path),
        };
        path_ok
            && (!self.grpc || req.is_grpc())
            && self.headers.iter().all(|h| h.matches(req))
            && self.query.iter().all(|q| q.matches(req))
    }

    /// How many leading bytes of a matching `path_and_query` the path condition consumed: the
    /// prefix for prefix matches, the whole path otherwise (what `prefix_rewrite` replaces).
    pub(crate) fn matched_len(&self, path_and_query: &str) -> usize {
        match &self.path {
            PathMatch::Prefix(p) | PathMatch::SeparatedPrefix(p) => p.len(),
            PathMatch::Exact(_) | PathMatch::Regex(_) => {
                path_and_query.find('?').unwrap_or(path_and_query.len())
            }
        }
    }

    /// The match as text, for the config dump.
    pub(crate) fn describe(&self) -> Vec<String> {
        let path = match &self.path {
            PathMatch::Prefix(p) => format!("prefix: {p}"),
            PathMatch::Exact(p) => format!("path: {p}"),
            PathMatch::SeparatedPrefix(p) => format!("path_separated_prefix: {p}"),
            PathMatch::Regex(r) => format!("safe_regex: {}", r.as_str()),
        };
        let mut out = vec![path];
        if self.grpc {
            out.push("grpc".to_owned());
        }
        out.extend(
            self.headers
                .iter()
                .map(|h| format!("header {}", h.describe())),
        );
        out.extend(self.query.iter().map(|q| format!("query {}", q.describe())));
        out
    }
}

fn compile_config(rc: &RouteConfiguration, metrics: &Metrics) -> Result<RouteConfig, FieldError> {
    reject_set(&[
        ("vhds", rc.vhds.is_some()),
        (
            "internal_only_headers",
            !rc.internal_only_headers.is_empty(),
        ),
        (
            "response_headers_to_add",
            !rc.response_headers_to_add.is_empty(),
        ),
        (
            "response_headers_to_remove",
            !rc.response_headers_to_remove.is_empty(),
        ),
        (
            "request_headers_to_add",
            !rc.request_headers_to_add.is_empty(),
        ),
        (
            "request_headers_to_remove",
            !rc.request_headers_to_remove.is_empty(),
        ),
        (
            "cluster_specifier_plugins",
            !rc.cluster_specifier_plugins.is_empty(),
        ),
        (
            "request_mirror_policies",
            !rc.request_mirror_policies.is_empty(),
        ),
        (
            "typed_per_filter_config",
            !rc.typed_per_filter_config.is_empty(),
        ),
        ("vhost_header", !rc.vhost_header.is_empty()),
        ("route_specifiers", !rc.route_specifiers.is_empty()),
    ])?;
    let mut out = RouteConfig {
        name: rc.name.clone(),
        virtual_hosts: Vec::with_capacity(rc.virtual_hosts.len()),
        exact: HashMap::new(),
        suffixes: Vec::new(),
        prefixes: Vec::new(),
        any: None,
    };
    for (i, vh) in rc.virtual_hosts.iter().enumerate() {
        let field = format!("virtual_hosts[{i}]");
        let compiled = compile_vhost(vh, metrics).map_err(|e| e.at(&field))?;
        for (j, domain) in vh.domains.iter().enumerate() {
            let d = domain.to_ascii_lowercase();
            let taken = if d == "*" {
                out.any.replace(i).is_some()
            } else if let Some(suffix) = d.strip_prefix('*') {
                push_unique(&mut out.suffixes, suffix, i)
            } else if let Some(prefix) = d.strip_suffix('*') {
                push_unique(&mut out.prefixes, prefix, i)
            } else {
                out.exact.insert(d, i).is_some()
            };
            if taken {
                return Err(FieldError::new(
                    format!("{field}.domains[{j}]"),
                    format!("domain {domain:?} is already used by another virtual host"),
                ));
            }
        }
        out.virtual_hosts.push(compiled);
    }
    out.suffixes
        .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    out.prefixes
        .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    Ok(out)
}

/// Adds a wildcard pattern; true if it was already present.
fn push_unique(list: &mut Vec<(String, usize)>, pattern: &str, index: usize) -> bool {
    if list.iter().any(|(p, _)| p == pattern) {
        return true;
    }
    list.push((pattern.to_owned(), index));
    false
}

#[allow(deprecated)]
fn compile_vhost(vh: &PbVirtualHost, metrics: &Metrics) -> Result<VirtualHost, FieldError> {
    if vh.domains.is_empty() {
        return Err(FieldError::new(
            "domains",
            "at least one domain is required",
        ));
    }
    reject_set(&[
        ("matcher", vh.matcher.is_some()),
        ("require_tls", vh.require_tls != 0),
        ("rate_limits", !vh.rate_limits.is_empty()),
        (
            "request_headers_to_add",
            !vh.request_headers_to_add.is_empty(),
        ),
        (
            "request_headers_to_remove",
            !vh.request_headers_to_remove.is_empty(),
        ),
        (
            "response_headers_to_add",
            !vh.response_headers_to_add.is_empty(),
        ),
        (
            "response_headers_to_remove",
            !vh.response_headers_to_remove.is_empty(),
        ),
        ("cors", vh.cors.is_some()),
        (
            "typed_per_filter_config",
            !vh.typed_per_filter_config.is_empty(),
        ),
        ("retry_policy", vh.retry_policy.is_some()),
        (
            "retry_policy_typed_config",
            vh.retry_policy_typed_config.is_some(),
        ),
        ("hedge_policy", vh.hedge_policy.is_some()),
        (
            "request_mirror_policies",
            !vh.request_mirror_policies.is_empty(),
        ),
        ("route_specifiers", !vh.route_specifiers.is_empty()),
    ])?;
    let routes = vh
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            compile_route(r, &vh.name, i, metrics).map_err(|e| e.at(format!("routes[{i}]")))
        })
        .collect::<Result<_, _>>()?;
    Ok(VirtualHost {
        name: vh.name.clone(),
        domains: vh.domains.clone(),
        routes,
    })
}

#[allow(deprecated)]
fn compile_route(
    r: &PbRoute,
    vhost: &str,
    index: usize,
    metrics: &Metrics,
) -> Result<Route, FieldError> {
    reject_set(&[("route_specifiers", !r.route_specifiers.is_empty())])?;
    let (fault, rate_limit) = per_filter(&r.typed_per_filter_config)?;
    let name = if r.name.is_empty() {
        format!("{vhost}/{index}")
    } else {
        r.name.clone()
    };
    let matcher = compile_match(r.r#match.as_ref()).map_err(|e| e.at("match"))?;
    let action = match &r.action {
        Some(PbAction::Route(a)) => {
            Action::Forward(action::compile_forward(a, &name, metrics).map_err(|e| e.at("route"))?)
        }
        Some(PbAction::Redirect(a)) => {
            Action::Redirect(action::compile_redirect(a).map_err(|e| e.at("redirect"))?)
        }
        Some(PbAction::DirectResponse(a)) => {
            Action::Direct(action::compile_direct(a).map_err(|e| e.at("direct_response"))?)
        }
        Some(_) => {
            return Err(FieldError::new(
                "action",
                "only route actions are supported",
            ));
        }
        None => return Err(FieldError::new("action", "a route action is required")),
    };
    let local_stats =
        [Direction::Inbound, Direction::Outbound].map(|d| metrics.route_stats(d, &name, ""));
    Ok(Route {
        name,
        matcher,
        action,
        request_headers: HeaderMutations::compile(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            "request",
        )?,
        response_headers: HeaderMutations::compile(
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
            "response",
        )?,
        fault,
        rate_limit,
        local_stats,
    })
}

/// A route's `typed_per_filter_config`: fault and rate-limit overrides.
fn per_filter(
    configs: &HashMap<String, envoy_types::pb::google::protobuf::Any>,
) -> Result<(Option<Fault>, Option<RateLimit>), FieldError> {
    let mut fault = None;
    let mut rate_limit = None;
    for (name, any) in configs {
        let field = format!("typed_per_filter_config[{name:?}]");
        match name.as_str() {
            FAULT => {
                let config: HttpFault = decode_any(any).map_err(|e| e.at(&field))?;
                fault = Some(Fault::compile(&config).map_err(|e| e.at(&field))?);
            }
            LOCAL_RATELIMIT => {
                let config: LocalRateLimit = decode_any(any).map_err(|e| e.at(&field))?;
                rate_limit = RateLimit::compile(&config).map_err(|e| e.at(&field))?;
            }
            _ => {
                return Err(FieldError::new(
                    field,
                    format!("not supported (supported: {FAULT}, {LOCAL_RATELIMIT})"),
                ));
            }
        }
    }
    Ok((fault, rate_limit))
}

fn compile_match(m: Option<&PbRouteMatch>) -> Result<RouteMatch, FieldError> {
    let m = m.ok_or_else(|| FieldError::message("is required"))?;
    reject_set(&[
        ("runtime_fraction", m.runtime_fraction.is_some()),
        ("cookies", !m.cookies.is_empty()),
        ("tls_context", m.tls_context.is_some()),
        ("dynamic_metadata", !m.dynamic_metadata.is_empty()),
        ("filter_state", !m.filter_state.is_empty()),
    ])?;
    let path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => PathMatch::Prefix(p.clone()),
        Some(PathSpecifier::Path(p)) => PathMatch::Exact(p.clone()),
        Some(PathSpecifier::PathSeparatedPrefix(p)) => {
            PathMatch::SeparatedPrefix(p.trim_end_matches('/').to_owned())
        }
        Some(PathSpecifier::SafeRegex(r)) => PathMatch::Regex(full_regex(r, "safe_regex")?),
        Some(PathSpecifier::ConnectMatcher(_)) => {
            return Err(FieldError::unsupported("connect_matcher"));
        }
        Some(PathSpecifier::PathMatchPolicy(_)) => {
            return Err(FieldError::unsupported("path_match_policy"));
        }
        None => {
            return Err(FieldError::message(
                "one of prefix, path, safe_regex or path_separated_prefix is required",
            ));
        }
    };
    let headers = m
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| HeaderMatch::compile(h, &format!("headers[{i}]")))
        .collect::<Result<_, _>>()?;
    let query = m
        .query_parameters
        .iter()
        .enumerate()
        .map(|(i, q)| QueryMatch::compile(q, &format!("query_parameters[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok(RouteMatch {
        path,
        case_sensitive: m.case_sensitive.as_ref().is_none_or(|b| b.value),
        headers,
        query,
        grpc: m.grpc.is_some(),
    })
}

#[cfg(test)]
mod tests;

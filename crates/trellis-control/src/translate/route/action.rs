//! What a rule does with the requests it matches, as Envoy route fields: forward to weighted
//! backends (with per-backend headers, mirrors, rewrites, timeouts, retries and the backends'
//! hash key), redirect, or answer 500 when there is nowhere to forward or a filter reference is
//! unresolved; header filters and per-route fault and rate-limit configs on the route itself.

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, RuntimeFractionalPercent,
    header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, RedirectAction, RetryPolicy, Route, RouteAction, RouteMatch,
    WeightedCluster, redirect_action, route::Action, route_action, weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use trellis_api::{
    BackendRef, ConfigSet, GrpcRouteRule, HttpHeader, HttpHeaderFilter, HttpPathModifier,
    HttpPathModifierType, HttpRequestMirrorFilter, HttpRequestRedirectFilter, HttpRouteFilter,
    HttpRouteRule, HttpUrlRewriteFilter,
};

use super::{forward_action, hash, regex, regex_escape, retry};
use crate::translate::{outbound_cluster, traffic};

/// The status of an HTTPRoute rule that has nowhere to send a request, or an `ExtensionRef`
/// that names nothing (Gateway API: 500).
const NO_BACKEND_HTTP: u32 = 500;
/// The same for a GRPCRoute rule: Gateway API asks for `UNAVAILABLE`, which gRPC clients read
/// from HTTP 503.
const NO_BACKEND_GRPC: u32 = 503;

/// A rule's filters, backends, timeouts and retries, compiled once and stamped onto the Envoy
/// route of each of the rule's matches.
pub(super) struct RuleAction<'a> {
    /// The whole request's timeout; no limit when `None`.
    request_timeout: Option<Duration>,
    retry_policy: Option<RetryPolicy>,
    no_backend_status: u32,
    /// Where requests go; `None` when no backend can take traffic.
    target: Option<route_action::ClusterSpecifier>,
    /// The hash key of the first backend whose service hashes requests.
    hash_policy: Vec<route_action::HashPolicy>,
    headers: Headers,
    redirect: Option<&'a HttpRequestRedirectFilter>,
    rewrite: Option<&'a HttpUrlRewriteFilter>,
    mirrors: Vec<route_action::RequestMirrorPolicy>,
    /// Fault and rate-limit configs by filter name; `None` when an `ExtensionRef` names a
    /// resource that does not exist, so every request gets `no_backend_status`.
    per_filter: Option<HashMap<String, Any>>,
}

impl<'a> RuleAction<'a> {
    /// Compiles an HTTPRoute rule of a route in `namespace`, resolving its filter references
    /// in `config`.
    pub(super) fn http(rule: &'a HttpRouteRule, namespace: &str, config: &ConfigSet) -> Self {
        let t = rule.timeouts;
        Self {
            request_timeout: t.request,
            retry_policy: retry::http(rule.retry.as_ref(), t.backend_request),
            ..Self::new(
                &rule.filters,
                &rule.backend_refs,
                NO_BACKEND_HTTP,
                namespace,
                config,
            )
        }
    }

    /// Compiles a GRPCRoute rule (no timeouts in the spec) of a route in `namespace`,
    /// resolving its filter references in `config`.
    pub(super) fn grpc(rule: &'a GrpcRouteRule, namespace: &str, config: &ConfigSet) -> Self {
        Self {
            retry_policy: rule.retry.as_ref().map(retry::grpc),
            ..Self::new(
                &rule.filters,
                &rule.backend_refs,
                NO_BACKEND_GRPC,
                namespace,
                config,
            )
        }
    }

    /// A rule without timeouts or retries.
    fn new(
        filters: &'a [HttpRouteFilter],
        backend_refs: &[BackendRef],
        no_backend_status: u32,
        namespace: &str,
        config: &ConfigSet,
    ) -> Self {
        Self {
            request_timeout: None,
            retry_policy: None,
            no_backend_status,
            target: backends(backend_refs, namespace),
            hash_policy: hash::hash_policy(
                config,
                live(backend_refs).map(|b| (b.namespace_or(namespace), b.name.as_str())),
            ),
            headers: Headers::of(filters),
            // Validation allows at most one redirect or rewrite per rule.
            redirect: filters.iter().find_map(|f| f.request_redirect.as_ref()),
            rewrite: filters.iter().find_map(|f| f.url_rewrite.as_ref()),
            mirrors: filters
                .iter()
                .filter_map(|f| f.request_mirror.as_ref())
                .map(|m| mirror(m, namespace))
                .collect(),
            per_filter: traffic::per_route_configs(filters, namespace, config),
        }
    }

    /// The Envoy route of one match. `prefix` is the match's `PathPrefix` value, which a
    /// `ReplacePrefixMatch` replaces (validation allows those on `PathPrefix` matches only).
    pub(super) fn route(
        &self,
        name: String,
        route_match: RouteMatch,
        prefix: Option<&str>,
    ) -> Route {
        let error = Action::DirectResponse(DirectResponseAction {
            status: self.no_backend_status,
            ..DirectResponseAction::default()
        });
        let action = match (&self.per_filter, self.redirect, &self.target) {
            (None, _, _) | (Some(_), None, None) => error,
            (Some(_), Some(r), _) => Action::Redirect(redirect_action(r, prefix)),
            (Some(_), None, Some(target)) => Action::Route(self.forward(target, prefix)),
        };
        let headers = self.headers.clone();
        Route {
            name,
            r#match: Some(route_match),
            action: Some(action),
            typed_per_filter_config: self.per_filter.clone().unwrap_or_default(),
            request_headers_to_add: headers.request_add,
            request_headers_to_remove: headers.request_remove,
            response_headers_to_add: headers.response_add,
            response_headers_to_remove: headers.response_remove,
            ..Route::default()
        }
    }

    fn forward(
        &self,
        target: &route_action::ClusterSpecifier,
        prefix: Option<&str>,
    ) -> RouteAction {
        let mut action = forward_action(target.clone(), self.request_timeout);
        action.retry_policy = self.retry_policy.clone();
        action.hash_policy = self.hash_policy.clone();
        action.request_mirror_policies = self.mirrors.clone();
        if let Some(rewrite) = self.rewrite {
            action.host_rewrite_specifier = rewrite
                .hostname
                .clone()
                .map(route_action::HostRewriteSpecifier::HostRewriteLiteral);
            match rewrite.path.as_ref().and_then(|p| path_rewrite(p, prefix)) {
                Some(PathRewrite::Full(path)) => {
                    action.regex_rewrite = Some(substitute("^/.*$", path));
                }
                Some(PathRewrite::Regex(pattern, substitution)) => {
                    action.regex_rewrite = Some(substitute(&pattern, substitution));
                }
                Some(PathRewrite::Prefix(p)) => action.prefix_rewrite = p,
                None => {}
            }
        }
        action
    }
}

fn mirror(m: &HttpRequestMirrorFilter, ns: &str) -> route_action::RequestMirrorPolicy {
    let b = &m.backend_ref;
    route_action::RequestMirrorPolicy {
        cluster: outbound_cluster(&format!("{}.{}", b.name, b.namespace_or(ns))),
        runtime_fraction: mirror_share(m).map(|share| RuntimeFractionalPercent {
            default_value: Some(share),
            runtime_key: String::new(),
        }),
        ..route_action::RequestMirrorPolicy::default()
    }
}

/// The cluster (or weighted clusters) of a rule's backends; `None` when no backend can take
/// traffic (no refs, or all weights zero). Backends with filters always get weighted clusters,
/// whose entries carry per-backend headers.
fn backends(refs: &[BackendRef], ns: &str) -> Option<route_action::ClusterSpecifier> {
    let live: Vec<&BackendRef> = live(refs).collect();
    let cluster = |b: &BackendRef| outbound_cluster(&format!("{}.{}", b.name, b.namespace_or(ns)));
    let weighted = |b: &&BackendRef| {
        let headers = Headers::of(&b.filters);
        ClusterWeight {
            name: cluster(b),
            weight: Some(UInt32Value { value: b.weight }),
            request_headers_to_add: headers.request_add,
            request_headers_to_remove: headers.request_remove,
            response_headers_to_add: headers.response_add,
            response_headers_to_remove: headers.response_remove,
            ..ClusterWeight::default()
        }
    };
    match live.as_slice() {
        [] => None,
        [one] if one.filters.is_empty() => {
            Some(route_action::ClusterSpecifier::Cluster(cluster(one)))
        }
        many => Some(route_action::ClusterSpecifier::WeightedClusters(
            WeightedCluster {
                clusters: many.iter().map(weighted).collect(),
                ..WeightedCluster::default()
            },
        )),
    }
}

/// The backends that take traffic: those with a weight.
fn live(refs: &[BackendRef]) -> impl Iterator<Item = &BackendRef> {
    refs.iter().filter(|b| b.weight > 0)
}

/// The header fields a Route and a ClusterWeight share, from header filters.
#[derive(Clone, Default)]
struct Headers {
    request_add: Vec<HeaderValueOption>,
    request_remove: Vec<String>,
    response_add: Vec<HeaderValueOption>,
    response_remove: Vec<String>,
}

impl Headers {
    fn of(filters: &[HttpRouteFilter]) -> Self {
        let mut headers = Headers::default();
        for f in filters {
            if let Some(h) = &f.request_header_modifier {
                let (add, remove) = header_changes(h);
                headers.request_add.extend(add);
                headers.request_remove.extend(remove);
            }
            if let Some(h) = &f.response_header_modifier {
                let (add, remove) = header_changes(h);
                headers.response_add.extend(add);
                headers.response_remove.extend(remove);
            }
        }
        headers
    }
}

/// A header filter as Envoy's headers to add (`set` entries, then `add` entries) and names to
/// remove, all lower-cased.
fn header_changes(h: &HttpHeaderFilter) -> (Vec<HeaderValueOption>, Vec<String>) {
    let option = |header: &HttpHeader, action: HeaderAppendAction| HeaderValueOption {
        header: Some(HeaderValue {
            key: header.name.to_ascii_lowercase(),
            // Envoy reads `%` in a header value as the start of a formatter command.
            value: header.value.replace('%', "%%"),
            ..HeaderValue::default()
        }),
        append_action: action as i32,
        ..HeaderValueOption::default()
    };
    let set = h.set.iter();
    let set = set.map(|header| option(header, HeaderAppendAction::OverwriteIfExistsOrAdd));
    let add = h.add.iter();
    let add = add.map(|header| option(header, HeaderAppendAction::AppendIfExistsOrAdd));
    let remove = h.remove.iter().map(|n| n.to_ascii_lowercase()).collect();
    (set.chain(add).collect(), remove)
}

/// A path modifier in Envoy's terms.
#[derive(Debug, PartialEq, Eq)]
enum PathRewrite {
    /// Replace the whole path.
    Full(String),
    /// Replace what the pattern matches with the substitution.
    Regex(String, String),
    /// Replace the route's (path-separated) match prefix.
    Prefix(String),
}

/// `ReplacePrefixMatch` needs the match's prefix; without one (which validation rules out)
/// there is nothing to replace.
fn path_rewrite(m: &HttpPathModifier, prefix: Option<&str>) -> Option<PathRewrite> {
    let value = m.value()?;
    match m.modifier_type {
        HttpPathModifierType::ReplaceFullPath => Some(PathRewrite::Full(value.to_owned())),
        HttpPathModifierType::ReplacePrefixMatch => {
            let prefix = prefix?.trim_end_matches('/');
            let replacement = value.trim_end_matches('/');
            Some(if replacement.is_empty() {
                // `/prefix` and `/prefix/...` become `/` and `/...`, with no doubled slash.
                PathRewrite::Regex(format!("^{}/*", regex_escape(prefix)), "/".to_owned())
            } else if prefix.is_empty() {
                // Every path matches `/`: put the replacement in front of it.
                PathRewrite::Regex("^/".to_owned(), format!("{replacement}/"))
            } else {
                // The route matches PathSeparatedPrefix(prefix), so Envoy replaces exactly the
                // matched segments.
                PathRewrite::Prefix(replacement.to_owned())
            })
        }
    }
}

fn substitute(pattern: &str, substitution: String) -> RegexMatchAndSubstitute {
    RegexMatchAndSubstitute {
        pattern: Some(regex(pattern)),
        substitution,
    }
}

fn redirect_action(r: &HttpRequestRedirectFilter, prefix: Option<&str>) -> RedirectAction {
    use redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier};
    let response_code = match r.status_code {
        301 => RedirectResponseCode::MovedPermanently,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        // 302, the default; validation allows no other code.
        _ => RedirectResponseCode::Found,
    };
    let path = r.path.as_ref().and_then(|p| path_rewrite(p, prefix));
    RedirectAction {
        scheme_rewrite_specifier: r
            .scheme
            .map(|s| SchemeRewriteSpecifier::SchemeRedirect(s.as_str().to_owned())),
        host_redirect: r.hostname.clone().unwrap_or_default(),
        port_redirect: r.port.map_or(0, u32::from),
        path_rewrite_specifier: path.map(|p| match p {
            PathRewrite::Full(path) => PathRewriteSpecifier::PathRedirect(path),
            PathRewrite::Regex(pattern, substitution) => {
                PathRewriteSpecifier::RegexRewrite(substitute(&pattern, substitution))
            }
            PathRewrite::Prefix(p) => PathRewriteSpecifier::PrefixRewrite(p),
        }),
        response_code: response_code as i32,
        ..RedirectAction::default()
    }
}

/// The share of requests a mirror copies, in Envoy's units; `None` mirrors every request.
fn mirror_share(m: &HttpRequestMirrorFilter) -> Option<FractionalPercent> {
    let hundredths = |numerator| FractionalPercent {
        numerator,
        denominator: DenominatorType::Hundred as i32,
    };
    if let Some(percent) = m.percent {
        return Some(hundredths(percent));
    }
    let f = m.fraction?;
    if f.denominator == 100 {
        return Some(hundredths(f.numerator));
    }
    // numerator <= denominator (validated), so the result is at most a million.
    let millionths = u64::from(f.numerator) * 1_000_000 / u64::from(f.denominator.max(1));
    Some(FractionalPercent {
        numerator: u32::try_from(millionths).unwrap_or(1_000_000),
        denominator: DenominatorType::Million as i32,
    })
}

// The Envoy fields of every filter are checked end to end in `translate/tests/filters.rs`;
// these are the edge cases of the arithmetic.
#[cfg(test)]
mod tests {
    use trellis_api::{BackendObjectRef, Fraction};

    use super::*;

    #[test]
    fn replacing_the_root_prefix_with_the_root_keeps_the_path() {
        let m = HttpPathModifier {
            modifier_type: HttpPathModifierType::ReplacePrefixMatch,
            replace_full_path: None,
            replace_prefix_match: Some("/".to_owned()),
        };
        let want = PathRewrite::Regex("^/*".to_owned(), "/".to_owned());
        assert_eq!(path_rewrite(&m, Some("/")), Some(want));
        assert_eq!(path_rewrite(&m, None), None);
    }

    #[test]
    fn large_fractions_do_not_overflow() {
        let share = |numerator, denominator| {
            let m = HttpRequestMirrorFilter {
                backend_ref: BackendObjectRef {
                    group: String::new(),
                    kind: "Service".into(),
                    name: "m".into(),
                    namespace: None,
                    port: None,
                },
                percent: None,
                fraction: Some(Fraction {
                    numerator,
                    denominator,
                }),
            };
            mirror_share(&m).map(|f| f.numerator)
        };
        let max = i32::MAX.unsigned_abs();
        assert_eq!(share(max, max), Some(1_000_000));
        assert_eq!(share(max - 1, max), Some(999_999));
        assert_eq!(share(5, 1000), Some(5_000));
    }
}

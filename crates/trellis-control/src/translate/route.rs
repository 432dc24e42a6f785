//! Route configs: each service's HTTPRoute and GRPCRoute rules as Envoy routes, ordered by the
//! Gateway API precedence rules, and the HTTP-proxy config with a virtual host per service.

mod action;
mod hash;
mod retry;

use std::cmp::Reverse;

use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, Route, RouteAction, RouteConfiguration, RouteMatch,
    VirtualHost, header_matcher, query_parameter_matcher, route::Action, route_action,
    route_action::HashPolicy, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use trellis_api::{
    ConfigSet, GrpcMethodMatch, HeaderMatch, HttpRouteMatch, PathMatchType, Service, ServiceSpec,
    StringMatchType,
};

use super::{HTTP_PROXY, duration, outbound_cluster, outbound_route_config};
use crate::model::{MeshModel, ServiceModel};
use action::RuleAction;

/// One route config per service, plus the HTTP-proxy config.
pub(super) fn route_configs(model: &MeshModel) -> Vec<RouteConfiguration> {
    let mut proxy_hosts = Vec::new();
    let mut out = Vec::new();
    for svc in model.services.values().filter(|s| s.protocol.is_http()) {
        let routes = service_routes(model, svc);
        let key = svc.key();
        proxy_hosts.push(VirtualHost {
            name: key.clone(),
            domains: vec![
                svc.name.clone(),
                key.clone(),
                format!("{key}.svc"),
                format!("{key}.svc.cluster.local"),
            ],
            routes: routes.clone(),
            ..VirtualHost::default()
        });
        out.push(RouteConfiguration {
            name: outbound_route_config(&key),
            virtual_hosts: vec![VirtualHost {
                name: key,
                domains: vec!["*".to_owned()],
                routes,
                ..VirtualHost::default()
            }],
            ..RouteConfiguration::default()
        });
    }
    out.push(RouteConfiguration {
        name: HTTP_PROXY.to_owned(),
        virtual_hosts: proxy_hosts,
        ..RouteConfiguration::default()
    });
    out
}

/// Whether `before` and `now` give the same [`route_configs`]: those read the config and the
/// services but never an endpoint, so models that differ in endpoints only do. Every field is
/// named below, so that a field added to what is compared must be placed on one side or the
/// other.
pub(super) fn same_routes(before: &MeshModel, now: &MeshModel) -> bool {
    let MeshModel {
        services: before_services,
        config: before_config,
        trust_bundle: _,
        client_localities: _,
        sidecars: _,
    } = before;
    let ConfigSet {
        services,
        http_routes,
        grpc_routes,
        mesh_configs,
        authorization_policies,
        backend_policies,
        fault_injections,
        rate_limits,
    } = &**before_config;
    let config = &*now.config;
    let declared = |a: &Service, b: &Service| {
        let Service { metadata, spec } = a;
        let ServiceSpec {
            ports,
            selector,
            endpoints: _,
            mtls,
        } = spec;
        *metadata == b.metadata
            && *ports == b.spec.ports
            && *selector == b.spec.selector
            && *mtls == b.spec.mtls
    };
    let modelled = |a: &ServiceModel, b: &ServiceModel| {
        let ServiceModel {
            name,
            namespace,
            protocol,
            declared,
            protocol_declared,
            endpoints: _,
            routes,
        } = a;
        *name == b.name
            && *namespace == b.namespace
            && *protocol == b.protocol
            && *declared == b.declared
            && *protocol_declared == b.protocol_declared
            && *routes == b.routes
    };
    *http_routes == config.http_routes
        && *grpc_routes == config.grpc_routes
        && *mesh_configs == config.mesh_configs
        && *authorization_policies == config.authorization_policies
        && *backend_policies == config.backend_policies
        && *fault_injections == config.fault_injections
        && *rate_limits == config.rate_limits
        && services.len() == config.services.len()
        && services
            .iter()
            .zip(&config.services)
            .all(|(a, b)| declared(a, b))
        && before_services.len() == now.services.len()
        && before_services
            .iter()
            .zip(&now.services)
            .all(|((ka, a), (kb, b))| ka == kb && modelled(a, b))
}

/// A config whose one route sends everything to `cluster`.
pub(super) fn single_route_config(name: &str, cluster: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: name.to_owned(),
            domains: vec!["*".to_owned()],
            routes: vec![default_route(cluster, Vec::new())],
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    }
}

/// A route sending everything to `cluster`, hashing requests by `hash_policy`.
fn default_route(cluster: &str, hash_policy: Vec<HashPolicy>) -> Route {
    let mut action = forward_action(
        route_action::ClusterSpecifier::Cluster(cluster.to_owned()),
        None,
    );
    action.hash_policy = hash_policy;
    Route {
        name: "default".to_owned(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".to_owned())),
            ..RouteMatch::default()
        }),
        action: Some(Action::Route(action)),
        ..Route::default()
    }
}

/// Gateway API precedence: exact path, then longer prefix, then method, then more headers,
/// then more query params; ties keep config order (routes sorted by name, then rule order).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Precedence {
    path_kind: u8,
    path_len: Reverse<usize>,
    no_method: bool,
    headers: Reverse<usize>,
    query: Reverse<usize>,
    order: usize,
}

/// A match compiled into an Envoy route, with its precedence.
struct Candidate {
    precedence: Precedence,
    route: Route,
}

fn service_routes(model: &MeshModel, svc: &ServiceModel) -> Vec<Route> {
    let attached = |ns: &str, parents: &[trellis_api::ParentRef]| {
        parents
            .iter()
            .any(|p| p.name == svc.name && p.namespace_or(ns) == svc.namespace)
    };
    let mut candidates = Vec::new();
    for hr in &model.config.http_routes {
        let ns = &hr.metadata.namespace;
        if !attached(ns, &hr.spec.parent_refs) {
            continue;
        }
        for (i, rule) in hr.spec.rules.iter().enumerate() {
            let action = RuleAction::http(rule, ns, &model.config);
            for m in &rule.matches {
                let order = candidates.len();
                let prefix = (m.path.match_type == PathMatchType::PathPrefix)
                    .then_some(m.path.value.as_str());
                let name = format!("{}.{ns}:{i}", hr.metadata.name);
                candidates.push(Candidate {
                    precedence: http_precedence(m, order),
                    route: action.route(name, http_match(m), prefix),
                });
            }
        }
    }
    for gr in &model.config.grpc_routes {
        let ns = &gr.metadata.namespace;
        if !attached(ns, &gr.spec.parent_refs) {
            continue;
        }
        for (i, rule) in gr.spec.rules.iter().enumerate() {
            let action = RuleAction::grpc(rule, ns, &model.config);
            let matches: Vec<_> = if rule.matches.is_empty() {
                vec![(None, &[][..])]
            } else {
                rule.matches
                    .iter()
                    .map(|m| (m.method.as_ref(), m.headers.as_slice()))
                    .collect()
            };
            for (method, headers) in matches {
                let order = candidates.len();
                let (path_kind, path_len) = match method {
                    Some(m) if m.match_type == StringMatchType::Exact && m.method.is_some() => {
                        (0, 0)
                    }
                    Some(m) => (1, m.service.as_deref().map_or(0, str::len)),
                    None => (1, 0),
                };
                candidates.push(Candidate {
                    precedence: Precedence {
                        path_kind,
                        path_len: Reverse(path_len),
                        no_method: true,
                        headers: Reverse(headers.len()),
                        query: Reverse(0),
                        order,
                    },
                    route: action.route(
                        format!("{}.{ns}:{i}", gr.metadata.name),
                        grpc_match(method, headers),
                        None,
                    ),
                });
            }
        }
    }
    if candidates.is_empty() {
        let hash = hash::hash_policy(&model.config, [(svc.namespace.as_str(), svc.name.as_str())]);
        return vec![default_route(&outbound_cluster(&svc.key()), hash)];
    }
    candidates.sort_by(|a, b| a.precedence.cmp(&b.precedence));
    candidates.into_iter().map(|c| c.route).collect()
}

fn http_precedence(m: &HttpRouteMatch, order: usize) -> Precedence {
    let path_kind = match m.path.match_type {
        PathMatchType::Exact => 0,
        PathMatchType::PathPrefix => 1,
        PathMatchType::RegularExpression => 2,
    };
    Precedence {
        path_kind,
        path_len: Reverse(m.path.value.len()),
        no_method: m.method.is_none(),
        headers: Reverse(m.headers.len()),
        query: Reverse(m.query_params.len()),
        order,
    }
}

/// A route action to `target`. A cluster that does not exist (a backendRef naming an unknown
/// Service) answers 500, as Gateway API requires for its share of the traffic.
fn forward_action(
    target: route_action::ClusterSpecifier,
    timeout: Option<std::time::Duration>,
) -> RouteAction {
    RouteAction {
        cluster_specifier: Some(target),
        // Gateway API has no default timeout; Envoy's default is 15 s, so say "none" (0).
        timeout: Some(duration(timeout.unwrap_or_default())),
        cluster_not_found_response_code:
            route_action::ClusterNotFoundResponseCode::InternalServerError as i32,
        ..RouteAction::default()
    }
}

fn http_match(m: &HttpRouteMatch) -> RouteMatch {
    let value = m.path.value.clone();
    let path = match m.path.match_type {
        PathMatchType::Exact => PathSpecifier::Path(value),
        PathMatchType::PathPrefix if value == "/" => PathSpecifier::Prefix(value),
        // Gateway API prefixes match whole path segments and ignore a trailing `/`: `/foo` and
        // `/foo/` both match `/foo` and `/foo/bar`, not `/foobar`. (A ReplacePrefixMatch relies
        // on Envoy matching exactly these segments.)
        PathMatchType::PathPrefix => {
            PathSpecifier::PathSeparatedPrefix(value.trim_end_matches('/').to_owned())
        }
        PathMatchType::RegularExpression => PathSpecifier::SafeRegex(regex(&value)),
    };
    let mut headers: Vec<HeaderMatcher> = m.headers.iter().map(header_matcher).collect();
    if let Some(method) = m.method {
        headers.push(method_matcher(method.as_str()));
    }
    RouteMatch {
        path_specifier: Some(path),
        headers,
        query_parameters: m
            .query_params
            .iter()
            .map(|q| QueryParameterMatcher {
                name: q.name.clone(),
                query_parameter_match_specifier: Some(
                    query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                        string_matcher(q.match_type, &q.value),
                    ),
                ),
            })
            .collect(),
        ..RouteMatch::default()
    }
}

fn grpc_match(method: Option<&GrpcMethodMatch>, headers: &[HeaderMatch]) -> RouteMatch {
    let path = match method {
        None => PathSpecifier::Prefix("/".to_owned()),
        Some(m) => {
            let service = m.service.as_deref();
            let name = m.method.as_deref();
            match (m.match_type, service, name) {
                (StringMatchType::Exact, Some(s), Some(n)) => {
                    PathSpecifier::Path(format!("/{s}/{n}"))
                }
                (StringMatchType::Exact, Some(s), None) => PathSpecifier::Prefix(format!("/{s}/")),
                (StringMatchType::Exact, None, Some(n)) => {
                    PathSpecifier::SafeRegex(regex(&format!("/[^/]+/{}", regex_escape(n))))
                }
                (_, s, n) => PathSpecifier::SafeRegex(regex(&format!(
                    "/{}/{}",
                    s.unwrap_or("[^/]+"),
                    n.unwrap_or("[^/]+")
                ))),
            }
        }
    };
    RouteMatch {
        path_specifier: Some(path),
        headers: headers.iter().map(header_matcher).collect(),
        ..RouteMatch::default()
    }
}

/// The header matcher of a rule's `method`.
pub(super) fn method_matcher(method: &str) -> HeaderMatcher {
    string_header(":method", exact(method))
}

/// A Gateway API header match as an Envoy header matcher (also a fault's `headers`).
pub(super) fn header_matcher(h: &HeaderMatch) -> HeaderMatcher {
    string_header(&h.name, string_matcher(h.match_type, &h.value))
}

fn string_header(name: &str, m: StringMatcher) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(m)),
        ..HeaderMatcher::default()
    }
}

fn string_matcher(t: StringMatchType, value: &str) -> StringMatcher {
    match t {
        StringMatchType::Exact => exact(value),
        StringMatchType::RegularExpression => StringMatcher {
            match_pattern: Some(MatchPattern::SafeRegex(regex(value))),
            ..StringMatcher::default()
        },
    }
}

fn exact(value: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(value.to_owned())),
        ..StringMatcher::default()
    }
}

pub(super) fn regex(value: &str) -> RegexMatcher {
    RegexMatcher {
        regex: value.to_owned(),
        ..RegexMatcher::default()
    }
}

pub(super) fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$#&-~".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

//! Route filters, timeouts and missing backends, checked field by field against what Envoy
//! expects.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, RuntimeFractionalPercent,
    header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, RedirectAction, RetryPolicy, Route, RouteAction,
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
    route::Action,
    route_action::{
        ClusterNotFoundResponseCode, ClusterSpecifier, HostRewriteSpecifier, RequestMirrorPolicy,
    },
    route_match::PathSpecifier,
    weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatchAndSubstitute, RegexMatcher};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

use crate::model::MeshModel;
use crate::translate::route::route_configs;

pub(super) const SERVICES: &str = "\
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: shop}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: shop-v1}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: shop-v2}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: shadow}
---
";

/// The Envoy routes of Service `shop` when `kind` (HTTPRoute or GRPCRoute) `r` has `rules`
/// (YAML at the indentation of `rules:`'s items).
fn routes_of(kind: &str, rules: &str) -> Vec<Route> {
    let yaml = format!(
        "{SERVICES}apiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\nmetadata: {{name: r}}\nspec:\n  parentRefs: [{{kind: Service, name: shop}}]\n  rules:\n{rules}"
    );
    let config = trellis_api::load_str("t.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
    let model = MeshModel::build(Arc::new(config), std::iter::empty());
    let shop = route_configs(&model)
        .into_iter()
        .find(|c| c.name == "outbound|shop.default")
        .expect("shop's route config");
    shop.virtual_hosts[0].routes.clone()
}

fn routes(rules: &str) -> Vec<Route> {
    routes_of("HTTPRoute", rules)
}

fn forward(route: &Route) -> &RouteAction {
    match &route.action {
        Some(Action::Route(action)) => action,
        other => panic!("expected a route action, found {other:?}"),
    }
}

fn header(name: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value: value.to_owned(),
            ..HeaderValue::default()
        }),
        append_action: action as i32,
        ..HeaderValueOption::default()
    }
}

fn rewrite(pattern: &str, substitution: &str) -> RegexMatchAndSubstitute {
    RegexMatchAndSubstitute {
        pattern: Some(RegexMatcher {
            regex: pattern.to_owned(),
            ..RegexMatcher::default()
        }),
        substitution: substitution.to_owned(),
    }
}

const OVERWRITE: HeaderAppendAction = HeaderAppendAction::OverwriteIfExistsOrAdd;
const APPEND: HeaderAppendAction = HeaderAppendAction::AppendIfExistsOrAdd;

#[test]
fn header_modifiers_become_route_headers_lower_cased_with_percent_escaped() {
    let routes = routes(
        "  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add: [{name: X-Trace, value: a}]
        set: [{name: X-Env, value: '100% %REQ(x)%'}, {name: x-b, value: b}]
        remove: [X-Debug]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: Cache-Control, value: no-store}]
        remove: [Server]
    backendRefs: [{name: shop-v1}]
",
    );
    let route = &routes[0];
    assert_eq!(
        route.request_headers_to_add,
        [
            header("x-env", "100%% %%REQ(x)%%", OVERWRITE),
            header("x-b", "b", OVERWRITE),
            header("x-trace", "a", APPEND),
        ]
    );
    assert_eq!(route.request_headers_to_remove, ["x-debug"]);
    assert_eq!(
        route.response_headers_to_add,
        [header("cache-control", "no-store", OVERWRITE)]
    );
    assert_eq!(route.response_headers_to_remove, ["server"]);
    assert_eq!(
        forward(route).cluster_specifier,
        Some(ClusterSpecifier::Cluster("outbound|shop-v1.default".into())),
        "a backend without filters needs no weighted clusters"
    );
}

#[test]
fn backend_filters_go_on_their_cluster_weight_even_for_one_backend() {
    let one = routes(
        "  - backendRefs:
    - name: shop-v1
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: X-Version, value: v1}], remove: [x-a]}
      - type: ResponseHeaderModifier
        responseHeaderModifier: {add: [{name: X-Served-By, value: v1}], remove: [x-b]}
",
    );
    let Some(ClusterSpecifier::WeightedClusters(wc)) = &forward(&one[0]).cluster_specifier else {
        panic!("weighted clusters for a backend with filters")
    };
    assert_eq!(
        wc.clusters,
        [ClusterWeight {
            name: "outbound|shop-v1.default".into(),
            weight: Some(UInt32Value { value: 1 }),
            request_headers_to_add: vec![header("x-version", "v1", OVERWRITE)],
            request_headers_to_remove: vec!["x-a".into()],
            response_headers_to_add: vec![header("x-served-by", "v1", APPEND)],
            response_headers_to_remove: vec!["x-b".into()],
            ..ClusterWeight::default()
        }]
    );

    let two = routes(
        "  - backendRefs:
    - name: shop-v1
      weight: 3
    - name: shop-v2
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-version, value: v2}]}
",
    );
    let Some(ClusterSpecifier::WeightedClusters(wc)) = &forward(&two[0]).cluster_specifier else {
        panic!("weighted clusters")
    };
    let headers: Vec<(&str, u32, usize)> = wc
        .clusters
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.weight.unwrap().value,
                c.request_headers_to_add.len(),
            )
        })
        .collect();
    assert_eq!(
        headers,
        [
            ("outbound|shop-v1.default", 3, 0),
            ("outbound|shop-v2.default", 1, 1)
        ]
    );
}

#[test]
fn url_rewrite_sets_the_host_and_replaces_the_full_path() {
    let routes = routes(
        "  - filters:
    - type: URLRewrite
      urlRewrite:
        hostname: api.internal
        path: {type: ReplaceFullPath, replaceFullPath: /v2/items}
    backendRefs: [{name: shop-v1}]
",
    );
    let action = forward(&routes[0]);
    assert_eq!(
        action.host_rewrite_specifier,
        Some(HostRewriteSpecifier::HostRewriteLiteral(
            "api.internal".into()
        ))
    );
    assert_eq!(action.regex_rewrite, Some(rewrite("^/.*$", "/v2/items")));
    assert_eq!(action.prefix_rewrite, "");
}

#[test]
fn replace_prefix_match_has_three_envoy_forms() {
    let rule = |prefix: &str, replacement: &str| {
        format!(
            "  - matches: [{{path: {{type: PathPrefix, value: '{prefix}'}}}}]
    filters:
    - type: URLRewrite
      urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: '{replacement}'}}}}
    backendRefs: [{{name: shop-v1}}]
"
        )
    };
    let rules = [
        rule("/prefix/one", "/one"),
        rule("/strip-prefix", "/"),
        rule("/", "/one"),
        rule("/trailing/", "/two/"),
    ];
    let routes = routes(&rules.concat());
    let by_rule = |i: usize| {
        let name = format!("r.default:{i}");
        let route = routes
            .iter()
            .find(|r| r.name == name)
            .expect("route of rule");
        let path = route.r#match.as_ref().unwrap().path_specifier.clone();
        let action = forward(route);
        (
            path,
            action.prefix_rewrite.clone(),
            action.regex_rewrite.clone(),
        )
    };
    assert_eq!(
        by_rule(0),
        (
            Some(PathSpecifier::PathSeparatedPrefix("/prefix/one".into())),
            "/one".into(),
            None
        )
    );
    assert_eq!(
        by_rule(1),
        (
            Some(PathSpecifier::PathSeparatedPrefix("/strip-prefix".into())),
            String::new(),
            Some(rewrite(r"^/strip\-prefix/*", "/"))
        )
    );
    assert_eq!(
        by_rule(2),
        (
            Some(PathSpecifier::Prefix("/".into())),
            String::new(),
            Some(rewrite("^/", "/one/"))
        )
    );
    assert_eq!(
        by_rule(3),
        (
            Some(PathSpecifier::PathSeparatedPrefix("/trailing".into())),
            "/two".into(),
            None
        ),
        "trailing slashes are dropped from the match and the replacement"
    );
}

#[test]
fn request_redirect_becomes_a_redirect_action() {
    let routes = routes(
        "  - matches: [{path: {value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        hostname: shop.example.com
        port: 8443
        statusCode: 301
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-moved, value: 'yes'}]}
  - matches: [{path: {type: Exact, value: /home}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /index.html}}
  - matches: [{path: {value: /}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {statusCode: 308, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
",
    );
    let redirect = |name: &str| {
        let route = routes.iter().find(|r| r.name == name).expect("route");
        match &route.action {
            Some(Action::Redirect(r)) => (r.clone(), route.response_headers_to_add.len()),
            other => panic!("expected a redirect, found {other:?}"),
        }
    };
    assert_eq!(
        redirect("r.default:0"),
        (
            RedirectAction {
                scheme_rewrite_specifier: Some(SchemeRewriteSpecifier::SchemeRedirect(
                    "https".into()
                )),
                host_redirect: "shop.example.com".into(),
                port_redirect: 8443,
                path_rewrite_specifier: Some(PathRewriteSpecifier::PrefixRewrite("/new".into())),
                response_code: RedirectResponseCode::MovedPermanently as i32,
                ..RedirectAction::default()
            },
            1
        ),
        "header filters of a redirecting rule stay on the route"
    );
    assert_eq!(
        redirect("r.default:1").0,
        RedirectAction {
            path_rewrite_specifier: Some(PathRewriteSpecifier::PathRedirect("/index.html".into())),
            response_code: RedirectResponseCode::Found as i32,
            ..RedirectAction::default()
        }
    );
    assert_eq!(
        redirect("r.default:2").0,
        RedirectAction {
            path_rewrite_specifier: Some(PathRewriteSpecifier::RegexRewrite(rewrite("^/", "/v2/"))),
            response_code: RedirectResponseCode::PermanentRedirect as i32,
            ..RedirectAction::default()
        }
    );
}

#[test]
fn status_codes_map_to_envoy_redirect_codes() {
    for (status, code) in [
        (301, RedirectResponseCode::MovedPermanently),
        (302, RedirectResponseCode::Found),
        (303, RedirectResponseCode::SeeOther),
        (307, RedirectResponseCode::TemporaryRedirect),
        (308, RedirectResponseCode::PermanentRedirect),
    ] {
        let routes = routes(&format!(
            "  - filters: [{{type: RequestRedirect, requestRedirect: {{statusCode: {status}}}}}]\n"
        ));
        let Some(Action::Redirect(r)) = &routes[0].action else {
            panic!("redirect")
        };
        assert_eq!(r.response_code, code as i32, "{status}");
    }
}

#[test]
fn mirrors_name_the_outbound_cluster_and_convert_their_share() {
    let routes = routes(
        "  - filters:
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, namespace: ops}, percent: 10}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow}, fraction: {numerator: 7}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow}, fraction: {numerator: 1, denominator: 3}}}
    backendRefs: [{name: shop-v1}]
",
    );
    let share = |numerator, denominator: DenominatorType| {
        Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator,
                denominator: denominator as i32,
            }),
            runtime_key: String::new(),
        })
    };
    let mirror = |cluster: &str, runtime_fraction| RequestMirrorPolicy {
        cluster: cluster.to_owned(),
        runtime_fraction,
        ..RequestMirrorPolicy::default()
    };
    assert_eq!(
        forward(&routes[0]).request_mirror_policies,
        [
            mirror("outbound|shadow.default", None),
            mirror("outbound|shadow.ops", share(10, DenominatorType::Hundred)),
            mirror(
                "outbound|shadow.default",
                share(7, DenominatorType::Hundred)
            ),
            mirror(
                "outbound|shadow.default",
                share(333_333, DenominatorType::Million)
            ),
        ]
    );
}

#[test]
fn timeouts_set_the_route_timeout_and_a_per_try_timeout_without_retries() {
    let routes = routes(
        "  - timeouts: {request: 10s, backendRequest: 1500ms}
    backendRefs: [{name: shop-v1}]
  - matches: [{path: {value: /other}}]
    backendRefs: [{name: shop-v1}]
",
    );
    let by_name = |name: &str| forward(routes.iter().find(|r| r.name == name).unwrap()).clone();
    let timed = by_name("r.default:0");
    assert_eq!(
        timed.timeout,
        Some(PbDuration {
            seconds: 10,
            nanos: 0
        })
    );
    assert_eq!(
        timed.retry_policy,
        Some(RetryPolicy {
            retry_on: String::new(),
            num_retries: Some(UInt32Value { value: 0 }),
            per_try_timeout: Some(PbDuration {
                seconds: 1,
                nanos: 500_000_000
            }),
            ..RetryPolicy::default()
        })
    );
    let untimed = by_name("r.default:1");
    assert_eq!(
        untimed.timeout,
        Some(PbDuration::default()),
        "0 = no timeout"
    );
    assert_eq!(untimed.retry_policy, None);
}

#[test]
fn rules_without_backends_answer_500_or_unavailable_for_grpc() {
    let direct_500 = Some(Action::DirectResponse(DirectResponseAction {
        status: 500,
        body: None,
        ..DirectResponseAction::default()
    }));
    let http = routes(
        "  - matches: [{path: {value: /none}}]
  - matches: [{path: {value: /zero}}]
    backendRefs: [{name: shop-v1, weight: 0}, {name: shop-v2, weight: 0}]
    filters:
    - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-a, value: b}]}}
",
    );
    assert_eq!(http.len(), 2, "the rules are kept, not dropped");
    for route in &http {
        assert_eq!(route.action, direct_500, "{}", route.name);
    }
    assert_eq!(http[1].response_headers_to_add.len(), 1);

    let grpc = routes_of(
        "GRPCRoute",
        "  - matches: [{method: {service: shop.v1.Shop}}]\n",
    );
    assert_eq!(
        grpc[0].action,
        Some(Action::DirectResponse(DirectResponseAction {
            status: 503,
            body: None,
            ..DirectResponseAction::default()
        })),
        "gRPC clients read UNAVAILABLE from 503"
    );
}

#[test]
fn a_backend_that_does_not_exist_keeps_its_share_and_gets_500() {
    let routes = routes(
        "  - backendRefs: [{name: shop-v1, weight: 3}, {name: missing, weight: 1}]
  - matches: [{path: {value: /one}}]
    backendRefs: [{name: missing}]
",
    );
    for route in &routes {
        assert_eq!(
            forward(route).cluster_not_found_response_code,
            ClusterNotFoundResponseCode::InternalServerError as i32,
            "{}",
            route.name
        );
    }
    let split = routes.iter().find(|r| r.name == "r.default:0").unwrap();
    let Some(ClusterSpecifier::WeightedClusters(wc)) = &forward(split).cluster_specifier else {
        panic!("weighted clusters")
    };
    let names: Vec<&str> = wc.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["outbound|shop-v1.default", "outbound|missing.default"]
    );
}

#[test]
fn grpc_routes_take_header_and_mirror_filters_and_no_timeouts() {
    let routes = routes_of(
        "GRPCRoute",
        "  - filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Tenant, value: acme}]}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {remove: [x-internal]}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow}, percent: 50}}
    backendRefs:
    - name: shop-v1
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: x-v, value: '1'}]}}]
",
    );
    let route = &routes[0];
    assert_eq!(
        route.request_headers_to_add,
        [header("x-tenant", "acme", OVERWRITE)]
    );
    assert_eq!(route.response_headers_to_remove, ["x-internal"]);
    let action = forward(route);
    assert_eq!(action.request_mirror_policies.len(), 1);
    assert_eq!(action.retry_policy, None);
    assert_eq!(action.timeout, Some(PbDuration::default()));
    let Some(ClusterSpecifier::WeightedClusters(wc)) = &action.cluster_specifier else {
        panic!("weighted clusters")
    };
    assert_eq!(
        wc.clusters[0].request_headers_to_add,
        [header("x-v", "1", APPEND)]
    );
}

#[test]
fn the_routing_examples_translate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/routing");
    let config = trellis_api::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let model = MeshModel::build(Arc::new(config), std::iter::empty());
    let configs = route_configs(&model);
    let web = configs
        .iter()
        .find(|c| c.name == "outbound|web.default")
        .expect("web's route config");
    let actions: Vec<&str> = web.virtual_hosts[0]
        .routes
        .iter()
        .map(|r| match &r.action {
            Some(Action::Route(a)) if !a.request_mirror_policies.is_empty() => "mirror",
            Some(Action::Route(_)) => "forward",
            Some(Action::Redirect(_)) => "redirect",
            _ => "other",
        })
        .collect();
    assert_eq!(actions, ["forward", "mirror", "redirect"]);
}

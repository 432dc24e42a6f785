//! Route selection tests: configs built from envoy-types messages, requests built in code.

use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::query_parameter_matcher::QueryParameterMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::GrpcRouteMatchOptions;
use envoy_types::pb::envoy::config::route::v3::weighted_cluster::ClusterWeight;
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, RouteAction as PbRouteAction, WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher};
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

use std::time::Duration;

use super::*;
use crate::telemetry::LocalWorkload;

fn path_match(spec: PathSpecifier) -> PbRouteMatch {
    PbRouteMatch {
        path_specifier: Some(spec),
        ..Default::default()
    }
}

fn prefix(p: &str) -> PbRouteMatch {
    path_match(PathSpecifier::Prefix(p.into()))
}

fn route(name: &str, m: PbRouteMatch, cluster: &str) -> PbRoute {
    PbRoute {
        name: name.into(),
        r#match: Some(m),
        action: Some(PbAction::Route(PbRouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn vhost(name: &str, domains: &[&str], routes: Vec<PbRoute>) -> PbVirtualHost {
    PbVirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        routes,
        ..Default::default()
    }
}

fn config(vhosts: Vec<PbVirtualHost>) -> RouteConfig {
    try_config(vhosts).unwrap()
}

fn try_config(vhosts: Vec<PbVirtualHost>) -> Result<RouteConfig, ConfigError> {
    let rc = RouteConfiguration {
        name: "rc".into(),
        virtual_hosts: vhosts,
        ..Default::default()
    };
    RouteConfig::compile(&rc, &Metrics::new(LocalWorkload::default(), None, None))
}

fn string(pattern: MatchPattern) -> StringMatcher {
    StringMatcher {
        ignore_case: false,
        match_pattern: Some(pattern),
    }
}

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.into(),
        engine_type: None,
    }
}

fn header(name: &str, spec: HeaderMatchSpecifier, invert: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        invert_match: invert,
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

/// The name of the route chosen for `method uri` with `host` and extra headers.
fn chosen<'a>(
    rc: &'a RouteConfig,
    method: &str,
    uri: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> Option<&'a str> {
    let mut req = http::Request::builder().method(method).uri(uri);
    if !host.is_empty() {
        req = req.header("host", host);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(()).unwrap();
    rc.route(&RequestView::new(&req)).map(|r| r.name.as_str())
}

#[test]
fn path_prefix_exact_regex_and_first_match_wins() {
    let rc = config(vec![vhost(
        "all",
        &["*"],
        vec![
            route(
                "exact",
                path_match(PathSpecifier::Path("/items".into())),
                "a",
            ),
            route(
                "regex",
                path_match(PathSpecifier::SafeRegex(regex("/items/[0-9]+"))),
                "a",
            ),
            route(
                "separated",
                path_match(PathSpecifier::PathSeparatedPrefix("/api".into())),
                "a",
            ),
            route("items-prefix", prefix("/items"), "b"),
            route("catch-all", prefix("/"), "c"),
        ],
    )]);
    assert_eq!(chosen(&rc, "GET", "/items", "x", &[]), Some("exact"));
    assert_eq!(chosen(&rc, "GET", "/items?q=1", "x", &[]), Some("exact"));
    assert_eq!(chosen(&rc, "GET", "/items/42", "x", &[]), Some("regex"));
    assert_eq!(
        chosen(&rc, "GET", "/items/42x", "x", &[]),
        Some("items-prefix")
    );
    assert_eq!(
        chosen(&rc, "GET", "/itemsXYZ", "x", &[]),
        Some("items-prefix")
    );
    assert_eq!(chosen(&rc, "GET", "/api/v1", "x", &[]), Some("separated"));
    assert_eq!(chosen(&rc, "GET", "/api", "x", &[]), Some("separated"));
    assert_eq!(chosen(&rc, "GET", "/apix", "x", &[]), Some("catch-all"));
    assert_eq!(chosen(&rc, "GET", "/ITEMS", "x", &[]), Some("catch-all"));
}

#[test]
fn case_insensitive_paths() {
    let mut m = prefix("/Items");
    m.case_sensitive = Some(envoy_types::pb::google::protobuf::BoolValue { value: false });
    let rc = config(vec![vhost("all", &["*"], vec![route("ci", m, "a")])]);
    assert_eq!(chosen(&rc, "GET", "/items/1", "x", &[]), Some("ci"));
}

#[test]
fn header_method_and_query_matches() {
    let mut post = prefix("/");
    post.headers = vec![header(
        ":method",
        HeaderMatchSpecifier::StringMatch(string(MatchPattern::Exact("POST".into()))),
        false,
    )];
    let mut canary = prefix("/");
    canary.headers = vec![
        header(
            "x-canary",
            HeaderMatchSpecifier::StringMatch(string(MatchPattern::Prefix("yes".into()))),
            false,
        ),
        header("x-block", HeaderMatchSpecifier::PresentMatch(true), true),
    ];
    let mut query = prefix("/");
    query.query_parameters = vec![QueryParameterMatcher {
        name: "version".into(),
        query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::StringMatch(string(
            MatchPattern::SafeRegex(regex("v[23]")),
        ))),
    }];
    let mut authority = prefix("/");
    authority.headers = vec![header(
        ":authority",
        HeaderMatchSpecifier::StringMatch(string(MatchPattern::Suffix(":8080".into()))),
        false,
    )];
    let mut grpc = prefix("/");
    grpc.grpc = Some(GrpcRouteMatchOptions {});
    let rc = config(vec![vhost(
        "all",
        &["*"],
        vec![
            route("post", post, "a"),
            route("canary", canary, "a"),
            route("query", query, "a"),
            route("authority", authority, "a"),
            route("grpc", grpc, "a"),
            route("default", prefix("/"), "b"),
        ],
    )]);
    assert_eq!(chosen(&rc, "POST", "/x", "h", &[]), Some("post"));
    assert_eq!(
        chosen(&rc, "GET", "/x", "h", &[("x-canary", "yes-please")]),
        Some("canary")
    );
    assert_eq!(
        chosen(
            &rc,
            "GET",
            "/x",
            "h",
            &[("x-canary", "yes"), ("x-block", "1")]
        ),
        Some("default"),
        "invert_match on a present header"
    );
    assert_eq!(
        chosen(&rc, "GET", "/x?a=1&version=v3", "h", &[]),
        Some("query")
    );
    assert_eq!(
        chosen(&rc, "GET", "/x?version=v33", "h", &[]),
        Some("default")
    );
    assert_eq!(chosen(&rc, "GET", "/x", "h:8080", &[]), Some("authority"));
    assert_eq!(
        chosen(
            &rc,
            "POST",
            "/pkg.Svc/M",
            "h",
            &[("content-type", "application/grpc")]
        ),
        Some("post")
    );
    assert_eq!(
        chosen(
            &rc,
            "GET",
            "/pkg.Svc/M",
            "h",
            &[("content-type", "application/grpc+proto")]
        ),
        Some("grpc")
    );
    assert_eq!(chosen(&rc, "GET", "/x", "h", &[]), Some("default"));
}

#[test]
fn virtual_host_domains() {
    let rc = config(vec![
        vhost(
            "catalog",
            &["catalog", "catalog.default:9080"],
            vec![route("c", prefix("/"), "c")],
        ),
        vhost(
            "wild",
            &["*.example.com"],
            vec![route("w", prefix("/"), "w")],
        ),
        vhost("pre", &["api.*"], vec![route("p", prefix("/"), "p")]),
        vhost("any", &["*"], vec![route("any", prefix("/"), "d")]),
    ]);
    assert_eq!(chosen(&rc, "GET", "/", "catalog", &[]), Some("c"));
    assert_eq!(
        chosen(&rc, "GET", "/", "Catalog:80", &[]),
        Some("c"),
        "port stripped, case folded"
    );
    assert_eq!(
        chosen(&rc, "GET", "/", "catalog.default:9080", &[]),
        Some("c")
    );
    assert_eq!(
        chosen(&rc, "GET", "/", "catalog.default:1", &[]),
        Some("any")
    );
    assert_eq!(chosen(&rc, "GET", "/", "a.example.com", &[]), Some("w"));
    assert_eq!(chosen(&rc, "GET", "/", "api.internal", &[]), Some("p"));
    assert_eq!(
        chosen(&rc, "GET", "http://catalog/items", "", &[]),
        Some("c"),
        "absolute form"
    );
    assert_eq!(chosen(&rc, "GET", "/", "other", &[]), Some("any"));

    let no_default = config(vec![vhost(
        "only",
        &["only"],
        vec![route("o", prefix("/"), "o")],
    )]);
    assert_eq!(chosen(&no_default, "GET", "/", "other", &[]), None);
}

#[test]
fn weighted_clusters_and_timeouts_compile() {
    let mut r = route("w", prefix("/"), "unused");
    r.action = Some(PbAction::Route(PbRouteAction {
        cluster_specifier: Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: vec![
                ClusterWeight {
                    name: "v1".into(),
                    weight: Some(UInt32Value { value: 90 }),
                    ..Default::default()
                },
                ClusterWeight {
                    name: "v2".into(),
                    weight: Some(UInt32Value { value: 10 }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })),
        timeout: Some(PbDuration {
            seconds: 0,
            nanos: 0,
        }),
        ..Default::default()
    }));
    let rc = config(vec![vhost(
        "all",
        &["*"],
        vec![r, route("d", prefix("/"), "c")],
    )]);
    let routes: Vec<&RouteAction> = rc.virtual_hosts[0]
        .routes
        .iter()
        .map(|r| match &r.action {
            Action::Forward(a) => a,
            other => panic!("not a forward: {other:?}"),
        })
        .collect();
    let weights: Vec<(u64, &str)> = routes[0]
        .clusters
        .iter()
        .map(|(w, t)| (w, t.cluster.as_str()))
        .collect();
    assert_eq!(weights, vec![(90, "v1"), (10, "v2")]);
    assert_eq!(routes[0].timeout, None, "0 disables the timeout");
    assert_eq!(
        routes[1].timeout,
        Some(Duration::from_secs(15)),
        "Envoy's default"
    );
}

#[test]
fn unsupported_things_are_rejected_precisely() {
    let mut by_header = route("r", prefix("/"), "a");
    by_header.action = Some(PbAction::Route(PbRouteAction {
        cluster_specifier: Some(ClusterSpecifier::ClusterHeader("x-cluster".into())),
        ..Default::default()
    }));
    let err = try_config(vec![vhost(
        "vh",
        &["*"],
        vec![route("ok", prefix("/"), "a"), by_header],
    )])
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "route configuration \"rc\": virtual_hosts[0].routes[1].route.cluster_header: not supported by trellis-proxy"
    );

    let mut bad_regex = prefix("/");
    bad_regex.path_specifier = Some(PathSpecifier::SafeRegex(regex("(")));
    let err = try_config(vec![vhost("vh", &["*"], vec![route("r", bad_regex, "a")])])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("route configuration \"rc\": virtual_hosts[0].routes[0].match.safe_regex.regex: invalid regex"),
        "{err}"
    );

    let err = try_config(vec![
        vhost("a", &["same"], vec![]),
        vhost("b", &["SAME"], vec![]),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("virtual_hosts[1].domains[0]: domain \"SAME\" is already used"),
        "{err}"
    );
}

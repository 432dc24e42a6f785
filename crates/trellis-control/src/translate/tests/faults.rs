//! FaultInjection and RateLimit as Envoy's `fault` and `local_ratelimit` filters and per-route
//! configs, checked field by field against what Envoy expects.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, RuntimeFractionalPercent,
    header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter::ConfigType};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, Route, header_matcher::HeaderMatchSpecifier, route::Action,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{
    FaultDelay, fault_delay::FaultDelaySecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort::ErrorType,
};
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use envoy_types::pb::envoy::r#type::v3::{
    FractionalPercent, TokenBucket, fractional_percent::DenominatorType,
};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, UInt32Value};
use prost::{Message, Name};
use trellis_xds::TypeUrl;
use trellis_xds::node::NodeMeta;

use super::{decode, node};
use crate::model::MeshModel;
use crate::translate::route::route_configs;
use crate::translate::translate;

const FAULT: &str = "envoy.filters.http.fault";
const LOCAL_RATELIMIT: &str = "envoy.filters.http.local_ratelimit";
const RBAC: &str = "envoy.filters.http.rbac";
const ROUTER: &str = "envoy.filters.http.router";

const SERVICES: &str = "\
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: shop}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: shop-v1}
---
";

fn model(yaml: &str, nodes: &[NodeMeta]) -> MeshModel {
    let config = trellis_api::load_str("t.yaml", &format!("{SERVICES}{yaml}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<String> = (0..nodes.len()).map(|i| format!("n{i}")).collect();
    let workloads = ids.iter().map(String::as_str).zip(nodes.iter());
    MeshModel::build(Arc::new(config), workloads)
}

/// The Envoy routes of Service `shop` when `resources` come with a `kind` route `r` whose
/// `rules` are YAML at the indentation of `rules:`'s items.
fn routes_of(resources: &str, kind: &str, rules: &str) -> Vec<Route> {
    let model = model(
        &format!(
            "{resources}---\napiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\nmetadata: {{name: r}}\nspec:\n  parentRefs: [{{kind: Service, name: shop}}]\n  rules:\n{rules}"
        ),
        &[],
    );
    route_configs(&model)
        .into_iter()
        .find(|c| c.name == "outbound|shop.default")
        .expect("shop's route config")
        .virtual_hosts[0]
        .routes
        .clone()
}

/// A rule filter referencing the `kind` named `name`.
fn extension_ref(kind: &str, name: &str) -> String {
    format!(
        "    - {{type: ExtensionRef, extensionRef: {{group: trellis.dev, kind: {kind}, name: {name}}}}}\n"
    )
}

fn unpack<M: Message + Name + Default>(any: &Any) -> M {
    assert_eq!(any.type_url, M::type_url());
    M::decode(any.value.as_slice()).expect("decodes")
}

/// The route's per-route config of `filter`, decoded.
fn per_route<M: Message + Name + Default>(route: &Route, filter: &str) -> Option<M> {
    route.typed_per_filter_config.get(filter).map(unpack)
}

fn hundredths(numerator: u32) -> Option<FractionalPercent> {
    Some(FractionalPercent {
        numerator,
        denominator: DenominatorType::Hundred as i32,
    })
}

fn millionths(numerator: u32) -> Option<FractionalPercent> {
    Some(FractionalPercent {
        numerator,
        denominator: DenominatorType::Million as i32,
    })
}

fn secs(seconds: i64, nanos: i32) -> Option<PbDuration> {
    Some(PbDuration { seconds, nanos })
}

fn string_header(name: &str, pattern: MatchPattern) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(pattern),
            ..StringMatcher::default()
        })),
        ..HeaderMatcher::default()
    }
}

fn direct_status(route: &Route) -> Option<u32> {
    match &route.action {
        Some(Action::DirectResponse(DirectResponseAction { status, .. })) => Some(*status),
        _ => None,
    }
}

/// The `LocalRateLimit` Trellis builds for a bucket of `max` tokens refilled with `per_fill`
/// tokens every `fill`, with `retry_after`.
fn bucket(max: u32, per_fill: u32, fill: Option<PbDuration>, retry_after: &str) -> LocalRateLimit {
    let always = |key: &str| {
        Some(RuntimeFractionalPercent {
            default_value: hundredths(100),
            runtime_key: key.to_owned(),
        })
    };
    LocalRateLimit {
        stat_prefix: "http_local_rate_limiter".to_owned(),
        token_bucket: Some(TokenBucket {
            max_tokens: max,
            tokens_per_fill: Some(UInt32Value { value: per_fill }),
            fill_interval: fill,
        }),
        filter_enabled: always("local_rate_limit_enabled"),
        filter_enforced: always("local_rate_limit_enforced"),
        response_headers_to_add: vec![HeaderValueOption {
            header: Some(HeaderValue {
                key: "retry-after".to_owned(),
                value: retry_after.to_owned(),
                ..HeaderValue::default()
            }),
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..HeaderValueOption::default()
        }],
        ..LocalRateLimit::default()
    }
}

#[test]
fn a_fault_with_delay_abort_and_headers_is_the_per_route_config_of_each_match() {
    let fault = "apiVersion: trellis.dev/v1alpha1
kind: FaultInjection
metadata: {name: chaos}
spec:
  delay: {fixedDelay: 1s500ms, percent: 10}
  abort: {httpStatus: 503, percent: 20}
  headers:
  - {name: X-Chaos, value: 'on'}
  - {name: x-user, type: RegularExpression, value: 'test-.*'}
";
    let rules = format!(
        "  - matches: [{{path: {{value: /a}}}}, {{path: {{type: Exact, value: /b}}}}]\n    filters:\n{}    backendRefs: [{{name: shop-v1}}]\n  - backendRefs: [{{name: shop-v1}}]\n",
        extension_ref("FaultInjection", "chaos")
    );
    let routes = routes_of(fault, "HTTPRoute", &rules);
    let want = HttpFault {
        delay: Some(FaultDelay {
            fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(PbDuration {
                seconds: 1,
                nanos: 500_000_000,
            })),
            percentage: hundredths(10),
        }),
        abort: Some(FaultAbort {
            error_type: Some(ErrorType::HttpStatus(503)),
            percentage: hundredths(20),
            ..FaultAbort::default()
        }),
        headers: vec![
            string_header("X-Chaos", MatchPattern::Exact("on".to_owned())),
            string_header(
                "x-user",
                MatchPattern::SafeRegex(RegexMatcher {
                    regex: "test-.*".to_owned(),
                    ..RegexMatcher::default()
                }),
            ),
        ],
        ..HttpFault::default()
    };
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["r.default:0", "r.default:0", "r.default:1"]);
    for route in &routes[..2] {
        assert_eq!(per_route::<HttpFault>(route, FAULT).as_ref(), Some(&want));
        assert_eq!(route.typed_per_filter_config.len(), 1);
        assert!(
            matches!(route.action, Some(Action::Route(_))),
            "still forwards"
        );
    }
    assert!(routes[2].typed_per_filter_config.is_empty());
}

#[test]
fn grpc_aborts_and_fractional_percents() {
    let faults = "apiVersion: trellis.dev/v1alpha1
kind: FaultInjection
metadata: {name: exhausted}
spec:
  abort: {grpcStatus: RESOURCE_EXHAUSTED}
---
apiVersion: trellis.dev/v1alpha1
kind: FaultInjection
metadata: {name: fine}
spec:
  delay: {fixedDelay: 250ms, percent: 0.5}
  abort: {grpcStatus: UNAVAILABLE, percent: 12.3456}
---
apiVersion: trellis.dev/v1alpha1
kind: FaultInjection
metadata: {name: never}
spec:
  delay: {fixedDelay: 1s, percent: 0}
";
    let rules = ["exhausted", "fine", "never"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            format!(
                "  - matches: [{{method: {{service: s{i}}}}}]\n    filters:\n{}    backendRefs: [{{name: shop-v1}}]\n",
                extension_ref("FaultInjection", name)
            )
        })
        .collect::<String>();
    let routes = routes_of(faults, "GRPCRoute", &rules);
    let faults: Vec<HttpFault> = routes
        .iter()
        .map(|r| per_route(r, FAULT).expect("a fault config"))
        .collect();
    assert_eq!(
        faults[0],
        HttpFault {
            abort: Some(FaultAbort {
                error_type: Some(ErrorType::GrpcStatus(8)),
                percentage: hundredths(100),
                ..FaultAbort::default()
            }),
            ..HttpFault::default()
        },
        "every call when `percent` is not given"
    );
    assert_eq!(
        faults[1],
        HttpFault {
            delay: Some(FaultDelay {
                fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(PbDuration {
                    seconds: 0,
                    nanos: 250_000_000,
                })),
                percentage: millionths(5_000),
            }),
            abort: Some(FaultAbort {
                error_type: Some(ErrorType::GrpcStatus(14)),
                percentage: millionths(123_456),
                ..FaultAbort::default()
            }),
            ..HttpFault::default()
        }
    );
    assert_eq!(
        faults[2].delay.as_ref().and_then(|d| d.percentage),
        hundredths(0)
    );
}

#[test]
fn a_rate_limit_is_the_per_route_token_bucket_with_retry_after_rounded_up() {
    let limits = "apiVersion: trellis.dev/v1alpha1
kind: RateLimit
metadata: {name: five}
spec: {requests: 5, burst: 8}
---
apiVersion: trellis.dev/v1alpha1
kind: RateLimit
metadata: {name: slow}
spec: {requests: 2, per: 2500ms}
---
apiVersion: trellis.dev/v1alpha1
kind: RateLimit
metadata: {name: quick}
spec: {requests: 1, per: 50ms}
---
apiVersion: trellis.dev/v1alpha1
kind: FaultInjection
metadata: {name: chaos}
spec:
  abort: {httpStatus: 500, percent: 1}
";
    let rule = |path: &str, filters: &[(&str, &str)]| {
        let filters: String = filters
            .iter()
            .map(|(kind, name)| extension_ref(kind, name))
            .collect();
        format!(
            "  - matches: [{{path: {{type: Exact, value: {path}}}}}]\n    filters:\n{filters}    backendRefs: [{{name: shop-v1}}]\n"
        )
    };
    let rules = [
        rule("/five", &[("RateLimit", "five")]),
        rule(
            "/slow",
            &[("RateLimit", "slow"), ("FaultInjection", "chaos")],
        ),
        rule("/quick", &[("RateLimit", "quick")]),
    ]
    .concat();
    let routes = routes_of(limits, "HTTPRoute", &rules);
    // Longer exact paths go first; look the rules' routes up by name.
    let rule_route = |i: usize| -> &Route {
        let name = format!("r.default:{i}");
        routes
            .iter()
            .find(|r| r.name == name)
            .expect("the rule's route")
    };
    let limit = |i: usize| per_route::<LocalRateLimit>(rule_route(i), LOCAL_RATELIMIT);
    assert_eq!(limit(0), Some(bucket(8, 5, secs(1, 0), "1")));
    assert_eq!(
        limit(1),
        Some(bucket(2, 2, secs(2, 500_000_000), "3")),
        "a bucket of `requests` when `burst` is not given; 2.5s waits 3s"
    );
    assert_eq!(limit(2), Some(bucket(1, 1, secs(0, 50_000_000), "1")));
    let mut filters: Vec<&str> = rule_route(1)
        .typed_per_filter_config
        .keys()
        .map(String::as_str)
        .collect();
    filters.sort_unstable();
    assert_eq!(filters, [FAULT, LOCAL_RATELIMIT]);
    // A map of two configs encodes the same bytes on every translation, so versions hold.
    let bytes = rule_route(1).encode_to_vec();
    for _ in 0..20 {
        let again = routes_of(limits, "HTTPRoute", &rules);
        let slow = again.iter().find(|r| r.name == "r.default:1");
        assert_eq!(slow.map(Message::encode_to_vec), Some(bytes.clone()));
    }
}

#[test]
fn a_rule_whose_reference_names_nothing_answers_500_or_503_for_grpc() {
    let resources = "apiVersion: trellis.dev/v1alpha1
kind: FaultInjection
metadata: {name: chaos}
spec:
  delay: {fixedDelay: 1s}
";
    let rules = format!(
        "  - matches: [{{path: {{value: /fault}}}}]\n    filters:\n{}    backendRefs: [{{name: shop-v1}}]\n  - matches: [{{path: {{value: /limit}}}}]\n    filters:\n{}{}    backendRefs: [{{name: shop-v1}}]\n  - matches: [{{path: {{value: /redirect}}}}]\n    filters:\n    - {{type: RequestRedirect, requestRedirect: {{hostname: example.com}}}}\n{}  - backendRefs: [{{name: shop-v1}}]\n",
        extension_ref("FaultInjection", "nowhere"),
        extension_ref("FaultInjection", "chaos"),
        extension_ref("RateLimit", "nowhere"),
        extension_ref("RateLimit", "gone"),
    );
    let routes = routes_of(resources, "HTTPRoute", &rules);
    let statuses: Vec<Option<u32>> = routes.iter().map(direct_status).collect();
    assert_eq!(
        statuses,
        [Some(500), Some(500), Some(500), None],
        "a missing reference wins over forwarding and redirects"
    );
    assert!(
        routes.iter().all(|r| r.typed_per_filter_config.is_empty()),
        "an answered rule carries no fault or limit"
    );

    let grpc = format!(
        "  - filters:\n{}    backendRefs: [{{name: shop-v1}}]\n",
        extension_ref("RateLimit", "nowhere")
    );
    let routes = routes_of(resources, "GRPCRoute", &grpc);
    assert_eq!(direct_status(&routes[0]), Some(503));
}

/// The HTTP filters of each HTTP connection manager of `listener`, by filter chain.
fn http_filters(listener: &Listener) -> Vec<Vec<HttpFilter>> {
    listener
        .filter_chains
        .iter()
        .chain(&listener.default_filter_chain)
        .flat_map(|c| &c.filters)
        .filter_map(|f| match &f.config_type {
            Some(ConfigType::TypedConfig(any))
                if any.type_url == HttpConnectionManager::type_url() =>
            {
                Some(unpack::<HttpConnectionManager>(any).http_filters)
            }
            _ => None,
        })
        .collect()
}

fn names(filters: &[HttpFilter]) -> Vec<&str> {
    filters.iter().map(|f| f.name.as_str()).collect()
}

fn typed<M: Message + Name + Default>(filter: &HttpFilter) -> M {
    match &filter.config_type {
        Some(http_filter::ConfigType::TypedConfig(any)) => unpack(any),
        other => panic!("expected a typed config, found {other:?}"),
    }
}

const GUARDED: &str = "apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: catalog-v1}
spec:
  selector: {app: catalog, version: v1}
---
apiVersion: trellis.dev/v1alpha1
kind: RateLimit
metadata: {name: guard}
spec:
  requests: 10
  targetRefs: [{kind: Service, name: catalog-v1}]
---
apiVersion: trellis.dev/v1alpha1
kind: RateLimit
metadata: {name: per-route}
spec: {requests: 1}
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-admin}
spec:
  targetRefs: [{kind: Service, name: catalog-v1}]
  action: DENY
  rules: [{to: [{paths: ['/admin*']}]}]
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow-web}
spec:
  targetRefs: [{kind: Service, name: catalog-v1}]
  rules: [{from: [{namespaces: [default]}]}]
";

#[test]
fn outbound_connection_managers_run_fault_then_local_ratelimit_before_the_router() {
    let web = node("web", "v1", 41003);
    let snapshot = translate(&model(GUARDED, std::slice::from_ref(&web)), &web);
    for name in ["outbound|catalog|15101", "http_proxy"] {
        let listener: Listener = decode(&snapshot, TypeUrl::Listener, name);
        let chains = http_filters(&listener);
        assert_eq!(chains.len(), 1, "{name}");
        let filters = &chains[0];
        assert_eq!(names(filters), [FAULT, LOCAL_RATELIMIT, ROUTER], "{name}");
        assert_eq!(typed::<HttpFault>(&filters[0]), HttpFault::default());
        assert_eq!(
            typed::<LocalRateLimit>(&filters[1]),
            LocalRateLimit {
                stat_prefix: "http_local_rate_limiter".to_owned(),
                ..LocalRateLimit::default()
            },
            "no listener-wide bucket: only routes with a config are limited"
        );
    }
    let inbound: Listener = decode(&snapshot, TypeUrl::Listener, "inbound");
    for filters in http_filters(&inbound) {
        assert_eq!(names(&filters), [ROUTER], "web is not targeted");
    }
}

#[test]
fn the_inbound_limit_reaches_only_workloads_of_targeted_services_after_rbac() {
    let v1 = node("catalog", "v1", 41001);
    let v2 = node("catalog", "v2", 41002);
    let mut model = model(GUARDED, &[v1.clone(), v2.clone()]);
    model.trust_bundle = Some("bundle".into());

    let inbound: Listener = decode(&translate(&model, &v1), TypeUrl::Listener, "inbound");
    let chains = http_filters(&inbound);
    assert!(chains.len() >= 2, "plaintext and TLS chains: {chains:?}");
    for filters in &chains {
        assert_eq!(names(filters), [RBAC, RBAC, LOCAL_RATELIMIT, ROUTER]);
        assert_eq!(
            typed::<LocalRateLimit>(&filters[2]),
            bucket(10, 10, secs(1, 0), "1")
        );
    }

    let other: Listener = decode(&translate(&model, &v2), TypeUrl::Listener, "inbound");
    for filters in http_filters(&other) {
        assert_eq!(names(&filters), [ROUTER], "v2 is not in catalog-v1");
    }
}

#[test]
fn the_faults_example_translates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/faults");
    let config = Arc::new(trellis_api::load_dir(&dir).unwrap_or_else(|e| panic!("{e}")));
    let ratings = node("ratings", "v1", 41001);
    let build = || MeshModel::build(config.clone(), [("n", &ratings)].into_iter());
    let model = build();
    let configs = route_configs(&model);
    let per_filter = |service: &str| -> Vec<Vec<String>> {
        let config = configs
            .iter()
            .find(|c| c.name == format!("outbound|{service}.default"))
            .expect(service);
        config.virtual_hosts[0]
            .routes
            .iter()
            .map(|r| r.typed_per_filter_config.keys().cloned().collect())
            .collect()
    };
    assert_eq!(
        per_filter("catalog"),
        [vec![FAULT], vec![LOCAL_RATELIMIT], vec![]],
        "reads, writes, the rest"
    );
    assert_eq!(per_filter("ratings"), [vec![FAULT]]);

    let snapshot = translate(&model, &ratings);
    let inbound: Listener = decode(&snapshot, TypeUrl::Listener, "inbound");
    for filters in http_filters(&inbound) {
        assert_eq!(names(&filters), [LOCAL_RATELIMIT, ROUTER]);
        assert_eq!(
            typed::<LocalRateLimit>(&filters[0]),
            bucket(100, 100, secs(1, 0), "1")
        );
    }
    let again = translate(&build(), &ratings);
    assert_eq!(
        snapshot.version(TypeUrl::RouteConfiguration),
        again.version(TypeUrl::RouteConfiguration)
    );
}

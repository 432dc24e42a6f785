//! BackendPolicy load balancing, hash keys, connection pools, outlier detection and health
//! checks, checked field by field against what Envoy (and Trellis's proxy) reads.

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection,
    circuit_breakers::{Thresholds, thresholds::RetryBudget},
    cluster::{LbConfig, LbPolicy, MaglevLbConfig, RingHashLbConfig},
};
use envoy_types::pb::envoy::config::core::v3::{
    HealthCheck, Metadata, RoutingPriority,
    health_check::{GrpcHealthCheck, HealthChecker, HttpHealthCheck, TcpHealthCheck},
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteConfiguration,
    route::Action,
    route_action::{
        HashPolicy,
        hash_policy::{ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter},
    },
};
use envoy_types::pb::envoy::r#type::v3::{CodecClientType, Int64Range, Percent};
use envoy_types::pb::google::protobuf::{
    Duration as PbDuration, Struct, UInt32Value, UInt64Value, Value, value::Kind,
};

use crate::model::MeshModel;
use crate::translate::cluster::service_cluster;
use crate::translate::route::route_configs;

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

/// The model of `shop`, `shop-v1` and `yaml`, without workloads.
fn model(yaml: &str) -> MeshModel {
    let config = trellis_api::load_str("t.yaml", &format!("{SERVICES}{yaml}"))
        .unwrap_or_else(|e| panic!("{e}"));
    MeshModel::build(Arc::new(config), std::iter::empty())
}

/// A BackendPolicy `name` for Service `service` with `spec` (lines at the indentation of the
/// spec's fields), then `---`.
fn policy(name: &str, service: &str, spec: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: BackendPolicy\nmetadata: {{name: {name}}}\nspec:\n  targetRefs: [{{kind: Service, name: {service}}}]\n{spec}---\n"
    )
}

/// The outbound cluster `outbound|<service>.default` (with and without mTLS alike).
fn cluster(model: &MeshModel, service: &str) -> Cluster {
    let key = format!("{service}.default");
    let svc = model.services.get(&key).expect(&key);
    let [with, without] = [true, false].map(|mtls| service_cluster(model, svc, mtls));
    assert_eq!(with, without, "no mesh CA: mTLS changes nothing");
    with
}

fn peak_ewma_mark() -> Option<Metadata> {
    let value = Value {
        kind: Some(Kind::StringValue("PEAK_EWMA".to_owned())),
    };
    Some(Metadata {
        filter_metadata: [(
            "trellis.dev".to_owned(),
            Struct {
                fields: [("lb_policy".to_owned(), value)].into(),
            },
        )]
        .into(),
        ..Metadata::default()
    })
}

fn secs(seconds: i64) -> Option<PbDuration> {
    Some(PbDuration { seconds, nanos: 0 })
}

fn u32v(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

#[test]
fn every_outbound_cluster_defaults_to_peak_ewma() {
    let model = model(&policy("empty", "shop-v1", "  loadBalancer: {}\n"));
    for service in ["shop", "shop-v1"] {
        let c = cluster(&model, service);
        assert_eq!(c.lb_policy, LbPolicy::LeastRequest as i32, "{service}");
        assert_eq!(c.metadata, peak_ewma_mark(), "{service}");
        assert_eq!(c.lb_config, None);
        assert_eq!(c.outlier_detection, None);
        assert!(c.health_checks.is_empty());
    }
}

#[test]
fn each_load_balancer_type_sets_its_policy_and_config() {
    let ring = |min: Option<u64>, max: Option<u64>| {
        Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
            minimum_ring_size: min.map(|value| UInt64Value { value }),
            maximum_ring_size: max.map(|value| UInt64Value { value }),
            ..RingHashLbConfig::default()
        }))
    };
    let maglev = |size: Option<u64>| {
        Some(LbConfig::MaglevLbConfig(MaglevLbConfig {
            table_size: size.map(|value| UInt64Value { value }),
        }))
    };
    let cases = [
        ("{type: P2CPeakEWMA}", LbPolicy::LeastRequest, None, true),
        ("{type: RoundRobin}", LbPolicy::RoundRobin, None, false),
        ("{type: LeastRequest}", LbPolicy::LeastRequest, None, false),
        ("{type: Random}", LbPolicy::Random, None, false),
        (
            "{type: RingHash, consistentHash: {header: x-user}}",
            LbPolicy::RingHash,
            None,
            false,
        ),
        (
            "{type: RingHash, consistentHash: {header: x-user}, ringHash: {minimumRingSize: 2048, maximumRingSize: 65536}}",
            LbPolicy::RingHash,
            ring(Some(2048), Some(65536)),
            false,
        ),
        (
            "{type: RingHash, consistentHash: {header: x-user}, ringHash: {maximumRingSize: 4096}}",
            LbPolicy::RingHash,
            ring(None, Some(4096)),
            false,
        ),
        (
            "{type: Maglev, consistentHash: {cookie: s}}",
            LbPolicy::Maglev,
            None,
            false,
        ),
        (
            "{type: Maglev, consistentHash: {cookie: s}, maglev: {tableSize: 131}}",
            LbPolicy::Maglev,
            maglev(Some(131)),
            false,
        ),
    ];
    for (lb, policy_type, config, marked) in cases {
        let model = model(&policy("p", "shop", &format!("  loadBalancer: {lb}\n")));
        let c = cluster(&model, "shop");
        assert_eq!(c.lb_policy, policy_type as i32, "{lb}");
        assert_eq!(c.lb_config, config, "{lb}");
        let mark = if marked { peak_ewma_mark() } else { None };
        assert_eq!(c.metadata, mark, "{lb}: only P2CPeakEWMA is marked");
        let other = cluster(&model, "shop-v1");
        assert_eq!(other.metadata, peak_ewma_mark(), "untargeted: the default");
    }
}

fn header(name: &str) -> PolicySpecifier {
    PolicySpecifier::Header(Header {
        header_name: name.to_owned(),
        ..Header::default()
    })
}

fn hashed(specifier: PolicySpecifier) -> Vec<HashPolicy> {
    vec![HashPolicy {
        policy_specifier: Some(specifier),
        terminal: false,
    }]
}

fn hash_of(route: &Route) -> Vec<HashPolicy> {
    match &route.action {
        Some(Action::Route(a)) => a.hash_policy.clone(),
        other => panic!("{}: expected a route action, found {other:?}", route.name),
    }
}

fn config<'a>(configs: &'a [RouteConfiguration], name: &str) -> &'a RouteConfiguration {
    configs.iter().find(|c| c.name == name).expect(name)
}

#[test]
fn routes_to_a_hashed_service_carry_its_hash_key() {
    let services = "\
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: shop-v2}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: by-ip}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: by-query}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: plain}
---
";
    let policies = [
        policy(
            "v1",
            "shop-v1",
            "  loadBalancer: {type: RingHash, consistentHash: {header: X-User}}\n",
        ),
        policy(
            "v2",
            "shop-v2",
            "  loadBalancer: {type: Maglev, consistentHash: {cookie: session}}\n",
        ),
        policy(
            "ip",
            "by-ip",
            "  loadBalancer: {type: RingHash, consistentHash: {sourceIP: true}}\n",
        ),
        policy(
            "query",
            "by-query",
            "  loadBalancer: {type: Maglev, consistentHash: {queryParameter: user}}\n",
        ),
        policy("rr", "plain", "  loadBalancer: {type: RoundRobin}\n"),
    ]
    .concat();
    let route = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{kind: Service, name: shop}]
  rules:
  - matches: [{path: {value: /one}}]
    backendRefs: [{name: shop-v1}]
  - matches: [{path: {value: /weighted}}]
    backendRefs: [{name: plain, weight: 50}, {name: shop-v2, weight: 30}, {name: shop-v1, weight: 20}]
  - matches: [{path: {value: /drained}}]
    backendRefs: [{name: shop-v1, weight: 0}, {name: plain}]
  - matches: [{path: {value: /plain}}]
    backendRefs: [{name: plain}]
";
    let model = model(&format!("{services}{policies}{route}"));
    let configs = route_configs(&model);
    let shop: Vec<(String, Vec<HashPolicy>)> = config(&configs, "outbound|shop.default")
        .virtual_hosts[0]
        .routes
        .iter()
        .map(|r| (r.name.clone(), hash_of(r)))
        .collect();
    let mut shop = shop;
    shop.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        shop,
        [
            ("r.default:0".to_owned(), hashed(header("x-user"))),
            (
                "r.default:1".to_owned(),
                hashed(PolicySpecifier::Cookie(Cookie {
                    name: "session".to_owned(),
                    ..Cookie::default()
                }))
            ),
            ("r.default:2".to_owned(), Vec::new()),
            ("r.default:3".to_owned(), Vec::new()),
        ],
        "the first hashed backend's key; none without a hashed backend"
    );

    // Services without routes get one default route to themselves, hashed the same way.
    let default_hash = |service: &str| {
        let c = config(&configs, &format!("outbound|{service}.default"));
        let routes = &c.virtual_hosts[0].routes;
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].name, "default");
        hash_of(&routes[0])
    };
    assert_eq!(
        default_hash("by-ip"),
        hashed(PolicySpecifier::ConnectionProperties(
            ConnectionProperties { source_ip: true }
        ))
    );
    assert_eq!(
        default_hash("by-query"),
        hashed(PolicySpecifier::QueryParameter(QueryParameter {
            name: "user".to_owned()
        }))
    );
    assert_eq!(default_hash("shop-v1"), hashed(header("x-user")));
    assert_eq!(default_hash("plain"), Vec::new());

    // The HTTP-proxy config has the same routes.
    let proxy = config(&configs, "http_proxy");
    let host = proxy
        .virtual_hosts
        .iter()
        .find(|h| h.name == "by-ip.default")
        .expect("by-ip's virtual host");
    assert_eq!(hash_of(&host.routes[0]), default_hash("by-ip"));
}

fn thresholds(t: Thresholds) -> Option<CircuitBreakers> {
    Some(CircuitBreakers {
        thresholds: vec![t],
        ..CircuitBreakers::default()
    })
}

fn budget(percent: f64, min: u32) -> Option<RetryBudget> {
    Some(RetryBudget {
        budget_percent: Some(Percent { value: percent }),
        min_retry_concurrency: u32v(min),
        ..RetryBudget::default()
    })
}

#[test]
fn connection_pools_join_the_retry_budget_in_one_threshold() {
    let model = model(
        &[
            policy(
                "pool",
                "shop",
                "  connectionPool: {maxConnections: 10, maxPendingRequests: 20, maxRequests: 30}\n",
            ),
            policy(
                "budget",
                "shop",
                "  retryBudget: {budgetPercent: 50, minRetryConcurrency: 4}\n",
            ),
            policy(
                "requests",
                "shop-v1",
                "  connectionPool: {maxRequests: 2}\n",
            ),
        ]
        .concat(),
    );
    assert_eq!(
        cluster(&model, "shop").circuit_breakers,
        thresholds(Thresholds {
            priority: RoutingPriority::Default as i32,
            max_connections: u32v(10),
            max_pending_requests: u32v(20),
            max_requests: u32v(30),
            retry_budget: budget(50.0, 4),
            ..Thresholds::default()
        })
    );
    assert_eq!(
        cluster(&model, "shop-v1").circuit_breakers,
        thresholds(Thresholds {
            priority: RoutingPriority::Default as i32,
            max_requests: u32v(2),
            retry_budget: budget(20.0, 3),
            ..Thresholds::default()
        }),
        "only the limits given, with the default budget"
    );
}

#[test]
fn outlier_detection_enforces_its_detectors_and_never_success_rate() {
    let model = model(
        &[
            policy("defaults", "shop", "  outlierDetection: {}\n"),
            policy(
                "full",
                "shop-v1",
                "  outlierDetection: {consecutive5xx: 3, consecutiveGatewayErrors: 2, interval: 1s, baseEjectionTime: 5s, maxEjectionTime: 1m, maxEjectionPercent: 50}\n",
            ),
        ]
        .concat(),
    );
    let defaults = OutlierDetection {
        consecutive_5xx: u32v(5),
        enforcing_consecutive_5xx: u32v(100),
        enforcing_consecutive_gateway_failure: u32v(0),
        enforcing_success_rate: u32v(0),
        interval: secs(10),
        base_ejection_time: secs(30),
        max_ejection_time: secs(300),
        max_ejection_percent: u32v(10),
        ..OutlierDetection::default()
    };
    assert_eq!(
        cluster(&model, "shop").outlier_detection,
        Some(defaults.clone())
    );
    assert_eq!(
        cluster(&model, "shop-v1").outlier_detection,
        Some(OutlierDetection {
            consecutive_5xx: u32v(3),
            consecutive_gateway_failure: u32v(2),
            enforcing_consecutive_gateway_failure: u32v(100),
            interval: secs(1),
            base_ejection_time: secs(5),
            max_ejection_time: secs(60),
            max_ejection_percent: u32v(50),
            ..defaults
        })
    );
}

#[test]
fn each_health_check_kind_becomes_one_envoy_health_check() {
    let check = |probe: &str| {
        let model = model(&policy("p", "shop", &format!("  healthCheck: {probe}\n")));
        let checks = cluster(&model, "shop").health_checks;
        assert_eq!(checks.len(), 1, "{probe}");
        checks.into_iter().next()
    };
    let defaults = |checker: HealthChecker| {
        Some(HealthCheck {
            timeout: secs(1),
            interval: secs(10),
            unhealthy_threshold: u32v(3),
            healthy_threshold: u32v(1),
            health_checker: Some(checker),
            ..HealthCheck::default()
        })
    };
    assert_eq!(
        check(
            "{interval: 2s, timeout: 500ms, unhealthyThreshold: 2, healthyThreshold: 4, http: {path: /healthz, host: shop.local, expectedStatuses: [200, \"300-399\"]}}"
        ),
        Some(HealthCheck {
            timeout: Some(PbDuration {
                seconds: 0,
                nanos: 500_000_000,
            }),
            interval: secs(2),
            unhealthy_threshold: u32v(2),
            healthy_threshold: u32v(4),
            health_checker: Some(HealthChecker::HttpHealthCheck(HttpHealthCheck {
                path: "/healthz".to_owned(),
                host: "shop.local".to_owned(),
                expected_statuses: vec![
                    Int64Range {
                        start: 200,
                        end: 201,
                    },
                    Int64Range {
                        start: 300,
                        end: 400,
                    },
                ],
                codec_client_type: CodecClientType::Http1 as i32,
                ..HttpHealthCheck::default()
            })),
            ..HealthCheck::default()
        })
    );
    assert_eq!(
        check("{http: {path: /ready}}"),
        defaults(HealthChecker::HttpHealthCheck(HttpHealthCheck {
            path: "/ready".to_owned(),
            codec_client_type: CodecClientType::Http1 as i32,
            ..HttpHealthCheck::default()
        }))
    );
    assert_eq!(
        check("{grpc: {service: shop.v1.Shop}}"),
        defaults(HealthChecker::GrpcHealthCheck(GrpcHealthCheck {
            service_name: "shop.v1.Shop".to_owned(),
            ..GrpcHealthCheck::default()
        }))
    );
    assert_eq!(
        check("{grpc: {}}"),
        defaults(HealthChecker::GrpcHealthCheck(GrpcHealthCheck::default()))
    );
    assert_eq!(
        check("{tcp: {}}"),
        defaults(HealthChecker::TcpHealthCheck(TcpHealthCheck::default()))
    );
}

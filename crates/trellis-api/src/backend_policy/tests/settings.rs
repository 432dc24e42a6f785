//! The settings beyond the retry budget: load balancing, connection limits, outlier detection,
//! health checks and locality failover.

use std::time::Duration;

use super::policy;
use crate::backend_policy::{
    ConnectionPool, ConsistentHash, GrpcHealthCheck, HealthCheck, HttpHealthCheck, LoadBalancer,
    LoadBalancerType, LocalityFailover, Maglev, OutlierDetection, RingHash, StatusRange,
    TcpHealthCheck,
};
use crate::load_str;

const FULL: &str = "  loadBalancer:
    type: RingHash
    consistentHash: {header: X-User}
    ringHash: {minimumRingSize: 2048, maximumRingSize: 4096}
  connectionPool: {maxConnections: 10, maxPendingRequests: 20, maxRequests: 30}
  outlierDetection:
    consecutive5xx: 3
    consecutiveGatewayErrors: 2
    interval: 1s
    baseEjectionTime: 5s
    maxEjectionTime: 1m
    maxEjectionPercent: 50
  healthCheck:
    interval: 2s
    timeout: 500ms
    unhealthyThreshold: 2
    healthyThreshold: 4
    http: {path: /healthz, host: catalog.local, expectedStatuses: [200, \"300-399\", 204-206]}
  localityFailover: {enabled: true}
";

const DEFAULTS: &str = "  loadBalancer: {}
  connectionPool: {}
  outlierDetection: {}
  healthCheck: {tcp: {}}
  localityFailover: {enabled: false}
";

#[test]
fn every_setting_loads_with_its_defaults() {
    let text = format!(
        "{}---\n{}",
        policy("full", FULL),
        policy("defaults", DEFAULTS).replace("name: catalog", "name: web"),
    );
    let set = load_str("b.yaml", &text).unwrap_or_else(|e| panic!("{e}"));

    let full = set.backend_settings("default", "catalog");
    assert_eq!(
        full.load_balancer,
        Some(&LoadBalancer {
            lb_type: LoadBalancerType::RingHash,
            consistent_hash: Some(ConsistentHash {
                header: Some("X-User".into()),
                ..ConsistentHash::default()
            }),
            ring_hash: Some(RingHash {
                minimum_ring_size: Some(2048),
                maximum_ring_size: Some(4096),
            }),
            maglev: None,
        })
    );
    assert_eq!(
        full.connection_pool,
        Some(&ConnectionPool {
            max_connections: Some(10),
            max_pending_requests: Some(20),
            max_requests: Some(30),
        })
    );
    assert_eq!(
        full.outlier_detection,
        Some(&OutlierDetection {
            consecutive_5xx: 3,
            consecutive_gateway_errors: Some(2),
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(5),
            max_ejection_time: Duration::from_secs(60),
            max_ejection_percent: 50,
        })
    );
    let range = |first, last| StatusRange { first, last };
    assert_eq!(
        full.health_check,
        Some(&HealthCheck {
            interval: Duration::from_secs(2),
            timeout: Duration::from_millis(500),
            unhealthy_threshold: 2,
            healthy_threshold: 4,
            http: Some(HttpHealthCheck {
                path: "/healthz".into(),
                host: Some("catalog.local".into()),
                expected_statuses: vec![range(200, 200), range(300, 399), range(204, 206)],
            }),
            grpc: None,
            tcp: None,
        })
    );
    assert!(full.locality_failover_enabled());
    assert_eq!(full.retry_budget, None);

    let defaults = set.backend_settings("default", "web");
    assert_eq!(defaults.load_balancer, Some(&LoadBalancer::default()));
    assert_eq!(
        LoadBalancer::default().lb_type,
        LoadBalancerType::P2cPeakEwma
    );
    assert_eq!(defaults.connection_pool, Some(&ConnectionPool::default()));
    assert_eq!(
        defaults.outlier_detection,
        Some(&OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway_errors: None,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
        })
    );
    assert_eq!(
        defaults.health_check,
        Some(&HealthCheck {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 3,
            healthy_threshold: 1,
            http: None,
            grpc: None,
            tcp: Some(TcpHealthCheck {}),
        })
    );
    assert_eq!(
        defaults.locality_failover,
        Some(&LocalityFailover { enabled: false })
    );
    assert!(!defaults.locality_failover_enabled());
    assert_eq!(
        set.backend_settings("default", "nobody"),
        Default::default()
    );

    let json = serde_json::to_value(&set).expect("serializes");
    let spec = &json["backendPolicies"][0]["spec"];
    assert_eq!(
        spec["loadBalancer"],
        serde_json::json!({"type": "RingHash", "consistentHash": {"header": "X-User"}, "ringHash": {"minimumRingSize": 2048, "maximumRingSize": 4096}})
    );
    assert_eq!(
        spec["healthCheck"]["http"]["expectedStatuses"],
        serde_json::json!([200, "300-399", "204-206"])
    );
    assert_eq!(spec["outlierDetection"]["consecutive5xx"], 3);
    assert_eq!(spec["outlierDetection"]["maxEjectionTime"], "1m");
}

#[test]
fn every_hash_key_and_probe_kind_loads() {
    let cases = [
        (
            "{type: Maglev, consistentHash: {cookie: session}, maglev: {tableSize: 5000011}}",
            ConsistentHash {
                cookie: Some("session".into()),
                ..ConsistentHash::default()
            },
        ),
        (
            "{type: RingHash, consistentHash: {sourceIP: true}}",
            ConsistentHash {
                source_ip: Some(true),
                ..ConsistentHash::default()
            },
        ),
        (
            "{type: Maglev, consistentHash: {queryParameter: user}}",
            ConsistentHash {
                query_parameter: Some("user".into()),
                ..ConsistentHash::default()
            },
        ),
    ];
    for (lb, want) in cases {
        let text = policy("p", &format!("  loadBalancer: {lb}\n"));
        let set = load_str("b.yaml", &text).unwrap_or_else(|e| panic!("{lb}: {e}"));
        let got = set.backend_settings("default", "catalog").load_balancer;
        assert_eq!(got.and_then(|l| l.consistent_hash.as_ref()), Some(&want));
    }
    let maglev = load_str(
        "b.yaml",
        &policy("p", "  loadBalancer: {type: Maglev, consistentHash: {cookie: s}, maglev: {tableSize: 65537}}\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let lb = maglev.backend_settings("default", "catalog").load_balancer;
    assert_eq!(
        lb.and_then(|l| l.maglev),
        Some(Maglev {
            table_size: Some(65537)
        })
    );

    for (probe, want) in [
        (
            "{grpc: {service: shop.v1.Shop}}",
            Some(GrpcHealthCheck {
                service: Some("shop.v1.Shop".into()),
            }),
        ),
        ("{grpc: {}}", Some(GrpcHealthCheck { service: None })),
    ] {
        let text = policy("p", &format!("  healthCheck: {probe}\n"));
        let set = load_str("b.yaml", &text).unwrap_or_else(|e| panic!("{probe}: {e}"));
        let got = set.backend_settings("default", "catalog").health_check;
        assert_eq!(got.map(|h| h.grpc.clone()), Some(want));
    }
    let http = load_str(
        "b.yaml",
        &policy("p", "  healthCheck: {http: {path: /ready}}\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let check = http.backend_settings("default", "catalog").health_check;
    assert_eq!(
        check.and_then(|h| h.http.clone()),
        Some(HttpHealthCheck {
            path: "/ready".into(),
            host: None,
            expected_statuses: Vec::new(),
        })
    );
}

#[test]
fn bad_settings_are_rejected_at_the_field() {
    // (spec lines from line 6, line, column, field, message)
    let cases: &[(&str, usize, usize, &str, &str)] = &[
        (
            "  loadBalancer: {type: Fastest}\n",
            6,
            24,
            "spec.loadBalancer.type",
            "expected one of P2CPeakEWMA, RoundRobin, LeastRequest, Random, RingHash, Maglev, found `Fastest`",
        ),
        (
            "  loadBalancer: {type: RingHash}\n",
            6,
            17,
            "spec.loadBalancer.consistentHash",
            "missing required field `consistentHash` for type RingHash: one of `header`, `cookie`, `sourceIP` or `queryParameter`",
        ),
        (
            "  loadBalancer: {type: RoundRobin, consistentHash: {header: x-user}}\n",
            6,
            52,
            "spec.loadBalancer.consistentHash",
            "`consistentHash` applies to types RingHash and Maglev only, not RoundRobin",
        ),
        (
            "  loadBalancer: {consistentHash: {sourceIP: true}}\n",
            6,
            34,
            "spec.loadBalancer.consistentHash",
            "`consistentHash` applies to types RingHash and Maglev only, not P2CPeakEWMA",
        ),
        (
            "  loadBalancer: {type: Maglev, consistentHash: {}}\n",
            6,
            48,
            "spec.loadBalancer.consistentHash",
            "expected one of `header`, `cookie`, `sourceIP` or `queryParameter`",
        ),
        (
            "  loadBalancer: {type: Maglev, consistentHash: {header: x-user, cookie: session}}\n",
            6,
            73,
            "spec.loadBalancer.consistentHash.cookie",
            "give one of `header`, `cookie`, `sourceIP` and `queryParameter`, not both `header` and `cookie`",
        ),
        (
            "  loadBalancer: {type: RingHash, consistentHash: {header: \"x user\"}}\n",
            6,
            59,
            "spec.loadBalancer.consistentHash.header",
            "expected a header name (letters, digits and !#$%&'*+-.^_`|~), found `x user`",
        ),
        (
            "  loadBalancer: {type: RingHash, consistentHash: {cookie: \"a=b\"}}\n",
            6,
            59,
            "spec.loadBalancer.consistentHash.cookie",
            "expected a cookie name (letters, digits and !#$%&'*+-.^_`|~), found `a=b`",
        ),
        (
            "  loadBalancer: {type: RingHash, consistentHash: {sourceIP: false}}\n",
            6,
            61,
            "spec.loadBalancer.consistentHash.sourceIP",
            "expected `true` (hash on the client's IP); leave `sourceIP` out to hash on something else",
        ),
        (
            "  loadBalancer: {type: RingHash, consistentHash: {queryParameter: \"\"}}\n",
            6,
            67,
            "spec.loadBalancer.consistentHash.queryParameter",
            "expected a query parameter name, found an empty string",
        ),
        (
            "  loadBalancer: {type: RingHash, consistentHash: {host: x}}\n",
            6,
            51,
            "spec.loadBalancer.consistentHash.host",
            "unknown field `host`, expected one of `header`, `cookie`, `sourceIP`, `queryParameter`",
        ),
        (
            "  loadBalancer: {type: RingHash, consistentHash: {header: x}, maglev: {}}\n",
            6,
            71,
            "spec.loadBalancer.maglev",
            "`maglev` applies to type Maglev only, not RingHash",
        ),
        (
            "  loadBalancer: {type: Maglev, consistentHash: {header: x}, ringHash: {}}\n",
            6,
            71,
            "spec.loadBalancer.ringHash",
            "`ringHash` applies to type RingHash only, not Maglev",
        ),
        (
            "  loadBalancer: {type: RingHash, consistentHash: {header: x}, ringHash: {minimumRingSize: 0}}\n",
            6,
            91,
            "spec.loadBalancer.ringHash.minimumRingSize",
            "expected an integer between 1 and 8388608, found 0",
        ),
        (
            "  loadBalancer: {type: RingHash, consistentHash: {header: x}, ringHash: {maximumRingSize: 9000000}}\n",
            6,
            91,
            "spec.loadBalancer.ringHash.maximumRingSize",
            "expected an integer between 1 and 8388608, found 9000000",
        ),
        (
            "  loadBalancer: {type: RingHash, consistentHash: {header: x}, ringHash: {minimumRingSize: 4096, maximumRingSize: 2048}}\n",
            6,
            114,
            "spec.loadBalancer.ringHash.maximumRingSize",
            "expected at least minimumRingSize (4096), found 2048",
        ),
        (
            "  loadBalancer: {type: RingHash, consistentHash: {header: x}, ringHash: {maximumRingSize: 512}}\n",
            6,
            91,
            "spec.loadBalancer.ringHash.maximumRingSize",
            "expected at least minimumRingSize (1024 when not given), found 512",
        ),
        (
            "  loadBalancer: {type: Maglev, consistentHash: {header: x}, maglev: {tableSize: 65536}}\n",
            6,
            81,
            "spec.loadBalancer.maglev.tableSize",
            "expected a prime number such as 65537 or 5000011, found 65536",
        ),
        (
            "  loadBalancer: {type: Maglev, consistentHash: {header: x}, maglev: {tableSize: 5000012}}\n",
            6,
            81,
            "spec.loadBalancer.maglev.tableSize",
            "expected an integer between 2 and 5000011, found 5000012",
        ),
        (
            "  connectionPool: {maxConnections: 0}\n",
            6,
            36,
            "spec.connectionPool.maxConnections",
            "expected an integer between 1 and 4294967295, found 0",
        ),
        (
            "  connectionPool: {maxRequests: -1}\n",
            6,
            33,
            "spec.connectionPool.maxRequests",
            "expected an integer between 1 and 4294967295, found -1",
        ),
        (
            "  connectionPool: {maxRetries: 3}\n",
            6,
            20,
            "spec.connectionPool.maxRetries",
            "unknown field `maxRetries`, expected one of `maxConnections`, `maxPendingRequests`, `maxRequests`",
        ),
        (
            "  outlierDetection: {consecutive5xx: 0}\n",
            6,
            38,
            "spec.outlierDetection.consecutive5xx",
            "expected an integer between 1 and 4294967295, found 0",
        ),
        (
            "  outlierDetection: {consecutiveGatewayErrors: 0}\n",
            6,
            48,
            "spec.outlierDetection.consecutiveGatewayErrors",
            "expected an integer between 1 and 4294967295, found 0",
        ),
        (
            "  outlierDetection: {interval: 0s}\n",
            6,
            32,
            "spec.outlierDetection.interval",
            "expected a positive duration such as `10s`, found `0s`",
        ),
        (
            "  outlierDetection: {interval: 10}\n",
            6,
            32,
            "spec.outlierDetection.interval",
            "expected a duration such as `10s`, `500ms` or `1h30m` (units h, m, s, ms), found `10`",
        ),
        (
            "  outlierDetection: {baseEjectionTime: 0s}\n",
            6,
            40,
            "spec.outlierDetection.baseEjectionTime",
            "expected a positive duration such as `10s`, found `0s`",
        ),
        (
            "  outlierDetection: {baseEjectionTime: 10m}\n",
            6,
            21,
            "spec.outlierDetection.maxEjectionTime",
            "expected at least baseEjectionTime (`10m`), found `5m` (the default): set maxEjectionTime too",
        ),
        (
            "  outlierDetection: {baseEjectionTime: 1m, maxEjectionTime: 30s}\n",
            6,
            61,
            "spec.outlierDetection.maxEjectionTime",
            "expected at least baseEjectionTime (`1m`), found `30s`",
        ),
        (
            "  outlierDetection: {maxEjectionPercent: 101}\n",
            6,
            42,
            "spec.outlierDetection.maxEjectionPercent",
            "expected an integer between 0 and 100, found 101",
        ),
        (
            "  healthCheck: {}\n",
            6,
            16,
            "spec.healthCheck",
            "expected one of `http` (with a `path`), `grpc` or `tcp: {}`",
        ),
        (
            "  healthCheck: {http: {path: /h}, tcp: {}}\n",
            6,
            40,
            "spec.healthCheck.tcp",
            "give one of `http`, `grpc` and `tcp`, not both `http` and `tcp`",
        ),
        (
            "  healthCheck: {http: {path: healthz}}\n",
            6,
            30,
            "spec.healthCheck.http.path",
            "expected a path starting with `/`, found `healthz`",
        ),
        (
            "  healthCheck: {http: {}}\n",
            6,
            23,
            "spec.healthCheck.http.path",
            "missing required field `path`",
        ),
        (
            "  healthCheck: {tcp: {send: ping}}\n",
            6,
            23,
            "spec.healthCheck.tcp.send",
            "unknown field `send`: this mapping takes no fields (write `{}`)",
        ),
        (
            "  healthCheck: {grpc: {service: a, authority: b}}\n",
            6,
            36,
            "spec.healthCheck.grpc.authority",
            "unknown field `authority`, expected one of `service`",
        ),
        (
            "  healthCheck: {timeout: 0s, tcp: {}}\n",
            6,
            26,
            "spec.healthCheck.timeout",
            "expected a positive duration such as `1s`, found `0s`",
        ),
        (
            "  healthCheck: {unhealthyThreshold: 0, tcp: {}}\n",
            6,
            37,
            "spec.healthCheck.unhealthyThreshold",
            "expected an integer between 1 and 4294967295, found 0",
        ),
        (
            "  healthCheck: {http: {path: /h, expectedStatuses: [200, \"300-200\"]}}\n",
            6,
            58,
            "spec.healthCheck.http.expectedStatuses[1]",
            "expected a status from 100 to 599 such as 200, or a range such as \"200-299\", found \"300-200\"",
        ),
        (
            "  healthCheck: {http: {path: /h, expectedStatuses: [99]}}\n",
            6,
            53,
            "spec.healthCheck.http.expectedStatuses[0]",
            "expected a status from 100 to 599 such as 200, or a range such as \"200-299\", found \"99\"",
        ),
        (
            "  healthCheck: {http: {path: /h, expectedStatuses: [2xx]}}\n",
            6,
            53,
            "spec.healthCheck.http.expectedStatuses[0]",
            "expected a status from 100 to 599 such as 200, or a range such as \"200-299\", found \"2xx\"",
        ),
        (
            "  localityFailover: {}\n",
            6,
            21,
            "spec.localityFailover.enabled",
            "missing required field `enabled`",
        ),
        (
            "  localityFailover: {enabled: yes}\n",
            6,
            31,
            "spec.localityFailover.enabled",
            "expected a boolean, found string \"yes\"",
        ),
    ];
    let mut mismatches = Vec::new();
    for (rest, line, column, field, message) in cases {
        let text = policy("p", rest);
        let errors = load_str("b.yaml", &text).expect_err(rest);
        let got: Vec<(usize, usize, &str, &str)> = errors
            .iter()
            .map(|e| (e.line, e.column, e.field.as_str(), e.message.as_str()))
            .collect();
        let want = vec![(*line, *column, *field, *message)];
        if got != want {
            mismatches.push(format!("{rest}  got:  {got:?}\n  want: {want:?}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn a_second_policy_setting_the_same_field_names_both() {
    let settings = [
        (
            "loadBalancer: {type: Random}",
            "a load balancer",
            "loadBalancer",
        ),
        (
            "connectionPool: {maxRequests: 5}",
            "a connection pool",
            "connectionPool",
        ),
        (
            "outlierDetection: {}",
            "outlier detection",
            "outlierDetection",
        ),
        ("healthCheck: {tcp: {}}", "a health check", "healthCheck"),
        (
            "localityFailover: {enabled: true}",
            "locality failover",
            "localityFailover",
        ),
    ];
    for (setting, what, field) in settings {
        let text = format!(
            "{}---\n{}",
            policy("first", &format!("  {setting}\n")),
            policy("second", &format!("  {setting}\n")),
        );
        let errors = load_str("b.yaml", &text).expect_err(setting);
        assert_eq!(
            errors.to_string(),
            format!(
                "b.yaml:12:38: spec.targetRefs[0].name: Service `default/catalog` already has {what} from BackendPolicy `default/first` (b.yaml:5:38); BackendPolicy `default/second` cannot set another (one {field} per Service)"
            )
        );
    }

    // Different settings from different policies combine.
    let text = format!(
        "{}---\n{}---\n{}",
        policy("balance", "  loadBalancer: {type: Random}\n"),
        policy(
            "limits",
            "  connectionPool: {maxRequests: 5}\n  retryBudget: {}\n"
        ),
        policy("failover", "  localityFailover: {enabled: true}\n"),
    );
    let set = load_str("b.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let settings = set.backend_settings("default", "catalog");
    assert_eq!(
        settings.load_balancer.map(|l| l.lb_type),
        Some(LoadBalancerType::Random)
    );
    assert_eq!(
        settings.connection_pool.and_then(|c| c.max_requests),
        Some(5)
    );
    assert!(settings.retry_budget.is_some());
    assert!(settings.locality_failover_enabled());
    assert_eq!(settings.health_check, None);
}

use std::time::Duration;

use super::{GrpcRetryCode, GrpcRouteRetry, HttpRouteRetry};
use crate::load::error_mismatch;
use crate::load_str;

/// An HTTPRoute whose only rule has `retry` (a flow mapping's inside) on line 7.
fn http(retry: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n  parentRefs: [{{kind: Service, name: s}}]\n  rules:\n    - {{backendRefs: [{{name: s}}], retry: {{{retry}}}}}\n"
    )
}

/// The same as a GRPCRoute.
fn grpc(retry: &str) -> String {
    http(retry).replace("kind: HTTPRoute", "kind: GRPCRoute")
}

#[test]
fn http_retries_load_with_the_documented_defaults() {
    let set = load_str("r.yaml", &http("")).unwrap_or_else(|e| panic!("{e}"));
    let retry = set.http_routes[0].spec.rules[0].retry.clone();
    assert_eq!(
        retry,
        Some(HttpRouteRetry {
            codes: vec![],
            attempts: 2,
            backoff: Duration::from_millis(25),
        })
    );
    assert_eq!(retry, Some(HttpRouteRetry::default()));

    let text = http("codes: [500, 503], attempts: 0, backoff: 1s");
    let set = load_str("r.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let rule = &set.http_routes[0].spec.rules[0];
    assert_eq!(
        rule.retry,
        Some(HttpRouteRetry {
            codes: vec![500, 503],
            attempts: 0,
            backoff: Duration::from_secs(1),
        })
    );
    let json = serde_json::to_value(&set).expect("serializes");
    let retry = &json["httpRoutes"][0]["spec"]["rules"][0]["retry"];
    assert_eq!(
        *retry,
        serde_json::json!({"codes": [500, 503], "attempts": 0, "backoff": "1s"})
    );

    let none = load_str("r.yaml", &http("").replace(", retry: {}", "")).expect("valid");
    assert_eq!(none.http_routes[0].spec.rules[0].retry, None);
}

#[test]
fn grpc_retries_default_to_unavailable() {
    let set = load_str("g.yaml", &grpc("")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        set.grpc_routes[0].spec.rules[0].retry,
        Some(GrpcRouteRetry {
            codes: vec![GrpcRetryCode::Unavailable],
            attempts: 2,
            backoff: Duration::from_millis(25),
        })
    );

    let text = grpc(
        "codes: [CANCELLED, DEADLINE_EXCEEDED, INTERNAL, RESOURCE_EXHAUSTED, UNAVAILABLE], attempts: 10",
    );
    let set = load_str("g.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let retry = set.grpc_routes[0].spec.rules[0]
        .retry
        .clone()
        .expect("retry");
    let names: Vec<&str> = retry.codes.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        names,
        [
            "CANCELLED",
            "DEADLINE_EXCEEDED",
            "INTERNAL",
            "RESOURCE_EXHAUSTED",
            "UNAVAILABLE"
        ]
    );
    assert_eq!(retry.attempts, 10);

    let only_resets = load_str("g.yaml", &grpc("codes: []")).expect("valid");
    let retry = only_resets.grpc_routes[0].spec.rules[0].retry.clone();
    assert_eq!(retry.map(|r| r.codes), Some(vec![]));
}

#[test]
fn bad_retries_are_rejected_at_the_value() {
    // (text, column, field, message); every case is on line 7.
    let cases = [
        (
            http("codes: [503, 302]"),
            55,
            "spec.rules[0].retry.codes[1]",
            "expected an integer between 400 and 599, found 302",
        ),
        (
            http("codes: [600]"),
            50,
            "spec.rules[0].retry.codes[0]",
            "expected an integer between 400 and 599, found 600",
        ),
        (
            http("attempts: 11"),
            52,
            "spec.rules[0].retry.attempts",
            "expected an integer between 0 and 10, found 11",
        ),
        (
            http("attempts: -1"),
            52,
            "spec.rules[0].retry.attempts",
            "expected an integer between 0 and 10, found -1",
        ),
        (
            http("backoff: 25"),
            51,
            "spec.rules[0].retry.backoff",
            "expected a duration such as `10s`, `500ms` or `1h30m` (units h, m, s, ms), found `25`",
        ),
        (
            http("backoff: 0s"),
            51,
            "spec.rules[0].retry.backoff",
            "expected a positive duration such as `25ms`, found `0s`",
        ),
        (
            http("perTryTimeout: 1s"),
            42,
            "spec.rules[0].retry.perTryTimeout",
            "unknown field `perTryTimeout`, expected one of `codes`, `attempts`, `backoff`",
        ),
        (
            grpc("codes: [UNAVAILABLE, NOT_FOUND]"),
            63,
            "spec.rules[0].retry.codes[1]",
            "expected one of CANCELLED, DEADLINE_EXCEEDED, INTERNAL, RESOURCE_EXHAUSTED, UNAVAILABLE, found `NOT_FOUND`",
        ),
        (
            grpc("codes: [503]"),
            50,
            "spec.rules[0].retry.codes[0]",
            "expected one of CANCELLED, DEADLINE_EXCEEDED, INTERNAL, RESOURCE_EXHAUSTED, UNAVAILABLE, found `503`",
        ),
        (
            grpc("backoff: 0ms"),
            51,
            "spec.rules[0].retry.backoff",
            "expected a positive duration such as `25ms`, found `0s`",
        ),
    ];
    let mismatches: Vec<String> = cases
        .iter()
        .filter_map(|(text, column, field, message)| {
            error_mismatch("r.yaml", text, (7, *column, field, message))
        })
        .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

use std::time::Duration;

use crate::load::error_mismatch;
use crate::load_str;

/// A RateLimit `name` whose spec continues with `rest` (lines 5 on).
fn limit(name: &str, rest: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: RateLimit\nmetadata: {{name: {name}}}\nspec:\n{rest}"
    )
}

#[test]
fn rate_limits_load_with_defaults() {
    let text = format!(
        "{}---\n{}",
        limit(
            "guard",
            "  requests: 100\n  per: 1m\n  burst: 20\n  targetRefs: [{kind: Service, name: catalog}]\n"
        ),
        limit("route", "  requests: 5\n"),
    );
    let set = load_str("r.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let guard = &set.rate_limits[0].spec;
    assert_eq!(
        (guard.requests, guard.per, guard.burst()),
        (100, Duration::from_secs(60), 20)
    );
    let route = &set.rate_limit("default", "route").expect("route").spec;
    assert_eq!(
        (route.requests, route.per, route.burst, route.burst()),
        (5, Duration::from_secs(1), None, 5),
        "1s and a bucket of `requests` when not given"
    );
    assert!(route.target_refs.is_empty());
    assert_eq!(
        set.service_rate_limit("default", "catalog")
            .map(|r| r.metadata.name.as_str()),
        Some("guard")
    );
    assert!(set.service_rate_limit("default", "web").is_none());
    assert!(set.service_rate_limit("shop", "catalog").is_none());
    let json = serde_json::to_value(&set).expect("serializes");
    assert_eq!(
        json["rateLimits"][1]["spec"],
        serde_json::json!({"requests": 5, "per": "1s"})
    );
}

#[test]
fn bad_rate_limits_are_rejected_at_the_field() {
    // (text, line, column, field, message)
    let cases = [
        (
            limit("r", "  requests: 0\n"),
            5,
            13,
            "spec.requests",
            "expected an integer between 1 and 4294967295, found 0",
        ),
        (
            limit("r", "  requests: -3\n"),
            5,
            13,
            "spec.requests",
            "expected an integer between 1 and 4294967295, found -3",
        ),
        (
            limit("r", "  per: 1s\n"),
            5,
            3,
            "spec.requests",
            "missing required field `requests`",
        ),
        (
            limit("r", "").replace("spec:\n", ""),
            1,
            1,
            "spec.requests",
            "missing required field `requests` (tokens added every `per`, at least 1)",
        ),
        (
            limit("r", "  requests: 5\n  per: 10ms\n"),
            6,
            8,
            "spec.per",
            "expected a duration of at least `50ms` (the shortest refill interval), found `10ms`",
        ),
        (
            limit("r", "  requests: 5\n  per: 0s\n"),
            6,
            8,
            "spec.per",
            "expected a duration of at least `50ms` (the shortest refill interval), found `0s`",
        ),
        (
            limit("r", "  requests: 5\n  per: 1 second\n"),
            6,
            8,
            "spec.per",
            "expected a duration such as `10s`, `500ms` or `1h30m` (units h, m, s, ms), found `1 second`",
        ),
        (
            limit("r", "  requests: 5\n  burst: 0\n"),
            6,
            10,
            "spec.burst",
            "expected an integer between 1 and 4294967295, found 0",
        ),
        (
            limit(
                "r",
                "  requests: 5\n  targetRefs: [{kind: Deployment, name: x}]\n",
            ),
            6,
            23,
            "spec.targetRefs[0].kind",
            "expected `Service` (mesh routes reference Services), found `Deployment`",
        ),
        (
            limit("r", "  requests: 5\n  window: 1s\n"),
            6,
            3,
            "spec.window",
            "unknown field `window`, expected one of `requests`, `per`, `burst`, `targetRefs`",
        ),
    ];
    let mismatches: Vec<String> = cases
        .iter()
        .filter_map(|(text, line, column, field, message)| {
            error_mismatch("r.yaml", text, (*line, *column, field, message))
        })
        .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn a_second_rate_limit_for_a_service_names_both() {
    let targeted = "  requests: 5\n  targetRefs: [{kind: Service, name: catalog}]\n";
    let text = format!(
        "{}---\n{}---\n{}",
        limit("first", targeted),
        limit("untargeted", "  requests: 1\n"),
        limit("second", targeted).replace(
            "[{kind: Service, name: catalog}]",
            "[{kind: Service, name: web}, {kind: Service, name: catalog}]"
        ),
    );
    let errors = load_str("r.yaml", &text).expect_err("two limits for catalog");
    assert_eq!(
        errors.to_string(),
        "r.yaml:19:66: spec.targetRefs[1].name: Service `default/catalog` already has a rate limit from RateLimit `default/first` (r.yaml:6:38); RateLimit `default/second` cannot set another (one RateLimit with targetRefs per Service)"
    );

    // Another namespace's Service of the same name is another Service.
    let other =
        limit("second", targeted).replace("{name: second}", "{name: second, namespace: shop}");
    let set = load_str(
        "r.yaml",
        &format!("{}---\n{other}", limit("first", targeted)),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        set.service_rate_limit("shop", "catalog")
            .map(|r| r.metadata.name.as_str()),
        Some("second")
    );
}

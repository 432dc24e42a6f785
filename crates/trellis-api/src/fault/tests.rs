use std::time::Duration;

use super::{FaultAbort, FaultDelay, GrpcStatusCode};
use crate::load::error_mismatch;
use crate::load_str;
use crate::route::StringMatchType;

/// A FaultInjection `f` whose spec continues with `rest` (lines 5 on).
fn fault(rest: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: FaultInjection\nmetadata: {{name: f}}\nspec:\n{rest}"
    )
}

#[test]
fn fault_injections_load_with_defaults() {
    let full = fault(
        "  delay: {fixedDelay: 100ms, percent: 12.5}\n  abort: {httpStatus: 503}\n  headers: [{name: x-chaos, value: 'on'}]\n",
    );
    let grpc =
        fault("  abort: {grpcStatus: UNAVAILABLE, percent: 0}\n").replace("name: f}", "name: g}");
    let delay_only =
        fault("  delay: {fixedDelay: 1s, percent: 50}\n").replace("name: f}", "name: d}");
    let text = format!("{full}---\n{grpc}---\n{delay_only}");
    let set = load_str("f.yaml", &text).unwrap_or_else(|e| panic!("{e}"));

    let f = &set.fault_injections[0].spec;
    assert_eq!(
        f.delay,
        Some(FaultDelay {
            fixed_delay: Duration::from_millis(100),
            percent: 12.5
        })
    );
    assert_eq!(
        f.abort,
        Some(FaultAbort {
            http_status: Some(503),
            grpc_status: None,
            percent: 100.0
        }),
        "every request when `percent` is not given"
    );
    assert_eq!(f.headers[0].match_type, StringMatchType::Exact);
    assert_eq!(f.headers[0].value, "on");

    let g = set.fault_injection("default", "g").expect("g");
    let abort = g.spec.abort.expect("abort");
    assert_eq!(
        (abort.grpc_status, abort.http_status, abort.percent),
        (Some(GrpcStatusCode::Unavailable), None, 0.0)
    );
    assert_eq!(g.spec.delay, None);
    let d = set.fault_injection("default", "d").expect("d");
    assert_eq!(d.spec.delay.map(|d| d.percent), Some(50.0));
    assert_eq!(d.spec.abort, None);
    assert!(set.fault_injection("other", "d").is_none());

    let json = serde_json::to_value(&set).expect("serializes");
    assert_eq!(
        json["faultInjections"][0]["spec"]["delay"],
        serde_json::json!({"fixedDelay": "100ms", "percent": 12.5})
    );
    assert_eq!(
        json["faultInjections"][1]["spec"]["abort"],
        serde_json::json!({"grpcStatus": "UNAVAILABLE", "percent": 0.0})
    );
}

#[test]
fn grpc_status_codes_have_their_wire_numbers() {
    let codes = [
        (GrpcStatusCode::Cancelled, 1, "CANCELLED"),
        (GrpcStatusCode::InvalidArgument, 3, "INVALID_ARGUMENT"),
        (GrpcStatusCode::ResourceExhausted, 8, "RESOURCE_EXHAUSTED"),
        (GrpcStatusCode::Unavailable, 14, "UNAVAILABLE"),
        (GrpcStatusCode::Unauthenticated, 16, "UNAUTHENTICATED"),
    ];
    for (code, number, name) in codes {
        assert_eq!((code.code(), code.to_string().as_str()), (number, name));
    }
}

#[test]
fn bad_fault_injections_are_rejected_at_the_field() {
    // (text, line, column, field, message)
    let cases = [
        (
            fault("  delay: {fixedDelay: 0s}\n"),
            5,
            23,
            "spec.delay.fixedDelay",
            "expected a positive duration such as `100ms`, found `0s`",
        ),
        (
            fault("  delay: {fixedDelay: 10sec}\n"),
            5,
            23,
            "spec.delay.fixedDelay",
            "expected a duration such as `10s`, `500ms` or `1h30m` (units h, m, s, ms), found `10sec`",
        ),
        (
            fault("  delay: {percent: 5}\n"),
            5,
            10,
            "spec.delay.fixedDelay",
            "missing required field `fixedDelay`",
        ),
        (
            fault("  delay: {fixedDelay: 1s, percent: 100.5}\n"),
            5,
            36,
            "spec.delay.percent",
            "expected a percentage between 0 and 100, found 100.5",
        ),
        (
            fault("  delay: {fixedDelay: 1s, percent: -1}\n"),
            5,
            36,
            "spec.delay.percent",
            "expected a percentage between 0 and 100, found -1",
        ),
        (
            fault("  abort: {httpStatus: 503, percent: .nan}\n"),
            5,
            37,
            "spec.abort.percent",
            "expected a percentage between 0 and 100, found NaN",
        ),
        (
            fault("  abort: {httpStatus: 600}\n"),
            5,
            23,
            "spec.abort.httpStatus",
            "expected an integer between 200 and 599, found 600",
        ),
        (
            fault("  abort: {httpStatus: 199}\n"),
            5,
            23,
            "spec.abort.httpStatus",
            "expected an integer between 200 and 599, found 199",
        ),
        (
            fault("  abort: {grpcStatus: OK}\n"),
            5,
            23,
            "spec.abort.grpcStatus",
            "expected one of CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS, UNAUTHENTICATED, found `OK`",
        ),
        (
            fault("  abort: {httpStatus: 503, grpcStatus: INTERNAL}\n"),
            5,
            40,
            "spec.abort.grpcStatus",
            "give `httpStatus` or `grpcStatus`, not both",
        ),
        (
            fault("  abort: {percent: 10}\n"),
            5,
            10,
            "spec.abort",
            "expected `httpStatus` (200 to 599) or `grpcStatus` (a gRPC code name such as UNAVAILABLE)",
        ),
        (
            fault("  headers: [{name: x-chaos, value: 'on'}]\n"),
            5,
            3,
            "spec",
            "expected at least one of `delay` and `abort`",
        ),
        (
            fault("  delay: {fixedDelay: 1s}\n  headers: [{name: 'x y', value: v}]\n"),
            6,
            20,
            "spec.headers[0].name",
            "expected a header name (letters, digits and !#$%&'*+-.^_`|~), found `x y`",
        ),
        (
            fault(
                "  delay: {fixedDelay: 1s}\n  headers: [{name: x, type: RegularExpression, value: 'a('}]\n",
            ),
            6,
            55,
            "spec.headers[0].value",
            "expected a valid regular expression, found `a(`: unclosed group",
        ),
        (
            fault("  delay: {fixedDelay: 1s}\n  match: {}\n"),
            6,
            3,
            "spec.match",
            "unknown field `match`, expected one of `delay`, `abort`, `headers`",
        ),
    ];
    let mismatches: Vec<String> = cases
        .iter()
        .filter_map(|(text, line, column, field, message)| {
            error_mismatch("f.yaml", text, (*line, *column, field, message))
        })
        .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

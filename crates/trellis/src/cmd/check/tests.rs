use serde_json::json;

use super::*;

const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn at(from_now: u64) -> u64 {
    1_800_000_000 + from_now
}

/// A healthy mesh: two workloads with fresh certificates, in-sync proxies, an endpoint per
/// Service and one accepted route.
fn healthy() -> Answers {
    let ok = |t: &str| json!({"type": t, "status": "True", "reason": t, "message": "fine"});
    Answers {
        readyz: Ok(()),
        config: Ok(json!({"generation": 3, "errors": []})),
        identity: Ok(json!({
            "roots": [{"fingerprint": "ab12", "state": "Active",
                       "not_before_unix": at(0) - 10 * DAY, "not_after_unix": at(355 * DAY)}],
            "issued": [
                {"identity": "spiffe://cluster.local/ns/default/sa/web", "not_after_unix": at(2 * HOUR)},
                {"identity": "spiffe://cluster.local/ns/default/sa/web", "not_after_unix": at(20 * HOUR)},
                {"identity": "spiffe://cluster.local/ns/default/sa/api", "not_after_unix": at(20 * HOUR)},
            ],
        })),
        workloads: Ok(json!([
            {"identity": "spiffe://cluster.local/ns/default/sa/web"},
            {"identity": "spiffe://cluster.local/ns/default/sa/api"},
            {"identity": "spiffe://cluster.local/ns/default/sa/api"},
        ])),
        proxies: Ok(json!([
            {"node_id": "web-1", "service": "web", "synced": true,
             "acked": {"cds": "2", "lds": "1"}, "current": {"cds": "2", "lds": "1"},
             // A NACK of a version since replaced is history.
             "last_nack": {"type": "cds", "version": "1", "error": "old"}},
            {"node_id": "api-1", "service": "api", "synced": true,
             "acked": {"cds": "2"}, "current": {"cds": "2"}, "last_nack": null},
        ])),
        services: Ok(json!([
            {"name": "web", "namespace": "default", "endpoints": [{"address": "127.0.0.1:1"}]},
            {"name": "api", "namespace": "default", "endpoints": [{"address": "127.0.0.1:2"}]},
        ])),
        routes: Ok(json!([
            {"kind": "HTTPRoute", "name": "split", "namespace": "default",
             "parents": [{"conditions": [ok("Accepted"), ok("ResolvedRefs")]}]},
        ])),
    }
}

#[test]
fn a_healthy_mesh_passes_every_check() {
    let checks = evaluate(&healthy(), now());
    assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
    assert_eq!(
        render(&checks),
        "\
control plane
-------------
√ control plane is ready
√ config loaded without errors (generation 3)

identity
--------
√ the CA has an active root that is not near expiry (expires in 355d)
√ workload certificates are not near expiry (2 of 2 identities have one)

proxies
-------
√ every connected proxy runs the current config (2 proxies connected)
√ every connected proxy can honour the policies that reach it

services and routes
-------------------
√ every Service has at least one endpoint (2 services)
√ every route is Accepted with all references resolved (1 route)

Status check results are √
"
    );
}

#[test]
fn each_problem_fails_its_check_with_the_offenders_and_a_hint() {
    let mut answers = healthy();
    answers.readyz = Err("GET /readyz: HTTP 503: loading config".to_owned());
    answers.config =
        Ok(json!({"generation": 3, "errors": ["routes.yaml:7:5: spec.rules[0]: bad"]}));
    answers.identity = Ok(json!({
        "roots": [{"fingerprint": "ab12", "state": "Active",
                   "not_before_unix": at(0) - 300 * DAY, "not_after_unix": at(5 * DAY)}],
        "issued": [{"identity": "spiffe://cluster.local/ns/default/sa/web", "not_after_unix": at(60)}],
    }));
    answers.proxies = Ok(json!([
        {"node_id": "web-1", "service": "web", "synced": false,
         "acked": {"cds": "1", "lds": "1"}, "current": {"cds": "2", "lds": "1"},
         "last_nack": {"type": "cds", "version": "2", "error": "cluster \"x\": unsupported"}},
        {"node_id": "api-1", "service": "api", "synced": false,
         "acked": {"cds": "1", "eds": "4"}, "current": {"cds": "2", "eds": "5"}, "last_nack": null},
        {"node_id": "shop-grpc", "service": "shop", "synced": true, "client": "grpc",
         "acked": {}, "current": {}, "last_nack": null,
         "unsupported": ["HTTPRoute/split.default rule 1: RequestMirror is not applied"]},
    ]));
    answers.services = Ok(json!([
        {"name": "web", "namespace": "default", "endpoints": [{"address": "127.0.0.1:1"}]},
        {"name": "lonely", "namespace": "default", "endpoints": []},
    ]));
    answers.routes = Ok(json!([
        {"kind": "HTTPRoute", "name": "split", "namespace": "default", "parents": [
            {"conditions": [
                {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "ok"},
                {"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound",
                 "message": "Services not found: ghost.default (spec.rules[0].backendRefs[0])"},
            ]},
        ]},
    ]));
    let checks = evaluate(&answers, now());
    assert!(checks.iter().all(|c| !c.ok || c.warning), "{checks:#?}");
    assert!(checks.iter().all(|c| c.hint.is_some()));
    let details: Vec<&[String]> = checks.iter().map(|c| c.details.as_slice()).collect();
    assert_eq!(
        details,
        [
            &["GET /readyz: HTTP 503: loading config".to_owned()][..],
            &["routes.yaml:7:5: spec.rules[0]: bad".to_owned()],
            &["root ab12 expires in 5d".to_owned()],
            &["spiffe://cluster.local/ns/default/sa/web: newest certificate expires in 60s".to_owned()],
            &[
                "web-1 (web) rejected the current cds: cluster \"x\": unsupported".to_owned(),
                "api-1 (api) has not acknowledged the current cds, eds".to_owned(),
            ],
            &["shop-grpc (grpc): HTTPRoute/split.default rule 1: RequestMirror is not applied".to_owned()],
            &["lonely.default has no endpoints".to_owned()],
            &["HTTPRoute default/split: ResolvedRefs BackendNotFound: Services not found: ghost.default (spec.rules[0].backendRefs[0])".to_owned()],
        ]
    );
    let text = render(&checks);
    assert!(text.contains("\n× every Service has at least one endpoint\n    lonely.default has no endpoints\n    hint: start a workload"), "{text}");
    assert!(
        text.contains(
            "\n‼ every connected proxy can honour the policies that reach it: 1 proxy cannot\n"
        ),
        "{text}"
    );
    assert!(text.ends_with("\nStatus check results are ×\n"), "{text}");
}

#[test]
fn a_root_in_the_last_quarter_of_a_short_lifetime_is_near_expiry() {
    let root = |left: u64| {
        Ok(json!({"roots": [{"fingerprint": "r", "state": "Active",
            "not_before_unix": at(0) - (8 * DAY - left), "not_after_unix": at(left)}], "issued": []}))
    };
    assert!(super::root(&root(3 * DAY), now()).ok, "3 of 8 days left");
    assert!(!super::root(&root(DAY), now()).ok, "1 of 8 days left");
    let retiring_only = Ok(json!({"roots": [{"state": "Retiring"}], "issued": []}));
    assert!(!super::root(&retiring_only, now()).ok);
}

#[test]
fn workloads_without_certificates_are_plaintext_and_pass() {
    let mut answers = healthy();
    answers.identity = Ok(json!({"roots": [], "issued": []}));
    let check = svids(&answers.identity, &answers.workloads, now());
    assert!(check.ok);
    assert_eq!(
        check.text,
        "workload certificates are not near expiry (0 of 2 identities have one; 2 without one run plaintext)"
    );
}

#[test]
fn an_unreadable_endpoint_fails_its_checks_only() {
    let mut answers = healthy();
    answers.routes = Err("GET /api/routes: HTTP 404: ".to_owned());
    let checks = evaluate(&answers, now());
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.text.as_str())
        .collect();
    assert_eq!(
        failed,
        ["every route is Accepted with all references resolved: the admin API could not be read"]
    );
}

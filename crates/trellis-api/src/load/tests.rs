use std::time::Duration;

use super::*;
use crate::route::{HttpMethod, PathMatchType, StringMatchType};
use crate::service::Protocol;

const ROUTE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: catalog
spec:
  parentRefs:
    - kind: Service
      name: catalog
  rules:
    - backendRefs:
        - name: catalog-v1
          weight: 90
        - name: catalog-v2
          weight: 10
";

#[test]
fn valid_documents_load_with_defaults() {
    let text = format!(
        "{ROUTE}---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata:
  name: web
  namespace: shop
  labels: {{tier: front}}
spec:
  ports:
    - port: 8080
    - name: admin
      port: 9000
      protocol: TCP
  endpoints:
    - address: 10.0.0.1:8080
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata:
  name: bare
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: rpc
spec:
  parentRefs: [{{kind: Service, name: catalog, port: 9090}}]
  rules:
    - matches:
        - method: {{service: shop.v1.Catalog}}
      backendRefs: [{{name: catalog-v2}}]
---
"
    );
    let set = load_str("all.yaml", &text).expect("valid");

    let route = &set.http_routes[0];
    assert_eq!(route.metadata.key(), "catalog.default");
    let rule = &route.spec.rules[0];
    assert_eq!(rule.matches.len(), 1);
    assert_eq!(rule.matches[0].path.match_type, PathMatchType::PathPrefix);
    assert_eq!(rule.matches[0].path.value, "/");
    assert_eq!(rule.matches[0].method, None);
    let weights: Vec<u32> = rule.backend_refs.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [90, 10]);
    assert_eq!(rule.backend_refs[0].kind, "Service");
    assert_eq!(rule.backend_refs[0].namespace_or("default"), "default");
    assert_eq!(rule.timeouts, Default::default());
    assert_eq!(route.spec.parent_refs[0].group, "");

    let web = set.service("shop", "web").expect("web");
    assert_eq!(
        web.metadata.labels.get("tier").map(String::as_str),
        Some("front")
    );
    assert_eq!(web.protocol_of_port(8080), Some(Protocol::Http));
    assert_eq!(web.protocol_of_port(9000), Some(Protocol::Tcp));
    assert_eq!(web.protocol_of_port(1), None);
    assert_eq!(web.spec.selector, None);
    assert_eq!(web.spec.endpoints[0].weight, 1);
    assert_eq!(web.spec.endpoints[0].locality, None);

    let bare = set.service("default", "bare").expect("bare");
    assert_eq!(bare.spec, Default::default());

    let grpc = &set.grpc_routes[0];
    let m = grpc.spec.rules[0].matches[0]
        .method
        .as_ref()
        .expect("method");
    assert_eq!(m.match_type, StringMatchType::Exact);
    assert_eq!(m.method, None);
    assert_eq!(grpc.spec.parent_refs[0].port, Some(9090));
}

#[test]
fn http_route_matches_and_timeouts() {
    let text = "\
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{kind: Service, name: s}]
  rules:
    - matches:
        - path: {type: Exact, value: /login}
          method: POST
          headers: [{name: x-user, value: 'a.*', type: RegularExpression}]
          queryParams: [{name: debug, value: '1'}]
        - path: {value: /api}
      timeouts: {request: 1h30m, backendRequest: 500ms}
";
    let set = load_str("r.yaml", text).expect("valid");
    let rule = &set.http_routes[0].spec.rules[0];
    let m = &rule.matches[0];
    assert_eq!(
        (m.path.match_type, m.path.value.as_str()),
        (PathMatchType::Exact, "/login")
    );
    assert_eq!(m.method, Some(HttpMethod::Post));
    assert_eq!(m.headers[0].match_type, StringMatchType::RegularExpression);
    assert_eq!(m.query_params[0].match_type, StringMatchType::Exact);
    assert_eq!(rule.matches[1].path.match_type, PathMatchType::PathPrefix);
    assert_eq!(rule.timeouts.request, Some(Duration::from_secs(5400)));
    assert_eq!(
        rule.timeouts.backend_request,
        Some(Duration::from_millis(500))
    );

    let json = serde_json::to_value(&set).expect("serializes");
    assert_eq!(
        json["httpRoutes"][0]["spec"]["rules"][0]["timeouts"]["request"],
        "1h30m"
    );
    assert_eq!(
        json["httpRoutes"][0]["spec"]["rules"][0]["matches"][0]["method"],
        "POST"
    );
}

/// A route document with `line` spliced in at the backendRefs[1] position (line 14).
fn route_with(spliced: &str) -> String {
    ROUTE.replace("          weight: 10\n", spliced)
}

fn service_with(spec: &str) -> String {
    format!("apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata:\n  name: db\nspec:\n{spec}")
}

#[test]
fn invalid_documents_are_rejected_at_the_right_place() {
    // (text, line, column, field, message)
    let cases: Vec<(String, usize, usize, &str, &str)> = vec![
        (
            route_with("          weigth: 10\n"),
            14, 11, "spec.rules[0].backendRefs[1].weigth",
            "unknown field `weigth`, expected one of `group`, `kind`, `name`, `namespace`, `port`, `weight`, `filters` (did you mean `weight`?)",
        ),
        (
            route_with("          weight: -1\n"),
            14, 19, "spec.rules[0].backendRefs[1].weight",
            "expected an integer between 0 and 1000000, found -1",
        ),
        (
            route_with("          weight: 2000000\n"),
            14, 19, "spec.rules[0].backendRefs[1].weight",
            "expected an integer between 0 and 1000000, found 2000000",
        ),
        (
            ROUTE.replace("kind: HTTPRoute", "kind: HttpRoute"),
            2, 7, "kind",
            "unknown kind `HttpRoute`, expected one of AuthorizationPolicy, BackendPolicy, FaultInjection, MeshConfig, RateLimit, Service, HTTPRoute, GRPCRoute",
        ),
        (
            ROUTE.replace("k8s.io/v1\n", "k8s.io/v1alpha2\n"),
            1, 13, "apiVersion",
            "expected gateway.networking.k8s.io/v1 or gateway.networking.k8s.io/v1beta1 for kind HTTPRoute, found `gateway.networking.k8s.io/v1alpha2`",
        ),
        (
            ROUTE.replace("    - backendRefs:", "    - matches: [{path: {type: RegularExpression, value: '/a(b'}}]\n      backendRefs:"),
            10, 57, "spec.rules[0].matches[0].path.value",
            "expected a valid regular expression, found `/a(b`: unclosed group",
        ),
        (
            ROUTE.replace("    - backendRefs:", "    - matches:\n        - path:\n            value: api\n      backendRefs:"),
            12, 20, "spec.rules[0].matches[0].path.value",
            "expected a path starting with '/', found `api`",
        ),
        (
            ROUTE.replace("    - kind: Service", "    - kind: Gateway"),
            7, 13, "spec.parentRefs[0].kind",
            "expected `Service` (mesh routes reference Services), found `Gateway`",
        ),
        (
            ROUTE.replace("    - kind: Service\n      name", "    - name"),
            7, 7, "spec.parentRefs[0].kind",
            "missing required field `kind`; expected `Service` (mesh routes reference Services)",
        ),
        (
            ROUTE.replace("    - backendRefs:", "    - timeouts: {request: 10sec}\n      backendRefs:"),
            10, 27, "spec.rules[0].timeouts.request",
            "expected a duration such as `10s`, `500ms` or `1h30m` (units h, m, s, ms), found `10sec`",
        ),
        (
            ROUTE.replace("    - backendRefs:", "    - matches: [{path: {type: Prefix}}]\n      backendRefs:"),
            10, 31, "spec.rules[0].matches[0].path.type",
            "expected one of Exact, PathPrefix, RegularExpression, found `Prefix`",
        ),
        (
            ROUTE.replace("    - backendRefs:", "    - matches: [{method: get}]\n      backendRefs:"),
            10, 26, "spec.rules[0].matches[0].method",
            "expected one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH, found `get`",
        ),
        (
            service_with("  endpoints:\n    - address: db.local:5432\n"),
            7, 16, "spec.endpoints[0].address",
            "expected an IP:PORT address such as `10.0.0.5:5432` or `[::1]:5432`, found `db.local:5432`",
        ),
        (
            service_with("  endpoints:\n    - address: 10.0.0.1:5432\n      weight: 0\n"),
            8, 15, "spec.endpoints[0].weight",
            "expected an integer between 1 and 128, found 0",
        ),
        (
            service_with("  ports: [{port: 70000}]\n"),
            6, 18, "spec.ports[0].port",
            "expected an integer between 1 and 65535, found 70000",
        ),
        (
            service_with("  ports: [{port: 80, protocol: UDP}]\n"),
            6, 32, "spec.ports[0].protocol",
            "expected one of HTTP, HTTP2, GRPC, TCP, found `UDP`",
        ),
        (
            service_with("  selector: {}\n"),
            6, 13, "spec.selector",
            "expected at least one label; leave `selector` out to select workloads by service name",
        ),
        (
            ROUTE.replace("  name: catalog\nspec", "  name: Catalog\nspec"),
            4, 9, "metadata.name",
            "expected a DNS subdomain (lower-case letters, digits, '-' and '.'), found `Catalog`",
        ),
        (
            format!("{ROUTE}  extra: 1\n"),
            15, 3, "spec.extra",
            "unknown field `extra`, expected one of `parentRefs`, `rules`",
        ),
        (
            ROUTE.replace("spec:\n  parentRefs:\n    - kind: Service\n      name: catalog\n", "spec:\n"),
            6, 3, "spec.parentRefs",
            "expected at least one parentRef: a mesh route attaches to a Service (kind: Service)",
        ),
        (
            ROUTE.replace("  rules:\n", "  rules:\n    - matches: [{method: {type: Exact}}]\n"),
            10, 26, "spec.rules[0].matches[0].method",
            "expected one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH, found a mapping",
        ),
        (
            route_with("          weight: [10\n"),
            14, 19, "",
            "invalid YAML: unclosed bracket '['",
        ),
        (
            "- a\n- b\n".to_owned(),
            1, 1, "",
            "expected a mapping with apiVersion, kind, metadata and spec",
        ),
    ];
    // Every case is checked before failing, so one run shows every mismatch.
    let mut mismatches = Vec::new();
    for (text, line, column, field, message) in &cases {
        let errors = load_str("routes.yaml", text).expect_err(text);
        let got: Vec<(usize, usize, &str, &str)> = errors
            .iter()
            .map(|e| (e.line, e.column, e.field.as_str(), e.message.as_str()))
            .collect();
        let want = vec![(*line, *column, *field, *message)];
        if got != want || errors.0[0].file != "routes.yaml" {
            mismatches.push(format!("{text}\n  got:  {got:?}\n  want: {want:?}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn grpc_method_matches_are_checked() {
    let grpc = |matches: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: g}}\nspec:\n  parentRefs: [{{kind: Service, name: s}}]\n  rules:\n    - matches: [{matches}]\n"
        )
    };
    let cases = [
        (
            "{method: {type: Exact}}",
            "spec.rules[0].matches[0].method",
            "expected at least one of `service` and `method`",
        ),
        (
            "{method: {service: 'a/b'}}",
            "spec.rules[0].matches[0].method.service",
            "expected a service name such as `shop.v1.Catalog`, found `a/b`",
        ),
        (
            "{method: {type: RegularExpression, method: 'Get(('}}",
            "spec.rules[0].matches[0].method.method",
            "expected a valid regular expression, found `Get((`: unclosed group",
        ),
        (
            "{headers: [{name: 'bad name', value: x}]}",
            "spec.rules[0].matches[0].headers[0].name",
            "expected a header name (letters, digits and !#$%&'*+-.^_`|~), found `bad name`",
        ),
    ];
    for (m, field, message) in cases {
        let errors = load_str("g.yaml", &grpc(m)).expect_err(m);
        let got: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(got, vec![(field, message)], "{m}");
        assert_eq!(errors.0[0].line, 7, "{m}");
    }
}

#[test]
fn an_error_in_the_third_document_has_its_file_line() {
    let bad = route_with("          weight: -5\n");
    let text = format!(
        "{ROUTE}---\n{}---\n{bad}",
        service_with("  ports: [{port: 80}]\n")
    );
    let errors = load_str("routes.yaml", &text).expect_err("invalid");
    // ROUTE is 14 lines, the separator 1, the Service 6, the separator 1: the third document
    // starts on line 23 and its weight is on its line 14.
    assert_eq!(
        errors.to_string(),
        "routes.yaml:36:19: spec.rules[0].backendRefs[1].weight: expected an integer between 0 and 1000000, found -5"
    );
}

#[test]
fn errors_from_every_document_are_reported() {
    let text = format!(
        "{}---\n{}---\n{}",
        route_with("          weight: -5\n"),
        service_with("  endpoints: [{address: nowhere}]\n"),
        ROUTE.replace("kind: HTTPRoute", "kind: Gateway"),
    );
    let errors = load_str("all.yaml", &text).expect_err("invalid");
    let lines: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.field.as_str())).collect();
    assert_eq!(
        lines,
        vec![
            (14, "spec.rules[0].backendRefs[1].weight"),
            (21, "spec.endpoints[0].address"),
            (24, "kind"),
        ]
    );
}

#[test]
fn duplicate_names_across_files_point_at_the_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.yaml"), ROUTE).expect("write");
    std::fs::write(dir.path().join("b.yml"), format!("# again\n{ROUTE}")).expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").expect("write");
    let errors = load_dir(dir.path()).expect_err("duplicate");
    assert_eq!(errors.len(), 1, "{errors}");
    let e = &errors.0[0];
    let a = dir.path().join("a.yaml").display().to_string();
    assert_eq!(e.file, dir.path().join("b.yml").display().to_string());
    assert_eq!(
        (e.line, e.column, e.field.as_str()),
        (5, 9, "metadata.name")
    );
    assert_eq!(
        e.message,
        format!(
            "duplicate HTTPRoute `default/catalog`, first defined at {a}:4:9; names must be unique per kind and namespace"
        )
    );

    // The same name in another namespace or of another kind is not a duplicate.
    let other = ROUTE.replace(
        "  name: catalog\nspec",
        "  name: catalog\n  namespace: other\nspec",
    );
    std::fs::write(dir.path().join("b.yml"), other).expect("write");
    std::fs::write(
        dir.path().join("c.yaml"),
        service_with("  ports: [{port: 80}]\n").replace("name: db", "name: catalog"),
    )
    .expect("write");
    let set = load_dir(dir.path()).expect("valid");
    assert_eq!((set.http_routes.len(), set.services.len()), (2, 1));
}

#[test]
fn unreadable_dir_is_an_error() {
    let errors = load_dir(Path::new("/nonexistent/trellis")).expect_err("missing");
    assert_eq!(errors.0[0].line, 0);
    assert!(
        errors
            .to_string()
            .starts_with("/nonexistent/trellis: cannot read the config directory")
    );
}

#[test]
fn examples_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    // Every directory loads, including ones added without a check of their own below.
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("examples dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in &dirs {
        load_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
    assert!(dirs.len() >= 7, "{dirs:?}");
    let canary = load_dir(&root.join("canary")).unwrap_or_else(|e| panic!("{e}"));
    let mut names: Vec<&str> = canary
        .services
        .iter()
        .map(|s| s.metadata.name.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["catalog", "catalog-v1", "catalog-v2", "web"]);
    let v2 = canary.service("default", "catalog-v2").expect("catalog-v2");
    let selector = v2.spec.selector.clone().unwrap_or_default();
    assert_eq!(selector.get("version").map(String::as_str), Some("v2"));
    assert_eq!(canary.http_routes[0].spec.parent_refs[0].name, "catalog");
    let split: Vec<(&str, u32)> = canary.http_routes[0].spec.rules[0]
        .backend_refs
        .iter()
        .map(|b| (b.name.as_str(), b.weight))
        .collect();
    assert_eq!(split, [("catalog-v1", 90), ("catalog-v2", 10)]);

    let authz = load_dir(&root.join("authz")).unwrap_or_else(|e| panic!("{e}"));
    assert!(authz.mesh_config().default_deny);
    assert_eq!(authz.mesh_config().mtls.mode, crate::MtlsMode::Strict);
    assert_eq!(authz.authorization_policies.len(), 2);
    assert!(authz.authorization_policies[0].targets("default", "catalog"));

    let routing = load_dir(&root.join("routing")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (routing.http_routes.len(), routing.grpc_routes.len()),
        (2, 2)
    );
    let filters = &routing.http_routes[0];
    assert_eq!(filters.metadata.name, "web-filters");
    let types: std::collections::HashSet<_> = filters
        .spec
        .rules
        .iter()
        .flat_map(|r| &r.filters)
        .map(|f| f.filter_type)
        .collect();
    assert_eq!(types.len(), 5, "every supported filter type: {types:?}");

    let resilience = load_dir(&root.join("resilience")).unwrap_or_else(|e| panic!("{e}"));
    let reads = &resilience.http_routes[0].spec.rules[0];
    let retry = reads.retry.clone().expect("reads retry");
    assert_eq!((retry.codes, retry.attempts), (vec![502, 503, 504], 3));
    assert_eq!(
        reads.timeouts.backend_request,
        Some(Duration::from_millis(500))
    );
    let writes = resilience.http_routes[0].spec.rules[1].retry.clone();
    assert_eq!(writes, Some(crate::HttpRouteRetry::default()));
    let grpc = resilience.grpc_routes[0].spec.rules[0].retry.clone();
    assert_eq!(grpc.map(|r| r.codes.len()), Some(2));
    let budget = resilience
        .retry_budget("default", "catalog")
        .expect("budget");
    assert_eq!(
        (budget.budget_percent, budget.min_retry_concurrency),
        (10.0, 5)
    );
    assert_eq!(resilience.retry_budget("default", "ratings"), None);
    let catalog = resilience.backend_settings("default", "catalog");
    assert_eq!(
        catalog.connection_pool.and_then(|p| p.max_requests),
        Some(100)
    );
    assert_eq!(
        catalog.outlier_detection.map(|o| o.max_ejection_time),
        Some(Duration::from_secs(300))
    );
    let probe = catalog.health_check.and_then(|h| h.http.as_ref());
    assert_eq!(probe.map(|h| h.path.as_str()), Some("/healthz"));
    assert!(catalog.locality_failover_enabled());
    let ratings = resilience.backend_settings("default", "ratings");
    let lb = ratings.load_balancer.expect("ratings balances");
    assert_eq!(lb.lb_type, crate::LoadBalancerType::RingHash);
    assert_eq!(
        lb.consistent_hash
            .as_ref()
            .and_then(|h| h.header.as_deref()),
        Some("x-user")
    );
    assert!(ratings.health_check.is_some_and(|h| h.grpc.is_some()));
    assert!(!ratings.locality_failover_enabled());

    let faults = load_dir(&root.join("faults")).unwrap_or_else(|e| panic!("{e}"));
    let chaos = faults
        .fault_injection("default", "catalog-chaos")
        .expect("catalog-chaos");
    assert!(chaos.spec.delay.is_some() && chaos.spec.abort.is_some());
    let flaky = faults.fault_injection("default", "ratings-flaky");
    let grpc_abort = flaky.and_then(|f| f.spec.abort);
    assert_eq!(
        grpc_abort.and_then(|a| a.grpc_status),
        Some(crate::GrpcStatusCode::Unavailable)
    );
    let writes = faults
        .rate_limit("default", "catalog-writes")
        .expect("writes");
    assert!(writes.spec.target_refs.is_empty());
    assert_eq!(writes.spec.burst(), 20);
    let guard = faults
        .service_rate_limit("default", "ratings")
        .expect("ratings is guarded");
    assert_eq!((guard.spec.requests, guard.spec.burst()), (100, 100));
    let refs: Vec<(crate::ExtensionKind, &str)> = faults
        .http_routes
        .iter()
        .flat_map(|r| &r.spec.rules)
        .flat_map(|r| &r.filters)
        .chain(
            faults
                .grpc_routes
                .iter()
                .flat_map(|r| &r.spec.rules)
                .flat_map(|r| &r.filters),
        )
        .filter_map(|f| f.extension_ref.as_ref())
        .map(|e| (e.kind, e.name.as_str()))
        .collect();
    assert_eq!(
        refs,
        [
            (crate::ExtensionKind::FaultInjection, "catalog-chaos"),
            (crate::ExtensionKind::RateLimit, "catalog-writes"),
            (crate::ExtensionKind::FaultInjection, "ratings-flaky"),
        ]
    );

    let stat = load_dir(&root.join("static-endpoints")).unwrap_or_else(|e| panic!("{e}"));
    let db = stat.service("default", "legacy-db").expect("legacy-db");
    assert_eq!(db.spec.ports[0].protocol(), Protocol::Tcp);
    assert_eq!(db.spec.endpoints.len(), 2);
    assert!(db.spec.endpoints.iter().all(|e| e.locality.is_some()));
    // The admin API dumps the set as JSON, in the same shape and spelling as the YAML.
    let json = serde_json::to_value(&stat).expect("serializes");
    let ep = &json["services"][0]["spec"]["endpoints"][1];
    assert_eq!(ep["address"], "10.0.1.22:5432");
    assert_eq!(ep["locality"], "eu-west/eu-west-1b/rack-7");
    assert_eq!(json["services"][0]["spec"]["ports"][0]["protocol"], "TCP");
}

#[test]
fn mesh_config_defaults_overrides_and_limits() {
    let set = load_str("m.yaml", "").unwrap();
    let mesh = set.mesh_config();
    assert_eq!(mesh.trust_domain, "cluster.local");
    assert_eq!(mesh.mtls.mode, crate::MtlsMode::Permissive);
    assert_eq!(mesh.svid_ttl, std::time::Duration::from_secs(24 * 3600));

    let strict = "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec:\n  mtls: {mode: STRICT}\n  svidTtl: 1h\n";
    let set = load_str("m.yaml", strict).unwrap();
    assert_eq!(set.mesh_config().mtls.mode, crate::MtlsMode::Strict);
    assert_eq!(
        set.mesh_config().svid_ttl,
        std::time::Duration::from_secs(3600)
    );

    let twice = format!(
        "{strict}---\n{}",
        strict.replace("name: mesh", "name: other")
    );
    let errors = load_str("m.yaml", &twice).unwrap_err();
    assert!(errors.to_string().contains("m.yaml:10:"), "{errors}");
    assert!(
        errors.to_string().contains("a second MeshConfig"),
        "{errors}"
    );

    let bad = strict.replace("STRICT", "LOOSE");
    let errors = load_str("m.yaml", &bad).unwrap_err();
    assert!(errors.to_string().contains("m.yaml:5:"), "{errors}");
    assert!(errors.to_string().contains("STRICT"), "{errors}");
}

#[test]
fn authorization_policies_are_checked_with_locations() {
    let policy = |rules: &str| {
        format!(
            "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: p}}\nspec:\n  targetRefs: [{{kind: Service, name: web}}]\n  rules:\n{rules}"
        )
    };
    let bad_identity = policy("  - from: [{identities: [frontend]}]\n");
    let e = load_str("p.yaml", &bad_identity).unwrap_err().to_string();
    assert!(e.contains("p.yaml:7:") && e.contains("SPIFFE ID"), "{e}");
    let bad_path = policy("  - to: [{paths: [items]}]\n");
    let e = load_str("p.yaml", &bad_path).unwrap_err().to_string();
    assert!(
        e.contains("p.yaml:7:") && e.contains("starting with '/'"),
        "{e}"
    );
    let no_target = "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n  action: DENY\n";
    let e = load_str("p.yaml", no_target).unwrap_err().to_string();
    assert!(e.contains("targetRefs"), "{e}");
    let ok = load_str("p.yaml", &policy("  - from: [{namespaces: [prod]}]\n")).unwrap();
    assert_eq!(
        ok.authorization_policies[0].spec.action,
        crate::AuthorizationAction::Allow
    );
}

#[test]
fn a_dir_loader_reparses_only_what_changed_and_agrees_with_a_fresh_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write =
        |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
    write("a.yaml", ROUTE);
    write("b.yaml", &service_with("  ports: [{port: 80}]\n"));
    let mut loader = DirLoader::default();
    let first = loader.load(dir.path()).expect("valid");
    assert_eq!(first, load_dir(dir.path()).expect("valid"));
    assert_eq!(loader.files.len(), 2);
    let cached_a = &loader.files[&dir.path().join("a.yaml")].documents[0].1 as *const Resource;

    // b changes and a does not: a is reused as parsed, b is parsed again.
    write("b.yaml", &service_with("  ports: [{port: 81}]\n"));
    let second = loader.load(dir.path()).expect("valid");
    assert_eq!(second, load_dir(dir.path()).expect("valid"));
    assert_eq!(second.services[0].spec.ports[0].port, 81);
    let again_a = &loader.files[&dir.path().join("a.yaml")].documents[0].1 as *const Resource;
    assert_eq!(cached_a, again_a, "an unchanged file is not parsed again");

    // A duplicate introduced by a new file is found against the cached one, with the same
    // error as a fresh load; removing the file clears it.
    write("c.yaml", &format!("# again\n{ROUTE}"));
    let errors = loader.load(dir.path()).expect_err("duplicate");
    assert_eq!(errors, load_dir(dir.path()).expect_err("duplicate"));
    assert_eq!(errors.len(), 1, "{errors}");
    std::fs::remove_file(dir.path().join("c.yaml")).expect("remove");
    assert_eq!(loader.load(dir.path()).expect("valid"), second);
    assert_eq!(loader.files.len(), 2, "removed files are forgotten");

    // A syntax error in a changed file is reported like a fresh load's.
    write("b.yaml", "kind: [unclosed\n");
    let errors = loader.load(dir.path()).expect_err("syntax");
    assert_eq!(errors, load_dir(dir.path()).expect_err("syntax"));
}

#[test]
fn a_dir_loader_sees_a_rewrite_of_the_same_length_however_soon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("b.yaml");
    let port = |port: u16| service_with(&format!("  ports: [{{port: {port}}}]\n"));
    let served = |loader: &mut DirLoader| {
        loader.load(dir.path()).expect("valid").services[0]
            .spec
            .ports[0]
            .port
    };
    let mut loader = DirLoader::default();
    std::fs::write(&path, port(81)).expect("write");
    assert_eq!(served(&mut loader), 81);
    // Within the same tick of the file system's clock, where kernels without fine-grained
    // change times leave the stamp as it was.
    std::fs::write(&path, port(82)).expect("write");
    assert_eq!(served(&mut loader), 82, "a rewrite right after a load");
    // Once the file is old enough for its stamp to be trusted, it is cached with it, and a
    // rewrite found only when it too is old (a missed watch event) is told by its stamp.
    let age = RACY + Duration::from_millis(100);
    std::thread::sleep(age);
    assert_eq!(served(&mut loader), 82);
    assert!(
        loader.files[&path].stamp.is_some(),
        "an old file's stamp is kept"
    );
    std::fs::write(&path, port(83)).expect("write");
    std::thread::sleep(age);
    assert_eq!(served(&mut loader), 83, "a rewrite of a stamped file");
}

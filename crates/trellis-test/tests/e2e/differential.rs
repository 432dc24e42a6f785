//! Differential tests: the same control-plane config drives a stock Envoy and a Trellis proxy
//! as two clients' sidecars, and every case of a corpus (route matches, rewrites, redirects,
//! header filters, weights, missing backends, timeouts, faults, rate limits, retries) is sent
//! through both; authorization cases go to two workloads of a guarded service, one behind each. Status, the response headers that carry meaning, and what the backend saw must
//! be the same; a difference is a bug in one of us (fixed here) or an Envoy quirk (normalised
//! below, with its reason).

use std::net::SocketAddr;

use trellis_test::{
    EchoLog, HttpReply, Sidecar, TestMesh, assert_eventually, http1_request, spawn_http_echo,
    spawn_recording_http_echo,
};

use crate::common::{admin_json, service, versioned};
use crate::envoy::envoy_sidecar;
use crate::route_table::ROUTE;

/// Rules on a second service for the filters Trellis adds to the Gateway API: faults, rate
/// limits, retries, timeouts, and matches by regular expression. Each rule marks its responses
/// with `x-rule`, so the rule that answered is compared too.
const EXTRAS: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: FaultInjection
metadata: {name: teapot}
spec: {abort: {httpStatus: 418, percent: 100}}
---
apiVersion: trellis.dev/v1alpha1
kind: FaultInjection
metadata: {name: opt-in}
spec:
  abort: {httpStatus: 503, percent: 100}
  headers: [{name: x-fault, value: "on"}]
---
apiVersion: trellis.dev/v1alpha1
kind: RateLimit
metadata: {name: one-a-minute}
spec: {requests: 1, per: 60s}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api-extras}
spec:
  parentRefs: [{kind: Service, name: api}]
  rules:
  - matches: [{path: {value: /abort}}]
    filters:
    - {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: FaultInjection, name: teapot}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-rule, value: abort}]}}
    backendRefs: [{name: api}]
  - matches: [{path: {value: /maybe}}]
    filters:
    - {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: FaultInjection, name: opt-in}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-rule, value: maybe}]}}
    backendRefs: [{name: api}]
  - matches: [{path: {value: /limited}}]
    filters:
    - {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: RateLimit, name: one-a-minute}}
    backendRefs: [{name: api}]
  - matches: [{path: {value: /retry}}]
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}
    retry: {codes: [503], attempts: 2, backoff: 10ms}
    backendRefs: [{name: api}]
  - matches: [{path: {value: /slow}}]
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}
    timeouts: {request: 200ms}
    backendRefs: [{name: api}]
  - matches: [{path: {value: /id}, headers: [{type: RegularExpression, name: x-id, value: "abc[0-9]+"}]}]
    filters:
    - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-rule, value: id-regex}]}}
    backendRefs: [{name: api}]
  - matches: [{path: {value: /v}, queryParams: [{type: RegularExpression, name: v, value: "[0-9]+"}]}]
    filters:
    - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-rule, value: v-regex}]}}
    backendRefs: [{name: api}]
  - matches: [{path: {value: /get-only}, method: GET}]
    filters:
    - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-rule, value: get-only}]}}
    backendRefs: [{name: api}]
  - matches: [{path: {value: /weighted}}]
    backendRefs: [{name: web-v1, weight: 0}, {name: web-v2, weight: 1}]
  - filters:
    - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-rule, value: default}], add: [{name: x-added, value: "1"}]}}
    backendRefs: [{name: api}]
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: public-reads}
spec:
  targetRefs: [{kind: Service, name: guarded-envoy}, {kind: Service, name: guarded-trellis}]
  rules:
  - to: [{paths: ["/public*"], methods: [GET]}]
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-secrets}
spec:
  targetRefs: [{kind: Service, name: guarded-envoy}, {kind: Service, name: guarded-trellis}]
  action: DENY
  rules:
  - to: [{paths: ["/public/secret"]}]
"#;

/// Requests to a service whose inbound sidecar enforces AuthorizationPolicies: sent to one
/// behind Envoy and one behind a Trellis proxy, under the same policies (`upstream` is set
/// per side).
const GUARDED: &[Case] = &[
    web("GET", "/public/x"),
    web("GET", "/public"),
    web("POST", "/public/x"),
    web("GET", "/private"),
    web("GET", "/public/secret"),
    web("GET", "/PUBLIC/x"),
];

/// One request of the corpus.
struct Case {
    upstream: &'static str,
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
}

const fn web(method: &'static str, path: &'static str) -> Case {
    Case {
        upstream: "web",
        method,
        path,
        headers: &[],
    }
}

const fn api(method: &'static str, path: &'static str) -> Case {
    Case {
        upstream: "api",
        method,
        path,
        headers: &[],
    }
}

const fn with(case: Case, headers: &'static [(&'static str, &'static str)]) -> Case {
    Case { headers, ..case }
}

const CORPUS: &[Case] = &[
    // Path, header, method and query matches, and their precedence.
    web("GET", "/"),
    web("GET", "/exact"),
    web("GET", "/exact/more"),
    web("GET", "/exact?x=1"),
    web("GET", "/EXACT"),
    with(web("GET", "/api/x"), &[("x-canary", "true")]),
    with(web("GET", "/api/x"), &[("x-canary", "false")]),
    with(web("GET", "/apix"), &[("x-canary", "true")]),
    with(web("GET", "/api"), &[("x-canary", "true")]),
    with(web("GET", "/api/"), &[("x-canary", "true")]),
    web("POST", "/m/1"),
    web("GET", "/m/1"),
    web("DELETE", "/m/1"),
    web("GET", "/q?debug=1"),
    web("GET", "/q?debug=2"),
    web("GET", "/q?x=2&debug=1"),
    web("GET", "/items/42"),
    web("GET", "/items/x42"),
    web("GET", "/items/42/extra"),
    // Rewrites, redirects, header filters, per-backend filters, a mirror's primary.
    web("GET", "/rewrite/a?k=v"),
    web("GET", "/rewrite"),
    web("GET", "/strip/three"),
    web("GET", "/strip"),
    web("GET", "/full?keep=1"),
    web("GET", "/secure/x?y=1"),
    web("GET", "/moved/a"),
    with(
        web("GET", "/headers"),
        &[("x-set", "old"), ("x-add", "one"), ("x-remove", "bye")],
    ),
    web("GET", "/per-backend"),
    web("POST", "/mirror/p?x=1"),
    // Rules without a usable backend, and timeouts.
    web("GET", "/no-backend"),
    web("GET", "/ghost"),
    web("GET", "/delay/1000"),
    with(web("GET", "/delay/1000"), &[("x-per-try", "1")]),
    // Faults, rate limits, retries, a timeout, regex matches, a method match, defaults.
    api("GET", "/abort/x"),
    with(api("GET", "/maybe/x"), &[("x-fault", "on")]),
    api("GET", "/maybe/x"),
    api("GET", "/limited"),
    api("GET", "/limited"),
    api("GET", "/retry/status/503"),
    api("GET", "/retry/status/200"),
    api("GET", "/slow/delay/1000"),
    with(api("GET", "/id"), &[("x-id", "abc123")]),
    with(api("GET", "/id"), &[("x-id", "xyz")]),
    api("GET", "/v?v=42"),
    api("GET", "/v?v=x"),
    api("GET", "/get-only"),
    api("PUT", "/get-only"),
    api("GET", "/weighted"),
    api("GET", "/anything/else"),
];

/// Response headers that carry the route's meaning.
const RESPONSE_HEADERS: [&str; 5] = ["x-served-by", "location", "x-resp", "x-rule", "retry-after"];

/// Request headers not compared: those Envoy adds on its own and a Trellis proxy does not
/// (Envoy quirks, not routing decisions): request ids, the original scheme, its retry and
/// timeout hints, and a `content-length: 0` on bodiless POST, PUT and DELETE requests whose
/// client sent none (a Trellis proxy forwards the request as the client sent it; both mean no
/// body).
fn not_compared(header: &str) -> bool {
    matches!(
        header,
        "x-request-id" | "x-forwarded-proto" | "x-forwarded-for" | "content-length"
    ) || header.starts_with("x-envoy-")
}

/// What one request came to: status, meaningful response headers, what the backend saw, and
/// how many requests the backend of `api` received (retries show there).
#[derive(Debug, PartialEq)]
struct Outcome {
    status: u16,
    headers: Vec<(String, String)>,
    seen: Option<String>,
    api_hits: usize,
}

async fn outcome(addr: SocketAddr, case: &Case, api_log: &EchoLog) -> Outcome {
    let before = api_log.requests().len();
    let mut headers = vec![("host", case.upstream)];
    headers.extend_from_slice(case.headers);
    let reply: HttpReply = http1_request(addr, case.method, case.path, &headers, b"")
        .await
        .unwrap_or_else(|e| panic!("{} {}: {e:#}", case.method, case.path));
    let response_headers = RESPONSE_HEADERS
        .iter()
        .filter_map(|h| reply.header(h).map(|v| ((*h).to_owned(), v.to_owned())))
        .collect();
    let seen = reply.echo().ok().map(|e| {
        let mut headers: Vec<String> = e
            .headers
            .iter()
            .filter(|(n, _)| !not_compared(n))
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        headers.sort();
        format!(
            "{} {} {}?{} @{} body {} [{}]",
            e.server,
            e.method,
            e.path,
            e.query,
            e.authority,
            e.body_len,
            headers.join(", ")
        )
    });
    Outcome {
        status: reply.status.as_u16(),
        headers: response_headers,
        seen,
        api_hits: api_log.requests().len() - before,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_and_the_trellis_proxy_agree_on_every_case_of_the_corpus() {
    trellis_test::init_tracing();
    let services = [
        service("web", "HTTP"),
        versioned("web-v1", "web", "v1"),
        versioned("web-v2", "web", "v2"),
        service("shadow", "HTTP"),
        service("api", "HTTP"),
        service("client", "HTTP"),
        service("guarded-envoy", "HTTP"),
        service("guarded-trellis", "HTTP"),
    ]
    .concat();
    let mesh = TestMesh::start(&[
        ("services.yaml", &services),
        ("route.yaml", ROUTE),
        ("extras.yaml", EXTRAS),
    ])
    .await
    .unwrap();
    let v1 = spawn_http_echo("web-v1").await.unwrap();
    let v2 = spawn_http_echo("web-v2").await.unwrap();
    let shadow = spawn_http_echo("shadow").await.unwrap();
    let (api_app, api_log) = spawn_recording_http_echo("api").await.unwrap();
    let mut sidecars = Vec::new();
    for (server, version) in [(&v1, "v1"), (&v2, "v2")] {
        let spec = Sidecar::new("web", server.addr().port()).label("version", version);
        sidecars.push(mesh.sidecar(spec).await.unwrap());
    }
    for (name, server) in [("shadow", &shadow), ("api", &api_app)] {
        let spec = Sidecar::new(name, server.addr().port());
        sidecars.push(mesh.sidecar(spec).await.unwrap());
    }
    let trellis = mesh
        .sidecar(
            Sidecar::new("client", 0)
                .upstream("web")
                .upstream("api")
                .upstream("guarded-envoy")
                .upstream("guarded-trellis"),
        )
        .await
        .unwrap();
    // The guarded service's two workloads: one behind Envoy, one behind a Trellis proxy.
    let guarded = spawn_http_echo("guarded").await.unwrap();
    let guarded_port = guarded.addr().port();
    let guard = envoy_sidecar(
        &mesh,
        "guarded-envoy",
        ("guarded-envoy", guarded_port),
        &[],
        (None, false),
    )
    .await;
    sidecars.push(
        mesh.sidecar(Sidecar::new("guarded-trellis", guarded_port))
            .await
            .unwrap(),
    );
    let client_app = spawn_http_echo("client").await.unwrap();
    let envoy = envoy_sidecar(
        &mesh,
        "client-envoy",
        ("client", client_app.addr().port()),
        &["web", "api"],
        (None, false),
    )
    .await;
    let through = |proxy: &str, upstream: &str| match proxy {
        "envoy" => envoy.outbound(upstream),
        _ => trellis.upstream_addr(upstream).unwrap(),
    };
    // Every backend is known to both before the corpus runs.
    for proxy in ["envoy", "trellis"] {
        for (upstream, path) in [("web", "/exact"), ("web", "/"), ("api", "/anything")] {
            let addr = through(proxy, upstream);
            assert_eventually!(
                std::time::Duration::from_secs(10),
                http1_request(addr, "GET", path, &[("host", upstream)], b"")
                    .await
                    .is_ok_and(|r| r.status == 200)
            );
        }
    }

    let mut differences = Vec::new();
    for case in CORPUS {
        let by_envoy = outcome(through("envoy", case.upstream), case, &api_log).await;
        let by_trellis = outcome(through("trellis", case.upstream), case, &api_log).await;
        if by_envoy != by_trellis {
            differences.push(format!(
                "{} {} {:?}\n  envoy:   {by_envoy:?}\n  trellis: {by_trellis:?}",
                case.method, case.path, case.headers
            ));
        }
    }
    // The same requests to the guarded service's two inbound sidecars.
    for upstream in ["guarded-envoy", "guarded-trellis"] {
        let addr = trellis.upstream_addr(upstream).unwrap();
        assert_eventually!(
            std::time::Duration::from_secs(10),
            http1_request(addr, "GET", "/public/ready", &[("host", upstream)], b"")
                .await
                .is_ok_and(|r| r.status == 200)
        );
    }
    for case in GUARDED {
        let [by_envoy, by_trellis] = ["guarded-envoy", "guarded-trellis"].map(|upstream| Case {
            upstream,
            method: case.method,
            path: case.path,
            headers: case.headers,
        });
        let by_envoy_addr = trellis.upstream_addr(by_envoy.upstream).unwrap();
        let by_trellis_addr = trellis.upstream_addr(by_trellis.upstream).unwrap();
        let mut envoy_side = outcome(by_envoy_addr, &by_envoy, &api_log).await;
        let trellis_side = outcome(by_trellis_addr, &by_trellis, &api_log).await;
        // The host names the service called, which differs by design.
        envoy_side.seen = envoy_side
            .seen
            .map(|s| s.replace("guarded-envoy", "guarded-trellis"));
        if envoy_side != trellis_side {
            differences.push(format!(
                "inbound {} {}\n  envoy:   {envoy_side:?}\n  trellis: {trellis_side:?}",
                case.method, case.path
            ));
        }
    }
    let cases = CORPUS.len() + GUARDED.len();
    assert!(
        differences.is_empty(),
        "{} of {cases} cases differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
    assert!(cases >= 40);

    // Neither rejected any of the config.
    let proxies = admin_json(mesh.admin_addr(), "/api/proxies").await;
    for row in proxies.as_array().unwrap() {
        assert_eq!(row["nacks"], 0, "{row}");
    }
    for stat in [
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
    ] {
        for proxy in [&envoy.envoy, &guard.envoy] {
            assert_eq!(proxy.stat(stat).await.unwrap(), Some(0), "{stat}");
        }
    }
}

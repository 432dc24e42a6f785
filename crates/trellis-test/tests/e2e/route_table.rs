//! Gateway API HTTPRoute semantics through two sidecars: a table of matches, precedence,
//! filters (header changes, rewrites, redirects, mirrors), backends that are missing, and
//! timeouts, each asserting where the request went and what the backend saw.

use std::time::{Duration, Instant};

use trellis_test::{
    EchoLog, HttpReply, Sidecar, TestMesh, assert_eventually, http1_get, http1_request,
    spawn_http_echo, spawn_recording_http_echo,
};

use crate::common::{service, versioned};

pub(crate) const ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-table}
spec:
  parentRefs: [{kind: Service, name: web}]
  rules:
  # The catch-all is a regex: among regexes the longer wins, while any prefix (even `/`) would
  # outrank every regex (Istio's order; Gateway API leaves regex precedence open).
  - matches: [{path: {type: RegularExpression, value: "/.*"}}]
    backendRefs: [{name: web-v1}]
  - matches: [{path: {type: Exact, value: /exact}}]
    backendRefs: [{name: web-v2}]
  - matches: [{path: {value: /api}, headers: [{name: x-canary, value: "true"}]}]
    backendRefs: [{name: web-v2}]
  - matches: [{path: {value: /api}}]
    backendRefs: [{name: web-v1}]
  - matches: [{path: {value: /m}, method: POST}]
    backendRefs: [{name: web-v2}]
  - matches: [{path: {value: /q}, queryParams: [{name: debug, value: "1"}]}]
    backendRefs: [{name: web-v2}]
  - matches: [{path: {type: RegularExpression, value: "/items/[0-9]+"}}]
    backendRefs: [{name: web-v2}]
  - matches: [{path: {value: /rewrite}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: rewritten.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
    backendRefs: [{name: web-v2}]
  - matches: [{path: {value: /strip}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    backendRefs: [{name: web-v1}]
  - matches: [{path: {type: Exact, value: /full}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /replaced}}
    backendRefs: [{name: web-v1}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-filters}
spec:
  parentRefs: [{kind: Service, name: web}]
  rules:
  - matches: [{path: {value: /secure}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: example.org, statusCode: 301}
  - matches: [{path: {value: /moved}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new-home}}
  - matches: [{path: {value: /headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-set, value: new}]
        add: [{name: x-add, value: two}]
        remove: [x-remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: x-resp, value: "100%"}]
        remove: [x-served-by]
    backendRefs: [{name: web-v1}]
  - matches: [{path: {value: /per-backend}}]
    backendRefs:
    - name: web-v2
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-backend, value: v2}]}
  - matches: [{path: {value: /mirror}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow}}
    backendRefs: [{name: web-v1}]
  - matches: [{path: {value: /no-backend}}]
  - matches: [{path: {value: /ghost}}]
    backendRefs: [{name: ghost}]
  - matches: [{path: {value: /delay}}]
    timeouts: {request: 300ms}
    backendRefs: [{name: web-v1}]
  - matches: [{path: {value: /delay}, headers: [{name: x-per-try, value: "1"}]}]
    timeouts: {request: 5s, backendRequest: 200ms}
    backendRefs: [{name: web-v1}]
"#;

/// One request and what must come of it.
struct Case {
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    status: u16,
    /// The backend that answered (`x-served-by`), if the request reaches one.
    served_by: Option<&'static str>,
    /// The path and query the backend saw.
    seen: Option<&'static str>,
}

const fn to(
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    served_by: &'static str,
    seen: &'static str,
) -> Case {
    Case {
        method,
        path,
        headers,
        status: 200,
        served_by: Some(served_by),
        seen: Some(seen),
    }
}

const CASES: &[Case] = &[
    to("GET", "/", &[], "web-v1", "/"),
    to("GET", "/exact", &[], "web-v2", "/exact"),
    to("GET", "/exact/more", &[], "web-v1", "/exact/more"),
    to("GET", "/api/x", &[("x-canary", "true")], "web-v2", "/api/x"),
    to(
        "GET",
        "/api/x",
        &[("x-canary", "false")],
        "web-v1",
        "/api/x",
    ),
    to("GET", "/apix", &[("x-canary", "true")], "web-v1", "/apix"),
    to("POST", "/m/1", &[], "web-v2", "/m/1"),
    to("GET", "/m/1", &[], "web-v1", "/m/1"),
    to("GET", "/q?debug=1", &[], "web-v2", "/q?debug=1"),
    to("GET", "/q?debug=2", &[], "web-v1", "/q?debug=2"),
    to("GET", "/items/42", &[], "web-v2", "/items/42"),
    to("GET", "/items/x42", &[], "web-v1", "/items/x42"),
    to("GET", "/rewrite/a?k=v", &[], "web-v2", "/new/a?k=v"),
    to("GET", "/rewrite", &[], "web-v2", "/new"),
    to("GET", "/strip/three", &[], "web-v1", "/three"),
    to("GET", "/strip", &[], "web-v1", "/"),
    to("GET", "/full?keep=1", &[], "web-v1", "/replaced?keep=1"),
    Case {
        method: "GET",
        path: "/no-backend",
        headers: &[],
        status: 500,
        served_by: None,
        seen: None,
    },
    Case {
        method: "GET",
        path: "/ghost",
        headers: &[],
        status: 500,
        served_by: None,
        seen: None,
    },
];

async fn send(addr: std::net::SocketAddr, case: &Case) -> HttpReply {
    http1_request(addr, case.method, case.path, case.headers, b"")
        .await
        .unwrap_or_else(|e| panic!("{} {}: {e:#}", case.method, case.path))
}

/// The mesh for the table: `web` split into versions, a `shadow` service for mirrors.
struct Table {
    _mesh: TestMesh,
    _servers: Vec<trellis_test::Server>,
    _sidecars: Vec<trellis_proxy::ProxyHandle>,
    addr: std::net::SocketAddr,
    shadow: EchoLog,
}

async fn table() -> Table {
    let services = [
        service("web", "HTTP"),
        versioned("web-v1", "web", "v1"),
        versioned("web-v2", "web", "v2"),
        service("shadow", "HTTP"),
    ]
    .concat();
    let mesh = TestMesh::start(&[("services.yaml", &services), ("route.yaml", ROUTE)])
        .await
        .unwrap();
    let v1 = spawn_http_echo("web-v1").await.unwrap();
    let v2 = spawn_http_echo("web-v2").await.unwrap();
    let (shadow, log) = spawn_recording_http_echo("shadow").await.unwrap();
    let mut sidecars = Vec::new();
    for (server, version) in [(&v1, "v1"), (&v2, "v2")] {
        let spec = Sidecar::new("web", server.addr().port()).label("version", version);
        sidecars.push(mesh.sidecar(spec).await.unwrap());
    }
    sidecars.push(
        mesh.sidecar(Sidecar::new("shadow", shadow.addr().port()))
            .await
            .unwrap(),
    );
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("web"))
        .await
        .unwrap();
    let addr = client.upstream_addr("web").unwrap();
    sidecars.push(client);
    // Every version's endpoint is known before the table runs.
    assert_eventually!(
        Duration::from_secs(10),
        http1_get(addr, "/exact", &[])
            .await
            .is_ok_and(|r| r.status == 200)
            && http1_get(addr, "/", &[])
                .await
                .is_ok_and(|r| r.status == 200)
    );
    Table {
        _mesh: mesh,
        _servers: vec![v1, v2, shadow],
        _sidecars: sidecars,
        addr,
        shadow: log,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_route_table() {
    let t = table().await;
    let mut failures = Vec::new();
    for case in CASES {
        let reply = send(t.addr, case).await;
        let served_by = reply.header("x-served-by");
        let seen = reply.echo().ok().map(|e| {
            if e.query.is_empty() {
                e.path
            } else {
                format!("{}?{}", e.path, e.query)
            }
        });
        if reply.status.as_u16() != case.status
            || served_by != case.served_by
            || seen.as_deref() != case.seen
        {
            failures.push(format!(
                "{} {} {:?}: got {} from {served_by:?} seeing {seen:?}; expected {} from {:?} seeing {:?}",
                case.method, case.path, case.headers, reply.status, case.status, case.served_by, case.seen
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let rewritten = send(t.addr, &to("GET", "/rewrite/a", &[], "", "")).await;
    assert_eq!(rewritten.echo().unwrap().authority, "rewritten.example");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_filters_change_requests_and_responses() {
    let t = table().await;
    let addr = t.addr;

    let secure = http1_get(addr, "/secure/x?y=1", &[]).await.unwrap();
    assert_eq!(secure.status, 301);
    assert_eq!(
        secure.header("location"),
        Some("https://example.org/secure/x?y=1")
    );
    let moved = http1_get(addr, "/moved/a", &[]).await.unwrap();
    assert_eq!(moved.status, 302, "Gateway API's default redirect code");
    assert_eq!(
        moved.header("location"),
        Some(format!("http://{addr}/new-home/a").as_str())
    );

    let headers = http1_get(
        addr,
        "/headers",
        &[("x-set", "old"), ("x-add", "one"), ("x-remove", "bye")],
    )
    .await
    .unwrap();
    assert_eq!(headers.status, 200);
    let echo = headers.echo().unwrap();
    let all = |name: &str| -> Vec<&str> {
        echo.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(all("x-set"), ["new"]);
    assert_eq!(all("x-add"), ["one", "two"]);
    assert!(all("x-remove").is_empty());
    assert_eq!(headers.header("x-resp"), Some("100%"));
    assert_eq!(
        headers.header("x-served-by"),
        None,
        "removed from the response"
    );

    let per_backend = http1_get(addr, "/per-backend", &[]).await.unwrap();
    assert_eq!(per_backend.header("x-served-by"), Some("web-v2"));
    assert_eq!(per_backend.echo().unwrap().header("x-backend"), Some("v2"));

    // The mirror gets a copy, body included, with Envoy's `-shadow` host; the client sees the
    // primary's answer.
    let mirrored = http1_request(addr, "POST", "/mirror/p?x=1", &[], b"mirrored body")
        .await
        .unwrap();
    assert_eq!(mirrored.header("x-served-by"), Some("web-v1"));
    assert_eq!(mirrored.echo().unwrap().body_len, 13);
    assert_eventually!(Duration::from_secs(5), !t.shadow.requests().is_empty());
    let copy = &t.shadow.requests()[0];
    assert_eq!(
        (
            copy.method.as_str(),
            copy.path.as_str(),
            copy.query.as_str()
        ),
        ("POST", "/mirror/p", "x=1")
    );
    assert_eq!(copy.body_len, 13);
    assert!(
        copy.authority.ends_with("-shadow") || copy.authority.contains("-shadow:"),
        "{}",
        copy.authority
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_and_backend_timeouts_fire_on_time() {
    let t = table().await;
    for (headers, limit) in [
        (&[][..], Duration::from_millis(300)),
        (&[("x-per-try", "1")][..], Duration::from_millis(200)),
    ] {
        let started = Instant::now();
        let reply = http1_get(t.addr, "/delay/2000", headers).await.unwrap();
        let took = started.elapsed();
        assert_eq!(reply.status, 504, "{headers:?}");
        // Under 100 ms late: the per-try case cannot pass on the route's 300 ms timeout.
        assert!(
            took >= limit && took < limit + Duration::from_millis(100),
            "{headers:?}: the {limit:?} timeout answered after {took:?}"
        );
    }
}

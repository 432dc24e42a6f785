//! Proxyless gRPC: a Python grpcio client with only a bootstrap file from Trellis resolves an
//! `xds:///` target through the control plane and balances over the service's endpoints
//! itself (the Trellis sidecars in front of grpcio servers), following endpoint changes; what
//! it cannot honour of the route is reported by the control plane.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use trellis_test::{Deadline, Sidecar, TestMesh, free_loopback_addr};
use trellis_xds::node::{ClientKind, NodeMeta};

use crate::common::{admin_json, service};

/// What the client reports after a round of calls.
#[derive(Debug, Deserialize)]
struct Round {
    /// Calls answered, by the port of the server that answered.
    counts: BTreeMap<String, u32>,
    /// Calls that failed.
    failed: usize,
    /// The first errors, if calls failed.
    errors: Vec<String>,
    /// How long the slowest call took, in milliseconds.
    slowest_ms: u64,
}

/// The Python client (and the servers it calls), driven over its stdin and stdout.
struct GrpcClient {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl GrpcClient {
    async fn start(bootstrap: &Path, ports: &[u16], target: &str) -> GrpcClient {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/grpc_xds.py");
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--ports", &ports.join(","), "--target", target])
            .env("GRPC_XDS_BOOTSTRAP", bootstrap)
            .env("GRPC_VERBOSITY", "ERROR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 with grpcio (scripts/test.sh installs it)");
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the servers start")
            .unwrap();
        assert_eq!(first.as_deref(), Some("serving"));
        GrpcClient {
            _child: child,
            stdin,
            lines,
        }
    }

    /// Makes `n` calls of `Name`; returns who answered.
    async fn calls(&mut self, n: usize) -> Round {
        self.calls_of(n, "Name", "").await
    }

    /// Makes `n` calls of `method` with `metadata` (`key=value ...`); returns who answered.
    async fn calls_of(&mut self, n: usize, method: &str, metadata: &str) -> Round {
        self.stdin
            .write_all(format!("calls {n} {method} {metadata}\n").as_bytes())
            .await
            .unwrap();
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .expect("a round within 60 s")
            .unwrap()
            .expect("the client is running");
        serde_json::from_str(&line).unwrap()
    }
}

/// A route with what gRPC honours (a fault for calls with `x-fault: abort`, a timeout for
/// `Slow`), and filters it does not implement (a header modifier and a rate limit): those are
/// left out of what it is sent, and reported.
const ROUTE: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: FaultInjection
metadata: {name: abort-on-header}
spec:
  abort: {grpcStatus: ABORTED, percent: 100}
---
apiVersion: trellis.dev/v1alpha1
kind: RateLimit
metadata: {name: plenty}
spec: {requests: 1000, per: 1s}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: greeter}
spec:
  parentRefs: [{kind: Service, name: greeter}]
  rules:
  - matches: [{headers: [{name: x-fault, value: abort}]}]
    filters:
    - {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: FaultInjection, name: abort-on-header}}
    backendRefs: [{name: greeter}]
  - matches: [{path: {type: Exact, value: /trellis.test.Who/Slow}}]
    timeouts: {request: 300ms}
    backendRefs: [{name: greeter}]
  - filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-a, value: b}]}}
    - {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: RateLimit, name: plenty}}
    backendRefs: [{name: greeter}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_client_resolves_an_xds_target_spreads_over_every_endpoint_and_follows_a_new_one()
{
    trellis_test::init_tracing();
    let mesh = TestMesh::start(&[
        ("mesh.yaml", &service("greeter", "GRPC")),
        ("route.yaml", ROUTE),
    ])
    .await
    .unwrap();
    let ports = [(); 3].map(|()| free_loopback_addr().unwrap().port());
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = dir.path().join("bootstrap.json");
    let meta = NodeMeta {
        service: "shop".into(),
        namespace: "default".into(),
        client: ClientKind::Grpc,
        ..NodeMeta::default()
    };
    let json = trellis_xds::bootstrap::grpc(&meta, "shop-grpc", mesh.xds_addr());
    std::fs::write(&bootstrap, json.to_string()).unwrap();
    let mut client = GrpcClient::start(&bootstrap, &ports, "xds:///greeter.default").await;
    let mut sidecars = Vec::new();
    for port in &ports[..2] {
        sidecars.push(mesh.sidecar(Sidecar::new("greeter", *port)).await.unwrap());
    }
    let [p0, p1, p2] = ports.map(|p| p.to_string());

    // Round robin over both endpoints, through their sidecars; the third has none yet. gRPC
    // balances over the connections that are ready: first wait until both have answered.
    let deadline = Deadline::after(Duration::from_secs(5));
    loop {
        let round = client.calls(10).await;
        assert!(round.errors.is_empty(), "{round:?}");
        if round.counts.contains_key(&p0) && round.counts.contains_key(&p1) {
            break;
        }
        assert!(!deadline.passed(), "an endpoint never answered: {round:?}");
    }
    let round = client.calls(40).await;
    assert!(round.errors.is_empty(), "{round:?}");
    assert!(round.counts.get(&p0) >= Some(&15), "{round:?}");
    assert!(round.counts.get(&p1) >= Some(&15), "{round:?}");
    assert!(!round.counts.contains_key(&p2), "{round:?}");

    // A new endpoint: the client's next calls reach it too, within 5 s.
    sidecars.push(
        mesh.sidecar(Sidecar::new("greeter", ports[2]))
            .await
            .unwrap(),
    );
    let deadline = Deadline::after(Duration::from_secs(5));
    loop {
        let round = client.calls(12).await;
        assert!(round.errors.is_empty(), "{round:?}");
        if round.counts.contains_key(&p2) {
            break;
        }
        assert!(
            !deadline.passed(),
            "the new endpoint never answered: {round:?}"
        );
    }

    // The fault and the timeout hold for the client's calls.
    let round = client.calls_of(10, "Name", "x-fault=abort").await;
    assert_eq!(round.failed, 10, "{round:?}");
    assert!(
        round
            .errors
            .iter()
            .all(|e| e.starts_with("StatusCode.ABORTED")),
        "{round:?}"
    );
    // The server answers after 2 s and the client waits 5 s: the route's 300 ms ends the
    // calls. (gRPC may end them sooner than the bound: grpcio 1.85 was seen ending calls under
    // a 4 s service-config timeout after 2.3 s, with or without xDS.)
    let round = client.calls_of(2, "Slow", "").await;
    assert_eq!(round.failed, 2, "{round:?}");
    assert!(
        round
            .errors
            .iter()
            .all(|e| e.starts_with("StatusCode.DEADLINE_EXCEEDED")),
        "{round:?}"
    );
    assert!(round.slowest_ms < 1000, "{round:?}");

    // The control plane registered the client (it ACKs everything it was sent) and did not
    // make it anybody's endpoint.
    let proxies = admin_json(mesh.admin_addr(), "/api/proxies").await;
    let row = proxies
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node_id"] == "shop-grpc")
        .unwrap_or_else(|| panic!("the gRPC client is not registered: {proxies}"));
    assert_eq!(row["synced"], true, "{row}");
    assert_eq!(row["nacks"], 0, "{row}");
    assert_eq!(row["client"], "grpc", "{row}");
    assert_eq!(
        row["unsupported"],
        serde_json::json!([
            "HTTPRoute/greeter.default rule 3: RequestHeaderModifier is not applied",
            "HTTPRoute/greeter.default rule 3: RateLimit is not enforced",
        ]),
        "{row}"
    );
    let services = admin_json(mesh.admin_addr(), "/api/services").await;
    assert!(!services.to_string().contains("\"shop\""), "{services}");
}

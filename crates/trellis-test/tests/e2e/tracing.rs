//! Distributed tracing across two sidecars: the outbound sidecar's client span and the inbound
//! sidecar's server span reach an OTLP receiver (the reference opentelemetry-proto types) in
//! the trace the request's `traceparent` names, linked parent to child, and the app sees the
//! server span as its parent.

use std::time::Duration;

use trellis_test::{Deadline, OtlpReceiver, Sidecar, TestMesh, http1_get, spawn_http_echo};

use crate::common::service;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const APP_SPAN: &str = "00f067aa0ba902b7";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn linked_client_and_server_spans_reach_the_collector_in_the_callers_trace() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let mesh = TestMesh::start(&[("services.yaml", &service("api", "HTTP"))])
        .await
        .unwrap();
    let api = spawn_http_echo("api").await.unwrap();
    let _api_sidecar = mesh
        .sidecar(Sidecar::new("api", api.addr().port()).traced(&receiver.url()))
        .await
        .unwrap();
    let client = mesh
        .sidecar(
            Sidecar::new("client", 0)
                .upstream("api")
                .traced(&receiver.url()),
        )
        .await
        .unwrap();
    let to_api = client.upstream_addr("api").unwrap();
    assert!(
        trellis_test::eventually(Duration::from_secs(5), || async {
            http1_get(to_api, "/warm", &[])
                .await
                .is_ok_and(|r| r.status == 200)
        })
        .await
    );

    let traceparent = format!("00-{TRACE}-{APP_SPAN}-01");
    let reply = http1_get(to_api, "/orders/7?x=1", &[("traceparent", &traceparent)])
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let seen = reply.echo().unwrap();
    let forwarded = seen
        .header("traceparent")
        .expect("the app gets a traceparent");

    let deadline = Deadline::after(Duration::from_secs(10));
    let spans = loop {
        let spans: Vec<_> = receiver
            .spans()
            .into_iter()
            .filter(|s| hex(&s.span.trace_id) == TRACE)
            .collect();
        if spans.len() >= 2 || deadline.passed() {
            break spans;
        }
        deadline.pause().await;
    };
    assert_eq!(spans.len(), 2, "one client and one server span: {spans:#?}");
    let client_span = spans.iter().find(|s| s.service == "client").unwrap();
    let server_span = spans.iter().find(|s| s.service == "api").unwrap();
    // SpanKind CLIENT = 3, SERVER = 2.
    assert_eq!((client_span.span.kind, server_span.span.kind), (3, 2));
    assert_eq!(hex(&client_span.span.parent_span_id), APP_SPAN);
    assert_eq!(
        server_span.span.parent_span_id, client_span.span.span_id,
        "the server span is the client span's child"
    );
    assert_eq!(
        forwarded,
        format!("00-{TRACE}-{}-01", hex(&server_span.span.span_id)),
        "the app's parent is the server span"
    );
    for s in [client_span, server_span] {
        assert_eq!(s.span.name, "GET /orders/7");
        assert_eq!(s.attribute("http.request.method").as_deref(), Some("GET"));
        assert_eq!(s.attribute("url.path").as_deref(), Some("/orders/7"));
        assert_eq!(
            s.attribute("http.response.status_code").as_deref(),
            Some("200")
        );
        assert!(s.span.end_time_unix_nano > s.span.start_time_unix_nano);
    }
    assert_eq!(
        server_span.attribute("trellis.source.identity").as_deref(),
        Some("spiffe://cluster.local/ns/default/sa/client")
    );
    // The client span encloses the server span.
    assert!(client_span.span.start_time_unix_nano <= server_span.span.start_time_unix_nano);
    assert!(client_span.span.end_time_unix_nano >= server_span.span.end_time_unix_nano);
}

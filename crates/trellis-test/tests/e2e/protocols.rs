//! Every protocol through two sidecars: client → outbound sidecar → inbound sidecar → app.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use trellis_test::{
    ServingStatus, Sidecar, TestMesh, grpc_check, grpc_watch, http1_download, http1_get, http2_get,
    post_streamed, raw_http1, spawn_grpc_health, spawn_http_echo, spawn_raw_http_recorder,
    spawn_tcp_echo, spawn_tcp_greeter, spawn_ws_echo, tcp_roundtrip, ws_roundtrip,
};

use crate::common::service;

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_grpc_websocket_and_tcp_pass_through() {
    trellis_test::init_tracing();
    let config = [
        service("echo", "HTTP"),
        service("grpc", "GRPC"),
        service("ws", "HTTP"),
        service("tcp", "TCP"),
    ]
    .concat();
    let mesh = TestMesh::start(&[("services.yaml", &config)])
        .await
        .unwrap();
    let echo = spawn_http_echo("echo").await.unwrap();
    let grpc = spawn_grpc_health().await.unwrap();
    let ws = spawn_ws_echo().await.unwrap();
    let tcp = spawn_tcp_echo().await.unwrap();
    let _servers = [
        mesh.sidecar(Sidecar::new("echo", echo.addr().port()))
            .await
            .unwrap(),
        mesh.sidecar(Sidecar::new("grpc", grpc.addr().port()))
            .await
            .unwrap(),
        mesh.sidecar(Sidecar::new("ws", ws.addr().port()))
            .await
            .unwrap(),
        mesh.sidecar(Sidecar::new("tcp", tcp.addr().port()))
            .await
            .unwrap(),
    ];
    let client = mesh
        .sidecar(
            Sidecar::new("client", 0)
                .upstream("echo")
                .upstream("grpc")
                .upstream("ws")
                .upstream("tcp"),
        )
        .await
        .unwrap();
    let to = |svc: &str| client.upstream_addr(svc).expect("outbound port");

    // HTTP/1.1 and HTTP/2 reach the app with method, path, query and headers intact.
    let reply = http1_get(to("echo"), "/hello?x=1", &[("x-test", "yes")])
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let seen = reply.echo().unwrap();
    assert_eq!((seen.path.as_str(), seen.query.as_str()), ("/hello", "x=1"));
    assert_eq!(seen.header("x-test"), Some("yes"));
    assert_eq!(seen.version, "HTTP/1.1");
    let reply = http2_get(to("echo"), "/h2", &[]).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.echo().unwrap().version, "HTTP/2.0", "h2c end to end");

    // Bodies of 0 B, 1 MiB and 100 MiB stream both ways.
    for size in [0, MIB, 100 * MIB] {
        let reply = post_streamed(to("echo"), "/upload", size).await.unwrap();
        assert_eq!(
            reply.echo().unwrap().body_len,
            size,
            "upload of {size} bytes"
        );
        let (status, len) = http1_download(to("echo"), &format!("/bytes/{size}"))
            .await
            .unwrap();
        assert_eq!(
            (status.as_u16(), len),
            (200, size),
            "download of {size} bytes"
        );
    }

    // gRPC unary and server streaming.
    assert_eq!(
        grpc_check(to("grpc"), "").await.unwrap(),
        ServingStatus::Serving
    );
    let mut watch = grpc_watch(to("grpc"), "").await.unwrap();
    assert_eq!(watch.next().await.unwrap(), ServingStatus::Serving);
    grpc.set_serving("", false).await;
    assert_eq!(watch.next().await.unwrap(), ServingStatus::NotServing);

    // WebSocket upgrade, then messages both ways.
    let echoed = ws_roundtrip(&to("ws").to_string(), &["one", "two"])
        .await
        .unwrap();
    assert_eq!(echoed, ["one", "two"]);

    // Raw TCP on an opaque service.
    let bytes = tcp_roundtrip(to("tcp"), b"\x00\x01binary\xff")
        .await
        .unwrap();
    assert_eq!(bytes, b"\x00\x01binary\xff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_case_is_preserved_and_server_first_protocols_are_not_stalled() {
    // chatty is not declared: its protocol is detected, with a bounded wait.
    let config = [service("recorder", "HTTP"), service("db", "TCP")].concat();
    let mesh = TestMesh::start(&[("services.yaml", &config)])
        .await
        .unwrap();
    let recorder = spawn_raw_http_recorder().await.unwrap();
    let db = spawn_tcp_greeter("220 db ready\r\n").await.unwrap();
    let chatty = spawn_tcp_greeter("220 chatty ready\r\n").await.unwrap();
    let _servers = [
        mesh.sidecar(Sidecar::new("recorder", recorder.addr().port()))
            .await
            .unwrap(),
        mesh.sidecar(Sidecar::new("db", db.addr().port()))
            .await
            .unwrap(),
        mesh.sidecar(Sidecar::new("chatty", chatty.addr().port()))
            .await
            .unwrap(),
    ];
    let client = mesh
        .sidecar(
            Sidecar::new("client", 0)
                .upstream("recorder")
                .upstream("db")
                .upstream("chatty"),
        )
        .await
        .unwrap();

    let addr = client.upstream_addr("recorder").unwrap();
    let response = raw_http1(
        addr,
        "GET /case HTTP/1.1\r\nHost: recorder\r\nX-Custom-Case: 1\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let heads = recorder.heads();
    assert!(
        heads.iter().any(|h| h.contains("\r\nX-Custom-Case: 1\r\n")),
        "header case lost on the way: {heads:?}"
    );

    // Opaque port: the greeting comes through without the client sending anything.
    let greeting = read_greeting(client.upstream_addr("db").unwrap()).await;
    assert_eq!(greeting.0, "220 db ready\r\n");
    assert!(
        greeting.1 < Duration::from_secs(1),
        "opaque port stalled {:?}",
        greeting.1
    );

    // A server-first protocol on a port that is detected: detection gives up after its bounded
    // wait and falls back to TCP, so the greeting still arrives.
    let greeting = read_greeting(client.upstream_addr("chatty").unwrap()).await;
    assert_eq!(greeting.0, "220 chatty ready\r\n");
    assert!(
        greeting.1 < Duration::from_secs(2),
        "detection stalled {:?}",
        greeting.1
    );
}

async fn read_greeting(addr: std::net::SocketAddr) -> (String, Duration) {
    let start = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 64];
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("greeting within 5 s")
            .unwrap();
        assert!(n > 0, "connection closed before the greeting");
        got.extend_from_slice(&buf[..n]);
    }
    (String::from_utf8(got).unwrap(), start.elapsed())
}

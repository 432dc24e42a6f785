//! Raw TCP: echo with half-close, and server-speaks-first protocols with and without protocol
//! detection on the listener.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::backend::{tcp_echo, tcp_greeter};
use crate::xds::{self, Config, cla, eds_cluster, http_listener, route, route_config, tcp_filter};
use crate::{start_proxy, step};

const DETECT: Duration = Duration::from_secs(1);

#[tokio::test]
async fn tcp_echo_with_half_close() {
    let echo = tcp_echo().await;
    let proxy = start_proxy(&["echo"]).await;
    let listen = proxy.upstream_addr("echo").unwrap();
    Config {
        listeners: vec![xds::listener(
            "tcp",
            listen,
            None,
            vec![xds::chain(&[], tcp_filter("echo"))],
            None,
        )],
        clusters: vec![eds_cluster("echo")],
        endpoints: vec![cla("echo", &[echo])],
        ..Config::default()
    }
    .apply(&mut proxy.config_handler(), "1");

    let mut stream = TcpStream::connect(listen).await.unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    stream.write_all(&payload).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    step("echo until EOF", stream.read_to_end(&mut back))
        .await
        .unwrap();
    assert_eq!(back, payload);

    let metrics = crate::client::get(proxy.admin_addr(), "admin", "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"trellis_tcp_connections_total{direction="outbound",cluster="echo"} 1"#),
        "{text}"
    );
    for bytes in ["received", "sent"] {
        let line = format!(
            r#"trellis_tcp_{bytes}_bytes_total{{direction="outbound",cluster="echo"}} 200000"#
        );
        assert!(text.contains(&line), "{line} in {text}");
    }
    proxy.shutdown().await;
}

/// Time until the greeting arrives through `listen`.
async fn greeting_delay(listen: std::net::SocketAddr) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(listen).await.unwrap();
    let mut buf = [0u8; 5];
    step("greeting", stream.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"hello");
    started.elapsed()
}

#[tokio::test]
async fn server_speaks_first_with_and_without_detection() {
    let greeter = tcp_greeter(b"hello").await;
    let proxy = start_proxy(&["plain", "detected"]).await;
    let plain = proxy.upstream_addr("plain").unwrap();
    let detected = proxy.upstream_addr("detected").unwrap();
    Config {
        listeners: vec![
            xds::listener(
                "plain",
                plain,
                None,
                vec![xds::chain(&[], tcp_filter("greeter"))],
                None,
            ),
            // HTTP chain for HTTP clients, TCP default chain for everything else.
            http_listener("detected", detected, "routes", false, Some("greeter")),
        ],
        routes: vec![route_config(
            "routes",
            &["*"],
            vec![route("r", "/", "greeter")],
        )],
        clusters: vec![eds_cluster("greeter")],
        endpoints: vec![cla("greeter", &[greeter])],
    }
    .apply(&mut proxy.config_handler(), "1");

    let immediate = greeting_delay(plain).await;
    assert!(
        immediate < DETECT / 2,
        "no detection, yet greeting took {immediate:?}"
    );
    let after_detection = greeting_delay(detected).await;
    assert!(
        after_detection >= DETECT.mul_f32(0.9) && after_detection < DETECT + Duration::from_secs(2),
        "greeting took {after_detection:?} with a {DETECT:?} detection timeout"
    );
    proxy.shutdown().await;
}

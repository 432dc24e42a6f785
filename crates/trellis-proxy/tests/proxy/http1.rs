//! HTTP/1.1 through an outbound listener: keep-alive, chunked bodies, header case, local
//! replies, HTTP-proxy mode, and the stats the demo reads.

use bytes::Bytes;
use futures_util::stream;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use trellis_proxy::{Direction, StatusClass};

use crate::backend::{http_backend, raw_recorder};
use crate::client::{Body, empty, get, h1, raw_http, read, send};
use crate::xds::{Config, cla, eds_cluster, http_listener, route, route_config};
use crate::{start_proxy, step};

/// A proxy whose `svc` listener routes `/` to cluster `svc` at `backends`, plus `/missing` to
/// an unknown cluster and `/closed` to a cluster whose endpoint refuses connections.
async fn proxy_to(
    backends: &[std::net::SocketAddr],
) -> (trellis_proxy::ProxyHandle, std::net::SocketAddr) {
    let proxy = start_proxy(&["svc"]).await;
    let listen = proxy.upstream_addr("svc").unwrap();
    let closed: std::net::SocketAddr = crate::NOBODY.parse().unwrap();
    Config {
        listeners: vec![http_listener(
            "outbound|svc",
            listen,
            "svc-routes",
            false,
            None,
        )],
        routes: vec![route_config(
            "svc-routes",
            &["svc", "svc:80"],
            vec![
                route("missing", "/missing", "nope"),
                route("closed", "/closed", "closed"),
                route("svc-all", "/", "svc"),
            ],
        )],
        clusters: vec![eds_cluster("svc"), eds_cluster("closed")],
        endpoints: vec![cla("svc", backends), cla("closed", &[closed])],
    }
    .apply(&mut proxy.config_handler(), "1");
    (proxy, listen)
}

#[tokio::test]
async fn keep_alive_and_chunked_bodies() {
    let backend = http_backend("b1").await;
    let (proxy, listen) = proxy_to(&[backend.addr]).await;
    let mut conn = h1(listen).await;
    for i in 0..3 {
        let req = Request::post("/echo")
            .header("host", "svc")
            .body(crate::client::full(format!("body {i}")))
            .unwrap();
        let reply = read(
            step("keep-alive request", conn.send_request(req))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, format!("body {i}"));
        assert_eq!(reply.header("x-backend"), "b1");
        assert_eq!(reply.header("x-host"), "svc", "Host is kept");
    }
    // A chunked request body (no length known) streams through and back.
    let chunks = ["chunk-1 ", "chunk-2 ", "chunk-3"];
    let frames = stream::iter(chunks.map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes())))));
    let body: Body = BodyExt::boxed(StreamBody::new(frames));
    let req = Request::post("/echo")
        .header("host", "svc")
        .body(body)
        .unwrap();
    let resp = step("chunked request", conn.send_request(req))
        .await
        .unwrap();
    assert!(resp.headers().get("content-length").is_none());
    let reply = read(resp).await;
    assert_eq!(reply.body, "chunk-1 chunk-2 chunk-3");
    assert_eq!(
        backend.requests.load(std::sync::atomic::Ordering::SeqCst),
        4
    );

    let stats = proxy.stats();
    let s = stats.iter().find(|s| s.route == "svc-all").unwrap();
    assert_eq!(
        (s.direction, s.cluster.as_str()),
        (Direction::Outbound, "svc")
    );
    assert_eq!(s.count(StatusClass::Success), 4);
    assert_eq!(s.success_rate(), Some(1.0));
    assert!(s.latency_quantile(0.99).is_some());
    proxy.shutdown().await;
}

#[tokio::test]
async fn header_case_is_preserved_both_ways() {
    let recorder = raw_recorder().await;
    let (proxy, listen) = proxy_to(&[recorder.addr]).await;
    let response = raw_http(
        listen,
        "GET /case HTTP/1.1\r\nHost: svc\r\nX-Custom-Case: Yes\r\nx-lower: 1\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response.contains("\r\nX-Reply-Case: Mixed\r\n"),
        "{response}"
    );
    let heads = recorder.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1);
    assert!(
        heads[0].contains("\r\nX-Custom-Case: Yes\r\n"),
        "{}",
        heads[0]
    );
    assert!(heads[0].contains("\r\nx-lower: 1\r\n"), "{}", heads[0]);
    assert!(
        heads[0].starts_with("GET /case HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn local_replies_carry_envoy_statuses() {
    let backend = http_backend("b1").await;
    let (proxy, listen) = proxy_to(&[backend.addr]).await;
    assert_eq!(
        get(listen, "unknown-host", "/").await.status,
        404,
        "no virtual host"
    );
    let missing = get(listen, "svc", "/missing").await;
    assert_eq!(
        (missing.status.as_u16(), &missing.body[..]),
        (503, &b"cluster not found"[..])
    );
    let closed = get(listen, "svc", "/closed").await;
    assert_eq!(closed.status, 502);
    assert!(String::from_utf8_lossy(&closed.body).contains("connection failure"));
    assert_eq!(get(listen, "svc:80", "/").await.status, 200);
    let ws = Request::get("/")
        .header("host", "svc")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(empty())
        .unwrap();
    assert_eq!(send(listen, ws).await.status, 403, "websocket not enabled");
    let tunnel = Request::connect("svc:443")
        .header("host", "svc:443")
        .body(empty())
        .unwrap();
    assert_eq!(send(listen, tunnel).await.status, 403, "no CONNECT tunnels");
    proxy.shutdown().await;
}

#[tokio::test]
async fn http_proxy_mode_routes_by_absolute_uri_authority() {
    let catalog = http_backend("catalog").await;
    let reviews = http_backend("reviews").await;
    let proxy = start_proxy(&[]).await;
    let listen = proxy.http_proxy_addr().unwrap();
    let mut rc = route_config(
        "http-proxy",
        &["catalog"],
        vec![route("catalog", "/", "catalog")],
    );
    let mut second = route_config(
        "x",
        &["reviews", "reviews:9080"],
        vec![route("reviews", "/", "reviews")],
    );
    rc.virtual_hosts.push(second.virtual_hosts.remove(0));
    Config {
        listeners: vec![http_listener(
            "http-proxy",
            listen,
            "http-proxy",
            false,
            None,
        )],
        routes: vec![rc],
        clusters: vec![eds_cluster("catalog"), eds_cluster("reviews")],
        endpoints: vec![
            cla("catalog", &[catalog.addr]),
            cla("reviews", &[reviews.addr]),
        ],
    }
    .apply(&mut proxy.config_handler(), "1");
    for (uri, backend) in [
        ("http://catalog/items", "catalog"),
        ("http://reviews:9080/r/1", "reviews"),
    ] {
        let req = Request::get(uri).body(empty()).unwrap();
        let reply = send(listen, req).await;
        assert_eq!(reply.status, 200, "{uri}");
        assert_eq!(reply.header("x-backend"), backend, "{uri}");
    }
    let raw = raw_http(
        listen,
        "GET http://catalog/items HTTP/1.1\r\nHost: catalog\r\n\r\n",
    )
    .await;
    assert!(raw.contains("x-backend: catalog"), "{raw}");
    proxy.shutdown().await;
}

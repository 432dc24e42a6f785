//! HTTP/2 over cleartext: h2c downstream forwarded as h2 (use-downstream protocol) with
//! trailers, CONNECT refused, and HTTP/1.1 downstream upgraded to an explicit-h2 cluster.

use http::{Request, Version};

use crate::backend::http_backend;
use crate::client::{empty, full, get, h2, read};
use crate::xds::{Config, cla, eds_cluster, h2_cluster, http_listener, route, route_config};
use crate::{start_proxy, step};

#[tokio::test]
async fn h2c_end_to_end_with_trailers_and_h1_to_h2_upstream() {
    let backend = http_backend("grpc").await;
    let proxy = start_proxy(&["svc"]).await;
    let listen = proxy.upstream_addr("svc").unwrap();
    Config {
        listeners: vec![http_listener("out", listen, "routes", false, None)],
        routes: vec![route_config(
            "routes",
            &["*"],
            vec![route("forced-h2", "/h2/", "h2"), route("same", "/", "same")],
        )],
        clusters: vec![eds_cluster("same"), h2_cluster("h2")],
        endpoints: vec![cla("same", &[backend.addr]), cla("h2", &[backend.addr])],
    }
    .apply(&mut proxy.config_handler(), "1");

    let mut conn = h2(listen).await;
    let req = Request::post("http://svc/pkg.Svc/Method")
        .version(Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full("payload"))
        .unwrap();
    let reply = read(step("h2 echo", conn.send_request(req)).await.unwrap()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "payload");
    assert_eq!(
        reply.header("x-version"),
        "HTTP/2.0",
        "h2 downstream stays h2 upstream"
    );
    assert_eq!(reply.header("x-host"), "svc");

    let req = Request::get("http://svc/trailers")
        .version(Version::HTTP_2)
        .body(empty())
        .unwrap();
    let reply = read(step("h2 trailers", conn.send_request(req)).await.unwrap()).await;
    assert_eq!(reply.body, "hello");
    let trailers = reply.trailers.expect("trailers forwarded");
    assert_eq!(trailers["grpc-status"], "0");

    // As Envoy without CONNECT among its upgrades: refused, and the connection goes on.
    let tunnel = Request::connect("svc:443")
        .version(Version::HTTP_2)
        .body(empty())
        .unwrap();
    let reply = step("h2 CONNECT", conn.send_request(tunnel)).await.unwrap();
    assert_eq!(reply.status(), 403, "no CONNECT tunnels");
    let req = Request::get("http://svc/plain")
        .version(Version::HTTP_2)
        .body(empty())
        .unwrap();
    let reply = read(
        step("h2 after CONNECT", conn.send_request(req))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200);

    let reply = get(listen, "svc", "/h2/x").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-version"), "HTTP/2.0", "explicit h2 cluster");
    let reply = get(listen, "svc", "/plain").await;
    assert_eq!(reply.header("x-version"), "HTTP/1.1");
    proxy.shutdown().await;
}

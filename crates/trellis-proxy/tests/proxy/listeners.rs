//! Listener lifecycle: connections that arrive before config wait for it, LDS addresses are
//! bound on demand and released when removed, and shutdown lets in-flight requests finish.

use std::net::SocketAddr;

use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_proxy::TypeUrl;
use trellis_xds::client::Handler;

use crate::backend::http_backend;
use crate::client::{empty, get, send};
use crate::xds::{Config, any, cla, eds_cluster, http_listener, route, route_config};
use crate::{eventually, start_proxy, step};

fn config(listen: SocketAddr, backend: SocketAddr) -> Config {
    Config {
        listeners: vec![http_listener("out", listen, "routes", false, None)],
        routes: vec![route_config(
            "routes",
            &["*"],
            vec![route("all", "/", "svc")],
        )],
        clusters: vec![eds_cluster("svc")],
        endpoints: vec![cla("svc", &[backend])],
    }
}

#[tokio::test]
async fn early_connections_wait_for_the_first_config() {
    let backend = http_backend("b").await;
    let proxy = start_proxy(&["svc"]).await;
    let listen = proxy.upstream_addr("svc").unwrap();
    let mut early = TcpStream::connect(listen).await.unwrap();
    early
        .write_all(b"GET /early HTTP/1.1\r\nHost: svc\r\n\r\n")
        .await
        .unwrap();
    // On this single-threaded runtime the proxy's accept loop runs when the test yields; let it
    // accept and park the connection before any config exists.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    config(listen, backend.addr).apply(&mut proxy.config_handler(), "1");
    let mut head = [0u8; 15];
    step("early response", early.read_exact(&mut head))
        .await
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200 OK");
    proxy.shutdown().await;
}

#[tokio::test]
async fn lds_addresses_are_bound_on_demand_and_released() {
    let backend = http_backend("b").await;
    let proxy = start_proxy(&[]).await;
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = free.local_addr().unwrap();
    drop(free);
    let mut handler = proxy.config_handler();
    config(listen, backend.addr).apply(&mut handler, "1");
    eventually("listener bound", async || {
        TcpStream::connect(listen).await.is_ok()
    })
    .await;
    assert_eq!(get(listen, "svc", "/").await.status, 200);

    handler.apply(TypeUrl::Listener, "2", &[]).unwrap();
    eventually("listener released", async || {
        TcpStream::connect(listen).await.is_err()
    })
    .await;
    let again = http_listener("out", listen, "routes", false, None);
    handler
        .apply(TypeUrl::Listener, "3", &[any(&again)])
        .unwrap();
    eventually("listener bound again", async || {
        TcpStream::connect(listen).await.is_ok()
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let backend = http_backend("b").await;
    let proxy = start_proxy(&["svc"]).await;
    let listen = proxy.upstream_addr("svc").unwrap();
    config(listen, backend.addr).apply(&mut proxy.config_handler(), "1");
    let slow = tokio::spawn(async move {
        let req = Request::get("/slow")
            .header("host", "svc")
            .body(empty())
            .unwrap();
        send(listen, req).await
    });
    step("slow request arrives", backend.arrived.notified()).await;
    let shutdown = tokio::spawn(proxy.shutdown());
    eventually("listener closed", async || {
        TcpStream::connect(listen).await.is_err()
    })
    .await;
    backend.release.notify_one();
    let reply = step("in-flight request", slow).await.unwrap();
    assert_eq!(reply.body, "slow done");
    step("shutdown", shutdown).await.unwrap();
}

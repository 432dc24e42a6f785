//! Each demo service called directly on loopback, and the load generator against a real server.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use trellis_demo::{
    Catalog, CatalogPage, FrontendPage, LoadGen, LoadStats, RateRequest, RatingsClient,
    ShutdownSignal, serve_catalog, serve_frontend, serve_ratings, shutdown_channel, stars_for,
};

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

async fn start_catalog(catalog: Catalog, signal: &ShutdownSignal) -> SocketAddr {
    let (listener, addr) = bind().await;
    tokio::spawn(serve_catalog(listener, catalog, signal.clone().wait()));
    addr
}

async fn start_ratings(signal: &ShutdownSignal) -> SocketAddr {
    let (listener, addr) = bind().await;
    tokio::spawn(serve_ratings(listener, signal.clone().wait()));
    addr
}

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{addr}{path}").parse().unwrap();
    let response = client.get(uri).await.unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn catalog_lists_items_with_its_version() {
    let (_trigger, signal) = shutdown_channel();
    let addr = start_catalog(Catalog::v2(), &signal).await;
    let (status, body) = get(addr, "/items").await;
    assert_eq!(status, StatusCode::OK);
    let page: CatalogPage = serde_json::from_slice(&body).unwrap();
    assert_eq!(page.version, "v2");
    assert_eq!(page.items.len(), 3);
    assert_eq!(get(addr, "/nope").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ratings_rate_and_watch() {
    let (_trigger, signal) = shutdown_channel();
    let addr = start_ratings(&signal).await;
    let mut client = RatingsClient::connect_lazy(addr).unwrap();

    let request = RateRequest {
        item: "twine".to_owned(),
    };
    let reply = client.rate(request.clone()).await.unwrap().into_inner();
    assert_eq!(reply.item, "twine");
    assert_eq!(reply.stars, stars_for("twine"));
    assert!((1..=5).contains(&reply.stars));

    let mut stream = client.watch(request).await.unwrap().into_inner();
    let mut stars = Vec::new();
    while let Some(reply) = stream.message().await.unwrap() {
        stars.push(reply.stars);
    }
    assert_eq!(stars.len(), 3);
    assert_eq!(stars[0], stars_for("twine"));

    let empty = RateRequest {
        item: String::new(),
    };
    let status = client.rate(empty).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn frontend_combines_catalog_and_ratings() {
    let (trigger, signal) = shutdown_channel();
    let catalog = start_catalog(Catalog::v1(), &signal).await;
    let ratings = start_ratings(&signal).await;
    let (listener, frontend) = bind().await;
    let served = tokio::spawn(serve_frontend(
        listener,
        catalog,
        ratings,
        signal.clone().wait(),
    ));

    let (status, body) = get(frontend, "/").await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let page: FrontendPage = serde_json::from_slice(&body).unwrap();
    assert_eq!(page.catalog_version, "v1");
    assert_eq!(page.items, 3);
    assert_eq!(page.stars, stars_for(&page.featured));

    trigger.trigger();
    served.await.unwrap().unwrap();
}

#[tokio::test]
async fn frontend_answers_502_when_an_upstream_is_down() {
    let (_trigger, signal) = shutdown_channel();
    let catalog = start_catalog(Catalog::v1(), &signal).await;
    let (closed, dead) = bind().await;
    drop(closed);
    let (listener, frontend) = bind().await;
    tokio::spawn(serve_frontend(
        listener,
        catalog,
        dead,
        signal.clone().wait(),
    ));

    let (status, body) = get(frontend, "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        String::from_utf8_lossy(&body).contains("ratings"),
        "{body:?}"
    );
}

#[tokio::test]
async fn loadgen_sends_at_the_requested_rate() {
    let (_trigger, signal) = shutdown_channel();
    let catalog = start_catalog(Catalog::v1(), &signal).await;
    let load = LoadGen {
        path: "/items".to_owned(),
        duration: Some(Duration::from_secs(2)),
        ..LoadGen::new(catalog, 200)
    };
    let stats = LoadStats::default();
    load.run(&stats, std::future::pending()).await.unwrap();
    assert_eq!(stats.failures(), 0);
    let sent = stats.successes();
    // 400 due in 2 s. The generator skips ticks it missed instead of bursting: a stalled runner
    // sends fewer, never more.
    assert!((320..=440).contains(&sent), "sent {sent} requests");
    assert!(stats.mean_latency().is_some());
}

#[tokio::test]
async fn loadgen_stops_on_shutdown_and_counts_failures() {
    let (closed, dead) = bind().await;
    drop(closed);
    let (trigger, signal) = shutdown_channel();
    let load = LoadGen::new(dead, 100);
    let stats = LoadStats::default();
    let stop = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.trigger();
    };
    let (ran, ()) = tokio::join!(load.run(&stats, signal.wait()), stop);
    ran.unwrap();
    assert_eq!(stats.successes(), 0);
    assert!(stats.failures() > 0);
}

#[tokio::test]
async fn loadgen_rejects_an_invalid_path() {
    let load = LoadGen {
        path: "no slash".to_owned(),
        ..LoadGen::new("127.0.0.1:1".parse().unwrap(), 10)
    };
    let stats = LoadStats::default();
    let ran = load.run(&stats, std::future::pending()).await;
    assert!(matches!(ran, Err(trellis_demo::DemoError::InvalidUri(_))));
}

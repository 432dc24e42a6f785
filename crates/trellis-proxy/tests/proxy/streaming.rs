//! Bodies stream through the proxy with backpressure: 1 MiB echoes, and 100 MiB uploads and
//! echoes from a generator while the process's resident memory stays flat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::stream;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::backend::http_backend;
use crate::client::{Body, full, h1, read};
use crate::xds::{Config, cla, eds_cluster, http_listener, route, route_config};
use crate::{start_proxy, step};

const MIB: usize = 1 << 20;
const CHUNK: usize = 64 * 1024;

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// A body of `total` bytes made on the fly, recording the peak RSS as it goes.
fn generated(total: usize, peak: Arc<AtomicU64>) -> Body {
    let chunk = Bytes::from((0..CHUNK).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    let frames = stream::iter((0..total / CHUNK).map(move |i| {
        if i % 64 == 0 {
            peak.fetch_max(rss(), Ordering::Relaxed);
        }
        Ok(Frame::data(chunk.clone()))
    }));
    BodyExt::boxed(StreamBody::new(frames))
}

async fn setup() -> (trellis_proxy::ProxyHandle, std::net::SocketAddr) {
    let backend = http_backend("big").await;
    let proxy = start_proxy(&["big"]).await;
    let listen = proxy.upstream_addr("big").unwrap();
    Config {
        listeners: vec![http_listener("out", listen, "routes", false, None)],
        routes: vec![route_config(
            "routes",
            &["*"],
            vec![route("big", "/", "big")],
        )],
        clusters: vec![eds_cluster("big")],
        endpoints: vec![cla("big", &[backend.addr])],
    }
    .apply(&mut proxy.config_handler(), "1");
    (proxy, listen)
}

#[tokio::test]
async fn one_mebibyte_echoes_with_length_and_chunked() {
    let (proxy, listen) = setup().await;
    let data: Vec<u8> = (0..MIB).map(|i| (i % 253) as u8).collect();
    let mut conn = h1(listen).await;
    let req = Request::post("/echo")
        .header("host", "big")
        .header("content-length", MIB)
        .body(full(data.clone()))
        .unwrap();
    let reply = read(step("1 MiB echo", conn.send_request(req)).await.unwrap()).await;
    assert_eq!(reply.body.as_ref(), data.as_slice());

    let req = Request::post("/echo")
        .header("host", "big")
        .body(generated(MIB, Arc::default()))
        .unwrap();
    let reply = read(
        step("1 MiB chunked echo", conn.send_request(req))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.body.len(), MIB);
    proxy.shutdown().await;
}

#[tokio::test]
async fn hundred_mebibytes_stream_without_buffering() {
    let (proxy, listen) = setup().await;
    let total = 100 * MIB;
    let before = rss();
    let peak = Arc::new(AtomicU64::new(before));
    let mut conn = h1(listen).await;

    let req = Request::post("/count")
        .header("host", "big")
        .body(generated(total, peak.clone()))
        .unwrap();
    let reply = read(
        step("100 MiB upload", conn.send_request(req))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.body, total.to_string(), "backend saw every byte");

    let req = Request::post("/echo")
        .header("host", "big")
        .body(generated(total, peak.clone()))
        .unwrap();
    let resp = step("100 MiB echo", conn.send_request(req)).await.unwrap();
    let mut body = resp.into_body();
    let mut received = 0usize;
    step("100 MiB echo body", async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                received += data.len();
            }
        }
    })
    .await;
    assert_eq!(received, total);
    let grown = peak.load(Ordering::Relaxed).saturating_sub(before);
    assert!(
        grown < 64 * MIB as u64,
        "RSS grew by {} MiB while streaming",
        grown / MIB as u64
    );
    proxy.shutdown().await;
}

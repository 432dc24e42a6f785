//! `/api/tap` through the real control plane and sidecars: the control plane opens every
//! proxy's admin `/tap` and merges them into one stream; filters and the limit apply, and a
//! client going away closes the proxies' taps.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use trellis_proxy::ProxyHandle;
use trellis_test::{
    HttpLines, Server, Sidecar, TestMesh, assert_eventually, http1_get, http1_lines, http1_request,
    spawn_http_echo,
};

use crate::common::{admin_json, metric, service};

/// Opens `/api/tap?QUERY` on the control plane; the proxies' taps are open once it returns.
async fn tap(admin: SocketAddr, query: &str) -> HttpLines {
    let lines = http1_lines(admin, &format!("/api/tap?{query}"))
        .await
        .unwrap();
    assert_eq!(lines.status, StatusCode::OK, "{query}");
    assert_eq!(lines.headers["content-type"], "application/x-ndjson");
    lines
}

/// Every line until the stream ends, parsed.
async fn all_lines(lines: &mut HttpLines) -> Vec<Value> {
    let mut all = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        all.push(serde_json::from_str(&line).unwrap());
    }
    all
}

/// The node id of each connected proxy, by its inbound address.
async fn node_ids(admin: SocketAddr) -> BTreeMap<String, String> {
    let workloads = admin_json(admin, "/api/workloads").await;
    let workloads = workloads.as_array().cloned().unwrap_or_default();
    let pair = |w: &Value| Some((w["address"].as_str()?.into(), w["node_id"].as_str()?.into()));
    workloads.iter().filter_map(pair).collect()
}

/// A mesh with two sidecars of `api` in front of one echo app.
async fn two_api_replicas() -> (TestMesh, Server, [ProxyHandle; 2]) {
    let mesh = TestMesh::start(&[("services.yaml", &service("api", "HTTP"))])
        .await
        .unwrap();
    let echo = spawn_http_echo("api").await.unwrap();
    let replica = async || {
        let sidecar = Sidecar::new("api", echo.addr().port());
        mesh.sidecar(sidecar).await.unwrap()
    };
    let replicas = [replica().await, replica().await];
    (mesh, echo, replicas)
}

#[tokio::test]
async fn taps_of_both_proxies_merge_with_filters_and_a_limit() {
    let (mesh, _echo, [a, b]) = two_api_replicas().await;
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("api"))
        .await
        .unwrap();
    let admin = mesh.admin_addr();
    let nodes = node_ids(admin).await;
    let node = |addr: SocketAddr| nodes[&addr.to_string()].clone();
    let (node_a, node_b) = (node(a.inbound_addr()), node(b.inbound_addr()));

    // Inbound requests under /status/ on either proxy, four in all. Requests outside the
    // filter come first on each proxy and must not be in the stream.
    let mut lines = tap(admin, "service=api&direction=inbound&path=/status/&limit=4").await;
    for (proxy, statuses) in [(&a, [201, 202]), (&b, [203, 204])] {
        let inbound = proxy.inbound_addr();
        let other = http1_get(inbound, "/other", &[("host", "api")])
            .await
            .unwrap();
        assert_eq!(other.status, StatusCode::OK);
        for status in statuses {
            let path = format!("/status/{status}?q=1");
            let reply = http1_get(inbound, &path, &[("host", "api")]).await.unwrap();
            assert_eq!(reply.status.as_u16(), status);
        }
    }
    let merged = all_lines(&mut lines).await;
    assert_eq!(merged.len(), 4, "the limit ends the stream: {merged:#?}");
    let mut by_proxy: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for line in &merged {
        let event = &line["event"];
        assert_eq!(
            (&event["direction"], &event["method"], &event["authority"]),
            (&"inbound".into(), &"GET".into(), &"api".into()),
            "{line}"
        );
        assert_eq!(
            event["status"].as_u64(),
            event["path"].as_str().and_then(status_in),
            "{line}"
        );
        let proxy = line["proxy"].as_str().unwrap();
        by_proxy
            .entry(proxy)
            .or_default()
            .insert(event["path"].as_str().unwrap());
    }
    let expected = BTreeMap::from([
        (
            node_a.as_str(),
            BTreeSet::from(["/status/201?q=1", "/status/202?q=1"]),
        ),
        (
            node_b.as_str(),
            BTreeSet::from(["/status/203?q=1", "/status/204?q=1"]),
        ),
    ]);
    assert_eq!(by_proxy, expected);

    // The client's outbound POSTs only: its GET is left out.
    let mut lines = tap(
        admin,
        "service=client&direction=outbound&method=POST&limit=1",
    )
    .await;
    let to_api = client.upstream_addr("api").unwrap();
    let get = http1_get(to_api, "/status/200", &[]).await.unwrap();
    assert_eq!(get.status, StatusCode::OK);
    let post = http1_request(to_api, "POST", "/orders", &[], b"{}")
        .await
        .unwrap();
    assert_eq!(post.status, StatusCode::OK);
    let merged = all_lines(&mut lines).await;
    assert_eq!(merged.len(), 1, "{merged:#?}");
    let event = &merged[0]["event"];
    assert_eq!(
        (
            &event["direction"],
            &event["method"],
            &event["path"],
            &event["cluster"]
        ),
        (
            &"outbound".into(),
            &"POST".into(),
            &"/orders".into(),
            &"outbound|api.default".into()
        ),
        "{event}"
    );
    assert_eq!(merged[0]["proxy"], node(client.inbound_addr()));
}

/// The status an echo `/status/CODE` path asks for.
fn status_in(path: &str) -> Option<u64> {
    let code = path.strip_prefix("/status/")?;
    code.split('?').next()?.parse().ok()
}

#[tokio::test]
async fn unknown_services_and_bad_filters_are_refused() {
    let mesh = TestMesh::start(&[("services.yaml", &service("api", "HTTP"))])
        .await
        .unwrap();
    let echo = spawn_http_echo("api").await.unwrap();
    let _api = mesh
        .sidecar(Sidecar::new("api", echo.addr().port()))
        .await
        .unwrap();
    let admin = mesh.admin_addr();
    for (query, status, message) in [
        (
            "service=nobody",
            StatusCode::NOT_FOUND,
            "no connected proxy of service \"nobody\" in namespace \"default\"",
        ),
        (
            "service=api&namespace=shop",
            StatusCode::NOT_FOUND,
            "in namespace \"shop\"",
        ),
        (
            "service=api&direction=sideways",
            StatusCode::BAD_REQUEST,
            "direction: expected inbound, outbound or both",
        ),
    ] {
        let mut answer = http1_lines(admin, &format!("/api/tap?{query}"))
            .await
            .unwrap();
        let text = answer.text().await.unwrap();
        assert_eq!(answer.status, status, "{query}: {text}");
        assert!(text.contains(message), "{query}: {text}");
    }
}

#[tokio::test]
async fn a_client_going_away_closes_every_proxy_tap() {
    let (mesh, _echo, [a, b]) = two_api_replicas().await;
    let admin = mesh.admin_addr();
    let taps_open = async || metric(admin, "trellis_control_proxy_taps").await;
    // Taps each proxy's admin server holds open.
    let watching = async || {
        let mut watchers = Vec::new();
        for proxy in [&a, &b] {
            watchers.push(metric(proxy.admin_addr(), "trellis_tap_watchers").await);
        }
        watchers
    };
    assert_eq!(taps_open().await, Some(0.0));
    assert_eq!(watching().await, [Some(0.0), Some(0.0)]);

    let mut lines = tap(admin, "service=api").await;
    assert_eq!(taps_open().await, Some(2.0));
    assert_eq!(watching().await, [Some(1.0), Some(1.0)]);
    http1_get(a.inbound_addr(), "/", &[("host", "api")])
        .await
        .unwrap();
    let first: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(first["event"]["path"], "/", "{first}");

    // No request ends the stream: dropping it must. The control plane's readers stop, their
    // connections close, and each proxy ends its side, dropping its tap (a proxy builds no
    // request events while no tap watches and no access log is on).
    drop(lines);
    assert_eventually!(
        Duration::from_secs(5),
        taps_open().await == Some(0.0),
        "trellis_control_proxy_taps is {:?}",
        taps_open().await
    );
    assert_eventually!(
        Duration::from_secs(5),
        watching().await == [Some(0.0), Some(0.0)],
        "the proxies still watch: {:?}",
        watching().await
    );
}

//! Each test-support helper exercised against its partner: servers against the client helpers.

use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_test::{
    ServingStatus, TempConfigDir, grpc_check, grpc_watch, http1_download, http1_get, http2_get,
    post_streamed, raw_http1, spawn_grpc_health, spawn_http_echo, spawn_raw_http_recorder,
    spawn_tcp_echo, spawn_tcp_greeter, spawn_ws_echo, tcp_roundtrip, ws_roundtrip,
};

#[tokio::test]
async fn echo_describes_http1_requests() -> anyhow::Result<()> {
    let echo = spawn_http_echo("alpha").await?;
    let reply = http1_get(echo.addr(), "/a/b?x=1", &[("X-Test", "yes")]).await?;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-served-by"), Some("alpha"));
    let echoed = reply.echo()?;
    assert_eq!(echoed.server, "alpha");
    assert_eq!(echoed.method, "GET");
    assert_eq!(
        (echoed.path.as_str(), echoed.query.as_str()),
        ("/a/b", "x=1")
    );
    assert_eq!(echoed.version, "HTTP/1.1");
    assert_eq!(echoed.header("x-test"), Some("yes"));
    assert_eq!(echoed.authority, echo.addr().to_string());
    assert_eq!(echoed.body_len, 0);
    Ok(())
}

#[tokio::test]
async fn echo_speaks_h2c() -> anyhow::Result<()> {
    let echo = spawn_http_echo("beta").await?;
    let reply = http2_get(echo.addr(), "/h2", &[("host", "catalog.local")]).await?;
    let echoed = reply.echo()?;
    assert_eq!(echoed.version, "HTTP/2.0");
    assert_eq!(echoed.authority, "catalog.local");
    assert_eq!(reply.header("x-served-by"), Some("beta"));
    Ok(())
}

#[tokio::test]
async fn echo_streams_bodies_both_ways() -> anyhow::Result<()> {
    let echo = spawn_http_echo("gamma").await?;
    let odd = 3 * 1024 * 1024 + 17;
    assert_eq!(
        http1_download(echo.addr(), &format!("/bytes/{odd}")).await?,
        (StatusCode::OK, odd)
    );
    let reply = post_streamed(echo.addr(), "/upload", odd).await?;
    assert_eq!(reply.echo()?.body_len, odd);
    assert_eq!(reply.echo()?.header("transfer-encoding"), Some("chunked"));
    Ok(())
}

#[tokio::test]
async fn echo_status_and_delay_routes() -> anyhow::Result<()> {
    let echo = spawn_http_echo("delta").await?;
    let unavailable = http1_get(echo.addr(), "/status/503", &[]).await?;
    assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(unavailable.echo()?.path, "/status/503");
    let no_content = http1_get(echo.addr(), "/status/204", &[]).await?;
    assert_eq!(no_content.status, StatusCode::NO_CONTENT);
    assert!(no_content.body.is_empty());
    assert_eq!(
        http1_get(echo.addr(), "/status/abc", &[]).await?.status,
        StatusCode::BAD_REQUEST
    );
    let started = tokio::time::Instant::now();
    let delayed = http1_get(echo.addr(), "/delay/50", &[]).await?;
    assert_eq!(delayed.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(50));
    Ok(())
}

#[tokio::test]
async fn dropping_a_server_closes_its_connections() -> anyhow::Result<()> {
    let echo = spawn_tcp_echo().await?;
    let addr = echo.addr();
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).await?;
    drop(echo);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await?;
    assert!(read.is_err() || rest.is_empty(), "connection still open");
    assert!(TcpStream::connect(addr).await.is_err());
    Ok(())
}

#[tokio::test]
async fn raw_recorder_keeps_header_case() -> anyhow::Result<()> {
    let recorder = spawn_raw_http_recorder().await?;
    let request = "GET /raw HTTP/1.1\r\nHost: x\r\nX-Mixed-Case: Yes\r\nconnection: close\r\n\r\n";
    let response = raw_http1(recorder.addr(), request).await?;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response.ends_with("X-Mixed-Case: Yes\r\nconnection: close\r\n"),
        "{response}"
    );
    let heads = recorder.heads();
    assert_eq!(heads.len(), 1);
    assert!(heads[0].starts_with("GET /raw HTTP/1.1\r\n"));
    assert!(heads[0].lines().any(|line| line == "X-Mixed-Case: Yes"));
    Ok(())
}

#[tokio::test]
async fn grpc_health_check_and_watch() -> anyhow::Result<()> {
    let health = spawn_grpc_health().await?;
    assert_eq!(grpc_check(health.addr(), "").await?, ServingStatus::Serving);
    assert!(grpc_check(health.addr(), "ratings").await.is_err());

    health.set_serving("ratings", true).await;
    let mut watch = grpc_watch(health.addr(), "ratings").await?;
    assert_eq!(watch.next().await?, ServingStatus::Serving);
    health.set_serving("ratings", false).await;
    assert_eq!(watch.next().await?, ServingStatus::NotServing);
    health.set_serving("", false).await;
    assert_eq!(
        grpc_watch(health.addr(), "").await?.take(1).await?,
        [ServingStatus::NotServing]
    );
    Ok(())
}

#[tokio::test]
async fn websocket_round_trip() -> anyhow::Result<()> {
    let ws = spawn_ws_echo().await?;
    let echoes = ws_roundtrip(&ws.addr().to_string(), &["one", "two"]).await?;
    assert_eq!(echoes, ["one", "two"]);
    let echoes = ws_roundtrip(&format!("ws://{}/chat", ws.addr()), &["three"]).await?;
    assert_eq!(echoes, ["three"]);
    Ok(())
}

#[tokio::test]
async fn tcp_echo_and_greeter() -> anyhow::Result<()> {
    let echo = spawn_tcp_echo().await?;
    assert_eq!(tcp_roundtrip(echo.addr(), b"hello").await?, b"hello");

    let greeter = spawn_tcp_greeter("220 ready\r\n").await?;
    let mut stream = TcpStream::connect(greeter.addr()).await?;
    let mut greeting = [0u8; 11];
    stream.read_exact(&mut greeting).await?;
    assert_eq!(&greeting, b"220 ready\r\n");
    assert_eq!(
        tcp_roundtrip(greeter.addr(), b"hi").await?,
        b"220 ready\r\nhi"
    );
    Ok(())
}

#[tokio::test]
async fn temp_config_dir_writes_and_removes() -> anyhow::Result<()> {
    let dir = TempConfigDir::new()?;
    let path = dir.write("routes.yaml", "kind: HTTPRoute\n")?;
    assert_eq!(std::fs::read_to_string(&path)?, "kind: HTTPRoute\n");
    dir.write("routes.yaml", "kind: GRPCRoute\n")?;
    assert_eq!(std::fs::read_to_string(&path)?, "kind: GRPCRoute\n");
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);
    dir.remove("routes.yaml")?;
    assert!(!path.exists());
    Ok(())
}

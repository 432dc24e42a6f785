//! The control plane's admin API as the CLI reads it: one HTTP/1.1 request per call.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request to the admin API; returns the body of a 2xx answer.
pub(crate) async fn request(admin: SocketAddr, method: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .with_context(|| format!("connecting to the control plane's admin API at {admin}"))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if !status.starts_with('2') {
        bail!("{method} {path}: HTTP {status}: {}", body.trim());
    }
    Ok(body.to_owned())
}

/// `GET path`, parsed as JSON.
pub(crate) async fn get_json(admin: SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let body = request(admin, "GET", path).await?;
    serde_json::from_str(&body).with_context(|| {
        format!("GET {path}: the admin API answered with something else than JSON")
    })
}

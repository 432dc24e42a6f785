//! The control plane's admin API as the CLI reads it: one HTTP/1.1 request per call, or a
//! streamed answer read line by line.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

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

/// The elements of a JSON array; none for anything else.
pub(crate) fn items(v: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    v.as_array().into_iter().flatten()
}

/// A JSON string, or `?` for anything else.
pub(crate) fn str_of(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or("?")
}

/// The longest line a stream may send.
const MAX_LINE: usize = 1 << 20;

/// `GET path` whose 2xx answer streams lines, read with [`Lines::next`] as they arrive;
/// dropping them closes the connection.
pub(crate) async fn get_lines(admin: SocketAddr, path: &str) -> anyhow::Result<Lines> {
    let stream = tokio::net::TcpStream::connect(admin)
        .await
        .with_context(|| format!("connecting to the control plane's admin API at {admin}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let lines = async {
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, admin.to_string())
            .body(Empty::<Bytes>::new())?;
        let response = sender
            .send_request(request)
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let body = response.into_body();
        if !status.is_success() {
            let text = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            bail!("GET {path}: HTTP {}: {}", status.as_u16(), text.trim());
        }
        Ok::<_, anyhow::Error>(body)
    };
    match lines.await {
        Ok(body) => Ok(Lines {
            body,
            buf: Vec::new(),
            conn,
        }),
        Err(e) => {
            conn.abort();
            Err(e)
        }
    }
}

/// The lines of a streamed answer.
#[derive(Debug)]
pub(crate) struct Lines {
    body: Incoming,
    /// Bytes after the last complete line.
    buf: Vec<u8>,
    conn: JoinHandle<()>,
}

impl Lines {
    /// The next line without its newline; `None` once the answer ended.
    pub(crate) async fn next(&mut self) -> anyhow::Result<Option<String>> {
        let mut scanned = 0;
        loop {
            if let Some(end) = self.buf[scanned..].iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=scanned + end).collect();
                let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                return Ok(Some(line));
            }
            scanned = self.buf.len();
            if scanned > MAX_LINE {
                bail!("the control plane sent a line longer than {MAX_LINE} bytes");
            }
            let Some(frame) = self.body.frame().await else {
                return Ok(None);
            };
            let frame = frame.context("reading the control plane's stream")?;
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

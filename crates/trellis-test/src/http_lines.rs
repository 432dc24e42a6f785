//! A streamed HTTP/1.1 answer (JSON lines, a tap) read line by line as it arrives; dropping it
//! closes the connection, as a client going away would.

use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::CLIENT_TIMEOUT;

/// An answer whose body is read a line at a time.
#[derive(Debug)]
pub struct HttpLines {
    /// The response status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    body: Incoming,
    /// Bytes after the last complete line.
    buf: Vec<u8>,
    /// The connection's task, aborted on drop so the socket closes at once.
    conn: JoinHandle<()>,
}

/// `GET path` over HTTP/1.1 on a fresh connection to `addr`; returns once the response head
/// arrived (within [`CLIENT_TIMEOUT`]).
pub async fn http1_lines(addr: SocketAddr, path: &str) -> anyhow::Result<HttpLines> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = Request::get(path)
        .header(HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = tokio::time::timeout(CLIENT_TIMEOUT, sender.send_request(request)).await;
    let response = match response {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            conn.abort();
            return Err(e.into());
        }
        Err(_) => {
            conn.abort();
            anyhow::bail!("no response head from {addr}{path} within {CLIENT_TIMEOUT:?}");
        }
    };
    let (parts, body) = response.into_parts();
    Ok(HttpLines {
        status: parts.status,
        headers: parts.headers,
        body,
        buf: Vec::new(),
        conn,
    })
}

impl HttpLines {
    /// The next line without its newline, `None` once the body ended; fails when none comes
    /// within [`CLIENT_TIMEOUT`].
    pub async fn next_line(&mut self) -> anyhow::Result<Option<String>> {
        tokio::time::timeout(CLIENT_TIMEOUT, self.read_line())
            .await
            .context("no line within the client timeout")?
    }

    async fn read_line(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..end]).into_owned()));
            }
            match self.body.frame().await {
                None if self.buf.is_empty() => return Ok(None),
                None => anyhow::bail!("the body ended within a line"),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The rest of the body as text (for an error answer).
    pub async fn text(&mut self) -> anyhow::Result<String> {
        let rest = async {
            while let Some(frame) = self.body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    self.buf.extend_from_slice(&data);
                }
            }
            Ok::<_, anyhow::Error>(())
        };
        tokio::time::timeout(CLIENT_TIMEOUT, rest)
            .await
            .context("the body did not end within the client timeout")??;
        Ok(String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned())
    }
}

impl Drop for HttpLines {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

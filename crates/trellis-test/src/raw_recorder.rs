//! A raw-TCP HTTP/1.1 backend that records request heads byte for byte, to check what a proxy
//! really sent (header-name case, order, duplicates) where a parsing server would normalise it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::server::{Server, spawn_server};

/// Longest request head the recorder reads before giving up on a connection.
const MAX_HEAD: usize = 64 * 1024;

/// How long the recorder keeps reading (and discarding) a request body after answering, so that
/// unread bytes do not turn its close into a reset that could destroy the response.
const LINGER: Duration = Duration::from_secs(1);

/// A running raw recorder; dropping it stops the server.
#[derive(Debug)]
pub struct RawRecorder {
    server: Server,
    heads: Arc<Mutex<Vec<String>>>,
}

impl RawRecorder {
    /// The loopback address the recorder listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every request head received so far, in order: the request line and header lines exactly
    /// as sent, each ending in its original line break, without the blank line that ends the
    /// head. Non-UTF-8 bytes are decoded lossily.
    pub fn heads(&self) -> Vec<String> {
        self.heads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Spawns the recorder. Each connection carries one request: the recorder reads the head, answers
/// `200 OK` with `Connection: close` and the raw head as a `text/plain` body, and closes.
pub async fn spawn_raw_http_recorder() -> anyhow::Result<RawRecorder> {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&heads);
    let server = spawn_server(move |stream| record(stream, Arc::clone(&recorded))).await?;
    Ok(RawRecorder { server, heads })
}

async fn record(stream: TcpStream, heads: Arc<Mutex<Vec<String>>>) {
    let mut reader = BufReader::new(stream);
    let head = match read_head(&mut reader).await {
        Ok(head) => head,
        Err(error) => {
            tracing::debug!(%error, "raw recorder could not read a request head");
            return;
        }
    };
    heads
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(head.clone());
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
        head.len()
    );
    let stream = reader.get_mut();
    if stream.write_all(response.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    // Whether the client closed or the linger ran out, the connection is done.
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

async fn read_head(reader: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut head = Vec::new();
    loop {
        let start = head.len();
        let read = reader.read_until(b'\n', &mut head).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = &head[start..];
        if line == b"\r\n" || line == b"\n" {
            head.truncate(start);
            return Ok(String::from_utf8_lossy(&head).into_owned());
        }
        if head.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too large"));
        }
    }
}

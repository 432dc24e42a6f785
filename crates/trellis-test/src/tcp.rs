//! Plain TCP backends (echo, and a server-speaks-first greeter) and a one-shot TCP client.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::CLIENT_TIMEOUT;
use crate::server::{Server, spawn_server};

/// Spawns a TCP server that echoes every byte back and half-closes when the client does.
pub async fn spawn_tcp_echo() -> anyhow::Result<Server> {
    spawn_server(|stream| echo(stream, None)).await
}

/// Spawns a server-speaks-first TCP server: it writes `greeting` as soon as it accepts a
/// connection, before reading anything, then echoes like [`spawn_tcp_echo`]. A proxy that waits
/// for client bytes to detect the protocol stalls on it.
pub async fn spawn_tcp_greeter(greeting: &str) -> anyhow::Result<Server> {
    let greeting: Arc<[u8]> = Arc::from(greeting.as_bytes());
    spawn_server(move |stream| echo(stream, Some(Arc::clone(&greeting)))).await
}

/// Connects to `addr`, sends `payload`, half-closes, and returns everything read until the server
/// closes: the echo of `payload`, after the greeting for a greeter.
pub async fn tcp_roundtrip(addr: SocketAddr, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(payload).await?;
        stream.shutdown().await?;
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await?;
        anyhow::Ok(received)
    };
    tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .context("tcp round trip timed out")?
}

async fn echo(mut stream: TcpStream, greeting: Option<Arc<[u8]>>) {
    let echoed = async {
        if let Some(greeting) = greeting {
            stream.write_all(&greeting).await?;
        }
        let (mut reader, mut writer) = stream.split();
        tokio::io::copy(&mut reader, &mut writer).await?;
        writer.shutdown().await
    };
    if let Err(error) = echoed.await {
        tracing::debug!(%error, "tcp echo ended with an error");
    }
}

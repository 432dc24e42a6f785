//! A WebSocket echo backend and a client that round-trips text messages through it.

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::CLIENT_TIMEOUT;
use crate::server::{Server, spawn_server};

/// Spawns a WebSocket server that echoes every text and binary message back on any path.
pub async fn spawn_ws_echo() -> anyhow::Result<Server> {
    spawn_server(|stream| async move {
        let socket = match tokio_tungstenite::accept_async(stream).await {
            Ok(socket) => socket,
            Err(error) => {
                tracing::debug!(%error, "websocket handshake failed");
                return;
            }
        };
        let (sink, source) = socket.split();
        let echoed = source
            .try_filter(|message| std::future::ready(message.is_text() || message.is_binary()))
            .forward(sink)
            .await;
        if let Err(error) = echoed {
            tracing::debug!(%error, "websocket echo ended with an error");
        }
    })
    .await
}

/// Connects to `target` (a `ws://` URL, or a bare `host:port` meaning `ws://host:port/`), sends
/// each message as text, waits for each echo, closes, and returns the echoes in order.
pub async fn ws_roundtrip(target: &str, messages: &[&str]) -> anyhow::Result<Vec<String>> {
    let url = if target.contains("://") {
        target.to_owned()
    } else {
        format!("ws://{target}/")
    };
    let exchange = async {
        let (mut socket, _response) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .with_context(|| format!("websocket connect to {url}"))?;
        let mut echoes = Vec::with_capacity(messages.len());
        for message in messages {
            socket.send(Message::text(*message)).await?;
            loop {
                match socket.next().await.context("websocket closed early")?? {
                    Message::Text(text) => {
                        echoes.push(text.as_str().to_owned());
                        break;
                    }
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    other => bail!("unexpected websocket message {other:?}"),
                }
            }
        }
        socket.close(None).await?;
        Ok(echoes)
    };
    tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .context("websocket round trip timed out")?
}

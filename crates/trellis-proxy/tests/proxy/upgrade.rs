//! WebSocket through an HTTP/1.1 upgrade.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::backend::ws_echo;
use crate::xds::{Config, cla, eds_cluster, http_listener, route, route_config};
use crate::{start_proxy, step};

#[tokio::test]
async fn websocket_echo_through_upgrade() {
    let backend = ws_echo().await;
    let proxy = start_proxy(&["ws"]).await;
    let listen = proxy.upstream_addr("ws").unwrap();
    Config {
        listeners: vec![http_listener("out", listen, "routes", true, None)],
        routes: vec![route_config("routes", &["*"], vec![route("ws", "/", "ws")])],
        clusters: vec![eds_cluster("ws")],
        endpoints: vec![cla("ws", &[backend])],
    }
    .apply(&mut proxy.config_handler(), "1");

    let stream = TcpStream::connect(listen).await.unwrap();
    let (mut ws, resp) = step(
        "websocket handshake",
        tokio_tungstenite::client_async("ws://ws/chat", stream),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 101);
    for text in ["hello", "world"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = step("websocket echo", ws.next()).await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let echoed = step("websocket echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed.into_data().as_ref(), &[1u8, 2, 3]);
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = step("close handshake", ws.next()).await {}
    drop(ws);

    let stats = proxy.stats();
    let s = stats.iter().find(|s| s.route == "ws").unwrap();
    assert_eq!(s.count(trellis_proxy::StatusClass::Informational), 1);
    proxy.shutdown().await;
}

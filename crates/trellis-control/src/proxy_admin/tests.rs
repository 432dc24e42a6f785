use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::*;

/// An admin server that answers every connection with `response`, or never with `None`.
async fn server(response: Option<&'static str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0; 1024];
                let _ = stream.read(&mut buf).await;
                match response {
                    Some(r) => stream.write_all(r.as_bytes()).await.unwrap(),
                    None => std::future::pending().await,
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn reads_the_body_of_a_success() {
    let addr = server(Some(
        "HTTP/1.1 200 OK\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"a\": true}",
    ))
    .await;
    let body = get(Some(&addr), "/config_dump").await.unwrap();
    assert_eq!(body, "{\"a\": true}");
}

#[tokio::test]
async fn an_error_status_names_path_and_status() {
    let addr = server(Some(
        "HTTP/1.1 404 Not Found\r\ncontent-length: 5\r\nconnection: close\r\n\r\nnope\n",
    ))
    .await;
    let err = get(Some(&addr), "/config_dump").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("its admin server at {addr} answered /config_dump with 404 Not Found: nope")
    );
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let addr = server(None).await;
    let err = get(Some(&addr), "/config_dump").await.unwrap_err();
    assert!(matches!(err, ProxyAdminError::Timeout { .. }), "{err:?}");
}

/// An admin server that streams `chunks` (chunked encoding) on its one connection, then keeps
/// it open; the receiver learns when the client closes it.
async fn streaming_server(chunks: &'static [&'static str]) -> (String, oneshot::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (closed_tx, closed) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0; 1024];
        let _ = stream.read(&mut buf).await;
        let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        for chunk in chunks {
            let framed = format!("{:x}\r\n{chunk}\r\n", chunk.len());
            stream.write_all(framed.as_bytes()).await.unwrap();
        }
        while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        let _ = closed_tx.send(());
    });
    (addr, closed)
}

#[tokio::test]
async fn lines_arrive_as_streamed_and_dropping_them_closes_the_connection() {
    let (addr, closed) = streaming_server(&["{\"a\":1}\n{\"b\"", ":2}\n", "\n{\"c\":3}\n"]).await;
    let mut lines = get_lines(Some(&addr), "/tap").await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(lines.next().await.unwrap().unwrap());
    }
    assert_eq!(seen, ["{\"a\":1}", "{\"b\":2}", "", "{\"c\":3}"]);
    drop(lines);
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the server saw the connection close")
        .unwrap();
}

#[tokio::test]
async fn a_stream_refused_with_an_error_status_says_why() {
    let addr = server(Some(
        "HTTP/1.1 400 Bad Request\r\ncontent-length: 20\r\nconnection: close\r\n\r\nunknown tap filter\r\n",
    ))
    .await;
    let err = get_lines(Some(&addr), "/tap?x=1").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "its admin server at {addr} answered /tap?x=1 with 400 Bad Request: unknown tap filter"
        )
    );
    let silent = server(None).await;
    let err = get_lines(Some(&silent), "/tap").await.unwrap_err();
    assert!(matches!(err, ProxyAdminError::Timeout { .. }), "{err:?}");
    let err = get_lines(None, "/tap").await.unwrap_err();
    assert!(matches!(err, ProxyAdminError::NoAddress), "{err:?}");
}

#[test]
fn only_unreserved_characters_stay_unencoded() {
    assert_eq!(percent_encode("web-1.a_b~"), "web-1.a_b~");
    assert_eq!(percent_encode("a/b c%&"), "a%2Fb%20c%25%26");
}

use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::*;

/// A proxy admin server whose `/tap` streams `lines`, then stays open.
struct FakeProxy {
    addr: String,
    /// The request line of each connection.
    requests: UnboundedReceiver<String>,
    /// One message per connection the client closed.
    closed: UnboundedReceiver<()>,
}

async fn fake_proxy(lines: &'static [&'static str]) -> FakeProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (requests_tx, requests) = unbounded_channel();
    let (closed_tx, closed) = unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let (requests_tx, closed_tx) = (requests_tx.clone(), closed_tx.clone());
            tokio::spawn(async move {
                let mut buf = [0; 4096];
                let n = stream.read(&mut buf).await.unwrap();
                let head = String::from_utf8_lossy(&buf[..n]);
                let _ = requests_tx.send(head.lines().next().unwrap_or_default().to_owned());
                let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                stream.write_all(head.as_bytes()).await.unwrap();
                for line in lines {
                    let chunk = format!("{:x}\r\n{line}\n\r\n", line.len() + 1);
                    stream.write_all(chunk.as_bytes()).await.unwrap();
                }
                while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                let _ = closed_tx.send(());
            });
        }
    });
    FakeProxy {
        addr,
        requests,
        closed,
    }
}

impl FakeProxy {
    fn target(&self, node_id: &str) -> Target {
        Target {
            node_id: node_id.into(),
            service: "api".into(),
            namespace: "default".into(),
            admin: Some(self.addr.clone()),
        }
    }

    async fn closes(&mut self) {
        tokio::time::timeout(Duration::from_secs(5), self.closed.recv())
            .await
            .expect("the tap connection was closed")
            .unwrap();
    }
}

fn text(line: Bytes) -> String {
    String::from_utf8(line.to_vec()).unwrap()
}

#[tokio::test]
async fn lines_of_every_proxy_are_merged_and_dropping_the_tap_closes_them() {
    let mut a = fake_proxy(&[r#"{"path":"/a1"}"#, r#"{"missed":3}"#, r#"{"path":"/a2"}"#]).await;
    let mut b = fake_proxy(&[r#"{"path":"/b1"}"#, "garbage", r#"{"path":"/b2"}"#]).await;
    let silent = Target {
        admin: None,
        ..a.target("c-1")
    };
    let gauge = Gauge::default();
    let proxies = vec![a.target("a-1"), b.target("b-1"), silent];
    let mut tap = MergedTap::open(proxies, "/tap?path=/x", None, gauge.clone())
        .await
        .unwrap();
    assert_eq!(gauge.get(), 2);
    assert_eq!(
        a.requests.recv().await.unwrap(),
        "GET /tap?path=/x HTTP/1.1"
    );
    assert_eq!(
        b.requests.recv().await.unwrap(),
        "GET /tap?path=/x HTTP/1.1"
    );

    let first = text(tap.next().await.unwrap());
    assert!(
        first.starts_with(r#"{"proxy":"c-1","error":"it advertised no admin address"#),
        "{first}"
    );
    let mut lines = Vec::new();
    for _ in 0..6 {
        lines.push(text(tap.next().await.unwrap()));
    }
    lines.sort();
    assert_eq!(
        lines,
        [
            r#"{"proxy":"a-1","event":{"path":"/a1"}}"#,
            r#"{"proxy":"a-1","event":{"path":"/a2"}}"#,
            r#"{"proxy":"a-1","missed":3}"#,
            r#"{"proxy":"b-1","error":"not a tap event: not a JSON object"}"#,
            r#"{"proxy":"b-1","event":{"path":"/b1"}}"#,
            r#"{"proxy":"b-1","event":{"path":"/b2"}}"#,
        ]
        .map(|l| format!("{l}\n"))
    );

    drop(tap);
    a.closes().await;
    b.closes().await;
    assert_eq!(gauge.get(), 0);
}

#[tokio::test]
async fn the_limit_counts_events_and_ends_the_stream() {
    const LINES: &[&str] = &[r#"{"n":1}"#, r#"{"missed":1}"#, r#"{"n":2}"#, r#"{"n":3}"#];
    let mut a = fake_proxy(LINES).await;
    let mut b = fake_proxy(LINES).await;
    let gauge = Gauge::default();
    let proxies = vec![a.target("a-1"), b.target("b-1")];
    let tap = MergedTap::open(proxies, "/tap?limit=4", Some(4), gauge.clone())
        .await
        .unwrap();
    let lines: Vec<String> = tap.into_stream().map(|l| text(l.unwrap())).collect().await;
    let events = lines.iter().filter(|l| l.contains("\"event\"")).count();
    assert_eq!(events, 4, "{lines:?}");
    assert!(lines.len() <= 6, "{lines:?}");
    a.closes().await;
    b.closes().await;
    assert_eq!(gauge.get(), 0);
}

#[tokio::test]
async fn no_proxy_to_tap_is_an_error_per_proxy() {
    // Nothing listens on port 1 (a port freed by a dropped listener could be taken again).
    let refusing = "127.0.0.1:1".to_owned();
    let proxies = vec![
        Target {
            node_id: "a-1".into(),
            service: "api".into(),
            namespace: "default".into(),
            admin: Some(refusing.clone()),
        },
        Target {
            node_id: "a-2".into(),
            service: "api".into(),
            namespace: "default".into(),
            admin: None,
        },
    ];
    let failed = MergedTap::open(proxies, "/tap", None, Gauge::default())
        .await
        .unwrap_err();
    let failed: Vec<(String, String)> = failed
        .into_iter()
        .map(|(node, e)| (node, e.to_string()))
        .collect();
    assert_eq!(failed[0].0, "a-1");
    assert!(
        failed[0]
            .1
            .starts_with(&format!("connecting to its admin server at {refusing}")),
        "{failed:?}"
    );
    assert_eq!(failed[1].0, "a-2");
}

#[test]
fn events_keep_their_bytes_and_notes_name_the_proxy() {
    let event = br#"{"method":"GET","path":"/a?b=\"c\"","status":200}"#;
    let line = annotate("node \"1\"", event);
    assert!(line.event);
    assert_eq!(
        text(line.bytes),
        "{\"proxy\":\"node \\\"1\\\"\",\"event\":{\"method\":\"GET\",\"path\":\"/a?b=\\\"c\\\"\",\"status\":200}}\n"
    );
    let missed = annotate("n", br#"{"missed":12}"#);
    assert!(!missed.event);
    assert_eq!(text(missed.bytes), "{\"proxy\":\"n\",\"missed\":12}\n");
    for odd in [&b"[1]"[..], b"{\"missed\":", b"garbage"] {
        let odd = annotate("n", odd);
        assert!(!odd.event);
        assert!(text(odd.bytes).contains("not a tap event"));
    }
}

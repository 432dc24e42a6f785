//! ADS server and client talking over real gRPC on loopback.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use trellis_xds::client::{self, ClientOptions, Handler};
use trellis_xds::server::{AdsServer, Hooks, SnapshotWatch, StopHandle, StreamId};
use trellis_xds::{Snapshot, TypeUrl};

#[derive(Default)]
struct Events {
    log: Mutex<Vec<String>>,
}

struct TestHooks {
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    events: Arc<Events>,
}

impl Hooks for TestHooks {
    fn connect(&self, stream: StreamId, node: &Node) -> Result<SnapshotWatch, tonic::Status> {
        self.events.push(format!("connect {stream} {}", node.id));
        Ok(self.snapshots.subscribe())
    }
    fn ack(&self, _: StreamId, type_url: TypeUrl, version: &str) {
        self.events.push(format!("ack {type_url} {version}"));
    }
    fn nack(&self, _: StreamId, type_url: TypeUrl, _: &str, error: &str) {
        self.events.push(format!("nack {type_url} {error}"));
    }
    fn disconnect(&self, stream: StreamId) {
        self.events.push(format!("disconnect {stream}"));
    }
}

impl Events {
    fn push(&self, e: String) {
        self.log.lock().unwrap().push(e);
    }
    fn has(&self, prefix: &str) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.starts_with(prefix))
    }
}

/// Every applied set: its type and resource names.
type Applied = Arc<Mutex<Vec<(TypeUrl, Vec<String>)>>>;

/// A handler that wants EDS for every cluster and rejects clusters named "bad".
#[derive(Clone, Default)]
struct TestHandler {
    applied: Applied,
    clusters: Arc<Mutex<Vec<String>>>,
}

impl Handler for TestHandler {
    fn apply(&mut self, type_url: TypeUrl, _: &str, resources: &[Any]) -> Result<(), String> {
        let names: Vec<String> = match type_url {
            TypeUrl::Cluster => resources
                .iter()
                .map(|a| Cluster::decode(a.value.as_slice()).unwrap().name)
                .collect(),
            TypeUrl::ClusterLoadAssignment => resources
                .iter()
                .map(|a| {
                    ClusterLoadAssignment::decode(a.value.as_slice())
                        .unwrap()
                        .cluster_name
                })
                .collect(),
            _ => Vec::new(),
        };
        if names.iter().any(|n| n == "bad") {
            return Err("cluster \"bad\": rejected by test".into());
        }
        if type_url == TypeUrl::Cluster {
            *self.clusters.lock().unwrap() = names.clone();
        }
        self.applied.lock().unwrap().push((type_url, names));
        Ok(())
    }
    fn wanted(&self, type_url: TypeUrl) -> Vec<String> {
        match type_url {
            TypeUrl::ClusterLoadAssignment => self.clusters.lock().unwrap().clone(),
            _ => Vec::new(),
        }
    }
}

fn snapshot(clusters: &[&str]) -> Option<Arc<Snapshot>> {
    let mut b = Snapshot::builder();
    for c in clusters {
        b.insert(
            TypeUrl::Cluster,
            c,
            &Cluster {
                name: (*c).to_owned(),
                ..Cluster::default()
            },
        );
        b.insert(
            TypeUrl::ClusterLoadAssignment,
            c,
            &ClusterLoadAssignment {
                cluster_name: (*c).to_owned(),
                ..ClusterLoadAssignment::default()
            },
        );
    }
    Some(Arc::new(b.seal()))
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A running server; dropping it closes its streams and stops serving.
struct Running {
    _stop: StopHandle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_on(listener: tokio::net::TcpListener, hooks: TestHooks) -> Running {
    let (server, stop) = AdsServer::new(Arc::new(hooks));
    let server = server.into_service();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    Running { _stop: stop, task }
}

async fn serve(hooks: TestHooks) -> (String, Running) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (format!("http://{addr}"), serve_on(listener, hooks).await)
}

fn options(endpoint: String) -> ClientOptions {
    ClientOptions {
        endpoint,
        node: Node {
            id: "n1".into(),
            ..Node::default()
        },
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
    }
}

#[tokio::test]
async fn pushes_acks_nacks_and_named_subscriptions() {
    let (snapshots, _) = watch::channel(snapshot(&["a"]));
    let events = Arc::new(Events::default());
    let hooks = TestHooks {
        snapshots: snapshots.clone(),
        events: events.clone(),
    };
    let (endpoint, server) = serve(hooks).await;
    let handler = TestHandler::default();
    let applied = handler.applied.clone();
    let client = tokio::spawn(client::run(
        options(endpoint),
        handler,
        std::future::pending(),
    ));

    let has = |t: TypeUrl, names: &[&str]| {
        applied
            .lock()
            .unwrap()
            .iter()
            .any(|(ty, n)| *ty == t && n == names)
    };
    eventually("cds and named eds", || {
        has(TypeUrl::Cluster, &["a"]) && has(TypeUrl::ClusterLoadAssignment, &["a"])
    })
    .await;
    eventually("acks", || events.has("ack cds") && events.has("ack eds")).await;

    snapshots.send_replace(snapshot(&["a", "b"]));
    eventually("eds follows new cluster", || {
        has(TypeUrl::ClusterLoadAssignment, &["a", "b"])
    })
    .await;

    snapshots.send_replace(snapshot(&["a", "bad"]));
    eventually("nack reaches the server", || {
        events.has("nack cds cluster \"bad\": rejected by test")
    })
    .await;
    assert!(
        !has(TypeUrl::Cluster, &["a", "bad"]),
        "a NACKed set is not applied"
    );

    client.abort();
    eventually("disconnect", || events.has("disconnect")).await;
    drop(server);
}

#[tokio::test]
async fn client_reconnects_after_server_restart() {
    let (snapshots, _) = watch::channel(snapshot(&["a"]));
    let events = Arc::new(Events::default());
    let (endpoint, server) = serve(TestHooks {
        snapshots: snapshots.clone(),
        events: events.clone(),
    })
    .await;
    let handler = TestHandler::default();
    let applied = handler.applied.clone();
    let client = tokio::spawn(client::run(
        options(endpoint.clone()),
        handler,
        std::future::pending(),
    ));
    eventually("first config", || !applied.lock().unwrap().is_empty()).await;
    drop(server);

    // Same port again: the client keeps retrying with backoff and resubscribes.
    let addr: std::net::SocketAddr = endpoint.trim_start_matches("http://").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                eprintln!("port not free yet: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("rebinding {addr}: {e}"),
        }
    };
    let events2 = Arc::new(Events::default());
    let (snapshots2, _) = watch::channel(snapshot(&["a", "c"]));
    let _server = serve_on(
        listener,
        TestHooks {
            snapshots: snapshots2,
            events: events2.clone(),
        },
    )
    .await;
    eventually("reconnect and converge", || {
        applied
            .lock()
            .unwrap()
            .iter()
            .any(|(t, n)| *t == TypeUrl::ClusterLoadAssignment && n == &["a", "c"])
    })
    .await;
    assert!(events2.has("connect"));
    client.abort();
}

#[tokio::test]
async fn nothing_is_sent_until_a_snapshot_exists() {
    let (snapshots, _) = watch::channel(None);
    let events = Arc::new(Events::default());
    let (endpoint, _server) = serve(TestHooks {
        snapshots: snapshots.clone(),
        events: events.clone(),
    })
    .await;
    let handler = TestHandler::default();
    let applied = handler.applied.clone();
    let client = tokio::spawn(client::run(
        options(endpoint),
        handler,
        std::future::pending(),
    ));
    eventually("stream registered", || events.has("connect")).await;
    // The subscription is recorded; the client holds what it had (here: nothing).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(applied.lock().unwrap().is_empty(), "no snapshot, no push");
    snapshots.send_replace(snapshot(&["a"]));
    eventually("config once published", || {
        applied
            .lock()
            .unwrap()
            .iter()
            .any(|(t, n)| *t == TypeUrl::ClusterLoadAssignment && n == &["a"])
    })
    .await;
    client.abort();
}

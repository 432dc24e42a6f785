//! ADS server and client talking over real gRPC on loopback.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use trellis_xds::client::{self, ClientOptions, Handler};
use trellis_xds::server::{AdsServer, Hooks, SnapshotWatch, StopHandle, StreamId};
use trellis_xds::snapshot::{Resource, Resources, SnapshotBuilder};
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
    fn sent(&self, _: StreamId, type_url: TypeUrl, version: &str) {
        self.events.push(format!("sent {type_url} {version}"));
    }
}

impl Events {
    fn push(&self, e: String) {
        self.log.lock().unwrap().push(e);
    }
    fn has(&self, prefix: &str) -> bool {
        self.position(prefix).is_some()
    }
    /// Index of the first event starting with `prefix`.
    fn position(&self, prefix: &str) -> Option<usize> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .position(|e| e.starts_with(prefix))
    }
}

/// Every applied set: its type and the resource names held after applying it.
type Applied = Arc<Mutex<Vec<(TypeUrl, Vec<String>)>>>;

/// Every response received: its type and the names it carried.
type Received = Arc<Mutex<Vec<(TypeUrl, Vec<String>)>>>;

/// A handler that wants EDS for every cluster and rejects clusters named "bad". It merges
/// endpoint responses by name, as a SotW client does for named types.
#[derive(Clone, Default)]
struct TestHandler {
    applied: Applied,
    received: Received,
    clusters: Arc<Mutex<Vec<String>>>,
    endpoints: Arc<Mutex<BTreeSet<String>>>,
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
        self.received
            .lock()
            .unwrap()
            .push((type_url, names.clone()));
        let mut endpoints = self.endpoints.lock().unwrap();
        let held = match type_url {
            TypeUrl::Cluster => {
                endpoints.retain(|e| names.contains(e));
                *self.clusters.lock().unwrap() = names.clone();
                names
            }
            TypeUrl::ClusterLoadAssignment => {
                endpoints.extend(names);
                endpoints.iter().cloned().collect()
            }
            _ => names,
        };
        self.applied.lock().unwrap().push((type_url, held));
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
    let endpoints: Vec<(&str, u32)> = clusters.iter().map(|c| (*c, 0)).collect();
    snapshot_with(clusters, &endpoints)
}

/// A load assignment whose content is told apart by a priority.
fn assignment(cluster: &str, priority: u32) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.to_owned(),
        endpoints: vec![LocalityLbEndpoints {
            priority,
            ..LocalityLbEndpoints::default()
        }],
        ..ClusterLoadAssignment::default()
    }
}

/// Clusters, and load assignments of the proxy's own (no list of changes).
fn snapshot_with(clusters: &[&str], endpoints: &[(&str, u32)]) -> Option<Arc<Snapshot>> {
    let mut b = Snapshot::builder();
    for (c, priority) in endpoints {
        b.insert(TypeUrl::ClusterLoadAssignment, c, &assignment(c, *priority));
    }
    clusters_into(b, clusters)
}

/// Clusters, and shared load assignments that list their changes since `previous`.
fn snapshot_shared(
    clusters: &[&str],
    endpoints: &[(&str, u32)],
    previous: Option<&Snapshot>,
) -> Option<Arc<Snapshot>> {
    let items = endpoints
        .iter()
        .map(|(c, p)| ((*c).to_owned(), Resource::encode(&assignment(c, *p))))
        .collect();
    let previous_items: Option<Resources> = previous.map(|p| {
        let items = p
            .iter(TypeUrl::ClusterLoadAssignment)
            .map(|(name, r)| (name.to_owned(), r.clone()))
            .collect();
        Resources::new(items)
    });
    let resources = match &previous_items {
        Some(previous) => Resources::following(items, previous),
        None => Resources::new(items),
    };
    let mut b = Snapshot::builder();
    b.share(TypeUrl::ClusterLoadAssignment, Arc::new(resources));
    clusters_into(b, clusters)
}

fn clusters_into(mut b: SnapshotBuilder, clusters: &[&str]) -> Option<Arc<Snapshot>> {
    for c in clusters {
        b.insert(
            TypeUrl::Cluster,
            c,
            &Cluster {
                name: (*c).to_owned(),
                ..Cluster::default()
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

/// The server as one without the delta protocol: it refuses delta streams (and notes it).
struct SotwOnly {
    inner: AdsServer<TestHooks>,
    events: Arc<Events>,
}

type Ads = AdsServer<TestHooks>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for SotwOnly {
    type StreamAggregatedResourcesStream =
        <Ads as AggregatedDiscoveryService>::StreamAggregatedResourcesStream;
    type DeltaAggregatedResourcesStream =
        <Ads as AggregatedDiscoveryService>::DeltaAggregatedResourcesStream;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::StreamAggregatedResourcesStream>, tonic::Status> {
        self.inner.stream_aggregated_resources(request).await
    }

    async fn delta_aggregated_resources(
        &self,
        _request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
        self.events.push("delta refused".to_owned());
        Err(tonic::Status::unimplemented("no delta here"))
    }
}

async fn serve_sotw_only(hooks: TestHooks) -> (String, Running) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let events = hooks.events.clone();
    let (inner, stop) = AdsServer::new(Arc::new(hooks));
    let service = AggregatedDiscoveryServiceServer::new(SotwOnly { inner, events });
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (format!("http://{addr}"), Running { _stop: stop, task })
}

#[tokio::test]
async fn pushes_acks_nacks_and_named_subscriptions_over_delta() {
    pushes_acks_nacks_and_named_subscriptions(false).await;
}

#[tokio::test]
async fn a_server_without_delta_gets_the_same_over_state_of_the_world() {
    pushes_acks_nacks_and_named_subscriptions(true).await;
}

async fn pushes_acks_nacks_and_named_subscriptions(sotw_only: bool) {
    let (snapshots, _) = watch::channel(snapshot(&["a"]));
    let events = Arc::new(Events::default());
    let hooks = TestHooks {
        snapshots: snapshots.clone(),
        events: events.clone(),
    };
    let (endpoint, server) = if sotw_only {
        serve_sotw_only(hooks).await
    } else {
        serve(hooks).await
    };
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
    let cds_version = snapshots
        .borrow()
        .as_ref()
        .unwrap()
        .version(TypeUrl::Cluster)
        .to_owned();
    let sent = events.position(&format!("sent cds {cds_version}"));
    assert!(sent.is_some(), "the response is reported");
    assert!(
        sent < events.position(&format!("ack cds {cds_version}")),
        "sent before its ack"
    );

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

    assert_eq!(
        events.has("delta refused"),
        sotw_only,
        "delta is tried first"
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

type MakeSnapshot = fn(&[&str], &[(&str, u32)], Option<&Snapshot>) -> Option<Arc<Snapshot>>;

#[tokio::test]
async fn named_types_are_pushed_one_changed_resource_at_a_time() {
    named_types_one_change_at_a_time(|clusters, endpoints, _| snapshot_with(clusters, endpoints))
        .await;
}

#[tokio::test]
async fn listed_changes_are_pushed_the_same_way() {
    named_types_one_change_at_a_time(snapshot_shared).await;
}

/// Each snapshot is made by `make`, given the one before.
async fn named_types_one_change_at_a_time(make: MakeSnapshot) {
    let first = make(&["a", "b"], &[("a", 0), ("b", 0)], None);
    let (snapshots, _) = watch::channel(first);
    let next = |clusters: &[&str], endpoints: &[(&str, u32)]| {
        let previous = snapshots.borrow().clone();
        let snapshot = make(clusters, endpoints, previous.as_deref());
        let version = snapshot
            .as_ref()
            .unwrap()
            .version(TypeUrl::ClusterLoadAssignment)
            .to_owned();
        snapshots.send_replace(snapshot);
        version
    };
    let events = Arc::new(Events::default());
    let (endpoint, _server) = serve(TestHooks {
        snapshots: snapshots.clone(),
        events: events.clone(),
    })
    .await;
    let handler = TestHandler::default();
    let (received, applied) = (handler.received.clone(), handler.applied.clone());
    let client = tokio::spawn(client::run(
        options(endpoint),
        handler,
        std::future::pending(),
    ));
    let eds = |names: &[&str]| {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        move |log: &Vec<(TypeUrl, Vec<String>)>| {
            log.iter()
                .any(|(t, n)| *t == TypeUrl::ClusterLoadAssignment && *n == names)
        }
    };
    let received_eds = |names: &[&str]| {
        let matches = eds(names);
        let received = received.clone();
        move || matches(&received.lock().unwrap())
    };
    eventually("both endpoints", received_eds(&["a", "b"])).await;
    eventually("eds acked", || events.has("ack eds")).await;

    // Only b changes: only b is sent, and the client still holds both.
    let changed = snapshot_with(&["a", "b"], &[("a", 0), ("b", 1)]);
    let version = changed
        .as_ref()
        .unwrap()
        .version(TypeUrl::ClusterLoadAssignment)
        .to_owned();
    snapshots.send_replace(changed);
    eventually("b alone", received_eds(&["b"])).await;
    eventually("b's change acked", || {
        events.has(&format!("ack eds {version}"))
    })
    .await;
    assert!(eds(&["a", "b"])(&applied.lock().unwrap()));

    // An assignment nobody subscribes to changes: nothing is sent, and the stream counts as
    // holding the new version.
    let responses = received.lock().unwrap().len();
    let unrelated = snapshot_with(&["a", "b"], &[("a", 0), ("b", 1), ("c", 2)]);
    let version = unrelated
        .as_ref()
        .unwrap()
        .version(TypeUrl::ClusterLoadAssignment)
        .to_owned();
    snapshots.send_replace(unrelated);
    eventually("unrelated change held", || {
        events.has(&format!("ack eds {version}"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        received.lock().unwrap().len(),
        responses,
        "nothing was sent"
    );
    assert!(!events.has(&format!("sent eds {version}")), "nor reported");

    // A new cluster brings a subscription to its endpoints, which are sent alone; a removed
    // cluster's endpoints are dropped by the client.
    next(&["b", "c"], &[("a", 0), ("b", 1), ("c", 2)]);
    eventually("c alone", received_eds(&["c"])).await;
    eventually("client holds b and c", || {
        eds(&["b", "c"])(&applied.lock().unwrap())
    })
    .await;
    client.abort();
}

mod delta {
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse,
    };
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;

    use super::*;

    fn request(type_url: TypeUrl, subscribe: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.as_str().to_owned(),
            resource_names_subscribe: subscribe.iter().map(|n| (*n).to_owned()).collect(),
            response_nonce: nonce.to_owned(),
            ..DeltaDiscoveryRequest::default()
        }
    }

    /// (names sent, names removed) of a response.
    fn names(r: &DeltaDiscoveryResponse) -> (Vec<&str>, Vec<&str>) {
        (
            r.resources.iter().map(|r| r.name.as_str()).collect(),
            r.removed_resources.iter().map(String::as_str).collect(),
        )
    }

    async fn next(
        responses: &mut tonic::Streaming<DeltaDiscoveryResponse>,
    ) -> DeltaDiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(5), responses.message())
            .await
            .expect("a response")
            .unwrap()
            .unwrap()
    }

    async fn quiet(responses: &mut tonic::Streaming<DeltaDiscoveryResponse>) {
        let got = tokio::time::timeout(Duration::from_millis(300), responses.message()).await;
        assert!(got.is_err(), "sent {got:?}");
    }

    /// A raw delta ADS stream: its requests, its responses, and the server it is open to.
    type RawStream = (
        mpsc::Sender<DeltaDiscoveryRequest>,
        tonic::Streaming<DeltaDiscoveryResponse>,
        Running,
    );

    /// A raw delta ADS stream to a server of `snapshots`, opened with a wildcard CDS request.
    async fn open(
        snapshots: &watch::Sender<Option<Arc<Snapshot>>>,
        events: &Arc<Events>,
    ) -> RawStream {
        let hooks = TestHooks {
            snapshots: snapshots.clone(),
            events: events.clone(),
        };
        let (endpoint, server) = serve(hooks).await;
        let mut client = AggregatedDiscoveryServiceClient::connect(endpoint)
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(8);
        let mut first = request(TypeUrl::Cluster, &[], "");
        first.node = Some(Node {
            id: "envoy-1".into(),
            ..Node::default()
        });
        tx.send(first).await.unwrap();
        let responses = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        (tx, responses, server)
    }

    #[tokio::test]
    async fn only_what_changed_for_each_subscriber_with_removals_and_per_response_acks() {
        let events = Arc::new(Events::default());
        let (snapshots, _) = watch::channel(snapshot_with(&["a", "b"], &[("a", 0), ("b", 0)]));
        let (tx, mut responses, _server) = open(&snapshots, &events).await;

        // Wildcard CDS: every cluster; named EDS: only the one asked for.
        let cds = next(&mut responses).await;
        assert_eq!(names(&cds), (vec!["a", "b"], vec![]));
        tx.send(request(TypeUrl::Cluster, &[], &cds.nonce))
            .await
            .unwrap();
        tx.send(request(TypeUrl::ClusterLoadAssignment, &["a"], ""))
            .await
            .unwrap();
        let eds = next(&mut responses).await;
        assert_eq!(names(&eds), (vec!["a"], vec![]));
        tx.send(request(TypeUrl::ClusterLoadAssignment, &[], &eds.nonce))
            .await
            .unwrap();
        eventually("both ACKs", || {
            events.has("ack eds") && events.has("ack cds")
        })
        .await;

        // b's endpoints change: nobody holds them, nothing is sent.
        snapshots.send_replace(snapshot_with(&["a", "b"], &[("a", 0), ("b", 1)]));
        quiet(&mut responses).await;
        // b goes away: CDS names it removed, and sends nothing else.
        snapshots.send_replace(snapshot_with(&["a"], &[("a", 0)]));
        let cds = next(&mut responses).await;
        assert_eq!(names(&cds), (vec![], vec!["b"]));
        assert_eq!(cds.type_url, TypeUrl::Cluster.as_str());
        // a's endpoints change: only that assignment; a NACK of it is reported, and the same
        // content is sent again with the next change.
        snapshots.send_replace(snapshot_with(&["a"], &[("a", 2)]));
        let eds = next(&mut responses).await;
        assert_eq!(names(&eds), (vec!["a"], vec![]));
        let mut nack = request(TypeUrl::ClusterLoadAssignment, &[], &eds.nonce);
        nack.error_detail = Some(envoy_types::pb::google::rpc::Status {
            message: "bad endpoint".into(),
            ..Default::default()
        });
        tx.send(nack).await.unwrap();
        eventually("the NACK", || events.has("nack eds bad endpoint")).await;
        quiet(&mut responses).await;
        snapshots.send_replace(snapshot_with(&["a", "c"], &[("a", 2)]));
        let mut got = [next(&mut responses).await, next(&mut responses).await];
        got.sort_by(|x, y| x.type_url.cmp(&y.type_url));
        assert_eq!(
            names(&got[0]),
            (vec!["c"], vec![]),
            "CDS: the new cluster only"
        );
        assert_eq!(
            names(&got[1]),
            (vec!["a"], vec![]),
            "EDS: the NACKed one again"
        );
        quiet(&mut responses).await;
    }

    /// A stream that ACKed its CDS and was sent the endpoints of `a` and `b` it asked for:
    /// that EDS response, not yet answered.
    async fn holding_a_and_b(
        snapshots: &watch::Sender<Option<Arc<Snapshot>>>,
        events: &Arc<Events>,
    ) -> (RawStream, DeltaDiscoveryResponse) {
        let (tx, mut responses, server) = open(snapshots, events).await;
        let cds = next(&mut responses).await;
        tx.send(request(TypeUrl::Cluster, &[], &cds.nonce))
            .await
            .unwrap();
        tx.send(request(TypeUrl::ClusterLoadAssignment, &["a", "b"], ""))
            .await
            .unwrap();
        let eds = next(&mut responses).await;
        assert_eq!(names(&eds), (vec!["a", "b"], vec![]));
        ((tx, responses, server), eds)
    }

    /// The client drops what it unsubscribes from: subscribing again sends it again, however
    /// many plain ACKs came in between.
    #[tokio::test]
    async fn a_resource_subscribed_again_is_sent_again() {
        let events = Arc::new(Events::default());
        let (snapshots, _) = watch::channel(snapshot_with(&["a", "b"], &[("a", 0), ("b", 0)]));
        let ((tx, mut responses, _server), eds) = holding_a_and_b(&snapshots, &events).await;
        let mut drop_b = request(TypeUrl::ClusterLoadAssignment, &[], &eds.nonce);
        drop_b.resource_names_unsubscribe = vec!["b".into()];
        tx.send(drop_b).await.unwrap();
        quiet(&mut responses).await;

        // a changes and is ACKed; b, unchanged, is then asked for again.
        snapshots.send_replace(snapshot_with(&["a", "b"], &[("a", 1), ("b", 0)]));
        let eds = next(&mut responses).await;
        assert_eq!(names(&eds), (vec!["a"], vec![]));
        tx.send(request(TypeUrl::ClusterLoadAssignment, &[], &eds.nonce))
            .await
            .unwrap();
        quiet(&mut responses).await;
        tx.send(request(TypeUrl::ClusterLoadAssignment, &["b"], ""))
            .await
            .unwrap();
        let eds = next(&mut responses).await;
        assert_eq!(names(&eds), (vec!["b"], vec![]));
        quiet(&mut responses).await;
    }

    /// A NACKed removal is sent again only while the client still wants the name.
    #[tokio::test]
    async fn a_nacked_removal_of_an_unsubscribed_name_is_not_sent_again() {
        let events = Arc::new(Events::default());
        let (snapshots, _) = watch::channel(snapshot_with(&["a", "b"], &[("a", 0), ("b", 0)]));
        let ((tx, mut responses, _server), eds) = holding_a_and_b(&snapshots, &events).await;
        tx.send(request(TypeUrl::ClusterLoadAssignment, &[], &eds.nonce))
            .await
            .unwrap();

        // b's endpoints go; the client unsubscribes from b, then NACKs the removal.
        snapshots.send_replace(snapshot_with(&["a", "b"], &[("a", 0)]));
        let removal = next(&mut responses).await;
        assert_eq!(names(&removal), (vec![], vec!["b"]));
        let mut drop_b = request(TypeUrl::ClusterLoadAssignment, &[], "");
        drop_b.resource_names_unsubscribe = vec!["b".into()];
        tx.send(drop_b).await.unwrap();
        let mut nack = request(TypeUrl::ClusterLoadAssignment, &[], &removal.nonce);
        nack.error_detail = Some(envoy_types::pb::google::rpc::Status {
            message: "bad removal".into(),
            ..Default::default()
        });
        tx.send(nack).await.unwrap();
        eventually("the NACK", || events.has("nack eds bad removal")).await;

        // The next change sends a's endpoints, and no removal of b.
        snapshots.send_replace(snapshot_with(&["a", "b"], &[("a", 1)]));
        let eds = next(&mut responses).await;
        assert_eq!(names(&eds), (vec!["a"], vec![]));
        quiet(&mut responses).await;
    }
}

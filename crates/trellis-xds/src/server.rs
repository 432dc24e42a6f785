//! ADS server. State of the world here (incremental in `delta`): one task per stream tracks
//! what each type's subscriber asked for and was last sent, classifies each request as ACK,
//! NACK or stale by its nonce, and pushes a type again only when its version changed. Listeners and clusters go out complete, as the
//! protocol requires; route configs, endpoints and secrets go out one changed resource at a
//! time (the xDS spec lets SotW clients keep the named resources a response leaves out).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::{Snapshot, TypeUrl};
use delta::DeltaSession;

mod delta;

/// Identifies one ADS stream; a node that reconnects gets a new one.
pub type StreamId = u64;

/// A node's snapshots as the control plane publishes them; `None` until one exists.
pub type SnapshotWatch = watch::Receiver<Option<Arc<Snapshot>>>;

/// What the control plane plugs into the server: snapshots in, stream events out.
pub trait Hooks: Send + Sync + 'static {
    /// A stream presented `node` in its first request. Returns the watch of the node's snapshots
    /// (`None` while there is none yet: nothing is sent, so the client keeps what it has), or a
    /// status that refuses the stream (e.g. missing metadata).
    fn connect(&self, stream: StreamId, node: &Node) -> Result<SnapshotWatch, Status>;
    /// The client holds `version` of `type_url`: it ACKed that version, or it ACKed an earlier
    /// one and nothing it subscribes to has changed since (so it was sent nothing).
    fn ack(&self, stream: StreamId, type_url: TypeUrl, version: &str);
    /// The client rejected the last response for `type_url` with `error`.
    fn nack(&self, stream: StreamId, type_url: TypeUrl, rejected_version: &str, error: &str);
    /// A response carrying `version` of `type_url` was queued on the stream, answering a
    /// request or following a snapshot change; its ACK or NACK reaches [`Hooks::ack`] or
    /// [`Hooks::nack`] only after this returns. A change with nothing new for the client sends
    /// nothing and is not reported here. Does nothing by default.
    fn sent(&self, _stream: StreamId, _type_url: TypeUrl, _version: &str) {}
    /// The stream ended, for whatever reason.
    fn disconnect(&self, stream: StreamId);
}

/// The ADS gRPC service over a [`Hooks`] implementation.
pub struct AdsServer<H> {
    hooks: Arc<H>,
    next_stream: AtomicU64,
    stop: watch::Receiver<bool>,
}

/// Ends every stream of an [`AdsServer`] when stopped or dropped, as a process exit would.
#[derive(Debug)]
pub struct StopHandle(watch::Sender<bool>);

impl StopHandle {
    /// Closes all open streams and refuses new ones.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

impl Drop for StopHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<H: Hooks> AdsServer<H> {
    /// Creates the service and the handle that closes its streams.
    pub fn new(hooks: Arc<H>) -> (Self, StopHandle) {
        let (tx, stop) = watch::channel(false);
        let server = AdsServer {
            hooks,
            next_stream: AtomicU64::new(1),
            stop,
        };
        (server, StopHandle(tx))
    }

    /// Reads a new stream's first request, which must carry the node, and registers the
    /// stream: the request, the node, the stream's id and the node's snapshots.
    async fn open<R: prost::Message + Default + 'static>(
        &self,
        requests: &mut Streaming<R>,
        node_of: impl Fn(&R) -> Option<Node>,
    ) -> Result<(R, Node, StreamId, SnapshotWatch), Status> {
        if *self.stop.borrow() {
            return Err(Status::unavailable("control plane is shutting down"));
        }
        let first = match requests.message().await? {
            Some(first) => first,
            None => return Err(Status::cancelled("stream closed before its first request")),
        };
        let node = node_of(&first)
            .ok_or_else(|| Status::invalid_argument("the first request must carry a node"))?;
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let snapshots = self.hooks.connect(id, &node)?;
        Ok((first, node, id, snapshots))
    }

    /// Wraps the service for a tonic router.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

/// Responses buffered per stream before the stream task waits for the client to read.
const RESPONSE_QUEUE: usize = 16;

#[tonic::async_trait]
impl<H: Hooks> AggregatedDiscoveryService for AdsServer<H> {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let mut requests = request.into_inner();
        let (first, node, id, snapshots) = self.open(&mut requests, |r| r.node.clone()).await?;
        tracing::info!(node = %node.id, stream = id, "ads stream opened");
        let (tx, rx) = mpsc::channel(RESPONSE_QUEUE);
        let session = Session {
            id,
            node_id: node.id,
            hooks: self.hooks.clone(),
            subs: BTreeMap::new(),
            nonce: 0,
            tx,
        };
        tokio::spawn(serve_stream(
            session,
            first,
            requests,
            snapshots,
            self.stop.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        let mut requests = request.into_inner();
        let (first, node, id, snapshots) = self.open(&mut requests, |r| r.node.clone()).await?;
        tracing::info!(node = %node.id, stream = id, "delta ads stream opened");
        let (tx, rx) = mpsc::channel(RESPONSE_QUEUE);
        let session = DeltaSession::new(id, node.id, self.hooks.clone(), tx);
        tokio::spawn(serve_stream(
            session,
            first,
            requests,
            snapshots,
            self.stop.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What one type's subscriber asked for and was sent.
#[derive(Default)]
struct Subscription {
    /// `None` = wildcard (every resource of the type).
    names: Option<BTreeSet<String>>,
    last_nonce: String,
    /// Version the subscriber holds once it ACKs `last_nonce`: that of the last response, or a
    /// later one that changed nothing it subscribes to.
    sent_version: Option<String>,
    /// How the client answered `last_nonce`.
    answer: Answer,
    /// Named types: the hash of each resource as last sent, by name.
    sent: HashMap<String, u64>,
    /// Named types: the version `sent` is up to date with for every subscribed name, so a push
    /// whose snapshot lists its changes since then only looks at those.
    basis: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Answer {
    #[default]
    Pending,
    Acked,
    Nacked,
}

/// Why a type is sent: a client's request is always answered; a snapshot change reaches a
/// client only when something it subscribes to changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Request,
    Push,
}

struct Session<H> {
    id: StreamId,
    node_id: String,
    hooks: Arc<H>,
    subs: BTreeMap<TypeUrl, Subscription>,
    nonce: u64,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
}

/// One stream's protocol, as the shared loop ([`serve_stream`]) drives it.
trait StreamSession: Send {
    /// The client's request type.
    type Request: Send;
    /// For logs.
    const NAME: &'static str;
    /// Handles one request; false when the stream should end.
    async fn on_request(&mut self, request: Self::Request, snapshot: Option<&Snapshot>) -> bool;
    /// Sends what a new snapshot changed for the client; false when the client is gone.
    async fn push_changed(&mut self, snapshot: &Snapshot) -> bool;
    /// The node, for logs.
    fn node_id(&self) -> &str;
    /// The stream ended: tells the hooks.
    fn closed(&self);
}

/// Runs a stream: its first request, then each request and each new snapshot in turn, until
/// the client goes, an error, or the server stops.
async fn serve_stream<S: StreamSession>(
    mut session: S,
    first: S::Request,
    mut requests: Streaming<S::Request>,
    mut snapshots: SnapshotWatch,
    mut stop: watch::Receiver<bool>,
) {
    let mut snapshot = snapshots.borrow_and_update().clone();
    let mut open = session.on_request(first, snapshot.as_deref()).await;
    while open {
        open = tokio::select! {
            // A stopping server sends nothing more: its last pushes would be the removals of
            // workloads whose streams it is closing, which a real exit never sends.
            biased;
            () = stopped(&mut stop) => false,
            request = requests.next() => match request {
                Some(Ok(request)) => session.on_request(request, snapshot.as_deref()).await,
                Some(Err(status)) => {
                    tracing::debug!(node = %session.node_id(), %status, "{} stream error", S::NAME);
                    false
                }
                None => false,
            },
            changed = snapshots.changed() => match changed {
                Ok(()) => {
                    snapshot = snapshots.borrow_and_update().clone();
                    match &snapshot {
                        Some(s) => session.push_changed(s).await,
                        None => true,
                    }
                }
                Err(_) => false,
            },
        };
    }
    session.closed();
}

impl<H: Hooks> StreamSession for Session<H> {
    type Request = DiscoveryRequest;
    const NAME: &'static str = "ads";

    async fn on_request(&mut self, request: DiscoveryRequest, snapshot: Option<&Snapshot>) -> bool {
        Session::on_request(self, request, snapshot).await
    }

    async fn push_changed(&mut self, snapshot: &Snapshot) -> bool {
        Session::push_changed(self, snapshot).await
    }

    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn closed(&self) {
        tracing::info!(node = %self.node_id, stream = self.id, "ads stream closed");
        self.hooks.disconnect(self.id);
    }
}

impl<H: Hooks> Session<H> {
    /// Handles one request; false when the stream should end. Without a snapshot it only
    /// records the subscription.
    async fn on_request(&mut self, request: DiscoveryRequest, snapshot: Option<&Snapshot>) -> bool {
        let Some(type_url) = TypeUrl::parse(&request.type_url) else {
            tracing::debug!(node = %self.node_id, type_url = %request.type_url, "ignoring unserved type");
            return true;
        };
        let sub = self.subs.entry(type_url).or_default();
        if !request.response_nonce.is_empty() {
            if request.response_nonce != sub.last_nonce {
                tracing::trace!(node = %self.node_id, %type_url, "stale nonce ignored");
                return true;
            }
            let version = sub.sent_version.as_deref().unwrap_or("");
            match &request.error_detail {
                Some(status) => {
                    // The client kept none of that response: the next one carries everything.
                    sub.answer = Answer::Nacked;
                    sub.sent.clear();
                    sub.basis = None;
                    self.hooks.nack(self.id, type_url, version, &status.message);
                }
                None => {
                    sub.answer = Answer::Acked;
                    self.hooks.ack(self.id, type_url, version);
                }
            }
        }
        // An ACK repeats the subscription, usually unchanged: compare before building a set.
        let names_changed = request.response_nonce.is_empty()
            || !same_names(type_url, sub.names.as_ref(), &request.resource_names);
        if names_changed {
            let names = requested_names(type_url, request.resource_names);
            if let Some(names) = &names {
                // A name dropped and requested again later is sent again.
                sub.sent.retain(|name, _| names.contains(name));
            }
            sub.names = names;
        }
        let Some(snapshot) = snapshot else {
            return true;
        };
        let stale = sub.sent_version.as_deref() != Some(snapshot.version(type_url));
        if names_changed || stale {
            return self.send(type_url, snapshot, Cause::Request).await;
        }
        true
    }

    /// Sends every subscribed type whose version moved; false when the client is gone.
    async fn push_changed(&mut self, snapshot: &Snapshot) -> bool {
        let changed: Vec<TypeUrl> = self
            .subs
            .iter()
            .filter(|(t, sub)| sub.sent_version.as_deref() != Some(snapshot.version(**t)))
            .map(|(t, _)| *t)
            .collect();
        for type_url in TypeUrl::ALL.into_iter().filter(|t| changed.contains(t)) {
            if !self.send(type_url, snapshot, Cause::Push).await {
                return false;
            }
        }
        true
    }

    /// Sends `type_url`: every subscribed resource of a wildcard type, or the named resources
    /// the client does not hold yet. A push with nothing new for the client sends nothing and
    /// counts as held once the client has ACKed the last response.
    async fn send(&mut self, type_url: TypeUrl, snapshot: &Snapshot, cause: Cause) -> bool {
        let Some(sub) = self.subs.get_mut(&type_url) else {
            return true;
        };
        let version = snapshot.version(type_url).to_owned();
        let resources: Vec<_> = if type_url.is_wildcard() {
            snapshot
                .iter(type_url)
                .filter(|(name, _)| sub.names.as_ref().is_none_or(|n| n.contains(*name)))
                .map(|(_, r)| r.any.clone())
                .collect()
        } else {
            let names = sub.names.iter().flatten();
            let since_basis = snapshot
                .changes(type_url)
                .filter(|c| cause == Cause::Push && sub.basis.as_ref() == Some(&c.since));
            let unsent = match since_basis {
                Some(changes) => {
                    let subscribed =
                        |name: &&String| sub.names.as_ref().is_some_and(|n| n.contains(*name));
                    unsent(
                        snapshot,
                        type_url,
                        changes.names.iter().filter(subscribed),
                        &mut sub.sent,
                    )
                }
                None => unsent(snapshot, type_url, names, &mut sub.sent),
            };
            sub.basis = Some(version.clone());
            unsent
        };
        if cause == Cause::Push && resources.is_empty() && !type_url.is_wildcard() {
            if sub.answer == Answer::Acked {
                self.hooks.ack(self.id, type_url, &version);
            }
            sub.sent_version = Some(version);
            return true;
        }
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        sub.last_nonce.clone_from(&nonce);
        sub.sent_version = Some(version.clone());
        sub.answer = Answer::Pending;
        tracing::debug!(node = %self.node_id, %type_url, %version, count = resources.len(), "push");
        let response = DiscoveryResponse {
            version_info: version.clone(),
            resources,
            type_url: type_url.as_str().to_owned(),
            nonce,
            ..DiscoveryResponse::default()
        };
        if self.tx.send(Ok(response)).await.is_err() {
            return false;
        }
        // This task also reads the client's answer, so the hook runs before the ACK's.
        self.hooks.sent(self.id, type_url, &version);
        true
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the handle is gone, which also stops the server.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// The resources of `type_url` among `names` whose content differs from what `sent` records,
/// which is updated to them.
fn unsent<'a>(
    snapshot: &Snapshot,
    type_url: TypeUrl,
    names: impl Iterator<Item = &'a String>,
    sent: &mut HashMap<String, u64>,
) -> Vec<Any> {
    let mut out = Vec::new();
    for name in names {
        match snapshot.get(type_url, name) {
            Some(r) if sent.get(name) != Some(&r.hash) => {
                sent.insert(name.clone(), r.hash);
                out.push(r.any.clone());
            }
            Some(_) => {}
            None => {
                sent.remove(name);
            }
        }
    }
    out
}

/// True when a request's names are the subscription already recorded.
fn same_names(type_url: TypeUrl, current: Option<&BTreeSet<String>>, requested: &[String]) -> bool {
    match current {
        None => {
            type_url.is_wildcard() && (requested.is_empty() || requested.iter().any(|n| n == "*"))
        }
        // Clients usually list names in order; any other order (or repeats) is compared as a set.
        Some(current) => {
            (current.len() == requested.len() && current.iter().eq(requested))
                || *current == requested.iter().cloned().collect::<BTreeSet<_>>()
        }
    }
}

/// Wildcard types treat an empty list (or `*`) as "everything"; named types list what they want.
fn requested_names(type_url: TypeUrl, names: Vec<String>) -> Option<BTreeSet<String>> {
    if type_url.is_wildcard() && (names.is_empty() || names.iter().any(|n| n == "*")) {
        None
    } else {
        Some(names.into_iter().collect())
    }
}

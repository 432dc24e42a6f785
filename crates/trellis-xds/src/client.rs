//! ADS client: subscribes to every type, hands each response to a [`Handler`], ACKs or NACKs
//! it, follows the handler's named subscriptions, and reconnects with jittered exponential
//! backoff. The handler keeps its config across reconnects. It speaks the incremental (delta)
//! protocol (`delta`), and state of the world (here) with a server that has no delta.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::TypeUrl;
use delta::DeltaState;

mod delta;

/// What consumes configuration: the proxy's config compiler.
pub trait Handler: Send + 'static {
    /// Validates and applies one response: the complete set of listeners or clusters, or, for
    /// the named types (RDS, EDS, SDS), the resources that changed or were newly requested; the
    /// handler keeps the other named resources it still wants. `Ok` ACKs the response;
    /// `Err(detail)` NACKs it with `detail` as `error_detail`.
    fn apply(&mut self, type_url: TypeUrl, version: &str, resources: &[Any]) -> Result<(), String>;
    /// Names the handler needs of a named type (RDS, EDS, SDS), derived from applied LDS and
    /// CDS only: the client asks again after each listener or cluster response.
    fn wanted(&self, type_url: TypeUrl) -> Vec<String>;
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// ADS endpoint URL, e.g. `http://127.0.0.1:15010`.
    pub endpoint: String,
    /// The node presented on every stream.
    pub node: Node,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

/// gRPC code carried in a NACK's `error_detail` (INVALID_ARGUMENT).
const NACK_CODE: i32 = 3;

/// Runs the client until `shutdown` resolves.
pub async fn run(opts: ClientOptions, handler: impl Handler, shutdown: impl Future<Output = ()>) {
    let mut state = ClientState {
        handler,
        acked: BTreeMap::new(),
        subscribed: BTreeMap::new(),
        nonces: BTreeMap::new(),
        delta: Some(DeltaState::default()),
    };
    tokio::select! {
        () = state.reconnect_forever(&opts) => {}
        () = shutdown => {}
    }
}

struct ClientState<H> {
    handler: H,
    /// Last applied version per type, sent on reconnect so the server knows what we hold.
    acked: BTreeMap<TypeUrl, String>,
    /// Names currently requested for named types.
    subscribed: BTreeMap<TypeUrl, Vec<String>>,
    /// Nonce of the last response per type on the current stream.
    nonces: BTreeMap<TypeUrl, String>,
    /// The delta protocol's state, until a server turns out not to serve it.
    delta: Option<DeltaState>,
}

impl<H: Handler> ClientState<H> {
    async fn reconnect_forever(&mut self, opts: &ClientOptions) {
        let mut backoff = opts.backoff_min;
        loop {
            let result = match &mut self.delta {
                Some(delta) => delta.stream_once(&mut self.handler, opts).await,
                None => self.stream_once(opts).await,
            };
            match result {
                Ok(true) => backoff = opts.backoff_min,
                Ok(false) => {}
                Err(e) if e.code() == tonic::Code::Unimplemented && self.delta.is_some() => {
                    tracing::info!(endpoint = %opts.endpoint, "no delta ADS there: using state of the world");
                    self.delta = None;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(endpoint = %opts.endpoint, error = %e, "ads stream failed")
                }
            }
            let jitter = rand::rng().random_range(0.5..1.0);
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            backoff = (backoff * 2).min(opts.backoff_max);
        }
    }

    /// One stream's life. `Ok(true)` when it delivered at least one response.
    async fn stream_once(&mut self, opts: &ClientOptions) -> Result<bool, tonic::Status> {
        let mut client = AggregatedDiscoveryServiceClient::connect(opts.endpoint.clone())
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let (tx, rx) = mpsc::channel(16);
        self.nonces.clear();
        for type_url in TypeUrl::ALL {
            let names = if type_url.is_wildcard() {
                Vec::new()
            } else {
                let wanted = self.handler.wanted(type_url);
                if wanted.is_empty() {
                    continue;
                }
                wanted
            };
            self.subscribed.insert(type_url, names.clone());
            let request = DiscoveryRequest {
                node: Some(opts.node.clone()),
                type_url: type_url.as_str().to_owned(),
                version_info: self.acked.get(&type_url).cloned().unwrap_or_default(),
                resource_names: names,
                ..DiscoveryRequest::default()
            };
            // The channel holds all initial requests; a send fails only if the stream is gone.
            if tx.send(request).await.is_err() {
                return Ok(false);
            }
        }
        let mut responses = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await?
            .into_inner();
        tracing::info!(endpoint = %opts.endpoint, "ads stream connected");
        let mut delivered = false;
        while let Some(response) = responses.message().await? {
            delivered = true;
            for request in self.on_response(response) {
                if tx.send(request).await.is_err() {
                    return Ok(true);
                }
            }
        }
        Ok(delivered)
    }

    /// Applies a response; returns the ACK/NACK plus any resubscriptions it caused.
    fn on_response(&mut self, response: DiscoveryResponse) -> Vec<DiscoveryRequest> {
        let Some(type_url) = TypeUrl::parse(&response.type_url) else {
            tracing::warn!(type_url = %response.type_url, "response of an unrequested type");
            return Vec::new();
        };
        self.nonces.insert(type_url, response.nonce.clone());
        let result = self
            .handler
            .apply(type_url, &response.version_info, &response.resources);
        let mut out = Vec::new();
        let error_detail = match result {
            Ok(()) => {
                tracing::debug!(%type_url, version = %response.version_info, "ack");
                self.acked.insert(type_url, response.version_info.clone());
                None
            }
            Err(message) => {
                tracing::warn!(%type_url, version = %response.version_info, error = %message, "nack");
                Some(RpcStatus {
                    code: NACK_CODE,
                    message,
                    details: Vec::new(),
                })
            }
        };
        out.push(self.request(type_url, error_detail));
        if !type_url.is_wildcard() {
            return out;
        }
        for named in TypeUrl::ALL.into_iter().filter(|t| !t.is_wildcard()) {
            let wanted = self.handler.wanted(named);
            let current = self.subscribed.get(&named);
            if current != Some(&wanted) && !(current.is_none() && wanted.is_empty()) {
                self.subscribed.insert(named, wanted);
                out.push(self.request(named, None));
            }
        }
        out
    }

    fn request(&self, type_url: TypeUrl, error_detail: Option<RpcStatus>) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.as_str().to_owned(),
            version_info: self.acked.get(&type_url).cloned().unwrap_or_default(),
            response_nonce: self.nonces.get(&type_url).cloned().unwrap_or_default(),
            resource_names: self.subscribed.get(&type_url).cloned().unwrap_or_default(),
            error_detail,
            ..DiscoveryRequest::default()
        }
    }
}

//! The incremental (delta) side of the ADS client, which the client prefers: the server sends
//! only what changed. Listeners and clusters are kept here whole, so the handler still gets
//! their complete set; named types reach it as in state of the world, one changed resource at
//! a time. On reconnect the client tells the server every resource version it holds, so
//! nothing it has is sent again.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{ClientOptions, Handler, NACK_CODE};
use crate::TypeUrl;

/// What the client holds across streams.
#[derive(Default)]
pub(super) struct DeltaState {
    /// Listeners and clusters, whole, by name.
    whole: BTreeMap<TypeUrl, BTreeMap<String, Any>>,
    /// The version of every resource applied, by type and name.
    versions: BTreeMap<TypeUrl, BTreeMap<String, String>>,
    /// Names subscribed to of the named types on the current stream.
    subscribed: BTreeMap<TypeUrl, BTreeSet<String>>,
}

impl DeltaState {
    /// One delta stream's life. `Ok(true)` when it delivered at least one response; an
    /// `Unimplemented` status means the server speaks state of the world only.
    pub(super) async fn stream_once<H: Handler>(
        &mut self,
        handler: &mut H,
        opts: &ClientOptions,
    ) -> Result<bool, tonic::Status> {
        let mut client = AggregatedDiscoveryServiceClient::connect(opts.endpoint.clone())
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let (tx, rx) = mpsc::channel(16);
        self.subscribed.clear();
        let mut first = true;
        for type_url in TypeUrl::ALL {
            let subscribe = if type_url.is_wildcard() {
                Vec::new()
            } else {
                let wanted = handler.wanted(type_url);
                if wanted.is_empty() {
                    continue;
                }
                self.subscribed
                    .insert(type_url, wanted.iter().cloned().collect());
                wanted
            };
            let request = DeltaDiscoveryRequest {
                node: first.then(|| opts.node.clone()),
                type_url: type_url.as_str().to_owned(),
                resource_names_subscribe: subscribe,
                initial_resource_versions: self
                    .versions
                    .get(&type_url)
                    .map(|v| v.clone().into_iter().collect())
                    .unwrap_or_default(),
                ..DeltaDiscoveryRequest::default()
            };
            first = false;
            // The channel holds all initial requests; a send fails only if the stream is gone.
            if tx.send(request).await.is_err() {
                return Ok(false);
            }
        }
        let mut responses = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await?
            .into_inner();
        tracing::info!(endpoint = %opts.endpoint, "delta ads stream connected");
        let mut delivered = false;
        while let Some(response) = responses.message().await? {
            delivered = true;
            for request in self.on_response(handler, response) {
                if tx.send(request).await.is_err() {
                    return Ok(true);
                }
            }
        }
        Ok(delivered)
    }

    /// Applies a response; returns the ACK/NACK plus any subscription changes it caused.
    fn on_response<H: Handler>(
        &mut self,
        handler: &mut H,
        response: DeltaDiscoveryResponse,
    ) -> Vec<DeltaDiscoveryRequest> {
        let Some(type_url) = TypeUrl::parse(&response.type_url) else {
            tracing::warn!(type_url = %response.type_url, "response of an unrequested type");
            return Vec::new();
        };
        let version = &response.system_version_info;
        let updated: Vec<(String, String, Any)> = response
            .resources
            .into_iter()
            .filter_map(|r| Some((r.name, r.version, r.resource?)))
            .collect();
        let result = if type_url.is_wildcard() {
            let mut whole = self.whole.get(&type_url).cloned().unwrap_or_default();
            for name in &response.removed_resources {
                whole.remove(name);
            }
            for (name, _, any) in &updated {
                whole.insert(name.clone(), any.clone());
            }
            let all: Vec<Any> = whole.values().cloned().collect();
            handler
                .apply(type_url, version, &all)
                .map(|()| drop(self.whole.insert(type_url, whole)))
        } else {
            let changed: Vec<Any> = updated.iter().map(|(_, _, any)| any.clone()).collect();
            handler.apply(type_url, version, &changed)
        };
        let error_detail = match result {
            Ok(()) => {
                tracing::debug!(%type_url, %version, "ack");
                let versions = self.versions.entry(type_url).or_default();
                for name in &response.removed_resources {
                    versions.remove(name);
                }
                for (name, resource_version, _) in updated {
                    versions.insert(name, resource_version);
                }
                None
            }
            Err(message) => {
                tracing::warn!(%type_url, %version, error = %message, "nack");
                Some(RpcStatus {
                    code: NACK_CODE,
                    message,
                    details: Vec::new(),
                })
            }
        };
        let mut out = vec![DeltaDiscoveryRequest {
            type_url: type_url.as_str().to_owned(),
            response_nonce: response.nonce,
            error_detail,
            ..DeltaDiscoveryRequest::default()
        }];
        if type_url.is_wildcard() {
            out.extend(self.resubscribe(handler));
        }
        out
    }

    /// Subscription changes of the named types after listeners or clusters changed.
    fn resubscribe<H: Handler>(&mut self, handler: &H) -> Vec<DeltaDiscoveryRequest> {
        let mut out = Vec::new();
        for named in TypeUrl::ALL.into_iter().filter(|t| !t.is_wildcard()) {
            let wanted: BTreeSet<String> = handler.wanted(named).into_iter().collect();
            let current = self.subscribed.entry(named).or_default();
            let subscribe: Vec<String> = wanted.difference(current).cloned().collect();
            let unsubscribe: Vec<String> = current.difference(&wanted).cloned().collect();
            if subscribe.is_empty() && unsubscribe.is_empty() {
                continue;
            }
            if let Some(versions) = self.versions.get_mut(&named) {
                versions.retain(|name, _| wanted.contains(name));
            }
            *current = wanted;
            out.push(DeltaDiscoveryRequest {
                type_url: named.as_str().to_owned(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                ..DeltaDiscoveryRequest::default()
            });
        }
        out
    }
}

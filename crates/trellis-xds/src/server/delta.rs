//! ADS server, incremental (delta) protocol: per type, the names a client subscribes to (or the
//! wildcard), and the content hash of every resource it holds. A request or a snapshot change
//! sends exactly the subscribed resources whose content the client does not hold, and names the
//! ones that disappeared; nothing else, so an idle stream receives nothing. Each response is
//! ACKed or NACKed by its own nonce (several may be unanswered at once); a NACK forgets what
//! that response carried, so the next change sends it again.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as DeltaResource,
};
use tokio::sync::mpsc;
use tonic::Status;

use super::{Answer, Hooks, StreamId, StreamSession};
use crate::{Snapshot, TypeUrl};

/// What one type's subscriber asked for and holds.
#[derive(Default)]
struct DeltaSub {
    /// Every resource of the type, besides `names`.
    wildcard: bool,
    /// Names subscribed to explicitly.
    names: BTreeSet<String>,
    /// The content hash of each resource the client holds, by name.
    held: HashMap<String, u64>,
    /// Responses not answered yet, by nonce (oldest first, at most [`MAX_UNANSWERED`]).
    unanswered: BTreeMap<u64, Sent>,
    /// The type version the client holds once it ACKs everything sent.
    version: String,
    /// The snapshot version `held` was last brought up to date with: a push for the same
    /// version has nothing to look at, and one whose snapshot lists its changes since this
    /// version looks at those only. `None` after a NACK, which forgets held resources.
    synced: Option<String>,
    answer: Answer,
}

/// What one response carried, to undo if the client rejects it.
struct Sent {
    version: String,
    names: Vec<String>,
    removed: Vec<String>,
}

/// Responses kept for their ACK or NACK per type; a client that answers none of them loses
/// the oldest records (its NACK of those is then only logged).
const MAX_UNANSWERED: usize = 64;

/// Stands for "held, content unknown": a NACKed removal is sent again while it holds it.
const UNKNOWN_CONTENT: u64 = 0;

impl DeltaSub {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Forgets held names the client no longer wants.
    fn prune_unwanted(&mut self) {
        self.held
            .retain(|name, _| self.wildcard || self.names.contains(name.as_str()));
    }
}

/// A resource version as the delta protocol carries it: the content hash, in hex.
fn version_of(hash: u64) -> String {
    format!("{hash:016x}")
}

pub(super) struct DeltaSession<H> {
    pub(super) id: StreamId,
    pub(super) node_id: String,
    pub(super) hooks: std::sync::Arc<H>,
    subs: BTreeMap<TypeUrl, DeltaSub>,
    nonce: u64,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
}

impl<H: Hooks> StreamSession for DeltaSession<H> {
    type Request = DeltaDiscoveryRequest;
    const NAME: &'static str = "delta ads";

    async fn on_request(
        &mut self,
        request: DeltaDiscoveryRequest,
        snapshot: Option<&Snapshot>,
    ) -> bool {
        DeltaSession::on_request(self, request, snapshot).await
    }

    async fn push_changed(&mut self, snapshot: &Snapshot) -> bool {
        DeltaSession::push_changed(self, snapshot).await
    }

    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn closed(&self) {
        tracing::info!(node = %self.node_id, stream = self.id, "delta ads stream closed");
        self.hooks.disconnect(self.id);
    }
}

impl<H: Hooks> DeltaSession<H> {
    pub(super) fn new(
        id: StreamId,
        node_id: String,
        hooks: std::sync::Arc<H>,
        tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    ) -> Self {
        DeltaSession {
            id,
            node_id,
            hooks,
            subs: BTreeMap::new(),
            nonce: 0,
            tx,
        }
    }

    /// Handles one request: its ACK or NACK, then its subscription changes, answered with
    /// what the client lacks. False when the stream should end.
    async fn on_request(
        &mut self,
        request: DeltaDiscoveryRequest,
        snapshot: Option<&Snapshot>,
    ) -> bool {
        let Some(type_url) = TypeUrl::parse(&request.type_url) else {
            tracing::debug!(node = %self.node_id, type_url = %request.type_url, "ignoring unserved type");
            return true;
        };
        let first = !self.subs.contains_key(&type_url);
        let sub = self.subs.entry(type_url).or_default();
        let answered = request
            .response_nonce
            .parse::<u64>()
            .ok()
            .and_then(|nonce| sub.unanswered.remove(&nonce));
        let mut nacked = false;
        match (answered, &request.error_detail) {
            (None, _) if !request.response_nonce.is_empty() => {
                tracing::debug!(node = %self.node_id, %type_url, nonce = %request.response_nonce, "answer to an unknown response ignored");
            }
            (None, _) => {}
            (Some(sent), Some(status)) => {
                // The client kept none of that response: the next change sends its resources
                // and removals again (not at once, which would loop on a bad resource).
                sub.answer = Answer::Nacked;
                sub.synced = None;
                nacked = true;
                for name in &sent.names {
                    sub.held.remove(name);
                }
                for name in sent.removed {
                    sub.held.insert(name, UNKNOWN_CONTENT);
                }
                self.hooks
                    .nack(self.id, type_url, &sent.version, &status.message);
            }
            (Some(sent), None) => {
                sub.answer = Answer::Acked;
                // With nothing else outstanding the client holds the latest version (later
                // changes may have had nothing for it).
                let held = if sub.unanswered.is_empty() {
                    &sub.version
                } else {
                    &sent.version
                };
                self.hooks.ack(self.id, type_url, held);
            }
        }
        let subscribing = first
            || !request.resource_names_subscribe.is_empty()
            || !request.resource_names_unsubscribe.is_empty()
            || !request.initial_resource_versions.is_empty();
        // A wildcard type's first request without names is the legacy wildcard.
        if first && type_url.is_wildcard() && request.resource_names_subscribe.is_empty() {
            sub.wildcard = true;
        }
        for name in request.resource_names_subscribe {
            if name == "*" {
                sub.wildcard = true;
            } else {
                sub.names.insert(name);
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == "*" {
                sub.wildcard = false;
            } else {
                sub.names.remove(name);
            }
        }
        // What a reconnecting client already holds is not sent again.
        for (name, version) in request.initial_resource_versions {
            if let Ok(hash) = u64::from_str_radix(&version, 16) {
                sub.held.insert(name, hash);
            }
        }
        // Only a subscription change or a NACK can leave unwanted names held: a plain ACK
        // (one per stream per push) skips the look over every held name.
        if subscribing || nacked {
            sub.prune_unwanted();
        }
        // An ACK or NACK alone is answered by nothing; a subscription change by what it adds.
        match snapshot {
            Some(snapshot) if subscribing => self.send(type_url, snapshot, false).await,
            _ => true,
        }
    }

    /// Sends every subscribed type something changed for; false when the client is gone.
    async fn push_changed(&mut self, snapshot: &Snapshot) -> bool {
        // Clusters before their endpoints, listeners before their routes, as Envoy expects.
        let types: Vec<TypeUrl> = TypeUrl::ALL
            .into_iter()
            .filter(|t| self.subs.contains_key(t))
            .collect();
        for type_url in types {
            if !self.send(type_url, snapshot, true).await {
                return false;
            }
        }
        true
    }

    /// Sends the subscribed resources of `type_url` the client does not hold, and the names
    /// of held ones that are gone; nothing when there are none (the client then holds the
    /// current version). A `push` of a new snapshot looks only at what changed since the
    /// version the client was last brought up to date with, when the snapshot lists that.
    async fn send(&mut self, type_url: TypeUrl, snapshot: &Snapshot, push: bool) -> bool {
        let Some(sub) = self.subs.get_mut(&type_url) else {
            return true;
        };
        let version = snapshot.version(type_url).to_owned();
        if push && sub.synced.as_ref() == Some(&version) {
            return true;
        }
        let changed = snapshot
            .changes(type_url)
            .filter(|c| push && sub.synced.as_ref() == Some(&c.since))
            .map(|c| &c.names);
        let mut resources = Vec::new();
        let mut sent = Vec::new();
        let candidates: BTreeSet<&str> = match changed {
            Some(names) => names
                .iter()
                .map(String::as_str)
                .filter(|n| sub.wants(n))
                .collect(),
            None => {
                let wildcard = sub
                    .wildcard
                    .then(|| snapshot.iter(type_url).map(|(n, _)| n));
                wildcard
                    .into_iter()
                    .flatten()
                    .chain(sub.names.iter().map(String::as_str))
                    .collect()
            }
        };
        for name in &candidates {
            let Some(r) = snapshot.get(type_url, name) else {
                continue;
            };
            if sub.held.get(*name) != Some(&r.hash) {
                sub.held.insert((*name).to_owned(), r.hash);
                sent.push((*name).to_owned());
                resources.push(DeltaResource {
                    name: (*name).to_owned(),
                    version: version_of(r.hash),
                    resource: Some(r.any.clone()),
                    ..DeltaResource::default()
                });
            }
        }
        let gone = |n: &&String| snapshot.get(type_url, n).is_none();
        let removed: Vec<String> = match changed {
            Some(names) => names
                .iter()
                .filter(|n| sub.held.contains_key(*n))
                .filter(gone)
                .cloned()
                .collect(),
            None => sub.held.keys().filter(gone).cloned().collect(),
        };
        for name in &removed {
            sub.held.remove(name);
        }
        sub.synced = Some(version.clone());
        if resources.is_empty() && removed.is_empty() {
            // Nothing new for this client: once it has answered everything, it holds this
            // version too.
            if sub.answer == Answer::Acked && sub.unanswered.is_empty() {
                self.hooks.ack(self.id, type_url, &version);
            }
            sub.version = version;
            return true;
        }
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        sub.unanswered.insert(
            self.nonce,
            Sent {
                version: version.clone(),
                names: sent,
                removed: removed.clone(),
            },
        );
        if sub.unanswered.len() > MAX_UNANSWERED {
            sub.unanswered.pop_first();
        }
        sub.version.clone_from(&version);
        sub.answer = Answer::Pending;
        tracing::debug!(node = %self.node_id, %type_url, %version, count = resources.len(), removed = removed.len(), "delta push");
        let response = DeltaDiscoveryResponse {
            system_version_info: version.clone(),
            resources,
            type_url: type_url.as_str().to_owned(),
            removed_resources: removed,
            nonce,
            ..DeltaDiscoveryResponse::default()
        };
        if self.tx.send(Ok(response)).await.is_err() {
            return false;
        }
        self.hooks.sent(self.id, type_url, &version);
        true
    }
}

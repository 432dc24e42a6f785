//! The control plane's state: the accepted config, the last rejected load's errors and the
//! registry. Every change rebuilds the model and republishes each proxy's snapshot; the ADS
//! server only serves what is published here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;
use trellis_api::{ConfigErrors, ConfigSet};
use trellis_xds::TypeUrl;
use trellis_xds::node::NodeMeta;
use trellis_xds::server::{Hooks, SnapshotWatch, StreamId};

use crate::capability;
use crate::metrics::{Metrics, ReloadLabels, ReloadResult, TypeLabels};
use crate::model::MeshModel;
use crate::registry::{Nack, Proxy, ProxyView, Registry, WorkloadView, unix};
use crate::stats::Target;
use crate::translate::{SharedResources, translate_shared};

/// The control plane's shared state.
pub struct ControlPlane {
    state: Mutex<State>,
    metrics: Metrics,
}

struct State {
    /// While set, snapshots are withheld so reconnecting workloads can re-register before
    /// anyone is told their endpoints are gone.
    warming: bool,
    config: Arc<ConfigSet>,
    config_generation: u64,
    config_loaded_at: SystemTime,
    errors: Vec<String>,
    trust_bundle: Option<Arc<str>>,
    registry: Registry,
    model: Arc<MeshModel>,
    /// The resources last published, which the next ones are diffed against.
    shared: Option<SharedResources>,
}

/// The config as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigView {
    /// Count of accepted loads since start.
    pub generation: u64,
    /// When the serving config was accepted (seconds since the Unix epoch).
    pub loaded_at_unix: u64,
    /// Errors of the last rejected change, empty when the files on disk are what is served.
    pub errors: Vec<String>,
    /// The serving resources.
    pub resources: Arc<ConfigSet>,
}

impl Default for ControlPlane {
    fn default() -> Self {
        ControlPlane::new()
    }
}

impl ControlPlane {
    /// A control plane with an empty config and no workloads, serving snapshots at once.
    pub fn new() -> ControlPlane {
        ControlPlane::build(false)
    }

    /// Like [`ControlPlane::new`], but withholding snapshots until [`ControlPlane::end_warmup`]:
    /// after a restart, the registry is empty until proxies reconnect, and publishing before
    /// that would empty every cluster's endpoints.
    pub fn warming() -> ControlPlane {
        ControlPlane::build(true)
    }

    fn build(warming: bool) -> ControlPlane {
        ControlPlane {
            state: Mutex::new(State {
                warming,
                config: Arc::default(),
                config_generation: 0,
                config_loaded_at: SystemTime::now(),
                errors: Vec::new(),
                trust_bundle: None,
                registry: BTreeMap::new(),
                model: Arc::default(),
                shared: None,
            }),
            metrics: Metrics::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every update is whole).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves `config` from now on and clears earlier errors.
    pub fn accept_config(&self, config: ConfigSet) {
        let mut state = self.state();
        state.config = Arc::new(config);
        state.config_generation += 1;
        state.config_loaded_at = SystemTime::now();
        state.errors.clear();
        self.metrics
            .config_reloads
            .get_or_create(&ReloadLabels {
                result: ReloadResult::accepted,
            })
            .inc();
        self.metrics.config_errors.set(0);
        self.republish(&mut state);
    }

    /// The files are valid again but equal to what is served: only clear the errors.
    pub fn accept_unchanged(&self) {
        self.state().errors.clear();
        self.metrics.config_errors.set(0);
    }

    /// Records a rejected change; the serving config stays.
    pub fn reject_config(&self, errors: &ConfigErrors) {
        let mut state = self.state();
        state.errors = errors.iter().map(ToString::to_string).collect();
        self.metrics
            .config_reloads
            .get_or_create(&ReloadLabels {
                result: ReloadResult::rejected,
            })
            .inc();
        self.metrics
            .config_errors
            .set(i64::try_from(errors.len()).unwrap_or(i64::MAX));
    }

    /// Turns mTLS on (or refreshes it after a rotation): the bundle goes to every proxy as the
    /// SDS secret `ROOTCA`, and clusters to sidecars originate mTLS.
    pub fn set_trust_bundle(&self, pem: String) {
        let mut state = self.state();
        state.trust_bundle = Some(pem.into());
        self.republish(&mut state);
    }

    /// Starts publishing snapshots (no-op when not warming).
    pub fn end_warmup(&self) {
        let mut state = self.state();
        if state.warming {
            state.warming = false;
            tracing::info!(
                workloads = state.registry.len(),
                "warm-up over, publishing config"
            );
            self.republish(&mut state);
        }
    }

    fn republish(&self, state: &mut State) {
        let workloads = state
            .registry
            .values()
            .map(|p| (p.node_id.as_str(), &p.meta));
        let mut model = MeshModel::build(state.config.clone(), workloads);
        model.trust_bundle = state.trust_bundle.clone();
        let model = Arc::new(model);
        if state.warming {
            state.model = model;
            return;
        }
        let shared = SharedResources::build(&model, state.shared.as_ref());
        let now = Instant::now();
        for proxy in state.registry.values_mut() {
            proxy.gaps = capability::gaps(&model, proxy.meta.client);
            let snapshot = Arc::new(translate_shared(&shared, &model, &proxy.meta));
            if proxy.publish(&snapshot, now) {
                self.metrics.snapshot_updates.inc();
            }
        }
        state.model = model;
        state.shared = Some(shared);
    }

    /// True once a config load was attempted (accepted or rejected) and warm-up is over.
    pub fn ready(&self) -> bool {
        let state = self.state();
        !state.warming && (state.config_generation > 0 || !state.errors.is_empty())
    }

    /// True once a config load was attempted, accepted or rejected.
    pub fn loaded(&self) -> bool {
        let state = self.state();
        state.config_generation > 0 || !state.errors.is_empty()
    }

    /// The current model (services and endpoints).
    pub fn model(&self) -> Arc<MeshModel> {
        self.state().model.clone()
    }

    /// Connected workloads.
    pub fn workloads(&self) -> Vec<WorkloadView> {
        self.state()
            .registry
            .values()
            .map(Proxy::workload_view)
            .collect()
    }

    /// Connected proxies as the stats collector reads them.
    pub(crate) fn stats_targets(&self) -> Vec<Target> {
        let state = self.state();
        // A proxy that reconnected may briefly hold two streams: its newest one speaks for it.
        let mut seen = std::collections::HashSet::new();
        let newest_first = state.registry.values().rev();
        let mut targets: Vec<Target> = newest_first
            .filter(|p| seen.insert(p.node_id.as_str()))
            .map(Proxy::stats_target)
            .collect();
        targets.reverse();
        targets
    }

    /// The gauge of proxy taps open for `/api/tap` clients.
    pub(crate) fn proxy_taps(&self) -> prometheus_client::metrics::gauge::Gauge {
        self.metrics.proxy_taps.clone()
    }

    /// Connected proxies' xDS state.
    pub fn proxies(&self) -> Vec<ProxyView> {
        self.state()
            .registry
            .values()
            .map(Proxy::proxy_view)
            .collect()
    }

    /// The node metadata of the connected proxy `node_id` (the newest stream's, should two
    /// streams share the id while a reconnect overlaps the old stream's end).
    pub fn node_meta(&self, node_id: &str) -> Option<NodeMeta> {
        let state = self.state();
        let mut proxies = state.registry.values().rev();
        proxies
            .find(|p| p.node_id == node_id)
            .map(|p| p.meta.clone())
    }

    /// The serving config and the last errors.
    pub fn config(&self) -> ConfigView {
        let state = self.state();
        ConfigView {
            generation: state.config_generation,
            loaded_at_unix: unix(state.config_loaded_at),
            errors: state.errors.clone(),
            resources: state.config.clone(),
        }
    }

    /// Prometheus text exposition of the control plane's metrics.
    pub fn render_metrics(&self) -> String {
        self.metrics.render()
    }
}

impl Hooks for ControlPlane {
    fn connect(&self, stream: StreamId, node: &Node) -> Result<SnapshotWatch, Status> {
        let meta =
            NodeMeta::from_node(node).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut state = self.state();
        let (tx, rx) = watch::channel(None);
        tracing::info!(node = %node.id, service = %meta.service, "workload registered");
        state.registry.insert(
            stream,
            Proxy {
                node_id: node.id.clone(),
                meta,
                connected_at: SystemTime::now(),
                snapshots: tx,
                acked: BTreeMap::new(),
                last_nack: None,
                nacks: 0,
                unacked: BTreeMap::new(),
                gaps: Vec::new(),
            },
        );
        self.metrics.proxies_connected.inc();
        self.republish(&mut state);
        Ok(rx)
    }

    fn ack(&self, stream: StreamId, type_url: TypeUrl, version: &str) {
        self.metrics
            .acks
            .get_or_create(&TypeLabels {
                r#type: type_url.into(),
            })
            .inc();
        let now = Instant::now();
        // Observed under the lock, so whoever sees the ACK in the registry sees it timed.
        let mut state = self.state();
        let proxy = state.registry.get_mut(&stream);
        if let Some(latency) = proxy.and_then(|p| p.acked(type_url, version, now)) {
            self.metrics.push_duration.observe(latency.as_secs_f64());
        }
    }

    fn sent(&self, stream: StreamId, type_url: TypeUrl, version: &str) {
        self.metrics
            .pushes
            .get_or_create(&TypeLabels {
                r#type: type_url.into(),
            })
            .inc();
        if let Some(proxy) = self.state().registry.get_mut(&stream) {
            proxy.sent(type_url, version);
        }
    }

    fn nack(&self, stream: StreamId, type_url: TypeUrl, rejected_version: &str, error: &str) {
        self.metrics
            .nacks
            .get_or_create(&TypeLabels {
                r#type: type_url.into(),
            })
            .inc();
        if let Some(proxy) = self.state().registry.get_mut(&stream) {
            tracing::warn!(node = %proxy.node_id, %type_url, version = rejected_version, error, "proxy rejected config");
            proxy.nacks += 1;
            proxy.last_nack = Some(Nack {
                type_url: type_url.short().to_owned(),
                version: rejected_version.to_owned(),
                error: error.to_owned(),
                at_unix: unix(SystemTime::now()),
            });
        }
    }

    fn disconnect(&self, stream: StreamId) {
        let mut state = self.state();
        if let Some(proxy) = state.registry.remove(&stream) {
            tracing::info!(node = %proxy.node_id, service = %proxy.meta.service, "workload removed");
            self.metrics.proxies_connected.dec();
            self.republish(&mut state);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::advance;

    use super::*;

    const SERVICE: &str = "apiVersion: trellis.dev/v1alpha1\nkind: Service\n\
        metadata: {name: legacy}\nspec:\n  endpoints:\n  - {address: \"127.0.0.1:7001\"}\n";

    fn version(snapshots: &SnapshotWatch, t: TypeUrl) -> String {
        snapshots.borrow().as_ref().unwrap().version(t).to_owned()
    }

    /// The value of the sample `series` (name and labels) in the exposition.
    fn sample(text: &str, series: &str) -> f64 {
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '));
        value
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn a_reconnected_proxy_is_read_through_its_newest_stream_only() {
        let control = ControlPlane::new();
        let meta = |admin: &str| NodeMeta {
            service: "web".into(),
            namespace: "default".into(),
            app_port: 9000,
            inbound_port: 9001,
            ip: "127.0.0.1".into(),
            admin: Some(admin.into()),
            ..NodeMeta::default()
        };
        let _old = control
            .connect(1, &meta("127.0.0.1:15000").to_node("web-1"))
            .unwrap();
        let _new = control
            .connect(2, &meta("127.0.0.1:15001").to_node("web-1"))
            .unwrap();
        let _other = control
            .connect(3, &meta("127.0.0.1:15002").to_node("web-2"))
            .unwrap();
        let targets: Vec<(String, Option<String>)> = control
            .stats_targets()
            .into_iter()
            .map(|t| (t.node_id, t.admin))
            .collect();
        assert_eq!(
            targets,
            [
                ("web-1".to_owned(), Some("127.0.0.1:15001".to_owned())),
                ("web-2".to_owned(), Some("127.0.0.1:15002".to_owned())),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pushes_are_counted_and_timed_from_publish_to_ack() {
        let control = ControlPlane::new();
        let meta = NodeMeta {
            service: "web".into(),
            namespace: "default".into(),
            app_port: 9000,
            inbound_port: 9001,
            ip: "127.0.0.1".into(),
            ..NodeMeta::default()
        };
        let snapshots = control.connect(1, &meta.to_node("web-1")).unwrap();
        let first = version(&snapshots, TypeUrl::Cluster);

        // Registration published the proxy's first snapshot; it ACKs 30 ms later.
        advance(Duration::from_millis(30)).await;
        control.sent(1, TypeUrl::Cluster, &first);
        control.ack(1, TypeUrl::Cluster, &first);
        // Held without a response: not a push, not timed.
        let eds = version(&snapshots, TypeUrl::ClusterLoadAssignment);
        control.ack(1, TypeUrl::ClusterLoadAssignment, &eds);
        // A held version sent again (the subscription changed): a push, but not timed.
        control.sent(1, TypeUrl::Cluster, &first);
        control.ack(1, TypeUrl::Cluster, &first);

        // A config change a minute later is timed from its own publication.
        advance(Duration::from_secs(60)).await;
        control.accept_config(trellis_api::load_str("services.yaml", SERVICE).unwrap());
        let second = version(&snapshots, TypeUrl::Cluster);
        assert_ne!(first, second);
        advance(Duration::from_millis(1500)).await;
        control.sent(1, TypeUrl::Cluster, &second);
        control.ack(1, TypeUrl::Cluster, &second);

        let text = control.render_metrics();
        assert_eq!(
            sample(&text, "trellis_control_xds_pushes_total{type=\"cds\"}"),
            3.0
        );
        assert_eq!(
            sample(&text, "trellis_control_xds_acks_total{type=\"cds\"}"),
            3.0
        );
        let histogram = "trellis_control_xds_push_duration_seconds";
        assert_eq!(sample(&text, &format!("{histogram}_count")), 2.0);
        let sum = sample(&text, &format!("{histogram}_sum"));
        assert!((sum - 1.53).abs() < 1e-9, "{sum}");
        let bucket = |le: &str| sample(&text, &format!("{histogram}_bucket{{le=\"{le}\"}}"));
        assert_eq!(
            [
                bucket("0.025"),
                bucket("0.05"),
                bucket("1.0"),
                bucket("2.5")
            ],
            [0.0, 1.0, 1.0, 2.0]
        );
        assert!(sample(&text, "process_threads") >= 1.0, "{text}");
    }
}

//! `TestMesh`: the real control plane (watching a temp config dir) and real sidecars,
//! in-process on loopback, with helpers to stop and restart the control plane on its port.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use trellis_control::{ControlHandle, ControlOptions};
use trellis_proxy::{ProxyHandle, ProxyOptions, TracingOptions};

use crate::{Deadline, TempConfigDir};

/// How long a sidecar may take to get its first config in tests.
const READY: Duration = Duration::from_secs(10);

/// How often the control plane reads the sidecars' stats: short, so a test sees its traffic in
/// `/api/stats` within a fraction of a second.
const STATS_INTERVAL: Duration = Duration::from_millis(100);

/// Warm-up of a restarted control plane: longer than the proxies' reconnect backoff after a
/// short outage, so every sidecar re-registers before config is published.
const RESTART_WARMUP: Duration = Duration::from_secs(2);

/// A control plane over a temp config dir, and the sidecars started against it.
pub struct TestMesh {
    /// The watched config dir.
    pub config: TempConfigDir,
    /// The control plane's data dir (CA and join token survive a restart).
    data: tempfile::TempDir,
    control: Option<ControlHandle>,
    xds_addr: SocketAddr,
    admin_addr: SocketAddr,
    join_token: String,
    svid_ttl: Option<Duration>,
}

/// What a test sidecar fronts and reaches.
#[derive(Debug, Clone, Default)]
pub struct Sidecar {
    /// Service name.
    pub service: String,
    /// Workload labels.
    pub labels: Vec<(String, String)>,
    /// The local app's port (0 when the workload only sends).
    pub app_port: u16,
    /// Upstream services to give outbound ports.
    pub upstreams: Vec<String>,
    /// Open an HTTP-proxy-mode listener.
    pub http_proxy: bool,
    /// Advertise this inbound address instead of the bound one (to put a relay in between).
    pub advertise: Option<SocketAddr>,
    /// The workload's locality, `region/zone/subzone`.
    pub locality: Option<String>,
    /// Where and how much the sidecar traces.
    pub tracing: Option<TracingOptions>,
}

impl Sidecar {
    /// A sidecar for `service` in front of the app on `app_port`.
    pub fn new(service: &str, app_port: u16) -> Sidecar {
        Sidecar {
            service: service.to_owned(),
            app_port,
            ..Sidecar::default()
        }
    }

    /// Adds an upstream with an outbound port.
    pub fn upstream(mut self, service: &str) -> Sidecar {
        self.upstreams.push(service.to_owned());
        self
    }

    /// Traces every request, exporting spans to the OTLP collector at `collector`.
    pub fn traced(mut self, collector: &str) -> Sidecar {
        self.tracing = Some(TracingOptions {
            collector: collector.to_owned(),
            sampling_percent: 100.0,
        });
        self
    }

    /// Sets the workload's locality (`region/zone/subzone`).
    pub fn locality(mut self, locality: &str) -> Sidecar {
        self.locality = Some(locality.to_owned());
        self
    }

    /// Adds a workload label.
    pub fn label(mut self, key: &str, value: &str) -> Sidecar {
        self.labels.push((key.to_owned(), value.to_owned()));
        self
    }
}

impl TestMesh {
    /// Writes `files` (name, YAML) into a new config dir and starts the control plane on it.
    pub async fn start(files: &[(&str, &str)]) -> anyhow::Result<TestMesh> {
        TestMesh::start_with(files, None).await
    }

    /// Like [`TestMesh::start`], with workload certificates living `svid_ttl`.
    pub async fn start_with(
        files: &[(&str, &str)],
        svid_ttl: Option<Duration>,
    ) -> anyhow::Result<TestMesh> {
        let config = TempConfigDir::new()?;
        for (name, yaml) in files {
            config.write(name, yaml)?;
        }
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let data = tempfile::tempdir()?;
        let control =
            start_control(&config, data.path(), any, any, Duration::ZERO, svid_ttl).await?;
        Ok(TestMesh {
            svid_ttl,
            join_token: control.join_token().to_owned(),
            config,
            data,
            xds_addr: control.xds_addr(),
            admin_addr: control.admin_addr(),
            control: Some(control),
        })
    }

    /// The control plane's data dir (its CA lives in `ca/`).
    pub fn data_dir(&self) -> &std::path::Path {
        self.data.path()
    }

    /// The join token sidecars present to the CA.
    pub fn join_token(&self) -> &str {
        &self.join_token
    }

    /// The control plane's xDS (and CA) address.
    pub fn xds_addr(&self) -> SocketAddr {
        self.xds_addr
    }

    /// The control plane's admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The running control plane; panics while it is stopped.
    pub fn control(&self) -> &ControlHandle {
        self.control.as_ref().expect("control plane is stopped")
    }

    /// Starts a sidecar and waits until it has its config.
    pub async fn sidecar(&self, spec: Sidecar) -> anyhow::Result<ProxyHandle> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let proxy = trellis_proxy::start(ProxyOptions {
            control_plane: format!("http://{}", self.xds_addr),
            node_id: None,
            service: spec.service.clone(),
            namespace: "default".to_owned(),
            labels: spec.labels.into_iter().collect(),
            app_port: spec.app_port,
            inbound: any,
            advertise: spec.advertise,
            upstreams: spec.upstreams.into_iter().map(|u| (u, any)).collect(),
            http_proxy: spec.http_proxy.then_some(any),
            admin: any,
            locality: spec.locality,
            ca_token: Some(self.join_token.clone()),
            trust_domain: "cluster.local".to_owned(),
            svid_ttl: None,
            access_log: None,
            tracing: spec.tracing,
        })
        .await
        .with_context(|| format!("starting the sidecar of {}", spec.service))?;
        tokio::time::timeout(READY, proxy.ready())
            .await
            .with_context(|| format!("sidecar of {} not ready", spec.service))?;
        Ok(proxy)
    }

    /// Stops the control plane (its ADS streams close as if the process died).
    pub fn stop_control(&mut self) {
        self.control = None;
    }

    /// Starts the control plane again on the same ports, with a warm-up like a real restart.
    pub async fn restart_control(&mut self) -> anyhow::Result<()> {
        let deadline = Deadline::after(Duration::from_secs(5));
        loop {
            match start_control(
                &self.config,
                self.data.path(),
                self.xds_addr,
                self.admin_addr,
                RESTART_WARMUP,
                self.svid_ttl,
            )
            .await
            {
                Ok(control) => {
                    self.control = Some(control);
                    return Ok(());
                }
                Err(e) if !deadline.passed() => {
                    tracing::debug!(error = %e, "ports not free yet");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

async fn start_control(
    config: &TempConfigDir,
    data: &std::path::Path,
    xds: SocketAddr,
    admin: SocketAddr,
    warmup: Duration,
    svid_ttl: Option<Duration>,
) -> anyhow::Result<ControlHandle> {
    trellis_control::start(ControlOptions {
        config_dir: Some(config.path().to_owned()),
        data_dir: Some(data.to_owned()),
        xds_addr: xds,
        admin_addr: admin,
        warmup,
        svid_ttl,
        user_ca: None,
        stats_interval: STATS_INTERVAL,
    })
    .await
    .context("starting the control plane")
}

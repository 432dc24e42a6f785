//! The demo mesh on loopback: an embedded control plane serving `examples/demo/mesh.yaml`, and
//! each demo service behind its own sidecar, started in dependency order (sidecars bind first,
//! so each app is handed its sidecar's outbound ports).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use trellis_control::{ControlHandle, ControlOptions};
use trellis_proxy::{ProxyHandle, ProxyOptions};

use crate::{Catalog, DemoError, ShutdownSignal, serve_catalog, serve_frontend, serve_ratings};

/// The mesh config the demo serves (also a runnable example).
pub const MESH_YAML: &str = include_str!("../../../examples/demo/mesh.yaml");

/// How long sidecars may take to receive their first config.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How often start-up checks whether every sidecar applied the latest config.
const SYNC_POLL: Duration = Duration::from_millis(10);

/// One application and its sidecar.
pub struct Workload {
    /// Service name.
    pub service: &'static str,
    /// `version` label.
    pub version: &'static str,
    /// Where the app listens (`None` for the load generator, which only sends).
    pub app: Option<SocketAddr>,
    /// Its sidecar.
    pub proxy: ProxyHandle,
}

/// A running demo mesh.
pub struct DemoMesh {
    /// The embedded control plane.
    pub control: ControlHandle,
    /// Every workload, the load generator's last.
    pub workloads: Vec<Workload>,
    apps: Vec<JoinHandle<()>>,
}

/// The demo's services: (service, version, upstreams).
const SERVICES: [(&str, &str, &[&str]); 4] = [
    ("catalog", "v1", &[]),
    ("catalog", "v2", &[]),
    ("ratings", "v1", &[]),
    ("frontend", "v1", &["catalog", "ratings"]),
];

impl DemoMesh {
    /// Starts the control plane, every service with its sidecar, and the load generator's
    /// sidecar; returns once every sidecar has its config.
    pub async fn start(shutdown: &ShutdownSignal) -> Result<DemoMesh, DemoError> {
        let any_port: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        let control = trellis_control::start(ControlOptions {
            config_dir: None,
            data_dir: None,
            xds_addr: any_port,
            admin_addr: any_port,
            warmup: Duration::ZERO,
            svid_ttl: None,
            user_ca: None,
            stats_interval: trellis_control::DEFAULT_STATS_INTERVAL,
        })
        .await?;
        control
            .control()
            .accept_config(trellis_api::load_str("examples/demo/mesh.yaml", MESH_YAML)?);
        let xds = format!("http://{}", control.xds_addr());
        let token = control.join_token().to_owned();

        let mut workloads = Vec::new();
        let mut apps = Vec::new();
        for (service, version, upstreams) in SERVICES {
            let listener = TcpListener::bind(any_port).await?;
            let app = listener.local_addr()?;
            let proxy = sidecar(&xds, &token, service, version, app.port(), upstreams).await?;
            let up = |name: &str| proxy.upstream_addr(name).unwrap_or(any_port);
            let stop = shutdown.clone().wait();
            apps.push(match service {
                "catalog" if version == "v1" => {
                    tokio::spawn(serve_catalog(listener, Catalog::v1(), stop))
                }
                "catalog" => tokio::spawn(serve_catalog(listener, Catalog::v2(), stop)),
                "ratings" => tokio::spawn(log_exit(service, serve_ratings(listener, stop))),
                _ => tokio::spawn(log_exit(
                    service,
                    serve_frontend(listener, up("catalog"), up("ratings"), stop),
                )),
            });
            workloads.push(Workload {
                service,
                version,
                app: Some(app),
                proxy,
            });
        }
        let loadgen = sidecar(&xds, &token, "loadgen", "v1", 0, &["frontend"]).await?;
        workloads.push(Workload {
            service: "loadgen",
            version: "v1",
            app: None,
            proxy: loadgen,
        });
        for w in &workloads {
            tokio::time::timeout(READY_TIMEOUT, w.proxy.ready())
                .await
                .map_err(|_| DemoError::NotReady(w.service.to_owned(), READY_TIMEOUT))?;
        }
        // A sidecar's first config can predate the registration of the services it calls
        // (they connect concurrently): wait until every sidecar applied one that knows every
        // workload, so the first requests find their endpoints.
        let all_synced = || {
            let proxies = control.control().proxies();
            proxies.len() == workloads.len() && proxies.iter().all(|p| p.synced)
        };
        tokio::time::timeout(READY_TIMEOUT, async {
            while !all_synced() {
                tokio::time::sleep(SYNC_POLL).await;
            }
        })
        .await
        .map_err(|_| DemoError::NotSynced(READY_TIMEOUT))?;
        Ok(DemoMesh {
            control,
            workloads,
            apps,
        })
    }

    /// The load generator's outbound address for the frontend.
    pub fn frontend_via_loadgen(&self) -> Option<SocketAddr> {
        self.workloads
            .iter()
            .find(|w| w.service == "loadgen")
            .and_then(|w| w.proxy.upstream_addr("frontend"))
    }

    /// Drains every sidecar, then stops the apps and the control plane.
    pub async fn stop(self) {
        for w in self.workloads {
            w.proxy.shutdown().await;
        }
        for app in self.apps {
            app.abort();
        }
        drop(self.control);
    }
}

async fn sidecar(
    xds: &str,
    token: &str,
    service: &str,
    version: &str,
    app_port: u16,
    upstreams: &[&str],
) -> Result<ProxyHandle, DemoError> {
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    Ok(trellis_proxy::start(ProxyOptions {
        control_plane: xds.to_owned(),
        node_id: Some(format!("{service}-{version}")),
        service: service.to_owned(),
        namespace: "default".to_owned(),
        labels: [("version".to_owned(), version.to_owned())].into(),
        app_port,
        inbound: any_port,
        advertise: None,
        upstreams: upstreams
            .iter()
            .map(|u| ((*u).to_owned(), any_port))
            .collect(),
        http_proxy: None,
        admin: any_port,
        locality: None,
        ca_token: Some(token.to_owned()),
        trust_domain: "cluster.local".to_owned(),
        svid_ttl: None,
        access_log: None,
        tracing: None,
    })
    .await?)
}

async fn log_exit(service: &'static str, app: impl Future<Output = Result<(), DemoError>>) {
    if let Err(e) = app.await {
        tracing::error!(service, error = %e, "demo service stopped");
    }
}

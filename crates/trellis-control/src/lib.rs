//! The Trellis control plane: config sources (files), the workload registry (proxies that
//! connect over ADS), the translator from config and registry to per-proxy xDS snapshots, the
//! ADS server, the admin API with its web dashboard, and the request stats it collects from the
//! proxies' admin servers.
//!
//! It never touches the data path: proxies carry traffic, the control plane only configures them.

mod admin;
pub mod ca;
mod capability;
mod control;
mod dashboard;
mod files;
mod metrics;
mod model;
mod proxy_admin;
mod registry;
mod stats;
mod status;
mod tap;
pub mod translate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use trellis_identity::ca::CaOptions;
use trellis_xds::ca::CaServer;
use trellis_xds::server::{AdsServer, StopHandle};

use crate::ca::{CaService, JoinToken};

pub use control::{ConfigView, ControlPlane};
pub use files::{FileSource, FilesError};
pub use model::{EndpointModel, MeshModel, ServiceModel};
pub use proxy_admin::percent_encode;
pub use registry::{Nack, ProxyView, WorkloadView};
pub use stats::{
    DEFAULT_STATS_INTERVAL, STATS_RETENTION, SeriesPoint, StatsBy, StatsReport, StatsRow,
    StatsSeries,
};

/// Where the control plane listens and what it loads.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// Directory of YAML resources to load and watch; `None` to feed config in code.
    pub config_dir: Option<PathBuf>,
    /// Directory for the control plane's own state (`endpoints.json` with its addresses).
    pub data_dir: Option<PathBuf>,
    /// xDS (ADS) gRPC address; port 0 picks a free port.
    pub xds_addr: SocketAddr,
    /// Admin HTTP address; port 0 picks a free port.
    pub admin_addr: SocketAddr,
    /// How long to withhold config after start so proxies that were connected to a previous
    /// instance can re-register first (zero for a fresh mesh).
    pub warmup: Duration,
    /// SVID lifetime, overriding MeshConfig's `svidTtl` (tests use seconds).
    pub svid_ttl: Option<Duration>,
    /// A user-supplied root or intermediate instead of the self-signed root.
    pub user_ca: Option<ca::UserCa>,
    /// How often to read every proxy's admin `/stats` for `/api/stats`
    /// ([`DEFAULT_STATS_INTERVAL`]; tests shorten it); zero reads nothing.
    pub stats_interval: Duration,
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The config directory cannot be watched.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The certificate authority could not start.
    #[error(transparent)]
    Ca(#[from] ca::CaStartError),
    /// The data dir cannot be written.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running control plane. Dropping it stops everything.
pub struct ControlHandle {
    control: Arc<ControlPlane>,
    ca: Arc<CaService<JoinToken>>,
    join_token: String,
    xds_addr: SocketAddr,
    admin_addr: SocketAddr,
    _files: Option<FileSource>,
    _stop: StopHandle,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for ControlHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl ControlHandle {
    /// The bound xDS address.
    pub fn xds_addr(&self) -> SocketAddr {
        self.xds_addr
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The shared state (to feed config in code, or read the registry).
    pub fn control(&self) -> &Arc<ControlPlane> {
        &self.control
    }

    /// The join token proxies present to the CA (also in `data_dir/join-token`).
    pub fn join_token(&self) -> &str {
        &self.join_token
    }

    /// The certificate authority.
    pub fn ca(&self) -> &Arc<CaService<JoinToken>> {
        &self.ca
    }
}

/// Binds the listeners, loads the config dir (if any) and starts serving.
pub async fn start(opts: ControlOptions) -> Result<ControlHandle, StartError> {
    let control = Arc::new(if opts.warmup.is_zero() {
        ControlPlane::new()
    } else {
        ControlPlane::warming()
    });
    // The join token exists before the xDS port accepts: a sidecar started as soon as it
    // does reads the token file at start, and without it would run without mTLS.
    let token = match &opts.data_dir {
        Some(dir) => JoinToken::load_or_create(dir)?,
        None => JoinToken::random(),
    };
    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { what, addr, source })
    };
    let xds = bind("xds", opts.xds_addr).await?;
    let admin = bind("admin", opts.admin_addr).await?;
    let xds_addr = local_addr(&xds, opts.xds_addr);
    let admin_addr = local_addr(&admin, opts.admin_addr);

    let files = match &opts.config_dir {
        Some(dir) => Some(FileSource::start(dir, control.clone()).await?),
        None => None,
    };
    let join_token = token.secret().to_owned();
    let mesh = control.config().resources.mesh_config();
    let ca_options = CaOptions {
        trust_domain: mesh.trust_domain.clone(),
        svid_ttl: opts.svid_ttl.unwrap_or(mesh.svid_ttl),
        root_ttl: mesh.root_ttl,
        rotate_before: mesh.root_ttl / 3,
    };
    let upkeep_every =
        (ca_options.svid_ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let ca = Arc::new(CaService::start(
        opts.data_dir.as_deref(),
        opts.user_ca.as_ref(),
        ca_options,
        token,
        control.clone(),
    )?);
    // Last, once the join token and the CA exist: readers take the file as "started".
    if let Some(dir) = &opts.data_dir {
        write_endpoints(dir, xds_addr, admin_addr)?;
    }

    let (ads, stop) = AdsServer::new(control.clone());
    let ads = ads.into_service();
    let signer = CaServer::new(ca.clone());
    let xds_task = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(ads)
            .add_service(signer)
            .serve_with_incoming(TcpListenerStream::new(xds))
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "xds server stopped");
        }
    });
    let stats = Arc::new(stats::Collector::new(control.clone(), opts.stats_interval));
    let router = admin::router(control.clone(), ca.clone(), stats.clone());
    let admin_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(admin, router).await {
            tracing::error!(error = %e, "admin server stopped");
        }
    });
    let upkeep = {
        let ca = ca.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(upkeep_every);
            loop {
                every.tick().await;
                ca.maintain();
            }
        })
    };
    let mut tasks = vec![xds_task, admin_task, upkeep];
    tasks.extend(stats.spawn());
    if !opts.warmup.is_zero() {
        let control = control.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(opts.warmup).await;
            control.end_warmup();
        }));
    }
    tracing::info!(%xds_addr, %admin_addr, warmup = ?opts.warmup, "control plane serving");
    Ok(ControlHandle {
        control,
        ca,
        join_token,
        xds_addr,
        admin_addr,
        _files: files,
        _stop: stop,
        tasks,
    })
}

fn local_addr(listener: &TcpListener, requested: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(requested)
}

fn write_endpoints(
    dir: &std::path::Path,
    xds: SocketAddr,
    admin: SocketAddr,
) -> Result<(), StartError> {
    let err = |source| StartError::DataDir {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let body = serde_json::json!({ "xds": xds.to_string(), "admin": admin.to_string() });
    // Written aside and renamed, so a reader never sees half of it.
    let partial = dir.join("endpoints.json.partial");
    std::fs::write(&partial, body.to_string()).map_err(err)?;
    std::fs::rename(&partial, dir.join("endpoints.json")).map_err(err)
}

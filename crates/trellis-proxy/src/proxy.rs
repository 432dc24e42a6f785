//! Starting and stopping a proxy: bind the sockets first (so ephemeral ports can be reported),
//! present them to the control plane in the node metadata, then run the admin server, the
//! listeners and the ADS client until shutdown.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use trellis_identity::{SpiffeId, SpiffeIdError};
use trellis_xds::client::ClientOptions;
use trellis_xds::node::{ClientKind, NodeMeta, UpstreamPort};

use crate::drain::Drain;
use crate::handler::ConfigHandler;
use crate::options::ProxyOptions;
use crate::table::Shared;
use crate::telemetry::{LocalWorkload, Metrics, RouteStats, Tracer};
use crate::tls::agent::{self, AgentOptions};
use crate::{admin, listener};

/// How long shutdown lets in-flight requests and connections finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// ADS reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A listen address could not be bound.
    #[error("cannot bind the {what} listener on {addr}: {source} (is the port in use?)")]
    Bind {
        /// Which listener (`inbound`, `admin`, `http proxy`, `upstream <service>`).
        what: String,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The control-plane endpoint is not an `http(s)://host:port` URL.
    #[error("control plane endpoint {0:?} is not a valid http:// URL")]
    ControlPlane(String),
    /// Service, namespace or trust domain do not form a SPIFFE ID.
    #[error("workload identity: {0}")]
    Identity(#[from] SpiffeIdError),
    /// Agent mode's SDS socket could not be created.
    #[error("cannot serve SDS on {}: {source} (does the directory exist and is it writable?)", path.display())]
    SdsSocket {
        /// The socket path.
        path: std::path::PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The trace collector is not a valid `http://host:port` URL.
    #[error("trace collector {0:?} is not a valid http:// URL: {1}")]
    Tracing(String, tonic::transport::Error),
}

/// A running proxy. Dropping it stops the proxy abruptly; prefer [`ProxyHandle::shutdown`].
#[derive(Debug)]
pub struct ProxyHandle {
    inbound: SocketAddr,
    admin: SocketAddr,
    upstreams: Vec<(String, SocketAddr)>,
    http_proxy: Option<SocketAddr>,
    shared: Arc<Shared>,
    handler: ConfigHandler,
    drain: Drain,
    xds_stop: oneshot::Sender<()>,
    xds_task: JoinHandle<()>,
    agent: Option<AgentTask>,
}

/// The certificate agent's task; it stops with the handle, however that goes.
#[derive(Debug)]
pub(crate) struct AgentTask(pub(crate) JoinHandle<()>);

impl Drop for AgentTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Binds every socket, registers with the control plane and starts serving.
///
/// Connections that arrive before the first configuration wait for it (up to 10 s).
pub async fn start(opts: ProxyOptions) -> Result<ProxyHandle, ProxyError> {
    let endpoint_ok = opts
        .control_plane
        .parse::<http::Uri>()
        .is_ok_and(|u| u.authority().is_some() && u.scheme().is_some());
    if !endpoint_ok {
        return Err(ProxyError::ControlPlane(opts.control_plane));
    }
    let inbound = bind("inbound", opts.inbound).await?;
    let mut upstreams = Vec::with_capacity(opts.upstreams.len());
    for (service, addr) in &opts.upstreams {
        upstreams.push((
            service.clone(),
            bind(&format!("upstream {service}"), *addr).await?,
        ));
    }
    let http_proxy = match opts.http_proxy {
        Some(addr) => Some(bind("http proxy", addr).await?),
        None => None,
    };
    let admin_socket = bind("admin", opts.admin).await?;

    let inbound_addr = local_addr("inbound", opts.inbound, &inbound)?;
    let admin_addr = local_addr("admin", opts.admin, &admin_socket)?;
    let mut upstream_addrs = Vec::with_capacity(upstreams.len());
    for ((service, socket), (_, requested)) in upstreams.iter().zip(&opts.upstreams) {
        upstream_addrs.push((service.clone(), local_addr(service, *requested, socket)?));
    }
    let http_proxy_addr = match (&http_proxy, opts.http_proxy) {
        (Some(socket), Some(requested)) => Some(local_addr("http proxy", requested, socket)?),
        _ => None,
    };

    let ip = match inbound_addr.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let meta = NodeMeta {
        service: opts.service.clone(),
        namespace: opts.namespace.clone(),
        labels: opts.labels.clone(),
        app_port: opts.app_port,
        inbound_port: inbound_addr.port(),
        advertise: opts.advertise.map(|a| a.to_string()),
        ip: ip.to_string(),
        upstreams: upstream_addrs
            .iter()
            .map(|(service, addr)| UpstreamPort {
                service: service.clone(),
                port: addr.port(),
            })
            .collect(),
        http_proxy_port: http_proxy_addr.map(|a| a.port()),
        locality: opts.locality.clone(),
        client: ClientKind::TrellisProxy,
        mtls: opts.ca_token.is_some(),
        h2_upgrade: true,
        admin: Some(admin_addr.to_string()),
    };
    let node_id = opts
        .node_id
        .clone()
        .unwrap_or_else(|| format!("{}-{:08x}", opts.service, rand::random::<u32>()));

    let local = LocalWorkload {
        service: opts.service.clone(),
        namespace: opts.namespace.clone(),
        workload: node_id.clone(),
        identity: opts
            .ca_token
            .as_ref()
            .and_then(|_| SpiffeId::new(&opts.trust_domain, &opts.namespace, &opts.service).ok())
            .map(|id| id.to_string())
            .unwrap_or_default(),
    };
    let tracer = opts
        .tracing
        .as_ref()
        .map(|t| Tracer::new(t, &local).map_err(|e| ProxyError::Tracing(t.collector.clone(), e)))
        .transpose()?;
    let shared = Arc::new(Shared::new(Metrics::new(local, opts.access_log, tracer)));
    let handler = ConfigHandler::new(shared.clone(), inbound_addr.port());
    let (drain, watch) = Drain::new();

    let mut prebound = BTreeSet::new();
    let sockets = std::iter::once(inbound)
        .chain(upstreams.into_iter().map(|(_, s)| s))
        .chain(http_proxy);
    for socket in sockets {
        if let Ok(addr) = socket.local_addr() {
            prebound.insert(addr.port());
        }
        listener::spawn_accept(socket, shared.clone(), watch.clone(), None);
    }
    listener::spawn_reconciler(shared.clone(), prebound, watch.clone());
    admin::spawn(admin_socket, shared.clone(), watch);

    let agent = opts.ca_token.clone().map(|token| {
        let identity = SpiffeId::new(&opts.trust_domain, &opts.namespace, &opts.service);
        identity.map(|identity| {
            AgentTask(tokio::spawn(agent::run(
                AgentOptions {
                    endpoint: opts.control_plane.clone(),
                    token,
                    identity,
                    ttl: opts.svid_ttl,
                },
                shared.identity.clone(),
                shared.metrics.identity.clone(),
            )))
        })
    });
    let agent = agent.transpose()?;
    let (xds_stop, stop_rx) = oneshot::channel::<()>();
    let client = ClientOptions {
        endpoint: opts.control_plane.clone(),
        node: meta.to_node(&node_id),
        backoff_min: BACKOFF_MIN,
        backoff_max: BACKOFF_MAX,
    };
    let xds_task = tokio::spawn(trellis_xds::client::run(
        client,
        handler.clone(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    tracing::info!(
        node = %node_id,
        inbound = %inbound_addr,
        admin = %admin_addr,
        control_plane = %opts.control_plane,
        "proxy started"
    );
    Ok(ProxyHandle {
        inbound: inbound_addr,
        admin: admin_addr,
        upstreams: upstream_addrs,
        http_proxy: http_proxy_addr,
        shared,
        handler,
        drain,
        xds_stop,
        xds_task,
        agent,
    })
}

async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyError::Bind {
            what: what.to_owned(),
            addr,
            source,
        })
}

fn local_addr(
    what: &str,
    requested: SocketAddr,
    socket: &TcpListener,
) -> Result<SocketAddr, ProxyError> {
    socket.local_addr().map_err(|source| ProxyError::Bind {
        what: what.to_owned(),
        addr: requested,
        source,
    })
}

impl ProxyHandle {
    /// Address of the inbound listener (with the real port if 0 was requested).
    pub fn inbound_addr(&self) -> SocketAddr {
        self.inbound
    }

    /// Address of the admin server.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// Address of the outbound listener for `service`, if one was requested.
    pub fn upstream_addr(&self, service: &str) -> Option<SocketAddr> {
        self.upstreams
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, addr)| *addr)
    }

    /// Address of the HTTP-proxy-mode listener, if one was requested.
    pub fn http_proxy_addr(&self) -> Option<SocketAddr> {
        self.http_proxy
    }

    /// Resolves once LDS and CDS, and the RDS, EDS and SDS resources they name, were first
    /// applied, and (with a CA token) the workload certificate is installed.
    pub async fn ready(&self) {
        self.shared.wait_ready().await;
        if self.agent.is_some() {
            self.shared.identity.wait_installed().await;
        }
    }

    /// Request statistics per (direction, route, cluster) that has seen traffic.
    pub fn stats(&self) -> Vec<RouteStats> {
        self.shared.metrics.route_snapshot()
    }

    /// A handle on the proxy's xDS handler, to apply configuration without a control plane
    /// (tests, scripted ADS servers). Updates applied through it and through the ADS client
    /// land in the same state.
    pub fn config_handler(&self) -> ConfigHandler {
        self.handler.clone()
    }

    /// Stops accepting, lets in-flight requests and connections finish (up to 5 s, then closes
    /// them), and stops the xDS client.
    pub async fn shutdown(self) {
        drop(self.agent);
        let _ = self.xds_stop.send(());
        self.drain.shutdown(SHUTDOWN_GRACE).await;
        if let Err(e) = self.xds_task.await {
            tracing::warn!(error = %e, "xds client task failed");
        }
        tracing::info!("proxy stopped");
    }
}

//! Agent mode, for a workload whose sidecar is Envoy: the proxy's certificate agent (key made
//! here, CSR signed by the control plane's CA, renewed before expiry) without any listener,
//! handing each new certificate to the Envoy beside it over SDS on a Unix socket, as
//! istio-agent does. Envoy gets everything else from the control plane over ADS.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use trellis_identity::SpiffeId;
use trellis_xds::sds::{self, CertificateWatch, WorkloadCertificate};

use crate::proxy::{AgentTask, ProxyError};
use crate::tls::IdentityState;
use crate::tls::agent::{self, AgentMetrics, AgentOptions};

/// What agent mode needs: where the CA is, the join token, who the workload is, and the socket.
/// Its `Debug` leaves the join token out.
#[derive(Clone)]
pub struct SdsAgentOptions {
    /// The control plane's gRPC address (`http://host:port`), which serves the CA.
    pub control_plane: String,
    /// The join token the CA requires.
    pub ca_token: String,
    /// Trust domain, namespace and service: the SPIFFE ID asked for.
    pub trust_domain: String,
    /// Namespace of the workload.
    pub namespace: String,
    /// Service of the workload (its service account).
    pub service: String,
    /// Requested SVID lifetime; `None` for the CA's default.
    pub svid_ttl: Option<Duration>,
    /// Where to serve SDS (a Unix socket path; a stale socket there is replaced).
    pub socket: PathBuf,
}

impl std::fmt::Debug for SdsAgentOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdsAgentOptions")
            .field("control_plane", &self.control_plane)
            .field("trust_domain", &self.trust_domain)
            .field("namespace", &self.namespace)
            .field("service", &self.service)
            .field("svid_ttl", &self.svid_ttl)
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

/// A running agent. Dropping it stops the agent and its SDS streams (Envoy keeps the last
/// certificate); the socket file stays until the next start replaces it.
#[derive(Debug)]
pub struct SdsAgentHandle {
    served: CertificateWatch,
    _agent: AgentTask,
    _publisher: AgentTask,
    _server: AgentTask,
}

/// Starts agent mode: the certificate agent and the SDS server on `opts.socket`.
pub async fn start_sds_agent(opts: SdsAgentOptions) -> Result<SdsAgentHandle, ProxyError> {
    let identity = SpiffeId::new(&opts.trust_domain, &opts.namespace, &opts.service)?;
    let state = Arc::new(IdentityState::new(AgentMetrics::default()));
    let listener = sds::bind_unix(&opts.socket).map_err(|source| ProxyError::SdsSocket {
        path: opts.socket.clone(),
        source,
    })?;
    let (certificates, served) = watch::channel(None);
    let watched = served.clone();
    // Subscribed before the agent runs, so its first installation is seen.
    let installs = state.installs();
    let publisher = AgentTask(tokio::spawn(publish(state.clone(), installs, certificates)));
    let agent = AgentTask(tokio::spawn(agent::run(
        AgentOptions {
            endpoint: opts.control_plane,
            token: opts.ca_token,
            identity,
            ttl: opts.svid_ttl,
        },
        state.clone(),
        AgentMetrics::default(),
    )));
    let server = AgentTask(tokio::spawn(async move {
        if let Err(e) = sds::serve(listener, watched).await {
            tracing::error!(error = %e, "sds server failed; Envoy gets no certificate updates");
        }
    }));
    tracing::info!(socket = %opts.socket.display(), "sds agent started");
    Ok(SdsAgentHandle {
        served,
        _agent: agent,
        _publisher: publisher,
        _server: server,
    })
}

impl SdsAgentHandle {
    /// Resolves once the first certificate is issued and offered to SDS subscribers.
    pub async fn ready(&self) {
        let mut served = self.served.clone();
        // The sender lives in the publisher task as long as the handle does.
        let _ = served.wait_for(Option::is_some).await;
    }
}

/// Turns each installed identity into the certificate SDS serves.
async fn publish(
    state: Arc<IdentityState>,
    mut installs: watch::Receiver<bool>,
    certificates: watch::Sender<Option<Arc<WorkloadCertificate>>>,
) {
    while installs.changed().await.is_ok() {
        let Some(identity) = state.current() else {
            continue;
        };
        let svid = identity.svid();
        let cert = WorkloadCertificate {
            version: svid.serial.clone(),
            chain_pem: svid.chain_pem(),
            key_pem: svid.key_pem(),
        };
        certificates.send_if_modified(|current| {
            let new = current.as_ref().is_none_or(|c| c.version != cert.version);
            if new {
                *current = Some(Arc::new(cert));
            }
            new
        });
    }
}

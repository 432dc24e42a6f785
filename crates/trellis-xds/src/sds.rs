//! The agent side of Envoy's Secret Discovery Service on a Unix socket, as istio-agent serves
//! it: an Envoy on the same host asks for the workload certificate by name and gets it, with a
//! new version pushed whenever the agent renews it. The private key crosses only that socket
//! (created owner-only), never the network.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use futures_util::Stream;
use prost::Message;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::TypeUrl;

/// The name of the workload certificate secret listeners and clusters refer to.
pub const WORKLOAD_SECRET: &str = "default";

/// The name of the static cluster through which Envoy reaches the local SDS agent.
pub const SDS_CLUSTER: &str = "sds-grpc";

/// Responses buffered per stream before the stream task waits for Envoy to read.
const RESPONSE_QUEUE: usize = 4;

/// One version of the workload certificate: what the agent publishes after each issuance.
#[derive(Clone)]
pub struct WorkloadCertificate {
    /// Version of this certificate (e.g. its serial), sent as the response version.
    pub version: String,
    /// Certificate chain, PEM, leaf first.
    pub chain_pem: String,
    /// The private key, PEM. Never logged: this type's `Debug` shows the version only.
    pub key_pem: String,
}

impl std::fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// What the server hands out: the latest certificate, `None` before the first issuance.
pub type CertificateWatch = watch::Receiver<Option<Arc<WorkloadCertificate>>>;

/// Binds the Unix socket at `path`, owner-only (0600) from the start: it is bound in a private
/// directory beside `path`, restricted, then moved into place, so no other user can connect in
/// between. A stale socket at `path` is replaced; any other file there is an error.
pub fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket path has no file name",
        )
    })?;
    let mut private = path.to_path_buf();
    private.set_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("sds.sock");
    let bound = UnixListener::bind(&staged).and_then(|listener| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    });
    let _ = std::fs::remove_file(&staged);
    std::fs::remove_dir(&private)?;
    bound
}

/// Serves SDS on `listener` until the task is dropped (its streams never end on their own).
pub async fn serve(listener: UnixListener, certificates: CertificateWatch) -> io::Result<()> {
    let service = SecretDiscoveryServiceServer::new(SdsServer { certificates });
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming(UnixListenerStream::new(listener))
        .await
        .map_err(io::Error::other)
}

struct SdsServer {
    certificates: CertificateWatch,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SecretDiscoveryService for SdsServer {
    type StreamSecretsStream = ResponseStream;
    type DeltaSecretsStream = DeltaStream;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let (tx, rx) = mpsc::channel(RESPONSE_QUEUE);
        let session = Session {
            certificates: self.certificates.clone(),
            wanted: false,
            sent: None,
            nonce: 0,
            tx,
        };
        tokio::spawn(session.run(request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented(
            "incremental SDS is not served: use state-of-the-world SDS",
        ))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let request = request.into_inner();
        let current = self.certificates.borrow().clone();
        let cert = current
            .filter(|_| asks_for_workload(&request))
            .ok_or_else(|| {
                Status::not_found(format!("only {WORKLOAD_SECRET:?} is served, once issued"))
            })?;
        Ok(Response::new(response(&cert, String::new())))
    }
}

/// Whether a request names the workload certificate.
fn asks_for_workload(request: &DiscoveryRequest) -> bool {
    request.resource_names.iter().any(|n| n == WORKLOAD_SECRET)
}

/// One Envoy's stream: answers its subscription and pushes each new certificate.
struct Session {
    certificates: CertificateWatch,
    /// Whether Envoy subscribes to the workload certificate.
    wanted: bool,
    /// Version last sent.
    sent: Option<String>,
    nonce: u64,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
}

impl Session {
    async fn run(mut self, mut requests: Streaming<DiscoveryRequest>) {
        loop {
            let open = tokio::select! {
                request = requests.message() => match request {
                    Ok(Some(request)) => {
                        self.on_request(&request);
                        true
                    }
                    Ok(None) | Err(_) => false,
                },
                changed = self.certificates.changed() => changed.is_ok(),
            };
            if !open || !self.send_if_new().await {
                return;
            }
        }
    }

    fn on_request(&mut self, request: &DiscoveryRequest) {
        if request.type_url != TypeUrl::Secret.as_str() {
            tracing::debug!(type_url = %request.type_url, "sds: ignoring a request for another type");
            return;
        }
        if let Some(status) = &request.error_detail {
            // Envoy keeps its previous certificate; a new issuance is the next chance.
            tracing::warn!(version = %request.version_info, error = %status.message, "sds: Envoy rejected the workload certificate");
        }
        let wanted = asks_for_workload(request);
        if wanted && !self.wanted {
            // A (re)subscription is answered even with the version it already has.
            self.sent = None;
        }
        self.wanted = wanted;
    }

    /// Sends the current certificate if Envoy wants it and has not been sent this version;
    /// false once Envoy stopped reading.
    async fn send_if_new(&mut self) -> bool {
        let current = self.certificates.borrow_and_update().clone();
        let Some(cert) = current.filter(|_| self.wanted) else {
            return true;
        };
        if self.sent.as_deref() == Some(cert.version.as_str()) {
            return true;
        }
        self.nonce += 1;
        let sent = self.tx.send(Ok(response(&cert, self.nonce.to_string())));
        self.sent = Some(cert.version.clone());
        sent.await.is_ok()
    }
}

fn response(cert: &WorkloadCertificate, nonce: String) -> DiscoveryResponse {
    let inline = |pem: &str| DataSource {
        specifier: Some(Specifier::InlineBytes(pem.as_bytes().to_vec())),
        ..DataSource::default()
    };
    let secret = Secret {
        name: WORKLOAD_SECRET.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(&cert.chain_pem)),
            private_key: Some(inline(&cert.key_pem)),
            ..TlsCertificate::default()
        })),
    };
    DiscoveryResponse {
        version_info: cert.version.clone(),
        resources: vec![Any {
            type_url: TypeUrl::Secret.as_str().to_owned(),
            value: secret.encode_to_vec(),
        }],
        type_url: TypeUrl::Secret.as_str().to_owned(),
        nonce,
        ..DiscoveryResponse::default()
    }
}

//! The certificate-signing protocol between proxies and the control plane's CA:
//! `trellis.ca.v1.CertificateService/Sign`. A proxy sends a CSR for its own key (which never
//! leaves it) with a bootstrap credential in the `authorization: Bearer ...` metadata, and gets
//! back its SVID chain and the trust bundle. Messages and gRPC glue are written by hand in the
//! shape tonic-build generates.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{Body, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

const SERVICE: &str = "trellis.ca.v1.CertificateService";
const SIGN_PATH: &str = "/trellis.ca.v1.CertificateService/Sign";

/// A CSR and the identity it is for.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SignRequest {
    /// PKCS#10 CSR, PEM.
    #[prost(string, tag = "1")]
    pub csr_pem: String,
    /// Namespace of the identity asked for.
    #[prost(string, tag = "2")]
    pub namespace: String,
    /// Service account of the identity asked for.
    #[prost(string, tag = "3")]
    pub service_account: String,
    /// Requested lifetime in seconds; 0 for the CA's default.
    #[prost(uint64, tag = "4")]
    pub ttl_seconds: u64,
}

/// The signed SVID and what to verify peers with.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SignResponse {
    /// The SVID chain, PEM: leaf first, then intermediates (no root).
    #[prost(string, tag = "1")]
    pub chain_pem: String,
    /// Every root currently trusted, PEM.
    #[prost(string, tag = "2")]
    pub trust_bundle_pem: String,
}

/// What the CA service plugs in.
pub trait Signer: Send + Sync + 'static {
    /// Authenticates `credential` (the bearer token, if any) for the requested identity and
    /// signs the CSR.
    fn sign(&self, credential: Option<&str>, request: SignRequest) -> Result<SignResponse, Status>;
}

/// The CA as a tower service for tonic's transport server.
pub struct CaServer<S> {
    signer: Arc<S>,
}

impl<S> Clone for CaServer<S> {
    fn clone(&self) -> Self {
        CaServer {
            signer: self.signer.clone(),
        }
    }
}

impl<S: Signer> CaServer<S> {
    /// Serves `signer`.
    pub fn new(signer: Arc<S>) -> Self {
        CaServer { signer }
    }
}

impl<S: Signer> NamedService for CaServer<S> {
    const NAME: &'static str = SERVICE;
}

impl<S: Signer, B> Service<http::Request<B>> for CaServer<S>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let signer = self.signer.clone();
        match req.uri().path() {
            SIGN_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::default());
                Ok(grpc.unary(SignSvc(signer), req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("").into_http()) }),
        }
    }
}

struct SignSvc<S>(Arc<S>);

impl<S: Signer> UnaryService<SignRequest> for SignSvc<S> {
    type Response = SignResponse;
    type Future = BoxFuture<Response<SignResponse>, Status>;

    fn call(&mut self, request: Request<SignRequest>) -> Self::Future {
        let signer = self.0.clone();
        Box::pin(async move {
            let credential = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned);
            let message = request.into_inner();
            // Signing is CPU work of a few hundred microseconds; keep it off the async workers.
            tokio::task::spawn_blocking(move || signer.sign(credential.as_deref(), message))
                .await
                .map_err(|e| Status::internal(format!("signer panicked: {e}")))?
                .map(Response::new)
        })
    }
}

/// A client of the CA service.
#[derive(Debug, Clone)]
pub struct CaClient {
    inner: tonic::client::Grpc<Channel>,
    token: String,
}

impl CaClient {
    /// A client of the CA at `endpoint` (e.g. `http://127.0.0.1:15010`) presenting `token`;
    /// connects on first use.
    pub fn new(endpoint: &str, token: String) -> Result<CaClient, tonic::transport::Error> {
        let channel = Endpoint::from_shared(endpoint.to_owned())?.connect_lazy();
        Ok(CaClient {
            inner: tonic::client::Grpc::new(channel),
            token,
        })
    }

    /// Asks for a certificate.
    pub async fn sign(&mut self, request: SignRequest) -> Result<SignResponse, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("CA not reachable: {e}")))?;
        let mut request = Request::new(request);
        let bearer = format!("Bearer {}", self.token)
            .parse()
            .map_err(|_| Status::invalid_argument("the join token has invalid characters"))?;
        request.metadata_mut().insert("authorization", bearer);
        request
            .extensions_mut()
            .insert(tonic::GrpcMethod::new(SERVICE, "Sign"));
        let path = http::uri::PathAndQuery::from_static(SIGN_PATH);
        self.inner
            .unary(request, path, ProstCodec::default())
            .await
            .map(Response::into_inner)
    }
}

//! The certificate-signing protocol over real gRPC: the bearer token reaches the signer and
//! its answer or refusal reaches the client.

use std::sync::Arc;

use tokio_stream::wrappers::TcpListenerStream;
use trellis_xds::ca::{CaClient, CaServer, SignRequest, SignResponse, Signer};

struct EchoSigner;

impl Signer for EchoSigner {
    fn sign(
        &self,
        credential: Option<&str>,
        request: SignRequest,
    ) -> Result<SignResponse, tonic::Status> {
        if credential != Some("s3cret") {
            return Err(tonic::Status::unauthenticated("bad join token"));
        }
        Ok(SignResponse {
            chain_pem: format!(
                "signed {} for {}/{}",
                request.csr_pem, request.namespace, request.service_account
            ),
            trust_bundle_pem: "bundle".to_owned(),
        })
    }
}

#[tokio::test]
async fn sign_carries_the_token_and_the_answer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CaServer::new(Arc::new(EchoSigner)))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let request = SignRequest {
        csr_pem: "csr".to_owned(),
        namespace: "default".to_owned(),
        service_account: "web".to_owned(),
        ttl_seconds: 0,
    };
    let endpoint = format!("http://{addr}");
    let mut good = CaClient::new(&endpoint, "s3cret".to_owned()).unwrap();
    let answer = good.sign(request.clone()).await.unwrap();
    assert_eq!(answer.chain_pem, "signed csr for default/web");
    let mut bad = CaClient::new(&endpoint, "guess".to_owned()).unwrap();
    let refused = bad.sign(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    server.abort();
}

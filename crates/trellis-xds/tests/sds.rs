//! The SDS server an agent runs for a local Envoy: a real gRPC client over the Unix socket
//! subscribes, gets the certificate, ACKs, and gets each renewal pushed.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use trellis_xds::TypeUrl;
use trellis_xds::sds::{self, WORKLOAD_SECRET, WorkloadCertificate};

fn cert(version: &str) -> Option<Arc<WorkloadCertificate>> {
    Some(Arc::new(WorkloadCertificate {
        version: version.to_owned(),
        chain_pem: format!("CHAIN {version}"),
        key_pem: format!("KEY {version}"),
    }))
}

fn request(names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: TypeUrl::Secret.as_str().to_owned(),
        resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
        version_info: version.to_owned(),
        response_nonce: nonce.to_owned(),
        ..DiscoveryRequest::default()
    }
}

/// (name, chain, key) of the one secret in a response.
fn secret_of(response: &DiscoveryResponse) -> (String, String, String) {
    assert_eq!(response.resources.len(), 1);
    let secret = Secret::decode(response.resources[0].value.as_slice()).unwrap();
    let Some(secret::Type::TlsCertificate(tls)) = secret.r#type else {
        panic!("not a TLS certificate: {secret:?}")
    };
    let text = |d: Option<envoy_types::pb::envoy::config::core::v3::DataSource>| match d
        .and_then(|d| d.specifier)
    {
        Some(Specifier::InlineBytes(b)) => String::from_utf8(b).unwrap(),
        other => panic!("not inline bytes: {other:?}"),
    };
    (
        secret.name,
        text(tls.certificate_chain),
        text(tls.private_key),
    )
}

/// The next response, within 5 s.
async fn next(responses: &mut tonic::Streaming<DiscoveryResponse>) -> DiscoveryResponse {
    tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("a response")
        .unwrap()
        .unwrap()
}

async fn connect(path: std::path::PathBuf) -> Channel {
    Endpoint::from_static("http://sds.local")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .unwrap()
}

#[tokio::test]
async fn envoy_gets_the_certificate_it_names_and_every_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sds.sock");
    // A regular file is not replaced; a stale socket (a previous run's) is.
    std::fs::write(&path, "not a socket").unwrap();
    let refused = sds::bind_unix(&path).unwrap_err();
    assert!(
        refused.to_string().ends_with("exists and is not a socket"),
        "{refused}"
    );
    std::fs::remove_file(&path).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let listener = sds::bind_unix(&path).unwrap();
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the socket is left: {left:?}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "owner-only socket");
    let (certs, served) = watch::channel(cert("1"));
    tokio::spawn(sds::serve(listener, served));

    let mut client = SecretDiscoveryServiceClient::new(connect(path).await);
    let (tx, rx) = mpsc::channel(4);
    tx.send(request(&[WORKLOAD_SECRET], "", "")).await.unwrap();
    let mut responses = client
        .stream_secrets(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut responses).await;
    assert_eq!(first.version_info, "1");
    assert_eq!(first.type_url, TypeUrl::Secret.as_str());
    assert_eq!(
        secret_of(&first),
        (WORKLOAD_SECRET.to_owned(), "CHAIN 1".into(), "KEY 1".into())
    );

    // An ACK gets nothing back; a renewal is pushed.
    tx.send(request(&[WORKLOAD_SECRET], "1", &first.nonce))
        .await
        .unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(200), responses.message()).await;
    assert!(quiet.is_err(), "answered an ACK: {quiet:?}");
    certs.send_replace(cert("2"));
    let renewed = next(&mut responses).await;
    assert_eq!(renewed.version_info, "2");
    assert_ne!(renewed.nonce, first.nonce);
    assert_eq!(secret_of(&renewed).1, "CHAIN 2");

    // Only the workload certificate is served.
    let fetched = client
        .fetch_secrets(request(&["ROOTCA"], "", ""))
        .await
        .unwrap_err();
    assert_eq!(fetched.code(), tonic::Code::NotFound);
    let fetched = client
        .fetch_secrets(request(&[WORKLOAD_SECRET], "", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.version_info, "2");
}

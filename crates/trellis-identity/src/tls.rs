//! rustls configs for mesh mTLS. Both sides verify the peer's chain against the trust bundle;
//! instead of DNS names, peers are identified by their SPIFFE URI SAN: the server requires one,
//! the client requires it to be one of the identities the control plane expects. Each failure
//! has its own error: another CA (`UnknownIssuer`), expired (`Expired`), or an identity
//! mismatch (`Other(IdentityMismatch)`).

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};

use crate::SpiffeId;
use crate::pem::info;
use crate::workload::{Svid, TrustBundle};

/// Why a TLS config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the key, the chain or the roots.
    #[error("tls config: {0}")]
    Rustls(String),
}

/// A peer proved a valid certificate for another identity than the one expected.
#[derive(Debug)]
pub struct IdentityMismatch {
    /// Identities that would have been accepted.
    pub expected: Vec<String>,
    /// What the certificate names (empty: no SPIFFE ID).
    pub found: Vec<String>,
}

impl fmt::Display for IdentityMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "identity mismatch: expected one of {:?}, found {:?}",
            self.expected, self.found
        )
    }
}

impl std::error::Error for IdentityMismatch {}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn roots(bundle: &TrustBundle) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for root in bundle.roots() {
        store
            .add(root.clone())
            .map_err(|e| TlsError::Rustls(format!("trust bundle root: {e}")))?;
    }
    Ok(Arc::new(store))
}

/// The SPIFFE IDs a certificate names.
fn spiffe_uris(cert: &CertificateDer<'_>) -> Vec<String> {
    info(cert)
        .map(|i| {
            i.uris
                .into_iter()
                .filter(|u| u.starts_with("spiffe://"))
                .collect()
        })
        .unwrap_or_default()
}

/// The SPIFFE ID of a verified peer's leaf certificate.
pub fn peer_identity(certs: &[CertificateDer<'_>]) -> Option<SpiffeId> {
    spiffe_uris(certs.first()?).first()?.parse().ok()
}

/// The inbound side: requires a client certificate chaining to `bundle` with a SPIFFE ID.
pub fn server_config(
    svid: &Svid,
    bundle: &TrustBundle,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let inner = WebPkiClientVerifier::builder_with_provider(roots(bundle)?, provider())
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let verifier = Arc::new(SpiffeClientVerifier { inner });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(svid.chain.clone(), svid.key())
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The outbound side: presents `svid`, and accepts a server chaining to `bundle` that proves
/// one of `expected`.
pub fn client_config(
    svid: &Svid,
    bundle: &TrustBundle,
    expected: &[SpiffeId],
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    if expected.is_empty() {
        return Err(TlsError::Rustls(
            "no expected server identity: refusing to trust any peer".to_owned(),
        ));
    }
    let provider = provider();
    let verifier = Arc::new(SpiffeServerVerifier {
        roots: roots(bundle)?,
        expected: expected.iter().map(ToString::to_string).collect(),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(svid.chain.clone(), svid.key())
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if spiffe_uris(end_entity).len() == 1 {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(mismatch(Vec::new(), spiffe_uris(end_entity)))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: Vec<String>,
    algorithms: WebPkiSupportedAlgorithms,
}

fn mismatch(expected: Vec<String>, found: Vec<String>) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
        IdentityMismatch { expected, found },
    ))))
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let found = spiffe_uris(end_entity);
        if found.len() == 1 && self.expected.contains(&found[0]) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(mismatch(self.expected.clone(), found))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

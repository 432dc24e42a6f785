//! rustls configs for mesh mTLS. Both sides verify the peer's chain against the trust bundle;
//! instead of DNS names, peers are identified by their SPIFFE URI SAN: the server requires
//! one, the client requires it to be one the control plane expects. Every refusal is its own
//! error: another CA (`UnknownIssuer`), expired (`Expired*`), and, inside
//! `CertificateError::Other`, a [`TlsError`] for an identity mismatch or a missing SPIFFE ID.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, VerifierBuilderError, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};

use crate::workload::{Svid, TrustBundle};
use crate::x509::{CertError, uris};
use crate::{SpiffeId, SpiffeIdError};

/// Why a TLS config could not be built, or (inside a rustls `CertificateError::Other`) why a
/// peer's otherwise valid certificate was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the settings (also used by callers wrapping other failures as text).
    #[error("TLS config refused: {0}")]
    Rustls(String),
    /// A root of the trust bundle is unusable.
    #[error("trust bundle root refused ({0}): the bundle must hold CA certificates")]
    Bundle(Error),
    /// The client-certificate verifier could not be built.
    #[error("could not build the client certificate verifier ({0}): check the trust bundle")]
    Verifier(VerifierBuilderError),
    /// rustls refused the SVID's chain or key.
    #[error("the SVID was refused ({0}): its chain must match its key; renew it")]
    Svid(Error),
    /// A client config without any acceptable server identity.
    #[error(
        "no expected server identity: pass the SPIFFE IDs the peer may prove (an empty list would trust no one)"
    )]
    NoExpectedIdentity,
    /// The peer proved a valid certificate for another identity than expected.
    #[error("identity mismatch: expected {}, found {found}", one_of(.expected))]
    IdentityMismatch {
        /// Identities that would have been accepted.
        expected: Vec<SpiffeId>,
        /// The identity the certificate names.
        found: SpiffeId,
    },
    /// The peer's certificate names no SPIFFE ID.
    #[error(
        "no SPIFFE ID: the peer certificate has no spiffe:// URI SAN, so it is not a mesh SVID"
    )]
    NoSpiffeId,
    /// The peer's certificate names several URIs.
    #[error("the peer certificate has {0} URI SANs: an SVID names exactly one SPIFFE ID")]
    SeveralUris(usize),
    /// The peer's SPIFFE ID is not of the mesh's shape.
    #[error("the peer's SPIFFE ID is malformed ({0})")]
    BadSpiffeId(SpiffeIdError),
    /// The peer's certificate could not be parsed.
    #[error("the peer certificate is unreadable ({0})")]
    BadCertificate(CertError),
}

fn one_of(expected: &[SpiffeId]) -> String {
    match expected {
        [one] => one.to_string(),
        many => {
            let names: Vec<String> = many.iter().map(ToString::to_string).collect();
            format!("one of {}", names.join(", "))
        }
    }
}

/// The [`TlsError`] a handshake failed with, when a SPIFFE check (not the chain) refused the
/// peer: lets callers tell an identity mismatch from other certificate errors.
pub fn spiffe_failure(error: &Error) -> Option<&TlsError> {
    match error {
        Error::InvalidCertificate(CertificateError::Other(other)) => {
            other.0.downcast_ref::<Refusal>().map(|r| &r.0)
        }
        _ => None,
    }
}

/// Carries a [`TlsError`] through rustls, whose `Display` of `CertificateError::Other` shows
/// the inner error's `Debug`: this `Debug` is the message, so logs read "identity mismatch:
/// expected X, found Y".
struct Refusal(TlsError);

impl std::fmt::Debug for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Refusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

fn refuse(error: TlsError) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refusal(
        error,
    )))))
}

/// The one SPIFFE ID a leaf certificate names.
fn spiffe_id(cert: &CertificateDer<'_>) -> Result<SpiffeId, TlsError> {
    let uris = uris(cert).map_err(TlsError::BadCertificate)?;
    match uris.as_slice() {
        [uri] if uri.starts_with("spiffe://") => uri.parse().map_err(TlsError::BadSpiffeId),
        many if many.len() > 1 && many.iter().any(|u| u.starts_with("spiffe://")) => {
            Err(TlsError::SeveralUris(many.len()))
        }
        _ => Err(TlsError::NoSpiffeId),
    }
}

/// The SPIFFE ID of a verified peer, from rustls' `peer_certificates()` (leaf first).
pub fn peer_identity(certs: &[CertificateDer<'_>]) -> Option<SpiffeId> {
    spiffe_id(certs.first()?).ok()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn root_store(bundle: &TrustBundle) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for root in bundle.roots() {
        store.add(root.clone()).map_err(TlsError::Bundle)?;
    }
    Ok(Arc::new(store))
}

fn alpn_list(alpn: &[&[u8]]) -> Vec<Vec<u8>> {
    alpn.iter().map(|p| p.to_vec()).collect()
}

/// The inbound side: presents `svid` and requires a client certificate chaining to `bundle`
/// that names one SPIFFE ID (which peer may do what is the authorization layer's call).
/// `alpn` lists the protocols offered, most preferred first (e.g. `[b"h2", b"http/1.1"]`).
pub fn server_config(
    svid: &Svid,
    bundle: &TrustBundle,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let inner = WebPkiClientVerifier::builder_with_provider(root_store(bundle)?, provider())
        .build()
        .map_err(TlsError::Verifier)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier { inner }))
        .with_single_cert(svid.chain.clone(), svid.key())
        .map_err(TlsError::Svid)?;
    config.alpn_protocols = alpn_list(alpn);
    Ok(Arc::new(config))
}

/// The outbound side: presents `svid` and accepts a server whose chain verifies against
/// `bundle` and whose SPIFFE ID is one of `expected` (which must not be empty). The
/// `ServerName` given to the connection is not checked (SVIDs carry no DNS names): pass the
/// peer's IP address. Build one config per expected set; configs are meant to be kept.
pub fn client_config(
    svid: &Svid,
    bundle: &TrustBundle,
    expected: &[SpiffeId],
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    if expected.is_empty() {
        return Err(TlsError::NoExpectedIdentity);
    }
    let provider = provider();
    let verifier = SpiffeServerVerifier {
        roots: root_store(bundle)?,
        expected: expected.to_vec(),
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(svid.chain.clone(), svid.key())
        .map_err(TlsError::Svid)?;
    config.alpn_protocols = alpn_list(alpn);
    Ok(Arc::new(config))
}

/// webpki's client verification (chain, validity, clientAuth), then the SPIFFE ID check.
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
        spiffe_id(end_entity).map_err(refuse)?;
        Ok(ClientCertVerified::assertion())
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

/// webpki's chain verification (validity, serverAuth) without its DNS-name check, then the
/// check that the SPIFFE ID is an expected one.
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: Vec<SpiffeId>,
    algorithms: WebPkiSupportedAlgorithms,
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
        let found = spiffe_id(end_entity).map_err(refuse)?;
        if !self.expected.contains(&found) {
            return Err(refuse(TlsError::IdentityMismatch {
                expected: self.expected.clone(),
                found,
            }));
        }
        Ok(ServerCertVerified::assertion())
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

#[cfg(test)]
mod tests;

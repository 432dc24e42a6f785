//! PEM and X.509 helpers shared by the CA, the workload side and the verifiers: parsing the
//! few fields they need, PEM encoding and SHA-256 fingerprints.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use rustls::SupportedCipherSuite;
use rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Why certificate material could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The text is not PEM.
    #[error("invalid PEM ({0}): expected -----BEGIN CERTIFICATE----- blocks")]
    Pem(rustls::pki_types::pem::Error),
    /// A certificate is not valid DER X.509.
    #[error("invalid X.509 certificate ({0}): supply a DER certificate in a PEM CERTIFICATE block")]
    Der(String),
    /// A certificate is not signed by the one that should have issued it.
    #[error(
        "certificate {index} is not signed by certificate {next}: order the chain from the signing certificate up to the root"
    )]
    BrokenChain {
        /// Position of the certificate in the chain.
        index: usize,
        /// Position of the issuer it should chain to.
        next: usize,
    },
}

/// Every certificate in a PEM text, in order (other PEM sections are skipped).
pub(crate) fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(CertError::Pem)
}

/// PEM of one DER certificate.
pub(crate) fn cert_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// Hex SHA-256 of a DER certificate.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    // ring is reached through rustls' provider so the crate needs no crypto dependency of its
    // own; whichever variant it is, this suite's hash is SHA-256.
    let sha256 = match TLS13_AES_128_GCM_SHA256 {
        SupportedCipherSuite::Tls13(suite) => suite.common.hash_provider,
        SupportedCipherSuite::Tls12(suite) => suite.common.hash_provider,
    };
    hex(sha256.hash(der).as_ref())
}

/// Lower-case hex without separators.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing into a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// What the CA and workloads need to know of a certificate.
#[derive(Debug, Clone)]
pub(crate) struct CertInfo {
    /// Serial number, lower-case hex.
    pub(crate) serial: String,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
    /// URI SANs, in order.
    pub(crate) uris: Vec<String>,
    /// The subject public key (for EC keys, the raw point).
    pub(crate) public_key: Vec<u8>,
    /// Subject DN, RFC 4514 style.
    pub(crate) subject: String,
    /// basicConstraints CA:true.
    pub(crate) is_ca: bool,
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| CertError::Der(e.to_string()))
}

/// Parses the fields of a DER certificate.
pub(crate) fn info(der: &[u8]) -> Result<CertInfo, CertError> {
    let cert = parse(der)?;
    let time = |t: i64| match u64::try_from(t) {
        Ok(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => SystemTime::UNIX_EPOCH - Duration::from_secs(t.unsigned_abs()),
    };
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    Ok(CertInfo {
        serial: hex(cert.tbs_certificate.raw_serial()),
        not_before: time(cert.validity().not_before.timestamp()),
        not_after: time(cert.validity().not_after.timestamp()),
        uris: uri_sans(&cert),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        subject: cert.subject().to_string(),
        is_ca,
    })
}

/// The URI SANs of a DER certificate.
pub(crate) fn uris(der: &[u8]) -> Result<Vec<String>, CertError> {
    parse(der).map(|cert| uri_sans(&cert))
}

fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect()
}

/// Checks that each certificate of `chain` is signed by the next one.
pub(crate) fn check_chain(chain: &[CertificateDer<'_>]) -> Result<(), CertError> {
    for (index, (cert, issuer)) in chain.iter().zip(chain.iter().skip(1)).enumerate() {
        let (cert, issuer) = (parse(cert)?, parse(issuer)?);
        cert.verify_signature(Some(issuer.public_key()))
            .map_err(|_| CertError::BrokenChain {
                index,
                next: index + 1,
            })?;
    }
    Ok(())
}

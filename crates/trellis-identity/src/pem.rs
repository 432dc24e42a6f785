//! PEM and X.509 helpers shared by the CA and the workload side.

use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Every certificate in a PEM text, in order.
pub(crate) fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM certificate: {e:?}"))
}

/// PEM of one DER certificate.
pub(crate) fn cert_pem(der: &[u8]) -> String {
    let pem = ::pem::Pem::new("CERTIFICATE", der.to_vec());
    ::pem::encode(&pem)
}

/// What the CA and workloads need to know of a certificate.
pub(crate) struct CertInfo {
    pub(crate) serial: String,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
    pub(crate) uris: Vec<String>,
    pub(crate) public_key: Vec<u8>,
    pub(crate) subject_text: String,
}

/// Parses the fields of a DER certificate.
pub(crate) fn info(der: &[u8]) -> Result<CertInfo, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("invalid certificate: {e}"))?;
    let uris = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some((*u).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let time =
        |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or_default());
    Ok(CertInfo {
        serial: cert.tbs_certificate.raw_serial_as_string().replace(':', ""),
        not_before: time(cert.validity().not_before.timestamp()),
        not_after: time(cert.validity().not_after.timestamp()),
        uris,
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        subject_text: cert.subject().to_string(),
    })
}

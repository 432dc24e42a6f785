//! The workload side: a key made in the proxy (it never leaves), the CSR for the workload's
//! SPIFFE ID, the SVID the CA returns, and the trust bundle peers are verified against.

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::SpiffeId;
use crate::pem::{cert_pem, certs, info};

/// Why an identity operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Key generation or CSR encoding failed.
    #[error("key or CSR: {0}")]
    Key(String),
    /// The certificate returned does not fit the key or the identity.
    #[error("the CA's certificate is unusable: {0}")]
    Certificate(String),
    /// A trust bundle has no valid certificate.
    #[error("trust bundle: {0}")]
    Bundle(String),
}

/// The workload's private key. Its `Debug` never shows key material.
pub struct WorkloadKey(KeyPair);

impl fmt::Debug for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WorkloadKey(..)")
    }
}

impl WorkloadKey {
    /// A fresh ECDSA P-256 key.
    pub fn generate() -> Result<WorkloadKey, IdentityError> {
        KeyPair::generate()
            .map(WorkloadKey)
            .map_err(|e| IdentityError::Key(e.to_string()))
    }

    /// A PKCS#10 CSR (PEM) asking for `identity`.
    pub fn csr_pem(&self, identity: &SpiffeId) -> Result<String, IdentityError> {
        let mut params = CertificateParams::default();
        let uri = identity
            .to_string()
            .try_into()
            .map_err(|e| IdentityError::Key(format!("identity: {e}")))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params
            .serialize_request(&self.0)
            .and_then(|csr| csr.pem())
            .map_err(|e| IdentityError::Key(e.to_string()))
    }
}

/// An X.509 SVID with its key.
pub struct Svid {
    /// The identity it proves.
    pub identity: SpiffeId,
    /// Leaf first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
    /// Leaf serial (hex).
    pub serial: String,
    /// Validity start.
    pub not_before: SystemTime,
    /// Validity end.
    pub not_after: SystemTime,
}

impl Clone for Svid {
    fn clone(&self) -> Svid {
        Svid {
            identity: self.identity.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            serial: self.serial.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
        }
    }
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("identity", &self.identity.to_string())
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Svid {
    /// Pairs the CA's chain with our key, checking the leaf carries our public key and names
    /// exactly `identity`.
    pub fn new(
        key: &WorkloadKey,
        chain_pem: &str,
        identity: &SpiffeId,
    ) -> Result<Svid, IdentityError> {
        let chain = certs(chain_pem).map_err(IdentityError::Certificate)?;
        let leaf = chain
            .first()
            .ok_or_else(|| IdentityError::Certificate("no certificate in the chain".to_owned()))?;
        let leaf = info(leaf).map_err(IdentityError::Certificate)?;
        if leaf.public_key != key.0.public_key_raw() {
            return Err(IdentityError::Certificate(
                "the certificate is not for our key".to_owned(),
            ));
        }
        let expected = identity.to_string();
        if leaf.uris != [expected.clone()] {
            return Err(IdentityError::Certificate(format!(
                "expected the URI SAN {expected}, found {:?}",
                leaf.uris
            )));
        }
        Ok(Svid {
            identity: identity.clone(),
            chain,
            key: PrivatePkcs8KeyDer::from(key.0.serialize_der()),
            serial: leaf.serial,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
        })
    }

    /// When to renew: about 2/3 into the lifetime, moved by up to ±5% of it (`jitter` in 0..1).
    pub fn renew_at(&self, jitter: f64) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        let offset = life.mul_f64(2.0 / 3.0 + (jitter.clamp(0.0, 1.0) - 0.5) * 0.1);
        self.not_before + offset
    }

    /// Whether it has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }

    /// The key, for building TLS configs inside this crate only.
    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// Remaining lifetime at `now`.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }
}

/// The roots peers' certificates must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    roots: Vec<CertificateDer<'static>>,
}

impl TrustBundle {
    /// Parses a PEM bundle (at least one certificate).
    pub fn from_pem(pem: &str) -> Result<TrustBundle, IdentityError> {
        let roots = certs(pem).map_err(IdentityError::Bundle)?;
        if roots.is_empty() {
            return Err(IdentityError::Bundle(
                "no certificate in the bundle".to_owned(),
            ));
        }
        Ok(TrustBundle { roots })
    }

    /// The bundle as PEM.
    pub fn to_pem(&self) -> String {
        self.roots.iter().map(|r| cert_pem(r)).collect()
    }

    /// Number of roots.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// True when it has no root (never, for a parsed bundle).
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    pub(crate) fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }
}

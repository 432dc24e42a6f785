//! The workload side: a key made in the proxy (it never leaves), the CSR for the workload's
//! SPIFFE ID, the SVID the CA returns, and the trust bundle peers are verified against.

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::SpiffeId;
use crate::x509::{CertError, cert_pem, certs, info};

/// Why a workload identity operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Key generation or CSR encoding failed.
    #[error("could not make a key or CSR ({0}): check that the identity is a valid SPIFFE ID")]
    Key(rcgen::Error),
    /// The CA's answer or the bundle is not readable certificate material.
    #[error(transparent)]
    Certificate(#[from] CertError),
    /// The CA's answer holds no certificate.
    #[error("the CA returned no certificate: request the SVID again")]
    NoCertificate,
    /// The certificate is for another key.
    #[error("the certificate is not for this workload's key: send the CSR made by the same key")]
    WrongKey,
    /// The certificate names another identity than the one requested.
    #[error(
        "the certificate names {found:?}, not {expected}: the CA must issue exactly the requested identity"
    )]
    WrongIdentity {
        /// The identity requested.
        expected: SpiffeId,
        /// The URI SANs the certificate holds.
        found: Vec<String>,
    },
    /// A trust bundle without any certificate.
    #[error("the trust bundle holds no certificate: expected PEM CERTIFICATE blocks")]
    EmptyBundle,
}

/// The workload's private key (ECDSA P-256). Its `Debug` never shows key material.
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
            .map_err(IdentityError::Key)
    }

    /// A PKCS#10 CSR (PEM) signed by this key, asking for `identity` as its URI SAN.
    pub fn csr_pem(&self, identity: &SpiffeId) -> Result<String, IdentityError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let uri = identity
            .to_string()
            .try_into()
            .map_err(IdentityError::Key)?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params
            .serialize_request(&self.0)
            .and_then(|csr| csr.pem())
            .map_err(IdentityError::Key)
    }
}

/// An X.509 SVID with its private key. Its `Debug` shows no key material.
pub struct Svid {
    /// The identity it proves.
    pub identity: SpiffeId,
    /// Leaf first, then intermediates (never the root).
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
    /// Leaf serial (lower-case hex).
    pub serial: String,
    /// Validity start.
    pub not_before: SystemTime,
    /// Validity end.
    pub not_after: SystemTime,
    /// When this process got it: the CA backdates `not_before` for clocks running behind, so the
    /// validity start is not when it was issued.
    pub received: SystemTime,
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
            received: self.received,
        }
    }
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("identity", &format_args!("{}", self.identity))
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl Svid {
    /// Pairs the CA's chain (PEM, leaf first) with our key, checking that the leaf carries our
    /// public key and names exactly `identity`.
    pub fn new(
        key: &WorkloadKey,
        chain_pem: &str,
        identity: &SpiffeId,
    ) -> Result<Svid, IdentityError> {
        let chain = certs(chain_pem)?;
        let leaf = info(chain.first().ok_or(IdentityError::NoCertificate)?)?;
        if leaf.public_key != key.0.public_key_raw() {
            return Err(IdentityError::WrongKey);
        }
        if leaf.uris.len() != 1 || leaf.uris[0] != identity.to_string() {
            return Err(IdentityError::WrongIdentity {
                expected: identity.clone(),
                found: leaf.uris,
            });
        }
        Ok(Svid {
            identity: identity.clone(),
            chain,
            key: PrivatePkcs8KeyDer::from(key.0.serialize_der()),
            serial: leaf.serial,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            received: SystemTime::now(),
        })
    }

    /// When to renew: 2/3 into the time it is valid for after it was received, moved by up to
    /// ±5% of it (`jitter` in 0..1, drawn by the caller; 0.5 means no shift) so a fleet does
    /// not renew in lockstep. Counted from the `not_before` the CA backdates a minute, an SVID
    /// living under ~30 s would be due at once, and any other renew ~20 s early.
    pub fn renew_at(&self, jitter: f64) -> SystemTime {
        let start = self.received.max(self.not_before);
        let life = self.not_after.duration_since(start).unwrap_or_default();
        let shift = (jitter.clamp(0.0, 1.0) - 0.5) * 0.1;
        start + life.mul_f64(2.0 / 3.0 + shift)
    }

    /// Whether it has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }

    /// Remaining lifetime at `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }

    /// The chain as PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|c| cert_pem(c)).collect()
    }

    /// The private key as PKCS#8 PEM, for an agent to hand to a proxy on the same host over a
    /// local socket (SDS) only: never log it or send it over the network.
    pub fn key_pem(&self) -> String {
        pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            self.key.secret_pkcs8_der().to_vec(),
        ))
    }

    /// The key, for building TLS configs inside this crate only.
    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
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
        let roots = certs(pem)?;
        if roots.is_empty() {
            return Err(IdentityError::EmptyBundle);
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

    /// The roots, DER.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{DAY, authority, id, issue};

    #[test]
    fn renews_at_two_thirds_with_bounded_jitter() {
        let now = SystemTime::now();
        let mut ca = authority(now);
        let svid = issue(&mut ca, &id("web"), 30 * DAY, now);
        let life = svid.not_after.duration_since(svid.received).unwrap();
        let life = life.as_secs_f64();
        let at = |j| svid.renew_at(j).duration_since(svid.received).unwrap();
        let frac = |j| at(j).as_secs_f64() / life;
        assert!((frac(0.5) - 2.0 / 3.0).abs() < 1e-6);
        assert!((frac(0.0) - (2.0 / 3.0 - 0.05)).abs() < 1e-6);
        assert!((frac(1.0) - (2.0 / 3.0 + 0.05)).abs() < 1e-6);
        assert_eq!(svid.renew_at(7.0), svid.renew_at(1.0), "jitter is clamped");
        assert!(!svid.is_expired(now));
        assert!(svid.is_expired(svid.not_after));
    }

    #[test]
    fn a_short_lived_svid_renews_two_thirds_into_its_life_not_at_once() {
        let now = SystemTime::now();
        let mut ca = authority(now);
        let svid = issue(&mut ca, &id("web"), Duration::from_secs(3), now);
        assert!(
            svid.not_before + Duration::from_secs(30) < svid.received,
            "the CA backdates the start: {svid:?}"
        );
        let (renew, left) = (
            svid.renew_at(0.5).duration_since(svid.received).unwrap(),
            svid.not_after.duration_since(svid.received).unwrap(),
        );
        assert!(
            (renew.as_secs_f64() / left.as_secs_f64() - 2.0 / 3.0).abs() < 1e-6,
            "renews {renew:?} after receipt, {left:?} before expiry"
        );
    }

    #[test]
    fn refuses_a_chain_for_another_key_or_identity() {
        let now = SystemTime::now();
        let mut ca = authority(now);
        let key = WorkloadKey::generate().unwrap();
        let csr = key.csr_pem(&id("web")).unwrap();
        let chain = ca.issue(&csr, &id("web"), None, now).unwrap().chain_pem;
        let other = WorkloadKey::generate().unwrap();
        assert!(matches!(
            Svid::new(&other, &chain, &id("web")),
            Err(IdentityError::WrongKey)
        ));
        assert!(matches!(
            Svid::new(&key, &chain, &id("db")),
            Err(IdentityError::WrongIdentity { .. })
        ));
        assert!(matches!(
            Svid::new(&key, "", &id("web")),
            Err(IdentityError::NoCertificate)
        ));
        assert!(matches!(
            TrustBundle::from_pem("not pem"),
            Err(IdentityError::EmptyBundle)
        ));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let now = SystemTime::now();
        let mut ca = authority(now);
        let key = WorkloadKey::generate().unwrap();
        let der = key.0.serialize_der();
        let chain = ca
            .issue(&key.csr_pem(&id("web")).unwrap(), &id("web"), None, now)
            .unwrap()
            .chain_pem;
        let svid = Svid::new(&key, &chain, &id("web")).unwrap();
        let bytes = format!("{:?}", &der[..8]);
        let bytes = bytes.trim_matches(['[', ']']);
        for debug in [format!("{key:?}"), format!("{svid:?}"), format!("{ca:?}")] {
            assert!(!debug.contains("PRIVATE KEY"), "{debug}");
            assert!(!debug.contains(bytes), "{debug}");
            assert!(!debug.contains(&crate::x509::hex(&der[..8])), "{debug}");
        }
    }
}

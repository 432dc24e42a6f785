//! A signing CA certificate with its key: made as a fresh self-signed root or taken from a
//! user's chain, and the minting of leaf SVIDs with the fields the mesh relies on.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use super::{CaError, CaOptions};
use crate::SpiffeId;
use crate::x509::{CertInfo, cert_pem, check_chain, fingerprint, info};

/// Leaves and roots start a minute early so that clocks slightly behind still accept them.
const BACKDATE: Duration = Duration::from_secs(60);

/// The trust anchor a signer chains to, as the API lists it.
#[derive(Debug, Clone)]
pub(super) struct Root {
    pub(super) fingerprint: String,
    pub(super) info: CertInfo,
}

/// A CA certificate that signs SVIDs, with its key. `Debug` is not derived: it holds the key.
pub(super) struct Signer {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
    /// The signing certificate's issuers up to the root; empty when it is the root itself.
    above: Vec<CertificateDer<'static>>,
    /// When the signing certificate expires: no SVID may outlive it.
    not_after: SystemTime,
    root: Root,
}

impl Signer {
    /// Takes a CA chain (signing certificate first, then its issuers up to the root) and the
    /// signing certificate's key, checking that they fit together.
    pub(super) fn from_chain(
        mut chain: Vec<CertificateDer<'static>>,
        key: KeyPair,
    ) -> Result<Signer, CaError> {
        if chain.is_empty() {
            return Err(CaError::EmptyChain);
        }
        let cert = chain.remove(0);
        let signing = info(&cert)?;
        if signing.public_key != key.public_key_raw() {
            return Err(CaError::KeyMismatch);
        }
        if !signing.is_ca {
            return Err(CaError::NotCa);
        }
        let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(CaError::Key)?;
        let usages = issuer.key_usages();
        if !usages.is_empty() && !usages.contains(&KeyUsagePurpose::KeyCertSign) {
            return Err(CaError::NotCa);
        }
        let full: Vec<_> = std::iter::once(cert.clone())
            .chain(chain.iter().cloned())
            .collect();
        check_chain(&full)?;
        let root_der = chain.last().unwrap_or(&cert);
        let root = Root {
            fingerprint: fingerprint(root_der),
            info: info(root_der)?,
        };
        Ok(Signer {
            issuer,
            not_after: signing.not_after,
            root,
            cert,
            above: chain,
        })
    }

    /// A fresh self-signed ECDSA P-256 root for `opts.trust_domain`, valid from `now` for
    /// `opts.root_ttl`.
    pub(super) fn new_root(opts: &CaOptions, now: SystemTime) -> Result<Signer, CaError> {
        let key = KeyPair::generate().map_err(CaError::Key)?;
        let serial = random_serial();
        let date = asn1_time("root start", now)?.date();
        let mut dn = DistinguishedName::new();
        // Names are unique per root (date and serial prefix): verifiers look issuers up by
        // name, and two roots sharing one turn "another CA" into a bad-signature error.
        let tag = crate::x509::hex(&serial[..4]);
        dn.push(DnType::CommonName, format!("Trellis root CA {date} {tag}"));
        dn.push(DnType::OrganizationName, opts.trust_domain.clone());
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        // Roots sign leaves directly: no intermediate may be made below them.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let uri = format!("spiffe://{}", opts.trust_domain);
        params.subject_alt_names = vec![SanType::URI(uri.try_into().map_err(CaError::Sign)?)];
        params.not_before = asn1_time("root start", now.checked_sub(BACKDATE).unwrap_or(now))?;
        let end = now.checked_add(opts.root_ttl).ok_or(CaError::Time {
            what: "root expiry",
        })?;
        params.not_after = asn1_time("root expiry", end)?;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = params.self_signed(&key).map_err(CaError::Sign)?;
        Signer::from_chain(vec![cert.der().clone()], key)
    }

    /// Signs an SVID for `identity` with `public_key`, valid from a minute before `now` to
    /// `not_after`; returns its DER and fields.
    pub(super) fn sign_leaf(
        &self,
        public_key: &impl PublicKeyData,
        identity: &SpiffeId,
        trust_domain: &str,
        now: SystemTime,
        not_after: SystemTime,
    ) -> Result<(CertificateDer<'static>, CertInfo), CaError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, trust_domain);
        params.distinguished_name = dn;
        let uri = identity.to_string().try_into().map_err(CaError::Sign)?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = asn1_time("SVID start", now.checked_sub(BACKDATE).unwrap_or(now))?;
        params.not_after = asn1_time("SVID expiry", not_after)?;
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        let leaf = params
            .signed_by(public_key, &self.issuer)
            .map_err(CaError::Sign)?;
        let der = leaf.der().clone();
        let fields = info(&der)?;
        Ok((der, fields))
    }

    /// The chain a workload presents: `leaf`, then the intermediates (never the root).
    pub(super) fn chain_pem(&self, leaf: &[u8]) -> String {
        let intermediates = std::iter::once(&self.cert)
            .chain(&self.above)
            .take(self.above.len());
        std::iter::once(cert_pem(leaf))
            .chain(intermediates.map(|c| cert_pem(c)))
            .collect()
    }

    /// The trust anchor's DER.
    pub(super) fn root_der(&self) -> &CertificateDer<'static> {
        self.above.last().unwrap_or(&self.cert)
    }

    /// The trust anchor.
    pub(super) fn root(&self) -> &Root {
        &self.root
    }

    /// The trust anchor's fingerprint, which names this signer.
    pub(super) fn fingerprint(&self) -> &str {
        &self.root.fingerprint
    }

    /// When the signing certificate expires.
    pub(super) fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The signing certificate, PEM.
    pub(super) fn cert_pem(&self) -> String {
        cert_pem(&self.cert)
    }

    /// The signing key, PEM (PKCS#8). Only for writing the key file.
    pub(super) fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }
}

/// 16 random bytes, positive and of full length once DER-encoded.
fn random_serial() -> [u8; 16] {
    let mut serial: [u8; 16] = rand::random();
    serial[0] = (serial[0] & 0x7f) | 0x40;
    serial
}

/// `t` as a certificate time (whole seconds, 1970..9999).
fn asn1_time(what: &'static str, t: SystemTime) -> Result<OffsetDateTime, CaError> {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .ok_or(CaError::Time { what })?;
    let time = OffsetDateTime::from_unix_timestamp(secs).map_err(|_| CaError::Time { what })?;
    if time.year() > 9999 {
        return Err(CaError::Time { what });
    }
    Ok(time)
}

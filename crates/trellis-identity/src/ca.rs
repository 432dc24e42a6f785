//! The certificate authority: a self-signed root (made on first start and kept in a directory,
//! key file 0600) or a user-supplied root or intermediate; issues X.509 SVIDs from CSRs; rotates
//! its root without an outage: the new root joins the trust bundle and signs from then on, and
//! the old root leaves the bundle only once every SVID it signed has expired.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::SpiffeId;
use crate::pem::{cert_pem, certs, info};

/// How the CA issues and rotates.
#[derive(Debug, Clone)]
pub struct CaOptions {
    /// Trust domain of the identities it signs.
    pub trust_domain: String,
    /// Default SVID lifetime.
    pub svid_ttl: Duration,
    /// Lifetime of a root it makes.
    pub root_ttl: Duration,
    /// Rotate the root automatically when its remaining life falls below this.
    pub rotate_before: Duration,
}

/// Why the CA refused.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A CA file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Certificate or key material is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The CSR is malformed or its signature does not verify.
    #[error("certificate signing request rejected: {0}")]
    BadCsr(String),
    /// A user-supplied CA is rotated by its owner, not by Trellis.
    #[error("this CA was supplied by the user: rotate it by supplying a new one")]
    UserSupplied,
}

/// What [`Authority::maintain`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaEvent {
    /// A new root signs from now on.
    Rotated {
        /// Its serial.
        new_root: String,
    },
    /// A retired root left the trust bundle.
    Retired {
        /// Its serial.
        old_root: String,
    },
}

/// A root's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootState {
    /// Signs new SVIDs.
    Active,
    /// Trusted until the SVIDs it signed expire.
    Retiring,
}

/// A root as the API lists it.
#[derive(Debug, Clone)]
pub struct RootInfo {
    /// Serial number (hex), used as its id.
    pub fingerprint: String,
    /// Subject DN.
    pub subject: String,
    /// Validity start.
    pub not_before: SystemTime,
    /// Validity end.
    pub not_after: SystemTime,
    /// Active or retiring.
    pub state: RootState,
}

/// An SVID the CA issued (no key material: the key never left the workload).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedInfo {
    /// Whom it names.
    pub identity: SpiffeId,
    /// Serial (hex).
    pub serial: String,
    /// Expiry.
    pub not_after: SystemTime,
    /// Serial of the root it chains to.
    pub signed_by: String,
}

/// A freshly issued SVID.
#[derive(Debug, Clone)]
pub struct IssuedSvid {
    /// Leaf, then intermediates (no root), PEM.
    pub chain_pem: String,
    /// Leaf serial (hex).
    pub serial: String,
    /// Expiry.
    pub not_after: SystemTime,
    /// Serial of the root it chains to.
    pub signed_by: String,
}

/// One signing CA certificate with its key.
struct Signer {
    /// The signing certificate (DER) and, for a user intermediate, its issuers up to the root.
    chain: Vec<CertificateDer<'static>>,
    key: KeyPair,
    id: String,
    not_before: SystemTime,
    not_after: SystemTime,
    subject: String,
}

impl Signer {
    fn root(&self) -> &CertificateDer<'static> {
        // A chain always has its signing certificate; the root is its last element.
        self.chain.last().unwrap_or(&self.chain[0])
    }
}

/// The persisted state beside the root files.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    active: String,
    retiring: Vec<String>,
    issued: Vec<IssuedInfo>,
}

/// The certificate authority.
pub struct Authority {
    opts: CaOptions,
    dir: Option<PathBuf>,
    active: Signer,
    retiring: Vec<Signer>,
    issued: Vec<IssuedInfo>,
    user_supplied: bool,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.opts.trust_domain)
            .field("active_root", &self.active.id)
            .field("retiring", &self.retiring.len())
            .finish_non_exhaustive()
    }
}

const STATE_FILE: &str = "state.json";

impl Authority {
    /// Loads the CA from `dir`, or creates a self-signed root there on first start.
    pub fn load_or_create(
        dir: &Path,
        opts: CaOptions,
        now: SystemTime,
    ) -> Result<Authority, CaError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CaError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let state_path = dir.join(STATE_FILE);
        if state_path.exists() {
            let text = std::fs::read_to_string(&state_path).map_err(io(&state_path))?;
            let state: State = serde_json::from_str(&text)
                .map_err(|e| CaError::Invalid(format!("{}: {e}", state_path.display())))?;
            let active = load_root(dir, &state.active)?;
            let retiring = state
                .retiring
                .iter()
                .map(|id| load_root(dir, id))
                .collect::<Result<_, _>>()?;
            return Ok(Authority {
                opts,
                dir: Some(dir.to_owned()),
                active,
                retiring,
                issued: state.issued,
                user_supplied: false,
            });
        }
        let active = new_root(&opts, now)?;
        let ca = Authority {
            opts,
            dir: Some(dir.to_owned()),
            active,
            retiring: Vec::new(),
            issued: Vec::new(),
            user_supplied: false,
        };
        ca.save_root(&ca.active)?;
        ca.save_state()?;
        Ok(ca)
    }

    /// A CA with a fresh self-signed root kept only in memory.
    pub fn in_memory(opts: CaOptions, now: SystemTime) -> Result<Authority, CaError> {
        Ok(Authority {
            active: new_root(&opts, now)?,
            opts,
            dir: None,
            retiring: Vec::new(),
            issued: Vec::new(),
            user_supplied: false,
        })
    }

    /// A user-supplied root or intermediate: `chain_pem` is the CA certificate, then its
    /// issuers up to the root; `key_pem` its key.
    pub fn from_pem(chain_pem: &str, key_pem: &str, opts: CaOptions) -> Result<Authority, CaError> {
        let chain = certs(chain_pem).map_err(CaError::Invalid)?;
        let key =
            KeyPair::from_pem(key_pem).map_err(|e| CaError::Invalid(format!("CA key: {e}")))?;
        let first = chain
            .first()
            .ok_or_else(|| CaError::Invalid("the CA chain holds no certificate".to_owned()))?;
        let leaf = info(first).map_err(CaError::Invalid)?;
        if leaf.public_key != key.public_key_raw() {
            return Err(CaError::Invalid(
                "the CA key does not belong to the first certificate of the chain".to_owned(),
            ));
        }
        let root = info(chain.last().unwrap_or(first)).map_err(CaError::Invalid)?;
        Ok(Authority {
            active: Signer {
                id: root.serial.clone(),
                not_before: leaf.not_before,
                not_after: leaf.not_after,
                subject: leaf.subject_text,
                chain,
                key,
            },
            opts,
            dir: None,
            retiring: Vec::new(),
            issued: Vec::new(),
            user_supplied: true,
        })
    }

    /// The trust domain it signs for.
    pub fn trust_domain(&self) -> &str {
        &self.opts.trust_domain
    }

    /// Verifies the CSR's signature and issues an SVID for `identity` only (SANs the CSR asks
    /// for are ignored), valid from a minute ago for `ttl` (default: the CA's), never past the
    /// signing certificate's expiry.
    pub fn issue(
        &mut self,
        csr_pem: &str,
        identity: &SpiffeId,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<IssuedSvid, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let ttl = ttl.unwrap_or(self.opts.svid_ttl);
        let not_after = (now + ttl).min(self.active.not_after);
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(
            identity
                .to_string()
                .try_into()
                .map_err(|e| CaError::Invalid(format!("identity: {e}")))?,
        )];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, self.opts.trust_domain.clone());
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = (now - Duration::from_secs(60)).into();
        params.not_after = not_after.into();
        let serial: [u8; 16] = rand::random();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let issuer = Issuer::from_ca_cert_der(&self.active.chain[0], &self.active.key)
            .map_err(|e| CaError::Invalid(format!("signing certificate: {e}")))?;
        let leaf = params
            .signed_by(&csr.public_key, &issuer)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let leaf_info = info(leaf.der()).map_err(CaError::Invalid)?;
        let mut chain_pem = leaf.pem();
        // A user intermediate travels with the leaf; a root never does.
        for ca in &self.active.chain[..self.active.chain.len().saturating_sub(1)] {
            chain_pem.push_str(&cert_pem(ca));
        }
        let issued = IssuedSvid {
            chain_pem,
            serial: leaf_info.serial.clone(),
            not_after: leaf_info.not_after,
            signed_by: self.active.id.clone(),
        };
        self.issued.push(IssuedInfo {
            identity: identity.clone(),
            serial: issued.serial.clone(),
            not_after: issued.not_after,
            signed_by: issued.signed_by.clone(),
        });
        self.save_state()?;
        Ok(issued)
    }

    /// PEM of every trusted root: the active one first, then retiring ones.
    pub fn trust_bundle_pem(&self) -> String {
        std::iter::once(&self.active)
            .chain(&self.retiring)
            .map(|s| cert_pem(s.root()))
            .collect()
    }

    /// Starts a root rotation: a new root signs from now on and joins the bundle; the old one
    /// stays trusted until every SVID it signed has expired.
    pub fn rotate(&mut self, now: SystemTime) -> Result<(), CaError> {
        if self.user_supplied {
            return Err(CaError::UserSupplied);
        }
        let next = new_root(&self.opts, now)?;
        self.save_root(&next)?;
        let old = std::mem::replace(&mut self.active, next);
        self.retiring.push(old);
        self.save_state()
    }

    /// Rotates when the active root nears expiry; drops retiring roots no unexpired SVID chains
    /// to, and forgets expired SVIDs.
    pub fn maintain(&mut self, now: SystemTime) -> Result<Vec<CaEvent>, CaError> {
        let mut events = Vec::new();
        let remaining = self
            .active
            .not_after
            .duration_since(now)
            .unwrap_or_default();
        if !self.user_supplied && remaining < self.opts.rotate_before {
            self.rotate(now)?;
            events.push(CaEvent::Rotated {
                new_root: self.active.id.clone(),
            });
        }
        let before = self.issued.len();
        self.issued.retain(|i| i.not_after > now);
        let issued = &self.issued;
        let (keep, retire): (Vec<Signer>, Vec<Signer>) = std::mem::take(&mut self.retiring)
            .into_iter()
            .partition(|s| issued.iter().any(|i| i.signed_by == s.id));
        self.retiring = keep;
        for old in retire {
            if let Some(dir) = &self.dir {
                for file in [root_file(dir, &old.id), key_file(dir, &old.id)] {
                    // Already gone is as good as removed.
                    let _ = std::fs::remove_file(file);
                }
            }
            events.push(CaEvent::Retired { old_root: old.id });
        }
        if !events.is_empty() || before != self.issued.len() {
            self.save_state()?;
        }
        Ok(events)
    }

    /// The roots, active first.
    pub fn roots(&self) -> Vec<RootInfo> {
        std::iter::once((&self.active, RootState::Active))
            .chain(self.retiring.iter().map(|s| (s, RootState::Retiring)))
            .map(|(s, state)| RootInfo {
                fingerprint: s.id.clone(),
                subject: s.subject.clone(),
                not_before: s.not_before,
                not_after: s.not_after,
                state,
            })
            .collect()
    }

    /// SVIDs issued and not yet forgotten (forgotten once expired, at the next upkeep).
    pub fn issued(&self) -> Vec<IssuedInfo> {
        self.issued.clone()
    }

    fn save_root(&self, signer: &Signer) -> Result<(), CaError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        write_file(
            &root_file(dir, &signer.id),
            &cert_pem(&signer.chain[0]),
            0o644,
        )?;
        write_file(
            &key_file(dir, &signer.id),
            &signer.key.serialize_pem(),
            0o600,
        )
    }

    fn save_state(&self) -> Result<(), CaError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let state = State {
            active: self.active.id.clone(),
            retiring: self.retiring.iter().map(|s| s.id.clone()).collect(),
            issued: self.issued.clone(),
        };
        let text = serde_json::to_string_pretty(&state)
            .map_err(|e| CaError::Invalid(format!("CA state: {e}")))?;
        let tmp = dir.join(".state.json.tmp");
        write_file(&tmp, &text, 0o600)?;
        let path = dir.join(STATE_FILE);
        std::fs::rename(&tmp, &path).map_err(|source| CaError::Io { path, source })
    }
}

fn root_file(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("root-{id}.pem"))
}

fn key_file(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("root-{id}.key.pem"))
}

/// Writes `contents`, creating the file with `mode` (so a key is never readable by others, not
/// even for an instant).
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CaError> {
    let err = |source| CaError::Io {
        path: path.to_owned(),
        source,
    };
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)
}

fn new_root(opts: &CaOptions, now: SystemTime) -> Result<Signer, CaError> {
    let key = KeyPair::generate().map_err(|e| CaError::Invalid(format!("root key: {e}")))?;
    let mut params = CertificateParams::default();
    let serial: [u8; 16] = rand::random();
    let mut dn = DistinguishedName::new();
    // A unique name per root: peers look issuers up by name, and two roots sharing one would
    // turn "another CA" into a confusing bad-signature error.
    let tag: String = serial[..6].iter().map(|b| format!("{b:02x}")).collect();
    dn.push(DnType::CommonName, format!("Trellis root CA {tag}"));
    dn.push(DnType::OrganizationName, opts.trust_domain.clone());
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = (now - Duration::from_secs(60)).into();
    params.not_after = (now + opts.root_ttl).into();
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let cert = params
        .self_signed(&key)
        .map_err(|e| CaError::Invalid(format!("root certificate: {e}")))?;
    let root = info(cert.der()).map_err(CaError::Invalid)?;
    Ok(Signer {
        chain: vec![cert.der().clone()],
        key,
        id: root.serial,
        not_before: root.not_before,
        not_after: root.not_after,
        subject: root.subject_text,
    })
}

fn load_root(dir: &Path, id: &str) -> Result<Signer, CaError> {
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path).map_err(|source| CaError::Io { path, source })
    };
    let chain = certs(&read(root_file(dir, id))?).map_err(CaError::Invalid)?;
    let key = KeyPair::from_pem(&read(key_file(dir, id))?)
        .map_err(|e| CaError::Invalid(format!("root key {id}: {e}")))?;
    let first = chain
        .first()
        .ok_or_else(|| CaError::Invalid(format!("root {id}: no certificate")))?;
    let root = info(first).map_err(CaError::Invalid)?;
    Ok(Signer {
        id: id.to_owned(),
        not_before: root.not_before,
        not_after: root.not_after,
        subject: root.subject_text,
        chain,
        key,
    })
}

#[cfg(test)]
mod tests;

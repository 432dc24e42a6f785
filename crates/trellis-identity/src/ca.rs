//! The certificate authority: a self-signed root (made on first start and kept in a directory)
//! or a user-supplied root or intermediate; issues X.509 SVIDs from CSRs; rotates its root
//! without an outage: the new root joins the trust bundle and signs from then on, and the old
//! root leaves the bundle only once every SVID it signed has expired.

mod signer;
mod store;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{CertificateSigningRequestParams, KeyPair};
use serde::{Deserialize, Serialize};

use crate::SpiffeId;
use crate::x509::{CertError, cert_pem, certs};
use signer::Signer;
use store::{State, Store};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// How the CA issues and rotates.
#[derive(Debug, Clone)]
pub struct CaOptions {
    /// Trust domain of the identities it signs.
    pub trust_domain: String,
    /// Default SVID lifetime (24 h with [`CaOptions::new`]).
    pub svid_ttl: Duration,
    /// Lifetime of a root it makes (1 year with [`CaOptions::new`]).
    pub root_ttl: Duration,
    /// Rotate the root automatically when its remaining life falls below this (a third of
    /// `root_ttl` with [`CaOptions::new`]).
    pub rotate_before: Duration,
}

impl CaOptions {
    /// The defaults for `trust_domain`: 24 h SVIDs, 1-year roots rotated a third of their
    /// life before expiry.
    pub fn new(trust_domain: &str) -> CaOptions {
        let root_ttl = 365 * DAY;
        CaOptions {
            trust_domain: trust_domain.to_owned(),
            svid_ttl: DAY,
            root_ttl,
            rotate_before: root_ttl / 3,
        }
    }

    /// Checks the options make sense together.
    pub fn validate(&self) -> Result<(), CaError> {
        let bad = |reason: String| Err(CaError::Options(reason));
        // The trust domain must be usable in SPIFFE IDs; the other segments are placeholders.
        if SpiffeId::new(&self.trust_domain, "ns", "sa").is_err() {
            return bad(format!(
                "trust domain {:?} must be non-empty and use [a-zA-Z0-9.-_]",
                self.trust_domain
            ));
        }
        if self.svid_ttl.is_zero() {
            return bad("the SVID lifetime must be positive".to_owned());
        }
        if self.root_ttl > 100 * 365 * DAY {
            return bad("the root lifetime must be at most 100 years".to_owned());
        }
        if self.rotate_before.is_zero() || self.rotate_before >= self.root_ttl {
            return bad(format!(
                "rotate_before ({:?}) must be positive and shorter than the root lifetime ({:?})",
                self.rotate_before, self.root_ttl
            ));
        }
        Ok(())
    }
}

/// Why the CA refused.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A CA file could not be read or written.
    #[error(
        "{path}: {source}: check that the CA directory exists and this user may read and write it"
    )]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The state file is not valid.
    #[error(
        "{path} is not a valid CA state file ({source}): restore it, or move the CA directory away to start a new CA (and trust bundle)"
    )]
    State {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A root or key file is damaged or does not match the state.
    #[error(
        "{path}: {reason}: restore it, or move the CA directory away to start a new CA (and trust bundle)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The directory holds a CA for another trust domain.
    #[error(
        "the CA in {dir} is for trust domain {found}, not {expected}: configure trust domain {found} or use another data directory"
    )]
    TrustDomainChanged {
        /// The CA directory.
        dir: PathBuf,
        /// Its trust domain.
        found: String,
        /// The configured one.
        expected: String,
    },
    /// The options or a request's lifetime are unusable.
    #[error("invalid CA options: {0}")]
    Options(String),
    /// Certificate material is malformed.
    #[error("CA certificate: {0}")]
    Certificate(#[from] CertError),
    /// The key could not be read or made.
    #[error(
        "CA key ({0}): supply the PEM (PKCS#8) private key of the first certificate of the chain"
    )]
    Key(rcgen::Error),
    /// The key is not the signing certificate's.
    #[error(
        "the CA key does not belong to the first certificate of the chain: pass the key of the signing certificate"
    )]
    KeyMismatch,
    /// The signing certificate may not sign certificates.
    #[error(
        "the first certificate of the chain is not a CA (it needs basicConstraints CA:true and keyCertSign): supply a root or intermediate CA certificate"
    )]
    NotCa,
    /// No certificate was given.
    #[error(
        "the CA chain holds no certificate: supply the CA certificate, then its issuers up to the root"
    )]
    EmptyChain,
    /// The CSR is malformed or its signature does not verify.
    #[error(
        "certificate signing request rejected ({0}): send a PEM PKCS#10 CSR signed by the workload's own key"
    )]
    BadCsr(rcgen::Error),
    /// The identity belongs to another trust domain.
    #[error(
        "{identity} is outside trust domain {trust_domain}: this CA signs only spiffe://{trust_domain}/... identities"
    )]
    ForeignTrustDomain {
        /// The identity asked for.
        identity: SpiffeId,
        /// The CA's trust domain.
        trust_domain: String,
    },
    /// The signing certificate has expired.
    #[error(
        "the signing CA certificate has expired: rotate the root (or supply a new CA) before issuing"
    )]
    SignerExpired,
    /// A time does not fit in a certificate.
    #[error(
        "the {what} time cannot be written in a certificate (years 1970 to 9999): check the clock and the lifetimes"
    )]
    Time {
        /// Which time.
        what: &'static str,
    },
    /// Signing failed.
    #[error("signing failed ({0}): the CA key or certificate is unusable; supply another CA")]
    Sign(rcgen::Error),
    /// A user-supplied CA is rotated by its owner, not by Trellis.
    #[error("this CA was supplied by the user: rotate it by supplying a new one")]
    UserSupplied,
    /// A rotation is already under way.
    #[error(
        "a root rotation is already under way: root {next} is in the trust bundle and signs once every proxy has had the time to trust it"
    )]
    RotationUnderWay {
        /// The next root's fingerprint.
        next: String,
    },
}

/// What [`Authority::maintain`] did; each changes the trust bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaEvent {
    /// A new root joined the trust bundle; it signs after [`Authority::trust_lead`].
    Trusted {
        /// Its fingerprint.
        new_root: String,
    },
    /// The new root signs from now on; the one before it is retiring.
    Rotated {
        /// Its fingerprint.
        new_root: String,
    },
    /// A retired root left the trust bundle.
    Retired {
        /// Its fingerprint.
        old_root: String,
    },
}

/// A root's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootState {
    /// Signs new SVIDs.
    Active,
    /// Trusted, and signs once every proxy has had the time to trust it.
    Next,
    /// Trusted until the SVIDs it signed expire.
    Retiring,
}

/// A trusted root as the API lists it.
#[derive(Debug, Clone)]
pub struct RootInfo {
    /// Serial number (lower-case hex).
    pub serial: String,
    /// Hex SHA-256 of the certificate's DER; names the root everywhere else.
    pub fingerprint: String,
    /// Subject DN.
    pub subject: String,
    /// Validity start.
    pub not_before: SystemTime,
    /// Validity end.
    pub not_after: SystemTime,
    /// Active, next or retiring.
    pub state: RootState,
}

/// An SVID the CA issued (no key material: the key never left the workload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedInfo {
    /// Whom it names.
    pub identity: SpiffeId,
    /// Serial (lower-case hex).
    pub serial: String,
    /// Expiry.
    pub not_after: SystemTime,
    /// Fingerprint of the root it chains to.
    pub signed_by: String,
}

/// A freshly issued SVID.
#[derive(Debug, Clone)]
pub struct IssuedSvid {
    /// Leaf, then intermediates (no root), PEM.
    pub chain_pem: String,
    /// Leaf serial (lower-case hex).
    pub serial: String,
    /// Expiry.
    pub not_after: SystemTime,
    /// Fingerprint of the root it chains to.
    pub signed_by: String,
}

/// The certificate authority. Its `Debug` shows no key material.
pub struct Authority {
    opts: CaOptions,
    store: Option<Store>,
    active: Signer,
    /// A rotation under way: the root that signs after the trust lead, and since when it is
    /// in the bundle.
    next: Option<(Signer, SystemTime)>,
    /// Newest first.
    retiring: Vec<Signer>,
    issued: Vec<IssuedInfo>,
    user_supplied: bool,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.opts.trust_domain)
            .field("dir", &self.store.as_ref().map(Store::dir))
            .field("active_root", &self.active.fingerprint())
            .field(
                "next_root",
                &self.next.as_ref().map(|(s, _)| s.fingerprint()),
            )
            .field("retiring_roots", &self.retiring.len())
            .field("issued", &self.issued.len())
            .field("user_supplied", &self.user_supplied)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Loads the CA from `dir`, or creates a self-signed root there on first start. The
    /// directory is created 0700 and key files 0600.
    pub fn load_or_create(
        dir: &Path,
        opts: CaOptions,
        now: SystemTime,
    ) -> Result<Authority, CaError> {
        opts.validate()?;
        let store = Store::open(dir)?;
        let Some(state) = store.load()? else {
            let active = Signer::new_root(&opts, now)?;
            store.save_root(&active)?;
            let ca = Authority::new(opts, Some(store), active);
            ca.save_state()?;
            tracing::info!(root = %ca.active.fingerprint(), dir = %dir.display(), "created the root CA");
            return Ok(ca);
        };
        if state.trust_domain != opts.trust_domain {
            return Err(CaError::TrustDomainChanged {
                dir: dir.to_owned(),
                found: state.trust_domain,
                expected: opts.trust_domain,
            });
        }
        let active = store.load_root(&state.active)?;
        // A rotation under way counts its lead again from now: proxies get the bundle when
        // they reconnect, and a clock stepped back must not postpone the switch for good.
        let next = state
            .next
            .map(|fingerprint| Ok::<_, CaError>((store.load_root(&fingerprint)?, now)))
            .transpose()?;
        let retiring = state
            .retiring
            .iter()
            .map(|fingerprint| store.load_root(fingerprint))
            .collect::<Result<_, _>>()?;
        tracing::info!(root = %active.fingerprint(), dir = %dir.display(), "loaded the CA");
        Ok(Authority {
            next,
            retiring,
            issued: state.issued,
            ..Authority::new(opts, Some(store), active)
        })
    }

    /// A CA with a fresh self-signed root kept only in memory (tests, demos).
    pub fn in_memory(opts: CaOptions, now: SystemTime) -> Result<Authority, CaError> {
        opts.validate()?;
        let active = Signer::new_root(&opts, now)?;
        Ok(Authority::new(opts, None, active))
    }

    /// A user-supplied root or intermediate: `chain_pem` is the CA certificate, then its
    /// issuers up to the root (the trust bundle is the last one); `key_pem` is its key. It is
    /// kept in memory, and never rotated by Trellis.
    pub fn from_pem(chain_pem: &str, key_pem: &str, opts: CaOptions) -> Result<Authority, CaError> {
        opts.validate()?;
        let key = KeyPair::from_pem(key_pem).map_err(CaError::Key)?;
        let active = Signer::from_chain(certs(chain_pem)?, key)?;
        Ok(Authority {
            user_supplied: true,
            ..Authority::new(opts, None, active)
        })
    }

    fn new(opts: CaOptions, store: Option<Store>, active: Signer) -> Authority {
        Authority {
            opts,
            store,
            active,
            next: None,
            retiring: Vec::new(),
            issued: Vec::new(),
            user_supplied: false,
        }
    }

    /// The trust domain it signs for.
    pub fn trust_domain(&self) -> &str {
        &self.opts.trust_domain
    }

    /// Verifies the CSR's signature and issues an SVID for `identity` only (the SANs the CSR
    /// asks for are ignored), valid from a minute before `now` for `ttl` (default: the
    /// options' `svid_ttl`), never past the signing certificate's expiry. Records it, in the
    /// CA directory too if there is one.
    pub fn issue(
        &mut self,
        csr_pem: &str,
        identity: &SpiffeId,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<IssuedSvid, CaError> {
        if identity.trust_domain() != self.opts.trust_domain {
            return Err(CaError::ForeignTrustDomain {
                identity: identity.clone(),
                trust_domain: self.opts.trust_domain.clone(),
            });
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(CaError::BadCsr)?;
        let ttl = ttl.unwrap_or(self.opts.svid_ttl);
        if ttl.is_zero() {
            return Err(CaError::Options(
                "the requested SVID lifetime is zero: ask for a positive one".to_owned(),
            ));
        }
        let limit = self.active.not_after();
        if limit <= now {
            return Err(CaError::SignerExpired);
        }
        let not_after = now.checked_add(ttl).map_or(limit, |end| end.min(limit));
        let (der, leaf) = self.active.sign_leaf(
            &csr.public_key,
            identity,
            &self.opts.trust_domain,
            now,
            not_after,
        )?;
        let signed_by = self.active.fingerprint().to_owned();
        self.issued.push(IssuedInfo {
            identity: identity.clone(),
            serial: leaf.serial.clone(),
            not_after: leaf.not_after,
            signed_by: signed_by.clone(),
        });
        if let Err(e) = self.save_state() {
            self.issued.pop();
            return Err(e);
        }
        tracing::debug!(%identity, serial = %leaf.serial, "issued an svid");
        Ok(IssuedSvid {
            chain_pem: self.active.chain_pem(&der),
            serial: leaf.serial,
            not_after: leaf.not_after,
            signed_by,
        })
    }

    /// PEM of every trusted root: the active one first, then the next one, then retiring ones
    /// (newest first).
    pub fn trust_bundle_pem(&self) -> String {
        self.signers()
            .map(|(s, _)| cert_pem(s.root_der()))
            .collect()
    }

    /// Starts a root rotation: a new root joins the trust bundle now and signs once
    /// [`Authority::maintain`] finds it has been trusted for [`Authority::trust_lead`], so that
    /// no proxy meets a certificate under a root it has not been sent yet. The old root then
    /// stays trusted until every SVID it signed has expired.
    /// Returns the new root's fingerprint.
    pub fn rotate(&mut self, now: SystemTime) -> Result<String, CaError> {
        if self.user_supplied {
            return Err(CaError::UserSupplied);
        }
        if let Some((next, _)) = &self.next {
            return Err(CaError::RotationUnderWay {
                next: next.fingerprint().to_owned(),
            });
        }
        let next = Signer::new_root(&self.opts, now)?;
        let new_root = next.fingerprint().to_owned();
        if let Some(store) = &self.store {
            store.save_root(&next)?;
        }
        self.next = Some((next, now));
        if let Err(e) = self.save_state() {
            self.next = None;
            if let Some(store) = &self.store {
                store.remove_root(&new_root);
            }
            return Err(e);
        }
        tracing::info!(%new_root, signs_in = ?self.trust_lead(), "a new root CA joined the trust bundle");
        Ok(new_root)
    }

    /// How long a new root is trusted before it signs: a third of the SVID lifetime, from 1 s
    /// to 1 min. Pushing a bundle to every connected proxy takes well under a second; a proxy
    /// cut off from the control plane for longer than the lead may meet peers under the new
    /// root before it trusts it, until it reconnects.
    pub fn trust_lead(&self) -> Duration {
        (self.opts.svid_ttl / 3).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// Makes `next` (the next root, trusted since `since`) the active one, the active one
    /// retiring; returns the new root's fingerprint.
    fn promote(&mut self, next: Signer, since: SystemTime) -> Result<String, CaError> {
        let old = std::mem::replace(&mut self.active, next);
        self.retiring.insert(0, old);
        if let Err(e) = self.save_state() {
            let old = self.retiring.remove(0);
            let next = std::mem::replace(&mut self.active, old);
            self.next = Some((next, since));
            return Err(e);
        }
        let (new_root, old_root) = (self.active.fingerprint(), self.retiring[0].fingerprint());
        tracing::info!(%new_root, %old_root, "rotated the root CA: the new root signs from now on");
        Ok(new_root.to_owned())
    }

    /// Periodic upkeep: starts a rotation when the active root's remaining life is below
    /// `rotate_before`, and lets the next root sign once it has been trusted for
    /// [`Authority::trust_lead`]; forgets expired SVIDs and drops retiring roots no unexpired
    /// SVID chains to. Each event changes the trust bundle, which the caller should push.
    pub fn maintain(&mut self, now: SystemTime) -> Result<Vec<CaEvent>, CaError> {
        let mut events = Vec::new();
        let remaining = self
            .active
            .not_after()
            .duration_since(now)
            .unwrap_or_default();
        if self.user_supplied {
            // Only once SVIDs get shortened: earlier, the operator has `roots()` to watch.
            if remaining < self.opts.svid_ttl {
                tracing::warn!(
                    expires_in = ?remaining,
                    "the user-supplied CA certificate expires soon: supply a new one"
                );
            }
        } else if let Some((next, since)) = self.next.take() {
            // A clock stepped back does not postpone the switch by as much.
            let since = since.min(now);
            if now >= since + self.trust_lead() {
                let new_root = self.promote(next, since)?;
                events.push(CaEvent::Rotated { new_root });
            } else {
                self.next = Some((next, since));
            }
        } else if remaining < self.opts.rotate_before {
            let new_root = self.rotate(now)?;
            events.push(CaEvent::Trusted { new_root });
        }
        let live: Vec<IssuedInfo> = self
            .issued
            .iter()
            .filter(|i| i.not_after > now)
            .cloned()
            .collect();
        let (keep, retire): (Vec<&Signer>, Vec<&Signer>) = self
            .retiring
            .iter()
            .partition(|s| live.iter().any(|i| i.signed_by == s.fingerprint()));
        if retire.is_empty() && live.len() == self.issued.len() {
            return Ok(events);
        }
        let retire: Vec<String> = retire.iter().map(|s| s.fingerprint().to_owned()).collect();
        let state = State {
            retiring: keep.iter().map(|s| s.fingerprint().to_owned()).collect(),
            issued: live.clone(),
            ..self.state()
        };
        if let Some(store) = &self.store {
            store.save_state(&state)?;
        }
        self.issued = live;
        self.retiring
            .retain(|s| !retire.iter().any(|r| r == s.fingerprint()));
        for old_root in retire {
            if let Some(store) = &self.store {
                store.remove_root(&old_root);
            }
            tracing::info!(%old_root, "retired a root CA: its SVIDs have expired");
            events.push(CaEvent::Retired { old_root });
        }
        Ok(events)
    }

    /// The trusted roots: active, next, then retiring.
    pub fn roots(&self) -> Vec<RootInfo> {
        self.signers()
            .map(|(s, state)| {
                let root = s.root();
                RootInfo {
                    serial: root.info.serial.clone(),
                    fingerprint: root.fingerprint.clone(),
                    subject: root.info.subject.clone(),
                    not_before: root.info.not_before,
                    not_after: root.info.not_after,
                    state,
                }
            })
            .collect()
    }

    /// SVIDs issued and not yet forgotten (they are forgotten once expired, at the next
    /// [`Authority::maintain`]).
    pub fn issued(&self) -> Vec<IssuedInfo> {
        self.issued.clone()
    }

    fn signers(&self) -> impl Iterator<Item = (&Signer, RootState)> {
        std::iter::once((&self.active, RootState::Active))
            .chain(self.next.iter().map(|(s, _)| (s, RootState::Next)))
            .chain(self.retiring.iter().map(|s| (s, RootState::Retiring)))
    }

    fn save_state(&self) -> Result<(), CaError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        store.save_state(&self.state())
    }

    /// What `state.json` says of the CA as it is.
    fn state(&self) -> State {
        State {
            trust_domain: self.opts.trust_domain.clone(),
            active: self.active.fingerprint().to_owned(),
            next: self.next.as_ref().map(|(s, _)| s.fingerprint().to_owned()),
            retiring: self
                .retiring
                .iter()
                .map(|s| s.fingerprint().to_owned())
                .collect(),
            issued: self.issued.clone(),
        }
    }
}

#[cfg(test)]
mod tests;

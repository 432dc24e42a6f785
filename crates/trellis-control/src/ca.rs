//! The CA service: signs proxies' CSRs after checking their bootstrap credential, keeps the
//! authority's roots maintained (automatic rotation, retirement of old roots) and publishes
//! the trust bundle to every proxy over SDS.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tonic::Status;
use trellis_identity::SpiffeId;
use trellis_identity::ca::{Authority, CaOptions, IssuedInfo, RootInfo};
use trellis_xds::ca::{SignRequest, SignResponse, Signer};

use crate::control::ControlPlane;

/// File in the data dir holding the join token proxies present (created 0600).
pub const JOIN_TOKEN_FILE: &str = "join-token";

/// Subdirectory of the data dir holding the CA's roots and state.
const CA_DIR: &str = "ca";

/// Who may ask for which identity.
pub trait Authenticator: Send + Sync + 'static {
    /// Checks `credential` for `requested`; returns the identity to issue or why not.
    fn authenticate(
        &self,
        credential: Option<&str>,
        requested: &SpiffeId,
    ) -> Result<SpiffeId, Status>;
}

/// Local mode: one join token, created by the control plane, lets its holder (the proxies on
/// this machine) ask for any identity of the trust domain. A Kubernetes ServiceAccount token
/// authenticator would instead map the token to exactly one identity.
pub struct JoinToken(String);

impl JoinToken {
    /// Reads the token from `dir/join-token`, creating it (0600, and `dir` if missing) on first
    /// start.
    pub fn load_or_create(dir: &Path) -> Result<JoinToken, CaStartError> {
        let path = dir.join(JOIN_TOKEN_FILE);
        match std::fs::read_to_string(&path) {
            Ok(token) => Ok(JoinToken(token.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let token = JoinToken::random();
                std::fs::create_dir_all(dir)
                    .and_then(|()| write_private(&path, &token.0))
                    .map_err(|source| CaStartError::Io {
                        path: path.clone(),
                        source,
                    })?;
                Ok(token)
            }
            Err(source) => Err(CaStartError::Io { path, source }),
        }
    }

    /// A fresh random token, kept in memory only.
    pub fn random() -> JoinToken {
        let bytes: [u8; 32] = rand::random();
        JoinToken(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The token, for in-process proxies.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl Authenticator for JoinToken {
    fn authenticate(
        &self,
        credential: Option<&str>,
        requested: &SpiffeId,
    ) -> Result<SpiffeId, Status> {
        let given = credential.unwrap_or_default().as_bytes();
        let expected = self.0.as_bytes();
        // Compare in constant time so the token cannot be guessed byte by byte.
        let same = given.len() == expected.len()
            && given
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(requested.clone())
        } else {
            Err(Status::unauthenticated(
                "join token missing or wrong: pass the control plane's data-dir/join-token",
            ))
        }
    }
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinToken(..)")
    }
}

/// A user-supplied CA: a root or an intermediate, and its key.
#[derive(Debug, Clone)]
pub struct UserCa {
    /// PEM: the CA certificate, then its issuers up to the root.
    pub cert_chain: PathBuf,
    /// PEM: the CA's private key (read here, never sent anywhere).
    pub key: PathBuf,
}

/// Why the CA could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaStartError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The authority refused its files or options.
    #[error("certificate authority: {0}")]
    Authority(#[from] trellis_identity::ca::CaError),
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

/// The CA as the control plane runs it.
pub struct CaService<A> {
    authority: Mutex<Authority>,
    authenticator: A,
    control: Arc<ControlPlane>,
}

impl<A: Authenticator> CaService<A> {
    /// Loads (or creates) the authority in `data_dir/ca`, or keeps it in memory without a data
    /// dir, and publishes its bundle.
    pub fn start(
        data_dir: Option<&Path>,
        user_ca: Option<&UserCa>,
        opts: CaOptions,
        authenticator: A,
        control: Arc<ControlPlane>,
    ) -> Result<CaService<A>, CaStartError> {
        let now = SystemTime::now();
        let authority = match (user_ca, data_dir) {
            (Some(ca), _) => {
                let read = |path: &PathBuf| {
                    std::fs::read_to_string(path).map_err(|source| CaStartError::Io {
                        path: path.clone(),
                        source,
                    })
                };
                Authority::from_pem(&read(&ca.cert_chain)?, &read(&ca.key)?, opts)?
            }
            (None, Some(dir)) => Authority::load_or_create(&dir.join(CA_DIR), opts, now)?,
            (None, None) => Authority::in_memory(opts, now)?,
        };
        control.set_trust_bundle(authority.trust_bundle_pem());
        Ok(CaService {
            authority: Mutex::new(authority),
            authenticator,
            control,
        })
    }

    fn authority(&self) -> MutexGuard<'_, Authority> {
        // Every update of the authority is whole; a panic cannot leave it half-written.
        self.authority.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a root rotation now: the bundle with the new root goes out to every proxy, and
    /// the new root signs after the trust lead (the upkeep task switches it).
    pub fn rotate(&self) -> Result<(), trellis_identity::ca::CaError> {
        let mut authority = self.authority();
        authority.rotate(SystemTime::now())?;
        self.control.set_trust_bundle(authority.trust_bundle_pem());
        Ok(())
    }

    /// Periodic upkeep: automatic rotation and retirement of old roots (the authority logs
    /// each step). Whatever changed the bundle goes out, even when a later step failed.
    pub fn maintain(&self) {
        let mut authority = self.authority();
        let before = authority.trust_bundle_pem();
        if let Err(e) = authority.maintain(SystemTime::now()) {
            tracing::error!(error = %e, "CA upkeep failed");
        }
        let bundle = authority.trust_bundle_pem();
        if bundle != before {
            self.control.set_trust_bundle(bundle);
        }
    }

    /// The roots, active first.
    pub fn roots(&self) -> Vec<RootInfo> {
        self.authority().roots()
    }

    /// SVIDs issued and not yet expired.
    pub fn issued(&self) -> Vec<IssuedInfo> {
        self.authority().issued()
    }
}

impl<A: Authenticator> Signer for CaService<A> {
    fn sign(&self, credential: Option<&str>, request: SignRequest) -> Result<SignResponse, Status> {
        let mut authority = self.authority();
        let requested = SpiffeId::new(
            authority.trust_domain(),
            &request.namespace,
            &request.service_account,
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let identity = self.authenticator.authenticate(credential, &requested)?;
        let ttl = (request.ttl_seconds > 0).then(|| Duration::from_secs(request.ttl_seconds));
        let issued = authority
            .issue(&request.csr_pem, &identity, ttl, SystemTime::now())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(%identity, serial = %issued.serial, "issued svid");
        Ok(SignResponse {
            chain_pem: issued.chain_pem,
            trust_bundle_pem: authority.trust_bundle_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_join_token_is_created_with_its_data_dir_and_read_back() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("new").join("data");
        let created = JoinToken::load_or_create(&dir).unwrap();
        assert_eq!(
            JoinToken::load_or_create(&dir).unwrap().secret(),
            created.secret()
        );
    }
}

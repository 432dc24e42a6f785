//! The CA directory: each root as `root-<fingerprint>.pem` with its key in
//! `root-<fingerprint>.key.pem` (created 0600), and `state.json` naming the active, next and
//! retiring roots and the SVIDs issued. Writes are whole: a crash leaves the previous state.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::KeyPair;
use serde::{Deserialize, Serialize};

use super::signer::Signer;
use super::{CaError, IssuedInfo};
use crate::x509::certs;

const STATE_FILE: &str = "state.json";

/// What `state.json` holds.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) trust_domain: String,
    /// Fingerprint of the root that signs.
    pub(super) active: String,
    /// Fingerprint of the root of a rotation under way (absent in files written before
    /// rotations had one). Its trust lead counts again from the next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) next: Option<String>,
    /// Fingerprints of roots still trusted until their SVIDs expire.
    pub(super) retiring: Vec<String>,
    pub(super) issued: Vec<IssuedInfo>,
}

/// A CA directory.
#[derive(Debug)]
pub(super) struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens `dir`, creating it (0700) if needed.
    pub(super) fn open(dir: &Path) -> Result<Store, CaError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(dir))?;
        Ok(Store {
            dir: dir.to_owned(),
        })
    }

    /// The directory.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The saved state, or `None` for a new CA.
    pub(super) fn load(&self) -> Result<Option<State>, CaError> {
        let path = self.dir.join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path)(e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| CaError::State { path, source })
    }

    /// Reads the root named `fingerprint` with its key.
    pub(super) fn load_root(&self, fingerprint: &str) -> Result<Signer, CaError> {
        let (cert_path, key_path) = self.paths(fingerprint);
        let read = |path: &Path| std::fs::read_to_string(path).map_err(io_error(path));
        let corrupt = |path: &Path, reason: String| CaError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let chain = certs(&read(&cert_path)?).map_err(|e| corrupt(&cert_path, e.to_string()))?;
        let key = KeyPair::from_pem(&read(&key_path)?)
            .map_err(|e| corrupt(&key_path, format!("unreadable key ({e})")))?;
        let signer =
            Signer::from_chain(chain, key).map_err(|e| corrupt(&cert_path, e.to_string()))?;
        if signer.fingerprint() != fingerprint {
            return Err(corrupt(
                &cert_path,
                format!("holds root {}, not {fingerprint}", signer.fingerprint()),
            ));
        }
        Ok(signer)
    }

    /// Writes a new root's certificate and key (the key file is created 0600).
    pub(super) fn save_root(&self, signer: &Signer) -> Result<(), CaError> {
        let (cert_path, key_path) = self.paths(signer.fingerprint());
        write_new(&key_path, &signer.key_pem(), 0o600)?;
        write_new(&cert_path, &signer.cert_pem(), 0o644)
    }

    /// Deletes a retired root's files; a failure is only logged, the root is already
    /// out of the state.
    pub(super) fn remove_root(&self, fingerprint: &str) {
        let (cert_path, key_path) = self.paths(fingerprint);
        for path in [key_path, cert_path] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not delete a retired root file")
                }
            }
        }
    }

    /// Replaces `state.json` atomically.
    pub(super) fn save_state(&self, state: &State) -> Result<(), CaError> {
        let text = serde_json::to_string_pretty(state).map_err(|source| CaError::State {
            path: self.dir.join(STATE_FILE),
            source,
        })?;
        let tmp = self.dir.join(".state.json.tmp");
        write_new(&tmp, &text, 0o600)?;
        let path = self.dir.join(STATE_FILE);
        std::fs::rename(&tmp, &path).map_err(io_error(&path))
    }

    fn paths(&self, fingerprint: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("root-{fingerprint}.pem")),
            self.dir.join(format!("root-{fingerprint}.key.pem")),
        )
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CaError {
    let path = path.to_owned();
    move |source| CaError::Io { path, source }
}

/// Writes `contents` to a file created afresh with `mode`, so a key is never readable by
/// others, not even for an instant, and synced before anything refers to it.
fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), CaError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(path)(e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(path))
}

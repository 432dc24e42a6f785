//! Certificates for the mutual-TLS runs, all from Trellis' CA: PEM files for the Envoy and
//! HAProxy hops, and a client SVID for connecting straight to an inbound hop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use trellis_identity::ca::Authority;
use trellis_identity::workload::{Svid, TrustBundle, WorkloadKey};
use trellis_identity::{SpiffeId, tls};

/// Trust domain of every benchmark identity.
pub(crate) const TRUST_DOMAIN: &str = "cluster.local";
/// Service account of the client side (the load generator and outbound hops).
pub(crate) const CLIENT: &str = "bench-client";
/// Service account of the server side (inbound hops).
pub(crate) const SERVER: &str = "bench-backend";

/// Files in a certificate directory, named as the peers' templates expect.
#[derive(Debug, Clone)]
pub(crate) struct CertFiles {
    /// The directory: `ca.pem`, `client.pem`, `client.key.pem`, `server.pem`,
    /// `server.key.pem`, and `client-bundle.pem` / `server-bundle.pem` (cert then key).
    pub(crate) dir: PathBuf,
}

fn spiffe(account: &str) -> anyhow::Result<SpiffeId> {
    Ok(SpiffeId::new(TRUST_DOMAIN, "default", account)?)
}

/// Writes a client and a server certificate with their keys (for peers that read files).
pub(crate) fn write_files(ca: &mut Authority, dir: &Path) -> anyhow::Result<CertFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("ca.pem", &ca.trust_bundle_pem())?;
    for (name, account) in [("client", CLIENT), ("server", SERVER)] {
        let key = rcgen::KeyPair::generate()?;
        let id = spiffe(account)?;
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(id.to_string().try_into()?)];
        let csr = params.serialize_request(&key)?.pem()?;
        let issued = ca.issue(&csr, &id, None, SystemTime::now())?;
        let key_pem = key.serialize_pem();
        write(&format!("{name}.pem"), &issued.chain_pem)?;
        write(&format!("{name}.key.pem"), &key_pem)?;
        write(
            &format!("{name}-bundle.pem"),
            &format!("{}{key_pem}", issued.chain_pem),
        )?;
    }
    Ok(CertFiles {
        dir: dir.to_owned(),
    })
}

/// A client TLS config presenting a `bench-client` SVID from `ca` and expecting the server to
/// be `bench-backend`, offering HTTP/1.1.
pub(crate) fn client_tls(ca: &mut Authority) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let id = spiffe(CLIENT)?;
    let key = WorkloadKey::generate()?;
    let issued = ca.issue(&key.csr_pem(&id)?, &id, None, SystemTime::now())?;
    let svid = Svid::new(&key, &issued.chain_pem, &id)?;
    let bundle = TrustBundle::from_pem(&ca.trust_bundle_pem())?;
    Ok(tls::client_config(
        &svid,
        &bundle,
        &[spiffe(SERVER)?],
        &[b"http/1.1"],
    )?)
}

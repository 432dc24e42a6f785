//! The proxy's workload identity at run time: the SVID its certificate agent keeps fresh, the
//! trust bundle from SDS, and the rustls configs built from both. Connections read the current
//! identity without a lock; client configs are cached per expected peer set (a connection, not
//! a request, looks them up).

pub(crate) mod agent;
pub(crate) mod connect;

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwapOption;
use rustls::{ClientConfig, ServerConfig};
use tokio::sync::watch;
use trellis_identity::SpiffeId;
use trellis_identity::tls::{TlsError, client_config, server_config};
use trellis_identity::workload::{Svid, TrustBundle};

use agent::AgentMetrics;

/// ALPN the inbound side offers (mesh HTTP); TCP over mTLS negotiates none.
const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// What a client connection negotiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Alpn {
    /// `http/1.1`.
    Http1,
    /// `h2`.
    H2,
    /// None: TCP carried in mTLS.
    Opaque,
}

impl Alpn {
    fn protocols(self) -> &'static [&'static [u8]] {
        match self {
            Alpn::Http1 => &[b"http/1.1"],
            Alpn::H2 => &[b"h2"],
            Alpn::Opaque => &[],
        }
    }
}

/// Client configs by (expected peer identities, ALPN).
type ClientConfigs = HashMap<(Vec<String>, Alpn), Arc<ClientConfig>>;

/// An SVID with the bundle it is verified against, and the configs built from them.
pub(crate) struct Identity {
    svid: Svid,
    bundle: TrustBundle,
    server: Arc<ServerConfig>,
    clients: Mutex<ClientConfigs>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("svid", &self.svid)
            .field("roots", &self.bundle.len())
            .finish_non_exhaustive()
    }
}

impl Identity {
    fn new(svid: Svid, bundle: TrustBundle) -> Result<Identity, TlsError> {
        let server = server_config(&svid, &bundle, &SERVER_ALPN)?;
        Ok(Identity {
            svid,
            bundle,
            server,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// The inbound (server) config.
    pub(crate) fn server(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The outbound config expecting one of `expected` as the peer.
    pub(crate) fn client(
        &self,
        expected: &[String],
        alpn: Alpn,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let key = (expected.to_vec(), alpn);
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(config) = clients.get(&key) {
            return Ok(config.clone());
        }
        let ids: Vec<SpiffeId> = expected.iter().filter_map(|id| id.parse().ok()).collect();
        let config = client_config(&self.svid, &self.bundle, &ids, alpn.protocols())?;
        clients.insert(key, config.clone());
        Ok(config)
    }

    /// The current SVID.
    pub(crate) fn svid(&self) -> &Svid {
        &self.svid
    }
}

/// The proxy's identity state, shared by the agent, the config path and connections.
#[derive(Debug)]
pub(crate) struct IdentityState {
    current: ArcSwapOption<Identity>,
    /// True once an SVID was installed.
    installed: watch::Sender<bool>,
    /// The trust bundle (PEM) as SDS last delivered it.
    bundle: watch::Sender<Option<String>>,
    expired: AtomicBool,
    metrics: AgentMetrics,
}

/// A bounded label for why a handshake failed.
fn failure_reason(error: &io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return "io";
    };
    match tls {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => "unknown_issuer",
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "expired",
        Error::InvalidCertificate(
            CertificateError::NotValidForName
            | CertificateError::NotValidForNameContext { .. }
            | CertificateError::Other(_),
        ) => "identity_mismatch",
        Error::InvalidCertificate(_) => "bad_certificate",
        Error::NoCertificatesPresented => "no_certificate",
        Error::AlertReceived(_) => "alert_from_peer",
        _ => "other",
    }
}

impl IdentityState {
    /// No identity yet.
    pub(crate) fn new(metrics: AgentMetrics) -> IdentityState {
        IdentityState {
            current: ArcSwapOption::empty(),
            installed: watch::Sender::new(false),
            bundle: watch::Sender::new(None),
            expired: AtomicBool::new(false),
            metrics,
        }
    }

    /// Counts a failed handshake and logs its reason; returns the error.
    pub(crate) fn handshake_failed(&self, side: &'static str, error: io::Error) -> io::Error {
        let reason = failure_reason(&error);
        self.metrics
            .handshake_failures
            .get_or_create(&[("side", side), ("reason", reason)])
            .inc();
        error
    }

    /// The identity to handshake with, if the agent has one.
    pub(crate) fn current(&self) -> Option<Arc<Identity>> {
        self.current.load_full()
    }

    /// Records the trust bundle SDS delivered (the agent rebuilds the configs).
    pub(crate) fn set_bundle(&self, pem: String) {
        self.bundle.send_if_modified(|current| {
            let changed = current.as_deref() != Some(pem.as_str());
            if changed {
                *current = Some(pem);
            }
            changed
        });
    }

    /// Rebuilds the configs of the current SVID with the latest bundle; returns its expiry.
    pub(crate) fn rebuild(&self) -> Result<std::time::SystemTime, TlsError> {
        let Some(current) = self.current() else {
            return Ok(std::time::SystemTime::now());
        };
        let Some(pem) = self.bundle.borrow().clone() else {
            return Ok(current.svid.not_after);
        };
        let bundle = TrustBundle::from_pem(&pem).map_err(|e| TlsError::Rustls(e.to_string()))?;
        self.install(Identity::new(current.svid.clone(), bundle)?);
        Ok(current.svid.not_after)
    }

    /// Installs a new identity for new connections.
    fn install(&self, identity: Identity) {
        self.current.store(Some(Arc::new(identity)));
        self.installed.send_replace(true);
    }

    /// Sees every installation of an identity (new SVID or new bundle).
    pub(crate) fn installs(&self) -> watch::Receiver<bool> {
        self.installed.subscribe()
    }

    /// Resolves once an SVID is installed.
    pub(crate) async fn wait_installed(&self) {
        let mut rx = self.installed.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot fail while we borrow it.
        let _ = rx.wait_for(|installed| *installed).await;
    }

    /// True while the SVID has expired and could not be renewed.
    pub(crate) fn expired(&self) -> bool {
        self.expired.load(Ordering::Relaxed)
    }
}

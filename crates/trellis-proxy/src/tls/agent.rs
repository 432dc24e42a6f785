//! The certificate agent: makes the proxy's key (it never leaves the process), has the CA sign
//! a CSR for the workload's SPIFFE ID, renews at about 2/3 of the SVID's life with jitter,
//! retries with backoff, re-issues when the trust bundle names a new signing root (the end of
//! a root rotation), and says so loudly if the certificate ever expires.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rand::Rng;
use rustls::pki_types::CertificateDer;
use trellis_identity::SpiffeId;
use trellis_identity::workload::{Svid, TrustBundle, WorkloadKey};
use trellis_xds::ca::{CaClient, SignRequest};

use super::{Identity, IdentityState};

/// Re-issuance under a new signing root waits a random delay up to this, so that a fleet does
/// not ask the CA all at once (peers already trust the root: the CA lets it sign only after
/// its trust lead).
const REISSUE_SPREAD: Duration = Duration::from_secs(1);

/// First retry delay after a failed signing; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Where and as whom the agent asks for certificates.
#[derive(Debug, Clone)]
pub(crate) struct AgentOptions {
    /// CA endpoint (the control plane's gRPC address).
    pub(crate) endpoint: String,
    /// Bootstrap credential (the join token).
    pub(crate) token: String,
    /// The identity to ask for.
    pub(crate) identity: SpiffeId,
    /// Requested SVID lifetime; `None` for the CA's default.
    pub(crate) ttl: Option<Duration>,
}

/// Gauges the agent keeps current.
#[derive(Debug, Clone, Default)]
pub(crate) struct AgentMetrics {
    /// Unix time the current SVID expires.
    pub(crate) expiry: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// 1 while the SVID is expired.
    pub(crate) expired: Gauge,
    /// SVIDs obtained since start.
    pub(crate) issued: Gauge,
    /// mTLS handshakes that failed, by side and reason.
    pub(crate) handshake_failures: Family<HandshakeLabels, Counter>,
}

/// `side` (server: inbound, client: outbound) and `reason` of a failed handshake.
pub(crate) type HandshakeLabels = [(&'static str, &'static str); 2];

/// Runs the agent until the task is aborted.
pub(crate) async fn run(opts: AgentOptions, state: Arc<IdentityState>, metrics: AgentMetrics) {
    let mut client = match CaClient::new(&opts.endpoint, opts.token.clone()) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(endpoint = %opts.endpoint, error = %e, "invalid CA endpoint; mTLS is off");
            return;
        }
    };
    let mut bundles = state.bundle.subscribe();
    let mut retry = RETRY_MIN;
    let mut reissue = true;
    let mut seen_bundle = state.bundle.borrow().is_some();
    let mut signer = signing_root(state.bundle.borrow().as_deref());
    loop {
        let result = if reissue {
            let issued = issue(&mut client, &opts, &state).await;
            if issued.is_ok() {
                metrics.issued.inc();
            }
            issued
        } else {
            state.rebuild().map_err(|e| e.to_string())
        };
        reissue = true;
        match result {
            Ok(svid_expiry) => {
                retry = RETRY_MIN;
                state.expired.store(false, Ordering::Relaxed);
                metrics.expired.set(0);
                metrics.expiry.set(unix(svid_expiry));
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?retry, "svid issuance failed");
                watch_expiry(&state, &metrics);
                let jitter = rand::rng().random_range(0.8..1.2);
                tokio::time::sleep(retry.mul_f64(jitter)).await;
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        }
        // Sleep until renewal, a new trust bundle (rotation: re-issue under the new root), or
        // expiry of the current SVID, whichever comes first.
        let renew_at = state
            .current()
            .map(|id| id.svid().renew_at(rand::rng().random_range(0.0..1.0)))
            .unwrap_or_else(SystemTime::now);
        let wait = renew_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = bundles.changed() => {
                if changed.is_err() {
                    return;
                }
                // Trust the new bundle at once. The first bundle from SDS only replaces the
                // CA's bootstrap copy; later, a new signing root (listed first: the end of a
                // rotation) calls for an SVID under it, while a root joining behind it or
                // leaving does not.
                let first = !std::mem::replace(&mut seen_bundle, true);
                if let Err(e) = state.rebuild() {
                    tracing::warn!(error = %e, "cannot use the new trust bundle");
                }
                let now_signing = signing_root(state.bundle.borrow().as_deref());
                let rotated = !first && now_signing != signer;
                signer = now_signing;
                tracing::info!(reissue = rotated, "trust bundle changed");
                if rotated {
                    let remaining = state
                        .current()
                        .map(|id| id.svid().remaining(SystemTime::now()))
                        .unwrap_or_default();
                    let spread = REISSUE_SPREAD.mul_f64(rand::rng().random_range(0.0..1.0));
                    tokio::time::sleep(spread.min(remaining / 4)).await;
                }
                reissue = rotated;
            }
        }
    }
}

/// Signs a fresh key and installs the SVID; returns its expiry.
async fn issue(
    client: &mut CaClient,
    opts: &AgentOptions,
    state: &IdentityState,
) -> Result<SystemTime, String> {
    let key = WorkloadKey::generate().map_err(|e| e.to_string())?;
    let csr_pem = key.csr_pem(&opts.identity).map_err(|e| e.to_string())?;
    let response = client
        .sign(SignRequest {
            csr_pem,
            namespace: opts.identity.namespace().to_owned(),
            service_account: opts.identity.service_account().to_owned(),
            ttl_seconds: opts.ttl.map_or(0, |t| t.as_secs().max(1)),
        })
        .await
        .map_err(|s| format!("CA refused or unreachable: {}", s.message()))?;
    let svid = Svid::new(&key, &response.chain_pem, &opts.identity).map_err(|e| e.to_string())?;
    // Prefer the bundle SDS delivered; the CA's answer bootstraps it before SDS arrives.
    let bundle_pem = state
        .bundle
        .borrow()
        .clone()
        .unwrap_or(response.trust_bundle_pem);
    let bundle = TrustBundle::from_pem(&bundle_pem).map_err(|e| e.to_string())?;
    let expiry = svid.not_after;
    tracing::info!(identity = %opts.identity, serial = %svid.serial, expires = ?expiry, "svid installed");
    let identity = Identity::new(svid, bundle).map_err(|e| e.to_string())?;
    state.install(identity);
    Ok(expiry)
}

/// The root the CA signs with: the first of its bundle (`bundle_pem`, as SDS delivered it).
fn signing_root(bundle_pem: Option<&str>) -> Option<CertificateDer<'static>> {
    let bundle = TrustBundle::from_pem(bundle_pem?).ok()?;
    bundle.roots().first().cloned()
}

/// Marks the SVID expired (metric, log, readiness) once its time has passed.
fn watch_expiry(state: &IdentityState, metrics: &AgentMetrics) {
    let expired = state
        .current()
        .is_some_and(|id| id.svid().is_expired(SystemTime::now()));
    if expired && !state.expired.swap(true, Ordering::Relaxed) {
        metrics.expired.set(1);
        tracing::error!(
            "the workload certificate has EXPIRED and could not be renewed; mTLS connections will fail"
        );
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

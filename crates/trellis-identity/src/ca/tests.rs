use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::{ClientConnection, ServerConnection};

use super::*;
use crate::tls::{client_config, peer_identity, server_config};
use crate::workload::{Svid, TrustBundle, WorkloadKey};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn opts() -> CaOptions {
    CaOptions {
        trust_domain: "cluster.local".to_owned(),
        svid_ttl: DAY,
        root_ttl: 365 * DAY,
        rotate_before: 30 * DAY,
    }
}

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "default", sa).unwrap()
}

fn svid(ca: &mut Authority, who: &SpiffeId, ttl: Duration, now: SystemTime) -> Svid {
    let key = WorkloadKey::generate().unwrap();
    let issued = ca
        .issue(&key.csr_pem(who).unwrap(), who, Some(ttl), now)
        .unwrap();
    Svid::new(&key, &issued.chain_pem, who).unwrap()
}

/// Runs a handshake in memory; returns the server's view of the client, or the first error.
fn handshake(
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
) -> Result<Option<SpiffeId>, rustls::Error> {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut c = ClientConnection::new(client, name)?;
    let mut s = ServerConnection::new(server)?;
    for _ in 0..10 {
        let mut buf = Vec::new();
        c.write_tls(&mut buf).unwrap();
        s.read_tls(&mut buf.as_slice()).unwrap();
        s.process_new_packets()?;
        let mut buf = Vec::new();
        s.write_tls(&mut buf).unwrap();
        c.read_tls(&mut buf.as_slice()).unwrap();
        c.process_new_packets()?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(s.peer_certificates().and_then(peer_identity));
        }
    }
    panic!("handshake did not finish")
}

#[test]
fn creates_a_root_with_a_private_key_file_and_reloads_it() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = Authority::load_or_create(dir.path(), opts(), now).unwrap();
    let root = ca.roots()[0].fingerprint.clone();
    let key = dir.path().join(format!("root-{root}.key.pem"));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "root key file mode");
    let again = Authority::load_or_create(dir.path(), opts(), now).unwrap();
    assert_eq!(
        again.roots()[0].fingerprint,
        root,
        "the same root is reused"
    );
    assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
}

#[test]
fn issues_svids_that_verify_both_ways() {
    let now = SystemTime::now();
    let mut ca = Authority::in_memory(opts(), now).unwrap();
    let bundle = TrustBundle::from_pem(&ca.trust_bundle_pem()).unwrap();
    let web = svid(&mut ca, &id("web"), DAY, now);
    let client = svid(&mut ca, &id("client"), DAY, now);
    assert_eq!(ca.issued().len(), 2);
    assert!(web.not_after > now + DAY - Duration::from_secs(120));
    let server = server_config(&web, &bundle, &[b"h2"]).unwrap();
    let ok = client_config(&client, &bundle, &[id("web")], &[b"h2"]).unwrap();
    assert_eq!(handshake(ok, server).unwrap(), Some(id("client")));
    assert!(!format!("{web:?}").contains("PRIVATE"));
}

#[test]
fn refuses_other_ca_expired_and_wrong_identity_distinctly() {
    let now = SystemTime::now();
    let mut ca = Authority::in_memory(opts(), now).unwrap();
    let bundle = TrustBundle::from_pem(&ca.trust_bundle_pem()).unwrap();
    let web = svid(&mut ca, &id("web"), DAY, now);
    let server = server_config(&web, &bundle, &[]).unwrap();

    let mut other = Authority::in_memory(opts(), now).unwrap();
    let foreign = svid(&mut other, &id("client"), DAY, now);
    let err = handshake(
        client_config(&foreign, &bundle, &[id("web")], &[]).unwrap(),
        server.clone(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );

    let old = svid(&mut ca, &id("client"), Duration::from_secs(60), now - DAY);
    let err = handshake(
        client_config(&old, &bundle, &[id("web")], &[]).unwrap(),
        server.clone(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. }
            )
        ),
        "{err:?}"
    );

    let client = svid(&mut ca, &id("client"), DAY, now);
    let err = handshake(
        client_config(&client, &bundle, &[id("db")], &[]).unwrap(),
        server,
    )
    .unwrap_err();
    assert!(err.to_string().contains("IdentityMismatch"), "{err}");
}

#[test]
fn rotation_keeps_the_old_root_until_its_svids_expire() {
    let now = SystemTime::now();
    let dir = tempfile::tempdir().unwrap();
    let mut ca = Authority::load_or_create(dir.path(), opts(), now).unwrap();
    let old_root = ca.roots()[0].fingerprint.clone();
    let before = svid(&mut ca, &id("web"), Duration::from_secs(3600), now);
    ca.rotate(now).unwrap();
    assert_eq!(
        TrustBundle::from_pem(&ca.trust_bundle_pem()).unwrap().len(),
        2
    );
    let after = svid(&mut ca, &id("web"), DAY, now);
    assert_ne!(
        ca.issued()[1].signed_by,
        old_root,
        "new SVIDs are signed by the new root"
    );
    // Both generations verify against the transition bundle.
    let bundle = TrustBundle::from_pem(&ca.trust_bundle_pem()).unwrap();
    let server = server_config(&after, &bundle, &[]).unwrap();
    handshake(
        client_config(&before, &bundle, &[id("web")], &[]).unwrap(),
        server,
    )
    .unwrap();

    assert!(
        ca.maintain(now).unwrap().is_empty(),
        "old root still needed"
    );
    let later = now + Duration::from_secs(7200);
    let events = ca.maintain(later).unwrap();
    assert_eq!(
        events,
        [CaEvent::Retired {
            old_root: old_root.clone()
        }]
    );
    assert_eq!(
        TrustBundle::from_pem(&ca.trust_bundle_pem()).unwrap().len(),
        1
    );
    assert!(!dir.path().join(format!("root-{old_root}.key.pem")).exists());
}

#[test]
fn rotates_automatically_before_the_root_expires() {
    let now = SystemTime::now();
    let mut ca = Authority::in_memory(opts(), now).unwrap();
    assert!(ca.maintain(now).unwrap().is_empty());
    let near_end = now + 340 * DAY;
    let events = ca.maintain(near_end).unwrap();
    assert!(
        matches!(events.as_slice(), [CaEvent::Rotated { .. }, ..]),
        "{events:?}"
    );
}

#[test]
fn rejects_a_forged_csr_and_a_user_ca_chains_to_the_user_root() {
    let now = SystemTime::now();
    let mut ca = Authority::in_memory(opts(), now).unwrap();
    let key = WorkloadKey::generate().unwrap();
    let csr = key.csr_pem(&id("web")).unwrap();
    let mut bytes = csr.into_bytes();
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(bytes).unwrap();
    assert!(ca.issue(&forged, &id("web"), None, now).is_err());

    // A user root and an intermediate made with rcgen.
    let root_key = rcgen::KeyPair::generate().unwrap();
    let mut root_params = rcgen::CertificateParams::default();
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root_cert = root_params.self_signed(&root_key).unwrap();
    let mid_key = rcgen::KeyPair::generate().unwrap();
    let mut mid_params = rcgen::CertificateParams::default();
    mid_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root_issuer = Issuer::new(root_params, root_key);
    let mid_cert = mid_params.signed_by(&mid_key, &root_issuer).unwrap();
    let chain = format!("{}{}", mid_cert.pem(), root_cert.pem());
    let mut user = Authority::from_pem(&chain, &mid_key.serialize_pem(), opts()).unwrap();
    assert!(matches!(user.rotate(now), Err(CaError::UserSupplied)));
    let web = svid(&mut user, &id("web"), DAY, now);
    assert_eq!(web.chain.len(), 2, "leaf and intermediate");
    let bundle = TrustBundle::from_pem(&user.trust_bundle_pem()).unwrap();
    let client = svid(&mut user, &id("client"), DAY, now);
    handshake(
        client_config(&client, &bundle, &[id("web")], &[]).unwrap(),
        server_config(&web, &bundle, &[]).unwrap(),
    )
    .unwrap();
}

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyUsagePurpose};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::testutil::{DAY, authority, handshake, id, issue, opts};
use crate::tls::{client_config, server_config};
use crate::workload::{TrustBundle, WorkloadKey};
use crate::x509::check_chain;

const HOUR: Duration = Duration::from_secs(3600);

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn creates_a_root_with_a_private_key_file_and_reloads_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let now = SystemTime::now();
    let ca = Authority::load_or_create(&ca_dir, opts(), now).unwrap();
    let roots = ca.roots();
    let root = &roots[0];
    assert_eq!(root.state, RootState::Active);
    assert_eq!(root.fingerprint.len(), 64, "hex SHA-256");
    assert!(root.subject.contains("Trellis root CA"), "{}", root.subject);
    assert!(root.subject.contains("O=cluster.local"), "{}", root.subject);
    assert_eq!(mode(&ca_dir), 0o700);
    let key = ca_dir.join(format!("root-{}.key.pem", root.fingerprint));
    assert_eq!(mode(&key), 0o600, "root key file mode");
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .contains("PRIVATE KEY")
    );
    assert!(ca_dir.join("state.json").exists());

    let again = Authority::load_or_create(&ca_dir, opts(), now).unwrap();
    assert_eq!(again.roots()[0].fingerprint, root.fingerprint, "same root");
    assert_eq!(again.trust_bundle_pem(), ca.trust_bundle_pem());

    let other_domain = CaOptions::new("other.local");
    assert!(matches!(
        Authority::load_or_create(&ca_dir, other_domain, now),
        Err(CaError::TrustDomainChanged { .. })
    ));
}

#[test]
fn issues_an_svid_for_the_identity_only() {
    let now = SystemTime::now();
    let mut ca = authority(now);
    let key = WorkloadKey::generate().unwrap();
    // The CSR asks for `admin`; the CA signs `web`, which the caller authenticated.
    let csr = key.csr_pem(&id("admin")).unwrap();
    let issued = ca.issue(&csr, &id("web"), Some(DAY), now).unwrap();
    let chain = crate::x509::certs(&issued.chain_pem).unwrap();
    assert_eq!(chain.len(), 1, "leaf only, no root");
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let info = crate::x509::info(&chain[0]).unwrap();
    assert_eq!(info.uris, ["spiffe://cluster.local/ns/default/sa/web"]);
    assert!(!info.is_ca);
    let bc = leaf.basic_constraints().unwrap().unwrap();
    assert!(!bc.value.ca);
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    let life = info.not_after.duration_since(info.not_before).unwrap();
    assert_eq!(life, DAY + Duration::from_secs(60), "now-1min .. now+ttl");
    assert_eq!(info.serial, issued.serial);
    assert_eq!(issued.signed_by, ca.roots()[0].fingerprint);
    assert_eq!(ca.issued()[0].identity, id("web"));

    let root = crate::x509::certs(&ca.trust_bundle_pem()).unwrap();
    check_chain(&[chain[0].clone(), root[0].clone()]).unwrap();

    assert!(matches!(
        ca.issue(
            &csr,
            &SpiffeId::new("evil.local", "default", "web").unwrap(),
            None,
            now
        ),
        Err(CaError::ForeignTrustDomain { .. })
    ));
}

#[test]
fn clamps_svids_to_the_signing_certificate_and_refuses_once_it_expired() {
    let now = SystemTime::now();
    let mut ca = authority(now);
    let root_end = ca.roots()[0].not_after;
    let late = root_end - DAY / 2;
    let svid = issue(&mut ca, &id("web"), DAY, late);
    assert_eq!(svid.not_after, root_end);
    let key = WorkloadKey::generate().unwrap();
    let csr = key.csr_pem(&id("web")).unwrap();
    assert!(matches!(
        ca.issue(&csr, &id("web"), None, root_end + DAY),
        Err(CaError::SignerExpired)
    ));
}

#[test]
fn rejects_a_forged_csr() {
    let now = SystemTime::now();
    let mut ca = authority(now);
    let csr = WorkloadKey::generate()
        .unwrap()
        .csr_pem(&id("web"))
        .unwrap();
    let mut der = rustls::pki_types::pem::PemObject::from_pem_slice(csr.as_bytes())
        .map(|d: rustls::pki_types::CertificateSigningRequestDer<'_>| d.as_ref().to_vec())
        .unwrap();
    // The last byte belongs to the signature.
    *der.last_mut().unwrap() ^= 1;
    let forged = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let err = ca.issue(&forged, &id("web"), None, now).unwrap_err();
    assert!(matches!(err, CaError::BadCsr(_)), "{err}");
    assert!(err.to_string().contains("signed by the workload's own key"));
    assert!(ca.issued().is_empty());
}

/// A user root and an intermediate below it, made with rcgen.
fn user_chain() -> (String, String, String) {
    let root_key = rcgen::KeyPair::generate().unwrap();
    let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root = root_params.self_signed(&root_key).unwrap();
    let mid_key = rcgen::KeyPair::generate().unwrap();
    let mut mid_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    mid_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    mid_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    mid_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "user intermediate");
    let mid = mid_params
        .signed_by(&mid_key, &Issuer::new(root_params, root_key))
        .unwrap();
    (mid.pem(), root.pem(), mid_key.serialize_pem())
}

#[test]
fn a_user_intermediate_issues_chains_to_the_user_root() {
    let now = SystemTime::now();
    let (mid, root, key) = user_chain();
    let mut user = Authority::from_pem(&format!("{mid}{root}"), &key, opts()).unwrap();
    assert_eq!(
        user.trust_bundle_pem(),
        crate::x509::cert_pem(&crate::x509::certs(&root).unwrap()[0])
    );
    assert!(matches!(user.rotate(now), Err(CaError::UserSupplied)));
    assert!(user.maintain(now + 3000 * DAY).unwrap().is_empty());

    let web = issue(&mut user, &id("web"), DAY, now);
    assert_eq!(web.chain.len(), 2, "leaf and intermediate");
    let bundle = TrustBundle::from_pem(&user.trust_bundle_pem()).unwrap();
    let mut full = web.chain.clone();
    full.extend(bundle.roots().iter().cloned());
    check_chain(&full).unwrap();
    let client = issue(&mut user, &id("client"), DAY, now);
    handshake(
        client_config(&client, &bundle, &[id("web")], &[]).unwrap(),
        server_config(&web, &bundle, &[]).unwrap(),
    )
    .unwrap();

    let (_, _, other_key) = user_chain();
    assert!(matches!(
        Authority::from_pem(&format!("{mid}{root}"), &other_key, opts()),
        Err(CaError::KeyMismatch)
    ));
    let (_, other_root, _) = user_chain();
    assert!(matches!(
        Authority::from_pem(&format!("{mid}{other_root}"), &key, opts()),
        Err(CaError::Certificate(CertError::BrokenChain {
            index: 0,
            next: 1
        }))
    ));
}

#[test]
fn rotation_keeps_the_old_root_until_its_svids_expire() {
    let now = SystemTime::now();
    let dir = tempfile::tempdir().unwrap();
    let mut ca = Authority::load_or_create(dir.path(), opts(), now).unwrap();
    let old_root = ca.roots()[0].fingerprint.clone();
    let before = issue(&mut ca, &id("client"), HOUR, now);
    let new_root = ca.rotate(now).unwrap();
    assert_eq!(ca.roots()[1].fingerprint, new_root);
    assert_ne!(new_root, old_root);
    let states: Vec<_> = ca.roots().iter().map(|r| r.state).collect();
    assert_eq!(states, [RootState::Active, RootState::Next]);
    let bundle = TrustBundle::from_pem(&ca.trust_bundle_pem()).unwrap();
    assert_eq!(bundle.len(), 2, "the new root is trusted at once");
    assert!(matches!(
        ca.rotate(now),
        Err(CaError::RotationUnderWay { next }) if next == new_root
    ));

    // Until every proxy has had the time to trust it, the old root still signs.
    let lead = ca.trust_lead();
    assert_eq!(
        lead,
        Duration::from_secs(60),
        "a third of 24 h, at most a minute"
    );
    let early = issue(&mut ca, &id("web"), 2 * HOUR, now + lead / 2);
    assert!(ca.maintain(now + lead / 2).unwrap().is_empty());
    assert_eq!(ca.issued()[1].signed_by, old_root, "{early:?}");
    // The next root survives a restart, after which its lead counts again (proxies get the
    // bundle as they reconnect).
    let restart = now + lead / 2;
    let mut reloaded = Authority::load_or_create(dir.path(), opts(), restart).unwrap();
    assert_eq!(reloaded.roots()[1].state, RootState::Next);
    assert_eq!(reloaded.trust_bundle_pem(), ca.trust_bundle_pem());
    assert!(reloaded.maintain(now + lead).unwrap().is_empty());
    assert_eq!(
        reloaded.maintain(restart + lead).unwrap(),
        [CaEvent::Rotated {
            new_root: new_root.clone()
        }]
    );
    assert_eq!(
        ca.maintain(now + lead).unwrap(),
        [CaEvent::Rotated {
            new_root: new_root.clone()
        }]
    );
    let states: Vec<_> = ca.roots().iter().map(|r| r.state).collect();
    assert_eq!(states, [RootState::Active, RootState::Retiring]);
    assert_eq!(ca.roots()[0].fingerprint, new_root);
    let bundle = TrustBundle::from_pem(&ca.trust_bundle_pem()).unwrap();
    assert_eq!(bundle.len(), 2);

    let after = issue(&mut ca, &id("web"), DAY, now + lead);
    assert_eq!(ca.issued()[2].signed_by, new_root, "new SVIDs: new root");
    // Both generations verify against the transition bundle.
    handshake(
        client_config(&before, &bundle, &[id("web")], &[]).unwrap(),
        server_config(&after, &bundle, &[]).unwrap(),
    )
    .unwrap();

    // The rotation survives a restart.
    let reloaded = Authority::load_or_create(dir.path(), opts(), now).unwrap();
    assert_eq!(reloaded.trust_bundle_pem(), ca.trust_bundle_pem());
    assert_eq!(reloaded.issued(), ca.issued());

    assert!(
        ca.maintain(now + lead).unwrap().is_empty(),
        "old root still needed"
    );
    assert_eq!(
        ca.maintain(now + HOUR + lead).unwrap(),
        [],
        "the old root's two-hour SVID is live"
    );
    let later = now + 3 * HOUR;
    assert_eq!(
        ca.maintain(later).unwrap(),
        [CaEvent::Retired {
            old_root: old_root.clone()
        }]
    );
    let live: Vec<_> = ca.issued().into_iter().map(|i| i.serial).collect();
    assert_eq!(live, [after.serial], "only the new root's SVID is left");
    assert_eq!(
        TrustBundle::from_pem(&ca.trust_bundle_pem()).unwrap().len(),
        1
    );
    assert!(!dir.path().join(format!("root-{old_root}.key.pem")).exists());
    let reloaded = Authority::load_or_create(dir.path(), opts(), later).unwrap();
    assert_eq!(reloaded.roots().len(), 1);
}

#[test]
fn a_rotation_step_that_cannot_be_saved_changes_nothing() {
    let now = SystemTime::now();
    let dir = tempfile::tempdir().unwrap();
    let mut ca = Authority::load_or_create(dir.path(), opts(), now).unwrap();
    let state = dir.path().join("state.json");
    let saved = std::fs::read(&state).unwrap();
    // A directory where state.json goes: writing the state fails (even as root).
    let block = || {
        std::fs::remove_file(&state).unwrap();
        std::fs::create_dir(&state).unwrap();
    };
    let unblock = || {
        std::fs::remove_dir(&state).unwrap();
        std::fs::write(&state, &saved).unwrap();
    };
    let root_files = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("root-")
            })
            .count()
    };
    let bundle = ca.trust_bundle_pem();
    let old_root = ca.roots()[0].fingerprint.clone();

    block();
    assert!(matches!(ca.rotate(now), Err(CaError::Io { .. })));
    assert_eq!(ca.trust_bundle_pem(), bundle, "no next root");
    assert_eq!(root_files(), 2, "the new root's files are gone");

    unblock();
    let new_root = ca.rotate(now).unwrap();
    block();
    let lead = ca.trust_lead();
    assert!(matches!(ca.maintain(now + lead), Err(CaError::Io { .. })));
    let states: Vec<_> = ca.roots().iter().map(|r| r.state).collect();
    assert_eq!(states, [RootState::Active, RootState::Next], "not switched");
    assert_eq!(ca.roots()[1].fingerprint, new_root);

    unblock();
    assert_eq!(
        ca.maintain(now + lead).unwrap(),
        // No SVID chains to the old root: it leaves at once.
        [CaEvent::Rotated { new_root }, CaEvent::Retired { old_root }]
    );
}

#[test]
fn rotates_automatically_before_the_root_expires() {
    let now = SystemTime::now();
    let mut ca = authority(now);
    let first = ca.roots()[0].fingerprint.clone();
    assert!(ca.maintain(now).unwrap().is_empty());
    assert!(
        ca.maintain(now + 200 * DAY).unwrap().is_empty(),
        "165 days left: more than rotate_before"
    );
    let near_end = now + 250 * DAY;
    let events = ca.maintain(near_end).unwrap();
    let [CaEvent::Trusted { new_root }] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(ca.roots()[1].fingerprint, *new_root);
    assert_eq!(ca.roots()[0].fingerprint, first, "still signing");
    let events = ca.maintain(near_end + ca.trust_lead()).unwrap();
    assert_eq!(
        events.first(),
        Some(&CaEvent::Rotated {
            new_root: new_root.clone()
        })
    );
    let [_, CaEvent::Retired { old_root }] = events.as_slice() else {
        panic!("{events:?}");
    };
    // No SVID chained to the first root, so it left the bundle at once.
    assert_eq!(old_root, &first);
    assert_eq!(&ca.roots()[0].fingerprint, new_root);
    assert!(ca.roots()[0].not_after > near_end + 300 * DAY);
}

#[test]
fn refuses_nonsense_options() {
    let now = SystemTime::now();
    let mut bad = opts();
    bad.rotate_before = bad.root_ttl;
    assert!(matches!(
        Authority::in_memory(bad, now),
        Err(CaError::Options(_))
    ));
    let mut bad = opts();
    bad.trust_domain = "a b".to_owned();
    assert!(matches!(
        Authority::in_memory(bad, now),
        Err(CaError::Options(_))
    ));
}

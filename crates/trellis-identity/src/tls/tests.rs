use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, IsCa, Issuer, KeyPair,
    SanType,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::*;
use crate::ca::{Authority, CaOptions};
use crate::testutil::{DAY, authority, handshake, id, issue};
use crate::workload::WorkloadKey;

fn bundle_of(ca: &Authority) -> TrustBundle {
    TrustBundle::from_pem(&ca.trust_bundle_pem()).unwrap()
}

fn cert_error(err: &Error) -> &CertificateError {
    match err {
        Error::InvalidCertificate(e) => e,
        other => panic!("not a certificate error: {other:?}"),
    }
}

#[test]
fn mutual_tls_between_two_svids() {
    let now = SystemTime::now();
    let mut ca = authority(now);
    let bundle = bundle_of(&ca);
    let web = issue(&mut ca, &id("web"), DAY, now);
    let client = issue(&mut ca, &id("client"), DAY, now);
    let server = server_config(&web, &bundle, &[b"h2", b"http/1.1"]).unwrap();
    let outbound = client_config(&client, &bundle, &[id("db"), id("web")], &[b"h2"]).unwrap();
    let (c, s) = handshake(outbound, server).unwrap();
    assert_eq!(
        s.peer_certificates().and_then(peer_identity),
        Some(id("client"))
    );
    assert_eq!(
        c.peer_certificates().and_then(peer_identity),
        Some(id("web"))
    );
    assert_eq!(c.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(s.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(peer_identity(&[]), None);
    assert!(matches!(
        client_config(&client, &bundle, &[], &[]),
        Err(TlsError::NoExpectedIdentity)
    ));
}

#[test]
fn refuses_another_ca_an_expired_cert_and_the_wrong_identity_distinctly() {
    let now = SystemTime::now();
    let mut ca = authority(now - 2 * DAY);
    let bundle = bundle_of(&ca);
    let web = issue(&mut ca, &id("web"), 10 * DAY, now);
    let server = server_config(&web, &bundle, &[]).unwrap();
    let to_web = |svid: &Svid| client_config(svid, &bundle, &[id("web")], &[]).unwrap();

    let mut other = authority(now);
    let foreign = issue(&mut other, &id("client"), DAY, now);
    let unknown = handshake(to_web(&foreign), server.clone()).unwrap_err();
    assert_eq!(cert_error(&unknown), &CertificateError::UnknownIssuer);
    // The other way round: the client refuses a server from another CA.
    let foreign_server = server_config(&foreign, &bundle_of(&other), &[]).unwrap();
    let client = issue(&mut ca, &id("client"), DAY, now);
    let err = handshake(to_web(&client), foreign_server).unwrap_err();
    assert_eq!(cert_error(&err), &CertificateError::UnknownIssuer);

    let old = issue(&mut ca, &id("client"), Duration::from_secs(60), now - DAY);
    let expired = handshake(to_web(&old), server.clone()).unwrap_err();
    assert!(
        matches!(
            cert_error(&expired),
            CertificateError::Expired | CertificateError::ExpiredContext { .. }
        ),
        "{expired:?}"
    );

    let to_db = client_config(&client, &bundle, &[id("db")], &[]).unwrap();
    let mismatch = handshake(to_db, server.clone()).unwrap_err();
    assert!(matches!(
        spiffe_failure(&mismatch),
        Some(TlsError::IdentityMismatch { found, .. }) if *found == id("web")
    ));
    assert!(
        mismatch.to_string().contains(
            "identity mismatch: expected spiffe://cluster.local/ns/default/sa/db, \
             found spiffe://cluster.local/ns/default/sa/web"
        ),
        "{mismatch}"
    );
    assert!(spiffe_failure(&unknown).is_none());

    let messages: HashSet<String> = [&unknown, &expired, &mismatch]
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(unknown.to_string().contains("UnknownIssuer"), "{unknown}");
    assert!(expired.to_string().contains("expired"), "{expired}");
}

/// A user CA whose root key the test holds, to make certificates the mesh CA never would.
struct UserRoot {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl UserRoot {
    fn new() -> UserRoot {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        UserRoot {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    fn leaf(&self, public_key: &impl rcgen::PublicKeyData, sans: Vec<SanType>) -> String {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params.signed_by(public_key, &self.issuer).unwrap().pem()
    }
}

#[test]
fn refuses_a_peer_without_a_spiffe_id_both_ways() {
    let now = SystemTime::now();
    let root = UserRoot::new();
    let bundle = TrustBundle::from_pem(&root.pem).unwrap();
    let dns = || SanType::DnsName("localhost".try_into().unwrap());

    // Our server (an SVID that also names `localhost`) and a plain client without a SPIFFE ID.
    let key = WorkloadKey::generate().unwrap();
    let csr = CertificateSigningRequestParams::from_pem(&key.csr_pem(&id("web")).unwrap()).unwrap();
    let uri = SanType::URI(id("web").to_string().try_into().unwrap());
    let web = Svid::new(
        &key,
        &root.leaf(&csr.public_key, vec![uri, dns()]),
        &id("web"),
    )
    .unwrap();
    let plain_key = KeyPair::generate().unwrap();
    let plain_cert = crate::x509::certs(&root.leaf(&plain_key, vec![dns()])).unwrap();
    let plain_der = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(plain_key.serialize_der()));
    let mut roots = RootCertStore::empty();
    roots.add(bundle.roots()[0].clone()).unwrap();
    let plain_client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(plain_cert.clone(), plain_der())
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut c = rustls::ClientConnection::new(Arc::new(plain_client), name).unwrap();
    let mut s = rustls::ServerConnection::new(server_config(&web, &bundle, &[]).unwrap()).unwrap();
    let err = loop {
        let mut buf = Vec::new();
        c.write_tls(&mut buf).unwrap();
        s.read_tls(&mut buf.as_slice()).unwrap();
        if let Err(e) = s.process_new_packets() {
            break e;
        }
        let mut buf = Vec::new();
        s.write_tls(&mut buf).unwrap();
        c.read_tls(&mut buf.as_slice()).unwrap();
        c.process_new_packets().unwrap();
    };
    assert!(
        matches!(spiffe_failure(&err), Some(TlsError::NoSpiffeId)),
        "{err:?}"
    );

    // Our client, and a plain server without a SPIFFE ID.
    let key_pem = root.issuer.key().serialize_pem();
    let mut user =
        Authority::from_pem(&root.pem, &key_pem, CaOptions::new("cluster.local")).unwrap();
    let client = issue(&mut user, &id("client"), DAY, now);
    let plain_server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(plain_cert, plain_der())
        .unwrap();
    let to_web = client_config(&client, &bundle, &[id("web")], &[]).unwrap();
    let missing = handshake(to_web, Arc::new(plain_server)).unwrap_err();
    assert!(matches!(
        spiffe_failure(&missing),
        Some(TlsError::NoSpiffeId)
    ));
    assert!(missing.to_string().contains("no SPIFFE ID"), "{missing}");
}

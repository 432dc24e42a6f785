//! Certificate and root rotation under 1000 rps. Kept out of the e2e binary: its load would
//! starve the timing assertions of tests running beside it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trellis_test::{Deadline, Sidecar, TestMesh, assert_eventually, spawn_http_echo};

use crate::common::service;

const STRICT: &str = "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec:\n  mtls: {mode: STRICT}\n---\n";

/// Fixed-rate load over keep-alive HTTP plus a fresh opaque TCP connection (a new mTLS
/// handshake each) per tick; counts failures and keeps the first few, saying which kind failed,
/// when and why.
struct Load {
    sent: Arc<AtomicU64>,
    /// How many failed, and the first few.
    failures: Arc<Mutex<(u64, Vec<String>)>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How many failures [`Load`] describes.
const FAILURES_KEPT: usize = 10;

impl Load {
    fn start(http: SocketAddr, tcp: SocketAddr, workers: usize, per_worker_rps: u64) -> Load {
        let sent = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new((0, Vec::new())));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let tasks = (0..workers)
            .map(|i| {
                let (sent, failures, stop) = (sent.clone(), failures.clone(), stop.clone());
                tokio::spawn(async move {
                    let client = crate::common::KeepAlive::new(http);
                    let mut tick =
                        tokio::time::interval(Duration::from_micros(1_000_000 / per_worker_rps));
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        n += 1;
                        let failure = if n % 10 == i as u64 % 10 {
                            match trellis_test::tcp_roundtrip(tcp, b"ping").await {
                                Ok(echoed) if echoed == b"ping" => None,
                                Ok(echoed) => Some(format!("TCP echoed {echoed:?}")),
                                Err(e) => Some(format!("TCP: {e:#}")),
                            }
                        } else {
                            match client.get("/").await {
                                Ok((200, _)) => None,
                                Ok((status, _)) => Some(format!("HTTP status {status}")),
                                Err(e) => Some(format!("HTTP: {e:#}")),
                            }
                        };
                        sent.fetch_add(1, Ordering::Relaxed);
                        if let Some(failure) = failure {
                            let at = started.elapsed();
                            let (count, kept) = &mut *failures.lock().unwrap();
                            *count += 1;
                            if kept.len() < FAILURES_KEPT {
                                kept.push(format!("{failure} (at {at:.2?})"));
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            sent,
            failures,
            stop,
            tasks,
        }
    }

    /// Stops the load; returns the requests sent, how many failed and the first failures.
    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let (failed, first) = std::mem::take(&mut *self.failures.lock().unwrap());
        (self.sent.load(Ordering::Relaxed), failed, first)
    }
}

/// Distinct serials the CA issued to `identity`.
async fn serials(admin: SocketAddr, identity: &str) -> std::collections::BTreeSet<String> {
    let api = crate::common::admin_json(admin, "/api/identity").await;
    api["issued"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["identity"] == identity)
        .map(|i| i["serial"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_roots_rotate_under_load_without_failures() {
    trellis_test::init_tracing();
    let config = [STRICT, &service("web", "HTTP"), &service("echo", "TCP")].concat();
    let mesh = TestMesh::start_with(&[("mesh.yaml", &config)], Some(Duration::from_secs(3)))
        .await
        .unwrap();
    let web_app = spawn_http_echo("web").await.unwrap();
    let tcp_app = trellis_test::spawn_tcp_echo().await.unwrap();
    let web = mesh
        .sidecar(Sidecar::new("web", web_app.addr().port()))
        .await
        .unwrap();
    let _tcp = mesh
        .sidecar(Sidecar::new("echo", tcp_app.addr().port()))
        .await
        .unwrap();
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("web").upstream("echo"))
        .await
        .unwrap();
    let admin = mesh.admin_addr();
    let web_id = "spiffe://cluster.local/ns/default/sa/web";
    let before = serials(admin, web_id).await;
    let served_before = served_certificate(&mesh, web.inbound_addr()).await;

    // 1000 rps (8 workers × 125) for ~30 s in all. SVIDs live 3 s and renew at ~2 s: about
    // ten rotations under load, then a root rotation.
    let started = Instant::now();
    let load = Load::start(
        client.upstream_addr("web").unwrap(),
        client.upstream_addr("echo").unwrap(),
        8,
        125,
    );
    // The CA forgets expired SVIDs: gather the serials it lists as they come and go.
    let mut renewed = std::collections::BTreeSet::new();
    let watch = Deadline::after(Duration::from_secs(22));
    while !watch.passed() {
        renewed.extend(serials(admin, web_id).await);
        watch.pause().await;
    }
    assert!(
        renewed.difference(&before).count() >= 5,
        "web's certificate was not renewed: {before:?} then {renewed:?}"
    );

    assert_ne!(
        served_certificate(&mesh, web.inbound_addr()).await,
        served_before,
        "web's sidecar still serves its first certificate"
    );

    // Root rotation by hand, still under load.
    let roots = |api: serde_json::Value| {
        api["roots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["fingerprint"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let old_root = roots(crate::common::admin_json(admin, "/api/identity").await)[0].clone();
    mesh.control().ca().rotate().unwrap();
    assert_eventually!(
        Duration::from_secs(15),
        {
            let api = crate::common::admin_json(admin, "/api/identity").await;
            let gone = !roots(api.clone()).contains(&old_root);
            let none_old = api["issued"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["signed_by"] != old_root.as_str());
            gone && none_old
        },
        "the old root never left the bundle"
    );
    let (sent, failed, first) = load.finish().await;
    let rate = sent as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "rotation under load: {sent} requests at {rate:.0} rps; web renewed {} times",
        renewed.difference(&before).count()
    );
    assert!(rate > 500.0, "load ran at {rate:.0} rps ({sent} requests)");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during rotations, first: {first:#?}"
    );
}

/// The leaf certificate (DER) web's sidecar presents to a fresh mTLS client (a probe identity
/// signed by the mesh CA with the join token).
async fn served_certificate(mesh: &TestMesh, inbound: SocketAddr) -> Vec<u8> {
    use trellis_identity::SpiffeId;
    use trellis_identity::workload::{Svid, TrustBundle, WorkloadKey};
    let probe: SpiffeId = "spiffe://cluster.local/ns/default/sa/probe"
        .parse()
        .unwrap();
    let key = WorkloadKey::generate().unwrap();
    let mut ca = trellis_xds::ca::CaClient::new(
        &format!("http://{}", mesh.xds_addr()),
        mesh.join_token().to_owned(),
    )
    .unwrap();
    let signed = ca
        .sign(trellis_xds::ca::SignRequest {
            csr_pem: key.csr_pem(&probe).unwrap(),
            namespace: "default".into(),
            service_account: "probe".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap();
    let svid = Svid::new(&key, &signed.chain_pem, &probe).unwrap();
    let bundle = TrustBundle::from_pem(&signed.trust_bundle_pem).unwrap();
    let web: SpiffeId = "spiffe://cluster.local/ns/default/sa/web".parse().unwrap();
    let config =
        trellis_identity::tls::client_config(&svid, &bundle, &[web], &[b"http/1.1"]).unwrap();
    let tcp = tokio::net::TcpStream::connect(inbound).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(inbound.ip().into());
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

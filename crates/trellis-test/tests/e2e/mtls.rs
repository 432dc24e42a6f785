//! Mutual TLS between sidecars: encrypted on the wire, plaintext refused in STRICT mode, bad
//! peer certificates refused for distinct reasons, certificates rotating under load.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trellis_identity::SpiffeId;
use trellis_identity::ca::{Authority, CaOptions};
use trellis_identity::workload::{Svid, TrustBundle, WorkloadKey};
use trellis_proxy::ProxyHandle;
use trellis_test::{
    EchoReply, Server, Sidecar, TestMesh, assert_eventually, http1_get, http1_request, raw_http1,
    spawn_http_echo,
};

use crate::common::{metric, service};

const STRICT: &str = "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec:\n  mtls: {mode: STRICT}\n---\n";
const MARKER: &str = "trellis-secret-marker-7f3a";

/// A TCP relay that records every byte it forwards, both ways, and the first bytes of each
/// connection's client (between sidecars, its TLS ClientHello).
struct Relay {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
    hellos: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Relay {
    /// Binds now; forwards to `target` once it is known.
    async fn bind() -> (Relay, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            hellos: Arc::default(),
        };
        (relay, listener)
    }

    fn start(&self, listener: TcpListener, target: SocketAddr) {
        let seen = self.seen.clone();
        let hellos = self.hellos.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (seen, hellos) = (seen.clone(), hellos.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let mut hello = vec![0u8; 16 * 1024];
                    let Ok(n) = cr.read(&mut hello).await else {
                        return;
                    };
                    hello.truncate(n);
                    seen.lock().unwrap().extend_from_slice(&hello);
                    if sw.write_all(&hello).await.is_err() {
                        return;
                    }
                    hellos.lock().unwrap().push(hello);
                    let up = copy_recording(&mut cr, &mut sw, seen.clone());
                    let down = copy_recording(&mut sr, &mut cw, seen);
                    let _ = tokio::join!(up, down);
                });
            }
        });
    }

    fn captured(&self) -> Vec<u8> {
        self.seen.lock().unwrap().clone()
    }

    /// The ALPN protocol each connection's client offered in its ClientHello, in order.
    fn offers(&self) -> Vec<&'static str> {
        let hellos = self.hellos.lock().unwrap();
        hellos
            .iter()
            .map(|hello| {
                let has = |p: &[u8]| hello.windows(p.len()).any(|w| w == p);
                if has(b"\x02h2") {
                    "h2"
                } else if has(b"\x08http/1.1") {
                    "http/1.1"
                } else {
                    "none"
                }
            })
            .collect()
    }
}

async fn copy_recording(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        seen.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// A STRICT mesh whose `client` sidecar calls `web` (an echo app behind its sidecar) through a
/// [`Relay`] between the two sidecars: the mesh, the app, the relay, web's and client's sidecars.
async fn relayed_pair() -> (TestMesh, Server, Relay, ProxyHandle, ProxyHandle) {
    trellis_test::init_tracing();
    let config = [STRICT, &service("web", "HTTP")].concat();
    let mesh = TestMesh::start(&[("mesh.yaml", &config)]).await.unwrap();
    let echo = spawn_http_echo("web").await.unwrap();
    let (relay, relay_socket) = Relay::bind().await;
    let mut spec = Sidecar::new("web", echo.addr().port());
    spec.advertise = Some(relay.addr);
    let web = mesh.sidecar(spec).await.unwrap();
    relay.start(relay_socket, web.inbound_addr());
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("web"))
        .await
        .unwrap();
    (mesh, echo, relay, web, client)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_traffic_is_encrypted_and_strict_refuses_plaintext() {
    let (mesh, _echo, relay, web, client) = relayed_pair().await;

    let reply = http1_get(
        client.upstream_addr("web").unwrap(),
        &format!("/{MARKER}"),
        &[("x-marker", MARKER)],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains(MARKER), "the echo saw the request");
    let wire = relay.captured();
    assert!(
        wire.len() > 500,
        "traffic went through the relay ({} bytes)",
        wire.len()
    );
    assert!(
        !contains(&wire, MARKER),
        "plaintext marker on the wire between sidecars"
    );
    assert!(
        !contains(&wire, "HTTP/1.1"),
        "plaintext HTTP on the wire between sidecars"
    );

    // STRICT: a plaintext client straight to the inbound port gets nothing back.
    let answer = raw_http1(
        web.inbound_addr(),
        "GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap_or_default();
    assert_eq!(answer, "", "plaintext was served on a STRICT port");

    // No private key in any dump or API.
    for (addr, path) in [
        (web.admin_addr(), "/config_dump"),
        (client.admin_addr(), "/config_dump"),
        (web.admin_addr(), "/metrics"),
        (mesh.admin_addr(), "/api/identity"),
        (mesh.admin_addr(), "/api/config"),
        (mesh.admin_addr(), "/api/proxies"),
    ] {
        let body = http1_get(addr, path, &[]).await.unwrap().text();
        assert!(!body.contains("PRIVATE KEY"), "{path} shows a private key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_between_busy_sidecars_shares_an_http2_connection_and_reaches_the_app_as_http1() {
    let (_mesh, _echo, relay, _web, client) = relayed_pair().await;
    let upstream = client.upstream_addr("web").unwrap();

    // One request at a time: HTTP/1.1 on pooled connections (one, unless a connection is
    // still on its way back to the pool when the next request starts).
    for _ in 0..5 {
        let reply = http1_get(upstream, "/", &[]).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let offers = relay.offers();
    assert!(
        !offers.is_empty() && offers.iter().all(|o| *o == "http/1.1"),
        "{offers:?}"
    );

    // Sixteen HTTP/1.1 clients at once, each on its own connection to the outbound sidecar and
    // held 300 ms by the app, one with a mark of its own that must not pass: past four in
    // flight, the sidecars carry them over HTTP/2.
    let burst = || {
        futures_util::future::join_all((0..16).map(|i| async move {
            let headers = [
                ("host", "web.shop:8080"),
                ("trellis-orig-proto", "HTTP/1.1"),
            ];
            let headers = if i == 0 { &headers[..] } else { &headers[..1] };
            http1_request(upstream, "POST", "/delay/300", headers, b"twelve bytes")
                .await
                .unwrap()
        }))
    };
    let mut h2_connections = Vec::new();
    for _ in 0..2 {
        for reply in burst().await {
            assert_eq!(reply.status, 200, "{}", reply.text());
            let seen: EchoReply = reply.json().unwrap();
            assert_eq!(seen.version, "HTTP/1.1", "the app speaks HTTP/1.1");
            assert_eq!(seen.authority, "web.shop:8080", "its Host arrives as sent");
            assert_eq!(seen.path, "/delay/300");
            assert_eq!(seen.body_len, 12);
            assert_eq!(
                seen.header("trellis-orig-proto"),
                None,
                "the mark is the proxies'"
            );
        }
        let offers = relay.offers();
        let count = |p| offers.iter().filter(|o| **o == p).count();
        // Sixteen without carrying; about four with it, and slack for connections on their way
        // back to the pool on a loaded machine.
        assert!(
            count("http/1.1") <= 8,
            "about four HTTP/1.1 requests in flight: {offers:?}"
        );
        h2_connections.push(count("h2"));
    }
    assert!(h2_connections[0] >= 1, "{h2_connections:?}");
    assert_eq!(
        h2_connections[0], h2_connections[1],
        "the second burst reuses the multiplexed connection"
    );
}

async fn issue(authority: &mut Authority, id: &SpiffeId, ttl: Duration, now: SystemTime) -> Svid {
    let key = WorkloadKey::generate().unwrap();
    let issued = authority
        .issue(&key.csr_pem(id).unwrap(), id, Some(ttl), now)
        .unwrap();
    Svid::new(&key, &issued.chain_pem, id).unwrap()
}

/// Handshakes as a client with `svid` and returns whether the server accepted us.
async fn handshake(addr: SocketAddr, svid: &Svid, bundle: &TrustBundle, server: &SpiffeId) -> bool {
    let config = trellis_identity::tls::client_config(
        svid,
        bundle,
        std::slice::from_ref(server),
        &[b"http/1.1"],
    )
    .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let Ok(mut tls) = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
    else {
        return false;
    };
    // TLS 1.3 reports a refused client certificate on the first read.
    let _ = tls
        .write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        .await;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.is_ok() && out.starts_with(b"HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_with_bad_certificates_are_refused_for_distinct_reasons() {
    let config = [STRICT, &service("web", "HTTP")].concat();
    let mesh = TestMesh::start(&[("mesh.yaml", &config)]).await.unwrap();
    let echo = spawn_http_echo("web").await.unwrap();
    let web = mesh
        .sidecar(Sidecar::new("web", echo.addr().port()))
        .await
        .unwrap();
    let web_id: SpiffeId = "spiffe://cluster.local/ns/default/sa/web".parse().unwrap();
    let client_id: SpiffeId = "spiffe://cluster.local/ns/default/sa/client"
        .parse()
        .unwrap();
    let now = SystemTime::now();

    // The mesh's own CA, from a copy of the control plane's data dir (the test signs with the
    // same root without touching the control plane's files).
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(mesh.data_dir().join("ca")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    let mut real = Authority::load_or_create(copy.path(), ca_options(), now).unwrap();
    let bundle = TrustBundle::from_pem(&real.trust_bundle_pem()).unwrap();
    let good = issue(&mut real, &client_id, Duration::from_secs(600), now).await;
    assert!(
        handshake(web.inbound_addr(), &good, &bundle, &web_id).await,
        "a valid peer is served"
    );

    let other_dir = tempfile::tempdir().unwrap();
    let mut other = Authority::load_or_create(other_dir.path(), ca_options(), now).unwrap();
    let foreign = issue(&mut other, &client_id, Duration::from_secs(600), now).await;
    assert!(
        !handshake(web.inbound_addr(), &foreign, &bundle, &web_id).await,
        "another CA's cert"
    );

    let long_ago = now - Duration::from_secs(3600);
    let expired = issue(&mut real, &client_id, Duration::from_secs(60), long_ago).await;
    assert!(
        !handshake(web.inbound_addr(), &expired, &bundle, &web_id).await,
        "an expired cert"
    );

    let admin = web.admin_addr();
    for reason in ["unknown_issuer", "expired"] {
        let series =
            format!("trellis_tls_handshake_failures_total{{side=\"server\",reason=\"{reason}\"}}");
        assert_eventually!(
            Duration::from_secs(2),
            metric(admin, &series).await.is_some_and(|n| n >= 1.0),
            "{series}"
        );
    }

    // A server presenting a valid cert for another identity than the endpoint's workload:
    // a rogue TLS server stands where the registry says `web` is.
    let rogue_id: SpiffeId = "spiffe://cluster.local/ns/default/sa/rogue"
        .parse()
        .unwrap();
    let rogue = issue(&mut real, &rogue_id, Duration::from_secs(600), now).await;
    let rogue_server =
        trellis_identity::tls::server_config(&rogue, &bundle, &[b"http/1.1"]).unwrap();
    let rogue_socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rogue_addr = rogue_socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = rogue_socket.accept().await {
            let acceptor = tokio_rustls::TlsAcceptor::from(rogue_server.clone());
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    let mut spec = Sidecar::new("web", echo.addr().port());
    spec.advertise = Some(rogue_addr);
    let _impostor = mesh.sidecar(spec).await.unwrap();
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("web"))
        .await
        .unwrap();
    let to_web = client.upstream_addr("web").unwrap();
    assert_eventually!(
        Duration::from_secs(5),
        metric(
            client.admin_addr(),
            "trellis_tls_handshake_failures_total{side=\"client\",reason=\"identity_mismatch\"}"
        )
        .await
        .is_some_and(|n| n >= 1.0)
            || {
                let _ = http1_get(to_web, "/", &[]).await;
                false
            },
        "the client never refused the impostor"
    );
}

fn ca_options() -> CaOptions {
    CaOptions {
        trust_domain: "cluster.local".to_owned(),
        svid_ttl: Duration::from_secs(3600),
        root_ttl: Duration::from_secs(365 * 24 * 3600),
        rotate_before: Duration::from_secs(120 * 24 * 3600),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_outlive_a_control_plane_outage_and_renewal_resumes() {
    let config = [STRICT, &service("web", "HTTP")].concat();
    let mut mesh = TestMesh::start_with(&[("mesh.yaml", &config)], Some(Duration::from_secs(6)))
        .await
        .unwrap();
    let web_app = spawn_http_echo("web").await.unwrap();
    let web = mesh
        .sidecar(Sidecar::new("web", web_app.addr().port()))
        .await
        .unwrap();
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("web"))
        .await
        .unwrap();
    let to_web = client.upstream_addr("web").unwrap();
    assert_eq!(http1_get(to_web, "/", &[]).await.unwrap().status, 200);

    mesh.stop_control();
    let issued = metric(web.admin_addr(), "trellis_identity_certs_issued").await;
    assert!(
        issued.is_some_and(|n| n >= 1.0),
        "the sidecar got a certificate"
    );
    // Fresh connections (new handshakes) still work with the certificates the proxies hold.
    for _ in 0..5 {
        assert_eq!(http1_get(to_web, "/", &[]).await.unwrap().status, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    mesh.restart_control().await.unwrap();
    assert_eventually!(
        Duration::from_secs(20),
        metric(web.admin_addr(), "trellis_identity_certs_issued").await > issued,
        "renewal did not resume after the control plane came back"
    );
    assert_eq!(http1_get(to_web, "/", &[]).await.unwrap().status, 200);
}

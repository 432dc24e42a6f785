//! The two-hop paths under test: client → outbound hop → inbound hop → backend, each hop one
//! process with one worker, pinned with the backend to the proxy CPU.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_identity::ca::{Authority, CaOptions};

use crate::certs::{self, CertFiles};
use crate::load::{self, Proto, Target};
use crate::peers;
use crate::procs::Proc;

/// CPU the backend and the proxies share.
pub(crate) const PROXY_CPU: usize = 0;
/// CPU of the load generator (and the idle Trellis control plane).
pub(crate) const CLIENT_CPU: usize = 1;

/// How long a hop may take to start serving.
const START_LIMIT: Duration = Duration::from_secs(20);

/// What carries the requests.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
pub(crate) enum Kind {
    /// No proxy: the client calls the backend (the floor).
    Direct,
    /// Trellis sidecars, plaintext between them.
    Trellis,
    /// Trellis sidecars with mutual TLS (SPIFFE SVIDs from the control plane's CA).
    TrellisMtls,
    /// Envoy, static config.
    Envoy,
    /// Envoy with mutual TLS between the hops.
    EnvoyMtls,
    /// nginx reverse proxies.
    Nginx,
    /// HAProxy.
    Haproxy,
    /// HAProxy with mutual TLS between the hops.
    HaproxyMtls,
}

impl Kind {
    /// Every kind, in report order.
    pub(crate) const ALL: [Kind; 8] = [
        Kind::Direct,
        Kind::Trellis,
        Kind::TrellisMtls,
        Kind::Envoy,
        Kind::EnvoyMtls,
        Kind::Nginx,
        Kind::Haproxy,
        Kind::HaproxyMtls,
    ];

    /// Name in tables and charts.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Trellis => "trellis",
            Kind::TrellisMtls => "trellis mTLS",
            Kind::Envoy => "envoy",
            Kind::EnvoyMtls => "envoy mTLS",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
            Kind::HaproxyMtls => "haproxy mTLS",
        }
    }

    /// Most connections a hop takes: HAProxy wants two descriptors per connection under the
    /// benchmark machine's limit of 20000 (its configs set `maxconn 9990`).
    pub(crate) fn max_connections(self) -> usize {
        match self {
            Kind::Haproxy | Kind::HaproxyMtls => 9_900,
            _ => usize::MAX,
        }
    }

    /// Whether the hops talk mutual TLS.
    pub(crate) fn mtls(self) -> bool {
        matches!(
            self,
            Kind::TrellisMtls | Kind::EnvoyMtls | Kind::HaproxyMtls
        )
    }
}

/// What every pair shares: binaries, the backend, a CA.
pub(crate) struct Env {
    /// Scratch directory (configs, logs).
    pub(crate) dir: PathBuf,
    /// The `trellis` binary (the control plane).
    pub(crate) trellis: PathBuf,
    /// The `trellis-proxy` binary (the sidecars).
    pub(crate) trellis_proxy: PathBuf,
    /// The `envoy` binary.
    pub(crate) envoy: PathBuf,
    /// The `haproxy` binary.
    pub(crate) haproxy: PathBuf,
    /// Backend HTTP/1.1 and h2c addresses.
    pub(crate) backend: Backend,
    /// Certificates for peers that read files.
    pub(crate) certs: CertFiles,
    /// Client TLS to an inbound hop that uses `certs`.
    pub(crate) client_tls: Arc<rustls::ClientConfig>,
    _backend: Proc,
}

/// The backend's ports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backend {
    /// HTTP/1.1 keep-alive.
    pub(crate) h1: u16,
    /// h2c, prior knowledge.
    pub(crate) h2: u16,
}

impl Backend {
    /// The port for `proto`.
    pub(crate) fn port(self, proto: Proto) -> u16 {
        match proto {
            Proto::H1 => self.h1,
            Proto::H2 => self.h2,
        }
    }
}

impl Env {
    /// Writes certificates and starts the backend.
    pub(crate) async fn start(dir: PathBuf, programs: &Programs) -> anyhow::Result<Env> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Peers resolve relative paths against their own prefix: hand them absolute ones.
        let dir = std::path::absolute(&dir)?;
        let mut ca = Authority::in_memory(CaOptions::new(certs::TRUST_DOMAIN), SystemTime::now())?;
        let certs = certs::write_files(&mut ca, &dir.join("certs"))?;
        let client_tls = certs::client_tls(&mut ca)?;
        let backend = Backend {
            h1: free_port()?,
            h2: free_port()?,
        };
        let backend_dir = dir.join("backend");
        let conf = peers::nginx_backend(&backend_dir, backend)?;
        let log = backend_dir.join("stderr.log");
        let proc = Proc::start(
            "nginx backend",
            PROXY_CPU,
            Path::new(peers::NGINX),
            &peers::nginx_args(&conf, &backend_dir),
            &log,
        )?;
        let env = Env {
            dir,
            trellis: programs.trellis.clone(),
            trellis_proxy: programs.trellis_proxy.clone(),
            envoy: programs.envoy.clone(),
            haproxy: programs.haproxy.clone(),
            backend,
            certs,
            client_tls,
            _backend: proc,
        };
        for proto in [Proto::H1, Proto::H2] {
            let target = Target {
                addr: local(backend.port(proto)),
                proto,
                tls: None,
            };
            load::until_serving(&target, START_LIMIT)
                .await
                .with_context(|| format!("the nginx backend (log: {})", log.display()))?;
        }
        Ok(env)
    }
}

/// The programs the paths run (`trellis-bench dataplane` and `latency` flags).
#[derive(Debug, clap::Args)]
pub(crate) struct Programs {
    /// The `trellis` binary (a release build), for the control plane.
    #[arg(long, default_value = "target/release/trellis")]
    pub(crate) trellis: PathBuf,
    /// The `trellis-proxy` binary (a release build), for the sidecars.
    #[arg(long, default_value = "target/release/trellis-proxy")]
    pub(crate) trellis_proxy: PathBuf,
    /// The `envoy` binary.
    #[arg(long, default_value = "envoy")]
    pub(crate) envoy: PathBuf,
    /// The `haproxy` binary (e.g. a wrapper that runs it under a profiler).
    #[arg(long, default_value = "/usr/sbin/haproxy")]
    pub(crate) haproxy: PathBuf,
}

/// A running path.
pub(crate) struct Pair {
    /// What it is.
    pub(crate) kind: Kind,
    /// Where the client sends requests.
    pub(crate) entry: Target,
    /// The inbound hop itself, with client TLS when the hops talk mTLS (idle-connection and
    /// handshake measurements); `None` for the direct path.
    pub(crate) inbound: Option<Target>,
    /// Outbound then inbound hop.
    pub(crate) hops: Vec<Proc>,
    /// From starting the outbound hop (inbound already up) to its first routed response.
    pub(crate) startup: Option<Duration>,
    _control: Option<Proc>,
}

impl Pair {
    /// Starts the path of `kind` for `proto`.
    pub(crate) async fn start(env: &Env, kind: Kind, proto: Proto) -> anyhow::Result<Pair> {
        let dir = env.dir.join(format!("{kind:?}-{proto:?}").to_lowercase());
        std::fs::create_dir_all(&dir)?;
        let backend = env.backend.port(proto);
        if kind == Kind::Direct {
            return Ok(Pair {
                kind,
                entry: Target {
                    addr: local(backend),
                    proto,
                    tls: None,
                },
                inbound: None,
                hops: Vec::new(),
                startup: None,
                _control: None,
            });
        }
        let ports = HopPorts {
            outbound: free_port()?,
            inbound: free_port()?,
            backend,
            admin_out: free_port()?,
            admin_in: free_port()?,
        };
        let mut control = None;
        let mut inbound_tls = kind.mtls().then(|| env.client_tls.clone());
        let (inbound, outbound) = match kind {
            Kind::Trellis | Kind::TrellisMtls => {
                let mesh = TrellisMesh::start(env, &dir, kind.mtls(), proto).await?;
                if kind.mtls() {
                    inbound_tls = Some(mesh.client_tls.clone());
                }
                let hops = mesh.hops(env, ports);
                control = Some(mesh.control);
                hops
            }
            _ => peers::hops(env, &dir, kind, proto, ports)?,
        };
        let mut inbound = inbound.start(&dir)?;
        inbound.wait_ready(&dir).await?;
        let started = Instant::now();
        let mut outbound = outbound.start(&dir)?;
        let entry = Target {
            addr: local(ports.outbound),
            proto,
            tls: None,
        };
        if let Err(e) = load::until_serving(&entry, START_LIMIT).await {
            outbound.check_alive()?;
            inbound.check_alive()?;
            return Err(e.context(format!(
                "{} did not serve (logs in {})",
                kind.label(),
                dir.display()
            )));
        }
        let startup = started.elapsed();
        Ok(Pair {
            kind,
            entry,
            inbound: Some(Target {
                addr: local(ports.inbound),
                proto: Proto::H1,
                tls: inbound_tls,
            }),
            hops: vec![outbound.proc, inbound.proc],
            startup: Some(startup),
            _control: control,
        })
    }
}

/// Ports of one path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HopPorts {
    /// The outbound hop's listener (the client's target).
    pub(crate) outbound: u16,
    /// The inbound hop's listener.
    pub(crate) inbound: u16,
    /// The backend port the inbound hop forwards to.
    pub(crate) backend: u16,
    /// Admin port of the outbound hop (Envoy, Trellis).
    pub(crate) admin_out: u16,
    /// Admin port of the inbound hop.
    pub(crate) admin_in: u16,
}

/// How to start a hop and tell when it is up.
pub(crate) struct HopSpec {
    /// Name, for logs and errors.
    pub(crate) name: &'static str,
    /// The program.
    pub(crate) program: PathBuf,
    /// Its arguments.
    pub(crate) args: Vec<OsString>,
    /// Ready when this responds 200 (`host:port`, path); else when `port` accepts.
    pub(crate) ready: Ready,
}

/// When a started hop counts as up.
pub(crate) enum Ready {
    /// Its listener accepts TCP connections.
    Listening(u16),
    /// `GET path` on this admin port answers 200.
    Admin(u16, &'static str),
}

struct Hop {
    proc: Proc,
    log: PathBuf,
    ready: Ready,
}

impl HopSpec {
    fn start(self, dir: &Path) -> anyhow::Result<Hop> {
        let log = dir.join(format!("{}.log", self.name));
        let proc = Proc::start(self.name, PROXY_CPU, &self.program, &self.args, &log)?;
        Ok(Hop {
            proc,
            log,
            ready: self.ready,
        })
    }
}

impl Hop {
    fn check_alive(&mut self) -> anyhow::Result<()> {
        self.proc.check_alive(&self.log)
    }

    async fn wait_ready(&mut self, dir: &Path) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < START_LIMIT {
            let up = match self.ready {
                Ready::Listening(port) => tokio::net::TcpStream::connect(local(port)).await.is_ok(),
                Ready::Admin(port, path) => status(local(port), path).await.ok() == Some(200),
            };
            if up {
                return Ok(());
            }
            self.proc.check_alive(&self.log)?;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        bail!(
            "hop not ready after {START_LIMIT:?} (logs in {})",
            dir.display()
        )
    }
}

/// A Trellis control plane for one path, and what its hops need.
struct TrellisMesh {
    control: Proc,
    xds_port: u16,
    token_file: PathBuf,
    client_tls: Arc<rustls::ClientConfig>,
}

impl TrellisMesh {
    async fn start(env: &Env, dir: &Path, mtls: bool, proto: Proto) -> anyhow::Result<TrellisMesh> {
        let config_dir = dir.join("config");
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&config_dir)?;
        let (mode, protocol) = (
            if mtls { "STRICT" } else { "PERMISSIVE" },
            match proto {
                Proto::H1 => "HTTP",
                Proto::H2 => "HTTP2",
            },
        );
        std::fs::write(
            config_dir.join("mesh.yaml"),
            format!(
                "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata:\n  name: mesh\nspec:\n  mtls:\n    mode: {mode}\n---\napiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata:\n  name: {}\nspec:\n  ports:\n  - port: 80\n    protocol: {protocol}\n",
                load::AUTHORITY
            ),
        )?;
        // The CA is made here first, so the benchmark can sign its own client certificate
        // with it; the control plane then loads it.
        let mut ca = Authority::load_or_create(
            &data_dir.join("ca"),
            CaOptions::new(certs::TRUST_DOMAIN),
            SystemTime::now(),
        )?;
        let client_tls = certs::client_tls(&mut ca)?;
        drop(ca);
        let xds_port = free_port()?;
        let args: Vec<OsString> = vec![
            "control".into(),
            "--log".into(),
            "warn".into(),
            "--config-dir".into(),
            config_dir.into(),
            "--data-dir".into(),
            data_dir.clone().into(),
            "--xds-addr".into(),
            format!("127.0.0.1:{xds_port}").into(),
            "--admin-addr".into(),
            format!("127.0.0.1:{}", free_port()?).into(),
            "--warmup".into(),
            "0s".into(),
        ];
        let log = dir.join("control.log");
        let mut control = Proc::start("trellis control", CLIENT_CPU, &env.trellis, &args, &log)?;
        let started = Instant::now();
        while tokio::net::TcpStream::connect(local(xds_port))
            .await
            .is_err()
        {
            control.check_alive(&log)?;
            if started.elapsed() > START_LIMIT {
                bail!("the control plane did not listen (log: {})", log.display());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let token_file = if mtls {
            data_dir.join("join-token")
        } else {
            dir.join("no-token")
        };
        Ok(TrellisMesh {
            control,
            xds_port,
            token_file,
            client_tls,
        })
    }

    /// The inbound and outbound sidecars.
    fn hops(&self, env: &Env, ports: HopPorts) -> (HopSpec, HopSpec) {
        let common = |service: &str, admin: u16| -> Vec<String> {
            vec![
                "--workers".into(),
                "1".into(),
                "--log".into(),
                "warn".into(),
                "--service".into(),
                service.into(),
                "--control-plane".into(),
                format!("http://127.0.0.1:{}", self.xds_port),
                "--token-file".into(),
                self.token_file.display().to_string(),
                "--admin".into(),
                format!("127.0.0.1:{admin}"),
                "--node-id".into(),
                format!("{service}-bench"),
            ]
        };
        let mut inbound = common(certs::SERVER, ports.admin_in);
        inbound.extend([
            "--app-port".into(),
            ports.backend.to_string(),
            "--inbound".into(),
            format!("127.0.0.1:{}", ports.inbound),
        ]);
        let mut outbound = common(certs::CLIENT, ports.admin_out);
        outbound.extend([
            "--app-port".into(),
            ports.backend.to_string(),
            "--upstream".into(),
            format!("{}=127.0.0.1:{}", load::AUTHORITY, ports.outbound),
        ]);
        let spec = |name, args: Vec<String>, admin| HopSpec {
            name,
            program: env.trellis_proxy.clone(),
            args: args.into_iter().map(OsString::from).collect(),
            ready: Ready::Admin(admin, "/ready"),
        };
        (
            spec("trellis-inbound", inbound, ports.admin_in),
            spec("trellis-outbound", outbound, ports.admin_out),
        )
    }
}

/// `127.0.0.1:port`.
pub(crate) fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A port free right now on 127.0.0.1 (the OS picks it; the listener is closed again).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Status code of `GET path` (one request, then the connection closes).
async fn status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await?;
    let line = std::str::from_utf8(&head)?;
    line.get(9..12)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad status line {line:?}"))
}

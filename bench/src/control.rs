//! `trellis-bench control`: control-plane scale. Runs `trellis control` on generated Services,
//! holds simulated proxies on ADS streams, rewrites one Service file at a time and times the
//! push until every proxy has ACKed it; records the control plane's RSS and CPU per scale factor.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, UpstreamTlsContext,
    common_tls_context::ValidationContextType,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;
use trellis_xds::TypeUrl;
use trellis_xds::client::{ClientOptions, Handler};
use trellis_xds::node::NodeMeta;

/// Services at factor 1; factor F declares F × this many.
const BASE_SERVICES: usize = 100;
/// Static endpoints per declared Service (factor 10 = 1000 services / 10k endpoints).
const ENDPOINTS_PER_SERVICE: usize = 10;
/// Port of every Service, static endpoint and simulated app (never dialled).
const SERVICE_PORT: u16 = 8080;
/// The control plane's file-watch quiet period: `DEBOUNCE` in crates/trellis-control/src/files.rs,
/// private there and copied by hand (change both together). Every measured push includes it.
const CONTROL_DEBOUNCE: Duration = Duration::from_millis(50);
/// Static endpoints are numbered into 127.0.0.0/16, so at most 65536 of them.
const MAX_FACTOR: u32 = 65;
/// Change endpoints are numbered into 127.1.0.0/16; proxies' ports start at 20000 and 40000.
const MAX_CHANGES: usize = 65_536;
const MAX_PROXIES: usize = 20_000;
/// Simulated proxies' inbound and HTTP-proxy ports (announced, never bound).
const INBOUND_PORT_BASE: usize = 20_000;
const HTTP_PROXY_PORT_BASE: usize = 40_000;
/// Successive changes edit services this far apart, so they spread over the set.
const CHANGE_STRIDE: usize = 37;
/// How long `trellis control` may take to report its xDS address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `trellis-bench control` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Scale factors: factor F runs F×100 Services of 10 static endpoints each.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 2, 5, 10])]
    pub(crate) factors: Vec<u32>,
    /// Simulated proxies, each on its own ADS stream and subscribed to every service.
    #[arg(long, default_value_t = 200)]
    pub(crate) proxies: usize,
    /// Config changes (one Service file rewritten each) timed per factor.
    #[arg(long, default_value_t = 20)]
    pub(crate) changes: usize,
    /// Least time between two changes, so the control plane's debounce never merges them.
    #[arg(long, default_value_t = 300)]
    pub(crate) gap_ms: u64,
    /// Longest wait for every proxy to ACK one change before the run fails.
    #[arg(long, default_value_t = 30)]
    pub(crate) change_timeout_secs: u64,
    /// Longest wait for every proxy's first complete config before the run fails (each
    /// connect republishes to every proxy already connected, so this grows with proxies²).
    #[arg(long, default_value_t = 900)]
    pub(crate) sync_timeout_secs: u64,
    /// The `trellis` binary to run as the control plane.
    #[arg(long, default_value = "target/release/trellis")]
    pub(crate) trellis: PathBuf,
    /// Where results (control.json) go.
    #[arg(long, default_value_os_t = crate::default_out_dir())]
    pub(crate) out_dir: PathBuf,
}

/// One scale factor's results; `control.json` holds one per factor, in run order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ScalePoint {
    /// Scale factor (1 = 100 services / 1000 static endpoints).
    pub(crate) factor: u32,
    /// Declared Services.
    pub(crate) services: usize,
    /// Static endpoints over all Services, before any change.
    pub(crate) endpoints: usize,
    /// Simulated proxies; each also registers as one sidecar endpoint of a declared Service.
    pub(crate) proxies: usize,
    /// Config changes timed.
    pub(crate) changes: usize,
    /// Time from a change's file write until the last proxy ACKed it: median over changes.
    pub(crate) ack_p50_ms: f64,
    /// Same, 99th percentile (nearest rank: the maximum below 100 changes).
    pub(crate) ack_p99_ms: f64,
    /// Same, slowest change.
    pub(crate) ack_max_ms: f64,
    /// The control plane's file-watch debounce included in every ack time.
    pub(crate) debounce_ms: f64,
    /// `ack_p50_ms` minus the debounce: reload, translation and fan-out.
    pub(crate) ack_p50_minus_debounce_ms: f64,
    /// `ack_p99_ms` minus the debounce.
    pub(crate) ack_p99_minus_debounce_ms: f64,
    /// `ack_max_ms` minus the debounce.
    pub(crate) ack_max_minus_debounce_ms: f64,
    /// Time from the write until the first proxy ACKed: median over changes.
    pub(crate) first_ack_p50_ms: f64,
    /// Per change, write to last ACK, in run order.
    pub(crate) ack_samples_ms: Vec<f64>,
    /// From opening the streams until every proxy holds a complete config, converged.
    pub(crate) initial_sync_ms: f64,
    /// Control-plane RSS with the config loaded, before any proxy connected.
    pub(crate) cp_rss_idle_mib: f64,
    /// Control-plane peak RSS over the run (VmHWM).
    pub(crate) cp_rss_mib: f64,
    /// Control-plane RSS after the last change (VmRSS).
    pub(crate) cp_rss_end_mib: f64,
    /// Control-plane CPU (user + system) per change, over the change phase.
    pub(crate) cp_cpu_ms_per_change: f64,
    /// Control-plane CPU while the proxies connected and synced.
    pub(crate) cp_cpu_initial_sync_ms: f64,
    /// This benchmark's own CPU per change (the simulated proxies share the machine).
    pub(crate) bench_cpu_ms_per_change: f64,
    /// Clock ticks per second used for the CPU figures.
    pub(crate) clk_tck: u64,
    /// True when `getconf CLK_TCK` failed and 100 was assumed.
    pub(crate) clk_tck_assumed: bool,
    /// Encoded size of every resource one proxy holds (LDS+RDS+CDS+EDS+SDS).
    pub(crate) snapshot_bytes_per_proxy: u64,
    /// The same by type (`lds`, `rds`, `cds`, `eds`, `sds`).
    pub(crate) snapshot_bytes_by_type: BTreeMap<String, u64>,
    /// Resources one proxy holds, by type.
    pub(crate) snapshot_resources_by_type: BTreeMap<String, usize>,
    /// Resource bytes pushed to each proxy per change (all types).
    pub(crate) change_bytes_per_proxy: f64,
    /// Responses pushed to each proxy per change, by type: which types a change resends.
    pub(crate) change_pushes_per_proxy: BTreeMap<String, f64>,
}

pub(crate) fn main(args: Args) -> anyhow::Result<()> {
    validate(&args)?;
    let clk = clock_ticks();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // A signal drops the run, and with it the guard that kills `trellis control`: a
        // default SIGTERM would skip destructors and leave the control plane running.
        tokio::select! {
            result = run_all(&args, clk) => result,
            signal = interrupted() => bail!(
                "interrupted by {signal}; finished factors are in {}",
                args.out_dir.join("control.json").display()
            ),
        }
    })
}

async fn run_all(args: &Args, clk: ClockTicks) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for &factor in &args.factors {
        let point = run_factor(args, factor, clk)
            .await
            .with_context(|| format!("factor {factor}"))?;
        results.push(point);
        // Written after every factor, so a later failure keeps the finished ones.
        write_results(&args.out_dir, &results)?;
    }
    print!("{}", table(&results));
    println!("results: {}", args.out_dir.join("control.json").display());
    Ok(())
}

/// Resolves on SIGTERM or SIGINT; never when the handlers cannot be installed.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => std::future::pending().await,
    }
}

fn validate(args: &Args) -> anyhow::Result<()> {
    if args.factors.is_empty() || args.factors.iter().any(|f| !(1..=MAX_FACTOR).contains(f)) {
        bail!("--factors: give factors from 1 to {MAX_FACTOR}, e.g. 1,2,5,10");
    }
    if !(1..=MAX_PROXIES).contains(&args.proxies) {
        bail!("--proxies: 1 to {MAX_PROXIES}");
    }
    if !(1..=MAX_CHANGES).contains(&args.changes) {
        bail!("--changes: 1 to {MAX_CHANGES}");
    }
    if Duration::from_millis(args.gap_ms) < CONTROL_DEBOUNCE * 2 {
        bail!(
            "--gap-ms: at least {} ms, or the control plane's debounce merges changes",
            (CONTROL_DEBOUNCE * 2).as_millis()
        );
    }
    Ok(())
}

async fn run_factor(args: &Args, factor: u32, clk: ClockTicks) -> anyhow::Result<ScalePoint> {
    let services = BASE_SERVICES * factor as usize;
    // Declared first so it is removed after the control plane (declared later) is killed.
    let work = tempfile::Builder::new()
        .prefix("trellis-bench-control-")
        .tempdir()
        .context("creating a work dir")?;
    let config_dir = work.path().join("config");
    let mut mesh = MeshConfig {
        services,
        extra: BTreeMap::new(),
    };
    mesh.write_all(&config_dir)?;
    eprintln!(
        "control: factor {factor}: {services} services, {} endpoints, {} proxies",
        mesh.endpoint_count(),
        args.proxies
    );
    let (control, xds) = ControlProcess::start(
        &args.trellis,
        &config_dir,
        &work.path().join("data"),
        &work.path().join("control.log"),
    )
    .await?;
    let measured = measure(args, factor, clk, &mut mesh, &config_dir, &control, xds).await;
    measured.map_err(|e| {
        anyhow!(
            "{e:#}\ncontrol plane log (last lines):\n{}",
            control.log_tail()
        )
    })
}

async fn measure(
    args: &Args,
    factor: u32,
    clk: ClockTicks,
    mesh: &mut MeshConfig,
    config_dir: &Path,
    control: &ControlProcess,
    xds: SocketAddr,
) -> anyhow::Result<ScalePoint> {
    let pid = control.pid();
    let idle = Usage::read(&pid)?;
    let tracker = Arc::new(Tracker::new(args.proxies));
    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let clients: Vec<_> = (0..args.proxies)
        .map(|i| {
            let handler = SimProxy::new(i, tracker.clone());
            let opts = ClientOptions {
                endpoint: format!("http://{xds}"),
                node: proxy_meta(i, mesh.services).to_node(&format!("bench-proxy-{i}")),
                backoff_min: Duration::from_millis(100),
                backoff_max: Duration::from_secs(2),
            };
            let mut stopped = stopped.clone();
            tokio::spawn(trellis_xds::client::run(opts, handler, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }))
        })
        .collect();

    let deadline = started + Duration::from_secs(args.sync_timeout_secs);
    let synced_at = tracker.wait(deadline, synced).await.map_err(|done| {
        anyhow!(
            "only {done} of {} proxies synced within {}s",
            args.proxies,
            args.sync_timeout_secs
        )
    })?;
    let initial_sync = synced_at - started;
    eprintln!(
        "control: factor {factor}: initial sync {:.0} ms",
        ms(initial_sync)
    );
    let synced_usage = Usage::read(&pid)?;
    // Lets trailing LDS/RDS pushes of the sync land before the first change.
    tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;

    let before = (Usage::read(&pid)?, Usage::read("self")?);
    let changes = run_changes(args, mesh, config_dir, &tracker).await?;
    let after = (Usage::read(&pid)?, Usage::read("self")?);

    let _ = stop.send(true);
    let join_deadline = Instant::now() + Duration::from_secs(10);
    for client in clients {
        let _ = tokio::time::timeout_at(join_deadline, client).await;
    }
    let held = tracker.lock()[0].clone();
    check_endpoints(&held, mesh, args.proxies)?;

    let per_change = |ticks: u64| clk.ms(ticks) / args.changes as f64;
    let (ack_ms, first_ms) = (&changes.ack_ms, &changes.first_ack_ms);
    let debounce = ms(CONTROL_DEBOUNCE);
    let bytes_by_type: BTreeMap<String, u64> = held
        .types
        .iter()
        .map(|(t, s)| (t.short().to_owned(), s.bytes))
        .collect();
    let per_proxy_change = (args.proxies * args.changes) as f64;
    Ok(ScalePoint {
        factor,
        services: mesh.services,
        endpoints: mesh.services * ENDPOINTS_PER_SERVICE,
        proxies: args.proxies,
        changes: args.changes,
        ack_p50_ms: percentile(ack_ms, 50.0),
        ack_p99_ms: percentile(ack_ms, 99.0),
        ack_max_ms: percentile(ack_ms, 100.0),
        debounce_ms: debounce,
        ack_p50_minus_debounce_ms: percentile(ack_ms, 50.0) - debounce,
        ack_p99_minus_debounce_ms: percentile(ack_ms, 99.0) - debounce,
        ack_max_minus_debounce_ms: percentile(ack_ms, 100.0) - debounce,
        first_ack_p50_ms: percentile(first_ms, 50.0),
        ack_samples_ms: ack_ms.clone(),
        initial_sync_ms: ms(initial_sync),
        cp_rss_idle_mib: mib(idle.rss_kib),
        cp_rss_mib: mib(after.0.peak_kib),
        cp_rss_end_mib: mib(after.0.rss_kib),
        cp_cpu_ms_per_change: per_change(after.0.cpu_ticks - before.0.cpu_ticks),
        cp_cpu_initial_sync_ms: clk.ms(synced_usage.cpu_ticks - idle.cpu_ticks),
        bench_cpu_ms_per_change: per_change(after.1.cpu_ticks - before.1.cpu_ticks),
        clk_tck: clk.per_second,
        clk_tck_assumed: clk.assumed,
        snapshot_bytes_per_proxy: bytes_by_type.values().sum(),
        snapshot_bytes_by_type: bytes_by_type,
        snapshot_resources_by_type: held
            .types
            .iter()
            .map(|(t, s)| (t.short().to_owned(), s.resources))
            .collect(),
        change_bytes_per_proxy: changes.bytes as f64 / per_proxy_change,
        change_pushes_per_proxy: changes
            .pushes
            .iter()
            .map(|(t, n)| (t.short().to_owned(), *n as f64 / per_proxy_change))
            .collect(),
    })
}

/// What the change phase observed.
struct ChangeStats {
    ack_ms: Vec<f64>,
    first_ack_ms: Vec<f64>,
    /// Responses pushed to all proxies over the phase, by type.
    pushes: BTreeMap<TypeUrl, u64>,
    /// Resource bytes pushed to all proxies over the phase.
    bytes: u64,
}

async fn run_changes(
    args: &Args,
    mesh: &mut MeshConfig,
    config_dir: &Path,
    tracker: &Tracker,
) -> anyhow::Result<ChangeStats> {
    let start = tracker.totals();
    let timeout = Duration::from_secs(args.change_timeout_secs);
    let mut stats = ChangeStats {
        ack_ms: Vec::new(),
        first_ack_ms: Vec::new(),
        pushes: BTreeMap::new(),
        bytes: 0,
    };
    for change in 0..args.changes {
        let before: Vec<Option<String>> = tracker
            .lock()
            .iter()
            .map(|p| p.version(TypeUrl::ClusterLoadAssignment))
            .collect();
        let written = Instant::now();
        mesh.change(change, config_dir)?;
        let (first, last) = tracker
            .wait(written + timeout, |proxies| acked(proxies, &before))
            .await
            .map_err(|done| {
                anyhow!(
                    "change {change}: only {done} of {} proxies ACKed new endpoints within {}s",
                    args.proxies,
                    args.change_timeout_secs
                )
            })?;
        stats.ack_ms.push(ms(last - written));
        stats.first_ack_ms.push(ms(first - written));
        // The gap also lets the change's trailing pushes land inside its own window.
        tokio::time::sleep_until(written + Duration::from_millis(args.gap_ms)).await;
    }
    for (type_url, (pushes, bytes)) in tracker.totals() {
        let (pushes0, bytes0) = start.get(&type_url).copied().unwrap_or_default();
        if pushes > pushes0 {
            stats.pushes.insert(type_url, pushes - pushes0);
        }
        stats.bytes += bytes - bytes0;
    }
    Ok(stats)
}

/// Every proxy holds every type it subscribes to, and all hold the same endpoints. The proxy
/// that registered last got only snapshots made after everyone registered, so equal EDS
/// versions mean the final one. Returns the last apply's instant, or how many proxies are done.
fn synced(proxies: &[ProxyState]) -> Result<Instant, usize> {
    let required = [
        TypeUrl::Listener,
        TypeUrl::RouteConfiguration,
        TypeUrl::Cluster,
        TypeUrl::ClusterLoadAssignment,
    ];
    let complete = |p: &ProxyState| {
        required.iter().all(|t| p.types.contains_key(t))
            && (!p.wants_secrets || p.types.contains_key(&TypeUrl::Secret))
    };
    let done = proxies.iter().filter(|p| complete(p)).count();
    if done < proxies.len() {
        return Err(done);
    }
    let eds = proxies[0].version(TypeUrl::ClusterLoadAssignment);
    let converged = proxies
        .iter()
        .filter(|p| p.version(TypeUrl::ClusterLoadAssignment) == eds)
        .count();
    if converged < proxies.len() {
        return Err(converged);
    }
    let last = proxies
        .iter()
        .flat_map(|p| p.types.values().map(|s| s.at))
        .max();
    Ok(last.unwrap_or_else(Instant::now))
}

/// Every proxy applied an EDS version other than `before`: the first and last such apply.
fn acked(proxies: &[ProxyState], before: &[Option<String>]) -> Result<(Instant, Instant), usize> {
    let applied: Vec<Instant> = proxies
        .iter()
        .zip(before)
        .filter_map(|(p, before)| {
            let eds = p.types.get(&TypeUrl::ClusterLoadAssignment)?;
            (Some(&eds.version) != before.as_ref()).then_some(eds.at)
        })
        .collect();
    match (applied.iter().min(), applied.iter().max()) {
        (Some(first), Some(last)) if applied.len() == proxies.len() => Ok((*first, *last)),
        _ => Err(applied.len()),
    }
}

/// Proxy 0's endpoints must be every static endpoint plus every proxy: proof that each
/// simulated proxy really receives the whole mesh.
fn check_endpoints(held: &ProxyState, mesh: &MeshConfig, proxies: usize) -> anyhow::Result<()> {
    let mut assignments = 0;
    let mut endpoints = 0;
    for any in &held.eds {
        let cla = ClusterLoadAssignment::decode(&*any.value).context("decoding EDS")?;
        assignments += 1;
        endpoints += cla
            .endpoints
            .iter()
            .map(|l| l.lb_endpoints.len())
            .sum::<usize>();
    }
    let expected = mesh.endpoint_count() + proxies;
    if assignments != mesh.services || endpoints != expected {
        bail!(
            "proxy 0 holds {assignments} assignments with {endpoints} endpoints; expected {} with {expected}",
            mesh.services
        );
    }
    Ok(())
}

/// The generated Services: each one's static endpoints, plus the one the last change to it
/// added.
#[derive(Debug)]
struct MeshConfig {
    services: usize,
    extra: BTreeMap<usize, SocketAddrV4>,
}

impl MeshConfig {
    fn name(service: usize) -> String {
        format!("svc-{service:05}")
    }

    fn endpoints(&self, service: usize) -> Vec<SocketAddrV4> {
        let first = service * ENDPOINTS_PER_SERVICE;
        (first..first + ENDPOINTS_PER_SERVICE)
            .map(|n| numbered(0, n))
            .chain(self.extra.get(&service).copied())
            .collect()
    }

    fn endpoint_count(&self) -> usize {
        self.services * ENDPOINTS_PER_SERVICE + self.extra.len()
    }

    fn yaml(&self, service: usize) -> String {
        let mut out = format!(
            "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata:\n  name: {}\nspec:\n  \
             ports:\n    - name: http\n      port: {SERVICE_PORT}\n      protocol: HTTP\n  \
             endpoints:\n",
            Self::name(service)
        );
        for e in self.endpoints(service) {
            let _ = writeln!(out, "    - address: {e}");
        }
        out
    }

    fn write(&self, dir: &Path, service: usize) -> anyhow::Result<()> {
        let path = dir.join(format!("{}.yaml", Self::name(service)));
        // Synchronous on purpose: the change's clock starts right before this write.
        std::fs::write(&path, self.yaml(service))
            .with_context(|| format!("writing {}", path.display()))
    }

    fn write_all(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        (0..self.services).try_for_each(|s| self.write(dir, s))
    }

    /// Change `n`: one service gets a new endpoint (replacing the one an earlier change gave
    /// it), so exactly one ClusterLoadAssignment differs. Returns the service.
    fn change(&mut self, n: usize, dir: &Path) -> anyhow::Result<usize> {
        let service = n * CHANGE_STRIDE % self.services;
        self.extra.insert(service, numbered(1, n));
        self.write(dir, service)?;
        Ok(service)
    }
}

/// Address `n` (below 65536, checked by [`validate`]) of 127.`block`.0.0/16, port 8080.
fn numbered(block: u8, n: usize) -> SocketAddrV4 {
    let ip = Ipv4Addr::new(127, block, (n >> 8) as u8, n as u8);
    SocketAddrV4::new(ip, SERVICE_PORT)
}

/// Proxy `i`: a sidecar of one declared service with an HTTP-proxy listener, so its config
/// covers every service (the worst case, as with Istio's default sidecar scope). It holds no
/// join token, so the control plane's CA is never asked.
fn proxy_meta(i: usize, services: usize) -> NodeMeta {
    let port = |base: usize| u16::try_from(base + i).unwrap_or(u16::MAX);
    NodeMeta {
        service: MeshConfig::name(i % services),
        namespace: "default".to_owned(),
        labels: BTreeMap::new(),
        app_port: SERVICE_PORT,
        inbound_port: port(INBOUND_PORT_BASE),
        ip: "127.0.0.1".to_owned(),
        advertise: None,
        upstreams: Vec::new(),
        http_proxy_port: Some(port(HTTP_PROXY_PORT_BASE)),
        locality: None,
        // Anything else at its default: no join token, so no workload certificate.
        ..NodeMeta::default()
    }
}

/// What every simulated proxy has applied, shared by their handlers and the measuring task.
struct Tracker {
    proxies: Mutex<Vec<ProxyState>>,
    applied: Notify,
}

/// One simulated proxy's view.
#[derive(Debug, Clone, Default)]
struct ProxyState {
    types: BTreeMap<TypeUrl, TypeState>,
    /// Its listeners or clusters name an SDS secret, so sync waits for SDS too.
    wants_secrets: bool,
    /// The last EDS resources (proxy 0 only, for [`check_endpoints`]).
    eds: Vec<Any>,
}

#[derive(Debug, Clone)]
struct TypeState {
    version: String,
    at: Instant,
    /// Encoded size and count of the resources of the last response.
    bytes: u64,
    resources: usize,
    /// Responses and resource bytes received since the stream opened.
    pushes: u64,
    bytes_total: u64,
}

impl ProxyState {
    fn version(&self, type_url: TypeUrl) -> Option<String> {
        self.types.get(&type_url).map(|s| s.version.clone())
    }
}

impl Tracker {
    fn new(proxies: usize) -> Tracker {
        Tracker {
            proxies: Mutex::new(vec![ProxyState::default(); proxies]),
            applied: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<ProxyState>> {
        // Updates are single assignments, so a poisoned lock still holds consistent data.
        self.proxies.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(
        &self,
        index: usize,
        type_url: TypeUrl,
        version: &str,
        resources: &[Any],
        wants_secrets: bool,
    ) {
        let bytes: u64 = resources.iter().map(|r| r.encoded_len() as u64).sum();
        let at = Instant::now();
        {
            let mut proxies = self.lock();
            let proxy = &mut proxies[index];
            proxy.wants_secrets = wants_secrets;
            if index == 0 && type_url == TypeUrl::ClusterLoadAssignment {
                proxy.eds = resources.to_vec();
            }
            let (pushes, bytes_total) = proxy
                .types
                .get(&type_url)
                .map_or((0, 0), |s| (s.pushes, s.bytes_total));
            proxy.types.insert(
                type_url,
                TypeState {
                    version: version.to_owned(),
                    at,
                    bytes,
                    resources: resources.len(),
                    pushes: pushes + 1,
                    bytes_total: bytes_total + bytes,
                },
            );
        }
        self.applied.notify_one();
    }

    /// Responses and bytes received by all proxies so far, by type.
    fn totals(&self) -> BTreeMap<TypeUrl, (u64, u64)> {
        let mut out = BTreeMap::<TypeUrl, (u64, u64)>::new();
        for (type_url, s) in self.lock().iter().flat_map(|p| &p.types) {
            let entry = out.entry(*type_url).or_default();
            entry.0 += s.pushes;
            entry.1 += s.bytes_total;
        }
        out
    }

    /// Re-checks after every apply until `check` succeeds or `deadline` passes; the error is
    /// the last progress count `check` reported.
    async fn wait<T>(
        &self,
        deadline: Instant,
        mut check: impl FnMut(&[ProxyState]) -> Result<T, usize>,
    ) -> Result<T, usize> {
        loop {
            let progress = {
                let proxies = self.lock();
                match check(&proxies) {
                    Ok(done) => return Ok(done),
                    Err(progress) => progress,
                }
            };
            // notify_one keeps a permit when nobody waits, so an apply between the check and
            // this wait is not lost.
            if tokio::time::timeout_at(deadline, self.applied.notified())
                .await
                .is_err()
            {
                return Err(progress);
            }
        }
    }
}

/// A simulated proxy: accepts everything, subscribes to the route configs, endpoints and
/// secrets its listeners and clusters name (as the real proxy does), and reports to the
/// tracker. Its instant of apply is when the ACK is queued.
struct SimProxy {
    index: usize,
    tracker: Arc<Tracker>,
    routes: BTreeSet<String>,
    endpoints: BTreeSet<String>,
    listener_secrets: BTreeSet<String>,
    cluster_secrets: BTreeSet<String>,
}

impl SimProxy {
    fn new(index: usize, tracker: Arc<Tracker>) -> SimProxy {
        SimProxy {
            index,
            tracker,
            routes: BTreeSet::new(),
            endpoints: BTreeSet::new(),
            listener_secrets: BTreeSet::new(),
            cluster_secrets: BTreeSet::new(),
        }
    }

    fn on_listeners(&mut self, resources: &[Any]) -> Result<(), String> {
        self.routes.clear();
        self.listener_secrets.clear();
        for listener in decode_all::<Listener>(resources)? {
            for chain in listener
                .filter_chains
                .iter()
                .chain(&listener.default_filter_chain)
            {
                for f in &chain.filters {
                    if let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type
                        && any.type_url == HttpConnectionManager::type_url()
                    {
                        let hcm = HttpConnectionManager::decode(&*any.value)
                            .map_err(|e| format!("listener {:?}: {e}", listener.name))?;
                        if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                            self.routes.insert(rds.route_config_name);
                        }
                    }
                }
                if let Some(socket) = &chain.transport_socket {
                    ads_secrets(socket, &mut self.listener_secrets);
                }
            }
        }
        Ok(())
    }

    fn on_clusters(&mut self, resources: &[Any]) -> Result<(), String> {
        self.endpoints.clear();
        self.cluster_secrets.clear();
        for cluster in decode_all::<Cluster>(resources)? {
            let eds = ClusterDiscoveryType::Type(DiscoveryType::Eds as i32);
            if cluster.cluster_discovery_type == Some(eds) {
                let service = cluster.eds_cluster_config.map(|c| c.service_name);
                let name = service.filter(|s| !s.is_empty()).unwrap_or(cluster.name);
                self.endpoints.insert(name);
            }
            let sockets = cluster
                .transport_socket_matches
                .iter()
                .filter_map(|m| m.transport_socket.as_ref());
            for socket in sockets.chain(&cluster.transport_socket) {
                ads_secrets(socket, &mut self.cluster_secrets);
            }
        }
        Ok(())
    }

    fn secrets(&self) -> BTreeSet<String> {
        self.listener_secrets
            .union(&self.cluster_secrets)
            .cloned()
            .collect()
    }
}

impl Handler for SimProxy {
    fn apply(&mut self, type_url: TypeUrl, version: &str, resources: &[Any]) -> Result<(), String> {
        match type_url {
            TypeUrl::Listener => self.on_listeners(resources)?,
            TypeUrl::Cluster => self.on_clusters(resources)?,
            // Endpoints, routes and secrets are only counted: decoding them would spend the
            // CPU the control plane is measured on.
            TypeUrl::RouteConfiguration | TypeUrl::ClusterLoadAssignment | TypeUrl::Secret => {}
        }
        let wants_secrets = !self.secrets().is_empty();
        self.tracker
            .record(self.index, type_url, version, resources, wants_secrets);
        Ok(())
    }

    fn wanted(&self, type_url: TypeUrl) -> Vec<String> {
        match type_url {
            TypeUrl::RouteConfiguration => self.routes.iter().cloned().collect(),
            TypeUrl::ClusterLoadAssignment => self.endpoints.iter().cloned().collect(),
            TypeUrl::Secret => self.secrets().into_iter().collect(),
            TypeUrl::Listener | TypeUrl::Cluster => Vec::new(),
        }
    }
}

fn decode_all<M: Message + Default>(resources: &[Any]) -> Result<Vec<M>, String> {
    resources
        .iter()
        .map(|any| M::decode(&*any.value).map_err(|e| format!("{}: {e}", any.type_url)))
        .collect()
}

/// Names of the SDS secrets over ADS (the trust bundle) a TLS transport socket validates with;
/// certificates come from the proxy's own agent and are not subscribed.
fn ads_secrets(socket: &TransportSocket, out: &mut BTreeSet<String>) {
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
        return;
    };
    let common: Option<CommonTlsContext> = if any.type_url == DownstreamTlsContext::type_url() {
        DownstreamTlsContext::decode(&*any.value)
            .ok()
            .and_then(|c| c.common_tls_context)
    } else if any.type_url == UpstreamTlsContext::type_url() {
        UpstreamTlsContext::decode(&*any.value)
            .ok()
            .and_then(|c| c.common_tls_context)
    } else {
        None
    };
    let sds: Option<SdsSecretConfig> = match common.and_then(|c| c.validation_context_type) {
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => Some(s),
        Some(ValidationContextType::CombinedValidationContext(c)) => {
            c.validation_context_sds_secret_config
        }
        _ => None,
    };
    if let Some(s) = sds
        && matches!(
            s.sds_config.and_then(|c| c.config_source_specifier),
            Some(ConfigSourceSpecifier::Ads(_))
        )
    {
        out.insert(s.name);
    }
}

/// The `trellis control` process under test; killed by PID and reaped when dropped.
struct ControlProcess {
    child: Child,
    log: PathBuf,
}

impl ControlProcess {
    /// Starts it on free loopback ports and waits until it reports its xDS address (it loads
    /// the config dir before that).
    async fn start(
        trellis: &Path,
        config_dir: &Path,
        data_dir: &Path,
        log: &Path,
    ) -> anyhow::Result<(ControlProcess, SocketAddr)> {
        let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(trellis)
            .args(["--log", "warn", "control", "--config-dir"])
            .arg(config_dir)
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--xds-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--warmup",
                "0s",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it: cargo build --release --bin trellis)",
                    trellis.display()
                )
            })?;
        let stdout = child.stdout.take();
        let process = ControlProcess {
            child,
            log: log.to_owned(),
        };
        let stdout = stdout.context("trellis control: no stdout pipe")?;
        let (tx, rx) = oneshot::channel();
        std::thread::spawn(move || report_xds_addr(stdout, tx));
        match tokio::time::timeout(START_TIMEOUT, rx).await {
            Ok(Ok(addr)) => Ok((process, addr)),
            Ok(Err(_)) => bail!(
                "trellis control exited before serving xDS:\n{}",
                process.log_tail()
            ),
            Err(_) => bail!(
                "trellis control did not report its xDS address within {}s:\n{}",
                START_TIMEOUT.as_secs(),
                process.log_tail()
            ),
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the control plane's stdout to its end (so it never blocks on a full pipe), sending
/// the xDS address from its start-up line.
fn report_xds_addr(stdout: ChildStdout, tx: oneshot::Sender<SocketAddr>) {
    let mut tx = Some(tx);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(addr) = parse_xds_addr(&line)
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(addr);
        }
    }
}

/// `trellis control: xds on 127.0.0.1:PORT, admin on http://…` → the xDS address.
fn parse_xds_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("trellis control: xds on ")?;
    rest.split(',').next()?.trim().parse().ok()
}

/// Memory and CPU of one process, from /proc.
#[derive(Debug, Clone, Copy)]
struct Usage {
    rss_kib: u64,
    peak_kib: u64,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
}

impl Usage {
    /// `pid` is a PID or `self`.
    fn read(pid: &str) -> anyhow::Result<Usage> {
        let read = |file: &str| {
            let path = format!("/proc/{pid}/{file}");
            std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))
        };
        let (status, stat) = (read("status")?, read("stat")?);
        let parsed = status_kib(&status, "VmRSS")
            .zip(status_kib(&status, "VmHWM"))
            .zip(stat_ticks(&stat));
        let ((rss_kib, peak_kib), cpu_ticks) =
            parsed.with_context(|| format!("parsing /proc/{pid}/status and stat"))?;
        Ok(Usage {
            rss_kib,
            peak_kib,
            cpu_ticks,
        })
    }
}

/// A `Key:   1234 kB` line of /proc/PID/status.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.split(':').next() == Some(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime (fields 14 and 15) of /proc/PID/stat; the command name (field 2) may hold
/// spaces and parentheses, so fields are counted from its closing parenthesis.
fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second of /proc times.
#[derive(Debug, Clone, Copy)]
struct ClockTicks {
    per_second: u64,
    assumed: bool,
}

impl ClockTicks {
    fn ms(self, ticks: u64) -> f64 {
        ticks as f64 * 1000.0 / self.per_second as f64
    }
}

/// `getconf CLK_TCK`, else 100 (USER_HZ on every mainstream Linux), flagged as assumed.
fn clock_ticks() -> ClockTicks {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    let parsed = out
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0);
    match parsed {
        Some(per_second) => ClockTicks {
            per_second,
            assumed: false,
        },
        None => ClockTicks {
            per_second: 100,
            assumed: true,
        },
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of `samples` in any order; 0 when empty.
fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    match sorted.len() {
        0 => 0.0,
        n => sorted[rank.clamp(1, n) - 1],
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn write_results(dir: &Path, results: &[ScalePoint]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("control.json");
    let json = serde_json::to_string_pretty(results)?;
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))
}

/// The human-readable summary: one row per factor, then the target verdict.
fn table(results: &[ScalePoint]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6} {:>8} {:>9} {:>7} | {:>9} | {:>27} | {:>19} | {:>9} | {:>20} | {:>9} | {:>11} | {:>10} | pushes/proxy/change",
        "factor",
        "services",
        "endpoints",
        "proxies",
        "sync ms",
        "ack p50/p99/max ms (raw)",
        "-debounce p50/p99",
        "first p50",
        "RSS idle/peak/end MiB",
        "CPU/chg",
        "KiB/proxy",
        "KiB/chg/px"
    );
    for p in results {
        let pushes: Vec<String> = p
            .change_pushes_per_proxy
            .iter()
            .map(|(t, n)| format!("{t}={n:.2}"))
            .collect();
        let _ = writeln!(
            out,
            "{:>6} {:>8} {:>9} {:>7} | {:>9.0} | {:>8.1} {:>8.1} {:>9.1} | {:>9.1} {:>9.1} | {:>9.1} | {:>6.1} {:>6.1} {:>6.1} | {:>6.1} ms | {:>11.1} | {:>10.1} | {}",
            p.factor,
            p.services,
            p.endpoints,
            p.proxies,
            p.initial_sync_ms,
            p.ack_p50_ms,
            p.ack_p99_ms,
            p.ack_max_ms,
            p.ack_p50_minus_debounce_ms,
            p.ack_p99_minus_debounce_ms,
            p.first_ack_p50_ms,
            p.cp_rss_idle_mib,
            p.cp_rss_mib,
            p.cp_rss_end_mib,
            p.cp_cpu_ms_per_change,
            p.snapshot_bytes_per_proxy as f64 / 1024.0,
            p.change_bytes_per_proxy / 1024.0,
            pushes.join(" ")
        );
    }
    let clk = results.first().map(|p| (p.clk_tck, p.clk_tck_assumed));
    if let Some((ticks, assumed)) = clk {
        let how = if assumed {
            "assumed"
        } else {
            "getconf CLK_TCK"
        };
        let _ = writeln!(
            out,
            "CPU from /proc/PID/stat at {ticks} ticks/s ({how}); debounce {} ms",
            ms(CONTROL_DEBOUNCE)
        );
    }
    for p in results.iter().filter(|p| p.endpoints >= 10_000) {
        let verdict = if p.ack_p99_ms <= 200.0 {
            "met"
        } else {
            "missed"
        };
        let _ = writeln!(
            out,
            "target (p99 <= 200 ms to {} ACKs at {} endpoints): {verdict}: p99 {:.1} ms raw, {:.1} ms without the debounce",
            p.proxies, p.endpoints, p.ack_p99_ms, p.ack_p99_minus_debounce_ms
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&samples, 50.0), 50.0);
        assert_eq!(percentile(&samples, 99.0), 99.0);
        assert_eq!(percentile(&samples, 100.0), 100.0);
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&ten, 99.0), 10.0, "p99 of 10 samples is the max");
        assert_eq!(percentile(&ten, 50.0), 5.0);
        assert_eq!(percentile(&[7.0], 50.0), 7.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
    }

    #[test]
    fn endpoints_are_distinct_loopback_addresses() {
        let mesh = MeshConfig {
            services: BASE_SERVICES * MAX_FACTOR as usize,
            extra: BTreeMap::new(),
        };
        let all: BTreeSet<SocketAddrV4> =
            (0..mesh.services).flat_map(|s| mesh.endpoints(s)).collect();
        assert_eq!(all.len(), mesh.endpoint_count());
        assert!(all.iter().all(|a| a.ip().octets()[..2] == [127, 0]));
    }

    #[test]
    fn service_yaml_lists_its_endpoints() {
        let mesh = MeshConfig {
            services: 3,
            extra: BTreeMap::new(),
        };
        let yaml = mesh.yaml(2);
        assert!(yaml.starts_with("apiVersion: trellis.dev/v1alpha1\nkind: Service\n"));
        assert!(yaml.contains("  name: svc-00002\n"));
        assert!(yaml.contains("      port: 8080\n      protocol: HTTP\n"));
        assert!(yaml.contains("    - address: 127.0.0.20:8080\n"));
        assert!(yaml.ends_with("    - address: 127.0.0.29:8080\n"));
        assert_eq!(yaml.matches("- address:").count(), ENDPOINTS_PER_SERVICE);
    }

    #[test]
    fn a_change_replaces_the_endpoint_an_earlier_one_added() {
        let dir = tempfile::tempdir().unwrap();
        let mut mesh = MeshConfig {
            services: 2,
            extra: BTreeMap::new(),
        };
        let first = mesh.change(0, dir.path()).unwrap();
        assert_eq!(mesh.change(2, dir.path()).unwrap(), first);
        assert_eq!(mesh.endpoint_count(), 2 * ENDPOINTS_PER_SERVICE + 1);
        let written = std::fs::read_to_string(dir.path().join("svc-00000.yaml")).unwrap();
        assert!(written.contains("127.1.0.2:8080") && !written.contains("127.1.0.0:8080"));
    }

    #[test]
    fn reads_proc_status_and_stat() {
        let status = "Name:\ttrellis\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(20480));
        assert_eq!(status_kib(status, "VmRSS"), Some(10240));
        assert_eq!(status_kib(status, "VmSwap"), None);
        let stat = "42 (tokio (rt) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(stat_ticks(stat), Some(325));
        let me = Usage::read("self").unwrap();
        assert!(me.peak_kib >= me.rss_kib && me.rss_kib > 0);
    }

    #[test]
    fn parses_the_start_up_line() {
        let line = "trellis control: xds on 127.0.0.1:41234, admin on http://127.0.0.1:41235";
        assert_eq!(
            parse_xds_addr(line),
            Some(SocketAddr::from(([127, 0, 0, 1], 41234)))
        );
        assert_eq!(parse_xds_addr("something else"), None);
    }
}

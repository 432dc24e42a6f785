//! `trellis-bench control`: control-plane scale. Runs `trellis control` on generated Services,
//! holds simulated proxies on ADS streams, rewrites one Service file at a time and times the
//! push until every proxy has ACKed it; records the control plane's RSS and CPU per scale factor.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use trellis_xds::TypeUrl;
use trellis_xds::client::ClientOptions;

use crate::procs::{ClockTicks, Usage, clock_ticks};
use mesh::{ENDPOINTS_PER_SERVICE, MeshConfig, check_endpoints, proxy_meta};
use process::ControlProcess;
use sim::{SimProxy, Tracker, acked, synced};

mod mesh;
mod process;
mod sim;

/// Services at factor 1; factor F declares F × this many.
const BASE_SERVICES: usize = 100;
/// The control plane's file-watch quiet period: `DEBOUNCE` in crates/trellis-control/src/files.rs,
/// private there and copied by hand (change both together). Every measured push includes it.
const CONTROL_DEBOUNCE: Duration = Duration::from_millis(50);
/// Static endpoints are numbered into 127.0.0.0/16, so at most 65536 of them.
const MAX_FACTOR: u32 = 65;
/// Change endpoints are numbered into 127.1.0.0/16; proxies' ports start at 20000 and 40000.
const MAX_CHANGES: usize = 65_536;
const MAX_PROXIES: usize = 20_000;

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
    let mut mesh = MeshConfig::new(services);
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
    let me = std::process::id();
    let idle = Usage::of(pid)?;
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
    let synced_usage = Usage::of(pid)?;
    // Lets trailing LDS/RDS pushes of the sync land before the first change.
    tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;

    let before = (Usage::of(pid)?, Usage::of(me)?);
    let changes = run_changes(args, mesh, config_dir, &tracker).await?;
    let after = (Usage::of(pid)?, Usage::of(me)?);

    let _ = stop.send(true);
    let join_deadline = Instant::now() + Duration::from_secs(10);
    for client in clients {
        let _ = tokio::time::timeout_at(join_deadline, client).await;
    }
    let held = tracker.lock()[0].clone();
    check_endpoints(&held, mesh, args.proxies)?;

    let per_change = |cpu: Duration| ms(cpu) / args.changes as f64;
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
        cp_rss_mib: mib(after.0.peak_rss_kib),
        cp_rss_end_mib: mib(after.0.rss_kib),
        cp_cpu_ms_per_change: per_change(after.0.cpu - before.0.cpu),
        cp_cpu_initial_sync_ms: ms(synced_usage.cpu - idle.cpu),
        bench_cpu_ms_per_change: per_change(after.1.cpu - before.1.cpu),
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
        // The target reports the debounce apart: it is judged on the time after it.
        let verdict = if p.ack_p99_minus_debounce_ms <= 200.0 {
            "met"
        } else {
            "missed"
        };
        let _ = writeln!(
            out,
            "target (p99 <= 200 ms to {} ACKs at {} endpoints, debounce apart): {verdict}: p99 {:.1} ms after the debounce, {:.1} ms raw",
            p.proxies, p.endpoints, p.ack_p99_minus_debounce_ms, p.ack_p99_ms
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
}

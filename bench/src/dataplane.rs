//! `trellis-bench dataplane`: every path of [`Kind`], side by side, one after another.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::load::{self, Phases, Proto};
use crate::pair::{Env, Kind, Pair, Programs};
use crate::procs::Usage;

/// `trellis-bench dataplane` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Paths to measure (default: all).
    #[arg(long, value_delimiter = ',')]
    pub(crate) kinds: Vec<Kind>,
    /// HTTP versions (default: both).
    #[arg(long, value_delimiter = ',')]
    pub(crate) protos: Vec<Proto>,
    /// Fixed request rates, requests per second.
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000,8000")]
    pub(crate) rates: Vec<u32>,
    /// Client connections for fixed-rate runs.
    #[arg(long, default_value_t = 16)]
    pub(crate) connections: usize,
    /// Client connections for the maximum-throughput run.
    #[arg(long, default_value_t = 64)]
    pub(crate) max_connections: usize,
    /// Measured seconds per run (after a warm-up of a fifth of it, at least 1 s).
    #[arg(long, default_value_t = 10)]
    pub(crate) seconds: u64,
    /// Idle connections held open for the memory figures.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub(crate) idle: Vec<usize>,
    #[command(flatten)]
    pub(crate) programs: Programs,
    /// Where results (`dataplane.json`) and scratch files go.
    #[arg(long, default_value_os_t = crate::default_out_dir())]
    pub(crate) out_dir: PathBuf,
}

/// One fixed-rate run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RatePoint {
    /// Requests per second asked for.
    pub(crate) rate: u32,
    /// Requests per second completed.
    pub(crate) achieved: f64,
    /// Latency quantiles, µs.
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    /// Failed requests.
    pub(crate) errors: u64,
    /// CPU time of both hops per request, µs.
    pub(crate) cpu_us_per_request: f64,
}

/// The closed-loop run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MaxPoint {
    /// Requests per second sustained.
    pub(crate) rps: f64,
    /// Latency quantiles at that load, µs.
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    /// Failed requests.
    pub(crate) errors: u64,
    /// CPU time of both hops per request, µs.
    pub(crate) cpu_us_per_request: f64,
    /// CPU seconds per 10k requests, per hop (outbound, inbound).
    pub(crate) cpu_s_per_10k: Vec<f64>,
    /// Peak RSS per hop (outbound, inbound), KiB.
    pub(crate) peak_rss_kib: Vec<u64>,
}

/// Memory with idle connections open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IdlePoint {
    /// Connections held.
    pub(crate) connections: usize,
    /// Whether they are mutual-TLS connections straight to the inbound hop (else plaintext
    /// to the outbound hop).
    pub(crate) mtls: bool,
    /// RSS of the hop holding them, KiB.
    pub(crate) rss_kib: u64,
    /// RSS growth per connection over idle, KiB.
    pub(crate) kib_per_connection: f64,
}

/// Everything measured on one path and HTTP version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PairResult {
    /// The path.
    pub(crate) kind: Kind,
    /// HTTP version.
    pub(crate) proto: Proto,
    /// Outbound hop's time from start to its first routed response, ms.
    pub(crate) startup_ms: Option<f64>,
    /// RSS of each hop when idle (after one request), KiB.
    pub(crate) idle_rss_kib: Vec<u64>,
    /// Of which anonymous memory, KiB.
    #[serde(default)]
    pub(crate) idle_anon_kib: Vec<u64>,
    /// Fixed-rate runs.
    pub(crate) rates: Vec<RatePoint>,
    /// The closed-loop run.
    pub(crate) max: Option<MaxPoint>,
    /// Idle-connection memory.
    pub(crate) idle: Vec<IdlePoint>,
    /// Mutual-TLS handshakes (new connections with one request) per second into the inbound
    /// hop.
    pub(crate) handshakes_per_s: Option<f64>,
}

/// All results of a run, and where it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Results {
    /// `uname -srm` and the CPU model.
    pub(crate) machine: String,
    /// When (UTC, RFC 3339).
    pub(crate) date: String,
    /// Measured seconds per run.
    pub(crate) seconds: u64,
    /// Fixed-rate connections.
    pub(crate) connections: usize,
    /// Closed-loop connections.
    pub(crate) max_connections: usize,
    /// Per path and version.
    pub(crate) pairs: Vec<PairResult>,
}

pub(crate) fn main(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let failed = runtime.block_on(run(&args))?;
    println!(
        "results in {}",
        args.out_dir.join("dataplane.json").display()
    );
    match failed {
        0 => Ok(()),
        n => anyhow::bail!("{n} paths failed (see above); the others' results are saved"),
    }
}

/// Measures every path, saving the results after each; a path that fails is reported and
/// skipped. Returns how many failed.
async fn run(args: &Args) -> anyhow::Result<usize> {
    let kinds = if args.kinds.is_empty() {
        Kind::ALL.to_vec()
    } else {
        args.kinds.clone()
    };
    let protos = if args.protos.is_empty() {
        vec![Proto::H1, Proto::H2]
    } else {
        args.protos.clone()
    };
    let measure = Duration::from_secs(args.seconds.max(1));
    let phases = Phases {
        warmup: (measure / 5).max(Duration::from_secs(1)),
        measure,
    };
    let scratch = args.out_dir.join("scratch");
    let _ = std::fs::remove_dir_all(&scratch);
    let env = Env::start(scratch, &args.programs).await?;
    let mut results = Results {
        machine: machine(),
        date: command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        seconds: args.seconds,
        connections: args.connections,
        max_connections: args.max_connections,
        pairs: Vec::new(),
    };
    let path = args.out_dir.join("dataplane.json");
    let mut failed = 0;
    for &proto in &protos {
        for &kind in &kinds {
            eprintln!("== {} {proto}", kind.label());
            match measure_pair(&env, kind, proto, args, phases).await {
                Ok(result) => {
                    print_pair(&result);
                    results.pairs.push(result);
                    std::fs::write(&path, serde_json::to_string_pretty(&results)?)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                Err(e) => {
                    eprintln!("   FAILED: {e:#}");
                    failed += 1;
                }
            }
        }
    }
    Ok(failed)
}

async fn measure_pair(
    env: &Env,
    kind: Kind,
    proto: Proto,
    args: &Args,
    phases: Phases,
) -> anyhow::Result<PairResult> {
    let pair = Pair::start(env, kind, proto).await?;
    let idle_usage = usages(&pair);
    let mut rates = Vec::new();
    for &rate in &args.rates {
        let before = usages(&pair);
        let outcome = load::fixed_rate(&pair.entry, args.connections, rate, phases).await?;
        let cpu = cpu_delta(&before, &usages(&pair));
        rates.push(RatePoint {
            rate,
            achieved: outcome.rate(),
            p50_us: outcome.quantile_us(0.5),
            p99_us: outcome.quantile_us(0.99),
            p999_us: outcome.quantile_us(0.999),
            errors: outcome.errors,
            // The warm-up's requests burn CPU too: count them.
            cpu_us_per_request: per_request(cpu.iter().sum(), outcome.ok, phases),
        });
        report_errors(&outcome, kind);
    }
    let before = usages(&pair);
    let outcome = load::max_rate(&pair.entry, args.max_connections, phases).await?;
    let after = usages(&pair);
    report_errors(&outcome, kind);
    let cpu = cpu_delta(&before, &after);
    let max = MaxPoint {
        rps: outcome.rate(),
        p50_us: outcome.quantile_us(0.5),
        p99_us: outcome.quantile_us(0.99),
        errors: outcome.errors,
        cpu_us_per_request: per_request(cpu.iter().sum(), outcome.ok, phases),
        cpu_s_per_10k: cpu
            .iter()
            .map(|c| per_request(*c, outcome.ok, phases) * 10_000.0 / 1e6)
            .collect(),
        peak_rss_kib: after.iter().map(|u| u.peak_rss_kib).collect(),
    };
    let mut idle = Vec::new();
    let mut handshakes_per_s = None;
    if proto == Proto::H1 && !pair.hops.is_empty() {
        for &count in &args.idle {
            idle.push(idle_point(&pair, 0, &pair.entry, count, false).await?);
        }
        if let Some(inbound) = pair.inbound.as_ref().filter(|t| t.tls.is_some()) {
            if let Some(&count) = args.idle.iter().max() {
                idle.push(idle_point(&pair, 1, inbound, count, true).await?);
            }
            let outcome = load::connection_rate(inbound, 8, phases.measure / 2).await?;
            report_errors(&outcome, kind);
            handshakes_per_s = Some(outcome.rate());
        }
    }
    Ok(PairResult {
        kind,
        proto,
        startup_ms: pair.startup.map(|d| d.as_secs_f64() * 1e3),
        idle_rss_kib: idle_usage.iter().map(|u| u.rss_kib).collect(),
        idle_anon_kib: idle_usage.iter().map(|u| u.anon_kib).collect(),
        rates,
        max: Some(max),
        idle,
        handshakes_per_s,
    })
}

/// Holds `count` connections to `target`, served by hop `hop`, and reads that hop's RSS.
async fn idle_point(
    pair: &Pair,
    hop: usize,
    target: &load::Target,
    count: usize,
    mtls: bool,
) -> anyhow::Result<IdlePoint> {
    let count = count.min(pair.kind.max_connections());
    let base = pair.hops[hop].usage().rss_kib;
    let held = load::hold(target, count).await?;
    // Let the proxy finish the last requests and settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_kib = pair.hops[hop].usage().rss_kib;
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(IdlePoint {
        connections: count,
        mtls,
        rss_kib,
        kib_per_connection: rss_kib.saturating_sub(base) as f64 / count as f64,
    })
}

pub(crate) fn usages(pair: &Pair) -> Vec<Usage> {
    pair.hops.iter().map(|h| h.usage()).collect()
}

pub(crate) fn cpu_delta(before: &[Usage], after: &[Usage]) -> Vec<Duration> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| a.cpu.saturating_sub(b.cpu))
        .collect()
}

/// µs of `cpu` per request, counting the warm-up's requests (sent at the same rate).
pub(crate) fn per_request(cpu: Duration, measured_ok: u64, phases: Phases) -> f64 {
    let total_secs = (phases.warmup + phases.measure).as_secs_f64();
    let requests = measured_ok as f64 * total_secs / phases.measure.as_secs_f64();
    if requests == 0.0 {
        return 0.0;
    }
    cpu.as_secs_f64() * 1e6 / requests
}

pub(crate) fn report_errors(outcome: &load::Outcome, kind: Kind) {
    if outcome.errors > 0 {
        eprintln!(
            "   {}: {} errors, first: {}",
            kind.label(),
            outcome.errors,
            outcome.first_error.as_deref().unwrap_or("?")
        );
    }
}

fn print_pair(r: &PairResult) {
    for p in &r.rates {
        eprintln!(
            "   {:>5} rps: p50 {:>6} µs  p99 {:>6} µs  p99.9 {:>6} µs  cpu {:>6.1} µs/req  errors {}",
            p.rate, p.p50_us, p.p99_us, p.p999_us, p.cpu_us_per_request, p.errors
        );
    }
    if let Some(m) = &r.max {
        eprintln!(
            "   max {:>8.0} rps: p50 {} µs  p99 {} µs  cpu {:.1} µs/req  peak rss {:?} KiB",
            m.rps, m.p50_us, m.p99_us, m.cpu_us_per_request, m.peak_rss_kib
        );
    }
    for i in &r.idle {
        eprintln!(
            "   {} idle {} conns: rss {} KiB, {:.1} KiB/conn",
            i.connections,
            if i.mtls { "mTLS" } else { "plain" },
            i.rss_kib,
            i.kib_per_connection
        );
    }
    if let Some(h) = r.handshakes_per_s {
        eprintln!("   mTLS handshakes {h:.0}/s");
    }
    if let Some(s) = r.startup_ms {
        eprintln!(
            "   startup {s:.0} ms, idle rss {:?} KiB (anonymous {:?})",
            r.idle_rss_kib, r.idle_anon_kib
        );
    }
}

/// Kernel and CPU model.
pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    // Counted from /proc/cpuinfo: the benchmark itself runs pinned to one CPU.
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| info.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    format!("{}, {cpu}, {cpus} CPUs", command_output("uname", &["-srm"]))
}

pub(crate) fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

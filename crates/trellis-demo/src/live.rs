//! `trellis demo` end to end: start the mesh, print what runs where, drive load through the
//! load generator's sidecar and print live per-service request rate, success rate and p99 from
//! the sidecars' inbound metrics, until the duration ends or the caller stops it.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use trellis_proxy::{Direction, RouteStats, StatusClass};

use crate::mesh::{DemoMesh, Workload};
use crate::{DemoError, LoadGen, LoadStats, shutdown_channel};

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Load generator rate (requests per second to the frontend).
    pub rps: u32,
    /// Stop after this long; `None` runs until `stop` resolves.
    pub duration: Option<Duration>,
    /// Time between live stats lines.
    pub interval: Duration,
}

/// Totals when the demo ends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DemoSummary {
    /// Requests the load generator completed successfully.
    pub successes: u64,
    /// Requests that failed.
    pub failures: u64,
    /// Requests served by catalog v1 and v2, as their sidecars counted them.
    pub catalog_split: (u64, u64),
    /// Why the first failed request failed, if one did.
    pub first_failure: Option<String>,
}

/// Inbound request statistics of one workload, summed over its routes.
#[derive(Debug, Clone, Default)]
struct Totals {
    requests: u64,
    errors: u64,
    buckets: Vec<(f64, u64)>,
}

impl Totals {
    fn of(w: &Workload) -> Totals {
        let mut t = Totals::default();
        for s in w
            .proxy
            .stats()
            .iter()
            .filter(|s| s.direction == Direction::Inbound)
        {
            t.add(s);
        }
        t
    }

    fn add(&mut self, s: &RouteStats) {
        self.requests += s.total();
        self.errors += s.count(StatusClass::ServerError);
        if self.buckets.is_empty() {
            self.buckets = s.latency_buckets.clone();
        } else {
            for (mine, theirs) in self.buckets.iter_mut().zip(&s.latency_buckets) {
                mine.1 += theirs.1;
            }
        }
    }

    /// What happened between `earlier` and `self`.
    fn since(&self, earlier: &Totals) -> Totals {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, (b, c))| (*b, c - earlier.buckets.get(i).map_or(0, |e| e.1)))
            .collect();
        Totals {
            requests: self.requests - earlier.requests,
            errors: self.errors - earlier.errors,
            buckets,
        }
    }

    /// p99 in milliseconds: the upper bound of the bucket holding the 99th percentile.
    fn p99_ms(&self) -> Option<f64> {
        let total = self.buckets.last()?.1;
        let rank = (total as f64 * 0.99).ceil() as u64;
        self.buckets
            .iter()
            .find(|(_, c)| total > 0 && *c >= rank)
            .map(|(bound, _)| bound * 1000.0)
    }
}

/// Runs the demo, writing its live output to `out`.
pub async fn run_demo(
    opts: DemoOptions,
    out: &mut (dyn Write + Send),
    stop: impl Future<Output = ()>,
) -> Result<DemoSummary, DemoError> {
    let (trigger, signal) = shutdown_channel();
    let mesh = DemoMesh::start(&signal).await?;
    print_layout(&mesh, &opts, out)?;

    let target = mesh
        .frontend_via_loadgen()
        .ok_or_else(|| DemoError::NotReady("loadgen".to_owned(), Duration::ZERO))?;
    let load = LoadGen {
        duration: opts.duration,
        ..LoadGen::new(target, opts.rps)
    };
    let stats = Arc::new(LoadStats::default());
    let load_task = {
        let stats = stats.clone();
        let stop = signal.clone().wait();
        tokio::spawn(async move { load.run(&stats, stop).await })
    };

    writeln!(
        out,
        "\n{:>6}  {:<12} {:>8} {:>9} {:>9}",
        "TIME", "SERVICE", "RPS", "SUCCESS", "P99"
    )?;
    let started = tokio::time::Instant::now();
    let mut last: Vec<Totals> = mesh.workloads.iter().map(Totals::of).collect();
    let mut ticker = tokio::time::interval_at(started + opts.interval, opts.interval);
    tokio::pin!(stop);
    tokio::pin!(load_task);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now: Vec<Totals> = mesh.workloads.iter().map(Totals::of).collect();
                let elapsed = started.elapsed().as_secs();
                for ((w, now), before) in mesh.workloads.iter().zip(&now).zip(&last) {
                    if w.app.is_some() {
                        print_line(out, elapsed, w, &now.since(before), opts.interval)?;
                    }
                }
                last = now;
            }
            result = &mut load_task => {
                if let Ok(Err(e)) = result {
                    tracing::error!(error = %e, "load generator stopped");
                }
                break;
            }
            () = &mut stop => break,
        }
    }
    trigger.trigger();
    let split = |version: &str| {
        mesh.workloads
            .iter()
            .find(|w| w.service == "catalog" && w.version == version)
            .map_or(0, |w| Totals::of(w).requests)
    };
    let summary = DemoSummary {
        successes: stats.successes(),
        failures: stats.failures(),
        catalog_split: (split("v1"), split("v2")),
        first_failure: stats.first_failure().map(str::to_owned),
    };
    let (v1, v2) = summary.catalog_split;
    let share = |n: u64| 100.0 * n as f64 / (v1 + v2).max(1) as f64;
    writeln!(
        out,
        "\nsummary: {} requests ok, {} failed; catalog canary split v1 {:.1}% / v2 {:.1}%",
        summary.successes,
        summary.failures,
        share(v1),
        share(v2)
    )?;
    if let Some(error) = &summary.first_failure {
        writeln!(out, "first failure: {error}")?;
    }
    mesh.stop().await;
    Ok(summary)
}

fn print_layout(
    mesh: &DemoMesh,
    opts: &DemoOptions,
    out: &mut (dyn Write + Send),
) -> Result<(), DemoError> {
    writeln!(
        out,
        "trellis demo: control plane xds {} admin http://{}",
        mesh.control.xds_addr(),
        mesh.control.admin_addr()
    )?;
    writeln!(
        out,
        "dashboard: http://{}/ (service graph, golden signals, workloads, routes)",
        mesh.control.admin_addr()
    )?;
    writeln!(
        out,
        "{:<10} {:<8} {:<22} {:<22} ADMIN",
        "SERVICE", "VERSION", "APP", "SIDECAR"
    )?;
    for w in &mesh.workloads {
        let app = w.app.map_or("-".to_owned(), |a| a.to_string());
        writeln!(
            out,
            "{:<10} {:<8} {:<22} {:<22} http://{}",
            w.service,
            w.version,
            app,
            w.proxy.inbound_addr(),
            w.proxy.admin_addr()
        )?;
    }
    let rate = opts.rps;
    match opts.duration {
        Some(d) => writeln!(
            out,
            "load: {rate} rps to frontend for {d:?}; 90/10 canary catalog v1/v2"
        )?,
        None => writeln!(
            out,
            "load: {rate} rps to frontend until Ctrl-C; 90/10 canary catalog v1/v2"
        )?,
    }
    let mesh = mesh.control.control().config().resources.mesh_config();
    writeln!(
        out,
        "security: mTLS between every sidecar ({:?} inbound), SPIFFE IDs in {}; only frontend may call catalog",
        mesh.mtls.mode, mesh.trust_domain
    )?;
    Ok(())
}

fn print_line(
    out: &mut (dyn Write + Send),
    elapsed: u64,
    w: &Workload,
    window: &Totals,
    interval: Duration,
) -> Result<(), DemoError> {
    let name = format!("{} {}", w.service, w.version);
    let rps = window.requests as f64 / interval.as_secs_f64();
    let success = if window.requests == 0 {
        "-".to_owned()
    } else {
        format!(
            "{:.2}%",
            100.0 * (1.0 - window.errors as f64 / window.requests as f64)
        )
    };
    let p99 = window
        .p99_ms()
        .filter(|_| window.requests > 0)
        .map_or("-".to_owned(), |ms| format!("{ms:.1}ms"));
    writeln!(
        out,
        "{:>5}s  {name:<12} {rps:>8.1} {success:>9} {p99:>9}",
        elapsed
    )?;
    Ok(())
}

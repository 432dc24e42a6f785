//! `trellis-bench max`: maximum throughput and CPU per request of several paths, interleaved.
//! As in `latency`, every path of a protocol runs at once and each round gives each path a
//! short slice of closed-loop load, in an order that changes from round to round: a path's
//! ratio to another comes from slices seconds apart, not from runs minutes apart on a machine
//! whose neighbours come and go.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::dataplane::{command_output, cpu_delta, machine, per_request, report_errors, usages};
use crate::latency::slice_order;
use crate::load::{self, Phases, Proto};
use crate::pair::{Env, Kind, Pair, Programs};

/// Requests sent before each slice's measured part (fresh client connections warm up).
const SLICE_WARMUP: Duration = Duration::from_millis(500);

/// `trellis-bench max` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Paths to measure.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "trellis-mtls,haproxy-mtls,envoy-mtls"
    )]
    pub(crate) kinds: Vec<Kind>,
    /// HTTP versions, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "h1,h2")]
    pub(crate) protos: Vec<Proto>,
    /// Client connections, each sending back to back.
    #[arg(long, default_value_t = 64)]
    pub(crate) connections: usize,
    /// Rounds: each gives every path one slice. A multiple of the number of paths (twice it,
    /// when odd) balances the order; 12 is two such cycles of three paths, as six rounds on a
    /// noisy machine put the median ratio of one build anywhere between 0.91 and 1.11.
    #[arg(long, default_value_t = 12)]
    pub(crate) rounds: usize,
    /// Measured seconds per slice (after a warm-up of half a second).
    #[arg(long, default_value_t = 4)]
    pub(crate) seconds: u64,
    #[command(flatten)]
    pub(crate) programs: Programs,
    /// Where results (`max.json`) and scratch files go.
    #[arg(long, default_value_os_t = crate::default_out_dir())]
    pub(crate) out_dir: PathBuf,
}

/// One path over one protocol, every round.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MaxRounds {
    pub(crate) kind: Kind,
    pub(crate) proto: Proto,
    /// Each round's requests per second.
    pub(crate) round_rps: Vec<f64>,
    /// Each round's CPU time of both hops per request, µs (empty for the direct path).
    pub(crate) round_cpu_us: Vec<f64>,
    /// Failed requests, all rounds.
    pub(crate) errors: u64,
}

/// All results of a run, and where it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MaxResults {
    /// `uname -srm` and the CPU model.
    pub(crate) machine: String,
    /// When (UTC, RFC 3339).
    pub(crate) date: String,
    /// Rounds run.
    pub(crate) rounds: usize,
    /// Measured seconds per slice.
    pub(crate) seconds: u64,
    /// Client connections.
    pub(crate) connections: usize,
    /// Per path and protocol.
    pub(crate) points: Vec<MaxRounds>,
}

pub(crate) fn main(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.kinds.is_empty() && !args.protos.is_empty() && args.rounds > 0,
        "--kinds, --protos and --rounds must not be empty or zero"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&args))?;
    println!("results in {}", args.out_dir.join("max.json").display());
    Ok(())
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let scratch = args.out_dir.join("scratch-max");
    let _ = std::fs::remove_dir_all(&scratch);
    let env = Env::start(scratch, &args.programs).await?;
    let phases = Phases {
        warmup: SLICE_WARMUP,
        measure: Duration::from_secs(args.seconds.max(1)),
    };
    let mut results = MaxResults {
        machine: machine(),
        date: command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        rounds: args.rounds,
        seconds: args.seconds,
        connections: args.connections,
        points: Vec::new(),
    };
    let path = args.out_dir.join("max.json");
    for &proto in &args.protos {
        let mut pairs = Vec::with_capacity(args.kinds.len());
        for &kind in &args.kinds {
            let pair = Pair::start(&env, kind, proto)
                .await
                .with_context(|| format!("starting {} {proto}", kind.label()))?;
            pairs.push(pair);
        }
        let first = results.points.len();
        results
            .points
            .extend(args.kinds.iter().map(|&kind| MaxRounds {
                kind,
                proto,
                round_rps: Vec::with_capacity(args.rounds),
                round_cpu_us: Vec::with_capacity(args.rounds),
                errors: 0,
            }));
        for round in 0..args.rounds {
            let mut line = format!("{proto} round {}/{}:", round + 1, args.rounds);
            for k in slice_order(pairs.len(), round) {
                let pair = &pairs[k];
                let before = usages(pair);
                let outcome = load::max_rate(&pair.entry, args.connections, phases).await?;
                let cpu: Duration = cpu_delta(&before, &usages(pair)).iter().sum();
                report_errors(&outcome, pair.kind);
                let point = &mut results.points[first + k];
                point.round_rps.push(outcome.rate());
                point.errors += outcome.errors;
                line.push_str(&format!(" {} {:.0} rps", pair.kind.label(), outcome.rate()));
                if !pair.hops.is_empty() {
                    let us = per_request(cpu, outcome.ok, phases);
                    point.round_cpu_us.push(us);
                    line.push_str(&format!(" {us:.1} µs"));
                }
                line.push(';');
            }
            eprintln!("{line}");
            std::fs::write(&path, serde_json::to_string_pretty(&results)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

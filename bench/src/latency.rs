//! `trellis-bench latency`: fixed-rate latency of several paths, interleaved. Every path runs at
//! once (idle until its turn), and each round gives each path a short slice at each rate, in
//! an order that changes from round to round. A burst of noise on a shared machine then lands
//! on every path alike instead of on whichever ran at that minute, and each path's quantiles
//! come from all its slices together.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::dataplane::{command_output, machine};
use crate::load::{self, Outcome, Phases, Proto};
use crate::pair::{Env, Kind, Pair, Programs};

/// Requests sent before each slice's measured part (fresh client connections warm up).
const SLICE_WARMUP: Duration = Duration::from_millis(500);

/// `trellis-bench latency` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Paths to measure.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,trellis-mtls,haproxy-mtls,envoy-mtls"
    )]
    pub(crate) kinds: Vec<Kind>,
    /// HTTP version.
    #[arg(long, default_value = "h1")]
    pub(crate) proto: Proto,
    /// Fixed request rates, requests per second.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000")]
    pub(crate) rates: Vec<u32>,
    /// Client connections.
    #[arg(long, default_value_t = 16)]
    pub(crate) connections: usize,
    /// Rounds: each gives every path one slice at every rate. A multiple of the number of
    /// paths (twice it, when odd) balances the order (see [`slice_order`]).
    #[arg(long, default_value_t = 12)]
    pub(crate) rounds: usize,
    /// Measured seconds per slice (after a warm-up of half a second).
    #[arg(long, default_value_t = 3)]
    pub(crate) seconds: u64,
    #[command(flatten)]
    pub(crate) programs: Programs,
    /// Where results (`latency.json`) and scratch files go.
    #[arg(long, default_value_os_t = crate::default_out_dir())]
    pub(crate) out_dir: PathBuf,
}

/// One path at one rate, over every round.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LatencyPoint {
    /// The path.
    pub(crate) kind: Kind,
    /// Requests per second asked for.
    pub(crate) rate: u32,
    /// Quantiles over all slices' requests together, µs.
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    /// Failed requests.
    pub(crate) errors: u64,
    /// Each round's p50, µs (none in files from before it was recorded).
    #[serde(default)]
    pub(crate) round_p50_us: Vec<u64>,
    /// Each round's p99, µs.
    pub(crate) round_p99_us: Vec<u64>,
}

/// All results of a run, and where it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LatencyResults {
    /// `uname -srm` and the CPU model.
    pub(crate) machine: String,
    /// When (UTC, RFC 3339).
    pub(crate) date: String,
    /// HTTP version.
    pub(crate) proto: Proto,
    /// Rounds run.
    pub(crate) rounds: usize,
    /// Measured seconds per slice.
    pub(crate) seconds: u64,
    /// Client connections.
    pub(crate) connections: usize,
    /// Per path and rate.
    pub(crate) points: Vec<LatencyPoint>,
}

/// What the slices of one path at one rate add up to.
struct Merged {
    outcome: Option<Outcome>,
    round_p50_us: Vec<u64>,
    round_p99_us: Vec<u64>,
}

pub(crate) fn main(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.kinds.is_empty() && !args.rates.is_empty() && args.rounds > 0,
        "--kinds, --rates and --rounds must not be empty or zero"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&args))?;
    println!("results in {}", args.out_dir.join("latency.json").display());
    Ok(())
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let scratch = args.out_dir.join("scratch-latency");
    let _ = std::fs::remove_dir_all(&scratch);
    let env = Env::start(scratch, &args.programs).await?;
    let mut pairs = Vec::with_capacity(args.kinds.len());
    for &kind in &args.kinds {
        let pair = Pair::start(&env, kind, args.proto)
            .await
            .with_context(|| format!("starting {}", kind.label()))?;
        pairs.push(pair);
    }
    let phases = Phases {
        warmup: SLICE_WARMUP,
        measure: Duration::from_secs(args.seconds.max(1)),
    };
    let mut merged: Vec<Vec<Merged>> = args
        .rates
        .iter()
        .map(|_| {
            pairs
                .iter()
                .map(|_| Merged {
                    outcome: None,
                    round_p50_us: Vec::with_capacity(args.rounds),
                    round_p99_us: Vec::with_capacity(args.rounds),
                })
                .collect()
        })
        .collect();
    let path = args.out_dir.join("latency.json");
    for round in 0..args.rounds {
        for (r, &rate) in args.rates.iter().enumerate() {
            let mut line = format!(
                "round {}/{}, {rate} rps, p50 / p99:",
                round + 1,
                args.rounds
            );
            for k in slice_order(pairs.len(), round) {
                let outcome =
                    load::fixed_rate(&pairs[k].entry, args.connections, rate, phases).await?;
                let (p50, p99) = (outcome.quantile_us(0.5), outcome.quantile_us(0.99));
                line.push_str(&format!(" {} {p50} / {p99} µs;", pairs[k].kind.label()));
                let slot = &mut merged[r][k];
                slot.round_p50_us.push(p50);
                slot.round_p99_us.push(p99);
                match &mut slot.outcome {
                    Some(total) => total.append(outcome),
                    None => slot.outcome = Some(outcome),
                }
            }
            eprintln!("{line}");
        }
        let results = results(args, &pairs, &merged, round + 1);
        std::fs::write(&path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for point in &results(args, &pairs, &merged, args.rounds).points {
        eprintln!(
            "{:>16} {:>5} rps: p50 {:>6} µs  p99 {:>6} µs  p99.9 {:>6} µs  errors {}",
            point.kind.label(),
            point.rate,
            point.p50_us,
            point.p99_us,
            point.p999_us,
            point.errors
        );
    }
    Ok(())
}

/// The order of the `n` paths' slices in `round`: rows of a Williams design, in which over
/// `n` rounds (`2n` when `n` is odd) each path opens a round as often as any other and comes
/// right after each other path as often, so what a path leaves behind (a stall, a cold cache)
/// does not always land on the same one.
pub(crate) fn slice_order(n: usize, round: usize) -> Vec<usize> {
    let first = (0..n).map(|j| {
        if j % 2 == 1 {
            j.div_ceil(2)
        } else {
            (n - j / 2) % n
        }
    });
    let row = round % n;
    let mut order: Vec<usize> = first.map(|p| (p + row) % n).collect();
    if n % 2 == 1 && (round / n) % 2 == 1 {
        order.reverse();
    }
    order
}

fn results(args: &Args, pairs: &[Pair], merged: &[Vec<Merged>], rounds: usize) -> LatencyResults {
    let mut points = Vec::new();
    for (r, &rate) in args.rates.iter().enumerate() {
        for (k, pair) in pairs.iter().enumerate() {
            let slot = &merged[r][k];
            let Some(outcome) = &slot.outcome else {
                continue;
            };
            points.push(LatencyPoint {
                kind: pair.kind,
                rate,
                p50_us: outcome.quantile_us(0.5),
                p99_us: outcome.quantile_us(0.99),
                p999_us: outcome.quantile_us(0.999),
                errors: outcome.errors,
                round_p50_us: slot.round_p50_us.clone(),
                round_p99_us: slot.round_p99_us.clone(),
            });
        }
    }
    LatencyResults {
        machine: machine(),
        date: command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        proto: args.proto,
        rounds,
        seconds: args.seconds,
        connections: args.connections,
        points,
    }
}

#[cfg(test)]
mod tests {
    use super::slice_order;

    /// Over a balanced run, each path opens as many rounds as any other and follows each other
    /// path equally often.
    #[test]
    fn slice_orders_are_balanced() {
        for n in 1..=5 {
            let rounds = if n % 2 == 0 { n } else { 2 * n };
            let mut first = vec![0; n];
            let mut follows = vec![vec![0; n]; n];
            for round in 0..rounds {
                let order = slice_order(n, round);
                let mut sorted = order.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "n {n}: a permutation");
                first[order[0]] += 1;
                for pair in order.windows(2) {
                    follows[pair[0]][pair[1]] += 1;
                }
            }
            assert!(first.iter().all(|&f| f == rounds / n), "n {n}: {first:?}");
            for (a, row) in follows.iter().enumerate() {
                for (b, &count) in row.iter().enumerate() {
                    let expected = if a == b { 0 } else { rounds / n };
                    assert_eq!(count, expected, "n {n}: {b} after {a}");
                }
            }
        }
    }
}

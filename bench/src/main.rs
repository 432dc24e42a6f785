//! `trellis-bench`: measures the Trellis proxy beside direct, Envoy, nginx and HAProxy on a
//! two-hop sidecar path, and the control plane's push latency at scale. Run on demand through
//! `bench/run.sh`; never part of the test suite.

mod certs;
mod control;
mod dataplane;
mod latency;
mod load;
mod max;
mod pair;
mod peers;
mod procs;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "trellis-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Data plane: latency, throughput, CPU and memory of each two-hop path.
    Dataplane(dataplane::Args),
    /// Data plane latency of several paths at fixed rates, interleaved in rounds.
    Latency(latency::Args),
    /// Data plane maximum throughput and CPU per request of several paths, interleaved in rounds.
    Max(max::Args),
    /// Write the tables and charts of docs/benchmarks.md from the results.
    Report(report::Args),
    /// Control-plane scale: services/endpoints × simulated proxies on ADS streams.
    Control(control::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dataplane(args) => dataplane::main(args),
        Command::Latency(args) => latency::main(args),
        Command::Max(args) => max::main(args),
        Command::Control(args) => control::main(args),
        Command::Report(args) => report::main(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where results go unless told otherwise: `target/bench`.
fn default_out_dir() -> PathBuf {
    PathBuf::from("target/bench")
}

//! Process set-up shared by the commands: the global flags, logging and the async runtime.

use std::future::Future;
use std::process::ExitCode;

use clap::Args;

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// Log filter (e.g. `info`, `trellis_proxy=debug`); also read from RUST_LOG. Default:
    /// `info`, or `warn` for `trellis demo` so its live table stays readable.
    #[arg(long, global = true, env = "RUST_LOG")]
    pub log: Option<String>,
    /// Threads running the proxy, control plane or demo (default: one per CPU). `1` runs
    /// everything on the main thread, for a sidecar given one core.
    #[arg(long, global = true, env = "TRELLIS_WORKERS", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
}

/// Sets up logging to stderr (`default_log` unless `--log` says otherwise), runs `command` on
/// the async runtime `--workers` asks for, and turns its error into a message and a failure.
pub fn run(
    args: ProcessArgs,
    default_log: &str,
    command: impl Future<Output = anyhow::Result<ExitCode>>,
) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_new(args.log.as_deref().unwrap_or(default_log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match runtime(args.workers) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime: single-threaded for one worker, else multi-threaded.
fn runtime(workers: Option<u16>) -> std::io::Result<tokio::runtime::Runtime> {
    match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(n))
            .enable_all()
            .build(),
        None => tokio::runtime::Runtime::new(),
    }
}

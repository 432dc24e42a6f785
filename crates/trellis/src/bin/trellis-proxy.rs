//! `trellis-proxy`: the sidecar alone, the lightest process to run next to each workload.
//! Same flags as `trellis proxy`; it leaves out the control plane, CLI and dashboard.

use std::process::ExitCode;

use clap::Parser;
use trellis::process::{self, ProcessArgs};
use trellis::sidecar::{self, ProxyArgs};

/// The Trellis sidecar proxy: carries a workload's inbound and outbound traffic, configured
/// over xDS by the control plane.
#[derive(Debug, Parser)]
#[command(name = "trellis-proxy", version, about)]
struct Cli {
    #[command(flatten)]
    proxy: ProxyArgs,
    #[command(flatten)]
    process: ProcessArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    process::run(cli.process, "info", sidecar::run(cli.proxy))
}

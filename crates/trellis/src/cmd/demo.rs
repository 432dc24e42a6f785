//! `trellis demo`: the meshed demo shop on loopback, with live stats until Ctrl-C.

use std::process::ExitCode;

use anyhow::Context;
use trellis_demo::{DemoOptions, run_demo};

use crate::cli::DemoArgs;
use trellis::signal::Signals;

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::new().context("installing signal handlers")?;
    let opts = DemoOptions {
        rps: args.rps,
        duration: args.duration,
        interval: args.interval,
    };
    let mut stdout = std::io::stdout();
    let summary = run_demo(opts, &mut stdout, async {
        signals.next().await;
    })
    .await?;
    Ok(if summary.successes > 0 && summary.failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

//! `trellis control`: the control plane as a process.

use std::process::ExitCode;

use anyhow::Context;
use trellis_control::ControlOptions;

use crate::cli::ControlArgs;
use trellis::signal::Signals;

pub(crate) async fn run(args: ControlArgs) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::new().context("installing signal handlers")?;
    let control = trellis_control::start(ControlOptions {
        config_dir: Some(args.config_dir),
        data_dir: Some(args.data_dir),
        xds_addr: args.xds_addr,
        admin_addr: args.admin_addr,
        warmup: args.warmup,
        svid_ttl: args.svid_ttl,
        user_ca: args
            .ca_cert
            .zip(args.ca_key)
            .map(|(cert_chain, key)| trellis_control::ca::UserCa { cert_chain, key }),
        stats_interval: trellis_control::DEFAULT_STATS_INTERVAL,
    })
    .await?;
    println!(
        "trellis control: xds on {}, admin on http://{}",
        control.xds_addr(),
        control.admin_addr()
    );
    let signal = signals.next().await;
    tracing::info!(?signal, "shutting down");
    drop(control);
    Ok(ExitCode::SUCCESS)
}

//! `trellis proxy`: the sidecar as a process.

use std::process::ExitCode;

use anyhow::Context;
use trellis_proxy::{ProxyOptions, TracingOptions};

use super::signal::Signals;
use crate::cli::{ProxyArgs, SidecarArgs};

pub(crate) async fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::new().context("installing signal handlers")?;
    let upstreams: Vec<String> = args.sidecar.upstreams.iter().map(|u| u.0.clone()).collect();
    let proxy = trellis_proxy::start(options(args.sidecar, args.app_port, args.admin))
        .await
        .context("starting the proxy")?;
    print_listeners(&proxy, &upstreams);
    let signal = signals.next().await;
    tracing::info!(?signal, "shutting down");
    proxy.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Builds proxy options from the shared sidecar flags.
pub(crate) fn options(
    args: SidecarArgs,
    app_port: u16,
    admin: std::net::SocketAddr,
) -> ProxyOptions {
    ProxyOptions {
        control_plane: args.control_plane,
        node_id: args.node_id,
        service: args.service,
        namespace: args.namespace,
        labels: args.labels.into_iter().collect(),
        app_port,
        inbound: args.inbound,
        advertise: None,
        upstreams: args.upstreams,
        http_proxy: args.http_proxy,
        admin,
        locality: args.locality,
        ca_token: read_token(&args.token_file),
        trust_domain: args.trust_domain,
        svid_ttl: args.svid_ttl,
        access_log: args.access_log,
        tracing: args.trace_collector.map(|collector| TracingOptions {
            collector,
            sampling_percent: args.trace_sampling,
        }),
    }
}

/// The join token, or `None` (plaintext only) with a warning saying why.
fn read_token(path: &std::path::Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(token) => Some(token.trim().to_owned()),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "no join token: running without a workload certificate (no mTLS)");
            None
        }
    }
}

/// Prints where the sidecar listens, for people and scripts.
pub(crate) fn print_listeners(proxy: &trellis_proxy::ProxyHandle, upstreams: &[String]) {
    println!(
        "trellis proxy: inbound {}, admin http://{}",
        proxy.inbound_addr(),
        proxy.admin_addr()
    );
    for service in upstreams {
        if let Some(addr) = proxy.upstream_addr(service) {
            println!("trellis proxy: upstream {service} at {addr}");
        }
    }
    if let Some(addr) = proxy.http_proxy_addr() {
        println!("trellis proxy: http proxy {addr}");
    }
}

//! The sidecar: its flags, shared by `trellis proxy`, `trellis run` and `trellis-proxy`, and
//! the proxy as a process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use trellis_proxy::{AccessLogFormat, ProxyOptions, SdsAgentOptions, TracingOptions};

use crate::args::{
    default_data_dir, parse_access_log, parse_addr, parse_duration, parse_pair, parse_percent,
    parse_upstream,
};
use crate::signal::Signals;

/// Flags shared by `trellis proxy`, `trellis run` and `trellis-proxy`.
#[derive(Debug, Args)]
pub struct SidecarArgs {
    /// Service this workload belongs to.
    #[arg(long)]
    pub service: String,
    /// Namespace of the service.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Workload label `KEY=VALUE` (repeatable), e.g. `version=v2`.
    #[arg(long = "label", value_parser = parse_pair)]
    pub labels: Vec<(String, String)>,
    /// Outbound listener `SERVICE=PORT` or `SERVICE=IP:PORT` for an upstream (repeatable).
    #[arg(long = "upstream", value_parser = parse_upstream)]
    pub upstreams: Vec<(String, SocketAddr)>,
    /// HTTP-proxy-mode outbound listener (`PORT` or `IP:PORT`); apps set HTTP_PROXY to it.
    #[arg(long, value_parser = parse_addr)]
    pub http_proxy: Option<SocketAddr>,
    /// Inbound listener address; peers reach the app through it.
    #[arg(long, default_value = "127.0.0.1:0", value_parser = parse_addr)]
    pub inbound: SocketAddr,
    /// Control plane ADS endpoint.
    #[arg(long, default_value = "http://127.0.0.1:15010")]
    pub control_plane: String,
    /// Locality `region/zone/subzone`.
    #[arg(long)]
    pub locality: Option<String>,
    /// xDS node id (default: `<service>-<random>`).
    #[arg(long)]
    pub node_id: Option<String>,
    /// Join token file the control plane wrote (its data dir's `join-token`); without it the
    /// sidecar gets no certificate and speaks plaintext only.
    #[arg(long, default_value_os_t = default_data_dir().join("join-token"))]
    pub token_file: PathBuf,
    /// Trust domain of the workload's SPIFFE ID (MeshConfig's `trustDomain`).
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Workload certificate lifetime to ask for (default: the CA's).
    #[arg(long, value_parser = parse_duration)]
    pub svid_ttl: Option<Duration>,
    /// Log every request to stdout: `json` (one object per line) or `plain` (Envoy's default
    /// format); off when absent.
    #[arg(long, env = "TRELLIS_ACCESS_LOG", value_parser = parse_access_log)]
    pub access_log: Option<AccessLogFormat>,
    /// Export spans over OTLP/gRPC to this collector (e.g. `http://127.0.0.1:4317`); trace
    /// headers pass through untouched when absent.
    #[arg(long, env = "TRELLIS_TRACE_COLLECTOR")]
    pub trace_collector: Option<String>,
    /// Percent of requests without a caller's sampling decision to trace.
    #[arg(long, default_value_t = 1.0, value_parser = parse_percent)]
    pub trace_sampling: f64,
}

/// `trellis proxy` and `trellis-proxy` flags.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// The flags `trellis run` shares.
    #[command(flatten)]
    pub sidecar: SidecarArgs,
    /// Port of the local application (127.0.0.1).
    #[arg(long, required_unless_present = "sds_socket")]
    pub app_port: Option<u16>,
    /// Admin listen address (/ready, /metrics, /config_dump).
    #[arg(long, default_value = "127.0.0.1:15000", value_parser = parse_addr)]
    pub admin: SocketAddr,
    /// Agent mode, for a workload whose sidecar is Envoy (see `trellis envoy-bootstrap
    /// --sds-socket`): get the workload certificate from the control plane's CA and serve it
    /// over SDS on this Unix socket, instead of proxying.
    #[arg(long, conflicts_with = "app_port")]
    pub sds_socket: Option<PathBuf>,
}

/// Runs the proxy (or, with `--sds-socket`, the SDS agent) until SIGINT or SIGTERM, then
/// drains it.
pub async fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::new().context("installing signal handlers")?;
    if let Some(socket) = args.sds_socket {
        return run_sds_agent(args.sidecar, socket, &mut signals).await;
    }
    let upstreams: Vec<String> = args.sidecar.upstreams.iter().map(|u| u.0.clone()).collect();
    let Some(app_port) = args.app_port else {
        anyhow::bail!("--app-port is required (unless --sds-socket runs agent mode)");
    };
    let proxy = trellis_proxy::start(options(args.sidecar, app_port, args.admin))
        .await
        .context("starting the proxy")?;
    print_listeners(&proxy, &upstreams);
    let signal = signals.next().await;
    tracing::info!(?signal, "shutting down");
    proxy.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn run_sds_agent(
    args: SidecarArgs,
    socket: PathBuf,
    signals: &mut Signals,
) -> anyhow::Result<ExitCode> {
    let token = read_token(&args.token_file).with_context(|| {
        format!(
            "agent mode needs the join token: cannot read --token-file {}",
            args.token_file.display()
        )
    })?;
    let agent = trellis_proxy::start_sds_agent(SdsAgentOptions {
        control_plane: args.control_plane,
        ca_token: token,
        trust_domain: args.trust_domain,
        namespace: args.namespace,
        service: args.service,
        svid_ttl: args.svid_ttl,
        socket: socket.clone(),
    })
    .await
    .context("starting the SDS agent")?;
    println!("trellis proxy: sds agent on {}", socket.display());
    let signal = signals.next().await;
    tracing::info!(?signal, "shutting down");
    drop(agent);
    Ok(ExitCode::SUCCESS)
}

/// Builds proxy options from the shared sidecar flags.
pub fn options(args: SidecarArgs, app_port: u16, admin: std::net::SocketAddr) -> ProxyOptions {
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
pub fn print_listeners(proxy: &trellis_proxy::ProxyHandle, upstreams: &[String]) {
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

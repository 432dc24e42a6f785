//! Command-line parsing and dispatch.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use trellis::args::{default_data_dir, parse_addr, parse_duration, parse_pair, parse_upstream};
use trellis::process::{self, ProcessArgs};
use trellis::sidecar::{self, ProxyArgs, SidecarArgs};

use crate::cmd;

/// Trellis: a service mesh with a Rust sidecar, driven over xDS.
#[derive(Debug, Parser)]
#[command(name = "trellis", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    process: ProcessArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane: load and watch a config dir, serve xDS and the admin API.
    Control(ControlArgs),
    /// Run a sidecar proxy next to an application.
    Proxy(ProxyArgs),
    /// Start an application and its sidecar together; exits with the app's status.
    Run(RunArgs),
    /// Run a meshed multi-service demo with live stats, on loopback.
    Demo(DemoArgs),
    /// The mesh's certificate authority: show the roots, list issued SVIDs, rotate the root.
    Identity(IdentityArgs),
    /// Success rate, requests per second and latency percentiles per service, route or edge
    /// over a recent window, from the control plane.
    Stat(StatArgs),
    /// Every HTTPRoute and GRPCRoute: parents, backends with weights, Gateway API status.
    Routes(AdminArgs),
    /// The config a proxy has applied: listeners, routes, clusters and endpoints.
    ProxyConfig(ProxyConfigArgs),
    /// Check the control plane and the mesh; exits with status 1 when a check fails.
    Check(AdminArgs),
    /// The requests a service's proxies handle, one line each as they finish (no payloads).
    Tap(TapArgs),
    /// A service's most frequent requests by direction, method and path, live.
    Top(TopArgs),
    /// Print the bootstrap that runs Envoy as a workload's sidecar (`envoy -c FILE`),
    /// configured over ADS by the control plane.
    EnvoyBootstrap(EnvoyBootstrapArgs),
    /// Print the xDS bootstrap of a proxyless gRPC client (`GRPC_XDS_BOOTSTRAP=FILE`), which
    /// then calls `xds:///SERVICE.NAMESPACE` with no sidecar.
    GrpcBootstrap(GrpcBootstrapArgs),
}

/// Flags of the commands that only read the control plane's admin API.
#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    /// The control plane's admin address.
    #[arg(long, default_value = "127.0.0.1:15014", value_parser = parse_addr)]
    pub(crate) admin_addr: SocketAddr,
}

/// `trellis proxy-config` flags.
#[derive(Debug, Args)]
pub(crate) struct ProxyConfigArgs {
    /// The proxy: its node id, a unique prefix of it, or a service with exactly one proxy.
    pub(crate) proxy: String,
    /// Which part of the config to show.
    #[arg(long = "type", value_enum, default_value = "all")]
    pub(crate) r#type: cmd::proxy_config::ConfigType,
    /// Print the proxy's config dump (the chosen part of it) as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// The control plane's admin address.
    #[arg(long, default_value = "127.0.0.1:15014", value_parser = parse_addr)]
    pub(crate) admin_addr: SocketAddr,
}

/// `trellis identity` flags.
#[derive(Debug, Args)]
pub(crate) struct IdentityArgs {
    #[command(subcommand)]
    pub(crate) action: IdentityAction,
    /// The control plane's admin address.
    #[arg(long, global = true, default_value = "127.0.0.1:15014", value_parser = parse_addr)]
    pub(crate) admin_addr: SocketAddr,
}

/// `trellis stat` flags.
#[derive(Debug, Args)]
pub(crate) struct StatArgs {
    /// Only this service (`NAME` or `NAME.NAMESPACE`); with `--by edge`, as caller or callee.
    pub(crate) service: Option<String>,
    /// How far back to look (at most 2m, what the control plane keeps).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) window: Duration,
    /// Rows per `service` (requests it received), `route` (per route of each service) or
    /// `edge` (caller → callee, from the callers' proxies).
    #[arg(long, default_value = "service", value_parser = parse_stats_by)]
    pub(crate) by: trellis_control::StatsBy,
    /// The control plane's admin address.
    #[arg(long, default_value = "127.0.0.1:15014", value_parser = parse_addr)]
    pub(crate) admin_addr: SocketAddr,
}

/// Which requests `trellis tap` and `trellis top` watch: every filter given must match.
#[derive(Debug, Args)]
pub(crate) struct TapFilterArgs {
    /// The service whose proxies to watch (those connected when the command starts).
    pub(crate) service: String,
    /// The service's namespace.
    #[arg(long, default_value = "default")]
    pub(crate) namespace: String,
    /// Only requests whose path starts with this.
    #[arg(long)]
    pub(crate) path: Option<String>,
    /// Only requests with this method.
    #[arg(long)]
    pub(crate) method: Option<String>,
    /// Only requests with exactly this authority (`Host`).
    #[arg(long)]
    pub(crate) authority: Option<String>,
    /// `inbound` (requests the service's proxies received), `outbound` (requests its
    /// workloads sent) or `both`.
    #[arg(long, value_enum, default_value = "both")]
    pub(crate) direction: cmd::tap::Direction,
    /// The control plane's admin address.
    #[arg(long, default_value = "127.0.0.1:15014", value_parser = parse_addr)]
    pub(crate) admin_addr: SocketAddr,
}

/// `trellis tap` flags.
#[derive(Debug, Args)]
pub(crate) struct TapArgs {
    #[command(flatten)]
    pub(crate) filter: TapFilterArgs,
    /// Stop after this many requests (else on Ctrl-C).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max: Option<u64>,
    /// `wide` adds route, cluster, response flags, time, trace and request ids; `json` prints
    /// the control plane's JSON lines as they are.
    #[arg(long, short = 'o', value_enum)]
    pub(crate) output: Option<cmd::tap::Output>,
}

/// `trellis top` flags.
#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    #[command(flatten)]
    pub(crate) filter: TapFilterArgs,
    /// How often the table is redrawn.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub(crate) interval: Duration,
    /// Stop after this long (else on Ctrl-C).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Print one table when it stops instead of redrawing it every --interval.
    #[arg(long)]
    pub(crate) once: bool,
    /// Rows shown, most frequent first.
    #[arg(long, default_value_t = 20)]
    pub(crate) rows: usize,
}

fn parse_stats_by(s: &str) -> Result<trellis_control::StatsBy, String> {
    s.parse()
}

/// What `trellis identity` does.
#[derive(Debug, Subcommand)]
pub(crate) enum IdentityAction {
    /// Show the trusted roots (active first) with their validity.
    Show,
    /// List the SVIDs issued and not yet expired, with their expiry.
    List,
    /// Start a root rotation now (the old root stays trusted until its SVIDs expire).
    Rotate,
}

/// `trellis control` flags.
#[derive(Debug, Args)]
pub(crate) struct ControlArgs {
    /// Directory of YAML resources (Service, HTTPRoute, GRPCRoute), watched for changes.
    #[arg(long)]
    pub(crate) config_dir: PathBuf,
    /// Directory for the control plane's state: the CA (root key 0600), the join token
    /// proxies present, endpoints.json with the bound addresses.
    #[arg(long, env = "TRELLIS_HOME", default_value_os_t = default_data_dir())]
    pub(crate) data_dir: PathBuf,
    /// xDS (ADS) listen address.
    #[arg(long, default_value = "127.0.0.1:15010")]
    pub(crate) xds_addr: SocketAddr,
    /// Admin API listen address.
    #[arg(long, default_value = "127.0.0.1:15014")]
    pub(crate) admin_addr: SocketAddr,
    /// After start, withhold config this long so proxies of a previous run re-register first
    /// (otherwise peers would briefly see their endpoints gone). `0s` for a fresh mesh.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// Workload certificate lifetime, overriding MeshConfig's `svidTtl`.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) svid_ttl: Option<Duration>,
    /// Use this CA certificate (root or intermediate, then its issuers; PEM) instead of a
    /// self-signed root; needs --ca-key.
    #[arg(long, requires = "ca_key")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// The key of --ca-cert (PEM).
    #[arg(long, requires = "ca_cert")]
    pub(crate) ca_key: Option<PathBuf>,
}

/// `trellis grpc-bootstrap` flags.
#[derive(Debug, Args)]
pub(crate) struct GrpcBootstrapArgs {
    /// Service the client workload belongs to (its identity in the mesh's views).
    #[arg(long)]
    pub(crate) service: String,
    /// Namespace of the client; services in it can also be called as `xds:///NAME`.
    #[arg(long, default_value = "default")]
    pub(crate) namespace: String,
    /// Workload label `KEY=VALUE` (repeatable).
    #[arg(long = "label", value_parser = parse_pair)]
    pub(crate) labels: Vec<(String, String)>,
    /// The control plane's xDS (ADS) address.
    #[arg(long, default_value = "127.0.0.1:15010", value_parser = parse_addr)]
    pub(crate) xds_addr: SocketAddr,
    /// Locality `region/zone/subzone`.
    #[arg(long)]
    pub(crate) locality: Option<String>,
    /// xDS node id (default: `<service>-grpc-<process id>`).
    #[arg(long)]
    pub(crate) node_id: Option<String>,
}

/// `trellis envoy-bootstrap` flags.
#[derive(Debug, Args)]
pub(crate) struct EnvoyBootstrapArgs {
    /// Service this workload belongs to.
    #[arg(long)]
    pub(crate) service: String,
    /// Namespace of the service.
    #[arg(long, default_value = "default")]
    pub(crate) namespace: String,
    /// Workload label `KEY=VALUE` (repeatable), e.g. `version=v2`.
    #[arg(long = "label", value_parser = parse_pair)]
    pub(crate) labels: Vec<(String, String)>,
    /// Port of the local application (127.0.0.1).
    #[arg(long)]
    pub(crate) app_port: u16,
    /// Inbound listener `IP:PORT` (or `PORT`) Envoy binds; peers reach the app through it.
    #[arg(long, value_parser = parse_addr)]
    pub(crate) inbound: SocketAddr,
    /// Outbound listener `SERVICE=PORT` for an upstream (repeatable), on the inbound's IP.
    #[arg(long = "upstream", value_parser = parse_upstream)]
    pub(crate) upstreams: Vec<(String, SocketAddr)>,
    /// Envoy's admin address.
    #[arg(long, default_value = "127.0.0.1:15000", value_parser = parse_addr)]
    pub(crate) admin: SocketAddr,
    /// The control plane's xDS (ADS) address.
    #[arg(long, default_value = "127.0.0.1:15010", value_parser = parse_addr)]
    pub(crate) xds_addr: SocketAddr,
    /// Locality `region/zone/subzone`.
    #[arg(long)]
    pub(crate) locality: Option<String>,
    /// xDS node id (default: `<service>-envoy-<inbound port>`).
    #[arg(long)]
    pub(crate) node_id: Option<String>,
    /// Unix socket of the local SDS agent (`trellis-proxy --sds-socket`) that hands Envoy the
    /// workload certificate: Envoy then speaks mTLS. Without it Envoy is plaintext.
    #[arg(long)]
    pub(crate) sds_socket: Option<PathBuf>,
    /// Incremental (delta) ADS: Envoy is sent only what changed for it.
    #[arg(long)]
    pub(crate) delta: bool,
}

/// `trellis run` flags.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) sidecar: SidecarArgs,
    /// Port the application listens on (127.0.0.1).
    #[arg(long)]
    pub(crate) port: u16,
    /// Admin listen address; port 0 picks a free one (several sidecars share a host).
    #[arg(long, default_value = "127.0.0.1:0", value_parser = parse_addr)]
    pub(crate) admin: SocketAddr,
    /// The application command and its arguments.
    #[arg(last = true, required = true)]
    pub(crate) command: Vec<String>,
}

/// `trellis demo` flags.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Stop after this long (e.g. `10s`, `2m`); runs until Ctrl-C when absent.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Requests per second the load generator sends to the frontend.
    #[arg(long, default_value_t = 50)]
    pub(crate) rps: u32,
    /// Seconds between live stats lines.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) interval: Duration,
}

/// Parses arguments and runs the command.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    process::run(cli.process, default_log, async {
        match cli.command {
            Command::Control(args) => cmd::control::run(args).await,
            Command::Proxy(args) => sidecar::run(args).await,
            Command::Run(args) => cmd::run::run(args).await,
            Command::Demo(args) => cmd::demo::run(args).await,
            Command::Identity(args) => cmd::identity::run(args).await,
            Command::Stat(args) => cmd::stat::run(args).await,
            Command::Routes(args) => cmd::routes::run(args).await,
            Command::ProxyConfig(args) => cmd::proxy_config::run(args).await,
            Command::Check(args) => cmd::check::run(args).await,
            Command::Tap(args) => cmd::tap::run(args).await,
            Command::Top(args) => cmd::top::run(args).await,
            Command::EnvoyBootstrap(args) => cmd::envoy_bootstrap::run(args).await,
            Command::GrpcBootstrap(args) => cmd::grpc_bootstrap::run(&args),
        }
    })
}

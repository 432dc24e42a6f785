//! Command-line parsing and dispatch.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use trellis_proxy::AccessLogFormat;

use crate::cmd;

/// Trellis: a service mesh with a Rust sidecar, driven over xDS.
#[derive(Debug, Parser)]
#[command(name = "trellis", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (e.g. `info`, `trellis_proxy=debug`); also read from RUST_LOG. Default:
    /// `info`, or `warn` for the demo so its live table stays readable.
    #[arg(long, global = true, env = "RUST_LOG")]
    log: Option<String>,
    /// Threads running the proxy, control plane or demo (default: one per CPU). `1` runs
    /// everything on the main thread, for a sidecar given one core.
    #[arg(long, global = true, env = "TRELLIS_WORKERS", value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
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

/// Flags shared by `proxy` and `run`.
#[derive(Debug, Args)]
pub(crate) struct SidecarArgs {
    /// Service this workload belongs to.
    #[arg(long)]
    pub(crate) service: String,
    /// Namespace of the service.
    #[arg(long, default_value = "default")]
    pub(crate) namespace: String,
    /// Workload label `KEY=VALUE` (repeatable), e.g. `version=v2`.
    #[arg(long = "label", value_parser = parse_pair)]
    pub(crate) labels: Vec<(String, String)>,
    /// Outbound listener `SERVICE=PORT` or `SERVICE=IP:PORT` for an upstream (repeatable).
    #[arg(long = "upstream", value_parser = parse_upstream)]
    pub(crate) upstreams: Vec<(String, SocketAddr)>,
    /// HTTP-proxy-mode outbound listener (`PORT` or `IP:PORT`); apps set HTTP_PROXY to it.
    #[arg(long, value_parser = parse_addr)]
    pub(crate) http_proxy: Option<SocketAddr>,
    /// Inbound listener address; peers reach the app through it.
    #[arg(long, default_value = "127.0.0.1:0", value_parser = parse_addr)]
    pub(crate) inbound: SocketAddr,
    /// Control plane ADS endpoint.
    #[arg(long, default_value = "http://127.0.0.1:15010")]
    pub(crate) control_plane: String,
    /// Locality `region/zone/subzone`.
    #[arg(long)]
    pub(crate) locality: Option<String>,
    /// xDS node id (default: `<service>-<random>`).
    #[arg(long)]
    pub(crate) node_id: Option<String>,
    /// Join token file the control plane wrote (its data dir's `join-token`); without it the
    /// sidecar gets no certificate and speaks plaintext only.
    #[arg(long, default_value_os_t = default_data_dir().join("join-token"))]
    pub(crate) token_file: PathBuf,
    /// Trust domain of the workload's SPIFFE ID (MeshConfig's `trustDomain`).
    #[arg(long, default_value = "cluster.local")]
    pub(crate) trust_domain: String,
    /// Workload certificate lifetime to ask for (default: the CA's).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) svid_ttl: Option<Duration>,
    /// Log every request to stdout: `json` (one object per line) or `plain` (Envoy's default
    /// format); off when absent.
    #[arg(long, env = "TRELLIS_ACCESS_LOG", value_parser = parse_access_log)]
    pub(crate) access_log: Option<AccessLogFormat>,
    /// Export spans over OTLP/gRPC to this collector (e.g. `http://127.0.0.1:4317`); trace
    /// headers pass through untouched when absent.
    #[arg(long, env = "TRELLIS_TRACE_COLLECTOR")]
    pub(crate) trace_collector: Option<String>,
    /// Percent of requests without a caller's sampling decision to trace.
    #[arg(long, default_value_t = 1.0, value_parser = parse_percent)]
    pub(crate) trace_sampling: f64,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("expected a percent from 0 to 100, found {s:?}")),
    }
}

fn parse_access_log(s: &str) -> Result<AccessLogFormat, String> {
    match s {
        "json" => Ok(AccessLogFormat::Json),
        "plain" => Ok(AccessLogFormat::Plain),
        other => Err(format!("expected json or plain, found {other:?}")),
    }
}

/// `$TRELLIS_HOME`, else `$HOME/.trellis`, else `.trellis`.
fn default_data_dir() -> PathBuf {
    std::env::var_os("TRELLIS_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".trellis")))
        .unwrap_or_else(|| PathBuf::from(".trellis"))
}

/// `trellis proxy` flags.
#[derive(Debug, Args)]
pub(crate) struct ProxyArgs {
    #[command(flatten)]
    pub(crate) sidecar: SidecarArgs,
    /// Port of the local application (127.0.0.1).
    #[arg(long)]
    pub(crate) app_port: u16,
    /// Admin listen address (/ready, /metrics, /config_dump).
    #[arg(long, default_value = "127.0.0.1:15000", value_parser = parse_addr)]
    pub(crate) admin: SocketAddr,
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

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, found {s:?}")),
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("expected PORT or IP:PORT, found {s:?}"))
}

fn parse_upstream(s: &str) -> Result<(String, SocketAddr), String> {
    let (service, addr) =
        parse_pair(s).map_err(|_| format!("expected SERVICE=PORT, found {s:?}"))?;
    Ok((service, parse_addr(&addr)?))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    trellis_api::parse_duration(s).map_err(|e| e.to_string())
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

/// Parses arguments, sets up logging and runs the command on the async runtime.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let default = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_new(cli.log.as_deref().unwrap_or(default))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match runtime(cli.workers) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Control(args) => cmd::control::run(args).await,
            Command::Proxy(args) => cmd::proxy::run(args).await,
            Command::Run(args) => cmd::run::run(args).await,
            Command::Demo(args) => cmd::demo::run(args).await,
            Command::Identity(args) => cmd::identity::run(args).await,
            Command::Stat(args) => cmd::stat::run(args).await,
            Command::Routes(args) => cmd::routes::run(args).await,
            Command::ProxyConfig(args) => cmd::proxy_config::run(args).await,
            Command::Check(args) => cmd::check::run(args).await,
            Command::Tap(args) => cmd::tap::run(args).await,
            Command::Top(args) => cmd::top::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

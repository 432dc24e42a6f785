//! `trellis tap SERVICE`: the requests a service's proxies handle, one line each as they finish,
//! like `linkerd viz tap`, read from the control plane's `/api/tap` (which merges the proxies'
//! admin taps). No payloads.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use clap::ValueEnum;
use serde::Deserialize;
use trellis_control::percent_encode;

use super::api::get_lines;
use crate::cli::{TapArgs, TapFilterArgs};
use trellis::signal::Signals;

/// Which of the proxies' requests to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Direction {
    /// Requests the service's proxies received for their workloads.
    Inbound,
    /// Requests the service's workloads sent.
    Outbound,
    /// Both.
    Both,
}

/// How `trellis tap` prints a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// The default line plus route, cluster, response flags, time, trace and request ids.
    Wide,
    /// The control plane's JSON lines as they are.
    Json,
}

/// A line of `/api/tap`: an event, or a note about one proxy's tap.
#[derive(Debug, Deserialize)]
pub(crate) struct TapLine {
    /// The node id of the proxy it came from.
    pub(crate) proxy: String,
    /// A finished request.
    #[serde(default)]
    pub(crate) event: Option<Event>,
    /// Requests the proxy skipped because the reader fell behind.
    #[serde(default)]
    pub(crate) missed: Option<u64>,
    /// Why the proxy could not be tapped, or why its tap ended.
    #[serde(default)]
    pub(crate) error: Option<String>,
}

/// The fields of a proxy's request event that the CLI shows (`trellis_proxy::RequestEvent`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(crate) struct Event {
    pub(crate) time: String,
    pub(crate) direction: String,
    pub(crate) method: String,
    pub(crate) authority: String,
    pub(crate) path: String,
    pub(crate) status: u16,
    pub(crate) grpc_status: Option<u8>,
    pub(crate) flags: String,
    pub(crate) duration_ms: f64,
    pub(crate) bytes_sent: u64,
    pub(crate) route: String,
    pub(crate) cluster: String,
    pub(crate) upstream: Option<String>,
    pub(crate) downstream: String,
    pub(crate) source_identity: String,
    pub(crate) destination_identity: String,
    pub(crate) trace_id: Option<String>,
    pub(crate) request_id: Option<String>,
}

impl Event {
    /// Linkerd's classification: a 5xx or a gRPC status other than OK is a failure.
    pub(crate) fn success(&self) -> bool {
        self.status < 500 && self.grpc_status.is_none_or(|s| s == 0)
    }
}

/// The control plane's `/api/tap` request for `filter`, with at most `limit` events.
pub(crate) fn api_path(filter: &TapFilterArgs, limit: Option<u64>) -> String {
    let direction = match filter.direction {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
        Direction::Both => "both",
    };
    let mut path = format!(
        "/api/tap?service={}&namespace={}&direction={direction}",
        percent_encode(&filter.service),
        percent_encode(&filter.namespace),
    );
    let limit = limit.map(|n| n.to_string());
    let optional = [
        ("path", filter.path.as_deref()),
        ("method", filter.method.as_deref()),
        ("authority", filter.authority.as_deref()),
        ("limit", limit.as_deref()),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            let _ = write!(path, "&{key}={}", percent_encode(value));
        }
    }
    path
}

pub(crate) async fn run(args: TapArgs) -> anyhow::Result<ExitCode> {
    let path = api_path(&args.filter, args.max);
    let mut lines = get_lines(args.filter.admin_addr, &path).await?;
    let mut signals = Signals::new()?;
    let mut stdout = std::io::stdout();
    let mut shown = 0;
    while args.max.is_none_or(|max| shown < max) {
        let line = tokio::select! {
            line = lines.next() => line?,
            _ = signals.next() => break,
        };
        let Some(line) = line else {
            eprintln!("the tap ended: every proxy's tap closed (the proxies went away)");
            break;
        };
        let parsed: TapLine = match serde_json::from_str(&line) {
            Ok(parsed) => parsed,
            Err(e) => {
                anyhow::bail!("the control plane sent a line that is not a tap line ({e}): {line}")
            }
        };
        let text = match (&parsed, args.output) {
            (TapLine { event: Some(_), .. }, Some(Output::Json)) => Some(line),
            (
                TapLine {
                    event: Some(event), ..
                },
                output,
            ) => Some(format(event, &parsed.proxy, output == Some(Output::Wide))),
            _ => {
                eprintln!("{}", note(&parsed));
                None
            }
        };
        if let Some(text) = text {
            shown += 1;
            // A closed stdout (`trellis tap ... | head`) ends the tap.
            if writeln!(stdout, "{text}").is_err() {
                break;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A note about one proxy's tap, for stderr.
fn note(line: &TapLine) -> String {
    match (&line.missed, &line.error) {
        (Some(missed), _) => format!(
            "proxy {}: {missed} requests not shown: the tap fell behind",
            line.proxy
        ),
        (None, Some(error)) => format!("proxy {}: {error}", line.proxy),
        (None, None) => format!("proxy {}: an unknown line", line.proxy),
    }
}

/// One request as a line: what was asked, what came back, between whom, through which proxy.
pub(crate) fn format(e: &Event, proxy: &str, wide: bool) -> String {
    let mut line = format!(
        "req {} :method={} :authority={} :path={}  rsp :status={}",
        e.direction, e.method, e.authority, e.path, e.status
    );
    if let Some(grpc) = e.grpc_status {
        let _ = write!(line, " grpc-status={grpc}");
    }
    let upstream = e.upstream.as_deref().unwrap_or("-");
    let _ = write!(
        line,
        " latency={} bytes={} src={}",
        latency(e.duration_ms),
        e.bytes_sent,
        e.downstream
    );
    if !e.source_identity.is_empty() {
        let _ = write!(line, " src_id={}", e.source_identity);
    }
    let _ = write!(line, " dst={upstream}");
    if !e.destination_identity.is_empty() {
        let _ = write!(line, " dst_id={}", e.destination_identity);
    }
    let _ = write!(line, " proxy={proxy}");
    if wide {
        let or_dash = |s: &str| {
            if s.is_empty() {
                "-".to_owned()
            } else {
                s.to_owned()
            }
        };
        let _ = write!(
            line,
            " route={} cluster={} flags={} time={}",
            or_dash(&e.route),
            or_dash(&e.cluster),
            or_dash(&e.flags),
            e.time
        );
        if let Some(trace) = &e.trace_id {
            let _ = write!(line, " trace_id={trace}");
        }
        if let Some(id) = &e.request_id {
            let _ = write!(line, " request_id={id}");
        }
    }
    line
}

/// Milliseconds as `1.2ms` below 10 ms, else `12ms`.
pub(crate) fn latency(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

#[cfg(test)]
mod tests;

//! `trellis run`: an application and its sidecar as one unit. Signals go to the app; when it
//! exits the sidecar drains and the command exits with the app's status.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cli::RunArgs;
use trellis::sidecar::{options, print_listeners};
use trellis::signal::Signals;

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::new().context("installing signal handlers")?;
    let upstreams: Vec<String> = args.sidecar.upstreams.iter().map(|u| u.0.clone()).collect();
    let proxy = trellis_proxy::start(options(args.sidecar, args.port, args.admin))
        .await
        .context("starting the sidecar")?;
    print_listeners(&proxy, &upstreams);

    let (program, rest) = args
        .command
        .split_first()
        .context("no application command given after --")?;
    let mut command = tokio::process::Command::new(program);
    command.args(rest);
    for service in &upstreams {
        if let Some(addr) = proxy.upstream_addr(service) {
            command.env(upstream_env(service), addr.to_string());
        }
    }
    if let Some(addr) = proxy.http_proxy_addr() {
        command.env("HTTP_PROXY", format!("http://{addr}"));
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {program:?}"))?;
    let pid = child.id().and_then(|id| i32::try_from(id).ok());

    let status = loop {
        tokio::select! {
            status = child.wait() => break status.context("waiting for the application")?,
            stop = signals.next() => {
                if let (Some(pid), Ok(sig)) = (pid, Signal::try_from(stop.raw())) {
                    tracing::info!(?stop, pid, "forwarding signal to the application");
                    // The child may have exited just now; then there is nothing to signal.
                    let _ = kill(Pid::from_raw(pid), sig);
                }
            }
        }
    };
    tracing::info!(%status, "application exited; draining the sidecar");
    proxy.shutdown().await;
    Ok(exit_code(status))
}

/// `TRELLIS_UPSTREAM_<SERVICE>`: where the app reaches an upstream through its sidecar.
fn upstream_env(service: &str) -> String {
    let name: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("TRELLIS_UPSTREAM_{name}")
}

/// The app's status as ours: its code, or 128 + signal as shells report it.
fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_env_names_are_shell_safe() {
        assert_eq!(
            upstream_env("catalog-v2.prod"),
            "TRELLIS_UPSTREAM_CATALOG_V2_PROD"
        );
    }
}

//! The `trellis control` process under test: started on free loopback ports, its xDS address
//! read from its start-up line, killed by PID when dropped.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::oneshot;

/// The CPU the control plane runs on, alone: the simulated proxies stand for other machines and
/// run on the other one.
pub(super) const CONTROL_CPU: usize = 1;

/// How long `trellis control` may take to report its xDS address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The `trellis control` process under test; killed by PID and reaped when dropped.
pub(super) struct ControlProcess {
    child: Child,
    log: PathBuf,
}

impl ControlProcess {
    /// Starts it on free loopback ports and waits until it reports its xDS address (it loads
    /// the config dir before that).
    pub(super) async fn start(
        trellis: &Path,
        config_dir: &Path,
        data_dir: &Path,
        log: &Path,
    ) -> anyhow::Result<(ControlProcess, SocketAddr)> {
        let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        // taskset execs the program, so the PID is the control plane's.
        let mut child = Command::new("taskset")
            .args(["-c", &CONTROL_CPU.to_string()])
            .arg(trellis)
            .args(["--log", "warn", "control", "--config-dir"])
            .arg(config_dir)
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--xds-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--warmup",
                "0s",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it: cargo build --release --bin trellis)",
                    trellis.display()
                )
            })?;
        let stdout = child.stdout.take();
        let process = ControlProcess {
            child,
            log: log.to_owned(),
        };
        let stdout = stdout.context("trellis control: no stdout pipe")?;
        let (tx, rx) = oneshot::channel();
        std::thread::spawn(move || report_xds_addr(stdout, tx));
        match tokio::time::timeout(START_TIMEOUT, rx).await {
            Ok(Ok(addr)) => Ok((process, addr)),
            Ok(Err(_)) => bail!(
                "trellis control exited before serving xDS:\n{}",
                process.log_tail()
            ),
            Err(_) => bail!(
                "trellis control did not report its xDS address within {}s:\n{}",
                START_TIMEOUT.as_secs(),
                process.log_tail()
            ),
        }
    }

    /// Its process ID.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last 20 lines of its log.
    pub(super) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the control plane's stdout to its end (so it never blocks on a full pipe), sending
/// the xDS address from its start-up line.
fn report_xds_addr(stdout: ChildStdout, tx: oneshot::Sender<SocketAddr>) {
    let mut tx = Some(tx);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(addr) = parse_xds_addr(&line)
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(addr);
        }
    }
}

/// `trellis control: xds on 127.0.0.1:PORT, admin on http://…` → the xDS address.
fn parse_xds_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("trellis control: xds on ")?;
    rest.split(',').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_start_up_line() {
        let line = "trellis control: xds on 127.0.0.1:41234, admin on http://127.0.0.1:41235";
        assert_eq!(
            parse_xds_addr(line),
            Some(SocketAddr::from(([127, 0, 0, 1], 41234)))
        );
        assert_eq!(parse_xds_addr("something else"), None);
    }
}

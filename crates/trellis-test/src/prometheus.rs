//! A real Prometheus server (Debian's `prometheus` package) scraping given targets every
//! second, and PromQL instant queries against it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use serde::Deserialize;
use trellis_control::percent_encode;

use crate::child::until_ready;
use crate::http1_get;

/// A Prometheus process started by a test; killed (by its PID) when dropped.
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// One series of an instant query's result vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

#[derive(Deserialize)]
struct QueryReply {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<QueryData>,
}

#[derive(Deserialize)]
struct QueryData {
    result: Vec<VectorSample>,
}

#[derive(Deserialize)]
struct VectorSample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port, scraping `/metrics` of each `(job, target)`
    /// every second, and waits until it serves queries.
    pub async fn start(targets: &[(&str, SocketAddr)]) -> anyhow::Result<Prometheus> {
        let dir = tempfile::tempdir()?;
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
        for (job, target) in targets {
            config.push_str(&format!(
                "- job_name: {job}\n  static_configs:\n  - targets: ['{target}']\n"
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let addr = crate::free_loopback_addr()?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log"))?)
            .spawn()
            .context(
                "starting `prometheus` (Debian package prometheus; scripts/test.sh installs it)",
            )?;
        let mut prometheus = Prometheus { child, addr, dir };
        let log = prometheus.dir.path().join("prometheus.log");
        let log = || std::fs::read_to_string(&log).unwrap_or_default();
        until_ready(&mut prometheus.child, addr, "/-/ready", "prometheus", log).await?;
        Ok(prometheus)
    }

    /// Prometheus' own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The scrape targets' health and last errors (`/api/v1/targets`), for failure messages.
    pub async fn targets(&self) -> String {
        match http1_get(self.addr, "/api/v1/targets", &[]).await {
            Ok(reply) => reply.text(),
            Err(e) => format!("targets unavailable: {e}"),
        }
    }

    /// Runs a PromQL instant query; its result must be a vector.
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<Sample>> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let reply = http1_get(self.addr, &path, &[]).await?;
        let parsed: QueryReply = reply.json()?;
        if parsed.status != "success" {
            bail!(
                "query {promql:?} failed: {}",
                parsed.error.unwrap_or_default()
            );
        }
        parsed
            .data
            .context("query reply without data")?
            .result
            .into_iter()
            .map(|s| {
                let value = s
                    .value
                    .1
                    .parse()
                    .with_context(|| format!("value {:?} of {promql:?}", s.value.1))?;
                Ok(Sample {
                    labels: s.metric,
                    value,
                })
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

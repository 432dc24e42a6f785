//! Process metrics for Trellis binaries under the names Prometheus client libraries use
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`, ...), so
//! the dashboards and alerts written for Istio and Linkerd components work unchanged.
//! [`ProcessCollector`] reads `/proc/self` on each scrape and keeps nothing between scrapes; it
//! runs no task, and a value it cannot read is left out of that scrape rather than reported as
//! an error. It knows nothing of the mesh: each binary registers it next to its own metrics.
//!
//! [`stats`] is the JSON a proxy serves on its admin `/stats` for the control plane to collect.

mod procfs;
pub mod stats;

use std::fmt;

use nix::unistd::{SysconfVar, sysconf};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// A [`Collector`] of the current process's CPU time, memory, file descriptors, threads and
/// start time, read from `/proc` at scrape time (Linux only: elsewhere it emits nothing).
///
/// Register it with [`Registry::register_collector`] on a registry without a prefix: the names
/// are only standard unprefixed.
///
/// [`Registry::register_collector`]: prometheus_client::registry::Registry::register_collector
#[derive(Debug, Clone, Copy)]
pub struct ProcessCollector {
    ticks_per_second: f64,
    page_size: Option<u64>,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        ProcessCollector::new()
    }
}

impl ProcessCollector {
    /// Reads the clock tick and the page size once; the metrics themselves are read per scrape.
    pub fn new() -> ProcessCollector {
        let var = |v| {
            sysconf(v)
                .ok()
                .flatten()
                .and_then(|n| u64::try_from(n).ok())
                .filter(|n| *n > 0)
        };
        ProcessCollector {
            // USER_HZ is 100 on every Linux architecture; sysconf only confirms it.
            ticks_per_second: var(SysconfVar::CLK_TCK).map_or(100.0, |t| t as f64),
            page_size: var(SysconfVar::PAGE_SIZE),
        }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let e = &mut encoder;
        let stat = procfs::read("/proc/self/stat").and_then(|t| procfs::parse_stat(&t));
        if let Some(stat) = stat {
            let cpu = (stat.utime + stat.stime) as f64 / self.ticks_per_second;
            let cpu_help = "Total user and system CPU time spent in seconds";
            metric(e, "process_cpu_seconds", cpu_help, ConstCounter::new(cpu))?;
        }
        if let Some(open) = procfs::open_fds() {
            let help = "Number of open file descriptors";
            metric(e, "process_open_fds", help, ConstGauge::new(open))?;
        }
        let limits = procfs::read("/proc/self/limits");
        if let Some(max) = limits.and_then(|t| procfs::parse_max_fds(&t)) {
            let help = "Maximum number of open file descriptors";
            metric(e, "process_max_fds", help, ConstGauge::new(max))?;
        }
        let Some(stat) = stat else {
            return Ok(());
        };
        let help = "Virtual memory size in bytes";
        metric(
            e,
            "process_virtual_memory_bytes",
            help,
            ConstGauge::new(stat.vsize),
        )?;
        if let Some(page) = self.page_size {
            let rss = ConstGauge::new(stat.rss.saturating_mul(page));
            metric(
                e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                rss,
            )?;
        }
        let boot = procfs::read("/proc/stat").and_then(|t| procfs::parse_btime(&t));
        if let Some(boot) = boot {
            let start = boot as f64 + stat.starttime as f64 / self.ticks_per_second;
            let help = "Start time of the process since unix epoch in seconds";
            metric(
                e,
                "process_start_time_seconds",
                help,
                ConstGauge::new(start),
            )?;
        }
        let help = "Number of OS threads in the process";
        metric(e, "process_threads", help, ConstGauge::new(stat.threads))
    }
}

fn metric(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> Result<(), fmt::Error> {
    let descriptor = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(descriptor)
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn encodes_this_process() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector::new()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let value = |name: &str| -> f64 {
            let sample = text
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '));
            let sample = sample.unwrap_or_else(|| panic!("no {name} in:\n{text}"));
            sample.parse().unwrap()
        };

        assert!(
            text.contains("# TYPE process_cpu_seconds counter\n"),
            "{text}"
        );
        assert!(value("process_cpu_seconds_total") >= 0.0);
        let rss = value("process_resident_memory_bytes");
        assert!(rss > 100_000.0, "{text}");
        assert!(value("process_virtual_memory_bytes") >= rss, "{text}");
        let open = value("process_open_fds");
        assert!((3.0..=value("process_max_fds")).contains(&open), "{text}");
        assert!(value("process_threads") >= 1.0, "{text}");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let now = now.as_secs_f64();
        let start = value("process_start_time_seconds");
        // btime is whole seconds, so the start time can read up to a second late.
        assert!(
            (now - 3600.0..now + 2.0).contains(&start),
            "{start} vs now {now}"
        );
    }
}

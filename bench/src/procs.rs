//! The processes under test: started pinned to a CPU, measured through /proc, stopped by PID.

use std::ffi::OsString;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;

/// A started process, stopped (by its PID) and reaped when dropped.
#[derive(Debug)]
pub(crate) struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    /// Starts `program args…` pinned to `cpu` (through `taskset`, which execs it: the PID is
    /// the program's), stdout and stderr appended to `log`.
    pub(crate) fn start(
        name: &str,
        cpu: usize,
        program: &Path,
        args: &[OsString],
        log: &Path,
    ) -> anyhow::Result<Proc> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new("taskset")
            .arg("-c")
            .arg(cpu.to_string())
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}: taskset -c {cpu} {}", program.display()))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
        })
    }

    /// The process ID.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails, with the log's tail, if the process has exited.
    pub(crate) fn check_alive(&mut self, log: &Path) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow::bail!("{} exited ({status}):\n{}", self.name, tail.join("\n"));
        }
        Ok(())
    }

    /// Memory and CPU of the process and its children (nginx's workers).
    pub(crate) fn usage(&self) -> Usage {
        tree(self.pid())
            .into_iter()
            .map(|pid| Usage::of(pid).unwrap_or_default())
            .fold(Usage::default(), Usage::add)
    }
}

impl Drop for Proc {
    /// Asks the process to stop (SIGTERM: an instrumented build then writes its profile, and
    /// callgrind its last dump) and kills it if it has not within `STOP_GRACE`.
    fn drop(&mut self) {
        // nginx's workers outlive a killed master: they are stopped too, by the PIDs seen
        // just before.
        let descendants: Vec<u32> = tree(self.pid()).into_iter().skip(1).collect();
        signal("-TERM", self.pid());
        let deadline = Instant::now() + STOP_GRACE;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in descendants {
            signal("-KILL", pid);
        }
    }
}

/// How long a process asked to stop has before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Sends `signal` (as `kill` spells it) to `pid`; one that is gone already is no error.
fn signal(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Resource use read from /proc.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Usage {
    /// Resident set, KiB.
    pub(crate) rss_kib: u64,
    /// Of which anonymous memory (heap, stacks), KiB; the rest is mapped files (the binary and
    /// libraries), shared with every process that maps them.
    pub(crate) anon_kib: u64,
    /// Peak resident set, KiB.
    pub(crate) peak_rss_kib: u64,
    /// User plus system CPU time.
    pub(crate) cpu: Duration,
}

impl Usage {
    /// Usage of the one process `pid` (its children not included); fails when it has exited.
    pub(crate) fn of(pid: u32) -> anyhow::Result<Usage> {
        let read = |file: &str| {
            let path = format!("/proc/{pid}/{file}");
            std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))
        };
        let (status, stat) = (read("status")?, read("stat")?);
        Ok(Usage {
            rss_kib: status_kib(&status, "VmRSS:").unwrap_or(0),
            anon_kib: status_kib(&status, "RssAnon:").unwrap_or(0),
            peak_rss_kib: status_kib(&status, "VmHWM:").unwrap_or(0),
            cpu: stat_cpu(&stat, clock_ticks().per_second).unwrap_or_default(),
        })
    }

    fn add(self, other: Usage) -> Usage {
        Usage {
            rss_kib: self.rss_kib + other.rss_kib,
            anon_kib: self.anon_kib + other.anon_kib,
            peak_rss_kib: self.peak_rss_kib + other.peak_rss_kib,
            cpu: self.cpu + other.cpu,
        }
    }
}

/// `pid` and its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let children = std::fs::read_dir(format!("/proc/{}/task", all[i]))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
            .flat_map(|list| {
                list.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect::<Vec<u32>>();
        all.extend(children);
        i += 1;
    }
    all
}

/// A `Key:   123 kB` line of /proc/PID/status, in KiB.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// utime + stime (fields 14 and 15) of /proc/PID/stat, at `per_second` ticks a second. The
/// command name (field 2) may hold spaces and parentheses, so fields are counted after its last
/// closing parenthesis.
fn stat_cpu(stat: &str, per_second: u64) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) is index 11 and stime (15) index 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = utime + stime;
    let sub_second = ticks % per_second * 1_000_000_000 / per_second;
    Some(Duration::from_secs(ticks / per_second) + Duration::from_nanos(sub_second))
}

/// Clock ticks per second of /proc/PID/stat times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ClockTicks {
    /// Ticks per second.
    pub(crate) per_second: u64,
    /// True when `getconf CLK_TCK` failed and 100 was assumed.
    pub(crate) assumed: bool,
}

/// `getconf CLK_TCK`, looked up once; else 100 (`USER_HZ` on every mainstream Linux), flagged
/// as assumed.
pub(crate) fn clock_ticks() -> ClockTicks {
    static TICKS: OnceLock<ClockTicks> = OnceLock::new();
    *TICKS.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().ok();
        let parsed = out
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0);
        match parsed {
            Some(per_second) => ClockTicks {
                per_second,
                assumed: false,
            },
            None => ClockTicks {
                per_second: 100,
                assumed: true,
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_and_stat() {
        let status = "Name:\tnginx\nVmHWM:\t   10240 kB\nVmRSS:\t    8192 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(8192));
        assert_eq!(status_kib(status, "VmHWM:"), Some(10240));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 1 0 5 0 0";
        assert_eq!(stat_cpu(stat, 100), Some(Duration::from_millis(2800)));
        let stat = "42 (tokio (rt) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(stat_cpu(stat, 100), Some(Duration::from_millis(3250)));
        assert_eq!(stat_cpu(stat, 1000), Some(Duration::from_millis(325)));
    }

    #[test]
    fn measures_this_process() {
        let usage = Usage::of(std::process::id()).unwrap();
        assert!(usage.rss_kib > 0 && usage.peak_rss_kib >= usage.rss_kib);
    }
}

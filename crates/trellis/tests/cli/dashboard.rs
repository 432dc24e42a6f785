//! The dashboard in a real browser: headless Chromium (Debian's, driven by Python Playwright
//! through `dashboard.py`) loads it from a running `trellis demo`, sees the demo's services and
//! calls in the service graph, and saves a screenshot under `target/test-artifacts/`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{KillOnDrop, trellis, wait_with_deadline};

const CHROMIUM: &str = "/usr/bin/chromium";

/// `target/test-artifacts/`, beside the binary's profile directory.
fn artifacts() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_trellis"));
    let target = bin
        .ancestors()
        .nth(2)
        .expect("the binary is in target/PROFILE/");
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Fails loudly when the browser or Playwright is missing (scripts/test.sh installs both).
fn require_browser() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)"
    );
    let playwright = Command::new("python3")
        .args(["-c", "import playwright.sync_api"])
        .status()
        .expect("python3 runs");
    assert!(
        playwright.success(),
        "Python Playwright is missing: python3 -m pip install playwright (scripts/test.sh does)"
    );
}

/// PNG width and height from the IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn dashboard_shows_the_demo_in_headless_chromium() {
    require_browser();
    let mut demo = KillOnDrop(
        trellis()
            .args(["demo", "--duration", "90s", "--rps", "40"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Lines go through a channel so the pipe keeps draining while the browser runs.
    let (lines, printed) = mpsc::channel();
    let stdout = demo.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let url = loop {
        let line = printed
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("no dashboard URL from the demo ({e}):\n{seen:#?}"));
        if let Some(rest) = line.strip_prefix("dashboard: ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
        seen.push(line);
    };
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let screenshot = artifacts().join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cli/dashboard.py");
    let run = Command::new("python3")
        .arg(&script)
        .args(["--url", &url, "--chromium", CHROMIUM, "--timeout", "45"])
        .arg("--screenshot")
        .arg(&screenshot)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "dashboard check failed:\n{report}\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let shown = &report["shown"];
    for service in ["loadgen", "frontend", "catalog", "ratings"] {
        let listed = shown["services"].as_array().unwrap();
        assert!(listed.contains(&service.into()), "{service}: {shown:#}");
        if service != "loadgen" {
            let charts = shown["charts"].as_array().unwrap();
            assert!(charts.contains(&service.into()), "{service}: {shown:#}");
        }
    }
    for edge in [
        "loadgen->frontend",
        "frontend->catalog",
        "frontend->ratings",
    ] {
        let rps = shown["edges"][edge]["rps"].as_f64().unwrap_or_default();
        assert!(rps > 0.0, "{edge}: {shown:#}");
        assert_eq!(
            shown["edges"][edge]["success"], "1.0000",
            "{edge}: {shown:#}"
        );
    }
    let workloads = shown["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 5, "{shown:#}");
    assert!(
        workloads
            .iter()
            .all(|w| w[4].as_str().unwrap().contains("/sa/")),
        "every workload shows its identity: {shown:#}"
    );
    assert!(
        shown["routes"]
            .as_array()
            .unwrap()
            .contains(&"catalog-canary".into())
    );
    assert!(report["console_errors"].as_array().unwrap().is_empty());

    let png = std::fs::read(&screenshot).unwrap();
    let (width, height) = png_size(&png);
    assert!(width >= 1400 && height >= 900, "{width}x{height}");
    assert!(
        png.len() > 50_000,
        "a {} byte screenshot is blank",
        png.len()
    );

    // The demo stops cleanly on Ctrl-C, with every request answered.
    kill(Pid::from_raw(demo.0.id() as i32), Signal::SIGINT).unwrap();
    let status = wait_with_deadline(&mut demo.0, Duration::from_secs(30));
    let mut tail = Vec::new();
    while let Ok(line) = printed.recv_timeout(Duration::from_secs(5)) {
        tail.push(line);
    }
    let tail = &tail[tail.len().saturating_sub(8)..];
    assert!(
        status.success(),
        "the demo failed requests or did not stop ({status}):\n{}",
        tail.join("\n")
    );
}

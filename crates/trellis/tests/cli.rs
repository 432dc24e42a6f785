//! The `trellis` binary as users run it: the demo, `run` with real apps, and `control`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn trellis() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trellis"));
    cmd.env("RUST_LOG", "warn");
    // Never touch the user's ~/.trellis: commands that need a data dir get one explicitly.
    cmd.env(
        "TRELLIS_HOME",
        std::env::temp_dir().join("trellis-cli-test-unused"),
    );
    cmd
}

/// Waits for a child with a deadline; kills it (by its PID) if it overstays.
fn wait_with_deadline(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `trellis control` process on free ports; killed on drop.
struct Control {
    child: Child,
    xds: SocketAddr,
    admin: SocketAddr,
    token_file: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Control {
    /// `--control-plane URL --token-file PATH` for `trellis run`.
    fn sidecar_args(&self) -> [String; 4] {
        [
            "--control-plane".to_owned(),
            format!("http://{}", self.xds),
            "--token-file".to_owned(),
            self.token_file.clone(),
        ]
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_control() -> Control {
    let config = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let child = trellis()
        .args([
            "control",
            "--xds-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .arg("--config-dir")
        .arg(config.path())
        .arg("--data-dir")
        .arg(data.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let endpoints = data.path().join("endpoints.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !endpoints.exists() {
        assert!(
            Instant::now() < deadline,
            "control plane wrote no endpoints.json"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&endpoints).unwrap()).unwrap();
    Control {
        child,
        xds: json["xds"].as_str().unwrap().parse().unwrap(),
        admin: json["admin"].as_str().unwrap().parse().unwrap(),
        token_file: data.path().join("join-token").display().to_string(),
        _dirs: (config, data),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn demo_runs_bounded_and_shows_traffic_for_every_service() {
    let output = trellis()
        .args([
            "demo",
            "--duration",
            "6s",
            "--interval",
            "2s",
            "--rps",
            "40",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for service in ["frontend v1", "catalog v1", "catalog v2", "ratings v1"] {
        let busy = stdout.lines().any(|line| {
            line.contains(service)
                && line
                    .split_whitespace()
                    .nth(3)
                    .and_then(|rps| rps.parse::<f64>().ok())
                    .is_some_and(|rps| rps > 0.0)
        });
        assert!(busy, "no traffic shown for {service}:\n{stdout}");
    }
    assert!(
        stdout.contains("(Strict inbound)"),
        "the demo runs with STRICT mTLS:\n{stdout}"
    );
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("summary:"))
        .unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    assert!(summary.contains(" 0 failed"), "{summary}");
}

#[test]
fn run_exits_with_the_app_status_and_forwards_signals() {
    let control = start_control();
    let cp = control.sidecar_args();
    let status = trellis()
        .args(["run", "--service", "job", "--port", "1"])
        .args(&cp)
        .args(["--", "sh", "-c", "exit 7"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(7));

    let mut child = trellis()
        .args(["run", "--service", "daemon", "--port", "1"])
        .args(&cp)
        .args([
            "--",
            "sh",
            "-c",
            "trap 'exit 42' TERM; echo started; while true; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l == "started")),
        "the app never started"
    );
    kill(
        Pid::from_raw(i32::try_from(child.id()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_with_deadline(&mut child, Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(42),
        "SIGTERM reaches the app; its status is ours"
    );
}

#[test]
fn run_meshes_real_apps_end_to_end() {
    let control = start_control();
    let cp = control.sidecar_args();
    let port = free_port();
    let web_root = tempfile::tempdir().unwrap();
    std::fs::write(web_root.path().join("hello.txt"), "hello through the mesh").unwrap();
    let mut server = trellis()
        .args(["run", "--service", "files", "--port", &port.to_string()])
        .args(&cp)
        .args([
            "--",
            "python3",
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(web_root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = r#"
import os, sys, time, urllib.request
url = "http://" + os.environ["TRELLIS_UPSTREAM_FILES"] + "/hello.txt"
deadline = time.time() + 20
while True:
    try:
        body = urllib.request.urlopen(url, timeout=5).read().decode()
        print(body)
        sys.exit(0 if body == "hello through the mesh" else 3)
    except Exception as e:
        if time.time() > deadline:
            print("gave up:", e)
            sys.exit(2)
        time.sleep(0.1)
"#;
    let output = trellis()
        .args(["run", "--service", "client", "--port", "1"])
        .args(&cp)
        .args(["--upstream", "files=0", "--", "python3", "-c", client])
        .output()
        .unwrap();
    // SIGTERM to `trellis run`, which forwards it to the Python server it started.
    kill(
        Pid::from_raw(i32::try_from(server.id()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    wait_with_deadline(&mut server, Duration::from_secs(10));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client through the mesh failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("hello through the mesh"));
}

#[test]
fn control_refuses_a_missing_config_dir() {
    let output = trellis()
        .args(["control", "--config-dir", "/nonexistent/trellis-config"])
        .args(["--xds-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/trellis-config") && stderr.contains("not a directory"),
        "{stderr}"
    );
    assert!(!Path::new("/nonexistent/trellis-config").exists());
}

#[test]
fn identity_shows_lists_and_rotates_and_keys_stay_private() {
    use std::os::unix::fs::PermissionsExt;
    let control = start_control();
    let data = std::path::Path::new(&control.token_file)
        .parent()
        .unwrap()
        .to_owned();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(Path::new(&control.token_file)), 0o600, "join token");
    let keys: Vec<_> = std::fs::read_dir(data.join("ca"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".key.pem"))
        .collect();
    assert_eq!(keys.len(), 1);
    assert_eq!(mode(&keys[0]), 0o600, "root key");

    let admin = control.admin.to_string();
    let identity = |action: &str| {
        let out = trellis()
            .args(["identity", action, "--admin-addr", &admin])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let shown = identity("show");
    assert_eq!(
        shown.lines().filter(|l| l.contains("Active")).count(),
        1,
        "{shown}"
    );
    assert!(identity("list").starts_with("IDENTITY"));
    assert!(identity("rotate").contains("rotation started"));
    let shown = identity("show");
    assert!(
        shown.contains("Active") && shown.contains("Retiring"),
        "{shown}"
    );
}

//! The `trellis` and `trellis-proxy` binaries as users run them: the demo (and its dashboard
//! in a browser), `run` with real apps, `control` and sidecars.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[path = "cli/dashboard.rs"]
mod dashboard;
#[path = "cli/tap.rs"]
mod tap;

fn trellis() -> Command {
    command(env!("CARGO_BIN_EXE_trellis"))
}

/// `program` with quiet logs and no access to the user's ~/.trellis.
fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
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
    dirs: (tempfile::TempDir, tempfile::TempDir),
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

impl Control {
    /// Writes `yaml` as `name` into the watched config dir.
    fn write_config(&self, name: &str, yaml: &str) {
        std::fs::write(self.dirs.0.path().join(name), yaml).unwrap();
    }

    /// Starts `trellis proxy` with node id `node_id` and `args` (service, labels, upstreams).
    fn sidecar(&self, node_id: &str, args: &[&str]) -> KillOnDrop {
        let mut cmd = trellis();
        cmd.arg("proxy");
        self.spawn_sidecar(cmd, node_id, args)
    }

    /// Starts the standalone `trellis-proxy` binary, with the same flags as [`Self::sidecar`].
    fn standalone_sidecar(&self, node_id: &str, args: &[&str]) -> KillOnDrop {
        let cmd = command(env!("CARGO_BIN_EXE_trellis-proxy"));
        self.spawn_sidecar(cmd, node_id, args)
    }

    fn spawn_sidecar(&self, mut cmd: Command, node_id: &str, args: &[&str]) -> KillOnDrop {
        let child = cmd
            .args(["--node-id", node_id, "--app-port", "1", "--admin", "0"])
            .args(args)
            .args(self.sidecar_args())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        KillOnDrop(child)
    }

    /// Runs `trellis ARGS --admin-addr ADMIN`; returns success, stdout and stderr.
    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = trellis()
            .args(args)
            .args(["--admin-addr", &self.admin.to_string()])
            .output()
            .unwrap();
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        (out.status.success(), text(out.stdout), text(out.stderr))
    }
}

/// A child process killed (by its PID) and reaped on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
        dirs: (config, data),
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
        stdout.contains("dashboard: http://127.0.0.1:"),
        "the demo prints the dashboard URL:\n{stdout}"
    );
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
        .args(["--access-log", "json"])
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
        .stdout(Stdio::piped())
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

    // The server's sidecar logged the request it carried, one JSON object per line.
    let mut logged = String::new();
    std::io::Read::read_to_string(&mut server.stdout.take().unwrap(), &mut logged).unwrap();
    let entry: serde_json::Value = logged
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["path"] == "/hello.txt")
        .unwrap_or_else(|| panic!("no access log entry for /hello.txt in {logged:?}"));
    assert_eq!(
        (&entry["direction"], &entry["method"], &entry["status"]),
        (&"inbound".into(), &"GET".into(), &200.into()),
        "{entry}"
    );
    assert_eq!(
        entry["source_identity"],
        "spiffe://cluster.local/ns/default/sa/client"
    );
    assert_eq!(
        entry["destination_identity"],
        "spiffe://cluster.local/ns/default/sa/files"
    );
    assert_eq!(entry["bytes_sent"], 22, "{entry}");
    assert!(
        entry["duration_ms"].as_f64().is_some_and(|d| d > 0.0),
        "{entry}"
    );
    assert!(
        entry["upstream"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!(":{port}")))
    );
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
    // The new root is trusted at once and signs a minute later (a third of the 24 h SVIDs').
    let shown = identity("show");
    assert!(
        shown.contains("Active") && shown.contains("Next"),
        "{shown}"
    );
    let again = trellis()
        .args(["identity", "rotate", "--admin-addr", &admin])
        .output()
        .unwrap();
    let refusal = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && refusal.contains("already under way"),
        "a second rotation during the first: {refusal}"
    );
}

#[test]
fn trellis_proxy_in_agent_mode_serves_the_workload_certificate_on_an_owner_only_socket() {
    use std::os::unix::fs::PermissionsExt;
    let control = start_control();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sds.sock");
    let mut agent = KillOnDrop(
        command(env!("CARGO_BIN_EXE_trellis-proxy"))
            .arg("--sds-socket")
            .arg(&socket)
            .args(["--service", "web"])
            .args(control.sidecar_args())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    BufReader::new(agent.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(
        first.trim_end(),
        format!("trellis proxy: sds agent on {}", socket.display())
    );
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "owner-only SDS socket");
    let deadline = Instant::now() + Duration::from_secs(10);
    let web = "spiffe://cluster.local/ns/default/sa/web";
    loop {
        let (ok, list, _) = control.cli(&["identity", "list"]);
        if ok && list.contains(web) {
            break;
        }
        assert!(Instant::now() < deadline, "no SVID for {web}:\n{list}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Agent mode proxies nothing, so it takes no app port.
    let both = command(env!("CARGO_BIN_EXE_trellis-proxy"))
        .args([
            "--sds-socket",
            "x.sock",
            "--app-port",
            "1",
            "--service",
            "web",
        ])
        .output()
        .unwrap();
    assert!(!both.status.success());
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(
        stderr.contains("'--sds-socket <SDS_SOCKET>' cannot be used with '--app-port <APP_PORT>'"),
        "{stderr}"
    );
}

#[test]
fn stat_prints_a_table_and_names_an_unreachable_control_plane() {
    let control = start_control();
    let out = trellis()
        .args(["stat", "--window", "1m", "--by", "edge"])
        .args(["--admin-addr", &control.admin.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No proxies, no edges: the header alone.
    assert_eq!(
        stdout,
        "SRC  DST  MESHED  REQUESTS  SUCCESS  RPS  LATENCY_P50  LATENCY_P95  LATENCY_P99\n"
    );

    let unreachable = format!("127.0.0.1:{}", free_port());
    let out = trellis()
        .args(["stat", "--admin-addr", &unreachable])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("control plane's admin API at {unreachable}")),
        "{stderr}"
    );

    let out = trellis().args(["stat", "--by", "pod"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("service, route, edge"),
        "{stderr}"
    );
}

const CANARY: &str = "\
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: web}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: api}
spec:
  ports: [{port: 8080, protocol: HTTP}]
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: api-v1}
spec:
  selector: {app: api, version: v1}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: api-v2}
spec:
  selector: {app: api, version: v2}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api-canary}
spec:
  parentRefs: [{kind: Service, name: api}]
  rules:
  - backendRefs: [{name: api-v1, weight: 90}, {name: api-v2, weight: 10}]
";

/// Runs `trellis check` until its exit status is `passing` (the mesh settles, config reloads);
/// returns its last output.
fn check_until(control: &Control, passing: bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, stdout, stderr) = control.cli(&["check"]);
        if ok == passing {
            return stdout;
        }
        assert!(
            Instant::now() < deadline,
            "trellis check never {}:\n{stdout}{stderr}",
            if passing { "passed" } else { "failed" }
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn routes_proxy_config_and_check_read_a_running_mesh() {
    let control = start_control();
    control.write_config("mesh.yaml", CANARY);
    let _web = control.sidecar("web-1", &["--service", "web", "--upstream", "api=0"]);
    let _v1 = control.sidecar("api-1", &["--service", "api", "--label", "version=v1"]);
    // The sidecar binary without the rest of the CLI joins the same mesh the same way.
    let _v2 = control.standalone_sidecar("api-2", &["--service", "api", "--label", "version=v2"]);

    let passed = check_until(&control, true);
    for line in [
        "√ control plane is ready",
        "√ every connected proxy runs the current config (3 proxies connected)",
        "√ workload certificates are not near expiry (2 of 2 identities have one)",
        "√ every Service has at least one endpoint (4 services)",
        "√ every route is Accepted with all references resolved (1 route)",
    ] {
        assert!(
            passed.lines().any(|l| l == line),
            "no {line:?} in:\n{passed}"
        );
    }
    assert!(!passed.contains('×'), "{passed}");
    assert!(passed.ends_with("Status check results are √\n"), "{passed}");

    let (ok, routes, stderr) = control.cli(&["routes"]);
    assert!(ok, "{stderr}");
    let canary = routes.lines().find(|l| l.contains("api-canary"));
    let words = canary.map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "));
    assert_eq!(
        words.as_deref(),
        Some("default api-canary HTTPRoute api api-v1 (90), api-v2 (10) Accepted, ResolvedRefs"),
        "{routes}"
    );

    // By service: web has one proxy. Its outbound listener and the canary's clusters, with
    // each version's endpoint.
    let (ok, config, stderr) = control.cli(&["proxy-config", "web"]);
    assert!(ok, "{stderr}");
    assert!(
        config.starts_with("proxy web-1 (service web), versions: "),
        "{config}"
    );
    for part in ["LISTENERS", "ROUTES", "CLUSTERS", "ENDPOINTS"] {
        assert!(config.lines().any(|l| l == part), "no {part} in:\n{config}");
    }
    let listener = config.lines().find(|l| l.starts_with("outbound|api|"));
    assert!(
        listener.is_some_and(|l| l.contains("http rds outbound|api.default")),
        "{config}"
    );
    assert!(
        config.contains("→ outbound|api-v1.default (90), outbound|api-v2.default (10)"),
        "{config}"
    );
    let endpoint_rows = config
        .lines()
        .skip_while(|l| *l != "ENDPOINTS")
        .filter(|l| l.starts_with("outbound|api-v") && l.contains("127.0.0.1:"));
    assert_eq!(endpoint_rows.count(), 2, "{config}");

    // By node id prefix, one part as JSON.
    let (ok, json, stderr) =
        control.cli(&["proxy-config", "api-2", "--type", "clusters", "--json"]);
    assert!(ok, "{stderr}");
    let clusters: serde_json::Value = serde_json::from_str(&json).unwrap();
    let names: Vec<&str> = clusters
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("inbound|")), "{names:?}");

    let (ok, _, stderr) = control.cli(&["proxy-config", "api"]);
    assert!(!ok);
    assert!(
        stderr.contains("service \"api\" has 2 proxies: api-1 (api), api-2 (api); name one"),
        "{stderr}"
    );
    let (ok, _, stderr) = control.cli(&["proxy-config", "nobody"]);
    assert!(!ok);
    assert!(
        stderr.contains("no connected proxy has node id, node id prefix or service \"nobody\""),
        "{stderr}"
    );

    // A Service nothing backs and a route to a Service that does not exist.
    control.write_config(
        "broken.yaml",
        "\
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: lonely}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-ghost}
spec:
  parentRefs: [{kind: Service, name: web}]
  rules:
  - backendRefs: [{name: ghost}]
",
    );
    let failed = check_until(&control, false);
    for line in [
        "× every Service has at least one endpoint",
        "    lonely.default has no endpoints",
        "× every route is Accepted with all references resolved",
        "    HTTPRoute default/to-ghost: ResolvedRefs BackendNotFound: Services not found: ghost.default (spec.rules[0].backendRefs[0])",
    ] {
        assert!(
            failed.lines().any(|l| l == line),
            "no {line:?} in:\n{failed}"
        );
    }
    assert!(failed.contains("    hint: `trellis routes`"), "{failed}");
    assert!(failed.ends_with("Status check results are ×\n"), "{failed}");
    let (_, routes, _) = control.cli(&["routes"]);
    assert!(
        routes
            .lines()
            .any(|l| l.contains("to-ghost") && l.ends_with("ResolvedRefs=False (BackendNotFound)")),
        "{routes}"
    );
}

#[test]
fn check_fails_on_an_unreachable_control_plane() {
    let unreachable = format!("127.0.0.1:{}", free_port());
    let out = trellis()
        .args(["check", "--admin-addr", &unreachable])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!(
            "control plane\n-------------\n× control plane is reachable at {unreachable}\n"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("    hint: start it with `trellis control"),
        "{stdout}"
    );
}

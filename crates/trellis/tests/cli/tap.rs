//! `trellis tap` and `trellis top` against `trellis control`, a `trellis proxy` sidecar and
//! Python's http.server behind it, with requests sent straight to the sidecar's inbound port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Control, KillOnDrop, free_port, start_control, trellis, wait_with_deadline};

/// `GET path` on a fresh connection; the status and body, or `None` when it fails.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: files\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Runs `f` while a thread sends `paths` to `addr` in turn, every 50 ms.
fn with_traffic<T>(addr: SocketAddr, paths: &'static [&'static str], f: impl FnOnce() -> T) -> T {
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for path in paths {
                    get(addr, path);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let result = f();
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    result
}

/// The inbound address of the sidecar of `service`, once it serves `path` with 200.
fn serving(control: &Control, service: &str, path: &str) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let inbound = get(control.admin, "/api/workloads").and_then(|(_, body)| {
            let workloads: serde_json::Value = serde_json::from_str(&body).ok()?;
            let workload = workloads
                .as_array()?
                .iter()
                .find(|w| w["service"] == service)?;
            workload["address"].as_str()?.parse::<SocketAddr>().ok()
        });
        if let Some(inbound) = inbound
            && get(inbound, path).is_some_and(|(status, _)| status == 200)
        {
            return inbound;
        }
        assert!(Instant::now() < deadline, "{service} never served {path}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tap_and_top_show_the_requests_of_a_real_sidecar() {
    let control = start_control();
    let admin = control.admin.to_string();
    let port = free_port().to_string();
    let web_root = tempfile::tempdir().unwrap();
    std::fs::write(web_root.path().join("hello.txt"), "hello through the mesh").unwrap();
    let _app = KillOnDrop(
        Command::new("python3")
            .args(["-m", "http.server", &port, "--bind", "127.0.0.1"])
            .current_dir(web_root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the app"),
    );
    let _sidecar = KillOnDrop(
        trellis()
            .args(["proxy", "--service", "files", "--node-id", "files-1"])
            .args(["--app-port", &port, "--admin", "0"])
            .args(control.sidecar_args())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let inbound = serving(&control, "files", "/hello.txt");

    // Two requests, then it stops by itself. /missing is filtered out by path.
    let mut tap = KillOnDrop(
        trellis()
            .args(["tap", "files", "--max", "2", "--path", "/hello"])
            .args(["--admin-addr", &admin])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let status = with_traffic(inbound, &["/missing", "/hello.txt?n=1"], || {
        wait_with_deadline(&mut tap.0, Duration::from_secs(20))
    });
    let (mut stdout, mut stderr) = (String::new(), String::new());
    tap.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    tap.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for line in lines {
        assert!(
            line.starts_with(
                "req inbound :method=GET :authority=files :path=/hello.txt?n=1  rsp :status=200 latency="
            ),
            "{line}"
        );
        assert!(line.contains(" bytes=22 src=127.0.0.1:"), "{line}");
        assert!(line.contains(&format!(" dst=127.0.0.1:{port} ")), "{line}");
        assert!(line.ends_with(" proxy=files-1"), "{line}");
    }

    // Counted for two seconds, printed once: /hello.txt (query left out) three times as often
    // as /missing, whose 404s are no failures.
    let output = with_traffic(
        inbound,
        &["/hello.txt?a=1", "/hello.txt?b=2", "/hello.txt", "/missing"],
        || {
            trellis()
                .args(["top", "files", "--once", "--duration", "2s"])
                .args(["--admin-addr", &admin])
                .output()
                .unwrap()
        },
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "one table, two paths:\n{table}");
    assert_eq!(
        rows[0],
        [
            "DIRECTION",
            "METHOD",
            "PATH",
            "COUNT",
            "BEST",
            "WORST",
            "LAST",
            "SUCCESS"
        ]
    );
    assert_eq!(rows[1][..3], ["inbound", "GET", "/hello.txt"], "{table}");
    assert_eq!(rows[2][..3], ["inbound", "GET", "/missing"], "{table}");
    let count = |row: &[&str]| row[3].parse::<u64>().unwrap();
    // Rounds of three /hello.txt then one /missing: the counts are 3:1 but for the rounds cut
    // at either end of the two seconds.
    let (hello, missing) = (count(&rows[1]), count(&rows[2]));
    assert!(missing >= 1, "{table}");
    assert!(hello.abs_diff(3 * missing) <= 3, "{table}");
    assert!(rows[1..].iter().all(|r| r[7] == "100.00%"), "{table}");

    // Until Ctrl-C, as JSON.
    let mut tap = KillOnDrop(
        trellis()
            .args(["tap", "files", "-o", "json", "--admin-addr", &admin])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The reader stays open until the signal, so only the signal can end the tap. Lines are
    // read on a thread so that a tap printing nothing fails the test instead of hanging it.
    let stdout = BufReader::new(tap.0.stdout.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = with_traffic(inbound, &["/hello.txt"], || {
        lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a tap line within 10 s")
            .unwrap()
    });
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["proxy"], "files-1", "{first}");
    assert_eq!(first["event"]["path"], "/hello.txt", "{first}");
    kill(
        Pid::from_raw(i32::try_from(tap.0.id()).unwrap()),
        Signal::SIGINT,
    )
    .unwrap();
    let status = wait_with_deadline(&mut tap.0, Duration::from_secs(10));
    assert!(status.success(), "Ctrl-C ends the tap: {status}");
    drop(lines);

    let (ok, _, stderr) = control.cli(&["tap", "nobody"]);
    assert!(!ok);
    assert!(
        stderr.contains(
            "HTTP 404: no connected proxy of service \"nobody\" in namespace \"default\""
        ),
        "{stderr}"
    );
}

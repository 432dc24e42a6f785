//! `trellis top SERVICE`: a service's most frequent requests by direction, method and path
//! (query left out), counted from the control plane's `/api/tap` since the command started and
//! redrawn every interval, like `linkerd viz top`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write as _};
use std::process::ExitCode;

use super::api::get_lines;
use super::table::Table;
use super::tap::{Event, TapLine, api_path, latency};
use crate::cli::TopArgs;
use trellis::signal::Signals;

/// Distinct (direction, method, path) kept; requests on further ones are counted apart, so a
/// service with unbounded paths cannot grow the table without bound.
const MAX_KEYS: usize = 10_000;

/// ANSI: cursor home, clear screen.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// What requests are grouped by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    direction: String,
    method: String,
    path: String,
}

/// One group's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Figures {
    count: u64,
    successes: u64,
    /// Fastest, slowest and latest duration, in milliseconds.
    best: f64,
    worst: f64,
    last: f64,
}

/// The requests seen so far, per (direction, method, path).
#[derive(Debug, Default)]
pub(crate) struct Top {
    groups: HashMap<Key, Figures>,
    /// Requests on paths past [`MAX_KEYS`].
    untracked: u64,
    /// Requests the proxies skipped because the tap fell behind.
    missed: u64,
}

impl Top {
    /// Counts one finished request.
    pub(crate) fn record(&mut self, e: &Event) {
        let path = e.path.split_once('?').map_or(e.path.as_str(), |(p, _)| p);
        let key = Key {
            direction: e.direction.clone(),
            method: e.method.clone(),
            path: path.to_owned(),
        };
        let ms = e.duration_ms;
        let success = u64::from(e.success());
        if let Some(f) = self.groups.get_mut(&key) {
            f.count += 1;
            f.successes += success;
            f.best = f.best.min(ms);
            f.worst = f.worst.max(ms);
            f.last = ms;
        } else if self.groups.len() < MAX_KEYS {
            let figures = Figures {
                count: 1,
                successes: success,
                best: ms,
                worst: ms,
                last: ms,
            };
            self.groups.insert(key, figures);
        } else {
            self.untracked += 1;
        }
    }

    /// Takes one line of `/api/tap`; notes about a proxy's tap go to stderr.
    fn take(&mut self, line: &str) {
        match serde_json::from_str::<TapLine>(line) {
            Ok(TapLine {
                event: Some(event), ..
            }) => self.record(&event),
            Ok(TapLine {
                missed: Some(missed),
                ..
            }) => self.missed += missed,
            Ok(TapLine {
                proxy,
                error: Some(error),
                ..
            }) => eprintln!("proxy {proxy}: {error}"),
            Ok(_) | Err(_) => {}
        }
    }

    /// The `rows` most frequent groups (ties by direction, method, path) as a table, and a
    /// line for what it leaves out.
    pub(crate) fn render(&self, rows: usize) -> String {
        let mut groups: Vec<(&Key, &Figures)> = self.groups.iter().collect();
        groups.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(b.0)));
        let headers = [
            "DIRECTION",
            "METHOD",
            "PATH",
            "COUNT",
            "BEST",
            "WORST",
            "LAST",
            "SUCCESS",
        ];
        let mut table = Table::new(&headers);
        for (key, f) in groups.iter().take(rows) {
            let success = f.successes as f64 / f.count as f64 * 100.0;
            table.row(vec![
                key.direction.clone(),
                key.method.clone(),
                key.path.clone(),
                f.count.to_string(),
                latency(f.best),
                latency(f.worst),
                latency(f.last),
                format!("{success:.2}%"),
            ]);
        }
        let mut out = table.render();
        let hidden = groups.len().saturating_sub(rows);
        if hidden > 0 {
            out.push_str(&format!("({hidden} less frequent paths not shown)\n"));
        }
        if self.untracked > 0 {
            out.push_str(&format!(
                "({} requests on paths past the first {MAX_KEYS} not counted)\n",
                self.untracked
            ));
        }
        if self.missed > 0 {
            out.push_str(&format!(
                "({} requests missed: the tap fell behind)\n",
                self.missed
            ));
        }
        out
    }
}

pub(crate) async fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    let path = api_path(&args.filter, None);
    let mut lines = get_lines(args.filter.admin_addr, &path).await?;
    let mut signals = Signals::new()?;
    let draw = if args.once {
        Draw::Once
    } else if std::io::stdout().is_terminal() {
        Draw::Over
    } else {
        Draw::Below
    };
    let mut top = Top::default();
    let mut redraw = tokio::time::interval(args.interval);
    // The first tick is immediate: draw the (empty) table at once.
    let stop = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            line = lines.next() => match line? {
                Some(line) => top.take(&line),
                None => {
                    eprintln!("the tap ended: every proxy's tap closed (the proxies went away)");
                    break;
                }
            },
            _ = redraw.tick(), if !args.once => {
                if !show(&top, args.rows, draw) {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            () = &mut stop => break,
            _ = signals.next() => break,
        }
    }
    show(&top, args.rows, draw);
    Ok(ExitCode::SUCCESS)
}

/// How tables follow each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Draw {
    /// On a terminal: each table replaces the previous one.
    Over,
    /// Elsewhere: each table below the previous one, after a blank line.
    Below,
    /// One table at the end.
    Once,
}

/// Prints the table; false when stdout is closed.
fn show(top: &Top, rows: usize, draw: Draw) -> bool {
    let table = top.render(rows);
    let text = match draw {
        Draw::Over => format!("{CLEAR}{table}"),
        Draw::Below => format!("{table}\n"),
        Draw::Once => table,
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).is_ok() && stdout.flush().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(direction: &str, method: &str, path: &str, status: u16, ms: f64) -> Event {
        Event {
            direction: direction.into(),
            method: method.into(),
            path: path.into(),
            status,
            duration_ms: ms,
            ..Event::default()
        }
    }

    #[test]
    fn groups_by_direction_method_and_path_without_query_most_frequent_first() {
        let mut top = Top::default();
        for (path, status, ms) in [
            ("/items?page=1", 200, 12.0),
            ("/items?page=2", 500, 3.5),
            ("/items", 200, 40.0),
            ("/health", 200, 0.4),
        ] {
            top.record(&event("inbound", "GET", path, status, ms));
        }
        top.record(&event("outbound", "POST", "/orders", 201, 25.0));
        top.record(&event("outbound", "POST", "/orders", 201, 20.0));
        assert_eq!(
            top.render(20),
            "DIRECTION  METHOD  PATH     COUNT  BEST   WORST  LAST   SUCCESS\n\
             inbound    GET     /items   3      3.5ms  40ms   40ms   66.67%\n\
             outbound   POST    /orders  2      20ms   25ms   20ms   100.00%\n\
             inbound    GET     /health  1      0.4ms  0.4ms  0.4ms  100.00%\n"
        );
        let shown = top.render(1);
        assert!(
            shown.ends_with("(2 less frequent paths not shown)\n"),
            "{shown}"
        );
    }

    #[test]
    fn tap_lines_are_counted_and_notes_kept_apart() {
        let mut top = Top::default();
        top.take(r#"{"proxy":"a","event":{"direction":"inbound","method":"GET","path":"/x","status":200,"duration_ms":1.0}}"#);
        top.take(r#"{"proxy":"a","missed":4}"#);
        top.take(r#"{"proxy":"b","error":"refused"}"#);
        top.take("not json");
        let shown = top.render(20);
        assert!(
            shown.contains("inbound    GET     /x    1      1.0ms"),
            "{shown}"
        );
        assert!(
            shown.ends_with("(4 requests missed: the tap fell behind)\n"),
            "{shown}"
        );
    }

    #[test]
    fn paths_past_the_cap_are_counted_apart() {
        let mut top = Top::default();
        for i in 0..MAX_KEYS + 3 {
            top.record(&event("inbound", "GET", &format!("/u/{i}"), 200, 1.0));
        }
        top.record(&event("inbound", "GET", "/u/0", 200, 1.0));
        assert_eq!(top.groups.len(), MAX_KEYS);
        assert_eq!(top.untracked, 3);
        assert!(top.render(1).contains("/u/0  2"), "{}", top.render(1));
    }
}

//! One stream out of many proxies' taps: a task per proxy reads its `/tap` lines, names the
//! proxy in each, and hands them over a bounded channel to whoever streams the answer.
//! Dropping the merged tap aborts the readers, which closes every proxy connection.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::body::Bytes;
use futures_util::Stream;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::proxy_admin::{self, Lines, ProxyAdminError};
use crate::stats::Target;

/// Lines the readers may get ahead of the client. A slow client stalls the readers, then the
/// proxies' sockets, and finally each proxy skips events and says how many (`missed`), so
/// nothing grows without bound.
const CHANNEL: usize = 64;

/// A line of the merged stream.
#[derive(Debug)]
struct Line {
    /// The JSON object and its newline.
    bytes: Bytes,
    /// A request event, which the limit counts (notes of missed events and errors are not).
    event: bool,
}

/// The merged taps of several proxies, read with [`MergedTap::next`] or as a body stream.
#[derive(Debug)]
pub(crate) struct MergedTap {
    /// Sent before the proxies' lines: the proxies that could not be tapped.
    first: VecDeque<Bytes>,
    lines: mpsc::Receiver<Line>,
    /// Dropped with the merged tap, which aborts every reader and so closes its proxy
    /// connection.
    _readers: JoinSet<()>,
    /// Events still to show, when limited.
    remaining: Option<usize>,
}

impl MergedTap {
    /// Opens `path` (a `/tap?...` request) on every proxy at once, each within
    /// [`proxy_admin::TIMEOUT`], and starts reading those that answered; `open_taps` counts
    /// the readers alive. Fails with each proxy's error when none could be tapped.
    pub(crate) async fn open(
        proxies: Vec<Target>,
        path: &str,
        limit: Option<usize>,
        open_taps: Gauge,
    ) -> Result<MergedTap, Vec<(String, ProxyAdminError)>> {
        let opening = proxies
            .iter()
            .map(|p| proxy_admin::get_lines(p.admin.as_deref(), path));
        let opened = futures_util::future::join_all(opening).await;
        let (tx, rx) = mpsc::channel(CHANNEL);
        let mut readers = JoinSet::new();
        let mut failed = Vec::new();
        for (proxy, result) in proxies.into_iter().zip(opened) {
            match result {
                Ok(lines) => {
                    let open = OpenTap::new(open_taps.clone());
                    readers.spawn(read(proxy.node_id, lines, tx.clone(), open));
                }
                Err(e) => failed.push((proxy.node_id, e)),
            }
        }
        if readers.is_empty() {
            return Err(failed);
        }
        let first = failed
            .iter()
            .map(|(node_id, e)| note(node_id, "error", e.to_string().into()).bytes)
            .collect();
        Ok(MergedTap {
            first,
            lines: rx,
            _readers: readers,
            remaining: limit,
        })
    }

    /// The next line (JSON and newline); `None` once the limit is reached or every proxy's
    /// tap ended.
    pub(crate) async fn next(&mut self) -> Option<Bytes> {
        if self.remaining == Some(0) {
            return None;
        }
        if let Some(line) = self.first.pop_front() {
            return Some(line);
        }
        let line = self.lines.recv().await?;
        if let (true, Some(remaining)) = (line.event, &mut self.remaining) {
            *remaining -= 1;
        }
        Some(line.bytes)
    }

    /// The lines as a response body's stream; dropping it (the client went away) or reaching
    /// its end drops the merged tap and so closes the proxies' taps.
    pub(crate) fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
        futures_util::stream::unfold(self, |mut tap| async move {
            let line = tap.next().await?;
            Some((Ok(line), tap))
        })
    }
}

/// Counts a proxy tap while its reader lives (`trellis_control_proxy_taps`).
#[derive(Debug)]
struct OpenTap(Gauge);

impl OpenTap {
    fn new(gauge: Gauge) -> OpenTap {
        gauge.inc();
        OpenTap(gauge)
    }
}

impl Drop for OpenTap {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Reads one proxy's tap into `tx` until it ends, the merged stream is gone, or the reader is
/// aborted.
async fn read(node_id: String, mut lines: Lines, tx: mpsc::Sender<Line>, _open: OpenTap) {
    loop {
        let (line, last) = match lines.next().await {
            Ok(Some(line)) if line.is_empty() => continue,
            Ok(Some(line)) => (annotate(&node_id, &line), false),
            Ok(None) => return,
            Err(e) => {
                let message = format!("the tap ended: {e}");
                (note(&node_id, "error", message.into()), true)
            }
        };
        if tx.send(line).await.is_err() || last {
            return;
        }
    }
}

/// What the merge reads of a proxy's line: `{"missed":N}` or else an event.
#[derive(Deserialize)]
struct Probe {
    missed: Option<u64>,
}

/// A proxy's line as a merged line: the event wrapped with the proxy's node id (the event's
/// bytes kept as they are), or a note of missed events or of a line that is not JSON.
fn annotate(node_id: &str, line: &[u8]) -> Line {
    // Serde would also read a struct from an array.
    if line.trim_ascii_start().first() != Some(&b'{') {
        return note(
            node_id,
            "error",
            "not a tap event: not a JSON object".into(),
        );
    }
    match serde_json::from_slice::<Probe>(line) {
        Ok(Probe {
            missed: Some(missed),
        }) => note(node_id, "missed", missed.into()),
        Ok(Probe { missed: None }) => {
            let mut bytes = Vec::with_capacity(line.len() + node_id.len() + 24);
            bytes.extend_from_slice(b"{\"proxy\":");
            // A string always serializes.
            let _ = serde_json::to_writer(&mut bytes, node_id);
            bytes.extend_from_slice(b",\"event\":");
            bytes.extend_from_slice(line);
            bytes.extend_from_slice(b"}\n");
            Line {
                bytes: bytes.into(),
                event: true,
            }
        }
        Err(e) => note(node_id, "error", format!("not a tap event: {e}").into()),
    }
}

/// `{"proxy":NODE_ID,"KEY":VALUE}` and a newline.
fn note(node_id: &str, key: &str, value: serde_json::Value) -> Line {
    let node_id = serde_json::Value::from(node_id);
    Line {
        bytes: format!("{{\"proxy\":{node_id},\"{key}\":{value}}}\n").into(),
        event: false,
    }
}

#[cfg(test)]
mod tests;

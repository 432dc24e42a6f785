//! Load generation over HTTP/1.1 keep-alive or HTTP/2 (h2c, prior knowledge), plaintext or
//! mutual TLS.
//!
//! Fixed-rate runs are open loop: request `i` is due at `start + i / rate` and its latency is
//! measured from that due time, not from when a connection got round to sending it, so a
//! stall counts against every request it delays (no coordinated omission).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The authority every request names: the benchmark's backend service.
pub(crate) const AUTHORITY: &str = "bench-backend";

/// Before a due time, sleep on the timer until this close, then yield in a loop: tokio's timer
/// has a 1 ms granularity, far coarser than the gaps between requests at thousands per second.
const SPIN: Duration = Duration::from_millis(2);

/// Largest latency the histograms hold (longer ones are clamped): 60 s in µs.
const MAX_LATENCY_US: u64 = 60_000_000;

/// HTTP version spoken to the first hop.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
pub(crate) enum Proto {
    /// HTTP/1.1 with keep-alive.
    H1,
    /// HTTP/2 over cleartext, prior knowledge.
    H2,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::H1 => "HTTP/1.1",
            Proto::H2 => "HTTP/2",
        })
    }
}

/// Where requests go and how.
#[derive(Clone)]
pub(crate) struct Target {
    /// Address of the first hop (or the backend, for the direct baseline).
    pub(crate) addr: SocketAddr,
    /// HTTP version.
    pub(crate) proto: Proto,
    /// Client TLS (with a client certificate), when the first hop wants mutual TLS.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

/// One open client connection.
pub(crate) struct Conn {
    sender: Sender,
}

impl Target {
    /// Opens a connection (and completes the TLS handshake, if any).
    pub(crate) async fn connect(&self) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let sender = match &self.tls {
            None => handshake(TokioIo::new(tcp), self.proto).await?,
            Some(config) => {
                let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
                let tls = TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {}", self.addr))?;
                handshake(TokioIo::new(tls), self.proto).await?
            }
        };
        Ok(Conn { sender })
    }
}

async fn handshake<I>(io: I, proto: Proto) -> anyhow::Result<Sender>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    Ok(match proto {
        Proto::H1 => {
            let (sender, conn) = http1::handshake(io).await?;
            tokio::spawn(conn);
            Sender::H1(sender)
        }
        Proto::H2 => {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Sender::H2(sender)
        }
    })
}

impl Conn {
    /// `GET /` and read the whole response; anything but 2xx is an error.
    pub(crate) async fn get(&mut self) -> anyhow::Result<()> {
        let response = match &mut self.sender {
            Sender::H1(sender) => {
                let request = Request::get("/")
                    .header(header::HOST, AUTHORITY)
                    .body(Empty::new())?;
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Sender::H2(sender) => {
                let request = Request::get(format!("http://{AUTHORITY}/")).body(Empty::new())?;
                sender.ready().await?;
                sender.send_request(request).await?
            }
        };
        let status = response.status();
        response.into_body().collect().await?;
        if !status.is_success() {
            bail!("status {status}");
        }
        Ok(())
    }
}

/// What a run measured (requests after the warm-up only).
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Successful requests.
    pub(crate) ok: u64,
    /// Failed requests (connect errors, resets, non-2xx).
    pub(crate) errors: u64,
    /// The first error seen, to say what went wrong.
    pub(crate) first_error: Option<String>,
    /// Length of the measured window.
    pub(crate) window: Duration,
    /// Latency in µs.
    pub(crate) latency: Histogram<u64>,
}

impl Outcome {
    fn new(window: Duration) -> Outcome {
        Outcome {
            ok: 0,
            errors: 0,
            first_error: None,
            window,
            latency: histogram(),
        }
    }

    /// Adds `other`, measured over a window of its own after this one's.
    pub(crate) fn append(&mut self, other: Outcome) {
        self.window += other.window;
        self.merge(other);
    }

    /// Adds `other`, measured over the same window (another connection's share).
    fn merge(&mut self, other: Outcome) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
    }

    fn record(&mut self, result: anyhow::Result<()>, latency: Duration) {
        match result {
            Ok(()) => {
                self.ok += 1;
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.latency.saturating_record(us.clamp(1, MAX_LATENCY_US));
            }
            Err(e) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(format!("{e:#}"));
                }
            }
        }
    }

    /// Successful requests per second over the window.
    pub(crate) fn rate(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }

    /// Latency at quantile `q` (0..=1) in µs.
    pub(crate) fn quantile_us(&self, q: f64) -> u64 {
        self.latency.value_at_quantile(q)
    }
}

fn histogram() -> Histogram<u64> {
    // Valid bounds (1 ≤ low, high ≥ 2·low, 3 significant figures): construction cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// How long a run lasts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phases {
    /// Requests sent but not measured, first.
    pub(crate) warmup: Duration,
    /// The measured window.
    pub(crate) measure: Duration,
}

/// Sends `rate` requests per second over `connections` connections, open loop.
pub(crate) async fn fixed_rate(
    target: &Target,
    connections: usize,
    rate: u32,
    phases: Phases,
) -> anyhow::Result<Outcome> {
    let rate = u64::from(rate.max(1));
    let nanos_per_request = 1_000_000_000 / rate;
    let first_measured = due_count(phases.warmup, rate);
    let total = first_measured + due_count(phases.measure, rate);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(20);
    let mut workers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut conn = target.connect().await?;
        let target = target.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut outcome = Outcome::new(phases.measure);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let due = start + Duration::from_nanos(i * nanos_per_request);
                pace_until(due).await;
                let result = conn.get().await;
                let failed = result.is_err();
                if i >= first_measured {
                    outcome.record(result, due.elapsed());
                }
                if failed {
                    conn = reconnect(&target).await;
                }
            }
            outcome
        }));
    }
    collect(workers, phases.measure).await
}

/// Requests due in `span` at `rate` per second.
fn due_count(span: Duration, rate: u64) -> u64 {
    (span.as_secs_f64() * rate as f64).round() as u64
}

/// Sends back to back over `connections` connections (closed loop): the highest rate the
/// path sustains. Latency here is per request, from send to last byte.
pub(crate) async fn max_rate(
    target: &Target,
    connections: usize,
    phases: Phases,
) -> anyhow::Result<Outcome> {
    let measure_from = Instant::now() + phases.warmup;
    let end = measure_from + phases.measure;
    let mut workers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut conn = target.connect().await?;
        let target = target.clone();
        workers.push(tokio::spawn(async move {
            let mut outcome = Outcome::new(phases.measure);
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let result = conn.get().await;
                let failed = result.is_err();
                if sent >= measure_from {
                    outcome.record(result, sent.elapsed());
                }
                if failed {
                    conn = reconnect(&target).await;
                }
            }
            outcome
        }));
    }
    collect(workers, phases.measure).await
}

/// New connections per second, each making one request (with TLS: full handshakes, as the
/// client offers no session tickets). `concurrency` connections are being made at a time.
pub(crate) async fn connection_rate(
    target: &Target,
    concurrency: usize,
    measure: Duration,
) -> anyhow::Result<Outcome> {
    let end = Instant::now() + measure;
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let target = target.clone();
        workers.push(tokio::spawn(async move {
            let mut outcome = Outcome::new(measure);
            while Instant::now() < end {
                let started = Instant::now();
                let result = async { target.connect().await?.get().await }.await;
                outcome.record(result, started.elapsed());
            }
            outcome
        }));
    }
    collect(workers, measure).await
}

/// Opens `count` connections, each after one successful request, and keeps them open (idle)
/// until the returned value is dropped.
pub(crate) async fn hold(target: &Target, count: usize) -> anyhow::Result<Vec<Conn>> {
    const PARALLEL: usize = 64;
    let mut held = Vec::with_capacity(count);
    while held.len() < count {
        let batch = PARALLEL.min(count - held.len());
        let mut opening = Vec::with_capacity(batch);
        for _ in 0..batch {
            let target = target.clone();
            opening.push(tokio::spawn(async move {
                let mut conn = target.connect().await?;
                conn.get().await?;
                anyhow::Ok(conn)
            }));
        }
        for task in opening {
            held.push(task.await?.with_context(|| {
                format!("opening idle connection {} of {count}", held.len() + 1)
            })?);
        }
    }
    Ok(held)
}

/// Polls until a request through `target` succeeds; how long that took.
pub(crate) async fn until_serving(target: &Target, limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut last_error = None;
    while started.elapsed() < limit {
        match async { target.connect().await?.get().await }.await {
            Ok(()) => return Ok(started.elapsed()),
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    match last_error {
        Some(e) => Err(e.context(format!("{} not serving after {limit:?}", target.addr))),
        None => bail!("{} not serving after {limit:?}", target.addr),
    }
}

async fn pace_until(due: Instant) {
    if let Some(wait) = due.checked_duration_since(Instant::now())
        && wait > SPIN
    {
        tokio::time::sleep_until((due - SPIN).into()).await;
    }
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

/// A fresh connection after a failure, retrying every 10 ms (the run's error count already
/// says something broke).
async fn reconnect(target: &Target) -> Conn {
    loop {
        if let Ok(conn) = target.connect().await {
            return conn;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn collect(
    workers: Vec<tokio::task::JoinHandle<Outcome>>,
    window: Duration,
) -> anyhow::Result<Outcome> {
    let mut total = Outcome::new(window);
    for worker in workers {
        total.merge(worker.await?);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_count_rounds_to_whole_requests() {
        assert_eq!(due_count(Duration::from_secs(10), 500), 5000);
        assert_eq!(due_count(Duration::from_millis(1500), 2000), 3000);
        assert_eq!(due_count(Duration::ZERO, 8000), 0);
    }

    #[test]
    fn outcome_counts_and_quantiles() {
        let mut outcome = Outcome::new(Duration::from_secs(2));
        for us in 1..=100 {
            outcome.record(Ok(()), Duration::from_micros(us));
        }
        outcome.record(Err(anyhow::anyhow!("reset")), Duration::ZERO);
        assert_eq!(outcome.ok, 100);
        assert_eq!(outcome.errors, 1);
        assert_eq!(outcome.first_error.as_deref(), Some("reset"));
        assert_eq!(outcome.rate(), 50.0);
        assert_eq!(outcome.quantile_us(0.5), 50);
        assert_eq!(outcome.quantile_us(1.0), 100);
    }
}

//! A bounded load generator: `GET` requests at a fixed rate over keep-alive connections, until a
//! deadline or a shutdown signal, counting successes, failures and latency.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::{Instant, MissedTickBehavior};

use crate::DemoError;

/// A request that takes longer than this counts as a failure, so a stuck upstream cannot stall a
/// worker for the rest of the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// What to send: `GET {path}` to `target` at `rps` requests per second, spread over
/// `concurrency` workers that each keep one connection alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadGen {
    /// Where to send requests; in the demo, the load generator's sidecar outbound port.
    pub target: SocketAddr,
    /// The request path, `/` by default.
    pub path: String,
    /// Requests per second across all workers; 0 sends nothing.
    pub rps: u32,
    /// Stop after this long; `None` runs until the shutdown signal.
    pub duration: Option<Duration>,
    /// Parallel workers (at least 1 is used). Each waits for its response before its next tick,
    /// and skips ticks it missed, so a slow upstream lowers the rate instead of piling up work.
    pub concurrency: usize,
}

/// Counters updated while a [`LoadGen`] runs; share it (for example in an `Arc`) to watch
/// progress from another task.
#[derive(Debug, Default)]
pub struct LoadStats {
    successes: AtomicU64,
    failures: AtomicU64,
    success_latency_micros: AtomicU64,
    first_failure: OnceLock<String>,
}

impl LoadGen {
    /// `GET /` to `target` at `rps`, with 4 workers and no deadline.
    pub fn new(target: SocketAddr, rps: u32) -> Self {
        Self {
            target,
            path: "/".to_owned(),
            rps,
            duration: None,
            concurrency: 4,
        }
    }

    /// Sends load until `duration` elapses or `shutdown` resolves, recording outcomes in `stats`.
    /// Requests still in flight at the stop are abandoned and not counted. Fails at once, sending
    /// nothing, if `target` and `path` do not form a valid URI.
    pub async fn run(
        &self,
        stats: &LoadStats,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), DemoError> {
        let uri: Uri = format!("http://{}{}", self.target, self.path).parse()?;
        let deadline = async {
            match self.duration {
                Some(duration) => tokio::time::sleep(duration).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = self.send(&uri, stats) => {}
            () = deadline => {}
            () = shutdown => {}
        }
        Ok(())
    }

    /// Runs the workers; never returns, the caller stops it.
    async fn send(&self, uri: &Uri, stats: &LoadStats) {
        if self.rps == 0 {
            return std::future::pending().await;
        }
        let workers = self.concurrency.max(1);
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(workers)
            .build_http();
        let period = Duration::from_secs_f64(workers as f64 / f64::from(self.rps));
        let start = Instant::now();
        let workers = (0..workers).map(|index| {
            let offset = period.mul_f64(index as f64 / workers as f64);
            worker(&client, uri, stats, start + offset, period)
        });
        futures_util::future::join_all(workers).await;
    }
}

impl LoadStats {
    /// Requests answered with a 2xx status and a complete body.
    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }

    /// Requests that failed: connection errors, non-2xx statuses, broken bodies, timeouts.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Why the first failed request failed, `None` while none has.
    pub fn first_failure(&self) -> Option<&str> {
        self.first_failure.get().map(String::as_str)
    }

    /// Mean latency of the successful requests, `None` before the first success.
    pub fn mean_latency(&self) -> Option<Duration> {
        let successes = self.successes();
        (successes > 0).then(|| {
            Duration::from_micros(self.success_latency_micros.load(Ordering::Relaxed) / successes)
        })
    }

    fn record(&self, outcome: Result<(), RequestError>, latency: Duration) {
        match outcome {
            Ok(()) => {
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.success_latency_micros
                    .fetch_add(micros, Ordering::Relaxed);
                self.successes.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::debug!(%error, "load request failed");
                self.first_failure.get_or_init(|| error.to_string());
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Why one load request failed.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("answered {0}")]
    Status(http::StatusCode),
    #[error("body failed: {0}")]
    Body(#[from] hyper::Error),
    #[error("no answer within {REQUEST_TIMEOUT:?}")]
    Timeout,
}

async fn worker(
    client: &HttpClient,
    uri: &Uri,
    stats: &LoadStats,
    start: Instant,
    period: Duration,
) {
    let mut ticks = tokio::time::interval_at(start, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let began = Instant::now();
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, get(client, uri))
            .await
            .unwrap_or(Err(RequestError::Timeout));
        stats.record(outcome, began.elapsed());
    }
}

async fn get(client: &HttpClient, uri: &Uri) -> Result<(), RequestError> {
    let mut request = Request::new(Empty::new());
    *request.uri_mut() = uri.clone();
    let response = client.request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    if !status.is_success() {
        return Err(RequestError::Status(status));
    }
    Ok(())
}

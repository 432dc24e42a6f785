//! Per-request events for access logs and live taps. Nothing is built unless a log is on or a
//! tap is watching (one atomic load per request decides); lines go to stdout through a bounded
//! queue that drops (and counts) what a slow reader cannot take, so logging never stalls
//! requests.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Method, Uri, Version};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, mpsc};

use super::Direction;
use super::trace::{SpanContext, Tracer};

/// Access log lines queued for stdout before new ones are dropped.
const LOG_QUEUE: usize = 4096;
/// Events a tap may lag behind before it misses some.
const TAP_QUEUE: usize = 1024;

/// Access log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// Envoy's default text format, fields separated by spaces.
    Plain,
}

/// One finished request, as access logs and taps show it (no payloads).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RequestEvent {
    /// When the request arrived (RFC 3339, UTC).
    pub time: String,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// Method.
    pub method: String,
    /// `:authority` or `Host`.
    pub authority: String,
    /// Path and query.
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    /// Response status.
    pub status: u16,
    /// gRPC status, for gRPC requests.
    pub grpc_status: Option<u8>,
    /// Envoy-style response flags (`-` when none).
    pub flags: &'static str,
    /// Time from request to the end of the response body, in milliseconds.
    pub duration_ms: f64,
    /// Response body bytes sent.
    pub bytes_sent: u64,
    /// Route name.
    pub route: String,
    /// Cluster name.
    pub cluster: String,
    /// The endpoint that answered.
    pub upstream: Option<SocketAddr>,
    /// The client's address.
    pub downstream: SocketAddr,
    /// The calling workload's SPIFFE ID (inbound mTLS) or ours (outbound).
    pub source_identity: String,
    /// Ours (inbound), or empty (outbound: the endpoint's is checked, not recorded).
    pub destination_identity: String,
    /// W3C `traceparent` or B3 trace id, when the request carries one.
    pub trace_id: Option<String>,
    /// `x-request-id`.
    pub request_id: Option<String>,
    /// `user-agent`.
    pub user_agent: Option<String>,
}

/// A request's event while it is in flight: what is known when it arrives.
#[derive(Debug)]
pub(crate) struct PendingEvent {
    started: SystemTime,
    direction: Direction,
    /// This hop's span, when the request is traced.
    span: Option<SpanContext>,
    event: RequestEvent,
}

impl PendingEvent {
    /// Starts the event of a request with `method`, `uri`, `version` and `headers`, traced as
    /// `span` when sampled.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        direction: Direction,
        method: &Method,
        uri: &Uri,
        version: Version,
        headers: &HeaderMap,
        downstream: SocketAddr,
        identities: (String, String),
        span: Option<SpanContext>,
    ) -> Box<PendingEvent> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| header("host"))
            .unwrap_or_default();
        let started = SystemTime::now();
        let trace_id = span
            .as_ref()
            .map(SpanContext::trace_hex)
            .or_else(|| trace_id(headers));
        Box::new(PendingEvent {
            started,
            direction,
            span,
            event: RequestEvent {
                time: rfc3339(started),
                direction: direction.as_str(),
                method: method.as_str().to_owned(),
                authority,
                path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
                protocol: if version == Version::HTTP_2 {
                    "HTTP/2"
                } else {
                    "HTTP/1.1"
                },
                status: 0,
                grpc_status: None,
                flags: "-",
                duration_ms: 0.0,
                bytes_sent: 0,
                route: String::new(),
                cluster: String::new(),
                upstream: None,
                downstream,
                source_identity: identities.0,
                destination_identity: identities.1,
                trace_id,
                request_id: header("x-request-id"),
                user_agent: header("user-agent"),
            },
        })
    }

    /// What routing decided and how the response began.
    pub(crate) fn respond(
        &mut self,
        route: &str,
        cluster: &str,
        status: u16,
        flags: &'static str,
        upstream: Option<SocketAddr>,
    ) {
        let event = &mut self.event;
        event.route = route.to_owned();
        event.cluster = cluster.to_owned();
        event.status = status;
        event.flags = flags;
        event.upstream = upstream;
    }

    /// The finished event: its body sent `bytes`, with gRPC status `grpc`.
    fn finish(self, bytes: u64, grpc: Option<u8>) -> RequestEvent {
        let mut event = self.event;
        event.bytes_sent = bytes;
        event.grpc_status = grpc;
        event.duration_ms = self
            .started
            .elapsed()
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
            * 1e3;
        event
    }
}

/// The trace id of W3C `traceparent` (`00-TRACEID-SPANID-FLAGS`) or B3 (`x-b3-traceid`, or
/// the single `b3` header).
fn trace_id(headers: &HeaderMap) -> Option<String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    get("traceparent")
        .and_then(|tp| tp.split('-').nth(1))
        .or_else(|| get("x-b3-traceid"))
        .or_else(|| get("b3").and_then(|b3| b3.split('-').next()))
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
}

/// Where request events go: an access log on stdout and live taps.
#[derive(Debug)]
pub(crate) struct Events {
    log: Option<(AccessLogFormat, mpsc::Sender<String>)>,
    tracer: Option<Tracer>,
    dropped: Arc<AtomicU64>,
    tap: broadcast::Sender<Arc<RequestEvent>>,
    taps: AtomicUsize,
}

impl Events {
    /// Events logged in `format` (none when `None`), traced by `tracer` and tapped on demand.
    /// Must be called inside a Tokio runtime when logging: the writer task starts here.
    pub(crate) fn new(format: Option<AccessLogFormat>, tracer: Option<Tracer>) -> Self {
        let log = format.map(|format| {
            let (tx, mut rx) = mpsc::channel::<String>(LOG_QUEUE);
            tokio::spawn(async move {
                let mut out = tokio::io::stdout();
                while let Some(line) = rx.recv().await {
                    if out.write_all(line.as_bytes()).await.is_err() {
                        break;
                    }
                    // Write what else is queued before flushing.
                    while let Ok(line) = rx.try_recv() {
                        if out.write_all(line.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    if out.flush().await.is_err() {
                        break;
                    }
                }
            });
            (format, tx)
        });
        Self {
            log,
            tracer,
            dropped: Arc::default(),
            tap: broadcast::Sender::new(TAP_QUEUE),
            taps: AtomicUsize::new(0),
        }
    }

    /// Whether anything but tracing wants this request's event.
    pub(crate) fn wanted(&self) -> bool {
        self.log.is_some() || self.taps.load(Ordering::Relaxed) > 0
    }

    /// The tracer, when tracing is on.
    pub(crate) fn tracer(&self) -> Option<&Tracer> {
        self.tracer.as_ref()
    }

    /// Traces, logs and taps a finished request whose body sent `bytes`, with gRPC status
    /// `grpc`.
    pub(crate) fn emit(&self, pending: Box<PendingEvent>, bytes: u64, grpc: Option<u8>) {
        let direction = pending.direction;
        let span = pending.span.clone();
        let event = pending.finish(bytes, grpc);
        if let (Some(tracer), Some(span)) = (&self.tracer, span) {
            tracer.finish(span, direction, &event);
        }
        if let Some((format, tx)) = &self.log {
            let line = match format {
                AccessLogFormat::Json => {
                    let mut line = serde_json::to_string(&event).unwrap_or_default();
                    line.push('\n');
                    line
                }
                AccessLogFormat::Plain => plain(&event),
            };
            if tx.try_send(line).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        if self.taps.load(Ordering::Relaxed) > 0 {
            // No receiver between the check and the send just means nobody missed it.
            let _ = self.tap.send(Arc::new(event));
        }
    }

    /// The counter of log lines dropped because stdout could not keep up.
    pub(crate) fn dropped(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// Taps watching now.
    pub(crate) fn watchers(&self) -> usize {
        self.taps.load(Ordering::Relaxed)
    }

    /// A live feed of finished requests until the returned tap drops.
    pub(crate) fn tap(self: &Arc<Self>) -> Tap {
        self.taps.fetch_add(1, Ordering::Relaxed);
        Tap {
            events: self.clone(),
            rx: self.tap.subscribe(),
        }
    }
}

/// One watcher of [`Events`]; counted while it lives.
#[derive(Debug)]
pub(crate) struct Tap {
    events: Arc<Events>,
    rx: broadcast::Receiver<Arc<RequestEvent>>,
}

impl Tap {
    /// The next event; `Err(n)` when this tap fell `n` events behind and missed them.
    pub(crate) async fn next(&mut self) -> Result<Arc<RequestEvent>, u64> {
        loop {
            match self.rx.recv().await {
                Ok(event) => return Ok(event),
                Err(broadcast::error::RecvError::Lagged(n)) => return Err(n),
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.events.taps.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Envoy's default access log format:
/// `[TIME] "METHOD PATH PROTOCOL" STATUS FLAGS BYTES_RECEIVED BYTES_SENT DURATION - "-"
/// "USER-AGENT" "REQUEST-ID" "AUTHORITY" "UPSTREAM"`, with the trace id and identities after.
fn plain(e: &RequestEvent) -> String {
    let or_dash = |s: Option<&str>| s.filter(|s| !s.is_empty()).unwrap_or("-").to_owned();
    let mut line = String::with_capacity(256);
    let _ = writeln!(
        line,
        "[{}] \"{} {} {}\" {} {} - {} {:.0} \"{}\" \"{}\" \"{}\" \"{}\" {} {} trace={} src={} dst={}",
        e.time,
        e.method,
        e.path,
        e.protocol,
        e.status,
        e.flags,
        e.bytes_sent,
        e.duration_ms,
        or_dash(e.user_agent.as_deref()),
        or_dash(e.request_id.as_deref()),
        e.authority,
        e.upstream.map_or_else(|| "-".to_owned(), |a| a.to_string()),
        e.direction,
        or_dash(Some(&e.route)),
        or_dash(e.trace_id.as_deref()),
        or_dash(Some(&e.source_identity)),
        or_dash(Some(&e.destination_identity)),
    );
    line
}

/// `t` as RFC 3339 in UTC with milliseconds (`2026-12-01T05:50:55.123Z`).
fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_931_455_123);
        assert_eq!(rfc3339(t), "2026-11-29T05:50:55.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn trace_ids_come_from_w3c_or_b3_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(trace_id(&h), None);
        h.insert(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            trace_id(&h).as_deref(),
            Some("80f198ee56343ba864fe8b2a57d3eff7")
        );
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            trace_id(&h).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[tokio::test]
    async fn taps_see_events_only_while_they_watch() {
        let events = Arc::new(Events::new(None, None));
        assert!(!events.wanted());
        let mut tap = events.tap();
        assert!(events.wanted());
        let pending = PendingEvent::start(
            Direction::Inbound,
            &Method::GET,
            &"/x?y=1".parse().unwrap(),
            Version::HTTP_11,
            &HeaderMap::new(),
            SocketAddr::from(([127, 0, 0, 1], 9)),
            ("a".into(), "b".into()),
            None,
        );
        events.emit(pending, 5, None);
        let seen = tap.next().await.unwrap();
        assert_eq!((seen.path.as_str(), seen.bytes_sent), ("/x?y=1", 5));
        drop(tap);
        assert!(!events.wanted());
    }

    #[test]
    fn plain_lines_follow_envoys_default_order() {
        let mut pending = PendingEvent::start(
            Direction::Outbound,
            &Method::POST,
            &"/orders".parse().unwrap(),
            Version::HTTP_2,
            &HeaderMap::new(),
            SocketAddr::from(([127, 0, 0, 1], 9)),
            ("spiffe://td/ns/n/sa/web".into(), String::new()),
            None,
        );
        pending.respond(
            "orders",
            "outbound|api.n",
            503,
            "UO",
            Some(SocketAddr::from(([10, 0, 0, 1], 80))),
        );
        let line = plain(&pending.finish(12, None));
        assert!(
            line.contains("\"POST /orders HTTP/2\" 503 UO - 12 "),
            "{line}"
        );
        assert!(line.contains("\"10.0.0.1:80\" outbound orders"), "{line}");
        assert!(
            line.ends_with("src=spiffe://td/ns/n/sa/web dst=-\n"),
            "{line}"
        );
    }
}

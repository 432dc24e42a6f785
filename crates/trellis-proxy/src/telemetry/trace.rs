//! Distributed tracing: joins the trace a request carries (W3C `traceparent`, or B3 as multi
//! headers or the single `b3` header) or starts one for a sampled share of requests, makes this
//! hop's span the parent the next hop sees, and exports the finished span over OTLP/gRPC to a
//! collector. A server span on inbound requests, a client span on outbound ones, so a request
//! that crosses two sidecars leaves linked client and server spans in the app's trace.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::HeaderValue;
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

use super::events::RequestEvent;
use super::{Direction, LocalWorkload};
use otlp::{AnyValue, KeyValue, Span, Status};

/// Spans queued for export before new ones are dropped.
const QUEUE: usize = 2048;
/// Spans sent in one export call at most.
const BATCH: usize = 512;
/// How long a span waits for others to share its export call.
const LINGER: Duration = Duration::from_millis(200);
/// How long an export call may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how much to trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingOptions {
    /// OTLP/gRPC collector URL, e.g. `http://127.0.0.1:4317`.
    pub collector: String,
    /// Percent (0 to 100) of requests that arrive without a sampling decision to trace.
    pub sampling_percent: f64,
}

/// This hop's span of a sampled request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpanContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_span_id: Option<[u8; 8]>,
}

impl SpanContext {
    /// The trace id in hex, as logs show it.
    pub(crate) fn trace_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

/// The trace context a request arrived with.
#[derive(Debug, Clone, PartialEq)]
struct Incoming {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    /// The caller's decision; `None` (B3 without one) leaves it to us.
    sampled: Option<bool>,
    /// Which headers carried it, so the same ones are updated.
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    W3c,
    B3Single,
    B3Multi,
}

/// Starts spans and exports the finished ones.
#[derive(Debug)]
pub(crate) struct Tracer {
    sampling: f64,
    spans: mpsc::Sender<Span>,
    exported: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl Tracer {
    /// A tracer exporting to `opts.collector` for the workload `local`; the exporter task
    /// starts here (inside a Tokio runtime).
    pub(crate) fn new(
        opts: &TracingOptions,
        local: &LocalWorkload,
    ) -> Result<Tracer, tonic::transport::Error> {
        let channel = Endpoint::from_shared(opts.collector.clone())?
            .timeout(EXPORT_TIMEOUT)
            .connect_lazy();
        let (spans, rx) = mpsc::channel(QUEUE);
        let exported = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let resource = vec![
            attr("service.name", AnyValue::string(&local.service)),
            attr("service.namespace", AnyValue::string(&local.namespace)),
            attr("service.instance.id", AnyValue::string(&local.workload)),
            attr("trellis.identity", AnyValue::string(&local.identity)),
        ];
        let exporter = Exporter {
            client: tonic::client::Grpc::new(channel),
            resource,
            exported: exported.clone(),
            dropped: dropped.clone(),
        };
        tokio::spawn(exporter.run(rx));
        Ok(Tracer {
            sampling: opts.sampling_percent.clamp(0.0, 100.0) / 100.0,
            spans,
            exported,
            dropped,
        })
    }

    /// Joins or starts the trace of a request with `headers` if it is sampled, and rewrites its
    /// propagation headers so the next hop sees this hop's span as its parent. `None` when the
    /// request is not traced (its headers pass unchanged).
    pub(crate) fn start(&self, headers: &mut HeaderMap) -> Option<SpanContext> {
        let incoming = incoming(headers);
        let sampled = incoming
            .as_ref()
            .and_then(|i| i.sampled)
            .unwrap_or_else(|| rand::random::<f64>() < self.sampling);
        if !sampled {
            return None;
        }
        let span = SpanContext {
            trace_id: incoming.as_ref().map_or_else(rand::random, |i| i.trace_id),
            span_id: random_span_id(),
            parent_span_id: incoming.as_ref().map(|i| i.span_id),
        };
        propagate(headers, &span, incoming.map_or(Format::W3c, |i| i.format));
        Some(span)
    }

    /// Exports the span of a finished request (dropped, and counted, if the queue is full).
    pub(crate) fn finish(&self, span: SpanContext, direction: Direction, event: &RequestEvent) {
        let end = SystemTime::now();
        let start = end - Duration::from_secs_f64(event.duration_ms / 1e3);
        let span = span_of(span, direction, event, start, end);
        if self.spans.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters of spans exported and dropped.
    pub(crate) fn counters(&self) -> (Arc<AtomicU64>, Arc<AtomicU64>) {
        (self.exported.clone(), self.dropped.clone())
    }
}

/// Sends batches of spans to the collector.
struct Exporter {
    client: tonic::client::Grpc<tonic::transport::Channel>,
    resource: Vec<KeyValue>,
    exported: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl Exporter {
    async fn run(mut self, mut rx: mpsc::Receiver<Span>) {
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(span) = rx.recv().await {
            batch.push(span);
            let deadline = tokio::time::Instant::now() + LINGER;
            while batch.len() < BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(span)) => batch.push(span),
                    Ok(None) | Err(_) => break,
                }
            }
            let count = batch.len() as u64;
            match self.export(std::mem::take(&mut batch)).await {
                Ok(()) => self.exported.fetch_add(count, Ordering::Relaxed),
                Err(e) => {
                    tracing::debug!(error = %e, spans = count, "span export failed");
                    self.dropped.fetch_add(count, Ordering::Relaxed)
                }
            };
        }
    }

    async fn export(&mut self, spans: Vec<Span>) -> Result<(), tonic::Status> {
        let request = otlp::ExportTraceServiceRequest {
            resource_spans: vec![otlp::ResourceSpans {
                resource: Some(otlp::Resource {
                    attributes: self.resource.clone(),
                }),
                scope_spans: vec![otlp::ScopeSpans {
                    scope: Some(otlp::InstrumentationScope {
                        name: "trellis-proxy".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                    }),
                    spans,
                }],
            }],
        };
        self.client
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = http::uri::PathAndQuery::from_static(otlp::EXPORT_PATH);
        self.client
            .unary::<_, otlp::ExportTraceServiceResponse, _>(
                tonic::Request::new(request),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await
            .map(|_| ())
    }
}

/// The OTLP span of a finished request.
fn span_of(
    ctx: SpanContext,
    direction: Direction,
    e: &RequestEvent,
    start: SystemTime,
    end: SystemTime,
) -> Span {
    let path = e.path.split('?').next().unwrap_or("/");
    let mut attributes = vec![
        attr("http.request.method", AnyValue::string(&e.method)),
        attr("url.path", AnyValue::string(path)),
        attr("server.address", AnyValue::string(&e.authority)),
        attr("http.response.status_code", AnyValue::int(e.status.into())),
        attr("network.protocol.name", AnyValue::string("http")),
        attr(
            "client.address",
            AnyValue::string(&e.downstream.ip().to_string()),
        ),
        attr(
            "http.response.body.size",
            AnyValue::int(e.bytes_sent as i64),
        ),
        attr("trellis.direction", AnyValue::string(direction.as_str())),
        attr("trellis.route", AnyValue::string(&e.route)),
        attr("trellis.cluster", AnyValue::string(&e.cluster)),
        attr("trellis.response_flags", AnyValue::string(e.flags)),
        attr(
            "trellis.source.identity",
            AnyValue::string(&e.source_identity),
        ),
        attr(
            "trellis.destination.identity",
            AnyValue::string(&e.destination_identity),
        ),
    ];
    if let Some(upstream) = e.upstream {
        attributes.push(attr(
            "trellis.upstream.address",
            AnyValue::string(&upstream.to_string()),
        ));
    }
    if let Some(code) = e.grpc_status {
        attributes.push(attr("rpc.grpc.status_code", AnyValue::int(code.into())));
    }
    if let Some(agent) = &e.user_agent {
        attributes.push(attr("user_agent.original", AnyValue::string(agent)));
    }
    let failed = e.status >= 500 || e.grpc_status.is_some_and(|c| c != 0);
    let nanos = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    };
    Span {
        trace_id: ctx.trace_id.to_vec(),
        span_id: ctx.span_id.to_vec(),
        parent_span_id: ctx.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        name: format!("{} {path}", e.method),
        kind: match direction {
            Direction::Inbound => otlp::SPAN_KIND_SERVER,
            Direction::Outbound => otlp::SPAN_KIND_CLIENT,
        },
        start_time_unix_nano: nanos(start),
        end_time_unix_nano: nanos(end),
        attributes,
        status: Some(Status {
            code: if failed {
                otlp::STATUS_ERROR
            } else {
                otlp::STATUS_UNSET
            },
        }),
    }
}

fn attr(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(value),
    }
}

/// The trace context of `headers`: `traceparent` first, then B3.
fn incoming(headers: &HeaderMap) -> Option<Incoming> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(tp) = get("traceparent") {
        let parts: Vec<&str> = tp.trim().split('-').collect();
        if let [version, trace, span, flags, ..] = parts[..]
            && version.len() == 2
            && version != "ff"
            && let (Some(trace_id), Some(span_id), Some(flags)) = (
                parse_hex::<16>(trace),
                parse_hex::<8>(span),
                parse_hex::<1>(flags),
            )
        {
            return valid(Incoming {
                trace_id,
                span_id,
                sampled: Some(flags[0] & 1 == 1),
                format: Format::W3c,
            });
        }
    }
    if let Some(b3) = get("b3") {
        let parts: Vec<&str> = b3.trim().split('-').collect();
        if let [trace, span, rest @ ..] = &parts[..] {
            return valid(Incoming {
                trace_id: b3_trace_id(trace)?,
                span_id: parse_hex::<8>(span)?,
                sampled: rest.first().and_then(|s| b3_sampled(s)),
                format: Format::B3Single,
            });
        }
    }
    let trace_id = b3_trace_id(get("x-b3-traceid")?)?;
    let span_id = parse_hex::<8>(get("x-b3-spanid")?)?;
    let sampled = get("x-b3-flags")
        .filter(|f| *f == "1")
        .map(|_| true)
        .or_else(|| get("x-b3-sampled").and_then(b3_sampled));
    valid(Incoming {
        trace_id,
        span_id,
        sampled,
        format: Format::B3Multi,
    })
}

/// All-zero ids are invalid in both formats.
fn valid(incoming: Incoming) -> Option<Incoming> {
    (incoming.trace_id != [0; 16] && incoming.span_id != [0; 8]).then_some(incoming)
}

/// A B3 trace id: 32 hex digits, or 16 (the high half zero).
fn b3_trace_id(s: &str) -> Option<[u8; 16]> {
    match s.len() {
        32 => parse_hex::<16>(s),
        16 => {
            let low = parse_hex::<8>(s)?;
            let mut id = [0; 16];
            id[8..].copy_from_slice(&low);
            Some(id)
        }
        _ => None,
    }
}

fn b3_sampled(s: &str) -> Option<bool> {
    match s {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// Rewrites the propagation headers of `format` to carry `span` (W3C also when it arrived with
/// none).
fn propagate(headers: &mut HeaderMap, span: &SpanContext, format: Format) {
    let trace = hex(&span.trace_id);
    let id = hex(&span.span_id);
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    match format {
        Format::W3c => set("traceparent", format!("00-{trace}-{id}-01")),
        Format::B3Single => {
            let parent = span.parent_span_id.map(|p| hex(&p));
            set(
                "b3",
                match parent {
                    Some(parent) => format!("{trace}-{id}-1-{parent}"),
                    None => format!("{trace}-{id}-1"),
                },
            );
        }
        Format::B3Multi => {
            set("x-b3-traceid", trace);
            set("x-b3-spanid", id);
            set("x-b3-sampled", "1".to_owned());
            if let Some(parent) = span.parent_span_id {
                set("x-b3-parentspanid", hex(&parent));
            }
        }
    }
}

fn random_span_id() -> [u8; 8] {
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The OTLP trace export messages (opentelemetry-proto's `collector/trace/v1` and `trace/v1`),
/// written out for the fields the proxy sends.
mod otlp {
    /// The gRPC method that takes spans.
    pub(super) const EXPORT_PATH: &str =
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    /// `SPAN_KIND_SERVER`.
    pub(super) const SPAN_KIND_SERVER: i32 = 2;
    /// `SPAN_KIND_CLIENT`.
    pub(super) const SPAN_KIND_CLIENT: i32 = 3;
    /// `STATUS_CODE_UNSET`.
    pub(super) const STATUS_UNSET: i32 = 0;
    /// `STATUS_CODE_ERROR`.
    pub(super) const STATUS_ERROR: i32 = 2;

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub(super) resource_spans: Vec<ResourceSpans>,
    }

    /// The reply; its partial-success details are not read.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ExportTraceServiceResponse {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub(super) resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub(super) scope_spans: Vec<ScopeSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub(super) attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ScopeSpans {
        #[prost(message, optional, tag = "1")]
        pub(super) scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub(super) spans: Vec<Span>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub(super) name: String,
        #[prost(string, tag = "2")]
        pub(super) version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub(super) trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub(super) span_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub(super) parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub(super) name: String,
        #[prost(int32, tag = "6")]
        pub(super) kind: i32,
        #[prost(fixed64, tag = "7")]
        pub(super) start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub(super) end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub(super) attributes: Vec<KeyValue>,
        #[prost(message, optional, tag = "15")]
        pub(super) status: Option<Status>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Status {
        #[prost(int32, tag = "3")]
        pub(super) code: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct KeyValue {
        #[prost(string, tag = "1")]
        pub(super) key: String,
        #[prost(message, optional, tag = "2")]
        pub(super) value: Option<AnyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct AnyValue {
        #[prost(oneof = "Value", tags = "1, 3")]
        pub(super) value: Option<Value>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Value {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(int64, tag = "3")]
        Int(i64),
    }

    impl AnyValue {
        pub(super) fn string(s: &str) -> AnyValue {
            AnyValue {
                value: Some(Value::String(s.to_owned())),
            }
        }

        pub(super) fn int(n: i64) -> AnyValue {
            AnyValue {
                value: Some(Value::Int(n)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn w3c_and_b3_contexts_are_read() {
        let w3c = incoming(&headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]))
        .unwrap();
        assert_eq!(hex(&w3c.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&w3c.span_id), "00f067aa0ba902b7");
        assert_eq!(w3c.sampled, Some(true));
        let unsampled = incoming(&headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )]))
        .unwrap();
        assert_eq!(unsampled.sampled, Some(false));
        let single = incoming(&headers(&[("b3", "a3ce929d0e0e4736-00f067aa0ba902b7-1")])).unwrap();
        assert_eq!(hex(&single.trace_id), "0000000000000000a3ce929d0e0e4736");
        assert_eq!(single.format, Format::B3Single);
        let multi = incoming(&headers(&[
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
        ]))
        .unwrap();
        assert_eq!((multi.sampled, multi.format), (None, Format::B3Multi));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f35-00f067aa0ba902b7-01",
        ] {
            assert_eq!(incoming(&headers(&[("traceparent", bad)])), None, "{bad}");
        }
    }

    #[test]
    fn the_next_hop_sees_this_hops_span_as_parent_in_the_same_format() {
        let span = SpanContext {
            trace_id: parse_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            span_id: parse_hex("1111111111111111").unwrap(),
            parent_span_id: parse_hex("00f067aa0ba902b7"),
        };
        let mut h = HeaderMap::new();
        propagate(&mut h, &span, Format::W3c);
        assert_eq!(
            h["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"
        );
        let mut h = HeaderMap::new();
        propagate(&mut h, &span, Format::B3Multi);
        assert_eq!(h["x-b3-spanid"], "1111111111111111");
        assert_eq!(h["x-b3-parentspanid"], "00f067aa0ba902b7");
        assert_eq!(h["x-b3-sampled"], "1");
        let mut h = HeaderMap::new();
        propagate(&mut h, &span, Format::B3Single);
        assert_eq!(
            h["b3"],
            "4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-1-00f067aa0ba902b7"
        );
    }
}

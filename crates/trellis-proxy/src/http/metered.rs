//! The response body sent back downstream, counted in the request metrics when it ends: that
//! is when a gRPC status arrives in trailers, and when a stream the client abandoned is known.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::body::BodyError;
use super::client::FromUpstream;
use crate::telemetry::{self, Events, NOT_GRPC, PendingEvent, RequestCounters, StatusClass};

/// gRPC `CANCELLED`: a stream that ended before its status.
const CANCELLED: u8 = 1;

/// Request extension: note the endpoint that answers (for the request's event).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WantUpstream;

/// Response extension: the endpoint that answered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upstream(pub(crate) std::net::SocketAddr);

/// Where and how a response is counted once its body ends.
#[derive(Debug)]
pub(crate) struct Recorder {
    counters: Arc<RequestCounters>,
    class: StatusClass,
    grpc: Grpc,
    /// The request's event and where it goes, when wanted.
    event: Option<(Box<PendingEvent>, Arc<Events>)>,
}

/// What is known of a response's gRPC status.
#[derive(Debug, Clone, Copy)]
enum Grpc {
    /// Not a gRPC exchange.
    No,
    /// gRPC, status not seen yet; this is what a client reads if the body ends without one.
    Awaited(u8),
    /// The status from headers or trailers.
    Status(u8),
}

impl Recorder {
    /// Counts into `counters` a response with `status` and headers `headers`, to a gRPC
    /// request when `grpc`, and emits `event` when it ends.
    pub(crate) fn new(
        counters: Arc<RequestCounters>,
        status: http::StatusCode,
        headers: &http::HeaderMap,
        grpc: bool,
        event: Option<(Box<PendingEvent>, Arc<Events>)>,
    ) -> Self {
        let grpc = if !grpc {
            Grpc::No
        } else if let Some(code) = telemetry::grpc_status(headers) {
            Grpc::Status(code)
        } else if status == http::StatusCode::OK {
            Grpc::Awaited(2)
        } else {
            Grpc::Awaited(telemetry::grpc_from_http(status))
        };
        Self {
            counters,
            class: StatusClass::of(status),
            grpc,
            event,
        }
    }

    fn trailers(&mut self, trailers: &http::HeaderMap) {
        if let (Grpc::Awaited(_), Some(code)) = (self.grpc, telemetry::grpc_status(trailers)) {
            self.grpc = Grpc::Status(code);
        }
    }

    /// Counts a response of `bytes` whose body the proxy made whole (a local reply).
    pub(crate) fn finish_local(self, bytes: u64) {
        self.finish(true, bytes);
    }

    /// Counts the response after `bytes` of body; `complete` when the body reached its end.
    fn finish(self, complete: bool, bytes: u64) {
        let grpc = match self.grpc {
            Grpc::No => NOT_GRPC,
            Grpc::Status(code) => code,
            Grpc::Awaited(code) if complete => code,
            Grpc::Awaited(_) => CANCELLED,
        };
        self.counters.response(self.class, grpc);
        if let Some((event, events)) = self.event {
            events.emit(event, bytes, (grpc != NOT_GRPC).then_some(grpc));
        }
    }
}

/// An upstream response body, counted by its [`Recorder`] when it ends or is dropped.
#[derive(Debug)]
pub(crate) struct Metered {
    body: FromUpstream,
    recorder: Option<Recorder>,
    /// Body bytes passed on so far.
    bytes: u64,
}

impl Metered {
    /// `body`, not counted until [`Metered::record`] gives it a recorder.
    pub(crate) fn new(body: FromUpstream) -> Self {
        Self {
            body,
            recorder: None,
            bytes: 0,
        }
    }

    /// Counts the response with `recorder` when the body ends.
    pub(crate) fn record(&mut self, recorder: Recorder) {
        self.recorder = Some(recorder);
    }

    fn finish(&mut self, complete: bool) {
        if let Some(recorder) = self.recorder.take() {
            recorder.finish(complete, self.bytes);
        }
    }
}

impl Body for Metered {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if let (Some(trailers), Some(recorder)) = (frame.trailers_ref(), &mut self.recorder)
                {
                    recorder.trailers(trailers);
                }
                if self.body.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        // A body hyper never polls (empty, HEAD) ends here complete; any other ends abandoned.
        let complete = self.body.is_end_stream();
        self.finish(complete);
    }
}

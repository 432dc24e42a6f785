//! HTTP/2 streams over the `h2` crate, shared by the downstream server and the upstream client:
//! the pipe that sends a body on a stream, paced by flow control, and the body that reads one.

use std::error::Error as StdError;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, header};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use super::body::BodyError;

/// The `content-length` of a message, if it has one valid value.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let first = values.next()?.to_str().ok()?.trim().parse().ok()?;
    values
        .all(|v| v.to_str().ok().and_then(|v| v.trim().parse().ok()) == Some(first))
        .then_some(first)
}

/// Why a body's pipe stopped early.
#[derive(Debug, thiserror::Error)]
pub(super) enum PipeError {
    /// The body failed (its sender went away mid-message); the stream was reset.
    #[error("the body failed: {0}")]
    Body(BodyError),
    /// The stream failed, or the peer reset it.
    #[error("the stream failed: {0}")]
    H2(h2::Error),
    /// The stream takes no more data (h2 gives no reason).
    #[error("the stream takes no more data")]
    Closed,
}

/// A port of hyper's `PipeToSendStream`: sends a body's frames on its stream as the peer's
/// flow control lets it.
pub(super) struct Pipe<B> {
    body: B,
    stream: SendStream<Bytes>,
    /// A chunk polled from the body, waiting for send capacity; whether it ends the body.
    waiting: Option<(Bytes, bool)>,
}

impl<B> Pipe<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BodyError>,
{
    pub(super) fn new(body: B, stream: SendStream<Bytes>) -> Self {
        Pipe {
            body,
            stream,
            waiting: None,
        }
    }

    /// Sends what the body has, until it ends (`Ok`) or the pipe stops early.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), PipeError>> {
        loop {
            // Registered first, so a reset wakes a pipe waiting for the body or for capacity.
            if let Poll::Ready(reason) = self.stream.poll_reset(cx).map_err(PipeError::H2)? {
                return Poll::Ready(Err(PipeError::H2(reason.into())));
            }
            if self.waiting.is_some() {
                while self.stream.capacity() == 0 {
                    match ready!(self.stream.poll_capacity(cx)) {
                        Some(Ok(0)) => {}
                        Some(Ok(_)) => break,
                        Some(Err(e)) => return Poll::Ready(Err(PipeError::H2(e))),
                        None => return Poll::Ready(Err(PipeError::Closed)),
                    }
                }
                if let Some((data, eos)) = self.waiting.take() {
                    self.stream.send_data(data, eos).map_err(PipeError::H2)?;
                    if eos {
                        return Poll::Ready(Ok(()));
                    }
                }
                continue;
            }
            // The next frame is polled before any capacity is claimed: capacity claimed for a
            // body that has nothing yet would pin the connection's window (hyper #4003).
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let eos = self.body.is_end_stream();
                        if data.is_empty() {
                            self.stream.send_data(data, eos).map_err(PipeError::H2)?;
                            if eos {
                                return Poll::Ready(Ok(()));
                            }
                            continue;
                        }
                        // A claim of one byte: h2 raises it to the chunk's length as it
                        // sends, and the capacity wait above then paces the body.
                        self.stream.reserve_capacity(1);
                        self.waiting = Some((data, eos));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.stream.reserve_capacity(0);
                            self.stream.send_trailers(trailers).map_err(PipeError::H2)?;
                            return Poll::Ready(Ok(()));
                        }
                    }
                },
                Some(Err(e)) => {
                    let e: BodyError = e.into();
                    self.stream.send_reset(reason(&*e));
                    return Poll::Ready(Err(PipeError::Body(e)));
                }
                None => {
                    self.stream
                        .send_data(Bytes::new(), true)
                        .map_err(PipeError::H2)?;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    /// Pipes the rest of the body from a task of its own, until the body ends or the returned
    /// sender says the response was dropped unfinished (the stream is then reset).
    pub(super) fn spawn(mut self) -> oneshot::Sender<()> {
        let (cancel, cancelled) = oneshot::channel();
        let mut cancelled = Some(cancelled);
        tokio::spawn(std::future::poll_fn(move |cx| {
            if let Some(watch) = &mut cancelled {
                match Pin::new(watch).poll(cx) {
                    Poll::Ready(Ok(())) => {
                        self.stream.send_reset(Reason::CANCEL);
                        return Poll::Ready(());
                    }
                    // The response ended normally: the body goes on.
                    Poll::Ready(Err(_)) => cancelled = None,
                    Poll::Pending => {}
                }
            }
            if let Err(e) = ready!(self.poll(cx)) {
                tracing::debug!(error = %e, "request body stopped after the response head");
            }
            Poll::Ready(())
        }));
        cancel
    }
}

/// The HTTP/2 reset code for a failed body: one found in its chain of causes (a client's own
/// reset passes on as it was), else `INTERNAL_ERROR`.
pub(super) fn reason(e: &(dyn StdError + 'static)) -> Reason {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(reason) = e.downcast_ref::<h2::Error>().and_then(h2::Error::reason) {
            return reason;
        }
        cause = e.source();
    }
    Reason::INTERNAL_ERROR
}

/// A body received on an HTTP/2 stream: an endpoint's response or a client's request. Each
/// chunk's flow-control capacity is released as it is passed on, so the peer sends more only as
/// the body is read.
#[derive(Debug)]
pub(crate) struct H2Body {
    recv: RecvStream,
    /// Body bytes still to come, from `content-length`.
    remaining: Option<u64>,
    /// The data frames have ended; trailers may follow.
    data_done: bool,
    /// The stream's end was seen. Kept, as each look at the stream takes its connection's lock
    /// and the body's end is asked after several times per message.
    ended: bool,
    /// Stops a request body still being piped, if this body is dropped unfinished.
    cancel: Option<oneshot::Sender<()>>,
}

impl H2Body {
    /// The body of a message whose head had `headers`, read from `recv`; `cancel`, if any, is
    /// told when the body is dropped unfinished.
    pub(super) fn new(
        recv: RecvStream,
        headers: &HeaderMap,
        cancel: Option<oneshot::Sender<()>>,
    ) -> Self {
        H2Body {
            ended: recv.is_end_stream(),
            recv,
            remaining: content_length(headers),
            data_done: false,
            cancel,
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(remaining) = &mut this.remaining {
                        *remaining = remaining.saturating_sub(data.len() as u64);
                    }
                    // The last chunk's frame may have ended the stream: a pipe sends the chunk
                    // with the end flag then, not an empty frame after it.
                    this.ended = this.recv.is_end_stream();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // As hyper: NO_ERROR ends the body, not as a failure. For a response it is an
                // early response's end (RFC 9113 §8.1); a client's request body ends there too.
                Some(Err(e)) => {
                    this.ended = true;
                    if e.reason() == Some(Reason::NO_ERROR) {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(e)));
                }
                None => this.data_done = true,
            }
        }
        let trailers = ready!(this.recv.poll_trailers(cx));
        this.ended = true;
        match trailers {
            Ok(trailers) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Err(e) if e.reason() == Some(Reason::NO_ERROR) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended {
            return SizeHint::with_exact(0);
        }
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

impl Drop for H2Body {
    fn drop(&mut self) {
        if let Some(cancel) = self.cancel.take()
            && !self.ended
            && !self.recv.is_end_stream()
        {
            let _ = cancel.send(());
        }
    }
}

//! A request body that can be sent again: each try reads the frames seen so far from a
//! buffer, then continues the client's body, keeping what it reads for the next try. The buffer
//! is bounded; a body that outgrows it still streams, but can no longer be retried.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::body::{BodyError, UpstreamBody};

/// Body bytes kept for retries (Linkerd's limit); a larger body is not retried.
pub(crate) const REPLAY_LIMIT: usize = 64 * 1024;

/// What the tries share: the frames read so far and the rest of the client's body. Only one try
/// reads at a time; it holds the state while it reads and puts it back when it ends or drops.
#[derive(Debug)]
struct State {
    frames: Vec<Frame<Bytes>>,
    buffered: usize,
    /// The rest of the client's body; `None` once it ended.
    rest: Option<UpstreamBody>,
    /// The body outgrew the buffer: it cannot be replayed.
    overflowed: bool,
}

type Shared = Arc<Mutex<Option<Box<State>>>>;

/// One try's view of a replayable body.
#[derive(Debug)]
pub(crate) struct ReplayBody {
    shared: Shared,
    held: Option<Box<State>>,
    /// Frames of `frames` this try has sent.
    sent: usize,
    hint: SizeHint,
}

impl ReplayBody {
    /// Wraps the client's body: a handle kept for further tries (it never reads), and the
    /// first try's body.
    pub(crate) fn new(body: UpstreamBody) -> (ReplayBody, ReplayBody) {
        let hint = body.size_hint();
        let state = State {
            frames: Vec::new(),
            buffered: 0,
            rest: Some(body),
            overflowed: false,
        };
        let kept = ReplayBody {
            shared: Arc::new(Mutex::new(Some(Box::new(state)))),
            held: None,
            sent: 0,
            hint,
        };
        let first = kept.handle();
        (kept, first)
    }

    fn handle(&self) -> ReplayBody {
        ReplayBody {
            shared: self.shared.clone(),
            held: None,
            sent: 0,
            hint: self.hint,
        }
    }

    /// A body for another try, if the body can still be replayed: it did not outgrow the
    /// buffer, and the previous try no longer reads it.
    pub(crate) fn again(&self) -> Option<ReplayBody> {
        let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let state = shared.as_ref()?;
        (!state.overflowed).then(|| self.handle())
    }

    fn release(&mut self) {
        if let Some(state) = self.held.take() {
            *self.shared.lock().unwrap_or_else(PoisonError::into_inner) = Some(state);
        }
    }
}

impl Drop for ReplayBody {
    fn drop(&mut self) {
        self.release();
    }
}

/// A copy of a buffered frame (data and trailers share their storage).
fn copy(frame: &Frame<Bytes>) -> Frame<Bytes> {
    match (frame.data_ref(), frame.trailers_ref()) {
        (Some(data), _) => Frame::data(data.clone()),
        (None, Some(trailers)) => Frame::trailers(trailers.clone()),
        (None, None) => Frame::data(Bytes::new()),
    }
}

/// Another try is still reading the body (it should have ended before a retry started).
#[derive(Debug, thiserror::Error)]
#[error("request body is still being sent by an earlier try")]
struct Busy;

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.held.is_none() {
            let taken = this
                .shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            match taken {
                Some(state) => this.held = Some(state),
                None => return Poll::Ready(Some(Err(Busy.into()))),
            }
        }
        let Some(state) = this.held.as_mut() else {
            return Poll::Ready(Some(Err(Busy.into())));
        };
        if let Some(frame) = state.frames.get(this.sent) {
            this.sent += 1;
            return Poll::Ready(Some(Ok(copy(frame))));
        }
        let Some(rest) = state.rest.as_mut() else {
            this.release();
            return Poll::Ready(None);
        };
        match Pin::new(rest).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, Bytes::len);
                if !state.overflowed && state.buffered + len <= REPLAY_LIMIT {
                    state.buffered += len;
                    state.frames.push(copy(&frame));
                    this.sent += 1;
                } else if !state.overflowed {
                    state.overflowed = true;
                    state.frames = Vec::new();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                state.overflowed = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                state.rest = None;
                this.release();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.as_ref().is_some_and(|s| {
            self.sent >= s.frames.len() && s.rest.as_ref().is_none_or(Body::is_end_stream)
        })
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

//! Request bodies sent upstream: the client's body as it streams (copied to mirrors when a
//! route mirrors), and a mirror's copy. A mirror never slows the real request: a copy that
//! cannot keep up is cut off, and the mirrored request fails instead.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Either;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::mpsc;

use super::replay::ReplayBody;
use super::streams::H2Body;

/// Frames a mirror's copy may lag behind the real request before it is cut off.
const MIRROR_LAG: usize = 16;

/// A request body from a client: HTTP/1.1 (`Left`, hyper's) or HTTP/2 (`Right`, read straight
/// off the `h2` stream by the proxy's own server). Its error is the body's own, boxed.
pub(crate) type FromClient = Either<Incoming, H2Body>;

/// The body error type: the client's body failed, or a mirror's copy was cut off.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A frame of a mirror's copy, or the end of a complete copy.
#[derive(Debug)]
enum Copied {
    Frame(Frame<Bytes>),
    End,
}

pin_project_lite::pin_project! {
    /// A request body sent upstream.
    #[project = Projected]
    #[derive(Debug)]
    pub(crate) enum UpstreamBody {
        /// The client's body, copied to `mirrors` as it streams.
        Client {
            #[pin]
            body: FromClient,
            mirrors: Vec<mpsc::Sender<Copied>>,
        },
        /// A mirror's copy of a client's body.
        Mirror {
            frames: Option<mpsc::Receiver<Copied>>,
            hint: SizeHint,
        },
        /// One try of a body kept for retries.
        Replay { body: ReplayBody },
        /// No body (a bodiless request, retried).
        Empty,
        /// A body made by the proxy (health-check requests).
        Fixed { data: Option<Bytes> },
    }
}

impl UpstreamBody {
    /// The client's body, not copied.
    pub(crate) fn client(body: FromClient) -> Self {
        UpstreamBody::Client {
            body,
            mirrors: Vec::new(),
        }
    }

    /// A copy of this body for a mirror. The copy ends when this body ends, and fails if this
    /// one fails or if the copy falls more than a few frames behind.
    pub(crate) fn mirror(&mut self) -> UpstreamBody {
        match self {
            UpstreamBody::Client { body, mirrors } => {
                let hint = body.size_hint();
                if body.is_end_stream() {
                    return UpstreamBody::Mirror { frames: None, hint };
                }
                let (tx, rx) = mpsc::channel(MIRROR_LAG);
                mirrors.push(tx);
                UpstreamBody::Mirror {
                    frames: Some(rx),
                    hint,
                }
            }
            UpstreamBody::Mirror { hint, .. } => UpstreamBody::Mirror {
                frames: None,
                hint: *hint,
            },
            UpstreamBody::Replay { .. } | UpstreamBody::Empty | UpstreamBody::Fixed { .. } => {
                UpstreamBody::Empty
            }
        }
    }

    /// This body made ready for retries: what is kept to send it again (see
    /// [`UpstreamBody::again`]), and the first try's body. Bodiless requests keep nothing.
    pub(crate) fn replayable(self) -> (UpstreamBody, UpstreamBody) {
        if self.is_end_stream() {
            (UpstreamBody::Empty, UpstreamBody::Empty)
        } else {
            let (kept, first) = ReplayBody::new(self);
            (
                UpstreamBody::Replay { body: kept },
                UpstreamBody::Replay { body: first },
            )
        }
    }

    /// The body for another try, if it can be sent again.
    pub(crate) fn again(&self) -> Option<UpstreamBody> {
        match self {
            UpstreamBody::Empty => Some(UpstreamBody::Empty),
            UpstreamBody::Replay { body } => body.again().map(|body| UpstreamBody::Replay { body }),
            UpstreamBody::Client { .. }
            | UpstreamBody::Mirror { .. }
            | UpstreamBody::Fixed { .. } => None,
        }
    }
}

/// A mirror's copy was cut off: it lagged, or the client's body failed.
#[derive(Debug, thiserror::Error)]
#[error("mirrored request body cut off")]
struct CutOff;

fn copy(frame: &Frame<Bytes>) -> Option<Frame<Bytes>> {
    if let Some(data) = frame.data_ref() {
        Some(Frame::data(data.clone()))
    } else {
        frame.trailers_ref().map(|t| Frame::trailers(t.clone()))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project() {
            Projected::Client { mut body, mirrors } => {
                let polled = body.as_mut().poll_frame(cx);
                if mirrors.is_empty() {
                    return polled.map_err(Into::into);
                }
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        mirrors.retain(|m| {
                            copy(frame).is_none_or(|f| m.try_send(Copied::Frame(f)).is_ok())
                        });
                    }
                    Poll::Ready(Some(Err(_))) => mirrors.clear(),
                    Poll::Ready(None) | Poll::Pending => {}
                }
                // The end is told as soon as it is known: the upstream client may never poll an
                // ended body again.
                if matches!(polled, Poll::Ready(None)) || body.is_end_stream() {
                    for m in mirrors.drain(..) {
                        let _ = m.try_send(Copied::End);
                    }
                }
                polled.map_err(Into::into)
            }
            Projected::Mirror { frames, .. } => {
                let Some(rx) = frames else {
                    return Poll::Ready(None);
                };
                match rx.poll_recv(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(Copied::Frame(f))) => Poll::Ready(Some(Ok(f))),
                    Poll::Ready(Some(Copied::End)) => {
                        *frames = None;
                        Poll::Ready(None)
                    }
                    Poll::Ready(None) => {
                        *frames = None;
                        Poll::Ready(Some(Err(CutOff.into())))
                    }
                }
            }
            Projected::Replay { body } => Pin::new(body).poll_frame(cx),
            Projected::Empty => Poll::Ready(None),
            Projected::Fixed { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Client { body, .. } => body.is_end_stream(),
            UpstreamBody::Mirror { frames, .. } => frames.is_none(),
            UpstreamBody::Replay { body } => body.is_end_stream(),
            UpstreamBody::Empty => true,
            UpstreamBody::Fixed { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Client { body, .. } => body.size_hint(),
            UpstreamBody::Mirror { hint, .. } => *hint,
            UpstreamBody::Replay { body } => body.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Fixed { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

//! Recording a call's outcome when its response body ends (or an event in it decides).

use std::fmt;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::error::IdleTimeout;
use super::idle::IdleTimer;
use super::scan::Scanner;
use crate::circuit_breaker::{Outcome, Recorder};
use crate::BoxError;

/// Decides what a response body that ended cleanly means, from its trailers (if it had any).
///
/// Any `Fn(Option<&HeaderMap>) -> Outcome` is one. A body that fails (yields an error) is always
/// a [`Failure`](Outcome::Failure); a body dropped before its end records nothing.
pub trait EndClassifier {
    /// Classifies the end of a body: `trailers` is `Some` when it ended with trailers.
    fn classify_end(&self, trailers: Option<&HeaderMap>) -> Outcome;
}

impl<F> EndClassifier for F
where
    F: Fn(Option<&HeaderMap>) -> Outcome,
{
    fn classify_end(&self, trailers: Option<&HeaderMap>) -> Outcome {
        self(trailers)
    }
}

/// The plain-HTTP end of stream: a body that ends cleanly, with or without trailers, is a
/// [`Success`](Outcome::Success).
#[derive(Debug, Clone, Copy, Default)]
pub struct CleanEnd;

impl EndClassifier for CleanEnd {
    fn classify_end(&self, _trailers: Option<&HeaderMap>) -> Outcome {
        Outcome::Success
    }
}

pin_project! {
    /// A response body that records its call's outcome when it ends, or when one of its events
    /// decides.
    ///
    /// Made by [`EndOfStream`](super::EndOfStream) (and, with feature `grpc`, by
    /// [`GrpcClassifier`](crate::grpc::GrpcClassifier)). It yields the inner body's frames
    /// unchanged (errors boxed) and records, once, whichever comes first:
    ///
    /// - an event that decides the call, in a body whose events are scanned (see
    ///   [`StreamEvents`](super::StreamEvents)): what the event says, as soon as it has been
    ///   read — the body may be dropped afterwards without changing anything;
    /// - when the body ends — with trailers or not, or when
    ///   [`is_end_stream`](Body::is_end_stream) turns true after a frame — what `T` says
    ///   (see [`EndClassifier`]);
    /// - when the body yields an error: [`Failure`](Outcome::Failure) (a stream broken half-way);
    /// - when the body has waited longer than its idle timeout for a frame: it yields an
    ///   [`IdleTimeout`] error, ends, and records a [`Failure`](Outcome::Failure);
    /// - when it is dropped before any of these: nothing (the call is neutral, like a dropped
    ///   response future, and a half-open probe permit is given back) — unless the thread is
    ///   panicking, which records a failure.
    ///
    /// A body whose verdict was already recorded (say, from the response's status) just passes
    /// its frames through (and still honours the idle timeout).
    pub struct OutcomeBody<B, T = CleanEnd> {
        #[pin]
        inner: B,
        recorder: Option<Recorder>,
        eos: T,
        scan: Option<Scanner>,
        idle: IdleTimer,
        timed_out: bool,
    }
}

impl<B, T> OutcomeBody<B, T> {
    /// Wraps `inner`; `recorder` (if any) records when the body ends, as `eos` decides.
    pub fn new(inner: B, recorder: Option<Recorder>, eos: T) -> Self {
        OutcomeBody {
            inner,
            recorder,
            eos,
            scan: None,
            idle: IdleTimer::new(None),
            timed_out: false,
        }
    }

    /// Scans the body's events with `scan`, and ends it with an error after `idle` without a
    /// frame.
    pub(crate) fn watch(mut self, scan: Option<Scanner>, idle: Option<Duration>) -> Self {
        if self.recorder.is_some() {
            self.scan = scan;
        }
        self.idle = IdleTimer::new(idle);
        self
    }

    /// Whether the outcome is still to be recorded.
    pub fn is_pending(&self) -> bool {
        self.recorder.is_some()
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Body, T: EndClassifier> OutcomeBody<B, T> {
    /// Wraps `inner`, recording at once if it is already at its end.
    pub(crate) fn deferred(inner: B, recorder: Recorder, eos: T) -> Self {
        if inner.is_end_stream() {
            recorder.record(eos.classify_end(None));
            OutcomeBody::new(inner, None, eos)
        } else {
            recorder.head_arrived();
            OutcomeBody::new(inner, Some(recorder), eos)
        }
    }
}

impl<B, T> Body for OutcomeBody<B, T>
where
    B: Body,
    B::Error: Into<BoxError>,
    T: EndClassifier,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if *this.timed_out {
            return Poll::Ready(None);
        }
        let polled = match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(polled) => polled,
            Poll::Pending => {
                if this.idle.poll_expired(cx).is_pending() {
                    return Poll::Pending;
                }
                let idle = this.idle.timeout().unwrap_or_default();
                *this.timed_out = true;
                *this.scan = None;
                if let Some(recorder) = this.recorder.take() {
                    trace_debug!(?idle, "response body idle too long; recording a failure");
                    recorder.record(Outcome::Failure);
                }
                return Poll::Ready(Some(Err(IdleTimeout::new(idle).into())));
            }
        };
        this.idle.frame();
        let Some(recorder) = this.recorder.take() else {
            return Poll::Ready(polled.map(|frame| frame.map_err(Into::into)));
        };
        match &polled {
            None => recorder.record(this.eos.classify_end(None)),
            Some(Err(_)) => {
                trace_debug!("response body failed; recording a failure");
                recorder.record(Outcome::Failure);
            }
            Some(Ok(frame)) => {
                let decided = match (this.scan.as_mut(), frame.data_ref()) {
                    (Some(scan), Some(data)) => feed(scan, data),
                    _ => None,
                };
                if let Some(outcome) = decided {
                    *this.scan = None;
                    recorder.record(outcome);
                } else if let Some(trailers) = frame.trailers_ref() {
                    recorder.record(this.eos.classify_end(Some(trailers)));
                } else if this.inner.is_end_stream() {
                    recorder.record(this.eos.classify_end(None));
                } else {
                    *this.recorder = Some(recorder);
                }
            }
        }
        Poll::Ready(polled.map(|frame| frame.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Feeds every byte of `data` to the scanner, chunk by chunk (a `Bytes` is one chunk).
fn feed<D: Buf>(scan: &mut Scanner, data: &D) -> Option<Outcome> {
    let first = data.chunk();
    if first.len() == data.remaining() {
        return scan.feed(first);
    }
    let mut slices = [IoSlice::new(&[]); 64];
    let n = data.chunks_vectored(&mut slices);
    for slice in &slices[..n] {
        if let Some(outcome) = scan.feed(slice) {
            return Some(outcome);
        }
    }
    None
}

impl<B: Default, T: Default> Default for OutcomeBody<B, T> {
    fn default() -> Self {
        OutcomeBody::new(B::default(), None, T::default())
    }
}

impl<B: fmt::Debug, T: fmt::Debug> fmt::Debug for OutcomeBody<B, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutcomeBody")
            .field("inner", &self.inner)
            .field("pending", &self.recorder.is_some())
            .field("eos", &self.eos)
            .field("scan", &self.scan)
            .field("idle_timeout", &self.idle.timeout())
            .finish()
    }
}

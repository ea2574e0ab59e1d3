//! The idle timeout between a response body's frames.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Measures how long a body has been waiting for its next frame.
///
/// Only the time spent waiting counts: the period starts at the first `Pending` after a frame
/// (or the first poll), not when the frame was handed out, so a caller that is slow to read
/// never makes the stream look idle. The timer is allocated at the body's first wait (boxed, so
/// the body stays `Unpin`) and then reset, never reallocated; with no timeout it does nothing.
#[derive(Debug)]
pub(crate) struct IdleTimer {
    timeout: Option<Duration>,
    // A frame came since the timer was last armed: the next wait starts a new period.
    rearm: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    pub(crate) fn new(timeout: Option<Duration>) -> Self {
        IdleTimer {
            timeout,
            rearm: true,
            sleep: None,
        }
    }

    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// A frame arrived.
    #[inline]
    pub(crate) fn frame(&mut self) {
        self.rearm = true;
    }

    /// The body is waiting for a frame: `Ready` once it has waited longer than the timeout
    /// since the last frame, otherwise `Pending` with `cx`'s waker registered with the timer
    /// (never `Ready` without a timeout).
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(timeout) = self.timeout else {
            return Poll::Pending;
        };
        if std::mem::take(&mut self.rearm) {
            let deadline = Instant::now() + timeout;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

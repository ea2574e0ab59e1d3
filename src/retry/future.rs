//! The future a [`RetryPolicy`](super::RetryPolicy) returns for one retry.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::circuit_breaker::{Handle, State};

pin_project! {
    /// Waits before one retry: the back-off, the server's hint or the circuit's `retry_after`
    /// that [`RetryPolicy`](super::RetryPolicy) decided on.
    ///
    /// When the policy was given the breaker's [`Handle`] (`circuit`), the wait also checks the
    /// circuit when it ends: if the circuit was tripped again in the meantime (by other traffic)
    /// and is `Open`, it waits on until the circuit's new `retry_after`, as long as that ends
    /// within the policy's `max_retry_after` of the moment the retry was decided.
    ///
    /// Uses tokio's clock, so a paused test clock drives it.
    pub struct Wait {
        // Created on the first poll, so deciding a retry needs no timer (and a zero wait none).
        #[pin]
        sleep: Option<Sleep>,
        deadline: Instant,
        delay: Duration,
        circuit: Option<Handle>,
        // Past this instant a reopened circuit is no longer waited for.
        limit: Instant,
    }
}

impl Wait {
    pub(crate) fn new(delay: Duration, circuit: Option<Handle>, max_wait: Duration) -> Self {
        let now = Instant::now();
        Wait {
            sleep: None,
            deadline: now + delay,
            delay,
            circuit,
            limit: now + delay.max(max_wait),
        }
    }

    /// How long the policy decided to wait before the retry (a reopened circuit may extend it).
    pub fn delay(&self) -> Duration {
        self.delay
    }
}

/// How much longer a circuit that is `Open` again keeps calls out, if it is.
fn reopened_for(handle: &Handle) -> Option<Duration> {
    // `state()` is cheap; `stats()` builds a snapshot, so only ask it when there is something
    // to wait for.
    if handle.state() != State::Open {
        return None;
    }
    handle.stats().retry_after.filter(|d| !d.is_zero())
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            match this.sleep.as_mut().as_pin_mut() {
                Some(sleep) => ready!(sleep.poll(cx)),
                None if Instant::now() < *this.deadline => {
                    this.sleep
                        .set(Some(tokio::time::sleep_until(*this.deadline)));
                    continue;
                }
                None => {}
            }
            let now = Instant::now();
            match this.circuit.as_ref().and_then(reopened_for) {
                Some(more) if now + more <= *this.limit => {
                    *this.deadline = now + more;
                    match this.sleep.as_mut().as_pin_mut() {
                        Some(sleep) => sleep.reset(*this.deadline),
                        None => this
                            .sleep
                            .set(Some(tokio::time::sleep_until(*this.deadline))),
                    }
                }
                // Waiting longer than allowed would only end in the same place: let the attempt
                // go and the policy decide on its result.
                _ => return Poll::Ready(()),
            }
        }
    }
}

impl fmt::Debug for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait")
            .field("delay", &self.delay)
            .field("deadline", &self.deadline)
            .field("circuit", &self.circuit.as_ref().map(Handle::name))
            .finish_non_exhaustive()
    }
}

//! The allocation tests' harness: an inner service that never allocates, and a loop of
//! `poll_ready` + `call` + poll to completion watched by a counting global allocator (the
//! `allocation-counter` crate), so any allocation counted is the middleware's own.

use std::future::{ready, Future, Ready};
use std::task::{Context, Poll};

use tower::Service;

/// The inner service's error: zero-sized, so boxing it (as the breaker does) allocates nothing.
#[derive(Debug)]
pub struct Odd;

impl std::fmt::Display for Odd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("odd")
    }
}

impl std::error::Error for Odd {}

/// A service that never allocates; fails 1 call in 7, never twice in a row (nothing trips).
#[derive(Clone)]
pub struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = Odd;
    type Future = Ready<Result<u64, Odd>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: u64) -> Self::Future {
        ready(if req % 7 == 3 { Err(Odd) } else { Ok(req) })
    }
}

/// Heap allocations made by `calls` admitted calls through `svc` (requests `0..calls`).
pub fn count_allocations<S: Service<u64>>(svc: &mut S, calls: u64) -> u64 {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let info = allocation_counter::measure(|| {
        for i in 0..calls {
            assert!(svc.poll_ready(&mut cx).is_ready());
            let mut future = std::pin::pin!(svc.call(i));
            assert!(future.as_mut().poll(&mut cx).is_ready());
        }
    });
    info.count_total
}

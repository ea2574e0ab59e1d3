//! A bulkhead: bounded concurrency, a bounded wait queue, and a bounded wait.
//!
//! A [`Bulkhead`] lets at most `max_concurrent` calls into the inner service at once. Further
//! callers wait in a FIFO queue of at most `max_queue`; a caller beyond that is rejected at once
//! with [`BulkheadFull`](error::BulkheadFull), and a caller that has waited `max_wait` is
//! rejected with [`BulkheadTimeout`](error::BulkheadTimeout). A rejected call never reaches the
//! inner service. Give each operation (chat, embeddings, tools) its own layer, so that one slow
//! operation cannot use up the capacity of the others.
//!
//! As in tower's `ConcurrencyLimit`, the slot is taken in `poll_ready` (a waiter is `Pending`
//! and woken in turn), moved into the response future at `call`, and freed when the call
//! completes, fails, panics or is dropped — or when a ready clone is dropped without calling.
//! Rejections are *ready-with-rejection*: `poll_ready` returns `Ready(Ok(()))` and `call`
//! returns the error, because `Err` from `poll_ready` is terminal in tower.
//!
//! Rejections are local backpressure, not a sick dependency: a
//! [`CircuitBreaker`](crate::circuit_breaker::CircuitBreaker) placed outside a bulkhead does not
//! count them as failures (its default classifier marks them
//! [`Ignored`](crate::circuit_breaker::Outcome::Ignored)).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Service, ServiceExt};
//! use tower_layer::Layer;
//! use tower_breaker::bulkhead::{error::BulkheadFull, BulkheadLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_breaker::BoxError> {
//! let layer = BulkheadLayer::builder()
//!     .name("chat")
//!     .max_concurrent(1)
//!     .max_queue(0)
//!     .max_wait(Duration::from_secs(30))
//!     .build()?;
//! let handle = layer.handle();
//! let mut svc = layer.layer(service_fn(|prompt: &'static str| async move {
//!     Ok::<_, std::io::Error>(prompt.len())
//! }));
//!
//! // One call holds the only slot...
//! let running = svc.ready().await?.call("hello");
//! assert_eq!(handle.stats().active, 1);
//!
//! // ...so with no queue, the next caller is rejected without reaching the service.
//! let mut other = svc.clone();
//! let err = other.ready().await?.call("world").await.unwrap_err();
//! assert_eq!(err.downcast_ref::<BulkheadFull>().unwrap().name(), "chat");
//!
//! assert_eq!(running.await?, 5);
//! assert_eq!(handle.stats().active, 0);
//! assert_eq!(handle.stats().rejected, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Streaming responses
//!
//! By default a call frees its slot when the response arrives. A [`HoldPermit`] can keep the
//! slot in the response instead; with feature `http`,
//! [`hold_permit_until_body_end`](Builder::hold_permit_until_body_end) keeps it until the HTTP
//! response body ends, so a streamed answer counts against the bulkhead while it streams.

mod config;
pub mod error;
pub mod future;
mod handle;
mod hold;
pub(crate) mod keyed_admit;
mod layer;
mod queue;
#[cfg(feature = "serde")]
mod serialize;
mod service;

pub use config::{Builder, DEFAULT_MAX_CONCURRENT, DEFAULT_MAX_QUEUE, DEFAULT_MAX_WAIT};
pub use future::ResponseFuture;
pub use handle::{Handle, Stats};
pub use hold::{HoldPermit, Permit, ReleaseOnResponse};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use hold::{HoldUntilBodyEnd, PermitBody};
pub use layer::BulkheadLayer;
pub use service::Bulkhead;

//! A circuit breaker for any [`Service`](tower_service::Service).
//!
//! A [`CircuitBreaker`] watches the outcomes of the calls it passes. When a dependency keeps
//! failing — `N` failures in a row, a failure rate or slow-call rate over a window, or a server
//! asking to back off — the circuit **opens** and calls stop reaching it. After the open
//! duration the circuit goes **half-open** and admits a few probe calls; enough probe successes
//! **close** it again, and any probe failure reopens it (for longer, with back-off on).
//!
//! ```text
//!            trip rule fires                 open duration ends
//!   Closed ─────────────────────▶ Open ───────────────────────────▶ HalfOpen
//!     ▲                            ▲                                   │ │
//!     │                            └──── probe fails / times out ──────┘ │
//!     └──────────────── success_threshold probe successes ───────────────┘
//! ```
//!
//! Two modes decide what an open circuit looks like to the caller:
//!
//! | mode | open circuit | use under |
//! | --- | --- | --- |
//! | default | `poll_ready` is `Pending` until the circuit may admit again | `Buffer`, `Balance`, `Failover`, `ServiceBuilder` stacks driven by `ready()` |
//! | [`fail_fast`](Builder::fail_fast) | `poll_ready` is ready, `call` fails with [`CircuitOpen`](error::CircuitOpen) | axum handlers, tonic clients, direct callers, `Steer` |
//!
//! `Err` from `poll_ready` is terminal in tower (it kills a `Buffer`, evicts a `Balance`
//! endpoint), so the breaker never returns one of its own there.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Service, ServiceExt};
//! use tower_layer::Layer;
//! use tower_breaker::circuit_breaker::{error::CircuitOpen, CircuitBreakerLayer, State};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = CircuitBreakerLayer::builder()
//!     .name("flaky")
//!     .consecutive_failures(2)
//!     .open_duration(Duration::from_secs(10))
//!     .fail_fast()
//!     .build()
//!     .unwrap();
//! let handle = layer.handle();
//! let mut svc = layer.layer(service_fn(|fail: bool| async move {
//!     if fail { Err("boom") } else { Ok("ok") }
//! }));
//!
//! assert!(svc.ready().await.unwrap().call(true).await.is_err());
//! assert!(svc.ready().await.unwrap().call(true).await.is_err());
//! assert_eq!(handle.state(), State::Open);
//!
//! // The inner service is no longer called.
//! let err = svc.ready().await.unwrap().call(false).await.unwrap_err();
//! let open = err.downcast_ref::<CircuitOpen>().unwrap();
//! assert_eq!(open.name(), "flaky");
//! assert!(open.retry_after().unwrap() <= Duration::from_secs(10));
//! # }
//! ```
//!
//! # Semantics
//!
//! The main rules (every rule, with the bulkhead's and `Failover`'s, is in `docs/semantics.md`):
//!
//! - **Generations.** Every transition starts a new generation, and a result counts only in the
//!   generation that admitted it: a call admitted while closed that ends after a trip changes
//!   nothing, and neither does a probe that ends after its phase.
//! - **Half-open probes** are reserved in `poll_ready`, `half_open_permits` per phase across all
//!   clones. A dropped ready clone, a dropped response future, or an
//!   [`Ignored`](Outcome::Ignored) probe gives its permit back and wakes waiters.
//! - **Drops are neutral**, panics are failures: a dropped response future records nothing; a
//!   panic in the inner future or in the classifier counts as a failure, and every permit is
//!   released either way.
//! - **Open duration** ends at `opened_at + d` inclusive. With
//!   [`max_open_duration`](Builder::max_open_duration), `d` doubles (with jitter) per re-trip.
//!   [`Outcome::Throttled`] with a hint opens for exactly that hint (clamped), without counting
//!   a failure.
//! - **Time** is tokio's clock, so `#[tokio::test(start_paused = true)]` drives every timer.

// In the order a request meets them: `service` (`poll_ready`, `call`) → `future` → `guard`
// (record) → `rules` and `machine` (decide) → `shared` (publish, wake).
mod adaptive;
mod backoff;
mod classify;
mod config;
pub mod error;
#[cfg(feature = "redis")]
mod fleet_apply;
pub mod future;
pub(crate) mod guard;
mod handle;
pub(crate) mod keyed_admit;
mod layer;
mod machine;
mod rules;
#[cfg(feature = "serde")]
mod serialize;
mod service;
pub(crate) mod shared;
mod state;
mod ticket;
mod waiters;
mod window;

pub use adaptive::AdaptiveThresholds;
pub use classify::{Classify, DefaultClassifier, Immediate, Outcome, ResponseClassifier};
pub use config::Builder;
pub use future::Recorder;
pub use future::ResponseFuture;
pub use handle::{Handle, Stats};
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreaker;
pub use state::{Reason, State, Transition};

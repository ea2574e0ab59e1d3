//! Failure isolation for any [`tower::Service`](tower_service::Service).
//!
//! `tower-breaker` wraps the services you call — LLM providers, HTTP APIs, gRPC backends — so that
//! one bad dependency never takes the whole service down:
//!
//! - [`circuit_breaker`]: stops calling a dependency that keeps failing, probes it after a pause,
//!   and resumes when it recovers. An open circuit is `Pending` (default) or a fast
//!   [`CircuitOpen`](circuit_breaker::error::CircuitOpen) error (`fail_fast`).
//! - [`bulkhead`]: bounds how many calls run at once, how many may wait, and for how long.
//! - `http` (feature `http`): HTTP status and `Retry-After` classification, outcomes decided at
//!   the end of the response body, the crate's rejections as `503` responses on servers (an
//!   axum `Router` included).
//! - `grpc` (feature `grpc`): `grpc-status` classification from headers and trailers,
//!   `CircuitOpen` as `tonic::Status::unavailable`.
//! - [`failover`]: sends each request to the highest-priority service that is ready, so an
//!   open circuit moves traffic to the next one and a recovered primary takes it back.
//! - [`keyed`]: one breaker per key taken from the request (provider, host, operation), with a
//!   bounded number of keys.
//! - [`health`]: an aggregate health report over named circuits, for a `/health` endpoint.
//! - `metrics` (feature `metrics`): state, calls by outcome, transitions and bulkhead series for
//!   the `metrics` facade (Prometheus, OpenTelemetry), pushed from existing counters.
//! - `settings` (feature `serde`): breaker, bulkhead, keyed and failover settings read from
//!   configuration files, validated, with errors that name the bad field's path.
//! - [`retry`]: a `tower::retry::Policy` for outside the breaker: never retries into an open
//!   circuit before its `retry_after`, honours server back-off hints, spends a retry budget.
//!
//! The rules the breaker, the bulkhead and `Failover` follow are listed one per section in
//! `docs/semantics.md`; [`circuit_breaker`](circuit_breaker#semantics) sums up the breaker's.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//! use tower_breaker::circuit_breaker::{CircuitBreakerLayer, State};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_breaker::BoxError> {
//! let breaker = CircuitBreakerLayer::builder()
//!     .name("upstream")
//!     .consecutive_failures(3)
//!     .open_duration(Duration::from_secs(30))
//!     .build()?;
//! let handle = breaker.handle();
//!
//! let mut svc = ServiceBuilder::new()
//!     .layer(breaker)
//!     .service(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x * 2) }));
//!
//! assert_eq!(svc.ready().await?.call(21).await?, 42);
//! assert_eq!(handle.state(), State::Closed);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

#[macro_use]
mod macros;
mod config_error;
mod striped;
mod sync;
mod time;

#[cfg(loom)]
#[doc(hidden)]
pub use time::loom_clock;

pub mod bulkhead;
pub mod circuit_breaker;
pub mod failover;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod fleet;
#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub mod grpc;
pub mod health;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
pub mod keyed;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub mod retry;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub mod settings;

pub use config_error::ConfigError;

/// The error type of every service in this crate: errors of the inner service and this crate's
/// own errors ([`CircuitOpen`](circuit_breaker::error::CircuitOpen),
/// [`BulkheadFull`](bulkhead::error::BulkheadFull), ...) boxed, as in `tower`; downcast with
/// `err.downcast_ref::<CircuitOpen>()`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

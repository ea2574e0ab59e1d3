//! Server side: the crate's rejections as HTTP responses, so a breaker or bulkhead can sit in
//! front of a handler.
//!
//! An axum `Router` (and hyper's `serve_connection`) wants services whose error type is
//! [`Infallible`](std::convert::Infallible): every request must get a response. A
//! [`CircuitBreaker`](crate::circuit_breaker::CircuitBreaker) or
//! [`Bulkhead`](crate::bulkhead::Bulkhead) in front of a handler rejects with an error instead.
//! [`RejectionResponseLayer`], placed outside them, answers those rejections:
//!
//! | error (anywhere in the error's source chain) | response |
//! |---|---|
//! | [`CircuitOpen`] | `503 Service Unavailable` (see [`circuit_open_status`](RejectionResponseLayer::circuit_open_status)), with `Retry-After` in whole seconds, rounded up, when the circuit knows when it admits again |
//! | [`BulkheadFull`], [`BulkheadTimeout`] | `503 Service Unavailable` (see [`bulkhead_status`](RejectionResponseLayer::bulkhead_status)) |
//! | any other error | `500 Internal Server Error` (see [`error_status`](RejectionResponseLayer::error_status)) |
//!
//! The response body is the body type's `Default` (empty for `axum::body::Body` and
//! `http_body_util::Full`). An error from the inner service's `poll_ready` is answered the same
//! way: `poll_ready` then reports ready and the next `call` returns that response without calling
//! the inner service.
//!
//! Shedding only works if the rejection is fast, so use a fail-fast breaker
//! ([`fail_fast`](crate::circuit_breaker::Builder::fail_fast)) and a bulkhead with a short or no
//! queue: the default (waiting) breaker holds requests back while the circuit is open instead of
//! rejecting them. For errors of your own handlers, turn them into responses inside this layer
//! (axum's `HandleErrorLayer`, or handlers returning `Result<_, YourError>` with `IntoResponse`).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower::ServiceBuilder;
//! use tower_breaker::bulkhead::BulkheadLayer;
//! use tower_breaker::http::server::RejectionResponseLayer;
//!
//! # fn main() -> Result<(), tower_breaker::ConfigError> {
//! let bulkhead = BulkheadLayer::builder()
//!     .name("chat")
//!     .max_concurrent(64)
//!     .max_queue(0)
//!     .build()?;
//! let app: Router = Router::new().route("/chat", get(|| async { "hello" })).layer(
//!     ServiceBuilder::new()
//!         .layer(RejectionResponseLayer::new().bulkhead_status(http::StatusCode::TOO_MANY_REQUESTS))
//!         .layer(bulkhead),
//! );
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! [`CircuitOpen`]: crate::circuit_breaker::error::CircuitOpen
//! [`BulkheadFull`]: crate::bulkhead::error::BulkheadFull
//! [`BulkheadTimeout`]: crate::bulkhead::error::BulkheadTimeout

pub mod future;
mod layer;
mod service;

pub use layer::RejectionResponseLayer;
pub use service::RejectionResponse;

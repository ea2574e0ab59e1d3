//! HTTP awareness (feature `http`): status and back-off hint classification, outcomes decided
//! at the end of the response body, and [`CircuitOpen`] as a `503` response.
//!
//! For HTTP clients a failure is often an `Ok` response — a 5xx, a 429 — or a status that only
//! arrives at the end of the body: a gRPC error in trailers, an SSE stream that breaks half-way.
//! And the server often says how long to back off.
//!
//! - [`HttpClassifier`]: a [`Classify`](crate::circuit_breaker::Classify) for
//!   `http::Response<B>`. 5xx is a failure, 429 and 503 with a back-off hint are
//!   [`Throttled`](crate::circuit_breaker::Outcome::Throttled) (the circuit opens for the
//!   hint, no failure counted), other 4xx are ignored. Configurable.
//! - [`retry_after`]: one total parser for `Retry-After` (seconds, fractional seconds,
//!   HTTP-date), `retry-after-ms`, `x-ms-retry-after-ms` and `grpc-retry-pushback-ms`.
//! - [`EndOfStream`] / [`OutcomeBody`]: a
//!   [`ClassifyResponse`](crate::circuit_breaker::ClassifyResponse) that defers a good-looking
//!   response's verdict to the end of its body. A body error is a failure, a body dropped early
//!   is neutral. The `grpc` feature's [`GrpcClassifier`](crate::grpc::GrpcClassifier) builds on
//!   it.
//! - [`circuit_open_response`]: turns a [`CircuitOpen`] into `503 Service Unavailable` with
//!   `Retry-After`, for axum's `HandleErrorLayer` or any server.
//!
//! ```
//! use std::time::Duration;
//! use tower_breaker::circuit_breaker::CircuitBreakerLayer;
//! use tower_breaker::http::{EndOfStream, HttpClassifier};
//!
//! // Decide from the status alone:
//! let by_status = CircuitBreakerLayer::builder()
//!     .classifier(HttpClassifier::new())
//!     .build()
//!     .unwrap();
//! // Or let a 2xx stream prove itself to its end:
//! let by_body = CircuitBreakerLayer::builder()
//!     .response_classifier(EndOfStream::new())
//!     .retry_after_bounds(Duration::from_millis(100), Duration::from_secs(120))
//!     .build()
//!     .unwrap();
//! # let _ = (by_status, by_body);
//! ```
//!
//! # Which mode where
//!
//! An open circuit is either `Pending` from `poll_ready` (the default mode) or a fast
//! [`CircuitOpen`] error from `call` ([`fail_fast`](crate::circuit_breaker::Builder::fail_fast)).
//! Pick by what sits around the breaker:
//!
//! | around the breaker | mode | why |
//! | --- | --- | --- |
//! | `tower::balance::p2c::Balance` | default (`Pending`) | Balance skips endpoints that are not ready; an `Err` from `poll_ready` would evict the endpoint for good |
//! | `tower::buffer::Buffer` | default (`Pending`) | requests wait in the buffer until the circuit admits again; an `Err` from `poll_ready` kills the buffer's worker |
//! | this crate's `Failover` router | default (`Pending`) | failover routes to the first *ready* service, so a pending breaker is skipped, not waited on |
//! | `tower::steer::Steer` | [`fail_fast`](crate::circuit_breaker::Builder::fail_fast) | Steer waits for *every* service to be ready, so one pending breaker would block all routes |
//! | axum handlers / routes | [`fail_fast`](crate::circuit_breaker::Builder::fail_fast) | a request should get a quick `503` (see [`circuit_open_response`]), not hang |
//! | tonic clients (`Channel`) | [`fail_fast`](crate::circuit_breaker::Builder::fail_fast) | the RPC should fail with `UNAVAILABLE` at once (put `grpc::UnavailableOnOpenLayer` outside the breaker) rather than wait for its deadline |
//! | a direct caller, `ServiceExt::oneshot` | either | `ready().await` waits for the circuit in the default mode |
//!
//! # Where the breaker goes in a stack
//!
//! ```text
//! ServiceBuilder::new()
//!     .layer(RetryLayer::new(policy))      // outside: every attempt is classified by the breaker
//!     .layer(breaker)                      // the circuit breaker
//!     .layer(TimeoutLayer::new(dur))       // inside: a timeout counts as a failure
//!     .service(client)
//! ```
//!
//! - **`tower::retry` goes outside the breaker.** Each attempt then goes through the breaker and
//!   is classified on its own, so repeated failing attempts trip the circuit; and once it is open,
//!   a fail-fast breaker answers each retry at once with [`CircuitOpen`], so a retry policy that
//!   does not retry `CircuitOpen` (downcast the error) stops hammering a sick dependency. A
//!   retry *inside* the breaker would hide failures from it (three failed attempts look like one
//!   call) and keep calling a dependency the circuit has given up on.
//! - **`tower::timeout` goes inside the breaker**, so a call that times out reaches the breaker
//!   as an error and counts as a failure — a hanging dependency is the one the breaker most
//!   needs to see. Put the timeout *outside* instead only when it measures the caller's
//!   patience rather than the dependency's health (a deadline that includes time spent waiting
//!   for the breaker or a bulkhead); then the breaker never sees the timeout (the response future
//!   is dropped, which is neutral), and if you do want such errors classified, use a classifier
//!   that maps `tower::timeout::error::Elapsed` to
//!   [`Ignored`](crate::circuit_breaker::Outcome::Ignored).
//! - With [`EndOfStream`], the verdict waits for the body, so a timeout on the response head
//!   does not cover a stream that stalls: bound body reads separately if that matters.

mod body;
mod classify;
mod end_of_stream;
pub mod error;
mod events;
mod idle;
#[cfg(feature = "reqwest")]
mod reqwest;
pub mod retry_after;
mod scan;

pub use body::{ClassifyEos, CleanEnd, OutcomeBody};
pub use classify::{HttpClassifier, StatusSet};
pub use end_of_stream::EndOfStream;
pub use events::{Event, EventFormat, StreamEvents};

use http::{header, Response, StatusCode};

use crate::circuit_breaker::error::CircuitOpen;

/// A `503 Service Unavailable` response for a [`CircuitOpen`] rejection, with `Retry-After`
/// (whole seconds, rounded up) when the circuit knows when it will admit again.
///
/// With axum, in a `HandleErrorLayer` in front of a fail-fast breaker:
///
/// ```
/// use axum::{error_handling::HandleErrorLayer, response::IntoResponse, routing::get, Router};
/// use http::StatusCode;
/// use tower::ServiceBuilder;
/// use tower_breaker::{circuit_breaker::{error::CircuitOpen, CircuitBreakerLayer}, http::{circuit_open_response, HttpClassifier}, BoxError};
///
/// async fn handle_error(err: BoxError) -> axum::response::Response {
///     match err.downcast_ref::<CircuitOpen>() {
///         Some(open) => circuit_open_response::<axum::body::Body>(open).into_response(),
///         None => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
///     }
/// }
///
/// let breaker = CircuitBreakerLayer::builder()
///     .fail_fast()
///     .classifier(HttpClassifier::new())
///     .build()
///     .unwrap();
/// let app: Router = Router::new().route("/", get(|| async { "hi" })).layer(
///     ServiceBuilder::new()
///         .layer(HandleErrorLayer::new(handle_error))
///         .layer(breaker),
/// );
/// # let _ = app;
/// ```
pub fn circuit_open_response<B: Default>(open: &CircuitOpen) -> Response<B> {
    let mut res = Response::new(B::default());
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    if let Some(d) = open.retry_after() {
        res.headers_mut()
            .insert(header::RETRY_AFTER, retry_after::to_header_value(d));
    }
    res
}

//! HTTP awareness (feature `http`): status and back-off hint classification, outcomes decided
//! at the end of the response body, and the crate's rejections as `503` responses on servers.
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
//! - [`rate_limit`]: LLM providers' rate-limit headers (OpenAI, Azure OpenAI, Anthropic): the
//!   time until an exhausted limit resets.
//! - [`EndOfStream`] / [`OutcomeBody`]: a
//!   [`ResponseClassifier`](crate::circuit_breaker::ResponseClassifier) that defers a good-looking
//!   response's verdict to its body: a streamed body's events ([`StreamEvents`]: SSE
//!   `[DONE]`, `message_stop`, `event: error`, ...), a body error, an [idle
//!   timeout](EndOfStream::idle_timeout), or its end. The `grpc` feature's
//!   [`GrpcClassifier`](crate::grpc::GrpcClassifier) builds on it.
//! - [`server::RejectionResponseLayer`]: in front of a breaker or bulkhead on a server (an axum
//!   `Router`, hyper), answers `CircuitOpen` with `503 Service Unavailable` and `Retry-After`,
//!   bulkhead rejections with `503` (or a chosen status), other errors with `500`; its error type
//!   is `Infallible`. [`circuit_open_response`] makes the `CircuitOpen` response on its own.
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
//! # Rate-limit headers
//!
//! LLM providers say on every response how much of each rate limit is left, and when it
//! resets (OpenAI and Azure OpenAI: `x-ratelimit-remaining-requests: 0` with
//! `x-ratelimit-reset-requests: 1s`; Anthropic: `anthropic-ratelimit-requests-remaining: 0` with
//! an RFC 3339 `anthropic-ratelimit-requests-reset`, and the same for tokens). When a limit is
//! used up, [`HttpClassifier`] classifies even a `200` as
//! [`Throttled`](crate::circuit_breaker::Outcome::Throttled) until its reset (the longest, if
//! several are): the circuit opens without counting a failure, so the next call goes to a
//! fallback, or waits, instead of drawing a 429. A 429 or 503 without a `Retry-After`-style hint
//! takes the reset as its hint. [`rate_limit_headers(false)`](HttpClassifier::rate_limit_headers)
//! turns this off; [`rate_limit`] has the parsers. With [`EndOfStream`], whose head is an
//! `HttpClassifier`, such a response is decided from its head, and its body is not scanned.
//!
//! # Streaming (SSE)
//!
//! LLM APIs stream their answers as Server-Sent Events in a `200` response, so the status says
//! nothing about how the stream will go. [`EndOfStream::new()`] judges a `text/event-stream`
//! body by its events, the way SDKs read it:
//!
//! - `data: [DONE]` (OpenAI-compatible), `event: message_stop` (Anthropic) or
//!   `event: response.completed` (OpenAI Responses) records a **success as soon as it has been
//!   read**. SDK loops stop there and drop the body before the connection's end of stream; that
//!   drop changes nothing.
//! - `event: error` inside the `200` stream records a **throttle** for rate-limit and overload
//!   types (Anthropic's `overloaded_error`) — with the head's back-off hint if there was one,
//!   otherwise counted as a failure — and a **failure** for any other type.
//! - A body error (the provider cut the stream) is a failure; a stream dropped before any
//!   deciding event is neutral (the user cancelled); a stream that ends cleanly without one
//!   is a success.
//! - With [`idle_timeout`](EndOfStream::idle_timeout), a stream that stalls mid-body ends with
//!   an [`IdleTimeout`](error::IdleTimeout) error and counts as a failure, so a provider that
//!   stalls mid-stream trips the circuit like one that never answers.
//!
//! Events split across frames are reassembled; a body of another content type is not scanned
//! and pays nothing; scanning never buffers the body (only a line split across frames, and the
//! data of an error event, capped). Other markers — NDJSON's `"done": true`, a provider's own
//! terminal event, a predicate of your own — are configured with [`StreamEvents`].
//!
//! A half-open probe's [`probe_timeout`](crate::circuit_breaker::Builder::probe_timeout) covers
//! the time to the response head; after that the body decides, so a healthy 60-second stream
//! used as a probe closes the circuit.
//!
//! ```
//! use std::time::Duration;
//! use tower_breaker::circuit_breaker::CircuitBreakerLayer;
//! use tower_breaker::http::EndOfStream;
//!
//! let layer = CircuitBreakerLayer::builder()
//!     .name("openai")
//!     .response_classifier(EndOfStream::new().idle_timeout(Duration::from_secs(30)))
//!     .build()
//!     .unwrap();
//! # let _ = layer;
//! ```
//!
//! # reqwest
//!
//! With feature `reqwest`, [`HttpClassifier`] and [`EndOfStream`] work directly over
//! `reqwest::Client`, and the layered service stays a
//! `Service<reqwest::Request, Response = reqwest::Response, Error = BoxError>`: the response
//! keeps its `url()`, status, headers and extensions, and `.json()`, `.text()`, `.bytes()` and
//! `.bytes_stream()` work as usual — the outcome is recorded when the body ends, fails, or an
//! event decides. A `reqwest::Error` that [`is_builder`](::reqwest::Error::is_builder) (the
//! request never left: an invalid URL or header) is [`Ignored`](crate::circuit_breaker::Outcome::Ignored);
//! connect, timeout, request and body errors are failures.
//!
//! ```
//! # #[cfg(feature = "reqwest")]
//! # async fn demo() -> Result<(), tower_breaker::BoxError> {
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_breaker::circuit_breaker::CircuitBreakerLayer;
//! use tower_breaker::http::EndOfStream;
//!
//! let client = reqwest::Client::new();
//! let breaker = CircuitBreakerLayer::builder()
//!     .name("openai")
//!     .response_classifier(EndOfStream::new())
//!     .build()?;
//! let mut svc = ServiceBuilder::new()
//!     .layer(breaker)
//!     .timeout(Duration::from_secs(60)) // inside: a timeout counts as a failure
//!     .service(client.clone());
//!
//! let req = client.get("http://127.0.0.1:8080/v1/models").build()?;
//! let res: reqwest::Response = svc.ready().await?.call(req).await?;
//! let models: serde_json::Value = res.json().await?; // recorded here, at the body's end
//! # let _ = models;
//! # Ok(())
//! # }
//! ```
//!
//! Without the feature, `HttpClassifier` does not fit `reqwest::Response`, and the compiler says
//! "the method `ready` exists … but its trait bounds were not satisfied": that is the
//! classifier not fitting the inner service's response type (enable `reqwest`, or classify with
//! a closure over [`HttpClassifier::classify_parts`]).
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
//! | this crate's `Failover` router | either; default (`Pending`) preferred | failover routes to the first *ready* service, so a pending breaker is skipped, not waited on; a fail-fast open circuit is passed over too, but registers no wake-up for its recovery |
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
//! - **`tower::timeout` covers the response head only** (`reqwest`'s `timeout` on the client
//!   covers the whole body, `read_timeout` each read). With [`EndOfStream`] the verdict waits
//!   for the body, so bound a stream that stalls half-way with
//!   [`EndOfStream::idle_timeout`]: it fails the call and the caller's body read, where a
//!   client-side read timeout would only fail the read (the breaker then sees a body error,
//!   also a failure).

mod body;
mod classify;
mod end_of_stream;
pub mod error;
mod events;
mod idle;
pub mod rate_limit;
#[cfg(feature = "reqwest")]
mod reqwest;
pub mod retry_after;
mod scan;
pub mod server;

pub use body::{CleanEnd, EndClassifier, OutcomeBody};
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

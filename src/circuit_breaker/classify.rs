//! Deciding what a finished call means for the circuit.

use std::time::Duration;

use super::guard::Recorder;

/// What one finished call means for the circuit, as decided by a [`Classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The dependency worked.
    Success,
    /// The dependency failed; counts towards tripping (and reopens a half-open circuit).
    Failure,
    /// Says nothing about the dependency's health (a client error, local backpressure):
    /// recorded in `ignored_calls` only. An ignored half-open probe gives its permit back.
    Ignored,
    /// The dependency asked us to back off (HTTP 429, 503 with `Retry-After`, gRPC pushback).
    ///
    /// With `Some(d)` the circuit opens at once for `d` (clamped to the breaker's
    /// `retry_after_bounds`) without counting a failure; with `None` it counts as a
    /// [`Failure`](Outcome::Failure).
    Throttled {
        /// How long the dependency asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
}

/// Classifies the result of a call into an [`Outcome`].
///
/// Any `Fn(Result<&Res, &Err>) -> Outcome + Clone` is a classifier:
///
/// ```
/// use tower_breaker::circuit_breaker::{CircuitBreakerLayer, Outcome};
///
/// // A timeout of ours is not the server's fault; everything else is.
/// let layer = CircuitBreakerLayer::builder()
///     .classifier(|result: Result<&String, &std::io::Error>| match result {
///         Ok(_) => Outcome::Success,
///         Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Outcome::Ignored,
///         Err(_) => Outcome::Failure,
///     })
///     .build()
///     .unwrap();
/// # let _ = layer;
/// ```
///
/// A classifier that panics is contained: the call counts as a [`Outcome::Failure`] and every
/// permit it held is released.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot classify a `Result<{Res}, {Err}>`",
    label = "this classifier does not fit the inner service's response or error type",
    note = "the breaker's classifier must implement `Classify<Response, Error>` for the service it wraps",
    note = "`HttpClassifier` fits `http::Response<B>` (and `reqwest::Response` with feature `reqwest`); for another response type pass a closure `|result: Result<&Res, &Err>| -> Outcome`"
)]
pub trait Classify<Res, Err> {
    /// Decides what `result` means for the circuit.
    fn classify(&self, result: Result<&Res, &Err>) -> Outcome;
}

/// How the breaker finishes a call: classify it now, or hand the [`Recorder`] to the response
/// so the outcome is recorded later (when an HTTP body or gRPC stream ends).
///
/// [`Builder::classifier`](super::Builder::classifier) wraps a [`Classify`] in [`Immediate`],
/// which records at once and returns the response unchanged; implement this trait (and pass it
/// to [`Builder::response_classifier`](super::Builder::response_classifier)) only to defer the
/// verdict. The `http` and `grpc` features' end-of-stream classifiers do, wrapping the
/// response body.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot classify a `Result<{Res}, {Err}>`",
    label = "this classifier does not fit the inner service's response or error type",
    note = "the breaker's classifier must fit the response and error types of the service it wraps",
    note = "`EndOfStream` fits `http::Response<B>` (and `reqwest::Response` with feature `reqwest`); `Immediate<C>` (from `.classifier(c)`) fits what `C: Classify<Res, Err>` fits"
)]
pub trait ResponseClassifier<Res, Err> {
    /// What the breaker's service returns in place of `Res`.
    type Response;

    /// Finishes the call: records an outcome through `recorder` now, or moves `recorder` into
    /// the returned response to record later — then call [`Recorder::head_arrived`] first, so a
    /// half-open probe's timeout stops at the head. Dropping the recorder unused records nothing
    /// (the call is neutral); a panic here counts as a failure.
    fn classify_response(
        &self,
        result: Result<Res, Err>,
        recorder: Recorder,
    ) -> Result<Self::Response, Err>;
}

/// A [`Classify`] used as a [`ResponseClassifier`]: records the outcome as soon as the response
/// (or error) arrives, and returns it unchanged. [`Builder::classifier`](super::Builder::classifier)
/// wraps its classifier in one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Immediate<C>(pub C);

impl<C, Res, Err> ResponseClassifier<Res, Err> for Immediate<C>
where
    C: Classify<Res, Err>,
{
    type Response = Res;

    #[inline]
    fn classify_response(&self, result: Result<Res, Err>, recorder: Recorder) -> Result<Res, Err> {
        recorder.record(self.0.classify(result.as_ref()));
        result
    }
}

impl<F, Res, Err> Classify<Res, Err> for F
where
    F: Fn(Result<&Res, &Err>) -> Outcome,
{
    fn classify(&self, result: Result<&Res, &Err>) -> Outcome {
        self(result)
    }
}

/// The default classifier: `Ok` is a [`Success`](Outcome::Success), `Err` a
/// [`Failure`](Outcome::Failure) — except this crate's own bulkhead rejections
/// ([`BulkheadFull`](crate::bulkhead::error::BulkheadFull),
/// [`BulkheadTimeout`](crate::bulkhead::error::BulkheadTimeout)), which are local backpressure,
/// not a sick dependency, and so are [`Ignored`](Outcome::Ignored). They are recognised whether
/// the error is the bulkhead error itself or a [`BoxError`](crate::BoxError) holding one. With
/// feature `reqwest`, a `reqwest::Error` that is a builder error (an invalid URL or header: the
/// caller's mistake, the request never left) is [`Ignored`](Outcome::Ignored) too.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl<Res, Err: 'static> Classify<Res, Err> for DefaultClassifier {
    fn classify(&self, result: Result<&Res, &Err>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(err) if is_local_backpressure(err) || is_callers_mistake(err) => Outcome::Ignored,
            Err(_) => Outcome::Failure,
        }
    }
}

impl<Res, Err: 'static> ResponseClassifier<Res, Err> for DefaultClassifier {
    type Response = Res;

    #[inline]
    fn classify_response(&self, result: Result<Res, Err>, recorder: Recorder) -> Result<Res, Err> {
        recorder.record(self.classify(result.as_ref()));
        result
    }
}

/// A `reqwest::Error` from building the request: nothing was sent.
fn is_callers_mistake<E: 'static>(err: &E) -> bool {
    #[cfg(feature = "reqwest")]
    {
        let any: &dyn std::any::Any = err;
        let reqwest = any.downcast_ref::<reqwest::Error>().or_else(|| {
            any.downcast_ref::<crate::BoxError>()
                .and_then(|boxed| boxed.downcast_ref::<reqwest::Error>())
        });
        if let Some(e) = reqwest {
            return e.is_builder();
        }
    }
    let _ = err;
    false
}

fn is_local_backpressure<E: 'static>(err: &E) -> bool {
    use crate::bulkhead::error::{BulkheadFull, BulkheadTimeout};
    let any: &dyn std::any::Any = err;
    if any.is::<BulkheadFull>() || any.is::<BulkheadTimeout>() {
        return true;
    }
    match any.downcast_ref::<crate::BoxError>() {
        Some(boxed) => boxed.is::<BulkheadFull>() || boxed.is::<BulkheadTimeout>(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bulkhead::error::{BulkheadFull, BulkheadTimeout};
    use crate::BoxError;

    #[test]
    fn default_classifier_ignores_bulkhead_rejections_only() {
        let c = DefaultClassifier;
        let full: BoxError = Box::new(BulkheadFull::new("x".into()));
        let timeout: BoxError = Box::new(BulkheadTimeout::new("x".into()));
        let other: BoxError = "boom".into();
        assert_eq!(c.classify(Ok::<&(), &BoxError>(&())), Outcome::Success);
        assert_eq!(c.classify(Err::<&(), _>(&full)), Outcome::Ignored);
        assert_eq!(c.classify(Err::<&(), _>(&timeout)), Outcome::Ignored);
        assert_eq!(c.classify(Err::<&(), _>(&other)), Outcome::Failure);
        let bare = BulkheadFull::new("x".into());
        assert_eq!(c.classify(Err::<&(), _>(&bare)), Outcome::Ignored);
        let io = std::io::Error::other("x");
        assert_eq!(c.classify(Err::<&(), _>(&io)), Outcome::Failure);
    }
}

//! `HttpClassifier` and `EndOfStream` over `reqwest::Client` (feature `reqwest`).
//!
//! A breaker over `reqwest::Client` is a `Service<reqwest::Request, Response =
//! reqwest::Response>`: the response keeps its type, URL, status, headers and extensions, and a
//! deferred verdict rides in its body, so `.json()`, `.text()`, `.bytes()`, `.chunk()` and
//! `.bytes_stream()` all record the outcome when they reach the end (or a deciding event).

use http::Response;
use reqwest::ResponseBuilderExt;

use super::body::EndClassifier;
use super::classify::HttpClassifier;
use super::end_of_stream::EndOfStream;
use crate::circuit_breaker::{Classify, DefaultClassifier, Outcome, Recorder, ResponseClassifier};

/// Classifies a `reqwest::Response` by its status and headers, exactly as an
/// `http::Response`; errors as [`DefaultClassifier`] does (a `reqwest::Error` that
/// [`is_builder`](reqwest::Error::is_builder) is the caller's mistake and
/// [`Ignored`](Outcome::Ignored); connect, timeout, request and body errors are failures).
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
impl<E: 'static> Classify<reqwest::Response, E> for HttpClassifier {
    fn classify(&self, result: Result<&reqwest::Response, &E>) -> Outcome {
        match result {
            Ok(res) => self.classify_parts(res.status(), res.headers()),
            Err(e) => DefaultClassifier.classify(Err::<&(), _>(e)),
        }
    }
}

/// Over `reqwest::Client`: the head decides what it can; otherwise the returned
/// `reqwest::Response` carries the verdict in its body (its URL and extensions kept), recorded
/// when the body ends, fails, goes idle, or an event decides — whichever reading method the
/// caller uses.
///
/// Wrapping the body costs one allocation per deferred response (`reqwest::Body` boxes what it
/// wraps) and a copy of the URL; a response decided from its head is returned untouched.
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
impl<C, T, E> ResponseClassifier<reqwest::Response, E> for EndOfStream<C, T>
where
    C: Classify<reqwest::Response, E>,
    T: EndClassifier + Clone + Send + Sync + 'static,
{
    type Response = reqwest::Response;

    fn classify_response(
        &self,
        result: Result<reqwest::Response, E>,
        recorder: Recorder,
    ) -> Result<reqwest::Response, E> {
        let (res, recorder) = self.judge_head(result, recorder)?;
        if recorder.is_none() && self.idle.is_none() {
            return Ok(res); // decided from the head, nothing to watch: untouched
        }
        let url = res.url().clone();
        let (mut parts, body) = Response::<reqwest::Body>::from(res).into_parts();
        let body = self.wrap_body(body, &parts.headers, recorder);
        // reqwest keeps a response's URL in an extension that only its own builder can write.
        let (with_url, ()) = Response::builder()
            .url(url)
            .body(())
            .expect("an empty response builds")
            .into_parts();
        parts.extensions.extend(with_url.extensions);
        Ok(reqwest::Response::from(Response::from_parts(
            parts,
            reqwest::Body::wrap(body),
        )))
    }
}

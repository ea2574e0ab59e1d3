//! Classifying HTTP responses by status code and back-off hint.

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, Response, StatusCode};

use super::{rate_limit, retry_after};
use crate::circuit_breaker::{Classify, DefaultClassifier, Outcome};

/// A set of HTTP status codes (100..=999), stored as a fixed bit set: `Copy`, no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusSet {
    bits: [u64; 16],
}

impl StatusSet {
    /// The empty set.
    pub const fn empty() -> Self {
        StatusSet { bits: [0; 16] }
    }

    /// Adds `code`; codes outside `100..=999` are not HTTP status codes and are skipped.
    pub fn insert(&mut self, code: u16) {
        if (100..=999).contains(&code) {
            let i = usize::from(code);
            self.bits[i / 64] |= 1 << (i % 64);
        }
    }

    /// Removes `code`.
    pub fn remove(&mut self, code: u16) {
        if (100..=999).contains(&code) {
            let i = usize::from(code);
            self.bits[i / 64] &= !(1 << (i % 64));
        }
    }

    /// Whether `code` is in the set.
    pub fn contains(&self, code: u16) -> bool {
        let i = usize::from(code);
        i < 1024 && self.bits[i / 64] & (1 << (i % 64)) != 0
    }
}

impl<T: Into<u16>> FromIterator<T> for StatusSet {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut set = StatusSet::empty();
        for code in iter {
            set.insert(code.into());
        }
        set
    }
}

impl fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries((100..=999u16).filter(|c| self.contains(*c)))
            .finish()
    }
}

type Custom = Arc<dyn Fn(StatusCode, &HeaderMap) -> Option<Outcome> + Send + Sync>;

/// Classifies `http::Response`s by status code, reading the server's back-off hint.
///
/// Defaults, checked in this order:
///
/// | response | outcome |
/// | --- | --- |
/// | a [throttle status](HttpClassifier::throttle_statuses) (429, 503) with a back-off hint ([`retry_after::parse`], else the reset of an exhausted rate limit, [`rate_limit::parse`]) | [`Throttled { retry_after: Some(hint) }`](Outcome::Throttled): opens the circuit for the hint, counts no failure |
/// | a [failure status](HttpClassifier::failure_statuses) (500..=599) | [`Failure`](Outcome::Failure) |
/// | a throttle status without a hint (429) | [`Throttled { retry_after: None }`](Outcome::Throttled), which counts as a failure |
/// | any other 4xx | [`client_errors`](HttpClassifier::client_errors), default [`Ignored`](Outcome::Ignored): the server answered, the request was wrong |
/// | 1xx, 2xx, 3xx whose [rate-limit headers](HttpClassifier::rate_limit_headers) report a limit used up until a later reset ([`rate_limit::parse`]) | [`Throttled { retry_after: Some(reset) }`](Outcome::Throttled): the circuit opens until the reset, before the provider answers 429 |
/// | other 1xx, 2xx, 3xx | [`Success`](Outcome::Success) |
/// | `Err(_)` | [`DefaultClassifier`]: [`Failure`](Outcome::Failure), but this crate's bulkhead rejections are [`Ignored`](Outcome::Ignored) |
///
/// A closure given to [`with`](HttpClassifier::with) runs first and may decide any response.
///
/// It implements [`Classify<http::Response<B>, E>`](Classify) for every body `B` and error
/// `E`; for a client whose response is not an `http::Response` (such as `reqwest`), call
/// [`classify_parts`](HttpClassifier::classify_parts) from a closure.
///
/// ```
/// use std::time::Duration;
/// use http::{Response, StatusCode};
/// use tower_breaker::circuit_breaker::{Classify, Outcome};
/// use tower_breaker::http::HttpClassifier;
///
/// let c = HttpClassifier::new()
///     .failure_statuses((500..=599).chain([408]))
///     .with(|status, _headers| (status == StatusCode::NOT_IMPLEMENTED).then_some(Outcome::Ignored));
///
/// let res = |status: u16, retry_after: Option<&'static str>| {
///     let mut b = Response::builder().status(status);
///     if let Some(v) = retry_after { b = b.header("retry-after", v); }
///     b.body(()).unwrap()
/// };
/// let classify = |r: &Response<()>| c.classify(Ok::<_, &std::io::Error>(r));
/// assert_eq!(classify(&res(200, None)), Outcome::Success);
/// assert_eq!(classify(&res(404, None)), Outcome::Ignored);
/// assert_eq!(classify(&res(408, None)), Outcome::Failure);
/// assert_eq!(classify(&res(501, None)), Outcome::Ignored);
/// assert_eq!(classify(&res(502, None)), Outcome::Failure);
/// assert_eq!(
///     classify(&res(503, Some("2"))),
///     Outcome::Throttled { retry_after: Some(Duration::from_secs(2)) }
/// );
/// assert_eq!(classify(&res(429, None)), Outcome::Throttled { retry_after: None });
///
/// // A 200 that used up the last request of the window: the circuit opens until the reset.
/// let exhausted = Response::builder()
///     .header("x-ratelimit-remaining-requests", "0")
///     .header("x-ratelimit-reset-requests", "1s")
///     .body(())
///     .unwrap();
/// assert_eq!(
///     classify(&exhausted),
///     Outcome::Throttled { retry_after: Some(Duration::from_secs(1)) }
/// );
/// ```
#[derive(Clone)]
pub struct HttpClassifier {
    failures: StatusSet,
    throttles: StatusSet,
    client_errors: Outcome,
    rate_limits: bool,
    custom: Option<Custom>,
}

impl HttpClassifier {
    /// The defaults in the table above.
    pub fn new() -> Self {
        HttpClassifier {
            failures: (500..=599u16).collect(),
            throttles: [429u16, 503].into_iter().collect(),
            client_errors: Outcome::Ignored,
            rate_limits: true,
            custom: None,
        }
    }

    /// Replaces the statuses that are failures (default `500..=599`), e.g.
    /// `(500..=599).chain([408])`; a `StatusCode` is `status.as_u16()`.
    pub fn failure_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.failures = statuses.into_iter().collect();
        self
    }

    /// Replaces the statuses whose back-off hint opens the circuit for that long (default 429
    /// and 503). Without a hint such a status is a failure.
    pub fn throttle_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.throttles = statuses.into_iter().collect();
        self
    }

    /// What a 4xx status that is neither a failure nor a throttle status means (default
    /// [`Outcome::Ignored`]; [`Outcome::Success`] makes any answer prove the server alive).
    pub fn client_errors(mut self, outcome: Outcome) -> Self {
        self.client_errors = outcome;
        self
    }

    /// Whether LLM providers' rate-limit headers count (default `true`): a response that reports
    /// a limit used up (`x-ratelimit-remaining-requests: 0` with `x-ratelimit-reset-requests`,
    /// Anthropic's `anthropic-ratelimit-*-remaining: 0` with its `-reset`) is
    /// [`Throttled`](Outcome::Throttled) until the reset, and a throttle status without a
    /// `Retry-After`-style hint takes the reset as its hint. See [`rate_limit`] for the headers
    /// and formats. `false` judges by status and `Retry-After` alone.
    pub fn rate_limit_headers(mut self, on: bool) -> Self {
        self.rate_limits = on;
        self
    }

    /// Runs `f` first on every response; `Some(outcome)` decides, `None` falls through to the
    /// status sets.
    pub fn with<F>(mut self, f: F) -> Self
    where
        F: Fn(StatusCode, &HeaderMap) -> Option<Outcome> + Send + Sync + 'static,
    {
        self.custom = Some(Arc::new(f));
        self
    }

    /// Classifies a response from its status and headers.
    pub fn classify_parts(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
        if let Some(custom) = &self.custom {
            if let Some(outcome) = custom(status, headers) {
                return outcome;
            }
        }
        let code = status.as_u16();
        let throttle = self.throttles.contains(code);
        if throttle {
            if let Some(hint) =
                retry_after::parse(headers).or_else(|| self.rate_limit_reset(headers))
            {
                return Outcome::Throttled {
                    retry_after: Some(hint),
                };
            }
        }
        if self.failures.contains(code) {
            Outcome::Failure
        } else if throttle {
            Outcome::Throttled { retry_after: None }
        } else if status.is_client_error() {
            self.client_errors
        } else if status.is_server_error() {
            // A 5xx someone took out of the failure set: it still says nothing good.
            Outcome::Ignored
        } else if let Some(reset) = self.rate_limit_reset(headers) {
            // The call worked, but the next one would be refused: waiting out the reset here
            // spares the provider a request and the caller a 429 (or sends it to a fallback).
            Outcome::Throttled {
                retry_after: Some(reset),
            }
        } else {
            Outcome::Success
        }
    }

    fn rate_limit_reset(&self, headers: &HeaderMap) -> Option<std::time::Duration> {
        if self.rate_limits {
            rate_limit::parse(headers)
        } else {
            None
        }
    }
}

impl Default for HttpClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for HttpClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClassifier")
            .field("failures", &self.failures)
            .field("throttles", &self.throttles)
            .field("client_errors", &self.client_errors)
            .field("rate_limit_headers", &self.rate_limits)
            .field("custom", &self.custom.as_ref().map(|_| "Fn(..)"))
            .finish()
    }
}

impl<B, E: 'static> Classify<Response<B>, E> for HttpClassifier {
    fn classify(&self, result: Result<&Response<B>, &E>) -> Outcome {
        match result {
            Ok(res) => self.classify_parts(res.status(), res.headers()),
            Err(e) => DefaultClassifier.classify(Err::<&(), _>(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bulkhead::error::BulkheadFull;
    use crate::BoxError;
    use std::time::Duration;

    fn res(status: u16, headers: &[(&str, &str)]) -> Response<()> {
        let mut b = Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn ok(c: &HttpClassifier, r: &Response<()>) -> Outcome {
        c.classify(Ok::<_, &BoxError>(r))
    }

    #[test]
    fn defaults() {
        let c = HttpClassifier::new();
        for s in [100, 200, 204, 301, 304] {
            assert_eq!(ok(&c, &res(s, &[])), Outcome::Success, "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert_eq!(ok(&c, &res(s, &[])), Outcome::Ignored, "{s}");
        }
        for s in [500, 501, 502, 503, 504, 599] {
            assert_eq!(ok(&c, &res(s, &[])), Outcome::Failure, "{s}");
        }
        assert_eq!(
            ok(&c, &res(429, &[])),
            Outcome::Throttled { retry_after: None }
        );
        let two = Outcome::Throttled {
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(ok(&c, &res(429, &[("retry-after", "2")])), two);
        assert_eq!(ok(&c, &res(503, &[("retry-after", "2")])), two);
        assert_eq!(ok(&c, &res(503, &[("retry-after-ms", "2000")])), two);
        // A hint on a status that is not a throttle status changes nothing.
        assert_eq!(ok(&c, &res(500, &[("retry-after", "2")])), Outcome::Failure);
        assert_eq!(ok(&c, &res(200, &[("retry-after", "2")])), Outcome::Success);
        // Garbage hint: the status decides.
        assert_eq!(
            ok(&c, &res(503, &[("retry-after", "-2")])),
            Outcome::Failure
        );
    }

    #[test]
    fn errors_use_the_default_classifier() {
        let c = HttpClassifier::new();
        let full: BoxError = Box::new(BulkheadFull::new("b".into()));
        let other: BoxError = "boom".into();
        assert_eq!(c.classify(Err::<&Response<()>, _>(&full)), Outcome::Ignored);
        assert_eq!(
            c.classify(Err::<&Response<()>, _>(&other)),
            Outcome::Failure
        );
    }

    #[test]
    fn configurable() {
        let c = HttpClassifier::new()
            .failure_statuses([502, 504])
            .throttle_statuses([StatusCode::TOO_MANY_REQUESTS.as_u16()])
            .client_errors(Outcome::Success)
            .with(|status, headers| {
                (status == StatusCode::IM_A_TEAPOT || headers.contains_key("x-fatal"))
                    .then_some(Outcome::Failure)
            });
        assert_eq!(ok(&c, &res(500, &[])), Outcome::Ignored);
        assert_eq!(ok(&c, &res(502, &[])), Outcome::Failure);
        assert_eq!(ok(&c, &res(503, &[("retry-after", "2")])), Outcome::Ignored);
        assert_eq!(ok(&c, &res(404, &[])), Outcome::Success);
        assert_eq!(ok(&c, &res(418, &[])), Outcome::Failure);
        assert_eq!(ok(&c, &res(200, &[("x-fatal", "1")])), Outcome::Failure);
        assert!(format!("{c:?}").contains("502"));
    }

    const OPENAI_EXHAUSTED: [(&str, &str); 2] = [
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "1s"),
    ];

    fn throttled(d: Duration) -> Outcome {
        Outcome::Throttled {
            retry_after: Some(d),
        }
    }

    fn anthropic_reset_in(d: Duration) -> String {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            + d;
        let at = chrono::DateTime::from_timestamp(at.as_secs() as i64, 0).unwrap();
        format!("{}T{}Z", at.date_naive(), at.time())
    }

    #[test]
    fn an_exhausted_rate_limit_throttles_a_success() {
        let c = HttpClassifier::new();
        let one = Duration::from_secs(1);
        for s in [200, 201, 204, 304] {
            assert_eq!(ok(&c, &res(s, &OPENAI_EXHAUSTED)), throttled(one), "{s}");
        }
        // The longest of several exhausted limits.
        let both = [
            OPENAI_EXHAUSTED[0],
            OPENAI_EXHAUSTED[1],
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ];
        assert_eq!(
            ok(&c, &res(200, &both)),
            throttled(Duration::from_secs(360))
        );
        // Something left, no reset (Azure), a zero reset, garbage: a plain success.
        for headers in [
            &[
                ("x-ratelimit-remaining-requests", "7"),
                ("x-ratelimit-reset-requests", "1s"),
            ][..],
            &[("x-ratelimit-remaining-requests", "0")],
            &[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "0s"),
            ],
            &[
                ("x-ratelimit-remaining-requests", "zero"),
                ("x-ratelimit-reset-requests", "1s"),
            ],
            &[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "1 second"),
            ],
            &[
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", "2000-01-01T00:00:00Z"),
            ],
            &[
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", "tomorrow"),
            ],
        ] {
            assert_eq!(ok(&c, &res(200, headers)), Outcome::Success, "{headers:?}");
        }
    }

    #[test]
    fn anthropic_resets_are_timestamps() {
        let c = HttpClassifier::new();
        let reset = anthropic_reset_in(Duration::from_secs(60));
        let r = res(
            200,
            &[
                ("anthropic-ratelimit-tokens-remaining", "0"),
                ("anthropic-ratelimit-tokens-reset", &reset),
            ],
        );
        match ok(&c, &r) {
            Outcome::Throttled {
                retry_after: Some(d),
            } => assert!(
                d > Duration::from_secs(58) && d <= Duration::from_secs(60),
                "{d:?}"
            ),
            other => panic!("{other:?}"),
        }
        // Far in the future: clamped like any back-off hint.
        let r = res(
            200,
            &[
                ("anthropic-ratelimit-output-tokens-remaining", "0"),
                (
                    "anthropic-ratelimit-output-tokens-reset",
                    "2999-01-01T00:00:00+01:00",
                ),
            ],
        );
        assert_eq!(ok(&c, &r), throttled(retry_after::MAX_RETRY_AFTER));
    }

    #[test]
    fn a_throttle_status_without_a_hint_takes_the_reset() {
        let c = HttpClassifier::new();
        let one = Duration::from_secs(1);
        assert_eq!(ok(&c, &res(429, &OPENAI_EXHAUSTED)), throttled(one));
        assert_eq!(ok(&c, &res(503, &OPENAI_EXHAUSTED)), throttled(one));
        // A Retry-After-style hint is the server's own word for this response: it wins.
        let with_hint = [
            OPENAI_EXHAUSTED[0],
            OPENAI_EXHAUSTED[1],
            ("retry-after-ms", "250"),
        ];
        assert_eq!(
            ok(&c, &res(429, &with_hint)),
            throttled(Duration::from_millis(250))
        );
        // A throttle status whose limit is not exhausted still has no hint.
        let left = [
            ("x-ratelimit-remaining-requests", "3"),
            ("x-ratelimit-reset-requests", "1s"),
        ];
        assert_eq!(
            ok(&c, &res(429, &left)),
            Outcome::Throttled { retry_after: None }
        );
        assert_eq!(ok(&c, &res(503, &left)), Outcome::Failure);
    }

    #[test]
    fn failures_and_client_errors_are_unchanged_by_rate_limits() {
        let c = HttpClassifier::new();
        for s in [500, 502, 504] {
            assert_eq!(ok(&c, &res(s, &OPENAI_EXHAUSTED)), Outcome::Failure, "{s}");
        }
        for s in [400, 401, 404, 422] {
            assert_eq!(ok(&c, &res(s, &OPENAI_EXHAUSTED)), Outcome::Ignored, "{s}");
        }
        let c = c.client_errors(Outcome::Success);
        assert_eq!(ok(&c, &res(404, &OPENAI_EXHAUSTED)), Outcome::Success);
        // A 5xx taken out of the failure set stays ignored.
        let c = HttpClassifier::new().failure_statuses([502]);
        assert_eq!(ok(&c, &res(500, &OPENAI_EXHAUSTED)), Outcome::Ignored);
    }

    #[test]
    fn rate_limit_headers_can_be_turned_off() {
        let c = HttpClassifier::new().rate_limit_headers(false);
        assert_eq!(ok(&c, &res(200, &OPENAI_EXHAUSTED)), Outcome::Success);
        assert_eq!(
            ok(&c, &res(429, &OPENAI_EXHAUSTED)),
            Outcome::Throttled { retry_after: None }
        );
        assert_eq!(ok(&c, &res(503, &OPENAI_EXHAUSTED)), Outcome::Failure);
        assert!(format!("{c:?}").contains("rate_limit_headers: false"));
        let c = c.rate_limit_headers(true);
        assert_eq!(
            ok(&c, &res(200, &OPENAI_EXHAUSTED)),
            throttled(Duration::from_secs(1))
        );
    }

    #[test]
    fn the_custom_closure_still_decides_first() {
        let c =
            HttpClassifier::new().with(|status, _| status.is_success().then_some(Outcome::Success));
        assert_eq!(ok(&c, &res(200, &OPENAI_EXHAUSTED)), Outcome::Success);
        assert_eq!(
            ok(&c, &res(429, &OPENAI_EXHAUSTED)),
            throttled(Duration::from_secs(1))
        );
    }

    #[test]
    fn status_set() {
        let mut s: StatusSet = (500..=505u16).collect();
        assert!(s.contains(500) && s.contains(505) && !s.contains(506));
        s.remove(500);
        s.insert(42);
        s.insert(1000);
        assert!(!s.contains(500) && !s.contains(42) && !s.contains(1000));
        assert!(!s.contains(u16::MAX));
        assert_eq!(format!("{s:?}"), "{501, 502, 503, 504, 505}");
    }
}

//! [`GrpcClassifier`]: `grpc-status` from headers or trailers.

use std::fmt;

use http::{HeaderMap, Response, StatusCode};
use http_body::Body;

use super::{metadata_retry_after, DEFAULT_FAILURE_CODES, GRPC_STATUS, UNKNOWN};
use crate::circuit_breaker::{Classify, DefaultClassifier, Outcome, Recorder, ResponseClassifier};
use crate::http::{EndClassifier, OutcomeBody};

/// Classifies gRPC responses by `grpc-status`, from headers or trailers.
///
/// | response | outcome |
/// | --- | --- |
/// | `grpc-status: 0` (OK) | [`Success`](Outcome::Success) |
/// | a [failure code](GrpcClassifier::failure_codes) (default [`DEFAULT_FAILURE_CODES`]) with a back-off hint: `grpc-retry-pushback-ms`, else a `google.rpc.RetryInfo` in `grpc-status-details-bin` (see [`metadata_retry_after`]) | [`Throttled { retry_after: Some(hint) }`](Outcome::Throttled) |
/// | a failure code | [`Failure`](Outcome::Failure) |
/// | any other code (`NOT_FOUND`, `INVALID_ARGUMENT`, `CANCELLED`, ...) | [`Ignored`](Outcome::Ignored): the server answered |
/// | an unparseable `grpc-status` | as `UNKNOWN` |
/// | no status at the end of the stream (no trailers, or trailers without `grpc-status`) | [`missing_status`](GrpcClassifier::missing_status), default [`Failure`](Outcome::Failure) |
/// | an HTTP status other than 200 without `grpc-status` | the code the gRPC spec maps it to (429, 502, 503, 504 → `UNAVAILABLE`, 404 → `UNIMPLEMENTED`, ...) |
/// | a body error (a stream broken half-way) | [`Failure`](Outcome::Failure) |
/// | a body dropped before its end | nothing (neutral) |
/// | `Err(_)` from the inner service | [`DefaultClassifier`] |
///
/// It is a [`ResponseClassifier`]: pass it to
/// [`Builder::response_classifier`](crate::circuit_breaker::Builder::response_classifier), and
/// the response becomes `http::Response<OutcomeBody<B, GrpcClassifier>>`. It is deliberately not
/// a [`Classify`]: judged from the head alone it would miss every status sent in trailers
/// (most gRPC errors), so `Builder::classifier(GrpcClassifier::new())` does not compile. As with
/// [`EndOfStream`](crate::http::EndOfStream), a streaming call lasts until its trailers, which
/// matters for `probe_timeout` and `slow_calls`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GrpcClassifier {
    failures: u32,
    missing_status: Outcome,
}

impl GrpcClassifier {
    /// The defaults in the table above.
    pub fn new() -> Self {
        GrpcClassifier {
            failures: codes(DEFAULT_FAILURE_CODES),
            missing_status: Outcome::Failure,
        }
    }

    /// Replaces the codes that count as failures. Accepts `i32` codes or `tonic::Code`s; codes
    /// outside `0..=31` are skipped, and `OK` (0) is always a success.
    pub fn failure_codes<T: Into<i32>>(mut self, codes_: impl IntoIterator<Item = T>) -> Self {
        self.failures = codes(codes_.into_iter().map(Into::into));
        self
    }

    /// What a stream that ends without a `grpc-status` means (default
    /// [`Failure`](Outcome::Failure): the server or a proxy cut it short).
    pub fn missing_status(mut self, outcome: Outcome) -> Self {
        self.missing_status = outcome;
        self
    }

    /// Classifies a gRPC status `code`, reading a back-off hint from `metadata` (the trailers or
    /// trailers-only headers it came in) with [`metadata_retry_after`]. The hint is only looked
    /// for when the code is a failure, so a successful call never decodes status details.
    pub fn classify_code(&self, code: i32, metadata: &HeaderMap) -> Outcome {
        if code == 0 {
            return Outcome::Success;
        }
        if !(0..32).contains(&code) || self.failures & (1 << code) == 0 {
            return Outcome::Ignored;
        }
        match metadata_retry_after(metadata) {
            Some(hint) => Outcome::Throttled {
                retry_after: Some(hint),
            },
            None => Outcome::Failure,
        }
    }

    /// Classifies a response head: `Some` when it decides the call (a trailers-only response,
    /// or an HTTP status other than 200), `None` when the verdict is in the trailers.
    pub fn classify_head(&self, status: StatusCode, headers: &HeaderMap) -> Option<Outcome> {
        if let Some(value) = headers.get(GRPC_STATUS) {
            return Some(self.classify_code(parse_code(value), headers));
        }
        if status != StatusCode::OK {
            return Some(self.classify_code(http_status_to_code(status), headers));
        }
        None
    }
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for GrpcClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcClassifier")
            .field(
                "failure_codes",
                &(0..32)
                    .filter(|c| self.failures & (1 << c) != 0)
                    .collect::<Vec<_>>(),
            )
            .field("missing_status", &self.missing_status)
            .finish()
    }
}

impl EndClassifier for GrpcClassifier {
    fn classify_end(&self, trailers: Option<&HeaderMap>) -> Outcome {
        match trailers.and_then(|t| t.get(GRPC_STATUS).map(|v| (t, v))) {
            Some((trailers, value)) => self.classify_code(parse_code(value), trailers),
            None => self.missing_status,
        }
    }
}

impl<B: Body, E: 'static> ResponseClassifier<Response<B>, E> for GrpcClassifier {
    type Response = Response<OutcomeBody<B, GrpcClassifier>>;

    fn classify_response(
        &self,
        result: Result<Response<B>, E>,
        recorder: Recorder,
    ) -> Result<Self::Response, E> {
        let res = match result {
            Ok(res) => res,
            Err(e) => {
                recorder.record(DefaultClassifier.classify(Err::<&(), _>(&e)));
                return Err(e);
            }
        };
        let this = *self;
        Ok(match self.classify_head(res.status(), res.headers()) {
            Some(outcome) => {
                recorder.record(outcome);
                res.map(|body| OutcomeBody::new(body, None, this))
            }
            None => res.map(|body| OutcomeBody::deferred(body, recorder, this)),
        })
    }
}

fn codes(iter: impl IntoIterator<Item = i32>) -> u32 {
    iter.into_iter()
        .filter(|c| (1..32).contains(c))
        .fold(0, |acc, c| acc | (1 << c))
}

fn parse_code(value: &http::HeaderValue) -> i32 {
    value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(UNKNOWN)
}

/// The gRPC spec's mapping of HTTP statuses to codes, for responses without `grpc-status`.
fn http_status_to_code(status: StatusCode) -> i32 {
    match status.as_u16() {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => UNKNOWN,
    }
}

//! gRPC awareness (feature `grpc`): `grpc-status` classification from response headers
//! (trailers-only responses) or trailers, back-off hints from `grpc-retry-pushback-ms` and
//! `google.rpc.RetryInfo`, and the crate's errors as `tonic::Status`es.
//!
//! A gRPC call's status arrives at the *end* of the response: in the trailers after the last
//! message, or in the headers of a trailers-only response. [`GrpcClassifier`] is a
//! [`ResponseClassifier`] that records a trailers-only status at once and otherwise wraps the body
//! in an [`OutcomeBody`] that records when the trailers come — so a server-streaming RPC that
//! sends messages and then fails with `UNAVAILABLE` counts as a failure.
//!
//! Put a fail-fast breaker around a tonic `Channel` (see the mode table in
//! [`http`](crate::http#which-mode-where)):
//!
//! ```no_run
//! use tower::ServiceBuilder;
//! use tower_breaker::circuit_breaker::CircuitBreakerLayer;
//! use tower_breaker::grpc::{circuit_open, status_retry_after, GrpcClassifier};
//!
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
//! let breaker = CircuitBreakerLayer::builder()
//!     .name("health")
//!     .fail_fast()
//!     .response_classifier(GrpcClassifier::new())
//!     .build()?;
//! let svc = ServiceBuilder::new().layer(breaker).service(channel);
//! let mut client = tonic_health::pb::health_client::HealthClient::new(svc);
//! let request = tonic_health::pb::HealthCheckRequest::default();
//! if let Err(status) = client.check(request).await {
//!     // UNAVAILABLE from the server, or from the open circuit (then `circuit_open` finds it);
//!     // either way with the server's or the breaker's back-off hint.
//!     let local = circuit_open(&status).is_some();
//!     println!("{:?} (local: {local}), retry in {:?}", status.code(), status_retry_after(&status));
//! }
//! # Ok(()) }
//! ```
//!
//! # Errors as gRPC statuses
//!
//! With this feature, each rejection the crate makes has a `tonic::Status` as its
//! [`source()`](std::error::Error::source), built the first time it is asked for (a rejection
//! that never meets gRPC costs nothing more):
//!
//! | error | code | metadata |
//! | --- | --- | --- |
//! | [`CircuitOpen`] | `UNAVAILABLE` (14) | `grpc-retry-pushback-ms`: the milliseconds until the circuit admits a probe, when [`CircuitOpen::retry_after`] knows them |
//! | [`BulkheadFull`] | `RESOURCE_EXHAUSTED` (8) | none |
//! | [`BulkheadTimeout`] | `RESOURCE_EXHAUSTED` (8) | none |
//!
//! The message is the error's `Display` text. Keyed breakers and [`Failover`] return these same
//! types, so they are covered too. The status's own source is `None`, so the chain ends there.
//!
//! tonic (0.14) makes a status from an error with `Status::from_error` / `try_from_error`: an
//! error that *is* a `Status` is taken as it is; otherwise the source chain is walked, starting
//! at the error itself, and the first `Status` in it gives the code, message, details and
//! metadata, with the original error kept as the new status's source. So, with no extra layer:
//!
//! - **Client.** A tonic client over a breaker or bulkhead around its `Channel` fails the RPC
//!   with the table's status: the generated client's call (`Grpc::unary`, `streaming`, ...)
//!   maps the error from the service's `call` through `Status::from_error`. [`circuit_open`]
//!   still finds the [`CircuitOpen`], as the status's source. A fail-fast breaker, a bulkhead
//!   and a keyed breaker all reject from `call`; none of the crate's services fails
//!   `poll_ready` on its own (a breaker that is not fail-fast waits there instead of
//!   rejecting). An error from `poll_ready` would not go this way: the generated client turns
//!   it into `UNKNOWN` ("Service was not ready: ...") without looking at the chain.
//! - **Server.** tonic's `Server` puts its `RecoverError` outside the layers added with
//!   `Server::builder().layer(..)`; it calls `Status::try_from_error` on their errors and
//!   answers with a trailers-only response of that status, metadata as headers. So a bulkhead
//!   there answers `RESOURCE_EXHAUSTED`, and a fail-fast breaker `UNAVAILABLE` with
//!   `grpc-retry-pushback-ms`. An error with no status in its chain is not recovered: the
//!   HTTP/2 stream is reset and a tonic client sees `INTERNAL` (what these rejections gave
//!   before). Services given to `add_service` cannot fail (tonic requires
//!   `Error = Infallible`), so the server's layers are the place for a bulkhead or breaker.
//!
//! A wrapper error keeps this working as long as its `source()` leads to the crate's error (as
//! `tower`'s `Buffer` errors do); an error turned into a string loses it. Error reports that
//! print the whole source chain now show the status after the error.
//!
//! [`UnavailableOnOpenLayer`] is no longer needed for the right code; it still answers with a
//! response instead of an error (see its documentation). [`circuit_open_to_status`] (or
//! `tonic::Status::from(open)`) and [`status_from_error`] make the statuses by hand, for a
//! server handler that calls an upstream through a breaker.
//!
//! # Back-off hints
//!
//! A failing call's back-off hint ([`metadata_retry_after`], used by [`GrpcClassifier`] for
//! trailers and trailers-only headers, and [`status_retry_after`] for a client's status) is the
//! first of:
//!
//! 1. `grpc-retry-pushback-ms` (or one of the HTTP `Retry-After` headers
//!    [`retry_after::parse`](crate::http::retry_after::parse) reads);
//! 2. the `retry_delay` of a `google.rpc.RetryInfo` in `grpc-status-details-bin` (a base64
//!    `google.rpc.Status` whose details tonic-types decodes; servers set it with
//!    `tonic_types::StatusExt::with_error_details` and
//!    `ErrorDetails::with_retry_info`).
//!
//! With a failure code, a hint makes the outcome [`Throttled`](crate::circuit_breaker::Outcome::Throttled),
//! which opens the circuit for that long (within `retry_after_bounds`). When both are sent, the
//! pushback wins. A malformed `grpc-status-details-bin` gives no hint and never panics — the
//! classifier decodes the base64 itself because `tonic::Status::from_header_map` panics on
//! invalid base64 (tonic 0.14), which also means a tonic client reading such a response panics
//! after the classifier has recorded it.
//!
//! [`CircuitOpen`]: crate::circuit_breaker::error::CircuitOpen
//! [`CircuitOpen::retry_after`]: crate::circuit_breaker::error::CircuitOpen::retry_after
//! [`BulkheadFull`]: crate::bulkhead::error::BulkheadFull
//! [`BulkheadTimeout`]: crate::bulkhead::error::BulkheadTimeout
//! [`Failover`]: crate::failover::Failover
//! [`ResponseClassifier`]: crate::circuit_breaker::ResponseClassifier
//! [`OutcomeBody`]: crate::http::OutcomeBody

mod classify;
mod retry_info;
mod status;
mod unavailable;

pub use classify::GrpcClassifier;
pub use retry_info::metadata_retry_after;
pub(crate) use status::resource_exhausted;
pub use status::{circuit_open, circuit_open_to_status, status_from_error, status_retry_after};
pub use unavailable::{future, UnavailableOnOpen, UnavailableOnOpenLayer};

/// `grpc-status`: the status code of a gRPC call, in trailers (or trailers-only headers).
pub const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// `grpc-status-details-bin`: a base64 `google.rpc.Status` with the call's error details, beside
/// `grpc-status`; a `google.rpc.RetryInfo` among them is a back-off hint
/// ([`metadata_retry_after`]).
pub const GRPC_STATUS_DETAILS: http::HeaderName =
    http::HeaderName::from_static("grpc-status-details-bin");

/// The gRPC codes that count as failures by default: `UNKNOWN` (2), `DEADLINE_EXCEEDED` (4),
/// `RESOURCE_EXHAUSTED` (8), `INTERNAL` (13), `UNAVAILABLE` (14) and `DATA_LOSS` (15).
pub const DEFAULT_FAILURE_CODES: [i32; 6] = [2, 4, 8, 13, 14, 15];

/// `UNKNOWN`, also what an unparseable `grpc-status` counts as.
const UNKNOWN: i32 = 2;

#[cfg(test)]
mod tests {
    use super::unavailable::percent_encode;
    use super::*;
    use crate::circuit_breaker::error::CircuitOpen;
    use crate::circuit_breaker::Outcome;
    use crate::circuit_breaker::{CircuitBreakerLayer, State};
    use crate::http::{retry_after, EndClassifier, OutcomeBody};
    use crate::BoxError;
    use bytes::Bytes;
    use http::{HeaderMap, Response, StatusCode};
    use http_body::Frame;
    use http_body_util::{BodyExt, Empty, StreamBody};
    use std::time::Duration;
    use tower::{service_fn, Service, ServiceExt};
    use tower_layer::Layer;

    fn meta(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn types_are_send_sync() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<GrpcClassifier>();
        send_sync::<OutcomeBody<Empty<Bytes>, GrpcClassifier>>();
    }

    #[test]
    fn codes_by_default() {
        let c = GrpcClassifier::new();
        let none = HeaderMap::new();
        assert_eq!(c.classify_code(0, &none), Outcome::Success);
        for code in [2, 4, 8, 13, 14, 15] {
            assert_eq!(c.classify_code(code, &none), Outcome::Failure, "{code}");
        }
        for code in [1, 3, 5, 6, 7, 9, 10, 11, 12, 16, 17, -1, 99] {
            assert_eq!(c.classify_code(code, &none), Outcome::Ignored, "{code}");
        }
        assert_eq!(
            c.classify_code(14, &meta(&[("grpc-retry-pushback-ms", "1500")])),
            Outcome::Throttled {
                retry_after: Some(Duration::from_millis(1500))
            }
        );
        assert_eq!(
            c.classify_code(14, &meta(&[("grpc-retry-pushback-ms", "-1")])),
            Outcome::Failure
        );
    }

    #[test]
    fn configurable_codes() {
        let c = GrpcClassifier::new()
            .failure_codes([tonic::Code::Unavailable, tonic::Code::NotFound])
            .missing_status(Outcome::Ignored);
        let none = HeaderMap::new();
        assert_eq!(c.classify_code(5, &none), Outcome::Failure);
        assert_eq!(c.classify_code(14, &none), Outcome::Failure);
        assert_eq!(c.classify_code(13, &none), Outcome::Ignored);
        assert_eq!(c.classify_end(None), Outcome::Ignored);
        assert!(format!("{c:?}").contains("[5, 14]"));
        let only_ok = GrpcClassifier::new().failure_codes([0i32, 40, -3]);
        assert_eq!(only_ok.classify_code(0, &none), Outcome::Success);
        assert_eq!(only_ok.classify_code(14, &none), Outcome::Ignored);
    }

    #[test]
    fn heads_and_trailers() {
        let c = GrpcClassifier::new();
        assert_eq!(c.classify_head(StatusCode::OK, &HeaderMap::new()), None);
        assert_eq!(
            c.classify_head(StatusCode::OK, &meta(&[("grpc-status", "0")])),
            Some(Outcome::Success)
        );
        assert_eq!(
            c.classify_head(StatusCode::OK, &meta(&[("grpc-status", "14")])),
            Some(Outcome::Failure)
        );
        assert_eq!(
            c.classify_head(StatusCode::OK, &meta(&[("grpc-status", "five")])),
            Some(Outcome::Failure)
        );
        assert_eq!(
            c.classify_head(StatusCode::NOT_FOUND, &HeaderMap::new()),
            Some(Outcome::Ignored)
        );
        assert_eq!(
            c.classify_head(
                StatusCode::SERVICE_UNAVAILABLE,
                &meta(&[("retry-after", "3")])
            ),
            Some(Outcome::Throttled {
                retry_after: Some(Duration::from_secs(3))
            })
        );
        assert_eq!(c.classify_end(None), Outcome::Failure);
        assert_eq!(c.classify_end(Some(&HeaderMap::new())), Outcome::Failure);
        assert_eq!(
            c.classify_end(Some(&meta(&[("grpc-status", "0")]))),
            Outcome::Success
        );
        assert_eq!(
            c.classify_end(Some(&meta(&[("grpc-status", "5")]))),
            Outcome::Ignored
        );
    }

    #[test]
    fn circuit_open_conversions() {
        let open = CircuitOpen::new("up".into(), Some(Duration::from_millis(2500)));
        let status = tonic::Status::from(open.clone());
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("up"));
        assert_eq!(
            status_retry_after(&status),
            Some(Duration::from_millis(2500))
        );

        // tonic finds the status in the source chain and keeps the CircuitOpen as the source.
        let boxed: BoxError = Box::new(open);
        let wrapped = tonic::Status::from_error(boxed);
        assert_eq!(wrapped.code(), tonic::Code::Unavailable);
        assert_eq!(
            status_retry_after(&wrapped),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(circuit_open(&wrapped).unwrap().name(), "up");

        let boxed: BoxError = Box::new(CircuitOpen::new("up".into(), None));
        let status = status_from_error(boxed);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status_retry_after(&status), None);
        assert_eq!(circuit_open(&status).unwrap().name(), "up");
        assert!(circuit_open(&tonic::Status::internal("x")).is_none());
        assert_eq!(
            status_from_error("boom".into()).code(),
            tonic::Code::Unknown
        );
        let full: BoxError = Box::new(crate::bulkhead::error::BulkheadFull::new("b".into()));
        let status = status_from_error(full);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(circuit_open(&status).is_none());
    }

    #[test]
    fn status_retry_after_reads_retry_info_and_prefers_pushback() {
        use tonic_types::{ErrorDetails, StatusExt};
        let details = || ErrorDetails::with_retry_info(Some(Duration::from_secs(7)));
        let status = tonic::Status::with_error_details(tonic::Code::Unavailable, "x", details());
        assert_eq!(status_retry_after(&status), Some(Duration::from_secs(7)));
        // As a tonic client reads it back from the wire.
        let mut headers = HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        let parsed = tonic::Status::from_header_map(&headers).unwrap();
        assert_eq!(status_retry_after(&parsed), Some(Duration::from_secs(7)));

        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("grpc-retry-pushback-ms", "1500".parse().unwrap());
        let both = tonic::Status::with_error_details_and_metadata(
            tonic::Code::Unavailable,
            "x",
            details(),
            metadata,
        );
        assert_eq!(status_retry_after(&both), Some(Duration::from_millis(1500)));

        let garbage = tonic::Status::with_details(
            tonic::Code::Unavailable,
            "x",
            Bytes::from_static(b"\xff\xff\xff"),
        );
        assert_eq!(status_retry_after(&garbage), None);
    }

    #[test]
    fn classifier_throttles_on_retry_info() {
        use tonic_types::{ErrorDetails, StatusExt};
        let c = GrpcClassifier::new();
        let status = tonic::Status::with_error_details(
            tonic::Code::Unavailable,
            "slow down",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(7))),
        );
        let mut trailers = HeaderMap::new();
        status.add_header(&mut trailers).unwrap();
        let throttled = Outcome::Throttled {
            retry_after: Some(Duration::from_secs(7)),
        };
        // From trailers, and from trailers-only headers.
        assert_eq!(c.classify_end(Some(&trailers)), throttled);
        assert_eq!(c.classify_head(StatusCode::OK, &trailers), Some(throttled));
        // Only failure codes take a hint.
        trailers.insert(GRPC_STATUS, "5".parse().unwrap());
        assert_eq!(c.classify_end(Some(&trailers)), Outcome::Ignored);
        trailers.insert(GRPC_STATUS, "0".parse().unwrap());
        assert_eq!(c.classify_end(Some(&trailers)), Outcome::Success);
        // The pushback wins.
        trailers.insert(GRPC_STATUS, "14".parse().unwrap());
        trailers.insert("grpc-retry-pushback-ms", "1500".parse().unwrap());
        assert_eq!(
            c.classify_end(Some(&trailers)),
            Outcome::Throttled {
                retry_after: Some(Duration::from_millis(1500))
            }
        );
        // Garbage details: a plain failure, no panic.
        for garbage in ["!!!", "////", "QQ="] {
            let t = meta(&[("grpc-status", "14"), ("grpc-status-details-bin", garbage)]);
            assert_eq!(c.classify_end(Some(&t)), Outcome::Failure, "{garbage}");
            assert_eq!(
                c.classify_head(StatusCode::OK, &t),
                Some(Outcome::Failure),
                "{garbage}"
            );
        }
    }

    type Frames = Result<Frame<Bytes>, BoxError>;

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("circuit `a b` 100%"), "circuit `a b` 100%25");
        assert_eq!(percent_encode("é\n"), "%C3%A9%0A");
    }

    #[tokio::test]
    async fn unavailable_on_open_turns_rejections_into_responses() {
        let layer = CircuitBreakerLayer::builder()
            .name("ünïcode")
            .consecutive_failures(1)
            .fail_fast()
            .response_classifier(GrpcClassifier::new())
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc =
            UnavailableOnOpenLayer::new().layer(layer.layer(service_fn(|fail: bool| async move {
                if fail {
                    Err::<Response<Empty<Bytes>>, BoxError>("connection refused".into())
                } else {
                    Ok(Response::new(Empty::new()))
                }
            })));
        // Other errors pass through.
        let err = svc.ready().await.unwrap().call(true).await.unwrap_err();
        assert_eq!(err.to_string(), "connection refused");
        assert_eq!(h.state(), State::Open);
        // A rejection becomes a trailers-only UNAVAILABLE response.
        let res = svc.ready().await.unwrap().call(false).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["grpc-status"], "14");
        assert_eq!(res.headers()["content-type"], "application/grpc");
        assert!(res.headers()["grpc-message"]
            .to_str()
            .unwrap()
            .starts_with("circuit `%C3%BCn%C3%AFcode` is open"));
        let pushback = retry_after::parse(res.headers()).unwrap();
        assert!(pushback > Duration::from_secs(59) && pushback <= Duration::from_secs(60));
        let status = tonic::Status::from_header_map(res.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().starts_with("circuit `ünïcode` is open"));
        assert_eq!(h.stats().rejected_calls, 1);
    }

    #[tokio::test]
    async fn streamed_messages_then_error_trailers() {
        let layer = CircuitBreakerLayer::builder()
            .consecutive_failures(2)
            .response_classifier(GrpcClassifier::new())
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(service_fn(|code: Option<&'static str>| async move {
            let mut frames: Vec<Frames> =
                vec![Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 2, 8, 1])))];
            if let Some(code) = code {
                let mut trailers = HeaderMap::new();
                trailers.insert(GRPC_STATUS, code.parse().unwrap());
                frames.push(Ok(Frame::trailers(trailers)));
            }
            let body = StreamBody::new(futures::stream::iter(frames));
            Ok::<_, BoxError>(Response::new(body))
        }));
        let stats = |h: &crate::circuit_breaker::Handle| {
            let s = h.stats();
            (s.successful_calls, s.failed_calls, s.ignored_calls)
        };

        let res = svc.ready().await.unwrap().call(Some("0")).await.unwrap();
        res.into_body().collect().await.unwrap();
        assert_eq!(stats(&h), (1, 0, 0));

        let res = svc.ready().await.unwrap().call(Some("5")).await.unwrap();
        res.into_body().collect().await.unwrap();
        assert_eq!(stats(&h), (1, 0, 1));

        let res = svc.ready().await.unwrap().call(Some("14")).await.unwrap();
        let mut body = res.into_body();
        body.frame().await.unwrap().unwrap();
        assert_eq!(stats(&h), (1, 0, 1)); // the message alone decides nothing
        assert!(body.frame().await.unwrap().unwrap().is_trailers());
        assert_eq!(stats(&h), (1, 1, 1));

        // A stream that ends without any status: cut short.
        let res = svc.ready().await.unwrap().call(None).await.unwrap();
        res.into_body().collect().await.unwrap();
        assert_eq!(stats(&h), (1, 2, 1));
        assert_eq!(h.state(), State::Open);
    }

    #[tokio::test]
    async fn trailers_only_is_decided_from_the_head() {
        let layer = CircuitBreakerLayer::builder()
            .response_classifier(GrpcClassifier::new())
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(service_fn(|_: ()| async {
            let res = Response::builder()
                .header("grpc-status", "14")
                .body(Empty::<Bytes>::new())
                .unwrap();
            Ok::<_, BoxError>(res)
        }));
        let res = svc.ready().await.unwrap().call(()).await.unwrap();
        assert!(!res.body().is_pending());
        assert_eq!(h.stats().failed_calls, 1);
        drop(res);
        assert_eq!(h.stats().failed_calls, 1);
    }
}

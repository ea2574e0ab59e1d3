//! gRPC awareness (feature `grpc`): `grpc-status` classification from response headers
//! (trailers-only responses) or trailers, and [`CircuitOpen`] as `UNAVAILABLE`.
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
//! use tower_breaker::grpc::{GrpcClassifier, UnavailableOnOpenLayer};
//!
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
//! let breaker = CircuitBreakerLayer::builder()
//!     .name("health")
//!     .fail_fast()
//!     .response_classifier(GrpcClassifier::new())
//!     .build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(UnavailableOnOpenLayer::new()) // CircuitOpen -> grpc-status UNAVAILABLE
//!     .layer(breaker)
//!     .service(channel);
//! let mut client = tonic_health::pb::health_client::HealthClient::new(svc);
//! # let _ = &mut client;
//! # Ok(()) }
//! ```
//!
//! On its own, a rejected RPC fails with a `tonic::Status` of code `UNKNOWN` whose source is the
//! [`CircuitOpen`] (tonic boxes every transport error that way); [`circuit_open`] finds it. Put
//! [`UnavailableOnOpenLayer`] outside the breaker and the client sees a proper `UNAVAILABLE`
//! status instead, with the time until the circuit admits again as `grpc-retry-pushback-ms`.
//! [`circuit_open_to_status`] (or `tonic::Status::from(open)`) makes that status for a server
//! handler that calls an upstream through a breaker.
//!
//! [`CircuitOpen`]: crate::circuit_breaker::error::CircuitOpen
//! [`ResponseClassifier`]: crate::circuit_breaker::ResponseClassifier
//! [`OutcomeBody`]: crate::http::OutcomeBody

mod classify;
mod status;
mod unavailable;

pub use classify::GrpcClassifier;
pub use status::{circuit_open, circuit_open_to_status, status_from_error, status_retry_after};
pub use unavailable::{future, UnavailableOnOpen, UnavailableOnOpenLayer};

/// `grpc-status`: the status code of a gRPC call, in trailers (or trailers-only headers).
pub const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

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

        let boxed: BoxError = Box::new(open);
        let wrapped = tonic::Status::from_error(boxed);
        assert_eq!(wrapped.code(), tonic::Code::Unknown);
        assert_eq!(circuit_open(&wrapped).unwrap().name(), "up");

        let boxed: BoxError = Box::new(CircuitOpen::new("up".into(), None));
        let status = status_from_error(boxed);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status_retry_after(&status), None);
        assert!(circuit_open(&tonic::Status::internal("x")).is_none());
        assert_eq!(
            status_from_error("boom".into()).code(),
            tonic::Code::Unknown
        );
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

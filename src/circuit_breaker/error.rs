//! Errors returned by the circuit breaker.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The circuit is not admitting calls; the inner service was not called.
///
/// Returned by a `fail_fast` breaker (and by keyed breakers) instead of waiting. Downcast it from
/// the [`BoxError`](crate::BoxError):
///
/// ```
/// # use tower_breaker::circuit_breaker::error::CircuitOpen;
/// # fn f(err: tower_breaker::BoxError) {
/// if let Some(open) = err.downcast_ref::<CircuitOpen>() {
///     println!("{} is open, retry in {:?}", open.name(), open.retry_after());
/// }
/// # }
/// ```
#[cfg_attr(
    feature = "grpc",
    doc = r#"
With feature `grpc`, [`source()`](std::error::Error::source) is a `tonic::Status` of code
`UNAVAILABLE`, with `grpc-retry-pushback-ms` metadata when [`retry_after`](Self::retry_after) is
known: the status [`circuit_open_to_status`](crate::grpc::circuit_open_to_status) makes. tonic
looks for a `Status` in an error's source chain, so a tonic client whose `Channel` is behind a
fail-fast breaker, and a tonic server with a breaker in `Server::builder().layer(..)`, report the
rejection with that status (see [`grpc`](crate::grpc#errors-as-grpc-statuses)). The status is
built the first time `source()` is asked for, so a rejection that never meets gRPC costs nothing
more."#
)]
#[derive(Clone)]
pub struct CircuitOpen {
    name: Arc<str>,
    retry_after: Option<Duration>,
    /// The status `source()` lends out. `source()` returns a borrow, so the status has to live
    /// in the error; filling it on first use keeps the rejection path free of the allocation.
    #[cfg(feature = "grpc")]
    status: std::sync::OnceLock<tonic::Status>,
}

impl CircuitOpen {
    pub(crate) fn new(name: Arc<str>, retry_after: Option<Duration>) -> Self {
        Self {
            name,
            retry_after,
            #[cfg(feature = "grpc")]
            status: std::sync::OnceLock::new(),
        }
    }

    /// The name of the breaker that rejected the call.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long until the circuit will admit a probe: `Some` while `Open`, `None` when that is
    /// not known (forced open, or half-open with every probe permit taken).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

// By hand, so that the cached status stays out of it: the output is what it was before the
// cache existed, and tonic's `Display` for a status (which prints its source with `{:?}`) does
// not repeat the status inside itself.
impl fmt::Debug for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitOpen")
            .field("name", &self.name)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit `{}` is open", self.name)?;
        if let Some(d) = self.retry_after {
            write!(f, "; retry after {:.3}s", d.as_secs_f64())?;
        }
        Ok(())
    }
}

impl std::error::Error for CircuitOpen {
    /// With feature `grpc`: the `UNAVAILABLE` `tonic::Status` for this rejection.
    #[cfg(feature = "grpc")]
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(
            self.status
                .get_or_init(|| crate::grpc::circuit_open_to_status(self)),
        )
    }
}

#[cfg(all(test, feature = "grpc"))]
mod tests {
    use super::*;
    use crate::BoxError;
    use std::error::Error as _;

    fn status_of(err: &dyn std::error::Error) -> &tonic::Status {
        err.source()
            .and_then(|s| s.downcast_ref::<tonic::Status>())
            .expect("a tonic::Status as the source")
    }

    #[test]
    fn source_is_unavailable_with_pushback() {
        let open = CircuitOpen::new("up".into(), Some(Duration::from_millis(2500)));
        assert!(open.status.get().is_none(), "built lazily");
        let status = status_of(&open);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "circuit `up` is open; retry after 2.500s");
        assert_eq!(
            status.metadata().get("grpc-retry-pushback-ms").unwrap(),
            "2500"
        );
        assert!(status.source().is_none(), "the chain ends at the status");
        // The same status each time, and the one `circuit_open_to_status` makes.
        assert!(std::ptr::eq(status, status_of(&open)));
        let made = crate::grpc::circuit_open_to_status(&open);
        assert_eq!(made.code(), status.code());
        assert_eq!(made.message(), status.message());
        assert_eq!(
            made.metadata().clone().into_headers(),
            status.metadata().clone().into_headers()
        );

        let unknown = CircuitOpen::new("up".into(), None);
        let status = status_of(&unknown);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.metadata().get("grpc-retry-pushback-ms").is_none());
    }

    #[test]
    fn tonic_finds_the_status_through_a_box() {
        let boxed: BoxError = Box::new(CircuitOpen::new("up".into(), Some(Duration::from_secs(3))));
        let status = tonic::Status::from_error(boxed);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.metadata().get("grpc-retry-pushback-ms").unwrap(),
            "3000"
        );
        // tonic keeps the original error as the status's source.
        let open = status.source().unwrap().downcast_ref::<CircuitOpen>();
        assert_eq!(open.unwrap().name(), "up");
    }

    #[test]
    fn clone_debug_display_unchanged() {
        let open = CircuitOpen::new("up".into(), Some(Duration::from_secs(1)));
        let fresh = open.clone();
        let _ = status_of(&open);
        let built = open.clone();
        assert_eq!(
            format!("{open:?}"),
            r#"CircuitOpen { name: "up", retry_after: Some(1s) }"#
        );
        assert_eq!(format!("{built:?}"), format!("{open:?}"));
        assert_eq!(open.to_string(), "circuit `up` is open; retry after 1.000s");
        assert_eq!(
            (fresh.name(), fresh.retry_after()),
            ("up", Some(Duration::from_secs(1)))
        );
        assert_eq!(status_of(&fresh).code(), tonic::Code::Unavailable);
        assert_eq!(status_of(&built).code(), tonic::Code::Unavailable);
        fn send_sync_clone<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
        send_sync_clone::<CircuitOpen>();
    }
}

//! Errors returned by the bulkhead.

use std::fmt;
use std::sync::Arc;

/// The bulkhead was at capacity and its wait queue was full; the inner service was not called.
#[cfg_attr(
    feature = "grpc",
    doc = r#"
With feature `grpc`, [`source()`](std::error::Error::source) is a `tonic::Status` of code
`RESOURCE_EXHAUSTED` with this error's text as its message, so tonic answers a call rejected by a
bulkhead in `Server::builder().layer(..)` with that status (and a tonic client behind a bulkhead
sees it); see [`grpc`](crate::grpc#errors-as-grpc-statuses). It is built the first time `source()`
is asked for."#
)]
#[derive(Clone)]
pub struct BulkheadFull {
    name: Arc<str>,
    /// The status `source()` lends out, built on first use (see `CircuitOpen`'s field).
    #[cfg(feature = "grpc")]
    status: std::sync::OnceLock<tonic::Status>,
}

impl BulkheadFull {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Self {
            name,
            #[cfg(feature = "grpc")]
            status: std::sync::OnceLock::new(),
        }
    }

    /// The name of the bulkhead that rejected the call.
    pub fn name(&self) -> &str {
        &self.name
    }
}

// By hand, to keep the cached status out of it (see `CircuitOpen`'s `Debug`).
impl fmt::Debug for BulkheadFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadFull")
            .field("name", &self.name)
            .finish()
    }
}

impl fmt::Display for BulkheadFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bulkhead `{}` is full", self.name)
    }
}

impl std::error::Error for BulkheadFull {
    /// With feature `grpc`: the `RESOURCE_EXHAUSTED` `tonic::Status` for this rejection.
    #[cfg(feature = "grpc")]
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(
            self.status
                .get_or_init(|| crate::grpc::resource_exhausted(self)),
        )
    }
}

/// The call waited longer than the bulkhead's `max_wait` for a slot; the inner service was not
/// called.
#[cfg_attr(
    feature = "grpc",
    doc = r#"
With feature `grpc`, [`source()`](std::error::Error::source) is a `tonic::Status` of code
`RESOURCE_EXHAUSTED` (the wait ran out on this side's own capacity, not on the caller's
deadline) with this error's text as its message; see
[`grpc`](crate::grpc#errors-as-grpc-statuses). It is built the first time `source()` is asked
for."#
)]
#[derive(Clone)]
pub struct BulkheadTimeout {
    name: Arc<str>,
    /// The status `source()` lends out, built on first use (see `CircuitOpen`'s field).
    #[cfg(feature = "grpc")]
    status: std::sync::OnceLock<tonic::Status>,
}

impl BulkheadTimeout {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Self {
            name,
            #[cfg(feature = "grpc")]
            status: std::sync::OnceLock::new(),
        }
    }

    /// The name of the bulkhead the call waited in.
    pub fn name(&self) -> &str {
        &self.name
    }
}

// By hand, to keep the cached status out of it (see `CircuitOpen`'s `Debug`).
impl fmt::Debug for BulkheadTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadTimeout")
            .field("name", &self.name)
            .finish()
    }
}

impl fmt::Display for BulkheadTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out waiting for a slot in bulkhead `{}`",
            self.name
        )
    }
}

impl std::error::Error for BulkheadTimeout {
    /// With feature `grpc`: the `RESOURCE_EXHAUSTED` `tonic::Status` for this rejection.
    #[cfg(feature = "grpc")]
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(
            self.status
                .get_or_init(|| crate::grpc::resource_exhausted(self)),
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
    fn sources_are_resource_exhausted() {
        let full = BulkheadFull::new("db".into());
        assert!(full.status.get().is_none(), "built lazily");
        let status = status_of(&full);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.message(), "bulkhead `db` is full");
        assert!(status.metadata().is_empty());
        assert!(status.source().is_none());
        assert!(std::ptr::eq(status, status_of(&full)));

        let timeout = BulkheadTimeout::new("db".into());
        let status = status_of(&timeout);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "timed out waiting for a slot in bulkhead `db`"
        );
        assert!(status.metadata().is_empty());
    }

    #[test]
    fn tonic_finds_the_status_through_a_box() {
        for (err, is_full) in [
            (Box::new(BulkheadFull::new("db".into())) as BoxError, true),
            (
                Box::new(BulkheadTimeout::new("db".into())) as BoxError,
                false,
            ),
        ] {
            let status = tonic::Status::from_error(err);
            assert_eq!(status.code(), tonic::Code::ResourceExhausted);
            let source = status.source().unwrap();
            assert_eq!(source.is::<BulkheadFull>(), is_full);
            assert_eq!(source.is::<BulkheadTimeout>(), !is_full);
        }
    }

    #[test]
    fn clone_debug_display_unchanged() {
        let full = BulkheadFull::new("db".into());
        let _ = status_of(&full);
        let copy = full.clone();
        assert_eq!(format!("{full:?}"), r#"BulkheadFull { name: "db" }"#);
        assert_eq!(format!("{copy:?}"), format!("{full:?}"));
        assert_eq!(copy.to_string(), "bulkhead `db` is full");
        assert_eq!(status_of(&copy).code(), tonic::Code::ResourceExhausted);

        let timeout = BulkheadTimeout::new("db".into());
        let copy = timeout.clone();
        assert_eq!(format!("{copy:?}"), r#"BulkheadTimeout { name: "db" }"#);
        assert_eq!(copy.name(), "db");
        assert_eq!(status_of(&copy).code(), tonic::Code::ResourceExhausted);

        fn send_sync_clone<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
        send_sync_clone::<BulkheadFull>();
        send_sync_clone::<BulkheadTimeout>();
    }
}

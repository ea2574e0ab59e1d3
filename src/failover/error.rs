//! Errors of [`Failover`](super::Failover).

use std::fmt;

/// [`Failover`](super::Failover) has no member left to call: it was built empty, or every
/// member's `poll_ready` has failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoServices(pub(super) ());

impl fmt::Display for NoServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("failover has no service left to call")
    }
}

impl std::error::Error for NoServices {}

//! Errors of the `http` module.

use std::fmt;
use std::time::Duration;

/// A response body waited longer than [`EndOfStream::idle_timeout`](super::EndOfStream::idle_timeout)
/// for its next frame.
///
/// The body yields it (boxed) as its last item and then ends; the call counts as a failure, as
/// a dependency that stalls mid-stream is as sick as one that never answers. Downcast from the
/// body's error (with reqwest, from the `reqwest::Error`'s
/// [`source`](std::error::Error::source)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleTimeout {
    idle: Duration,
}

impl IdleTimeout {
    pub(crate) fn new(idle: Duration) -> Self {
        IdleTimeout { idle }
    }

    /// The idle timeout that passed.
    pub fn idle(&self) -> Duration {
        self.idle
    }
}

impl fmt::Display for IdleTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "response body received no frame for {:?} (idle timeout)",
            self.idle
        )
    }
}

impl std::error::Error for IdleTimeout {}

//! `tracing` shims: events compile to nothing when the `tracing` feature is off.

macro_rules! trace_info {
    ($($arg:tt)*) => {
        #[cfg(feature = "tracing")]
        { tracing::info!($($arg)*); }
    };
}

macro_rules! trace_debug {
    ($($arg:tt)*) => {
        #[cfg(feature = "tracing")]
        { tracing::debug!($($arg)*); }
    };
}

macro_rules! trace_warn {
    ($($arg:tt)*) => {
        #[cfg(feature = "tracing")]
        { tracing::warn!($($arg)*); }
    };
}

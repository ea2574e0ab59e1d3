//! A bulkhead: bounded concurrency, a bounded wait queue, and a bounded wait.

pub mod error;

//! Benchmarks of `tower-breaker` against peer crates (`benches/`) and the outage picture
//! (`examples/outage.rs`, drawn to `docs/outage.svg`), kept out of the published crate so that
//! `cargo test` on it builds none of their dependencies. This library is intentionally empty.

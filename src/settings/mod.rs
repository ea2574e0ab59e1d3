//! Breaker, bulkhead, keyed, failover and retry settings read from configuration files
//! (TOML, YAML, JSON: any `serde` format), checked by the builders themselves, with errors that
//! say where in the file the bad value is.
//!
//! Each settings type has one optional field per plain-data builder method, named after the
//! method; a field left out keeps the builder's default, and durations are strings such as
//! `"30s"`, `"250ms"` or `"1m 30s"`. Unknown fields are errors. Reading a settings value runs
//! the builder's own checks, so a value out of range is an error when the file is read, not
//! when the service starts, and a settings value that exists always builds. Settings serialize
//! back to the same fields, so they can be written out again.
//!
//! | type | builds |
//! | --- | --- |
//! | [`BreakerSettings`] | a [`CircuitBreakerLayer`](crate::circuit_breaker::CircuitBreakerLayer) |
//! | [`BulkheadSettings`] | a [`BulkheadLayer`](crate::bulkhead::BulkheadLayer) |
//! | [`KeyedSettings`] | a [`KeyedLayer`](crate::keyed::KeyedLayer), given the key function |
//! | [`FailoverSettings`] | a [`Failover`](crate::failover::Failover), given the members |
//! | [`RetrySettings`] | a [`RetryPolicy`](crate::retry::RetryPolicy) |
//! | [`BudgetSettings`], [`ResendSettings`] | the retry budget and re-sends of the two above |
//! | `FleetSettings` (feature `redis`) | a [`Fleet`](crate::fleet::Fleet) sharing circuits through Redis |
//!
//! What is code rather than data — classifiers, key functions, request copiers, shared
//! budgets — is given to the builder each settings type returns.
//!
//! # Errors
//!
//! Read the document with [`from_deserializer`] to learn where a bad value is:
//! [`SettingsError`] displays as `path: message`, e.g.
//! `providers.openai.breaker.failure_rate: must be in (0, 1]`, where the path runs from the
//! root of *your* document (your own structs and maps included) to the field, and the message
//! is the builder's reason. Wrong types, unknown fields and bad durations come out the same
//! way. A plain `toml::from_str` works too; its error names the field
//! (``invalid `failure_rate`: must be in (0, 1]``), but not the path to it.
//!
//! # Example
//!
//! ```
//! use std::collections::BTreeMap;
//!
//! use serde::Deserialize;
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//! use tower_breaker::settings::{
//!     from_deserializer, BreakerSettings, BulkheadSettings, FailoverSettings,
//! };
//! use tower_breaker::BoxError;
//!
//! /// The application's own configuration, with the crate's settings inside.
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Gateway {
//!     failover: FailoverSettings,
//!     providers: BTreeMap<String, Provider>,
//! }
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Provider {
//!     #[serde(default)]
//!     breaker: BreakerSettings,
//!     #[serde(default)]
//!     bulkhead: BulkheadSettings,
//! }
//!
//! const CONFIG: &str = r#"
//! [failover]
//! order = ["openai", "anthropic"]
//! resend_failures = { attempts = 2 }
//!
//! [providers.openai.breaker]
//! consecutive_failures = 3
//! open_duration = "30s"
//!
//! [providers.openai.bulkhead]
//! max_concurrent = 16
//! max_wait = "250ms"
//!
//! [providers.anthropic.breaker]
//! failure_rate = 0.5
//! time_window = "1m"
//! open_duration = "1m 30s"
//! "#;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let gateway: Gateway = from_deserializer(toml::Deserializer::parse(CONFIG)?)?;
//!
//! let mut members = Vec::new();
//! for (name, provider) in &gateway.providers {
//!     // The settings leave the names out: each provider is named after its table.
//!     let breaker = provider.breaker.builder().name(name.as_str()).build()?;
//!     let bulkhead = provider.bulkhead.builder().name(name.as_str()).build()?;
//!     assert_eq!(
//!         breaker.handle().stats().open_duration,
//!         provider.breaker.open_duration().unwrap()
//!     );
//!     let provider_name = name.clone();
//!     let client = service_fn(move |prompt: String| {
//!         let answer = format!("{provider_name}: {prompt}");
//!         async move { Ok::<_, BoxError>(answer) }
//!     });
//!     let stack = ServiceBuilder::new().layer(breaker).layer(bulkhead).service(client);
//!     members.push((name.clone(), stack));
//! }
//! let mut llm = gateway.failover.failover(members)?;
//! assert_eq!(llm.ready().await?.call("hi".to_string()).await?, "openai: hi");
//!
//! // A value the builder rejects, reported with its path in the document.
//! let bad = "[failover]\n[providers.openai.breaker]\nfailure_rate = 1.5\n";
//! let err = from_deserializer::<Gateway, _>(toml::Deserializer::parse(bad)?)
//!     .err()
//!     .unwrap();
//! assert_eq!(err.path(), "providers.openai.breaker.failure_rate");
//! assert_eq!(err.message(), "must be in (0, 1]");
//! assert_eq!(
//!     err.to_string(),
//!     "providers.openai.breaker.failure_rate: must be in (0, 1]"
//! );
//! # Ok(())
//! # }
//! ```

mod adaptive;
mod breaker;
mod budget;
mod bulkhead;
mod capture;
mod duration;
mod error;
mod failover;
#[cfg(feature = "redis")]
mod fleet;
mod keyed;
mod retry;

pub use breaker::{BreakerSettings, Mode};
pub use budget::BudgetSettings;
pub use bulkhead::BulkheadSettings;
pub use error::{from_deserializer, SettingsError};
pub use failover::{FailoverSettings, ResendSettings};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use fleet::FleetSettings;
pub use keyed::KeyedSettings;
pub use retry::RetrySettings;

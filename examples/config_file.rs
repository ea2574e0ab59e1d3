//! An LLM gateway configured from a file: per-provider breaker and bulkhead settings and a
//! failover order, read from `examples/config_file.toml`.
//!
//! Builds a bulkhead and a circuit breaker around a stand-in client for each provider, puts
//! them behind a `Failover` in the file's order, prints what it built, sends two requests
//! (the first provider is down, so they are re-sent to the next one), then reads two bad
//! files and prints where each is wrong.
//!
//! Run with `cargo run --example config_file --features serde`.

use std::collections::BTreeMap;

use serde::Deserialize;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_breaker::settings::{
    from_deserializer, BreakerSettings, BulkheadSettings, FailoverSettings, SettingsError,
};
use tower_breaker::BoxError;

const CONFIG: &str = include_str!("config_file.toml");

/// The gateway's own configuration, with the crate's settings inside.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Gateway {
    failover: FailoverSettings,
    providers: BTreeMap<String, Provider>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Provider {
    #[serde(default)]
    breaker: BreakerSettings,
    #[serde(default)]
    bulkhead: BulkheadSettings,
}

fn read(text: &str) -> Result<Gateway, SettingsError> {
    let document = toml::Deserializer::parse(text).expect("valid TOML syntax");
    from_deserializer(document)
}

/// A stand-in for a provider's HTTP client: answers at once, or fails while `down`.
fn client(
    name: String,
    down: bool,
) -> impl Service<String, Response = String, Error = BoxError> + Clone {
    service_fn(move |prompt: String| {
        let result = if down {
            Err(format!("{name}: 503 service unavailable").into())
        } else {
            Ok(format!("{name} says: {prompt}"))
        };
        async move { result }
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let gateway = read(CONFIG)?;

    let mut members = Vec::new();
    let mut breakers = Vec::new();
    let mut built = BTreeMap::new();
    for (name, provider) in &gateway.providers {
        // The tables leave names out: each provider is named after its table.
        let breaker = provider
            .breaker
            .builder()
            .name(provider.breaker.name().unwrap_or(name))
            .build()?;
        let bulkhead = provider
            .bulkhead
            .builder()
            .name(provider.bulkhead.name().unwrap_or(name))
            .build()?;
        let (b, k) = (breaker.handle().stats(), bulkhead.handle().stats());
        let rate = provider
            .breaker
            .failure_rate()
            .map_or_else(|| "off".to_owned(), |r| r.to_string());
        built.insert(
            name.clone(),
            format!(
                "{:<9} breaker: consecutive_failures={} failure_rate={rate} open_duration={:?} | \
                 bulkhead: max_concurrent={} max_queue={} max_wait={:?}",
                b.name,
                b.consecutive_failure_threshold,
                b.open_duration,
                k.max_concurrent,
                k.max_queue,
                k.max_wait,
            ),
        );
        breakers.push(breaker.handle());
        let stack = ServiceBuilder::new()
            .layer(breaker)
            .layer(bulkhead)
            .service(client(name.clone(), name == "openai"));
        members.push((name.clone(), stack));
    }

    let mut llm = gateway.failover.failover(members)?;
    let routes = llm.routes();
    let order: Vec<_> = (0..llm.len()).filter_map(|i| routes.name(i)).collect();
    println!("built from examples/config_file.toml, in failover order:");
    for name in &order {
        println!("  {}", built[*name]);
    }

    println!("\nopenai is down:");
    for i in 1..=2 {
        let answer = llm.ready().await?.call(format!("prompt #{i}")).await?;
        println!("  request {i} -> {answer}");
    }
    println!("  calls per provider: {:?}", routes.served());
    let openai = breakers.iter().find(|h| h.name() == "openai").unwrap();
    println!(
        "  openai's breaker: {} failed calls, state {}",
        openai.stats().failed_calls,
        openai.state()
    );

    println!("\nbad files:");
    let bad_rate = "[failover]\n[providers.openai.breaker]\nfailure_rate = 1.5\n";
    let bad_duration = "[failover]\n[providers.azure.bulkhead]\nmax_wait = \"soon\"\n";
    let mut errors = Vec::new();
    for text in [bad_rate, bad_duration] {
        let err = read(text).expect_err("the file is invalid");
        println!("  {err}");
        errors.push(err);
    }

    // The story must have happened (so CI notices if it does not).
    assert_eq!(order, ["openai", "azure", "anthropic"]);
    assert_eq!(routes.served(), [2, 2, 0]);
    assert_eq!(
        errors[0].to_string(),
        "providers.openai.breaker.failure_rate: must be in (0, 1]"
    );
    assert_eq!(errors[1].path(), "providers.azure.bulkhead.max_wait");
    Ok(())
}

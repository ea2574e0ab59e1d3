#![cfg(feature = "serde")]
//! Settings read from files: round trips through TOML and JSON, the layers they build, and
//! every invalid field reported by its path with the builder's reason.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use tower::retry::budget::Budget;
use tower::{service_fn, Service, ServiceExt};
use tower_breaker::circuit_breaker::error::CircuitOpen;
use tower_breaker::settings::{
    from_deserializer, BreakerSettings, BudgetSettings, BulkheadSettings, FailoverSettings,
    KeyedSettings, Mode, RetrySettings, SettingsError,
};
use tower_breaker::BoxError;
use tower_layer::Layer;

fn toml<T: DeserializeOwned>(text: &str) -> Result<T, SettingsError> {
    from_deserializer(toml::Deserializer::parse(text).expect("valid TOML syntax"))
}

fn json<T: DeserializeOwned>(text: &str) -> Result<T, SettingsError> {
    from_deserializer(&mut serde_json::Deserializer::from_str(text))
}

/// Every breaker field set to something other than its default.
const FULL_BREAKER: &str = r#"
name = "openai"
consecutive_failures = 7
failure_rate = 0.25
minimum_calls = 20
count_window = 50
slow_calls = { threshold = "2s 500ms", rate = 0.75 }
open_duration = "1m 30s"
max_open_duration = "10m"
half_open_permits = 4
success_threshold = 2
probe_timeout = "250ms"
mode = "fail_fast"
retry_after_bounds = { min = "2s", max = "5m" }
history_len = 2

[adaptive]
consecutive_failures = 9
open_duration = "45s"
above = [{ rate_per_minute = 100, consecutive_failures = 3, open_duration = "20s" }]
"#;

#[test]
fn breaker_settings_round_trip_through_toml_and_json() {
    let settings: BreakerSettings = toml(FULL_BREAKER).unwrap();
    assert_eq!(settings.name(), Some("openai"));
    assert_eq!(settings.consecutive_failures(), Some(7));
    assert_eq!(settings.failure_rate(), Some(0.25));
    assert_eq!(settings.minimum_calls(), Some(20));
    assert_eq!(settings.count_window(), Some(50));
    assert_eq!(settings.time_window(), None);
    assert_eq!(
        settings.slow_calls(),
        Some((Duration::from_millis(2500), 0.75))
    );
    assert_eq!(settings.open_duration(), Some(Duration::from_secs(90)));
    assert_eq!(settings.max_open_duration(), Some(Duration::from_secs(600)));
    assert_eq!(settings.half_open_permits(), Some(4));
    assert_eq!(settings.success_threshold(), Some(2));
    assert_eq!(settings.probe_timeout(), Some(Duration::from_millis(250)));
    assert_eq!(settings.mode(), Some(Mode::FailFast));
    assert_eq!(
        settings.retry_after_bounds(),
        Some((Duration::from_secs(2), Duration::from_secs(300)))
    );
    assert_eq!(settings.history_len(), Some(2));
    let adaptive = settings.adaptive().unwrap();
    assert_eq!(adaptive.thresholds_for(0), (9, Duration::from_secs(45)));
    assert_eq!(adaptive.thresholds_for(101), (3, Duration::from_secs(20)));

    let as_toml = toml::to_string(&settings).unwrap();
    assert!(as_toml.contains("open_duration = \"1m 30s\""), "{as_toml}");
    assert_eq!(toml::<BreakerSettings>(&as_toml).unwrap(), settings);

    let as_json = serde_json::to_string(&settings).unwrap();
    assert!(as_json.contains(r#""probe_timeout":"250ms""#), "{as_json}");
    assert!(as_json.contains(r#""mode":"fail_fast""#), "{as_json}");
    assert_eq!(json::<BreakerSettings>(&as_json).unwrap(), settings);
}

#[tokio::test]
async fn breaker_settings_build_a_breaker_with_those_values() {
    let settings: BreakerSettings = toml(FULL_BREAKER).unwrap();
    let layer = settings.layer();
    let handle = layer.handle();
    let stats = handle.stats();
    assert_eq!(stats.name, "openai");
    // The adaptive table replaces `consecutive_failures` and `open_duration`; with no traffic
    // its floor is in force.
    assert_eq!(stats.consecutive_failure_threshold, 9);
    assert_eq!(stats.open_duration, Duration::from_secs(45));

    // `history_len = 2` keeps the last two transitions of three.
    handle.force_open();
    handle.force_closed();
    handle.force_open();
    assert_eq!(handle.stats().transitions.len(), 2);

    // `mode = "fail_fast"`: ready while open, and the call is rejected without waiting.
    let mut svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, BoxError>(x) }));
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<CircuitOpen>(), "{err}");

    let plain: BreakerSettings = toml("consecutive_failures = 2\nopen_duration = \"5s\"").unwrap();
    let stats = plain.builder().build().unwrap().handle().stats();
    assert_eq!(stats.consecutive_failure_threshold, 2);
    assert_eq!(stats.open_duration, Duration::from_secs(5));
    assert_eq!(stats.name, "default");
}

#[test]
fn time_window_round_trips() {
    let settings: BreakerSettings =
        toml("failure_rate = 0.5\ntime_window = \"1m\"\nminimum_calls = 5").unwrap();
    assert_eq!(settings.time_window(), Some(Duration::from_secs(60)));
    assert_eq!(settings.count_window(), None);
    let again: BreakerSettings = toml(&toml::to_string(&settings).unwrap()).unwrap();
    assert_eq!(again, settings);
    assert_eq!(again.layer().handle().stats().failure_rate, None);
}

#[test]
fn empty_tables_are_the_builders_defaults() {
    let breaker: BreakerSettings = toml("").unwrap();
    assert_eq!(breaker, BreakerSettings::default());
    assert_eq!(breaker.mode(), None);
    let stats = breaker.layer().handle().stats();
    assert_eq!(stats.name, "default");
    assert_eq!(stats.consecutive_failure_threshold, 5);
    assert_eq!(stats.open_duration, Duration::from_secs(60));

    let bulkhead: BulkheadSettings = toml("").unwrap();
    assert_eq!(bulkhead, BulkheadSettings::default());
    let stats = bulkhead.layer().handle().stats();
    assert_eq!(stats.max_concurrent, 10);
    assert_eq!(stats.max_queue, 100);
    assert_eq!(stats.max_wait, Duration::from_secs(30));

    let keyed: KeyedSettings = toml("").unwrap();
    assert_eq!(keyed, KeyedSettings::default());
    assert_eq!(
        keyed.layer(|r: &String| r.clone()).breakers().max_keys(),
        1024
    );

    let failover: FailoverSettings = toml("").unwrap();
    assert_eq!(failover, FailoverSettings::default());
    assert!(format!("{:?}", failover.resend()).contains("attempts: 1"));

    let retry: RetrySettings = toml("").unwrap();
    assert_eq!(retry, RetrySettings::default());
    let policy = format!("{:?}", retry.policy());
    assert!(policy.contains("max_attempts: 3"), "{policy}");
}

#[test]
fn bulkhead_settings_round_trip_and_build() {
    let text = "name = \"azure\"\nmax_concurrent = 3\nmax_queue = 0\nmax_wait = \"1s 500ms\"\n";
    let settings: BulkheadSettings = toml(text).unwrap();
    assert_eq!(settings.max_wait(), Some(Duration::from_millis(1500)));
    assert_eq!(
        toml::<BulkheadSettings>(&toml::to_string(&settings).unwrap()).unwrap(),
        settings
    );
    assert_eq!(
        json::<BulkheadSettings>(&serde_json::to_string(&settings).unwrap()).unwrap(),
        settings
    );
    let stats = settings.layer().handle().stats();
    assert_eq!(stats.name, "azure");
    assert_eq!(stats.max_concurrent, 3);
    assert_eq!(stats.max_queue, 0);
    assert_eq!(stats.max_wait, Duration::from_millis(1500));
}

#[tokio::test]
async fn keyed_settings_round_trip_and_build() {
    let text = r#"
max_keys = 8
idle_timeout = "10m"
breaker = { consecutive_failures = 2, open_duration = "15s" }
bulkhead = { max_concurrent = 4 }
"#;
    let settings: KeyedSettings = toml(text).unwrap();
    assert_eq!(settings.idle_timeout(), Some(Duration::from_secs(600)));
    assert_eq!(settings.breaker().unwrap().consecutive_failures(), Some(2));
    assert_eq!(settings.bulkhead().unwrap().max_concurrent(), Some(4));
    assert_eq!(
        toml::<KeyedSettings>(&toml::to_string(&settings).unwrap()).unwrap(),
        settings
    );
    assert_eq!(
        json::<KeyedSettings>(&serde_json::to_string(&settings).unwrap()).unwrap(),
        settings
    );

    let layer = settings.layer(|provider: &String| provider.clone());
    let breakers = layer.breakers();
    assert_eq!(breakers.max_keys(), 8);
    let mut svc = layer.layer(service_fn(|p: String| async move { Ok::<_, BoxError>(p) }));
    let openai = "openai".to_string();
    assert_eq!(
        svc.ready()
            .await
            .unwrap()
            .call(openai.clone())
            .await
            .unwrap(),
        "openai"
    );
    let stats = breakers.handle(&openai).unwrap().stats();
    assert_eq!(stats.name, "openai");
    assert_eq!(stats.consecutive_failure_threshold, 2);
    assert_eq!(stats.open_duration, Duration::from_secs(15));
    assert_eq!(
        breakers.bulkhead(&openai).unwrap().stats().max_concurrent,
        4
    );
}

/// A provider behind a default breaker, answering or failing every request.
fn answering(
    name: &'static str,
    up: bool,
) -> impl Service<String, Response = String, Error = BoxError> + Clone {
    tower_breaker::circuit_breaker::CircuitBreakerLayer::new().layer(service_fn(
        move |p: String| async move {
            if up {
                Ok::<_, BoxError>(format!("{name}: {p}"))
            } else {
                Err::<String, BoxError>(format!("{name} is down").into())
            }
        },
    ))
}

#[tokio::test]
async fn failover_settings_order_members_and_resend() {
    let text = r#"
order = ["b", "a"]
resend_failures = { attempts = 2, budget = { ttl = "5s", min_per_sec = 1, retry_percent = 0.5 } }
"#;
    let settings: FailoverSettings = toml(text).unwrap();
    assert_eq!(settings.order().unwrap(), ["b", "a"]);
    let resend = settings.resend_failures().unwrap();
    assert_eq!(resend.attempts(), Some(2));
    assert_eq!(resend.budget().unwrap().ttl(), Some(Duration::from_secs(5)));
    assert_eq!(
        toml::<FailoverSettings>(&toml::to_string(&settings).unwrap()).unwrap(),
        settings
    );
    assert_eq!(
        json::<FailoverSettings>(&serde_json::to_string(&settings).unwrap()).unwrap(),
        settings
    );

    // "c" is not in `order`: left out. "b" fails, and the request is re-sent to "a".
    let members = [
        ("a", answering("a", true)),
        ("c", answering("c", true)),
        ("b", answering("b", false)),
    ];
    let mut llm = settings.failover(members).unwrap();
    assert_eq!(llm.len(), 2);
    let routes = llm.routes();
    assert_eq!(
        llm.ready().await.unwrap().call("hi".into()).await.unwrap(),
        "a: hi"
    );
    assert_eq!(routes.name(0), Some("b"));
    assert_eq!(routes.served(), [1, 1]);

    let err = settings.members([("a", 1), ("c", 2)]).unwrap_err();
    assert_eq!(err.path(), "order");
    assert_eq!(err.message(), "no member is named \"b\"");

    // Without `resend_failures`, one attempt: the failure is the caller's.
    let plain: FailoverSettings = toml("order = [\"b\", \"a\"]").unwrap();
    let mut llm = plain
        .failover([("a", answering("a", true)), ("b", answering("b", false))])
        .unwrap();
    let err = llm
        .ready()
        .await
        .unwrap()
        .call("hi".into())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "b is down");
}

#[test]
fn retry_and_budget_settings_build() {
    let text = r#"
max_attempts = 5
backoff = { base = "50ms", max = "2s" }
jitter = 0.0
max_retry_after = "1m"
budget = { min_per_sec = 0, retry_percent = 0.0 }
"#;
    let settings: RetrySettings = toml(text).unwrap();
    assert_eq!(
        settings.backoff(),
        Some((Duration::from_millis(50), Duration::from_secs(2)))
    );
    assert_eq!(
        toml::<RetrySettings>(&toml::to_string(&settings).unwrap()).unwrap(),
        settings
    );
    assert_eq!(
        json::<RetrySettings>(&serde_json::to_string(&settings).unwrap()).unwrap(),
        settings
    );
    let policy = format!("{:?}", settings.policy());
    for expected in [
        "max_attempts: 5",
        "backoff_base: 50ms",
        "backoff_max: 2s",
        "jitter: 0.0",
        "max_retry_after: 60s",
    ] {
        assert!(policy.contains(expected), "{expected} in {policy}");
    }
    // A budget with no reserve and nothing deposited refuses every retry; the default one
    // has a reserve.
    assert!(!settings.budget().withdraw());
    assert!(BudgetSettings::default().budget().withdraw());
}

/// A document holding every settings type, as an application's own configuration would.
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // only its errors are looked at
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    providers: BTreeMap<String, BreakerSettings>,
    #[serde(default)]
    bulkheads: BTreeMap<String, BulkheadSettings>,
    #[serde(default)]
    keyed: BTreeMap<String, KeyedSettings>,
    failover: Option<FailoverSettings>,
    retry: Option<RetrySettings>,
}

/// `(document, path, what the message contains)`.
const INVALID: &[(&str, &str, &str)] = &[
    // Breaker: every builder check.
    ("[providers.openai]\nfailure_rate = 1.5", "providers.openai.failure_rate", "must be in (0, 1]"),
    ("[providers.openai]\nfailure_rate = 0.0", "providers.openai.failure_rate", "must be in (0, 1]"),
    ("[providers.openai]\nname = \"\"", "providers.openai.name", "must not be empty"),
    ("[providers.openai]\nminimum_calls = 0", "providers.openai.minimum_calls", "must be at least 1"),
    ("[providers.openai]\ncount_window = 0", "providers.openai.count_window", "must be at least 1"),
    ("[providers.openai]\nfailure_rate = 0.5\ncount_window = 5", "providers.openai.minimum_calls", "must not exceed count_window"),
    ("[providers.openai]\ntime_window = \"10ms\"", "providers.openai.time_window", "must be at least 20 ms"),
    ("[providers.openai]\ncount_window = 10\ntime_window = \"1m\"", "providers.openai.time_window", "set either count_window or time_window, not both"),
    ("[providers.openai]\nslow_calls = { threshold = \"0s\", rate = 0.5 }", "providers.openai.slow_calls", "the slow-call duration must be positive"),
    ("[providers.openai]\nslow_calls = { threshold = \"1s\", rate = 2.0 }", "providers.openai.slow_calls", "the slow-call rate must be in (0, 1]"),
    ("[providers.openai]\nopen_duration = \"0s\"", "providers.openai.open_duration", "must be positive"),
    ("[providers.openai]\nmax_open_duration = \"10s\"", "providers.openai.max_open_duration", "must not be less than open_duration"),
    ("[providers.openai]\nhalf_open_permits = 0", "providers.openai.half_open_permits", "must be at least 1"),
    ("[providers.openai]\nsuccess_threshold = 0", "providers.openai.success_threshold", "must be at least 1"),
    ("[providers.openai]\nsuccess_threshold = 4", "providers.openai.success_threshold", "must not exceed half_open_permits"),
    ("[providers.openai]\nprobe_timeout = \"0s\"", "providers.openai.probe_timeout", "must be positive"),
    ("[providers.openai]\nretry_after_bounds = { min = \"10s\", max = \"1s\" }", "providers.openai.retry_after_bounds", "min must not exceed max"),
    ("[providers.openai]\nhistory_len = 0", "providers.openai.history_len", "must be at least 1"),
    ("[providers.openai.adaptive]\nconsecutive_failures = 0\nopen_duration = \"1s\"", "providers.openai.adaptive", "consecutive_failures must be at least 1"),
    ("[providers.openai.adaptive]\nconsecutive_failures = 3\nopen_duration = \"0s\"", "providers.openai.adaptive", "open_duration must be positive"),
    // Breaker: the format's errors.
    ("[providers.openai]\nfailure_rate = \"high\"", "providers.openai.failure_rate", "invalid type: string \"high\", expected f64"),
    ("[providers.openai]\nconsecutive_failures = -1", "providers.openai.consecutive_failures", "invalid value: integer `-1`, expected u32"),
    ("[providers.openai]\nopen_duration = \"soon\"", "providers.openai.open_duration", "invalid duration \"soon\""),
    ("[providers.openai]\nopen_duration = 30", "providers.openai.open_duration", "expected a duration such as \"30s\""),
    ("[providers.openai]\nmode = \"fast\"", "providers.openai.mode", "unknown variant `fast`, expected `wait` or `fail_fast`"),
    ("[providers.openai]\nfailure_rat = 0.5", "providers.openai.failure_rat", "unknown field `failure_rat`"),
    ("[providers.openai]\nslow_calls = { threshold = \"1s\" }", "providers.openai.slow_calls", "missing field `rate`"),
    ("[providers.openai]\nslow_calls = { threshold = \"1s\", rate = 0.5, over = 1 }", "providers.openai.slow_calls.over", "unknown field `over`"),
    ("[providers.openai.adaptive]\nconsecutive_failures = 3\nopen_duration = \"1s\"\nabove = [{ rate_per_minute = 10, consecutive_failures = 1, open_duration = \"x\" }]", "providers.openai.adaptive.above[0].open_duration", "invalid duration \"x\""),
    // Bulkhead.
    ("[bulkheads.openai]\nmax_concurrent = 0", "bulkheads.openai.max_concurrent", "must be at least 1"),
    ("[bulkheads.openai]\nmax_wait = \"0s\"", "bulkheads.openai.max_wait", "must be positive"),
    ("[bulkheads.openai]\nname = \"\"", "bulkheads.openai.name", "must not be empty"),
    ("[bulkheads.openai]\nmax_queue = -1", "bulkheads.openai.max_queue", "invalid value: integer `-1`"),
    ("[bulkheads.openai]\nmax_wait = \"soon\"", "bulkheads.openai.max_wait", "invalid duration \"soon\""),
    ("[bulkheads.openai]\nqueue = 3", "bulkheads.openai.queue", "unknown field `queue`"),
    // Keyed, and the tables nested in it.
    ("[keyed.llm]\nmax_keys = 0", "keyed.llm.max_keys", "must be at least 1"),
    ("[keyed.llm]\nidle_timeout = \"0s\"", "keyed.llm.idle_timeout", "must be greater than zero"),
    ("[keyed.llm.breaker]\nfailure_rate = 1.5", "keyed.llm.breaker.failure_rate", "must be in (0, 1]"),
    ("[keyed.llm.bulkhead]\nmax_concurrent = 0", "keyed.llm.bulkhead.max_concurrent", "must be at least 1"),
    ("[keyed.llm.breaker]\nbogus = 1", "keyed.llm.breaker.bogus", "unknown field `bogus`"),
    // Failover, re-sends and their budget.
    ("[failover]\norder = []", "failover.order", "must name at least one member"),
    ("[failover]\norder = [\"a\", \"b\", \"a\"]", "failover.order", "must not name a member twice"),
    ("[failover]\nresend_failures = { attempts = \"two\" }", "failover.resend_failures.attempts", "invalid type: string \"two\", expected u32"),
    ("[failover]\nresend_failures = { tries = 2 }", "failover.resend_failures.tries", "unknown field `tries`"),
    ("[failover.resend_failures.budget]\nttl = \"0s\"", "failover.resend_failures.budget.ttl", "must be between 1s and 60s"),
    ("[failover.resend_failures.budget]\nttl = \"2m\"", "failover.resend_failures.budget.ttl", "must be between 1s and 60s"),
    ("[failover.resend_failures.budget]\nretry_percent = 2000.0", "failover.resend_failures.budget.retry_percent", "must be in [0, 1000]"),
    ("[failover.resend_failures.budget]\nretry_percent = nan", "failover.resend_failures.budget.retry_percent", "must be in [0, 1000]"),
    ("[failover.resend_failures.budget]\nmin_per_sec = 4294967295", "failover.resend_failures.budget.min_per_sec", "must be less than 2147483647"),
    // Retry.
    ("[retry]\nmax_attempts = 0", "retry.max_attempts", "must be at least 1"),
    ("[retry]\nbackoff = { base = \"10s\", max = \"1s\" }", "retry.backoff", "base must not exceed max"),
    ("[retry]\njitter = 1.5", "retry.jitter", "must be in [0, 1]"),
    ("[retry]\nmax_retry_after = \"never\"", "retry.max_retry_after", "invalid duration \"never\""),
    ("[retry.budget]\nttl = \"0s\"", "retry.budget.ttl", "must be between 1s and 60s"),
];

#[test]
fn every_invalid_field_is_reported_by_its_path() {
    for &(document, path, reason) in INVALID {
        let err = toml::<Doc>(document).expect_err(document);
        assert_eq!(err.path(), path, "path of {document:?}: {err}");
        assert!(
            err.message().contains(reason),
            "message of {document:?}: {err}"
        );
        assert_eq!(err.to_string(), format!("{path}: {}", err.message()));
        // A builder's verdict is kept, naming the last key of the path.
        if let Some(invalid) = err.config_error() {
            assert!(path.ends_with(invalid.field()), "{document:?}: {invalid}");
            assert_eq!(err.message(), invalid.reason());
        }
    }
}

#[test]
fn builder_errors_have_exact_messages_and_keep_the_config_error() {
    let err = toml::<Doc>("[providers.openai]\nfailure_rate = 1.5").unwrap_err();
    assert_eq!(
        err.to_string(),
        "providers.openai.failure_rate: must be in (0, 1]"
    );
    assert_eq!(err.config_error().unwrap().field(), "failure_rate");

    // A type error is the format's, and has no `ConfigError`.
    let err = toml::<Doc>("[providers.openai]\nfailure_rate = \"high\"").unwrap_err();
    assert_eq!(
        err.to_string(),
        "providers.openai.failure_rate: invalid type: string \"high\", expected f64"
    );
    assert!(err.config_error().is_none());

    // The same document in JSON.
    let err = json::<Doc>(r#"{"providers": {"openai": {"failure_rate": 1.5}}}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "providers.openai.failure_rate: must be in (0, 1]"
    );
    let err =
        json::<Doc>(r#"{"keyed": {"llm": {"breaker": {"open_duration": "soon"}}}}"#).unwrap_err();
    assert_eq!(err.path(), "keyed.llm.breaker.open_duration");
    assert!(
        err.message().starts_with("invalid duration \"soon\""),
        "{err}"
    );
}

#[test]
fn nested_provider_tables_report_the_full_path() {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Provider {
        #[serde(default)]
        breaker: BreakerSettings,
        #[serde(default)]
        bulkhead: BulkheadSettings,
    }
    #[derive(Debug, Deserialize)]
    struct Providers {
        providers: BTreeMap<String, Provider>,
    }
    let err = toml::<Providers>("[providers.openai.breaker]\nfailure_rate = 1.5").unwrap_err();
    assert_eq!(
        err.to_string(),
        "providers.openai.breaker.failure_rate: must be in (0, 1]"
    );
    let err = toml::<Providers>("[providers.azure.bulkhead]\nmax_concurrent = 0").unwrap_err();
    assert_eq!(
        err.to_string(),
        "providers.azure.bulkhead.max_concurrent: must be at least 1"
    );

    let ok = toml::<Providers>("[providers.openai.bulkhead]\nmax_queue = 5").unwrap();
    assert_eq!(ok.providers["openai"].bulkhead.max_queue(), Some(5));
    assert_eq!(ok.providers["openai"].breaker, BreakerSettings::default());
}

#[test]
fn settings_at_the_root_report_the_field_alone() {
    let err = toml::<BreakerSettings>("failure_rate = 1.5").unwrap_err();
    assert_eq!(err.path(), "failure_rate");
    assert_eq!(err.to_string(), "failure_rate: must be in (0, 1]");
}

#[test]
fn without_the_helper_errors_still_name_the_field() {
    let err = toml::from_str::<Doc>("[providers.openai]\nfailure_rate = 1.5").unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid `failure_rate`: must be in (0, 1]"),
        "{err}"
    );
    let err = serde_json::from_str::<BulkheadSettings>(r#"{"max_concurrent": 0}"#).unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid `max_concurrent`: must be at least 1"),
        "{err}"
    );
}

#[test]
fn an_error_recovered_from_does_not_name_a_later_one() {
    // The untagged enum tries `BreakerSettings` first, which fails, then takes the number;
    // the later error, outside any settings, must come out as raised.
    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    #[allow(dead_code)] // only its errors are looked at
    enum Limit {
        Breaker(Box<BreakerSettings>),
        Calls(u32),
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Doc {
        limit: Limit,
        count: u32,
    }
    let err = toml::<Doc>("limit = 5\ncount = \"x\"").unwrap_err();
    assert_eq!(err.path(), "count");
    assert!(err.message().contains("expected u32"), "{err}");
    assert!(!err.message().contains("BreakerSettings"), "{err}");
    assert!(err.config_error().is_none());
}

#![cfg(all(feature = "serde", feature = "redis"))]
//! A fleet's settings read from a file: a round trip, the fleet they build, and each invalid
//! field reported by its path with the builder's reason — without connecting to anything.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use tower_breaker::settings::{from_deserializer, FleetSettings, SettingsError};

fn toml<T: DeserializeOwned>(text: &str) -> Result<T, SettingsError> {
    from_deserializer(toml::Deserializer::parse(text).expect("valid TOML syntax"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    fleet: FleetSettings,
}

const FULL: &str = r#"
[fleet]
url = "redis://127.0.0.1:1/"
prefix = "gateway"
fleet = "llm"
share_manual = true
share_failures = false
failure_window = "20s"
probe_lease = "15s"
command_timeout = "250ms"
reconnect_backoff = { min = "50ms", max = "2s" }
queue_capacity = 64
max_remote_open = "30m"
"#;

#[test]
fn fleet_settings_round_trip() {
    let doc: Doc = toml(FULL).unwrap();
    let s = &doc.fleet;
    assert_eq!(s.url(), Some("redis://127.0.0.1:1/"));
    assert_eq!(s.prefix(), Some("gateway"));
    assert_eq!(s.fleet(), Some("llm"));
    assert_eq!(s.share_manual(), Some(true));
    assert_eq!(s.share_failures(), Some(false));
    assert_eq!(s.failure_window(), Some(Duration::from_secs(20)));
    assert_eq!(s.probe_lease(), Some(Duration::from_secs(15)));
    assert_eq!(s.command_timeout(), Some(Duration::from_millis(250)));
    assert_eq!(
        s.reconnect_backoff(),
        Some((Duration::from_millis(50), Duration::from_secs(2)))
    );
    assert_eq!(s.queue_capacity(), Some(64));
    assert_eq!(s.max_remote_open(), Some(Duration::from_secs(30 * 60)));

    let written = toml::to_string(s).unwrap();
    let again: FleetSettings = toml(&written).unwrap();
    assert_eq!(&again, s);
    assert_eq!(toml::<FleetSettings>("").unwrap(), FleetSettings::default());
}

#[test]
fn every_invalid_fleet_field_is_reported_by_its_path() {
    let cases: &[(&str, &str, &str)] = &[
        ("url = \"http://example\"", "fleet.url", "not a Redis URL"),
        ("prefix = \"\"", "fleet.prefix", "must not be empty"),
        ("fleet = \"a|b\"", "fleet.fleet", "without `|`"),
        (
            "probe_lease = \"0s\"",
            "fleet.probe_lease",
            "greater than zero",
        ),
        (
            "command_timeout = \"0s\"",
            "fleet.command_timeout",
            "greater than zero",
        ),
        (
            "reconnect_backoff = { min = \"2s\", max = \"1s\" }",
            "fleet.reconnect_backoff",
            "min <= max",
        ),
        ("queue_capacity = 0", "fleet.queue_capacity", "at least 1"),
        (
            "max_remote_open = \"0s\"",
            "fleet.max_remote_open",
            "greater than zero",
        ),
        (
            "probe_lease = \"soon\"",
            "fleet.probe_lease",
            "invalid duration",
        ),
        (
            "share_manual = \"yes\"",
            "fleet.share_manual",
            "invalid type",
        ),
        ("sharemanual = true", "fleet.sharemanual", "unknown field"),
    ];
    for &(line, path, reason) in cases {
        let document = format!("[fleet]\n{line}\n");
        let err = toml::<Doc>(&document).expect_err(&document);
        assert_eq!(err.path(), path, "{document:?}: {err}");
        assert!(err.message().contains(reason), "{document:?}: {err}");
    }
}

#[tokio::test]
async fn settings_build_a_fleet_without_waiting_for_redis() {
    // Nothing listens on port 1: the fleet is built at once and connects in the background.
    let doc: Doc = toml(FULL).unwrap();
    let fleet = doc.fleet.build().unwrap();
    assert!(!fleet.is_connected());
    fleet.shutdown();
}

//! `serde::Serialize` for [`State`], [`Stats`] and [`Transition`] (feature `serde`).
//!
//! Instants on tokio's clock mean nothing outside the process, so they are written as seconds
//! before the moment of serialization; durations are written as seconds (`f64`); a
//! [`Reason`](super::Reason) as its display text (`"5 consecutive failures"`).

use serde::ser::{Serialize, SerializeStruct, Serializer};
use tokio::time::Instant;

use super::handle::Stats;
use super::state::{State, Transition};

fn secs_ago(at: Instant) -> f64 {
    crate::time::now()
        .saturating_duration_since(at)
        .as_secs_f64()
}

/// Serialized as its name in snake case: `"closed"`, `"open"`, `"half_open"`, `"forced_open"`,
/// `"disabled"`.
impl Serialize for State {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit_variant("State", *self as u32, self.as_str())
    }
}

/// Serialized as `{"name": "openai", "state": "open", "total_calls": 12, ...,
/// "failure_rate": 0.5, "secs_since_last_failure": 1.2, "retry_after_secs": 28.8,
/// "transitions": [{"from": "closed", "to": "open", "reason": "5 consecutive failures",
/// "secs_ago": 1.2}], "consecutive_failure_threshold": 5, "open_duration_secs": 30.0,
/// "request_rate": null}`; absent values are `null`.
impl Serialize for Stats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Stats", 19)?;
        s.serialize_field("name", &self.name)?;
        s.serialize_field("state", &self.state)?;
        s.serialize_field("total_calls", &self.total_calls)?;
        s.serialize_field("successful_calls", &self.successful_calls)?;
        s.serialize_field("failed_calls", &self.failed_calls)?;
        s.serialize_field("ignored_calls", &self.ignored_calls)?;
        s.serialize_field("throttled_calls", &self.throttled_calls)?;
        s.serialize_field("rejected_calls", &self.rejected_calls)?;
        s.serialize_field("slow_calls", &self.slow_calls)?;
        s.serialize_field("consecutive_failures", &self.consecutive_failures)?;
        s.serialize_field("consecutive_successes", &self.consecutive_successes)?;
        s.serialize_field("failure_rate", &self.failure_rate)?;
        s.serialize_field("slow_call_rate", &self.slow_call_rate)?;
        s.serialize_field("secs_since_last_failure", &self.last_failure.map(secs_ago))?;
        s.serialize_field(
            "retry_after_secs",
            &self.retry_after.map(|d| d.as_secs_f64()),
        )?;
        s.serialize_field("transitions", &self.transitions)?;
        s.serialize_field(
            "consecutive_failure_threshold",
            &self.consecutive_failure_threshold,
        )?;
        s.serialize_field("open_duration_secs", &self.open_duration.as_secs_f64())?;
        s.serialize_field("request_rate", &self.request_rate)?;
        s.end()
    }
}

/// Serialized as `{"from": "closed", "to": "open", "reason": "5 consecutive failures",
/// "secs_ago": 1.2}`.
impl Serialize for Transition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Transition", 4)?;
        s.serialize_field("from", &self.from)?;
        s.serialize_field("to", &self.to)?;
        s.serialize_field("reason", &self.reason.to_string())?;
        s.serialize_field("secs_ago", &secs_ago(self.at))?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::circuit_breaker::{CircuitBreakerLayer, State};

    #[tokio::test(start_paused = true)]
    async fn stats_serialize_with_instants_as_seconds_ago() {
        let layer = CircuitBreakerLayer::builder()
            .name("openai")
            .consecutive_failures(1)
            .open_duration(Duration::from_secs(30))
            .build()
            .unwrap();
        let handle = layer.handle();
        handle.force_open();
        handle.force_closed();
        tokio::time::advance(Duration::from_secs(2)).await;
        let json = serde_json::to_value(handle.stats()).unwrap();
        assert_eq!(json["name"], "openai");
        assert_eq!(json["state"], "closed");
        assert_eq!(json["total_calls"], 0);
        assert_eq!(json["open_duration_secs"], 30.0);
        assert_eq!(json["secs_since_last_failure"], serde_json::Value::Null);
        let transitions = json["transitions"].as_array().unwrap();
        assert_eq!(transitions.len(), 2);
        assert_eq!(transitions[0]["to"], "forced_open");
        assert_eq!(transitions[1]["reason"], "forced closed");
        assert_eq!(transitions[1]["secs_ago"], 2.0);
        assert_eq!(json.as_object().unwrap().len(), 19, "every field");
        assert_eq!(serde_json::to_value(State::HalfOpen).unwrap(), "half_open");
    }
}

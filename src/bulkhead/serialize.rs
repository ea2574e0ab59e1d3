//! `serde::Serialize` for [`Stats`] (feature `serde`).
//!
//! Written out rather than derived so that docs.rs can label the impl with the feature it needs
//! (a derived impl cannot carry `doc(cfg)`); the output is what the derive wrote.

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::handle::Stats;

/// Serialized as `{"name": "chat", "active": 3, "queued": 0, "available": 7,
/// "max_concurrent": 10, "rejected": 0, "timed_out": 0, "max_queue": 100,
/// "max_wait": {"secs": 30, "nanos": 0}}`.
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl Serialize for Stats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Destructured without `..`, so a new field does not compile until it is written here.
        let Stats {
            name,
            active,
            queued,
            available,
            max_concurrent,
            rejected,
            timed_out,
            max_queue,
            max_wait,
        } = self;
        let mut s = serializer.serialize_struct("Stats", 9)?;
        s.serialize_field("name", name)?;
        s.serialize_field("active", active)?;
        s.serialize_field("queued", queued)?;
        s.serialize_field("available", available)?;
        s.serialize_field("max_concurrent", max_concurrent)?;
        s.serialize_field("rejected", rejected)?;
        s.serialize_field("timed_out", timed_out)?;
        s.serialize_field("max_queue", max_queue)?;
        s.serialize_field("max_wait", max_wait)?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Stats;

    #[test]
    fn stats_serialize_every_field_by_name() {
        let stats = Stats {
            name: "chat".to_owned(),
            active: 3,
            queued: 1,
            available: 7,
            max_concurrent: 10,
            rejected: 2,
            timed_out: 4,
            max_queue: 100,
            max_wait: Duration::from_millis(1500),
        };
        assert_eq!(
            serde_json::to_value(&stats).unwrap(),
            serde_json::json!({
                "name": "chat",
                "active": 3,
                "queued": 1,
                "available": 7,
                "max_concurrent": 10,
                "rejected": 2,
                "timed_out": 4,
                "max_queue": 100,
                "max_wait": {"secs": 1, "nanos": 500_000_000},
            })
        );
    }
}

//! Durations written the way people write them in configuration files: `"30s"`, `"250ms"`,
//! `"1m 30s"` (see [`humantime::parse_duration`]).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A [`Duration`] read from and written as a humantime string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HumanDuration(pub(super) Duration);

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Self {
        d.0
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // humantime reads back exactly what it writes, down to the nanosecond.
        serializer.collect_str(&humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(DurationVisitor)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = HumanDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"30s\", \"250ms\" or \"1m 30s\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        humantime::parse_duration(v)
            .map(HumanDuration)
            .map_err(|err| {
                E::custom(format_args!(
                "invalid duration \"{v}\" ({err}); write it as e.g. \"30s\", \"250ms\" or \"1m 30s\""
            ))
            })
    }
}

/// The optional duration field as a [`Duration`].
pub(super) fn get(d: Option<HumanDuration>) -> Option<Duration> {
    d.map(Duration::from)
}

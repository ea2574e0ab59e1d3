//! The wire format: one line of text per decision, published on the fleet's channel.
//!
//! ```text
//! tb1|<kind>|<fleet>|<origin>|<generation>|<expires-at>|<name>
//! ```
//!
//! `kind` is `open`, `close`, `force_open` or `force_close`; `generation` a positive decimal
//! integer; `expires-at` Unix time in milliseconds, also decimal. The name comes last so that it
//! may contain `|` (the fields before it never do). Text rather than a binary encoding so that
//! `redis-cli SUBSCRIBE` shows what a fleet is doing; the version tag lets a later format live
//! next to this one (a receiver ignores versions it does not know).
//!
//! Parsing is strict — digits only in numbers, no empty field, a bounded length, UTF-8 — and
//! never panics: anything published on the channel by anyone reaches [`Message::parse`].

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The format's version tag, the first field.
pub(super) const VERSION: &str = "tb1";

/// The longest payload accepted, in bytes: circuit names are short, and refusing a large payload
/// before looking at it keeps a flood of garbage cheap.
pub(super) const MAX_LEN: usize = 4096;

/// What a message asks of the circuit it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Tripped (or re-opened after a failed probe): open until `expires-at`.
    Open,
    /// Closed after its probes succeeded.
    Close,
    /// Forced open by hand (shared only with `share_manual`).
    ForceOpen,
    /// Forced closed or reset by hand (shared only with `share_manual`).
    ForceClose,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Open => "open",
            Kind::Close => "close",
            Kind::ForceOpen => "force_open",
            Kind::ForceClose => "force_close",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "open" => Kind::Open,
            "close" => Kind::Close,
            "force_open" => Kind::ForceOpen,
            "force_close" => Kind::ForceClose,
            _ => return None,
        })
    }

    /// Whether the message shares a manual operation.
    pub(super) fn is_manual(self) -> bool {
        matches!(self, Kind::ForceOpen | Kind::ForceClose)
    }
}

/// One decision of one process about one circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Message<'a> {
    pub(super) kind: Kind,
    /// The fleet it was published for (a receiver of another fleet ignores it).
    pub(super) fleet: &'a str,
    /// The publishing process's id (a receiver ignores its own messages).
    pub(super) origin: &'a str,
    /// The circuit's fleet-wide generation (`INCR`): a receiver applies only newer ones.
    pub(super) generation: u64,
    /// For `open`, when the open phase ends; for the others, when the message is too late to
    /// apply. Unix time in milliseconds.
    pub(super) expires_at_ms: u64,
    /// The circuit's name (`<scope>/<key>` for keyed breakers).
    pub(super) name: &'a str,
}

impl<'a> Message<'a> {
    /// The message as published. `fleet` and `origin` never contain `|` (the builder checks the
    /// fleet name; origins are hex).
    pub(super) fn encode(&self) -> String {
        debug_assert!(!self.fleet.contains('|') && !self.origin.contains('|'));
        let mut out = String::with_capacity(48 + self.fleet.len() + self.name.len());
        let _ = write!(
            out,
            "{VERSION}|{}|{}|{}|{}|{}|{}",
            self.kind.as_str(),
            self.fleet,
            self.origin,
            self.generation,
            self.expires_at_ms,
            self.name
        );
        out
    }

    /// Reads a payload from the channel; `None` for anything that is not a well-formed message
    /// of this version.
    pub(super) fn parse(payload: &'a [u8]) -> Option<Message<'a>> {
        if payload.len() > MAX_LEN {
            return None;
        }
        let text = std::str::from_utf8(payload).ok()?;
        let mut fields = text.splitn(7, '|');
        if fields.next()? != VERSION {
            return None;
        }
        let kind = Kind::parse(fields.next()?)?;
        let fleet = non_empty(fields.next()?)?;
        let origin = non_empty(fields.next()?)?;
        let generation = number(fields.next()?).filter(|&g| g > 0)?;
        let expires_at_ms = number(fields.next()?)?;
        let name = non_empty(fields.next()?)?;
        Some(Message {
            kind,
            fleet,
            origin,
            generation,
            expires_at_ms,
            name,
        })
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// A decimal `u64` written with digits only (`u64::from_str` would also take a leading `+`).
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Wall-clock now, in Unix milliseconds: expiries cross process boundaries, so they are on the
/// clock that processes share (tokio's `Instant` is per process).
pub(super) fn unix_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// `d` in whole milliseconds, rounded up so that a short remaining time is not sent as zero.
pub(super) fn ceil_ms(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(name: &str) -> Message<'_> {
        Message {
            kind: Kind::Open,
            fleet: "llm-gateway",
            origin: "00ff00ff00ff00ff",
            generation: 42,
            expires_at_ms: 1_700_000_000_123,
            name,
        }
    }

    #[test]
    fn encodes_the_documented_line() {
        assert_eq!(
            sample("openai").encode(),
            "tb1|open|llm-gateway|00ff00ff00ff00ff|42|1700000000123|openai"
        );
    }

    #[test]
    fn round_trips_every_kind_and_a_name_with_bars() {
        for kind in [Kind::Open, Kind::Close, Kind::ForceOpen, Kind::ForceClose] {
            let name = "llm/a|b||c|";
            let m = Message {
                kind,
                ..sample(name)
            };
            let line = m.encode();
            assert_eq!(Message::parse(line.as_bytes()), Some(m));
        }
    }

    #[test]
    fn refuses_garbage() {
        let good = "tb1|open|f|o|1|2|n";
        assert!(Message::parse(good.as_bytes()).is_some());
        for bad in [
            "",
            "|",
            "tb1",
            "tb1|open|f|o|1|2",                       // no name
            "tb1|open|f|o|1|2|",                      // empty name
            "tb2|open|f|o|1|2|n",                     // another version
            "TB1|open|f|o|1|2|n",                     // versions are exact
            "tb1|opened|f|o|1|2|n",                   // unknown kind
            "tb1|open||o|1|2|n",                      // empty fleet
            "tb1|open|f||1|2|n",                      // empty origin
            "tb1|open|f|o|0|2|n",                     // generations start at 1
            "tb1|open|f|o|+1|2|n",                    // digits only
            "tb1|open|f|o|-1|2|n",                    // digits only
            "tb1|open|f|o| 1|2|n",                    // digits only
            "tb1|open|f|o|1|2.5|n",                   // digits only
            "tb1|open|f|o|1||n",                      // empty expiry
            "tb1|open|f|o|18446744073709551616|2|n",  // u64::MAX + 1
            "tb1|open|f|o|1|999999999999999999999|n", // 21 digits
            "open|tb1|f|o|1|2|n",                     // fields out of order
        ] {
            assert_eq!(Message::parse(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(Message::parse(&[0xff, 0xfe, b'|']), None, "not UTF-8");
        let mut invalid = good.as_bytes().to_vec();
        invalid.push(0xff);
        assert_eq!(Message::parse(&invalid), None, "a name that is not UTF-8");
        let long = format!("{good}{}", "x".repeat(MAX_LEN));
        assert_eq!(Message::parse(long.as_bytes()), None, "too long");
    }

    #[test]
    fn the_largest_numbers_parse() {
        let line = format!("tb1|close|f|o|{}|{}|n", u64::MAX, u64::MAX);
        let m = Message::parse(line.as_bytes()).unwrap();
        assert_eq!((m.generation, m.expires_at_ms), (u64::MAX, u64::MAX));
    }

    #[test]
    fn milliseconds_round_up() {
        assert_eq!(ceil_ms(Duration::ZERO), 0);
        assert_eq!(ceil_ms(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_ms(Duration::from_millis(250)), 250);
        assert_eq!(ceil_ms(Duration::from_micros(250_001)), 251);
        assert!(unix_ms() > 1_600_000_000_000);
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Open),
            Just(Kind::Close),
            Just(Kind::ForceOpen),
            Just(Kind::ForceClose)
        ]
    }

    proptest! {
        /// Whatever is published on the channel, parsing returns (and never panics).
        #[test]
        fn any_bytes_parse_without_panicking(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let _ = Message::parse(&bytes);
        }

        /// A valid line with one field replaced parses exactly when the new value is valid for
        /// that field.
        #[test]
        fn a_changed_field_parses_only_when_valid(
            field in 0usize..6,
            value in "[a-z0-9+ _-]{0,8}",
        ) {
            let mut fields = ["tb1", "open", "f", "o", "5", "1700000000000", "name"];
            fields[field] = &value;
            let line = fields.join("|");
            let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
            let valid = match field {
                0 => value == VERSION,
                1 => ["open", "close", "force_open", "force_close"].contains(&value.as_str()),
                2 | 3 => !value.is_empty(),
                4 => digits && value.parse::<u64>().unwrap() > 0,
                _ => digits,
            };
            prop_assert_eq!(Message::parse(line.as_bytes()).is_some(), valid, "{}", line);
        }

        /// Every message the encoder writes parses back to itself.
        #[test]
        fn encode_then_parse_is_identity(
            kind in kind(),
            fleet in "[a-zA-Z0-9:._-]{1,20}",
            origin in "[0-9a-f]{16}",
            generation in 1u64..,
            expires_at_ms in any::<u64>(),
            name in "\\PC{1,40}",
        ) {
            let m = Message {
                kind,
                fleet: &fleet,
                origin: &origin,
                generation,
                expires_at_ms,
                name: &name,
            };
            let line = m.encode();
            prop_assert_eq!(Message::parse(line.as_bytes()), Some(m));
        }

        /// A message cut anywhere before its name is refused (a cut inside the name is just
        /// another name).
        #[test]
        fn truncated_before_the_name_is_refused(generation in 1u64.., cut in 0usize..64) {
            let full = Message { generation, ..sample("n") }.encode();
            let name_at = full.len() - 1;
            let cut = cut.min(name_at);
            prop_assert_eq!(Message::parse(&full.as_bytes()[..cut]), None);
        }
    }
}

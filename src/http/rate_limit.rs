//! Reading LLM providers' rate-limit headers, to back off *before* the provider answers 429.
//!
//! A provider reports what is left of each limit on every response. When a limit is used up,
//! the next request will be refused until it resets, so the time to that reset is a back-off
//! hint, given on a `200`. [`HttpClassifier`](super::HttpClassifier) turns it into
//! [`Throttled`](crate::circuit_breaker::Outcome::Throttled), so the circuit opens until the
//! reset instead of spending a request on a 429.
//!
//! | provider | remaining | reset |
//! | --- | --- | --- |
//! | OpenAI, Azure OpenAI | `x-ratelimit-remaining-requests`, `x-ratelimit-remaining-tokens` | `x-ratelimit-reset-requests`, `x-ratelimit-reset-tokens`: a Go duration (`6m0s`, `20ms`, `7.66s`), see [`parse_go_duration`] |
//! | Anthropic | `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-remaining` | `anthropic-ratelimit-{..}-reset`: an RFC 3339 timestamp (`2024-04-11T18:33:12Z`) |
//!
//! A limit is *exhausted* when its remaining header says `0`. Only a pair whose remaining is `0`
//! and whose reset lies in the future gives a hint; with several, the longest reset wins (every
//! exhausted limit has to reset before a request can pass). Anything malformed — a remaining
//! that is not a number, a reset that does not parse, a missing reset (Azure sometimes sends
//! none) — skips that pair, never panics. Like [`retry_after`](super::retry_after), every hint
//! is at most [`MAX_RETRY_AFTER`], larger ones clamped to it, and only the first value of a
//! header is read.
//!
//! ```
//! use std::time::Duration;
//! use http::{HeaderMap, HeaderValue};
//! use tower_breaker::http::rate_limit;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("x-ratelimit-remaining-requests", HeaderValue::from_static("0"));
//! headers.insert("x-ratelimit-reset-requests", HeaderValue::from_static("1.5s"));
//! assert_eq!(rate_limit::parse(&headers), Some(Duration::from_millis(1500)));
//!
//! // Tokens are exhausted too, for longer: that reset is the one to wait for.
//! headers.insert("x-ratelimit-remaining-tokens", HeaderValue::from_static("0"));
//! headers.insert("x-ratelimit-reset-tokens", HeaderValue::from_static("6m0s"));
//! assert_eq!(rate_limit::parse(&headers), Some(Duration::from_secs(360)));
//!
//! // Something left: no hint, whatever the reset says.
//! headers.clear();
//! headers.insert("x-ratelimit-remaining-requests", HeaderValue::from_static("59"));
//! headers.insert("x-ratelimit-reset-requests", HeaderValue::from_static("1s"));
//! assert_eq!(rate_limit::parse(&headers), None);
//!
//! assert_eq!(rate_limit::parse_go_duration("1h2m3.5s"), Some(Duration::from_secs_f64(3723.5)));
//! ```

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderValue};

use super::retry_after::MAX_RETRY_AFTER;

#[derive(Clone, Copy, Debug)]
enum ResetFormat {
    GoDuration,
    Rfc3339,
}

/// (remaining, reset, the reset's format).
const PAIRS: [(&str, &str, ResetFormat); 6] = [
    (
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        ResetFormat::GoDuration,
    ),
    (
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        ResetFormat::GoDuration,
    ),
    (
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
        ResetFormat::Rfc3339,
    ),
    (
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
        ResetFormat::Rfc3339,
    ),
    (
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
        ResetFormat::Rfc3339,
    ),
    (
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
        ResetFormat::Rfc3339,
    ),
];

/// The time until every exhausted rate limit in `headers` has reset, relative to
/// [`SystemTime::now`] for RFC 3339 resets; `None` when no limit is exhausted (or none with a
/// reset in the future).
pub fn parse(headers: &HeaderMap) -> Option<Duration> {
    parse_with(headers, SystemTime::now)
}

/// [`parse`], with `now` as the reference for RFC 3339 resets (for tests and replay).
pub fn parse_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    parse_with(headers, || now)
}

// This runs on every successful response, most of which carry no rate-limit header at all. One
// pass comparing names against two prefixes is cheap; looking the twelve names up would hash
// each of them, and reading the clock up front would cost more than the scan — so the clock is
// read only for an exhausted RFC 3339 pair.
fn parse_with(headers: &HeaderMap, now: impl Fn() -> SystemTime) -> Option<Duration> {
    // [remaining, reset] of each pair: the first value of each header, as `HeaderMap::get` gives.
    let mut found: [[Option<&HeaderValue>; 2]; PAIRS.len()] = [[None; 2]; PAIRS.len()];
    let mut any = false;
    for (name, value) in headers {
        let name = name.as_str();
        if !(name.starts_with("x-ratelimit-") || name.starts_with("anthropic-ratelimit-")) {
            continue;
        }
        for (slots, (remaining, reset, _)) in found.iter_mut().zip(&PAIRS) {
            if name == *remaining {
                slots[0].get_or_insert(value);
                any = true;
                break;
            }
            if name == *reset {
                slots[1].get_or_insert(value);
                break;
            }
        }
    }
    if !any {
        return None;
    }
    let mut clock = None;
    found
        .iter()
        .zip(&PAIRS)
        .filter_map(|([remaining, reset], (_, _, format))| {
            if !is_exhausted((*remaining)?) {
                return None;
            }
            let text = (*reset)?.to_str().ok()?.trim();
            match format {
                ResetFormat::GoDuration => parse_go_duration(text),
                ResetFormat::Rfc3339 => parse_rfc3339_at(text, *clock.get_or_insert_with(&now)),
            }
        })
        .filter(|d| !d.is_zero())
        .max()
}

/// A remaining count of zero. Any other number, or anything that is not a number, leaves the
/// pair alone: a guess that a limit is used up would open the circuit for nothing.
fn is_exhausted(value: &HeaderValue) -> bool {
    let text = value.as_bytes().trim_ascii();
    !text.is_empty() && text.iter().all(|&b| b == b'0')
}

/// Parses a Go duration, as Go's `time.Duration` prints it and `time.ParseDuration` reads it:
/// one or more decimal numbers, each with an optional fraction and a unit — `ns`, `us` (or `µs`,
/// `μs`), `ms`, `s`, `m`, `h` — as in `"6m0s"`, `"20ms"`, `"7.66s"`, `"1h2m3.5s"`; a bare `"0"` is
/// zero, and a leading `+` is allowed.
///
/// Total: a negative duration, a missing unit, a whole part that does not fit in a `u64`, or
/// anything else malformed gives `None`; a `Some` is at most [`MAX_RETRY_AFTER`] (larger values
/// are clamped to it). Fractions below a nanosecond are truncated.
///
/// ```
/// use std::time::Duration;
/// use tower_breaker::http::rate_limit::parse_go_duration;
///
/// assert_eq!(parse_go_duration("7.66s"), Some(Duration::from_millis(7660)));
/// assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
/// assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
/// assert_eq!(parse_go_duration("-1s"), None);
/// assert_eq!(parse_go_duration("90"), None);
/// ```
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    // u128 nanoseconds: a u64 whole part times an hour's nanoseconds cannot overflow it.
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (whole, after) = split_digits(rest);
        let (frac, after) = match after.strip_prefix('.') {
            Some(after) => split_digits(after),
            None => ("", after),
        };
        // Go accepts "1." and ".5" but not a lone ".".
        if whole.is_empty() && frac.is_empty() {
            return None;
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 60 * 60 * 1_000_000_000,
            _ => return None,
        };
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        // Eighteen digits keep the numerator in a u64 and are finer than a nanosecond of an hour.
        let frac = &frac[..frac.len().min(18)];
        let frac_nanos = if frac.is_empty() {
            0
        } else {
            let numerator: u128 = frac.parse().ok()?;
            numerator * unit_nanos / 10u128.pow(frac.len() as u32)
        };
        total = total.saturating_add(u128::from(whole) * unit_nanos + frac_nanos);
        rest = after;
    }
    let total = total.min(MAX_RETRY_AFTER.as_nanos());
    Some(Duration::new(
        (total / 1_000_000_000) as u64,
        (total % 1_000_000_000) as u32,
    ))
}

fn split_digits(text: &str) -> (&str, &str) {
    let n = text.bytes().take_while(u8::is_ascii_digit).count();
    text.split_at(n)
}

/// The time from `now` to an RFC 3339 timestamp: zero if it is past, `None` if it does not
/// parse. Any offset is accepted (`Z`, `+00:00`, `-07:00`), as are fractional seconds.
fn parse_rfc3339_at(text: &str, now: SystemTime) -> Option<Duration> {
    let at = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    // Before 1970 is long past; chrono writes a leap second as a nanosecond count past 1e9,
    // which `from_nanos` carries into the seconds.
    let Ok(secs) = u64::try_from(at.timestamp()) else {
        return Some(Duration::ZERO);
    };
    let at = SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))?
        .checked_add(Duration::from_nanos(u64::from(at.timestamp_subsec_nanos())))?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;
    use proptest::prelude::*;

    const NOW: Duration = Duration::from_secs(1_712_860_392); // 2024-04-11T18:33:12Z

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + NOW
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// Formats `d` the way Go's `time.Duration.String` does: `"0s"`, `"1.5µs"`, `"20ms"`,
    /// `"7.66s"`, `"6m0s"`, `"1h2m3.5s"`.
    fn go_format(d: Duration) -> String {
        fn frac(rem: u128, scale: u128) -> String {
            if rem == 0 {
                return String::new();
            }
            let width = scale.ilog10() as usize;
            let digits = format!("{rem:0width$}");
            format!(".{}", digits.trim_end_matches('0'))
        }
        let n = d.as_nanos();
        if n == 0 {
            return "0s".into();
        }
        if n < 1_000_000_000 {
            let (unit, scale) = match n {
                0..1_000 => ("ns", 1),
                1_000..1_000_000 => ("\u{b5}s", 1_000),
                _ => ("ms", 1_000_000),
            };
            return format!("{}{}{unit}", n / scale, frac(n % scale, scale));
        }
        let (secs, nanos) = (n / 1_000_000_000, n % 1_000_000_000);
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        let mut out = String::new();
        if h > 0 {
            out += &format!("{h}h");
        }
        if h > 0 || m > 0 {
            out += &format!("{m}m");
        }
        out + &format!("{s}{}s", frac(nanos, 1_000_000_000))
    }

    /// RFC 3339 for `at` with offset `offset_secs` east of UTC.
    fn rfc3339(at: SystemTime, offset_secs: i32) -> String {
        let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        let offset = chrono::FixedOffset::east_opt(offset_secs).unwrap();
        let local = chrono::DateTime::from_timestamp(since.as_secs() as i64, since.subsec_nanos())
            .unwrap()
            .with_timezone(&offset);
        let zone = if offset_secs == 0 {
            "Z".to_string()
        } else {
            let (sign, abs) = if offset_secs < 0 {
                ('-', -offset_secs)
            } else {
                ('+', offset_secs)
            };
            format!("{sign}{:02}:{:02}", abs / 3600, abs / 60 % 60)
        };
        format!("{}T{}{zone}", local.date_naive(), local.time())
    }

    #[test]
    fn go_duration_table() {
        let ms = Duration::from_millis;
        let cases: &[(&str, Option<Duration>)] = &[
            ("0", Some(Duration::ZERO)),
            ("0s", Some(Duration::ZERO)),
            ("+0", Some(Duration::ZERO)),
            ("1s", Some(ms(1000))),
            ("20ms", Some(ms(20))),
            ("7.66s", Some(ms(7660))),
            ("6m0s", Some(ms(360_000))),
            ("1h2m3.5s", Some(ms(3_723_500))),
            ("1.5h", Some(ms(5_400_000))),
            ("2h45m", Some(ms(9_900_000))),
            ("1m1m", Some(ms(120_000))),
            ("300ns", Some(Duration::from_nanos(300))),
            ("1.5us", Some(Duration::from_nanos(1500))),
            ("1.5\u{b5}s", Some(Duration::from_nanos(1500))),
            ("1.5\u{3bc}s", Some(Duration::from_nanos(1500))),
            ("1.s", Some(ms(1000))),
            (".5s", Some(ms(500))),
            ("+3s", Some(ms(3000))),
            ("0.0000000001s", Some(Duration::ZERO)),
            ("0.000000000001h", Some(Duration::from_nanos(3))),
            ("1.0000000000000000000000001s", Some(ms(1000))),
            ("24h", Some(MAX_RETRY_AFTER)),
            ("25h", Some(MAX_RETRY_AFTER)),
            ("18446744073709551615h", Some(MAX_RETRY_AFTER)),
            (
                "18446744073709551615h18446744073709551615h",
                Some(MAX_RETRY_AFTER),
            ),
            ("18446744073709551616s", None),
            ("", None),
            ("+", None),
            ("-1s", None),
            ("-0", None),
            ("1", None),
            ("90", None),
            ("00", None),
            ("s", None),
            (".s", None),
            ("1.2.3s", None),
            ("1S", None),
            ("1sec", None),
            ("1d", None),
            ("1s ", None),
            (" 1s", None),
            ("1 s", None),
            ("1s2", None),
            ("1e3s", None),
            ("inf", None),
            ("NaN", None),
            ("\u{b5}s", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_go_duration(text), *want, "{text:?}");
        }
    }

    #[test]
    fn go_format_matches_go() {
        // Outputs of Go's `time.Duration.String`.
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(1500), "1.5\u{b5}s"),
            (Duration::from_millis(20), "20ms"),
            (Duration::from_millis(7660), "7.66s"),
            (Duration::from_secs(360), "6m0s"),
            (Duration::from_millis(3_723_500), "1h2m3.5s"),
            (Duration::from_secs(3600), "1h0m0s"),
        ];
        for (d, want) in cases {
            assert_eq!(go_format(*d), *want);
        }
    }

    #[test]
    fn rfc3339_table() {
        let ms = Duration::from_millis;
        let cases: &[(&str, Option<Duration>)] = &[
            ("2024-04-11T18:33:12Z", Some(Duration::ZERO)),
            ("2024-04-11T18:33:42Z", Some(ms(30_000))),
            ("2024-04-11T18:33:13.25Z", Some(ms(1250))),
            (
                "2024-04-11T18:33:13.123456789Z",
                Some(Duration::new(1, 123_456_789)),
            ),
            ("2024-04-11T18:34:12+00:00", Some(ms(60_000))),
            ("2024-04-11T18:34:12-00:00", Some(ms(60_000))),
            ("2024-04-11T20:34:12+02:00", Some(ms(60_000))),
            ("2024-04-11T11:34:12.5-07:00", Some(ms(60_500))),
            ("2024-04-11t18:33:14z", Some(ms(2000))),
            ("2024-04-11 18:33:14Z", Some(ms(2000))),
            ("2024-04-11T23:59:60Z", Some(ms(19_608_000))),
            ("2024-04-11T18:33:11Z", Some(Duration::ZERO)),
            ("1969-12-31T23:59:59Z", Some(Duration::ZERO)),
            ("0000-01-01T00:00:00Z", Some(Duration::ZERO)),
            ("2024-04-12T18:33:12Z", Some(MAX_RETRY_AFTER)),
            ("9999-12-31T23:59:59Z", Some(MAX_RETRY_AFTER)),
            ("2024-04-11T18:33:14", None),
            ("2024-04-11", None),
            ("2024-02-30T00:00:00Z", None),
            ("2024-04-11T24:00:00Z", None),
            ("2024-04-11T18:33:14+24:00", None),
            ("10000-01-01T00:00:00Z", None),
            ("Thu, 11 Apr 2024 18:33:14 GMT", None),
            ("1712860394", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_rfc3339_at(text, now()), *want, "{text:?}");
        }
    }

    #[test]
    fn exhausted_pairs_give_the_longest_reset() {
        let at = |secs: u64| rfc3339(now() + Duration::from_secs(secs), 0);
        type Case = (Vec<(&'static str, String)>, Option<Duration>);
        let cases: Vec<Case> = vec![
            (vec![], None),
            (
                vec![
                    ("x-ratelimit-remaining-requests", "0".into()),
                    ("x-ratelimit-reset-requests", "1s".into()),
                ],
                Some(Duration::from_secs(1)),
            ),
            // Something left.
            (
                vec![
                    ("x-ratelimit-remaining-requests", "1".into()),
                    ("x-ratelimit-reset-requests", "1s".into()),
                ],
                None,
            ),
            // Azure: a remaining without a reset.
            (vec![("x-ratelimit-remaining-requests", "0".into())], None),
            // A reset without a remaining.
            (vec![("x-ratelimit-reset-requests", "1s".into())], None),
            // A zero reset is no back-off.
            (
                vec![
                    ("x-ratelimit-remaining-requests", "0".into()),
                    ("x-ratelimit-reset-requests", "0s".into()),
                ],
                None,
            ),
            // Only the exhausted pair counts, not the longer reset of the other.
            (
                vec![
                    ("x-ratelimit-remaining-requests", "0".into()),
                    ("x-ratelimit-reset-requests", "2s".into()),
                    ("x-ratelimit-remaining-tokens", "9000".into()),
                    ("x-ratelimit-reset-tokens", "6m0s".into()),
                ],
                Some(Duration::from_secs(2)),
            ),
            (
                vec![
                    ("x-ratelimit-remaining-requests", "0".into()),
                    ("x-ratelimit-reset-requests", "2s".into()),
                    ("x-ratelimit-remaining-tokens", "0".into()),
                    ("x-ratelimit-reset-tokens", "6m0s".into()),
                ],
                Some(Duration::from_secs(360)),
            ),
            // A malformed pair is skipped; the good one still counts.
            (
                vec![
                    ("x-ratelimit-remaining-requests", "0".into()),
                    ("x-ratelimit-reset-requests", "soon".into()),
                    ("x-ratelimit-remaining-tokens", " 00 ".into()),
                    ("x-ratelimit-reset-tokens", " 20ms ".into()),
                ],
                Some(Duration::from_millis(20)),
            ),
            (
                vec![
                    ("x-ratelimit-remaining-requests", "none".into()),
                    ("x-ratelimit-reset-requests", "1s".into()),
                    ("x-ratelimit-remaining-tokens", "-0".into()),
                    ("x-ratelimit-reset-tokens", "1s".into()),
                ],
                None,
            ),
            // Anthropic.
            (
                vec![
                    ("anthropic-ratelimit-requests-remaining", "0".into()),
                    ("anthropic-ratelimit-requests-reset", at(2)),
                ],
                Some(Duration::from_secs(2)),
            ),
            (
                vec![
                    ("anthropic-ratelimit-requests-remaining", "0".into()),
                    ("anthropic-ratelimit-requests-reset", at(0)),
                ],
                None,
            ),
            (
                vec![
                    ("anthropic-ratelimit-requests-remaining", "3".into()),
                    ("anthropic-ratelimit-requests-reset", at(5)),
                    ("anthropic-ratelimit-tokens-remaining", "0".into()),
                    ("anthropic-ratelimit-tokens-reset", at(7)),
                    ("anthropic-ratelimit-input-tokens-remaining", "0".into()),
                    ("anthropic-ratelimit-input-tokens-reset", at(9)),
                    ("anthropic-ratelimit-output-tokens-remaining", "0".into()),
                    ("anthropic-ratelimit-output-tokens-reset", at(8)),
                ],
                Some(Duration::from_secs(9)),
            ),
            (
                vec![
                    ("anthropic-ratelimit-output-tokens-remaining", "0".into()),
                    ("anthropic-ratelimit-output-tokens-reset", at(4)),
                ],
                Some(Duration::from_secs(4)),
            ),
            // Formats do not cross: a Go duration is not an Anthropic reset, nor the reverse.
            (
                vec![
                    ("anthropic-ratelimit-requests-remaining", "0".into()),
                    ("anthropic-ratelimit-requests-reset", "1s".into()),
                    ("x-ratelimit-remaining-requests", "0".into()),
                    ("x-ratelimit-reset-requests", at(3)),
                ],
                None,
            ),
            // Providers mixed behind one gateway: the longest still wins.
            (
                vec![
                    ("anthropic-ratelimit-requests-remaining", "0".into()),
                    ("anthropic-ratelimit-requests-reset", at(3)),
                    ("x-ratelimit-remaining-requests", "0".into()),
                    ("x-ratelimit-reset-requests", "1s".into()),
                ],
                Some(Duration::from_secs(3)),
            ),
            (
                vec![
                    ("x-ratelimit-remaining-requests", "0".into()),
                    ("x-ratelimit-reset-requests", "48h".into()),
                ],
                Some(MAX_RETRY_AFTER),
            ),
        ];
        for (pairs, want) in cases {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert_eq!(parse_at(&headers(&pairs), now()), want, "{pairs:?}");
        }
    }

    #[test]
    fn only_the_first_value_is_read() {
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "5"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1s"),
        ]);
        assert_eq!(parse_at(&h, now()), None);
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-requests", "1h"),
        ]);
        assert_eq!(parse_at(&h, now()), Some(Duration::from_secs(1)));
        // Appended out of order: still the first value of each name.
        let h = headers(&[
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "2s"),
            ("x-ratelimit-remaining-tokens", "9"),
            ("x-ratelimit-reset-tokens", "1h"),
        ]);
        assert_eq!(parse_at(&h, now()), Some(Duration::from_secs(2)));
    }

    #[test]
    fn the_clock_is_read_only_for_an_exhausted_timestamp() {
        let never = || -> SystemTime { panic!("read the clock") };
        let h = headers(&[
            ("content-type", "application/json"),
            ("anthropic-ratelimit-requests-remaining", "3"),
            ("anthropic-ratelimit-requests-reset", "2024-04-11T18:33:14Z"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1s"),
        ]);
        assert_eq!(parse_with(&h, never), Some(Duration::from_secs(1)));
        assert_eq!(parse_with(&HeaderMap::new(), never), None);
    }

    #[test]
    fn non_utf8_reset_is_ignored() {
        let mut h = headers(&[("x-ratelimit-remaining-requests", "0")]);
        h.insert(
            "x-ratelimit-reset-requests",
            HeaderValue::from_bytes(b"1\xffs").unwrap(),
        );
        assert_eq!(parse_at(&h, now()), None);
    }

    fn names() -> Vec<HeaderName> {
        PAIRS
            .iter()
            .flat_map(|(remaining, reset, _)| [remaining, reset])
            .map(|name| HeaderName::from_static(name))
            .chain([http::header::RETRY_AFTER])
            .collect()
    }

    proptest! {
        #[test]
        fn go_parser_never_panics_on_any_string(s in any::<String>()) {
            if let Some(d) = parse_go_duration(&s) {
                prop_assert!(d <= MAX_RETRY_AFTER);
            }
        }

        #[test]
        fn go_parser_never_panics_on_go_like_strings(
            s in "[-+]?(([0-9]{0,22}(\\.[0-9]{0,22})?)(ns|us|\u{b5}s|\u{3bc}s|ms|s|m|h|d|)){0,5}",
        ) {
            if let Some(d) = parse_go_duration(&s) {
                prop_assert!(d <= MAX_RETRY_AFTER);
            }
        }

        #[test]
        fn go_durations_round_trip(nanos in 0u64..=MAX_RETRY_AFTER.as_nanos() as u64) {
            let d = Duration::from_nanos(nanos);
            let text = go_format(d);
            prop_assert_eq!(parse_go_duration(&text), Some(d), "{}", text);
        }

        #[test]
        fn go_components_add_up(
            parts in proptest::collection::vec((0u64..100_000, 0u32..1000, 0usize..6), 1..6),
        ) {
            const UNITS: [(&str, u64); 6] = [
                ("ns", 1),
                ("us", 1_000),
                ("ms", 1_000_000),
                ("s", 1_000_000_000),
                ("m", 60_000_000_000),
                ("h", 3_600_000_000_000),
            ];
            let mut text = String::new();
            let mut want: u128 = 0;
            for (whole, millis, unit) in parts {
                let (name, scale) = UNITS[unit];
                text += &format!("{whole}.{millis:03}{name}");
                want += u128::from(whole) * u128::from(scale)
                    + u128::from(millis) * u128::from(scale) / 1000;
            }
            let want = Duration::from_nanos(want.min(MAX_RETRY_AFTER.as_nanos()) as u64);
            prop_assert_eq!(parse_go_duration(&text), Some(want), "{}", text);
        }

        #[test]
        fn rfc3339_never_panics(s in any::<String>()) {
            if let Some(d) = parse_rfc3339_at(&s, now()) {
                prop_assert!(d <= MAX_RETRY_AFTER);
            }
        }

        #[test]
        fn rfc3339_round_trips(
            offset in -200_000i64..200_000,
            nanos in 0u32..1_000_000_000,
            zone in -86_399i32..86_400,
        ) {
            let base = if offset >= 0 {
                now() + Duration::from_secs(offset as u64)
            } else {
                now() - Duration::from_secs(offset.unsigned_abs())
            };
            let at = base + Duration::from_nanos(u64::from(nanos));
            // RFC 3339 offsets are whole minutes.
            let text = rfc3339(at, zone / 60 * 60);
            let want = at.duration_since(now()).unwrap_or(Duration::ZERO).min(MAX_RETRY_AFTER);
            prop_assert_eq!(parse_rfc3339_at(&text, now()), Some(want), "{}", text);
        }

        #[test]
        fn any_header_map_stays_in_bounds(
            values in proptest::collection::vec((0usize..13, "[ -~]{0,40}"), 0..12),
        ) {
            let names = names();
            let mut headers = HeaderMap::new();
            for (i, text) in values {
                if let Ok(v) = HeaderValue::from_str(&text) {
                    headers.append(names[i].clone(), v);
                }
            }
            if let Some(d) = parse_at(&headers, now()) {
                prop_assert!(d <= MAX_RETRY_AFTER && !d.is_zero());
            }
        }

        #[test]
        fn any_bytes_in_the_headers_never_panic(
            remaining in proptest::collection::vec(any::<u8>(), 0..24),
            reset in proptest::collection::vec(any::<u8>(), 0..48),
            pair in 0usize..6,
        ) {
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&remaining) {
                headers.insert(PAIRS[pair].0, v);
            }
            if let Ok(v) = HeaderValue::from_bytes(&reset) {
                headers.insert(PAIRS[pair].1, v);
            }
            if let Some(d) = parse_at(&headers, now()) {
                prop_assert!(d <= MAX_RETRY_AFTER && !d.is_zero());
            }
        }
    }
}

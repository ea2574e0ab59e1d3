//! Parsing the back-off hints servers send: `Retry-After`, `retry-after-ms`,
//! `x-ms-retry-after-ms` and gRPC's `grpc-retry-pushback-ms`.
//!
//! Every parser here is total: garbage, negative, `NaN`/`inf`-like, or unrepresentable values
//! give `None`, never a panic, and every `Some` is at most [`MAX_RETRY_AFTER`] (larger values
//! are clamped to it). The breaker clamps the hint again, to its own
//! [`retry_after_bounds`](crate::circuit_breaker::Builder::retry_after_bounds).
//!
//! ```
//! use std::time::Duration;
//! use http::{HeaderMap, HeaderValue};
//! use tower_breaker::http::retry_after;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("retry-after", HeaderValue::from_static("2.5"));
//! assert_eq!(retry_after::parse(&headers), Some(Duration::from_millis(2500)));
//!
//! // The millisecond headers are more precise, so they win.
//! headers.insert("retry-after-ms", HeaderValue::from_static("1200"));
//! assert_eq!(retry_after::parse(&headers), Some(Duration::from_millis(1200)));
//!
//! headers.clear();
//! headers.insert("retry-after", HeaderValue::from_static("-3"));
//! assert_eq!(retry_after::parse(&headers), None);
//! ```

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The largest hint any parser here returns: one day. Larger values are clamped to it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// `retry-after-ms`: milliseconds (Azure OpenAI, several LLM APIs).
pub const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

/// `x-ms-retry-after-ms`: milliseconds (Azure services).
pub const X_MS_RETRY_AFTER_MS: HeaderName = HeaderName::from_static("x-ms-retry-after-ms");

/// `grpc-retry-pushback-ms`: gRPC's server pushback, in milliseconds (usually in trailers).
pub const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// Reads the back-off hint from `headers` (response headers or trailers), relative to
/// [`SystemTime::now`] for HTTP-dates.
///
/// The first header that parses wins, in this order: `retry-after-ms`, `x-ms-retry-after-ms`,
/// `Retry-After`, `grpc-retry-pushback-ms`. Only the first value of each header is read.
pub fn parse(headers: &HeaderMap) -> Option<Duration> {
    parse_at(headers, SystemTime::now())
}

/// [`parse`], with `now` as the reference for HTTP-dates (for tests and replay).
pub fn parse_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    headers
        .get(RETRY_AFTER_MS)
        .and_then(parse_millis)
        .or_else(|| headers.get(X_MS_RETRY_AFTER_MS).and_then(parse_millis))
        .or_else(|| {
            headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| parse_retry_after_at(v, now))
        })
        .or_else(|| headers.get(GRPC_RETRY_PUSHBACK_MS).and_then(parse_millis))
}

/// Parses one `Retry-After` value: delta-seconds (`"120"`), fractional seconds (`"1.5"`, a
/// common extension), or an HTTP-date (`"Wed, 21 Oct 2015 07:28:00 GMT"`, relative to
/// [`SystemTime::now`]; a date in the past gives `Some(Duration::ZERO)`).
pub fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    parse_retry_after_at(value, SystemTime::now())
}

/// [`parse_retry_after`], with `now` as the reference for HTTP-dates.
pub fn parse_retry_after_at(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Some((whole, nanos)) = parse_decimal(text) {
        return Some(clamp(
            Duration::new(whole, 0).checked_add(Duration::from_nanos(nanos))?,
        ));
    }
    let date = httpdate::parse_http_date(text).ok()?;
    Some(clamp(date.duration_since(now).unwrap_or(Duration::ZERO)))
}

/// Parses a millisecond hint (`retry-after-ms`, `x-ms-retry-after-ms`,
/// `grpc-retry-pushback-ms`): a non-negative decimal number of milliseconds (`"250"`,
/// `"12.5"`). Negative values (gRPC's "do not retry") are not a back-off hint and give `None`.
pub fn parse_millis(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    let (whole, frac_nanos) = parse_decimal(text)?;
    let millis = Duration::from_millis(whole);
    Some(clamp(
        millis.checked_add(Duration::from_nanos(frac_nanos / 1_000))?,
    ))
}

/// Formats `d` as a `Retry-After` delta-seconds value, rounded up to whole seconds (so a
/// client that honours it never comes back early); `None` becomes nothing.
///
/// ```
/// use std::time::Duration;
/// use tower_breaker::http::retry_after::to_header_value;
///
/// assert_eq!(to_header_value(Duration::from_millis(1200)), "2");
/// assert_eq!(to_header_value(Duration::ZERO), "0");
/// ```
pub fn to_header_value(d: Duration) -> HeaderValue {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    HeaderValue::from(secs)
}

fn clamp(d: Duration) -> Duration {
    d.min(MAX_RETRY_AFTER)
}

/// Parses `DIGITS ["." DIGITS]` into (whole part, fraction in nanoseconds of one unit).
/// `None` on anything else (signs, exponents, `inf`, `NaN`, empty parts) or on overflow.
fn parse_decimal(text: &str) -> Option<(u64, u64)> {
    let (int, frac) = match text.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (text, None),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut whole: u64 = 0;
    for b in int.bytes() {
        whole = whole.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    let mut nanos: u64 = 0;
    if let Some(frac) = frac {
        if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut scale = 100_000_000;
        for b in frac.bytes().take(9) {
            nanos += u64::from(b - b'0') * scale;
            scale /= 10;
        }
    }
    Some((whole, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    const NOW: Duration = Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + NOW
    }

    #[test]
    fn retry_after_table() {
        let ms = Duration::from_millis;
        let cases: &[(&str, Option<Duration>)] = &[
            ("0", Some(Duration::ZERO)),
            ("2", Some(ms(2000))),
            (" 120 ", Some(ms(120_000))),
            ("1.5", Some(ms(1500))),
            ("0.001", Some(ms(1))),
            ("3.0000000019", Some(Duration::new(3, 1))),
            ("86400", Some(MAX_RETRY_AFTER)),
            ("86401", Some(MAX_RETRY_AFTER)),
            ("18446744073709551615", Some(MAX_RETRY_AFTER)),
            ("18446744073709551616", None),
            ("99999999999999999999999999", None),
            ("-1", None),
            ("+1", None),
            ("1e3", None),
            ("inf", None),
            ("NaN", None),
            ("1.", None),
            (".5", None),
            ("1.2.3", None),
            ("", None),
            ("soon", None),
            ("Wed, 21 Oct 2015 07:28:00 GMT", Some(Duration::ZERO)),
            ("Wed, 21 Oct 2015 07:28:30 GMT", Some(ms(30_000))),
            ("Wed, 21 Oct 2015 07:27:00 GMT", Some(Duration::ZERO)),
            ("Thu, 22 Oct 2015 07:28:01 GMT", Some(MAX_RETRY_AFTER)),
            ("Wednesday, 21-Oct-15 07:28:10 GMT", Some(ms(10_000))),
            ("Wed Oct 21 07:28:05 2015", Some(ms(5_000))),
            ("Wed, 32 Oct 2015 07:28:00 GMT", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_retry_after_at(&hv(text), now()), *want, "{text:?}");
        }
    }

    #[test]
    fn millis_table() {
        let ms = Duration::from_millis;
        let cases: &[(&str, Option<Duration>)] = &[
            ("0", Some(Duration::ZERO)),
            ("250", Some(ms(250))),
            ("12.5", Some(Duration::from_micros(12_500))),
            ("86400000", Some(MAX_RETRY_AFTER)),
            ("18446744073709551615", Some(MAX_RETRY_AFTER)),
            ("18446744073709551616", None),
            ("-1", None),
            ("abc", None),
            ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_millis(&hv(text)), *want, "{text:?}");
        }
    }

    #[test]
    fn non_utf8_value_is_ignored() {
        let v = HeaderValue::from_bytes(b"\xff1").unwrap();
        assert_eq!(parse_retry_after(&v), None);
        assert_eq!(parse_millis(&v), None);
    }

    #[test]
    fn header_precedence() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_at(&h, now()), None);
        h.insert(GRPC_RETRY_PUSHBACK_MS, hv("40"));
        assert_eq!(parse_at(&h, now()), Some(Duration::from_millis(40)));
        h.insert(http::header::RETRY_AFTER, hv("3"));
        assert_eq!(parse_at(&h, now()), Some(Duration::from_secs(3)));
        h.insert(X_MS_RETRY_AFTER_MS, hv("30"));
        assert_eq!(parse_at(&h, now()), Some(Duration::from_millis(30)));
        h.insert(RETRY_AFTER_MS, hv("20"));
        assert_eq!(parse_at(&h, now()), Some(Duration::from_millis(20)));
        // A garbage value falls through to the next header.
        h.insert(RETRY_AFTER_MS, hv("garbage"));
        assert_eq!(parse_at(&h, now()), Some(Duration::from_millis(30)));
    }

    #[test]
    fn header_value_round_trips() {
        for secs in [0u64, 1, 2, 59, 86_400] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse_retry_after(&to_header_value(d)), Some(d));
        }
        assert_eq!(to_header_value(Duration::from_millis(1)), "1");
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_in_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                for d in [parse_retry_after(&v), parse_millis(&v)].into_iter().flatten() {
                    prop_assert!(d <= MAX_RETRY_AFTER);
                }
            }
        }

        #[test]
        fn numeric_strings_never_panic(s in "[-+]?[0-9]{0,30}(\\.[0-9]{0,30})?([eE][-+]?[0-9]{1,4})?") {
            if let Ok(v) = HeaderValue::from_str(&s) {
                for d in [parse_retry_after(&v), parse_millis(&v)].into_iter().flatten() {
                    prop_assert!(d <= MAX_RETRY_AFTER);
                }
            }
        }

        #[test]
        fn any_header_map_stays_in_bounds(
            values in proptest::collection::vec((0usize..5, "[ -~]{0,40}"), 0..6),
        ) {
            let names = [
                RETRY_AFTER_MS,
                X_MS_RETRY_AFTER_MS,
                http::header::RETRY_AFTER,
                GRPC_RETRY_PUSHBACK_MS,
                http::header::CONTENT_TYPE,
            ];
            let mut headers = HeaderMap::new();
            for (i, text) in values {
                if let Ok(v) = HeaderValue::from_str(&text) {
                    headers.append(names[i].clone(), v);
                }
            }
            if let Some(d) = parse(&headers) {
                prop_assert!(d <= MAX_RETRY_AFTER);
            }
        }

        #[test]
        fn whole_seconds_parse_exactly(secs in 0u64..=86_400) {
            prop_assert_eq!(parse_retry_after(&HeaderValue::from(secs)), Some(Duration::from_secs(secs)));
        }

        #[test]
        fn dates_are_relative_and_clamped(offset in -200_000i64..200_000) {
            let date = if offset >= 0 {
                now() + Duration::from_secs(offset as u64)
            } else {
                now() - Duration::from_secs(offset.unsigned_abs())
            };
            let v = HeaderValue::from_str(&httpdate::fmt_http_date(date)).unwrap();
            let want = Duration::from_secs(offset.max(0) as u64).min(MAX_RETRY_AFTER);
            prop_assert_eq!(parse_retry_after_at(&v, now()), Some(want));
        }

        #[test]
        fn floats_match_their_value(secs in 0.0f64..86_400.0) {
            let text = format!("{secs:.3}");
            let d = parse_retry_after(&HeaderValue::from_str(&text).unwrap()).unwrap();
            prop_assert!((d.as_secs_f64() - text.parse::<f64>().unwrap()).abs() < 1e-6);
        }
    }
}

//! `google.rpc.RetryInfo` in `grpc-status-details-bin` as a back-off hint.
//!
//! The header holds a base64 `google.rpc.Status` whose `details` may include a
//! `google.rpc.RetryInfo { retry_delay }`. tonic-types decodes the protobuf; the base64 is
//! decoded here because `tonic::Status::from_header_map` panics on a value that is not valid
//! base64, and a classifier must not panic on what a server sends.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use tonic_types::StatusExt;

use super::GRPC_STATUS_DETAILS;
use crate::http::retry_after;

/// The back-off hint in a gRPC call's trailers (or trailers-only headers): the one
/// [`GrpcClassifier`](super::GrpcClassifier) turns into
/// [`Throttled`](crate::circuit_breaker::Outcome::Throttled).
///
/// The first of these that gives a hint wins:
///
/// 1. a header [`retry_after::parse`] reads: `grpc-retry-pushback-ms` (gRPC's own pushback), or
///    `retry-after-ms`, `x-ms-retry-after-ms`, `Retry-After` (which some proxies add);
/// 2. the `retry_delay` of a `google.rpc.RetryInfo` in `grpc-status-details-bin`.
///
/// So when a server sends both, `grpc-retry-pushback-ms` wins: it is the field gRPC clients
/// themselves obey for this call, in milliseconds, while `RetryInfo` is an application-level
/// detail. It also means the details are only decoded when no header hint is there. A
/// pushback that gives no hint (negative, meaning "do not retry", or garbage) does not hide a
/// `RetryInfo`.
///
/// A malformed `grpc-status-details-bin` (not base64, not a `google.rpc.Status`, no
/// `RetryInfo`, or a `RetryInfo` without `retry_delay`) gives no hint. A negative `retry_delay`
/// reads as zero (tonic-types' conversion); like every hint here it is at most
/// [`retry_after::MAX_RETRY_AFTER`], and the breaker clamps it again to its
/// [`retry_after_bounds`](crate::circuit_breaker::Builder::retry_after_bounds).
///
/// ```
/// use std::time::Duration;
/// use tonic_types::{ErrorDetails, StatusExt};
/// use tower_breaker::grpc::metadata_retry_after;
///
/// let status = tonic::Status::with_error_details(
///     tonic::Code::Unavailable,
///     "slow down",
///     ErrorDetails::with_retry_info(Some(Duration::from_secs(7))),
/// );
/// let mut trailers = http::HeaderMap::new();
/// status.add_header(&mut trailers).unwrap();
/// assert_eq!(metadata_retry_after(&trailers), Some(Duration::from_secs(7)));
///
/// trailers.insert("grpc-retry-pushback-ms", http::HeaderValue::from_static("1500"));
/// assert_eq!(metadata_retry_after(&trailers), Some(Duration::from_millis(1500)));
/// ```
pub fn metadata_retry_after(metadata: &HeaderMap) -> Option<Duration> {
    retry_after::parse(metadata).or_else(|| header_retry_info(metadata))
}

/// The `RetryInfo` delay in `metadata`'s `grpc-status-details-bin`, if any.
fn header_retry_info(metadata: &HeaderMap) -> Option<Duration> {
    let details = decode_base64(metadata.get(GRPC_STATUS_DETAILS)?.as_bytes())?;
    // The code and message are not read: only the details bytes matter to tonic-types.
    let status = tonic::Status::with_details(tonic::Code::Unknown, "", Bytes::from(details));
    status_retry_info(&status)
}

/// The `RetryInfo` delay in `status`'s details (already decoded from base64 by tonic).
pub(super) fn status_retry_info(status: &tonic::Status) -> Option<Duration> {
    if status.details().is_empty() {
        return None;
    }
    let delay = status.get_details_retry_info()?.retry_delay?;
    Some(delay.min(retry_after::MAX_RETRY_AFTER))
}

/// Standard base64 (`+`, `/`), with or without `=` padding, as gRPC's binary headers are sent
/// (the spec requires accepting both). `None` for anything else. Bits left over in the last
/// symbol are ignored.
fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    let unpadded = match text {
        [rest @ .., b'=', b'='] | [rest @ .., b'='] => {
            if !text.len().is_multiple_of(4) {
                return None;
            }
            rest
        }
        _ => text,
    };
    // One symbol alone carries 6 bits: not even a byte.
    if unpadded.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(unpadded.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &c in unpadded {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use tonic_types::ErrorDetails;

    /// Trailers as a tonic server writes them for `status`.
    fn trailers(status: &tonic::Status) -> HeaderMap {
        let mut headers = HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        headers
    }

    fn with_retry_info(delay: Option<Duration>) -> tonic::Status {
        tonic::Status::with_error_details(
            tonic::Code::Unavailable,
            "slow down",
            ErrorDetails::with_retry_info(delay),
        )
    }

    #[test]
    fn base64_padded_unpadded_and_garbage() {
        for (text, bytes) in [
            ("", &b""[..]),
            ("QQ", b"A"),
            ("QQ==", b"A"),
            ("QUI", b"AB"),
            ("QUI=", b"AB"),
            ("QUJD", b"ABC"),
            ("+/+/", &[0xfb, 0xff, 0xbf]),
        ] {
            assert_eq!(
                decode_base64(text.as_bytes()).as_deref(),
                Some(bytes),
                "{text}"
            );
        }
        for text in [
            "Q",
            "QQ=",
            "Q===",
            "QUJDQ",
            "QQ==QQ==",
            "QU-_",
            "QU J",
            "QUI\0",
            "====",
            "=",
            "\u{e9}\u{e9}",
        ] {
            assert_eq!(decode_base64(text.as_bytes()), None, "{text:?}");
        }
    }

    #[test]
    fn retry_info_from_details_header() {
        let status = with_retry_info(Some(Duration::from_millis(7250)));
        let headers = trailers(&status);
        // tonic writes the details unpadded.
        let value = headers[GRPC_STATUS_DETAILS].to_str().unwrap().to_owned();
        assert!(!value.ends_with('='));
        assert_eq!(
            metadata_retry_after(&headers),
            Some(Duration::from_millis(7250))
        );
        // Padded, as other gRPC implementations may send it.
        let mut padded = headers.clone();
        let pad = "=".repeat((4 - value.len() % 4) % 4);
        padded.insert(
            GRPC_STATUS_DETAILS,
            HeaderValue::from_str(&format!("{value}{pad}")).unwrap(),
        );
        assert_eq!(
            metadata_retry_after(&padded),
            Some(Duration::from_millis(7250))
        );
        // What tonic's client reads back.
        let parsed = tonic::Status::from_header_map(&headers).unwrap();
        assert_eq!(
            status_retry_info(&parsed),
            Some(Duration::from_millis(7250))
        );
    }

    #[test]
    fn no_hint_without_a_retry_delay() {
        assert_eq!(metadata_retry_after(&HeaderMap::new()), None);
        assert_eq!(
            metadata_retry_after(&trailers(&with_retry_info(None))),
            None
        );
        let other = tonic::Status::with_error_details(
            tonic::Code::Unavailable,
            "x",
            ErrorDetails::with_error_info(
                "REASON",
                "example.com",
                std::collections::HashMap::new(),
            ),
        );
        assert_eq!(metadata_retry_after(&trailers(&other)), None);
        assert_eq!(
            metadata_retry_after(&trailers(&tonic::Status::unavailable("x"))),
            None
        );
    }

    #[test]
    fn huge_delays_are_clamped() {
        let status = with_retry_info(Some(Duration::from_secs(10 * 365 * 24 * 3600)));
        assert_eq!(
            metadata_retry_after(&trailers(&status)),
            Some(retry_after::MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn malformed_details_are_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("14"));
        let garbage: [&[u8]; 10] = [
            b"not base64!",
            b"%%%%",
            b"Q",
            b"QQ=",
            b"////",         // base64 of 0xff 0xff 0xff: not a protobuf message
            b"CAE",          // a google.rpc.Status { code: 1 } without details
            b"KgA",          // field 5, wire type 2, length 0: an unknown field
            b"GgQKAm",       // details: an Any of 4 bytes with only 2 there (truncated)
            b"GgQKAmFi",     // details: an Any of another type (`ab`)
            b"\xff\xfe\x80", // not even text
        ];
        for value in garbage {
            headers.insert(GRPC_STATUS_DETAILS, HeaderValue::from_bytes(value).unwrap());
            assert_eq!(metadata_retry_after(&headers), None, "{value:?}");
        }
        // A pseudo-RetryInfo whose Any value is not a RetryInfo message.
        let bogus = tonic::Status::with_details(
            tonic::Code::Unavailable,
            "x",
            Bytes::from_static(
                b"\x1a\x2d\x0a\x28type.googleapis.com/google.rpc.RetryInfo\x12\x01\xff",
            ),
        );
        assert_eq!(metadata_retry_after(&trailers(&bogus)), None);
        assert_eq!(status_retry_info(&bogus), None);
    }

    #[test]
    fn pushback_wins_over_retry_info() {
        let mut headers = trailers(&with_retry_info(Some(Duration::from_secs(7))));
        headers.insert(
            retry_after::GRPC_RETRY_PUSHBACK_MS,
            HeaderValue::from_static("1500"),
        );
        assert_eq!(
            metadata_retry_after(&headers),
            Some(Duration::from_millis(1500))
        );
        // A pushback that gives no hint leaves the RetryInfo in force.
        for no_hint in ["-1", "soon"] {
            headers.insert(
                retry_after::GRPC_RETRY_PUSHBACK_MS,
                HeaderValue::from_static(no_hint),
            );
            assert_eq!(
                metadata_retry_after(&headers),
                Some(Duration::from_secs(7)),
                "{no_hint}"
            );
        }
    }
}

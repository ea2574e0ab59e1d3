//! Reading a streamed body's events as its frames go by, to find the one that decides the call.
//!
//! The scanner sees each data frame once, finds line ends with `memchr`, and looks only at the
//! start of each line. It keeps bytes only for a line split across frames (capped) and for the
//! data of an event that may need reading whole (an error, or any event when a custom
//! classifier is set; capped too), so memory stays bounded whatever the body's length.

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap};

use super::events::{Event, EventFormat, Rules, StreamEvents};
use crate::circuit_breaker::Outcome;

/// Longest line prefix kept when a line is split across frames: enough for any field name
/// and the data that decisions read ([`Event::MAX_DATA`]).
const LINE_CAP: usize = Event::MAX_DATA + 64;

/// Longest SSE event type kept; a longer one matches no rule.
const NAME_CAP: usize = 64;

/// The event scanner of one response body.
pub(crate) struct Scanner {
    rules: Arc<Rules>,
    format: EventFormat,
    /// The response head's back-off hint, for an in-stream throttle.
    hint: Option<Duration>,
    /// A line split across frames: its first `LINE_CAP` bytes, and its whole length.
    carry: Vec<u8>,
    carry_len: usize,
    /// The last frame ended in `\r`: a `\n` starting the next one belongs to that line end.
    after_cr: bool,
    event: Draft,
}

/// The SSE event being read.
struct Draft {
    name: [u8; NAME_CAP],
    name_len: usize,
    name_too_long: bool,
    /// The event type is one of the error events (decided once, at its `event:` line).
    error_event: bool,
    data: Vec<u8>,
    data_truncated: bool,
    data_lines: u32,
    /// The event's only data line is a configured done marker.
    done_data: bool,
    /// Its first data line is a JSON object that starts with an `"error"` key.
    error_data: bool,
}

impl Draft {
    fn new() -> Self {
        Draft {
            name: [0; NAME_CAP],
            name_len: 0,
            name_too_long: false,
            error_event: false,
            data: Vec::new(),
            data_truncated: false,
            data_lines: 0,
            done_data: false,
            error_data: false,
        }
    }

    /// The event type, if it had one that fits.
    fn name(&self) -> &[u8] {
        &self.name[..self.name_len]
    }

    fn clear(&mut self) {
        self.name_len = 0;
        self.name_too_long = false;
        self.error_event = false;
        self.data.clear();
        self.data_truncated = false;
        self.data_lines = 0;
        self.done_data = false;
        self.error_data = false;
    }
}

impl Scanner {
    /// A scanner for a response with these headers, if its content type is one `events` reads.
    pub(crate) fn for_response(events: &StreamEvents, headers: &HeaderMap) -> Option<Scanner> {
        let rules = &events.rules;
        if !rules.sse && rules.ndjson_done.is_none() && rules.custom.is_none() {
            return None;
        }
        let format = format_of(headers.get(header::CONTENT_TYPE)?.as_bytes())?;
        let wanted = match format {
            EventFormat::Sse => rules.sse || rules.custom.is_some(),
            EventFormat::Ndjson => rules.ndjson_done.is_some(),
        };
        wanted.then(|| Scanner {
            rules: Arc::clone(rules),
            format,
            hint: super::retry_after::parse(headers),
            carry: Vec::new(),
            carry_len: 0,
            after_cr: false,
            event: Draft::new(),
        })
    }

    /// Reads the next chunk of the body; returns the outcome once an event decides the call.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) -> Option<Outcome> {
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        // An event's closing blank line starts the chunk right after the line before it: no
        // search needed to find it.
        let line_end = |chunk: &[u8]| match chunk.first() {
            Some(b'\n' | b'\r') => Some(0),
            _ => memchr::memchr2(b'\n', b'\r', chunk),
        };
        while let Some(end) = line_end(chunk) {
            let outcome = if self.carry_len > 0 {
                self.push_carry(&chunk[..end]);
                let line = std::mem::take(&mut self.carry);
                let truncated = self.carry_len > line.len();
                let outcome = self.line(&line, truncated);
                self.carry = line;
                self.carry.clear();
                self.carry_len = 0;
                outcome
            } else {
                self.line(&chunk[..end], false)
            };
            let mut next = end + 1;
            if chunk[end] == b'\r' {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            chunk = &chunk[next..];
            if outcome.is_some() {
                return outcome;
            }
        }
        self.push_carry(chunk);
        None
    }

    fn push_carry(&mut self, part: &[u8]) {
        let room = LINE_CAP.saturating_sub(self.carry.len());
        self.carry.extend_from_slice(&part[..part.len().min(room)]);
        self.carry_len += part.len();
    }

    fn line(&mut self, line: &[u8], truncated: bool) -> Option<Outcome> {
        match self.format {
            EventFormat::Sse => self.sse_line(line, truncated),
            EventFormat::Ndjson => self.ndjson_line(line, truncated),
        }
    }

    fn sse_line(&mut self, line: &[u8], truncated: bool) -> Option<Outcome> {
        if line.is_empty() {
            return self.dispatch();
        }
        // Nearly every line of a stream is data: skip the general field split for it.
        if let Some(value) = line.strip_prefix(b"data:") {
            self.data_line(value.strip_prefix(b" ").unwrap_or(value), truncated);
            return None;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(0) => return None, // a comment
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                let event = &mut self.event;
                event.name_too_long = truncated || value.len() > NAME_CAP;
                event.name_len = if event.name_too_long { 0 } else { value.len() };
                event.name[..event.name_len].copy_from_slice(&value[..event.name_len]);
                event.error_event = event.name_len > 0
                    && self.rules.error_events.iter().any(|e| **e == *event.name());
            }
            b"data" => self.data_line(value, truncated),
            _ => {}
        }
        None
    }

    fn data_line(&mut self, value: &[u8], truncated: bool) {
        let rules = &*self.rules;
        let event = &mut self.event;
        event.data_lines += 1;
        if event.data_lines == 1 {
            event.done_data = !truncated && rules.done_data.iter().any(|d| **d == *value);
            event.error_data = starts_with_error_key(value);
        } else {
            event.done_data = false;
        }
        let keep = rules.custom.is_some() || event.error_data || event.error_event;
        if !keep {
            return;
        }
        if event.data_lines > 1 {
            event.data.push(b'\n');
        }
        let room = Event::MAX_DATA.saturating_sub(event.data.len());
        event.data_truncated |= truncated || value.len() > room;
        event
            .data
            .extend_from_slice(&value[..value.len().min(room)]);
    }

    fn dispatch(&mut self) -> Option<Outcome> {
        let event = &self.event;
        if event.data_lines == 0 && event.name_len == 0 && !event.name_too_long {
            return None;
        }
        let rules = &*self.rules;
        let named =
            |list: &[Box<[u8]>]| event.name_len > 0 && list.iter().any(|n| **n == *event.name());
        let custom = rules.custom.as_ref().and_then(|f| {
            f(&Event {
                format: EventFormat::Sse,
                name: event.name(),
                data: &event.data,
                truncated: event.data_truncated,
            })
        });
        let outcome = custom.or_else(|| {
            if event.done_data || named(&rules.success_events) {
                Some(Outcome::Success)
            } else if named(&rules.error_events) || event.error_data {
                Some(self.error_outcome(&event.data))
            } else {
                None
            }
        });
        self.event.clear();
        outcome
    }

    fn ndjson_line(&mut self, line: &[u8], truncated: bool) -> Option<Outcome> {
        let line = line.trim_ascii();
        if line.is_empty() {
            return None;
        }
        let rules = &*self.rules;
        if let Some(f) = &rules.custom {
            let shown = &line[..line.len().min(Event::MAX_DATA)];
            let event = Event {
                format: EventFormat::Ndjson,
                name: b"",
                data: shown,
                truncated: truncated || shown.len() < line.len(),
            };
            if let Some(outcome) = f(&event) {
                return Some(outcome);
            }
        }
        if starts_with_error_key(line) {
            return Some(self.error_outcome(line));
        }
        let done = rules.ndjson_done.as_ref()?;
        // Cheap test first (every line of an Ollama stream has `"done":false`), then parse.
        (!truncated && mentions_true_field(line, &done.quoted) && top_level_true(line, &done.field))
            .then_some(Outcome::Success)
    }

    /// An in-stream error: a throttle if its type says "back off", otherwise a failure.
    fn error_outcome(&self, data: &[u8]) -> Outcome {
        let throttled = error_type(data).is_some_and(|t| {
            self.rules
                .throttle_types
                .iter()
                .any(|throttle| **throttle == *t)
        });
        if throttled {
            Outcome::Throttled {
                retry_after: self.hint,
            }
        } else {
            Outcome::Failure
        }
    }
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// The event format a `content-type` value names, if any.
fn format_of(content_type: &[u8]) -> Option<EventFormat> {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let is = |name: &str| essence.eq_ignore_ascii_case(name.as_bytes());
    if is("text/event-stream") {
        Some(EventFormat::Sse)
    } else if is("application/x-ndjson")
        || is("application/ndjson")
        || is("application/jsonl")
        || is("application/x-jsonlines")
    {
        Some(EventFormat::Ndjson)
    } else {
        None
    }
}

/// Whether `data` is a JSON object whose first key is `"error"`.
fn starts_with_error_key(data: &[u8]) -> bool {
    data.trim_ascii_start()
        .strip_prefix(b"{")
        .is_some_and(|rest| rest.trim_ascii_start().starts_with(b"\"error\""))
}

/// The error type of an error event's JSON data: `error.type`, else `error.code` (a string).
fn error_type(data: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(data).ok()?;
    let error = value.get("error")?;
    ["type", "code"]
        .iter()
        .find_map(|key| error.get(key)?.as_str().map(str::to_owned))
}

/// Whether `line` has `"field"` followed by `:` and `true` somewhere (a pre-filter).
fn mentions_true_field(line: &[u8], quoted: &[u8]) -> bool {
    memchr::memmem::find_iter(line, quoted).any(|at| {
        let after = line[at + quoted.len()..].trim_ascii_start();
        after
            .strip_prefix(b":")
            .is_some_and(|v| v.trim_ascii_start().starts_with(b"true"))
    })
}

fn top_level_true(line: &[u8], field: &str) -> bool {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get(field)?.as_bool())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn scanner(events: StreamEvents, content_type: &'static str) -> Scanner {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        Scanner::for_response(&events, &headers).expect("a scanned content type")
    }

    fn sse() -> Scanner {
        scanner(StreamEvents::new(), "text/event-stream")
    }

    /// Feeds `body` split at every position in `cuts`; returns the outcome and the index of
    /// the chunk that decided.
    fn feed_split(mut s: Scanner, body: &[u8], cuts: &[usize]) -> Option<(Outcome, usize)> {
        let mut start = 0;
        for (i, &cut) in cuts.iter().chain([&body.len()]).enumerate() {
            if let Some(o) = s.feed(&body[start..cut]) {
                return Some((o, i));
            }
            start = cut;
        }
        None
    }

    const OPENAI: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n\
        data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n\
        data: [DONE]\n\n";

    #[test]
    fn done_decides_at_the_blank_line_after_it() {
        let at = OPENAI.len() - 1;
        assert_eq!(
            feed_split(sse(), OPENAI, &[at]),
            Some((Outcome::Success, 1))
        );
        assert_eq!(feed_split(sse(), &OPENAI[..at], &[]), None);
    }

    #[test]
    fn every_split_of_every_stream_gives_the_same_outcome() {
        let anthropic: &[u8] = b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n\
            event: content_block_delta\r\ndata: {\"delta\":{\"text\":\"hi\"}}\r\n\r\n\
            event: message_stop\rdata: {\"type\":\"message_stop\"}\r\r";
        let overloaded: &[u8] = b"event: message_start\ndata: {}\n\n\
            event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";
        let api_error: &[u8] =
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\"}}\n\n";
        let openai_error: &[u8] =
            b"data: {\"x\":1}\n\ndata: {\"error\": {\"message\": \"boom\", \"code\": \"server_error\"}}\n\n";
        let throttled = Outcome::Throttled { retry_after: None };
        let cases: [(&[u8], Outcome); 5] = [
            (OPENAI, Outcome::Success),
            (anthropic, Outcome::Success),
            (overloaded, throttled),
            (api_error, Outcome::Failure),
            (openai_error, Outcome::Failure),
        ];
        for (body, expected) in cases {
            for a in 0..=body.len() {
                for b in [a, (a + 7).min(body.len()), body.len()] {
                    let got = feed_split(sse(), body, &[a, b]).map(|(o, _)| o);
                    assert_eq!(
                        got,
                        Some(expected),
                        "cut at {a},{b}: {:?}",
                        String::from_utf8_lossy(body)
                    );
                }
            }
            // One byte at a time.
            let cuts: Vec<usize> = (1..body.len()).collect();
            assert_eq!(
                feed_split(sse(), body, &cuts).map(|(o, _)| o),
                Some(expected)
            );
        }
    }

    #[test]
    fn an_unfinished_terminal_event_decides_nothing() {
        for body in [
            &b"data: [DONE]"[..],
            b"data: [DONE]\n",
            b"event: message_stop\ndata: {}\n",
        ] {
            assert_eq!(feed_split(sse(), body, &[]), None, "{body:?}");
        }
    }

    #[test]
    fn lookalikes_decide_nothing() {
        let bodies: [&[u8]; 7] = [
            b"data: [DONE] \n\n",             // not exactly the marker
            b"data: [DONE]\ndata: more\n\n",  // a two-line event
            b": data: [DONE]\n\n",            // a comment
            b"data:{\"text\":\"error\"}\n\n", // "error" not as the first key
            b"event: message_stopped\ndata: x\n\n",
            b"event: errors\ndata: {}\n\n",
            b"id: 1\nretry: 10\n\n",
        ];
        for body in bodies {
            assert_eq!(
                feed_split(sse(), body, &[]),
                None,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        // Without the space after the colon the value is the same.
        assert_eq!(
            feed_split(sse(), b"data:[DONE]\n\n", &[]),
            Some((Outcome::Success, 0))
        );
    }

    #[test]
    fn a_throttle_carries_the_heads_hint() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        headers.insert("retry-after", HeaderValue::from_static("3"));
        let mut s = Scanner::for_response(&StreamEvents::new(), &headers).unwrap();
        let body = b"event: error\ndata: {\"error\":{\"type\":\"rate_limit_error\"}}\n\n";
        assert_eq!(
            s.feed(body),
            Some(Outcome::Throttled {
                retry_after: Some(Duration::from_secs(3))
            })
        );
    }

    #[test]
    fn throttle_types_and_error_events_are_configurable() {
        let events = StreamEvents::new()
            .throttle_types(["slow_down"])
            .error_event("failed");
        let mut s = scanner(events.clone(), "text/event-stream");
        let body = b"event: failed\ndata: {\"error\":{\"code\":\"slow_down\"}}\n\n";
        assert_eq!(s.feed(body), Some(Outcome::Throttled { retry_after: None }));
        let mut s = scanner(events, "text/event-stream");
        let body = b"event: error\ndata: {\"error\":{\"type\":\"overloaded_error\"}}\n\n";
        assert_eq!(s.feed(body), Some(Outcome::Failure));
    }

    #[test]
    fn an_oversized_error_is_a_failure_and_memory_stays_bounded() {
        let mut s = sse();
        let huge = vec![b'x'; 3 * LINE_CAP];
        assert_eq!(
            s.feed(b"event: error\ndata: {\"error\":{\"type\":\"rate_limit_error\",\"pad\":\""),
            None
        );
        for chunk in huge.chunks(1000) {
            assert_eq!(s.feed(chunk), None);
        }
        assert!(s.carry.len() <= LINE_CAP);
        assert_eq!(s.feed(b"\"}}\n\n"), Some(Outcome::Failure));
    }

    #[test]
    fn long_ordinary_lines_are_not_kept() {
        let mut s = sse();
        let mut line = b"data: {\"choices\":\"".to_vec();
        line.extend(std::iter::repeat_n(b'a', 10_000));
        for chunk in line.chunks(100) {
            assert_eq!(s.feed(chunk), None);
        }
        assert_eq!(s.feed(b"\"}\n\n"), None);
        assert!(s.event.data.is_empty(), "ordinary data is not buffered");
        assert_eq!(s.feed(b"data: [DONE]\n\n"), Some(Outcome::Success));
    }

    #[test]
    fn custom_classifier_sees_whole_events_first() {
        let events = StreamEvents::new().classify_event(|e| {
            assert_eq!(e.format(), EventFormat::Sse);
            match (e.name(), e.data_str()) {
                ("message", Some("a\nb")) => Some(Outcome::Ignored),
                ("ping", _) => None,
                _ => Some(Outcome::Failure),
            }
        });
        let mut s = scanner(events.clone(), "text/event-stream");
        assert_eq!(s.feed(b"event: ping\ndata: x\n\n"), None);
        assert_eq!(s.feed(b"data: a\nda"), None);
        assert_eq!(s.feed(b"ta: b\n\n"), Some(Outcome::Ignored));
        let mut s = scanner(events, "text/event-stream");
        assert_eq!(
            s.feed(b"data: [DONE]\n\n"),
            Some(Outcome::Failure),
            "custom goes first"
        );
    }

    #[test]
    fn ndjson_done_and_errors() {
        let events = StreamEvents::new().ndjson_done("done");
        let ollama: &[u8] =
            b"{\"response\":\"Hel\",\"done\":false}\n{\"response\":\"lo\",\"done\": false}\n\
            {\"response\":\"\",\"done\" : true,\"total_duration\":1}\n";
        for cut in 0..=ollama.len() {
            let s = scanner(events.clone(), "application/x-ndjson");
            assert_eq!(
                feed_split(s, ollama, &[cut]).map(|(o, _)| o),
                Some(Outcome::Success)
            );
        }
        let mut s = scanner(events.clone(), "application/x-ndjson");
        assert_eq!(
            s.feed(b"{\"nested\":{\"done\":true}}\n"),
            None,
            "only a top-level field"
        );
        assert_eq!(
            s.feed(b"{\"error\":\"model not found\"}\n"),
            Some(Outcome::Failure)
        );
        // Not scanned unless asked for.
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        assert!(Scanner::for_response(&StreamEvents::new(), &headers).is_none());
    }

    #[test]
    fn only_event_stream_and_ndjson_types_are_scanned() {
        let events = StreamEvents::new().ndjson_done("done");
        let scanned = |ct: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            Scanner::for_response(&events, &headers).map(|s| s.format)
        };
        assert_eq!(
            scanned("Text/Event-Stream ; charset=utf-8"),
            Some(EventFormat::Sse)
        );
        assert_eq!(scanned("application/jsonl"), Some(EventFormat::Ndjson));
        assert_eq!(scanned("application/json"), None);
        assert_eq!(scanned("text/plain"), None);
        assert!(Scanner::for_response(&events, &HeaderMap::new()).is_none());
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        assert!(Scanner::for_response(&StreamEvents::none(), &headers).is_none());
    }

    #[test]
    fn garbage_never_panics() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        for format in ["text/event-stream", "application/x-ndjson"] {
            let events = StreamEvents::new()
                .ndjson_done("done")
                .classify_event(|_| None);
            let mut s = scanner(events, format);
            for chunk in bytes.chunks(37) {
                let _ = s.feed(chunk);
                assert!(s.carry.len() <= LINE_CAP);
                assert!(s.event.data.len() <= Event::MAX_DATA);
            }
        }
    }
}

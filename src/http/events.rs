//! What the events of a streamed response body mean for the circuit.

use std::fmt;
use std::sync::Arc;

use crate::circuit_breaker::Outcome;

type EventClassifier = Arc<dyn Fn(&Event<'_>) -> Option<Outcome> + Send + Sync>;

/// How [`EndOfStream`](super::EndOfStream) reads the events of a streamed body: which events end
/// a stream successfully, which report an error inside a `200` stream, and which of those errors
/// are the provider asking to back off.
///
/// A body is scanned only when its response says what it is: `content-type: text/event-stream`
/// (Server-Sent Events), or, once [`ndjson_done`](StreamEvents::ndjson_done) is set, an NDJSON
/// type (`application/x-ndjson`, `application/ndjson`, `application/jsonl`,
/// `application/x-jsonlines`). Any other body is passed through unscanned and is judged by how it
/// ends. Scanning stops at the first event that decides the call.
///
/// The defaults (`StreamEvents::new()`, used by `EndOfStream::new()`) read the streams of the
/// common LLM APIs:
///
/// | event | outcome | who sends it |
/// | --- | --- | --- |
/// | `data: [DONE]` | [`Success`](Outcome::Success) | OpenAI-compatible chat and completion streams |
/// | `event: message_stop` | [`Success`](Outcome::Success) | Anthropic Messages |
/// | `event: response.completed` | [`Success`](Outcome::Success) | OpenAI Responses |
/// | `event: error` whose error type is a [throttle type](StreamEvents::throttle_types) (`rate_limit_error`, `overloaded_error`, `rate_limit_exceeded`) | [`Throttled`](Outcome::Throttled), with the response head's back-off hint if it had one | Anthropic (`overloaded_error` mid-stream), OpenAI |
/// | `event: error` of any other type, or none | [`Failure`](Outcome::Failure) | Anthropic `api_error`, ... |
/// | a `data:` payload that is a JSON object whose first key is `"error"` | as `event: error` | OpenAI-compatible servers that report errors in-stream |
///
/// The error type is read from `error.type`, or else `error.code`, of the event's JSON data.
/// An event is complete at the blank line that ends it (as SSE clients dispatch it), however the
/// bytes were split across frames. A body dropped before any deciding event records nothing (the
/// caller cancelled); one that ends cleanly without a deciding event is judged by the
/// end-of-stream classifier ([`CleanEnd`](super::CleanEnd): a success).
///
/// ```
/// use tower_breaker::circuit_breaker::Outcome;
/// use tower_breaker::http::{EndOfStream, StreamEvents};
///
/// let events = StreamEvents::new()
///     .success_event("done")            // a provider's own terminal event
///     .ndjson_done("done")              // Ollama: a line with "done": true
///     .classify_event(|event| {         // anything else, first
///         (event.name() == "moderation_block").then_some(Outcome::Ignored)
///     });
/// let classifier = EndOfStream::new().events(events);
/// # let _ = classifier;
/// ```
#[derive(Clone)]
pub struct StreamEvents {
    pub(crate) rules: Arc<Rules>,
}

/// The NDJSON field that ends a stream when `true`, and its quoted form, built once, for the
/// per-line search.
#[derive(Clone)]
pub(crate) struct DoneField {
    pub(crate) field: Box<str>,
    pub(crate) quoted: Box<[u8]>,
}

#[derive(Clone)]
pub(crate) struct Rules {
    pub(crate) sse: bool,
    pub(crate) done_data: Vec<Box<[u8]>>,
    pub(crate) success_events: Vec<Box<[u8]>>,
    pub(crate) error_events: Vec<Box<[u8]>>,
    pub(crate) throttle_types: Vec<Box<str>>,
    pub(crate) ndjson_done: Option<DoneField>,
    pub(crate) custom: Option<EventClassifier>,
}

impl StreamEvents {
    /// The defaults in the table above: SSE scanned, NDJSON not.
    pub fn new() -> Self {
        let bytes = |s: &str| s.as_bytes().into();
        StreamEvents {
            rules: Arc::new(Rules {
                sse: true,
                done_data: vec![bytes("[DONE]")],
                success_events: vec![bytes("message_stop"), bytes("response.completed")],
                error_events: vec![bytes("error")],
                throttle_types: [
                    "rate_limit_error",
                    "overloaded_error",
                    "rate_limit_exceeded",
                ]
                .into_iter()
                .map(Into::into)
                .collect(),
                ndjson_done: None,
                custom: None,
            }),
        }
    }

    /// Scans nothing: every body is judged by how it ends, as plain HTTP.
    pub fn none() -> Self {
        StreamEvents {
            rules: Arc::new(Rules {
                sse: false,
                done_data: Vec::new(),
                success_events: Vec::new(),
                error_events: Vec::new(),
                throttle_types: Vec::new(),
                ndjson_done: None,
                custom: None,
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Rules)) -> Self {
        f(Arc::make_mut(&mut self.rules));
        self
    }

    /// Adds an SSE event whose data, exactly, ends the stream successfully (like `[DONE]`).
    pub fn done_data(self, data: impl AsRef<str>) -> Self {
        let data = data.as_ref().as_bytes().into();
        self.edit(|r| {
            r.sse = true;
            r.done_data.push(data);
        })
    }

    /// Adds an SSE event type (the `event:` field) that ends the stream successfully (like
    /// `message_stop`).
    pub fn success_event(self, name: impl AsRef<str>) -> Self {
        let name = name.as_ref().as_bytes().into();
        self.edit(|r| {
            r.sse = true;
            r.success_events.push(name);
        })
    }

    /// Adds an SSE event type that reports an error (like `error`): a
    /// [throttle](Self::throttle_types) or a failure, by the error type in its data.
    pub fn error_event(self, name: impl AsRef<str>) -> Self {
        let name = name.as_ref().as_bytes().into();
        self.edit(|r| {
            r.sse = true;
            r.error_events.push(name);
        })
    }

    /// Replaces the error types that mean "back off" rather than "broken" (default
    /// `rate_limit_error`, `overloaded_error`, `rate_limit_exceeded`). Such an error is
    /// [`Throttled`](Outcome::Throttled) with the response head's back-off hint: with a hint the
    /// circuit opens for it without counting a failure; without one it counts as a failure.
    pub fn throttle_types<I>(self, types: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let types = types.into_iter().map(|t| t.as_ref().into()).collect();
        self.edit(|r| r.throttle_types = types)
    }

    /// Scans NDJSON bodies too: a line whose top-level `field` is `true` (Ollama's
    /// `"done": true`) ends the stream successfully, and a line that is a JSON object whose first
    /// key is `"error"` is an error, as in SSE.
    pub fn ndjson_done(self, field: impl AsRef<str>) -> Self {
        let field: Box<str> = field.as_ref().into();
        let quoted = format!("\"{field}\"").into_bytes().into();
        self.edit(|r| r.ndjson_done = Some(DoneField { field, quoted }))
    }

    /// Runs `f` first on every complete event (every line, for NDJSON): `Some(outcome)` decides
    /// the call, `None` falls through to the rules above.
    ///
    /// With a closure set, every event's data is kept until the event is complete (at most
    /// [`Event::MAX_DATA`] bytes of it).
    pub fn classify_event<F>(self, f: F) -> Self
    where
        F: Fn(&Event<'_>) -> Option<Outcome> + Send + Sync + 'static,
    {
        self.edit(|r| r.custom = Some(Arc::new(f)))
    }
}

impl Default for StreamEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for StreamEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.rules;
        let strs = |v: &[Box<[u8]>]| -> Vec<String> {
            v.iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect()
        };
        f.debug_struct("StreamEvents")
            .field("sse", &r.sse)
            .field("done_data", &strs(&r.done_data))
            .field("success_events", &strs(&r.success_events))
            .field("error_events", &strs(&r.error_events))
            .field("throttle_types", &r.throttle_types)
            .field("ndjson_done", &r.ndjson_done.as_ref().map(|d| &d.field))
            .field("classify_event", &r.custom.as_ref().map(|_| "Fn(..)"))
            .finish()
    }
}

/// The wire format of a scanned body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventFormat {
    /// Server-Sent Events (`text/event-stream`).
    Sse,
    /// Newline-delimited JSON: each line is an event.
    Ndjson,
}

/// One complete event of a streamed body, as seen by
/// [`StreamEvents::classify_event`].
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub(crate) format: EventFormat,
    pub(crate) name: &'a [u8],
    pub(crate) data: &'a [u8],
    pub(crate) truncated: bool,
}

impl Event<'_> {
    /// The most data kept for one event; the rest is not seen ([`is_truncated`](Self::is_truncated)).
    pub const MAX_DATA: usize = 16 * 1024;

    /// SSE or NDJSON.
    pub fn format(&self) -> EventFormat {
        self.format
    }

    /// The SSE event type: its `event:` field, or `"message"` when it had none (as SSE
    /// clients name it); `""` for an NDJSON line, and for a name that is not UTF-8.
    pub fn name(&self) -> &str {
        match self.format {
            EventFormat::Sse if self.name.is_empty() => "message",
            _ => std::str::from_utf8(self.name).unwrap_or(""),
        }
    }

    /// The event's data: its `data:` lines joined with `\n` (SSE), or the line (NDJSON).
    pub fn data(&self) -> &[u8] {
        self.data
    }

    /// [`data`](Self::data) as text, if it is UTF-8.
    pub fn data_str(&self) -> Option<&str> {
        std::str::from_utf8(self.data).ok()
    }

    /// Whether the data was longer than [`MAX_DATA`](Self::MAX_DATA) and cut.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

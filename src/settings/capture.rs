//! What the settings types learn about an error while it is being raised, kept for
//! [`from_deserializer`](super::from_deserializer).
//!
//! A format's error only says where it happened in the document (if that), and a builder's
//! verdict is raised for a whole table, one level above the field it is about. So the settings
//! types note, on this thread, the message as it was when raised (before the format dressed it
//! up with a snippet of the document) and the builder field it names; `from_deserializer` reads
//! the note, and uses it only if the error it got back still carries that message, so a note
//! left by an attempt that something else (an untagged enum) recovered from is never used.

use std::cell::RefCell;
use std::fmt::Display;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use crate::ConfigError;

/// What was noted about the first error raised inside a settings type.
#[derive(Debug)]
pub(super) struct Note {
    /// The error as raised (without the document excerpt a format may add later).
    pub(super) message: String,
    /// The builder's verdict, if the error was one.
    pub(super) invalid: Option<ConfigError>,
}

thread_local! {
    static NOTE: RefCell<Option<Note>> = const { RefCell::new(None) };
}

/// Notes `error` unless an error raised further in has been noted already: the innermost
/// message is the one that names the problem.
fn note(message: String, invalid: Option<ConfigError>) {
    NOTE.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            *slot = Some(Note { message, invalid });
        }
    });
}

/// Forgets the note: a settings value was read after all, so whatever failed before it was
/// recovered from (or never reached the caller).
pub(super) fn clear() {
    NOTE.with(|slot| slot.borrow_mut().take());
}

/// Takes the note.
pub(super) fn take() -> Option<Note> {
    NOTE.with(|slot| slot.borrow_mut().take())
}

fn note_error<E: Display>(error: &E) {
    // Formats end their messages with a newline, or add where the value was (which is kept).
    note(error.to_string().trim_end().to_owned(), None);
}

/// Deserializes one field of a settings table, noting a failure as it is raised.
///
/// For `Option` fields, with `#[serde(default, deserialize_with = "leaf")]`.
pub(super) fn leaf<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    required(deserializer).map(Some)
}

/// Like [`leaf`], for a field that must be present.
pub(super) fn required<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    match T::deserialize(deserializer) {
        Ok(value) => {
            clear();
            Ok(value)
        }
        Err(error) => {
            note_error(&error);
            Err(error)
        }
    }
}

/// Deserializes a settings table as `Fields` (whose errors are noted, e.g. an unknown field),
/// then lets `check` run the builder on it; a [`ConfigError`] is noted with its field and
/// raised as the format's own error, whose message names the field too (for callers that do
/// not use `from_deserializer`).
pub(super) fn checked<'de, D, Fields, T>(
    deserializer: D,
    check: impl FnOnce(Fields) -> Result<T, ConfigError>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    Fields: Deserialize<'de>,
{
    let fields = match Fields::deserialize(deserializer) {
        Ok(fields) => fields,
        Err(error) => {
            note_error(&error);
            return Err(error);
        }
    };
    match check(fields) {
        Ok(value) => {
            clear();
            Ok(value)
        }
        Err(invalid) => {
            note(invalid.reason().to_owned(), Some(invalid.clone()));
            Err(D::Error::custom(invalid))
        }
    }
}

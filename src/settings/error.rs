//! [`SettingsError`] and [`from_deserializer`]: errors that say where in the document the bad
//! value is.

use std::fmt;

use serde::{Deserialize, Deserializer};

use super::capture;
use crate::ConfigError;

/// A settings document could not be read: [`path`](SettingsError::path) says where, and
/// [`message`](SettingsError::message) what is wrong.
///
/// Displayed as `path: message`, e.g. `providers.openai.failure_rate: must be in (0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingsError {
    path: String,
    message: String,
    invalid: Option<ConfigError>,
}

impl SettingsError {
    pub(super) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        SettingsError {
            path: path.into(),
            message: message.into(),
            invalid: None,
        }
    }

    /// Where the bad value is: the keys from the document's root to it, joined by `.`, with
    /// `[i]` for an array element (`providers.openai.breaker.failure_rate`,
    /// `members[2].max_wait`). Empty when the document itself is wrong at its root.
    ///
    /// For a value a builder rejected, the last key is the builder method's name, which is
    /// also the field's name in the settings.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong: the builder's reason (`must be in (0, 1]`) for a value out of range;
    /// otherwise the format's message, e.g. `invalid type: string "high", expected f64` or
    /// ``unknown field `failure_rat`, expected one of ...``.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The builder's own error, when a builder rejected the value (rather than the format,
    /// for a wrong type, an unknown field or a bad duration).
    pub fn config_error(&self) -> Option<&ConfigError> {
        self.invalid.as_ref()
    }
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for SettingsError {}

/// Deserializes `T` (a settings type, or any type of yours that holds them) from
/// `deserializer`, and on error says where the bad value is: the path from the document's root
/// to it, down to the field a builder rejected.
///
/// `T` may be any `Deserialize` type; errors inside the settings types of this module get the
/// builder's reason as their message, errors elsewhere the format's message.
///
/// ```
/// use serde::Deserialize;
/// use std::collections::BTreeMap;
/// use tower_breaker::settings::{from_deserializer, BreakerSettings};
///
/// #[derive(Deserialize)]
/// struct Config {
///     breakers: BTreeMap<String, BreakerSettings>,
/// }
///
/// let text = "[breakers.search]\nhalf_open_permits = 2\nsuccess_threshold = 3\n";
/// let err = from_deserializer::<Config, _>(toml::Deserializer::parse(text).unwrap())
///     .err()
///     .unwrap();
/// assert_eq!(
///     err.to_string(),
///     "breakers.search.success_threshold: \
///      must not exceed half_open_permits, or the circuit could never close"
/// );
/// ```
pub fn from_deserializer<'de, T, D>(deserializer: D) -> Result<T, SettingsError>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    capture::clear();
    let result = serde_path_to_error::deserialize::<D, T>(deserializer);
    let note = capture::take();
    let error = match result {
        Ok(value) => return Ok(value),
        Err(error) => error,
    };
    let mut path = if error.path().iter().next().is_none() {
        String::new()
    } else {
        error.path().to_string()
    };
    let raised = error.into_inner().to_string();
    // A note whose message the error no longer carries belongs to an earlier failure that was
    // recovered from; the error as raised is then all there is.
    let Some(note) = note.filter(|note| raised.contains(&note.message)) else {
        return Err(SettingsError::new(path, raised.trim_end()));
    };
    match note.invalid {
        Some(invalid) => {
            // Builders judge a whole table; the field they name is one level further down.
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(invalid.field());
            Err(SettingsError {
                path,
                message: invalid.reason().to_owned(),
                invalid: Some(invalid),
            })
        }
        None => Err(SettingsError::new(path, note.message)),
    }
}

//! [`FailoverSettings`] and [`ResendSettings`]: a failover's order and re-sends, from a file.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

use super::capture::{self, leaf};
use super::{BudgetSettings, SettingsError};
use crate::failover::{Cloned, Failover, Resend};
use crate::ConfigError;

/// The settings of a [`Failover`], read from a configuration file.
///
/// | field | meaning | example |
/// | --- | --- | --- |
/// | `order` | the members to use, highest priority first, by name | `["openai", "azure"]` |
/// | `resend_failures` | [`Failover::resend_failures`]: a [`ResendSettings`] table | `{ attempts = 2 }` |
///
/// The members themselves are services, built in code; [`failover`](FailoverSettings::failover)
/// puts them in `order`. How a request is copied for a re-send is code too
/// ([`Resend::with`]); [`resend_with`](FailoverSettings::resend_with) takes it.
///
/// `order` must not be empty or name a member twice; that it names members that exist is
/// checked by [`failover`](FailoverSettings::failover), which knows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct FailoverSettings {
    fields: FailoverFields,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "FailoverSettings")]
struct FailoverFields {
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    order: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    resend_failures: Option<ResendSettings>,
}

impl FailoverFields {
    fn check(self) -> Result<FailoverSettings, ConfigError> {
        if let Some(order) = &self.order {
            if order.is_empty() {
                return Err(ConfigError::new("order", "must name at least one member"));
            }
            if order
                .iter()
                .enumerate()
                .any(|(i, name)| order[..i].contains(name))
            {
                return Err(ConfigError::new("order", "must not name a member twice"));
            }
        }
        Ok(FailoverSettings { fields: self })
    }
}

impl<'de> Deserialize<'de> for FailoverSettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        capture::checked(deserializer, FailoverFields::check)
    }
}

impl FailoverSettings {
    /// `order`, if set.
    pub fn order(&self) -> Option<&[String]> {
        self.fields.order.as_deref()
    }

    /// The `resend_failures` table, if set.
    pub fn resend_failures(&self) -> Option<&ResendSettings> {
        self.fields.resend_failures.as_ref()
    }

    /// The named `members` in `order`: those it names, highest priority first, leaving out
    /// the others (so a file can take a provider out of service). Without `order`, all of
    /// them, as given.
    ///
    /// Fails with [`path`](SettingsError::path) `order` when `order` names a member that is not
    /// among `members`.
    pub fn members<N, S>(
        &self,
        members: impl IntoIterator<Item = (N, S)>,
    ) -> Result<Vec<(String, S)>, SettingsError>
    where
        N: Into<String>,
    {
        let mut given: Vec<Option<(String, S)>> = members
            .into_iter()
            .map(|(name, service)| Some((name.into(), service)))
            .collect();
        let Some(order) = &self.fields.order else {
            return Ok(given.into_iter().flatten().collect());
        };
        order
            .iter()
            .map(|wanted| {
                given
                    .iter_mut()
                    .find(|m| m.as_ref().is_some_and(|(name, _)| name == wanted))
                    .and_then(Option::take)
                    .ok_or_else(|| {
                        SettingsError::new("order", format!("no member is named \"{wanted}\""))
                    })
            })
            .collect()
    }

    /// A [`Failover`] over the named `members` in `order` (see
    /// [`members`](FailoverSettings::members)), re-sending failed requests as
    /// `resend_failures` says, by cloning them.
    ///
    /// Without a `resend_failures` table, a request gets one attempt: it is never re-sent,
    /// as with a plain `Failover`, and the type is the same either way, so the file decides.
    pub fn failover<N, S>(
        &self,
        members: impl IntoIterator<Item = (N, S)>,
    ) -> Result<Failover<S, Resend<Cloned>>, SettingsError>
    where
        N: Into<String>,
    {
        let members = self.members(members)?;
        Ok(Failover::with_names(members).resend_failures(self.resend()))
    }

    /// The [`Resend`] `resend_failures` describes, for `Clone` requests (one attempt, never
    /// re-sending, without the table).
    pub fn resend(&self) -> Resend<Cloned> {
        self.resend_with(Cloned)
    }

    /// The [`Resend`] `resend_failures` describes, copying requests with `rebuild` (see
    /// [`Rebuild`](crate::failover::Rebuild)); one attempt, never re-sending, without the table.
    pub fn resend_with<F>(&self, rebuild: F) -> Resend<F> {
        match &self.fields.resend_failures {
            Some(resend) => resend.resend_with(rebuild),
            None => Resend::with(rebuild).attempts(1),
        }
    }
}

/// When a [`Failover`] re-sends a failed request ([`Resend`]), read from a configuration file.
///
/// | field | builder method | example |
/// | --- | --- | --- |
/// | `attempts` | [`attempts`](Resend::attempts) | `2` |
/// | `budget` | [`budget`](Resend::budget): a [`BudgetSettings`] table | `{ retry_percent = 0.1 }` |
///
/// An empty table is `Resend`'s defaults: every member may be tried once, within a default
/// `TpsBudget`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct ResendSettings {
    fields: ResendFields,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "ResendSettings")]
struct ResendFields {
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    attempts: Option<u32>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    budget: Option<BudgetSettings>,
}

impl<'de> Deserialize<'de> for ResendSettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `Resend` takes any attempt count, and the budget checked itself.
        capture::checked(deserializer, |fields: ResendFields| {
            Ok(ResendSettings { fields })
        })
    }
}

impl ResendSettings {
    /// `attempts`, if set.
    pub fn attempts(&self) -> Option<u32> {
        self.fields.attempts
    }

    /// The `budget` table, if set.
    pub fn budget(&self) -> Option<&BudgetSettings> {
        self.fields.budget.as_ref()
    }

    /// The [`Resend`] these settings describe, for `Clone` requests.
    pub fn resend(&self) -> Resend<Cloned> {
        self.resend_with(Cloned)
    }

    /// The [`Resend`] these settings describe, copying requests with `rebuild`.
    pub fn resend_with<F>(&self, rebuild: F) -> Resend<F> {
        let mut resend = Resend::with(rebuild);
        if let Some(n) = self.fields.attempts {
            resend = resend.attempts(n);
        }
        if let Some(budget) = &self.fields.budget {
            resend = resend.budget(Arc::new(budget.budget()));
        }
        resend
    }
}

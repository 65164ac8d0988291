//! Reading a JSON object field by field, collecting every problem with its pointer, so a
//! request learns all that is wrong with it at once.

use std::str::FromStr;

use chrono::Datelike as _;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value};

use crate::problem::{ApiError, FieldError};

/// A JSON object being read.
pub struct Fields {
    map: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl Fields {
    /// Starts reading `value`, which must be an object with no fields outside `allowed`.
    pub fn new(value: Value, allowed: &[&str]) -> Result<Self, ApiError> {
        let Value::Object(map) = value else {
            return Err(ApiError::invalid_field(
                "/",
                "the body must be a JSON object",
            ));
        };
        let errors = map
            .keys()
            .filter(|key| !allowed.contains(&key.as_str()))
            .map(|key| FieldError {
                pointer: format!("/{key}"),
                detail: "unknown field".to_owned(),
            })
            .collect();
        Ok(Self { map, errors })
    }

    /// Records a problem with `field`.
    pub fn error(&mut self, field: &str, detail: impl Into<String>) {
        self.errors.push(FieldError {
            pointer: format!("/{field}"),
            detail: detail.into(),
        });
    }

    /// Whether the object has `field` (even as null).
    pub fn has(&self, field: &str) -> bool {
        self.map.contains_key(field)
    }

    /// `None` when absent, `Some(None)` when null, `Some(Some(text))` when a string;
    /// anything else is recorded as a problem.
    fn text(&mut self, field: &str) -> Option<Option<String>> {
        match self.map.get(field)? {
            Value::Null => Some(None),
            Value::String(text) => Some(Some(text.clone())),
            _ => {
                self.error(field, "must be a string");
                None
            }
        }
    }

    /// A field that must be present and valid by `rule`.
    pub fn required<T>(
        &mut self,
        field: &str,
        rule: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match self.text(field) {
            Some(Some(text)) => self.check(field, rule(&text)),
            Some(None) => {
                self.error(field, "must not be null");
                None
            }
            None if self.has(field) => None,
            None => {
                self.error(field, "is required");
                None
            }
        }
    }

    /// A field that may be absent (`None`) or null (`Some(None)`), valid by `rule` otherwise.
    pub fn optional<T>(
        &mut self,
        field: &str,
        rule: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<Option<T>> {
        match self.text(field)? {
            None => Some(None),
            Some(text) => self.check(field, rule(&text)).map(Some),
        }
    }

    /// Like [`Fields::optional`], but null is not allowed: for fields that cannot be cleared.
    pub fn optional_not_null<T>(
        &mut self,
        field: &str,
        rule: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match self.text(field)? {
            None => {
                self.error(field, "must not be null");
                None
            }
            Some(text) => self.check(field, rule(&text)),
        }
    }

    /// Whether `field` is present and null.
    pub fn is_null(&self, field: &str) -> bool {
        self.map.get(field).is_some_and(Value::is_null)
    }

    /// A boolean field: `None` when absent (or invalid, which is recorded).
    pub fn boolean(&mut self, field: &str) -> Option<bool> {
        match self.map.get(field)? {
            Value::Bool(value) => Some(*value),
            _ => {
                self.error(field, "must be true or false");
                None
            }
        }
    }

    /// An array of strings: `None` when absent (or invalid, which is recorded).
    pub fn strings(&mut self, field: &str) -> Option<Vec<String>> {
        let strings = self.map.get(field)?.as_array().and_then(|items| {
            items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        });
        if strings.is_none() {
            self.error(field, "must be an array of strings");
        }
        strings
    }

    /// Records `result`'s error against `field`.
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|detail| self.error(field, detail)).ok()
    }

    /// Ends reading: every problem found, or nothing.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.errors))
        }
    }
}

/// An RFC 3339 timestamp.
pub fn timestamp(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| "must be an RFC 3339 timestamp like 2026-01-31T12:00:00Z".to_owned())
}

/// A calendar date of the years 1 to 9999 (PostgreSQL cannot store every date chrono
/// reads, and no contract is dated outside them).
pub fn date(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|date| (1..=9999).contains(&date.year()))
        .ok_or_else(|| "must be a date like 2026-01-31, of the years 1 to 9999".to_owned())
}

/// A label of a closed set (status, kind, …).
pub fn label<T: FromStr<Err = domain::UnknownLabel>>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|error: domain::UnknownLabel| error.to_string())
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_date_outside_the_years_1_to_9999_is_refused() {
        assert!(date("2026-01-31").is_ok());
        assert!(date("9999-12-31").is_ok());
        for text in [
            "-4714-01-01",
            "0000-01-01",
            "+10000-01-01",
            "-5000-01-01",
            "2026-02-30",
        ] {
            assert!(date(text).is_err(), "{text}");
        }
    }
    use super::*;
    use serde_json::json;

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut fields = Fields::new(
            json!({"name": 3, "extra": true, "when": "yesterday"}),
            &["name", "slug", "when"],
        )
        .expect("an object");
        fields.required("name", |text| Ok(text.to_owned()));
        fields.required("slug", |text| Ok(text.to_owned()));
        fields.optional("when", timestamp);
        let error = fields.finish().expect_err("invalid");
        assert_eq!(error.pointers(), vec!["/extra", "/name", "/slug", "/when"]);
    }

    #[test]
    fn absent_null_and_present_are_told_apart() {
        let mut fields =
            Fields::new(json!({"a": null, "b": "x"}), &["a", "b", "c"]).expect("an object");
        assert_eq!(fields.optional("a", |t| Ok(t.to_owned())), Some(None));
        assert_eq!(
            fields.optional("b", |t| Ok(t.to_owned())),
            Some(Some("x".to_owned()))
        );
        assert_eq!(fields.optional("c", |t| Ok(t.to_owned())), None);
        assert!(fields.finish().is_ok());
    }

    #[test]
    fn a_non_object_body_is_rejected() {
        assert!(Fields::new(json!([1]), &[]).is_err());
    }
}

//! The slug rule shared by tenants and projects.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Shortest slug accepted.
pub const MIN_LEN: usize = 3;
/// Longest slug accepted (a DNS label's limit, so a slug can name a subdomain).
pub const MAX_LEN: usize = 63;

/// A URL- and DNS-safe identifier: 3–63 characters of `[a-z0-9-]`, no leading or trailing dash.
///
/// The same rule is enforced by the `tenants_slug_format` and `tenant_projects_slug_format`
/// CHECK constraints, so the database refuses what this type refuses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

/// Why a string is not a slug; the message is written for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    /// Fewer than [`MIN_LEN`] characters.
    #[error("must be at least {MIN_LEN} characters long")]
    TooShort,
    /// More than [`MAX_LEN`] characters.
    #[error("must be at most {MAX_LEN} characters long")]
    TooLong,
    /// A character outside `[a-z0-9-]`.
    #[error("may contain only lowercase letters, digits and dashes (found {0:?})")]
    InvalidCharacter(char),
    /// Starts or ends with `-`.
    #[error("must not start or end with a dash")]
    EdgeDash,
}

impl Slug {
    /// Parses `input` as a slug, saying which rule it breaks when it is not one.
    pub fn parse(input: &str) -> Result<Self, SlugError> {
        if let Some(bad) = input
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(SlugError::InvalidCharacter(bad));
        }
        if input.len() < MIN_LEN {
            return Err(SlugError::TooShort);
        }
        if input.len() > MAX_LEN {
            return Err(SlugError::TooLong);
        }
        if input.starts_with('-') || input.ends_with('-') {
            return Err(SlugError::EdgeDash);
        }
        Ok(Self(input.to_owned()))
    }

    /// The slug as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Slug {
    type Error = SlugError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Slug> for String {
    fn from(slug: Slug) -> Self {
        slug.0
    }
}

impl AsRef<str> for Slug {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_rule_table() {
        let cases: &[(&str, Result<(), SlugError>)] = &[
            ("ab", Err(SlugError::TooShort)),
            ("-acme", Err(SlugError::EdgeDash)),
            ("acme-", Err(SlugError::EdgeDash)),
            ("Acme", Err(SlugError::InvalidCharacter('A'))),
            ("ac_me", Err(SlugError::InvalidCharacter('_'))),
            ("ac me", Err(SlugError::InvalidCharacter(' '))),
            ("acmé", Err(SlugError::InvalidCharacter('é'))),
            (&"a".repeat(64), Err(SlugError::TooLong)),
            ("", Err(SlugError::TooShort)),
            ("a-1", Ok(())),
            ("acme", Ok(())),
            ("123", Ok(())),
            ("a--b", Ok(())),
            (&"a".repeat(63), Ok(())),
        ];
        for (input, expected) in cases {
            assert_eq!(Slug::parse(input).map(|_| ()), *expected, "slug {input:?}");
        }
    }

    #[test]
    fn a_slug_with_a_leading_dash_is_rejected() {
        assert_eq!(Slug::parse("-abc"), Err(SlugError::EdgeDash));
    }

    #[test]
    fn rejects_uppercase_slug() {
        assert_eq!(Slug::parse("ACME"), Err(SlugError::InvalidCharacter('A')));
    }

    #[test]
    fn deserializing_an_invalid_slug_fails_with_the_rule() {
        let err = serde_json::from_str::<Slug>("\"Bad_Slug\"").expect_err("must fail");
        assert!(err.to_string().contains("lowercase"), "{err}");
    }

    #[test]
    fn a_slug_round_trips_through_json() {
        let slug: Slug = serde_json::from_str("\"acme-corp\"").expect("valid slug");
        assert_eq!(slug.as_str(), "acme-corp");
        assert_eq!(
            serde_json::to_string(&slug).expect("serializes"),
            "\"acme-corp\""
        );
    }
}

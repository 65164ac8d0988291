//! Domain events: the closed list of what the registry announces after a change commits, the
//! type filters subscribers choose them with, the payload every consumer receives, and the
//! position of an event in the feed.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::UnknownLabel;

macro_rules! event_types {
    ($( $(#[$meta:meta])* $variant:ident => $name:literal ),+ $(,)?) => {
        /// What happened. The names are part of the API: consumers filter on them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub enum EventType {
            $( $(#[$meta])* $variant ),+
        }

        impl EventType {
            /// Every type, in documentation order.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),+];

            /// The name, as stored, filtered on and sent.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name),+
                }
            }
        }
    };
}

event_types! {
    /// A tenant was created.
    TenantCreated => "tenant.created",
    /// A tenant's fields changed (`data` names the changed fields and their previous values).
    TenantUpdated => "tenant.updated",
    /// A tenant moved along its lifecycle (`data`: from, to, reason).
    TenantStatusChanged => "tenant.status_changed",
    /// A tenant was archived.
    TenantArchived => "tenant.archived",
    /// A trial tenant's trial ends soon (`TRIAL_WARNING_DAYS` before; `data`: the tenant).
    TenantTrialEnding => "tenant.trial_ending",
    /// A trial tenant's trial ended and it was frozen (reason `trial_expired`).
    TenantTrialExpired => "tenant.trial_expired",
    /// An archived tenant was restored.
    TenantRestored => "tenant.restored",
    /// A tenant and everything it owned were deleted for good.
    TenantPurged => "tenant.purged",
    /// A tenant subscribed to a product.
    TenantProductSubscribed => "tenant.product.subscribed",
    /// A tenant's subscription changed.
    TenantProductUpdated => "tenant.product.updated",
    /// A tenant's subscription was removed.
    TenantProductUnsubscribed => "tenant.product.unsubscribed",
    /// What a tenant is entitled to changed (a plan, an override, a manifest).
    TenantEntitlementsChanged => "tenant.entitlements_changed",
    /// Every step of a product's provisioning plan is done for a tenant (`data`: tenant,
    /// product, what was made).
    TenantProvisioned => "tenant.provisioned",
    /// A product's provisioning (or deprovisioning) of a tenant failed its last attempt
    /// (`data`: tenant, product, step, error, attempts); `POST …/provisioning/retry` starts
    /// it again.
    TenantProvisioningFailed => "tenant.provisioning_failed",
    /// A product's data of a tenant was backed up and dropped (`data`: tenant, product,
    /// backup).
    TenantDeprovisioned => "tenant.deprovisioned",
    /// A project was created.
    ProjectCreated => "project.created",
    /// A project's fields changed.
    ProjectUpdated => "project.updated",
    /// A project was archived.
    ProjectArchived => "project.archived",
    /// A project was restored.
    ProjectRestored => "project.restored",
    /// An identity provider was configured.
    IdpCreated => "idp.created",
    /// An identity provider's configuration changed.
    IdpUpdated => "idp.updated",
    /// An identity provider was removed.
    IdpDeleted => "idp.deleted",
    /// A claimed email domain was proven.
    DomainVerified => "domain.verified",
    /// A claimed email domain's proof was looked for and not found.
    DomainVerificationFailed => "domain.verification_failed",
    /// A domain claim was withdrawn.
    DomainRemoved => "domain.removed",
    /// An API key was created.
    ApiKeyCreated => "api_key.created",
    /// An API key got a new secret.
    ApiKeyRotated => "api_key.rotated",
    /// An API key was revoked.
    ApiKeyRevoked => "api_key.revoked",
    /// A webhook endpoint was disabled after failing for too long.
    WebhookEndpointDisabled => "webhook.endpoint_disabled",
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = UnknownLabel;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|event_type| event_type.as_str() == name)
            .ok_or_else(|| UnknownLabel {
                kind: "event type",
                label: name.to_owned(),
                expected: Self::ALL
                    .iter()
                    .map(|event_type| event_type.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

impl TryFrom<String> for EventType {
    type Error = UnknownLabel;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<EventType> for String {
    fn from(event_type: EventType) -> Self {
        event_type.as_str().to_owned()
    }
}

/// One way of choosing event types: `tenant.created`, `tenant.*` (every type under
/// `tenant.`, `tenant.product.subscribed` included) or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypePattern {
    /// Every type.
    All,
    /// Exactly this type.
    Exact(EventType),
    /// Every type whose name starts with this, which ends in a dot (`tenant.`).
    Prefix(String),
}

/// Why a type pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypePatternError {
    /// Neither a type, a `prefix.*` nor `*`.
    #[error(
        "{0:?} is not an event type or pattern; use a type (tenant.created), a prefix ending in .* (tenant.*) or *"
    )]
    Malformed(String),
    /// A well-formed name that is no event type.
    #[error(transparent)]
    UnknownType(#[from] UnknownLabel),
    /// A prefix no event type starts with.
    #[error("{pattern:?} matches no event type; prefixes in use: {known}")]
    MatchesNothing {
        /// What was given.
        pattern: String,
        /// The first part of every type, comma separated.
        known: String,
    },
}

fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|part| {
            part.starts_with(|c: char| c.is_ascii_lowercase())
                && part.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
}

impl TypePattern {
    /// Reads `tenant.created`, `tenant.*` or `*`. A prefix must match at least one type, so
    /// a misspelt one is refused instead of silently matching nothing.
    pub fn parse(text: &str) -> Result<Self, TypePatternError> {
        if text == "*" {
            return Ok(Self::All);
        }
        let malformed = || TypePatternError::Malformed(text.to_owned());
        if let Some(namespace) = text.strip_suffix(".*") {
            if !is_name(namespace) {
                return Err(malformed());
            }
            let prefix = format!("{namespace}.");
            if !EventType::ALL
                .iter()
                .any(|event_type| event_type.as_str().starts_with(&prefix))
            {
                let mut known: Vec<&str> = EventType::ALL
                    .iter()
                    .filter_map(|event_type| event_type.as_str().split('.').next())
                    .collect();
                known.dedup();
                return Err(TypePatternError::MatchesNothing {
                    pattern: text.to_owned(),
                    known: known.join(", "),
                });
            }
            return Ok(Self::Prefix(prefix));
        }
        if !is_name(text) || !text.contains('.') {
            return Err(malformed());
        }
        Ok(Self::Exact(text.parse()?))
    }

    /// Whether an event named `name` is chosen. Names this build does not know (written by
    /// a newer one) are matched by prefix like any other.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Exact(event_type) => event_type.as_str() == name,
            Self::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }
}

/// The types a subscriber asked for: any of its patterns; none at all means every type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeFilter {
    patterns: Vec<TypePattern>,
}

impl TypeFilter {
    /// Every type.
    pub fn all() -> Self {
        Self::default()
    }

    /// The filter of `patterns` (each as [`TypePattern::parse`] reads it); the error names
    /// the index of the first one refused.
    pub fn parse<'a>(
        patterns: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, (usize, TypePatternError)> {
        let patterns = patterns
            .into_iter()
            .enumerate()
            .map(|(index, text)| TypePattern::parse(text).map_err(|error| (index, error)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { patterns })
    }

    /// Whether every type passes (no pattern, or `*` among them).
    pub fn is_all(&self) -> bool {
        self.patterns.is_empty() || self.patterns.contains(&TypePattern::All)
    }

    /// Whether an event named `name` passes.
    pub fn matches(&self, name: &str) -> bool {
        self.is_all() || self.patterns.iter().any(|pattern| pattern.matches(name))
    }

    /// The exact names asked for.
    pub fn names(&self) -> Vec<&'static str> {
        self.patterns
            .iter()
            .filter_map(|pattern| match pattern {
                TypePattern::Exact(event_type) => Some(event_type.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The prefixes asked for, each ending in a dot.
    pub fn prefixes(&self) -> Vec<&str> {
        self.patterns
            .iter()
            .filter_map(|pattern| match pattern {
                TypePattern::Prefix(prefix) => Some(prefix.as_str()),
                _ => None,
            })
            .collect()
    }
}

impl FromIterator<TypePattern> for TypeFilter {
    fn from_iter<I: IntoIterator<Item = TypePattern>>(patterns: I) -> Self {
        Self {
            patterns: patterns.into_iter().collect(),
        }
    }
}

/// An event as every consumer receives it (feed item, stream `data:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique; the same event delivered twice has the same id.
    pub id: Uuid,
    /// An [`EventType`] name, kept as text so that an event written by a newer build is
    /// passed on as it is.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The start of the transaction that made the change: the time the change itself
    /// carries (its `updated_at`), not the order of the feed.
    pub occurred_at: DateTime<Utc>,
    /// The tenant it concerns; none for platform-level events.
    pub tenant_id: Option<Uuid>,
    /// The resource as the API shows it, or what changed; never a secret.
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// Where an event sits in the feed: its transaction's id (64 bits, never wrapping), then
/// its order of insertion. Events are read in this order, and only below the oldest
/// transaction still running, so no event can later appear before a position already read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Position {
    /// `pg_current_xact_id()` of the transaction that wrote the event.
    pub xact: i64,
    /// The insertion number within the whole table.
    pub seq: i64,
}

/// A cursor this service did not issue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a cursor this service issued")]
pub struct BadCursor;

impl Position {
    /// Before every event.
    pub const START: Position = Position { xact: 0, seq: 0 };

    /// The opaque cursor that resumes after this position.
    pub fn cursor(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}.{}", self.xact, self.seq))
    }

    /// Reads a cursor made by [`Position::cursor`].
    pub fn from_cursor(cursor: &str) -> Result<Self, BadCursor> {
        let text = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| BadCursor)?;
        let text = String::from_utf8(text).map_err(|_| BadCursor)?;
        let (xact, seq) = text.split_once('.').ok_or(BadCursor)?;
        let number = |part: &str| {
            part.bytes()
                .all(|byte| byte.is_ascii_digit())
                .then(|| part.parse::<i64>().ok())
                .flatten()
                .ok_or(BadCursor)
        };
        Ok(Self {
            xact: number(xact)?,
            seq: number(seq)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_round_trips_through_its_name() {
        for &event_type in EventType::ALL {
            assert_eq!(event_type.as_str().parse::<EventType>(), Ok(event_type));
            let json = serde_json::to_string(&event_type).expect("serialises");
            assert_eq!(json, format!("\"{event_type}\""));
        }
        assert_eq!(EventType::ALL.len(), 29);
    }

    #[test]
    fn the_issue_s_type_names_are_the_names() {
        let names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        for name in [
            "tenant.created",
            "tenant.status_changed",
            "tenant.product.subscribed",
            "tenant.entitlements_changed",
            "project.restored",
            "idp.deleted",
            "domain.verification_failed",
            "api_key.rotated",
            "webhook.endpoint_disabled",
        ] {
            assert!(names.contains(&name), "{name}");
        }
    }

    #[test]
    fn an_exact_type_a_prefix_and_a_star_are_patterns() {
        assert_eq!(
            TypePattern::parse("tenant.created"),
            Ok(TypePattern::Exact(EventType::TenantCreated))
        );
        assert_eq!(
            TypePattern::parse("tenant.*"),
            Ok(TypePattern::Prefix("tenant.".to_owned()))
        );
        assert_eq!(
            TypePattern::parse("tenant.product.*"),
            Ok(TypePattern::Prefix("tenant.product.".to_owned()))
        );
        assert_eq!(TypePattern::parse("*"), Ok(TypePattern::All));
    }

    #[test]
    fn other_wildcards_and_shapes_are_refused_as_malformed() {
        for text in [
            "",
            "tenant",
            "tenant*",
            "*.created",
            "tenant.*.x",
            "Tenant.created",
            "tenant.",
            ".created",
            "tenant..created",
            "**",
            "tenant.*x",
            " tenant.created",
        ] {
            assert!(
                matches!(
                    TypePattern::parse(text),
                    Err(TypePatternError::Malformed(_))
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn an_unknown_type_is_refused_with_the_list_of_types() {
        let error = TypePattern::parse("tenant.deleted").expect_err("unknown");
        let message = error.to_string();
        assert!(
            message.starts_with("unknown event type \"tenant.deleted\""),
            "{message}"
        );
        assert!(message.contains("tenant.purged"), "{message}");
    }

    #[test]
    fn a_prefix_that_matches_no_type_is_refused() {
        let error = TypePattern::parse("tenants.*").expect_err("matches nothing");
        assert_eq!(
            error.to_string(),
            "\"tenants.*\" matches no event type; prefixes in use: tenant, project, idp, domain, api_key, webhook"
        );
    }

    #[test]
    fn a_prefix_matches_every_type_below_it_and_no_other() {
        let pattern = TypePattern::parse("tenant.*").expect("valid");
        assert!(pattern.matches("tenant.created"));
        assert!(pattern.matches("tenant.product.subscribed"));
        assert!(!pattern.matches("tenants.created"));
        assert!(!pattern.matches("project.created"));
        let products = TypePattern::parse("tenant.product.*").expect("valid");
        assert!(products.matches("tenant.product.updated"));
        assert!(!products.matches("tenant.updated"));
    }

    #[test]
    fn a_filter_passes_what_any_of_its_patterns_passes() {
        let filter = TypeFilter::parse(["project.*", "api_key.revoked"]).expect("valid");
        assert!(filter.matches("project.archived"));
        assert!(filter.matches("api_key.revoked"));
        assert!(!filter.matches("api_key.created"));
        assert_eq!(filter.names(), ["api_key.revoked"]);
        assert_eq!(filter.prefixes(), ["project."]);
        assert!(!filter.is_all());
    }

    #[test]
    fn no_pattern_or_a_star_passes_every_type() {
        assert!(TypeFilter::all().matches("anything.at_all"));
        let starred = TypeFilter::parse(["tenant.created", "*"]).expect("valid");
        assert!(starred.is_all());
        assert!(starred.matches("idp.created"));
    }

    #[test]
    fn a_filter_names_the_index_of_the_pattern_it_refuses() {
        let (index, _) = TypeFilter::parse(["tenant.*", "nope"]).expect_err("refused");
        assert_eq!(index, 1);
    }

    #[test]
    fn the_payload_has_the_documented_shape() {
        let id = Uuid::new_v4();
        let tenant = Uuid::new_v4();
        let at = DateTime::from_timestamp(1_767_225_600, 0).expect("a time");
        let mut data = serde_json::Map::new();
        data.insert("slug".to_owned(), "acme".into());
        let event = Event {
            id,
            event_type: EventType::TenantCreated.to_string(),
            occurred_at: at,
            tenant_id: Some(tenant),
            data,
        };
        let json = serde_json::to_value(&event).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "id": id, "type": "tenant.created", "occurred_at": "2026-01-01T00:00:00Z",
                "tenant_id": tenant, "data": {"slug": "acme"}
            })
        );
        assert_eq!(
            serde_json::from_value::<Event>(json).expect("reads back"),
            event
        );
    }

    #[test]
    fn positions_order_by_transaction_then_insertion() {
        let early_xact_late_seq = Position { xact: 10, seq: 99 };
        let late_xact_early_seq = Position { xact: 11, seq: 5 };
        assert!(early_xact_late_seq < late_xact_early_seq);
        assert!(Position::START < early_xact_late_seq);
    }

    #[test]
    fn a_cursor_round_trips() {
        for position in [
            Position::START,
            Position { xact: 748, seq: 3 },
            Position {
                xact: i64::MAX,
                seq: i64::MAX,
            },
        ] {
            assert_eq!(Position::from_cursor(&position.cursor()), Ok(position));
        }
    }

    #[test]
    fn a_forged_cursor_is_refused() {
        let forged = |text: &str| URL_SAFE_NO_PAD.encode(text);
        for cursor in [
            "not a cursor".to_owned(),
            forged("12"),
            forged("-1.2"),
            forged("1.+2"),
            forged("1.2.3"),
            forged("99999999999999999999.1"),
            forged("a.b"),
            forged(""),
        ] {
            assert_eq!(Position::from_cursor(&cursor), Err(BadCursor), "{cursor}");
        }
    }
}

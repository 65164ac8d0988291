//! The Retraced-compatible audit event as products send it, and the rules it must meet.
//! Every problem of a batch is reported with a JSON pointer into the batch, so a product
//! can fix all of them at once; a batch is stored all or nothing.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The most events one request may carry.
pub const MAX_BATCH: usize = 1000;

/// The earliest `created` accepted: the Unix epoch. Older times are mistakes (year 0, a
/// negative year), and a time far outside the years people write breaks every consumer of
/// RFC 3339 text.
pub const EARLIEST_CREATED: DateTime<Utc> = DateTime::UNIX_EPOCH;

/// How far after its arrival an event's `created` may be: a day of clock skew.
pub const CREATED_AHEAD: TimeDelta = TimeDelta::days(1);

/// Retraced's group: the tenant.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// The tenant's id, or its slug.
    pub id: Option<String>,
    /// Display name.
    pub name: Option<String>,
}

/// Who did it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// Id in the product.
    pub id: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Link to the actor.
    pub href: Option<String>,
    /// Extra string fields.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// What it was done to.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Id in the product.
    pub id: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Link to the target.
    pub href: Option<String>,
    /// Kind of target.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Extra string fields.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// One event in Retraced's shape.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// What happened, e.g. `document.shared`.
    pub action: String,
    /// c, r, u or d.
    pub crud: String,
    /// The tenant.
    pub group: Option<Group>,
    /// Who.
    pub actor: Option<Actor>,
    /// To what.
    pub target: Option<Target>,
    /// From where.
    pub source_ip: Option<String>,
    /// A sentence for people.
    pub description: Option<String>,
    /// Whether the action failed.
    #[serde(default)]
    pub is_failure: bool,
    /// Whether nobody was signed in.
    #[serde(default)]
    pub is_anonymous: bool,
    /// When it happened (default: when received).
    pub created: Option<DateTime<Utc>>,
    /// Extra string fields.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Retraced's metadata: more string fields, kept apart from `fields`.
    pub metadata: Option<BTreeMap<String, String>>,
    /// The product's id for the event; a second event with the same id is stored once.
    pub external_id: Option<String>,
    /// The part of the product that reported it.
    pub component: Option<String>,
    /// The product's version.
    pub version: Option<String>,
}

/// Reads the body of an ingest request that arrived at `received`: one event or an array
/// of up to [`MAX_BATCH`]. Returns the events, or every problem as `(pointer, detail)`.
pub fn parse_batch(
    body: Value,
    received: DateTime<Utc>,
) -> Result<Vec<Event>, Vec<(String, String)>> {
    let (items, prefix): (Vec<Value>, fn(usize) -> String) = match body {
        Value::Array(items) => (items, |index| format!("/{index}")),
        single @ Value::Object(_) => (vec![single], |_| String::new()),
        _ => {
            return Err(vec![(
                "/".to_owned(),
                "must be an event object or an array of events".to_owned(),
            )]);
        }
    };
    if items.is_empty() {
        return Err(vec![("/".to_owned(), "the batch is empty".to_owned())]);
    }
    if items.len() > MAX_BATCH {
        return Err(vec![(
            "/".to_owned(),
            format!("at most {MAX_BATCH} events per request"),
        )]);
    }
    let mut events = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let at = prefix(index);
        let before = problems.len();
        nul_characters(&item, &at, &mut problems);
        if problems.len() > before {
            continue;
        }
        match serde_json::from_value::<Event>(item) {
            Ok(event) => {
                problems.extend(
                    event
                        .problems(received)
                        .into_iter()
                        .map(|(field, detail)| (format!("{at}{field}"), detail)),
                );
                events.push(event);
            }
            Err(error) => problems.push((
                if at.is_empty() { "/".to_owned() } else { at },
                error.to_string(),
            )),
        }
    }
    if problems.is_empty() {
        Ok(events)
    } else {
        Err(problems)
    }
}

/// Points at every string (key or value) holding a NUL character, which PostgreSQL text
/// cannot store.
fn nul_characters(value: &Value, at: &str, problems: &mut Vec<(String, String)>) {
    let escape = |key: &str| key.replace('~', "~0").replace('/', "~1");
    match value {
        Value::String(text) if text.contains('\0') => problems.push((
            if at.is_empty() {
                "/".to_owned()
            } else {
                at.to_owned()
            },
            "must not contain NUL characters".to_owned(),
        )),
        Value::Object(map) => {
            for (key, item) in map {
                let path = format!("{at}/{}", escape(key));
                if key.contains('\0') {
                    problems.push((path, "must not contain NUL characters".to_owned()));
                } else {
                    nul_characters(item, &path, problems);
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                nul_characters(item, &format!("{at}/{index}"), problems);
            }
        }
        _ => {}
    }
}

fn too_long(value: Option<&String>, limit: usize) -> bool {
    value.is_some_and(|text| text.chars().count() > limit)
}

impl Event {
    /// The rules one event arriving at `received` breaks, as `(pointer within the event,
    /// detail)`.
    pub fn problems(&self, received: DateTime<Utc>) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut problem =
            |field: &str, detail: &str| problems.push((field.to_owned(), detail.to_owned()));
        if self.action.trim().is_empty() || self.action.len() > 255 {
            problem("/action", "must be 1 to 255 characters");
        }
        if !matches!(self.crud.as_str(), "c" | "r" | "u" | "d") {
            problem("/crud", "must be one of c, r, u, d");
        }
        if self
            .source_ip
            .as_deref()
            .is_some_and(|ip| ip.parse::<IpAddr>().is_err())
        {
            problem("/source_ip", "must be an IPv4 or IPv6 address");
        }
        if self
            .created
            .is_some_and(|created| created < EARLIEST_CREATED || created > received + CREATED_AHEAD)
        {
            problem(
                "/created",
                "must be from 1970-01-01T00:00:00Z to 24 hours after the event is received",
            );
        }
        if too_long(self.description.as_ref(), 4096) {
            problem("/description", "must be at most 4096 characters");
        }
        if too_long(self.external_id.as_ref(), 255)
            || self.external_id.as_deref().is_some_and(str::is_empty)
        {
            problem("/external_id", "must be 1 to 255 characters");
        }
        if self
            .group
            .as_ref()
            .is_some_and(|group| group.id.as_deref().is_none_or(str::is_empty))
        {
            problem("/group/id", "is required when a group is given");
        }
        problems
    }

    /// The event's free fields as a JSON object.
    pub fn fields_json(fields: &BTreeMap<String, String>) -> Value {
        Value::Object(
            fields
                .iter()
                .map(|(key, value)| (key.clone(), Value::from(value.clone())))
                .collect::<Map<_, _>>(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_batch_now(body: Value) -> Result<Vec<Event>, Vec<(String, String)>> {
        parse_batch(body, Utc::now())
    }

    fn pointers(result: Result<Vec<Event>, Vec<(String, String)>>) -> Vec<String> {
        result
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|(pointer, _)| pointer)
            .collect()
    }

    #[test]
    fn one_event_or_a_batch_is_accepted() {
        let one = parse_batch_now(json!({"action": "doc.read", "crud": "r"})).expect("one event");
        assert_eq!(one.len(), 1);
        let many =
            parse_batch_now(json!([{"action": "a", "crud": "c"}, {"action": "b", "crud": "d"}]))
                .expect("a batch");
        assert_eq!(many.len(), 2);
    }

    #[test]
    fn every_bad_event_of_a_batch_is_pointed_at() {
        let result = parse_batch_now(json!([
            {"action": "ok", "crud": "c"},
            {"action": "", "crud": "x", "source_ip": "nope"},
            {"crud": "r"},
            {"action": "a", "crud": "c", "colour": "red"}
        ]));
        assert_eq!(
            pointers(result),
            vec!["/1/action", "/1/crud", "/1/source_ip", "/2", "/3"]
        );
    }

    #[test]
    fn rejects_nul_characters_anywhere_in_an_event() {
        let result = parse_batch_now(json!([
            {"action": "ok", "crud": "c"},
            {"action": "a\0b", "crud": "c", "fields": {"k": "v\0"}}
        ]));
        assert_eq!(pointers(result), vec!["/1/action", "/1/fields/k"]);
    }

    #[test]
    fn batches_are_bounded() {
        let too_many: Vec<Value> = (0..=MAX_BATCH)
            .map(|_| json!({"action": "a", "crud": "c"}))
            .collect();
        assert_eq!(pointers(parse_batch_now(Value::Array(too_many))), vec!["/"]);
        assert_eq!(pointers(parse_batch_now(json!([]))), vec!["/"]);
        assert_eq!(pointers(parse_batch_now(json!("event"))), vec!["/"]);
    }

    #[test]
    fn created_is_bounded_to_the_epoch_and_a_day_ahead() {
        let received = Utc::now();
        let event = |created: &str| json!({"action": "a", "crud": "c", "created": created});
        for refused in [
            "0000-01-01T00:00:00Z",
            "-0001-01-01T00:00:00Z",
            "+262142-12-31T23:59:59Z",
            "1969-12-31T23:59:59.999999Z",
        ] {
            let result = parse_batch(event(refused), received);
            assert_eq!(pointers(result), vec!["/created"], "{refused}");
        }
        let tomorrow = (received + TimeDelta::hours(23)).to_rfc3339();
        for accepted in [
            "1970-01-01T00:00:00Z",
            "2026-03-01T10:00:00.123456789+02:00",
            &tomorrow,
        ] {
            assert!(parse_batch(event(accepted), received).is_ok(), "{accepted}");
        }
        let too_far = (received + TimeDelta::hours(25)).to_rfc3339();
        assert_eq!(
            pointers(parse_batch(event(&too_far), received)),
            vec!["/created"]
        );
    }
}

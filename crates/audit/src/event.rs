//! The Retraced-compatible audit event as products send it, and the rules it must meet.
//! Every problem of a batch is reported with a JSON pointer into the batch, so a product
//! can fix all of them at once; a batch is stored all or nothing.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The most events one request may carry.
pub const MAX_BATCH: usize = 1000;

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
    /// The product's id for the event; a second event with the same id is stored once.
    pub external_id: Option<String>,
    /// The part of the product that reported it.
    pub component: Option<String>,
    /// The product's version.
    pub version: Option<String>,
}

/// Reads the body of an ingest request: one event or an array of up to [`MAX_BATCH`].
/// Returns the events, or every problem as `(pointer, detail)`.
pub fn parse_batch(body: Value) -> Result<Vec<Event>, Vec<(String, String)>> {
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
                        .problems()
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
    /// The rules one event breaks, as `(pointer within the event, detail)`.
    pub fn problems(&self) -> Vec<(String, String)> {
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
        let one = parse_batch(json!({"action": "doc.read", "crud": "r"})).expect("one event");
        assert_eq!(one.len(), 1);
        let many = parse_batch(json!([{"action": "a", "crud": "c"}, {"action": "b", "crud": "d"}]))
            .expect("a batch");
        assert_eq!(many.len(), 2);
    }

    #[test]
    fn every_bad_event_of_a_batch_is_pointed_at() {
        let result = parse_batch(json!([
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
        let result = parse_batch(json!([
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
        assert_eq!(pointers(parse_batch(Value::Array(too_many))), vec!["/"]);
        assert_eq!(pointers(parse_batch(json!([]))), vec!["/"]);
        assert_eq!(pointers(parse_batch(json!("event"))), vec!["/"]);
    }
}

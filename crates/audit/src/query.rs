//! Retraced's search string: `key:value` terms and free text, e.g.
//! `action:tenant.* crud:u actor.id:u-1 received:2026-01-01,2026-02-01 "password reset"`.

use chrono::{DateTime, NaiveDate, Utc};
use storage::audit::EventFilter;

/// Why a search string cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(String);

const KEYS: &str = "action, crud, actor.id, actor.name, target.id, target.type, product, \
                    is_failure, received, created, description";

/// The longest search string, in characters.
pub const MAX_Q_CHARS: usize = 512;
/// The most terms (`key:value` terms, words and phrases together) in a search string.
pub const MAX_TERMS: usize = 12;
/// The most words and phrases (each one more `ILIKE` per candidate row).
pub const MAX_WORDS: usize = 6;
/// The longest term, word or phrase, in characters.
pub const MAX_TERM_CHARS: usize = 100;

/// Narrows `filter` by the search string `q`. Values may be quoted (`actor.id:"a b"`);
/// words and quoted phrases outside a term must all occur in the description. A term naming
/// a filter that is already set (by a query parameter or an earlier term) is refused rather
/// than silently overriding it.
///
/// The work a search string can cause is bounded: at most [`MAX_Q_CHARS`] characters,
/// [`MAX_TERMS`] terms of at most [`MAX_TERM_CHARS`] characters each, and [`MAX_WORDS`]
/// words or phrases (the one part that cannot use an index).
pub fn apply_query(q: &str, filter: &mut EventFilter) -> Result<(), QueryError> {
    if q.chars().count() > MAX_Q_CHARS {
        return Err(QueryError(format!("at most {MAX_Q_CHARS} characters")));
    }
    let tokens = tokens(q)?;
    if tokens.len() > MAX_TERMS {
        return Err(QueryError(format!("at most {MAX_TERMS} terms")));
    }
    if let Some(long) = tokens
        .iter()
        .find(|token| token.text.chars().count() > MAX_TERM_CHARS)
    {
        let start: String = long.text.chars().take(20).collect();
        return Err(QueryError(format!(
            "{start:?}…: a term is at most {MAX_TERM_CHARS} characters"
        )));
    }
    let words = tokens
        .iter()
        .filter(|token| {
            token.quoted || !token.text.contains(':') || token.text.starts_with("description:")
        })
        .count();
    if words > MAX_WORDS {
        return Err(QueryError(format!(
            "at most {MAX_WORDS} words or phrases to find in the description"
        )));
    }
    for token in tokens {
        let Some((key, value)) = token.text.split_once(':').filter(|_| !token.quoted) else {
            filter.text.push(token.text);
            continue;
        };
        let value = value.trim_matches('"').to_owned();
        if value.is_empty() {
            return Err(QueryError(format!("{key}: needs a value")));
        }
        match key {
            "action" => set(&mut filter.action, key, value)?,
            "crud" => {
                if !matches!(value.as_str(), "c" | "r" | "u" | "d") {
                    return Err(QueryError("crud: must be one of c, r, u, d".to_owned()));
                }
                set(&mut filter.crud, key, value)?;
            }
            "actor.id" => set(&mut filter.actor_id, key, value)?,
            "actor.name" => set(&mut filter.actor_name, key, value)?,
            // Retraced's clients send a description filter as a term: a phrase to find.
            "description" => filter.text.push(value),
            "target.id" => set(&mut filter.target_id, key, value)?,
            "target.type" => set(&mut filter.target_type, key, value)?,
            "product" => set(&mut filter.product, key, value)?,
            "is_failure" => {
                let failed = value
                    .parse()
                    .map_err(|_| QueryError("is_failure: must be true or false".to_owned()))?;
                set(&mut filter.is_failure, key, failed)?;
            }
            "received" => {
                let bounds = range(key, &value)?;
                set_range(
                    &mut filter.received_from,
                    &mut filter.received_to,
                    key,
                    bounds,
                )?;
            }
            "created" => {
                let bounds = range(key, &value)?;
                set_range(&mut filter.from, &mut filter.to, key, bounds)?;
            }
            unknown => {
                return Err(QueryError(format!(
                    "unknown search key {unknown:?}; known keys: {KEYS}"
                )));
            }
        }
    }
    Ok(())
}

fn set<T>(slot: &mut Option<T>, key: &str, value: T) -> Result<(), QueryError> {
    if slot.is_some() {
        return Err(QueryError(format!("{key} is given twice")));
    }
    *slot = Some(value);
    Ok(())
}

type Bounds = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn set_range(
    from: &mut Option<DateTime<Utc>>,
    to: &mut Option<DateTime<Utc>>,
    key: &str,
    bounds: Bounds,
) -> Result<(), QueryError> {
    if from.is_some() || to.is_some() {
        return Err(QueryError(format!("{key} is given twice")));
    }
    (*from, *to) = bounds;
    Ok(())
}

/// `from,to`, either end optional; each an RFC 3339 time or a date (its midnight, UTC).
/// The range includes `from` and excludes `to`.
fn range(key: &str, value: &str) -> Result<Bounds, QueryError> {
    let (from, to) = value.split_once(',').unwrap_or((value, ""));
    let time = |text: &str| -> Result<Option<DateTime<Utc>>, QueryError> {
        if text.is_empty() {
            return Ok(None);
        }
        DateTime::parse_from_rfc3339(text)
            .map(|time| time.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .ok()
                    .and_then(|date| date.and_hms_opt(0, 0, 0))
                    .map(|midnight| midnight.and_utc())
            })
            .filter(|time| *time >= storage::earliest_timestamp())
            .map(Some)
            .ok_or_else(|| {
                QueryError(format!(
                    "{key}: {text:?} is neither a date (2026-01-31) nor an RFC 3339 time \
                     after 4714 BC"
                ))
            })
    };
    let (from, to) = (time(from)?, time(to)?);
    if let (Some(start), Some(end)) = (from, to)
        && start >= end
    {
        return Err(QueryError(format!(
            "{key}: the start must be before the end"
        )));
    }
    Ok((from, to))
}

struct Token {
    text: String,
    quoted: bool,
}

/// Splits on whitespace, keeping double-quoted stretches together (`"a b"`, `key:"a b"`).
fn tokens(q: &str) -> Result<Vec<Token>, QueryError> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut quoted = false;
    for character in q.chars() {
        match character {
            '"' => {
                in_quotes = !in_quotes;
                quoted |= current.is_empty();
                if !quoted {
                    current.push('"');
                }
            }
            space if space.is_whitespace() && !in_quotes => {
                if !current.is_empty() {
                    tokens.push(Token {
                        text: std::mem::take(&mut current),
                        quoted,
                    });
                }
                quoted = false;
            }
            other => current.push(other),
        }
    }
    if in_quotes {
        return Err(QueryError("a quote is not closed".to_owned()));
    }
    if !current.is_empty() {
        tokens.push(Token {
            text: current,
            quoted,
        });
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(q: &str) -> Result<EventFilter, QueryError> {
        let mut filter = EventFilter::default();
        apply_query(q, &mut filter).map(|()| filter)
    }

    #[test]
    fn terms_and_free_text_narrow_the_filter() {
        let filter = parsed(
            r#"action:tenant.* crud:u actor.id:"u 1" target.id:t-9 target.type:tenant product:billing is_failure:true received:2026-01-01,2026-02-01 password "reset link""#,
        )
        .expect("valid");
        assert_eq!(filter.action.as_deref(), Some("tenant.*"));
        assert_eq!(filter.crud.as_deref(), Some("u"));
        assert_eq!(filter.actor_id.as_deref(), Some("u 1"));
        assert_eq!(filter.target_id.as_deref(), Some("t-9"));
        assert_eq!(filter.target_type.as_deref(), Some("tenant"));
        assert_eq!(filter.product.as_deref(), Some("billing"));
        assert_eq!(filter.is_failure, Some(true));
        assert_eq!(
            filter.received_from.map(|time| time.to_rfc3339()),
            Some("2026-01-01T00:00:00+00:00".to_owned())
        );
        assert_eq!(
            filter.received_to.map(|time| time.to_rfc3339()),
            Some("2026-02-01T00:00:00+00:00".to_owned())
        );
        assert_eq!(filter.text, vec!["password", "reset link"]);
    }

    #[test]
    fn the_terms_retraceds_clients_build_are_understood() {
        // What @retracedhq/retraced's stringifyStructuredQuery makes of a structured query.
        let filter = parsed(
            r#"action:"doc.read" crud:r received:2026-01-01T10:00:00.000Z, actor.name:"Jane Doe" actor.id:u-1 description:"shared it""#,
        )
        .expect("valid");
        assert_eq!(filter.action.as_deref(), Some("doc.read"));
        assert_eq!(filter.actor_name.as_deref(), Some("Jane Doe"));
        assert_eq!(filter.actor_id.as_deref(), Some("u-1"));
        assert_eq!(filter.text, vec!["shared it"]);
        assert_eq!(
            filter.received_from.map(|time| time.to_rfc3339()),
            Some("2026-01-01T10:00:00+00:00".to_owned())
        );
        let error = parsed(r#"location:"Berlin""#).expect_err("no locations");
        assert!(error.to_string().contains("unknown search key"), "{error}");
        let many = [r#"description:"x""#; 7].join(" ");
        assert!(parsed(&many).is_err(), "description terms count as phrases");
    }

    #[test]
    fn ranges_take_times_and_open_ends() {
        let filter = parsed("created:2026-01-01T10:00:00Z,").expect("valid");
        assert_eq!(
            filter.from.map(|time| time.to_rfc3339()),
            Some("2026-01-01T10:00:00+00:00".to_owned())
        );
        assert_eq!(filter.to, None);
    }

    #[test]
    fn rejects_unknown_keys_bad_values_and_repeats() {
        for (q, expected) in [
            ("colour:red", "unknown search key"),
            ("crud:x", "crud: must be"),
            ("is_failure:maybe", "is_failure: must be"),
            ("received:yesterday", "neither a date"),
            ("received:2026-02-01,2026-01-01", "start must be before"),
            ("action:a action:b", "action is given twice"),
            ("action:", "needs a value"),
            ("\"open", "not closed"),
        ] {
            let error = parsed(q).expect_err(q).to_string();
            assert!(error.contains(expected), "{q}: {error}");
        }
    }

    #[test]
    fn search_strings_are_bounded() {
        let words = |count: usize| vec!["word"; count].join(" ");
        let terms = |count: usize| vec!["crud:r"; count].join(" ");
        for (q, expected) in [
            ("x ".repeat(300), "at most 512 characters"),
            (terms(13), "at most 12 terms"),
            (words(7), "at most 6 words"),
            (format!("\"{}\"", "a ".repeat(60)), "at most 100 characters"),
            (
                format!("actor.id:{}", "a".repeat(100)),
                "at most 100 characters",
            ),
        ] {
            let error = parsed(&q).expect_err(&q).to_string();
            assert!(error.contains(expected), "{q}: {error}");
        }
        assert!(parsed(&words(6)).is_ok());
        assert!(parsed(&"a".repeat(100)).is_ok());
    }

    #[test]
    fn an_empty_query_changes_nothing() {
        assert_eq!(parsed("   ").expect("valid"), EventFilter::default());
    }
}

//! Opaque cursors for stable, keyset-paginated listings.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::problem::ApiError;

/// Default page size.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest page size.
pub const MAX_LIMIT: i64 = 200;

/// A position in a listing ordered by `(created_at, id)`.
pub type Position = (DateTime<Utc>, Uuid);

/// The cursor of `position`.
pub fn encode(created_at: DateTime<Utc>, id: impl std::fmt::Display) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{id}", created_at.to_rfc3339()))
}

/// Reads a cursor made by [`encode`]; 422 on anything else.
pub fn decode(cursor: &str) -> Result<Position, ApiError> {
    decode_as(cursor)
}

/// Reads a cursor made by [`encode`] whose id is a `T`; 422 on anything else.
pub fn decode_as<T: std::str::FromStr>(cursor: &str) -> Result<(DateTime<Utc>, T), ApiError> {
    let invalid = || ApiError::invalid_field("/cursor", "not a cursor this service issued");
    let text = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(text).map_err(|_| invalid())?;
    let (time, id) = text.split_once('|').ok_or_else(invalid)?;
    let time = DateTime::parse_from_rfc3339(time).map_err(|_| invalid())?;
    let id = id.parse().map_err(|_| invalid())?;
    Ok((time.with_timezone(&Utc), id))
}

/// Cuts `rows`, fetched with one more than `limit`, to a page; the cursor of the next page
/// is the position of its last row, and `None` when nothing follows.
pub fn page<T, Id: std::fmt::Display>(
    mut rows: Vec<T>,
    limit: i64,
    position: impl Fn(&T) -> (DateTime<Utc>, Id),
) -> (Vec<T>, Option<String>) {
    let size = usize::try_from(limit).unwrap_or(usize::MAX);
    let has_more = rows.len() > size;
    rows.truncate(size);
    let next_cursor = has_more
        .then(|| {
            rows.last().map(|last| {
                let (time, id) = position(last);
                encode(time, id)
            })
        })
        .flatten();
    (rows, next_cursor)
}

/// `limit` and `cursor` query parameters.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// Where the previous page ended.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The validated limit, and the position after which the page starts.
    pub fn resolve(&self) -> Result<(i64, Option<Position>), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid_field(
                "/limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let after = self.cursor.as_deref().map(decode).transpose()?;
        Ok((limit, after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips() {
        let at = Utc::now();
        let id = Uuid::new_v4();
        assert_eq!(decode(&encode(at, id)).expect("decodes"), (at, id));
    }

    #[test]
    fn a_forged_cursor_is_rejected() {
        assert!(decode("not-a-cursor").is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode("2026-01-01T00:00:00Z|nope")).is_err());
    }

    #[test]
    fn limits_outside_1_to_200_are_rejected() {
        for limit in [0, 201, -1] {
            let query = PageQuery {
                limit: Some(limit),
                cursor: None,
            };
            assert!(query.resolve().is_err(), "{limit}");
        }
        let query = PageQuery {
            limit: None,
            cursor: None,
        };
        assert_eq!(query.resolve().expect("default").0, DEFAULT_LIMIT);
    }
}

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

/// The cursor of `position`: the time as whole seconds and nanoseconds since the Unix
/// epoch, and the id. Exact for every instant chrono can hold, which RFC 3339 text is not
/// (chrono cannot read back a year before 0 or after 9999).
pub fn encode(created_at: DateTime<Utc>, id: impl std::fmt::Display) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{}:{}|{id}",
        created_at.timestamp(),
        created_at.timestamp_subsec_nanos()
    ))
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
    let since_epoch = |text: &str| {
        let (seconds, nanos) = text.split_once(':')?;
        DateTime::from_timestamp(seconds.parse().ok()?, nanos.parse().ok()?)
    };
    // Cursors issued before this format (RFC 3339 text) are still in clients' hands while
    // a deployment rolls.
    let issued_before = |text: &str| {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|time| time.with_timezone(&Utc))
    };
    let time = since_epoch(time)
        .or_else(|| issued_before(time))
        // A time the database cannot hold was not issued here, and binding it would fail.
        .filter(|time| *time >= storage::earliest_timestamp())
        .ok_or_else(invalid)?;
    let id = id.parse().map_err(|_| invalid())?;
    Ok((time, id))
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
    use proptest::prelude::*;

    #[test]
    fn a_cursor_round_trips() {
        let at = Utc::now();
        let id = Uuid::new_v4();
        assert_eq!(decode(&encode(at, id)).expect("decodes"), (at, id));
    }

    #[test]
    fn a_forged_cursor_is_rejected() {
        for forged in [
            "2026-01-01T00:00:00Z|nope",
            "1:2",
            "x:0|1",
            "0:2000000000|1",
            "-300000000000:0|1",
            "99999999999999999999:0|1",
        ] {
            assert!(
                decode_as::<i64>(&URL_SAFE_NO_PAD.encode(forged)).is_err(),
                "{forged}"
            );
        }
        assert!(decode("not-a-cursor").is_err());
    }

    #[test]
    fn a_cursor_issued_before_the_seconds_format_is_still_read() {
        let id = Uuid::new_v4();
        let legacy = URL_SAFE_NO_PAD.encode(format!("2026-01-01T10:00:00.123456+00:00|{id}"));
        let (time, read) = decode(&legacy).expect("decodes");
        assert_eq!((time.timestamp_subsec_micros(), read), (123_456, id));
    }

    /// Every instant chrono holds from PostgreSQL's earliest on, leap seconds included.
    fn any_storable_time() -> impl Strategy<Value = DateTime<Utc>> {
        (
            storage::earliest_timestamp().timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp(),
            0u32..2_000_000_000,
        )
            .prop_filter_map("a time chrono holds", |(seconds, nanos)| {
                DateTime::from_timestamp(seconds, nanos)
            })
    }

    proptest! {
        #[test]
        fn every_cursor_round_trips(at in any_storable_time(), id in any::<i64>(), uuid in any::<u128>()) {
            prop_assert_eq!(decode_as::<i64>(&encode(at, id)).ok(), Some((at, id)));
            let uuid = Uuid::from_u128(uuid);
            prop_assert_eq!(decode(&encode(at, uuid)).ok(), Some((at, uuid)));
        }

        #[test]
        fn a_cursor_before_what_postgresql_stores_is_refused(seconds in i64::MIN..storage::earliest_timestamp().timestamp()) {
            if let Some(at) = DateTime::from_timestamp(seconds, 0) {
                prop_assert!(decode_as::<i64>(&encode(at, 1)).is_err());
            }
        }
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

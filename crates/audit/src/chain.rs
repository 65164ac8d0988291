//! Tamper evidence: every event's hash covers its canonical content and the previous event's
//! hash in its tenant's chain, so changing, removing or reordering a stored event breaks the
//! chain from that event on.

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use storage::audit::{ChainHead, EventRow, GENESIS};
use utoipa::ToSchema;
use uuid::Uuid;

/// The hash of `row` chained after `previous`: SHA-256 over the previous hash and the
/// canonical JSON of the row's content (keys sorted, timestamps in microseconds). The id
/// and the current tenant reference are left out: the id is assigned by the database and
/// the tenant reference is cleared when a tenant is deleted, while its history stays.
pub fn hash(previous: &[u8], row: &EventRow) -> Vec<u8> {
    let content = json!({
        "chain": [row.chain_key, row.chain_seq],
        "group": [row.group_id, row.group_name],
        "product": row.product,
        "action": row.action,
        "crud": row.crud,
        "actor": [row.actor_id, row.actor_name, row.actor_href, row.actor_fields.0],
        "target": [row.target_id, row.target_name, row.target_type, row.target_href,
                   row.target_fields.0],
        "source_ip": row.source_ip,
        "description": row.description,
        "flags": [row.is_failure, row.is_anonymous],
        "fields": row.fields.0,
        "external_id": row.external_id,
        "component": row.component,
        "version": row.version,
        "created": row.created_at.timestamp_micros(),
        "received": row.received_at.timestamp_micros(),
    });
    let mut canonical = String::new();
    write_canonical(&content, &mut canonical);
    let mut digest = Sha256::new();
    digest.update(previous);
    digest.update(canonical.as_bytes());
    digest.finalize().to_vec()
}

/// JSON with object keys sorted at every level, so the bytes do not depend on how a map
/// was built or how PostgreSQL's jsonb orders keys when the row is read back.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|left, right| left.0.cmp(right.0));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The first event at which a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Break {
    /// The stored event where the break shows (null when the chain's last events are gone).
    pub id: Option<i64>,
    /// Its position in the chain.
    pub sequence: i64,
    /// What does not match: `missing_events`, `previous_hash_mismatch`, `content_changed`
    /// or `tail_missing`.
    pub reason: &'static str,
}

/// The outcome of recomputing a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Verification {
    /// Whether the whole chain verified.
    pub ok: bool,
    /// Events recomputed before the first break (all of them when ok).
    pub events_checked: u64,
    /// Where it breaks, if it does.
    pub first_broken_event: Option<Break>,
}

/// Events read per round trip while verifying.
const PAGE: i64 = 2000;

/// Recomputes the chain of `key` (a tenant id, or the nil uuid for events of no tenant)
/// from its retention anchor to its head.
pub async fn verify(pool: &PgPool, key: Uuid) -> Result<Verification, sqlx::Error> {
    let head = storage::audit::chain_head(pool, key)
        .await?
        .unwrap_or(ChainHead {
            chain_key: key,
            last_seq: 0,
            last_hash: GENESIS.to_vec(),
            pruned_seq: 0,
            pruned_hash: GENESIS.to_vec(),
        });
    let mut expected_seq = head.pruned_seq + 1;
    let mut previous = head.pruned_hash;
    let mut checked = 0;
    let broken = |id, sequence, reason, checked| Verification {
        ok: false,
        events_checked: checked,
        first_broken_event: Some(Break {
            id,
            sequence,
            reason,
        }),
    };
    loop {
        let rows =
            storage::audit::chain_page(pool, key, expected_seq - 1, head.last_seq, PAGE).await?;
        let last_page = i64::try_from(rows.len()).unwrap_or(i64::MAX) < PAGE;
        for row in rows {
            let sequence = row.chain_seq.unwrap_or_default();
            if sequence != expected_seq {
                return Ok(broken(Some(row.id), sequence, "missing_events", checked));
            }
            if row.prev_hash.as_deref() != Some(previous.as_slice()) {
                return Ok(broken(
                    Some(row.id),
                    sequence,
                    "previous_hash_mismatch",
                    checked,
                ));
            }
            let stored = row.hash.clone().unwrap_or_default();
            if hash(&previous, &row) != stored {
                return Ok(broken(Some(row.id), sequence, "content_changed", checked));
            }
            previous = stored;
            expected_seq += 1;
            checked += 1;
        }
        if last_page {
            break;
        }
    }
    if expected_seq - 1 != head.last_seq || previous != head.last_hash {
        return Ok(broken(None, expected_seq, "tail_missing", checked));
    }
    Ok(Verification {
        ok: true,
        events_checked: checked,
        first_broken_event: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use sqlx::types::Json;

    fn row() -> EventRow {
        EventRow {
            action: "document.shared".to_owned(),
            crud: "u".to_owned(),
            actor_fields: Json(json!({"b": "2", "a": "1"})),
            target_fields: Json(json!({})),
            fields: Json(json!({})),
            created_at: Utc.timestamp_opt(1_700_000_000, 123_456_000).unwrap(),
            received_at: Utc.timestamp_opt(1_700_000_001, 0).unwrap(),
            chain_key: Some(Uuid::nil()),
            chain_seq: Some(1),
            ..EventRow::default()
        }
    }

    #[test]
    fn the_hash_does_not_depend_on_key_order_or_the_database_id() {
        let mut reordered = row();
        reordered.actor_fields = Json(serde_json::from_str(r#"{"a":"1","b":"2"}"#).unwrap());
        reordered.id = 42;
        assert_eq!(hash(&GENESIS, &row()), hash(&GENESIS, &reordered));
    }

    #[test]
    fn the_hash_covers_the_content_and_the_previous_hash() {
        let original = hash(&GENESIS, &row());
        let mut changed = row();
        changed.description = Some("edited".to_owned());
        assert_ne!(original, hash(&GENESIS, &changed));
        let mut moved = row();
        moved.chain_seq = Some(2);
        assert_ne!(original, hash(&GENESIS, &moved));
        assert_ne!(original, hash(&[1; 32], &row()));
        assert_eq!(original.len(), 32);
    }
}

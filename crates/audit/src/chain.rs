//! Tamper evidence: every event's hash covers its canonical content and the previous event's
//! hash in its tenant's chain, so changing, removing or reordering a stored event breaks the
//! chain from that event on. Checking a chain is in `verify`.

use std::net::IpAddr;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use storage::audit::EventRow;

/// The canonical text of an IP address: RFC 5952 for IPv6 (std's `Display` is documented
/// to follow it; IPv4-mapped addresses keep their dotted tail), dotted quads for IPv4.
/// `None` when `text` is not an address.
///
/// Every textual form of one address has the same canonical text, so the hash does not
/// depend on how an address was sent or how PostgreSQL prints it back (`::1.2.3.4` is
/// stored as `inet` and read back in PostgreSQL's notation, which is not Rust's).
pub fn canonical_ip(text: &str) -> Option<String> {
    text.parse::<IpAddr>().ok().map(|ip| ip.to_string())
}

/// The hash of `row` chained after `previous`: SHA-256 over the previous hash and the
/// canonical JSON of the row's content (keys sorted, timestamps in microseconds, the
/// source address in its canonical text), so the hash covers the stored values, not the
/// notation they were sent or read back in. The id and the current tenant reference are
/// left out: the id is assigned by the database and the tenant reference is cleared when a
/// tenant is deleted, while its history stays.
pub fn hash(previous: &[u8], row: &EventRow) -> Vec<u8> {
    let source_ip = row
        .source_ip
        .as_deref()
        .map(|ip| canonical_ip(ip).unwrap_or_else(|| ip.to_owned()));
    let mut content = json!({
        "chain": [row.chain_key, row.chain_seq],
        "group": [row.group_id, row.group_name],
        "product": row.product,
        "action": row.action,
        "crud": row.crud,
        "actor": [row.actor_id, row.actor_name, row.actor_href, row.actor_fields.0],
        "target": [row.target_id, row.target_name, row.target_type, row.target_href,
                   row.target_fields.0],
        "source_ip": source_ip,
        "description": row.description,
        "flags": [row.is_failure, row.is_anonymous],
        "fields": row.fields.0,
        "external_id": row.external_id,
        "component": row.component,
        "version": row.version,
        "created": row.created_at.timestamp_micros(),
        "received": row.received_at.timestamp_micros(),
    });
    // Retraced's metadata (V26) counts only when there is some, so hashes written before it
    // existed, and events without it, hash as they always did.
    if let (Value::Object(content), Some(metadata)) = (
        &mut content,
        row.metadata
            .0
            .as_object()
            .filter(|metadata| !metadata.is_empty()),
    ) {
        content.insert("metadata".to_owned(), Value::Object(metadata.clone()));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;
    use sqlx::types::Json;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use storage::audit::GENESIS;
    use uuid::Uuid;

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
    fn metadata_changes_the_hash_only_when_there_is_some() {
        let without = hash(&GENESIS, &row());
        let mut empty = row();
        empty.metadata = Json(json!({}));
        assert_eq!(
            hash(&GENESIS, &empty),
            without,
            "events before V26 keep their hashes"
        );
        let mut some = row();
        some.metadata = Json(json!({"region": "eu"}));
        assert_ne!(hash(&GENESIS, &some), without);
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

    /// Ways to write one IPv6 address that a client may send or PostgreSQL may print.
    fn spellings(ip: Ipv6Addr) -> Vec<String> {
        let groups = ip.segments();
        let expanded: Vec<String> = groups.iter().map(|group| format!("{group:04x}")).collect();
        let short: Vec<String> = groups.iter().map(|group| format!("{group:x}")).collect();
        let tail = Ipv4Addr::from((u128::from(ip) & 0xffff_ffff) as u32);
        let dotted = format!("{}:{tail}", short[..6].join(":"));
        let mut all = vec![
            ip.to_string(),
            ip.to_string().to_uppercase(),
            expanded.join(":"),
            expanded.join(":").to_uppercase(),
            dotted,
        ];
        if groups[..5] == [0; 5] && matches!(groups[5], 0 | 0xffff) {
            let prefix = if groups[5] == 0 { "::" } else { "::ffff:" };
            all.push(format!("{prefix}{tail}"));
        }
        all
    }

    fn with_ip(ip: &str) -> EventRow {
        EventRow {
            source_ip: Some(ip.to_owned()),
            ..row()
        }
    }

    #[test]
    fn addresses_postgresql_prints_differently_hash_alike() {
        for (sent, printed) in [
            ("::1.2.3.4", "::102:304"),
            ("::ffff:1.2.3.4", "::ffff:102:304"),
            ("2001:DB8::1", "2001:db8::1"),
            ("::2", "::0.0.0.2"),
        ] {
            assert_eq!(
                hash(&GENESIS, &with_ip(sent)),
                hash(&GENESIS, &with_ip(printed)),
                "{sent} and {printed}"
            );
        }
        assert_ne!(
            hash(&GENESIS, &with_ip("::1.2.3.4")),
            hash(&GENESIS, &with_ip("1.2.3.4")),
            "an IPv4 address and an IPv4-compatible IPv6 one are different addresses"
        );
    }

    fn any_ipv6() -> impl Strategy<Value = Ipv6Addr> {
        prop_oneof![
            any::<u128>().prop_map(Ipv6Addr::from),
            any::<u32>().prop_map(|low| Ipv6Addr::from(u128::from(low))),
            any::<u32>().prop_map(|low| Ipv4Addr::from(low).to_ipv6_mapped()),
            (any::<u16>(), any::<u16>())
                .prop_map(|(high, low)| Ipv6Addr::new(high, 0, 0, 0, 0, 0, 0, low)),
        ]
    }

    proptest! {
        #[test]
        fn every_spelling_of_an_address_is_accepted_and_hashes_alike(ip in any_ipv6()) {
            let canonical = hash(&GENESIS, &with_ip(&ip.to_string()));
            for spelling in spellings(ip) {
                let event = crate::Event {
                    source_ip: Some(spelling.clone()),
                    ..serde_json::from_value(json!({"action": "a", "crud": "c"})).unwrap()
                };
                prop_assert!(event.problems(Utc::now()).is_empty(), "{spelling} is refused");
                prop_assert_eq!(&hash(&GENESIS, &with_ip(&spelling)), &canonical, "{}", spelling);
            }
        }

        #[test]
        fn an_ipv4_address_hashes_as_its_dotted_quad(ip in any::<u32>().prop_map(Ipv4Addr::from)) {
            prop_assert_eq!(canonical_ip(&ip.to_string()), Some(ip.to_string()));
        }
    }
}

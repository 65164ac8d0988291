//! The event hash Retraced's clients check: SHA-256 of a canonical string built from the
//! event as the client sent it and the id the server answered. Written from the official
//! Node client's `buildHashTarget` (`@retracedhq/retraced` 0.7.23, `lib/event.js`); the
//! Go client builds the same string.
//!
//! The string is: the id, the action, the target's, actor's and group's ids, the source
//! address, each followed by `:` (an absent or empty part is an empty string); then `1:` or
//! `0:` for `is_failure` and for `is_anonymous`; then the fields, sorted by key, each as
//! `key=value;` (an absent `fields` is a lone `:`, an empty one nothing); then `:` and the
//! external id when there is one; then `:` and the metadata like the fields when it is
//! given. Every part is escaped by pass one (`%` → `%25`, then `:` → `%3A`); keys and values
//! of fields and metadata also by pass two (`=` → `%3D`, then `;` → `%3B`).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// The parts of an event that Retraced's hash covers, as the client sent them.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetracedHashInput<'a> {
    /// The event's action.
    pub action: &'a str,
    /// `target.id`, when a target is given.
    pub target_id: Option<&'a str>,
    /// `actor.id`, when an actor is given.
    pub actor_id: Option<&'a str>,
    /// `group.id`, when a group is given.
    pub group_id: Option<&'a str>,
    /// `source_ip`, as sent.
    pub source_ip: Option<&'a str>,
    /// Whether the action failed.
    pub is_failure: bool,
    /// Whether nobody was signed in.
    pub is_anonymous: bool,
    /// `fields`: `None` when the client left it out (which the string tells from `{}`).
    pub fields: Option<&'a BTreeMap<String, String>>,
    /// `external_id`, when given and not empty.
    pub external_id: Option<&'a str>,
    /// `metadata`, when given.
    pub metadata: Option<&'a BTreeMap<String, String>>,
}

/// The canonical string Retraced's clients hash for the event `input` stored under `id`.
pub fn retraced_hash_target(id: &str, input: &RetracedHashInput<'_>) -> String {
    let mut out = String::new();
    for part in [
        Some(id),
        Some(input.action),
        input.target_id,
        input.actor_id,
        input.group_id,
        input.source_ip,
    ] {
        out.push_str(&pass_one(part.unwrap_or_default()));
        out.push(':');
    }
    out.push_str(if input.is_failure { "1:" } else { "0:" });
    out.push_str(if input.is_anonymous { "1:" } else { "0:" });
    match input.fields {
        None => out.push(':'),
        Some(fields) => push_pairs(&mut out, fields),
    }
    if let Some(external_id) = input.external_id.filter(|id| !id.is_empty()) {
        out.push(':');
        out.push_str(&pass_one(external_id));
    }
    if let Some(metadata) = input.metadata {
        out.push(':');
        push_pairs(&mut out, metadata);
    }
    out
}

/// The hash Retraced's clients compute for the event `input` stored under `id`: lowercase
/// hexadecimal SHA-256 of [`retraced_hash_target`].
pub fn retraced_hash(id: &str, input: &RetracedHashInput<'_>) -> String {
    let digest = Sha256::digest(retraced_hash_target(id, input).as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn pass_one(text: &str) -> String {
    text.replace('%', "%25").replace(':', "%3A")
}

fn pass_two(text: &str) -> String {
    text.replace('=', "%3D").replace(';', "%3B")
}

/// `key=value;` for each pair, keys in the order JavaScript's `Array.prototype.sort` puts
/// them: by UTF-16 code units, which differs from Rust's byte order for characters above
/// U+FFFF against those from U+E000.
fn push_pairs(out: &mut String, pairs: &BTreeMap<String, String>) {
    let mut keys: Vec<&String> = pairs.keys().collect();
    keys.sort_by(|left, right| left.encode_utf16().cmp(right.encode_utf16()));
    for key in keys {
        out.push_str(&pass_two(&pass_one(key)));
        out.push('=');
        out.push_str(&pass_two(&pass_one(&pairs[key])));
        out.push(';');
    }
}

#[cfg(test)]
mod tests {
    //! Fixtures: canonical strings and hashes printed by the Node client's own
    //! `computeHash` (`@retracedhq/retraced` 0.7.23) for these events and ids.

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn an_event_with_only_an_action_hashes_as_the_client_does() {
        let input = RetracedHashInput {
            action: "a.b",
            ..RetracedHashInput::default()
        };
        assert_eq!(retraced_hash_target("1", &input), "1:a.b:::::0:0::");
        assert_eq!(
            retraced_hash("1", &input),
            "d6b5ca6724c25c302f6e49fe58ba8a799dccc390353e3d39f826457933712c94"
        );
    }

    #[test]
    fn colons_and_percents_are_escaped_everywhere_and_equals_and_semicolons_in_fields() {
        let fields = map(&[("b", "2:=;%"), ("a", "é✓")]);
        let input = RetracedHashInput {
            action: "doc:shared",
            target_id: Some("t%1"),
            actor_id: Some("u=1;x"),
            group_id: Some("acme"),
            source_ip: Some("10.0.0.1"),
            is_failure: true,
            fields: Some(&fields),
            ..RetracedHashInput::default()
        };
        assert_eq!(
            retraced_hash_target("42", &input),
            "42:doc%3Ashared:t%251:u=1;x:acme:10.0.0.1:1:0:a=é✓;b=2%3A%3D%3B%25;"
        );
        assert_eq!(
            retraced_hash("42", &input),
            "36c70981625b8619a80cd2fdf8e1a6182e38e03cf3aa6758ca9d46e8189676be"
        );
    }

    #[test]
    fn empty_fields_add_nothing_and_the_external_id_follows_a_colon() {
        let empty = BTreeMap::new();
        let input = RetracedHashInput {
            action: "x",
            is_anonymous: true,
            fields: Some(&empty),
            external_id: Some("ext:1%"),
            ..RetracedHashInput::default()
        };
        assert_eq!(retraced_hash_target("7", &input), "7:x:::::0:1::ext%3A1%25");
        assert_eq!(
            retraced_hash("7", &input),
            "21095becbb6a4699b357f987ab8be1cfbeb3b48605804fe0d9dee4bd75dc9b41"
        );
    }

    #[test]
    fn metadata_is_sorted_and_escaped_like_fields_after_a_colon() {
        let metadata = map(&[("z", "1"), ("k=", "v;")]);
        let input = RetracedHashInput {
            action: "x",
            metadata: Some(&metadata),
            ..RetracedHashInput::default()
        };
        assert_eq!(
            retraced_hash_target("9", &input),
            "9:x:::::0:0:::k%3D=v%3B;z=1;"
        );
        assert_eq!(
            retraced_hash("9", &input),
            "12069aa328ca778d6f94b0caca854785aa4e437d751db2ad487ddd9850c0459b"
        );
    }

    #[test]
    fn keys_are_sorted_by_utf16_code_units_as_javascript_sorts() {
        // U+1F600 is D83D DE00 in UTF-16, before U+FF61; in UTF-8 (F0…) it comes after (EF…).
        let fields = map(&[("\u{FF61}", "1"), ("\u{1F600}", "2")]);
        let input = RetracedHashInput {
            action: "x",
            fields: Some(&fields),
            ..RetracedHashInput::default()
        };
        assert_eq!(
            retraced_hash_target("3", &input),
            "3:x:::::0:0:\u{1F600}=2;\u{FF61}=1;"
        );
        assert_eq!(
            retraced_hash("3", &input),
            "fb622967701f2cf9072c89d40fd3acc4f9fcd1b26fcae97e852f3510cbb589bc"
        );
    }
}

//! Retraced's search syntax over generated input: any string gets an answer without a panic,
//! and whatever is accepted stays within the bounds that keep a search's work bounded.

use audit::{EventFilter, apply_query};
use proptest::prelude::*;

const KEYS: [&str; 10] = [
    "action",
    "crud",
    "actor.id",
    "target.id",
    "target.type",
    "product",
    "is_failure",
    "received",
    "created",
    "nonsense",
];

/// Search strings made of terms, words and phrases, some well-formed, some not.
fn search_string() -> impl Strategy<Value = String> {
    let term = prop_oneof![
        (prop::sample::select(&KEYS[..]), "[a-z0-9.*,\\-:]{0,12}")
            .prop_map(|(key, value)| format!("{key}:{value}")),
        "[a-zA-Z0-9]{1,12}",
        "\"[a-z ]{0,20}\"?",
        "\\PC{0,8}",
    ];
    prop::collection::vec(term, 0..16).prop_map(|terms| terms.join(" "))
}

proptest! {
    #[test]
    fn any_search_string_is_answered_and_what_passes_is_bounded(
        q in prop_oneof![search_string(), "\\PC{0,600}"]
    ) {
        let mut filter = EventFilter::default();
        if apply_query(&q, &mut filter).is_ok() {
            prop_assert!(q.chars().count() <= audit::MAX_Q_CHARS);
            prop_assert!(filter.text.len() <= audit::MAX_WORDS, "{:?}", filter.text);
            prop_assert!(filter.text.iter().all(|word| word.chars().count() <= audit::MAX_TERM_CHARS));
        }
    }

    #[test]
    fn a_term_naming_a_filter_twice_is_refused(value in "[a-z]{1,10}", other in "[a-z]{1,10}") {
        let mut filter = EventFilter::default();
        let q = format!("actor.id:{value} actor.id:{other}");
        prop_assert!(apply_query(&q, &mut filter).is_err());
    }
}

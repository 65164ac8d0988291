//! Properties of the domain's parsers over generated input: the slug rule, JSON merge patch
//! (RFC 7386) and SAML metadata. Whatever the input, they answer without panicking, and what
//! they accept obeys their rule.

use domain::idp::parse_saml_metadata;
use domain::product::merge_patch;
use domain::{Slug, xml_shape};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn follows_the_slug_rule(text: &str) -> bool {
    (domain::slug::MIN_LEN..=domain::slug::MAX_LEN).contains(&text.len())
        && text
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        "[a-z]{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-d]", inner, 0..4)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn xml_escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

const CERTIFICATE: &str = include_str!("../fixtures/idp-signing-cert.b64");

proptest! {
    #[test]
    fn any_text_is_a_slug_exactly_when_it_follows_the_rule(
        text in prop_oneof!["\\PC{0,70}", "[a-z0-9-]{0,70}"]
    ) {
        match Slug::parse(&text) {
            Ok(slug) => {
                prop_assert!(follows_the_slug_rule(&text), "{text:?} accepted");
                prop_assert_eq!(slug.as_str(), text.as_str());
            }
            Err(_) => prop_assert!(!follows_the_slug_rule(&text), "{text:?} refused"),
        }
    }

    #[test]
    fn every_slug_round_trips_through_json(text in "[a-z0-9][a-z0-9-]{1,61}[a-z0-9]") {
        let slug = Slug::parse(&text).expect("the rule's own alphabet");
        let json = serde_json::to_string(&slug).expect("serialized");
        prop_assert_eq!(serde_json::from_str::<Slug>(&json).expect("parsed back"), slug);
    }

    #[test]
    fn a_merge_patch_sets_what_it_names_removes_its_nulls_and_keeps_the_rest(
        target in any_json(),
        patch in any_json(),
    ) {
        let merged = merge_patch(&target, &patch);
        match (&patch, &merged) {
            (Value::Object(members), Value::Object(result)) => {
                for (name, value) in members {
                    match value {
                        Value::Null => prop_assert!(!result.contains_key(name), "{name} kept"),
                        Value::Object(_) => prop_assert!(result[name].is_object()),
                        value => prop_assert_eq!(&result[name], value),
                    }
                }
                if let Value::Object(before) = &target {
                    for (name, value) in before {
                        if !members.contains_key(name) {
                            prop_assert_eq!(&result[name], value, "{} untouched", name);
                        }
                    }
                }
            }
            (Value::Object(_), other) => prop_assert!(false, "an object patch gave {other}"),
            (patch, result) => prop_assert_eq!(result, patch, "a non-object patch replaces"),
        }
        prop_assert_eq!(merge_patch(&merged, &patch), merged, "applying it twice changes nothing");
    }

    #[test]
    fn saml_metadata_parsing_answers_any_text_without_panicking(text in "\\PC{0,400}") {
        let _ = xml_shape::check(&text);
        let _ = parse_saml_metadata(&text);
    }

    #[test]
    fn well_formed_metadata_gives_back_its_entity_id_and_sign_in_address(
        entity in "\\PC{1,60}",
        host in "[a-z]{1,20}",
    ) {
        prop_assume!(!entity.trim().is_empty());
        let sso = format!("https://{host}.example/sso");
        let xml = format!(
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{}"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{CERTIFICATE}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{sso}"/></md:IDPSSODescriptor></md:EntityDescriptor>"#,
            xml_escaped(&entity)
        );
        let parsed = parse_saml_metadata(&xml);
        prop_assert!(parsed.is_ok(), "{parsed:?}");
        let parsed = parsed.expect("checked");
        prop_assert_eq!(parsed.entity_id, entity);
        prop_assert_eq!(parsed.sso_url, sso);
    }
}

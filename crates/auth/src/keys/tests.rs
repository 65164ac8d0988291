//! Unit tests of key management's rules that need no database.

use super::*;

#[test]
fn a_generated_key_has_the_documented_format_and_verifies() {
    let generated = generate("dev").expect("generate");
    let key = reveal(&generated.key);
    let parsed = PresentedKey::parse(key).expect("our own format parses");
    assert_eq!(parsed.prefix, generated.prefix);
    assert!(key.starts_with(&format!("tr_dev_{}_", generated.prefix)));
    assert_eq!(key.len(), "tr_dev_".len() + 16 + 1 + 64);
    assert!(
        generated
            .hash
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
    );
    assert!(verify(&generated.hash, key));
    assert!(
        !generated.hash.contains(key),
        "the hash does not contain the key"
    );
}

#[test]
fn a_wrong_secret_does_not_verify() {
    let generated = generate("dev").expect("generate");
    let key = reveal(&generated.key);
    let mut tampered = key[..key.len() - 1].to_owned();
    tampered.push(if key.ends_with('0') { '1' } else { '0' });
    assert!(!verify(&generated.hash, &tampered));
    assert!(!verify("not a phc string", key));
}

#[test]
fn two_keys_never_share_prefix_or_secret() {
    let first = generate("dev").expect("generate");
    let second = generate("dev").expect("generate");
    assert_ne!(first.prefix, second.prefix);
    assert_ne!(reveal(&first.key), reveal(&second.key));
}

#[test]
fn malformed_keys_are_rejected_by_the_parser() {
    let good = format!("tr_prod_{}_{}", "a".repeat(16), "b".repeat(64));
    assert!(PresentedKey::parse(&good).is_some());
    for bad in [
        "",
        "tr_prod",
        &format!("xx_prod_{}_{}", "a".repeat(16), "b".repeat(64)),
        &format!("tr__{}_{}", "a".repeat(16), "b".repeat(64)),
        &format!("tr_prod_{}_{}", "a".repeat(15), "b".repeat(64)),
        &format!("tr_prod_{}_{}", "A".repeat(16), "b".repeat(64)),
        &format!("tr_prod_{}_{}", "a".repeat(16), "b".repeat(63)),
        &format!("tr_prod_{}_{}_x", "a".repeat(16), "b".repeat(64)),
    ] {
        assert!(PresentedKey::parse(bad).is_none(), "{bad:?}");
    }
}

#[test]
fn validation_names_the_field() {
    let now = Utc::now();
    let request = CreateKey {
        name: "  ".to_owned(),
        tenant_id: None,
        scopes: [Scope::TenantsRead].into_iter().collect(),
        expires_at: None,
        product: None,
    };
    assert!(matches!(
        validate_create(&request, now),
        Err(KeyError::Invalid {
            pointer: "/name",
            ..
        })
    ));
    let expired = CreateKey {
        name: "ci".to_owned(),
        expires_at: Some(now - chrono::Duration::seconds(1)),
        ..request.clone()
    };
    assert!(matches!(
        validate_create(&expired, now),
        Err(KeyError::Invalid {
            pointer: "/expires_at",
            ..
        })
    ));
    let no_scopes = CreateKey {
        name: "ci".to_owned(),
        scopes: Scopes::default(),
        ..request.clone()
    };
    assert!(matches!(
        validate_create(&no_scopes, now),
        Err(KeyError::Invalid {
            pointer: "/scopes",
            ..
        })
    ));
    let bad_product = CreateKey {
        name: "ci".to_owned(),
        product: Some("Billing Sync".to_owned()),
        ..request
    };
    assert!(matches!(
        validate_create(&bad_product, now),
        Err(KeyError::Invalid {
            pointer: "/product",
            ..
        })
    ));
}
